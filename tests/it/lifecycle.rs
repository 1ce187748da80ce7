//! Signals: a graceful stop lets streams finish, a second signal ends at once, SIGHUP reloads
//! without disturbing streams in flight and refuses a broken config.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::client::{chat_request, connect, get_request, read_response, roundtrip};
use crate::harness::{Proxy, config_yaml};
use crate::mock::Mock;
use crate::standard_apis;

/// Starts a slow stream (8 events, 200 ms apart) and returns once its head has arrived.
fn start_slow_stream(proxy: &Proxy) -> std::thread::JoinHandle<crate::client::Response> {
    let port = proxy.port;
    let ca = proxy.ca_path();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut tls = connect(port, &ca);
        tls.write_all(&chat_request(
            r#"{"model":"slow","stream":true,"messages":[]}"#,
            "",
        ))
        .unwrap();
        tx.send(()).unwrap();
        read_response(&mut BufReader::new(tls)).unwrap()
    });
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    handle
}

/// A request to the backend that never answers, left running in the background.
fn start_hanging_request(proxy: &Proxy) {
    let port = proxy.port;
    let ca = proxy.ca_path();
    std::thread::spawn(move || {
        roundtrip(
            port,
            &ca,
            &chat_request(r#"{"model":"hang","messages":[]}"#, ""),
        );
    });
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn sigterm_lets_streams_finish_refuses_new_connections_and_exits_0() {
    if crate::harness::not_on_windows("signals") {
        return;
    }
    let mock = Mock::start();
    let mut proxy = Proxy::start(&config_yaml(&mock.url(), &standard_apis(), ""));
    // An idle keep-alive connection must not hold the exit up.
    let mut idle = BufReader::new(connect(proxy.port, &proxy.ca_path()));
    idle.get_mut()
        .write_all(&get_request("/v1/models"))
        .unwrap();
    assert_eq!(read_response(&mut idle).unwrap().status, 200);

    let stream = start_slow_stream(&proxy);
    let stopped_at = Instant::now();
    proxy.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        TcpStream::connect(("127.0.0.1", proxy.port)).is_err(),
        "no new connections while draining"
    );
    let r = stream.join().unwrap();
    assert!(r.complete, "the stream in flight finished cleanly");
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(stopped_at.elapsed() < Duration::from_secs(8));
    assert!(
        read_response(&mut idle).is_none(),
        "the idle connection was closed"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let mock = Mock::start();
    let mut proxy = Proxy::start(&config_yaml(
        &mock.url(),
        &standard_apis(),
        "  first_byte_timeout: 60\n",
    ));
    start_hanging_request(&proxy);
    proxy.signal("INT");
    assert_eq!(
        proxy.wait_exit(Duration::from_millis(500)),
        None,
        "still draining"
    );
    let second = Instant::now();
    proxy.signal("INT");
    assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(1));
    assert!(second.elapsed() < Duration::from_secs(2));
}

#[test]
fn drain_gives_up_after_the_shutdown_timeout() {
    if crate::harness::not_on_windows("signals") {
        return;
    }
    let mock = Mock::start();
    let mut proxy = Proxy::start(&config_yaml(
        &mock.url(),
        &standard_apis(),
        "  first_byte_timeout: 60\n  shutdown_timeout: 1\n",
    ));
    start_hanging_request(&proxy);
    let stopped_at = Instant::now();
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
    let took = stopped_at.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        proxy
            .log()
            .contains("still running after server.shutdown_timeout")
    );
}

#[test]
fn sighup_reloads_for_new_requests_and_leaves_streams_alone() {
    if crate::harness::not_on_windows("signals; `reload` is tested instead") {
        return;
    }
    let mock = Mock::start();
    let yaml = config_yaml(&mock.url(), &standard_apis(), "");
    let mut proxy = Proxy::start(&yaml);
    let stream = start_slow_stream(&proxy);

    let extra = format!(
        "{}\n  - {{name: added, endpoint: \"{}\", custom_model_id: added-model, target_model_id: chat}}",
        standard_apis(),
        mock.url()
    );
    proxy.write_config(&config_yaml(&mock.url(), &extra, "").replace("workers: 2", ""));
    proxy.signal("HUP");
    let log = proxy.wait_for_log("reloaded");
    assert!(log.contains("reloaded"), "{log}");
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"added-model","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200, "the new entry serves at once");

    // A broken file is refused; the running configuration goes on.
    proxy.write_config("apis: [this is: not valid");
    proxy.signal("HUP");
    let log = proxy.wait_for_log("reload of");
    assert!(
        log.contains("failed; the running configuration stays"),
        "{log}"
    );
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"added-model","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200);

    let streamed = stream.join().unwrap();
    assert!(
        streamed.complete,
        "the stream begun before the reloads finished cleanly"
    );
    assert_eq!(streamed.sse_data().len(), 9, "8 chunks and [DONE]");
    assert!(proxy.is_running());
}

#[test]
fn with_its_log_pipe_closed_the_proxy_serves_reloads_and_stops_on_sigterm() {
    if crate::harness::not_on_windows("signals") {
        return;
    }
    // A log shipper restarts, `| tee` dies: stderr is a pipe with no reader. Every log write
    // fails from then on; that must cost the log line, not a thread (the signal thread among
    // them: SIGTERM used to be ignored after its first failed write).
    let mock = Mock::start();
    let mut proxy = Proxy::start_with_log_closed(&config_yaml(
        &mock.url(),
        &standard_apis(),
        "  admin_bind: 127.0.0.1:0\n",
    ));
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let r = roundtrip(
            proxy.port,
            &proxy.ca_path(),
            &chat_request(r#"{"model":"gpt-4o","messages":[]}"#, ""),
        );
        assert_eq!(r.status, 200);
    }
    proxy.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let r = roundtrip(proxy.port, &proxy.ca_path(), &get_request("/v1/models"));
    assert_eq!(r.status, 200, "still serving after the reload");
    let (_, metrics) =
        crate::operations::admin_get(proxy.logged_port("admin listener"), "/metrics");
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("trae_proxy_log_lines_dropped_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped >= 4, "the lost lines are counted: {dropped}");
    proxy.signal("TERM");
    assert_eq!(
        proxy.wait_exit(Duration::from_secs(10)),
        Some(0),
        "SIGTERM still stops it"
    );
}

/// `trae-proxy reload`, the way to reload on every OS: it asks the admin listener, which
/// answers with the outcome; a broken file is reported to the command with what to fix.
#[test]
fn the_reload_command_reloads_through_the_admin_listener_and_reports_a_broken_file() {
    let mock = Mock::start();
    let admin = "  admin_bind: 127.0.0.1:0\n";
    let mut proxy = Proxy::start(&config_yaml(&mock.url(), &standard_apis(), admin));
    // The command reads admin_bind from the file: give it the port the proxy got.
    let port = proxy.logged_port("admin listener");
    let admin = format!("  admin_bind: 127.0.0.1:{port}\n");
    let config = proxy.dir().join("config.yaml");
    let config = config.to_str().unwrap().to_owned();
    let extra = format!(
        "{}\n  - {{name: added, endpoint: \"{}\", custom_model_id: added-model, target_model_id: chat}}",
        standard_apis(),
        mock.url()
    );
    proxy.write_config(&config_yaml(&mock.url(), &extra, &admin));
    let (code, out, err) = crate::harness::run(&["reload", "--config", &config], proxy.dir());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("reloaded") && out.contains("added-model"),
        "{out}"
    );
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"added-model","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200, "the new entry serves at once");

    // A file the proxy cannot use (a certificate folder that is a file): the command fails
    // with the proxy's reason, and the running configuration stays.
    std::fs::write(proxy.dir().join("not-a-dir"), "x").unwrap();
    let broken = config_yaml(&mock.url(), &extra, &admin)
        .replace("server:\n", "server:\n  cert_dir: not-a-dir\n");
    proxy.write_config(&broken);
    let (code, _, err) = crate::harness::run(&["reload", "--config", &config], proxy.dir());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the running configuration stays"), "{err}");
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"added-model","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200);

    // Without an admin listener the command says what to do.
    proxy.write_config(&config_yaml(&mock.url(), &extra, ""));
    let (code, _, err) = crate::harness::run(&["reload", "--config", &config], proxy.dir());
    assert_eq!(code, 1);
    assert!(
        err.contains("admin_bind") && err.contains("kill -HUP"),
        "{err}"
    );
    assert!(proxy.is_running());
}
