//! Helpers shared by the integration tests.

#![allow(dead_code)]

use gpuscout::discover::{Options, discover};
use gpuscout::hostroot::HostRoot;
use gpuscout::model::Report;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Directory holding the fixture host roots.
pub fn hosts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts")
}

/// Path of one fixture host root.
pub fn host(profile: &str) -> PathBuf {
    let p = hosts_dir().join(profile);
    assert!(p.is_dir(), "missing fixture {}", p.display());
    p
}

/// Names of every fixture host root, sorted.
pub fn profiles() -> Vec<String> {
    #[allow(clippy::disallowed_methods)]
    let mut v: Vec<String> = std::fs::read_dir(hosts_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| hosts_dir().join(n).is_dir())
        .collect();
    v.sort();
    v
}

/// A discovery pass on a fixture with default options.
pub fn report(profile: &str) -> Report {
    report_at(&host(profile))
}

/// A discovery pass on any directory.
pub fn report_at(dir: &Path) -> Report {
    discover(&HostRoot::new(dir).unwrap(), &Options::default())
}

/// Run the built binary.
pub fn gpuscout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args(args)
        .env_remove("GPUSCOUT_ROOT")
        .env_remove("NODE_NAME")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gpuscout")
}
