//! Intel: architecture, platform and the driver a device needs, from its PCI device id.
//!
//! Pure table lookup (sources: the kernel's `i915_pciids.h` / `xe_pciids.h` ranges and
//! `docs/research/sysfs-and-vendor-libs.md` §5). The driver that is actually bound comes from the PCI
//! `driver` link, never from this table: DG2 and Meteor Lake can run on either driver. Unknown
//! ids give `None` fields, not a guess.

use crate::model::IntelInfo;

struct Family {
    arch: &'static str,
    platform: &'static str,
    discrete: bool,
    /// The driver Talos and mainline bind by default.
    driver: &'static str,
}

const fn fam(
    arch: &'static str,
    platform: &'static str,
    discrete: bool,
    driver: &'static str,
) -> Family {
    Family {
        arch,
        platform,
        discrete,
        driver,
    }
}

/// (first id, last id, family). Ranges are inclusive and do not overlap.
const TABLE: &[(u16, u16, Family)] = &[
    (0x0bd0, 0x0bdb, fam("xe-hpc", "Ponte Vecchio", true, "xe")),
    (0x1900, 0x193f, fam("gen9", "Skylake", false, "i915")),
    (0x3e90, 0x3ea9, fam("gen9", "Coffee Lake", false, "i915")),
    (0x4541, 0x4557, fam("xe-lp", "Elkhart Lake", false, "i915")),
    (0x4570, 0x4571, fam("gen11", "Jasper Lake", false, "i915")),
    (0x4680, 0x46d4, fam("xe-lp", "Alder Lake", false, "i915")),
    (0x4905, 0x4909, fam("xe-lp", "DG1", true, "i915")),
    (0x4c8a, 0x4c9a, fam("xe-lp", "Rocket Lake", false, "i915")),
    (0x4e51, 0x4e71, fam("gen11", "Elkhart Lake", false, "i915")),
    (0x5690, 0x56bf, fam("xe-hpg", "Alchemist", true, "i915")),
    (
        0x56c0,
        0x56c2,
        fam("xe-hpg", "Arctic Sound-M", true, "i915"),
    ),
    (0x5900, 0x593b, fam("gen9", "Kaby Lake", false, "i915")),
    (0x6420, 0x6420, fam("xe2", "Lunar Lake", false, "xe")),
    (0x64a0, 0x64b0, fam("xe2", "Lunar Lake", false, "xe")),
    (0x7d40, 0x7d67, fam("xe-lpg", "Meteor Lake", false, "i915")),
    (0x7dd1, 0x7dd5, fam("xe-lpg", "Meteor Lake", false, "i915")),
    (0x8a50, 0x8a71, fam("gen11", "Ice Lake", false, "i915")),
    (0x9a40, 0x9af8, fam("xe-lp", "Tiger Lake", false, "i915")),
    (0x9b21, 0x9bf6, fam("gen9", "Comet Lake", false, "i915")),
    (0xa780, 0xa7ad, fam("xe-lp", "Raptor Lake", false, "i915")),
    (0xb080, 0xb0b0, fam("xe3", "Panther Lake", false, "xe")),
    (0xe202, 0xe223, fam("xe2", "Battlemage", true, "xe")),
];

/// Look up a device id.
pub fn classify(device_id: u16) -> IntelInfo {
    TABLE
        .iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&device_id))
        .map(|(_, _, f)| IntelInfo {
            arch: Some(f.arch.to_owned()),
            platform: Some(f.platform.to_owned()),
            discrete: Some(f.discrete),
            expected_driver: Some(f.driver.to_owned()),
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_devices() {
        let a770 = classify(0x56a0);
        assert_eq!(a770.arch.as_deref(), Some("xe-hpg"));
        assert_eq!(a770.discrete, Some(true));
        let b580 = classify(0xe20b);
        assert_eq!(b580.arch.as_deref(), Some("xe2"));
        assert_eq!(b580.expected_driver.as_deref(), Some("xe"));
        let mtl = classify(0x7d55);
        assert_eq!(mtl.arch.as_deref(), Some("xe-lpg"));
        assert_eq!(mtl.discrete, Some(false));
        assert_eq!(classify(0x64a0).platform.as_deref(), Some("Lunar Lake"));
        assert_eq!(classify(0x56c0).platform.as_deref(), Some("Arctic Sound-M"));
        assert_eq!(classify(0x0001), IntelInfo::default());
    }

    #[test]
    fn ranges_are_sorted_and_disjoint() {
        for w in TABLE.windows(2) {
            assert!(w[0].1 < w[1].0, "{:#x} overlaps {:#x}", w[0].1, w[1].0);
        }
        for (lo, hi, _) in TABLE {
            assert!(lo <= hi);
        }
    }
}
