//! HTTP/1.1 and TLS behaviour of the server: keep-alive, pipelining, HTTP/1.0, 100-continue,
//! chunked bodies, limits, malformed input; the server keeps serving after each.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::client::{
    chat_request, connect, connect_alpn, connect_as, get_request, read_response, roundtrip,
};
use crate::setup;

#[test]
fn keep_alive_and_pipelined_requests_share_one_connection() {
    let (_mock, proxy) = setup();
    let mut reader = BufReader::new(connect(proxy.port, &proxy.ca_path()));
    for _ in 0..3 {
        reader
            .get_mut()
            .write_all(&get_request("/v1/models"))
            .unwrap();
        let r = read_response(&mut reader).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), None);
    }
    // Two requests in one write: both answered, in order.
    let mut both = chat_request(r#"{"model":"gpt-4o","messages":[]}"#, "");
    both.extend_from_slice(&get_request("/v1/models/gpt-4o"));
    reader.get_mut().write_all(&both).unwrap();
    let first = read_response(&mut reader).unwrap();
    assert_eq!(first.json()["object"], "chat.completion");
    let second = read_response(&mut reader).unwrap();
    assert_eq!(second.json()["object"], "model");
    // A stream, then another request on the same connection.
    reader
        .get_mut()
        .write_all(&chat_request(
            r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
            "",
        ))
        .unwrap();
    let stream = read_response(&mut reader).unwrap();
    assert!(stream.complete);
    reader
        .get_mut()
        .write_all(&get_request("/v1/models"))
        .unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
}

#[test]
fn connection_close_is_honoured() {
    let (_mock, proxy) = setup();
    let mut reader = BufReader::new(connect(proxy.port, &proxy.ca_path()));
    reader
        .get_mut()
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut reader).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(read_response(&mut reader).is_none(), "the server closes");
}

#[test]
fn http_1_0_gets_no_chunked_encoding() {
    let (_mock, proxy) = setup();
    let raw = b"GET /v1/models HTTP/1.0\r\n\r\n";
    let r = roundtrip(proxy.port, &proxy.ca_path(), raw);
    assert_eq!(r.version, "HTTP/1.0");
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_some());
    assert_eq!(r.json()["object"], "list");

    let body = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = roundtrip(proxy.port, &proxy.ca_path(), raw.as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), None, "RFC 9112 §6.1");
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));
}

#[test]
fn expect_100_continue_and_chunked_request_bodies() {
    let (mock, proxy) = setup();
    let body = r#"{"model":"gpt-4o","messages":[]}"#;
    let mut reader = BufReader::new(connect(proxy.port, &proxy.ca_path()));
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    reader.get_mut().write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    reader.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    reader.get_mut().write_all(body.as_bytes()).unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);

    // Chunked, with a chunk extension and a trailer.
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nX-Trailer: t\r\n\r\n",
        a.len(),
        b.len()
    );
    reader.get_mut().write_all(raw.as_bytes()).unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(mock.requests()[1].body, mock.requests()[0].body);
}

#[test]
fn post_without_length_has_an_empty_body_and_does_not_hang() {
    let (_mock, proxy) = setup();
    let started = Instant::now();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn oversized_body_is_413_without_reading_it() {
    let (mock, proxy) = setup_limit();
    let mut reader = BufReader::new(connect(proxy.port, &proxy.ca_path()));
    reader
        .get_mut()
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n{\"model\":")
        .unwrap();
    let r = read_response(&mut reader).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    assert_eq!(r.header("connection"), Some("close"));

    // Chunked bodies are counted as they arrive.
    let mut reader = BufReader::new(connect(proxy.port, &proxy.ca_path()));
    let big = "x".repeat(3000);
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n",
        big.len()
    );
    reader.get_mut().write_all(raw.as_bytes()).unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 413);
    assert!(mock.requests().is_empty());
    assert_eq!(
        roundtrip(proxy.port, &proxy.ca_path(), &get_request("/v1/models")).status,
        200
    );
}

fn setup_limit() -> (crate::mock::Mock, crate::harness::Proxy) {
    crate::setup_with("  max_body_bytes: 2048\n")
}

#[test]
fn oversized_or_too_many_headers_are_431() {
    let (_mock, proxy) = setup();
    let huge = format!(
        "GET /v1/models HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let r = roundtrip(proxy.port, &proxy.ca_path(), huge.as_bytes());
    assert_eq!(r.status, 431);
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        format!("GET /v1/models HTTP/1.1\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"]["code"], "request_header_too_large");
}

#[test]
fn malformed_requests_get_400_and_the_server_keeps_serving() {
    let (mock, proxy) = setup();
    let cases: &[&[u8]] = &[
        b"THIS IS NOT HTTP\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nNoColonHere\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ];
    for raw in cases {
        let r = roundtrip(proxy.port, &proxy.ca_path(), raw);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(raw));
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        assert_eq!(r.header("connection"), Some("close"));
    }
    // Non-ASCII header values are carried as bytes, not rejected.
    let raw = "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Name: Jürgen\r\n\r\n";
    assert_eq!(
        roundtrip(proxy.port, &proxy.ca_path(), raw.as_bytes()).status,
        200
    );
    assert!(mock.requests().is_empty());
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"gpt-4o","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn garbage_instead_of_tls_is_dropped_and_the_server_keeps_serving() {
    let (_mock, proxy) = setup();
    let mut sock = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    assert!(
        !buf.starts_with(b"HTTP/"),
        "no plaintext HTTP on the TLS port"
    );
    assert_eq!(
        roundtrip(proxy.port, &proxy.ca_path(), &get_request("/v1/models")).status,
        200
    );
}

#[test]
fn alpn_serves_http_1_0_only_clients_and_picks_http_1_1_over_h2() {
    // curl --http1.0 offers only "http/1.0"; refusing it was a handshake failure.
    let (_mock, proxy) = setup();
    let mut tls = connect_alpn(proxy.port, &proxy.ca_path(), &["http/1.0"]).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.0"[..]));
    tls.write_all(b"GET /v1/models HTTP/1.0\r\nHost: api.openai.com\r\n\r\n")
        .unwrap();
    let r = read_response(&mut BufReader::new(tls)).unwrap();
    assert_eq!((r.version.as_str(), r.status), ("HTTP/1.0", 200));
    assert_eq!(r.json()["object"], "list");
    for offer in [
        &["h2", "http/1.1"][..],
        &["http/1.1", "http/1.0"],
        &["h2", "http/1.0", "http/1.1"],
    ] {
        let tls = connect_alpn(proxy.port, &proxy.ca_path(), offer).unwrap();
        assert_eq!(
            tls.conn.alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "{offer:?}"
        );
    }
    // Only h2: no protocol in common, refused as before (RFC 7301 section 3.2).
    assert!(connect_alpn(proxy.port, &proxy.ca_path(), &["h2"]).is_err());
}

#[test]
fn chain_includes_the_ca_and_clients_without_sni_are_served() {
    let (_mock, proxy) = setup();
    let tls = connect(proxy.port, &proxy.ca_path());
    let certs = tls.conn.peer_certificates().unwrap();
    assert_eq!(certs.len(), 2, "leaf + CA");
    assert_eq!(tls.conn.alpn_protocol(), None, "client offered no ALPN");
    // By IP: no SNI is sent; the leaf's IP SAN makes it verify.
    let mut tls = connect_as(proxy.port, &proxy.ca_path(), "127.0.0.1");
    tls.write_all(&get_request("/v1/models")).unwrap();
    let r = read_response(&mut BufReader::new(tls)).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn slow_request_head_gets_408() {
    let (_mock, proxy) = setup_with_head_timeout();
    let mut tls = connect(proxy.port, &proxy.ca_path());
    tls.write_all(b"GET /v1/mo").unwrap();
    tls.flush().unwrap();
    let started = Instant::now();
    let r = read_response(&mut BufReader::new(tls)).unwrap();
    assert_eq!(r.status, 408);
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn setup_with_head_timeout() -> (crate::mock::Mock, crate::harness::Proxy) {
    crate::setup_with("  request_head_timeout: 1\n")
}

#[test]
fn connection_that_never_handshakes_is_closed_after_the_head_timeout() {
    let (_mock, proxy) = setup_with_head_timeout();
    let mut sock = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = sock.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    assert_eq!(n, 0, "closed without a byte");
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "closed too late: {took:?}");
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_mock, proxy) = crate::setup_with("  idle_timeout: 1\n");
    let mut reader = BufReader::new(connect(proxy.port, &proxy.ca_path()));
    reader
        .get_mut()
        .write_all(&get_request("/v1/models"))
        .unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
    let started = Instant::now();
    assert!(
        read_response(&mut reader).is_none(),
        "the server closes the idle connection"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[test]
fn a_body_that_follows_its_head_slowly_is_waited_for_on_a_kept_alive_connection() {
    // The worker waits only briefly for a next request before parking the connection; a body
    // still on its way must get the full client I/O timeout, on the first request and on the
    // ones after.
    let (_mock, proxy) = setup();
    let mut reader = BufReader::new(connect(proxy.port, &proxy.ca_path()));
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..3 {
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let tls = reader.get_mut();
        tls.write_all(head.as_bytes()).unwrap();
        tls.flush().unwrap();
        std::thread::sleep(Duration::from_millis(150));
        tls.write_all(&body.as_bytes()[..10]).unwrap();
        tls.flush().unwrap();
        std::thread::sleep(Duration::from_millis(150));
        tls.write_all(&body.as_bytes()[10..]).unwrap();
        tls.flush().unwrap();
        let r = read_response(&mut reader).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["object"], "chat.completion");
    }
}

#[test]
fn a_missing_or_doubled_host_is_400() {
    // RFC 9112 section 3.2: an HTTP/1.1 request needs exactly one Host; none may have two.
    let (mock, proxy) = setup();
    for raw in [
        &b"GET /v1/models HTTP/1.1\r\n\r\n"[..],
        b"GET /v1/models HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /v1/models HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
    ] {
        let r = roundtrip(proxy.port, &proxy.ca_path(), raw);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(raw));
        assert_eq!(r.json()["error"]["code"], "malformed_request");
        assert!(r.text().contains("Host"), "{}", r.text());
    }
    // HTTP/1.0 may leave it out.
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        b"GET /v1/models HTTP/1.0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(mock.requests().is_empty());
}

#[test]
fn json_nested_deeper_than_128_levels_is_400_and_up_to_it_is_served() {
    // serde_json's recursion limit: the docs promise it, and a worker's stack must hold it.
    let (mock, proxy) = setup();
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    // The body object itself is one level.
    let body = format!(r#"{{"model":"gpt-4o","messages":[],"x":{}}}"#, nested(127));
    let r = roundtrip(proxy.port, &proxy.ca_path(), &chat_request(&body, ""));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = format!(r#"{{"model":"gpt-4o","messages":[],"x":{}}}"#, nested(128));
    let r = roundtrip(proxy.port, &proxy.ca_path(), &chat_request(&body, ""));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "invalid_json");
    // The message names the limit the scan enforces.
    assert!(r.text().contains("deeper than 128 levels"), "{}", r.text());
    assert_eq!(mock.requests().len(), 1, "only the first went upstream");
}
