//! NVIDIA NVSwitch functions: the NVLink switches of HGX/DGX systems, whose GPUs need the
//! fabric manager (`nvidia-fabricmanager`) at exactly the driver's version before CUDA starts.
//!
//! Reads `sys/bus/pci/devices/<bdf>/{vendor,class}` through [`HostRoot`]: an NVSwitch is a PCI
//! function of vendor 0x10de with class 0x0680 ("bridge, other"). NVIDIA's own driver knows
//! them by device id (open-gpu-kernel-modules `src/common/nvswitch/kernel/nvswitch.c`: LR10
//! 0x1AE8, 0x1AF0–0x1AFF; LS10 0x22A0–0x22AF), and pci.ids names 0x1af1 "GA100 [A100 NVSwitch]"
//! and 0x22a3 "GH100 [H100 NVSwitch]"; the class covers later generations too. A function whose
//! files cannot be read is skipped (the GPU scan reports unreadable devices).

use crate::hostroot::HostRoot;
use crate::parse;
use crate::pci::DEVICES;

/// PCI class of an NVSwitch function (base 0x06 bridge, sub-class 0x80 other).
pub const NVSWITCH_CLASS: u32 = 0x0680;
const NVIDIA: u16 = 0x10de;

/// Addresses of the NVSwitch functions on this host, sorted. Empty without a PCI bus.
pub fn scan(root: &HostRoot) -> Vec<String> {
    let Ok(names) = root.list_dir(DEVICES) else {
        return Vec::new();
    };
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|name| is_nvswitch(root, name).unwrap_or(false))
        .collect();
    out.sort();
    out
}

fn is_nvswitch(root: &HostRoot, name: &str) -> Result<bool, crate::hostroot::Error> {
    let dir = root.resolve(format!("{DEVICES}/{name}"))?;
    let Ok(vendor) = parse::hex_u16(&root.read_attr(&dir, "vendor")?) else {
        return Ok(false);
    };
    if vendor != NVIDIA {
        return Ok(false);
    }
    let Ok(class) = parse::hex_u32(&root.read_attr(&dir, "class")?) else {
        return Ok(false);
    };
    Ok(class >> 8 == NVSWITCH_CLASS)
}
