//! NVML through the real `nvml-wrapper`, loaded from a C test double built by the test suite
//! (tests/nvml-double), joined to fixture host roots.

#![allow(clippy::disallowed_methods)]

use gpuscout::discover::{self, Options};
use gpuscout::discover::{Evidence, NvmlEvidence};
use gpuscout::hostroot::HostRoot;
use gpuscout::model::Status;
use gpuscout::nvml::{Error, Nvml, NvmlConfig, NvmlFacts, NvmlHandle, NvmlState};
use gpuscout::pci::PciAddress;
use gpuscout_test_support::nvml_double::{self, Double, full_gpu};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> HostRoot {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hosts")
        .join(name);
    HostRoot::new(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// Evidence with NVML readings and facts already taken.
fn taken(
    readings: Option<std::sync::Arc<gpuscout::nvml::NvmlSnapshot>>,
    facts: Option<NvmlFacts>,
) -> Evidence {
    Evidence {
        nvml: NvmlEvidence::Taken { readings, facts },
        ..Default::default()
    }
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
    // A GeForce has no ECC: NVML answers NOT_SUPPORTED, so there is no count at all (not 0).
    assert_eq!(r.ecc_corrected_total, None);
    assert_eq!(r.ecc_uncorrected_total, None);
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

    let ev = taken(Some(snap), h.facts());
    let report = discover::discover(&root, &Options::default(), &ev);
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
    let ev = taken(Some(snap), None);
    let report = discover::discover(&root, &Options::default(), &ev);
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
         gpu.0.mig_max=7\ngpu.0.mig_devices=2\ngpu.0.ecc_mode=1\n\
         gpu.0.ecc_corrected=3\ngpu.0.ecc_uncorrected=1\n\
         gpu.0.ecc_corrected_volatile=0\ngpu.0.ecc_uncorrected_volatile=0\n\
         gpu.0.util_gpu=50\ngpu.0.util_mem=10\ngpu.0.xid=79,13,79\n",
    );
    let h = Nvml::start(config(root.clone(), &d));
    let snap = h.snapshot().await.expect("snapshot");
    let r = &snap.gpus[&addr("0000:1b:00.0")];
    assert_eq!(r.family, Some("hopper"));
    assert_eq!(r.compute_capability.as_deref(), Some("9.0"));
    assert_eq!(r.mig_enabled, Some(true));
    assert_eq!(r.mig_devices, Some(2));
    // The lifetime (aggregate) counters, not the volatile ones that reset with the driver.
    assert_eq!(r.ecc_corrected_total, Some(3));
    assert_eq!(r.ecc_uncorrected_total, Some(1));
    // NVML does not support utilisation on a MIG-enabled GPU: absent, not an error.
    assert_eq!(r.utilization_gpu_ratio, None);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let xid = &snap.xid_errors[&addr("0000:1b:00.0")];
    let xids: Vec<(u64, u64)> = xid.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(xids, vec![(13, 1), (79, 2)]);
    assert!(!h.facts().unwrap().version_mismatch);

    // Counts persist across snapshots; events are not counted twice.
    let again = h.snapshot().await.expect("second snapshot");
    assert_eq!(&again.xid_errors[&addr("0000:1b:00.0")], xid);
    assert!(d.calls().iter().any(|c| c == "nvmlDeviceRegisterEvents"));

    let report = discover::discover(&root, &Options::default(), &taken(Some(again), None));
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
    assert!(snap.xid_errors.is_empty());
    // NotSupported is not an error.
    assert!(!r.lost && r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(snap.cuda_driver_version, None);

    let report = discover::discover(&root, &Options::default(), &taken(Some(snap), None));
    let json = serde_json::to_value(&report.gpus[0]).unwrap();
    assert_eq!(json["memory_bytes"], serde_json::Value::Null);
    assert_eq!(
        json["nvidia"]["compute_capability"],
        serde_json::Value::Null
    );
    assert!(json["nvidia"].get("nvml_error").is_none());
}

/// A GPU that falls off the bus while it is being read (handle and PCI info answered, then
/// GPU_IS_LOST): it is joined by its address and marked lost; the other GPU is read.
#[tokio::test]
async fn gpu_lost_is_an_error_of_that_gpu_only() {
    let root = fixture("rtx4090-proprietary");
    let d = two_rtx4090s("gpu.0.lost_at=nvmlDeviceGetName\n");
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

    let ev = taken(Some(snap), None);
    let report = discover::discover(&root, &Options::default(), &ev);
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

/// A GPU that fell off the bus before the pass: NVML answers GPU_IS_LOST to its handle (or, with
/// a handle, to its PCI info), so its address is unknown and nothing can be joined to it. The
/// other GPU is read and joined; the lost one is `unjoined` with the reason; the GPU PCI shows
/// keeps its kernel facts, gets no NVML reading and says why in `nvidia.nvml_error`.
#[tokio::test]
async fn a_gpu_lost_before_its_address_is_known_is_not_joined_and_says_why() {
    let root = fixture("rtx4090-proprietary");
    for (script, why) in [
        (
            "gpu.0.lost=1\n",
            "nvmlDeviceGetHandleByIndex_v2: gpu-lost (fell off the bus)",
        ),
        // Lost at the first PCI info call, which is the XID registration's at start: by the
        // time of the pass its handle answers GPU_IS_LOST too.
        (
            "gpu.0.lost_at=pci\n",
            "nvmlDeviceGetHandleByIndex_v2: gpu-lost (fell off the bus)",
        ),
        // A handle, but no PCI info: no address to join by.
        (
            "gpu.0.error.pci=unknown\n",
            "nvmlDeviceGetPciInfo_v3: an internal driver error occurred",
        ),
    ] {
        let d = two_rtx4090s(script);
        let h = Nvml::start(config(root.clone(), &d));
        let snap = h
            .snapshot()
            .await
            .expect("one lost GPU does not fail the snapshot");
        assert_eq!(
            snap.gpus.keys().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["0000:02:00.0"],
            "{script}"
        );
        assert_eq!(snap.unjoined.len(), 1, "{script}");
        assert_eq!(snap.unjoined[0].index, 0);
        assert_eq!(snap.unjoined[0].error, why);
        // Nothing else is asked of the GPU without an address: one name read, the other GPU's.
        assert_eq!(
            d.calls()
                .iter()
                .filter(|c| *c == "nvmlDeviceGetName")
                .count(),
            1,
            "{:?}",
            d.calls()
        );
        let report = discover::discover(&root, &Options::default(), &taken(Some(snap), None));
        let g = &report.gpus[0];
        assert_eq!(g.pci_address, "0000:01:00.0");
        assert_eq!(g.memory_bytes, None, "no NVML reading is attributed to it");
        let n = g.nvidia.as_ref().unwrap();
        assert_eq!(n.uuid.as_deref(), Some(RTX4090_UUID), "kernel facts stay");
        assert_eq!(
            n.nvml_error.as_deref(),
            Some(format!("not joined (NVML device 0: {why})").as_str()),
            "{script}"
        );
    }
}

/// XID 79 is the GPU falling off the bus: after the event, every call on that GPU, its PCI info
/// included, answers GPU_IS_LOST. The XID is still counted for the right GPU.
#[tokio::test]
async fn xid_79_of_a_gpu_that_fell_off_the_bus_is_counted() {
    let root = fixture("rtx4090-proprietary");
    let d = rtx4090_double("gpu.0.xid=79\ngpu.0.lost_at=xid\n");
    let h = Nvml::start(config(root, &d));
    let snap = h.snapshot().await.expect("snapshot");
    assert_eq!(
        snap.unjoined.len(),
        1,
        "the GPU is lost by the time it is read: {:?}",
        snap.gpus
    );
    let counts = snap
        .xid_errors
        .get(&addr("0000:01:00.0"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![(79, 1)],
        "calls: {:?}",
        d.calls()
    );
}

/// NO_PERMISSION on one call of one GPU is that call's error only; on a GPU's handle
/// (nvml.h: the count includes GPUs the caller may not talk to) that GPU is not joined.
#[tokio::test]
async fn no_permission_on_one_call_is_that_calls_error_only() {
    let root = fixture("rtx4090-proprietary");
    let d = two_rtx4090s(
        "gpu.0.error.nvmlDeviceGetPowerUsage=no_permission\ngpu.1.error.handle=no_permission\n",
    );
    let h = Nvml::start(config(root.clone(), &d));
    let snap = h.snapshot().await.expect("snapshot");
    let r = &snap.gpus[&addr("0000:01:00.0")];
    assert_eq!(r.power_watts, None);
    assert_eq!(r.temperature_celsius, Some(54), "the other calls answer");
    assert_eq!(
        r.errors,
        vec!["nvmlDeviceGetPowerUsage: no permission".to_owned()]
    );
    assert!(!r.lost);
    assert_eq!(snap.gpus.len(), 1);
    assert_eq!(
        snap.unjoined[0].error,
        "nvmlDeviceGetHandleByIndex_v2: no permission"
    );
    let report = discover::discover(&root, &Options::default(), &taken(Some(snap), None));
    assert_eq!(
        report.gpus[0]
            .nvidia
            .as_ref()
            .unwrap()
            .nvml_error
            .as_deref(),
        Some("nvmlDeviceGetPowerUsage: no permission")
    );
}

/// `nvmlInit` answering NO_PERMISSION (the agent may not open /dev/nvidiactl) is retried with
/// the backoff, like a driver that is not loaded yet, and recovers once allowed.
#[tokio::test]
async fn init_no_permission_is_retried_and_recovers() {
    let root = fixture("rtx4090-proprietary");
    let d = rtx4090_double("init=no_permission\ninit_fail_count=2\n");
    let h = Nvml::start(config(root, &d));
    let mut errors = Vec::new();
    let mut result = h.snapshot().await;
    for _ in 0..400 {
        match &result {
            Ok(_) => break,
            Err(e) => errors.push(e.clone()),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        result = h.snapshot().await;
    }
    result.expect("NVML recovers once it may talk to the driver");
    assert!(
        matches!(&errors[0], Error::Init(m) if m.contains("no permission")),
        "{errors:?}"
    );
    assert_eq!(d.init_attempts(), 3, "retried, not looped: {errors:?}");
    assert_eq!(h.state(), NvmlState::Ready);
}

/// The double answers as nvml.h documents (NVIDIA/go-nvml gen/nvml/nvml.h, NVML API 13), asked
/// through the real nvml-wrapper without the agent in between: a lost GPU refuses its handle
/// and PCI info, scripted errors come per call, ECC counts need ECC mode and honour the counter
/// type, utilisation is not supported in MIG mode, and an event wait waits for an event.
#[test]
fn the_double_is_as_strict_as_nvml_h() {
    use nvml_wrapper::Nvml as Lib;
    use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError};
    use nvml_wrapper::error::NvmlError;
    let d = Double::new(&format!(
        "{}gpu.0.lost=1\n\
         gpu.1.bus_id=00000000:02:00.0\ngpu.1.lost_at=pci\n\
         gpu.2.bus_id=00000000:03:00.0\ngpu.2.error.handle=no_permission\n\
         gpu.3.bus_id=00000000:04:00.0\ngpu.3.ecc_corrected=5\ngpu.3.util_gpu=10\n\
         gpu.3.error.nvmlDeviceGetTemperature=no_permission\ngpu.3.temp=40\n\
         gpu.4.bus_id=00000000:05:00.0\ngpu.4.ecc_mode=1\ngpu.4.ecc_corrected=5\n\
         gpu.4.ecc_corrected_volatile=1\ngpu.4.mig_current=1\ngpu.4.util_gpu=10\n\
         gpu.4.xid=79\nxid_gate=xid-now\n",
        full_gpu(0, "00000000:01:00.0", "NVIDIA GeForce RTX 4090", "GPU-0")
    ));
    let nvml = Lib::builder().lib_path(d.lib.as_os_str()).init().unwrap();
    assert_eq!(nvml.device_count().unwrap(), 5, "lost GPUs are counted");
    // lost=1: the handle itself answers GPU_IS_LOST.
    assert!(matches!(nvml.device_by_index(0), Err(NvmlError::GpuLost)));
    // lost_at=pci: a handle, then GPU_IS_LOST from the PCI info on, for every call.
    let g1 = nvml.device_by_index(1).unwrap();
    assert!(matches!(g1.pci_info(), Err(NvmlError::GpuLost)));
    assert!(matches!(g1.name(), Err(NvmlError::GpuLost)));
    assert!(matches!(nvml.device_by_index(1), Err(NvmlError::GpuLost)));
    // NO_PERMISSION per call.
    assert!(matches!(
        nvml.device_by_index(2),
        Err(NvmlError::NoPermission)
    ));
    let g3 = nvml.device_by_index(3).unwrap();
    assert!(matches!(
        g3.temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu),
        Err(NvmlError::NoPermission)
    ));
    // ECC counts with ECC off (a GeForce): NOT_SUPPORTED, even where a count is scripted.
    assert!(matches!(
        g3.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate),
        Err(NvmlError::NotSupported)
    ));
    assert_eq!(g3.utilization_rates().unwrap().gpu, 10);
    // ECC on: the counter type picks aggregate or volatile.
    let g4 = nvml.device_by_index(4).unwrap();
    assert_eq!(
        g4.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate)
            .unwrap(),
        5
    );
    assert_eq!(
        g4.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
            .unwrap(),
        1
    );
    assert!(matches!(
        g4.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate),
        Err(NvmlError::NotSupported)
    ));
    // MIG mode on: no utilisation.
    assert!(matches!(
        g4.utilization_rates(),
        Err(NvmlError::NotSupported)
    ));
    // The event wait honours its timeout: nothing is ready, so 0 ms times out at once, and a
    // long wait returns the event that arrives while it waits.
    let set = g4
        .register_events(
            nvml_wrapper::bitmasks::event::EventTypes::CRITICAL_XID_ERROR,
            nvml.create_event_set().unwrap(),
        )
        .unwrap();
    assert!(matches!(set.wait(0), Err(NvmlError::Timeout)));
    let waits = || {
        d.calls()
            .iter()
            .filter(|c| *c == "nvmlEventSetWait_v2")
            .count()
    };
    std::thread::scope(|s| {
        // The XID happens once the second wait is inside the library.
        s.spawn(|| {
            while waits() < 2 {
                std::thread::yield_now();
            }
            d.touch("xid-now");
        });
        let got = set.wait(600_000).map(|e| e.event_data);
        assert!(
            matches!(
                got,
                Ok(Some(nvml_wrapper::enums::event::XidError::Value(79)))
            ),
            "{got:?}"
        );
    });
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
    let report = discover::discover(&root, &Options::default(), &taken(None, h.facts()));
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
    let report = discover::discover(&root, &Options::default(), &taken(Some(snap), Some(f)));
    let g = &report.gpus[0];
    assert_eq!(g.status, Status::DriverVersionMismatch, "{:?}", g.problems);
    assert!(
        g.problems.iter().any(|p| p.detail.contains("NVML 550.135")),
        "{:?}",
        g.problems
    );
}

/// On a machine whose loader has no `libnvidia-ml.so.1` (CI), NVML is absent, not an error.
/// Where the loader finds one (a GPU machine) this does not hold: the test says so and skips.
#[tokio::test]
async fn missing_library_is_absent_not_an_error() {
    if let Some(why) = crate::util::nvml_on_this_machine() {
        println!("skipped: {why}");
        return;
    }
    // An empty host root: no Talos library, so the loader's `libnvidia-ml.so.1` is tried.
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let h = Nvml::start(NvmlConfig::new(root));
    let e = h.snapshot().await.unwrap_err();
    assert!(
        e.is_absent(),
        "expected NVML to be absent on this machine: {e}"
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

/// Only against a regression that waits for the hung call (which the double never releases by
/// itself): the test then fails instead of hanging. Not a performance bound: how long the answer
/// takes is measured by `cargo bench --bench nvml` (`*_with_a_hung_call`).
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Await `f` (bounded by [`HANG_GUARD`]), then check that `sym` was entered and had not returned
/// when the answer came: the answer did not wait for the hung call. Decided by the double's call
/// log, not by a clock.
async fn answered_while_hung<T>(
    d: &Double,
    sym: &str,
    f: impl std::future::Future<Output = T>,
) -> T {
    let out = tokio::time::timeout(HANG_GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("no answer while {sym} hung: the caller waited for the call"));
    assert_hung(d, sym);
    out
}

/// `sym` was entered and is still inside the (double's) driver.
fn assert_hung(d: &Double, sym: &str) {
    let calls = d.calls();
    assert!(
        calls.iter().any(|c| c == sym),
        "{sym} was never called: {calls:?}"
    );
    assert!(
        !calls.iter().any(|c| *c == format!("{sym} returned")),
        "{sym} returned before the answer came: {calls:?}"
    );
}

#[tokio::test]
async fn a_hung_call_fails_the_source_while_it_hangs_and_recovers() {
    let root = fixture("rtx4090-proprietary");
    // The first temperature read blocks until released; later ones answer.
    let d = rtx4090_double("hang=nvmlDeviceGetTemperature\nhang_count=1\n");
    let mut cfg = config(root, &d);
    cfg.backoff_initial = Duration::from_millis(20);
    let h = Nvml::start(cfg);
    let e = answered_while_hung(&d, "nvmlDeviceGetTemperature", h.snapshot())
        .await
        .unwrap_err();
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
        errors.push(
            answered_while_hung(&d, "nvmlInit_v2", h.snapshot())
                .await
                .unwrap_err(),
        );
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

/// `discover` answers (and exits) while an NVML call is still hung in the driver: the double
/// never releases it, and its call log shows the call was entered and never returned.
#[test]
fn discover_command_answers_while_an_nvml_call_hangs() {
    let d = rtx4090_double("hang=nvmlDeviceGetTemperature\n");
    let fixture_dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/rtx4090-proprietary");
    let (stdout, stderr) = (d.dir.path().join("stdout"), d.dir.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpuscout"))
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
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("run gpuscout");
    let guard = Instant::now() + HANG_GUARD;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > guard {
            let _ = child.kill();
            panic!("discover did not answer while the NVML call hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert_hung(&d, "nvmlDeviceGetTemperature");
    assert!(
        stderr.contains("nvmlDeviceGetTemperature") && stderr.contains("NVML source failed"),
        "a log line naming the hung call: {stderr}"
    );
    // One-shot commands log NVML failures at debug level: stderr carries the verdicts.
    assert!(!stderr.contains("WARN"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&stdout).unwrap()).unwrap();
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
    use gpuscout::serve::{Daemon, DaemonConfig};
    use std::sync::Arc;
    let root = cfg.root.clone();
    let config = DaemonConfig {
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
    d.set_evidence(move || Evidence::with_nvml(nvml.clone()));
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

async fn scrape(addr: std::net::SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        let (status, _, body) = crate::serve::http_get(addr, "/metrics", None).unwrap();
        assert_eq!(status, 200);
        body
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_export_nvml_readings() {
    let d = rtx4090_double("gpu.0.xid=79,79\n");
    let (addr, stop, server) = serve_nvml(config(fixture("rtx4090-proprietary"), &d)).await;
    let body = scrape(addr).await;
    let g = r#"gpu="0000:01:00.0""#;
    for want in [
        format!(r#"gpuscout_gpu_temperature_celsius{{{g},sensor="gpu"}} 54"#),
        format!(r#"gpuscout_gpu_memory_total_bytes{{{g},pool="vram"}} 25757220864"#),
        format!(r#"gpuscout_gpu_utilization_ratio{{{g}}} 0.37"#),
        format!(r#"gpuscout_gpu_power_watts{{{g}}} 123.456"#),
        format!(r#"gpuscout_gpu_power_limit_watts{{{g}}} 450"#),
        format!(r#"gpuscout_gpu_energy_joules_total{{{g}}} 987654.321"#),
        format!(r#"gpuscout_gpu_clock_hertz{{{g},domain="graphics"}} 2520000000"#),
        format!(r#"gpuscout_gpu_xid_errors_total{{{g},xid="79"}} 2"#),
        r#"gpuscout_scrape_source_success{source="nvml"} 1"#.to_owned(),
        "gpuscout_nvml_stuck_threads 0".to_owned(),
    ] {
        assert!(body.contains(&want), "missing {want}\n{body}");
    }
    // A GeForce has no ECC: NVML answers NOT_SUPPORTED, so there is no ECC series (never 0).
    assert!(!body.contains("gpuscout_gpu_ecc_errors_total{"), "{body}");
    // The whole exposition, NVML series included, passes the real promtool.
    crate::metrics::promtool_check(&body, "NVML /metrics");
    // PCIe link series come from sysfs only: no duplicate series from NVML.
    let width = format!(r#"gpuscout_gpu_pcie_link_width{{{g},state="current"}}"#);
    assert_eq!(body.matches(&width).count(), 1, "{body}");
    stop.send(()).unwrap();
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_while_an_nvml_call_hangs() {
    let d = rtx4090_double("hang=nvmlDeviceGetTemperature\n");
    let (addr, stop, server) = serve_nvml(config(fixture("rtx4090-proprietary"), &d)).await;
    for _ in 0..3 {
        let body = answered_while_hung(&d, "nvmlDeviceGetTemperature", scrape(addr)).await;
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

/// The NVML double with two RTX 4090s (at 01:00.0 and 02:00.0) and the script lines `extra`.
fn two_rtx4090s(extra: &str) -> Double {
    Double::new(&format!(
        "driver_version=570.172.08\n{}{}{extra}",
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
    ))
}
