//! An incremental SSE parser (the WHATWG "event stream interpretation", minus `retry` semantics):
//! bytes in as they arrive from the network, complete events out. Handles events split across
//! reads, several events in one read, `\n` and `\r\n` line endings, comments, fields other than
//! `data`, and multi-line data. A bare `\r` line ending (allowed by the spec, used by no LLM
//! backend we know) is not supported.
//!
//! Bounded: a line or an event over [`MAX_EVENT_BYTES`] is an error, not an ever-growing buffer.

/// Largest event (or single line) accepted. Generous: a tool call's arguments can arrive in one
/// event.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, when there was one.
    pub name: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
    pub id: Option<String>,
    pub retry: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(Event),
    /// A `:` line; its text after the colon.
    Comment(String),
}

#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

#[derive(Default)]
pub struct Parser {
    line: Vec<u8>,
    pending: Event,
    /// Whether `pending` has a data line: per the spec, an event without one is not dispatched.
    data_seen: bool,
    pending_bytes: usize,
}

impl Parser {
    pub fn new() -> Self {
        Parser::default()
    }

    /// Feeds bytes; appends every item completed by them to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Item>) -> Result<(), TooLarge> {
        while let Some(pos) = bytes.iter().position(|b| *b == b'\n') {
            let (head, rest) = bytes.split_at(pos);
            bytes = rest.get(1..).unwrap_or_default();
            if self.line.len() + head.len() > MAX_EVENT_BYTES {
                return Err(TooLarge);
            }
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(head);
            self.line_done(&line, out)?;
        }
        if self.line.len() + bytes.len() > MAX_EVENT_BYTES {
            return Err(TooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// At the end of the stream: a last event that lacks its blank line is still delivered
    /// (some backends end with `data: [DONE]\n` and close).
    pub fn finish(&mut self, out: &mut Vec<Item>) {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            // Cannot exceed the bound: feed() checked the line, and a failed event is dropped.
            let _ = self.line_done(&line, out);
        }
        self.dispatch(out);
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Item>) -> Result<(), TooLarge> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        let text = String::from_utf8_lossy(line);
        if let Some(comment) = text.strip_prefix(':') {
            out.push(Item::Comment(comment.to_owned()));
            return Ok(());
        }
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        self.pending_bytes += value.len();
        if self.pending_bytes > MAX_EVENT_BYTES {
            return Err(TooLarge);
        }
        match field {
            "data" => {
                if self.data_seen {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.data_seen = true;
            }
            "event" => self.pending.name = Some(value.to_owned()),
            "id" => self.pending.id = Some(value.to_owned()),
            "retry" => self.pending.retry = Some(value.to_owned()),
            // Unknown fields are ignored, as the spec says.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Item>) {
        let event = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        if std::mem::take(&mut self.data_seen) {
            out.push(Item::Event(event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<Item> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            p.feed(chunk, &mut out).unwrap();
        }
        p.finish(&mut out);
        out
    }

    fn data(d: &str) -> Item {
        Item::Event(Event {
            data: d.to_owned(),
            ..Event::default()
        })
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let input = b"data: {\"a\":1}\r\n\r\n: keep-alive\n\nevent: progress_notice\ndata: x\n\ndata: line1\ndata: line2\nid: 7\n\ndata: [DONE]\n\n";
        let whole = parse_in_pieces(input, input.len());
        for piece in 1..input.len() {
            assert_eq!(parse_in_pieces(input, piece), whole, "piece size {piece}");
        }
        assert_eq!(whole.len(), 5);
        assert_eq!(whole[0], data("{\"a\":1}"));
        assert_eq!(whole[1], Item::Comment(" keep-alive".to_owned()));
        assert_eq!(
            whole[2],
            Item::Event(Event {
                name: Some("progress_notice".to_owned()),
                data: "x".to_owned(),
                ..Event::default()
            })
        );
        assert_eq!(
            whole[3],
            Item::Event(Event {
                data: "line1\nline2".to_owned(),
                id: Some("7".to_owned()),
                ..Event::default()
            })
        );
        assert_eq!(whole[4], data("[DONE]"));
    }

    #[test]
    fn field_without_space_and_empty_data() {
        let out = parse_in_pieces(b"data:x\n\ndata\n\nevent: only-a-name\n\n", 3);
        assert_eq!(out, vec![data("x"), data("")]);
    }

    #[test]
    fn last_event_without_blank_line_is_delivered() {
        assert_eq!(parse_in_pieces(b"data: [DONE]\n", 4), vec![data("[DONE]")]);
        assert_eq!(parse_in_pieces(b"data: [DONE]", 4), vec![data("[DONE]")]);
    }

    #[test]
    fn oversized_line_is_an_error_not_a_buffer() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        let big = vec![b'a'; 1024 * 1024];
        let mut result = Ok(());
        for _ in 0..5 {
            result = p.feed(&big, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(TooLarge));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let out = parse_in_pieces(b"data: \xff\xfe ok\n\n", 2);
        assert_eq!(out, vec![data("\u{fffd}\u{fffd} ok")]);
    }
}

/// Property tests: the parser must not care how the network splits its input, and must survive
/// any bytes.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::api::sse::rewrite;

    fn parse_chunks(input: &[u8], cuts: &[usize]) -> Vec<Item> {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            let end = cut.clamp(start, input.len());
            parser.feed(&input[start..end], &mut out).unwrap();
            start = end;
        }
        parser.feed(&input[start..], &mut out).unwrap();
        parser.finish(&mut out);
        out
    }

    fn sse_like() -> impl Strategy<Value = Vec<u8>> {
        let line = prop::sample::select(vec![
            "data: {\"model\":\"m\",\"x\":1}",
            "data: [DONE]",
            "data:",
            "data",
            "event: progress_notice",
            "event: message",
            "id: 7",
            "retry: 10",
            ": comment",
            "",
            "garbage line",
            "data: {\"response\":{\"model\":\"r\"}}",
        ]);
        let ending = prop::sample::select(vec!["\n", "\r\n"]);
        prop::collection::vec((line, ending), 0..40).prop_map(|lines| {
            lines
                .into_iter()
                .flat_map(|(l, e)| format!("{l}{e}").into_bytes())
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn splitting_never_changes_the_events(
            input in sse_like(),
            mut cuts in prop::collection::vec(0usize..2000, 0..12),
        ) {
            cuts.sort_unstable();
            let whole = parse_chunks(&input, &[]);
            prop_assert_eq!(parse_chunks(&input, &cuts), whole);
        }

        #[test]
        fn any_bytes_parse_and_rewrite_without_panicking(
            input in prop::collection::vec(any::<u8>(), 0..1024),
            cut in 0usize..1024,
        ) {
            for item in parse_chunks(&input, &[cut]) {
                if let Item::Event(event) = item {
                    let rewritten = serde_json::from_str::<serde_json::Value>(&event.data)
                        .ok()
                        .map(|mut v| {
                            rewrite::set_client_model(&mut v, "client");
                            v.to_string()
                        });
                    let mut out = Vec::new();
                    rewrite::encode(&event, rewritten.as_deref(), &mut out);
                    prop_assert!(out.ends_with(b"\n\n"));
                }
            }
        }
    }
}
