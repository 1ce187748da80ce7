//! `trae-proxy serve`: load the config, make sure certificates exist, bind, and serve.

use std::net::SocketAddr;
use std::sync::Arc;

use log::{info, warn};

use crate::certs::{self, CertPaths, LeafReason};
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::error::Error;
use crate::files;
use crate::logging;
use crate::proxy::Proxy;
use crate::server::{self, Settings};
use crate::tls::{self, CertResolver};

pub fn run(args: &ServeArgs) -> Result<(), Error> {
    let mut config = Config::load(&args.config)?;
    if let Some(port) = args.port {
        config.server.port = port;
    }
    if let Some(bind) = args.bind {
        config.server.bind = bind;
    }
    logging::init(config.server.debug);
    // Bind first: without privilege for port 443 this is the likeliest first-run failure, and
    // it should be reported before any file is created.
    let addr = SocketAddr::new(config.server.bind, config.server.port);
    let listener = server::bind(addr)?;
    let bound = listener.local_addr()?;

    let paths = CertPaths::new(&config.cert_dir, &config.domain);
    let names: Vec<String> = std::iter::once(config.domain.clone())
        .chain(config.extra_domains.iter().cloned())
        .collect();
    let created = certs::ensure(&paths, &names)?;
    if created.ca {
        warn!(
            "created a new CA in {}: clients must trust {} (see the README, \"Trust the CA\")",
            config.cert_dir.display(),
            paths.ca_cert.display()
        );
    }
    match &created.leaf {
        None => {}
        Some(LeafReason::Missing) => info!(
            "issued a certificate for {} in {}",
            names.join(", "),
            paths.leaf_cert.display()
        ),
        // Replacing a leaf clients have seen is worth the operator's attention.
        Some(reason) => warn!(
            "issued a new certificate for {} in {}: {reason}",
            names.join(", "),
            paths.leaf_cert.display()
        ),
    }
    for key in [&paths.ca_key, &paths.leaf_key] {
        if files::readable_by_others(key) {
            warn!(
                "private key {} is readable by other users; run: chmod 600 {}",
                key.display(),
                key.display()
            );
        }
    }
    let resolver = Arc::new(CertResolver::new(tls::load_certified_key(&paths)?));
    let tls_config = tls::server_config(resolver)?;

    let injects_keys = config.active_backends().any(|b| b.api_key.is_some());
    if injects_keys && config.access_keys.is_empty() && !config.server.bind.is_loopback() {
        warn!(
            "OPEN RELAY: backends add their own API keys, no access_keys are set, and the proxy \
             listens on {}: anyone who can reach it spends your keys. Set access_keys, or \
             server.bind: 127.0.0.1",
            config.server.bind
        );
    }
    if config.active_backends().next().is_none() {
        warn!("no active entry in apis: every chat request will be answered 404");
    }
    info!(
        "listening on {bound} as {} with {} workers; models: {}",
        config.domain,
        config.server.workers,
        crate::route::Router::new(&config).model_list()
    );

    let settings = Settings {
        workers: config.server.workers,
        max_connections: config.server.max_connections,
        max_body_bytes: config.server.max_body_bytes,
        timeouts: config.server.timeouts,
    };
    let proxy = Arc::new(Proxy::new(&config));
    server::run(listener, tls_config, proxy, settings)
}
