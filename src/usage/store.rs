//! The usage file (`usage.tsv` next to the certificates): daily totals and the last day's
//! hours, one tab-separated line each, replaced atomically. Text, so that `grep`, `awk` and a
//! spreadsheet read it too; small (a row per day × model × backend × key in use).
//!
//! ```text
//! # trae-proxy usage 1: day model backend key requests unknown prompt completion reasoning cached
//! D→2026-12-02→gpt-4o→deepseek→alice→12→0→1830→412→0→1024
//! H→1764684000→12→2242
//! ```
//!
//! (→ is a tab.)
//!
//! A file that does not read as this is never fatal: [`load`] sets it aside and starts afresh.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use super::day;
use super::ledger::{Counts, Hour, Row};
use crate::files;

pub const FILE_NAME: &str = "usage.tsv";
const HEADER: &str = "# trae-proxy usage 1: day model backend key requests unknown prompt \
                      completion reasoning cached";
/// Days kept: a year and a month, so this month last year can be compared.
pub const KEEP_DAYS: u32 = 400;

pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// What a file held.
#[derive(Debug, Default)]
pub struct Kept {
    pub rows: BTreeMap<Row, Counts>,
    pub hours: Vec<Hour>,
}

/// What [`load`] found.
pub enum Loaded {
    Kept(Kept),
    /// No file yet.
    Fresh,
    /// The file did not read; it was renamed to the path given, and the reason.
    SetAside(Kept, PathBuf, String),
}

/// Reads the file at `path`; a damaged one is renamed `<name>.damaged-<unix time>`.
pub fn load(path: &Path) -> io::Result<Loaded> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Fresh),
        Err(e) => return Err(e),
    };
    match String::from_utf8(text)
        .map_err(|_| "not UTF-8".to_owned())
        .and_then(|t| parse(&t))
    {
        Ok(kept) => Ok(Loaded::Kept(kept)),
        Err(why) => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(format!(".damaged-{}", day::unix_now()));
            let aside = PathBuf::from(aside);
            std::fs::rename(path, &aside)?;
            Ok(Loaded::SetAside(Kept::default(), aside, why))
        }
    }
}

/// Replaces the file with these rows and hours.
pub fn save(path: &Path, rows: &[(Row, Counts)], hours: &[Hour]) -> io::Result<()> {
    files::write_atomic(path, render(rows, hours).as_bytes(), files::MODE_SECRET)
}

pub fn render(rows: &[(Row, Counts)], hours: &[Hour]) -> String {
    let mut out = String::with_capacity(64 + rows.len() * 64);
    out.push_str(HEADER);
    out.push('\n');
    for (row, c) in rows {
        let _ = writeln!(
            out,
            "D\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            day::name(row.day),
            escape(&row.model),
            escape(&row.backend),
            escape(&row.key),
            c.requests,
            c.unknown,
            c.prompt,
            c.completion,
            c.reasoning,
            c.cached
        );
    }
    for h in hours {
        let _ = writeln!(out, "H\t{}\t{}\t{}", h.start, h.requests, h.tokens);
    }
    out
}

pub fn parse(text: &str) -> Result<Kept, String> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, first)) if first.starts_with("# trae-proxy usage 1") => {}
        _ => return Err("first line is not \"# trae-proxy usage 1...\"".to_owned()),
    }
    let mut kept = Kept::default();
    for (i, line) in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        let bad = || format!("line {}: {:?} does not read", i + 1, truncate(line));
        match fields.as_slice() {
            ["D", day, model, backend, key, counts @ ..] if counts.len() == 6 => {
                let n: Vec<u64> = counts
                    .iter()
                    .map(|c| c.parse().map_err(|_| bad()))
                    .collect::<Result<_, _>>()?;
                let row = Row {
                    day: day::parse(day).ok_or_else(bad)?,
                    model: unescape(model),
                    backend: unescape(backend),
                    key: unescape(key),
                };
                let counts = Counts {
                    requests: n[0],
                    unknown: n[1],
                    prompt: n[2],
                    completion: n[3],
                    reasoning: n[4],
                    cached: n[5],
                };
                kept.rows.entry(row).or_default().merge(&counts);
            }
            ["H", start, requests, tokens] => kept.hours.push(Hour {
                start: start.parse().map_err(|_| bad())?,
                requests: requests.parse().map_err(|_| bad())?,
                tokens: tokens.parse().map_err(|_| bad())?,
            }),
            [""] => {}
            _ => return Err(bad()),
        }
    }
    Ok(kept)
}

fn truncate(line: &str) -> &str {
    line.char_indices()
        .nth(60)
        .map_or(line, |(i, _)| &line[..i])
}

/// Model ids come from clients: a tab or a line break in one must not make a new field or row.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\t' => out.push_str("%09"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("%09", "\t")
        .replace("%0A", "\n")
        .replace("%0D", "\r")
        .replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_back() {
        let row = |model: &str, key: &str| Row {
            day: 20_424,
            model: model.to_owned(),
            backend: "deepseek".to_owned(),
            key: key.to_owned(),
        };
        let counts = Counts {
            requests: 3,
            unknown: 1,
            prompt: 100,
            completion: 20,
            reasoning: 5,
            cached: 64,
        };
        let rows = vec![
            (row("gpt-4o", "alice"), counts),
            (row("odd\tmodel\n%0A", "key-1a2b3c"), Counts::default()),
        ];
        let hours = vec![Hour {
            start: 1_764_684_000,
            requests: 3,
            tokens: 120,
        }];
        let text = render(&rows, &hours);
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("D\t2025-12-02\tgpt-4o\tdeepseek\talice\t3\t1\t100\t20\t5\t64\n"));
        let kept = parse(&text).unwrap();
        assert_eq!(kept.rows.into_iter().collect::<Vec<_>>(), rows);
        assert_eq!(kept.hours, hours);
    }

    #[test]
    fn damage_is_reported_by_line() {
        assert!(parse("").is_err());
        assert!(parse("garbage\n").is_err());
        let err = parse(&format!("{HEADER}\nD\t2025-12-02\tm\tb\tk\t1\t0\t1\n")).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = parse(&format!(
            "{HEADER}\nD\t2025-13-02\tm\tb\tk\t1\t0\t1\t1\t1\t1\n"
        ));
        assert!(err.is_err());
        assert!(parse(&format!("{HEADER}\n")).unwrap().rows.is_empty());
    }
}
