//! Every generated fixture tree is exactly what its generator writes today: each generator
//! (`tests/fixtures/mkfixtures.py`, `tests/fixtures/verdicts/mkverdicts.py`,
//! `tests/fixtures/metrics/generate.py`) runs into a temporary directory and the result is
//! compared with the committed tree, entry by entry: file contents, symlink targets, and whether
//! each symlink resolves. A generator must not write empty directories: git drops them, so a
//! clone differs from a fresh generation (a `driver` link into an empty driver directory
//! resolves where it was generated and dangles in every clone). Its relative links must not
//! dangle, except the hostile fixtures' intended dangling links (loops are always intended).

#![allow(clippy::disallowed_methods)] // reads the fixture trees themselves, not a host

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One entry of a tree, as git would keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File(Vec<u8>),
    /// Target text, and what following it gives.
    Link {
        target: String,
        resolves: Resolves,
    },
    /// A directory with nothing in it: git cannot keep it.
    EmptyDir,
}

/// What following a symlink gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolves {
    Yes,
    /// The target does not exist: a dangling link.
    Missing,
    /// A symlink loop (a hostile fixture's deliberate one) or another error.
    Loop,
}

/// Every file, symlink and empty directory under `dir`, by path relative to `dir`.
fn tree(dir: &Path) -> BTreeMap<String, Entry> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        let mut any = false;
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            any = true;
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                let target = std::fs::read_link(&p).unwrap().display().to_string();
                // metadata() follows the link; a loop or a missing target is an error.
                let resolves = match std::fs::metadata(&p) {
                    Ok(_) => Resolves::Yes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Resolves::Missing,
                    Err(_) => Resolves::Loop,
                };
                out.insert(rel, Entry::Link { target, resolves });
            } else if t.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(rel, Entry::File(std::fs::read(&p).unwrap()));
            }
        }
        if !any && dir != base {
            let rel = dir.strip_prefix(base).unwrap().display().to_string();
            out.insert(rel, Entry::EmptyDir);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Human-readable differences between a fresh generation and the committed tree.
fn differences(
    fresh: &BTreeMap<String, Entry>,
    committed: &BTreeMap<String, Entry>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, e) in fresh {
        match (e, committed.get(p)) {
            (Entry::EmptyDir, _) => {
                out.push(format!("{p}: the generator writes an empty directory (git drops it)"))
            }
            (_, None) => out.push(format!("{p}: generated, not committed")),
            (a, Some(b)) if a != b => out.push(match (a, b) {
                (Entry::Link { target: t1, resolves: r1 }, Entry::Link { target: t2, resolves: r2 }) => {
                    format!("{p}: generated link -> {t1} (resolves: {r1:?}), committed -> {t2} (resolves: {r2:?})")
                }
                (Entry::File(_), Entry::File(_)) => format!("{p}: contents differ"),
                _ => format!("{p}: generated {a:?}, committed {}", kind(b)),
            }),
            _ => {}
        }
    }
    for p in committed.keys().filter(|p| !fresh.contains_key(*p)) {
        out.push(format!(
            "{p}: committed, not generated (hand-made or stale)"
        ));
    }
    out
}

fn kind(e: &Entry) -> &'static str {
    match e {
        Entry::File(_) => "a file",
        Entry::Link { .. } => "a link",
        Entry::EmptyDir => "an empty directory",
    }
}

/// Relative links of a generated tree whose target is missing and that are not in `intended` (a
/// hostile fixture's deliberate dangling links). Loops are always deliberate (verdict and hostile
/// fixtures make files unreadable with them). Absolute targets are left out: they point into the
/// fixture's own root, which the host this runs on need not have.
fn broken_links(fresh: &BTreeMap<String, Entry>, intended: &[&str]) -> Vec<String> {
    fresh
        .iter()
        .filter_map(|(p, e)| match e {
            Entry::Link {
                target,
                resolves: Resolves::Missing,
            } if !target.starts_with('/') && !intended.contains(&p.as_str()) => Some(format!(
                "{p} -> {target}: the generator writes a link that does not resolve"
            )),
            _ => None,
        })
        .collect()
}

/// Run `script` with a fresh output directory and compare with `committed`, ignoring the
/// committed entries in `not_generated` (the generator itself, living in the same directory).
/// Relative links must not dangle, except those in `intended`.
fn check_generator(
    script: &Path,
    committed: &Path,
    not_generated: &[&str],
    intended: &[&str],
    min_entries: usize,
) {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let out = Command::new("python3")
        .arg(script)
        .arg(&out_dir)
        .output()
        .unwrap_or_else(|e| panic!("python3 is required to check the fixtures: {e}"));
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = tree(&out_dir);
    assert!(
        fresh.len() >= min_entries,
        "{} wrote {} entries",
        script.display(),
        fresh.len()
    );
    let mut committed_tree = tree(committed);
    committed_tree.retain(|p, _| !not_generated.iter().any(|n| p == n));
    let mut diff = broken_links(&fresh, intended);
    diff.extend(differences(&fresh, &committed_tree));
    assert!(
        diff.is_empty(),
        "{} does not reproduce {}: run it and commit the result.\n{}",
        script.display(),
        committed.display(),
        diff.join("\n")
    );
}

#[test]
fn host_fixtures_match_mkfixtures() {
    check_generator(
        &fixtures().join("mkfixtures.py"),
        &fixtures().join("hosts"),
        &[],
        // in mkfixtures.py's INTENTIONALLY_BROKEN, next to two loops
        &["dangling-and-garbage/sys/bus/pci/devices/0000:0b:00.0"],
        1000,
    );
}

#[test]
fn verdict_fixtures_match_mkverdicts() {
    check_generator(
        &fixtures().join("verdicts/mkverdicts.py"),
        &fixtures().join("verdicts"),
        &["mkverdicts.py"],
        &[],
        500,
    );
}

#[test]
fn metrics_fixtures_match_generate_py() {
    check_generator(
        &fixtures().join("metrics/generate.py"),
        &fixtures().join("metrics"),
        &["generate.py"],
        &[],
        100,
    );
}

/// The comparison itself catches what git loses: an empty directory a link points into.
#[test]
fn an_empty_directory_and_its_dangling_link_are_caught() {
    let t = tempfile::tempdir().unwrap();
    let (fresh, clone) = (t.path().join("fresh"), t.path().join("clone"));
    for root in [&fresh, &clone] {
        std::fs::create_dir_all(root.join("sys/devices/x")).unwrap();
        std::os::unix::fs::symlink("../../bus/drivers/d", root.join("sys/devices/x/driver"))
            .unwrap();
    }
    // The generator made the driver directory; the clone has no trace of it.
    std::fs::create_dir_all(fresh.join("sys/bus/drivers/d")).unwrap();
    let diff = differences(&tree(&fresh), &tree(&clone));
    assert_eq!(diff.len(), 2, "{diff:?}");
    assert!(diff[0].contains("empty directory"), "{diff:?}");
    assert!(
        diff[1].contains("resolves: Yes") && diff[1].contains("resolves: Missing"),
        "{diff:?}"
    );
    // A link that dangles even where it was generated (a wrong number of `..`) is caught too,
    // unless it is a hostile fixture's intended one.
    let wrong = t.path().join("wrong");
    std::fs::create_dir_all(wrong.join("sys/devices/x")).unwrap();
    std::os::unix::fs::symlink("../bus/drivers/d", wrong.join("sys/devices/x/driver")).unwrap();
    assert_eq!(broken_links(&tree(&wrong), &[]).len(), 1);
    assert!(broken_links(&tree(&wrong), &["sys/devices/x/driver"]).is_empty());
    // A deliberate loop is not a broken link.
    std::os::unix::fs::symlink("loop", wrong.join("loop")).unwrap();
    assert!(broken_links(&tree(&wrong), &["sys/devices/x/driver"]).is_empty());
}
