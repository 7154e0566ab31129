//! `scripts/hw-check.sh` end to end, as it will run on a real NVIDIA machine, but against a
//! fixture host root, the NVML test double (gpuscout's NVML) and a fake `nvidia-smi`
//! (`tests/support/fake-nvidia-smi.sh`) that answers from the same double script: every
//! comparison runs for real, and a value the fake reports wrongly makes the script fail.
//! `serve` runs 2 s with a 30 s scrape deadline, so no timing decides the outcome here.

#![allow(clippy::disallowed_methods)] // the test reads the script's output files

use gpuscout_test_support::nvml_double::{Double, full_gpu};
use std::path::Path;
use std::process::Command;

const FIELDS: [&str; 14] = [
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "temperature.gpu",
    "power.draw",
    "enforced.power.limit",
    "clocks.gr",
    "clocks.sm",
    "clocks.mem",
    "pcie.link.gen.current",
    "pcie.link.width.current",
    "utilization.gpu",
    "ecc.mode.current",
];

/// Run the script; returns its exit status and the summary.
fn run(skew: Option<&str>) -> (i32, String, tempfile::TempDir) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The fixture's GPU: 0000:01:00.0, link 2.5 GT/s x16 in sysfs (full_gpu says gen 1, x16).
    let d = Double::new(&format!(
        "driver_version=570.172.08\ncuda_version=12080\n{}",
        full_gpu(
            0,
            "00000000:01:00.0",
            "NVIDIA GeForce RTX 4090",
            "GPU-5b2c7e0a-3f41-9d86-1c2e-7a4f0b9d3e61"
        )
    ));
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(repo.join("scripts/hw-check.sh"))
        .current_dir(repo)
        .env("GPUSCOUT", env!("CARGO_BIN_EXE_gpuscout"))
        .env(
            "HW_CHECK_ROOT",
            repo.join("tests/fixtures/hosts/rtx4090-proprietary"),
        )
        .env("NVIDIA_SMI", repo.join("tests/support/fake-nvidia-smi.sh"))
        .env("FAKE_SMI_CONF", d.dir.path().join("nvml_double.conf"))
        .env("GPUSCOUT_NVML_LIB", &d.lib)
        .env("HW_CHECK_SERVE_SECONDS", "2")
        .env("HW_CHECK_INTERVAL", "1")
        .env("HW_CHECK_SCRAPE_TIMEOUT", "30s")
        .env("OUT", out.path())
        .env_remove("GPUSCOUT_ROOT")
        .env_remove("FAKE_SMI_SKEW");
    if let Some(s) = skew {
        cmd.env("FAKE_SMI_SKEW", s);
    }
    let o = cmd.output().unwrap();
    let summary = std::fs::read_to_string(out.path().join("summary.txt")).unwrap_or_else(|e| {
        panic!(
            "no summary.txt ({e}); stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), summary, out)
}

/// The result column of the per-GPU row of `field`.
fn result<'a>(summary: &'a str, field: &str) -> &'a str {
    let line = summary
        .lines()
        .find(|l| l.starts_with("0000:01:00.0") && l.split_whitespace().nth(1) == Some(field))
        .unwrap_or_else(|| panic!("no row for {field} in\n{summary}"));
    if line.ends_with("PASS") {
        "PASS"
    } else {
        "FAIL"
    }
}

#[test]
fn hw_check_passes_against_the_double_and_a_fixture_root() {
    let (code, summary, out) = run(None);
    assert_eq!(code, 0, "{summary}");
    for f in FIELDS {
        assert_eq!(result(&summary, f), "PASS", "{f}\n{summary}");
    }
    for row in [
        "nvml source success [scrapes]",
        "nvml stuck threads max",
        "NVML hang warnings in the serve log",
        "capture exit status",
        "discover on the unpacked capture",
    ] {
        let line = summary
            .lines()
            .find(|l| l.contains(row))
            .unwrap_or_else(|| panic!("{row}"));
        assert!(line.ends_with("PASS"), "{line}");
    }
    assert!(summary.contains(" 0 FAIL, 0 SKIP"), "{summary}");
    // The capture (ids sanitised) and the raw scrapes are in $OUT.
    let cap = std::fs::read(out.path().join("capture.tar.zst")).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut zstd::Decoder::new(&cap[..]).unwrap(), &mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("gpuscout-capture/nvml.json"));
    assert!(
        !raw.contains("5b2c7e0a-3f41-9d86-1c2e-7a4f0b9d3e61"),
        "ids sanitised"
    );
    assert!(out.path().join("raw/metrics-1.txt").is_file());
}

#[test]
fn hw_check_fails_when_nvidia_smi_disagrees() {
    let (code, summary, _out) = run(Some("temperature.gpu=+10"));
    assert_eq!(code, 1, "{summary}");
    assert_eq!(result(&summary, "temperature.gpu"), "FAIL", "{summary}");
    let line = summary
        .lines()
        .find(|l| l.contains(" temperature.gpu "))
        .unwrap();
    assert!(line.contains(" 54.0 ") && line.contains(" 64 "), "{line}");
    for f in FIELDS.iter().filter(|f| **f != "temperature.gpu") {
        assert_eq!(result(&summary, f), "PASS", "{f}\n{summary}");
    }
    let (code, summary, _out) = run(Some("pcie.link.width.current=-8"));
    assert_eq!(code, 1);
    assert_eq!(
        result(&summary, "pcie.link.width.current"),
        "FAIL",
        "{summary}"
    );
}
