//! The model-bearing endpoints (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/responses`, `/v1/moderations`, `/v1/audio/speech`): route by `model` to a pool, rewrite
//! the body for each backend, and forward with failover; the answer goes back through
//! [`relay`](super::relay).
//!
//! Failover happens only before the client has received a byte: a backend that cannot be
//! reached, times out before its response head, or answers 5xx or 429 hands the request to the
//! next one in the pool. Other 4xx are the client's problem and are returned as they are.

use std::io;
use std::time::{Duration, Instant};

use http::{Request, StatusCode, header};
use log::{debug, warn};

use crate::api::context::Ctx;
use crate::api::endpoint::Endpoint;
use crate::api::reasoning::{self, Learned, Mend};
use crate::api::relay::{self, Job};
use crate::api::reply;
use crate::api::request::{self, Ask, Rewrite};
use crate::api::state::Proxy;
use crate::api::stream_usage;
use crate::api_error::ApiError;
use crate::config::{Backend, ReasoningReplay};
use crate::json::Fields;
use crate::server::{After, Responder};
use crate::upstream::UpstreamResponse;

/// One request on its way to a backend.
struct Outbound<'a> {
    proxy: &'a Proxy,
    endpoint: Endpoint,
    request: &'a Request<Vec<u8>>,
    fields: Fields<'a>,
    ask: Ask,
}

pub fn handle(
    proxy: &Proxy,
    endpoint: Endpoint,
    request: &Request<Vec<u8>>,
    responder: Responder<'_>,
    ctx: &mut Ctx,
) -> io::Result<After> {
    let (fields, ask) = match request::parse(proxy, request.body()) {
        Ok(v) => v,
        Err(e) => return reply::error(responder, ctx, &e),
    };
    ctx.model = Some(ask.model.clone());
    let Some(plan) = proxy.router.plan(&ask.route) else {
        let e = ApiError::model_not_found(&ask.model, &proxy.router.model_list());
        return reply::error(responder, ctx, &e);
    };
    let out = Outbound {
        proxy,
        endpoint,
        request,
        fields,
        ask,
    };
    let mut last_error = None;
    for (i, attempt) in plan.iter().enumerate() {
        let backend = attempt.backend();
        let is_last = i + 1 == plan.len();
        ctx.backend = Some(backend.name.clone());
        ctx.route = Some(backend.custom_model_id.clone());
        // Held until the answer is relayed: the backend's share of requests in flight.
        let Some(_entered) = proxy.router.enter(attempt) else {
            debug!(
                "backend={:?} is at its max_in_flight; skipped",
                backend.name
            );
            proxy.shared.metrics.backend_busy(&backend.name);
            last_error = Some(ApiError::backend_busy(&backend.name));
            continue;
        };
        let sent = Instant::now();
        let response = match send(&out, backend) {
            Ok(response) => response,
            Err(e) => {
                proxy.router.failed(attempt, None, &e.message);
                last_error = Some(e);
                ctx.failovers += u32::from(!is_last);
                continue;
            }
        };
        ctx.ttfb = Some(sent.elapsed());
        ctx.sent = Some(sent);
        let status = response.status();
        if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
            proxy.router.succeeded(attempt);
        } else {
            let why = format!("answered {status}");
            proxy.router.failed(attempt, retry_after(&response), &why);
            if !is_last {
                warn!("backend={:?} answered {status}; failing over", backend.name);
                ctx.failovers += 1;
                continue;
            }
        }
        let replays = endpoint == Endpoint::ChatCompletions
            && backend.reasoning_replay != ReasoningReplay::Off;
        let refused = proxy.shared.stream_usage.refused(&backend.name);
        let job = Job {
            endpoint,
            backend: &backend.name,
            ask: &out.ask,
            reasoning: replays.then_some(&proxy.shared.reasoning),
            hide_usage: stream_usage::adds(out.ask.include_usage, endpoint, refused),
        };
        return relay::answer(response, &job, responder, ctx);
    }
    let e = last_error.unwrap_or_else(|| ApiError::internal("no backend to try"));
    reply::error(responder, ctx, &e)
}

/// Sends the request to one backend. A backend that answers 400 or 422 about something the
/// proxy did to the request has taught something, and gets the request once more without it
/// (it refused the request, so nothing was applied): in `reasoning_replay: auto`, whether it
/// needs `reasoning_content` or rejects it; and whether it refuses `stream_options`.
fn send(out: &Outbound<'_>, backend: &Backend) -> Result<UpstreamResponse, ApiError> {
    let cache = &out.proxy.shared.reasoning;
    let mend = match out.endpoint {
        Endpoint::ChatCompletions => cache.mend_for(backend),
        _ => Mend::Off,
    };
    let how = rewrite(out, backend, mend);
    let (body, restored) = request::upstream_body(&out.fields, &out.ask, &how)?;
    // From what was decided, not by scanning the body (a long history is many KiB).
    let sent_stream_options =
        !how.drop_stream_options && (how.add_usage || out.fields.contains("stream_options"));
    let response = post(out, backend, body)?;
    let status = response.status().as_u16();
    let may_learn = backend.reasoning_replay == ReasoningReplay::Auto || sent_stream_options;
    if !may_learn || !matches!(status, 400 | 422) {
        return Ok(response);
    }
    let (head, body) = response.into_parts();
    let length = relay::content_length(&head.headers);
    let raw = relay::read_bounded(&mut body.into_reader(), length, &backend.name)?;
    let tried = Tried {
        mend,
        restored,
        sent_stream_options,
    };
    if !learn(out, backend, &raw, &tried, status) {
        // Not about what the proxy did: the client gets the backend's answer as it was.
        let body = ureq::Body::builder().data(raw);
        return Ok(http::Response::from_parts(head, body));
    }
    let how = rewrite(out, backend, cache.mend_for(backend));
    let (body, _) = request::upstream_body(&out.fields, &out.ask, &how)?;
    post(out, backend, body)
}

/// What the proxy did to a request that was refused.
struct Tried {
    mend: Mend,
    restored: reasoning::Restored,
    /// The body had `stream_options` (the proxy's or the client's).
    sent_stream_options: bool,
}

/// Learns from a 400/422 body what the backend refused; whether anything new was learned.
fn learn(out: &Outbound<'_>, backend: &Backend, raw: &[u8], tried: &Tried, status: u16) -> bool {
    let name = &backend.name;
    if tried.sent_stream_options
        && stream_usage::names_it(raw)
        && out.proxy.shared.stream_usage.learn(name)
    {
        warn!(
            "backend={name:?} refuses stream_options (it answered {status}); requests to it are \
             sent without them from now on, and this one again"
        );
        return true;
    }
    let cache = &out.proxy.shared.reasoning;
    let lesson = if backend.reasoning_replay != ReasoningReplay::Auto
        || !reasoning::error_names_reasoning(raw)
    {
        None
    } else if tried.restored.lacking > 0 && tried.mend == Mend::Own {
        Some(Learned::Thinking)
    } else if tried.restored.added() {
        Some(Learned::Rejects)
    } else {
        None
    };
    let Some(lesson) = lesson.filter(|l| cache.learn(name, *l)) else {
        return false;
    };
    match lesson {
        Learned::Thinking => warn!(
            "backend={name:?} needs reasoning_content in tool-call turns (it answered {status} \
             without it); treating it as a thinking model from now on and sending again"
        ),
        Learned::Rejects => warn!(
            "backend={name:?} rejects reasoning_content (it answered {status}); sending histories \
             to it as clients write them from now on, and this request again"
        ),
    }
    true
}

/// How the request is rewritten for `backend`.
fn rewrite<'a>(out: &'a Outbound<'_>, backend: &'a Backend, mend: Mend) -> Rewrite<'a> {
    let refused = out.proxy.shared.stream_usage.refused(&backend.name);
    Rewrite {
        endpoint: out.endpoint,
        backend,
        reasoning: &out.proxy.shared.reasoning,
        mend,
        add_usage: stream_usage::adds(out.ask.include_usage, out.endpoint, refused),
        drop_stream_options: refused,
    }
}

fn post(
    out: &Outbound<'_>,
    backend: &Backend,
    body: Vec<u8>,
) -> Result<UpstreamResponse, ApiError> {
    let path = out.endpoint.api_path();
    out.proxy
        .upstream
        .post_json(backend, path, out.request.headers(), body)
}

/// A 429's `Retry-After` in seconds (the HTTP-date form is rare from APIs and not used).
fn retry_after(response: &UpstreamResponse) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}
