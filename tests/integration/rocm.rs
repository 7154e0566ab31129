//! ROCm SMI (feature `rocm-smi`): the real `librocm_smi64` reads a fixture tree mounted over
//! `/sys` inside a private mount namespace, and must agree with our sysfs reader on the same
//! tree. ROCm SMI always reads the real `/sys` (release builds ignore its root-override
//! variables), and a process cannot re-root a library it has loaded, so the outer test
//! re-executes this test binary inside `unshare -m --propagation private` after a bind mount.
//! Where mount namespaces are forbidden the outer test fails and says why.

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

fn run_in_namespace(fixture: &Path) -> std::process::Output {
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
        .arg(INNER)
        .env(ENV_FIXTURE, fixture)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "the ROCm SMI test needs `unshare` (util-linux) to create a private mount namespace: {e}"
        ),
    }
}

fn check_fixture(name: &str) {
    let fix = prepared(name);
    let out = run_in_namespace(fix.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unshare failed") || stderr.contains("mount:") {
        panic!(
            "cannot run ROCm SMI against the fixture: this machine forbids a private mount namespace or the bind mount over /sys (run as root, or allow unprivileged user namespaces).\n{stderr}"
        );
    }
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
    let rocm = gpuscout::rocm::read_all().expect("rsmi_init on the fixture");
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
