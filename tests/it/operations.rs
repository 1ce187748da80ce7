//! Running unattended: metrics and health on the admin listener, flaky backends, slow readers,
//! connection limits, broken request bodies, and no leaks after a mixed load.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::client::{chat_request, connect, get_request, read_response, roundtrip};
use crate::harness::{Proxy, config_yaml, emulated, rss_kib};
use crate::mock::Mock;
use crate::{setup_with, standard_apis};

pub fn admin_get(port: u16, path: &str) -> (String, String) {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(sock, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    sock.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn admin_port(proxy: &Proxy) -> u16 {
    proxy.logged_port("admin listener")
}

#[test]
fn metrics_and_health_are_served_on_the_admin_listener_only() {
    let (mock, mock2) = (Mock::start(), Mock::start());
    let apis = format!(
        r#"  - {{name: main, endpoint: "{}", custom_model_id: m, target_model_id: chat}}
  - {{name: down, endpoint: "http://127.0.0.1:{}", custom_model_id: p, target_model_id: chat}}
  - {{name: up, endpoint: "{}", custom_model_id: p, target_model_id: chat}}"#,
        mock.url(),
        crate::closed_port(),
        mock2.url()
    );
    let proxy = Proxy::start(&config_yaml("", &apis, "  admin_bind: 127.0.0.1:0\n"));
    let port = admin_port(&proxy);
    let ca = proxy.ca_path();
    roundtrip(
        proxy.port,
        &ca,
        &chat_request(r#"{"model":"m","messages":[]}"#, ""),
    );
    roundtrip(
        proxy.port,
        &ca,
        &chat_request(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
            "",
        ),
    );
    roundtrip(
        proxy.port,
        &ca,
        &chat_request(r#"{"model":"p","messages":[]}"#, ""),
    );
    roundtrip(
        proxy.port,
        &ca,
        &chat_request(r#"{"model":"nope","messages":[]}"#, ""),
    );

    assert_eq!(
        admin_get(port, "/healthz"),
        ("HTTP/1.1 200 OK".to_owned(), "ok\n".to_owned())
    );
    let (status, text) = admin_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for line in [
        r#"trae_proxy_requests_total{backend="main",model="m",key="-",status="200"} 2"#,
        r#"trae_proxy_requests_total{backend="up",model="p",key="-",status="200"} 1"#,
        r#"trae_proxy_requests_total{backend="-",model="-",key="-",status="404"} 1"#,
        r#"trae_proxy_tokens_total{backend="main",model="m",key="-",kind="prompt"} 22"#,
        r#"trae_proxy_tokens_total{backend="main",model="m",key="-",kind="completion"} 44"#,
        r#"trae_proxy_upstream_ttfb_seconds_count{backend="main"} 2"#,
        r#"trae_proxy_upstream_duration_seconds_count{backend="up"} 1"#,
        "trae_proxy_failovers_total 1",
        r#"trae_proxy_cooldowns_total{backend="down"} 1"#,
        "trae_proxy_in_flight_requests 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
    assert!(text.contains("trae_proxy_open_connections "));
    // Not on the public port.
    let r = roundtrip(proxy.port, &ca, &get_request("/metrics"));
    assert_eq!(r.status, 404);
}

#[test]
fn backend_silent_mid_stream_ends_the_stream_with_an_error_after_the_read_timeout() {
    let apis = r#"  - {name: staller, endpoint: "{UPSTREAM}", custom_model_id: stall, target_model_id: stall}"#;
    let mock = Mock::start();
    let proxy = Proxy::start(&config_yaml(&mock.url(), apis, "  read_timeout: 1\n"));
    let started = Instant::now();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"stall","stream":true,"messages":[]}"#, ""),
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(!r.complete);
    let last: serde_json::Value = serde_json::from_str(r.sse_data().last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout");
}

#[test]
fn garbage_labelled_as_a_stream_is_survived() {
    let apis = r#"  - {name: g, endpoint: "{UPSTREAM}", custom_model_id: g, target_model_id: garbage-sse}"#;
    let mock = Mock::start();
    let proxy2 = Proxy::start(&config_yaml(&mock.url(), apis, ""));
    let r = roundtrip(
        proxy2.port,
        &proxy2.ca_path(),
        &chat_request(r#"{"model":"g","stream":true,"messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));
    // And the non-streaming client gets a (thin) reply rather than a crash.
    let r = roundtrip(
        proxy2.port,
        &proxy2.ca_path(),
        &chat_request(r#"{"model":"g","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "chat.completion");
}

#[test]
fn slow_reader_gets_backpressure_not_a_growing_buffer() {
    let apis = r#"  - {name: f, endpoint: "{UPSTREAM}", custom_model_id: flood, target_model_id: flood}
  - {name: c, endpoint: "{UPSTREAM}", custom_model_id: gpt-4o, target_model_id: chat}"#;
    let mock = Mock::start();
    let proxy = Proxy::start(&config_yaml(&mock.url(), apis, ""));
    // One short stream first, so what is measured is buffering, not first-use costs (a worker's
    // stack, TLS and HTTP buffers; under qemu, 4 MiB of freshly translated code).
    let warm_up = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#, ""),
    );
    assert!(warm_up.complete);
    let before = rss_kib(proxy.pid());
    let mut tls = connect(proxy.port, &proxy.ca_path());
    tls.write_all(&chat_request(
        r#"{"model":"flood","stream":true,"messages":[]}"#,
        "",
    ))
    .unwrap();
    // Read nothing for a while: the backend has 16 MB to send.
    std::thread::sleep(Duration::from_millis(1500));
    let stalled = rss_kib(proxy.pid());
    let r = read_response(&mut BufReader::new(tls)).unwrap();
    assert!(r.complete);
    let events = r.sse_data();
    assert_eq!(events.len(), 4001, "every event arrives after the stall");
    let growth = stalled.saturating_sub(before);
    assert!(
        growth < 8 * 1024,
        "RSS grew {growth} KiB while the client did not read"
    );
}

#[test]
fn connection_cap_refuses_with_a_log_line_and_recovers() {
    let mock = Mock::start();
    let proxy = Proxy::start(&config_yaml(
        &mock.url(),
        &standard_apis(),
        "  max_connections: 20\n  max_connections_per_client: 100\n",
    ));
    // 30 connections that never handshake: none is idle, so none can make room.
    let held: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(("127.0.0.1", proxy.port)).unwrap())
        .collect();
    let log = proxy.wait_for_log("connection limit reached");
    assert!(
        log.contains("connection limit reached (server.max_connections = 20)"),
        "{log}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let r = roundtrip(proxy.port, &proxy.ca_path(), &get_request("/v1/models"));
    assert_eq!(r.status, 200);
}

#[test]
fn truncated_request_bodies_do_not_hold_a_worker() {
    let mock = Mock::start();
    let proxy = Proxy::start(&config_yaml(
        &mock.url(),
        &standard_apis(),
        "  workers: 1\n",
    ));
    for raw in [
        &b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"model\""[..],
        &b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"model\""[..],
    ] {
        let mut tls = connect(proxy.port, &proxy.ca_path());
        tls.write_all(raw).unwrap();
        tls.flush().unwrap();
        tls.conn.send_close_notify();
        let _ = tls.flush();
        let _ = tls.sock.shutdown(std::net::Shutdown::Write);
    }
    let started = Instant::now();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"gpt-4o","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(3));
}

fn threads_and_fds(pid: u32) -> (usize, usize) {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (threads, fds)
}

#[test]
fn mixed_load_with_failures_and_disconnects_leaks_no_threads_or_files() {
    let (_mock, proxy) = crate::setup();
    let ca = proxy.ca_path();
    // Warm up: pooled backend connections are expected to stay.
    roundtrip(
        proxy.port,
        &ca,
        &chat_request(r#"{"model":"gpt-4o","messages":[]}"#, ""),
    );
    std::thread::sleep(Duration::from_millis(200));
    let before = threads_and_fds(proxy.pid());
    for i in 0..60 {
        match i % 5 {
            0 => {
                roundtrip(
                    proxy.port,
                    &ca,
                    &chat_request(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#, ""),
                );
            }
            1 => {
                roundtrip(
                    proxy.port,
                    &ca,
                    &chat_request(r#"{"model":"err500","messages":[]}"#, ""),
                );
            }
            2 => {
                roundtrip(
                    proxy.port,
                    &ca,
                    &chat_request(r#"{"model":"refused","messages":[]}"#, ""),
                );
            }
            3 => {
                // Hang up mid-stream.
                let mut tls = connect(proxy.port, &ca);
                tls.write_all(&chat_request(
                    r#"{"model":"slow","stream":true,"messages":[]}"#,
                    "",
                ))
                .unwrap();
                let mut reader = BufReader::new(tls);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
            }
            _ => {
                roundtrip(
                    proxy.port,
                    &ca,
                    &chat_request(r#"{"model":"drop","stream":true,"messages":[]}"#, ""),
                );
            }
        }
    }
    // The abandoned slow streams end within their 1.6 s, workers started for the load retire 5 s
    // after (pool.rs, IDLE_RETIRE), idle connections close. What is asserted must then hold for
    // a second; the deadline leaves room for a loaded machine running the suite in parallel (a
    // 10 s one, waiting for exactly the starting counts, failed about once in ten suite runs).
    std::thread::sleep(Duration::from_secs(2));
    // Under wine the count includes wine's own helper threads (asynchronous I/O), which come
    // and go: there, no more than before is what a leak would break.
    let threads_back = |threads: usize| match crate::harness::windows() {
        true => threads <= before.0,
        false => threads == before.0,
    };
    let settled = |(threads, fds): (usize, usize)| threads_back(threads) && fds <= before.1 + 2;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut settled_since = None;
    let after = loop {
        let now = threads_and_fds(proxy.pid());
        if !settled(now) {
            settled_since = None;
        } else if settled_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1)
        {
            break now;
        }
        if Instant::now() >= deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(threads_back(after.0), "threads: {before:?} -> {after:?}");
    assert!(
        after.1 <= before.1 + 2,
        "open files: {before:?} -> {after:?}"
    );
}

/// A burst of concurrent streams starts a worker each; once they have ended, the memory they
/// used must go back. glibc keeps what its arenas freed unless told otherwise (a glibc build
/// stayed 14 MiB above idle after 256 streams before thread_cache::limit_arenas and ::trim);
/// musl's allocator gives it back by itself.
#[test]
fn memory_goes_back_after_a_burst_of_concurrent_streams() {
    const STREAMS: usize = 128;
    let (_mock, proxy) = setup_with("  workers: 256\n");
    let ca = proxy.ca_path();
    let slow_stream = chat_request(r#"{"model":"slow","stream":true,"messages":[]}"#, "");
    // First use of the streaming path (under qemu: its translated code) is not the burst's.
    assert!(roundtrip(proxy.port, &ca, &slow_stream).complete);
    let (threads_before, _) = threads_and_fds(proxy.pid());
    let before = rss_kib(proxy.pid());

    let clients: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (ca, request) = (ca.clone(), slow_stream.clone());
            let port = proxy.port;
            std::thread::spawn(move || roundtrip(port, &ca, &request).complete)
        })
        .collect();
    // Sampled until the last client is done, not at one moment: 128 handshakes take a debug
    // build on a slow CI machine (or qemu) longer than any fixed wait.
    let (mut threads_during, mut during) = (0, 0);
    while clients.iter().any(|c| !c.is_finished()) {
        threads_during = threads_during.max(threads_and_fds(proxy.pid()).0);
        during = during.max(rss_kib(proxy.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let completed = clients
        .into_iter()
        .map(|c| c.join().unwrap_or(false))
        .filter(|&complete| complete)
        .count();
    assert_eq!(completed, STREAMS);
    assert!(
        threads_during >= threads_before + STREAMS / 2,
        "the burst should have run on its own workers: {threads_before} -> {threads_during} threads"
    );

    // Workers retire 5 s after their last request (pool.rs, IDLE_RETIRE); the last of them
    // trims the allocator 200 ms later.
    let deadline = Instant::now() + Duration::from_secs(20);
    while threads_and_fds(proxy.pid()).0 > threads_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(600));
    // At most as many as before, not exactly: the proxy's first threads are still starting as
    // it begins to serve (4 counted then, 6 once idle), so the warm-up request can start a
    // worker of its own, which retires with the burst's (CI: 7 threads before, 6 after).
    let threads_after = threads_and_fds(proxy.pid()).0;
    assert!(
        threads_after <= threads_before,
        "the burst's workers should have ended: {threads_before} -> {threads_after} threads"
    );
    let after = rss_kib(proxy.pid());
    if emulated() {
        // qemu-user's RSS is its own: it kept 45 MiB of its allocator's and translator's memory
        // for the 128 guest threads that came and went (the same musl build natively: 1 MiB).
        eprintln!("RSS not judged under an emulator: {before} -> {after} KiB");
        return;
    }
    let kept = after.saturating_sub(before);
    // Debug glibc build: 2.5 MiB kept, 8.4 MiB without the arena cap and trim; static musl
    // build: 1.0-1.3 MiB.
    assert!(
        kept < 5 * 1024,
        "RSS {before} KiB before, {during} KiB during the burst, {after} KiB after: {kept} KiB kept"
    );
}

#[test]
fn model_names_with_newlines_or_escapes_cannot_forge_access_log_lines() {
    let (_mock, proxy) = crate::setup();
    let body = r#"{"model":"gpt-4o\nINFO  [trae_proxy::proxy] GET /forged status=200\u001b[31m","messages":[]}"#;
    let r = roundtrip(proxy.port, &proxy.ca_path(), &chat_request(body, ""));
    assert_eq!(r.status, 404);
    let log = proxy.wait_for_log("POST /v1/chat/completions status=404");
    assert!(
        !log.lines()
            .any(|l| l.contains("INFO  [trae_proxy::proxy] GET /forged") && !l.contains("POST")),
        "a forged line:\n{log}"
    );
    assert!(log.contains(r#"model="gpt-4o\u{a}INFO"#), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no raw escape character in the log"
    );
}
