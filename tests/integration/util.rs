//! Helpers shared by the integration tests.

#![allow(dead_code)]

use gpuscout::discover::{Evidence, Options, discover};
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
    subdirs(&hosts_dir())
}

/// Directory holding the verdict fixture host roots (one per failure mode, plus baselines).
pub fn verdicts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/verdicts")
}

/// Path of one verdict fixture host root.
pub fn verdict_case(case: &str) -> PathBuf {
    let p = verdicts_dir().join(case);
    assert!(p.is_dir(), "missing verdict fixture {}", p.display());
    p
}

/// Names of the directories in `dir`, sorted.
pub fn subdirs(dir: &Path) -> Vec<String> {
    #[allow(clippy::disallowed_methods)]
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| dir.join(n).is_dir())
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
    report_with(dir, &Options::default(), &Evidence::default())
}

/// A discovery pass on any directory with `options` and `evidence`.
pub fn report_with(dir: &Path, options: &Options, evidence: &Evidence) -> Report {
    let root = HostRoot::new(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    discover(&root, options, evidence)
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gpuscout"));
    c.args(args)
        .env_remove("GPUSCOUT_ROOT")
        .env_remove("NODE_NAME");
    c
}

/// Run the built binary (logs at `warn`, so stderr carries only what matters).
pub fn gpuscout(args: &[&str]) -> Output {
    command(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gpuscout")
}

/// Run the built binary with `RUST_LOG` unset, as a user runs it (the default `info` filter):
/// for tests of what a command says on stderr.
pub fn gpuscout_as_run(args: &[&str]) -> Output {
    command(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run gpuscout")
}

/// Why this machine is a GPU machine, if it is: the AMD, NVIDIA and Intel display (0x03) and
/// processing-accelerator (0x12) functions in the real `/sys/bus/pci/devices`. Read here with
/// plain `std::fs`, independently of the agent's own PCI scan, so a test that asserts "this
/// machine has no GPU" can skip (and say why) instead of failing on a GPU machine.
#[allow(clippy::disallowed_methods)] // the real /sys, on purpose: it is what the test is about
pub fn gpus_on_this_machine() -> Option<String> {
    let dir = Path::new("/sys/bus/pci/devices");
    let read = |p: PathBuf| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let (Ok(vendor), Ok(class)) = (read(e.path().join("vendor")), read(e.path().join("class")))
        else {
            continue;
        };
        let gpu_vendor = matches!(vendor.as_str(), "0x1002" | "0x10de" | "0x8086");
        let gpu_class = class.starts_with("0x03") || class.starts_with("0x12");
        if gpu_vendor && gpu_class {
            found.push(format!(
                "{} ({vendor}, class {class})",
                e.file_name().to_string_lossy()
            ));
        }
    }
    found.sort();
    (!found.is_empty()).then(|| format!("this machine has GPUs: {}", found.join(", ")))
}

/// Why the dynamic loader of this machine can load `libnvidia-ml.so.1`, if it can: asked by a
/// real `dlopen` (Python's `ctypes`) with the same search the agent's loader uses
/// (`LD_LIBRARY_PATH`, the ld.so cache, the default directories).
pub fn nvml_on_this_machine() -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import ctypes, sys\n\
             try:\n    ctypes.CDLL('libnvidia-ml.so.1')\nexcept OSError:\n    sys.exit(3)",
        ])
        .output()
        .expect("python3 is needed to ask the dynamic loader for libnvidia-ml.so.1");
    match out.status.code() {
        Some(0) => Some("the dynamic loader finds a libnvidia-ml.so.1 on this machine".into()),
        Some(3) => None,
        _ => panic!(
            "asking the loader for libnvidia-ml.so.1 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
