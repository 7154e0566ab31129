//! Intel: platform, architecture, and the kernel driver a device id gets, from its PCI device id.
//!
//! Pure table lookup, no I/O. The tables are generated from a kernel tree by
//! `scripts/gen-intel-ids.py` into [`intel_ids`](super::intel_ids) (Linux
//! [`KERNEL_VERSION`](super::intel_ids::KERNEL_VERSION): `include/drm/intel/pciids.h` for every
//! id, `drivers/gpu/drm/i915/i915_pci.c` and `drivers/gpu/drm/xe/xe_pci.c` for which driver lists
//! it and whether that driver needs `force_probe`, their descriptors for the graphics IP and
//! `is_dgfx`); the committed table was generated from Debian's `linux-source-7.2` 7.2.13-1
//! package. Only the platform names and the IP-to-architecture names are typed (in the
//! script). The driver actually bound comes from the PCI `driver` link, never from this table:
//! Tiger Lake to Meteor Lake can run on either driver. Ids the kernel does not list give `None`
//! fields, not a guess.
//!
//! The firmware table ([`firmware`]) is typed here from the kernel's firmware definitions,
//! same kernel: `drivers/gpu/drm/i915/gt/uc/intel_uc_fw.c` (`INTEL_GUC_FIRMWARE_DEFS`,
//! `INTEL_HUC_FIRMWARE_DEFS`, `INTEL_GSC_FIRMWARE_DEFS`), `drivers/gpu/drm/xe/xe_uc_fw.c`
//! (`XE_GUC_FIRMWARE_DEFS`, `XE_HUC_FIRMWARE_DEFS`, `XE_GSC_FIRMWARE_DEFS`) and
//! `drivers/gpu/drm/i915/display/intel_dmc.c` (`dmc_firmware_default`; xe builds the same
//! display code, so its DMC files are under `i915/` too).

use super::intel_ids::{IDS, PLATFORMS, Platform};
use crate::model::IntelInfo;

/// How one kernel driver treats a device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// The driver does not list the id.
    No,
    /// Listed and bound by default.
    Default,
    /// Listed, but the driver binds only with `<driver>.force_probe=<id>` (`require_force_probe`).
    ForceProbe,
}

/// One platform of `pciids.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformRow {
    pub platform: Platform,
    /// The kernel's abbreviation (`CFL`, `ARL`, `BMG`).
    pub kernel: &'static str,
    pub name: &'static str,
    pub arch: Option<&'static str>,
    pub discrete: bool,
}

/// One device id of `pciids.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRow {
    pub id: u16,
    pub platform: Platform,
    pub i915: Bind,
    pub xe: Bind,
}

/// The table row of a device id.
pub fn row(device_id: u16) -> Option<&'static IdRow> {
    IDS.binary_search_by_key(&device_id, |r| r.id)
        .ok()
        .map(|i| &IDS[i])
}

/// The platform row of a platform.
pub fn platform(p: Platform) -> &'static PlatformRow {
    PLATFORMS
        .iter()
        .find(|r| r.platform == p)
        .expect("every generated platform has a row")
}

/// The driver that binds `r` without flags (i915 first: where both list an id, xe needs
/// `force_probe`), else the one that binds it with `force_probe` (with that option).
fn driver_of(r: &IdRow) -> (Option<&'static str>, Option<String>) {
    let opt = |d: &str| Some(format!("{d}.force_probe={:04x}", r.id));
    match (r.i915, r.xe) {
        (Bind::Default, _) => (Some("i915"), None),
        (_, Bind::Default) => (Some("xe"), None),
        (Bind::ForceProbe, _) => (Some("i915"), opt("i915")),
        (_, Bind::ForceProbe) => (Some("xe"), opt("xe")),
        (Bind::No, Bind::No) => (None, None),
    }
}

/// Look up a device id.
pub fn classify(device_id: u16) -> IntelInfo {
    let Some(r) = row(device_id) else {
        return IntelInfo::default();
    };
    let p = platform(r.platform);
    let (driver, force_probe) = driver_of(r);
    IntelInfo {
        arch: p.arch.map(str::to_owned),
        platform: Some(p.name.to_owned()),
        discrete: Some(p.discrete),
        expected_driver: driver.map(str::to_owned),
        force_probe,
    }
}

/// Firmware the kernel loads for a device id under `driver` (`i915` or `xe`): (subdirectory of
/// the firmware directory, file-name prefix). GuC/HuC/GSC first, then the display DMC where the
/// first prefix does not already match it. Empty for
/// ids and platforms the kernel names no firmware for (gen8 and older, Nova Lake, Crescent
/// Island in this kernel).
pub fn firmware(device_id: u16, driver: &str) -> Vec<(&'static str, &'static str)> {
    let Some(r) = row(device_id) else {
        return Vec::new();
    };
    firmware_of(r.platform, driver)
}

fn firmware_of(p: Platform, driver: &str) -> Vec<(&'static str, &'static str)> {
    use Platform as P;
    let xe = driver == "xe";
    // (uc subdir, uc prefix) and the DMC prefix under i915/.
    let (uc, dmc): (Option<(&str, &str)>, Option<&str>) = match p {
        P::Skl => (Some(("i915", "skl_")), Some("skl_dmc")),
        P::Bxt => (Some(("i915", "bxt_")), Some("bxt_dmc")),
        P::Glk => (Some(("i915", "glk_")), Some("glk_dmc")),
        // Kaby/Coffee/Comet Lake (and the Whiskey/Amber Lake ids the kernel runs as them) share
        // the `kbl_` GuC/HuC and DMC (Comet Lake stepping 5+ uses `cml_` GuC/HuC).
        P::Kbl | P::Aml | P::Cfl | P::Whl | P::Cml => (Some(("i915", "kbl_")), Some("kbl_dmc")),
        P::Icl => (Some(("i915", "icl_")), Some("icl_dmc")),
        // Elkhart and Jasper Lake: `ehl_` GuC/HuC, display version 11 loads the ICL DMC.
        P::Ehl | P::Jsl => (Some(("i915", "ehl_")), Some("icl_dmc")),
        P::Tgl => (Some(("i915", "tgl_")), Some("tgl_dmc")),
        P::Rkl => (Some(("i915", "tgl_")), Some("rkl_dmc")),
        P::AdlS | P::RplS => (Some(("i915", "tgl_")), Some("adls_dmc")),
        // ADL-N: i915 runs it as ADL-P (`adlp_`); xe's GuC table gives it `tgl_`.
        P::AdlN if xe => (Some(("i915", "tgl_")), Some("adlp_dmc")),
        P::AdlP | P::AdlN | P::RplP | P::RplU => (Some(("i915", "adlp_")), Some("adlp_dmc")),
        P::Dg1 => (Some(("i915", "dg1_")), Some("dg1_dmc")),
        P::Dg2 => (Some(("i915", "dg2_")), Some("dg2_dmc")),
        // Arctic Sound-M has no display.
        P::AtsM => (Some(("i915", "dg2_")), None),
        // Arrow Lake runs as Meteor Lake in both drivers (mtl_info / mtl_desc).
        P::Mtl | P::Arl => (Some(("i915", "mtl_")), Some("mtl_dmc")),
        P::Lnl => (Some(("xe", "lnl_")), Some("xe2lpd_dmc")),
        P::Bmg => (Some(("xe", "bmg_")), Some("bmg_dmc")),
        P::Ptl => (Some(("xe", "ptl_")), Some("xe3lpd_dmc")),
        // Wildcat Lake runs on xe's ptl_desc (GuC `ptl_`); its display is version 30.02.
        P::Wcl => (Some(("xe", "ptl_")), Some("xe3lpd_3002_dmc")),
        _ => (None, None),
    };
    let mut out: Vec<(&str, &str)> = uc.into_iter().collect();
    // A DMC file the GuC/HuC prefix already matches (`i915/mtl_` covers `i915/mtl_dmc`) is not
    // a second need.
    if let Some(d) = dmc
        && !out
            .iter()
            .any(|(dir, p)| *dir == "i915" && d.starts_with(p))
    {
        out.push(("i915", d));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_devices() {
        let a770 = classify(0x56a0);
        assert_eq!(a770.arch.as_deref(), Some("xe-hpg"));
        assert_eq!(a770.platform.as_deref(), Some("Alchemist"));
        assert_eq!(a770.discrete, Some(true));
        assert_eq!(a770.expected_driver.as_deref(), Some("i915"));
        let b580 = classify(0xe20b);
        assert_eq!(b580.arch.as_deref(), Some("xe2"));
        assert_eq!(b580.expected_driver.as_deref(), Some("xe"));
        assert_eq!(b580.force_probe, None);
        let mtl = classify(0x7d55);
        assert_eq!(mtl.arch.as_deref(), Some("xe-lpg"));
        assert_eq!(mtl.discrete, Some(false));
        assert_eq!(classify(0x64a0).platform.as_deref(), Some("Lunar Lake"));
        assert_eq!(classify(0x56c0).platform.as_deref(), Some("Arctic Sound-M"));
        assert_eq!(classify(0x0001), IntelInfo::default());
    }

    /// The rows the old hand-typed table had wrong (kernel 7.2 `pciids.h`).
    #[test]
    fn corrected_platforms() {
        let name = |id| classify(id).platform;
        // 0x4541..0x4571 are Elkhart Lake (INTEL_EHL_IDS), 0x4e51..0x4e71 Jasper Lake, both gen11.
        for id in [0x4541, 0x4551, 0x4555, 0x4557, 0x4570, 0x4571] {
            assert_eq!(name(id).as_deref(), Some("Elkhart Lake"), "{id:#x}");
            assert_eq!(classify(id).arch.as_deref(), Some("gen11"));
        }
        for id in [0x4e51, 0x4e55, 0x4e57, 0x4e61, 0x4e71] {
            assert_eq!(name(id).as_deref(), Some("Jasper Lake"), "{id:#x}");
        }
        // Arrow Lake (INTEL_ARL_IDS), not Meteor Lake.
        for id in [0x7d41, 0x7d51, 0x7d67, 0x7dd1, 0xb640] {
            assert_eq!(name(id).as_deref(), Some("Arrow Lake"), "{id:#x}");
            assert_eq!(classify(id).arch.as_deref(), Some("xe-lpg"));
        }
        // Older iGPUs homelab transcoders run.
        assert_eq!(name(0x3e92).as_deref(), Some("Coffee Lake")); // UHD 630
        assert_eq!(name(0x0412).as_deref(), Some("Haswell"));
        assert_eq!(name(0x3185).as_deref(), Some("Gemini Lake"));
        assert_eq!(name(0x5a85).as_deref(), Some("Apollo Lake"));
        assert_eq!(name(0x46d1).as_deref(), Some("Alder Lake-N")); // N100
        assert_eq!(classify(0x3e92).arch.as_deref(), Some("gen9"));
        assert_eq!(classify(0x0412).arch.as_deref(), Some("gen7"));
        // Wildcat Lake runs on xe by default.
        let wcl = classify(0xfd80);
        assert_eq!(wcl.platform.as_deref(), Some("Wildcat Lake"));
        assert_eq!(wcl.expected_driver.as_deref(), Some("xe"));
        // Ponte Vecchio: every kernel id, and no upstream driver lists it in 7.2.
        for id in [0x0b69, 0x0b6e, 0x0bd4, 0x0bdb, 0x0be0, 0x0be1, 0x0be5] {
            let pvc = classify(id);
            assert_eq!(pvc.platform.as_deref(), Some("Ponte Vecchio"), "{id:#x}");
            assert_eq!(pvc.expected_driver, None);
        }
    }

    #[test]
    fn force_probe() {
        // Arctic Sound-M needs force_probe in i915 and xe; Nova Lake-S only in xe.
        let flex = classify(0x56c0);
        assert_eq!(flex.expected_driver.as_deref(), Some("i915"));
        assert_eq!(flex.force_probe.as_deref(), Some("i915.force_probe=56c0"));
        let nvl = classify(0xd740);
        assert_eq!(nvl.expected_driver.as_deref(), Some("xe"));
        assert_eq!(nvl.force_probe.as_deref(), Some("xe.force_probe=d740"));
        assert_eq!(classify(0x3e92).force_probe, None);
    }

    #[test]
    fn firmware_prefixes() {
        assert_eq!(
            firmware(0xb080, "xe"),
            vec![("xe", "ptl_"), ("i915", "xe3lpd_dmc")]
        );
        assert_eq!(
            firmware(0xe20b, "xe"),
            vec![("xe", "bmg_"), ("i915", "bmg_dmc")]
        );
        // xe loads Meteor Lake's firmware from i915/.
        assert_eq!(firmware(0x7d55, "xe"), vec![("i915", "mtl_")]);
        assert_eq!(firmware(0x3e92, "i915"), vec![("i915", "kbl_")]);
        // Jasper Lake: ehl_ GuC/HuC, and the Ice Lake DMC.
        assert_eq!(
            firmware(0x4e71, "i915"),
            vec![("i915", "ehl_"), ("i915", "icl_dmc")]
        );
        assert!(firmware(0x0412, "i915").is_empty());
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for w in IDS.windows(2) {
            assert!(w[0].id < w[1].id, "{:#x} then {:#x}", w[0].id, w[1].id);
        }
        for p in PLATFORMS {
            assert!(IDS.iter().any(|r| r.platform == p.platform), "{}", p.name);
        }
    }

    /// Coverage of the embedded PCI ID database (pciutils `pci.ids` in the `pci-ids` crate):
    /// every Intel device whose pci.ids name marks it as a GPU is in the kernel table, unless it
    /// is one of the ids the kernel does not list (named here with the reason).
    #[test]
    fn pci_ids_gpus_are_classified() {
        let gpu_words = ["Graphics", "Arc ", "Iris", "UHD", "Data Center GPU", "Xe "];
        // GPUs pci.ids names that Linux 7.2 lists in neither i915 nor xe: pre-i830 chipsets,
        // PowerVR-based parts (GMA 500, Moorestown), Lakefield (never enabled upstream), and
        // pre-production or unreleased ids the kernel dropped or never added.
        let not_kernel: &[(u16, &str)] = &[
            (0x1240, "i752, before i830"),
            (0x1a12, "Timna, never released"),
            (0x2780, "915G second function, not a display function"),
            (0x2e5b, "GMA 500, PowerVR (gma500 driver)"),
            (0x4100, "Moorestown, PowerVR (gma500 driver)"),
            (0x4636, "ADL-P id not in INTEL_ADLP_IDS"),
            (0x4638, "ADL-P id not in INTEL_ADLP_IDS"),
            (0x463a, "ADL-P id not in INTEL_ADLP_IDS"),
            (0x46b6, "ADL-P id not in INTEL_ADLP_IDS"),
            (0x46b8, "ADL-P id not in INTEL_ADLP_IDS"),
            (0x46ba, "ADL-P id not in INTEL_ADLP_IDS"),
            (0x4f80, "DG2 pre-production, not in INTEL_DG2_IDS"),
            (0x4f81, "DG2 pre-production, not in INTEL_DG2_IDS"),
            (0x4f82, "DG2 pre-production, not in INTEL_DG2_IDS"),
            (0x4f83, "DG2 pre-production, not in INTEL_DG2_IDS"),
            (0x4f84, "DG2 pre-production, not in INTEL_DG2_IDS"),
            (0x4f85, "DG2 pre-production, not in INTEL_DG2_IDS"),
            (0x4f86, "DG2 pre-production, not in INTEL_DG2_IDS"),
            (0x4f87, "DG2 pre-production, not in INTEL_DG2_IDS"),
            (0x4f88, "DG2 pre-production, not in INTEL_DG2_IDS"),
            (0x4f89, "ACM-P, not in INTEL_DG2_IDS"),
            (0x4f8c, "ACM-P, not in INTEL_DG2_IDS"),
            (0x5002, "LE80578 (CE media processor)"),
            (0x5698, "DG2 id not in INTEL_DG2_IDS"),
            (0x56a7, "DG2 id not in INTEL_DG2_IDS"),
            (0x56a8, "DG2 id not in INTEL_DG2_IDS"),
            (0x56a9, "DG2 id not in INTEL_DG2_IDS"),
            (0x7800, "i740 AGP card"),
            (0x9840, "Lakefield, never enabled upstream"),
            (0x9841, "Lakefield, never enabled upstream"),
            (0xe215, "BMG G21 id not in INTEL_BMG_IDS"),
        ];
        let vendor = pci_ids::Vendors::iter()
            .find(|v| v.id() == 0x8086)
            .expect("Intel in pci.ids");
        let mut missing = Vec::new();
        for d in vendor.devices() {
            let name = d.name();
            let gpu = gpu_words.iter().any(|w| name.contains(w))
                && !name.contains("Audio")
                && !name.contains("Controller")
                && !name.contains("Graphics Port");
            let excused = not_kernel.iter().any(|(id, _)| *id == d.id());
            if gpu && row(d.id()).is_none() && !excused {
                missing.push(format!("{:04x} {name}", d.id()));
            }
        }
        assert!(
            missing.is_empty(),
            "pci.ids GPUs missing from the table: {missing:#?}"
        );
        // The exceptions stay true: none of them is in the kernel table.
        for (id, why) in not_kernel {
            assert!(
                row(*id).is_none(),
                "{id:#06x} ({why}) is in the kernel table now"
            );
        }
    }
}
