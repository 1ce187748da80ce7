//! The source's layers, checked: every reference a file makes to this crate (`use crate::…`,
//! `crate::…` paths, `super::…`) must point to its own layer or one below, and no modules may
//! import each other, however indirectly. A small test over the source text rather than a tool
//! (cargo-modules needs a nightly-only rust-analyzer build here); it reads what a reviewer reads.
//!
//! Layers, top to bottom (docs/design.md draws them):
//!
//! ```text
//!   main, cli, serve, live, signals, admin, cmd/    the program: start-up, reload, commands
//!   api/                                            what the proxy does with a request
//!   server/   upstream/   pki/                      downstream HTTP, backends, certificates
//!   config/                                         the file, validated
//!   error, api_error, files, logging, output, cidr, metrics    small shared pieces
//! ```
//!
//! Peers in one layer do not import each other (server/, upstream/ and pki/ stay apart), except
//! at the top and among the small pieces at the bottom. Test code (`#[cfg(test)]` onwards) is
//! not held to it.
//!
//! The same reading checks the shape of the request path (api/, server/, upstream/): no
//! function longer than 80 lines or taking more than 5 parameters.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Rank of each top-level module; higher may import lower.
const RANKS: &[(&str, u8)] = &[
    ("error", 0),
    ("api_error", 0),
    ("files", 0),
    ("logging", 0),
    ("output", 0),
    ("cidr", 0),
    ("metrics", 0),
    ("json", 0),
    ("usage", 0),
    ("config", 1),
    ("server", 2),
    ("upstream", 2),
    ("pki", 2),
    ("api", 3),
    ("main", 4),
    ("cli", 4),
    ("serve", 4),
    ("live", 4),
    ("signals", 4),
    ("admin", 4),
    ("bookkeeping", 4),
    ("status", 4),
    ("cmd", 4),
];

/// Layers whose modules may import each other (the acyclic check still applies).
const OPEN_LAYERS: &[u8] = &[0, 4];

fn rank(top: &str) -> Option<u8> {
    RANKS.iter().find(|(m, _)| *m == top).map(|(_, r)| *r)
}

/// Every module file under src/: its module path (`server::conn`; `main` for the crate root).
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// The code of a file up to its tests, without comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let upto = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..upto]
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Paths following `prefix::` in `text`, brace groups expanded (`a::{b, c::d}`), each as its
/// segments.
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let needle = format!("{prefix}::");
    let mut from = 0;
    while let Some(i) = text[from..].find(&needle) {
        let at = from + i;
        from = at + needle.len();
        // `super::` inside `super::super::` is found twice; a path starts at a word boundary.
        if at > 0 && text[..at].ends_with(|c: char| is_ident(c) || c == ':') {
            continue;
        }
        let mut base = Vec::new();
        parse_path(&text[from..], &mut base, &mut out);
    }
    out
}

fn parse_path(rest: &str, base: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        let bytes: Vec<char> = group.chars().collect();
        for (i, c) in bytes.iter().enumerate() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    let item: String = bytes[start..i].iter().collect();
                    parse_path(&item, &mut base.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    let item: String = bytes[start..i].iter().collect();
                    parse_path(&item, &mut base.clone(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
    if ident.is_empty() {
        out.push(base.clone());
        return;
    }
    base.push(ident.clone());
    let after = &rest[ident.len()..];
    match after.strip_prefix("::") {
        Some(more) => parse_path(more, base, out),
        None => out.push(base.clone()),
    }
}

/// The deepest module a path names (a path may go on into an item).
fn resolve(path: &[String], mods: &BTreeMap<String, PathBuf>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| mods.contains_key(m))
}

/// Module -> the modules it imports (its own descendants and itself left out: a module file
/// declaring and re-exporting its children is their facade, not a dependency).
fn graph(mods: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (module, path) in mods {
        let text = code(path);
        let mut targets = BTreeSet::new();
        for p in paths_after(&text, "crate") {
            if let Some(t) = resolve(&p, mods) {
                targets.insert(t);
            }
        }
        // super:: from `a::b::c` (a::b::c.rs or a/b/c/mod.rs alike) is `a::b`; each further
        // `super` goes up one more.
        let own: Vec<&str> = module.split("::").collect();
        for p in paths_after(&text, "super") {
            let ups = 1 + p.iter().take_while(|s| *s == "super").count();
            let keep = own.len().saturating_sub(ups);
            let mut full: Vec<String> = own[..keep].iter().map(|s| (*s).to_owned()).collect();
            full.extend(p.into_iter().skip(ups - 1));
            if let Some(t) = resolve(&full, mods) {
                targets.insert(t);
            }
        }
        targets.retain(|t| t != module && !t.starts_with(&format!("{module}::")));
        // The crate root's module declarations are not imports.
        if module == "main" {
            targets.clear();
            for p in paths_after(&text, "crate") {
                if let Some(t) = resolve(&p, mods) {
                    targets.insert(t);
                }
            }
            for line in text.lines() {
                for word in line.split(|c: char| !is_ident(c)) {
                    if mods.contains_key(word) && line.contains(&format!("{word}::")) {
                        targets.insert(word.to_owned());
                    }
                }
            }
            targets.remove("main");
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn imports_point_down_the_layers_and_never_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let edges = graph(&mods);
    let mut problems = Vec::new();

    for (from, targets) in &edges {
        let Some(from_rank) = rank(top(from)) else {
            problems.push(format!("{from}: not in any layer (tests/layers.rs, RANKS)"));
            continue;
        };
        for to in targets {
            let Some(to_rank) = rank(top(to)) else {
                continue;
            };
            let same_top = top(from) == top(to);
            let allowed = same_top
                || to_rank < from_rank
                || (to_rank == from_rank && OPEN_LAYERS.contains(&from_rank));
            if !allowed {
                problems.push(format!(
                    "{from} (layer {from_rank}) imports {to} (layer {to_rank})"
                ));
            }
        }
    }

    // Circles: a depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        found: &mut Vec<String>,
    ) {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == next).unwrap_or(0);
                    let mut circle = stack[at..].to_vec();
                    circle.push(next.clone());
                    found.push(circle.join(" -> "));
                }
                Some(_) => {}
                None => visit(next, edges, state, stack, found),
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
    }
    let mut state = BTreeMap::new();
    let mut circles = Vec::new();
    for node in edges.keys() {
        if !state.contains_key(node.as_str()) {
            visit(node, &edges, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    problems.extend(circles.into_iter().map(|c| format!("import circle: {c}")));
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_checker_reads_paths_as_written() {
    let text = "use crate::{config::{Config, Backend}, server::conn};\nlet x = crate::api_error::ApiError::new();\nuse super::super::x;";
    let found = paths_after(text, "crate");
    assert!(found.contains(&vec!["config".to_owned(), "Config".to_owned()]));
    assert!(found.contains(&vec!["server".to_owned(), "conn".to_owned()]));
    assert!(found.contains(&vec![
        "api_error".to_owned(),
        "ApiError".to_owned(),
        "new".to_owned()
    ]));
    assert_eq!(
        paths_after(text, "super").len(),
        1,
        "super::super:: is one path"
    );
}

/// Folders on the request path, where a function must fit on a screen.
const REQUEST_PATH: &[&str] = &["api", "server", "upstream"];
const MAX_FN_LINES: usize = 80;
const MAX_FN_PARAMS: usize = 5;

/// Each function in `code` (as [`code`] returns it): its name, first line, length in lines and
/// number of parameters (`self` not counted). Reads rustfmt's layout: a body ends at the first
/// line that is the signature's indentation and `}`.
fn functions(code: &str) -> Vec<(String, usize, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let after_vis = trimmed
            .strip_prefix("pub ")
            .or_else(|| trimmed.strip_prefix("pub(crate) "))
            .or_else(|| trimmed.strip_prefix("pub(super) "))
            .unwrap_or(trimmed);
        let Some(rest) = after_vis.strip_prefix("fn ") else {
            i += 1;
            continue;
        };
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        let mut signature = String::new();
        let mut end = i;
        while end < lines.len() {
            signature.push_str(lines[end]);
            let t = lines[end].trim_end();
            if t.ends_with('{') || t.ends_with(';') || t.ends_with("{}") {
                break;
            }
            end += 1;
        }
        let tail = signature.trim_end();
        if tail.ends_with(';') || tail.ends_with("{}") {
            // A declaration, or a body on one line.
            if tail.ends_with("{}") {
                out.push((name, i + 1, end - i + 1, count_params(&signature)));
            }
            i = end + 1;
            continue;
        }
        let params = count_params(&signature);
        let close = format!("{indent}}}");
        let last = (end + 1..lines.len())
            .find(|&k| lines[k].trim_end() == close)
            .unwrap_or(lines.len() - 1);
        out.push((name, i + 1, last - i + 1, params));
        i = end + 1;
    }
    out
}

/// Parameters between the first `(` after the name and its `)`, `self` not counted.
fn count_params(signature: &str) -> usize {
    let Some(open) = signature.find('(') else {
        return 0;
    };
    let mut depth = 0;
    let mut params = Vec::new();
    let mut current = String::new();
    for c in signature[open + 1..].chars() {
        match c {
            '(' | '[' | '<' | '{' => depth += 1,
            ')' | ']' | '>' | '}' if depth == 0 => break,
            ')' | ']' | '>' | '}' => depth -= 1,
            ',' if depth == 0 => {
                params.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    params.push(current);
    params
        .iter()
        .filter(|p| {
            let binding = p.split(':').next().unwrap_or_default();
            !p.trim().is_empty() && binding.split_whitespace().last() != Some("self")
        })
        .count()
}

#[test]
fn request_path_functions_fit_on_a_screen() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    let mut checked = 0;
    for (module, path) in modules(&src) {
        if !REQUEST_PATH.contains(&top(&module)) {
            continue;
        }
        for (name, line, length, params) in functions(&code(&path)) {
            checked += 1;
            if length > MAX_FN_LINES || params > MAX_FN_PARAMS {
                problems.push(format!(
                    "{}:{line}: fn {name}: {length} lines, {params} parameters \
                     (at most {MAX_FN_LINES} and {MAX_FN_PARAMS})",
                    path.display()
                ));
            }
        }
    }
    // The reader must have found the request path's functions, not nothing.
    assert!(checked > 200, "only {checked} functions found");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_function_reader_counts_lines_and_parameters() {
    let code = "impl X {\n    pub fn a(&'a mut self, b: u8,\n        c: Vec<(u8, u8)>) -> u8 {\n        1\n    }\n}\nfn d() {}\nfn e(\n    f: u8,\n) {\n    g();\n}\n";
    let found = functions(code);
    assert_eq!(found[0], ("a".to_owned(), 2, 4, 2));
    assert_eq!(found[1].0, "d");
    assert_eq!(found[2], ("e".to_owned(), 8, 5, 1));
}
