//! The status page of the admin listener: `GET /status.json` ([`report`]) and `GET /`, the same
//! data as one self-contained HTML page ([`page`]). What it shows: version and uptime; each
//! backend's condition (healthy, cooling down until when, failing, and the last error as
//! clients saw it), its requests, errors, latency and time to first token; tokens and usage
//! today and this month by model and by key name; requests and tokens per hour over the last
//! day. Never a key, a backend URL or a header: names only.

pub mod page;

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::metrics::Metrics;
use crate::upstream::route::{Condition, MemberStatus, Router};
use crate::usage::{Counts, Ledger, Row, day, sum_by};

/// What the page is made from; the router is the running configuration's.
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub ledger: Arc<Ledger>,
    pub started: Instant,
    pub started_unix: u64,
}

/// The status as JSON.
pub fn report(sources: &Sources, router: &Router) -> Value {
    let now = day::unix_now();
    let today = day::of(now);
    let figures = sources.metrics.backend_figures();
    let backends: Vec<Value> = router
        .status()
        .iter()
        .map(|m| backend(m, figures.get(&m.name), now))
        .collect();
    let month = sources.ledger.rows_since(day::month_start(today));
    let todays: Vec<(Row, Counts)> = month
        .iter()
        .filter(|(r, _)| r.day == today)
        .cloned()
        .collect();
    let (requests, errors) = figures
        .values()
        .fold((0, 0), |(r, e), f| (r + f.requests, e + f.errors));
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("TRAE_PROXY_COMMIT"),
        "target": env!("TRAE_PROXY_TARGET"),
        "now": now,
        "started": sources.started_unix,
        "uptime_seconds": sources.started.elapsed().as_secs(),
        "requests": {"total": requests, "errors": errors, "in_flight": sources.metrics.in_flight()},
        "backends": backends,
        "usage": {
            "today": {
                "day": day::name(today),
                "by_model": grouped(&todays, |r| &r.model),
                "by_key": grouped(&todays, |r| &r.key),
            },
            "month": {
                "from": day::name(day::month_start(today)),
                "by_model": grouped(&month, |r| &r.model),
                "by_key": grouped(&month, |r| &r.key),
            },
        },
        "hours": sources.ledger.last_hours(now).iter().map(|h| json!({
            "start": h.start, "requests": h.requests, "tokens": h.tokens,
        })).collect::<Vec<_>>(),
    })
}

fn backend(m: &MemberStatus, figures: Option<&crate::metrics::BackendFigures>, now: u64) -> Value {
    let (state, cooling_until) = match m.state {
        Condition::Healthy => ("healthy", None),
        Condition::Cooling(left) => ("cooling", Some(now + left.as_secs().max(1))),
        Condition::Failing => ("failing", None),
    };
    let ms = |s: Option<f64>| s.map(|s| (s * 1000.0).round() as u64);
    let f = figures.cloned().unwrap_or_default();
    json!({
        "name": m.name,
        "model": m.model,
        "state": state,
        "cooling_until": cooling_until,
        "consecutive_failures": m.consecutive_failures,
        "last_error": m.last_error,
        "last_failure_seconds_ago": m.last_failure.map(|d| d.as_secs()),
        "in_flight": m.in_flight,
        "max_in_flight": m.max_in_flight,
        "requests": f.requests,
        "errors": f.errors,
        "latency_p50_ms": ms(f.p50),
        "latency_p95_ms": ms(f.p95),
        "first_token_p50_ms": ms(f.first_token_p50),
        "tokens": f.tokens,
    })
}

/// Usage rows summed by one field, largest token count first.
fn grouped(rows: &[(Row, Counts)], field: fn(&Row) -> &String) -> Vec<Value> {
    let mut sums = sum_by(rows, &|r| field(r).clone());
    sums.sort_by(|a, b| b.1.tokens().cmp(&a.1.tokens()).then(a.0.cmp(&b.0)));
    sums.iter()
        .map(|(name, c)| {
            json!({
                "name": name, "requests": c.requests, "prompt": c.prompt,
                "completion": c.completion, "reasoning": c.reasoning, "cached": c.cached,
                "unknown": c.unknown,
            })
        })
        .collect()
}
