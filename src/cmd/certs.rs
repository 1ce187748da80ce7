//! `trae-proxy certs [renew|new-ca|show|trust-help]`: the certificate folder by hand.

use crate::output::say;
use std::fs;

use crate::cli::{CertsAction, CertsArgs};
use crate::config::Config;
use crate::error::Error;
use crate::files::{MODE_PUBLIC, MODE_SECRET, write_atomic};
use crate::pki::certs::{self, CertInfo, CertPaths};

pub fn run(args: &CertsArgs) -> Result<(), Error> {
    let config = Config::load(&args.config().map_err(Error::Usage)?)?;
    let paths = CertPaths::new(&config.cert_dir, &config.domain);
    let names = names(&config);
    match &args.action {
        None => {
            let created = certs::ensure(&paths, &names)?;
            if created.ca {
                say!(
                    "created CA {} — clients must trust it (certs trust-help)",
                    paths.ca_cert.display()
                );
            }
            match created.leaf {
                Some(reason) => say!("issued {} ({reason})", paths.leaf_cert.display()),
                None => say!("nothing to do: {} is valid", paths.leaf_cert.display()),
            }
            Ok(())
        }
        Some(CertsAction::Renew(_)) => {
            if !paths.ca_cert.exists() || !paths.ca_key.exists() {
                return Err(Error::Refused(format!(
                    "no CA in {}; run `trae-proxy certs` to create one",
                    config.cert_dir.display()
                )));
            }
            certs::issue_leaf(&paths, &names)?;
            let info = certs::read_info(&paths.leaf_cert)?;
            say!(
                "issued {} from the existing CA, valid until {} — a running proxy picks it up on reload (SIGHUP)",
                paths.leaf_cert.display(),
                info.not_after.date()
            );
            Ok(())
        }
        Some(CertsAction::NewCa(_)) => {
            crate::output::complain(format_args!(
                "warning: replacing the CA. Every client must trust the new {} (certs trust-help); \
                 until then they reject the proxy. The old CA is kept as ca.crt.old / ca.key.old.",
                paths.ca_cert.display()
            ));
            crate::files::create_private_dir(&config.cert_dir).map_err(|source| Error::FileIo {
                path: config.cert_dir.clone(),
                source,
            })?;
            for (file, mode) in [(&paths.ca_cert, MODE_PUBLIC), (&paths.ca_key, MODE_SECRET)] {
                if let Ok(old) = fs::read(file) {
                    let kept = file.with_extension(format!(
                        "{}.old",
                        file.extension().and_then(|e| e.to_str()).unwrap_or("")
                    ));
                    write_atomic(&kept, &old, mode).map_err(|source| Error::FileIo {
                        path: kept.clone(),
                        source,
                    })?;
                }
            }
            certs::create_ca(&paths)?;
            certs::issue_leaf(&paths, &names)?;
            say!(
                "created a new CA {} and issued {}",
                paths.ca_cert.display(),
                paths.leaf_cert.display()
            );
            Ok(())
        }
        Some(CertsAction::Show(_)) => {
            let mut shown = 0;
            for (label, file) in [("CA", &paths.ca_cert), ("certificate", &paths.leaf_cert)] {
                if !file.exists() {
                    say!(
                        "{label}: {} does not exist (run `trae-proxy certs`)",
                        file.display()
                    );
                    continue;
                }
                show(label, &file.display().to_string(), &certs::read_info(file)?);
                shown += 1;
            }
            if shown == 0 {
                return Err(Error::Refused("no certificates yet".to_owned()));
            }
            Ok(())
        }
        Some(CertsAction::TrustHelp(_)) => {
            let info = certs::read_info(&paths.ca_cert).map_err(|_| {
                Error::Refused(format!(
                    "no CA at {} yet; run `trae-proxy certs` first",
                    paths.ca_cert.display()
                ))
            })?;
            let ca = fs::canonicalize(&paths.ca_cert).unwrap_or_else(|_| paths.ca_cert.clone());
            crate::output::text(&trust_help(&ca.display().to_string(), &info));
            Ok(())
        }
    }
}

/// The names the leaf must cover: `domain` first, then `domains`.
pub fn names(config: &Config) -> Vec<String> {
    std::iter::once(config.domain.clone())
        .chain(config.extra_domains.iter().cloned())
        .collect()
}

fn show(label: &str, file: &str, info: &CertInfo) {
    say!("{label}: {file}");
    say!("  subject:     {}", info.subject);
    say!("  is a CA:     {}", if info.is_ca { "yes" } else { "no" });
    say!("  issuer:      {}", info.issuer);
    if !info.names.is_empty() {
        say!("  names:       {}", info.names.join(", "));
    }
    say!(
        "  valid:       {} to {}",
        info.not_before.date(),
        info.not_after.date()
    );
    say!("  days left:   {}", info.days_left());
    say!("  SHA-256:     {}", info.sha256);
}

fn trust_help(ca: &str, info: &CertInfo) -> String {
    format!(
        "Trust this CA on every machine that runs the IDE (not the server certificate):\n\
         \n  file:    {ca}\n  subject: {subject}\n  SHA-256: {fp}\n\
         \nCompare the fingerprint after copying the file. Then, as administrator:\n\
         \nWindows (PowerShell):\n  Import-Certificate -FilePath ca.crt -CertStoreLocation Cert:\\LocalMachine\\Root\n\
         \nmacOS:\n  sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain ca.crt\n\
         \nDebian / Ubuntu:\n  sudo cp ca.crt /usr/local/share/ca-certificates/trae-proxy.crt && sudo update-ca-certificates\n\
         \nFedora:\n  sudo cp ca.crt /etc/pki/ca-trust/source/anchors/trae-proxy.crt && sudo update-ca-trust\n\
         \nArch:\n  sudo trust anchor --store ca.crt\n\
         \nFirefox (own store): Settings > Privacy & Security > Certificates > View Certificates >\n  Authorities > Import, then tick \"Trust this CA to identify websites\".\n  Or with NSS tools: certutil -d sql:$HOME/.pki/nssdb -A -t \"C,,\" -n trae-proxy -i ca.crt\n\
         \nNode-based tools that ignore the system store: export NODE_EXTRA_CA_CERTS=/path/to/ca.crt\n",
        subject = info.subject,
        fp = info.sha256,
    )
}
