//! Keeps the usage file (`usage.tsv` in the certificate folder) in step with the ledger while
//! `serve` runs: read at start (a damaged file is set aside with a warning, never fatal),
//! written when something changed, at most every [`INTERVAL`], and once more at shutdown, so
//! a SIGTERM loses nothing and a crash at most the last few seconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};

use crate::usage::store::{self, Loaded};
use crate::usage::{Ledger, day};

pub const INTERVAL: Duration = Duration::from_secs(5);

pub struct Bookkeeper {
    path: PathBuf,
    pub ledger: Arc<Ledger>,
}

impl Bookkeeper {
    /// The ledger as the file in `dir` left it.
    pub fn open(dir: &Path) -> Bookkeeper {
        let path = store::path_in(dir);
        let kept = match store::load(&path) {
            Ok(Loaded::Kept(kept)) => kept,
            Ok(Loaded::Fresh) => Default::default(),
            Ok(Loaded::SetAside(kept, aside, why)) => {
                warn!(
                    "usage file {} is damaged ({why}); kept it as {} and started afresh",
                    path.display(),
                    aside.display()
                );
                kept
            }
            Err(e) => {
                warn!(
                    "cannot read the usage file {} ({e}); starting afresh, and it will be \
                     replaced",
                    path.display()
                );
                Default::default()
            }
        };
        if !kept.rows.is_empty() {
            info!("usage totals of {} day(s) read", {
                let mut days: Vec<u32> = kept.rows.keys().map(|r| r.day).collect();
                days.dedup();
                days.len()
            });
        }
        Bookkeeper {
            path,
            ledger: Arc::new(Ledger::with(kept.rows, kept.hours)),
        }
    }

    /// Writes the file every [`INTERVAL`] when the ledger changed, on a thread of its own.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let keeper = Arc::clone(self);
        std::thread::Builder::new()
            .name("usage-file".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(INTERVAL);
                    keeper.write();
                }
            })?;
        Ok(())
    }

    /// Writes what changed since the last write (at shutdown, too).
    pub fn write(&self) {
        let oldest = day::today().saturating_sub(store::KEEP_DAYS);
        let Some((rows, hours)) = self.ledger.take_for_store(oldest) else {
            return;
        };
        if let Err(e) = store::save(&self.path, &rows, &hours) {
            // Tried again at the next interval; the totals are still in memory.
            self.ledger.mark_changed();
            warn!("cannot write the usage file {}: {e}", self.path.display());
        }
    }
}
