//! Driver-stack verdicts on the fixture host roots of `tests/fixtures/verdicts/` (one per
//! failure mode of docs/research/talos-extensions.md §5, plus healthy baselines), the evidence
//! inputs a daemon passes (Node extension labels, NVML), and `gpuscout check`'s exit codes and
//! stderr run as the real binary.

#![allow(clippy::disallowed_methods)] // test code reads fixture trees directly

use crate::util::{gpuscout_as_run as gpuscout, report_with, subdirs, verdict_case, verdicts_dir};
use gpuscout::discover::{self, Evidence, NvmlEvidence, Options};
use gpuscout::hostroot::HostRoot;
use gpuscout::model::{Extension, Report, Status};
use gpuscout::nvml::NvmlFacts;
use gpuscout::talosapi::{self, TalosApiFacts};
use gpuscout::verdict;
use std::collections::BTreeSet;

fn discover_with(case: &str, evidence: Evidence) -> Report {
    report_with(&verdict_case(case), &Options::default(), &evidence)
}

fn discover(case: &str) -> Report {
    discover_with(case, Evidence::default())
}

/// One fixture: how many GPUs it has, the verdict of the GPU at index `gpu`, every problem
/// status it must list (in order), and a substring each problem's hint must contain (same
/// order). `api`: Talos API facts given with the fixture (as `--talos-api` would read them).
struct Case {
    name: &'static str,
    gpus: usize,
    gpu: usize,
    api: Option<fn() -> TalosApiFacts>,
    talos: Option<&'static str>,
    status: Status,
    problems: &'static [(Status, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        name: "talos-amd-ok-v1.8",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.8.3"),
        status: Status::Ok,
        problems: &[],
    },
    Case {
        name: "talos-amd-ok-v1.10",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.10.6"),
        status: Status::Ok,
        problems: &[],
    },
    Case {
        name: "talos-nvidia-ok-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::Ok,
        problems: &[],
    },
    Case {
        name: "talos-intel-ok-v1.12",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.12.0"),
        status: Status::Ok,
        problems: &[],
    },
    Case {
        name: "ubuntu-nvidia-ok",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: None,
        status: Status::Ok,
        problems: &[],
    },
    Case {
        name: "f1-talos-amd-extension-missing-v1.12",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.12.0"),
        status: Status::ExtensionMissing,
        problems: &[(
            Status::ExtensionMissing,
            "add siderolabs/amdgpu (with siderolabs/amd-ucode) to the Image Factory schematic",
        )],
    },
    Case {
        name: "f2-talos-nvidia-modules-not-loaded-v1.10",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.10.6"),
        status: Status::ModuleNotLoaded,
        problems: &[(
            Status::ModuleNotLoaded,
            "add nvidia, nvidia_uvm, nvidia_drm, nvidia_modeset to machine.kernel.modules",
        )],
    },
    Case {
        name: "f4-talos-nvidia-kmod-toolkit-mismatch-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::DriverVersionMismatch,
        problems: &[(
            Status::DriverVersionMismatch,
            "both -lts or both -production",
        )],
    },
    Case {
        name: "f4-talos-nvidia-open-gsp-mismatch-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::FirmwareMissing,
        problems: &[
            (
                Status::DriverVersionMismatch,
                "both -lts or both -production",
            ),
            (
                Status::FirmwareMissing,
                "install siderolabs/nvidia-container-toolkit-production of driver 570.172.08",
            ),
        ],
    },
    Case {
        name: "f5-talos-amd-extension-for-other-talos-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::ExtensionVersionMismatch,
        problems: &[(
            Status::ExtensionVersionMismatch,
            "regenerate the installer for v1.11.5 in Image Factory",
        )],
    },
    Case {
        name: "f6-talos-nvidia-blackwell-proprietary-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::DriverVersionMismatch,
        problems: &[(
            Status::DriverVersionMismatch,
            "replace siderolabs/nonfree-kmod-nvidia-production with siderolabs/nvidia-open-gpu-kernel-modules-production",
        )],
    },
    Case {
        name: "f9-talos-amd-firmware-missing-v1.10",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.10.6"),
        status: Status::FirmwareMissing,
        problems: &[(Status::FirmwareMissing, "lacks amdgpu/gc_11_5_1_*")],
    },
    Case {
        name: "f10-talos-intel-i915-ucode-missing-v1.8",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.8.3"),
        status: Status::FirmwareMissing,
        problems: &[(Status::FirmwareMissing, "add siderolabs/i915-ucode")],
    },
    Case {
        name: "f11-talos-intel-battlemage-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::UnsupportedByTalosVersion,
        problems: &[(
            Status::UnsupportedByTalosVersion,
            "upgrade Talos to v1.12.0 or later and add siderolabs/xe",
        )],
    },
    Case {
        name: "f12-talos-intel-arc-without-mei-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::ExtensionMissing,
        problems: &[(Status::ExtensionMissing, "add siderolabs/mei")],
    },
    Case {
        name: "f13-talos-amd-driver-not-bound-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::DriverNotBound,
        problems: &[(Status::DriverNotBound, "talosctl dmesg | grep 0000:03:00.0")],
    },
    Case {
        name: "talos-nvidia-no-toolkit-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::ExtensionMissing,
        problems: &[
            (
                Status::ExtensionMissing,
                "add siderolabs/nvidia-container-toolkit-lts 535.247.01",
            ),
            (Status::ModuleNotLoaded, "machine.kernel.modules"),
        ],
    },
    Case {
        name: "talos-nvidia-vfio-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::BoundToOtherDriver,
        problems: &[(Status::BoundToOtherDriver, "changes nothing")],
    },
    Case {
        name: "talos-unknown-os-release-loop",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: None,
        status: Status::Unknown,
        problems: &[(Status::Unknown, "mount the host root")],
    },
    Case {
        name: "talos-unknown-extensions-unreadable-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::Unknown,
        problems: &[(Status::Unknown, "read its Node")],
    },
    Case {
        name: "talos-intel-arc-amd-cpu-v1.12",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.12.0"),
        status: Status::Ok,
        problems: &[],
    },
    Case {
        name: "talos-nvidia-pascal-open-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::DriverVersionMismatch,
        problems: &[(
            Status::DriverVersionMismatch,
            "replace siderolabs/nvidia-open-gpu-kernel-modules-production with siderolabs/nonfree-kmod-nvidia-production",
        )],
    },
    Case {
        name: "talos-nvidia-pascal-production-v1.13",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.13.0"),
        status: Status::DriverVersionMismatch,
        problems: &[(
            Status::DriverVersionMismatch,
            "switch to siderolabs/nonfree-kmod-nvidia-lts",
        )],
    },
    Case {
        name: "talos-nvidia-open-lts-geforce-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::DriverNotBound,
        problems: &[(
            Status::DriverNotBound,
            "add NVreg_OpenRmEnableUnsupportedGpus=1 to the nvidia module's parameters",
        )],
    },
    Case {
        name: "talos-nvidia-blackwell-no-kmod-v1.12",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.12.0"),
        status: Status::ExtensionMissing,
        problems: &[
            (
                Status::ExtensionMissing,
                "add siderolabs/nvidia-container-toolkit-lts",
            ),
            (
                Status::ExtensionMissing,
                "add siderolabs/nvidia-open-gpu-kernel-modules-lts (or siderolabs/nvidia-open-gpu-kernel-modules-production)",
            ),
        ],
    },
    Case {
        name: "talos-nvidia-hgx-no-fabricmanager-v1.11",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::ExtensionMissing,
        problems: &[(
            Status::ExtensionMissing,
            "add siderolabs/nvidia-fabricmanager-production 570.172.08 (exactly the kernel-module extension's driver version)",
        )],
    },
    Case {
        name: "talos-nvidia-extensions-unreadable-v1.7",
        gpus: 1,
        gpu: 0,
        api: None,
        talos: Some("v1.7.7"),
        status: Status::Unknown,
        problems: &[(Status::Unknown, "mount the host /etc read-only")],
    },
    Case {
        name: "talos-amd-vfio-and-missing-extension-v1.11",
        gpus: 2,
        gpu: 1,
        api: None,
        talos: Some("v1.11.5"),
        status: Status::ExtensionMissing,
        problems: &[(Status::ExtensionMissing, "add siderolabs/amdgpu")],
    },
    // The Talos API shows no running ext-nvidia-persistenced (Talos keeps a Services resource
    // only while the service runs) next to a bound, healthy driver.
    Case {
        name: "talos-nvidia-ok-v1.11",
        gpus: 1,
        gpu: 0,
        api: Some(api_without_persistenced),
        talos: Some("v1.11.5"),
        status: Status::ServiceNotRunning,
        problems: &[(
            Status::ServiceNotRunning,
            "talosctl logs ext-nvidia-persistenced",
        )],
    },
];

/// Talos API facts of the healthy NVIDIA fixture: its extensions, all four modules in
/// machine.kernel.modules, the GPU bound at boot, and no ext-nvidia-persistenced resource.
fn api_without_persistenced() -> TalosApiFacts {
    let mut f = TalosApiFacts {
        extensions: vec![
            Extension {
                name: "nonfree-kmod-nvidia-production".into(),
                version: "570.172.08-v1.11.5".into(),
            },
            Extension {
                name: "nvidia-container-toolkit-production".into(),
                version: "570.172.08-v1.17.8".into(),
            },
        ],
        kernel_modules: talosapi::NVIDIA_MODULES
            .iter()
            .map(|m| (*m).to_owned())
            .collect(),
        ..TalosApiFacts::default()
    };
    f.services.insert(
        "apid".into(),
        talosapi::ServiceState {
            running: true,
            healthy: true,
            unknown: false,
        },
    );
    f
}

fn report_of(c: &Case) -> Report {
    match c.api {
        None => discover(c.name),
        Some(api) => {
            let root = HostRoot::new(verdict_case(c.name)).unwrap();
            discover::discover(
                &root,
                &Options::default(),
                &Evidence {
                    talos: Some(std::sync::Arc::new(api())),
                    ..Default::default()
                },
            )
        }
    }
}

#[test]
fn every_fixture_gets_its_verdict_and_hint() {
    for c in CASES {
        let r = report_of(c);
        assert_eq!(
            r.host.talos.as_ref().map(|t| t.version.as_str()),
            c.talos,
            "{}: Talos version",
            c.name
        );
        assert_eq!(
            r.gpus.len(),
            c.gpus,
            "{}: GPUs (audio functions and NVSwitches ignored)",
            c.name
        );
        let g = &r.gpus[c.gpu];
        let got: Vec<Status> = g.problems.iter().map(|p| p.status).collect();
        let want: Vec<Status> = c.problems.iter().map(|p| p.0).collect();
        assert_eq!(got, want, "{}: problems {:#?}", c.name, g.problems);
        assert_eq!(g.status, c.status, "{}", c.name);
        for (p, (_, hint)) in g.problems.iter().zip(c.problems) {
            assert!(
                p.hint.contains(hint),
                "{}: hint {:?} lacks {:?}",
                c.name,
                p.hint,
                hint
            );
            assert!(
                !p.hint.contains('\n') && !p.detail.contains('\n'),
                "{}: one-line hint and detail",
                c.name
            );
            assert!(!p.hint.trim().is_empty() && !p.detail.trim().is_empty());
        }
    }
}

#[test]
fn every_verdict_of_spec_5_is_produced_by_a_fixture() {
    let seen: BTreeSet<Status> = CASES
        .iter()
        .map(|c| report_of(c).gpus[c.gpu].status)
        .collect();
    for s in Status::ALL {
        assert!(seen.contains(&s), "no fixture produces {s}");
    }
}

#[test]
fn every_fixture_directory_is_in_the_table() {
    let dirs = subdirs(&verdicts_dir());
    let mut names: Vec<String> = CASES.iter().map(|c| c.name.to_owned()).collect();
    names.sort();
    names.dedup();
    assert_eq!(dirs, names);
}

#[test]
fn talos_layouts_by_version() {
    // Firmware under /lib up to v1.9, under /usr/lib from v1.10: the verdict reads the right one.
    let old = verdict_case("talos-amd-ok-v1.8");
    assert!(old.join("lib/firmware/amdgpu").is_dir());
    assert!(!old.join("usr/lib/firmware").exists());
    let new = verdict_case("f9-talos-amd-firmware-missing-v1.10");
    assert!(new.join("usr/lib/firmware/amdgpu").is_dir());
    assert!(!new.join("lib").exists());
    let f9 = discover("f9-talos-amd-firmware-missing-v1.10");
    assert!(
        f9.gpus[0].problems[0]
            .detail
            .contains("/usr/lib/firmware/amdgpu/gc_11_5_1_*")
    );
    let f10 = discover("f10-talos-intel-i915-ucode-missing-v1.8");
    assert!(
        f10.gpus[0].problems[0]
            .detail
            .contains("/lib/firmware/i915/mtl_*")
    );
    assert!(!f10.gpus[0].problems[0].detail.contains("/usr/lib"));
}

#[test]
fn node_labels_fill_in_for_an_unreadable_extensions_file() {
    let case = "talos-unknown-extensions-unreadable-v1.11";
    let node = verdict::extensions_from_node_metadata([
        (
            "extensions.talos.dev/nonfree-kmod-nvidia-production",
            "570.172.08-v1.11.5",
        ),
        (
            "extensions.talos.dev/nvidia-container-toolkit-production",
            "570.172.08-v1.17.8",
        ),
        (
            "extensions.talos.dev/schematic",
            "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
        ),
        ("extensions.talos.dev/modules.dep", "6.12.57-talos"),
        ("kubernetes.io/hostname", "gpu-1"),
    ])
    .expect("Talos keys present");
    assert_eq!(node.len(), 2, "{node:?}");
    let r = discover_with(
        case,
        Evidence {
            node_extensions: Some(node.clone()),
            ..Default::default()
        },
    );
    assert_eq!(r.gpus[0].status, Status::Ok, "{:#?}", r.gpus[0].problems);
    assert_eq!(r.host.talos.as_ref().unwrap().extensions, node);
}

#[test]
fn node_labels_win_over_the_extensions_file() {
    // The file lists an amdgpu built for v1.10.6; the Node (Talos' own record) says v1.11.5.
    let case = "f5-talos-amd-extension-for-other-talos-v1.11";
    let node = vec![Extension {
        name: "amdgpu".into(),
        version: "20251021-v1.11.5".into(),
    }];
    let r = discover_with(
        case,
        Evidence {
            node_extensions: Some(node),
            ..Default::default()
        },
    );
    let exts = &r.host.talos.as_ref().unwrap().extensions;
    assert!(
        exts.iter()
            .any(|e| e.name == "amdgpu" && e.version == "20251021-v1.11.5")
    );
    assert!(
        exts.iter().any(|e| e.name == "amd-ucode"),
        "file entries the Node lacks stay"
    );
    // No longer a version mismatch: the module simply is not loaded.
    assert_eq!(
        r.gpus[0].status,
        Status::ModuleNotLoaded,
        "{:#?}",
        r.gpus[0].problems
    );
    assert!(r.gpus[0].problems[0].hint.contains("talosctl dmesg"));
}

#[test]
fn node_labels_alone_mark_a_talos_node_whose_os_release_is_unreadable() {
    let r = discover_with(
        "talos-unknown-os-release-loop",
        Evidence {
            node_extensions: Some(Vec::new()),
            ..Default::default()
        },
    );
    assert_eq!(r.gpus[0].status, Status::Unknown);
}

#[test]
fn nvml_evidence_joins_the_version_check() {
    let case = "talos-nvidia-ok-v1.11";
    let with = |nvml: NvmlFacts| {
        discover_with(
            case,
            Evidence {
                nvml: NvmlEvidence::Taken {
                    readings: None,
                    facts: Some(nvml),
                },
                ..Default::default()
            },
        )
    };
    let agree = with(NvmlFacts {
        driver_version: Some("570.172.08".into()),
        cuda_driver_version: Some("12.8".into()),
        version_mismatch: false,
    });
    assert_eq!(agree.gpus[0].status, Status::Ok);
    let differ = with(NvmlFacts {
        driver_version: Some("575.57.08".into()),
        ..NvmlFacts::default()
    });
    assert_eq!(differ.gpus[0].status, Status::DriverVersionMismatch);
    assert!(differ.gpus[0].problems[0].detail.contains("NVML 575.57.08"));
    let broken = with(NvmlFacts {
        version_mismatch: true,
        ..NvmlFacts::default()
    });
    assert_eq!(broken.gpus[0].status, Status::DriverVersionMismatch);
    assert!(
        broken.gpus[0].problems[0]
            .detail
            .contains("Driver/library version mismatch")
    );
    // Off Talos the library is still compared with the loaded module.
    let plain = discover_with(
        "ubuntu-nvidia-ok",
        Evidence {
            nvml: NvmlEvidence::Taken {
                readings: None,
                facts: Some(NvmlFacts {
                    driver_version: Some("570.172.08".into()),
                    ..NvmlFacts::default()
                }),
            },
            ..Default::default()
        },
    );
    assert_eq!(plain.gpus[0].status, Status::DriverVersionMismatch);
    assert!(
        plain.gpus[0].problems[0]
            .detail
            .contains("loaded nvidia module 580.95.05")
    );
}

#[test]
fn an_unreadable_driver_link_is_unknown() {
    let root = HostRoot::new(verdict_case("talos-amd-ok-v1.10")).unwrap();
    let mut r = discover("talos-amd-ok-v1.10");
    r.gpus[0].driver = None;
    let link = gpuscout::model::Unread {
        path: "/sys/devices/pci0000:00/0000:00:08.1/0000:c5:00.0/driver".into(),
        error: "permission denied".into(),
    };
    r.gpus[0].unread.push(link.clone());
    r.gpus[0].driver_link_error = Some(link);
    verdict::assess(&root, &r.host, &mut r.gpus, &verdict::Inputs::default());
    assert_eq!(r.gpus[0].status, Status::Unknown);
    assert_eq!(r.gpus[0].problems.len(), 1);
}

fn root_arg(case: &str) -> String {
    verdict_case(case).display().to_string()
}

#[test]
fn check_exits_0_on_a_healthy_host_and_says_nothing() {
    for case in [
        "talos-nvidia-ok-v1.11",
        "ubuntu-nvidia-ok",
        "talos-intel-ok-v1.12",
    ] {
        let out = gpuscout(&["check", "--root", &root_arg(case)]);
        assert_eq!(out.status.code(), Some(0), "{case}: {out:?}");
        assert!(
            out.stderr.is_empty(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_exits_1_with_one_stderr_line_per_problem() {
    for case in [
        "talos-nvidia-no-toolkit-v1.11",
        "f4-talos-nvidia-kmod-toolkit-mismatch-v1.11",
        "f9-talos-amd-firmware-missing-v1.10",
    ] {
        let report = discover(case);
        let out = gpuscout(&["check", "--root", &root_arg(case)]);
        assert_eq!(out.status.code(), Some(1), "{case}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().collect();
        let expected: Vec<String> = report
            .gpus
            .iter()
            .flat_map(|g| g.problems.iter().map(move |p| verdict::problem_line(g, p)))
            .collect();
        assert_eq!(lines, expected, "{case}");
        assert!(lines.iter().all(
            |l| l.starts_with(&report.gpus[0].pci_address.to_string()) && l.contains("; fix: ")
        ));

        // `discover` shows the same verdicts and hints: in the table and in JSON.
        let table = gpuscout(&["discover", "--root", &root_arg(case)]);
        let table = String::from_utf8(table.stdout).unwrap();
        for l in &lines {
            assert!(table.contains(l), "{case}: table lacks {l:?}\n{table}");
        }
        let json = gpuscout(&["discover", "--format", "json", "--root", &root_arg(case)]);
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        let problems = v["gpus"][0]["problems"].as_array().unwrap();
        assert_eq!(problems.len(), lines.len());
        for (p, want) in problems.iter().zip(&report.gpus[0].problems) {
            assert_eq!(p["status"], want.status.as_str());
            assert_eq!(p["hint"], want.hint.as_str());
        }
        assert_eq!(v["gpus"][0]["status"], report.gpus[0].status.as_str());
    }
    assert_eq!(
        discover("talos-nvidia-no-toolkit-v1.11").gpus[0]
            .problems
            .len(),
        2
    );
}

#[test]
fn check_exits_2_on_usage_and_configuration_errors() {
    let out = gpuscout(&["check", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = gpuscout(&["check", "--root", "/nonexistent/gpuscout-root"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--root /nonexistent/gpuscout-root"),
        "{stderr}"
    );
}

/// Node-level status: a genuine fault on one GPU outranks a GPU passed through to a VM.
#[test]
fn a_genuine_fault_outranks_a_passthrough_gpu_in_the_vendor_status() {
    let r = discover("talos-amd-vfio-and-missing-extension-v1.11");
    assert_eq!(r.gpus[0].status, Status::BoundToOtherDriver);
    assert_eq!(r.gpus[1].status, Status::ExtensionMissing);
    assert_eq!(r.labels["gpuscout.io/amd.status"], "extension-missing");
    assert_eq!(r.labels["gpuscout.io/amd.ready"], "false");
    // A node whose only GPU is passed through still says so.
    let r = discover("talos-nvidia-vfio-v1.11");
    assert_eq!(
        r.labels["gpuscout.io/nvidia.status"],
        "bound-to-other-driver"
    );
}

/// The JSON report carries each problem's typed cause next to the rendered text.
#[test]
fn the_json_report_carries_typed_causes() {
    let json = gpuscout(&[
        "discover",
        "--format",
        "json",
        "--root",
        &root_arg("talos-nvidia-hgx-no-fabricmanager-v1.11"),
    ]);
    assert!(json.status.success(), "{json:?}");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        v["host"]["nvswitches"],
        serde_json::json!([
            "0000:05:00.0",
            "0000:06:00.0",
            "0000:07:00.0",
            "0000:08:00.0"
        ])
    );
    let cause = &v["gpus"][0]["problems"][0]["cause"];
    assert_eq!(cause["kind"], "fabric-manager-missing");
    assert_eq!(
        cause["extension"],
        "siderolabs/nvidia-fabricmanager-production"
    );
    assert_eq!(cause["driver_version"], "570.172.08");
    assert_eq!(cause["nvswitches"].as_array().unwrap().len(), 4);
}
