//! From the model a client names to the backend that serves it. Only active entries count.
//! Unlike the original, an unknown model is an error: silently answering with another model is
//! worse than failing (and may send the user's key to the wrong provider).

use crate::config::{Backend, Config};

pub struct Router {
    /// Active backends in file order.
    backends: Vec<Backend>,
}

impl Router {
    pub fn new(config: &Config) -> Self {
        Router {
            backends: config.active_backends().cloned().collect(),
        }
    }

    /// The backend for `model`: the first active entry whose `custom_model_id` matches.
    pub fn pick(&self, model: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.custom_model_id == model)
    }

    /// Each model id clients may use, once, in file order, with the entry that serves it.
    pub fn models(&self) -> Vec<&Backend> {
        let mut seen: Vec<&Backend> = Vec::new();
        for b in &self.backends {
            if !seen.iter().any(|s| s.custom_model_id == b.custom_model_id) {
                seen.push(b);
            }
        }
        seen
    }

    /// The ids for an error message, e.g. "a, b, c".
    pub fn model_list(&self) -> String {
        let ids: Vec<&str> = self
            .models()
            .iter()
            .map(|b| b.custom_model_id.as_str())
            .collect();
        if ids.is_empty() {
            "none (no active entry in apis)".to_owned()
        } else {
            ids.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn picks_first_active_entry_and_lists_each_model_once() {
        let yaml = r#"
apis:
  - {name: a, endpoint: "http://a", custom_model_id: m1, target_model_id: t1, active: false}
  - {name: b, endpoint: "http://b", custom_model_id: m1, target_model_id: t2}
  - {name: c, endpoint: "http://c", custom_model_id: m2, target_model_id: t3}
  - {name: d, endpoint: "http://d", custom_model_id: m1, target_model_id: t4}
"#;
        let config = Config::from_yaml(yaml, Path::new(".")).unwrap();
        let router = Router::new(&config);
        assert_eq!(router.pick("m1").unwrap().name, "b");
        assert!(router.pick("nope").is_none());
        assert_eq!(router.model_list(), "m1, m2");
    }
}
