//! Discovery on every fixture host root: a golden JSON report each (insta), plus the facts
//! each profile exists to prove.

use crate::util::{host, profiles, report, report_at};
use gpuscout::model::{Sriov, Status, Vendor};

#[test]
fn golden_report_for_every_fixture() {
    let names = profiles();
    assert!(
        names.len() >= 12,
        "expected the fixture set, found {names:?}"
    );
    for name in names {
        let r = report(&name);
        assert!(r.generated_at.is_some(), "{name}: generated_at");
        insta::with_settings!({
            snapshot_suffix => name.clone(),
            prepend_module_to_snapshot => false,
            // The time of the pass changes on every run.
            filters => vec![(r#""generated_at": "[0-9TZ:-]+""#, r#""generated_at": "[time]""#)],
        }, {
            insta::assert_json_snapshot!("report", r);
        });
    }
}

fn addrs(r: &gpuscout::model::Report) -> Vec<String> {
    r.gpus.iter().map(|g| g.pci_address.to_string()).collect()
}

#[test]
fn simpledrm_card0_is_not_the_gpu() {
    let r = report("talos-strixhalo-apu");
    assert_eq!(addrs(&r), ["0000:c5:00.0"]);
    let g = &r.gpus[0];
    assert_eq!(g.card.as_deref(), Some("card1"));
    assert_eq!(g.render.as_deref(), Some("renderD128"));
    let amd = g.amd.as_ref().unwrap();
    assert_eq!(amd.gfx_target.as_deref(), Some("gfx1151"));
    assert_eq!(amd.cu_count, Some(40));
    assert_eq!(amd.apu, Some(true));
    assert_eq!(g.memory_bytes, Some(536_870_912));
    let talos = r.host.talos.as_ref().unwrap();
    assert_eq!(talos.version, "v1.11.5");
    assert!(talos.extensions.iter().any(|e| e.name == "amdgpu"));
    assert!(
        !talos
            .extensions
            .iter()
            .any(|e| e.name == "schematic" || e.name == "modules.dep")
    );
}

#[test]
fn bmc_vga_and_gpu_audio_are_not_gpus() {
    let r = report("unbound-and-bmc");
    assert_eq!(addrs(&r), ["0000:41:00.0", "0000:61:00.0"]);
    assert!(r.gpus[0].driver.is_none());
    assert_ne!(r.gpus[0].status, Status::Ok);
    assert_eq!(r.gpus[1].driver.as_deref(), Some("vfio-pci"));
    assert_eq!(r.gpus[1].status, Status::BoundToOtherDriver);
    let r = report("rtx4090-proprietary");
    assert_eq!(
        addrs(&r),
        ["0000:01:00.0"],
        "the .1 HDMI audio function is not a GPU"
    );
}

#[test]
fn nvidia_procfs_and_flavours() {
    let p = report("rtx4090-proprietary");
    let nv = p.gpus[0].nvidia.as_ref().unwrap();
    assert_eq!(nv.kernel_module_flavor.as_deref(), Some("proprietary"));
    assert!(nv.uuid.as_deref().unwrap().starts_with("GPU-"));
    assert_eq!(p.gpus[0].model, "NVIDIA GeForce RTX 4090");
    let o = report("rtx4090-open");
    let nv = o.gpus[0].nvidia.as_ref().unwrap();
    assert_eq!(nv.kernel_module_flavor.as_deref(), Some("open"));
    assert!(nv.gsp_firmware.is_some());
    let h = report("nvidia-h100-mig");
    let g = &h.gpus[0];
    assert_eq!(g.card, None, "no nvidia_drm, no DRM card");
    assert_eq!(g.numa_node, Some(0));
    assert_eq!(g.nvidia.as_ref().unwrap().mig_instances, Some(2));
}

#[test]
fn intel_drivers_and_arch() {
    let a = report("arc-a770-i915");
    assert_eq!(addrs(&a), ["0000:03:00.0"]);
    let g = &a.gpus[0];
    assert_eq!(g.driver.as_deref(), Some("i915"));
    assert_eq!(g.intel.as_ref().unwrap().arch.as_deref(), Some("xe-hpg"));
    assert_eq!(g.intel.as_ref().unwrap().discrete, Some(true));
    let b = report("arc-b580-xe");
    assert_eq!(b.gpus[0].driver.as_deref(), Some("xe"));
    assert_eq!(
        b.gpus[0].intel.as_ref().unwrap().arch.as_deref(),
        Some("xe2")
    );
    let m = report("meteorlake-nuc-talos-i915");
    assert_eq!(
        addrs(&m),
        ["0000:00:02.0"],
        "the Meteor Lake NPU (class 0x12) is not a GPU"
    );
    assert_eq!(m.gpus[0].card.as_deref(), Some("card1"));
    assert_eq!(
        m.gpus[0].pcie.current_gts, None,
        "`Unknown` link speed is absent, not 0"
    );
}

/// AMD names come from libdrm's amdgpu.ids by device and revision (pci.ids says only
/// `Navi 48`), and a gfx1036 APU's family from ip_discovery (Mendocino, not Raphael).
#[test]
fn amd_marketing_names_and_families() {
    let r = report("rx9070xt-talos");
    let g = &r.gpus[0];
    assert_eq!(g.model, "AMD Radeon RX 9070 XT");
    assert_eq!(g.model_source, gpuscout::model::ModelSource::AmdgpuIds);
    assert_eq!(
        r.labels.get("gpuscout.io/amd.product").map(String::as_str),
        Some("AMD-Radeon-RX-9070-XT")
    );
    assert_eq!(
        g.amd.as_ref().unwrap().gc_version.as_deref(),
        Some("12.0.1")
    );
    let m = report("mendocino-610m-laptop");
    let a = m.gpus[0].amd.as_ref().unwrap();
    assert_eq!(a.gfx_target.as_deref(), Some("gfx1036"));
    assert_eq!(a.family.as_deref(), Some("GC_10_3_7"));
    assert_eq!(m.gpus[0].model, "AMD Radeon 610M");
}

/// Older iGPUs homelab transcoding nodes run: classified from the kernel's id table.
#[test]
fn intel_homelab_igpus() {
    let c = report("coffeelake-uhd630-debian");
    let i = c.gpus[0].intel.as_ref().unwrap();
    assert_eq!(i.platform.as_deref(), Some("Coffee Lake"));
    assert_eq!(i.arch.as_deref(), Some("gen9"));
    assert_eq!(i.discrete, Some(false));
    assert_eq!(i.expected_driver.as_deref(), Some("i915"));
    assert_eq!(c.gpus[0].status, gpuscout::model::Status::Ok);
    assert_eq!(
        c.labels.get("gpuscout.io/intel.arch").map(String::as_str),
        Some("gen9")
    );
    let j = report("jasperlake-talos-i915");
    let i = j.gpus[0].intel.as_ref().unwrap();
    assert_eq!(i.platform.as_deref(), Some("Jasper Lake"));
    assert_eq!(i.arch.as_deref(), Some("gen11"));
    assert_eq!(j.gpus[0].status, gpuscout::model::Status::Ok);
}

#[test]
fn dual_vendor_joins_kfd_by_render_minor() {
    let r = report("dual-vendor");
    let vendors: Vec<Vendor> = r.gpus.iter().map(|g| g.vendor).collect();
    assert_eq!(vendors, [Vendor::Nvidia, Vendor::Amd]);
    let amd = r.gpus[1].amd.as_ref().unwrap();
    assert_eq!(amd.gfx_target.as_deref(), Some("gfx1036"));
    assert_eq!(amd.cu_count, Some(2));
    assert!(r.gpus[0].amd.is_none());
}

#[test]
fn mi300_partitions_are_one_gpu() {
    let r = report("mi300x-cpx");
    assert_eq!(r.gpus.len(), 1);
    let amd = r.gpus[0].amd.as_ref().unwrap();
    assert_eq!(amd.partitions, Some(8));
    assert_eq!(amd.cu_count, Some(304), "8 CPX partitions of 38 CUs");
    assert_eq!(amd.compute_partition.as_deref(), Some("CPX"));
    assert_eq!(r.labels["gpuscout.io/amd.count"], "1");
}

#[test]
fn sriov_pf_and_vfs() {
    let r = report("sriov-flex170");
    assert_eq!(addrs(&r), ["0000:4d:00.0", "0000:4d:00.1", "0000:4d:00.2"]);
    match r.gpus[0].sriov.as_ref().unwrap() {
        Sriov::Pf {
            total_vfs,
            num_vfs,
            vfs,
        } => {
            assert_eq!(*total_vfs, Some(31));
            assert_eq!(*num_vfs, Some(2));
            assert_eq!(vfs, &["0000:4d:00.1", "0000:4d:00.2"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.gpus[1].sriov,
        Some(Sriov::Vf {
            physfn: "0000:4d:00.0".into()
        })
    );
}

#[test]
fn no_gpu_host() {
    let r = report("no-gpu");
    assert!(r.gpus.is_empty());
    assert!(r.labels.is_empty());
    assert!(r.host.talos.is_none());
}

/// The machine running the tests: on a machine without GPUs (CI) discovery of the real `/`
/// finds none and does not fail on whatever the real /sys holds. On a GPU machine this fact
/// does not hold: the test says so and skips (see [`host_fact_tests_skip_on_a_gpu_machine`]).
#[test]
fn real_sys_of_this_machine_finds_zero_gpus() {
    if let Some(why) = crate::util::gpus_on_this_machine() {
        println!("skipped: {why}");
        return;
    }
    let r = report_at(std::path::Path::new("/"));
    assert_eq!(
        r.gpus.len(),
        0,
        "this test expects a machine without GPUs: {:?}",
        r.gpus
    );
    assert!(r.host.kernel.is_some());
}

#[test]
fn fixture_paths_exist() {
    assert!(host("no-gpu").join("sys").is_dir());
}

/// The two tests that assert facts about the machine they run on skip on a GPU machine and say
/// why. Shown here by running them in a simulated GPU machine: a private mount namespace with a
/// fixture's `sys/` (an NVIDIA H100) bind-mounted over `/sys`, and the NVML test double as the
/// loader's `libnvidia-ml.so.1` (`LD_LIBRARY_PATH`).
#[test]
fn host_fact_tests_skip_on_a_gpu_machine() {
    let double = gpuscout_test_support::nvml_double::Double::new("driver_version=550.127.05\n");
    let exe = std::env::current_exe().unwrap();
    let script = r#"set -e
mount --bind "$1/sys" /sys
shift
exec "$@""#;
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let ns: &[&str] = if root { &["-m"] } else { &["-U", "-r", "-m"] };
    let out = std::process::Command::new("unshare")
        .args(ns)
        .args(["--propagation", "private", "sh", "-c", script, "sh"])
        .arg(host("nvidia-h100-mig"))
        .arg(&exe)
        .args([
            "--exact",
            "discovery::real_sys_of_this_machine_finds_zero_gpus",
            "nvml::missing_library_is_absent_not_an_error",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LD_LIBRARY_PATH", double.dir.path())
        .output()
        .expect("this test needs unshare and mount (util-linux) and root or user namespaces");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 passed"), "both inner tests ran: {text}");
    assert!(
        text.contains("skipped: this machine has GPUs: 0000:1b:00.0 (0x10de, class 0x030200)"),
        "{text}"
    );
    assert!(
        text.contains("skipped: the dynamic loader finds a libnvidia-ml.so.1"),
        "{text}"
    );
}
