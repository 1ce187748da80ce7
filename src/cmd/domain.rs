//! `trae-proxy domain set NAME`: change `domain` and issue a certificate for it from the
//! existing CA (so clients that trust the CA need nothing new).

use crate::cli::{DomainAction, DomainArgs};
use crate::config::edit::ConfigFile;
use crate::error::Error;
use crate::output::say;
use crate::pki::certs::{self, CertPaths};

pub fn run(args: &DomainArgs) -> Result<(), Error> {
    match &args.action {
        DomainAction::Set(set) => {
            let mut file = ConfigFile::open(&args.config().map_err(Error::Usage)?)?;
            if let Some(root) = file.doc.as_mapping_mut() {
                root.insert("domain".into(), set.name.trim().to_ascii_lowercase().into());
            }
            let config = file.save()?;
            let paths = CertPaths::new(&config.cert_dir, &config.domain);
            let names = super::certs::names(&config);
            let created = certs::ensure(&paths, &names)?;
            say!("domain is now {}", config.domain);
            if created.ca {
                say!(
                    "created a new CA: {} (clients must trust it)",
                    paths.ca_cert.display()
                );
            }
            if created.leaf.is_some() {
                say!("issued {}", paths.leaf_cert.display());
            }
            say!(
                "clients need `<proxy address> {}` in their hosts file",
                config.domain
            );
            Ok(())
        }
    }
}
