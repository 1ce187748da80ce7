//! What the application keeps: the parts built from one configuration ([`Proxy`], replaced
//! whole by a reload) and the parts that outlive reloads ([`Shared`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::api::access_keys::AccessKeys;
use crate::api::connect::Connect;
use crate::api::limits::Rates;
use crate::api::reasoning::ReasoningCache;
use crate::api::stream_usage::Refusals;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use crate::upstream::route::{Bulkheads, Router};
use crate::usage::Ledger;

/// What lives as long as the process and is shared by every configuration a reload brings.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// Remembered reasoning, and what each backend has shown about it.
    pub reasoning: ReasoningCache,
    /// Backends that refused `stream_options`.
    pub stream_usage: Refusals,
    /// Usage totals by day, model, backend and key name.
    pub ledger: Arc<Ledger>,
    /// Requests per minute per key name.
    pub rates: Rates,
    /// Requests in flight per backend.
    pub bulkheads: Bulkheads,
    /// Where this process listens: a tunnel must never lead back to one of them.
    pub listening: Vec<SocketAddr>,
}

/// One configuration, ready to serve.
pub struct Proxy {
    pub connect: Connect,
    /// `server.strip_model_prefixes`.
    model_prefixes: Vec<String>,
    pub shared: Arc<Shared>,
    pub access_keys: AccessKeys,
    pub router: Router,
    pub upstream: Upstream,
    /// `created` of every model in the list: when this proxy started.
    pub created: u64,
}

impl Proxy {
    pub fn new(config: &Config, shared: Arc<Shared>) -> Self {
        Proxy {
            connect: Connect::new(config, shared.listening.clone()),
            model_prefixes: config.server.strip_model_prefixes.clone(),
            access_keys: AccessKeys::new(config.access_keys.clone()),
            router: Router::new(config, Arc::clone(&shared.metrics), &shared.bulkheads),
            shared,
            upstream: Upstream::new(config),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// The model id to route by: the client's, minus a configured prefix.
    pub fn route_model<'m>(&self, model: &'m str) -> &'m str {
        self.model_prefixes
            .iter()
            .find_map(|p| model.strip_prefix(p.as_str()))
            .unwrap_or(model)
    }
}
