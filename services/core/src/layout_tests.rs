//! The core's layout, checked: imports between its top-level modules form
//! no circle, and production files and functions stay small enough to read
//! in one sitting.
//!
//! In: the source files under `src/` (read at test time). Out: a failing
//! test naming the circle, the file or the function. Keeps nothing.
//! Production code only: `tests.rs` files, `testkit.rs`, this file and
//! `#[cfg(test)] mod tests { .. }` blocks are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines a production file may have.
const MAX_FILE_LINES: usize = 600;
/// Lines a production function may have, signature to closing brace.
const MAX_FN_LINES: usize = 80;
/// Files another change is splitting; remove an entry once it is split.
const NOT_YET_SPLIT: &[&str] = &["identity/mod.rs"];

/// Every production `.rs` file under `src/`, relative to it, with its text
/// up to its `#[cfg(test)] mod tests {` block.
fn production_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("src is readable").flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    paths
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&root).ok()?.to_string_lossy().replace('\\', "/");
            let name = rel.rsplit('/').next().unwrap_or_default();
            if matches!(name, "tests.rs" | "testkit.rs" | "layout_tests.rs") {
                return None;
            }
            let text = std::fs::read_to_string(&p).ok()?;
            let prod = match text.find("#[cfg(test)]\nmod tests {") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            Some((rel, prod))
        })
        .collect()
}

/// The top-level module a file belongs to: `decide/churn.rs` -> `decide`.
fn module_of(rel: &str) -> &str {
    rel.split('/').next().unwrap_or(rel).trim_end_matches(".rs")
}

/// The top-level modules a file names through `crate::`, outside comments.
fn crate_uses(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a::b, c}` on one line: the first segment of each item.
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let head: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !head.is_empty() {
                        used.insert(head);
                    }
                }
            } else {
                let head: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !head.is_empty() {
                    used.insert(head);
                }
            }
        }
    }
    used
}

/// The graph of `crate::` imports between top-level modules.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in production_files() {
        let from = module_of(&rel).to_string();
        if from == "lib" {
            continue;
        }
        let uses: Vec<String> = crate_uses(&text).into_iter().filter(|m| *m != from).collect();
        graph.entry(from).or_default().extend(uses);
    }
    graph
}

/// A circle in `graph`, as the path that closes it.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut circle = path[start..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Functions longer than `max` lines: (name, lines). A function runs from
/// its `fn` line to the first line after it holding only its indentation
/// and `}`.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let Some(after) = ["fn ", "pub fn ", "pub(crate) fn ", "pub(super) fn "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
        else {
            continue;
        };
        let close = format!("{indent}}}");
        let Some(len) = lines[i + 1..].iter().position(|l| *l == close) else {
            continue;
        };
        if len + 2 > max {
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            long.push((name, len + 2));
        }
    }
    long
}

#[test]
fn core_modules_import_in_one_direction() {
    let graph = import_graph();
    assert!(
        graph.contains_key("processor") && graph.contains_key("vocab"),
        "{graph:?}"
    );
    assert!(
        graph["vocab"].is_empty(),
        "vocab imports nothing of the core: {:?}",
        graph["vocab"]
    );
    if let Some(circle) = find_circle(&graph) {
        panic!("import circle between core modules: {}", circle.join(" -> "));
    }
}

#[test]
fn the_circle_check_finds_circles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(
        find_circle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        crate_uses("use crate::{decide::churn, ids};\nlet x = crate::time::EventTime(0);\n// crate::view"),
        ["decide", "ids", "time"].into_iter().map(String::from).collect()
    );
}

#[test]
fn production_files_and_functions_stay_small() {
    let mut too_big = Vec::new();
    for (rel, text) in production_files() {
        if NOT_YET_SPLIT.contains(&rel.as_str()) {
            continue;
        }
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            too_big.push(format!("{rel}: {lines} lines"));
        }
        for (name, n) in long_functions(&text, MAX_FN_LINES) {
            too_big.push(format!("{rel}: fn {name}: {n} lines"));
        }
    }
    assert!(
        too_big.is_empty(),
        "over {MAX_FILE_LINES} lines a file or {MAX_FN_LINES} a function: {too_big:#?}"
    );
}
