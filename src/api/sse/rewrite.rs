//! What the relay does to each event on its way to the client: drop events clients choke on,
//! show the client's model id instead of the backend's, and put events back on the wire.

use serde_json::Value;

use super::parser::Event;

/// Whether the client should see this event. OpenAI chat streams carry no `event:` names; a
/// non-standard one (GLM's `progress_notice`, say) makes Trae's parser end the stream, so only
/// unnamed, `message` and `error` events pass.
pub fn keep(event: &Event) -> bool {
    matches!(
        event.name.as_deref(),
        None | Some("message") | Some("error")
    )
}

/// Shows `client_model` in a reply or event: its top-level `model`, and the `model` of an
/// embedded `response` object (Responses API events). Every other field keeps its place and
/// value. Returns whether anything changed.
pub fn set_client_model(value: &mut Value, client_model: &str) -> bool {
    let Some(obj) = value.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    if let Some(model) = obj.get_mut("response").and_then(|r| r.get_mut("model")) {
        changed |= replace_model(model, client_model);
    }
    if let Some(model) = obj.get_mut("model") {
        changed |= replace_model(model, client_model);
    }
    changed
}

fn replace_model(model: &mut Value, client_model: &str) -> bool {
    if model.as_str() == Some(client_model) {
        return false;
    }
    *model = Value::String(client_model.to_owned());
    true
}

/// The event in wire form, `data` replaced by `data_override` when given.
pub fn encode(event: &Event, data_override: Option<&str>, out: &mut Vec<u8>) {
    if let Some(name) = &event.name {
        push_field(out, "event", name);
    }
    if let Some(id) = &event.id {
        push_field(out, "id", id);
    }
    if let Some(retry) = &event.retry {
        push_field(out, "retry", retry);
    }
    for line in data_override.unwrap_or(&event.data).split('\n') {
        push_field(out, "data", line);
    }
    out.push(b'\n');
}

/// A JSON value as one `data:` event. serde_json's compact form has no raw newlines, so one
/// line always suffices.
pub fn encode_json(value: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    // unwrap-free: writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    out.extend_from_slice(b"\n\n");
}

pub fn encode_comment(text: &str, out: &mut Vec<u8>) {
    out.push(b':');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\n\n");
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_client_model(data: &str, client_model: &str) -> Option<String> {
        let mut value: Value = serde_json::from_str(data).ok()?;
        set_client_model(&mut value, client_model).then(|| serde_json::to_string(&value).ok())?
    }

    #[test]
    fn model_is_replaced_in_place() {
        let data = r#"{"id":"c1","object":"chat.completion.chunk","model":"deepseek-chat","choices":[{"delta":{"content":"é \"q\"\n"}}]}"#;
        let out = with_client_model(data, "gpt-4o").unwrap();
        assert_eq!(
            out,
            r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"delta":{"content":"é \"q\"\n"}}]}"#
        );
        assert_eq!(with_client_model("[DONE]", "x"), None);
        assert_eq!(
            with_client_model(
                r#"{"type":"response.created","response":{"id":"r","model":"b"}}"#,
                "c"
            )
            .unwrap(),
            r#"{"type":"response.created","response":{"id":"r","model":"c"}}"#
        );
        assert_eq!(with_client_model(r#"{"choices":[]}"#, "x"), None);
    }

    #[test]
    fn named_events_other_than_standard_ones_are_dropped() {
        let named = |n: Option<&str>| Event {
            name: n.map(str::to_owned),
            ..Event::default()
        };
        assert!(keep(&named(None)));
        assert!(keep(&named(Some("error"))));
        assert!(!keep(&named(Some("progress_notice"))));
    }

    #[test]
    fn multi_line_data_is_encoded_line_by_line() {
        let mut out = Vec::new();
        encode(
            &Event {
                name: Some("message".into()),
                data: "a\nb".into(),
                ..Event::default()
            },
            None,
            &mut out,
        );
        assert_eq!(out, b"event: message\ndata: a\ndata: b\n\n");
    }
}
