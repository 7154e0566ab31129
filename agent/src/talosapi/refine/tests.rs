use super::*;
use crate::cause::{ModulesFix, NotBound};
use crate::model::{Extension, TalosInfo, Unread};

fn nvidia_gpu(driver: Option<&str>, problems: Vec<Problem>) -> Gpu {
    let mut g = Gpu {
        device_id: Some(0x2684),
        model: "GeForce RTX 4090".to_owned(),
        driver: driver.map(str::to_owned),
        problems,
        ..Gpu::test(Vendor::Nvidia, "0000:01:00.0")
    };
    g.settle_status();
    g
}

fn not_loaded(modules: &[&str], bound: bool) -> Problem {
    Problem::new(Cause::ModulesNotLoaded {
        modules: modules.iter().map(|m| (*m).to_owned()).collect(),
        bound,
        fix: ModulesFix::MachineConfig,
        config: None,
        open_alpha: false,
    })
}

fn facts_with_modules(mods: &[&str]) -> TalosApiFacts {
    TalosApiFacts {
        kernel_modules: mods.iter().map(|m| (*m).to_owned()).collect(),
        ..Default::default()
    }
}

fn ext(name: &str, version: &str) -> Extension {
    Extension {
        name: name.to_owned(),
        version: version.to_owned(),
    }
}

/// A Talos host with the production kmod and toolkit installed.
fn host() -> Host {
    Host {
        kernel: Some("6.12.57-talos".to_owned()),
        os: Some("Talos (v1.11.5)".to_owned()),
        talos: Some(TalosInfo {
            version: "v1.11.5".to_owned(),
            extensions: vec![
                ext("nonfree-kmod-nvidia-production", "570.172.08-v1.11.5"),
                ext("nvidia-container-toolkit-production", "570.172.08-v1.17.8"),
            ],
        }),
        ..Host::default()
    }
}

fn running(facts: &mut TalosApiFacts, service: &str) {
    facts.services.insert(
        service.to_owned(),
        crate::talosapi::ServiceState {
            running: true,
            healthy: true,
            unknown: false,
        },
    );
}

#[test]
fn missing_kernel_modules_give_the_exact_config_hint() {
    let mut facts = facts_with_modules(&[]);
    running(&mut facts, PERSISTENCED);
    let mut gpus = vec![nvidia_gpu(
        None,
        vec![not_loaded(&["nvidia", "nvidia_uvm"], false)],
    )];
    refine(&facts, &host(), &mut gpus);
    let p = &gpus[0].problems[0];
    assert_eq!(gpus[0].status, Status::ModuleNotLoaded);
    assert_eq!(
        p.hint,
        "add `nvidia`, `nvidia_uvm`, `nvidia_drm`, `nvidia_modeset` to machine.kernel.modules and reboot (the NVIDIA extension blacklists them, so they never autoload)"
    );
    assert!(p.detail.ends_with(
        "machine.kernel.modules lacks nvidia, nvidia_uvm, nvidia_drm, nvidia_modeset (Talos API)"
    ));
    // The cause carries what the config lacks.
    assert!(matches!(
        &p.cause,
        Cause::ModulesNotLoaded { config: Some(c), .. } if c.lacking.len() == 4
    ));
}

#[test]
fn only_the_missing_modules_are_named() {
    let facts = facts_with_modules(&["nvidia", "nvidia_drm"]);
    let mut gpus = vec![nvidia_gpu(
        None,
        vec![not_loaded(&["nvidia", "nvidia_uvm"], false)],
    )];
    refine(&facts, &host(), &mut gpus);
    assert!(
        gpus[0].problems[0]
            .hint
            .starts_with("add `nvidia_uvm`, `nvidia_modeset` to machine.kernel.modules")
    );
}

#[test]
fn configured_modules_that_did_not_load_point_at_the_kernel_log() {
    let facts = facts_with_modules(NVIDIA_MODULES);
    let mut gpus = vec![nvidia_gpu(
        None,
        vec![not_loaded(&["nvidia", "nvidia_uvm"], false)],
    )];
    refine(&facts, &host(), &mut gpus);
    let p = &gpus[0].problems[0];
    assert_eq!(p.status, Status::ModuleNotLoaded);
    assert!(p.hint.contains("key was rejected"), "{}", p.hint);
    assert!(!p.hint.contains("add `"), "{}", p.hint);
}

#[test]
fn non_nvidia_and_healthy_gpus_are_left_alone() {
    let mut facts = facts_with_modules(&[]);
    running(&mut facts, PERSISTENCED);
    let mut amd = nvidia_gpu(None, vec![not_loaded(&["amdgpu"], false)]);
    amd.vendor = Vendor::Amd;
    let before_amd = amd.clone();
    let ok = nvidia_gpu(Some("nvidia"), vec![]);
    let mut gpus = vec![amd, ok.clone()];
    refine(&facts, &host(), &mut gpus);
    assert_eq!(gpus[0], before_amd);
    assert_eq!(gpus[1], ok);
}

/// Talos destroys a Services resource when the service stops, so an installed toolkit whose
/// persistenced has no running resource is not running.
#[test]
fn persistenced_not_running_with_bound_driver_is_service_not_running() {
    let facts = facts_with_modules(NVIDIA_MODULES);
    let mut gpus = vec![nvidia_gpu(Some("nvidia"), vec![])];
    refine(&facts, &host(), &mut gpus);
    assert_eq!(gpus[0].status, Status::ServiceNotRunning);
    assert_eq!(gpus[0].problems.len(), 1);
    let p = &gpus[0].problems[0];
    assert_eq!(
        p.cause,
        Cause::ServiceNotRunning {
            service: PERSISTENCED.to_owned(),
            driver: "nvidia".to_owned(),
            extension: "nvidia-container-toolkit-production".to_owned(),
            driver_version: None,
        }
    );
    assert!(p.hint.contains("talosctl logs ext-nvidia-persistenced"));
    // A resource that says not running (older Talos, or a fake) counts the same.
    let mut facts = facts_with_modules(NVIDIA_MODULES);
    facts
        .services
        .insert(PERSISTENCED.to_owned(), Default::default());
    let mut gpus = vec![nvidia_gpu(Some("nvidia"), vec![])];
    refine(&facts, &host(), &mut gpus);
    assert_eq!(gpus[0].status, Status::ServiceNotRunning);
}

#[test]
fn persistenced_running_or_no_toolkit_adds_nothing() {
    let mut facts = facts_with_modules(NVIDIA_MODULES);
    running(&mut facts, PERSISTENCED);
    let ok = nvidia_gpu(Some("nvidia"), vec![]);
    let mut gpus = vec![ok.clone()];
    refine(&facts, &host(), &mut gpus);
    assert_eq!(gpus[0], ok);
    // No toolkit installed: the extension checks report that; no service is expected.
    let mut bare = host();
    bare.talos.as_mut().unwrap().extensions.truncate(1);
    let facts = facts_with_modules(NVIDIA_MODULES);
    refine(&facts, &bare, &mut gpus);
    assert_eq!(gpus[0], ok);
}

#[test]
fn fabric_manager_not_running_on_an_nvswitch_system() {
    let mut h = host();
    h.nvswitches = vec!["0000:05:00.0".to_owned()];
    h.talos
        .as_mut()
        .unwrap()
        .extensions
        .push(ext("nvidia-fabricmanager-production", "570.172.08"));
    let mut facts = facts_with_modules(NVIDIA_MODULES);
    running(&mut facts, PERSISTENCED);
    let mut gpus = vec![nvidia_gpu(Some("nvidia"), vec![])];
    refine(&facts, &h, &mut gpus);
    assert_eq!(gpus[0].status, Status::ServiceNotRunning);
    let p = &gpus[0].problems[0];
    assert!(
        matches!(&p.cause, Cause::ServiceNotRunning { service, driver_version: Some(v), .. }
            if service == "ext-nvidia-fabricmanager" && v == "570.172.08"),
        "{:?}",
        p.cause
    );
    // Without NVSwitches the fabric manager is not expected to run.
    h.nvswitches.clear();
    let mut gpus = vec![nvidia_gpu(Some("nvidia"), vec![])];
    refine(&facts, &h, &mut gpus);
    assert_eq!(gpus[0].status, Status::Ok);
}

#[test]
fn persistenced_waiting_is_noted_on_the_unbound_problem() {
    let facts = facts_with_modules(&[]);
    let mut gpus = vec![nvidia_gpu(None, vec![not_loaded(&["nvidia"], false)])];
    refine(&facts, &host(), &mut gpus);
    assert_eq!(gpus[0].problems.len(), 1);
    assert_eq!(gpus[0].status, Status::ModuleNotLoaded);
    assert!(
        gpus[0].problems[0]
            .detail
            .contains("ext-nvidia-persistenced waits for the nvidia driver"),
        "{}",
        gpus[0].problems[0].detail
    );
}

#[test]
fn talos_driver_at_boot_explains_an_unbound_device() {
    let mut facts = facts_with_modules(NVIDIA_MODULES);
    running(&mut facts, PERSISTENCED);
    facts.pci_devices.insert(
        "0000:01:00.0".to_owned(),
        crate::talosapi::TalosPciDevice {
            driver: Some("nvidia".to_owned()),
            vendor_id: Some("0x10de".to_owned()),
            product_id: Some("0x2684".to_owned()),
        },
    );
    let unbound = Problem::new(Cause::DriverNotBound {
        driver: "nvidia".to_owned(),
        address: "0000:01:00.0".to_owned(),
        on_talos: true,
        reason: NotBound::Probe,
    });
    let mut gpus = vec![nvidia_gpu(None, vec![unbound])];
    refine(&facts, &host(), &mut gpus);
    let d = &gpus[0].problems[0].detail;
    assert!(
        d.contains("Talos saw nvidia bound at boot, so it was unbound since"),
        "{d}"
    );

    // The driver link could not be read: Talos' record is reported as such.
    let link = Unread {
        path: "/sys/bus/pci/devices/0000:01:00.0/driver".to_owned(),
        error: "permission denied".to_owned(),
    };
    let unknown = Problem::new(Cause::DriverLinkUnreadable {
        path: link.path.clone(),
        error: link.error.clone(),
    });
    let mut g = nvidia_gpu(None, vec![unknown]);
    g.unread.push(link.clone());
    g.driver_link_error = Some(link);
    let mut gpus = vec![g];
    refine(&facts, &host(), &mut gpus);
    assert_eq!(gpus[0].status, Status::Unknown);
    assert!(
        gpus[0].problems[0]
            .detail
            .ends_with("Talos saw nvidia bound at boot (Talos API PCIDevices)")
    );
}

#[test]
fn current_kernel_binding_wins_over_talos_snapshot() {
    let mut facts = facts_with_modules(NVIDIA_MODULES);
    running(&mut facts, PERSISTENCED);
    facts.pci_devices.insert(
        "0000:01:00.0".to_owned(),
        crate::talosapi::TalosPciDevice {
            driver: None,
            ..Default::default()
        },
    );
    let ok = nvidia_gpu(Some("nvidia"), vec![]);
    let mut gpus = vec![ok.clone()];
    refine(&facts, &host(), &mut gpus);
    assert_eq!(gpus[0], ok);
}

#[test]
fn refining_twice_equals_refining_once() {
    let mut facts = facts_with_modules(&["nvidia"]);
    facts.pci_devices.insert(
        "0000:01:00.0".to_owned(),
        crate::talosapi::TalosPciDevice {
            driver: Some("nvidia".to_owned()),
            ..Default::default()
        },
    );
    let mut once = vec![
        nvidia_gpu(None, vec![not_loaded(&["nvidia"], false)]),
        nvidia_gpu(Some("nvidia"), vec![]),
    ];
    refine(&facts, &host(), &mut once);
    let mut twice = once.clone();
    refine(&facts, &host(), &mut twice);
    assert_eq!(once, twice);
}

#[test]
fn the_hint_follows_the_modules_the_cause_names() {
    // Bound driver, nvidia_uvm not loaded: only nvidia_uvm matters, whatever else is missing.
    let uvm = not_loaded(&["nvidia_uvm"], true);
    let mut facts = facts_with_modules(&["nvidia", "nvidia_uvm"]);
    running(&mut facts, PERSISTENCED);
    let mut gpus = vec![nvidia_gpu(Some("nvidia"), vec![uvm.clone()])];
    refine(&facts, &host(), &mut gpus);
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
    let mut facts = facts_with_modules(&["nvidia", "nvidia_drm"]);
    running(&mut facts, PERSISTENCED);
    let mut gpus = vec![nvidia_gpu(Some("nvidia"), vec![uvm])];
    refine(&facts, &host(), &mut gpus);
    assert!(
        gpus[0].problems[0]
            .hint
            .starts_with("add `nvidia_uvm`, `nvidia_modeset` to machine.kernel.modules"),
        "{}",
        gpus[0].problems[0].hint
    );

    // Bound but the module is unloading: a different cause, left to the kernel verdict.
    let unloading = Problem::new(Cause::ModuleUnusable {
        module: "nvidia".to_owned(),
        state: "unloading".to_owned(),
    });
    let mut gpus = vec![nvidia_gpu(Some("nvidia"), vec![unloading.clone()])];
    let mut facts = facts_with_modules(&[]);
    running(&mut facts, PERSISTENCED);
    refine(&facts, &host(), &mut gpus);
    assert_eq!(gpus[0].problems[0], unloading);
}
