//! The status page of the admin listener: `GET /status.json` ([`report`]) and `GET /`, the same
//! data as one self-contained HTML page ([`page`]). What it shows: version and uptime; each
//! backend's condition (healthy, cooling down until when, failing, and the last error as
//! clients saw it), its requests, errors, latency and time to first token; tokens and usage
//! today and this month by model and by key name; requests and tokens per hour over the last
//! day. Never a key, a backend URL or a header: names only.

mod json;
pub mod page;

use std::sync::Arc;
use std::time::Instant;

use json::Obj;

use crate::metrics::{BackendFigures, Metrics};
use crate::upstream::route::{Condition, MemberStatus, Router};
use crate::usage::{Counts, Ledger, Row, day, sum_by};

/// What the page is made from; the router is the running configuration's.
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub ledger: Arc<Ledger>,
    pub started: Instant,
    pub started_unix: u64,
}

/// The status as JSON text.
pub fn report(sources: &Sources, router: &Router) -> String {
    // First: a request is counted in the figures and the ledger before it stops being in
    // flight, so "in_flight": 0 read before them means every finished request is in them (a
    // reader waiting for quiet, the test suite among them, found one missing otherwise).
    let in_flight = sources.metrics.in_flight();
    let now = day::unix_now();
    let today = day::of(now);
    let figures = sources.metrics.backend_figures();
    let members = router.status();
    let month = sources.ledger.rows_since(day::month_start(today));
    let todays: Vec<(Row, Counts)> = month
        .iter()
        .filter(|(r, _)| r.day == today)
        .cloned()
        .collect();
    let (requests, errors) = figures
        .values()
        .fold((0, 0), |(r, e), f| (r + f.requests, e + f.errors));
    let mut out = String::with_capacity(4096);
    let mut o = Obj::open(&mut out);
    o.str("version", env!("CARGO_PKG_VERSION"))
        .str("commit", env!("TRAE_PROXY_COMMIT"))
        .str("target", env!("TRAE_PROXY_TARGET"))
        .num("now", now)
        .num("started", sources.started_unix)
        .num("uptime_seconds", sources.started.elapsed().as_secs())
        .obj("requests", |r| {
            r.num("total", requests)
                .num("errors", errors)
                .num("in_flight", in_flight as u64);
        })
        .list("backends", &members, |b, m| {
            backend(b, m, figures.get(&m.name), now)
        })
        .obj("usage", |u| {
            u.obj("today", |t| {
                t.str("day", &day::name(today));
                usage(t, &todays);
            })
            .obj("month", |m| {
                m.str("from", &day::name(day::month_start(today)));
                usage(m, &month);
            });
        })
        .list("hours", &sources.ledger.last_hours(now), |o, h| {
            o.num("start", h.start)
                .num("requests", h.requests)
                .num("tokens", h.tokens);
        });
    o.close();
    out
}

fn backend(o: &mut Obj<'_>, m: &MemberStatus, figures: Option<&BackendFigures>, now: u64) {
    let (state, cooling_until) = match m.state {
        Condition::Healthy => ("healthy", None),
        Condition::Cooling(left) => ("cooling", Some(now + left.as_secs().max(1))),
        Condition::Failing => ("failing", None),
    };
    let ms = |s: Option<f64>| s.map(|s| (s * 1000.0).round() as u64);
    let f = figures.cloned().unwrap_or_default();
    o.str("name", &m.name)
        .str("model", &m.model)
        .str("state", state)
        .opt("cooling_until", cooling_until)
        .num("consecutive_failures", u64::from(m.consecutive_failures))
        .opt_str("last_error", m.last_error.as_deref())
        .opt(
            "last_failure_seconds_ago",
            m.last_failure.map(|d| d.as_secs()),
        )
        .num("in_flight", m.in_flight as u64)
        .num("max_in_flight", m.max_in_flight as u64)
        .num("requests", f.requests)
        .num("errors", f.errors)
        .opt("latency_p50_ms", ms(f.p50))
        .opt("latency_p95_ms", ms(f.p95))
        .opt("first_token_p50_ms", ms(f.first_token_p50))
        .num("tokens", f.tokens);
}

/// A period's usage by model and by key name, largest token count first.
fn usage(o: &mut Obj<'_>, rows: &[(Row, Counts)]) {
    for (key, field) in [("by_model", 0), ("by_key", 1)] {
        let mut sums = sum_by(rows, &|r| {
            if field == 0 {
                r.model.clone()
            } else {
                r.key.clone()
            }
        });
        sums.sort_by(|a, b| b.1.tokens().cmp(&a.1.tokens()).then(a.0.cmp(&b.0)));
        o.list(key, &sums, |o, (name, c)| {
            o.str("name", name)
                .num("requests", c.requests)
                .num("prompt", c.prompt)
                .num("completion", c.completion)
                .num("reasoning", c.reasoning)
                .num("cached", c.cached)
                .num("unknown", c.unknown);
        });
    }
}
