use super::*;
use crate::model::{ModelSource, PcieLink, Unread};

fn nvidia_gpu(driver: Option<&str>, problems: Vec<Problem>) -> Gpu {
    let mut g = Gpu {
        pci_address: "0000:01:00.0".to_owned(),
        vendor: Vendor::Nvidia,
        vendor_id: "0x10de".to_owned(),
        device_id: Some("0x2684".into()),
        subsystem_vendor_id: None,
        subsystem_device_id: None,
        class: "0x030000".to_owned(),
        revision: None,
        model: "GeForce RTX 4090".to_owned(),
        model_source: ModelSource::PciIds,
        driver: driver.map(str::to_owned),
        card: None,
        render: None,
        numa_node: None,
        memory_bytes: None,
        pcie: PcieLink::default(),
        sriov: None,
        amd: None,
        nvidia: None,
        intel: None,
        status: Status::Ok,
        problems,
        unread: Vec::new(),
        disagreements: Vec::new(),
    };
    g.settle_status();
    g
}

fn not_loaded() -> Problem {
    Problem {
        status: Status::ModuleNotLoaded,
        detail: "no driver is bound and nvidia, nvidia_uvm not loaded".to_owned(),
        hint: "add nvidia, nvidia_uvm to machine.kernel.modules".to_owned(),
    }
}

fn facts_with_modules(mods: &[&str]) -> TalosApiFacts {
    TalosApiFacts {
        kernel_modules: mods.iter().map(|m| (*m).to_owned()).collect(),
        ..Default::default()
    }
}

#[test]
fn missing_kernel_modules_give_the_exact_config_hint() {
    let facts = facts_with_modules(&[]);
    let mut gpus = vec![nvidia_gpu(None, vec![not_loaded()])];
    refine(&facts, &mut gpus);
    let p = &gpus[0].problems[0];
    assert_eq!(gpus[0].status, Status::ModuleNotLoaded);
    assert_eq!(
        p.hint,
        "add `nvidia`, `nvidia_uvm`, `nvidia_drm`, `nvidia_modeset` to machine.kernel.modules and reboot (the NVIDIA extension blacklists them, so they never autoload)"
    );
    assert!(p.detail.ends_with(
        "machine.kernel.modules lacks nvidia, nvidia_uvm, nvidia_drm, nvidia_modeset (Talos API)"
    ));
}

#[test]
fn only_the_missing_modules_are_named() {
    let facts = facts_with_modules(&["nvidia", "nvidia_drm"]);
    let mut gpus = vec![nvidia_gpu(None, vec![not_loaded()])];
    refine(&facts, &mut gpus);
    assert!(
        gpus[0].problems[0]
            .hint
            .starts_with("add `nvidia_uvm`, `nvidia_modeset` to machine.kernel.modules")
    );
}

#[test]
fn configured_modules_that_did_not_load_point_at_the_kernel_log() {
    let facts = facts_with_modules(&NVIDIA_MODULES);
    let mut gpus = vec![nvidia_gpu(None, vec![not_loaded()])];
    refine(&facts, &mut gpus);
    let p = &gpus[0].problems[0];
    assert_eq!(p.status, Status::ModuleNotLoaded);
    assert!(p.hint.contains("key was rejected"), "{}", p.hint);
    assert!(!p.hint.contains("add `"), "{}", p.hint);
}

#[test]
fn non_nvidia_and_healthy_gpus_are_left_alone() {
    let facts = facts_with_modules(&[]);
    let mut amd = nvidia_gpu(None, vec![not_loaded()]);
    amd.vendor = Vendor::Amd;
    let before_amd = amd.clone();
    let ok = nvidia_gpu(Some("nvidia"), vec![]);
    let mut gpus = vec![amd, ok.clone()];
    refine(&facts, &mut gpus);
    assert_eq!(gpus[0], before_amd);
    assert_eq!(gpus[1], ok);
}

#[test]
fn persistenced_not_running_with_bound_driver_is_a_problem() {
    let mut facts = facts_with_modules(&NVIDIA_MODULES);
    facts.services.insert(
        PERSISTENCED.to_owned(),
        crate::talosapi::ServiceState {
            running: false,
            healthy: false,
            unknown: true,
        },
    );
    let mut gpus = vec![nvidia_gpu(Some("nvidia"), vec![])];
    refine(&facts, &mut gpus);
    assert_eq!(gpus[0].status, Status::DriverVersionMismatch);
    assert_eq!(gpus[0].problems.len(), 1);
    assert!(gpus[0].problems[0].detail.contains(PERSISTENCED));
    assert!(
        gpus[0].problems[0]
            .hint
            .contains("talosctl logs ext-nvidia-persistenced")
    );
}

#[test]
fn persistenced_running_or_absent_adds_nothing() {
    let mut facts = facts_with_modules(&NVIDIA_MODULES);
    let ok = nvidia_gpu(Some("nvidia"), vec![]);
    let mut gpus = vec![ok.clone()];
    refine(&facts, &mut gpus);
    assert_eq!(gpus[0], ok);
    facts.services.insert(
        PERSISTENCED.to_owned(),
        crate::talosapi::ServiceState {
            running: true,
            healthy: true,
            unknown: false,
        },
    );
    refine(&facts, &mut gpus);
    assert_eq!(gpus[0], ok);
}

#[test]
fn persistenced_waiting_is_noted_on_the_unbound_problem() {
    let mut facts = facts_with_modules(&[]);
    facts
        .services
        .insert(PERSISTENCED.to_owned(), Default::default());
    let mut gpus = vec![nvidia_gpu(None, vec![not_loaded()])];
    refine(&facts, &mut gpus);
    assert_eq!(gpus[0].problems.len(), 1);
    assert!(
        gpus[0].problems[0]
            .detail
            .contains("ext-nvidia-persistenced waits for the nvidia driver")
    );
}

#[test]
fn talos_driver_at_boot_explains_an_unbound_device() {
    let mut facts = facts_with_modules(&NVIDIA_MODULES);
    facts.pci_devices.insert(
        "0000:01:00.0".to_owned(),
        crate::talosapi::TalosPciDevice {
            driver: Some("nvidia".to_owned()),
            vendor_id: Some("0x10de".to_owned()),
            product_id: Some("0x2684".to_owned()),
        },
    );
    let unbound = Problem {
        status: Status::DriverNotBound,
        detail: "nvidia is loaded but not bound to this device (probe failed)".to_owned(),
        hint: "read the probe error".to_owned(),
    };
    let mut gpus = vec![nvidia_gpu(None, vec![unbound])];
    refine(&facts, &mut gpus);
    let d = &gpus[0].problems[0].detail;
    assert!(
        d.contains("Talos saw nvidia bound at boot, so it was unbound since"),
        "{d}"
    );

    // The driver link could not be read: Talos' record is reported as such.
    let unknown = Problem {
        status: Status::Unknown,
        detail: "driver link unreadable".to_owned(),
        hint: "mount /sys".to_owned(),
    };
    let mut g = nvidia_gpu(None, vec![unknown]);
    g.unread.push(Unread {
        path: "/sys/bus/pci/devices/0000:01:00.0/driver".to_owned(),
        error: "permission denied".to_owned(),
    });
    let mut gpus = vec![g];
    refine(&facts, &mut gpus);
    assert_eq!(gpus[0].status, Status::Unknown);
    assert!(
        gpus[0].problems[0]
            .detail
            .ends_with("Talos saw nvidia bound at boot (Talos API PCIDevices)")
    );
}

#[test]
fn current_kernel_binding_wins_over_talos_snapshot() {
    let mut facts = facts_with_modules(&NVIDIA_MODULES);
    facts.pci_devices.insert(
        "0000:01:00.0".to_owned(),
        crate::talosapi::TalosPciDevice {
            driver: None,
            ..Default::default()
        },
    );
    let ok = nvidia_gpu(Some("nvidia"), vec![]);
    let mut gpus = vec![ok.clone()];
    refine(&facts, &mut gpus);
    assert_eq!(gpus[0], ok);
}

#[test]
fn refining_twice_equals_refining_once() {
    let mut facts = facts_with_modules(&["nvidia"]);
    facts
        .services
        .insert(PERSISTENCED.to_owned(), Default::default());
    facts.pci_devices.insert(
        "0000:01:00.0".to_owned(),
        crate::talosapi::TalosPciDevice {
            driver: Some("nvidia".to_owned()),
            ..Default::default()
        },
    );
    let mut once = vec![
        nvidia_gpu(None, vec![not_loaded()]),
        nvidia_gpu(Some("nvidia"), vec![]),
    ];
    refine(&facts, &mut once);
    let mut twice = once.clone();
    refine(&facts, &mut twice);
    assert_eq!(once, twice);
}

#[test]
fn the_hint_follows_the_modules_the_problem_names() {
    // Bound driver, nvidia_uvm not loaded: only nvidia_uvm matters, whatever else is missing.
    let uvm = Problem {
        status: Status::ModuleNotLoaded,
        detail: "the driver is bound but nvidia_uvm not loaded".to_owned(),
        hint: "add nvidia_uvm to machine.kernel.modules".to_owned(),
    };
    let facts = facts_with_modules(&["nvidia", "nvidia_uvm"]);
    let mut gpus = vec![nvidia_gpu(Some("nvidia"), vec![uvm.clone()])];
    refine(&facts, &mut gpus);
    let p = &gpus[0].problems[0];
    assert!(
        p.hint
            .starts_with("nvidia_uvm is configured but did not load"),
        "{}",
        p.hint
    );
    assert!(
        p.detail
            .contains("machine.kernel.modules lists nvidia_uvm (Talos API)")
    );
    assert!(
        p.detail
            .ends_with("machine.kernel.modules lacks nvidia_drm, nvidia_modeset (Talos API)"),
        "{}",
        p.detail
    );

    // Not configured: the hint lists every NVIDIA module machine.kernel.modules lacks.
    let facts = facts_with_modules(&["nvidia", "nvidia_drm"]);
    let mut gpus = vec![nvidia_gpu(Some("nvidia"), vec![uvm])];
    refine(&facts, &mut gpus);
    assert!(
        gpus[0].problems[0]
            .hint
            .starts_with("add `nvidia_uvm`, `nvidia_modeset` to machine.kernel.modules"),
        "{}",
        gpus[0].problems[0].hint
    );

    // Bound but the module is unloading: left to the kernel verdict.
    let unloading = Problem {
        status: Status::ModuleNotLoaded,
        detail: "nvidia is bound but its module is unloading".to_owned(),
        hint: "check the kernel log".to_owned(),
    };
    let mut gpus = vec![nvidia_gpu(Some("nvidia"), vec![unloading.clone()])];
    refine(&facts_with_modules(&[]), &mut gpus);
    assert_eq!(gpus[0].problems[0], unloading);
}
