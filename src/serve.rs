//! `trae-proxy serve`: load the config, bind, make sure certificates exist, and serve until a
//! stop signal; SIGHUP reloads (`live.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use log::{info, warn};

use crate::admin::{self, Admin};
use crate::api::reasoning::ReasoningCache;
use crate::api::{Proxy, Shared};
use crate::bookkeeping::Bookkeeper;
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::error::Error;
use crate::live::{self, Live};
use crate::logging;
use crate::metrics::Metrics;
use crate::pki::tls::{self, CertResolver};
use crate::server::Lifecycle;
use crate::server::{self, Settings};
use crate::signals;
use crate::status;
use crate::upstream::route::Bulkheads;

/// glibc malloc arenas (its default: eight per core). Two made no throughput difference at 32
/// clients on two cores and kept 1.3 MiB less after 256 streams.
const SYSTEM_ARENAS: u16 = 2;

pub fn run(args: &ServeArgs) -> Result<(), Error> {
    let (started, started_unix) = (Instant::now(), crate::usage::day::unix_now());
    // Before any thread starts (glibc builds only; see thread_cache::limit_arenas): a burst of
    // workers otherwise leaves its freed memory spread over up to eight arenas per core.
    thread_cache::limit_arenas(SYSTEM_ARENAS);
    let mut config = live::load_config(args)?;
    logging::init(config.server.debug);
    fit_open_files(&mut config);
    // Bind first: without privilege for port 443 this is the likeliest first-run failure, and
    // it should be reported before any file is created.
    let addr = SocketAddr::new(config.server.bind, config.server.port);
    let listener = server::bind(addr)?;
    let bound = listener.local_addr()?;
    let plain = match config.server.http_bind {
        Some(addr) => Some(server::bind(addr)?),
        None => None,
    };

    let resolver = Arc::new(CertResolver::new(live::certified_key(&config)?));
    let tls_config = tls::server_config(Arc::clone(&resolver))?;
    live::warn_about(&config);
    let metrics = Arc::new(Metrics::default());
    let mut listening = vec![bound];
    let admin = Arc::new(Admin {
        metrics: Arc::clone(&metrics),
        status: OnceLock::new(),
        reload: OnceLock::new(),
    });
    if let Some(addr) = config.server.admin_bind {
        let bound = admin::start(addr, Arc::clone(&admin))?;
        info!(
            "admin listener (plain HTTP: / for the status page, /status.json, /healthz, /metrics) on {bound}"
        );
        listening.push(bound);
    }
    if let Some(socket) = &plain {
        let at = socket.local_addr()?;
        info!("plain-HTTP listener (base-URL mode) on {at}: use http://{at}/v1 as the base URL");
        listening.push(at);
    }
    let bookkeeper = Arc::new(Bookkeeper::open(&config.cert_dir));
    bookkeeper.start()?;
    let shared = Arc::new(Shared {
        metrics: Arc::clone(&metrics),
        reasoning: ReasoningCache::default(),
        stream_usage: Default::default(),
        ledger: Arc::clone(&bookkeeper.ledger),
        rates: Default::default(),
        bulkheads: Bulkheads::default(),
        listening,
    });
    let proxy = Arc::new(Proxy::new(&config, shared));
    info!(
        "listening on {bound} as {} with {} workers; models: {}",
        config.domain,
        config.server.workers,
        proxy.router.model_list()
    );

    let body_budget = server::BodyBudget::new(config.server.max_buffered_body_bytes);
    let reader = body_budget.clone();
    let _ = metrics
        .buffered_body_bytes
        .set(Box::new(move || reader.used()));
    let settings = Settings {
        workers: config.server.workers,
        max_connections: config.server.max_connections,
        max_body_bytes: config.server.max_body_bytes,
        body_budget,
        clients: server::Clients::new(
            config.server.max_connections_per_client,
            config.server.max_requests_per_client,
        ),
        min_body_rate: config.server.min_body_rate,
        timeouts: config.server.timeouts,
        shutdown_timeout: config.server.shutdown_timeout,
        open_connections: Arc::clone(&metrics.connections),
        tls: Some(Arc::clone(&tls_config)),
    };
    let live = Arc::new(Live::new(args.clone(), config, proxy, resolver));
    let sources = status::Sources {
        metrics: Arc::clone(&metrics),
        ledger: Arc::clone(&bookkeeper.ledger),
        started,
        started_unix,
    };
    let current = Arc::clone(&live);
    let _ = admin.status.set(Box::new(move || {
        status::report(&sources, &current.proxy().router)
    }));
    let reloader = Arc::clone(&live);
    let _ = admin.reload.set(Box::new(move || reloader.reload()));
    let lifecycle = Arc::new(Lifecycle::default());
    let reloader = Arc::clone(&live);
    let drain = settings.shutdown_timeout;
    signals::watch(
        Arc::clone(&lifecycle),
        move || {
            let _ = reloader.reload();
        },
        drain,
    )?;
    let renewer = Arc::clone(&live);
    std::thread::Builder::new()
        .name("cert-check".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(renewer.cert_check_interval());
                renewer.renew_if_due();
            }
        })?;
    let mut listeners = vec![server::Listener {
        socket: listener,
        tls: Some(tls_config),
    }];
    if let Some(socket) = plain {
        listeners.push(server::Listener { socket, tls: None });
    }
    let served = server::run(listeners, live, settings, lifecycle);
    // Requests in flight have finished (or the drain gave up): their usage is in the ledger.
    bookkeeper.write();
    served
}

/// Raises the open-files limit as far as it goes; if `max_connections` still cannot have two
/// descriptors each (client and backend) plus a margin, lowers it, so that a full house is
/// refused at accept rather than failing requests mid-way with EMFILE.
fn fit_open_files(config: &mut Config) {
    const MARGIN: u64 = 64;
    let Some(limit) = server::os::raise_open_files_limit() else {
        return;
    };
    let wanted = config.server.max_connections as u64;
    let fits = (limit.saturating_sub(MARGIN) / 2).max(1);
    if wanted > fits {
        warn!(
            "server.max_connections = {wanted} needs about {} open files, but the limit is {limit}: \
             serving at most {fits} connections. Raise the limit (ulimit -n, systemd's LimitNOFILE=)",
            2 * wanted + MARGIN
        );
        config.server.max_connections = usize::try_from(fits).unwrap_or(usize::MAX);
    }
}
