//! Counters and histograms for Prometheus, rendered in its text format. They live as long as
//! the process, across reloads. Labels are bounded: backend names and model ids come from the
//! config (an unknown model is recorded as "-"), statuses are numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::usage::Tokens;

/// Upper bounds in seconds: from a fast local model's first byte to a long generation.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Default)]
pub struct Metrics {
    /// Open client connections, idle ones included (the server's connection slots).
    pub connections: Arc<AtomicUsize>,
    /// Reads the bytes of request bodies held in memory (the server's budget), once the
    /// server has one; a reader rather than the budget so this file needs nothing above it.
    pub buffered_body_bytes: std::sync::OnceLock<Box<dyn Fn() -> u64 + Send + Sync>>,
    in_flight: AtomicUsize,
    failovers: AtomicU64,
    inner: Mutex<Tables>,
}

/// Backend -> model -> key name -> label -> count. One type for requests (label: status) and
/// tokens (label: index into [`TOKEN_KINDS`]), so the map code is compiled once.
type ByKey = BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeMap<u16, u64>>>>;

const TOKEN_KINDS: [&str; 4] = ["prompt", "completion", "reasoning", "cached"];

/// Keyed by backend, then model, then key name: nested so that counting a request looks its
/// labels up without allocating them (only a first sighting does).
#[derive(Default)]
struct Tables {
    requests: ByKey,
    bytes: BTreeMap<String, u64>,
    tokens: ByKey,
    cooldowns: BTreeMap<String, u64>,
    busy: BTreeMap<String, u64>,
    ttfb: BTreeMap<String, Histogram>,
    first_token: BTreeMap<String, Histogram>,
    duration: BTreeMap<String, Histogram>,
}

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// What one finished request contributes.
pub struct Observation<'a> {
    pub backend: &'a str,
    pub model: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub failovers: u32,
    pub ttfb: Option<Duration>,
    /// From request sent upstream to the first event of a stream relayed to the client.
    pub first_token: Option<Duration>,
    pub duration: Duration,
    /// The access key's name, `-` without keys (names come from the config: bounded).
    pub key: &'a str,
    pub tokens: Tokens,
}

/// One backend's figures for the status page.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BackendFigures {
    pub requests: u64,
    /// Answers with a 5xx status, or none (0).
    pub errors: u64,
    /// Seconds, estimated from the histogram buckets: request time p50 and p95, and time to
    /// the first streamed event p50.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub first_token_p50: Option<f64>,
    pub tokens: u64,
}

/// Counts a request as in flight until dropped.
pub struct InFlight<'m>(&'m Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Metrics {
    pub fn start_request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    pub fn observe(&self, o: &Observation<'_>) {
        self.failovers
            .fetch_add(u64::from(o.failovers), Ordering::Relaxed);
        let mut t = self.lock();
        let t = &mut *t;
        count(&mut t.requests, o, o.status, 1);
        with(&mut t.bytes, o.backend, |n| *n += o.bytes);
        let tokens = o.tokens;
        let counts = [
            tokens.prompt,
            tokens.completion,
            tokens.reasoning,
            tokens.cached,
        ];
        for (kind, n) in (0u16..).zip(counts) {
            if n > 0 {
                count(&mut t.tokens, o, kind, n);
            }
        }
        if let Some(ttfb) = o.ttfb {
            with(&mut t.ttfb, o.backend, |h| h.add(ttfb));
            with(&mut t.duration, o.backend, |h| h.add(o.duration));
        }
        if let Some(first) = o.first_token {
            with(&mut t.first_token, o.backend, |h| h.add(first));
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn cooldown(&self, backend: &str) {
        *self.lock().cooldowns.entry(backend.to_owned()).or_default() += 1;
    }

    /// A request skipped a backend at its `max_in_flight`.
    pub fn backend_busy(&self, backend: &str) {
        with(&mut self.lock().busy, backend, |n| *n += 1);
    }

    /// Per backend that has served: requests, errors, latency and tokens.
    pub fn backend_figures(&self) -> BTreeMap<String, BackendFigures> {
        let t = self.lock();
        let mut out: BTreeMap<String, BackendFigures> = BTreeMap::new();
        for (backend, _, _, status, n) in flatten(&t.requests) {
            let f = out.entry(backend.to_owned()).or_default();
            f.requests += n;
            if status >= 500 || status == 0 {
                f.errors += n;
            }
        }
        for (backend, _, _, kind, n) in flatten(&t.tokens) {
            // Prompt and completion; reasoning and cached are parts of them.
            if kind < 2 {
                out.entry(backend.to_owned()).or_default().tokens += n;
            }
        }
        for (backend, h) in &t.duration {
            let f = out.entry(backend.clone()).or_default();
            f.p50 = h.quantile(0.5);
            f.p95 = h.quantile(0.95);
        }
        for (backend, h) in &t.first_token {
            out.entry(backend.clone()).or_default().first_token_p50 = h.quantile(0.5);
        }
        out
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let t = self.lock();
        let mut out = String::new();
        header(
            &mut out,
            "requests_total",
            "counter",
            "Requests by backend, client model and status.",
        );
        for (backend, model, key, status, n) in flatten(&t.requests) {
            let _ = writeln!(
                out,
                "trae_proxy_requests_total{{backend=\"{}\",model=\"{}\",key=\"{}\",status=\"{status}\"}} {n}",
                esc(backend),
                esc(model),
                esc(key)
            );
        }
        histogram(
            &mut out,
            "upstream_ttfb_seconds",
            "Time from sending to a backend until its response head.",
            &t.ttfb,
        );
        histogram(
            &mut out,
            "upstream_duration_seconds",
            "Time from sending to a backend until its response was relayed.",
            &t.duration,
        );
        histogram(
            &mut out,
            "first_token_seconds",
            "Time from sending to a backend until the first event of its stream was relayed.",
            &t.first_token,
        );
        header(
            &mut out,
            "in_flight_requests",
            "gauge",
            "Requests being served.",
        );
        let _ = writeln!(
            out,
            "trae_proxy_in_flight_requests {}",
            self.in_flight.load(Ordering::Acquire)
        );
        header(
            &mut out,
            "open_connections",
            "gauge",
            "Open client connections, idle ones included.",
        );
        let _ = writeln!(
            out,
            "trae_proxy_open_connections {}",
            self.connections.load(Ordering::Acquire)
        );
        header(
            &mut out,
            "buffered_body_bytes",
            "gauge",
            "Memory charged for request bodies being received or served (twice each body).",
        );
        let _ = writeln!(
            out,
            "trae_proxy_buffered_body_bytes {}",
            self.buffered_body_bytes.get().map_or(0, |read| read())
        );
        header(
            &mut out,
            "failovers_total",
            "counter",
            "Backends given up on before one answered.",
        );
        let _ = writeln!(
            out,
            "trae_proxy_failovers_total {}",
            self.failovers.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "cooldowns_total",
            "counter",
            "Times a backend was set to cool down.",
        );
        for (backend, n) in &t.cooldowns {
            let _ = writeln!(
                out,
                "trae_proxy_cooldowns_total{{backend=\"{}\"}} {n}",
                esc(backend)
            );
        }
        header(
            &mut out,
            "backend_busy_total",
            "counter",
            "Requests that found a backend at its max_in_flight.",
        );
        for (backend, n) in &t.busy {
            let _ = writeln!(
                out,
                "trae_proxy_backend_busy_total{{backend=\"{}\"}} {n}",
                esc(backend)
            );
        }
        header(
            &mut out,
            "response_bytes_total",
            "counter",
            "Body bytes sent to clients, by backend.",
        );
        for (backend, n) in &t.bytes {
            let _ = writeln!(
                out,
                "trae_proxy_response_bytes_total{{backend=\"{}\"}} {n}",
                esc(backend)
            );
        }
        header(
            &mut out,
            "log_lines_dropped_total",
            "counter",
            "Log lines that could not be written (stderr closed or failing).",
        );
        let _ = writeln!(
            out,
            "trae_proxy_log_lines_dropped_total {}",
            crate::logging::dropped()
        );
        header(
            &mut out,
            "tokens_total",
            "counter",
            "Tokens from the usage the backends reported.",
        );
        for (backend, model, key, kind, n) in flatten(&t.tokens) {
            let kind = TOKEN_KINDS[usize::from(kind)];
            let _ = writeln!(
                out,
                "trae_proxy_tokens_total{{backend=\"{}\",model=\"{}\",key=\"{}\",kind=\"{kind}\"}} {n}",
                esc(backend),
                esc(model),
                esc(key)
            );
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Histogram {
    fn add(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    /// The `q` quantile, linear within its bucket (as Prometheus' histogram_quantile does);
    /// past the last bound, that bound.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q * self.count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (bound, cumulative) in BUCKETS.iter().zip(self.counts) {
            if cumulative as f64 >= rank {
                let within = (cumulative - below).max(1) as f64;
                return Some(lower + (bound - lower) * ((rank - below as f64) / within));
            }
            below = cumulative;
            lower = *bound;
        }
        Some(lower)
    }
}

/// Adds `n` to the request's backend/model/key entry under `label`.
fn count(table: &mut ByKey, o: &Observation<'_>, label: u16, n: u64) {
    with(table, o.backend, |models| {
        with(models, o.model, |keys| {
            with(keys, o.key, |labels| *labels.entry(label).or_default() += n);
        });
    });
}

/// Applies `f` to `key`'s entry, creating it (and only then allocating the key) if missing.
fn with<V: Default>(map: &mut BTreeMap<String, V>, key: &str, f: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(v) => f(v),
        None => f(map.entry(key.to_owned()).or_default()),
    }
}

/// backend -> model -> key -> label -> count, as rows in label order.
fn flatten(table: &ByKey) -> impl Iterator<Item = (&str, &str, &str, u16, u64)> {
    table.iter().flat_map(|(backend, models)| {
        models.iter().flat_map(move |(model, keys)| {
            keys.iter().flat_map(move |(key, counts)| {
                counts.iter().map(move |(label, n)| {
                    (backend.as_str(), model.as_str(), key.as_str(), *label, *n)
                })
            })
        })
    })
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP trae_proxy_{name} {help}\n# TYPE trae_proxy_{name} {kind}"
    );
}

fn histogram(out: &mut String, name: &str, help: &str, by_backend: &BTreeMap<String, Histogram>) {
    header(out, name, "histogram", help);
    for (backend, h) in by_backend {
        let b = esc(backend);
        for (bound, n) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(
                out,
                "trae_proxy_{name}_bucket{{backend=\"{b}\",le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "trae_proxy_{name}_bucket{{backend=\"{b}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "trae_proxy_{name}_sum{{backend=\"{b}\"}} {}", h.sum);
        let _ = writeln!(
            out,
            "trae_proxy_{name}_count{{backend=\"{b}\"}} {}",
            h.count
        );
    }
}

/// A label value as the text format wants it (RFC: backslash, quote, newline escaped).
fn esc(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_escapes_labels() {
        let m = Metrics::default();
        let _a = m.start_request();
        m.observe(&Observation {
            backend: "b\"1",
            model: "m",
            status: 200,
            bytes: 10,
            failovers: 1,
            ttfb: Some(Duration::from_millis(30)),
            first_token: Some(Duration::from_millis(40)),
            duration: Duration::from_millis(700),
            key: "alice",
            tokens: Tokens {
                prompt: 5,
                completion: 7,
                reasoning: 2,
                cached: 0,
            },
        });
        m.cooldown("b\"1");
        let text = m.render();
        for line in [
            r#"trae_proxy_requests_total{backend="b\"1",model="m",key="alice",status="200"} 1"#,
            r#"trae_proxy_upstream_ttfb_seconds_bucket{backend="b\"1",le="0.025"} 0"#,
            r#"trae_proxy_upstream_ttfb_seconds_bucket{backend="b\"1",le="0.05"} 1"#,
            r#"trae_proxy_upstream_duration_seconds_count{backend="b\"1"} 1"#,
            "trae_proxy_in_flight_requests 1",
            "trae_proxy_failovers_total 1",
            r#"trae_proxy_cooldowns_total{backend="b\"1"} 1"#,
            r#"trae_proxy_tokens_total{backend="b\"1",model="m",key="alice",kind="completion"} 7"#,
            r#"trae_proxy_tokens_total{backend="b\"1",model="m",key="alice",kind="reasoning"} 2"#,
            r#"trae_proxy_first_token_seconds_count{backend="b\"1"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains(r#"kind="cached""#), "no zero counts");
        let figures = &m.backend_figures()["b\"1"];
        assert_eq!(
            (figures.requests, figures.errors, figures.tokens),
            (1, 0, 12)
        );
        // 700 ms lies in the (0.5, 1] bucket.
        let p50 = figures.p50.unwrap();
        assert!((0.5..=1.0).contains(&p50), "{p50}");
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in [1, 2, 3, 4, 200, 200, 200, 200, 200, 4000] {
            h.add(Duration::from_millis(ms));
        }
        assert!(h.quantile(0.5).unwrap() > 0.1 && h.quantile(0.5).unwrap() <= 0.25);
        assert!(h.quantile(0.95).unwrap() > 2.5 && h.quantile(0.95).unwrap() <= 5.0);
    }
}
