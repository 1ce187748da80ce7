//! Client authentication with the optional top-level `access_keys`: when the list is set, every
//! request must carry one of them as `Authorization: Bearer <key>`. Keys are compared in
//! constant time, so response timing does not reveal how much of a guess was right.

use http::{HeaderMap, header};

use crate::api_error::ApiError;
use crate::config::AccessKey;

pub struct AccessKeys(Vec<AccessKey>);

impl AccessKeys {
    pub fn new(keys: Vec<AccessKey>) -> Self {
        AccessKeys(keys)
    }

    /// `Ok(None)` when no keys are configured, `Ok(Some(key))` when the request carries one.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<&AccessKey>, ApiError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .and_then(|v| strip_bearer(v))
            .unwrap_or_default();
        // Compare against every key, without stopping at the first match.
        let matched = self.0.iter().fold(None, |found, key| {
            let equal = constant_time_eq(key.key.expose().as_bytes(), token);
            if equal { Some(key) } else { found }
        });
        matched.map(Some).ok_or_else(ApiError::invalid_api_key)
    }
}

fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Equal contents, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    fn key(key: &str, name: &str) -> AccessKey {
        AccessKey {
            key: crate::config::Secret::from_config(key),
            name: name.to_owned(),
            requests_per_minute: None,
            tokens_per_day: None,
        }
    }

    #[test]
    fn accepts_any_configured_key_and_nothing_else() {
        let keys = AccessKeys::new(vec![key("alpha-key", "alpha"), key("beta-key", "beta")]);
        let name = |auth| keys.check(&headers(auth)).unwrap().map(|k| k.name.clone());
        assert_eq!(name("Bearer alpha-key").as_deref(), Some("alpha"));
        assert_eq!(name("bearer beta-key").as_deref(), Some("beta"));
        for bad in [
            "Bearer alpha-ke",
            "Bearer alpha-key2",
            "alpha-key",
            "Bearer ",
            "Basic alpha-key",
        ] {
            let err = keys.check(&headers(bad)).unwrap_err();
            assert_eq!(err.status, http::StatusCode::UNAUTHORIZED, "{bad}");
            assert_eq!(err.code, "invalid_api_key");
        }
        assert!(keys.check(&HeaderMap::new()).is_err());
        assert!(matches!(
            AccessKeys::new(Vec::new()).check(&HeaderMap::new()),
            Ok(None)
        ));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
