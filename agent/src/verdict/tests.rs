//! Unit tests of the verdict rules on hand-built hosts and GPUs.

use super::*;
use crate::cause::{Cause, OsRelease, TalosEvidence};
use crate::model::{ModuleState, NvidiaInfo, TalosInfo, Unread};

fn ext(name: &str, version: &str) -> Extension {
    Extension {
        name: name.into(),
        version: version.into(),
    }
}

fn host(talos: Option<(&str, Vec<Extension>)>, modules: &[(&str, &str)]) -> Host {
    Host {
        kernel: Some(
            if talos.is_some() {
                "6.12.57-talos"
            } else {
                "6.8.0-49-generic"
            }
            .into(),
        ),
        talos: talos.map(|(v, e)| TalosInfo {
            version: v.into(),
            extensions: e,
        }),
        modules: modules
            .iter()
            .map(|(n, s)| ModuleState {
                name: (*n).into(),
                state: (*s).into(),
                version: None,
                taint: None,
            })
            .collect(),
        ..Host::default()
    }
}

fn nvidia_gpu(device_id: u16, driver: Option<&str>, module: Option<(&str, &str)>) -> Gpu {
    Gpu {
        device_id: Some(device_id),
        model: "GeForce RTX".into(),
        driver: driver.map(Into::into),
        nvidia: Some(NvidiaInfo {
            kernel_module_flavor: module.map(|m| m.0.to_owned()),
            kernel_module_version: module.map(|m| m.1.to_owned()),
            ..NvidiaInfo::default()
        }),
        ..Gpu::test(Vendor::Nvidia, "0000:01:00.0")
    }
}

const ALL_NV: &[(&str, &str)] = &[
    ("nvidia", "live"),
    ("nvidia_uvm", "live"),
    ("nvidia_drm", "live"),
    ("nvidia_modeset", "live"),
];

fn run(host: &Host, gpu: Gpu, ev: &Inputs) -> Gpu {
    let t = tempfile::tempdir().unwrap();
    let root = HostRoot::new(t.path()).unwrap();
    let mut gpus = [gpu];
    assess(&root, host, &mut gpus, ev);
    let [g] = gpus;
    g
}

#[test]
fn node_metadata_keeps_only_talos_extension_keys() {
    let e = extensions_from_node_metadata([
        ("extensions.talos.dev/amdgpu", "20251021-v1.11.5"),
        ("extensions.talos.dev/siderolabs/mei", "v1.11.5"),
        ("extensions.talos.dev/schematic", "3765..."),
        ("extensions.talos.dev/modules.dep", "6.12.57-talos"),
        ("extensions.talos.dev/", "x"),
        ("extensions.talos.dev/amdgpu", "duplicate"),
        ("feature.node.kubernetes.io/pci-0300_1002.present", "true"),
    ]);
    assert_eq!(
        e,
        Some(vec![
            ext("amdgpu", "20251021-v1.11.5"),
            ext("mei", "v1.11.5")
        ])
    );
    // No Talos key at all: the Node says nothing (not "no extensions").
    assert_eq!(
        extensions_from_node_metadata([("kubernetes.io/os", "linux")]),
        None
    );
    // Only the schematic: Talos publishes, and nothing is installed.
    assert_eq!(
        extensions_from_node_metadata([("extensions.talos.dev/schematic", "3765")]),
        Some(Vec::new())
    );
}

#[test]
fn node_entries_win_and_the_file_fills_gaps() {
    let h = host(
        Some((
            "v1.11.5",
            vec![ext("amd-ucode", "20251021"), ext("amdgpu", "old")],
        )),
        &[],
    );
    let none = Inputs::default();
    assert_eq!(effective_extensions(&h, &none).unwrap().len(), 2);
    let ev = Inputs {
        node_extensions: Some(vec![ext("amdgpu", "20251021-v1.11.5")]),
        nvml: None,
    };
    assert_eq!(
        effective_extensions(&h, &ev).unwrap(),
        vec![
            ext("amd-ucode", "20251021"),
            ext("amdgpu", "20251021-v1.11.5")
        ]
    );
    // An unreadable file without Node labels: unknown.
    let mut broken = h.clone();
    broken.read_errors.extensions_yaml = Some(Unread {
        path: "/etc/extensions.yaml".into(),
        error: "permission denied".into(),
    });
    assert_eq!(effective_extensions(&broken, &none), None);
    assert_eq!(effective_extensions(&broken, &ev).unwrap().len(), 1);
    // Not Talos: no extension list at all.
    assert_eq!(effective_extensions(&host(None, &[]), &ev), None);
}

#[test]
fn legacy_unsuffixed_nvidia_names_are_accepted() {
    let h = host(
        Some((
            "v1.7.6",
            vec![
                ext("nonfree-kmod-nvidia", "535.161.08-v1.7.6"),
                ext("nvidia-container-toolkit", "535.161.08-v1.14.6"),
            ],
        )),
        ALL_NV,
    );
    let g = run(
        &h,
        nvidia_gpu(0x2684, Some("nvidia"), Some(("proprietary", "535.161.08"))),
        &Inputs::default(),
    );
    assert_eq!(g.status, Status::Ok, "{:#?}", g.problems);
}

#[test]
fn a_stale_record_of_a_working_driver_is_not_a_problem() {
    // Kernel first: the module is live and bound, so a suffix for another Talos build is
    // not reported (it could not have loaded if it did not match).
    let h = host(
        Some((
            "v1.11.5",
            vec![
                ext("nonfree-kmod-nvidia-production", "570.172.08-v1.11.4"),
                ext("nvidia-container-toolkit-production", "570.172.08-v1.17.8"),
            ],
        )),
        ALL_NV,
    );
    let g = run(
        &h,
        nvidia_gpu(0x2684, Some("nvidia"), Some(("proprietary", "570.172.08"))),
        &Inputs::default(),
    );
    assert_eq!(g.status, Status::Ok, "{:#?}", g.problems);
    let unbound = run(&h, nvidia_gpu(0x2684, None, None), &Inputs::default());
    assert_eq!(unbound.status, Status::ExtensionVersionMismatch);
    assert!(
        unbound.problems[0]
            .detail
            .contains("built for Talos v1.11.4")
    );
}

#[test]
fn bound_nvidia_missing_helper_modules_and_flavour_mismatch() {
    let h = host(
        Some((
            "v1.11.5",
            vec![
                ext(
                    "nvidia-open-gpu-kernel-modules-production",
                    "570.172.08-v1.11.5",
                ),
                ext("nvidia-container-toolkit-production", "570.172.08-v1.17.8"),
            ],
        )),
        &[("nvidia", "live")],
    );
    let g = run(
        &h,
        nvidia_gpu(0x2684, Some("nvidia"), Some(("proprietary", "570.172.08"))),
        &Inputs::default(),
    );
    let statuses: Vec<Status> = g.problems.iter().map(|p| p.status).collect();
    assert_eq!(
        statuses,
        [Status::DriverVersionMismatch, Status::ModuleNotLoaded],
        "{:#?}",
        g.problems
    );
    assert!(g.problems[0].detail.contains("is open"));
    assert!(
        g.problems[1]
            .hint
            .contains("nvidia_uvm, nvidia_drm, nvidia_modeset to machine.kernel.modules")
    );
}

#[test]
fn blackwell_before_v1_10_is_unsupported_and_lts_is_too_old() {
    let h = host(Some(("v1.9.6", vec![])), &[]);
    let g = run(&h, nvidia_gpu(0x2b85, None, None), &Inputs::default());
    assert_eq!(g.status, Status::UnsupportedByTalosVersion);
    let h = host(
        Some((
            "v1.11.5",
            vec![
                ext("nvidia-open-gpu-kernel-modules-lts", "535.247.01-v1.11.5"),
                ext("nvidia-container-toolkit-lts", "535.247.01-v1.17.8"),
            ],
        )),
        ALL_NV,
    );
    let g = run(
        &h,
        nvidia_gpu(0x2b85, None, Some(("open", "535.247.01"))),
        &Inputs::default(),
    );
    assert_eq!(g.status, Status::DriverVersionMismatch, "{:#?}", g.problems);
    assert!(g.problems[0].detail.contains("branch 535"));
    assert_eq!(g.problems.len(), 1, "{:#?}", g.problems);
}

#[test]
fn an_unparsable_talos_version_is_unknown_but_kernel_checks_run() {
    let h = host(Some(("unknown", vec![])), &[]);
    let g = run(&h, nvidia_gpu(0x2684, None, None), &Inputs::default());
    let statuses: Vec<Status> = g.problems.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [Status::Unknown, Status::ModuleNotLoaded]);
    assert_eq!(g.status, Status::Unknown);
    // Still a Talos node: the fix goes through talosctl, not modprobe.
    assert!(
        g.problems[1].hint.contains("talosctl get extensions"),
        "{}",
        g.problems[1].hint
    );
    assert!(!g.problems[1].hint.contains("modprobe"));
}

#[test]
fn non_talos_hosts_get_kernel_checks_only() {
    let h = host(None, &[]);
    let g = run(&h, nvidia_gpu(0x2684, None, None), &Inputs::default());
    assert_eq!(g.status, Status::ModuleNotLoaded);
    assert!(g.problems[0].hint.contains("modprobe nvidia"));
    let h = host(None, &[("nvidia", "live")]);
    let g = run(
        &h,
        nvidia_gpu(0x2684, Some("nvidia"), Some(("open", "580.95.05"))),
        &Inputs::default(),
    );
    assert_eq!(
        g.status,
        Status::Ok,
        "no extension or machine-config checks off Talos"
    );
    let g = run(
        &h,
        nvidia_gpu(0x2684, Some("nouveau"), None),
        &Inputs::default(),
    );
    assert_eq!(g.status, Status::BoundToOtherDriver);
    assert!(g.problems[0].hint.contains("blacklist nouveau"));
}

#[test]
fn nvidia_without_any_extension_on_talos() {
    let h = host(Some(("v1.11.5", vec![])), &[]);
    let g = run(&h, nvidia_gpu(0x2684, None, None), &Inputs::default());
    let statuses: Vec<Status> = g.problems.iter().map(|p| p.status).collect();
    assert_eq!(
        statuses,
        [Status::ExtensionMissing, Status::ExtensionMissing]
    );
    assert!(
        g.problems[0]
            .hint
            .contains("siderolabs/nvidia-container-toolkit-production")
    );
    assert!(
        g.problems[1]
            .detail
            .contains("no NVIDIA kernel-module extension")
    );
    assert!(g.problems[1].hint.contains(
        "siderolabs/nvidia-open-gpu-kernel-modules-production (or siderolabs/nonfree-kmod-nvidia-production)"
    ));
}

#[test]
fn problem_lines_are_single_lines() {
    let g = nvidia_gpu(0x2684, None, None);
    let mut p = problem(Cause::ModuleUnusable {
        module: "nvidia".into(),
        state: "unloading".into(),
    });
    p.detail = "d".into();
    p.hint = "h".into();
    assert_eq!(
        problem_line(&g, &p),
        "0000:01:00.0 nvidia module-not-loaded: d; fix: h"
    );
}

/// The field bug: on a host whose os-release names another system, Node evidence never makes
/// it Talos, even if some Node carried Talos-looking keys.
#[test]
fn a_readable_non_talos_os_release_wins_over_node_evidence() {
    let mut h = host(None, &[("nvidia", "live")]);
    h.os = Some("Ubuntu 24.04.1 LTS".into());
    let ev = Inputs {
        node_extensions: Some(vec![ext(
            "nonfree-kmod-nvidia-production",
            "570.172.08-v1.11.5",
        )]),
        nvml: None,
    };
    let g = run(
        &h,
        nvidia_gpu(0x2684, Some("nvidia"), Some(("open", "580.95.05"))),
        &ev,
    );
    assert_eq!(g.status, Status::Ok, "{:#?}", g.problems);
    // An os-release that cannot be read: the Node's Talos records do say Talos.
    let mut h = host(None, &[("nvidia", "live")]);
    h.kernel = Some("6.12.57".into());
    h.read_errors.os_release = Some(Unread {
        path: "/etc/os-release".into(),
        error: "permission denied".into(),
    });
    let g = run(
        &h,
        nvidia_gpu(0x2684, Some("nvidia"), Some(("open", "580.95.05"))),
        &ev,
    );
    assert_eq!(g.status, Status::Unknown);
    assert!(matches!(
        g.problems[0].cause,
        Cause::TalosVersionUnreadable {
            evidence: TalosEvidence::Node,
            os_release: OsRelease::Unreadable { .. }
        }
    ));
}

/// Talos before v1.8 publishes no extension records on the Node: keys someone else wrote are
/// ignored, and with an unreadable file the extension set is unknown, nothing missing.
#[test]
fn before_v1_8_node_records_do_not_count_and_unknown_means_nothing_missing() {
    let mut h = host(Some(("v1.7.7", vec![])), ALL_NV);
    h.read_errors.extensions_yaml = Some(Unread {
        path: "/etc/extensions.yaml".into(),
        error: "too many levels of symbolic links".into(),
    });
    let ev = Inputs {
        node_extensions: Some(Vec::new()),
        nvml: None,
    };
    assert_eq!(effective_extensions(&h, &ev), None);
    let g = run(
        &h,
        nvidia_gpu(0x2684, Some("nvidia"), Some(("proprietary", "535.129.03"))),
        &ev,
    );
    let statuses: Vec<Status> = g.problems.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [Status::Unknown], "{:#?}", g.problems);
    assert!(matches!(
        g.problems[0].cause,
        Cause::ExtensionsUnknown {
            node_publishes: false,
            ..
        }
    ));
    // From v1.8 the Node's (empty) record is Talos' own: nothing installed.
    h.talos.as_mut().unwrap().version = "v1.8.3".into();
    assert_eq!(effective_extensions(&h, &ev), Some(Vec::new()));
}

#[test]
fn every_problem_carries_its_cause_and_the_text_is_rendered_from_it() {
    let h = host(Some(("v1.11.5", vec![])), &[]);
    let g = run(&h, nvidia_gpu(0x2684, None, None), &Inputs::default());
    for p in &g.problems {
        let (d, hint) = crate::cause::render(&p.cause, &p.notes);
        assert_eq!(
            (d.as_str(), hint.as_str()),
            (p.detail.as_str(), p.hint.as_str())
        );
        assert_eq!(p.status, p.cause.status());
    }
}
