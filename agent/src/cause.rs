//! Typed causes of driver-stack problems, and the one place their text is written.
//!
//! The verdict engine ([`crate::verdict`]) and the Talos API refinements
//! ([`crate::talosapi`]) decide *what* is wrong and record it as a [`Cause`]: the modules,
//! extensions, versions, services and paths a problem is about. Nothing decides anything from
//! the human text. [`render`] turns a cause (plus the [`Note`]s the Talos API added) into the
//! one-line `detail` and `hint` of the report, last, after every decision is made
//! ([`crate::model::Gpu::settle_status`] renders again after refinements).
//!
//! The cause is part of the JSON report (`problems[].cause`, tagged by `kind`), so tools can
//! act on it without parsing text; see `docs/verdict-causes.md`. Pure data, no I/O.

use crate::status::Status;
use serde::{Deserialize, Serialize};

/// Why a problem exists, with the facts it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Cause {
    /// The device's `driver` link exists but could not be read.
    DriverLinkUnreadable { path: String, error: String },
    /// The device's PCI `device` id could not be read (vendor and class could): which driver,
    /// extension and firmware it needs all depend on the id.
    DeviceIdUnreadable { path: String, error: String },
    /// The host looks like Talos but its version cannot be read.
    TalosVersionUnreadable {
        evidence: TalosEvidence,
        os_release: OsRelease,
    },
    /// os-release says Talos, but `VERSION_ID` is not a release tag.
    TalosVersionUnparsable { raw: String },
    /// Neither the Node nor `/etc/extensions.yaml` says which extensions are installed.
    ExtensionsUnknown {
        /// The file that could not be read.
        path: String,
        running: String,
        /// Whether this Talos publishes its extensions on the Node (v1.8 and later).
        node_publishes: bool,
    },
    /// The firmware directory could not be listed for a device that did not bind.
    FirmwareUnreadable { driver: String, error: String },
    /// Another driver holds the device.
    BoundToOtherDriver { driver: String, native: Vec<String> },
    /// No NVIDIA extension of this Talos version has a driver branch for the GPU's
    /// architecture; a later Talos does.
    NvidiaNeedsNewerTalos {
        arch: String,
        min_major: u32,
        running: String,
        /// Newest branch this Talos ships.
        ships_max_major: u32,
        first_talos: String,
        extensions: Vec<String>,
    },
    /// No Talos NVIDIA extension drives this architecture (its last driver branch is older than
    /// every branch Talos ships).
    NvidiaArchDropped {
        model: String,
        arch: String,
        last_major: u32,
        running: String,
    },
    /// The GPU needs the xe driver, which this Talos does not ship.
    XeNeedsNewerTalos {
        platform: String,
        running: String,
        first_talos: String,
    },
    /// A module-carrying extension was built for another Talos release.
    ExtensionBuiltForOtherTalos {
        extension: String,
        version: String,
        built: String,
        running: String,
    },
    /// The NVIDIA container toolkit extension is missing.
    ToolkitMissing {
        extension: String,
        driver_version: Option<String>,
    },
    /// An Arc discrete GPU without the `mei` extension.
    MeiMissing {
        installed: Vec<String>,
        extension: String,
    },
    /// No extension ships the GPU's kernel driver, and the module is not loaded.
    DriverExtensionMissing {
        /// What is missing (`NVIDIA kernel-module`, `amdgpu`, `i915`, `xe`).
        what: String,
        installed: Vec<String>,
        module: String,
        add: Suggestion,
    },
    /// NVSwitch functions are present but no fabric manager extension is installed.
    FabricManagerMissing {
        nvswitches: Vec<String>,
        extension: String,
        driver_version: Option<String>,
    },
    /// The NVIDIA driver versions that must be equal are not.
    DriverVersionsDisagree {
        versions: Vec<SeenVersion>,
        /// NVML init failed with "Driver/library version mismatch".
        nvml_mismatch: bool,
        fix: VersionFix,
    },
    /// The loaded NVIDIA module's flavour is not the installed extension's.
    FlavorMismatch {
        loaded: String,
        extension: String,
        installed: String,
    },
    /// The GPU works only with the open kernel modules (Blackwell), the proprietary ones are
    /// loaded or installed.
    OpenModulesRequired {
        model: String,
        arch: String,
        proprietary_loaded: bool,
        min_major: u32,
        /// On Talos: the extension to replace and the one to use.
        swap: Option<Swap>,
    },
    /// The GPU has no GSP and cannot use the open kernel modules (Maxwell, Pascal, Volta).
    ProprietaryModulesRequired {
        model: String,
        arch: String,
        open_loaded: bool,
        swap: Option<Swap>,
    },
    /// The installed or loaded driver branch cannot drive this architecture.
    NvidiaBranchUnsupported {
        model: String,
        arch: String,
        major: u32,
        min_major: Option<u32>,
        max_major: Option<u32>,
        /// On Talos: the kernel-module extensions of this Talos that can.
        extensions: Option<Vec<String>>,
    },
    /// The bound driver's module is not live.
    ModuleUnusable { module: String, state: String },
    /// Modules the GPU needs are not loaded.
    ModulesNotLoaded {
        modules: Vec<String>,
        bound: bool,
        fix: ModulesFix,
        /// What the Talos API says about `machine.kernel.modules` (NVIDIA only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<ModulesConfig>,
        /// The open NVIDIA 535 modules on a GeForce or workstation card: they also need
        /// `NVreg_OpenRmEnableUnsupportedGpus=1`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        open_alpha: bool,
    },
    /// A driver's firmware files are missing for a device that did not bind.
    FirmwareMissing {
        driver: String,
        /// `/usr/lib/firmware/amdgpu/gc_11_5_1_*`.
        pattern: String,
        fix: FirmwareFix,
    },
    /// The driver is loaded but did not take the device.
    DriverNotBound {
        driver: String,
        address: String,
        on_talos: bool,
        reason: NotBound,
    },
    /// A service the GPU's user space needs is not running next to a bound driver.
    ServiceNotRunning {
        service: String,
        driver: String,
        /// The extension that ships it.
        extension: String,
        /// The driver version the service must match (fabric manager).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        driver_version: Option<String>,
    },
}

/// What makes the host look like Talos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum TalosEvidence {
    /// A `-talos` kernel release.
    Kernel { release: String },
    /// The Node carries Talos' `extensions.talos.dev/*` records.
    Node,
}

/// What became of the host's os-release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum OsRelease {
    Missing,
    Unreadable {
        path: String,
        error: String,
    },
    /// Readable, and names another system.
    OtherOs {
        name: String,
    },
}

/// Extensions to add: alternatives (preferred first) and companions to add with them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Suggestion {
    pub extensions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<String>,
    /// Set `NVreg_OpenRmEnableUnsupportedGpus=1` if the open 535 modules are chosen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open_alpha: bool,
}

/// On Talos: replace one kernel-module extension with another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swap {
    pub replace: String,
    pub with: String,
}

/// One source of an NVIDIA driver version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenVersion {
    /// `nonfree-kmod-nvidia-production`, `loaded nvidia module`, `NVML`, ...
    pub source: String,
    pub version: String,
}

/// How to make NVIDIA driver versions agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum VersionFix {
    /// Kernel-module and container-toolkit extensions of different branches.
    SameBranch,
    /// The loaded module is older or newer than the installed extension.
    Reboot { extension: String, version: String },
    /// The fabric manager extension is not at the kernel module's version.
    FabricManager { extension: String, version: String },
    /// Talos: the toolkit's user space does not match the loaded module.
    Toolkit,
    /// Other systems: user-space libraries of another version.
    Libraries,
}

/// How to get missing modules loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModulesFix {
    /// Talos, but its version or extensions are unknown.
    TalosUnknown,
    /// The extension blacklists them: list them in `machine.kernel.modules`.
    MachineConfig,
    /// Part of the Talos base image.
    BaseImage,
    /// Shipped by an installed extension and normally autoloaded.
    ExtensionInstalled,
    /// Another system: modprobe.
    Modprobe,
}

/// `machine.kernel.modules` as the Talos API shows it, for the modules a problem is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModulesConfig {
    /// NVIDIA modules the config does not list.
    pub lacking: Vec<String>,
}

/// How to get missing firmware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum FirmwareFix {
    /// Talos: the GSP firmware of the open NVIDIA modules comes with the container toolkit.
    NvidiaGspExtension {
        version: String,
        extension: String,
    },
    /// Other systems: the NVIDIA firmware package.
    NvidiaGspPackage {
        version: String,
    },
    /// Talos, but the installed extensions are unknown.
    ExtensionsUnknown {
        files: String,
    },
    AddExtension {
        extension: String,
    },
    UpgradeExtension {
        extension: String,
        version: String,
        files: String,
        running: String,
    },
    LinuxFirmware {
        files: String,
    },
}

/// Why a loaded driver may not have taken the device, as far as the facts tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "hint", rename_all = "kebab-case")]
pub enum NotBound {
    /// Read the probe error in the kernel log.
    Probe,
    /// xe on another system: kernel 6.12+ or `xe.force_probe`.
    XeForceProbe { model: String, device_id: String },
    /// The open NVIDIA 535 modules refuse GeForce and workstation cards unless
    /// `NVreg_OpenRmEnableUnsupportedGpus=1`.
    OpenAlpha { version: String },
}

/// Facts the Talos API adds to a problem (appended to its detail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Note {
    /// A service of the container toolkit waits for the driver to bind.
    ServiceWaits { service: String, driver: String },
    /// Talos saw a driver bound at boot (`PCIDevices`).
    TalosSawDriver {
        driver: String,
        link_unreadable: bool,
    },
}

/// The parameter the open NVIDIA 535 modules need on GeForce and workstation cards
/// (open-gpu-kernel-modules 535 README, "Compatible GPUs").
pub const OPEN_ALPHA_PARAM: &str = "NVreg_OpenRmEnableUnsupportedGpus=1";

fn alpha_sentence() -> String {
    format!(
        "; the open 535 modules drive GeForce and workstation cards only with {OPEN_ALPHA_PARAM} (machine.kernel.modules: name nvidia, parameters [{OPEN_ALPHA_PARAM}])"
    )
}

impl Cause {
    /// The verdict this cause gives.
    pub fn status(&self) -> Status {
        use Cause::*;
        match self {
            DriverLinkUnreadable { .. }
            | DeviceIdUnreadable { .. }
            | TalosVersionUnreadable { .. }
            | TalosVersionUnparsable { .. }
            | ExtensionsUnknown { .. }
            | FirmwareUnreadable { .. } => Status::Unknown,
            BoundToOtherDriver { .. } => Status::BoundToOtherDriver,
            NvidiaNeedsNewerTalos { .. } | NvidiaArchDropped { .. } | XeNeedsNewerTalos { .. } => {
                Status::UnsupportedByTalosVersion
            }
            ExtensionBuiltForOtherTalos { .. } => Status::ExtensionVersionMismatch,
            ToolkitMissing { .. }
            | MeiMissing { .. }
            | DriverExtensionMissing { .. }
            | FabricManagerMissing { .. } => Status::ExtensionMissing,
            DriverVersionsDisagree { .. }
            | FlavorMismatch { .. }
            | OpenModulesRequired { .. }
            | ProprietaryModulesRequired { .. }
            | NvidiaBranchUnsupported { .. } => Status::DriverVersionMismatch,
            ModuleUnusable { .. } | ModulesNotLoaded { .. } => Status::ModuleNotLoaded,
            FirmwareMissing { .. } => Status::FirmwareMissing,
            DriverNotBound { .. } => Status::DriverNotBound,
            ServiceNotRunning { .. } => Status::ServiceNotRunning,
        }
    }
}

fn list(v: &[String]) -> String {
    v.join(", ")
}

fn installed(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_owned()
    } else {
        list(v)
    }
}

fn backticked(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The exact `machine.kernel.modules` fix for these modules.
pub fn kernel_modules_hint(missing: &[String]) -> String {
    format!(
        "add {} to machine.kernel.modules and reboot (the NVIDIA extension blacklists them, so they never autoload)",
        backticked(missing)
    )
}

fn branch_range(min: Option<u32>, max: Option<u32>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("branch {a} to {b}"),
        (Some(a), None) => format!("{a} or later"),
        (None, Some(b)) => format!("branch {b} or older"),
        (None, None) => "another branch".to_owned(),
    }
}

impl Suggestion {
    fn render(&self) -> String {
        let mut s = self.extensions.first().cloned().unwrap_or_default();
        if !self.with.is_empty() {
            s.push_str(&format!(" (with {})", self.with.join(" and ")));
        }
        if self.extensions.len() > 1 {
            s.push_str(&format!(" (or {})", self.extensions[1..].join(" or ")));
        }
        s
    }
}

/// The one-line `(detail, hint)` of a cause with its notes.
pub fn render(cause: &Cause, notes: &[Note]) -> (String, String) {
    let (mut detail, hint) = render_cause(cause);
    for n in notes {
        let text = match n {
            Note::ServiceWaits { service, driver } => {
                format!("{service} waits for the {driver} driver (Talos API)")
            }
            Note::TalosSawDriver {
                driver,
                link_unreadable: true,
            } => format!("Talos saw {driver} bound at boot (Talos API PCIDevices)"),
            Note::TalosSawDriver {
                driver,
                link_unreadable: false,
            } => format!(
                "Talos saw {driver} bound at boot, so it was unbound since or the device fell off the bus: see `talosctl dmesg` (Talos API PCIDevices)"
            ),
        };
        detail = format!("{detail}; {text}");
    }
    (detail, hint)
}

fn render_cause(cause: &Cause) -> (String, String) {
    use Cause::*;
    match cause {
        DriverLinkUnreadable { path, error } => (
            format!("the driver link {path} could not be read: {error}"),
            "give the agent read access to the host /sys (read-only hostPath mount of /sys)"
                .to_owned(),
        ),
        DeviceIdUnreadable { path, error } => (
            format!(
                "the PCI device id could not be read ({path}: {error}); the driver stack cannot be judged"
            ),
            format!(
                "read {path} on the host: an I/O error there points at the device or its PCIe link (see dmesg)"
            ),
        ),
        TalosVersionUnreadable {
            evidence,
            os_release,
        } => {
            let who = match evidence {
                TalosEvidence::Kernel { release } => {
                    format!("the kernel {release} is a Talos kernel")
                }
                TalosEvidence::Node => {
                    "the Node carries Talos' extensions.talos.dev records".to_owned()
                }
            };
            let why = match os_release {
                OsRelease::Missing => "/etc/os-release is missing".to_owned(),
                OsRelease::Unreadable { path, error } => format!("{path}: {error}"),
                OsRelease::OtherOs { name } => format!("/etc/os-release names {name}"),
            };
            (
                format!(
                    "{who} but the Talos version is unreadable ({why}); extension checks skipped"
                ),
                "mount the host root (including /etc and /usr/lib) read-only into the agent and pass it as --root".to_owned(),
            )
        }
        TalosVersionUnparsable { raw } => (
            format!(
                "Talos version {raw:?} in /etc/os-release is not a Talos release tag; extension checks skipped"
            ),
            "check the host's /etc/os-release VERSION_ID (expected vX.Y.Z)".to_owned(),
        ),
        ExtensionsUnknown {
            path,
            running,
            node_publishes: true,
        } => (
            format!(
                "installed Talos extensions unknown: {path} could not be read and the Node carries no extensions.talos.dev records; extension checks skipped"
            ),
            format!(
                "let the agent read its Node (RBAC get nodes; Talos {running} publishes extensions there) or mount the host /etc read-only"
            ),
        ),
        ExtensionsUnknown {
            path,
            running,
            node_publishes: false,
        } => (
            format!(
                "installed Talos extensions unknown: {path} could not be read, and Talos {running} publishes none on the Node; extension checks skipped, nothing is reported missing"
            ),
            "mount the host /etc read-only into the agent, or enable --talos-api (ExtensionStatuses)".to_owned(),
        ),
        FirmwareUnreadable { driver, error } => (
            format!("{driver} did not bind and the firmware directory could not be read: {error}"),
            "mount the host firmware directory read-only into the agent".to_owned(),
        ),
        BoundToOtherDriver { driver, native } => {
            let natives = native.join(" or ");
            let hint = if driver.starts_with("vfio") || driver == "pci-stub" {
                format!(
                    "{driver} holds this device for passthrough to a VM: expected there; gpuscout reports it and changes nothing"
                )
            } else {
                format!(
                    "{driver} owns this device: if {natives} should drive it, blacklist {driver} (or unbind it) and reboot; gpuscout changes nothing"
                )
            };
            (format!("bound to {driver}, not {natives}"), hint)
        }
        NvidiaNeedsNewerTalos {
            arch,
            min_major,
            running,
            ships_max_major,
            first_talos,
            extensions,
        } => (
            format!(
                "{arch} GPUs need NVIDIA driver {min_major} or later; Talos {running} ships at most branch {ships_max_major}"
            ),
            format!(
                "upgrade Talos to {first_talos} or later with {}",
                extensions.join(" and ")
            ),
        ),
        NvidiaArchDropped {
            model,
            arch,
            last_major,
            running,
        } => (
            format!(
                "{model} ({arch}) is supported only up to NVIDIA driver branch {last_major}, older than every NVIDIA extension of Talos {running}"
            ),
            format!(
                "no Talos NVIDIA extension drives {arch} GPUs: use a newer GPU, or pass this one through to a VM whose OS has driver {last_major}"
            ),
        ),
        XeNeedsNewerTalos {
            platform,
            running,
            first_talos,
        } => (
            format!(
                "{platform} needs the xe driver, which Talos ships only from {first_talos} (running {running})"
            ),
            format!(
                "upgrade Talos to {first_talos} or later and add siderolabs/xe to the schematic"
            ),
        ),
        ExtensionBuiltForOtherTalos {
            extension,
            version,
            built,
            running,
        } => (
            format!("extension {extension} {version} is built for Talos {built}, the node runs {running}"),
            format!(
                "regenerate the installer for {running} in Image Factory with the same schematic and upgrade, so {extension} matches the running Talos"
            ),
        ),
        ToolkitMissing {
            extension,
            driver_version,
        } => (
            "no nvidia-container-toolkit extension: containers cannot use the GPU (no libraries, runtime or GSP firmware)".to_owned(),
            format!(
                "add {extension}{} (same driver version as the kernel-module extension) to the Image Factory schematic and upgrade",
                driver_version.as_ref().map(|v| format!(" {v}")).unwrap_or_default()
            ),
        ),
        MeiMissing {
            installed: inst,
            extension,
        } => (
            format!(
                "Arc discrete GPU without the mei extension (installed: {}): its GSC needs mei_gsc",
                installed(inst)
            ),
            format!("add {extension} to the Image Factory schematic and upgrade"),
        ),
        DriverExtensionMissing {
            what,
            installed: inst,
            module,
            add,
        } => {
            let mut hint = format!(
                "add {} to the Image Factory schematic and upgrade the node with the new installer",
                add.render()
            );
            if add.open_alpha {
                hint.push_str(&alpha_sentence());
            }
            (
                format!(
                    "no {what} extension installed (installed: {}) and {module} is not loaded",
                    installed(inst)
                ),
                hint,
            )
        }
        FabricManagerMissing {
            nvswitches,
            extension,
            driver_version,
        } => (
            format!(
                "NVSwitch functions {} are present but no nvidia-fabricmanager extension is installed: the NVLink fabric is never set up and CUDA does not start",
                list(nvswitches)
            ),
            format!(
                "add {extension}{} (exactly the kernel-module extension's driver version) to the Image Factory schematic and upgrade",
                driver_version.as_ref().map(|v| format!(" {v}")).unwrap_or_default()
            ),
        ),
        DriverVersionsDisagree {
            versions,
            nvml_mismatch,
            fix,
        } => {
            let mut listed: Vec<String> = versions
                .iter()
                .map(|v| format!("{} {}", v.source, v.version))
                .collect();
            if *nvml_mismatch {
                listed.push("NVML: Driver/library version mismatch".to_owned());
            }
            let hint = match fix {
                VersionFix::SameBranch => "install the kernel-module and container-toolkit extensions of the same branch (both -lts or both -production) in the schematic and upgrade".to_owned(),
                VersionFix::Reboot { extension, version } => format!(
                    "reboot so the loaded module matches the installed {extension} {version}"
                ),
                VersionFix::FabricManager { extension, version } => format!(
                    "install {extension} of exactly driver {version} (the fabric manager refuses any other driver version) in the schematic and upgrade"
                ),
                VersionFix::Toolkit => "the NVIDIA user-space libraries do not match the loaded module: install the nvidia-container-toolkit extension of the kernel module's driver version and reboot".to_owned(),
                VersionFix::Libraries => "install user-space NVIDIA libraries of the loaded module's version (or reboot after a driver upgrade)".to_owned(),
            };
            (
                format!("NVIDIA driver versions disagree: {}", listed.join(", ")),
                hint,
            )
        }
        FlavorMismatch {
            loaded,
            extension,
            installed,
        } => (
            format!(
                "the loaded nvidia module is {loaded} but the installed extension {extension} is {installed}"
            ),
            "keep exactly one NVIDIA kernel-module extension in the schematic and reboot".to_owned(),
        ),
        OpenModulesRequired {
            model,
            arch,
            proprietary_loaded,
            min_major,
            swap,
        } => (
            format!(
                "{model} ({arch}) needs the open NVIDIA kernel modules; the proprietary flavour is {}",
                if *proprietary_loaded { "loaded" } else { "installed" }
            ),
            match swap {
                Some(s) => format!(
                    "replace {} with {} in the Image Factory schematic and upgrade",
                    s.replace, s.with
                ),
                None => format!(
                    "install NVIDIA's open kernel modules ({min_major}+ '-open' driver package) instead of the proprietary ones"
                ),
            },
        ),
        ProprietaryModulesRequired {
            model,
            arch,
            open_loaded,
            swap,
        } => (
            format!(
                "{model} ({arch}) has no GSP and cannot use the open NVIDIA kernel modules; the open flavour is {}",
                if *open_loaded { "loaded" } else { "installed" }
            ),
            match swap {
                Some(s) => format!(
                    "replace {} with {} in the Image Factory schematic and upgrade",
                    s.replace, s.with
                ),
                None => "install NVIDIA's proprietary kernel modules (not the '-open' package) of branch 580 or older".to_owned(),
            },
        ),
        NvidiaBranchUnsupported {
            model,
            arch,
            major,
            min_major,
            max_major,
            extensions,
        } => {
            let range = branch_range(*min_major, *max_major);
            (
                format!("{model} ({arch}) needs NVIDIA driver {range}; branch {major} is installed"),
                match extensions {
                    Some(e) if !e.is_empty() => format!(
                        "switch to {} with the container toolkit of the same branch in the schematic and upgrade",
                        e.join(" or ")
                    ),
                    Some(_) => format!(
                        "no NVIDIA extension of this Talos has driver {range}: pass the GPU through to a VM or change the Talos version"
                    ),
                    None => format!("install the NVIDIA driver {range}"),
                },
            )
        }
        ModuleUnusable { module, state } => (
            format!("{module} is bound but its module is {state}"),
            format!(
                "check the kernel log for {module} errors; the module is unloading or failed to initialise"
            ),
        ),
        ModulesNotLoaded {
            modules,
            bound,
            fix,
            config,
            open_alpha,
        } => render_modules(modules, *bound, *fix, config.as_ref(), *open_alpha),
        FirmwareMissing {
            driver,
            pattern,
            fix,
        } => {
            let hint = match fix {
                FirmwareFix::NvidiaGspExtension { version, extension } => format!(
                    "install {extension} of driver {version} (it ships the GSP firmware of the open modules) and upgrade"
                ),
                FirmwareFix::NvidiaGspPackage { version } => format!(
                    "install the NVIDIA firmware package of driver {version} (gsp_*.bin) matching the loaded open module"
                ),
                FirmwareFix::ExtensionsUnknown { files } => format!(
                    "check `talosctl get extensions` for the extension that ships {files} (installed extensions are unknown to gpuscout)"
                ),
                FirmwareFix::AddExtension { extension } => {
                    format!("add {extension} to the Image Factory schematic and upgrade")
                }
                FirmwareFix::UpgradeExtension {
                    extension,
                    version,
                    files,
                    running,
                } => format!(
                    "the installed {extension} {version} lacks {files}: upgrade to a Talos release newer than {running} whose {extension} carries it"
                ),
                FirmwareFix::LinuxFirmware { files } => format!(
                    "install a linux-firmware package that provides {files} in /lib/firmware and reload the driver"
                ),
            };
            (
                format!("{driver} is loaded but not bound, and no firmware matches {pattern}"),
                hint,
            )
        }
        DriverNotBound {
            driver,
            address,
            on_talos,
            reason,
        } => {
            let log = if *on_talos { "talosctl dmesg" } else { "dmesg" };
            let hint = match reason {
                NotBound::XeForceProbe { model, device_id } => format!(
                    "xe did not take {address} ({model}): use kernel 6.12 or later, or boot with xe.force_probe={device_id}; see `{log}`"
                ),
                NotBound::OpenAlpha { version } => format!(
                    "the open {version} modules refuse GeForce and workstation cards: add {OPEN_ALPHA_PARAM} to the nvidia module's parameters (machine.kernel.modules) and reboot, or use the proprietary or production extension; see `{log} | grep NVRM`"
                ),
                NotBound::Probe => format!(
                    "read the probe error for {address} in `{log} | grep {address}` (unsupported id, firmware, power or BAR problems)"
                ),
            };
            (
                format!("{driver} is loaded but not bound to this device (probe failed)"),
                hint,
            )
        }
        ServiceNotRunning {
            service,
            driver,
            extension,
            driver_version,
        } => (
            format!("{service} is not running although {driver} is bound (Talos API)"),
            match driver_version {
                Some(v) => format!(
                    "read `talosctl logs {service}`: {extension} must be exactly driver {v} and starts only once the NVSwitches are bound to nvidia"
                ),
                None => format!(
                    "read `talosctl logs {service}`; the usual cause is a {extension} extension whose driver version differs from the kernel-module extension's (both must carry the same version)"
                ),
            },
        ),
    }
}

fn render_modules(
    modules: &[String],
    bound: bool,
    fix: ModulesFix,
    config: Option<&ModulesConfig>,
    open_alpha: bool,
) -> (String, String) {
    let names = list(modules);
    let lead = if bound {
        "the driver is bound but"
    } else {
        "no driver is bound and"
    };
    let mut detail = format!("{lead} {names} not loaded");
    let alpha = if open_alpha {
        alpha_sentence()
    } else {
        String::new()
    };
    if let Some(c) = config {
        let lacks = format!(
            "machine.kernel.modules lacks {} (Talos API)",
            list(&c.lacking)
        );
        if modules.iter().any(|m| c.lacking.contains(m)) {
            detail = format!("{detail}; {lacks}");
            return (
                detail,
                format!("{}{alpha}", kernel_modules_hint(&c.lacking)),
            );
        }
        // What did not load is configured: the config is not the cause.
        detail = format!("{detail}; machine.kernel.modules lists {names} (Talos API)");
        if !c.lacking.is_empty() {
            detail = format!("{detail}; {lacks}");
        }
        let verb = if modules.len() == 1 { "is" } else { "are" };
        return (
            detail,
            format!(
                "{names} {verb} configured but did not load: check `talosctl dmesg` for 'key was rejected' or 'Unknown symbol' (kernel-module extension built for another Talos version) or 'module not found' (first boot after install: reboot once){alpha}"
            ),
        );
    }
    let hint = match fix {
        ModulesFix::TalosUnknown => format!(
            "check `talosctl get extensions` for the GPU's driver extension and `talosctl dmesg` for why {names} did not load"
        ),
        ModulesFix::MachineConfig => format!(
            "add {names} to machine.kernel.modules in the machine config and reboot (the extension's modprobe.d blacklists them)"
        ),
        ModulesFix::BaseImage => format!(
            "{names} is part of the Talos base image: check the kernel log (`talosctl dmesg`) for why it did not load"
        ),
        ModulesFix::ExtensionInstalled => format!(
            "the extension is installed but {names} did not load: check `talosctl dmesg` for 'module not found' (reboot once after install) or 'key was rejected' (extension built for another Talos)"
        ),
        ModulesFix::Modprobe => format!(
            "load {names} (`modprobe {}`) and make it persistent in /etc/modules-load.d; install the driver package if modprobe cannot find it",
            modules.first().map(String::as_str).unwrap_or_default()
        ),
    };
    (detail, format!("{hint}{alpha}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_renders_one_line_and_maps_to_a_status() {
        let causes = vec![
            Cause::ModulesNotLoaded {
                modules: vec!["nvidia".into(), "nvidia_uvm".into()],
                bound: false,
                fix: ModulesFix::MachineConfig,
                config: None,
                open_alpha: true,
            },
            Cause::ServiceNotRunning {
                service: "ext-nvidia-persistenced".into(),
                driver: "nvidia".into(),
                extension: "nvidia-container-toolkit-production".into(),
                driver_version: None,
            },
        ];
        for c in causes {
            let (d, h) = render(&c, &[]);
            assert!(!d.contains('\n') && !h.contains('\n'));
            assert!(!d.is_empty() && !h.is_empty());
        }
        let (_, h) = render(
            &Cause::ModulesNotLoaded {
                modules: vec!["nvidia".into()],
                bound: false,
                fix: ModulesFix::MachineConfig,
                config: Some(ModulesConfig {
                    lacking: vec!["nvidia".into(), "nvidia_drm".into()],
                }),
                open_alpha: false,
            },
            &[],
        );
        assert!(h.starts_with("add `nvidia`, `nvidia_drm` to machine.kernel.modules"));
    }

    #[test]
    fn causes_serialise_with_their_kind() {
        let c = Cause::ServiceNotRunning {
            service: "ext-nvidia-persistenced".into(),
            driver: "nvidia".into(),
            extension: "nvidia-container-toolkit-lts".into(),
            driver_version: None,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["kind"], "service-not-running");
        assert_eq!(v["service"], "ext-nvidia-persistenced");
        let back: Cause = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        assert_eq!(c.status(), Status::ServiceNotRunning);
    }
}
