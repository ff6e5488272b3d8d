//! The shape of the source tree, as README's Layout section states it:
//! every file under `src/` is in its table (and nothing that is not there),
//! modules import each other in one direction only, and no source file
//! holds more than one idea's worth of lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Past this many lines a file holds more than one idea.
const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `src/`, as `src/...` paths.
fn source_files() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if let Ok(rel) = path.strip_prefix(root()) {
                out.insert(rel.display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&root().join("src"), &mut out);
    out
}

/// The `src/...` paths README's Layout table names.
fn layout_table() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split("\n## Layout\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Layout section");
    section
        .lines()
        .filter(|l| l.starts_with("| `src/"))
        .filter_map(|l| l.split(" | ").next())
        .flat_map(|cell| {
            cell.split('`')
                .filter(|p| p.starts_with("src/"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn readme_layout_lists_every_source_file_and_no_other() {
    let files = source_files();
    let listed = layout_table();
    let missing: Vec<_> = files.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&files).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "README's Layout table and src/ differ:\n  not in the table: {missing:?}\n  not in src/: {gone:?}"
    );
}

#[test]
fn no_source_file_is_over_the_limit() {
    let long: Vec<_> = source_files()
        .into_iter()
        .filter(|f| f.ends_with(".rs"))
        .filter_map(|f| {
            let lines = std::fs::read_to_string(root().join(&f))
                .ok()?
                .lines()
                .count();
            (lines > MAX_LINES).then_some((f, lines))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

/// The top-level module of a file: `src/ledger/window.rs` is `ledger`.
fn module_of(file: &str) -> String {
    let rest = file.trim_start_matches("src/");
    let first = rest.split('/').next().unwrap_or(rest);
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn modules_import_each_other_in_one_direction() {
    // Which top-level modules each one uses (`use crate::X` or `crate::X::`).
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in source_files().into_iter().filter(|f| f.ends_with(".rs")) {
        let from = module_of(&file);
        // Tests may join layers (the ledger's tests feed it the journal
        // mapper's events); the direction is about the code they test.
        let test_only = file.ends_with("/tests.rs") || file.contains("/tests/");
        if matches!(from.as_str(), "lib" | "main") || test_only {
            continue;
        }
        let text = std::fs::read_to_string(root().join(&file)).expect("read");
        // Code only: doc links name modules without importing them.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for piece in code.split("crate::").skip(1) {
            let to: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !to.is_empty() && to != from {
                uses.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a cycle.
    fn visit(
        m: &str,
        uses: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in uses.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, uses, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in uses.keys() {
        if let Some(cycle) = visit(m, &uses, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}
