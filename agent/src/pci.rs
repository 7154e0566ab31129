//! PCI discovery: which functions are GPUs, and their generic facts.
//!
//! Reads, through [`HostRoot`], `sys/bus/pci/devices/*` and in each device directory `vendor`,
//! `device`, `subsystem_vendor`, `subsystem_device`, `class`, `revision`, `numa_node`,
//! `current_link_speed`/`_width`, `max_link_speed`/`_width`, the `driver` link, the SR-IOV files
//! (`sriov_totalvfs`, `sriov_numvfs`, `virtfnN`, `physfn`) and the device's own `drm/` directory
//! (`cardN`, `renderDN`), which is the only reliable card mapping: `simpledrm` can own `card0`.
//!
//! A GPU is a display-class (0x03) or processing-accelerator (0x12) function of AMD, NVIDIA or
//! Intel. A BMC's VGA (ASPEED, Matrox) or a GPU's HDMI audio function is not. A device whose
//! `vendor`/`class` cannot be read cannot be classified: it is recorded as unread and skipped.
//! A GPU whose `device` cannot be read is kept with `device_id` `None` (its verdict is then
//! `unknown`, see `discover`): one failed read never makes a GPU disappear. Every other attribute
//! is optional: missing, its field is `None`; present but unreadable or malformed, its field is
//! `None` with the reason in the GPU's `unread` list (the rule of [`crate::attr`]).

use crate::attr::Reader;
use crate::hostroot::{HostRoot, Resolved};
use crate::model::{PcieLink, Sriov, Unread, Vendor};
use crate::parse;

/// Host path of the PCI device list.
pub const DEVICES: &str = "sys/bus/pci/devices";

pub use crate::pciaddr::{BadAddress, PciAddress};

/// Generic facts about one GPU function.
#[derive(Debug, Clone)]
pub struct PciGpu {
    pub address: PciAddress,
    /// The resolved device directory (inside the host root).
    pub dir: Resolved,
    pub vendor: Vendor,
    pub vendor_id: u16,
    /// `None` when `device` could not be read (the reason is in `unread`).
    pub device_id: Option<u16>,
    pub subsystem_vendor_id: Option<u16>,
    pub subsystem_device_id: Option<u16>,
    pub class: u32,
    pub revision: Option<u8>,
    pub driver: Option<String>,
    pub numa_node: Option<i32>,
    pub link: PcieLink,
    pub sriov: Option<Sriov>,
    pub card: Option<String>,
    pub render: Option<String>,
    pub unread: Vec<Unread>,
    /// The `driver` link exists but could not be read (also in `unread`).
    pub driver_error: Option<Unread>,
}

impl PciGpu {
    /// DRM render minor (`renderD128` gives 128).
    pub fn render_minor(&self) -> Option<u32> {
        self.render
            .as_deref()
            .and_then(|r| r.strip_prefix("renderD"))
            .and_then(|n| n.parse().ok())
    }
}

/// True for the classes we treat as GPUs: display controllers (0x03xxxx) and processing
/// accelerators (0x12xxxx, e.g. AMD Instinct MI300X). Intel's processing accelerators are its
/// NPUs (Meteor Lake `8086:7d1d`, driver `intel_vpu`), not GPUs: Intel GPUs are all class 0x03.
pub fn is_gpu_class(vendor: Vendor, class: u32) -> bool {
    match class >> 16 {
        0x03 => true,
        0x12 => vendor != Vendor::Intel,
        _ => false,
    }
}

/// Scan the PCI bus. Returns the GPUs in address order and what could not be read.
pub fn scan(root: &HostRoot) -> (Vec<PciGpu>, Vec<Unread>) {
    let mut unread = Vec::new();
    let mut r = Reader::new(root, &mut unread);
    // No PCI bus in sysfs (some VMs, containers without /sys): no GPUs; unreadable: say why.
    let Some(names) = r.optional(root.list_dir(DEVICES)) else {
        return (Vec::new(), unread);
    };
    let mut gpus = Vec::new();
    for name in names {
        let Ok(address) = name.parse::<PciAddress>() else {
            continue;
        };
        // A device whose vendor or class cannot be read cannot be classified: recorded.
        if let Some(Some(gpu)) = r.required(probe(root, address, &name)) {
            gpus.push(gpu);
        }
    }
    gpus.sort_by_key(|g| g.address);
    (gpus, unread)
}

/// The entry of `unread` (a report's `host.unread`) that says the PCI device list itself, or a directory
/// above it, could not be read (permission denied, I/O error; a missing list is not recorded):
/// then which GPUs the host has is unknown, not "none".
pub fn device_list_unread(unread: &[Unread]) -> Option<&Unread> {
    let list = format!("/{DEVICES}");
    unread.iter().find(|u| {
        list.strip_prefix(u.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Reads one device. `Ok(None)` when it is not a GPU of ours.
fn probe(
    root: &HostRoot,
    address: PciAddress,
    name: &str,
) -> Result<Option<PciGpu>, crate::hostroot::Error> {
    let dir = root.resolve(format!("{DEVICES}/{name}"))?;
    let vendor_id =
        parse::hex_u16(&root.read_attr(&dir, "vendor")?).map_err(|e| e.at(&dir, "vendor"))?;
    let Some(vendor) = Vendor::from_pci_id(vendor_id) else {
        return Ok(None);
    };
    let class = parse::hex_u32(&root.read_attr(&dir, "class")?).map_err(|e| e.at(&dir, "class"))?;
    if !is_gpu_class(vendor, class) {
        return Ok(None);
    }
    let mut unread = Vec::new();
    let mut r = Reader::new(root, &mut unread);
    // Known vendor and class: a GPU of ours even when its id cannot be read.
    let device_id = r.required_attr(&dir, "device", parse::hex_u16);
    let subsystem_vendor_id = r.attr(&dir, "subsystem_vendor", parse::hex_u16);
    let subsystem_device_id = r.attr(&dir, "subsystem_device", parse::hex_u16);
    let revision = r.attr(&dir, "revision", parse::hex_u8);
    let numa_node = r.attr(&dir, "numa_node", parse::int::<i32>);
    let link = PcieLink {
        current_gts: r
            .attr(&dir, "current_link_speed", parse::link_speed_gts)
            .flatten(),
        current_width: r
            .attr(&dir, "current_link_width", parse::link_width)
            .flatten(),
        max_gts: r
            .attr(&dir, "max_link_speed", parse::link_speed_gts)
            .flatten(),
        max_width: r.attr(&dir, "max_link_width", parse::link_width).flatten(),
    };
    let sriov = read_sriov(&mut r, &dir);
    let before = r.unread.len();
    let driver = r.optional(root.link_name_in(&dir, "driver"));
    // The `driver` link exists but cannot be read: recorded, and kept apart for the verdict.
    let driver_error = r.unread.get(before).cloned();
    let (card, render) = drm_nodes(&mut r, &dir);
    Ok(Some(PciGpu {
        address,
        dir,
        vendor,
        vendor_id,
        device_id,
        subsystem_vendor_id,
        subsystem_device_id,
        class,
        revision,
        driver,
        numa_node,
        link,
        sriov,
        card,
        render,
        unread,
        driver_error,
    }))
}

fn read_sriov(r: &mut Reader<'_>, dir: &Resolved) -> Option<Sriov> {
    if let Ok(pf) = r.root.link_name_in(dir, "physfn") {
        return Some(Sriov::Vf { physfn: pf });
    }
    let total_vfs = r.attr(dir, "sriov_totalvfs", parse::int::<u32>)?;
    let num_vfs = r.attr(dir, "sriov_numvfs", parse::int::<u32>);
    let names = r.root.list_dir_in(dir, "").unwrap_or_default();
    let mut vfs: Vec<(u32, String)> = names
        .iter()
        .filter_map(|n| n.strip_prefix("virtfn")?.parse::<u32>().ok())
        .filter_map(|i| {
            r.root
                .link_name_in(dir, &format!("virtfn{i}"))
                .ok()
                .map(|t| (i, t))
        })
        .collect();
    vfs.sort();
    Some(Sriov::Pf {
        total_vfs: Some(total_vfs),
        num_vfs,
        vfs: vfs.into_iter().map(|(_, t)| t).collect(),
    })
}

/// `cardN` and `renderDN` from the device's own `drm/` directory.
fn drm_nodes(r: &mut Reader<'_>, dir: &Resolved) -> (Option<String>, Option<String>) {
    let Some(names) = r.optional(r.root.list_dir_in(dir, "drm")) else {
        return (None, None);
    };
    let pick = |prefix: &str| {
        names
            .iter()
            .filter(|n| {
                n.strip_prefix(prefix)
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
            .min_by_key(|n| n[prefix.len()..].parse::<u32>().unwrap_or(u32::MAX))
            .cloned()
    };
    (pick("card"), pick("renderD"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_device_list_is_recognised() {
        let u = |p: &str| Unread {
            path: p.into(),
            error: "permission denied".into(),
        };
        assert!(device_list_unread(&[u("/sys/bus/pci/devices")]).is_some());
        assert!(device_list_unread(&[u("/etc/os-release"), u("/sys/bus")]).is_some());
        assert!(device_list_unread(&[u("/sys/bus/pci/devices/0000:01:00.0")]).is_none());
        assert!(device_list_unread(&[u("/sys/bus/pc")]).is_none());
        assert!(device_list_unread(&[]).is_none());
    }

    #[test]
    fn parses_sysfs_nvml_and_short_addresses() {
        let a: PciAddress = "0000:3b:00.0".parse().unwrap();
        assert_eq!(a.to_string(), "0000:3b:00.0");
        let n: PciAddress = "00000000:3B:00.0".parse().unwrap();
        assert_eq!(n, a);
        let s: PciAddress = "c5:00.0".parse().unwrap();
        assert_eq!(s.to_string(), "0000:c5:00.0");
        assert_eq!(
            "0000:19:00.0".parse::<PciAddress>().unwrap().location_id(),
            6400
        );
    }

    #[test]
    fn rejects_non_addresses() {
        for bad in [
            "",
            "pci0000:00",
            "0000:3b:00",
            "0000:3b:20.0",
            "0000:3b:00.8",
            "zz:00.0",
            "0000:100:00.0",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gpu_classes() {
        assert!(is_gpu_class(Vendor::Amd, 0x030000));
        assert!(is_gpu_class(Vendor::Nvidia, 0x030200));
        assert!(is_gpu_class(Vendor::Intel, 0x038000));
        assert!(is_gpu_class(Vendor::Amd, 0x120000));
        assert!(!is_gpu_class(Vendor::Intel, 0x120000), "Intel NPU");
        assert!(!is_gpu_class(Vendor::Nvidia, 0x040300), "HDMI audio");
        assert!(!is_gpu_class(Vendor::Amd, 0x020000));
    }
}
