//! The layer check of the crate (test only): the numbered layer list in `lib.rs`'s module docs,
//! and every `crate::x` import of the non-test code under `agent/src`. Reads the source files
//! from the checkout (`CARGO_MANIFEST_DIR`); a file that cannot be read fails the test.

use std::collections::{BTreeMap, BTreeSet};

/// Top-level module → layer number, from lines like `//! 3. model: cause, model`.
fn parse_layers(lib_rs: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in lib_rs.lines() {
        let Some(rest) = line.strip_prefix("//! ") else {
            continue;
        };
        let Some((num, rest)) = rest.split_once(". ") else {
            continue;
        };
        let (Ok(n), Some((_, mods))) = (num.parse::<usize>(), rest.split_once(": ")) else {
            continue;
        };
        for m in mods.split(',') {
            out.insert(m.trim().to_owned(), n);
        }
    }
    out
}

/// The code of a file without comments and without its trailing `#[cfg(test)]` module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `code` names with `crate::x` or `crate::{x, y::z}`.
fn imports(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `crate` must start an identifier (not `mycrate::`).
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(ident));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

/// Check `files` (path relative to `agent/src`, text) against `layers`: each message names the
/// file and import that goes up a layer, a module without a layer, or a cycle of modules.
fn check(layers: &BTreeMap<String, usize>, files: &[(String, String)]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in files {
        let top = path
            .split('/')
            .next()
            .unwrap_or(path)
            .trim_end_matches(".rs")
            .to_owned();
        let file = path.rsplit('/').next().unwrap_or(path);
        if top == "lib" || top == "main" || file == "tests.rs" || path.contains("/tests/") {
            continue;
        }
        let Some(&own) = layers.get(&top) else {
            errors.push(format!(
                "agent/src/{path}: module `{top}` has no layer in lib.rs"
            ));
            continue;
        };
        for m in imports(&code_of(text)) {
            if m == top {
                continue;
            }
            match layers.get(&m) {
                Some(&l) if l > own => errors.push(format!(
                    "agent/src/{path}: imports crate::{m} (layer {l}) from `{top}` (layer {own})"
                )),
                Some(_) => {
                    edges.entry(top.clone()).or_default().insert(m);
                }
                // `crate::foo!` macros and the like: not a module.
                None => {}
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        errors.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    errors
}

/// One cycle of the graph, as `a, b, ..., a`.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[allow(clippy::disallowed_methods)] // the crate's own source files, not host facts
fn source_files(dir: &std::path::Path, rel: &str, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if p.is_dir() {
            source_files(&p, &r, out);
        } else if name.ends_with(".rs") {
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push((r, text));
        }
    }
}

#[test]
fn every_import_goes_down_the_layers_of_lib_rs() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("agent/src");
    let mut files = Vec::new();
    source_files(&src, "", &mut files);
    // This checker is test code, like the `tests` modules.
    files.retain(|(p, _)| p != "layers.rs");
    let lib = &files.iter().find(|(p, _)| p == "lib.rs").expect("lib.rs").1;
    let layers = parse_layers(lib);
    assert!(
        layers.len() > 20,
        "layer list not found in lib.rs: {layers:?}"
    );
    // Every top-level module of lib.rs has a layer.
    for line in lib.lines() {
        if let Some(m) = line.strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            assert!(layers.contains_key(m), "lib.rs: `{m}` has no layer");
        }
    }
    let errors = check(&layers, &files);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn the_checker_finds_an_upward_import_and_a_cycle() {
    let layers = parse_layers("//! Layers\n//!\n//! 1. low: a, b\n//! 2. high: c\n");
    assert_eq!(layers.len(), 3);
    let file = |p: &str, t: &str| (p.to_owned(), t.to_owned());
    let clean = [
        file("a.rs", "use crate::b::X;\n"),
        file(
            "c/mod.rs",
            "use crate::{a, b::Y};\n// crate::c::Z in a comment\n",
        ),
        // Test code may use anything.
        file(
            "b.rs",
            "fn f() {}\n#[cfg(test)]\nmod tests { use crate::c; }\n",
        ),
        file("b/tests.rs", "use crate::c::T;\n"),
    ];
    assert_eq!(check(&layers, &clean), Vec::<String>::new());

    let up = [file("b/inner.rs", "fn f() { crate::c::go(); }\n")];
    assert_eq!(
        check(&layers, &up),
        ["agent/src/b/inner.rs: imports crate::c (layer 2) from `b` (layer 1)"]
    );
    let grouped = [file("a.rs", "use crate::{b, c::D};\n")];
    assert_eq!(check(&layers, &grouped).len(), 1);

    let cycle = [
        file("a.rs", "use crate::b::X;\n"),
        file("b.rs", "use crate::a::Y;\n"),
    ];
    assert_eq!(check(&layers, &cycle), ["import cycle: a -> b -> a"]);

    let unplaced = [file("d.rs", "")];
    assert_eq!(
        check(&layers, &unplaced),
        ["agent/src/d.rs: module `d` has no layer in lib.rs"]
    );
}
