//! The docs agree with the code: every field of the config file is described once, in a `field`
//! table of README.md or docs/, and every field such a table names exists; every command and
//! flag a `command` table shows is one the binary accepts (its `--help` answers, and lists the
//! flag).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page in docs/.
fn pages() -> Vec<(PathBuf, String)> {
    let mut paths = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// The first cells of the tables whose header's first cell is `header`, with their page.
fn first_cells(header: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for (path, text) in pages() {
        let mut in_table = false;
        for line in text.lines() {
            let Some(row) = line.strip_prefix('|') else {
                in_table = false;
                continue;
            };
            let cells = split_row(row);
            let first = cells.first().cloned().unwrap_or_default();
            if first == header {
                in_table = true;
            } else if in_table && !first.starts_with("---") {
                out.push((path.clone(), first));
            }
        }
    }
    out
}

/// A table row's cells; `\|` inside a cell is text, not a border.
fn split_row(row: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                cells.last_mut().unwrap().push('|');
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.iter().map(|c| c.trim().to_owned()).collect()
}

/// The `code spans` of a cell.
fn spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_owned())
        .collect()
}

/// The fields of a `struct` in src/config/raw.rs.
fn raw_fields(raw: &str, name: &str) -> Vec<String> {
    let start = raw
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not in raw.rs"));
    let body = &raw[start..raw[start..].find("\n}").unwrap() + start];
    body.lines()
        .skip(1)
        .filter_map(|l| {
            let l = l.trim().strip_prefix("pub(super) ")?;
            Some(l.split(':').next()?.trim().to_owned())
        })
        .collect()
}

/// Every field a user can write, as the docs name it: `domain`, `apis[].weight`, `server.port`.
fn config_fields() -> Vec<String> {
    let raw = std::fs::read_to_string(root().join("src/config/raw.rs")).unwrap();
    let mut out = Vec::new();
    for field in raw_fields(&raw, "RawConfig") {
        if field != "apis" && field != "server" {
            out.push(field);
        }
    }
    out.extend(
        raw_fields(&raw, "RawApi")
            .iter()
            .map(|f| format!("apis[].{f}")),
    );
    out.extend(
        raw_fields(&raw, "RawServer")
            .iter()
            .map(|f| format!("server.{f}")),
    );
    out
}

/// The fields a `field` cell describes: its code spans, a bare name after a qualified one taking
/// its prefix (`apis[].api_key` / `api_key_env`).
fn described(cell: &str) -> Vec<String> {
    let mut prefix = String::new();
    let mut out = Vec::new();
    for span in spans(cell) {
        // `custom_model_id: "*"` shows a value, not a field of its own.
        if span.contains('"') {
            continue;
        }
        let name = span.split(':').next().unwrap_or_default().trim().to_owned();
        if let Some(at) = name.rfind(['.']) {
            prefix = name[..=at].to_owned();
            out.push(name);
        } else if !prefix.is_empty() {
            out.push(format!("{prefix}{name}"));
        } else {
            out.push(name);
        }
    }
    out
}

#[test]
fn every_config_field_is_described_once_and_every_described_field_exists() {
    let fields = config_fields();
    assert!(fields.len() > 40, "raw.rs read wrong: {fields:?}");
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (path, cell) in first_cells("field") {
        let page = path.file_name().unwrap().to_string_lossy().into_owned();
        for name in described(&cell) {
            if !fields.contains(&name) {
                problems.push(format!("{page}: `{name}` is not a config field"));
            }
            seen.entry(name).or_default().push(page.clone());
        }
    }
    for field in &fields {
        match seen.get(field).map(Vec::len) {
            None => problems.push(format!("`{field}` is described in no field table")),
            Some(1) => {}
            Some(_) => problems.push(format!("`{field}` is described twice: {:?}", seen[field])),
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The commands a `command` cell shows (`api list|add`, `certs [renew|show]` each expanded), with
/// the flags it names.
fn commands(cell: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    for span in spans(cell) {
        let mut paths: Vec<Vec<String>> = vec![Vec::new()];
        for token in span.split_whitespace() {
            let bare = token.trim_matches(['[', ']']);
            let word = |w: &str| w.chars().all(|c| c.is_ascii_lowercase() || c == '-');
            if bare.starts_with('-') || !bare.split('|').all(word) {
                break;
            }
            let optional = token.starts_with('[');
            let mut next = Vec::new();
            for path in &paths {
                if optional {
                    next.push(path.clone());
                }
                for alternative in bare.split('|') {
                    let mut p = path.clone();
                    p.push(alternative.to_owned());
                    next.push(p);
                }
            }
            paths = next;
        }
        let flags: Vec<String> = span
            .split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '|')
            .filter(|t| t.starts_with("--"))
            .map(str::to_owned)
            .collect();
        out.extend(paths.into_iter().map(|p| (p, flags.clone())));
    }
    out
}

#[test]
fn every_documented_command_and_flag_exists() {
    let bin = Path::new(env!("CARGO_BIN_EXE_trae-proxy"));
    let mut problems = Vec::new();
    let mut checked = 0;
    for (path, cell) in first_cells("command") {
        let page = path.file_name().unwrap().to_string_lossy().into_owned();
        for (words, flags) in commands(&cell) {
            checked += 1;
            let out = Command::new(bin)
                .args(&words)
                .arg("--help")
                .output()
                .unwrap();
            let help = String::from_utf8_lossy(&out.stdout).into_owned();
            if !out.status.success() {
                problems.push(format!(
                    "{page}: `trae-proxy {}` does not exist",
                    words.join(" ")
                ));
                continue;
            }
            for flag in flags {
                if !help.contains(&flag) {
                    problems.push(format!(
                        "{page}: `trae-proxy {}` has no {flag}",
                        words.join(" ")
                    ));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} commands found");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_readers_expand_cells_as_written() {
    assert_eq!(
        described("`apis[].api_key` / `api_key_env`"),
        ["apis[].api_key", "apis[].api_key_env"]
    );
    let found = commands("`certs [renew\\|show]`".replace("\\|", "|").as_str());
    let paths: Vec<Vec<String>> = found.into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            vec!["certs".to_owned()],
            vec!["certs".to_owned(), "renew".to_owned()],
            vec!["certs".to_owned(), "show".to_owned()]
        ]
    );
    let found = commands("`api enable ENTRY [--only]` / `api disable ENTRY`");
    assert_eq!(
        found[0],
        (vec!["api".into(), "enable".into()], vec!["--only".into()])
    );
    assert_eq!(found[1].0, ["api", "disable"]);
}

/// Every file under src/.
fn source_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn every_source_path_the_docs_name_exists() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for (path, text) in pages() {
        let page = path.file_name().unwrap().to_string_lossy().into_owned();
        for span in spans(&text) {
            let top = span.split('/').next().unwrap_or_default();
            let ours = [
                "src",
                "tests",
                "bench",
                "interop",
                "systemd",
                "cross",
                "thread-cache",
            ];
            // Modules are named from src/ too: `server/intake.rs`, `api/relay/`.
            let modules = ["api", "server", "upstream", "pki", "config", "cmd"];
            let named = ours.contains(&top) || modules.contains(&top) || span.ends_with(".rs");
            if !span.contains('/') && !span.ends_with(".rs")
                || !named
                || span.contains(char::is_whitespace)
            {
                continue;
            }
            checked += 1;
            let file = span.split([':', '#']).next().unwrap_or_default();
            let exists = |p: &str| {
                root().join(p).exists()
                    || root().join("src").join(p).exists()
                    // A bare file name, in a list under its folder's name.
                    || (!p.contains('/') && source_files().iter().any(|f| f.ends_with(p)))
            };
            if !exists(file) {
                problems.push(format!("{page}: `{span}` does not exist"));
            }
        }
    }
    assert!(checked > 10, "only {checked} paths found");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
