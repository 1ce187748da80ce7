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

/// Replaces a JSON payload's top-level `model` with `client_model`; every other field keeps its
/// place and value. `None` when the payload is not a JSON object with a `model` (sent as is).
pub fn with_client_model(data: &str, client_model: &str) -> Option<String> {
    let mut value: Value = serde_json::from_str(data).ok()?;
    let model = value.as_object_mut()?.get_mut("model")?;
    if model.as_str() == Some(client_model) {
        return None;
    }
    *model = Value::String(client_model.to_owned());
    serde_json::to_string(&value).ok()
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

    #[test]
    fn model_is_replaced_in_place() {
        let data = r#"{"id":"c1","object":"chat.completion.chunk","model":"deepseek-chat","choices":[{"delta":{"content":"é \"q\"\n"}}]}"#;
        let out = with_client_model(data, "gpt-4o").unwrap();
        assert_eq!(
            out,
            r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"delta":{"content":"é \"q\"\n"}}]}"#
        );
        assert_eq!(with_client_model("[DONE]", "x"), None);
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
