//! The report types: what discovery found on one host, in the stable JSON shape documented in
//! `docs/reference/report.md`.
//!
//! Plain data, no I/O. A value that could not be read is `None` (serialised as `null` or left
//! out), never `0`; what could not be read is listed in `unread` with the reason.

use crate::cause::{Cause, Note};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The report's text for integer PCI ids: `0x` and fixed-width lower-case hex (`0x1002` for
/// ids, `0x030000` for a class, `0xc1` for a revision), as `lspci -n` and sysfs write them.
pub mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    fn parse<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let Some(s) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        u64::from_str_radix(s.trim().trim_start_matches("0x"), 16)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }

    fn narrow<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
        v: Option<u64>,
    ) -> Result<Option<T>, D::Error> {
        v.map(|v| T::try_from(v).map_err(|_| serde::de::Error::custom("PCI id out of range")))
            .transpose()
    }

    fn required<'de, D: Deserializer<'de>, T>(v: Option<T>) -> Result<T, D::Error> {
        v.ok_or_else(|| serde::de::Error::custom("PCI id is null"))
    }

    /// A 16-bit id (vendor, device, subsystem).
    pub mod u16 {
        use super::*;
        pub fn serialize<S: Serializer>(v: &u16, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&format_args!("{v:#06x}"))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
            required::<D, _>(narrow::<D, u16>(parse(d)?)?)
        }
    }

    /// A 16-bit id that may be unknown (`null`).
    pub mod opt_u16 {
        use super::*;
        pub fn serialize<S: Serializer>(v: &Option<u16>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(&format!("{v:#06x}")),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
            narrow::<D, u16>(parse(d)?)
        }
    }

    /// A 24-bit PCI class (class, subclass, programming interface).
    pub mod class {
        use super::*;
        pub fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&format_args!("{v:#08x}"))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
            required::<D, _>(narrow::<D, u32>(parse(d)?)?)
        }
    }

    /// An 8-bit revision that may be unknown (`null`).
    pub mod opt_u8 {
        use super::*;
        pub fn serialize<S: Serializer>(v: &Option<u8>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(&format!("{v:#04x}")),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
            narrow::<D, u8>(parse(d)?)
        }
    }
}

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

    /// The vendor's PCI vendor id.
    pub fn pci_id(self) -> u16 {
        match self {
            Vendor::Amd => 0x1002,
            Vendor::Nvidia => 0x10de,
            Vendor::Intel => 0x8086,
        }
    }

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

pub use crate::pciaddr::PciAddress;
pub use crate::status::Status;

/// One problem found with a GPU's driver stack, with what to change.
///
/// `cause` is what the verdict decided, with the facts it is about; `detail` and `hint` are
/// rendered from it (and from `notes`) by [`crate::cause::render`], never the other way round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub status: Status,
    pub detail: String,
    pub hint: String,
    pub cause: Cause,
    /// Facts the Talos API added (appended to `detail`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub notes: Vec<Note>,
}

impl Problem {
    /// A problem for `cause`, its status and text rendered.
    pub fn new(cause: Cause) -> Self {
        let mut p = Problem {
            status: cause.status(),
            detail: String::new(),
            hint: String::new(),
            cause,
            notes: Vec::new(),
        };
        p.render();
        p
    }

    /// Set `status`, `detail` and `hint` from `cause` and `notes` again (after a change).
    pub fn render(&mut self) {
        self.status = self.cause.status();
        (self.detail, self.hint) = crate::cause::render(&self.cause, &self.notes);
    }

    /// Add a note once.
    pub fn note(&mut self, note: Note) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
            self.render();
        }
    }
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
    /// The kernel's `AMDGPU_FAMILY_*` name (`GC_11_5_0`, `YC`, `AI`, ...), from the GC version
    /// where `ip_discovery` gives it, else from the KFD target when that is unambiguous.
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
    /// `size_in_bytes` of the KFD node's first memory bank (`mem_banks/0/properties`; on a
    /// partitioned device the first partition's): what ROCm's node labeller reports as VRAM.
    #[serde(default)]
    pub kfd_mem_bank_bytes: Option<u64>,
    /// `srcversion` of the module bound to the device (`driver/module/srcversion`): present for
    /// DKMS builds and kernels built with `CONFIG_MODULE_SRCVERSION_ALL`.
    #[serde(default)]
    pub driver_srcversion: Option<String>,
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
    /// The kernel driver for this id: the one that binds it by default (`i915` where both list
    /// it, since xe needs `force_probe` there), else the one that binds it with `force_probe`.
    /// `None` where no upstream driver lists the id (Ponte Vecchio, Cannon Lake).
    pub expected_driver: Option<String>,
    /// The module option `expected_driver` needs before it binds this id
    /// (`xe.force_probe=d740`); `None` where it binds by default.
    #[serde(default)]
    pub force_probe: Option<String>,
}

/// Where a GPU's `model` name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelSource {
    /// The vendor's own string on this host (FRU `product_name`, NVIDIA `information`, NVML).
    Vendor,
    /// libdrm's `amdgpu.ids` (AMD marketing name by device and revision), embedded.
    AmdgpuIds,
    /// The embedded PCI ID database.
    PciIds,
    /// `<Vendor> device 0xNNNN`.
    Fallback,
}

/// One GPU (one PCI function of a GPU vendor with a display or accelerator class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// Written in the sysfs form, `0000:3b:00.0`.
    pub pci_address: PciAddress,
    pub vendor: Vendor,
    /// PCI ids, class and revision are integers here and hex text in the report
    /// (`0x1002`, `0x030000`, `0xc1`; see [`hex`]).
    #[serde(with = "hex::u16")]
    pub vendor_id: u16,
    /// `null` when the PCI `device` attribute could not be read (listed in `unread`).
    #[serde(with = "hex::opt_u16")]
    pub device_id: Option<u16>,
    #[serde(with = "hex::opt_u16")]
    pub subsystem_vendor_id: Option<u16>,
    #[serde(with = "hex::opt_u16")]
    pub subsystem_device_id: Option<u16>,
    #[serde(with = "hex::class")]
    pub class: u32,
    #[serde(with = "hex::opt_u8")]
    pub revision: Option<u8>,
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
    /// The `driver` link exists but could not be read (also listed in `unread`); the verdict
    /// is then `unknown`. Not part of the report.
    #[serde(skip)]
    pub driver_link_error: Option<Unread>,
}

impl Gpu {
    /// **For tests only**: a GPU at `pci_address` with the vendor's PCI vendor id, class
    /// `0x030000`, nothing else known (no device id, driver or vendor details) and status `ok`.
    /// Tests set what they need with `Gpu { driver: .., ..Gpu::test(vendor, addr) }`, so a new
    /// field means one edit here.
    ///
    /// Panics when `pci_address` is not a PCI address.
    pub fn test(vendor: Vendor, pci_address: &str) -> Self {
        Self {
            pci_address: pci_address.parse().expect("a PCI address"),
            vendor,
            vendor_id: vendor.pci_id(),
            device_id: None,
            subsystem_vendor_id: None,
            subsystem_device_id: None,
            class: 0x030000,
            revision: None,
            model: String::new(),
            model_source: ModelSource::PciIds,
            driver: None,
            card: None,
            render: None,
            numa_node: None,
            memory_bytes: None,
            pcie: PcieLink::default(),
            sriov: None,
            amd: None,
            nvidia: None,
            intel: None,
            status: Status::Ok,
            problems: Vec::new(),
            unread: Vec::new(),
            disagreements: Vec::new(),
            driver_link_error: None,
        }
    }

    /// Render every problem's text from its cause, then set `status` to the worst problem
    /// (or `ok`).
    pub fn settle_status(&mut self) {
        for p in &mut self.problems {
            p.render();
        }
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
    /// `live`, `loading`, `unloading`, `builtin`, `absent` or `unknown` (or what `initstate` says).
    pub state: ModuleLoad,
    pub version: Option<String>,
    pub taint: Option<String>,
}

impl ModuleState {
    /// Loaded and usable: live as a module or built into the kernel.
    pub fn is_usable(&self) -> bool {
        matches!(self.state, ModuleLoad::Live | ModuleLoad::Builtin)
    }
}

/// Where a kernel module is in its life: `/proc/modules`' state column (`Live`, `Loading`,
/// `Unloading`), `sys/module/<m>/initstate` (`live`, `coming`, `going`), or built in / absent.
/// Written in the report in lower case; a state the kernel may add later is kept as its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ModuleLoad {
    Live,
    Loading,
    Unloading,
    Coming,
    Going,
    /// A `sys/module/<m>` directory without `initstate`: built into the kernel.
    Builtin,
    Absent,
    /// `initstate` exists but could not be read (the failure is in the report's `unread`).
    Unknown,
    /// Any other text, lower-cased.
    Other(String),
}

impl ModuleLoad {
    /// The report's text for this state.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Live => "live",
            Self::Loading => "loading",
            Self::Unloading => "unloading",
            Self::Coming => "coming",
            Self::Going => "going",
            Self::Builtin => "builtin",
            Self::Absent => "absent",
            Self::Unknown => "unknown",
            Self::Other(s) => s,
        }
    }
}

impl From<&str> for ModuleLoad {
    /// Parse a state as the kernel writes it (any case).
    fn from(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "live" => Self::Live,
            "loading" => Self::Loading,
            "unloading" => Self::Unloading,
            "coming" => Self::Coming,
            "going" => Self::Going,
            "builtin" => Self::Builtin,
            "absent" => Self::Absent,
            "unknown" => Self::Unknown,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl From<String> for ModuleLoad {
    fn from(s: String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<ModuleLoad> for String {
    fn from(s: ModuleLoad) -> Self {
        s.as_str().to_owned()
    }
}

impl std::fmt::Display for ModuleLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// NVIDIA NVSwitch PCI functions (vendor 0x10de, class 0x0680): an NVLink system whose
    /// GPUs need the fabric manager.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub nvswitches: Vec<String>,
    /// Which host files the verdicts depend on could not be read (also listed in `unread`).
    /// Not part of the report.
    #[serde(skip)]
    pub read_errors: HostReadErrors,
}

/// Typed read failures of the host files the verdicts depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReadErrors {
    /// `/etc/os-release` (and `/usr/lib/os-release`) exists but could not be read.
    pub os_release: Option<Unread>,
    /// `/etc/extensions.yaml` exists on Talos but could not be read or parsed.
    pub extensions_yaml: Option<Unread>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_states_are_text_in_the_report_and_read_back() {
        let g = Gpu {
            device_id: Some(0x744c),
            subsystem_vendor_id: Some(0x1da2),
            subsystem_device_id: None,
            class: 0x038000,
            revision: Some(0xc8),
            ..Gpu::test(Vendor::Amd, "0000:03:00.0")
        };
        let v = serde_json::to_value(&g).unwrap();
        assert_eq!(v["pci_address"], "0000:03:00.0");
        assert_eq!(v["vendor_id"], "0x1002");
        assert_eq!(v["device_id"], "0x744c");
        assert_eq!(v["subsystem_vendor_id"], "0x1da2");
        assert_eq!(v["subsystem_device_id"], serde_json::Value::Null);
        assert_eq!(v["class"], "0x038000");
        assert_eq!(v["revision"], "0xc8");
        let back: Gpu = serde_json::from_value(v).unwrap();
        assert_eq!(back, g);
        let mut bad = serde_json::to_value(&g).unwrap();
        bad["device_id"] = "0x12345".into();
        assert!(
            serde_json::from_value::<Gpu>(bad).is_err(),
            "a device id over 16 bits"
        );

        for (text, state) in [
            ("live", ModuleLoad::Live),
            ("builtin", ModuleLoad::Builtin),
            ("unknown", ModuleLoad::Unknown),
            ("going", ModuleLoad::Going),
            ("unformed", ModuleLoad::Other("unformed".into())),
        ] {
            assert_eq!(ModuleLoad::from(text.to_ascii_uppercase().as_str()), state);
            assert_eq!(serde_json::to_value(&state).unwrap(), text);
            assert_eq!(
                serde_json::from_value::<ModuleLoad>(text.into()).unwrap(),
                state
            );
        }
    }
}
