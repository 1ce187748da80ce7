//! Counters and histograms for Prometheus, rendered in its text format. They live as long as
//! the process, across reloads. Labels are bounded: backend names and model ids come from the
//! config (an unknown model is recorded as "-"), statuses are numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Keyed by backend, then model: nested so that counting a request looks its labels up
/// without allocating them (only a first sighting does).
#[derive(Default)]
struct Tables {
    requests: BTreeMap<String, BTreeMap<String, BTreeMap<u16, u64>>>,
    bytes: BTreeMap<String, u64>,
    tokens: BTreeMap<String, BTreeMap<String, BTreeMap<&'static str, u64>>>,
    cooldowns: BTreeMap<String, u64>,
    busy: BTreeMap<String, u64>,
    ttfb: BTreeMap<String, Histogram>,
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
    pub duration: Duration,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
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
        with(&mut t.requests, o.backend, |models| {
            with(models, o.model, |statuses| {
                *statuses.entry(o.status).or_default() += 1;
            });
        });
        with(&mut t.bytes, o.backend, |n| *n += o.bytes);
        for (kind, n) in [
            ("prompt", o.prompt_tokens),
            ("completion", o.completion_tokens),
        ] {
            if n > 0 {
                with(&mut t.tokens, o.backend, |models| {
                    with(models, o.model, |kinds| {
                        *kinds.entry(kind).or_default() += n
                    });
                });
            }
        }
        if let Some(ttfb) = o.ttfb {
            with(&mut t.ttfb, o.backend, |h| h.add(ttfb));
            with(&mut t.duration, o.backend, |h| h.add(o.duration));
        }
    }

    pub fn cooldown(&self, backend: &str) {
        *self.lock().cooldowns.entry(backend.to_owned()).or_default() += 1;
    }

    /// A request skipped a backend at its `max_in_flight`.
    pub fn backend_busy(&self, backend: &str) {
        with(&mut self.lock().busy, backend, |n| *n += 1);
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
        for (backend, model, status, n) in flatten(&t.requests) {
            let _ = writeln!(
                out,
                "trae_proxy_requests_total{{backend=\"{}\",model=\"{}\",status=\"{status}\"}} {n}",
                esc(backend),
                esc(model)
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
        for (backend, model, kind, n) in flatten(&t.tokens) {
            let _ = writeln!(
                out,
                "trae_proxy_tokens_total{{backend=\"{}\",model=\"{}\",kind=\"{kind}\"}} {n}",
                esc(backend),
                esc(model)
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
}

/// Applies `f` to `key`'s entry, creating it (and only then allocating the key) if missing.
fn with<V: Default>(map: &mut BTreeMap<String, V>, key: &str, f: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(v) => f(v),
        None => f(map.entry(key.to_owned()).or_default()),
    }
}

/// backend -> model -> label -> count, as rows in label order.
fn flatten<L: Copy>(
    table: &BTreeMap<String, BTreeMap<String, BTreeMap<L, u64>>>,
) -> impl Iterator<Item = (&str, &str, L, u64)> {
    table.iter().flat_map(|(backend, models)| {
        models.iter().flat_map(move |(model, counts)| {
            counts
                .iter()
                .map(move |(label, n)| (backend.as_str(), model.as_str(), *label, *n))
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
            duration: Duration::from_millis(700),
            prompt_tokens: 5,
            completion_tokens: 7,
        });
        m.cooldown("b\"1");
        let text = m.render();
        for line in [
            r#"trae_proxy_requests_total{backend="b\"1",model="m",status="200"} 1"#,
            r#"trae_proxy_upstream_ttfb_seconds_bucket{backend="b\"1",le="0.025"} 0"#,
            r#"trae_proxy_upstream_ttfb_seconds_bucket{backend="b\"1",le="0.05"} 1"#,
            r#"trae_proxy_upstream_duration_seconds_count{backend="b\"1"} 1"#,
            "trae_proxy_in_flight_requests 1",
            "trae_proxy_failovers_total 1",
            r#"trae_proxy_cooldowns_total{backend="b\"1"} 1"#,
            r#"trae_proxy_tokens_total{backend="b\"1",model="m",kind="completion"} 7"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }
}
