//! The Talos requirements table: per vendor and Talos version, which system extensions, kernel
//! modules and firmware files a GPU needs, and where Talos keeps modules and firmware.
//!
//! Pure data and pure functions, no I/O; [`crate::verdict`] compares this table with what the
//! host shows. Facts and sources are in `docs/research/talos-extensions.md`:
//! - NVIDIA: one kernel-module extension (`nonfree-kmod-nvidia-{lts,production}` or
//!   `nvidia-open-gpu-kernel-modules-{lts,production}`; before ext v1.8 the names had no suffix,
//!   and those legacy names are still accepted) plus the matching
//!   `nvidia-container-toolkit-*`. Modules `nvidia`, `nvidia_uvm`, `nvidia_drm` and
//!   `nvidia_modeset` are blacklisted by the extension's `nvidia.conf` and must be listed in
//!   `machine.kernel.modules`. Blackwell (RTX 50, RTX PRO, B100/B200) runs only on the open
//!   modules of branch 570 or later, which Talos ships from v1.10 (production branch).
//! - AMD: `amdgpu` from v1.9; up to v1.8 the driver is in the base image and only
//!   `amdgpu-firmware` is needed. `amd-ucode` (CPU microcode) is advised, never required.
//! - Intel: `i915` from v1.9 (up to v1.8 the driver is in the base image plus `i915-ucode`);
//!   `xe` only from v1.12, so Battlemage and Lunar Lake (xe-only) are unsupported before that;
//!   `mei` for Arc discrete cards (Alchemist, Battlemage).
//! - Modules and firmware live under `/usr/lib` from Talos v1.10 and under `/lib` before
//!   (`minTalosVersionUsrMerge = 1.10.0`).

use crate::model::{IntelInfo, Vendor};
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
/// First Talos whose NVIDIA production branch (570.124.06) supports Blackwell.
pub const NVIDIA_BLACKWELL: TalosVersion = TalosVersion::new(1, 10, 0);
/// First `mei` extension (`compatibility: >= v1.8.0`).
pub const MEI: TalosVersion = TalosVersion::new(1, 8, 0);

/// Oldest NVIDIA driver branch that supports Blackwell GPUs.
pub const BLACKWELL_MIN_DRIVER_MAJOR: u32 = 570;

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
}

/// One required extension: any name in `accepted` satisfies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionNeed {
    pub role: Role,
    pub accepted: Vec<&'static str>,
    /// What to add to the Image Factory schematic when none is installed.
    pub suggest: String,
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
    /// No extension for this Talos version can drive the GPU.
    Unsupported {
        detail: String,
        hint: String,
    },
}

/// What the table needs to know about a GPU.
#[derive(Debug, Clone, Copy)]
pub struct GpuFacts<'a> {
    pub vendor: Vendor,
    pub device_id: u16,
    pub intel: Option<&'a IntelInfo>,
    /// AMD graphics-core IP version (`11.5.1`).
    pub amd_gc_version: Option<&'a str>,
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
/// The open-module names only (Blackwell).
pub const NVIDIA_OPEN_KMODS: &[&str] = &[
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
/// The NVIDIA modules Talos' docs list in `machine.kernel.modules`.
pub const NVIDIA_MODULES: &[&str] = &["nvidia", "nvidia_uvm", "nvidia_drm", "nvidia_modeset"];

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

/// Blackwell device ids (RTX 50, RTX PRO Blackwell, B100/B200/GB200, B300): they need the open
/// kernel modules (NVIDIA README "kernel_open"), branch 570 or later. Ranges from pci.ids
/// (GB100/GB102 0x29xx, GB202 0x2b8x-0x2bbx, GB203 0x2cxx, GB206/GB207 0x2dxx, GB20B 0x2exx,
/// GB205 0x2fxx, GB110 0x318x).
pub fn nvidia_needs_open(device_id: u16) -> bool {
    matches!(device_id, 0x2900..=0x29ff | 0x2b80..=0x2fff | 0x3180..=0x31ff)
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

fn ext(role: Role, accepted: &[&'static str], suggest: impl Into<String>) -> ExtensionNeed {
    ExtensionNeed {
        role,
        accepted: accepted.to_vec(),
        suggest: suggest.into(),
    }
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
        Vendor::Nvidia => nvidia(talos, gpu.device_id),
        Vendor::Amd => amd(talos, gpu.amd_gc_version, gpu.device_id),
        Vendor::Intel => intel(talos, gpu.intel),
    }
}

fn nvidia(talos: Option<TalosVersion>, device_id: u16) -> Need {
    let open_only = nvidia_needs_open(device_id);
    let Some(v) = talos else {
        return Need::Supported(Requirements {
            modules: vec!["nvidia"],
            autoload: true,
            builtin_driver: false,
            extensions: Vec::new(),
            firmware: Vec::new(),
        });
    };
    if open_only && v < NVIDIA_BLACKWELL {
        return Need::Unsupported {
            detail: format!(
                "Blackwell GPUs need NVIDIA driver {BLACKWELL_MIN_DRIVER_MAJOR} or later; Talos {v} ships at most branch 550"
            ),
            hint: format!(
                "upgrade Talos to {NVIDIA_BLACKWELL} or later with siderolabs/nvidia-open-gpu-kernel-modules-production and siderolabs/nvidia-container-toolkit-production"
            ),
        };
    }
    let suffix = if v >= NVIDIA_SUFFIXED {
        "-production"
    } else {
        ""
    };
    let kmod = if open_only {
        ext(
            Role::Driver,
            NVIDIA_OPEN_KMODS,
            format!("siderolabs/nvidia-open-gpu-kernel-modules{suffix}"),
        )
    } else {
        ext(
            Role::Driver,
            NVIDIA_KMODS,
            format!(
                "siderolabs/nvidia-open-gpu-kernel-modules{suffix} (or siderolabs/nonfree-kmod-nvidia{suffix})"
            ),
        )
    };
    Need::Supported(Requirements {
        modules: NVIDIA_MODULES.to_vec(),
        autoload: false,
        builtin_driver: false,
        extensions: vec![
            kmod,
            ext(
                Role::ContainerToolkit,
                NVIDIA_TOOLKITS,
                format!("siderolabs/nvidia-container-toolkit{suffix}"),
            ),
        ],
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

fn amd(talos: Option<TalosVersion>, gc: Option<&str>, device_id: u16) -> Need {
    let prefix = gc
        .or_else(|| amd_gc_by_device_id(device_id))
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
            vec![ext(
                Role::Driver,
                &["amdgpu"],
                "siderolabs/amdgpu (with siderolabs/amd-ucode)",
            )],
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

/// Firmware prefix per Intel platform where we know the kernel's file names
/// (`dg2_guc_70.bin`, `mtl_guc_70.bin`, `xe/bmg_guc_70.bin`, `xe/lnl_guc_70.bin`).
fn intel_firmware_prefix(platform: Option<&str>) -> &'static str {
    match platform {
        Some("Alchemist") | Some("Arctic Sound-M") => "dg2_",
        Some("Meteor Lake") => "mtl_",
        Some("Battlemage") => "bmg_",
        Some("Lunar Lake") => "lnl_",
        _ => "",
    }
}

fn intel(talos: Option<TalosVersion>, info: Option<&IntelInfo>) -> Need {
    let xe_only = info.and_then(|i| i.expected_driver.as_deref()) == Some("xe");
    let platform = info.and_then(|i| i.platform.as_deref());
    let mei = info.is_some_and(intel_needs_mei);
    let driver = if xe_only { "xe" } else { "i915" };
    let prefix = intel_firmware_prefix(platform);
    let Some(v) = talos else {
        // Off Talos only the driver is checked: the mei requirement comes from Talos' manifest.
        return Need::Supported(Requirements {
            modules: vec![driver],
            autoload: true,
            builtin_driver: false,
            extensions: Vec::new(),
            firmware: vec![firmware(driver, prefix, None)],
        });
    };
    if xe_only && v < XE {
        return Need::Unsupported {
            detail: format!(
                "{} needs the xe driver, which Talos ships only from {XE} (running {v})",
                platform.unwrap_or("this GPU")
            ),
            hint: format!("upgrade Talos to {XE} or later and add siderolabs/xe to the schematic"),
        };
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
            format!("siderolabs/{driver}"),
        ));
        (false, driver)
    };
    let mut modules = vec![driver];
    if mei && v >= MEI {
        extensions.push(ext(Role::Mei, &["mei"], "siderolabs/mei"));
        modules.push("mei_me");
    }
    Need::Supported(Requirements {
        modules,
        autoload: true,
        builtin_driver: builtin,
        extensions,
        firmware: vec![firmware(driver, prefix, Some(shipped_by))],
    })
}

#[cfg(test)]
mod tests;
