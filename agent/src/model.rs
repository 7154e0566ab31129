//! The report types: what discovery found on one host, in the stable JSON shape documented in
//! `docs/reference/report.md`.
//!
//! Plain data, no I/O. A value that could not be read is `None` (serialised as `null` or left
//! out), never `0`; what could not be read is listed in `unread` with the reason.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// GPU vendor, by PCI vendor id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Amd,
    Nvidia,
    Intel,
}

impl Vendor {
    pub const ALL: [Vendor; 3] = [Vendor::Amd, Vendor::Nvidia, Vendor::Intel];

    /// The vendor owning PCI vendor id `id`, if it is one of ours.
    pub fn from_pci_id(id: u16) -> Option<Self> {
        match id {
            0x1002 => Some(Vendor::Amd),
            0x10de => Some(Vendor::Nvidia),
            0x8086 => Some(Vendor::Intel),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Amd => "amd",
            Vendor::Nvidia => "nvidia",
            Vendor::Intel => "intel",
        }
    }

    /// Human name used in fallback model names (`AMD device 0x1586`).
    pub fn display_name(self) -> &'static str {
        match self {
            Vendor::Amd => "AMD",
            Vendor::Nvidia => "NVIDIA",
            Vendor::Intel => "Intel",
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Driver-stack verdict per GPU (`docs/reference/verdicts.md`), ordered from best to worst.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    #[default]
    Ok,
    DriverNotBound,
    ModuleNotLoaded,
    ExtensionMissing,
    ExtensionVersionMismatch,
    DriverVersionMismatch,
    FirmwareMissing,
    UnsupportedByTalosVersion,
    BoundToOtherDriver,
    Unknown,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Ok,
        Status::DriverNotBound,
        Status::ModuleNotLoaded,
        Status::ExtensionMissing,
        Status::ExtensionVersionMismatch,
        Status::DriverVersionMismatch,
        Status::FirmwareMissing,
        Status::UnsupportedByTalosVersion,
        Status::BoundToOtherDriver,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::DriverNotBound => "driver-not-bound",
            Status::ModuleNotLoaded => "module-not-loaded",
            Status::ExtensionMissing => "extension-missing",
            Status::ExtensionVersionMismatch => "extension-version-mismatch",
            Status::DriverVersionMismatch => "driver-version-mismatch",
            Status::FirmwareMissing => "firmware-missing",
            Status::UnsupportedByTalosVersion => "unsupported-by-talos-version",
            Status::BoundToOtherDriver => "bound-to-other-driver",
            Status::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found with a GPU's driver stack, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub status: Status,
    pub detail: String,
    pub hint: String,
}

/// A host file that could not be read, and why. Reported so that an absent value is explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unread {
    pub path: String,
    pub error: String,
}

/// A value a vendor library reports differently from the kernel's files. The kernel's value is
/// kept (PCI/sysfs identity wins); the disagreement is reported, never overwritten silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disagreement {
    /// PCI address of the GPU.
    pub gpu: String,
    /// The library that disagrees (`nvml`).
    pub source: String,
    pub field: String,
    /// What the kernel's files say (kept); `null` when PCI discovery did not see the GPU.
    pub kernel: Option<String>,
    pub library: String,
}

/// PCIe link state as the kernel reports it (`current_link_*`, `max_link_*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PcieLink {
    /// `current_link_speed` in GT/s (`16.0 GT/s PCIe` gives 16.0).
    pub current_gts: Option<f64>,
    pub current_width: Option<u32>,
    pub max_gts: Option<f64>,
    pub max_width: Option<u32>,
}

impl PcieLink {
    pub fn is_empty(&self) -> bool {
        self.current_gts.is_none()
            && self.current_width.is_none()
            && self.max_gts.is_none()
            && self.max_width.is_none()
    }
}

/// SR-IOV relation of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Sriov {
    /// Physical function with its enabled virtual functions.
    Pf {
        total_vfs: Option<u32>,
        num_vfs: Option<u32>,
        vfs: Vec<String>,
    },
    /// Virtual function of `physfn`.
    Vf { physfn: String },
}

/// AMD specifics (amdgpu device files and the KFD topology).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AmdInfo {
    /// Compiler target, e.g. `gfx1151`, from KFD `gfx_target_version`.
    pub gfx_target: Option<String>,
    /// Graphics-core IP version, e.g. `11.5.1`, from `ip_discovery` (or derived from the target).
    pub gc_version: Option<String>,
    /// Family as ROCm's node labeller names it (`GC_11_5_0`, `YC`, `AI`, ...).
    pub family: Option<String>,
    pub cu_count: Option<u32>,
    pub simd_count: Option<u32>,
    pub vram_bytes: Option<u64>,
    pub visible_vram_bytes: Option<u64>,
    pub gtt_bytes: Option<u64>,
    /// True for APUs (integrated), false for discrete GPUs.
    pub apu: Option<bool>,
    pub vbios_version: Option<String>,
    pub kfd_node: Option<u32>,
    /// Compute partitions (MI300 CPX etc.): KFD nodes that belong to this one device.
    pub partitions: Option<u32>,
    pub compute_partition: Option<String>,
    pub memory_partition: Option<String>,
}

/// NVIDIA specifics from `/proc/driver/nvidia` (and NVML when available).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NvidiaInfo {
    pub uuid: Option<String>,
    pub vbios_version: Option<String>,
    pub minor: Option<u32>,
    pub excluded: Option<bool>,
    pub gsp_firmware: Option<String>,
    /// `open` or `proprietary`, from `/proc/driver/nvidia/version`.
    pub kernel_module_flavor: Option<String>,
    pub kernel_module_version: Option<String>,
    /// MIG GPU instances visible through `/proc/driver/nvidia/capabilities/gpuN/mig`.
    pub mig_instances: Option<u32>,
    pub compute_capability: Option<String>,
    pub cuda_driver_version: Option<String>,
    pub family: Option<String>,
    pub mig_enabled: Option<bool>,
    /// MIG devices that exist now (NVML).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mig_devices: Option<u32>,
    /// Why NVML could not read this GPU (`gpu-lost`, or the first failed call).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nvml_error: Option<String>,
}

/// Intel specifics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IntelInfo {
    /// Architecture from the device id: `gen9`, `xe-lp`, `xe-hpg`, `xe-lpg`, `xe2`, ...
    pub arch: Option<String>,
    /// Marketing generation / platform (`Alchemist`, `Battlemage`, `Meteor Lake`, ...).
    pub platform: Option<String>,
    pub discrete: Option<bool>,
    /// Which kernel driver the device needs on this id: `i915` or `xe`.
    pub expected_driver: Option<String>,
}

/// Where a GPU's `model` name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelSource {
    /// The vendor's own string on this host (FRU `product_name`, NVIDIA `information`, NVML).
    Vendor,
    /// The embedded PCI ID database.
    PciIds,
    /// `<Vendor> device 0xNNNN`.
    Fallback,
}

/// One GPU (one PCI function of a GPU vendor with a display or accelerator class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub pci_address: String,
    pub vendor: Vendor,
    pub vendor_id: String,
    pub device_id: String,
    pub subsystem_vendor_id: Option<String>,
    pub subsystem_device_id: Option<String>,
    pub class: String,
    pub revision: Option<String>,
    pub model: String,
    pub model_source: ModelSource,
    pub driver: Option<String>,
    pub card: Option<String>,
    pub render: Option<String>,
    pub numa_node: Option<i32>,
    pub memory_bytes: Option<u64>,
    pub pcie: PcieLink,
    pub sriov: Option<Sriov>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amd: Option<AmdInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvidia: Option<NvidiaInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intel: Option<IntelInfo>,
    pub status: Status,
    pub problems: Vec<Problem>,
    /// Files that belong to this GPU and could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub unread: Vec<Unread>,
    /// Values a vendor library reports differently (the kernel's are kept).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub disagreements: Vec<Disagreement>,
}

impl Gpu {
    /// Numeric PCI device id (`0x1586` gives 0x1586).
    pub fn device_id_u16(&self) -> Option<u16> {
        u16::from_str_radix(self.device_id.trim_start_matches("0x"), 16).ok()
    }

    /// Recompute `status` as the worst problem (or `ok`).
    pub fn settle_status(&mut self) {
        self.status = self
            .problems
            .iter()
            .map(|p| p.status)
            .max()
            .unwrap_or(Status::Ok);
    }
}

/// State of a kernel module, from `/proc/modules` and `/sys/module/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleState {
    pub name: String,
    /// `live`, `loading`, `unloading`, `builtin` or `absent`.
    pub state: String,
    pub version: Option<String>,
    pub taint: Option<String>,
}

impl ModuleState {
    /// Loaded and usable: live as a module or built into the kernel.
    pub fn is_usable(&self) -> bool {
        self.state == "live" || self.state == "builtin"
    }
}

/// An installed Talos system extension (`/etc/extensions.yaml` or Node labels).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Extension {
    pub name: String,
    pub version: String,
}

/// Talos facts about this host; `null` in the report on other systems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TalosInfo {
    pub version: String,
    pub extensions: Vec<Extension>,
}

/// Facts about the host as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub kernel: Option<String>,
    pub os: Option<String>,
    pub talos: Option<TalosInfo>,
    /// GPU-related kernel modules and their state.
    pub modules: Vec<ModuleState>,
    /// Host-level files that could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub unread: Vec<Unread>,
    /// GPUs a vendor library reports that PCI discovery did not find.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub disagreements: Vec<Disagreement>,
}

/// `apiVersion` of the report: bumped only when a field is renamed or removed (fields are only
/// ever added within one version). Reference: `docs/reference/report.md`.
pub const REPORT_API_VERSION: &str = "gpuscout.io/v1";

fn report_api_version() -> String {
    REPORT_API_VERSION.to_owned()
}

/// The whole `discover` report (`docs/reference/report.md`, schema
/// `docs/reference/report.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_API_VERSION`].
    #[serde(rename = "apiVersion", default = "report_api_version")]
    pub api_version: String,
    /// The Kubernetes Node this report is about (`--node-name`, env `NODE_NAME`), else the
    /// host's hostname; `null` when neither is known.
    #[serde(default)]
    pub node: Option<String>,
    /// When the discovery pass that made this report ended (RFC 3339, UTC, whole seconds);
    /// `null` only in the daemon's placeholder before the first pass.
    #[serde(default)]
    pub generated_at: Option<String>,
    pub host: Host,
    pub gpus: Vec<Gpu>,
    pub labels: BTreeMap<String, String>,
}

impl Report {
    /// A report of the current [`REPORT_API_VERSION`] without node name or time.
    pub fn new(host: Host, gpus: Vec<Gpu>, labels: BTreeMap<String, String>) -> Self {
        Self {
            api_version: report_api_version(),
            node: None,
            generated_at: None,
            host,
            gpus,
            labels,
        }
    }
}

/// The current time as the report writes it: RFC 3339 in UTC, whole seconds.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
