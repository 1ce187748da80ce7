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

#[test]
fn after_a_restart_the_fallback_policy_applies() {
    // Empty: the turn gets reasoning_content "".
    let mock = Mock::start();
    let proxy = thinking_proxy(&mock, ", reasoning_fallback: empty");
    let user = json!({"role": "user", "content": "Weather in Paris?"});
    let turn = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_old", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]});
    let tool = json!({"role": "tool", "tool_call_id": "call_old", "content": "rain"});
    let r = post(
        &proxy,
        &json!({"model": "think", "messages": [user, turn, tool]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mock.requests()[0].json()["messages"][1]["reasoning_content"],
        ""
    );

    // Strip: the unknown tool-call turn and its result are dropped.
    let mock = Mock::start();
    let proxy = thinking_proxy(&mock, ", reasoning_fallback: strip");
    let r = post(
        &proxy,
        &json!({"model": "think", "messages": [user, turn, tool]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = mock.requests()[0].json();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{sent}");
    assert!(messages[1].get("tool_calls").is_none());
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
