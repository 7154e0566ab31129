//! The mount table (`agent/src/hostpaths.rs`) against what the agent really reads: `discover`
//! and a full scrape (every metrics source, NVML included) on every fixture host root with
//! `HostRoot` recording its reads; each read must fall inside the table, and each entry of the
//! table must be needed by some fixture. Also the chart's copy of the table
//! (`charts/gpuscout/files/host-paths.yaml`) against `gpuscout host-paths`.
//!
//! Not covered here: ROCm SMI (feature `rocm-smi`) reads the container's own `/sys` and ignores
//! `--root`, and NVML itself opens the container's `/dev` and `/proc`; neither goes through
//! `HostRoot`, so neither needs a host mount.

#![allow(clippy::disallowed_methods)] // tests list fixture directories directly

use gpuscout::discover::Options;
use gpuscout::hostpaths::{self, MOUNTS};
use gpuscout::hostroot::HostRoot;
use gpuscout::nvml::NvmlConfig;
use gpuscout::readaudit;
use gpuscout_test_support::nvml_double;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every fixture host root: the shared hosts, the metrics ones and the verdict ones.
fn fixture_roots() -> Vec<PathBuf> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for group in ["hosts", "metrics", "verdicts"] {
        for e in std::fs::read_dir(base.join(group)).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() && ["sys", "proc", "etc"].iter().any(|d| p.join(d).is_dir()) {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 30, "fixture roots not found: {out:?}");
    out
}

/// The host paths `discover` plus one scrape of every source read on `dir`.
async fn reads(dir: &Path, nvml_lib: Option<PathBuf>) -> Vec<String> {
    let root = HostRoot::new(dir).unwrap();
    let mut cfg = NvmlConfig::new(root.clone());
    cfg.lib_path = nvml_lib;
    cfg.call_timeout = Duration::from_secs(2);
    cfg.quiet = true;
    let paths = readaudit::reads(&root, &Options::default(), cfg).await;
    // every source ran: the scrape reads sysfs of each device discovery found
    assert!(!paths.is_empty(), "nothing recorded on {}", dir.display());
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_of_discover_and_scrape_is_in_the_mount_table() {
    let mut all: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for dir in fixture_roots() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for p in reads(&dir, None).await {
            all.entry(p).or_default().insert(name.clone());
        }
    }
    // NVML loaded (the C test double) on an NVIDIA host: what the NVML worker reads too.
    let double = nvml_double::Double::new(&format!(
        "driver_version=580.95.05\n{}",
        nvml_double::full_gpu(
            0,
            "00000000:01:00.0",
            "NVIDIA GeForce RTX 4090",
            "GPU-5f1b2c3d-0000-4000-8000-000000000001"
        )
    ));
    let nv = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/rtx4090-open");
    for p in reads(&nv, Some(double.lib.clone())).await {
        all.entry(p).or_default().insert("rtx4090-open+nvml".into());
    }

    assert!(all.len() > 100, "recording saw too little: {all:?}");
    let outside: Vec<String> = all
        .iter()
        .filter(|(p, _)| hostpaths::covering(p).is_none())
        .map(|(p, on)| format!("{p} (on {})", on.iter().next().unwrap()))
        .collect();
    assert!(
        outside.is_empty(),
        "reads outside agent/src/hostpaths.rs MOUNTS (the chart would not mount them):\n{}",
        outside.join("\n")
    );

    // Nothing mounted for nothing: every read pattern of every mount is used by some fixture.
    let mut used: BTreeSet<(&str, &str)> = BTreeSet::new();
    for p in all.keys() {
        if let Some((m, r)) = hostpaths::covering(p) {
            used.insert((m.path, r));
        }
    }
    for m in MOUNTS {
        for r in m.reads {
            assert!(
                used.contains(&(m.path, *r)),
                "{} reads {r:?} but no fixture read it: drop it from the table or add a fixture",
                m.path
            );
        }
    }
}

#[test]
fn the_check_bites_on_a_read_outside_the_table() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("etc/kubernetes")).unwrap();
    std::fs::write(t.path().join("etc/kubernetes/kubelet.conf"), "secret").unwrap();
    let (root, log) = HostRoot::new(t.path()).unwrap().recording();
    root.read_string("etc/kubernetes/kubelet.conf").unwrap();
    let paths = log.paths();
    assert_eq!(
        hostpaths::uncovered(paths.iter().map(String::as_str)),
        ["/etc/kubernetes/kubelet.conf"]
    );
}

#[test]
fn chart_copy_of_the_table_matches_the_binary() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .arg("host-paths")
        .output()
        .expect("run gpuscout host-paths");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed, hostpaths::chart_file());
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/gpuscout/files/host-paths.yaml");
    let committed = std::fs::read_to_string(&chart).unwrap_or_default();
    assert!(
        committed == printed,
        "{} is stale: run `cargo run -q -- host-paths > {}`",
        chart.display(),
        chart.display()
    );
}

#[test]
fn audit_command_lists_reads_with_their_mounts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/dual-vendor");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args(["host-paths", "--audit", "--root"])
        .arg(&root)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gpuscout host-paths --audit");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("/proc/modules\t/proc/modules\n"), "{text}");
    assert!(text.contains("/sys/bus/pci/devices\t/sys/bus\n"), "{text}");
    assert!(!text.contains("OUTSIDE"), "{text}");
}
