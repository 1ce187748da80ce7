//! Percentiles over recorded samples.

use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn summarize(samples: &mut [Duration]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i.min(samples.len() - 1)]
    };
    Summary {
        count: samples.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: samples[samples.len() - 1],
    }
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
