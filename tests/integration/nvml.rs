//! NVML through the real `nvml-wrapper`, loaded from a C test double built by the test suite
//! (tests/nvml-double), joined to fixture host roots.

#![allow(clippy::disallowed_methods)]

#[path = "../support/nvml_double.rs"]
pub(crate) mod nvml_double;

use gpuscout::discover::{self, Options};
use gpuscout::hostroot::HostRoot;
use gpuscout::model::Status;
use gpuscout::nvml::{Error, Nvml, NvmlConfig, NvmlFacts, NvmlHandle, NvmlState};
use gpuscout::pci::PciAddress;
use gpuscout::verdict::Evidence;
use nvml_double::{Double, full_gpu};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> HostRoot {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hosts")
        .join(name);
    HostRoot::new(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

fn config(root: HostRoot, d: &Double) -> NvmlConfig {
    let mut c = NvmlConfig::new(root);
    c.lib_path = Some(d.lib.clone());
    c.call_timeout = Duration::from_millis(250);
    c.init_timeout = Duration::from_millis(500);
    c.backoff_initial = Duration::from_millis(1);
    c.backoff_max = Duration::from_millis(4);
    c
}

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

const RTX4090_UUID: &str = "GPU-5b2c7e0a-3f41-9d86-1c2e-7a4f0b9d3e61";

fn rtx4090_double(extra: &str) -> Double {
    Double::new(&format!(
        "driver_version=570.172.08\ncuda_version=12080\n{}{extra}",
        full_gpu(
            0,
            "00000000:01:00.0",
            "NVIDIA GeForce RTX 4090",
            RTX4090_UUID
        )
    ))
}

#[tokio::test]
async fn enriches_the_rtx4090_fixture_joined_by_bus_id() {
    let root = fixture("rtx4090-proprietary");
    let d = rtx4090_double("");
    let h = Nvml::start(config(root.clone(), &d));
    let snap = h.snapshot().await.expect("snapshot");
    assert_eq!(h.state(), NvmlState::Ready);
    // NVML's `00000000:01:00.0` is sysfs' `0000:01:00.0`.
    let r = &snap.gpus[&addr("0000:01:00.0")];
    assert_eq!(r.nvml_bus_id.as_deref(), Some("00000000:01:00.0"));
    assert_eq!(r.pci_device_id, Some(0x2684));
    assert_eq!(r.pci_vendor_id, Some(0x10de));
    assert_eq!(r.name.as_deref(), Some("NVIDIA GeForce RTX 4090"));
    assert_eq!(r.memory_total_bytes, Some(25_757_220_864));
    assert_eq!(r.memory_used_bytes, Some(1_073_741_824));
    assert_eq!(r.utilization_gpu_ratio, Some(0.37));
    assert_eq!(r.temperature_celsius, Some(54));
    assert_eq!(r.power_watts, Some(123.456));
    assert_eq!(r.power_limit_watts, Some(450.0));
    assert_eq!(r.energy_joules, Some(987_654.321));
    assert_eq!(r.clocks_hz.get("graphics"), Some(&2_520_000_000));
    assert_eq!(r.clocks_hz.get("memory"), Some(&10_501_000_000));
    assert_eq!(r.max_clocks_hz.get("sm"), Some(&3_120_000_000));
    assert_eq!(r.compute_capability.as_deref(), Some("8.9"));
    assert_eq!(r.family, Some("ada"));
    assert_eq!(r.mig_enabled, Some(false));
    assert_eq!(r.mig_devices, Some(0));
    assert_eq!(r.ecc_uncorrected_total, Some(0));
    assert_eq!((r.pcie_current_gen, r.pcie_max_gen), (Some(1), Some(4)));
    assert!(!r.lost && r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(snap.cuda_driver_version.as_deref(), Some("12.8"));
    // Same version as /proc/driver/nvidia/version in the fixture.
    assert_eq!(
        h.facts(),
        Some(NvmlFacts {
            driver_version: Some("570.172.08".into()),
            cuda_driver_version: Some("12.8".into()),
            version_mismatch: false,
        })
    );

    let opts = Options {
        evidence: Evidence {
            nvml: h.facts(),
            ..Default::default()
        },
        nvml: Some(snap),
        ..Default::default()
    };
    let report = discover::discover(&root, &opts);
    let g = report
        .gpus
        .iter()
        .find(|g| g.pci_address == "0000:01:00.0")
        .expect("the 4090");
    assert_eq!(g.memory_bytes, Some(25_757_220_864));
    let n = g.nvidia.as_ref().unwrap();
    assert_eq!(n.uuid.as_deref(), Some(RTX4090_UUID));
    assert_eq!(n.compute_capability.as_deref(), Some("8.9"));
    assert_eq!(n.cuda_driver_version.as_deref(), Some("12.8"));
    assert_eq!(n.family.as_deref(), Some("ada"));
    assert_eq!(n.mig_enabled, Some(false));
    assert_eq!(n.nvml_error, None);
    // NVML agrees with the module and the Talos extensions.
    assert_eq!(g.status, Status::Ok, "{:?}", g.problems);
    // The audio function is not a GPU, so NVML enriches exactly one.
    assert_eq!(report.gpus.len(), 1);
}

/// Merge policy: PCI/procfs identity wins, and where NVML disagrees the report says so.
#[tokio::test]
async fn disagreements_are_reported_and_the_kernel_value_kept() {
    let root = fixture("rtx4090-proprietary");
    let d = Double::new(&format!(
        "driver_version=570.172.08\ncuda_version=12080\n{}{}",
        full_gpu(
            0,
            "00000000:01:00.0",
            "NVIDIA GeForce RTX 4090",
            "GPU-00000000-0000-0000-0000-000000000000"
        ),
        full_gpu(
            1,
            "00000000:81:00.0",
            "NVIDIA L40",
            "GPU-11111111-1111-1111-1111-111111111111"
        )
    ));
    let h = Nvml::start(config(root.clone(), &d));
    let snap = h.snapshot().await.expect("snapshot");
    let opts = Options {
        nvml: Some(snap),
        ..Default::default()
    };
    let report = discover::discover(&root, &opts);
    let g = &report.gpus[0];
    assert_eq!(
        g.nvidia.as_ref().unwrap().uuid.as_deref(),
        Some(RTX4090_UUID),
        "the procfs UUID is kept"
    );
    let uuid = g
        .disagreements
        .iter()
        .find(|x| x.field == "uuid")
        .unwrap_or_else(|| panic!("uuid disagreement reported: {:?}", g.disagreements));
    assert_eq!(uuid.source, "nvml");
    assert_eq!(uuid.kernel.as_deref(), Some(RTX4090_UUID));
    assert_eq!(uuid.library, "GPU-00000000-0000-0000-0000-000000000000");
    assert_eq!(
        report.gpus.len(),
        1,
        "NVML cannot add a GPU PCI does not show"
    );
    assert!(
        report
            .host
            .disagreements
            .iter()
            .any(|x| x.gpu == "0000:81:00.0" && x.kernel.is_none()),
        "{:?}",
        report.host.disagreements
    );
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["gpus"][0]["disagreements"].is_array());
}

#[tokio::test]
async fn h100_mig_devices_ecc_and_xid_counts() {
    let root = fixture("nvidia-h100-mig");
    let d = Double::new(
        "driver_version=550.127.05\ncuda_version=12040\n\
         gpu.0.bus_id=00000000:1B:00.0\ngpu.0.name=NVIDIA H100 80GB HBM3\n\
         gpu.0.pci_device_id=0x233010de\ngpu.0.mem_total=85520809984\ngpu.0.mem_used=0\n\
         gpu.0.cc=9.0\ngpu.0.arch=9\ngpu.0.mig_current=1\ngpu.0.mig_pending=1\n\
         gpu.0.mig_max=7\ngpu.0.mig_devices=2\ngpu.0.ecc_corrected=3\ngpu.0.ecc_uncorrected=1\n\
         gpu.0.xid=79,13,79\n",
    );
    let h = Nvml::start(config(root.clone(), &d));
    let snap = h.snapshot().await.expect("snapshot");
    let r = &snap.gpus[&addr("0000:1b:00.0")];
    assert_eq!(r.family, Some("hopper"));
    assert_eq!(r.compute_capability.as_deref(), Some("9.0"));
    assert_eq!(r.mig_enabled, Some(true));
    assert_eq!(r.mig_devices, Some(2));
    assert_eq!(r.ecc_corrected_total, Some(3));
    assert_eq!(r.ecc_uncorrected_total, Some(1));
    let xids: Vec<(u64, u64)> = r.xid_errors.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(xids, vec![(13, 1), (79, 2)]);
    assert!(!h.facts().unwrap().version_mismatch);

    // Counts persist across snapshots; events are not counted twice.
    let again = h.snapshot().await.expect("second snapshot");
    assert_eq!(again.gpus[&addr("0000:1b:00.0")].xid_errors, r.xid_errors);
    assert!(d.calls().iter().any(|c| c == "nvmlDeviceRegisterEvents"));

    let report = discover::discover(
        &root,
        &Options {
            nvml: Some(again),
            ..Default::default()
        },
    );
    let g = report
        .gpus
        .iter()
        .find(|g| g.pci_address == "0000:1b:00.0")
        .unwrap();
    let n = g.nvidia.as_ref().unwrap();
    assert_eq!(n.mig_enabled, Some(true));
    assert_eq!(n.mig_devices, Some(2));
    assert_eq!(n.family.as_deref(), Some("hopper"));
    // procfs MIG instances (from the fixture) are kept alongside.
    assert!(n.mig_instances.is_some());
}

#[tokio::test]
async fn not_supported_readings_are_absent_not_zero() {
    let root = fixture("rtx4090-proprietary");
    // Only identity: every other call answers NOT_SUPPORTED.
    let d = Double::new(
        "driver_version=570.172.08\ncuda_version=0\n\
         gpu.0.bus_id=00000000:01:00.0\ngpu.0.name=NVIDIA GeForce RTX 4090\n",
    );
    let h = Nvml::start(config(root.clone(), &d));
    let snap = h.snapshot().await.expect("snapshot");
    let r = &snap.gpus[&addr("0000:01:00.0")];
    assert_eq!(r.memory_total_bytes, None);
    assert_eq!(r.temperature_celsius, None);
    assert_eq!(r.power_watts, None);
    assert_eq!(r.energy_joules, None);
    assert_eq!(r.utilization_gpu_ratio, None);
    assert!(r.clocks_hz.is_empty());
    assert_eq!(r.compute_capability, None);
    assert_eq!(r.family, None);
    assert_eq!(r.mig_enabled, None);
    assert_eq!(r.mig_devices, None);
    assert_eq!(r.ecc_corrected_total, None);
    assert_eq!(r.pcie_current_width, None);
    assert!(r.xid_errors.is_empty());
    // NotSupported is not an error.
    assert!(!r.lost && r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(snap.cuda_driver_version, None);

    let report = discover::discover(
        &root,
        &Options {
            nvml: Some(snap),
            ..Default::default()
        },
    );
    let json = serde_json::to_value(&report.gpus[0]).unwrap();
    assert_eq!(json["memory_bytes"], serde_json::Value::Null);
    assert_eq!(
        json["nvidia"]["compute_capability"],
        serde_json::Value::Null
    );
    assert!(json["nvidia"].get("nvml_error").is_none());
}

#[tokio::test]
async fn gpu_lost_is_an_error_of_that_gpu_only() {
    let root = fixture("rtx4090-proprietary");
    let d = Double::new(&format!(
        "driver_version=570.172.08\n{}gpu.0.lost=1\n{}",
        full_gpu(
            0,
            "00000000:01:00.0",
            "NVIDIA GeForce RTX 4090",
            RTX4090_UUID
        ),
        full_gpu(
            1,
            "00000000:02:00.0",
            "NVIDIA GeForce RTX 4090",
            "GPU-other"
        ),
    ));
    let h = Nvml::start(config(root.clone(), &d));
    let snap = h
        .snapshot()
        .await
        .expect("one lost GPU does not fail the source");
    assert_eq!(h.state(), NvmlState::Ready);
    let lost = &snap.gpus[&addr("0000:01:00.0")];
    assert!(lost.lost);
    assert_eq!(lost.temperature_celsius, None);
    assert_eq!(lost.memory_total_bytes, None);
    assert_eq!(lost.errors, vec!["nvmlDeviceGetName: gpu-lost".to_owned()]);
    // After the first gpu-lost answer that GPU is not asked again in this pass.
    let lost_calls = d
        .calls()
        .iter()
        .filter(|c| c.as_str() == "nvmlDeviceGetTemperature")
        .count();
    assert_eq!(lost_calls, 1, "only the healthy GPU's temperature is read");
    let ok = &snap.gpus[&addr("0000:02:00.0")];
    assert!(!ok.lost);
    assert_eq!(ok.temperature_celsius, Some(54));

    let opts = Options {
        nvml: Some(snap),
        ..Default::default()
    };
    let report = discover::discover(&root, &opts);
    let g = &report.gpus[0];
    assert_eq!(
        g.nvidia.as_ref().unwrap().nvml_error.as_deref(),
        Some("gpu-lost")
    );
    // Identity from the kernel's files is untouched.
    assert_eq!(g.model, "NVIDIA GeForce RTX 4090");
    assert_eq!(
        g.nvidia.as_ref().unwrap().uuid.as_deref(),
        Some(RTX4090_UUID)
    );
}

#[tokio::test]
async fn version_mismatch_facts() {
    let root = fixture("rtx4090-proprietary");

    // NVML itself refuses: NVML_ERROR_LIB_RM_VERSION_MISMATCH.
    let d = rtx4090_double("init=rm_mismatch\n");
    let h = Nvml::start(config(root.clone(), &d));
    assert_eq!(h.snapshot().await.unwrap_err(), Error::VersionMismatch);
    assert_eq!(
        h.facts(),
        Some(NvmlFacts {
            driver_version: None,
            cuda_driver_version: None,
            version_mismatch: true,
        })
    );
    let report = discover::discover(
        &root,
        &Options {
            evidence: Evidence {
                nvml: h.facts(),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    assert_eq!(report.gpus[0].status, Status::DriverVersionMismatch);

    // NVML works but reports another driver than the kernel module (570.172.08): not NVML's
    // own mismatch error, but the verdict compares the versions and says so.
    let d = Double::new(&format!(
        "driver_version=550.135\ncuda_version=12040\n{}",
        full_gpu(
            0,
            "00000000:01:00.0",
            "NVIDIA GeForce RTX 4090",
            RTX4090_UUID
        )
    ));
    let h = Nvml::start(config(root.clone(), &d));
    let snap = h.snapshot().await.expect("snapshot");
    let f = h.facts().unwrap();
    assert_eq!(f.driver_version.as_deref(), Some("550.135"));
    assert_eq!(f.cuda_driver_version.as_deref(), Some("12.4"));
    assert!(!f.version_mismatch);
    let report = discover::discover(
        &root,
        &Options {
            evidence: Evidence {
                nvml: Some(f),
                ..Default::default()
            },
            nvml: Some(snap),
            ..Default::default()
        },
    );
    let g = &report.gpus[0];
    assert_eq!(g.status, Status::DriverVersionMismatch, "{:?}", g.problems);
    assert!(
        g.problems.iter().any(|p| p.detail.contains("NVML 550.135")),
        "{:?}",
        g.problems
    );
}

#[tokio::test]
async fn missing_library_is_absent_not_an_error() {
    // An empty host root: no Talos library, so the loader's `libnvidia-ml.so.1` is tried.
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let h = Nvml::start(NvmlConfig::new(root));
    let e = h.snapshot().await.unwrap_err();
    assert!(
        e.is_absent(),
        "expected NVML to be absent on this machine (is a real libnvidia-ml.so.1 installed?): {e}"
    );
    assert_eq!(h.state(), NvmlState::Absent);
    assert_eq!(h.facts(), None);
    assert_eq!(h.health().stuck_threads, 0);
}

#[tokio::test]
async fn talos_library_under_the_host_root_is_found() {
    // Talos 1.8-1.12 layout with an absolute link, which must resolve inside the root.
    let dir = tempfile::tempdir().unwrap();
    let libdir = dir.path().join("usr/local/glibc/usr/lib");
    nvml_double::Double::install_at(
        &libdir.join("libnvidia-ml.so.570.172.08"),
        &format!(
            "driver_version=570.172.08\n{}",
            full_gpu(
                0,
                "00000000:01:00.0",
                "NVIDIA GeForce RTX 4090",
                RTX4090_UUID
            )
        ),
    );
    std::os::unix::fs::symlink(
        "/usr/local/glibc/usr/lib/libnvidia-ml.so.570.172.08",
        libdir.join("libnvidia-ml.so.1"),
    )
    .unwrap();
    let h = Nvml::start(NvmlConfig::new(HostRoot::new(dir.path()).unwrap()));
    let snap = h.snapshot().await.expect("loaded from the host root");
    assert!(snap.gpus.contains_key(&addr("0000:01:00.0")));
}

#[tokio::test]
async fn init_failure_is_retried_with_backoff_not_in_a_loop() {
    let root = fixture("rtx4090-proprietary");
    let d = rtx4090_double("init=driver_not_loaded\ninit_fail_count=2\n");

    // Long backoff: repeated requests inside it do not touch the library again.
    let mut slow = config(root.clone(), &d);
    slow.backoff_initial = Duration::from_secs(3600);
    let h = Nvml::start(slow);
    for _ in 0..20 {
        match h.snapshot().await {
            Err(Error::Init(m)) => assert!(m.contains("driver not loaded"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(d.init_attempts(), 1);
    assert!(matches!(h.state(), NvmlState::Failed(Error::Init(_))));
    assert_eq!(h.facts(), None);

    // Short backoff: it retries and recovers once the driver answers (third attempt).
    let h = Nvml::start(config(root, &d));
    let mut result = h.snapshot().await;
    for _ in 0..400 {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        result = h.snapshot().await;
    }
    result.expect("NVML recovers after the driver comes up");
    assert_eq!(d.init_attempts(), 3);
    assert_eq!(h.state(), NvmlState::Ready);
}

/// Time a future; the bound is a correctness bound for the deadline, not a benchmark.
async fn within_one_second<T>(f: impl std::future::Future<Output = T>) -> T {
    let t = Instant::now();
    let out = f.await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    out
}

#[tokio::test]
async fn a_hung_call_fails_the_source_within_the_deadline_and_recovers() {
    let root = fixture("rtx4090-proprietary");
    // The first temperature read blocks until released; later ones answer.
    let d = rtx4090_double("hang=nvmlDeviceGetTemperature\nhang_count=1\n");
    let mut cfg = config(root, &d);
    cfg.backoff_initial = Duration::from_millis(20);
    let h = Nvml::start(cfg);
    let e = within_one_second(h.snapshot()).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Hung {
                call: "nvmlDeviceGetTemperature",
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(h.state(), NvmlState::Failed(Error::Hung { .. })));
    let health = h.health();
    assert_eq!(health.stuck_threads, 1);
    assert_eq!(health.hangs_total, 1);

    // A fresh worker is started after the backoff and works (the double hangs only once).
    let mut ok = None;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Ok(s) = h.snapshot().await {
            ok = Some(s);
            break;
        }
    }
    let s = ok.expect("a new worker answers after the backoff");
    assert_eq!(s.gpus[&addr("0000:01:00.0")].temperature_celsius, Some(54));
    assert_eq!(h.health().workers_started, 2);
    assert_eq!(
        h.health().stuck_threads,
        1,
        "the first thread is still stuck"
    );

    // When the driver lets go, the abandoned thread ends by itself.
    d.release();
    let mut stuck = 1;
    for _ in 0..500 {
        stuck = h.health().stuck_threads;
        if stuck == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stuck, 0);
}

#[tokio::test]
async fn stuck_threads_are_capped() {
    let root = fixture("rtx4090-proprietary");
    let d = rtx4090_double("hang=nvmlInit_v2\n");
    let mut cfg = config(root, &d);
    cfg.max_threads = 2;
    cfg.init_timeout = Duration::from_millis(100);
    let h: NvmlHandle = Nvml::start(cfg);
    let mut errors = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        errors.push(within_one_second(h.snapshot()).await.unwrap_err());
    }
    let hung = errors
        .iter()
        .filter(|e| {
            matches!(
                e,
                Error::Hung {
                    call: "nvmlInit_v2",
                    ..
                }
            )
        })
        .count();
    assert_eq!(hung, 2, "{errors:?}");
    assert!(
        errors.iter().any(|e| matches!(e, Error::Wedged(2))),
        "{errors:?}"
    );
    assert_eq!(h.health().stuck_threads, 2);
    assert_eq!(h.health().workers_started, 2);
    d.release();
}

#[test]
fn discover_command_answers_within_one_second_with_a_hung_nvml() {
    let d = rtx4090_double("hang=nvmlDeviceGetTemperature\n");
    let fixture_dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/rtx4090-proprietary");
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args([
            "discover",
            "--format",
            "json",
            "--nvml-call-timeout-ms",
            "200",
        ])
        .arg("--root")
        .arg(&fixture_dir)
        .arg("--nvml-lib")
        .arg(&d.lib)
        .env("RUST_LOG", "gpuscout::nvml=debug")
        .output()
        .expect("run gpuscout");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nvmlDeviceGetTemperature") && stderr.contains("NVML source failed"),
        "a log line naming the hung call: {stderr}"
    );
    // One-shot commands log NVML failures at debug level: stderr carries the verdicts.
    assert!(!stderr.contains("WARN"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["gpus"][0]["pci_address"], "0000:01:00.0");
    // Sysfs-only report: nothing from NVML.
    assert_eq!(json["gpus"][0]["memory_bytes"], serde_json::Value::Null);
}

#[test]
fn discover_command_merges_nvml() {
    let d = rtx4090_double("");
    let fixture_dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/rtx4090-proprietary");
    let out = Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .args(["discover", "--format", "json"])
        .arg("--root")
        .arg(&fixture_dir)
        .env("GPUSCOUT_NVML_LIB", &d.lib)
        .output()
        .expect("run gpuscout");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = &json["gpus"][0];
    assert_eq!(g["memory_bytes"], 25_757_220_864u64);
    assert_eq!(g["nvidia"]["compute_capability"], "8.9");
    assert_eq!(g["nvidia"]["family"], "ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_snapshot_from_a_blocking_thread_of_a_runtime() {
    // How a metrics source calls it: on spawn_blocking, inside the server's runtime.
    let d = rtx4090_double("");
    let h = Nvml::start(config(fixture("rtx4090-proprietary"), &d));
    let h2 = h.clone();
    let snap = tokio::task::spawn_blocking(move || h2.snapshot_blocking())
        .await
        .expect("join")
        .expect("snapshot");
    assert_eq!(snap.gpus.len(), 1);
    assert!(h.last_snapshot().is_some());
}

/// A daemon on the fixture with NVML wired as `serve` wires it; returns its address and stopper.
async fn serve_nvml(
    cfg: NvmlConfig,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    use gpuscout::metrics::ExporterConfig;
    use gpuscout::serve::{Daemon, ServeConfig};
    use std::sync::Arc;
    let root = cfg.root.clone();
    let config = ServeConfig {
        discovery_interval: Duration::from_secs(3600),
        exporter: ExporterConfig {
            deadline: Duration::from_secs(60),
            cache: Duration::ZERO,
        },
        grace: Duration::from_secs(5),
    };
    let mut d = Daemon::new(root, Options::default(), config);
    let nvml = Nvml::start(cfg);
    d.add_source(Arc::new(gpuscout::nvml::source::NvmlSource::new(
        nvml.clone(),
    )));
    d.set_discovery(move |r, o| gpuscout::nvml::discover_with(&nvml, r, o));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(d.serve(listener, async {
        let _ = stop_rx.await;
    }));
    let ready = tokio::task::spawn_blocking(move || {
        for _ in 0..500 {
            if matches!(
                crate::serve::http_get(addr, "/readyz", None),
                Ok((200, _, _))
            ) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    })
    .await
    .unwrap();
    assert!(ready, "/readyz never became 200");
    (addr, stop_tx, server)
}

async fn scrape(addr: std::net::SocketAddr) -> (String, Duration) {
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let (status, _, body) = crate::serve::http_get(addr, "/metrics", None).unwrap();
        assert_eq!(status, 200);
        (body, t.elapsed())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_export_nvml_readings() {
    let d = rtx4090_double("gpu.0.xid=79,79\n");
    let (addr, stop, server) = serve_nvml(config(fixture("rtx4090-proprietary"), &d)).await;
    let (body, _) = scrape(addr).await;
    let g = r#"gpu="0000:01:00.0""#;
    for want in [
        format!(r#"gpuscout_gpu_temperature_celsius{{{g},sensor="gpu"}} 54"#),
        format!(r#"gpuscout_gpu_memory_total_bytes{{{g},pool="vram"}} 25757220864"#),
        format!(r#"gpuscout_gpu_utilization_ratio{{{g}}} 0.37"#),
        format!(r#"gpuscout_gpu_power_watts{{{g}}} 123.456"#),
        format!(r#"gpuscout_gpu_power_limit_watts{{{g}}} 450"#),
        format!(r#"gpuscout_gpu_energy_joules_total{{{g}}} 987654.321"#),
        format!(r#"gpuscout_gpu_clock_hertz{{{g},domain="graphics"}} 2520000000"#),
        format!(r#"gpuscout_gpu_ecc_errors_total{{{g},type="uncorrected"}} 0"#),
        format!(r#"gpuscout_gpu_xid_errors_total{{{g},xid="79"}} 2"#),
        r#"gpuscout_scrape_source_success{source="nvml"} 1"#.to_owned(),
        "gpuscout_nvml_stuck_threads 0".to_owned(),
    ] {
        assert!(body.contains(&want), "missing {want}\n{body}");
    }
    // The whole exposition, NVML series included, passes the real promtool.
    crate::metrics::promtool_check(&body, "NVML /metrics");
    // PCIe link series come from sysfs only: no duplicate series from NVML.
    let width = format!(r#"gpuscout_gpu_pcie_link_width{{{g},state="current"}}"#);
    assert_eq!(body.matches(&width).count(), 1, "{body}");
    stop.send(()).unwrap();
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_within_one_second_with_a_hung_nvml() {
    let d = rtx4090_double("hang=nvmlDeviceGetTemperature\n");
    let (addr, stop, server) = serve_nvml(config(fixture("rtx4090-proprietary"), &d)).await;
    for _ in 0..3 {
        let (body, took) = scrape(addr).await;
        // A correctness bound for the deadline, not a benchmark.
        assert!(took < Duration::from_secs(1), "/metrics took {took:?}");
        assert!(
            body.contains(r#"gpuscout_scrape_source_success{source="nvml"} 0"#),
            "{body}"
        );
        // Everything else is still served.
        assert!(
            body.contains(r#"gpuscout_scrape_source_success{source="pci"} 1"#),
            "{body}"
        );
        assert!(body.contains(r#"gpu="0000:01:00.0""#), "{body}");
        assert!(
            !body.contains("gpuscout_gpu_temperature_celsius{"),
            "{body}"
        );
    }
    d.release();
    stop.send(()).unwrap();
    server.await.unwrap();
}
