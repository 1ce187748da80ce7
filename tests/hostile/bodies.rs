//! Request bodies: sent slowly, abandoned half-way, or too many and too large at once.

use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

use crate::client::{connect, read_response};
use crate::{ordinary_clients_are_served, proxy_with};

/// The head of a chat request with a body of `len` bytes, and the body's first bytes.
fn body_head(len: usize) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n{{\"model\":\"gpt-4o\","
    )
    .into_bytes()
}

#[test]
fn slow_request_bodies_hold_no_worker() {
    // Twelve clients send their bodies a byte at a time with two workers: before, each held a
    // worker while it read, and everyone else waited.
    let (_mock, proxy) = proxy_with("  workers: 2\n");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..12)
        .map(|_| {
            let (port, ca, stop) = (proxy.port, proxy.ca_path(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut tls = connect(port, &ca);
                tls.write_all(&body_head(4000)).unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if tls.write_all(b" ").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    ordinary_clients_are_served(&proxy, "while slow bodies arrive");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
}

#[test]
fn a_body_that_takes_too_long_gets_408_and_an_access_log_line() {
    let (mock, proxy) = proxy_with("  request_body_timeout: 2\n");
    let mut tls = connect(proxy.port, &proxy.ca_path());
    tls.write_all(&body_head(100)).unwrap();
    let started = Instant::now();
    let r = read_response(&mut BufReader::new(tls)).unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "request_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let log = proxy.wait_for_log("aborted=client");
    assert!(
        log.contains("POST /v1/chat/completions status=408") && log.contains("aborted=client"),
        "{log}"
    );
    assert!(mock.requests().is_empty(), "nothing went upstream");
}

#[test]
fn a_client_that_aborts_mid_body_leaves_an_access_log_line() {
    let (mock, proxy) = proxy_with("");
    let mut tls = connect(proxy.port, &proxy.ca_path());
    tls.write_all(&body_head(1000)).unwrap();
    tls.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(tls);
    let log = proxy.wait_for_log("aborted=client");
    assert!(
        log.contains("POST /v1/chat/completions status=- ") && log.contains("request body: "),
        "{log}"
    );
    assert!(mock.requests().is_empty());
}

#[test]
fn bodies_beyond_the_memory_budget_get_503_at_once_and_room_comes_back() {
    // Room for two 1 MiB bodies (each charged twice: the body and its rewritten copy).
    let (_mock, proxy) =
        proxy_with("  max_body_bytes: 1048576\n  max_buffered_body_bytes: 4194304\n");
    let len = 1024 * 1024;
    let mut uploads: Vec<_> = (0..2)
        .map(|_| {
            let mut tls = connect(proxy.port, &proxy.ca_path());
            tls.write_all(&body_head(len)).unwrap();
            tls.flush().unwrap();
            tls
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut third = connect(proxy.port, &proxy.ca_path());
    third.write_all(&body_head(len)).unwrap();
    let r = read_response(&mut BufReader::new(third)).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "server_busy");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_secs(2));
    // One upload completes (the rest of its body, then the answer): its room is given back.
    let mut first = uploads.remove(0);
    // The rest of a valid JSON body of exactly `len` bytes: spaces, then the messages.
    let prefix = br#"{"model":"gpt-4o","#.len();
    let tail = br#""messages":[]}"#;
    let mut rest = vec![b' '; len - prefix - tail.len()];
    rest.extend_from_slice(tail);
    first.write_all(&rest).unwrap();
    let r = read_response(&mut BufReader::new(first)).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let mut again = connect(proxy.port, &proxy.ca_path());
    again.write_all(&body_head(len)).unwrap();
    again.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(uploads);
    // Accepted (it waits for its body) rather than refused: no answer within the moment.
    again
        .sock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        std::io::Read::read(&mut again, &mut byte).is_err(),
        "the budget has room again"
    );
}

#[test]
fn a_refused_upload_is_read_and_discarded_so_its_client_sees_the_answer() {
    // Refused at the head (over the memory budget), the client is still sending its body. Closed
    // at once, its unread bytes would make the kernel reset the connection and destroy the 503
    // before the client reads it; nginx's lingering close reads and discards them instead.
    let (_mock, proxy) =
        proxy_with("  max_body_bytes: 4194304\n  max_buffered_body_bytes: 8388608\n");
    let len = 4 * 1024 * 1024 - 64;
    let holder = {
        let mut tls = connect(proxy.port, &proxy.ca_path());
        tls.write_all(&body_head(len)).unwrap();
        tls.flush().unwrap();
        tls
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut refused = connect(proxy.port, &proxy.ca_path());
    let mut upload = body_head(len);
    upload.resize(upload.len() + len - br#"{"model":"gpt-4o","#.len(), b' ');
    // The whole upload goes out (as curl and the SDKs do), then the answer is read.
    refused
        .write_all(&upload)
        .expect("the proxy reads the refused body instead of resetting");
    refused.flush().unwrap();
    let r = read_response(&mut BufReader::new(refused)).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    drop(holder);
}
