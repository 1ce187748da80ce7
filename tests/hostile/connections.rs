//! Connections: idle floods, and one client taking every connection or every request.

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use crate::client::{connect, connect_from, get_request, read_response, roundtrip};
use crate::{proxy_with, quick_chat};

/// The proxy closed `conn`: it reads to its end (within 2 s) without a byte.
fn assert_closed(conn: &mut BufReader<crate::client::Tls>, what: &str) {
    conn.get_mut()
        .sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{what}");
}

#[test]
fn idle_connections_make_room_for_new_ones_oldest_first() {
    // Before, a full house of idle keep-alive connections refused every newcomer for as long
    // as the idle timeout, renewable by the idlers.
    let (_mock, proxy) = proxy_with("  max_connections: 10\n  max_connections_per_client: 100\n");
    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut tls = BufReader::new(connect(proxy.port, &proxy.ca_path()));
        tls.get_mut().write_all(&get_request("/v1/models")).unwrap();
        assert_eq!(read_response(&mut tls).unwrap().status, 200);
        idle.push(tls);
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = roundtrip(proxy.port, &proxy.ca_path(), &get_request("/v1/models"));
    assert_eq!(r.status, 200, "a newcomer gets in");
    // The oldest idle connection made room; the newest is still usable.
    assert_closed(idle.first_mut().unwrap(), "the oldest was closed");
    let newest = idle.last_mut().unwrap();
    newest
        .get_mut()
        .write_all(&get_request("/v1/models"))
        .unwrap();
    assert_eq!(read_response(newest).unwrap().status, 200);
}

#[test]
fn one_client_cannot_take_every_connection() {
    let (_mock, proxy) = proxy_with("  max_connections: 20\n  max_connections_per_client: 5\n");
    let held: Vec<_> = (0..5)
        .map(|_| connect_from(proxy.port, &proxy.ca_path(), [127, 0, 0, 1]))
        .collect();
    // A sixth from the same address is closed at once.
    let sock = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!((&sock).read(&mut byte), Ok(0) | Err(_)), "refused");
    // Another client is served.
    let mut other = BufReader::new(connect_from(proxy.port, &proxy.ca_path(), [127, 0, 0, 2]));
    other
        .get_mut()
        .write_all(&get_request("/v1/models"))
        .unwrap();
    assert_eq!(read_response(&mut other).unwrap().status, 200);
    assert!(
        proxy.log().contains("its share of connections"),
        "{}",
        proxy.log()
    );
    drop(held);
}

#[test]
fn one_client_cannot_take_every_request() {
    let (_mock, proxy) = proxy_with("  max_requests_per_client: 2\n  first_byte_timeout: 5\n");
    let hang = crate::client::chat_request(r#"{"model":"hang","messages":[]}"#, "");
    let _hanging: Vec<_> = (0..2)
        .map(|_| {
            let mut tls = connect_from(proxy.port, &proxy.ca_path(), [127, 0, 0, 1]);
            tls.write_all(&hang).unwrap();
            tls
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut third = BufReader::new(connect_from(proxy.port, &proxy.ca_path(), [127, 0, 0, 1]));
    third.get_mut().write_all(&quick_chat()).unwrap();
    let r = read_response(&mut third).unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "too_many_requests_in_flight");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut other = BufReader::new(connect_from(proxy.port, &proxy.ca_path(), [127, 0, 0, 2]));
    other.get_mut().write_all(&quick_chat()).unwrap();
    assert_eq!(read_response(&mut other).unwrap().status, 200);
}

#[test]
fn a_client_over_its_share_loses_its_own_longest_idle_connection_first() {
    let (_mock, proxy) = proxy_with("  max_connections: 100\n  max_connections_per_client: 3\n");
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut tls = BufReader::new(connect_from(proxy.port, &proxy.ca_path(), [127, 0, 0, 1]));
        tls.get_mut().write_all(&get_request("/v1/models")).unwrap();
        assert_eq!(read_response(&mut tls).unwrap().status, 200);
        idle.push(tls);
        std::thread::sleep(Duration::from_millis(20));
    }
    // A fourth from the same address: served, at the cost of that client's oldest idle one.
    let mut fourth = BufReader::new(connect_from(proxy.port, &proxy.ca_path(), [127, 0, 0, 1]));
    fourth
        .get_mut()
        .write_all(&get_request("/v1/models"))
        .unwrap();
    assert_eq!(read_response(&mut fourth).unwrap().status, 200);
    assert_closed(idle.first_mut().unwrap(), "the oldest was closed");
}
