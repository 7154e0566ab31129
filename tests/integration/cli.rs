//! The binary: output formats, exit statuses and one-line usage errors.

use crate::util::{gpuscout, host};

#[test]
fn discover_json_matches_the_spec_shape() {
    let root = host("talos-strixhalo-apu");
    let out = gpuscout(&[
        "discover",
        "--root",
        root.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["kernel", "os", "talos"] {
        assert!(v["host"].get(key).is_some(), "host.{key}");
    }
    let g = &v["gpus"][0];
    for key in [
        "pci_address",
        "vendor",
        "vendor_id",
        "device_id",
        "class",
        "model",
        "driver",
        "card",
        "render",
        "numa_node",
        "memory_bytes",
        "status",
        "problems",
    ] {
        assert!(g.get(key).is_some(), "gpus[0].{key}");
    }
    assert_eq!(g["vendor"], "amd");
    assert_eq!(g["class"], "0x030000");
    assert_eq!(v["labels"]["gpuscout.io/amd.count"], "1");
}

#[test]
fn discover_yaml_and_table() {
    let root = host("dual-vendor");
    let y = gpuscout(&[
        "discover",
        "--root",
        root.to_str().unwrap(),
        "--format",
        "yaml",
    ]);
    assert!(y.status.success());
    let v: serde_json::Value = serde_norway::from_slice(&y.stdout).unwrap();
    assert_eq!(v["gpus"].as_array().unwrap().len(), 2);
    let t = gpuscout(&["discover", "--root", root.to_str().unwrap()]);
    let text = String::from_utf8(t.stdout).unwrap();
    assert!(
        text.contains("0000:01:00.0") && text.contains("nvidia"),
        "{text}"
    );
    assert!(text.contains("gpuscout.io/amd.count=1"), "{text}");
}

#[test]
fn root_from_environment() {
    let root = host("arc-b580-xe");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args(["discover", "--format", "json"])
        .env("GPUSCOUT_ROOT", &root)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpus"][0]["driver"], "xe");
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    for args in [
        vec!["discover", "--root", "/nonexistent/root"],
        vec!["discover", "--label-prefix", "Not A Prefix"],
        vec!["discover", "--format", "xml"],
        vec!["discover", "--bogus"],
        vec!["check", "--root", "/etc/hostname"],
    ] {
        let out = gpuscout(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
        if args
            .iter()
            .any(|a| a.starts_with("--root") || a.starts_with("--label"))
        {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        }
    }
}

/// A root without `sys/bus/pci` (an empty directory, a container's own filesystem) is a wrong
/// `--root`, not a host without GPUs: exit 2 with one clear line, for discover and check.
#[test]
fn a_root_without_a_pci_bus_is_a_configuration_error() {
    let empty = tempfile::tempdir().unwrap();
    let root = empty.path().to_str().unwrap();
    for cmd in ["discover", "check"] {
        let out = gpuscout(&[cmd, "--root", root]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{cmd}: {err}");
        assert!(err.contains("no sys/bus/pci below it"), "{cmd}: {err}");
        assert!(err.contains(root), "{cmd}: {err}");
        assert!(out.stdout.is_empty(), "{cmd}: nothing on stdout");
    }
    // A host without GPUs but with a PCI bus is fine.
    let out = gpuscout(&["check", "--root", host("no-gpu").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn check_min_gpus_fails_with_one_line_when_fewer_gpus_are_found() {
    let root = host("talos-strixhalo-apu");
    let root = root.to_str().unwrap();
    let out = gpuscout(&["check", "--root", root, "--min-gpus", "1"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = gpuscout(&["check", "--root", root, "--min-gpus", "2"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("found 1 GPU, --min-gpus requires at least 2"),
        "{err}"
    );
    let out = gpuscout(&[
        "check",
        "--root",
        host("no-gpu").to_str().unwrap(),
        "--min-gpus",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("found 0 GPUs"));
    let out = gpuscout(&["check", "--root", root, "--min-gpus", "many"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
