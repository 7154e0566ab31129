//! The Talos requirements table: per vendor and Talos version, which system extensions, kernel
//! modules and firmware files a GPU needs, and where Talos keeps modules and firmware.
//!
//! Pure data and pure functions, no I/O; [`crate::verdict`] compares this table with what the
//! host shows.
//!
//! # Sources (upstream file, version)
//!
//! - NVIDIA: one kernel-module extension (`nonfree-kmod-nvidia-{lts,production}` or
//!   `nvidia-open-gpu-kernel-modules-{lts,production}`; before extensions v1.8.0 the names had no
//!   suffix (siderolabs/extensions `hack/release.toml` at v1.8.0), and those legacy names are
//!   still accepted) plus the matching `nvidia-container-toolkit-*`. The modules `nvidia`,
//!   `nvidia_uvm`, `nvidia_drm` and `nvidia_modeset` ([`NVIDIA_MODULES`]) are blacklisted by the
//!   extension's `nvidia.conf` and must be listed in `machine.kernel.modules` (siderolabs/talos
//!   v1.10 `website/content/v1.10/talos-guides/configuration/nvidia-gpu-proprietary.md`).
//!   Which driver branch each Talos release ships is [`NVIDIA_RELEASES`] (siderolabs/extensions
//!   `nvidia-gpu/vars.yaml` per release tag); which branch and flavour each GPU architecture
//!   runs is [`crate::vendors::nvidia_arch`]. NVLink systems (NVSwitch functions present) also
//!   need `nvidia-fabricmanager-{lts,production}` at exactly the driver version
//!   (`nvidia-gpu/nvidia-fabricmanager/*/manifest.yaml.tmpl`: `VERSION` is the bare driver
//!   version, extensions v1.11.5).
//! - AMD: `amdgpu` from Talos v1.9; up to v1.8 the driver is in the base image and only
//!   `amdgpu-firmware` is needed (siderolabs/talos v1.9.0 `hack/release.toml`; v1.8.0
//!   `hack/modules-amd64.txt`). `amd-ucode` (CPU microcode) is advised, never required.
//! - Intel: `i915` from v1.9 (up to v1.8 the driver is in the base image plus `i915-ucode`);
//!   `xe` only from v1.12 (siderolabs/extensions v1.12.0, commit 3f0e872), so Battlemage and
//!   Lunar Lake (xe-only) are unsupported before that; `mei` (`compatibility: >= v1.8.0`,
//!   `drivers/mei/manifest.yaml.tmpl`) for Arc discrete cards, whose graphics security
//!   controller is an auxiliary device `mei-gsc` / `mei-gscfi` (kernel
//!   `drivers/gpu/drm/i915/gt/intel_gsc.c`, `drivers/gpu/drm/xe/xe_heci_gsc.c`) bound by the
//!   `mei_gsc` module (`drivers/misc/mei/gsc-me.c`), which the `mei` extension ships
//!   (`drivers/mei/README.md`). `mei_me` drives only the chipset ME, which AMD hosts lack.
//! - Modules and firmware live under `/usr/lib` from Talos v1.10 and under `/lib` before
//!   (siderolabs/talos `pkg/machinery/imager/quirks/quirks.go`, `minTalosVersionUsrMerge`).
//! - Talos publishes installed extensions on its Node from v1.8.0 (siderolabs/talos commit
//!   7a1c62b8b, `internal/app/machined/pkg/controllers/k8s/node_label_spec.go`).

use crate::cause::{Cause, Suggestion};
use crate::model::{IntelInfo, Vendor};
use crate::vendors::nvidia_arch::{self, Arch};
use std::fmt;

/// A Talos release `vMAJOR.MINOR.PATCH` (a pre-release suffix such as `-beta.1` is ignored for
/// ordering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TalosVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl TalosVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parse `v1.11.5`, `1.11.5`, `v1.12.0-beta.1` or `v1.11`. Anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let core = s.split_once('-').map_or(s, |(c, _)| c);
        let mut it = core.split('.');
        let num = |p: Option<&str>| -> Option<u32> {
            let p = p?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 6 {
                return None;
            }
            p.parse().ok()
        };
        let major = num(it.next())?;
        let minor = num(it.next())?;
        let patch = match it.next() {
            None => 0,
            some => num(some)?,
        };
        if it.next().is_some() {
            return None;
        }
        Some(Self::new(major, minor, patch))
    }
}

impl fmt::Display for TalosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// First Talos with modules and firmware under `/usr/lib` (`minTalosVersionUsrMerge`).
pub const USR_MERGE: TalosVersion = TalosVersion::new(1, 10, 0);
/// First Talos whose base image no longer carries the `amdgpu` and `i915` drivers.
pub const DRM_AS_EXTENSIONS: TalosVersion = TalosVersion::new(1, 9, 0);
/// First Talos with the `-lts` / `-production` NVIDIA extension names.
pub const NVIDIA_SUFFIXED: TalosVersion = TalosVersion::new(1, 8, 0);
/// First Talos with the `xe` extension.
pub const XE: TalosVersion = TalosVersion::new(1, 12, 0);
/// First Talos that publishes installed extensions on its Node as `extensions.talos.dev/*`
/// labels and annotations (siderolabs/talos commit 7a1c62b8b, in v1.8.0).
pub const NODE_EXTENSION_LABELS: TalosVersion = TalosVersion::new(1, 8, 0);
/// First `mei` extension (`compatibility: >= v1.8.0`).
pub const MEI: TalosVersion = TalosVersion::new(1, 8, 0);

/// Host directory of kernel modules (relative to the host root) on this Talos version, or on a
/// non-Talos host (`None`: the kernel's own `/lib/modules`).
pub fn modules_dir(talos: Option<TalosVersion>) -> &'static str {
    match talos {
        Some(v) if v >= USR_MERGE => "usr/lib/modules",
        _ => "lib/modules",
    }
}

/// Host directory of firmware files (relative to the host root) on this Talos version, or on a
/// non-Talos host (`None`: the kernel's default search path `/lib/firmware`).
pub fn firmware_dir(talos: Option<TalosVersion>) -> &'static str {
    match talos {
        Some(v) if v >= USR_MERGE => "usr/lib/firmware",
        _ => "lib/firmware",
    }
}

/// What an extension contributes to a GPU's driver stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The kernel driver itself (`.ko` files, usually with its firmware).
    Driver,
    /// Firmware only (Talos ≤ v1.8 `amdgpu-firmware`, `i915-ucode`).
    Firmware,
    /// NVIDIA user space: libraries, runtime, and the GSP firmware of the open modules.
    ContainerToolkit,
    /// Intel Management Engine modules needed by Arc discrete cards.
    Mei,
    /// NVIDIA fabric manager of NVLink/NVSwitch systems.
    FabricManager,
}

/// One required extension: any name in `accepted` satisfies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionNeed {
    pub role: Role,
    pub accepted: Vec<&'static str>,
    /// What to add to the Image Factory schematic when none is installed.
    pub suggest: Suggestion,
}

/// Firmware the driver loads for this GPU: some file in `subdir` of the firmware directory
/// whose name starts with `prefix` (any file when `prefix` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareNeed {
    pub subdir: String,
    pub prefix: String,
    /// The extension that ships these files on Talos (`None` on other hosts).
    pub shipped_by: Option<String>,
}

/// What a supported GPU needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// Modules that must be live, the driver's own module first.
    pub modules: Vec<&'static str>,
    /// False where the modules are blacklisted and must be listed in `machine.kernel.modules`.
    pub autoload: bool,
    /// True where the driver is part of the Talos base image (no extension ships it).
    pub builtin_driver: bool,
    pub extensions: Vec<ExtensionNeed>,
    pub firmware: Vec<FirmwareNeed>,
}

/// The table's answer for one GPU on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    Supported(Requirements),
    /// No extension for this Talos version can drive the GPU: the cause says why.
    Unsupported(Cause),
}

/// What the table needs to know about a GPU.
#[derive(Debug, Clone, Copy)]
pub struct GpuFacts<'a> {
    pub vendor: Vendor,
    pub device_id: Option<u16>,
    pub intel: Option<&'a IntelInfo>,
    /// AMD graphics-core IP version (`11.5.1`).
    pub amd_gc_version: Option<&'a str>,
    /// Model name (for NVIDIA: GeForce/workstation or data centre).
    pub model: &'a str,
    /// NVSwitch functions on the host (NVIDIA: the fabric manager is needed).
    pub nvswitches: bool,
}

/// NVIDIA kernel-module flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Open,
    Proprietary,
}

impl Flavor {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Open => "open",
            Flavor::Proprietary => "proprietary",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Flavor::Open),
            "proprietary" => Some(Flavor::Proprietary),
            _ => None,
        }
    }
}

/// The NVIDIA kernel-module extension names, legacy unsuffixed names included.
pub const NVIDIA_KMODS: &[&str] = &[
    "nonfree-kmod-nvidia-production",
    "nonfree-kmod-nvidia-lts",
    "nonfree-kmod-nvidia",
    "nvidia-open-gpu-kernel-modules-production",
    "nvidia-open-gpu-kernel-modules-lts",
    "nvidia-open-gpu-kernel-modules",
];
/// The container-toolkit extension names, legacy unsuffixed name included.
pub const NVIDIA_TOOLKITS: &[&str] = &[
    "nvidia-container-toolkit-production",
    "nvidia-container-toolkit-lts",
    "nvidia-container-toolkit",
];
/// The fabric-manager extension names, legacy unsuffixed name included.
pub const NVIDIA_FABRICMANAGERS: &[&str] = &[
    "nvidia-fabricmanager-production",
    "nvidia-fabricmanager-lts",
    "nvidia-fabricmanager",
];
/// The NVIDIA modules the kernel-module extensions ship and Talos' docs list in
/// `machine.kernel.modules` (the one definition; the Talos API refinements use it too).
pub const NVIDIA_MODULES: &[&str] = &["nvidia", "nvidia_uvm", "nvidia_drm", "nvidia_modeset"];
/// Extension service of the NVIDIA container toolkit (`nvidia-persistenced.yaml`, all
/// releases); it depends on `/sys/bus/pci/drivers/nvidia`.
pub const PERSISTENCED_SERVICE: &str = "ext-nvidia-persistenced";
/// Extension service of the fabric-manager extension (`nvidia-fabricmanager.yaml`).
pub const FABRICMANAGER_SERVICE: &str = "ext-nvidia-fabricmanager";

/// The NVIDIA driver branches the extensions of one Talos minor release ship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvidiaRelease {
    /// Talos `major.minor`.
    pub talos: (u32, u32),
    /// Branch of the `-lts` extensions (of the unsuffixed ones before v1.8, which Image
    /// Factory maps to LTS).
    pub lts: u32,
    /// Branch of the `-production` extensions; `None` before v1.8 (no split).
    pub production: Option<u32>,
}

/// NVIDIA driver branches per Talos release, from `NVIDIA_DRIVER_VERSION` (before v1.8) and
/// `NVIDIA_DRIVER_LTS_VERSION` / `NVIDIA_DRIVER_PRODUCTION_VERSION` of siderolabs/extensions
/// `nvidia-gpu/vars.yaml`, read at the first and last tag of each release line:
///
/// | Talos | first tag (commit) lts / production | last tag (commit) lts / production |
/// |---|---|---|
/// | 1.6 | v1.6.0 (633b56c895d4) 535.129.03 | v1.6.8 (5fd0f0e590e8) 535.129.03 |
/// | 1.7 | v1.7.0 (df8a6501bdc2) 535.129.03 | v1.7.7 (b3bcf4831126) 535.129.03 |
/// | 1.8 | v1.8.0 (c9ff6aa57265) 535.183.06 / 550.90.07 | v1.8.4 (3003151acd9d) 535.183.06 / 550.90.07 |
/// | 1.9 | v1.9.0 (7ddf83000a50) 535.216.03 / 550.127.08 | v1.9.6 (cc93968e12d7) 535.230.02 / 550.144.03 |
/// | 1.10 | v1.10.0 (fc876528380e) 535.230.02 / 570.124.06 | v1.10.9 (3f723c5a275d) 535.247.01 / 570.148.08 |
/// | 1.11 | v1.11.0 (c0e076777d48) 535.247.01 / 570.172.08 | v1.11.6 (de3db91bcd11) 535.247.01 / 570.172.08 |
/// | 1.12 | v1.12.0 (5572e8251d3a) 580.105.08 / 570.195.03 | v1.12.11 (33ddf1cc4975) 580.126.20 / 570.211.01 |
/// | 1.13 | v1.13.0 (a4ec7bbcb845) 580.126.20 / 595.58.03 | v1.13.9 (ec9d5f68fcfb) 580.178.04 / 595.91.07 |
/// | 1.14 | v1.14.0-rc.1 (5732907953bd) 580.178.04 / 595.91.07 | (pre-release) |
///
/// From 1.12 the LTS branch (580) is newer than production (570); from 1.13 production (595)
/// drops Maxwell, Pascal and Volta, which only `-lts` (580) still drives. A Talos older than
/// the first row is judged by the first row, a newer one by the last.
pub const NVIDIA_RELEASES: &[NvidiaRelease] = &[
    NvidiaRelease {
        talos: (1, 6),
        lts: 535,
        production: None,
    },
    NvidiaRelease {
        talos: (1, 7),
        lts: 535,
        production: None,
    },
    NvidiaRelease {
        talos: (1, 8),
        lts: 535,
        production: Some(550),
    },
    NvidiaRelease {
        talos: (1, 9),
        lts: 535,
        production: Some(550),
    },
    NvidiaRelease {
        talos: (1, 10),
        lts: 535,
        production: Some(570),
    },
    NvidiaRelease {
        talos: (1, 11),
        lts: 535,
        production: Some(570),
    },
    NvidiaRelease {
        talos: (1, 12),
        lts: 580,
        production: Some(570),
    },
    NvidiaRelease {
        talos: (1, 13),
        lts: 580,
        production: Some(595),
    },
    NvidiaRelease {
        talos: (1, 14),
        lts: 580,
        production: Some(595),
    },
];

/// The NVIDIA release row of Talos `v`.
pub fn nvidia_release(v: TalosVersion) -> NvidiaRelease {
    let key = (v.major, v.minor);
    NVIDIA_RELEASES
        .iter()
        .rev()
        .find(|r| r.talos <= key)
        .or(NVIDIA_RELEASES.first())
        .copied()
        .unwrap_or(NvidiaRelease {
            talos: key,
            lts: 535,
            production: None,
        })
}

/// One NVIDIA kernel-module extension that can drive a GPU on some Talos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmodChoice {
    /// Extension name without `siderolabs/`.
    pub name: String,
    pub major: u32,
    pub open: bool,
    /// `lts` or `production`; `None` for the unsuffixed names before v1.8.
    pub branch: Option<&'static str>,
}

/// The kernel-module extensions of Talos `v` that drive a GPU of architecture `arch` (`None`:
/// unknown, every one), preferred first: production before LTS and open before proprietary,
/// except that for an architecture with a minimum branch (Blackwell) the newest branch comes
/// first.
pub fn nvidia_kmod_choices(v: TalosVersion, arch: Option<Arch>) -> Vec<KmodChoice> {
    let rel = nvidia_release(v);
    let mut branches: Vec<(Option<&'static str>, u32)> = match rel.production {
        Some(p) => vec![(Some("production"), p), (Some("lts"), rel.lts)],
        None => vec![(None, rel.lts)],
    };
    if arch.is_some_and(|a| a.min_branch().is_some()) {
        branches.sort_by_key(|(_, m)| std::cmp::Reverse(*m));
    }
    let mut out = Vec::new();
    for (branch, major) in branches {
        for open in [true, false] {
            if arch.is_some_and(|a| !a.runs(open, major)) {
                continue;
            }
            let base = if open {
                "nvidia-open-gpu-kernel-modules"
            } else {
                "nonfree-kmod-nvidia"
            };
            out.push(KmodChoice {
                name: match branch {
                    Some(b) => format!("{base}-{b}"),
                    None => base.to_owned(),
                },
                major,
                open,
                branch,
            });
        }
    }
    out
}

/// The first Talos release (from [`NVIDIA_RELEASES`]) at or after `after` with a branch for
/// `arch`, and its choices.
fn nvidia_first_release_for(
    arch: Arch,
    after: TalosVersion,
) -> Option<(TalosVersion, Vec<KmodChoice>)> {
    NVIDIA_RELEASES
        .iter()
        .map(|r| TalosVersion::new(r.talos.0, r.talos.1, 0))
        .filter(|t| *t > after)
        .map(|t| (t, nvidia_kmod_choices(t, Some(arch))))
        .find(|(_, c)| !c.is_empty())
}

/// Newest driver branch Talos `v` ships.
pub fn nvidia_newest_branch(v: TalosVersion) -> u32 {
    let r = nvidia_release(v);
    r.production.map_or(r.lts, |p| p.max(r.lts))
}

/// Flavour of an NVIDIA kernel-module extension name.
pub fn kmod_flavor(name: &str) -> Option<Flavor> {
    if name.starts_with("nonfree-kmod-nvidia") {
        Some(Flavor::Proprietary)
    } else if name.starts_with("nvidia-open-gpu-kernel-modules") {
        Some(Flavor::Open)
    } else {
        None
    }
}

/// Branch of an NVIDIA extension name: `lts`, `production`, or `None` for the legacy names
/// (which Image Factory maps to LTS).
pub fn nvidia_branch(name: &str) -> Option<&'static str> {
    if name.ends_with("-lts") {
        Some("lts")
    } else if name.ends_with("-production") {
        Some("production")
    } else {
        None
    }
}

/// The driver part of an NVIDIA extension version: `570.172.08-v1.11.5` gives `570.172.08`.
pub fn driver_part(version: &str) -> &str {
    version.split_once('-').map_or(version, |(d, _)| d)
}

/// Major number of an NVIDIA driver version (`570.172.08` gives 570).
pub fn driver_major(version: &str) -> Option<u32> {
    driver_part(version).split('.').next()?.parse().ok()
}

/// The Talos release an extension was built for, from its version string: `20251021-v1.11.5`
/// and `570.172.08-v1.11.5` give v1.11.5; `mei`'s bare `v1.11.5` too. `None` when the version
/// carries no Talos tag (`amd-ucode` `20251021`). Container-toolkit versions end in the toolkit
/// version, not a Talos tag: never pass them here.
pub fn built_for(version: &str) -> Option<TalosVersion> {
    let v = version.trim();
    if v.starts_with('v') {
        return TalosVersion::parse(v);
    }
    let i = v.find("-v")?;
    TalosVersion::parse(&v[i + 1..])
}

/// Whether an extension ships kernel modules, so it is bound to the exact Talos build it was made
/// for (firmware-only and user-space extensions are not).
pub fn ships_modules(name: &str) -> bool {
    kmod_flavor(name).is_some() || matches!(name, "amdgpu" | "i915" | "xe" | "mei")
}

/// Whether an Intel GPU is an Arc discrete card (Alchemist, Battlemage), for which the Talos
/// `mei` extension's manifest says it is "a prerequisite". Data-centre parts (Flex, Arctic
/// Sound-M) and integrated GPUs are not claimed.
pub fn intel_needs_mei(info: &IntelInfo) -> bool {
    info.discrete == Some(true)
        && matches!(info.platform.as_deref(), Some("Alchemist" | "Battlemage"))
}

/// AMD firmware file prefix named after the GC IP version, where the kernel names it that way:
/// GC 11 and later, GC 10.3.6/10.3.7 (Raphael, Mendocino) and GC 9.4.3 and later (MI300),
/// e.g. `gc_11_5_1_` (kernel `gfx_v11_0.c` `MODULE_FIRMWARE("amdgpu/gc_11_5_1_pfp.bin")`).
/// Older parts use code names (`navi10_`, `yellow_carp_`) that sysfs does not give us, so they
/// get `None` and only the `amdgpu/` directory is checked.
pub fn amd_gc_firmware_prefix(gc_version: &str) -> Option<String> {
    let mut it = gc_version.split('.').map(|p| p.parse::<u32>().ok());
    let (a, b, c) = (it.next()??, it.next()??, it.next()??);
    let ip_named = a >= 11
        || (a == 10 && b == 3 && (c == 6 || c == 7))
        || (a == 9 && b == 4 && c >= 3)
        || (a == 9 && b >= 5);
    ip_named.then(|| format!("gc_{a}_{b}_{c}_"))
}

fn ext(role: Role, accepted: &[&'static str], suggest: &str) -> ExtensionNeed {
    ExtensionNeed {
        role,
        accepted: accepted.to_vec(),
        suggest: Suggestion {
            extensions: vec![suggest.to_owned()],
            ..Suggestion::default()
        },
    }
}

/// `siderolabs/<name>`.
pub fn siderolabs(name: &str) -> String {
    format!("siderolabs/{name}")
}

fn firmware(subdir: &str, prefix: impl Into<String>, shipped_by: Option<&str>) -> FirmwareNeed {
    FirmwareNeed {
        subdir: subdir.to_owned(),
        prefix: prefix.into(),
        shipped_by: shipped_by.map(str::to_owned),
    }
}

/// The requirements of one GPU on a Talos host of version `talos`, or on a non-Talos host
/// (`None`: kernel driver and firmware only, no extensions).
pub fn requirements(talos: Option<TalosVersion>, gpu: &GpuFacts<'_>) -> Need {
    match gpu.vendor {
        Vendor::Nvidia => nvidia(talos, gpu),
        Vendor::Amd => amd(talos, gpu.amd_gc_version, gpu.device_id),
        Vendor::Intel => intel(talos, gpu.intel, gpu.device_id),
    }
}

/// Suffix of the NVIDIA extension names on Talos `v` (`-production`, or none before v1.8).
fn nvidia_suffix(v: TalosVersion) -> &'static str {
    if v >= NVIDIA_SUFFIXED {
        "-production"
    } else {
        ""
    }
}

/// What to add when no NVIDIA kernel-module extension is installed: the choices of this Talos
/// for the GPU's architecture, preferred first. `open_alpha` when an open choice is of branch
/// 535 or older and the card is a GeForce or workstation one.
pub fn nvidia_kmod_suggestion(v: TalosVersion, arch: Option<Arch>, model: &str) -> Suggestion {
    let choices = nvidia_kmod_choices(v, arch);
    // Without an architecture-specific rule, offer the production pair as before: open first,
    // proprietary as the alternative.
    let shown: Vec<&KmodChoice> =
        if arch.is_none_or(|a| a.min_branch().is_none() && a.max_branch().is_none()) {
            let first_branch = choices.first().map(|c| c.branch);
            choices
                .iter()
                .filter(|c| Some(c.branch) == first_branch)
                .collect()
        } else {
            choices.iter().collect()
        };
    let open_alpha = nvidia_arch::is_geforce_or_workstation(model)
        && shown
            .iter()
            .any(|c| c.open && c.major < OPEN_GEFORCE_BRANCH);
    Suggestion {
        extensions: shown.iter().map(|c| siderolabs(&c.name)).collect(),
        with: Vec::new(),
        open_alpha,
    }
}

/// First NVIDIA branch whose open modules drive GeForce and workstation cards without
/// `NVreg_OpenRmEnableUnsupportedGpus=1` (open-gpu-kernel-modules README: the parameter is
/// documented up to 535.288.01 and gone from 545.29.06).
pub const OPEN_GEFORCE_BRANCH: u32 = 545;

fn nvidia(talos: Option<TalosVersion>, gpu: &GpuFacts<'_>) -> Need {
    let arch = gpu.device_id.and_then(nvidia_arch::arch_of);
    let Some(v) = talos else {
        return Need::Supported(Requirements {
            modules: vec!["nvidia"],
            autoload: true,
            builtin_driver: false,
            extensions: Vec::new(),
            firmware: Vec::new(),
        });
    };
    if let Some(a) = arch
        && nvidia_kmod_choices(v, Some(a)).is_empty()
    {
        return Need::Unsupported(match nvidia_first_release_for(a, v) {
            Some((first, choices)) => Cause::NvidiaNeedsNewerTalos {
                arch: a.name().to_owned(),
                min_major: a.min_branch().unwrap_or_default(),
                running: v.to_string(),
                ships_max_major: nvidia_newest_branch(v),
                first_talos: first.to_string(),
                extensions: {
                    let kmod = &choices[0];
                    let toolkit = match kmod.branch {
                        Some(b) => format!("nvidia-container-toolkit-{b}"),
                        None => "nvidia-container-toolkit".to_owned(),
                    };
                    vec![siderolabs(&kmod.name), siderolabs(&toolkit)]
                },
            },
            None => Cause::NvidiaArchDropped {
                model: gpu.model.to_owned(),
                arch: a.name().to_owned(),
                last_major: a.max_branch().unwrap_or_default(),
                running: v.to_string(),
            },
        });
    }
    let mut kmod = ext(Role::Driver, NVIDIA_KMODS, "");
    kmod.suggest = nvidia_kmod_suggestion(v, arch, gpu.model);
    // The companions follow the branch of the preferred kernel-module extension.
    let suffix = nvidia_kmod_choices(v, arch)
        .first()
        .and_then(|c| c.branch)
        .map_or_else(|| nvidia_suffix(v).to_owned(), |b| format!("-{b}"));
    let mut extensions = vec![
        kmod,
        ext(
            Role::ContainerToolkit,
            NVIDIA_TOOLKITS,
            &siderolabs(&format!("nvidia-container-toolkit{suffix}")),
        ),
    ];
    if gpu.nvswitches {
        extensions.push(ext(
            Role::FabricManager,
            NVIDIA_FABRICMANAGERS,
            &siderolabs(&format!("nvidia-fabricmanager{suffix}")),
        ));
    }
    Need::Supported(Requirements {
        modules: NVIDIA_MODULES.to_vec(),
        autoload: false,
        builtin_driver: false,
        extensions,
        firmware: Vec::new(),
    })
}

/// GC IP version of AMD parts whose firmware is most often missing (new silicon), by PCI device
/// id. Needed because an amdgpu device that failed to probe has no `ip_discovery` in sysfs and
/// no KFD node, so its GC version cannot be read. From GFX11 on the gfx target names the GC
/// version: 0x1586 Strix Halo is gfx1151 (GC 11.5.1), 0x150e Strix Point gfx1150, 0x744c Navi 31
/// gfx1100, 0x7550 Navi 48 gfx1201 (docs/research/sysfs-and-vendor-libs.md §3). Other ids: `None`.
pub fn amd_gc_by_device_id(device_id: u16) -> Option<&'static str> {
    match device_id {
        0x1586 => Some("11.5.1"),
        0x150e => Some("11.5.0"),
        0x744c => Some("11.0.0"),
        0x7550 => Some("12.0.1"),
        _ => None,
    }
}

fn amd(talos: Option<TalosVersion>, gc: Option<&str>, device_id: Option<u16>) -> Need {
    let prefix = gc
        .or_else(|| device_id.and_then(amd_gc_by_device_id))
        .and_then(amd_gc_firmware_prefix)
        .unwrap_or_default();
    let (extensions, shipped_by, builtin) = match talos {
        None => (Vec::new(), None, false),
        Some(v) if v < DRM_AS_EXTENSIONS => (
            vec![ext(
                Role::Firmware,
                &["amdgpu-firmware"],
                "siderolabs/amdgpu-firmware",
            )],
            Some("amdgpu-firmware"),
            true,
        ),
        Some(_) => (
            vec![ExtensionNeed {
                role: Role::Driver,
                accepted: vec!["amdgpu"],
                suggest: Suggestion {
                    extensions: vec![siderolabs("amdgpu")],
                    with: vec![siderolabs("amd-ucode")],
                    open_alpha: false,
                },
            }],
            Some("amdgpu"),
            false,
        ),
    };
    Need::Supported(Requirements {
        modules: vec!["amdgpu"],
        autoload: true,
        builtin_driver: builtin,
        extensions,
        firmware: vec![firmware("amdgpu", prefix, shipped_by)],
    })
}

/// The firmware an Intel GPU loads under `driver`, from the kernel's firmware tables
/// ([`crate::vendors::intel::firmware`]: `ptl_` GuC under `xe/`, display DMC under `i915/` even
/// for xe). Ids the kernel names no firmware for need none.
fn intel_firmware(
    device_id: Option<u16>,
    driver: &str,
    shipped_by: Option<&str>,
) -> Vec<FirmwareNeed> {
    device_id
        .map(|d| crate::vendors::intel::firmware(d, driver))
        .unwrap_or_default()
        .into_iter()
        .map(|(subdir, prefix)| firmware(subdir, prefix, shipped_by))
        .collect()
}

fn intel(talos: Option<TalosVersion>, info: Option<&IntelInfo>, device_id: Option<u16>) -> Need {
    let xe_only = info.and_then(|i| i.expected_driver.as_deref()) == Some("xe");
    let platform = info.and_then(|i| i.platform.as_deref());
    let mei = info.is_some_and(intel_needs_mei);
    let driver = if xe_only { "xe" } else { "i915" };
    let Some(v) = talos else {
        // Off Talos only the driver is checked: the mei requirement comes from Talos' manifest.
        return Need::Supported(Requirements {
            modules: vec![driver],
            autoload: true,
            builtin_driver: false,
            extensions: Vec::new(),
            firmware: intel_firmware(device_id, driver, None),
        });
    };
    if xe_only && v < XE {
        return Need::Unsupported(Cause::XeNeedsNewerTalos {
            platform: platform.unwrap_or("this GPU").to_owned(),
            running: v.to_string(),
            first_talos: XE.to_string(),
        });
    }
    let mut extensions = Vec::new();
    let (builtin, shipped_by) = if !xe_only && v < DRM_AS_EXTENSIONS {
        extensions.push(ext(
            Role::Firmware,
            &["i915-ucode"],
            "siderolabs/i915-ucode",
        ));
        (true, "i915-ucode")
    } else {
        extensions.push(ext(
            Role::Driver,
            if xe_only { &["xe"] } else { &["i915"] },
            &siderolabs(driver),
        ));
        (false, driver)
    };
    let mut modules = vec![driver];
    if mei && v >= MEI {
        extensions.push(ext(Role::Mei, &["mei"], "siderolabs/mei"));
        // The card's graphics security controller binds to mei_gsc, not mei_me (module docs).
        modules.push("mei_gsc");
    }
    Need::Supported(Requirements {
        modules,
        autoload: true,
        builtin_driver: builtin,
        extensions,
        firmware: intel_firmware(device_id, driver, Some(shipped_by)),
    })
}

#[cfg(test)]
mod tests;
