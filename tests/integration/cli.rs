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
fn check_prints_a_one_line_summary_on_success() {
    let root = host("dual-vendor");
    let out = gpuscout(&[
        "check",
        "--root",
        root.to_str().unwrap(),
        "--node-name",
        "gpu-7",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        "ok: 2 GPUs (amd 1, nvidia 1), every driver stack ok, node gpu-7\n"
    );
    let root = host("no-gpu");
    let out = gpuscout(&["check", "--root", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "ok: no GPUs found\n"
    );
    // A failing check keeps stdout empty: the problems go to stderr.
    let root = host("unbound-and-bmc");
    let out = gpuscout(&["check", "--root", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[test]
fn report_names_the_node_and_its_version_and_time() {
    let root = host("no-gpu");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args(["discover", "--format", "json", "--root"])
        .arg(&root)
        .env("NODE_NAME", "talos-gpu-1")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apiVersion"], gpuscout::model::REPORT_API_VERSION);
    assert_eq!(v["node"], "talos-gpu-1");
    let t = v["generated_at"].as_str().unwrap();
    assert!(
        t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
        "{t}"
    );
}

#[test]
fn version_names_the_commit() {
    let out = gpuscout(&["--version"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    // build.rs reruns when HEAD moves, so the binary cargo just built names HEAD; a build
    // with GPUSCOUT_GIT_COMMIT set names that instead.
    let commit = text
        .trim()
        .strip_prefix(concat!("gpuscout ", env!("CARGO_PKG_VERSION"), " (commit "))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text}"));
    let expected = option_env!("GPUSCOUT_GIT_COMMIT").map_or(expected, str::to_owned);
    assert_eq!(commit, expected, "{text}");
}

/// Logs piped to a file or `kubectl logs` carry no ANSI escapes, plain or JSON.
#[test]
fn logs_are_not_coloured_when_piped() {
    let root = host("dual-vendor");
    for format in ["plain", "json"] {
        // --talos-api without --talos-node logs one warning line.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
            .args(["discover", "--talos-api", "--log-format", format, "--root"])
            .arg(&root)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .env_remove("GPUSCOUT_TALOS_NODE")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("WARN") || err.contains("\"WARN\""),
            "{format}: {err}"
        );
        assert!(!err.contains('\u{1b}'), "{format}: escape codes in {err:?}");
    }
}

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = gpuscout(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("discover") && text.contains("disable-source"),
            "{shell}: {text}"
        );
    }
    let out = gpuscout(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(".TH gpuscout 1"), "{text}");
    assert!(text.contains("completions"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let out = gpuscout(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    for page in ["gpuscout.1", "gpuscout-serve.1", "gpuscout-check.1"] {
        assert!(dir.path().join(page).is_file(), "{page}");
    }
}

/// `serve -h` groups every flag under a heading; only -h/-V stay under "Options".
#[test]
fn help_groups_flags_under_headings() {
    use clap::CommandFactory;
    let mut cmd = gpuscout::cli::Cli::command();
    cmd.build();
    let serve = cmd.find_subcommand("serve").unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for a in serve.get_arguments() {
        let id = a.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        let h = a
            .get_help_heading()
            .unwrap_or_else(|| panic!("--{id} has no help heading"));
        assert!(gpuscout::cli::HEADINGS.contains(&h), "--{id}: {h}");
        seen.insert(h);
    }
    for h in [
        "Host",
        "Discovery",
        "Labels",
        "Metrics",
        "Security",
        "Talos API",
    ] {
        assert!(seen.contains(h), "no flag under {h}");
    }
    let out = gpuscout(&["serve", "-h"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\nTalos API:\n") && text.contains("\nMetrics:\n"),
        "{text}"
    );
}

/// Without a Node name the report names the host by the hostname under --root.
#[test]
fn report_node_falls_back_to_the_hostname() {
    #![allow(clippy::disallowed_methods)]
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
    std::fs::create_dir_all(dir.path().join("sys/bus/pci/devices")).unwrap();
    std::fs::write(dir.path().join("proc/sys/kernel/hostname"), "gpu-host-3\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args(["discover", "--format", "json", "--root"])
        .arg(dir.path())
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["node"], "gpu-host-3");
    // NODE_NAME wins over the hostname.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args(["discover", "--format", "json", "--root"])
        .arg(dir.path())
        .env("NODE_NAME", "k8s-node-3")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["node"], "k8s-node-3");
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
