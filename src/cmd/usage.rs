//! `trae-proxy usage`: the persisted usage totals as a table, for boxes without a browser.
//! Reads the file `serve` writes (at most a few seconds behind a running proxy); never writes
//! it, and a damaged file is reported, not moved (that is `serve`'s to do).

use crate::cli::UsageArgs;
use crate::config::Config;
use crate::error::Error;
use crate::output::say;
use crate::usage::store;
use crate::usage::{Counts, Row, day, sum_by};

pub fn run(args: &UsageArgs) -> Result<(), Error> {
    let group: fn(&Row) -> String = match args.by.as_str() {
        "model" => |r| r.model.clone(),
        "key" => |r| r.key.clone(),
        "backend" => |r| r.backend.clone(),
        other => {
            return Err(Error::Usage(format!(
                "--by {other:?}: expected model, key or backend"
            )));
        }
    };
    if args.days == 0 {
        return Err(Error::Usage("--days must be at least 1".to_owned()));
    }
    let config = Config::load(&args.config)?;
    let path = store::path_in(&config.cert_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            say!("no usage recorded yet ({} does not exist)", path.display());
            return Ok(());
        }
        Err(source) => return Err(Error::FileIo { path, source }),
    };
    let kept = store::parse(&text).map_err(|why| {
        Error::Refused(format!(
            "{} is damaged ({why}); `serve` sets it aside at its next start",
            path.display()
        ))
    })?;
    let first = day::today().saturating_sub(args.days - 1);
    let rows: Vec<(Row, Counts)> = kept
        .rows
        .into_iter()
        .filter(|(r, _)| r.day >= first)
        .collect();
    say!(
        "usage from {} to {} (UTC), by {}, from {}",
        day::name(first),
        day::name(day::today()),
        args.by,
        path.display()
    );
    table(&args.by, sum_by(&rows, &group));
    say!("");
    // Newest day first; `YYYY-MM-DD` sorts as the days do.
    let mut per_day = sum_by(&rows, &|r| day::name(r.day));
    per_day.reverse();
    table("day", per_day);
    Ok(())
}

/// One line per entry and a total; "unknown" counts requests whose backend reported no usage.
fn table(first: &str, lines: Vec<(String, Counts)>) {
    let width = lines
        .iter()
        .map(|(k, _)| k.chars().count())
        .chain([first.len(), 5])
        .max()
        .unwrap_or(5);
    say!(
        "{first:<width$}  {:>9}  {:>12}  {:>12}  {:>10}  {:>10}  {:>8}",
        "requests",
        "prompt",
        "completion",
        "reasoning",
        "cached",
        "unknown"
    );
    let mut total = Counts::default();
    for (name, c) in &lines {
        total.merge(c);
        line(name, c, width);
    }
    line("total", &total, width);
}

fn line(name: &str, c: &Counts, width: usize) {
    say!(
        "{name:<width$}  {:>9}  {:>12}  {:>12}  {:>10}  {:>10}  {:>8}",
        c.requests,
        c.prompt,
        c.completion,
        c.reasoning,
        c.cached,
        c.unknown
    );
}
