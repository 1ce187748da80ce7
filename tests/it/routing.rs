//! Backend pools: weighted spread, failover, cool-down, catch-all; per-backend keys, headers,
//! timeouts, upstream proxies and CA files; access keys; every model-bearing endpoint; extra
//! domains.

use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{Response, chat_request, connect_as, get_request, read_response, roundtrip};
use crate::closed_port;
use crate::harness::{Proxy, TempDir, config_yaml};
use crate::mock::Mock;
use crate::tunnel::Tunnel;

fn chat(proxy: &Proxy, model: &str) -> Response {
    roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(&format!(r#"{{"model":"{model}","messages":[]}}"#), ""),
    )
}

fn start(apis: &str, server_extra: &str) -> Proxy {
    Proxy::start(&config_yaml("unused", apis, server_extra))
}

/// A mock backend and a proxy that sends model `m` to it as `target`.
fn one_backend(target: &str) -> (Mock, Proxy) {
    let mock = Mock::start();
    let proxy = start(
        &format!(
            r#"  - {{name: a, endpoint: "{}", custom_model_id: m, target_model_id: {target}}}"#,
            mock.url()
        ),
        "",
    );
    (mock, proxy)
}

/// `clients` streams of model `m` started together; each must end with `[DONE]`. With
/// `chat-slow` (200 ms between events, over a second) all are at the backend at once, even
/// under emulation.
fn streams_at_once(proxy: &Proxy, clients: usize) {
    let stream = chat_request(r#"{"model":"m","stream":true,"messages":[]}"#, "");
    let barrier = std::sync::Barrier::new(clients);
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                barrier.wait();
                let reply = roundtrip(proxy.port, &proxy.ca_path(), &stream);
                assert_eq!(reply.status, 200);
                assert!(reply.text().contains("[DONE]"));
            });
        }
    });
}

#[test]
fn pool_spreads_requests_by_weight() {
    let (a, b) = (Mock::start(), Mock::start());
    let proxy = start(
        &format!(
            r#"  - {{name: a, endpoint: "{}", custom_model_id: pooled, target_model_id: chat, weight: 3}}
  - {{name: b, endpoint: "{}", custom_model_id: pooled, target_model_id: chat}}"#,
            a.url(),
            b.url()
        ),
        "",
    );
    for _ in 0..40 {
        assert_eq!(chat(&proxy, "pooled").status, 200);
    }
    let (na, nb) = (a.requests().len(), b.requests().len());
    assert!(
        (28..=32).contains(&na) && (8..=12).contains(&nb),
        "a={na} b={nb}"
    );
    // The model list shows the pool once.
    let models = roundtrip(proxy.port, &proxy.ca_path(), &get_request("/v1/models")).json();
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
}

/// A team's worth of requests at once to one backend reuse their backend connections round
/// after round: with 8 kept per backend, every round after the first opened 8 new ones (a TCP
/// and, for a remote backend, a TLS handshake each) and closed 8 others.
#[test]
fn sixteen_requests_at_once_keep_their_backend_connections() {
    const CLIENTS: usize = 16;
    let (mock, proxy) = one_backend("chat-slow");
    let mut after_round = Vec::new();
    for _ in 0..3 {
        streams_at_once(&proxy, CLIENTS);
        after_round.push(mock.connections());
    }
    assert!(
        after_round[0] >= CLIENTS,
        "the first round needs a connection per stream: {after_round:?}"
    );
    assert_eq!(
        after_round[2], after_round[0],
        "later rounds opened backend connections: {after_round:?}"
    );
}

/// After a burst the backend connections beyond four are closed once none has been used for a
/// few seconds; four stay for the next requests. (Kept for 50 s, all of a burst's held their
/// buffers, and the backend its sockets.)
#[test]
fn a_burst_s_surplus_backend_connections_close_after_a_quiet_spell() {
    const CLIENTS: usize = 8;
    let (mock, proxy) = one_backend("chat-slow");
    streams_at_once(&proxy, CLIENTS);
    assert_eq!(mock.open(), CLIENTS, "a stream's connection was not kept");
    // Four seconds quiet, and the workers' next idle turn (5 s after their first).
    let deadline = Instant::now() + Duration::from_secs(20);
    while mock.open() > 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(mock.open(), 4, "the quiet surplus was not closed");
}

/// Requests one at a time, each on a new client connection with a pause between them, reuse
/// one backend connection, whichever worker serves them: a worker idle for a moment gives its
/// kept backend connection to the others.
#[test]
fn requests_one_at_a_time_reuse_one_backend_connection_whichever_worker_serves_them() {
    let (mock, proxy) = one_backend("chat");
    let request = chat_request(r#"{"model":"m","messages":[]}"#, "");
    for _ in 0..6 {
        let reply = roundtrip(proxy.port, &proxy.ca_path(), &request);
        assert_eq!(reply.status, 200);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        mock.connections(),
        1,
        "requests one at a time opened backend connections"
    );
}

/// An agent's tool loop: requests on one client connection with pauses of 40 ms between them,
/// longer than a worker waits on a connection (so it is parked in between) and shorter than it
/// takes a worker to give its backend connection to the others. The worker that served the
/// last request is the one that takes the next, and reuses its own backend connection: idle
/// workers are woken most recent first, not in turn.
#[test]
fn a_tool_loop_on_one_connection_reuses_one_backend_connection() {
    let (mock, proxy) = one_backend("chat");
    let request = chat_request(r#"{"model":"m","messages":[]}"#, "");
    let mut reader = BufReader::new(crate::client::connect(proxy.port, &proxy.ca_path()));
    for _ in 0..6 {
        reader.get_mut().write_all(&request).unwrap();
        reader.get_mut().flush().unwrap();
        let reply = read_response(&mut reader).unwrap();
        assert_eq!(reply.status, 200);
        std::thread::sleep(Duration::from_millis(40));
    }
    assert_eq!(
        mock.connections(),
        1,
        "a tool loop's requests opened backend connections"
    );
}

#[test]
fn failover_past_refused_and_500_backends_then_skip_them_while_cooling() {
    let (failing, good) = (Mock::start(), Mock::start());
    let proxy = start(
        &format!(
            r#"  - {{name: refused, endpoint: "http://127.0.0.1:{}", custom_model_id: fo, target_model_id: chat}}
  - {{name: broken, endpoint: "{}", custom_model_id: fo, target_model_id: status-500}}
  - {{name: good, endpoint: "{}", custom_model_id: fo, target_model_id: chat}}"#,
            closed_port(),
            failing.url(),
            good.url()
        ),
        "  cooldown: 60\n",
    );
    let r = chat(&proxy, "fo");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "fo");
    assert_eq!(failing.requests().len(), 1);
    assert!(
        proxy
            .wait_for_log("backend=good failovers=2")
            .contains("backend=good failovers=2")
    );
    for _ in 0..5 {
        assert_eq!(chat(&proxy, "fo").status, 200);
    }
    assert_eq!(
        failing.requests().len(),
        1,
        "the failed backend is skipped while cooling"
    );
    assert_eq!(good.requests().len(), 6);
    let log = proxy.wait_for_log("cooling down for 60s");
    assert!(log.contains("cooling down for 60s"), "{log}");
}

#[test]
fn client_errors_are_not_retried() {
    let (bad, good) = (Mock::start(), Mock::start());
    let proxy = start(
        &format!(
            r#"  - {{name: bad, endpoint: "{}", custom_model_id: p, target_model_id: status-400}}
  - {{name: good, endpoint: "{}", custom_model_id: p, target_model_id: chat}}"#,
            bad.url(),
            good.url()
        ),
        "",
    );
    let r = chat(&proxy, "p");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], "bad messages");
    assert!(good.requests().is_empty());
    // And a 400 does not cool the backend down: the next request starts with it again.
    let _ = chat(&proxy, "p");
    let _ = chat(&proxy, "p");
    assert_eq!(bad.requests().len(), 2, "round-robin still includes it");
}

#[test]
fn rate_limited_backend_is_rested_for_its_retry_after() {
    let (limited, good) = (Mock::start(), Mock::start());
    let proxy = start(
        &format!(
            r#"  - {{name: limited, endpoint: "{}", custom_model_id: p, target_model_id: status-429}}
  - {{name: good, endpoint: "{}", custom_model_id: p, target_model_id: chat}}"#,
            limited.url(),
            good.url()
        ),
        "  failures_before_cooldown: 5\n",
    );
    for _ in 0..4 {
        assert_eq!(chat(&proxy, "p").status, 200);
    }
    assert_eq!(
        limited.requests().len(),
        1,
        "a 429 rests the backend at once"
    );
    assert!(
        proxy
            .log()
            .contains("backend=\"limited\" cooling down for 7s"),
        "{}",
        proxy.log()
    );
}

#[test]
fn when_every_backend_is_cooling_the_least_recently_failed_are_still_tried() {
    let (a, b) = (Mock::start(), Mock::start());
    let proxy = start(
        &format!(
            r#"  - {{name: a, endpoint: "{}", custom_model_id: p, target_model_id: status-500}}
  - {{name: b, endpoint: "{}", custom_model_id: p, target_model_id: status-500}}"#,
            a.url(),
            b.url()
        ),
        "  cooldown: 60\n",
    );
    assert_eq!(
        chat(&proxy, "p").status,
        500,
        "the last backend's answer passes through"
    );
    assert_eq!(chat(&proxy, "p").status, 500, "not refused outright");
    assert_eq!((a.requests().len(), b.requests().len()), (2, 2));
}

#[test]
fn catch_all_entry_serves_unlisted_models_unchanged() {
    let (mock, fallback) = (Mock::start(), Mock::start());
    let proxy = start(
        &format!(
            r#"  - {{name: known, endpoint: "{}", custom_model_id: known, target_model_id: chat}}
  - {{name: anything, endpoint: "{}", custom_model_id: "*", target_model_id: "*"}}"#,
            mock.url(),
            fallback.url()
        ),
        "",
    );
    let r = chat(&proxy, "some/other-model");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "some/other-model");
    assert_eq!(fallback.requests()[0].json()["model"], "some/other-model");
    assert_eq!(chat(&proxy, "known").status, 200);
    assert_eq!(mock.requests().len(), 1);
    let models = roundtrip(proxy.port, &proxy.ca_path(), &get_request("/v1/models")).json();
    assert_eq!(
        models["data"].as_array().unwrap().len(),
        1,
        "\"*\" is not listed"
    );
}

#[test]
fn backend_keys_replace_the_clients_and_extra_headers_are_sent() {
    let mock = Mock::start();
    let dir = TempDir::new("keys");
    let apis = format!(
        r#"  - name: inline
    endpoint: "{url}"
    custom_model_id: inline
    target_model_id: chat
    api_key: sk-inline-key
    headers: {{HTTP-Referer: "https://example.org", X-Title: trae}}
  - name: from-env
    endpoint: "{url}"
    custom_model_id: env
    target_model_id: chat
    api_key_env: TRAE_TEST_BACKEND_KEY
  - name: pass
    endpoint: "{url}"
    custom_model_id: pass
    target_model_id: chat"#,
        url = mock.url()
    );
    let proxy = Proxy::start_in(
        dir,
        &config_yaml("", &apis, ""),
        &[("TRAE_TEST_BACKEND_KEY", "sk-from-env")],
    );
    for model in ["inline", "env", "pass"] {
        assert_eq!(chat(&proxy, model).status, 200);
    }
    let reqs = mock.requests();
    assert_eq!(
        reqs[0].header("authorization"),
        Some("Bearer sk-inline-key")
    );
    assert_eq!(reqs[0].header("http-referer"), Some("https://example.org"));
    assert_eq!(reqs[0].header("x-title"), Some("trae"));
    assert_eq!(reqs[1].header("authorization"), Some("Bearer sk-from-env"));
    assert_eq!(
        reqs[2].header("authorization"),
        Some("Bearer sk-test-key"),
        "pass-through"
    );
    let log = proxy.stop();
    assert!(!log.contains("sk-inline-key") && !log.contains("sk-from-env"));
}

#[test]
fn access_keys_are_required_and_never_forwarded() {
    let mock = Mock::start();
    let apis = format!(
        r#"  - {{name: plain, endpoint: "{0}", custom_model_id: plain, target_model_id: chat}}
  - {{name: keyed, endpoint: "{0}", custom_model_id: keyed, target_model_id: chat, api_key: sk-backend}}"#,
        mock.url()
    );
    let yaml = config_yaml("", &apis, "")
        .replace("apis:", "access_keys: [proxy-key-1, proxy-key-2]\napis:");
    let proxy = Proxy::start(&yaml);
    // chat_request sends "Bearer sk-test-key": not an access key.
    let r = chat(&proxy, "plain");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = roundtrip(proxy.port, &proxy.ca_path(), &get_request("/v1/models"));
    assert_eq!(r.status, 401, "the model list is protected too");
    assert!(mock.requests().is_empty());

    let with_key = |model: &str| {
        let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
        let raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer proxy-key-2\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        roundtrip(proxy.port, &proxy.ca_path(), raw.as_bytes())
    };
    assert_eq!(with_key("plain").status, 200);
    assert_eq!(with_key("keyed").status, 200);
    let reqs = mock.requests();
    assert_eq!(
        reqs[0].header("authorization"),
        None,
        "the access key stays here"
    );
    assert_eq!(reqs[1].header("authorization"), Some("Bearer sk-backend"));
}

#[test]
fn per_backend_timeout_overrides_the_server_default() {
    let mock = Mock::start();
    let proxy = start(
        &format!(
            r#"  - {{name: quick, endpoint: "{}", custom_model_id: h, target_model_id: hang, timeout: {{first_byte: 1}}}}"#,
            mock.url()
        ),
        "  first_byte_timeout: 60\n",
    );
    let started = Instant::now();
    assert_eq!(chat(&proxy, "h").status, 504);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn backends_are_reached_through_their_http_or_socks5_proxy() {
    let mock = Mock::start();
    let (http_proxy, socks) = (Tunnel::http_connect(), Tunnel::socks5());
    let proxy = start(
        &format!(
            r#"  - {{name: via-http, endpoint: "{0}", custom_model_id: h, target_model_id: chat, proxy: "http://127.0.0.1:{1}"}}
  - {{name: via-socks, endpoint: "{0}", custom_model_id: s, target_model_id: chat, proxy: "socks5://127.0.0.1:{2}"}}"#,
            mock.url(),
            http_proxy.port,
            socks.port
        ),
        "",
    );
    assert_eq!(chat(&proxy, "h").status, 200);
    assert_eq!(chat(&proxy, "s").status, 200);
    let target = format!("127.0.0.1:{}", mock.port);
    assert_eq!(*http_proxy.targets.lock().unwrap(), vec![target.clone()]);
    assert_eq!(*socks.targets.lock().unwrap(), vec![target]);
    assert_eq!(mock.requests().len(), 2);
}

#[test]
fn self_hosted_backend_behind_its_own_ca() {
    let mock = Mock::start_tls();
    let dir = TempDir::new("cafile");
    std::fs::write(
        dir.path().join("backend-ca.pem"),
        mock.cert_pem.as_ref().unwrap(),
    )
    .unwrap();
    let apis = format!(
        r#"  - {{name: trusted, endpoint: "{0}", custom_model_id: t, target_model_id: chat, ca_file: backend-ca.pem}}
  - {{name: untrusted, endpoint: "{0}", custom_model_id: u, target_model_id: chat}}"#,
        mock.url()
    );
    let proxy = Proxy::start_in(dir, &config_yaml("", &apis, ""), &[]);
    let r = chat(&proxy, "t");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = chat(&proxy, "u");
    assert_eq!(r.status, 502);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TLS"),
        "{}\n{}",
        r.text(),
        proxy.log()
    );
}

#[test]
fn every_model_bearing_endpoint_is_routed_and_rewritten() {
    let mock = Mock::start();
    let proxy = start(
        &format!(
            r#"  - {{name: m, endpoint: "{}/v1", custom_model_id: client-model, target_model_id: backend-model}}"#,
            mock.url()
        ),
        "",
    );
    let post = |path: &str, body: &str| {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        roundtrip(proxy.port, &proxy.ca_path(), raw.as_bytes())
    };
    for path in ["/v1/embeddings", "/v1/completions", "/v1/moderations"] {
        let r = post(path, r#"{"model":"client-model","input":"x"}"#);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["model"], "client-model", "{path}");
    }
    let r = post(
        "/v1/audio/speech",
        r#"{"model":"client-model","input":"hi","voice":"a"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("audio/mpeg"));
    assert_eq!(
        r.body,
        [0xff, 0xfb, 0x90, 0x00, 0x00, 0x01, 0x02],
        "binary passes untouched"
    );

    let r = post(
        "/v1/responses",
        r#"{"model":"client-model","input":"x","stream":true}"#,
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        text.contains("event: response.created"),
        "named events kept: {text}"
    );
    assert!(text.contains("event: response.completed"));
    assert!(!text.contains("[DONE]"), "Responses streams have no [DONE]");
    let first: Value = serde_json::from_str(&r.sse_data()[0]).unwrap();
    assert_eq!(first["response"]["model"], "client-model");

    let paths: Vec<String> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/v1/embeddings",
            "/v1/completions",
            "/v1/moderations",
            "/v1/audio/speech",
            "/v1/responses"
        ]
    );
    assert!(
        mock.requests()
            .iter()
            .all(|r| r.json()["model"] == "backend-model")
    );
}

#[test]
fn extra_domains_are_in_the_certificate_and_an_old_leaf_is_reissued_for_them() {
    let mock = Mock::start();
    let apis = format!(
        r#"  - {{name: m, endpoint: "{}", custom_model_id: m, target_model_id: chat}}"#,
        mock.url()
    );
    let first = Proxy::start(&config_yaml("", &apis, ""));
    let ca_before = std::fs::read(first.dir().join("ca/ca.crt")).unwrap();
    let dir = first.stop_keep_dir();
    let yaml = config_yaml("", &apis, "").replace(
        "domain: api.openai.com",
        "domain: api.openai.com\ndomains: [api.deepseek.com, openrouter.ai]",
    );
    let proxy = Proxy::start_in(dir, &yaml, &[]);
    let log = proxy.wait_for_log("did not cover api.deepseek.com");
    assert!(log.contains("did not cover api.deepseek.com"), "{log}");
    assert_eq!(
        std::fs::read(proxy.dir().join("ca/ca.crt")).unwrap(),
        ca_before
    );
    for name in ["openrouter.ai", "api.deepseek.com", "api.openai.com"] {
        let mut tls = connect_as(proxy.port, &proxy.ca_path(), name);
        tls.write_all(&get_request("/v1/models")).unwrap();
        assert_eq!(
            read_response(&mut BufReader::new(tls)).unwrap().status,
            200,
            "{name}"
        );
    }
}

#[test]
fn open_relay_is_warned_about_only_when_it_is_one() {
    let apis = r#"  - {name: k, endpoint: "http://127.0.0.1:9", custom_model_id: m, target_model_id: t, api_key: sk-x}"#;
    let loopback = config_yaml("", apis, "");
    let open = loopback.replace("bind: 127.0.0.1", "bind: 0.0.0.0");
    let guarded = open.replace("apis:", "access_keys: [k1]\napis:");
    let warned = |yaml: &str| Proxy::start(yaml).stop().contains("OPEN RELAY");
    assert!(warned(&open));
    assert!(!warned(&loopback));
    assert!(!warned(&guarded));
}

#[test]
fn a_backend_that_closes_after_every_reply_without_saying_so_still_answers_each_request() {
    // Pooled connections are probed before reuse; one the backend closed after its reply
    // must not be reused for the next request, however soon it comes.
    let mock = Mock::start();
    let apis = r#"  - {name: closer, endpoint: "{UPSTREAM}", custom_model_id: gpt-4o, target_model_id: close-after}"#;
    let proxy = Proxy::start(&config_yaml(&mock.url(), apis, ""));
    let mut reader = BufReader::new(connect_as(proxy.port, &proxy.ca_path(), "api.openai.com"));
    for i in 0..20 {
        reader
            .get_mut()
            .write_all(&chat_request(r#"{"model":"gpt-4o","messages":[]}"#, ""))
            .unwrap();
        let r = read_response(&mut reader).unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.json()["model"], "gpt-4o");
    }
    assert_eq!(mock.requests().len(), 20);
}

#[test]
fn a_request_on_a_connection_the_backend_closes_as_it_is_reused_is_sent_again() {
    // The backend's keep-alive timeout can strike after our liveness check: the request goes
    // out on a connection the backend then closes unanswered. It did not apply the request, so
    // the proxy sends it again on a new connection instead of failing the client.
    let mock = Mock::start();
    let apis = r#"  - {name: timer, endpoint: "{UPSTREAM}", custom_model_id: gpt-4o, target_model_id: close-when-reused}"#;
    let proxy = Proxy::start(&config_yaml(&mock.url(), apis, ""));
    five_requests_each_answered(&proxy);
    // The first on a new connection; each later one twice: on the reused connection (closed
    // unanswered), then on a new one.
    assert_eq!(mock.requests().len(), 1 + 2 * 4);
}

#[test]
fn a_tls_backend_closing_a_reused_connection_gets_the_request_again() {
    let mock = Mock::start_tls();
    let dir = TempDir::new("reuse-tls");
    std::fs::write(
        dir.path().join("backend-ca.pem"),
        mock.cert_pem.as_ref().unwrap(),
    )
    .unwrap();
    let apis = format!(
        r#"  - {{name: timer, endpoint: "{}", custom_model_id: gpt-4o, target_model_id: close-when-reused, ca_file: backend-ca.pem}}"#,
        mock.url()
    );
    let proxy = Proxy::start_in(dir, &config_yaml("", &apis, ""), &[]);
    five_requests_each_answered(&proxy);
    assert_eq!(mock.requests().len(), 1 + 2 * 4);
}

fn five_requests_each_answered(proxy: &Proxy) {
    let mut reader = BufReader::new(connect_as(proxy.port, &proxy.ca_path(), "api.openai.com"));
    for i in 0..5 {
        reader
            .get_mut()
            .write_all(&chat_request(r#"{"model":"gpt-4o","messages":[]}"#, ""))
            .unwrap();
        let r = read_response(&mut reader).unwrap();
        assert_eq!(r.status, 200, "request {i}: {}\n{}", r.text(), proxy.log());
        assert_eq!(r.json()["model"], "gpt-4o");
    }
}
