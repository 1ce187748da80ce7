//! Per-key limits: `requests_per_minute` (a token bucket per key name, refilled continuously,
//! so a burst of the whole minute's allowance is possible and then one request every
//! 60/limit seconds) and `tokens_per_day` (from the usage ledger: what the key's requests used
//! today, UTC). Both hold per proxy instance; two proxies behind a balancer each allow the
//! full limit. The buckets live as long as the process: a reload keeps them and applies the
//! new limits.

use std::sync::Mutex;
use std::time::Instant;

use crate::api_error::ApiError;
use crate::config::AccessKey;
use crate::usage::{Ledger, day};

/// A bucket per key name that has a rate limit: a handful, so a vector searched in order
/// (a map would add its code to the binary for nothing).
#[derive(Default)]
pub struct Rates(Mutex<Vec<(String, Bucket)>>);

struct Bucket {
    /// Requests that may still be made now (fractional: refilled continuously).
    tokens: f64,
    at: Instant,
    /// The limit the bucket was last filled for.
    capacity: f64,
}

impl Rates {
    /// Takes one request from `key`'s allowance, or says when the next one is allowed.
    fn take(&self, name: &str, per_minute: u32, now: Instant) -> Result<(), u64> {
        let capacity = f64::from(per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let i = match buckets.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                let fresh = Bucket {
                    tokens: capacity,
                    at: now,
                    capacity,
                };
                buckets.push((name.to_owned(), fresh));
                buckets.len() - 1
            }
        };
        let bucket = &mut buckets[i].1;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        // A changed limit applies at once: a raised one adds what it raised, a lowered one
        // caps what was saved up.
        let raised = (capacity - bucket.capacity).max(0.0);
        bucket.capacity = capacity;
        bucket.tokens = (bucket.tokens + raised + elapsed * per_second).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

/// Whether `key` may make a request now.
pub fn check(key: &AccessKey, rates: &Rates, ledger: &Ledger) -> Result<(), ApiError> {
    if let Some(per_day) = key.tokens_per_day {
        let now = day::unix_now();
        let used = ledger.tokens_of_key(&key.name, day::of(now));
        if used >= per_day {
            let wait = day::seconds_to_midnight(now);
            return Err(ApiError::key_token_budget_spent(
                &key.name, used, per_day, wait,
            ));
        }
    }
    if let Some(per_minute) = key.requests_per_minute {
        rates
            .take(&key.name, per_minute, Instant::now())
            .map_err(|wait| ApiError::key_rate_limited(&key.name, per_minute, wait))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_minute_allowance_then_one_per_interval() {
        let rates = Rates::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rates.take("a", 3, t0), Ok(()));
        }
        assert_eq!(rates.take("a", 3, t0), Err(20));
        assert_eq!(rates.take("b", 3, t0), Ok(()), "each key its own bucket");
        assert_eq!(rates.take("a", 3, t0 + Duration::from_secs(10)), Err(10));
        assert_eq!(rates.take("a", 3, t0 + Duration::from_secs(20)), Ok(()));
        // A lower limit after a reload caps what was saved up; a raised one applies at once.
        let later = t0 + Duration::from_secs(600);
        assert_eq!(rates.take("a", 1, later), Ok(()));
        assert_eq!(rates.take("a", 1, later), Err(60));
        assert_eq!(rates.take("a", 5, later), Ok(()));
    }
}
