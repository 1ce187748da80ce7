//! A backend's stream relayed to a streaming client event by event: each complete event is
//! written and flushed at once. Non-standard named events are dropped (except on the Responses
//! API, where every event is named), `model` is rewritten to the client's id, and a clean end
//! without `data: [DONE]` gets one. When the backend replays reasoning, the chunks are also
//! folded into one reply so its reasoning can be remembered.

use std::io::{self, Read};

use log::debug;
use serde_json::Value;

use super::{Head, Job, READ_BUF, sse_headers};
use crate::api::context::Ctx;
use crate::api::endpoint::Endpoint;
use crate::api::sse::convert::Aggregator;
use crate::api::sse::parser::Event;
use crate::api::sse::{self, Item, Parser, rewrite};
use crate::api::stream_usage;
use crate::api_error::ApiError;
use crate::server::{After, BodyStream, Responder};
use crate::upstream;

/// Most text of a streamed reply folded up to remember its reasoning.
const MAX_CAPTURE: usize = 1024 * 1024;

pub fn answer(
    mut head: Head,
    body: &mut impl Read,
    job: &Job<'_>,
    responder: Responder<'_>,
    ctx: &mut Ctx,
) -> io::Result<After> {
    head.headers.extend(sse_headers());
    let mut sink = responder.stream(head.status, head.headers)?;
    let mut relayer = Relayer {
        client_model: &job.ask.model,
        endpoint: job.endpoint,
        done: false,
        hide_usage: job.hide_usage,
        out: Vec::new(),
        capture: job.reasoning.map(|_| Aggregator::new()),
    };
    let relayed = relay(body, &mut sink, job.backend, &mut relayer, ctx);
    ctx.bytes = sink.bytes;
    match relayed? {
        Ended::Clean => {
            if let (Some(cache), Some(capture)) = (job.reasoning, relayer.capture.take()) {
                cache.remember_reply(&capture.finish(&job.ask.model), job.backend);
            }
            sink.finish()
        }
        // The client got an error event and must see no clean end.
        Ended::Failed => Ok(sink.abort()),
    }
}

enum Ended {
    Clean,
    /// The backend failed mid-stream.
    Failed,
}

/// Reads and relays to the stream's end. Client write errors end the relay with `Err`.
fn relay(
    body: &mut impl Read,
    sink: &mut BodyStream<'_>,
    backend: &str,
    relayer: &mut Relayer<'_>,
    ctx: &mut Ctx,
) -> io::Result<Ended> {
    let mut parser = Parser::new();
    let mut items = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let err = upstream::classify_read(backend, &e);
                fail_stream(sink, &err)?;
                return Ok(Ended::Failed);
            }
        };
        if parser.feed(&buf[..n], &mut items).is_err() {
            let err = ApiError::bad_gateway(backend, "oversized stream event");
            fail_stream(sink, &err)?;
            return Ok(Ended::Failed);
        }
        relayer.emit(&mut items, sink, ctx)?;
    }
    parser.finish(&mut items);
    relayer.emit(&mut items, sink, ctx)?;
    if !relayer.done && relayer.endpoint.ends_with_done() {
        sink.write(b"data: [DONE]\n\n")?;
    }
    Ok(Ended::Clean)
}

/// The state of one relayed stream.
struct Relayer<'a> {
    client_model: &'a str,
    endpoint: Endpoint,
    /// `[DONE]` was sent.
    done: bool,
    /// Take `usage` out of the chunks ([`stream_usage::strip`]).
    hide_usage: bool,
    out: Vec<u8>,
    /// Folds the chunks into a reply when its reasoning is to be remembered.
    capture: Option<Aggregator>,
}

impl Relayer<'_> {
    fn emit(
        &mut self,
        items: &mut Vec<Item>,
        sink: &mut BodyStream<'_>,
        ctx: &mut Ctx,
    ) -> io::Result<()> {
        for item in items.drain(..) {
            if self.done {
                // Nothing after [DONE] is for the client; the rest is read only to keep the
                // backend connection reusable.
                continue;
            }
            self.out.clear();
            match item {
                Item::Comment(text) => rewrite::encode_comment(&text, &mut self.out),
                Item::Event(event)
                    if !self.endpoint.keeps_named_events() && !rewrite::keep(&event) =>
                {
                    continue;
                }
                Item::Event(event) if event.data.trim() == sse::DONE => {
                    self.done = true;
                    let done = Event {
                        data: sse::DONE.into(),
                        ..event
                    };
                    rewrite::encode(&done, None, &mut self.out);
                }
                Item::Event(event) => {
                    self.data(&event, ctx);
                    if ctx.first_token.is_none() {
                        ctx.first_token = ctx.sent.map(|sent| sent.elapsed());
                    }
                }
            }
            if !self.out.is_empty() {
                sink.write(&self.out)?;
            }
        }
        Ok(())
    }

    /// A data event: usage noted (and taken out if the client did not ask for it), captured,
    /// `model` rewritten; not JSON, passed on as it came. Leaves `out` empty to drop it.
    fn data(&mut self, event: &Event, ctx: &mut Ctx) {
        let Ok(mut value) = serde_json::from_str::<Value>(&event.data) else {
            rewrite::encode(event, None, &mut self.out);
            return;
        };
        ctx.take_usage(&value);
        if let Some(capture) = self.capture.as_mut() {
            capture.push(&value);
            if capture.text_bytes() > MAX_CAPTURE {
                // A reply this long is not a tool-call turn a history replays; keeping it
                // would make a long stream cost its whole length.
                debug!("reply over {MAX_CAPTURE} bytes: its reasoning is not remembered");
                self.capture = None;
            }
        }
        let mut changed = false;
        if self.hide_usage {
            match stream_usage::strip(&mut value) {
                Some(stripped) => changed = stripped,
                None => return,
            }
        }
        if rewrite::set_client_model(&mut value, self.client_model) | changed {
            let data = serde_json::to_string(&value).unwrap_or_default();
            rewrite::encode(event, Some(&data), &mut self.out);
        } else {
            rewrite::encode(event, None, &mut self.out);
        }
    }
}

/// Tells a streaming client that the backend failed, in the form the OpenAI SDKs raise on.
fn fail_stream(sink: &mut BodyStream<'_>, err: &ApiError) -> io::Result<()> {
    let mut out = Vec::new();
    rewrite::encode_json(&err.to_json(), &mut out);
    sink.write(&out)
}
