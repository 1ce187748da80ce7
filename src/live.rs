//! The running configuration: loading it (the file, the command line's overrides, the
//! certificates) and replacing it on SIGHUP. A reload reads the config file again, brings the
//! certificates up to date and builds a new router and upstream agents; only when all of that
//! succeeded does it swap them in. New requests then use the new configuration; requests in
//! flight (streams included) finish with the one they started with. A config or certificate
//! that fails is logged and the running configuration stays.
//!
//! Settings of the listener and the worker pool (`server.port`, `bind`, `workers`, connection
//! limits and client timeouts, `debug`) need a restart; a reload that changes them says so.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use http::Request;
use log::{error, info, warn};
use rustls::sign::CertifiedKey;

use crate::api::Proxy;
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::error::Error;
use crate::pki::certs::{self, CertPaths, LeafReason};
use crate::pki::tls::{self, CertResolver};
use crate::server::{After, Handler, Responder};

pub struct Live {
    args: ServeArgs,
    proxy: RwLock<Arc<Proxy>>,
    resolver: Arc<CertResolver>,
    /// The configuration in use, to compare a reload with.
    running: Mutex<Config>,
}

impl Live {
    pub fn new(
        args: ServeArgs,
        config: Config,
        proxy: Arc<Proxy>,
        resolver: Arc<CertResolver>,
    ) -> Self {
        Live {
            args,
            proxy: RwLock::new(proxy),
            resolver,
            running: Mutex::new(config),
        }
    }

    /// Reloads, logging the outcome; never fails the running server. The outcome in words,
    /// for `trae-proxy reload` (an error names what to fix, never a key).
    pub fn reload(&self) -> Result<String, String> {
        match self.try_reload() {
            Ok(models) => Ok(format!(
                "reloaded {}; models: {models}",
                self.args.config.display()
            )),
            Err(e) => {
                let why = format!(
                    "reload of {} failed; the running configuration stays: {e}",
                    self.args.config.display()
                );
                error!("{why}");
                Err(why)
            }
        }
    }

    /// The new configuration in use; its model list.
    fn try_reload(&self) -> Result<String, Error> {
        let config = load_config(&self.args)?;
        let key = certified_key(&config)?;
        let running = Arc::clone(&self.proxy.read().unwrap_or_else(|p| p.into_inner()));
        let proxy = Arc::new(Proxy::new(&config, Arc::clone(&running.shared)));
        warn_about(&config);

        self.resolver.replace(key);
        *self.proxy.write().unwrap_or_else(|p| p.into_inner()) = proxy;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for setting in needs_restart(&running, &config) {
            warn!("reload: {setting} changed; restart the proxy to apply it");
        }
        let models = self.proxy().router.model_list();
        info!("reloaded {}; models: {models}", self.args.config.display());
        *running = config;
        Ok(models)
    }
}

impl Live {
    pub fn cert_check_interval(&self) -> std::time::Duration {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .server
            .cert_check_interval
    }

    /// Renews the leaf when it is about to expire (or no longer covers the configured names),
    /// without a restart: the next handshakes use the new one. Logged by `certified_key`.
    pub fn renew_if_due(&self) {
        let config = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match certified_key(&config) {
            Ok(key) => self.resolver.replace(key),
            Err(e) => error!("certificate check failed; the current certificate stays: {e}"),
        }
    }
}

impl Live {
    /// The configuration in use now.
    pub fn proxy(&self) -> Arc<Proxy> {
        Arc::clone(&self.proxy.read().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Handler for Live {
    fn handle(
        &self,
        request: Request<Vec<u8>>,
        peer: SocketAddr,
        responder: Responder<'_>,
    ) -> io::Result<After> {
        // The request keeps this configuration to its end, whatever a reload does meanwhile.
        self.proxy().handle(request, peer, responder)
    }

    fn idle(&self) {
        crate::upstream::idle::share_own();
    }
}

fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let mut changed = Vec::new();
    let checks: [(&'static str, bool); 10] = [
        ("server.admin_bind", a.admin_bind != b.admin_bind),
        ("server.http_bind", a.http_bind != b.http_bind),
        ("server.port", a.port != b.port),
        ("server.bind", a.bind != b.bind),
        ("server.workers", a.workers != b.workers),
        (
            "server.max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "server.max_body_bytes",
            a.max_body_bytes != b.max_body_bytes,
        ),
        ("server.debug", a.debug != b.debug),
        (
            "server timeouts for clients",
            a.timeouts.request_head != b.timeouts.request_head
                || a.timeouts.idle != b.timeouts.idle
                || a.timeouts.client_io != b.timeouts.client_io,
        ),
        (
            "server.shutdown_timeout",
            a.shutdown_timeout != b.shutdown_timeout,
        ),
    ];
    for (name, differs) in checks {
        if differs {
            changed.push(name);
        }
    }
    changed
}

/// The config file with the command line's overrides applied.
pub fn load_config(args: &ServeArgs) -> Result<Config, Error> {
    let mut config = Config::load(&args.config)?;
    if let Some(port) = args.port {
        config.server.port = port;
    }
    if let Some(bind) = args.bind {
        config.server.bind = bind;
    }
    Ok(config)
}

/// Creates what is missing or stale in the certificate folder, then loads the chain to serve.
pub fn certified_key(config: &Config) -> Result<CertifiedKey, Error> {
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
    if let Ok(ca) = certs::read_info(&paths.ca_cert) {
        let left = ca.days_left();
        if left < certs::CA_WARN_WITHIN.whole_days() {
            warn!(
                "the CA {} expires in {left} days; create a new one with `trae-proxy certs new-ca` \
                 and have every client trust it before then",
                paths.ca_cert.display()
            );
        }
    }
    for warning in certs::warnings(&paths) {
        warn!("{warning}");
    }
    tls::load_certified_key(&paths)
}

/// Configurations that work but are probably not what the operator wants.
pub fn warn_about(config: &Config) {
    for warning in config.warnings() {
        warn!("{warning}");
    }
}
