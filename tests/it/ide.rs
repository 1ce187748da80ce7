//! IDE and backend quirks, reproduced against mock backends that behave like the real ones.

use serde_json::{Value, json};

use crate::client::{Response, chat_request, roundtrip};
use crate::harness::{Proxy, config_yaml};
use crate::mock::Mock;

const TOOLS: &str = r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]"#;

fn post(proxy: &Proxy, body: &Value) -> Response {
    roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(&body.to_string(), ""),
    )
}

/// The assistant turn of a reply, as an SDK assembles it (from a stream or not).
fn assistant_turn(r: &Response, stream: bool) -> Value {
    if !stream {
        return r.json()["choices"][0]["message"].clone();
    }
    let mut content = String::new();
    let mut calls: Vec<Value> = Vec::new();
    for data in r.sse_data() {
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        let delta = &v["choices"][0]["delta"];
        content.push_str(delta["content"].as_str().unwrap_or(""));
        for c in delta["tool_calls"].as_array().into_iter().flatten() {
            let mut c = c.clone();
            c.as_object_mut().unwrap().remove("index");
            calls.push(c);
        }
    }
    json!({"role": "assistant", "content": content, "tool_calls": calls})
}

/// Trae's two-turn tool loop: ask, get a tool call, send the tool result back — without the
/// assistant turn's `reasoning_content`, as Trae does.
fn two_turns(proxy: &Proxy, model: &str, stream: bool) -> (Response, Value) {
    let user = json!({"role": "user", "content": "Weather in Paris?"});
    let first = post(
        proxy,
        &json!({"model": model, "stream": stream, "tools": serde_json::from_str::<Value>(TOOLS).unwrap(), "messages": [user]}),
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let mut turn = assistant_turn(&first, stream);
    turn.as_object_mut().unwrap().remove("reasoning_content");
    assert_eq!(turn["tool_calls"][0]["id"], "call_w1", "{turn}");
    let tool = json!({"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 24°C"});
    let second = post(
        proxy,
        &json!({"model": model, "stream": false, "messages": [user, turn, tool]}),
    );
    (second, turn)
}

fn thinking_proxy(mock: &Mock, extra: &str) -> Proxy {
    let apis = format!(
        "  - {{name: deepseek, endpoint: \"{}\", custom_model_id: think, target_model_id: thinking{extra}}}\n  \
         - {{name: kimi, endpoint: \"{}\", custom_model_id: kimi, target_model_id: kimi-strict{extra}}}",
        mock.url(),
        mock.url()
    );
    Proxy::start(&config_yaml("", &apis, ""))
}

#[test]
fn without_replay_the_thinking_backend_rejects_the_second_turn() {
    let mock = Mock::start();
    let proxy = thinking_proxy(&mock, ", reasoning_replay: false");
    let (second, _) = two_turns(&proxy, "think", false);
    assert_eq!(second.status, 400, "the failure users report");
    assert!(second.text().contains("reasoning_content"));
}

#[test]
fn remembered_reasoning_is_replayed_for_streamed_and_plain_first_turns() {
    for stream in [false, true] {
        let mock = Mock::start();
        let proxy = thinking_proxy(&mock, "");
        let (second, _) = two_turns(&proxy, "think", stream);
        assert_eq!(second.status, 200, "stream={stream}: {}", second.text());
        assert_eq!(
            second.json()["choices"][0]["message"]["content"],
            "It is sunny in Paris."
        );
        let sent = mock.requests()[1].json();
        assert_eq!(
            sent["messages"][1]["reasoning_content"], "I need the weather tool for Paris.",
            "stream={stream}: replayed exactly"
        );
    }
}

/// A history whose tool-call turn carries no `reasoning_content` and that this proxy has never
/// seen (another proxy's, or from before a restart).
fn foreign_history() -> Value {
    json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_old", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
        {"role": "tool", "tool_call_id": "call_old", "content": "rain"}
    ])
}

#[test]
fn after_a_restart_a_thinking_backend_is_learned_from_its_error_and_the_fallback_applies() {
    // Empty (the default fallback): the backend's 400 naming reasoning_content teaches the
    // proxy that it thinks; the request is sent again with reasoning_content "".
    let mock = Mock::start();
    let proxy = thinking_proxy(&mock, "");
    let r = post(
        &proxy,
        &json!({"model": "think", "messages": foreign_history()}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = mock.requests();
    assert_eq!(
        sent.len(),
        2,
        "learned from the first answer, then sent again"
    );
    assert!(
        sent[0].json()["messages"][1]
            .get("reasoning_content")
            .is_none()
    );
    assert_eq!(sent[1].json()["messages"][1]["reasoning_content"], "");
    // Learned once: the next such request goes out mended at once.
    let r = post(
        &proxy,
        &json!({"model": "think", "messages": foreign_history()}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.requests().len(), 3);
    let log = proxy.wait_for_log("needs reasoning_content");
    assert!(log.contains("needs reasoning_content"), "{log}");

    // Configured as thinking (reasoning_replay: true): mended from the first request.
    let mock = Mock::start();
    let proxy = thinking_proxy(&mock, ", reasoning_replay: true");
    let r = post(
        &proxy,
        &json!({"model": "think", "messages": foreign_history()}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(
        mock.requests()[0].json()["messages"][1]["reasoning_content"],
        ""
    );

    // Strip: the unknown tool-call turn and its result are dropped.
    let mock = Mock::start();
    let proxy = thinking_proxy(&mock, ", reasoning_replay: true, reasoning_fallback: strip");
    let r = post(
        &proxy,
        &json!({"model": "think", "messages": foreign_history()}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = mock.requests()[0].json();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{sent}");
    assert!(messages[1].get("tool_calls").is_none());
}

fn strict_proxy(mock: &Mock) -> Proxy {
    let apis = format!(
        "  - {{name: mistral, endpoint: \"{}\", custom_model_id: mistral-large, target_model_id: strict}}\n  \
         - {{name: old-vllm, endpoint: \"{}\", custom_model_id: qwq, target_model_id: strict-reasoning}}",
        mock.url(),
        mock.url()
    );
    Proxy::start(&config_yaml("", &apis, ""))
}

/// Both turns of the tool loop in the same mode, as an agent does; the second answer's text.
fn agent_loop(proxy: &Proxy, model: &str, stream: bool) -> String {
    let user = json!({"role": "user", "content": "Weather in Paris?"});
    let tools: Value = serde_json::from_str(TOOLS).unwrap();
    let first = post(
        proxy,
        &json!({"model": model, "stream": stream, "tools": tools, "messages": [user]}),
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let mut turn = assistant_turn(&first, stream);
    turn.as_object_mut().unwrap().remove("reasoning_content");
    assert_eq!(turn["tool_calls"][0]["id"], "call_w1", "{turn}");
    let tool = json!({"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 24°C"});
    let second = post(
        proxy,
        &json!({"model": model, "stream": stream, "tools": tools, "messages": [user, turn, tool]}),
    );
    assert_eq!(second.status, 200, "stream={stream}: {}", second.text());
    if stream {
        assistant_turn(&second, true)["content"]
            .as_str()
            .unwrap()
            .to_owned()
    } else {
        second.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

#[test]
fn a_strict_backend_never_gets_a_field_it_did_not_produce() {
    // Mistral and Cerebras answer 422/400 for reasoning_content; the default must not add it.
    for stream in [false, true] {
        let mock = Mock::start();
        let proxy = strict_proxy(&mock);
        assert_eq!(
            agent_loop(&proxy, "mistral-large", stream),
            "It is sunny in Paris."
        );
        let sent = mock.requests();
        // Streamed, the proxy asks for usage once; like Mistral, the backend refuses
        // stream_options, which is learned: the request is sent again without it, and so is
        // every later one.
        let refusals = usize::from(stream);
        assert_eq!(sent.len(), 2 + refusals, "stream={stream}");
        for (i, request) in sent.iter().enumerate() {
            let body = String::from_utf8_lossy(&request.body);
            assert!(
                !body.contains("reasoning_content"),
                "stream={stream}: {body}"
            );
            assert_eq!(body.contains("stream_options"), i < refusals, "{i}: {body}");
        }
        if stream {
            proxy.wait_for_log("refuses stream_options");
        }
    }
}

#[test]
fn a_backend_that_returns_reasoning_but_rejects_it_back_is_learned_and_served() {
    // Older vLLM with a reasoning parser: replies carry reasoning_content, requests may not.
    for stream in [false, true] {
        let mock = Mock::start();
        let proxy = strict_proxy(&mock);
        assert_eq!(agent_loop(&proxy, "qwq", stream), "It is sunny in Paris.");
        let sent = mock.requests();
        // Streamed: first a refusal of stream_options (see above).
        let o = usize::from(stream);
        assert_eq!(
            sent.len(),
            3 + o,
            "stream={stream}: one rejected replay, sent again"
        );
        assert!(String::from_utf8_lossy(&sent[1 + o].body).contains("reasoning_content"));
        assert!(!String::from_utf8_lossy(&sent[2 + o].body).contains("reasoning_content"));
        let log = proxy.wait_for_log("rejects reasoning_content");
        assert!(log.contains("rejects reasoning_content"), "{log}");
    }
}

#[test]
fn the_thinking_backend_loop_passes_plain_and_streamed() {
    for stream in [false, true] {
        let mock = Mock::start();
        let proxy = thinking_proxy(&mock, "");
        assert_eq!(agent_loop(&proxy, "think", stream), "It is sunny in Paris.");
        let sent = mock.requests();
        assert_eq!(
            sent.len(),
            2,
            "stream={stream}: the cache replays, no retry"
        );
        assert_eq!(
            sent[1].json()["messages"][1]["reasoning_content"],
            "I need the weather tool for Paris."
        );
    }
}

#[test]
fn kimi_quirk_sends_null_instead_of_empty_content_beside_tool_calls() {
    let mock = Mock::start();
    let proxy = thinking_proxy(&mock, "");
    let (second, _) = two_turns(&proxy, "kimi", true);
    assert_eq!(
        second.status, 400,
        "without the quirk Kimi rejects content \"\""
    );
    assert!(second.text().contains("must not be empty"));

    let mock = Mock::start();
    let proxy = thinking_proxy(&mock, ", quirks: [null_content_with_tool_calls]");
    let (second, _) = two_turns(&proxy, "kimi", true);
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        mock.requests()[1].json()["messages"][1]["content"],
        Value::Null
    );
}

fn http_port(proxy: &Proxy) -> u16 {
    proxy.logged_port("plain-HTTP listener")
}

fn plain_request(port: u16, raw: &[u8]) -> Response {
    use std::io::Write;
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    sock.write_all(raw).unwrap();
    crate::client::read_response(&mut std::io::BufReader::new(sock)).unwrap()
}

#[test]
fn base_url_mode_serves_plain_http_with_or_without_v1_and_strips_model_prefixes() {
    let mock = Mock::start();
    let proxy = Proxy::start(&config_yaml(
        &mock.url(),
        &crate::standard_apis(),
        "  http_bind: 127.0.0.1:0\n  strip_model_prefixes: [\"custom_openai_compatible//\"]\n",
    ));
    let port = http_port(&proxy);
    let body = r#"{"model":"custom_openai_compatible//gpt-4o","messages":[]}"#;
    for path in ["/chat/completions", "/v1/chat/completions"] {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = plain_request(port, raw.as_bytes());
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            r.json()["model"],
            "custom_openai_compatible//gpt-4o",
            "the client's own id"
        );
    }
    assert!(
        mock.requests().iter().all(|r| r.json()["model"] == "chat"),
        "routed as gpt-4o"
    );
    let r = plain_request(port, b"GET /models HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.json()["object"], "list");
    // Streams work there too, and the TLS port still answers.
    let stream = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    let raw = format!(
        "POST /chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{stream}",
        stream.len()
    );
    let r = plain_request(port, raw.as_bytes());
    assert!(r.complete);
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &crate::client::get_request("/models"),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn plain_listener_open_to_the_network_without_access_keys_is_warned_about() {
    let mock = Mock::start();
    let proxy = Proxy::start(&config_yaml(
        &mock.url(),
        &crate::standard_apis(),
        "  http_bind: 0.0.0.0:0\n",
    ));
    assert!(
        proxy
            .log()
            .contains("reachable from the network without access_keys"),
        "{}",
        proxy.log()
    );
}

/// Sends `CONNECT target` on the plain listener and returns the socket after the 200.
fn connect_via(port: u16, target: &str) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(sock, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    // Read the head byte by byte: nothing after it may be consumed here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && sock.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    (sock, String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn forward_proxy_intercepts_our_domain_and_tunnels_other_hosts() {
    use std::io::Write;
    let mock = Mock::start();
    // Loopback destinations must be allowed by name (see tests/hostile/connect.rs).
    let proxy = Proxy::start(&config_yaml(
        &mock.url(),
        &crate::standard_apis(),
        "  http_bind: 127.0.0.1:0\n  tunnel_allow: [127.0.0.1]\n  tunnel_ports: []\n",
    ));
    let port = http_port(&proxy);

    // Our domain: after the 200 the client speaks TLS to the proxy itself, trusting only its CA.
    let (sock, head) = connect_via(port, "api.openai.com:443");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let name = rustls::pki_types::ServerName::try_from("api.openai.com").unwrap();
    let conn =
        rustls::ClientConnection::new(crate::client::tls_config(&proxy.ca_path()), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(&chat_request(
        r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
        "",
    ))
    .unwrap();
    let r = crate::client::read_response(&mut std::io::BufReader::new(tls)).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));

    // Another host: bytes pass untouched (here, plain HTTP to the mock backend).
    let target = format!("127.0.0.1:{}", mock.port);
    let (mut sock, head) = connect_via(port, &target);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = r#"{"model":"tunnelled","messages":[]}"#;
    write!(
        sock,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let r = crate::client::read_response(&mut std::io::BufReader::new(sock)).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["model"],
        "upstream-model",
        "the backend's own answer, not rewritten"
    );
    assert!(
        mock.requests()
            .iter()
            .any(|q| q.json()["model"] == "tunnelled")
    );
}

#[test]
fn tunnels_can_be_refused_and_idle_ones_end() {
    let mock = Mock::start();
    let denying = Proxy::start(&config_yaml(
        &mock.url(),
        &crate::standard_apis(),
        "  http_bind: 127.0.0.1:0\n  tunnel: deny\n",
    ));
    let (_, head) = connect_via(http_port(&denying), &format!("127.0.0.1:{}", mock.port));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    let idle = Proxy::start(&config_yaml(
        &mock.url(),
        &crate::standard_apis(),
        "  http_bind: 127.0.0.1:0\n  idle_timeout: 1\n  tunnel_allow: [127.0.0.1]\n  tunnel_ports: []\n",
    ));
    let (mut sock, head) = connect_via(http_port(&idle), &format!("127.0.0.1:{}", mock.port));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut sock, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the idle tunnel is closed");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
