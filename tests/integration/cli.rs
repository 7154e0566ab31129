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

#[test]
fn flag_wins_over_the_environment() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args(["discover", "--format", "json", "--root"])
        .arg(host("arc-b580-xe"))
        .env("GPUSCOUT_ROOT", "/nonexistent/gpuscout-root")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpus"][0]["driver"], "xe");
}
