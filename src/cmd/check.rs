//! `trae-proxy check`: validate the config and the certificate files without starting. Every
//! problem is listed with the file, the entry and the field; exit 0 only when there is none.
//! What `serve` would refuse is a problem here too; what it would warn about is printed as a
//! warning (and does not change the exit status).

use crate::cli::CheckArgs;
use crate::config::Config;
use crate::error::Error;
use crate::output::say;
use crate::pki::certs::{self, CertPaths};
use crate::pki::tls;

pub fn run(args: &CheckArgs) -> Result<(), Error> {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(Error::ConfigInvalid { path, problems }) => {
            for p in &problems {
                say!("{}: {p}", path.display());
            }
            return Err(Error::ChecksFailed(problems.len()));
        }
        Err(e) => return Err(e),
    };
    let mut problems = Vec::new();
    let paths = CertPaths::new(&config.cert_dir, &config.domain);
    if paths.ca_cert.exists() {
        if let Err(e) = certs::read_info(&paths.ca_cert) {
            problems.push(e.to_string());
        }
    }
    // What serve would do at start, decided the same way.
    match certs::plan(&paths, &super::certs::names(&config)) {
        Ok(plan) if plan.ca => say!(
            "note: no CA yet in {}; `serve` or `certs` creates one (clients must then trust it)",
            config.cert_dir.display()
        ),
        Ok(_) => {}
        Err(e) => problems.push(e.to_string()),
    }
    match (paths.leaf_cert.exists(), paths.leaf_key.exists()) {
        (true, true) => {
            if let Err(e) = tls::load_certified_key(&paths) {
                problems.push(e.to_string());
            }
        }
        (false, false) => say!(
            "note: no certificate for {} yet in {}; `serve` or `certs` creates it",
            config.domain,
            config.cert_dir.display()
        ),
        (true, false) => problems.push(format!(
            "{}: missing (its certificate exists)",
            paths.leaf_key.display()
        )),
        (false, true) => problems.push(format!(
            "{}: missing (its key exists)",
            paths.leaf_cert.display()
        )),
    }
    for p in &problems {
        say!("{p}");
    }
    for w in config.warnings().iter().chain(&certs::warnings(&paths)) {
        say!("warning: {w}");
    }
    if !problems.is_empty() {
        return Err(Error::ChecksFailed(problems.len()));
    }
    let active = config.active_backends().count();
    say!(
        "{}: ok — {} entries ({active} active), domain {}, listens on {}:{}",
        args.config.display(),
        config.backends.len(),
        config.domain,
        config.server.bind,
        config.server.port
    );
    Ok(())
}
