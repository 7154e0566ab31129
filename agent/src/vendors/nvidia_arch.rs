//! NVIDIA GPU architecture by PCI device id, and what each architecture can run.
//!
//! Pure data, no I/O. The verdicts need the architecture before any NVIDIA library answers
//! (an unbound GPU has no `/proc/driver/nvidia` entry and NVML sees nothing):
//! - Kepler's last driver branch is 470, older than every NVIDIA extension Talos ships (535+);
//! - Maxwell, Pascal and Volta have no GSP, so NVIDIA's open kernel modules cannot drive them
//!   (the open modules' README: "can be used on any Turing or later GPU"), and branch 580 is the
//!   last that supports them (595, the production branch of Talos extensions from v1.13, does
//!   not);
//! - Blackwell runs only on the open modules, branch 570 or later.
//!
//! # Provenance
//!
//! [`RANGES`] groups the device ids of the pciutils PCI ID database (`pci.ids` version
//! 2025.07.11, the copy embedded by the `pci-ids` 0.2.6 crate this agent uses for model names)
//! by the chip code name pci.ids puts first in each NVIDIA device name (`GK104 [GeForce GTX
//! 680]`: GK Kepler, GM Maxwell, GP Pascal, GV Volta, TU Turing, GA Ampere, GH Hopper, AD Ada
//! Lovelace, GB Blackwell; GF Fermi and GT Tesla parts inside the Kepler span are left out).
//! A range spans from the first to the last id of one architecture with no id of another
//! architecture in between. Audio, USB and NVSwitch functions are not GPUs and do not count.
//! `vendors::nvidia_arch::tests` checks the table against every named NVIDIA device of the
//! embedded database, and against the "Compatible GPUs" table of NVIDIA's
//! open-gpu-kernel-modules README (tag 595.45.04, copied to
//! `tests/fixtures/nvidia/open-gpu-compatible-ids.txt`): every id there is Turing or later.
//! An id outside every range has no known architecture ([`arch_of`] gives `None`), and the
//! verdicts then make no architecture-specific claim.

/// An NVIDIA GPU architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    Kepler,
    Maxwell,
    Pascal,
    Volta,
    Turing,
    Ampere,
    Hopper,
    Ada,
    Blackwell,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Kepler => "Kepler",
            Arch::Maxwell => "Maxwell",
            Arch::Pascal => "Pascal",
            Arch::Volta => "Volta",
            Arch::Turing => "Turing",
            Arch::Ampere => "Ampere",
            Arch::Hopper => "Hopper",
            Arch::Ada => "Ada Lovelace",
            Arch::Blackwell => "Blackwell",
        }
    }

    /// Has a GSP, so the open kernel modules can drive it (Turing and later).
    pub fn has_gsp(self) -> bool {
        self >= Arch::Turing
    }

    /// Runs only on the open kernel modules (NVIDIA README `kernel_open`: Blackwell).
    pub fn open_only(self) -> bool {
        self == Arch::Blackwell
    }

    /// Oldest driver branch that supports it, where Talos ever shipped an older one.
    pub fn min_branch(self) -> Option<u32> {
        (self == Arch::Blackwell).then_some(570)
    }

    /// Newest driver branch that supports it: 470 for Kepler (its legacy branch), 580 for
    /// Maxwell, Pascal and Volta (NVIDIA ends their support with the 580 branch); `None`:
    /// supported by every branch so far.
    pub fn max_branch(self) -> Option<u32> {
        match self {
            Arch::Kepler => Some(470),
            Arch::Maxwell | Arch::Pascal | Arch::Volta => Some(580),
            _ => None,
        }
    }

    /// Whether driver branch `major` of this `flavor` ("open" or "proprietary") drives it.
    pub fn runs(self, open: bool, major: u32) -> bool {
        (!open || self.has_gsp())
            && (open || !self.open_only())
            && self.min_branch().is_none_or(|m| major >= m)
            && self.max_branch().is_none_or(|m| major <= m)
    }
}

/// Inclusive device-id ranges of each architecture (see the module docs for the source).
pub const RANGES: &[(u16, u16, Arch)] = &[
    (0x0FA0, 0x103F, Arch::Kepler),    // GK107 ... GK110B
    (0x1180, 0x11FF, Arch::Kepler),    // GK104, GK106
    (0x1280, 0x130F, Arch::Kepler),    // GK208, GK110
    (0x1340, 0x143F, Arch::Maxwell),   // GM108M ... GM206GLM
    (0x15C0, 0x15FF, Arch::Pascal),    // GP100
    (0x1610, 0x167F, Arch::Maxwell),   // GM204M
    (0x1720, 0x172F, Arch::Pascal),    // GP100
    (0x1740, 0x17FF, Arch::Maxwell),   // GM108M ... GM200GL
    (0x1B00, 0x1D7F, Arch::Pascal),    // GP102 ... GP108BM
    (0x1D80, 0x1DFF, Arch::Volta),     // GV100
    (0x1E00, 0x1FFF, Arch::Turing),    // TU102 ... TU117
    (0x2080, 0x20FF, Arch::Ampere),    // GA100
    (0x2180, 0x21FF, Arch::Turing),    // TU116
    (0x2200, 0x223F, Arch::Ampere),    // GA102
    (0x2300, 0x23FF, Arch::Hopper),    // GH100 (GH100 NVSwitch 0x22A3 is not a GPU)
    (0x2400, 0x25FF, Arch::Ampere),    // GA103 ... GA107
    (0x2680, 0x28FF, Arch::Ada),       // AD102 ... AD107
    (0x2900, 0x334F, Arch::Blackwell), // GB100 ... GB120
];

/// The architecture of NVIDIA device `device_id`, if the table knows it.
pub fn arch_of(device_id: u16) -> Option<Arch> {
    RANGES
        .iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&device_id))
        .map(|(_, _, a)| *a)
}

/// Whether a model name is a GeForce, TITAN or workstation (Quadro, RTX A/Ada/PRO) card, the
/// cards NVIDIA's open modules of branch 535 and older drive only with
/// `NVreg_OpenRmEnableUnsupportedGpus=1` (open-gpu-kernel-modules 535 README, "Compatible
/// GPUs": "GeForce and Workstation support is still considered alpha-quality"). Judged from
/// the name the kernel or pci.ids gives: data-centre cards (Tesla, A100, H100, L40, ...) carry
/// none of these words.
pub fn is_geforce_or_workstation(model: &str) -> bool {
    ["GeForce", "TITAN", "Quadro", "RTX", "NVS"]
        .iter()
        .any(|w| model.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chip_arch(name: &str) -> Option<Arch> {
        let b = name.as_bytes();
        if b.len() < 3 || !b[2].is_ascii_digit() {
            return None;
        }
        Some(match &name[..2] {
            "GK" => Arch::Kepler,
            "GM" => Arch::Maxwell,
            "GP" => Arch::Pascal,
            "GV" => Arch::Volta,
            "TU" => Arch::Turing,
            "GA" => Arch::Ampere,
            "GH" => Arch::Hopper,
            "AD" => Arch::Ada,
            "GB" => Arch::Blackwell,
            _ => return None,
        })
    }

    #[test]
    fn ranges_are_sorted_and_disjoint() {
        for w in RANGES.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:?}");
        }
    }

    /// Every NVIDIA GPU of the embedded pci.ids whose name starts with a chip code name maps
    /// to that chip's architecture, and every such id is in the table.
    #[test]
    fn table_matches_every_named_device_of_the_embedded_pci_ids() {
        let nvidia = pci_ids::Vendors::iter()
            .find(|v| v.id() == 0x10de)
            .expect("NVIDIA in pci.ids");
        let mut checked = 0;
        for d in nvidia.devices() {
            let name = d.name();
            if ["Audio", "USB", "UCSI", "NVSwitch"]
                .iter()
                .any(|w| name.contains(w))
            {
                continue;
            }
            let Some(want) = chip_arch(name) else {
                continue;
            };
            assert_eq!(
                arch_of(d.id()),
                Some(want),
                "{:#06x} {name}: table says {:?}",
                d.id(),
                arch_of(d.id())
            );
            checked += 1;
        }
        assert!(checked > 700, "only {checked} devices checked");
    }

    /// NVIDIA's list of GPUs the open kernel modules support: all Turing or later here.
    #[test]
    fn every_open_module_gpu_of_nvidias_list_has_a_gsp() {
        let text = include_str!("../../../tests/fixtures/nvidia/open-gpu-compatible-ids.txt");
        let ids: Vec<u16> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| u16::from_str_radix(l.trim(), 16).unwrap())
            .collect();
        assert!(ids.len() > 250, "{}", ids.len());
        for id in ids {
            let a = arch_of(id).unwrap_or_else(|| panic!("{id:#06x} not in the table"));
            assert!(a.has_gsp(), "{id:#06x} is {a:?}");
        }
    }

    #[test]
    fn what_each_architecture_runs() {
        assert_eq!(arch_of(0x2684), Some(Arch::Ada)); // RTX 4090
        assert_eq!(arch_of(0x2b85), Some(Arch::Blackwell)); // RTX 5090
        assert_eq!(arch_of(0x1b80), Some(Arch::Pascal)); // GTX 1080
        assert_eq!(arch_of(0x1db4), Some(Arch::Volta)); // V100
        assert_eq!(arch_of(0x13c2), Some(Arch::Maxwell)); // GTX 970
        assert_eq!(arch_of(0x1180), Some(Arch::Kepler)); // GTX 680
        assert_eq!(arch_of(0x22a3), None); // H100 NVSwitch
        assert!(!Arch::Pascal.runs(true, 580));
        assert!(Arch::Pascal.runs(false, 580));
        assert!(!Arch::Pascal.runs(false, 595));
        assert!(!Arch::Blackwell.runs(false, 580));
        assert!(!Arch::Blackwell.runs(true, 550));
        assert!(Arch::Blackwell.runs(true, 570));
        assert!(!Arch::Kepler.runs(false, 535));
        assert!(Arch::Ada.runs(true, 535) && Arch::Ada.runs(false, 595));
        assert!(is_geforce_or_workstation("NVIDIA GeForce RTX 4090"));
        assert!(is_geforce_or_workstation("GA102GL [RTX A6000]"));
        assert!(!is_geforce_or_workstation("NVIDIA H100 80GB HBM3"));
        assert!(!is_geforce_or_workstation("Tesla T4"));
    }
}
