//! The README's and docs' claims name the tests that back them, and those tests exist.
//!
//! A claims table is a Markdown table between `<!-- claims -->` and `<!-- /claims -->` in
//! `README.md` or any Markdown file under `docs/`. Its last column names one or more tests in backticks as
//! `path::name`, where `path` is relative to the repository root:
//! - a Rust file (`tests/integration/*.rs`, `agent/src/**.rs`): `fn name` with `#[test]` or
//!   `#[tokio::test]` right above it, not `#[ignore]`d, in a module that is compiled into a test
//!   target (`tests/integration/main.rs` declares it; `agent/src` files are unit tests);
//! - a pytest file (`tests/deploy/*.py`): `def name(` with `name` starting with `test_`;
//! - a promtool rules test (`tests/alerts/*.yaml`): a test group `- name: name`.
//!
//! Also here: no test decides pass or fail on wall-clock time (the README says so).

#![allow(clippy::disallowed_methods)] // reads the repository's own files

use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const OPEN: &str = "<!-- claims -->";
const CLOSE: &str = "<!-- /claims -->";

/// One row of a claims table.
#[derive(Debug)]
struct Claim {
    /// `file:line` of the row.
    at: String,
    text: String,
    tests: Vec<String>,
}

/// Split a table row at its unescaped `|`.
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut prev = ' ';
    for c in row
        .trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .chars()
    {
        if c == '|' && prev != '\\' {
            out.push(String::new());
        } else {
            out.last_mut().unwrap().push(c);
        }
        prev = c;
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The claims of one Markdown text, and its errors: a table opened and never closed, a row that
/// names no test.
fn claims_in(name: &str, text: &str) -> (Vec<Claim>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut open_at = None;
    for (i, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", i + 1);
        let t = line.trim();
        if t == OPEN {
            open_at = Some(at);
            continue;
        }
        if t == CLOSE {
            open_at = None;
            continue;
        }
        if open_at.is_none() || !t.starts_with('|') {
            continue;
        }
        let c = cells(t);
        let last = c.last().cloned().unwrap_or_default();
        if c.iter().all(|x| x.chars().all(|ch| "-: ".contains(ch))) || last == "backed by" {
            continue; // separator or header
        }
        let tests: Vec<String> = last
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        if tests.is_empty() {
            errors.push(format!("{at}: the claim names no test: {t}"));
        }
        out.push(Claim {
            at,
            text: c.first().cloned().unwrap_or_default(),
            tests,
        });
    }
    if let Some(at) = open_at {
        errors.push(format!("{at}: {OPEN} without {CLOSE}"));
    }
    (out, errors)
}

/// Why `reference` (`path::name`) names no runnable test under `root`, if it does not.
fn missing(root: &Path, reference: &str) -> Option<String> {
    let Some((path, name)) = reference.split_once("::") else {
        return Some(format!("`{reference}` is not `path::name`"));
    };
    let file = root.join(path);
    let Ok(src) = std::fs::read_to_string(&file) else {
        return Some(format!("{path} does not exist"));
    };
    if path.ends_with(".rs") {
        return rust_test_missing(root, path, &src, name);
    }
    if path.ends_with(".py") {
        let found = name.starts_with("test_")
            && src
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("def {name}(")));
        return (!found).then(|| format!("{path} has no pytest `def {name}(`"));
    }
    if path.ends_with(".yaml") {
        let found = src.lines().any(|l| {
            l.trim() == format!("- name: {name}") || l.trim() == format!("- name: '{name}'")
        });
        return (!found).then(|| format!("{path} has no promtool test group `{name}`"));
    }
    Some(format!("{path}: unknown kind of test file"))
}

fn rust_test_missing(root: &Path, path: &str, src: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = src.lines().collect();
    let Some(i) = lines.iter().position(|l| {
        let l = l.trim_start();
        ["fn ", "async fn ", "pub fn ", "pub async fn "]
            .iter()
            .any(|p| l.starts_with(&format!("{p}{name}(")))
    }) else {
        return Some(format!("{path} has no `fn {name}`"));
    };
    // The attributes right above the function (doc comments and other attributes in between).
    let attrs: Vec<&str> = lines[..i]
        .iter()
        .rev()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("#[") || l.starts_with("///") || l.starts_with("//"))
        .collect();
    if !attrs
        .iter()
        .any(|a| *a == "#[test]" || a.starts_with("#[tokio::test"))
    {
        return Some(format!("{path}: `fn {name}` is not a test"));
    }
    if attrs.iter().any(|a| a.starts_with("#[ignore")) {
        return Some(format!(
            "{path}: `{name}` is #[ignore]d: it backs nothing by itself"
        ));
    }
    if let Some(stem) = path
        .strip_prefix("tests/integration/")
        .and_then(|p| p.strip_suffix(".rs"))
    {
        let main =
            std::fs::read_to_string(root.join("tests/integration/main.rs")).unwrap_or_default();
        if !main.lines().any(|l| l.trim() == format!("mod {stem};")) {
            return Some(format!(
                "{path} is not a module of tests/integration/main.rs: it never runs"
            ));
        }
    }
    None
}

/// Every claim of every claims table in README.md and docs/*.md, and what is wrong with them.
fn all_claims(root: &Path) -> (Vec<Claim>, Vec<String>) {
    fn markdown(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                markdown(&e.path(), out);
            } else if t.is_file() && e.path().extension().is_some_and(|x| x == "md") {
                out.push(e.path());
            }
        }
    }
    let mut files: Vec<PathBuf> = vec![root.join("README.md")];
    let mut docs = Vec::new();
    markdown(&root.join("docs"), &mut docs);
    docs.sort();
    files.extend(docs);
    let mut claims = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let name = f.strip_prefix(root).unwrap().display().to_string();
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let (c, e) = claims_in(&name, &text);
        claims.extend(c);
        errors.extend(e);
    }
    for c in &claims {
        for t in &c.tests {
            if let Some(why) = missing(root, t) {
                errors.push(format!("{}: \"{}\": {why}", c.at, c.text));
            }
        }
    }
    (claims, errors)
}

#[test]
fn every_claimed_test_exists() {
    let (claims, errors) = all_claims(repo());
    assert!(
        errors.is_empty(),
        "claims without a test:\n{}",
        errors.join("\n")
    );
    assert!(
        claims.len() >= 30,
        "the claims tables cover the README's claims: only {} rows found",
        claims.len()
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("(docs/CLAIMS.md)"),
        "the README links its claims table docs/CLAIMS.md"
    );
    println!(
        "{} claims, {} test references, all found",
        claims.len(),
        claims.iter().map(|c| c.tests.len()).sum::<usize>()
    );
}

/// The checker bites: in a scratch repository, a claim naming a test that does not exist, one
/// that is not a test, an ignored one, one in a module that never runs, a claim without a test
/// and an unclosed table are all reported.
#[test]
fn the_claims_checker_finds_missing_tests() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let w = |p: &str, s: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w("tests/integration/main.rs", "mod real;\n");
    w(
        "tests/integration/real.rs",
        "/// doc\n#[test]\nfn exists() {}\nfn helper() {}\n#[test]\n#[ignore = \"inner\"]\nfn ignored() {}\n",
    );
    w(
        "tests/integration/orphan.rs",
        "#[test]\nfn never_runs() {}\n",
    );
    w("tests/deploy/test_x.py", "def test_there():\n    pass\n");
    w("tests/alerts/r.test.yaml", "tests:\n  - name: fires on x\n");
    w(
        "README.md",
        "x\n<!-- claims -->\n| claim | backed by |\n|---|---|\n\
         | ok | `tests/integration/real.rs::exists`, `tests/deploy/test_x.py::test_there`, `tests/alerts/r.test.yaml::fires on x` |\n\
         | gone | `tests/integration/real.rs::gone` |\n\
         | helper | `tests/integration/real.rs::helper` |\n\
         | ignored | `tests/integration/real.rs::ignored` |\n\
         | orphan | `tests/integration/orphan.rs::never_runs` |\n\
         | py | `tests/deploy/test_x.py::test_not_there` |\n\
         | yaml | `tests/alerts/r.test.yaml::fires on y` |\n\
         | none | just words |\n\
         <!-- /claims -->\n",
    );
    w(
        "docs/a.md",
        "<!-- claims -->\n| c | `tests/integration/real.rs::exists` |\n",
    );
    let (_, errors) = all_claims(root);
    let text = errors.join("\n");
    for want in [
        "names no test",
        "without <!-- /claims -->",
        "has no `fn gone`",
        "`fn helper` is not a test",
        "`ignored` is #[ignore]d",
        "orphan.rs is not a module",
        "no pytest `def test_not_there(`",
        "no promtool test group `fires on y`",
    ] {
        assert!(text.contains(want), "{want} not reported in:\n{text}");
    }
    assert_eq!(errors.len(), 8, "{text}");
}

/// The comment that marks a clock comparison as a guard that only turns a hang into a failure
/// (on its line or the three lines above).
const HANG_GUARD_MARKER: &str = "hang guard";

/// `file:line` of every assertion in `src` that compares a clock (`elapsed()`, an `Instant` or a
/// `Duration`) with `<`/`>`, unless it is marked as a hang guard or its test runs in paused
/// (virtual) time (`#[tokio::test(start_paused = true)]`), where durations are deterministic.
fn clock_assertions(file: &str, src: &str) -> Vec<String> {
    let lines: Vec<&str> = src.lines().collect();
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut from = 0;
    while let Some(pos) = src[from..].find("assert").map(|p| p + from) {
        from = pos + 6;
        let rest = &src[pos..];
        let Some(bang) = rest.find("!(") else { break };
        if !rest[..bang]
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        // An assertion written inside a string literal (a test of this lint) is no assertion.
        let line_start = src[..pos].rfind('\n').map_or(0, |i| i + 1);
        let before = &src[line_start..pos];
        if (before.matches('"').count() - before.matches("\\\"").count()) % 2 == 1 {
            continue;
        }
        // The macro's arguments up to the matching parenthesis (strings are skipped).
        let start = pos + bang + 2;
        let (mut depth, mut i, mut in_str) = (1, start, false);
        while i < bytes.len() && depth > 0 {
            match bytes[i] {
                b'\\' if in_str => i += 1,
                b'"' => in_str = !in_str,
                b'(' if !in_str => depth += 1,
                b')' if !in_str => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        let args = &src[start..i.saturating_sub(1)];
        let code: String = args.split('"').step_by(2).collect();
        let clock =
            code.contains("elapsed()") || code.contains("Duration::") || code.contains("Instant");
        let compares = code
            .replace("->", "")
            .replace("=>", "")
            .contains(['<', '>']);
        if clock && compares {
            let line = src[..pos].matches('\n').count();
            let marked = lines[line.saturating_sub(3)..=line]
                .iter()
                .any(|l| l.contains(HANG_GUARD_MARKER));
            if !marked && !in_paused_test(&lines, line) {
                out.push(format!("{file}:{}: {}", line + 1, lines[line].trim()));
            }
        }
    }
    out
}

/// The README: "Timing never decides a test's pass or fail; the benchmarks report, the tests
/// check behaviour." Every clock comparison in an assertion under `tests/` is a marked hang
/// guard or a bound in paused (virtual) time.
#[test]
fn no_test_decides_on_wall_clock_time() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            // Never follow links: the fixture trees are full of sysfs-like cycles.
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(&p, out);
            } else if t.is_file() && p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("tests"), &mut files);
    files.sort();
    let mut found = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(repo()).unwrap().display().to_string();
        found.extend(clock_assertions(&rel, &std::fs::read_to_string(f).unwrap()));
    }
    assert!(
        found.is_empty(),
        "assertions that decide on wall-clock time (move the timing to a bench, or mark a hang \
         guard):\n{}",
        found.join("\n")
    );
}

/// True when the function around `line` is a `#[tokio::test(start_paused = true)]`.
fn in_paused_test(lines: &[&str], line: usize) -> bool {
    let Some(f) = (0..=line).rev().find(|i| {
        let l = lines[*i];
        !l.starts_with(' ') && (l.contains("fn ") && l.contains('('))
    }) else {
        return false;
    };
    lines[..f]
        .iter()
        .rev()
        .take_while(|l| l.trim_start().starts_with("#[") || l.trim_start().starts_with("//"))
        .any(|l| l.contains("start_paused = true"))
}

#[test]
fn the_clock_lint_bites() {
    let src = "fn t() {\n    let took = t.elapsed();\n    assert!(took < Duration::from_secs(1), \"took {took:?}\");\n    assert!(start.elapsed() < limit);\n    // hang guard: only against a hang\n    assert!(start.elapsed() < limit, \"hung\");\n    assert_eq!(a, b, \"x < y\");\n}\n";
    let found = clock_assertions("x.rs", src);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("x.rs:3:"), "{found:?}");
    assert!(found[1].starts_with("x.rs:4:"), "{found:?}");
    // Paused (virtual) time is deterministic.
    let paused = "#[tokio::test(start_paused = true)]\nasync fn t() {\n    assert!(t.elapsed() <= Duration::from_secs(6));\n}\n";
    assert!(clock_assertions("y.rs", paused).is_empty());
}
