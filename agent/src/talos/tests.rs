//! Unit tests of the requirements table, per Talos version and vendor.

use super::*;
use crate::cause::Cause;
use crate::vendors::intel::classify;

fn v(s: &str) -> Option<TalosVersion> {
    Some(TalosVersion::parse(s).unwrap())
}

fn facts(vendor: Vendor, device_id: u16, intel: Option<&IntelInfo>) -> GpuFacts<'_> {
    GpuFacts {
        vendor,
        device_id: Some(device_id),
        intel,
        amd_gc_version: None,
        model: "GeForce RTX",
        nvswitches: false,
    }
}

fn supported(n: Need) -> Requirements {
    match n {
        Need::Supported(r) => r,
        Need::Unsupported(cause) => panic!("unsupported: {cause:?}"),
    }
}

fn names(r: &Requirements) -> Vec<Vec<&'static str>> {
    r.extensions.iter().map(|e| e.accepted.clone()).collect()
}

#[test]
fn versions_parse_and_order() {
    assert_eq!(
        TalosVersion::parse("v1.11.5"),
        Some(TalosVersion::new(1, 11, 5))
    );
    assert_eq!(
        TalosVersion::parse("1.8.0"),
        Some(TalosVersion::new(1, 8, 0))
    );
    assert_eq!(
        TalosVersion::parse("v1.12.0-beta.1"),
        Some(TalosVersion::new(1, 12, 0))
    );
    assert_eq!(
        TalosVersion::parse("v1.9"),
        Some(TalosVersion::new(1, 9, 0))
    );
    for bad in ["", "unknown", "v1", "v1.x.0", "v1.2.3.4", "20251021"] {
        assert_eq!(TalosVersion::parse(bad), None, "{bad}");
    }
    assert!(TalosVersion::new(1, 9, 6) < TalosVersion::new(1, 10, 0));
    assert_eq!(TalosVersion::new(1, 10, 2).to_string(), "v1.10.2");
}

#[test]
fn paths_move_under_usr_lib_from_v1_10() {
    assert_eq!(firmware_dir(v("v1.8.3")), "lib/firmware");
    assert_eq!(firmware_dir(v("v1.9.6")), "lib/firmware");
    assert_eq!(firmware_dir(v("v1.10.0")), "usr/lib/firmware");
    assert_eq!(firmware_dir(v("v1.12.1")), "usr/lib/firmware");
    assert_eq!(firmware_dir(None), "lib/firmware");
    assert_eq!(modules_dir(v("v1.8.3")), "lib/modules");
    assert_eq!(modules_dir(v("v1.11.5")), "usr/lib/modules");
}

#[test]
fn extension_versions() {
    assert_eq!(built_for("570.172.08-v1.11.5"), v("v1.11.5"));
    assert_eq!(built_for("20251021-v1.11.5"), v("v1.11.5"));
    assert_eq!(built_for("v1.11.5"), v("v1.11.5"));
    assert_eq!(built_for("20251021"), None);
    assert_eq!(driver_part("570.172.08-v1.17.8"), "570.172.08");
    assert_eq!(driver_major("535.247.01-v1.11.5"), Some(535));
    assert_eq!(
        kmod_flavor("nonfree-kmod-nvidia"),
        Some(Flavor::Proprietary)
    );
    assert_eq!(
        kmod_flavor("nvidia-open-gpu-kernel-modules-lts"),
        Some(Flavor::Open)
    );
    assert_eq!(kmod_flavor("nvidia-container-toolkit-lts"), None);
    assert_eq!(
        nvidia_branch("nvidia-container-toolkit-production"),
        Some("production")
    );
    assert_eq!(nvidia_branch("nonfree-kmod-nvidia"), None);
    assert!(ships_modules("mei") && ships_modules("nonfree-kmod-nvidia-lts"));
    assert!(!ships_modules("amd-ucode") && !ships_modules("nvidia-container-toolkit-lts"));
}

#[test]
fn nvidia_per_version() {
    let rtx4090 = facts(Vendor::Nvidia, 0x2684, None);
    for t in ["v1.8.0", "v1.10.3", "v1.11.5", "v1.12.0"] {
        let r = supported(requirements(v(t), &rtx4090));
        assert_eq!(r.modules, NVIDIA_MODULES, "{t}");
        assert!(!r.autoload);
        // Legacy unsuffixed names stay accepted on every version.
        assert!(names(&r)[0].contains(&"nonfree-kmod-nvidia"));
        assert!(names(&r)[0].contains(&"nvidia-open-gpu-kernel-modules-lts"));
        assert!(names(&r)[1].contains(&"nvidia-container-toolkit"));
        assert!(
            r.extensions[1].suggest.extensions[0].ends_with("-production"),
            "{t}"
        );
    }
    // Before the split the suggestions use the old names.
    let old = supported(requirements(v("v1.7.6"), &rtx4090));
    assert_eq!(
        old.extensions[1].suggest.extensions,
        ["siderolabs/nvidia-container-toolkit"]
    );
    // Off Talos: only the driver module.
    let plain = supported(requirements(None, &rtx4090));
    assert_eq!(plain.modules, ["nvidia"]);
    assert!(plain.extensions.is_empty());
}

#[test]
fn blackwell_needs_open_modules_from_v1_10_and_the_newest_branch_first() {
    let rtx5090 = facts(Vendor::Nvidia, 0x2b85, None);
    match requirements(v("v1.9.6"), &rtx5090) {
        Need::Unsupported(Cause::NvidiaNeedsNewerTalos {
            first_talos,
            ships_max_major,
            extensions,
            ..
        }) => {
            assert_eq!(first_talos, "v1.10.0");
            assert_eq!(ships_max_major, 550);
            assert_eq!(
                extensions,
                [
                    "siderolabs/nvidia-open-gpu-kernel-modules-production",
                    "siderolabs/nvidia-container-toolkit-production"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // v1.10 and v1.11: production (570) is the only branch that drives it.
    let r = supported(requirements(v("v1.10.0"), &rtx5090));
    assert_eq!(
        r.extensions[0].suggest.extensions,
        ["siderolabs/nvidia-open-gpu-kernel-modules-production"]
    );
    // v1.12: LTS (580) is newer than production (570), and both drive it.
    let r = supported(requirements(v("v1.12.0"), &rtx5090));
    assert_eq!(
        r.extensions[0].suggest.extensions,
        [
            "siderolabs/nvidia-open-gpu-kernel-modules-lts",
            "siderolabs/nvidia-open-gpu-kernel-modules-production"
        ]
    );
    // v1.13: production is 595.
    let r = supported(requirements(v("v1.13.0"), &rtx5090));
    assert_eq!(
        r.extensions[0].suggest.extensions[0],
        "siderolabs/nvidia-open-gpu-kernel-modules-production"
    );
}

#[test]
fn pascal_needs_proprietary_modules_and_only_lts_from_v1_13() {
    let gtx1080 = facts(Vendor::Nvidia, 0x1b80, None);
    let r = supported(requirements(v("v1.11.5"), &gtx1080));
    assert_eq!(
        r.extensions[0].suggest.extensions,
        [
            "siderolabs/nonfree-kmod-nvidia-production",
            "siderolabs/nonfree-kmod-nvidia-lts"
        ]
    );
    let r = supported(requirements(v("v1.13.0"), &gtx1080));
    assert_eq!(
        r.extensions[0].suggest.extensions,
        ["siderolabs/nonfree-kmod-nvidia-lts"]
    );
    // Kepler: no Talos NVIDIA extension has its branch (470).
    let gtx680 = facts(Vendor::Nvidia, 0x1180, None);
    assert!(matches!(
        requirements(v("v1.11.5"), &gtx680),
        Need::Unsupported(Cause::NvidiaArchDropped {
            last_major: 470,
            ..
        })
    ));
    // Off Talos nothing is claimed beyond the driver module.
    assert!(matches!(requirements(None, &gtx680), Need::Supported(_)));
}

#[test]
fn nvidia_releases_follow_the_extensions_vars() {
    let row = |s: &str| nvidia_release(TalosVersion::parse(s).unwrap());
    assert_eq!(row("v1.7.7").production, None);
    assert_eq!(row("v1.8.3").production, Some(550));
    assert_eq!(row("v1.10.6").production, Some(570));
    assert_eq!(row("v1.11.5").lts, 535);
    assert_eq!(row("v1.12.0").lts, 580);
    assert_eq!(row("v1.12.0").production, Some(570));
    assert_eq!(row("v1.13.2").production, Some(595));
    // Older and newer than the table: its first and last rows.
    assert_eq!(row("v1.3.0").lts, 535);
    assert_eq!(row("v1.20.0").production, Some(595));
    for w in NVIDIA_RELEASES.windows(2) {
        assert!(w[0].talos < w[1].talos);
    }
    // The open 535 LTS on a GeForce card needs the unsupported-GPUs parameter: said when it is
    // the only open choice (Talos before v1.8).
    let ada = crate::vendors::nvidia_arch::arch_of(0x2684);
    assert!(
        nvidia_kmod_suggestion(v("v1.7.7").unwrap(), ada, "NVIDIA GeForce RTX 4090").open_alpha
    );
    assert!(
        !nvidia_kmod_suggestion(v("v1.11.5").unwrap(), ada, "NVIDIA GeForce RTX 4090").open_alpha
    );
    assert!(!nvidia_kmod_suggestion(v("v1.7.7").unwrap(), ada, "NVIDIA L40S").open_alpha);
}

#[test]
fn nvlink_systems_need_the_fabric_manager() {
    let mut h100 = facts(Vendor::Nvidia, 0x2330, None);
    h100.nvswitches = true;
    let r = supported(requirements(v("v1.11.5"), &h100));
    assert_eq!(r.extensions[2].role, Role::FabricManager);
    assert_eq!(names(&r)[2], NVIDIA_FABRICMANAGERS);
    let r = supported(requirements(v("v1.7.7"), &h100));
    assert_eq!(
        r.extensions[2].suggest.extensions,
        ["siderolabs/nvidia-fabricmanager"]
    );
}

#[test]
fn amd_per_version() {
    let gc = Some("11.5.1");
    let f = GpuFacts {
        vendor: Vendor::Amd,
        device_id: Some(0x1586),
        intel: None,
        amd_gc_version: gc,
        model: "Radeon 8060S",
        nvswitches: false,
    };
    let r18 = supported(requirements(v("v1.8.3"), &f));
    assert!(r18.builtin_driver);
    assert_eq!(names(&r18), [["amdgpu-firmware"]]);
    assert_eq!(
        r18.firmware[0].shipped_by.as_deref(),
        Some("amdgpu-firmware")
    );
    let r19 = supported(requirements(v("v1.9.0"), &f));
    assert!(!r19.builtin_driver);
    assert_eq!(names(&r19), [["amdgpu"]]);
    assert_eq!(r19.extensions[0].role, Role::Driver);
    assert_eq!(r19.firmware[0].prefix, "gc_11_5_1_");
    assert_eq!(r19.modules, ["amdgpu"]);
    assert!(r19.autoload);
    let plain = supported(requirements(None, &f));
    assert!(plain.extensions.is_empty());
    assert_eq!(plain.firmware[0].shipped_by, None);
    // An unbound Strix Halo has no ip_discovery: the id table gives its GC version.
    let unbound = GpuFacts {
        amd_gc_version: None,
        ..f
    };
    let r = supported(requirements(v("v1.10.6"), &unbound));
    assert_eq!(r.firmware[0].prefix, "gc_11_5_1_");
    let unknown_id = GpuFacts {
        device_id: Some(0x6860),
        ..unbound
    };
    let r = supported(requirements(v("v1.10.6"), &unknown_id));
    assert_eq!(
        r.firmware[0].prefix, "",
        "code-named firmware: only the directory is checked"
    );
}

#[test]
fn amd_firmware_names() {
    assert_eq!(
        amd_gc_firmware_prefix("11.5.1").as_deref(),
        Some("gc_11_5_1_")
    );
    assert_eq!(
        amd_gc_firmware_prefix("12.0.1").as_deref(),
        Some("gc_12_0_1_")
    );
    assert_eq!(
        amd_gc_firmware_prefix("10.3.6").as_deref(),
        Some("gc_10_3_6_")
    );
    assert_eq!(
        amd_gc_firmware_prefix("9.4.3").as_deref(),
        Some("gc_9_4_3_")
    );
    // Code-named firmware: no honest prefix from sysfs.
    assert_eq!(amd_gc_firmware_prefix("10.3.3"), None);
    assert_eq!(amd_gc_firmware_prefix("10.1.0"), None);
    assert_eq!(amd_gc_firmware_prefix("9.0.1"), None);
    assert_eq!(amd_gc_firmware_prefix("bogus"), None);
}

#[test]
fn intel_per_version() {
    let a770 = classify(0x56a0);
    let mtl = classify(0x7d55);
    let b580 = classify(0xe20b);
    let lnl = classify(0x64a0);
    let fa = facts(Vendor::Intel, 0x56a0, Some(&a770));
    let fm = facts(Vendor::Intel, 0x7d55, Some(&mtl));
    let fb = facts(Vendor::Intel, 0xe20b, Some(&b580));
    let fl = facts(Vendor::Intel, 0x64a0, Some(&lnl));

    // v1.8: i915 in the base image, firmware from i915-ucode, mei for Arc.
    let r = supported(requirements(v("v1.8.3"), &fa));
    assert!(r.builtin_driver);
    assert_eq!(names(&r), [vec!["i915-ucode"], vec!["mei"]]);
    // The Arc GSC binds to mei_gsc (kernel intel_gsc.c `mei-gsc` aux device), not mei_me.
    assert_eq!(r.modules, ["i915", "mei_gsc"]);
    assert_eq!(r.firmware[0].prefix, "dg2_");
    // v1.9 on: the i915 extension.
    let r = supported(requirements(v("v1.11.5"), &fm));
    assert_eq!(names(&r), [["i915"]]);
    assert_eq!(r.firmware[0].subdir, "i915");
    assert_eq!(r.firmware[0].prefix, "mtl_");
    // Battlemage and Lunar Lake: unsupported before v1.12, xe (+ mei for Arc) after.
    for t in ["v1.8.3", "v1.10.0", "v1.11.5"] {
        for f in [&fb, &fl] {
            assert!(
                matches!(requirements(v(t), f), Need::Unsupported { .. }),
                "{t}"
            );
        }
    }
    let r = supported(requirements(v("v1.12.0"), &fb));
    assert_eq!(names(&r), [vec!["xe"], vec!["mei"]]);
    assert_eq!(r.modules, ["xe", "mei_gsc"]);
    assert_eq!(r.firmware[0].subdir, "xe");
    let r = supported(requirements(v("v1.12.0"), &fl));
    assert_eq!(names(&r), [["xe"]], "Lunar Lake is integrated: no mei");
    // Off Talos: Battlemage just needs xe loaded.
    let r = supported(requirements(None, &fb));
    assert_eq!(r.modules, ["xe"]);
    assert!(r.extensions.is_empty());
    // Flex 170 (Arctic Sound-M) is not an Arc card: no mei claim.
    let flex = classify(0x56c0);
    let r = supported(requirements(
        v("v1.11.5"),
        &facts(Vendor::Intel, 0x56c0, Some(&flex)),
    ));
    assert_eq!(names(&r), [["i915"]]);
}
