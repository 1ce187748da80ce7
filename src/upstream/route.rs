//! From the model a client names to the backends that may serve it, in the order to try them.
//!
//! All active entries with the same `custom_model_id` form a pool. Each request starts at the
//! member chosen by smooth weighted round-robin (nginx's algorithm: spread evenly, in proportion
//! to `weight`), then falls over to the other members. Passive health: a member that fails
//! `failures_before_cooldown` times in a row cools down (`cooldown`, doubling per further
//! failure up to `max_cooldown`; a 429's `Retry-After` is honoured as given) and is skipped until
//! then. When every member is cooling, the least recently failed ones are tried rather than
//! refusing outright.
//!
//! Unlike the original, an unknown model is an error unless a catch-all entry
//! (`custom_model_id: "*"`) exists: answering with another model silently is worse than failing.
//!
//! Bulkheads: each backend serves at most its `max_in_flight` requests at once (Envoy's circuit
//! breakers, HAProxy's `maxconn` per server). A member at its cap is skipped like a cooling one,
//! and a request no member can take gets a quick 503 — never a wait that would tie a thread to
//! an overloaded backend while other models need it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::warn;

use crate::config::{Backend, CATCH_ALL, Config, Health};
use crate::metrics::Metrics;

/// Requests in flight per backend name, kept across reloads (a reload must not forget the
/// requests still running on the old configuration).
#[derive(Default)]
pub struct Bulkheads {
    counts: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

impl Bulkheads {
    fn counter(&self, backend: &str) -> Arc<AtomicUsize> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(counts.entry(backend.to_owned()).or_default())
    }

    /// Requests in flight on `backend` now.
    #[cfg(test)]
    pub fn in_flight(&self, backend: &str) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(backend).map_or(0, |c| c.load(Ordering::Acquire))
    }
}

/// One request's place on a backend, given back on drop.
pub struct Entered(Arc<AtomicUsize>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Router {
    pools: Vec<Pool>,
    catch_all: Option<Pool>,
    health: Health,
    metrics: Arc<Metrics>,
}

struct Pool {
    members: Vec<Arc<Backend>>,
    state: Mutex<Vec<MemberState>>,
    /// Per member: its requests in flight (shared by name with [`Bulkheads`]) and its cap.
    in_flight: Vec<(Arc<AtomicUsize>, usize)>,
}

#[derive(Default, Clone)]
struct MemberState {
    /// Smooth weighted round-robin's running weight.
    current: i64,
    consecutive_failures: u32,
    cooling_until: Option<Instant>,
    last_failure: Option<Instant>,
    /// How many cool-downs in a row: the exponent of the back-off.
    level: u32,
    /// What went wrong last (an error message as clients get it: no URL, no key).
    last_error: Option<String>,
}

/// One backend as the status page shows it.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub name: String,
    /// The model id it serves (`*` for the catch-all).
    pub model: String,
    pub state: Condition,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// How long ago the last failure was.
    pub last_failure: Option<Duration>,
    pub in_flight: usize,
    pub max_in_flight: usize,
}

/// Healthy, cooling down (skipped) for a while yet, or failing (not yet cooling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Healthy,
    Cooling(Duration),
    Failing,
}

/// One backend to try for a request; report how it went with [`Router::succeeded`] or
/// [`Router::failed`].
pub struct Attempt<'r> {
    pool: &'r Pool,
    index: usize,
}

impl Attempt<'_> {
    pub fn backend(&self) -> &Backend {
        &self.pool.members[self.index]
    }
}

impl Router {
    pub fn new(config: &Config, metrics: Arc<Metrics>, bulkheads: &Bulkheads) -> Self {
        let mut pools: Vec<Pool> = Vec::new();
        let mut catch_all: Option<Pool> = None;
        for backend in config.active_backends() {
            let member = Arc::new(backend.clone());
            let pool = if backend.custom_model_id == CATCH_ALL {
                catch_all.get_or_insert_with(Pool::empty)
            } else if let Some(i) = pools
                .iter()
                .position(|p| p.members[0].custom_model_id == backend.custom_model_id)
            {
                &mut pools[i]
            } else {
                pools.push(Pool::empty());
                let last = pools.len() - 1;
                &mut pools[last]
            };
            let cap = backend
                .max_in_flight
                .unwrap_or((config.server.workers / 2).max(1));
            pool.in_flight.push((bulkheads.counter(&backend.name), cap));
            pool.members.push(member);
        }
        for pool in pools.iter_mut().chain(catch_all.iter_mut()) {
            pool.state = Mutex::new(vec![MemberState::default(); pool.members.len()]);
        }
        Router {
            pools,
            catch_all,
            health: config.server.health,
            metrics,
        }
    }

    /// The backends to try for `model`, best first, at most `max_attempts`. `None` when no
    /// entry serves the model.
    pub fn plan(&self, model: &str) -> Option<Vec<Attempt<'_>>> {
        let pool = self.pool_for(model)?;
        let order = pool.order(Instant::now(), self.health.max_attempts);
        Some(
            order
                .into_iter()
                .map(|index| Attempt { pool, index })
                .collect(),
        )
    }

    /// Takes a place on the attempt's backend, unless it has `max_in_flight` requests already.
    pub fn enter(&self, attempt: &Attempt<'_>) -> Option<Entered> {
        let (count, cap) = attempt.pool.in_flight.get(attempt.index)?;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < *cap).then_some(n + 1)
            })
            .ok()?;
        Some(Entered(Arc::clone(count)))
    }

    pub fn succeeded(&self, attempt: &Attempt<'_>) {
        let mut state = attempt.pool.lock();
        let s = &mut state[attempt.index];
        s.consecutive_failures = 0;
        s.cooling_until = None;
        s.level = 0;
    }

    /// Records a failure and why; `retry_after` (from a 429) sets the cool-down directly.
    pub fn failed(&self, attempt: &Attempt<'_>, retry_after: Option<Duration>, why: &str) {
        let now = Instant::now();
        let mut state = attempt.pool.lock();
        let s = &mut state[attempt.index];
        s.consecutive_failures += 1;
        s.last_failure = Some(now);
        s.last_error = Some(why.chars().take(200).collect());
        let cool = match retry_after {
            Some(d) => Some(d.min(self.health.max_cooldown)),
            None if s.consecutive_failures >= self.health.failures_before_cooldown => {
                let factor = 2u32.saturating_pow(s.level.min(16));
                Some(
                    self.health
                        .cooldown
                        .saturating_mul(factor)
                        .min(self.health.max_cooldown),
                )
            }
            None => None,
        };
        if let Some(d) = cool {
            s.cooling_until = Some(now + d);
            s.level = s.level.saturating_add(1);
            self.metrics.cooldown(&attempt.backend().name);
            warn!(
                "backend={:?} cooling down for {}s after {} consecutive failure(s)",
                attempt.backend().name,
                d.as_secs(),
                s.consecutive_failures
            );
        }
    }

    /// Every active backend's condition, pools in file order, the catch-all last.
    pub fn status(&self) -> Vec<MemberStatus> {
        let now = Instant::now();
        let mut out = Vec::new();
        for pool in self.pools.iter().chain(self.catch_all.iter()) {
            let state = pool.lock();
            for (i, member) in pool.members.iter().enumerate() {
                let s = &state[i];
                let condition = match s.cooling_until {
                    Some(until) if until > now => Condition::Cooling(until - now),
                    _ if s.consecutive_failures > 0 => Condition::Failing,
                    _ => Condition::Healthy,
                };
                let (count, cap) = &pool.in_flight[i];
                out.push(MemberStatus {
                    name: member.name.clone(),
                    model: member.custom_model_id.clone(),
                    state: condition,
                    consecutive_failures: s.consecutive_failures,
                    last_error: s.last_error.clone(),
                    last_failure: s.last_failure.map(|t| now.saturating_duration_since(t)),
                    in_flight: count.load(Ordering::Acquire),
                    max_in_flight: *cap,
                });
            }
        }
        out
    }

    /// The entry that answers for `model` in the model list, if it is listed.
    pub fn lookup(&self, model: &str) -> Option<&Backend> {
        self.pools
            .iter()
            .find(|p| p.members[0].custom_model_id == model)
            .map(|p| p.members[0].as_ref())
    }

    /// Each listed model once, in file order, with its first entry. The catch-all is not listed.
    pub fn models(&self) -> impl Iterator<Item = &Backend> {
        self.pools.iter().map(|p| p.members[0].as_ref())
    }

    /// The ids for an error message, e.g. "a, b, c".
    pub fn model_list(&self) -> String {
        let ids: Vec<&str> = self.models().map(|b| b.custom_model_id.as_str()).collect();
        if ids.is_empty() {
            "none (no active entry in apis)".to_owned()
        } else {
            ids.join(", ")
        }
    }

    fn pool_for(&self, model: &str) -> Option<&Pool> {
        self.pools
            .iter()
            .find(|p| p.members[0].custom_model_id == model)
            .or(self.catch_all.as_ref())
    }
}

impl Pool {
    fn empty() -> Pool {
        Pool {
            members: Vec::new(),
            state: Mutex::new(Vec::new()),
            in_flight: Vec::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<MemberState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Member indices to try, in order.
    fn order(&self, now: Instant, max: usize) -> Vec<usize> {
        let mut state = self.lock();
        let healthy: Vec<usize> = (0..self.members.len())
            .filter(|&i| state[i].cooling_until.is_none_or(|t| t <= now))
            .collect();
        let mut order = Vec::with_capacity(self.members.len());
        if healthy.is_empty() {
            order.extend(0..self.members.len());
            order.sort_by_key(|&i| state[i].last_failure);
        } else {
            let total: i64 = healthy
                .iter()
                .map(|&i| i64::from(self.members[i].weight))
                .sum();
            let mut best = healthy[0];
            for &i in &healthy {
                state[i].current += i64::from(self.members[i].weight);
                if state[i].current > state[best].current {
                    best = i;
                }
            }
            state[best].current -= total;
            // The chosen one first, then the other healthy members in file order after it.
            let start = healthy.iter().position(|&i| i == best).unwrap_or(0);
            order.extend(healthy[start..].iter().chain(&healthy[..start]));
        }
        order.truncate(max);
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn router(yaml: &str) -> Router {
        Router::new(
            &Config::from_yaml(yaml, Path::new(".")).unwrap(),
            Arc::new(Metrics::default()),
            &Bulkheads::default(),
        )
    }

    fn names(plan: &[Attempt<'_>]) -> Vec<String> {
        plan.iter().map(|a| a.backend().name.clone()).collect()
    }

    const POOL: &str = r#"
apis:
  - {name: a, endpoint: "http://a", custom_model_id: m, target_model_id: t, weight: 3}
  - {name: b, endpoint: "http://b", custom_model_id: m, target_model_id: t}
  - {name: off, endpoint: "http://c", custom_model_id: m, target_model_id: t, active: false}
  - {name: other, endpoint: "http://d", custom_model_id: n, target_model_id: t}
server:
  cooldown: 60
"#;

    #[test]
    fn smooth_weighted_round_robin_spreads_by_weight() {
        let r = router(POOL);
        let firsts: Vec<String> = (0..8)
            .map(|_| names(&r.plan("m").unwrap())[0].clone())
            .collect();
        // nginx's smooth WRR for 3:1 interleaves rather than bunching: a a b a | a a b a.
        assert_eq!(firsts, ["a", "a", "b", "a", "a", "a", "b", "a"]);
        assert_eq!(
            names(&r.plan("m").unwrap()).len(),
            2,
            "inactive entries are not in pools"
        );
    }

    #[test]
    fn failed_members_cool_down_and_come_back() {
        let r = router(POOL);
        let plan = r.plan("m").unwrap();
        let a = plan.iter().find(|p| p.backend().name == "a").unwrap();
        r.failed(a, None, "answered 503");
        for _ in 0..5 {
            assert_eq!(
                names(&r.plan("m").unwrap()),
                ["b"],
                "a is skipped while cooling"
            );
        }
        let plan = r.plan("m").unwrap();
        r.failed(&plan[0], None, "answered 503");
        // Both cooling: the least recently failed (a) is tried first, rather than nothing.
        assert_eq!(names(&r.plan("m").unwrap()), ["a", "b"]);
        let plan = r.plan("m").unwrap();
        r.succeeded(&plan[0]);
        assert_eq!(names(&r.plan("m").unwrap())[0], "a");
    }

    #[test]
    fn catch_all_serves_unknown_models_but_is_not_listed() {
        let r = router(
            r#"
apis:
  - {name: known, endpoint: "http://a", custom_model_id: m, target_model_id: t}
  - {name: any, endpoint: "http://b", custom_model_id: "*", target_model_id: "*"}
"#,
        );
        assert_eq!(names(&r.plan("m").unwrap()), ["known"]);
        let plan = r.plan("whatever").unwrap();
        assert_eq!(names(&plan), ["any"]);
        assert_eq!(plan[0].backend().target_for("whatever"), "whatever");
        assert_eq!(r.model_list(), "m");
        assert!(r.lookup("whatever").is_none());
    }

    #[test]
    fn a_backend_takes_at_most_its_cap_and_reloads_share_the_count() {
        let yaml = r#"
apis:
  - {name: a, endpoint: "http://a", custom_model_id: m, max_in_flight: 2}
server:
  workers: 8
"#;
        let bulkheads = Bulkheads::default();
        let config = Config::from_yaml(yaml, Path::new(".")).unwrap();
        let old = Router::new(&config, Arc::new(Metrics::default()), &bulkheads);
        let plan = old.plan("m").unwrap();
        let first = old.enter(&plan[0]).unwrap();
        // A reload builds a new router: the request on the old one still counts.
        let new = Router::new(&config, Arc::new(Metrics::default()), &bulkheads);
        let plan = new.plan("m").unwrap();
        let _second = new.enter(&plan[0]).unwrap();
        assert!(new.enter(&plan[0]).is_none(), "at its cap");
        assert_eq!(bulkheads.in_flight("a"), 2);
        drop(first);
        assert!(new.enter(&plan[0]).is_some(), "room again");
        // Without a cap of its own: half of server.workers.
        let r = router(POOL);
        let plan = r.plan("n").unwrap();
        let held: Vec<_> = (0..2000).map_while(|_| r.enter(&plan[0])).collect();
        assert_eq!(held.len(), 1024, "half of the default 2048 workers");
    }

    #[test]
    fn unknown_model_without_catch_all_has_no_plan() {
        assert!(router(POOL).plan("nope").is_none());
    }
}
