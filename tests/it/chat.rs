//! Chat completions through the proxy: rewriting, headers, streaming relay timing, stream-mode
//! conversion both ways, and every kind of backend failure.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{chat_request, roundtrip};
use crate::mock::canonical_reply;
use crate::setup;

#[test]
fn non_stream_reply_shows_client_model_and_request_is_rewritten_faithfully() {
    let (mock, proxy) = setup();
    // Field order, non-ASCII and unknown fields must survive the model rewrite.
    let body = r#"{"temperature":0.5,"model":"gpt-4o","messages":[{"role":"user","content":"Grüße 🦀 \"q\"\n"}],"x_vendor":{"b":1,"a":2}}"#;
    let headers = "OpenAI-Organization: org-1\r\nX-Stainless-Lang: python\r\nAccept-Encoding: gzip, br\r\n\
                   Connection: keep-alive\r\nCookie: c=1\r\nUser-Agent: OpenAI/Python 1.0\r\n";
    let r = roundtrip(proxy.port, &proxy.ca_path(), &chat_request(body, headers));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut expected = canonical_reply();
    expected["model"] = json!("gpt-4o");
    assert_eq!(r.json(), expected);
    assert_eq!(r.header("x-request-id"), Some("req-123"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("99"));
    assert_eq!(
        r.header("set-cookie"),
        None,
        "backend cookies are not returned"
    );

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    let up = &reqs[0];
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(
        String::from_utf8(up.body.clone()).unwrap(),
        body.replace("\"gpt-4o\"", "\"chat\""),
        "only the model changes, byte for byte"
    );
    assert_eq!(up.header("authorization"), Some("Bearer sk-test-key"));
    assert_eq!(up.header("openai-organization"), Some("org-1"));
    assert_eq!(up.header("x-stainless-lang"), Some("python"));
    assert_eq!(up.header("user-agent"), Some("OpenAI/Python 1.0"));
    assert_eq!(up.header("content-type"), Some("application/json"));
    assert_eq!(
        up.header("accept-encoding"),
        None,
        "we must get uncompressed bodies"
    );
    assert_eq!(up.header("cookie"), None);
}

/// Whatever the size of a backend's reply, it goes back whole: an empty body (a 200 with
/// `Content-Length: 0`, which the proxy cannot parse and relays as it is) and a 6,000-byte
/// response header. Both once broke the connection instead (a panic in the HTTP writer, and a
/// head larger than its 4 KiB buffer).
#[test]
fn an_empty_reply_and_a_long_response_header_reach_the_client() {
    let mock = crate::Mock::start();
    let apis = r#"  - {name: empty, endpoint: "{UPSTREAM}", custom_model_id: empty, target_model_id: empty-json}
  - {name: long, endpoint: "{UPSTREAM}", custom_model_id: long, target_model_id: long-header}"#;
    let proxy = crate::Proxy::start(&crate::config_yaml(&mock.url(), apis, ""));
    let empty = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"empty","messages":[]}"#, ""),
    );
    assert_eq!(empty.status, 200);
    assert_eq!(empty.header("content-length"), Some("0"));
    assert!(empty.complete && empty.body.is_empty());
    let long = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"long","messages":[]}"#, ""),
    );
    assert_eq!(long.status, 200);
    assert_eq!(long.header("openai-trace"), Some("t".repeat(6000).as_str()));
    assert_eq!(long.json()["model"], "long");
}

#[test]
fn endpoint_already_ending_in_v1_is_not_doubled() {
    let (mock, proxy) = setup();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"slow","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200);
    assert_eq!(mock.requests()[0].path, "/v1/chat/completions");
}

#[test]
fn stream_events_arrive_as_the_backend_sends_them() {
    let (_mock, proxy) = setup();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"slow","stream":true,"messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.complete, "a clean stream ends with the terminating chunk");
    // The backend pauses 200 ms after each of its 8 chunks; each must reach us on its own.
    let content_chunks: Vec<Instant> = r
        .chunks
        .iter()
        .filter(|(_, c)| c.starts_with(b"data: {"))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(content_chunks.len(), 8, "{}", r.text());
    for pair in content_chunks.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(120),
            "events were buffered: gap {gap:?} between consecutive events"
        );
    }
}

#[test]
fn stream_is_rewritten_filtered_and_terminated() {
    let (_mock, proxy) = setup();
    for model in ["gpt-4o", "nodone"] {
        let r = roundtrip(
            proxy.port,
            &proxy.ca_path(),
            &chat_request(
                &format!(r#"{{"model":"{model}","stream":true,"messages":[]}}"#),
                "",
            ),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-request-id"), Some("req-456"));
        let text = r.text();
        assert!(
            !text.contains("progress_notice"),
            "non-standard events are dropped: {text}"
        );
        assert!(text.contains(": keep-alive"), "comments pass");
        let data = r.sse_data();
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{model}: {text}"
        );
        assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
        for d in &data[..data.len() - 1] {
            let chunk: Value = serde_json::from_str(d).unwrap();
            assert_eq!(
                chunk["model"], model,
                "stream chunks show the client's model"
            );
        }
    }
}

/// Client asks for a stream; `stream_mode: "false"` (the original CLI's quoted form) forces a
/// non-streaming backend call. The client still gets a proper stream.
#[test]
fn forced_non_stream_backend_feeds_a_streaming_client() {
    let (mock, proxy) = setup();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(
            r#"{"model":"forced-json","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
            "",
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let up = mock.requests()[0].json();
    assert_eq!(up["stream"], false);
    assert!(
        up.get("stream_options").is_none(),
        "stream_options is invalid without stream"
    );

    let chunks = r.sse_chunks();
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut args = String::new();
    let mut finish = Value::Null;
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "forced-json");
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        reasoning.push_str(choice["delta"]["reasoning_content"].as_str().unwrap_or(""));
        if let Some(calls) = choice["delta"]["tool_calls"].as_array() {
            assert_eq!(calls[0]["index"], 0);
            assert_eq!(calls[0]["id"], "call_1");
            args.push_str(calls[0]["function"]["arguments"].as_str().unwrap());
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    let message = &canonical_reply()["choices"][0]["message"];
    assert_eq!(content, message["content"].as_str().unwrap());
    assert_eq!(reasoning, message["reasoning_content"].as_str().unwrap());
    assert_eq!(
        args,
        message["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap()
    );
    assert_eq!(finish, "tool_calls");
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 33);
}

/// Client asks for one JSON reply; `stream_mode: true` forces a streaming backend call. The
/// client gets the stream folded into one `chat.completion`, usage included.
#[test]
fn forced_stream_backend_feeds_a_non_streaming_client() {
    let (mock, proxy) = setup();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"forced-stream","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let up = mock.requests()[0].json();
    assert_eq!(up["stream"], true);
    assert_eq!(up["stream_options"]["include_usage"], true);
    let mut expected = canonical_reply();
    expected["model"] = json!("forced-stream");
    // The stream's usage, details included, is the reply's.
    expected["usage"]["prompt_tokens_details"] = json!({"cached_tokens": 8});
    expected["usage"]["completion_tokens_details"] = json!({"reasoning_tokens": 5});
    assert_eq!(r.json(), expected);
}

#[test]
fn backend_error_status_and_body_pass_through() {
    let (_mock, proxy) = setup();
    for (model, status, message) in [
        ("err500", 500, "boom"),
        ("err400", 400, "bad messages"),
        ("err429", 429, "slow down"),
    ] {
        let r = roundtrip(
            proxy.port,
            &proxy.ca_path(),
            &chat_request(
                &format!(r#"{{"model":"{model}","stream":true,"messages":[]}}"#),
                "",
            ),
        );
        assert_eq!(r.status, status);
        assert_eq!(r.json()["error"]["message"], message);
        if status == 429 {
            assert_eq!(r.header("retry-after"), Some("7"), "SDKs back off on it");
        }
    }
}

#[test]
fn refused_backend_is_502_naming_the_backend_not_its_url() {
    let (_mock, proxy) = setup();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"refused","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 502);
    let e = &r.json()["error"];
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("refused-backend"), "{msg}");
    assert!(
        !msg.contains("127.0.0.1") && !msg.contains("http"),
        "no URL: {msg}"
    );
    assert_eq!(e["type"], "api_error");
}

#[test]
fn hanging_backend_is_504_after_the_first_byte_timeout() {
    let (_mock, proxy) = setup();
    let started = Instant::now();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"hang","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 504);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hanger")
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "timeout of 1 s took {took:?}"
    );
}

#[test]
fn backend_dying_mid_stream_never_looks_like_a_clean_end() {
    let (_mock, proxy) = setup();
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"drop","stream":true,"messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200);
    assert!(
        !r.complete,
        "the chunked body must not be terminated cleanly"
    );
    let data = r.sse_data();
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(
        last["error"]["type"], "api_error",
        "an error event the SDKs raise on"
    );
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dropper")
    );
}

#[test]
fn backend_dying_during_aggregation_is_an_error_reply() {
    let apis = r#"  - {name: dropper, endpoint: "{UPSTREAM}", custom_model_id: drop, target_model_id: drop, stream_mode: true}"#;
    let mock = crate::mock::Mock::start();
    let proxy = crate::harness::Proxy::start(&crate::harness::config_yaml(&mock.url(), apis, ""));
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(r#"{"model":"drop","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "upstream_unavailable");
}
