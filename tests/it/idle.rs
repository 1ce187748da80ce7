//! Idle, half-open and slow connections must not hold the workers: with 2 workers and 300 such
//! connections open, a real request is still answered at once.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::client::{chat_request, connect, get_request, read_response, roundtrip};
use crate::harness::{Proxy, config_yaml};
use crate::mock::Mock;
use crate::standard_apis;

#[test]
fn three_hundred_idle_connections_do_not_delay_a_real_request() {
    let mock = Mock::start();
    let proxy = Proxy::start(&config_yaml(
        &mock.url(),
        &standard_apis(),
        "  workers: 2\n  request_head_timeout: 60\n  idle_timeout: 60\n",
    ));
    let ca = proxy.ca_path();
    let mut held = Vec::new();
    // 100 TCP connections that never start TLS.
    for _ in 0..100 {
        held.push(
            Box::new(TcpStream::connect(("127.0.0.1", proxy.port)).unwrap()) as Box<dyn Send>,
        );
    }
    // 100 that finish the handshake and send nothing.
    for _ in 0..100 {
        held.push(Box::new(connect(proxy.port, &ca)));
    }
    // 90 that send half a request head.
    for _ in 0..90 {
        let mut tls = connect(proxy.port, &ca);
        tls.write_all(b"GET /v1/models HTTP/1.1\r\nHo").unwrap();
        tls.flush().unwrap();
        held.push(Box::new(tls));
    }
    // 10 that completed a request and stay open, idle, on keep-alive.
    for _ in 0..10 {
        let mut reader = std::io::BufReader::new(connect(proxy.port, &ca));
        reader
            .get_mut()
            .write_all(&get_request("/v1/models"))
            .unwrap();
        assert_eq!(read_response(&mut reader).unwrap().status, 200);
        held.push(Box::new(reader));
    }
    assert_eq!(held.len(), 300);

    for _ in 0..5 {
        let started = Instant::now();
        let r = roundtrip(
            proxy.port,
            &ca,
            &chat_request(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#, ""),
        );
        let took = started.elapsed();
        assert_eq!(r.status, 200);
        assert!(r.complete);
        assert!(
            took < Duration::from_secs(3),
            "a real request waited {took:?}"
        );
    }
    drop(held);
}
