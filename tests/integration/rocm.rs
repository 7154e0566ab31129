//! ROCm SMI (feature `rocm-smi`): the real `librocm_smi64` reads a fixture tree mounted over
//! `/sys` inside a private mount namespace, and must agree with our sysfs reader on the same
//! tree. ROCm SMI always reads the real `/sys` (release builds ignore its root-override
//! variables), and a process cannot re-root a library it has loaded, so the outer test
//! re-executes this test binary inside `unshare -m --propagation private` after a bind mount.
//! Where mount namespaces are forbidden the outer test fails and says why.
//!
//! Three kinds of check run that way: the library agrees with the sysfs reader
//! (`rocm_smi_agrees_*`), the `rocm_smi` metrics source's golden `/metrics`
//! (`rocm_smi_source_golden_metrics_*`), and `gpuscout serve` with the source
//! (`rocm_smi_serve_*`).

#![allow(clippy::disallowed_methods)]

use gpuscout::discover::{self, Options};
use gpuscout::hostroot::HostRoot;
use gpuscout::model::Vendor;
use std::path::{Path, PathBuf};
use std::process::Command;

const INNER: &str = "rocm::inner_rocm_smi_reads_the_mounted_fixture";
const ENV_FIXTURE: &str = "GPUSCOUT_ROCM_FIXTURE";

/// Copy a fixture host root to a temporary directory and add the empty directories ROCm SMI
/// needs but git cannot store (`io_links/`, `p2p_links/`, `mem_banks/`, `caches/` of every KFD
/// node; test-infrastructure.md §8).
fn prepared(name: &str) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hosts")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(st.success(), "copying {}", src.display());
    let nodes = dir
        .path()
        .join("sys/devices/virtual/kfd/kfd/topology/nodes");
    let nodes = if nodes.is_dir() {
        nodes
    } else {
        dir.path().join("sys/class/kfd/kfd/topology/nodes")
    };
    if let Ok(rd) = std::fs::read_dir(&nodes) {
        for e in rd.flatten() {
            for sub in ["io_links", "p2p_links", "mem_banks", "caches"] {
                std::fs::create_dir_all(e.path().join(sub)).unwrap();
            }
        }
    }
    dir
}

fn run_in_namespace(fixture: &Path, inner: &str, env: &[(&str, &str)]) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    let script = r#"set -e
mount --bind "$1/sys" /sys
exec "$2" --exact "$3" --ignored --nocapture --test-threads 1"#;
    // As root a mount namespace is enough; otherwise map ourselves to root in a user namespace.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let ns: &[&str] = if root { &["-m"] } else { &["-U", "-r", "-m"] };
    match Command::new("unshare")
        .args(ns)
        .args(["--propagation", "private", "sh", "-c", script, "sh"])
        .arg(fixture)
        .arg(&exe)
        .arg(inner)
        .env(ENV_FIXTURE, fixture)
        .envs(env.iter().copied())
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "the ROCm SMI test needs `unshare` (util-linux) to create a private mount namespace: {e}"
        ),
    }
}

/// Run `inner` in a namespace over `fix`; its stdout, after checking the namespace worked.
fn namespace_stdout(
    fix: &Path,
    inner: &str,
    env: &[(&str, &str)],
) -> (std::process::Output, String, String) {
    let out = run_in_namespace(fix, inner, env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.contains("unshare failed") || stderr.contains("mount:") {
        panic!(
            "cannot run ROCm SMI against the fixture: this machine forbids a private mount namespace or the bind mount over /sys (run as root, or allow unprivileged user namespaces).\n{stderr}"
        );
    }
    (out, stdout, stderr)
}

fn check_fixture(name: &str) {
    let fix = prepared(name);
    let (out, stdout, stderr) = namespace_stdout(fix.path(), INNER, &[]);
    assert!(
        out.status.success(),
        "ROCm SMI disagreed with the sysfs reader on {name} (or failed):\n{stdout}\n{stderr}"
    );
    // The inner test really ran (and was not filtered away).
    assert!(
        stdout.contains("1 passed") && stdout.contains("rocm-smi agrees"),
        "inner test did not run:\n{stdout}\n{stderr}"
    );
}

#[test]
fn rocm_smi_agrees_with_sysfs_on_rembrandt() {
    check_fixture("rembrandt-680m-laptop");
}

#[test]
fn rocm_smi_agrees_with_sysfs_on_dual_vendor() {
    check_fixture("dual-vendor");
}

#[test]
fn rocm_smi_agrees_with_sysfs_on_rx9070xt() {
    check_fixture("rx9070xt-talos");
}

const INNER_SOURCE: &str = "rocm::inner_rocm_smi_source_scrapes_the_mounted_fixture";
const BEGIN: &str = "----- BEGIN rocm_smi /metrics -----\n";
const END: &str = "----- END rocm_smi /metrics -----\n";

/// RAS count files for the source test, in the kernel's formats (`amdgpu_ras.c`
/// `amdgpu_ras_sysfs_read`): `ue: N\nce: N\n` up to 6.8, plus a `de: N` line for UMC and ACA
/// blocks later. The RX 9070 XT itself has no RAS; these are test inputs on its device directory,
/// not a claim about the card. `sdma` has the three-line format, on which ROCm SMI 5.2 aborts.
const RAS_FILES: [(&str, &str); 3] = [
    ("umc_err_count", "ue: 0\nce: 2\n"),
    ("gfx_err_count", "ue: 1\nce: 0\n"),
    ("sdma_err_count", "ue: 0\nce: 0\nde: 0\n"),
];

/// Golden `/metrics` of the `rocm_smi` source with the real library over `rx9070xt-talos`
/// (`gpu_metrics` v1.3, `mem_busy_percent`, `pcie_replay_count` from the fixture, RAS files
/// from [`RAS_FILES`]). Fails when the source exports none of its families.
#[test]
fn rocm_smi_source_golden_metrics_on_rx9070xt() {
    let fix = prepared("rx9070xt-talos");
    let ras = fix.path().join("sys/bus/pci/devices/0000:03:00.0/ras");
    std::fs::create_dir_all(&ras).unwrap();
    for (file, text) in RAS_FILES {
        std::fs::write(ras.join(file), text).unwrap();
    }
    let (out, stdout, stderr) = namespace_stdout(fix.path(), INNER_SOURCE, &[]);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the rocm_smi source failed inside the namespace (an abort in the library shows here as signal 6):\n{stdout}\n{stderr}"
    );
    let text = stdout
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(body, _)| body)
        .unwrap_or_else(|| panic!("no /metrics text in the inner test's output:\n{stdout}"));
    for family in [
        "gpuscout_gpu_energy_joules_total{",
        "gpuscout_gpu_ras_errors_total{",
        "gpuscout_gpu_memory_busy_ratio{",
        "gpuscout_gpu_pcie_replays_total{",
    ] {
        assert!(text.contains(family), "no {family} sample in:\n{text}");
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!("rocm_smi_metrics@rx9070xt-talos", text));
}

/// Runs only inside the namespace that [`rocm_smi_source_golden_metrics_on_rx9070xt`] creates.
#[test]
#[ignore = "run by rocm_smi_source_golden_metrics_on_rx9070xt inside a private mount namespace"]
fn inner_rocm_smi_source_scrapes_the_mounted_fixture() {
    use gpuscout::metrics::{ScrapeContext, Sink, Snapshot, Source};
    let fixture = PathBuf::from(std::env::var(ENV_FIXTURE).unwrap_or_else(|_| {
        panic!("{ENV_FIXTURE} is not set: this test runs only inside the source test's namespace")
    }));
    let root = HostRoot::new(&fixture).unwrap();
    let report = discover::discover(&root, &Options::default(), &Default::default());
    let ctx = ScrapeContext {
        root,
        report: std::sync::Arc::new(report),
    };
    let source = gpuscout::rocm::source::RocmSmiSource::new();
    let mut sink = Sink::default();
    let result = source.collect(&ctx, &mut sink);
    // The three-line sdma file is refused (the library would abort), which fails the source;
    // everything it read is still exported.
    let err = result.expect_err("the refused sdma count must fail the source");
    assert!(
        err.to_string().contains("sdma_err_count"),
        "unexpected error: {err}"
    );
    let text = std::sync::Arc::new(Snapshot::new(sink)).text();
    print!("{BEGIN}{text}{END}");
}

/// Runs only inside the namespace that the tests above create (it fails elsewhere, on purpose:
/// outside the namespace ROCm SMI would read this machine's real `/sys`).
#[test]
#[ignore = "run by the rocm_smi_agrees_* tests inside a private mount namespace"]
fn inner_rocm_smi_reads_the_mounted_fixture() {
    let fixture = PathBuf::from(std::env::var(ENV_FIXTURE).unwrap_or_else(|_| {
        panic!(
            "{ENV_FIXTURE} is not set: this test runs only inside the rocm_smi_agrees_* namespace"
        )
    }));
    let root = HostRoot::new(&fixture).unwrap();
    let report = discover::discover(&root, &Options::default(), &Default::default());
    let ours: Vec<_> = report
        .gpus
        .iter()
        .filter(|g| g.vendor == Vendor::Amd)
        .collect();
    let rocm = gpuscout::rocm::read_all(&gpuscout::rocm::Preflight::new(root.clone()))
        .expect("rsmi_init on the fixture");
    println!("rocm-smi: {rocm:#?}");
    assert_eq!(
        rocm.len(),
        ours.len(),
        "ROCm SMI and the sysfs reader see different numbers of AMD GPUs"
    );
    for g in ours {
        let r = rocm
            .iter()
            .find(|r| r.address == Some(g.pci_address))
            .unwrap_or_else(|| panic!("ROCm SMI does not list {}", g.pci_address));
        let amd = g.amd.as_ref().unwrap();
        assert_eq!(r.vendor_id, Some(0x1002));
        assert_eq!(r.device_id, g.device_id, "device id of {}", g.pci_address);
        assert_eq!(
            r.vram_total_bytes, amd.vram_bytes,
            "VRAM of {}",
            g.pci_address
        );
        assert_eq!(
            r.visible_vram_total_bytes, amd.visible_vram_bytes,
            "visible VRAM of {}",
            g.pci_address
        );
        assert_eq!(r.gtt_total_bytes, amd.gtt_bytes, "GTT of {}", g.pci_address);

        // Busy and temperatures: the same files, read through the host root.
        let dev = format!("sys/bus/pci/devices/{}", g.pci_address);
        let busy = root
            .read_trimmed(format!("{dev}/gpu_busy_percent"))
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|p| p / 100.0);
        assert!(busy.is_some(), "fixture has gpu_busy_percent");
        assert_eq!(r.busy_ratio, busy, "busy of {}", g.pci_address);
        let hwmons = root.list_dir(format!("{dev}/hwmon")).unwrap();
        let hw = format!("{dev}/hwmon/{}", hwmons[0]);
        let edge = root
            .read_trimmed(format!("{hw}/temp1_input"))
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|m| m / 1000.0);
        assert!(edge.is_some(), "fixture has temp1_input");
        assert_eq!(
            r.temperatures_celsius.get("edge").copied(),
            edge,
            "edge temperature of {}",
            g.pci_address
        );
        // A sensor the fixture lacks is absent, not 0.
        if !root.exists(format!("{hw}/temp2_input")) {
            assert_eq!(r.temperatures_celsius.get("junction"), None);
        }
    }
    println!("rocm-smi agrees with the sysfs reader");
}

const INNER_SERVE: &str = "rocm::inner_serve_runs_the_rocm_smi_source";
const ENV_EXPECT: &str = "GPUSCOUT_ROCM_EXPECT";

/// Run [`inner_serve_runs_the_rocm_smi_source`] over `fix`, expecting the source to succeed
/// (`"1"`) or fail (`"0"`).
fn check_serve(fix: &Path, expect: &str) {
    let (out, stdout, stderr) = namespace_stdout(fix, INNER_SERVE, &[(ENV_EXPECT, expect)]);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "gpuscout serve with the rocm_smi source, inside the namespace:\n{stdout}\n{stderr}"
    );
}

/// `serve` built with the feature registers `rocm_smi`, and it succeeds on a fixture whose
/// files the library reads without trouble.
#[test]
fn rocm_smi_serve_registers_the_source_on_rx9070xt() {
    let fix = prepared("rx9070xt-talos");
    check_serve(fix.path(), "1");
}

/// On MI300X ROCm SMI 5.2.3 cannot initialise (its hwmon has no `in0_label`): the source reports
/// failure, logs it once over several scrapes, and the agent keeps serving everything else.
#[test]
fn rocm_smi_serve_reports_a_failed_init_once_and_keeps_serving_on_mi300x() {
    let fix = prepared("mi300x-cpx");
    check_serve(fix.path(), "0");
}

/// Runs only inside the namespace that the `rocm_smi_serve_*` tests create.
#[test]
#[ignore = "run by the rocm_smi_serve_* tests inside a private mount namespace"]
fn inner_serve_runs_the_rocm_smi_source() {
    let fixture = PathBuf::from(std::env::var(ENV_FIXTURE).unwrap_or_else(|_| {
        panic!("{ENV_FIXTURE} is not set: this test runs only inside the serve test's namespace")
    }));
    let expect = std::env::var(ENV_EXPECT).unwrap();
    // Debug for the exporter: its "still failing" line marks every failed pass after the first.
    let s = crate::serve::Served::start_with_env(
        &fixture,
        &["--scrape-cache", "0"],
        &[("RUST_LOG", "info,gpuscout::metrics=debug")],
    );
    s.wait_ready();
    let success = format!("gpuscout_scrape_source_success{{source=\"rocm_smi\"}} {expect}");
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let (st, _, body) = crate::serve::http_get(s.addr, "/metrics", None).unwrap();
        assert_eq!(st, 200, "{body}");
        assert!(body.contains(&success), "want {success} in:\n{body}");
        // Everything else is still served.
        assert!(
            body.contains("gpuscout_scrape_source_success{source=\"amdgpu\"} 1"),
            "{body}"
        );
        bodies.push(body);
    }
    let count = |needle: &str| {
        s.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle) && l.contains("rocm_smi"))
            .count()
    };
    if expect == "1" {
        assert!(bodies[0].contains("gpuscout_gpu_energy_joules_total{gpu=\"0000:03:00.0\"}"));
        assert_eq!(count("metrics source failed"), 0);
    } else {
        // Three failed passes: the first logs the failure at error, the next two at debug. Wait
        // for the second debug line (stderr is one ordered stream), then the error must have
        // come exactly once.
        let start = std::time::Instant::now();
        while count("metrics source still failing") < 2 {
            // hang guard: the log reader thread lags the HTTP answers by a little
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "exporter failure logs: {:?}",
                s.logs.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(
            count("metrics source failed"),
            1,
            "{:?}",
            s.logs.lock().unwrap()
        );
        assert!(!bodies[0].contains("gpuscout_gpu_energy_joules_total"));
    }
    println!("rocm_smi served as expected");
}
