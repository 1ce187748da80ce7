//! The routes: model list and lookup, unknown paths and methods, model routing errors.

use crate::client::{chat_request, get_request, roundtrip};
use crate::setup;

#[test]
fn model_list_has_each_active_model_once_with_all_fields() {
    let (_mock, proxy) = setup();
    let r = roundtrip(proxy.port, &proxy.ca_path(), &get_request("/v1/models"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 11, "{ids:?}");
    assert_eq!(ids[0], "gpt-4o");
    assert!(
        !ids.contains(&"switched-off"),
        "inactive entries are not listed"
    );
    for m in data {
        assert_eq!(m["object"], "model");
        assert!(m["created"].as_u64().unwrap() > 1_600_000_000);
        assert!(m["owned_by"].is_string());
    }
}

#[test]
fn single_model_lookup() {
    let (_mock, proxy) = setup();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &get_request("/v1/models/gpt-4o"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], "gpt-4o");
    assert_eq!(r.json()["owned_by"], "chat-backend");
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &get_request("/v1/models/switched-off"),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405_in_openai_shape() {
    let (_mock, proxy) = setup();
    let r = roundtrip(proxy.port, &proxy.ca_path(), &get_request("/v1/files"));
    assert_eq!(r.status, 404);
    let e = &r.json()["error"];
    assert!(e["message"].as_str().unwrap().contains("/v1/files"));
    assert_eq!(e["type"], "invalid_request_error");
    assert!(e.get("code").is_some());

    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &get_request("/v1/chat/completions"),
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");

    let raw = b"DELETE /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
    let r = roundtrip(proxy.port, &proxy.ca_path(), raw);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
}

/// Codex CLI's default transport: a WebSocket to /v1/responses before falling back to HTTP.
fn websocket_upgrade(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: api.openai.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer sk-test\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn websocket_upgrades_get_426_and_close_on_every_listener_so_codex_falls_back_at_once() {
    use std::io::{BufReader, Read, Write};
    let mock = crate::Mock::start();
    let proxy = crate::Proxy::start(&crate::config_yaml(
        &mock.url(),
        &crate::standard_apis(),
        "  http_bind: 127.0.0.1:0\n",
    ));
    // TLS: Codex retries a 405 with back-off for seconds; a 426 makes it use HTTP at once.
    let mut tls = crate::client::connect(proxy.port, &proxy.ca_path());
    tls.write_all(&websocket_upgrade("/v1/responses")).unwrap();
    let mut reader = BufReader::new(tls);
    let r = crate::client::read_response(&mut reader).unwrap();
    assert_eq!(r.status, 426, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.json()["error"]["code"], "websocket_not_supported");
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed after the 426");

    // The plain-HTTP listener (base-URL mode) answers the same.
    let port = proxy.logged_port("plain-HTTP listener");
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.write_all(&websocket_upgrade("/v1/responses")).unwrap();
    let r = crate::client::read_response(&mut BufReader::new(sock)).unwrap();
    assert_eq!(r.status, 426);
    assert_eq!(r.header("connection"), Some("close"));

    // An ordinary GET keeps its 405, and nothing went upstream.
    let r = roundtrip(proxy.port, &proxy.ca_path(), &get_request("/v1/responses"));
    assert_eq!(r.status, 405);
    assert!(mock.requests().is_empty());
}

#[test]
fn unknown_model_is_404_listing_models_and_nothing_goes_upstream() {
    let (mock, proxy) = setup();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"gpt-5","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 404);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "model_not_found");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("gpt-5") && msg.contains("gpt-4o") && msg.contains("forced-json"),
        "{msg}"
    );

    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"switched-off","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 404, "an inactive entry is not served");

    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"messages":[]}"#, ""),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "missing_model");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-4o")
    );

    assert!(mock.requests().is_empty(), "nothing may reach a backend");
}

#[test]
fn invalid_json_bodies_are_400() {
    let (mock, proxy) = setup();
    for body in [
        "{not json",
        "[1,2]",
        "\"text\"",
        &format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
    ] {
        let r = roundtrip(proxy.port, &proxy.ca_path(), &chat_request(body, ""));
        assert_eq!(r.status, 400, "{body:.40}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    let raw =
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n{\"a\":\xff}";
    let r = roundtrip(proxy.port, &proxy.ca_path(), raw);
    assert_eq!(r.status, 400, "invalid UTF-8");
    assert!(mock.requests().is_empty());
}
