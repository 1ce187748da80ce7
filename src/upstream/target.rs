//! What a request to a backend needs that stays the same from one request to the next: the URL
//! of each API path and the `Authorization` value with the backend's key. Built on first use
//! and kept for the life of the configuration (a reload builds a new
//! [`Upstream`](super::Upstream)): formatting and parsing them, and building the request
//! through http's builder, cost 5.6 k of the ~120 k instructions a proxied request took at 32
//! clients; filled in place from these, 3.3 k (callgrind).

use std::sync::RwLock;

use http::{HeaderValue, Uri};

use crate::api_error::ApiError;
use crate::config::Backend;

#[derive(Clone)]
pub struct Target {
    pub uri: Uri,
    /// `Bearer <api_key>`, marked sensitive (its `Debug` does not show it); `None` when the
    /// backend has no key of its own.
    pub authorization: Option<HeaderValue>,
}

/// The targets built so far, by backend name and API path: at most one per endpoint the
/// proxy knows for each backend, so a short list.
#[derive(Default)]
pub struct Targets(RwLock<Vec<(String, &'static str, Target)>>);

impl Targets {
    pub fn get(&self, backend: &Backend, api_path: &'static str) -> Result<Target, ApiError> {
        if let Some(target) = find(
            &self.0.read().unwrap_or_else(|p| p.into_inner()),
            backend,
            api_path,
        ) {
            return Ok(target);
        }
        let target = build(backend, api_path)?;
        let mut list = self.0.write().unwrap_or_else(|p| p.into_inner());
        if find(&list, backend, api_path).is_none() {
            list.push((backend.name.clone(), api_path, target.clone()));
        }
        Ok(target)
    }
}

fn find(
    list: &[(String, &'static str, Target)],
    backend: &Backend,
    api_path: &str,
) -> Option<Target> {
    list.iter()
        .find(|(name, path, _)| *path == api_path && *name == backend.name)
        .map(|(_, _, target)| target.clone())
}

fn build(backend: &Backend, api_path: &str) -> Result<Target, ApiError> {
    let uri = Uri::try_from(backend.url_for(api_path))
        .map_err(|_| ApiError::bad_gateway(&backend.name, "invalid backend URL"))?;
    let authorization = match &backend.api_key {
        Some(key) => {
            let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose()))
                .map_err(|_| ApiError::internal("backend api_key is not a valid header value"))?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    Ok(Target { uri, authorization })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const TWO: &str = r#"
apis:
  - {name: keyed, endpoint: "https://api.example.test/v1", custom_model_id: m, target_model_id: t, api_key: sk-secret-1}
  - {name: local, endpoint: "http://127.0.0.1:8000", custom_model_id: n, target_model_id: t}
"#;

    #[test]
    fn each_backend_and_path_has_its_own_url_and_key_kept_out_of_debug() {
        let config = Config::from_yaml(TWO, Path::new(".")).unwrap();
        let (keyed, local) = (&config.backends[0], &config.backends[1]);
        let targets = Targets::default();
        for _ in 0..2 {
            let chat = targets.get(keyed, "/chat/completions").unwrap();
            assert_eq!(chat.uri, "https://api.example.test/v1/chat/completions");
            let auth = chat.authorization.unwrap();
            assert_eq!(auth, "Bearer sk-secret-1");
            assert!(!format!("{auth:?}").contains("sk-secret"));
            let embeddings = targets.get(keyed, "/embeddings").unwrap();
            assert_eq!(embeddings.uri, "https://api.example.test/v1/embeddings");
            let other = targets.get(local, "/chat/completions").unwrap();
            assert_eq!(other.uri, "http://127.0.0.1:8000/v1/chat/completions");
            assert!(other.authorization.is_none());
        }
        // Built once per backend and path, however often asked for.
        assert_eq!(targets.0.read().unwrap().len(), 3);
    }
}
