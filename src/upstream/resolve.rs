//! Backend host names resolved once per [`FRESH`], not on every request.
//!
//! ureq resolves a request's host name before it looks in its pool, so every request paid a
//! lookup, kept-alive connection or not. musl's resolver (the static builds) caches nothing:
//! per request that was opening and reading /etc/hosts (5 system calls for `localhost`) and,
//! for a name not in it — every hosted API — DNS queries to the configured server, a round trip
//! before the request could leave; a DNS hiccup failed requests whose connection was open.
//!
//! Here an answer is reused for [`FRESH`]. When a lookup fails, the last answer is used for up
//! to [`STALE`] more, as RFC 8767 lets a resolver serve stale data while its source is
//! unreachable: the addresses matter only for new connections, and an outdated one fails to
//! connect rather than reaching the wrong backend over TLS.

use std::fmt;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use http::Uri;
use log::debug;
use ureq::config::Config;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long an answer is used without asking again: the time a changed DNS record may take to
/// reach new connections (kept-alive ones are not affected by it either way).
pub const FRESH: Duration = Duration::from_secs(30);
/// How long past [`FRESH`] an answer still stands in when a new lookup fails.
pub const STALE: Duration = Duration::from_secs(600);
/// Names kept at most; a config names few backends, and reloading it builds new agents.
const MAX_NAMES: usize = 64;

pub struct CachingResolver<R> {
    inner: R,
    fresh: Duration,
    stale: Duration,
    answers: RwLock<Vec<Answer>>,
}

/// An answer for a scheme and authority: ureq's resolver gives addresses with the port, which
/// without one in the URL is the scheme's.
struct Answer {
    scheme: String,
    authority: String,
    addrs: ResolvedSocketAddrs,
    at: Instant,
}

impl<R: Resolver> CachingResolver<R> {
    pub fn new(inner: R) -> Self {
        CachingResolver::with_ages(inner, FRESH, STALE)
    }

    fn with_ages(inner: R, fresh: Duration, stale: Duration) -> Self {
        CachingResolver {
            inner,
            fresh,
            stale,
            answers: RwLock::new(Vec::new()),
        }
    }

    /// The kept answer for `scheme`/`authority` and its age.
    fn kept(&self, scheme: &str, authority: &str) -> Option<(ResolvedSocketAddrs, Duration)> {
        let answers = self.answers.read().unwrap_or_else(|p| p.into_inner());
        answers
            .iter()
            .find(|a| a.authority == authority && a.scheme == scheme)
            .map(|a| (a.addrs.clone(), a.at.elapsed()))
    }

    fn keep(&self, scheme: &str, authority: &str, addrs: &ResolvedSocketAddrs) {
        let mut answers = self.answers.write().unwrap_or_else(|p| p.into_inner());
        let answer = Answer {
            scheme: scheme.to_owned(),
            authority: authority.to_owned(),
            addrs: addrs.clone(),
            at: Instant::now(),
        };
        match answers
            .iter_mut()
            .find(|a| a.authority == authority && a.scheme == scheme)
        {
            Some(kept) => *kept = answer,
            None => {
                if answers.len() >= MAX_NAMES {
                    answers.clear();
                }
                answers.push(answer);
            }
        }
    }
}

impl<R: Resolver> Resolver for CachingResolver<R> {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            // Not a full URL: ureq's own resolver reports it.
            return self.inner.resolve(uri, config, timeout);
        };
        let authority = authority.as_str();
        let kept = match self.kept(scheme, authority) {
            Some((addrs, age)) if age < self.fresh => return Ok(addrs),
            outdated => outdated,
        };
        match self.inner.resolve(uri, config, timeout) {
            Ok(addrs) => {
                self.keep(scheme, authority, &addrs);
                Ok(addrs)
            }
            Err(e) => match kept {
                Some((addrs, age)) if age < self.fresh + self.stale => {
                    debug!(
                        "resolving {} failed ({e}); using the addresses found {}s ago",
                        uri.host().unwrap_or(""),
                        age.as_secs()
                    );
                    Ok(addrs)
                }
                _ => Err(e),
            },
        }
    }
}

impl<R> fmt::Debug for CachingResolver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingResolver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers 127.0.0.N where N counts the lookups, or fails while `failing` is set.
    #[derive(Debug, Default)]
    struct Counting {
        lookups: AtomicUsize,
        failing: Mutex<bool>,
        asked: Mutex<Vec<String>>,
    }

    impl Resolver for &'static Counting {
        fn resolve(
            &self,
            uri: &Uri,
            _: &Config,
            _: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.asked.lock().unwrap().push(uri.to_string());
            if *self.failing.lock().unwrap() {
                return Err(ureq::Error::HostNotFound);
            }
            let n = self.lookups.fetch_add(1, Ordering::SeqCst) + 1;
            let mut addrs = self.empty();
            addrs.push(SocketAddr::from(([127, 0, 0, n as u8], 443)));
            Ok(addrs)
        }
    }

    fn counting() -> &'static Counting {
        Box::leak(Box::default())
    }

    fn resolve(r: &CachingResolver<&'static Counting>, url: &str) -> Result<String, ureq::Error> {
        let uri: Uri = url.parse().unwrap();
        r.resolve(&uri, &Config::default(), NextTimeout::default())
            .map(|addrs| {
                addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
    }

    #[test]
    fn an_answer_is_reused_while_fresh_and_asked_again_after() {
        let inner = counting();
        let r = CachingResolver::with_ages(inner, Duration::from_millis(100), Duration::ZERO);
        assert_eq!(
            resolve(&r, "https://api.example.com/v1/chat").unwrap(),
            "127.0.0.1:443"
        );
        assert_eq!(
            resolve(&r, "https://api.example.com/v1/models").unwrap(),
            "127.0.0.1:443"
        );
        assert_eq!(
            inner.lookups.load(Ordering::SeqCst),
            1,
            "the second was not looked up"
        );
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(
            resolve(&r, "https://api.example.com/v1/chat").unwrap(),
            "127.0.0.2:443"
        );
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn hosts_and_ports_are_kept_apart() {
        let inner = counting();
        let r = CachingResolver::new(inner);
        resolve(&r, "https://a.example.com/").unwrap();
        resolve(&r, "https://b.example.com/").unwrap();
        resolve(&r, "https://a.example.com:8443/").unwrap();
        // Without a port the addresses carry the scheme's: http's are not https'.
        resolve(&r, "http://a.example.com/").unwrap();
        resolve(&r, "https://a.example.com/x").unwrap();
        assert_eq!(inner.lookups.load(Ordering::SeqCst), 4);
        assert_eq!(
            *inner.asked.lock().unwrap(),
            vec![
                "https://a.example.com/",
                "https://b.example.com/",
                "https://a.example.com:8443/",
                "http://a.example.com/"
            ]
        );
    }

    #[test]
    fn a_failed_lookup_falls_back_to_the_last_answer_within_the_stale_window() {
        let inner = counting();
        let r = CachingResolver::with_ages(
            inner,
            Duration::from_millis(50),
            Duration::from_millis(200),
        );
        resolve(&r, "http://backend.lan:8000/").unwrap();
        *inner.failing.lock().unwrap() = true;
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(
            resolve(&r, "http://backend.lan:8000/").unwrap(),
            "127.0.0.1:443",
            "stale but within the window"
        );
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            matches!(
                resolve(&r, "http://backend.lan:8000/"),
                Err(ureq::Error::HostNotFound)
            ),
            "past the window the failure stands"
        );
    }

    #[test]
    fn a_failure_with_nothing_kept_is_the_failure() {
        let inner = counting();
        *inner.failing.lock().unwrap() = true;
        let r = CachingResolver::new(inner);
        assert!(matches!(
            resolve(&r, "https://nowhere.example/"),
            Err(ureq::Error::HostNotFound)
        ));
    }

    #[test]
    fn the_number_of_names_kept_is_bounded() {
        let inner = counting();
        let r = CachingResolver::new(inner);
        for i in 0..=MAX_NAMES {
            resolve(&r, &format!("https://h{i}.example/")).unwrap();
        }
        assert!(r.answers.read().unwrap().len() <= MAX_NAMES);
    }
}
