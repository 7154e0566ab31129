//! Model names: the vendor's own string where the host has one, else the embedded PCI ID
//! database (the `pci-ids` crate, built from pciutils' `pci.ids`), else `<Vendor> device 0xNNNN`
//! (`<Vendor> GPU (device id unread)` when the id itself could not be read).

use crate::model::{ModelSource, Vendor};

/// Pick the model name for a GPU.
pub fn model_name(
    vendor: Vendor,
    vendor_id: u16,
    device_id: Option<u16>,
    vendor_string: Option<&str>,
) -> (String, ModelSource) {
    if let Some(s) = vendor_string.map(str::trim).filter(|s| !s.is_empty()) {
        return (s.to_owned(), ModelSource::Vendor);
    }
    let Some(device_id) = device_id else {
        return (
            format!("{} GPU (device id unread)", vendor.display_name()),
            ModelSource::Fallback,
        );
    };
    if let Some(dev) = pci_ids::Device::from_vid_pid(vendor_id, device_id) {
        return (marketing_name(dev.name()), ModelSource::PciIds);
    }
    (
        format!("{} device {device_id:#06x}", vendor.display_name()),
        ModelSource::Fallback,
    )
}

/// `AD102 [GeForce RTX 4090]` gives `GeForce RTX 4090`: the bracket holds the product name when
/// it names one product. With alternatives (`Strix Halo [Radeon 8050S / Radeon 8060S]`,
/// `Navi 31 [Radeon RX 7900 XT/7900 XTX]`) the chip name before the bracket is used, so no
/// product is claimed that the host may not have.
pub fn marketing_name(pci_ids_name: &str) -> String {
    let n = pci_ids_name.trim();
    if let Some((chip, rest)) = n.split_once('[')
        && let Some(inner) = rest.strip_suffix(']')
    {
        let inner = inner.trim();
        let chip = chip.trim();
        if !inner.is_empty() && !inner.contains('/') {
            return inner.to_owned();
        }
        if !chip.is_empty() {
            return chip.to_owned();
        }
    }
    n.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_vendor_then_pci_ids_then_fallback() {
        let (m, s) = model_name(
            Vendor::Nvidia,
            0x10de,
            Some(0x2684),
            Some("NVIDIA GeForce RTX 4090"),
        );
        assert_eq!(
            (m.as_str(), s),
            ("NVIDIA GeForce RTX 4090", ModelSource::Vendor)
        );
        let (m, s) = model_name(Vendor::Nvidia, 0x10de, Some(0x2684), Some("  "));
        assert_eq!((m.as_str(), s), ("GeForce RTX 4090", ModelSource::PciIds));
        let (m, s) = model_name(Vendor::Amd, 0x1002, Some(0xfffe), None);
        assert_eq!(
            (m.as_str(), s),
            ("AMD device 0xfffe", ModelSource::Fallback)
        );
        let (m, s) = model_name(Vendor::Amd, 0x1002, None, None);
        assert_eq!(
            (m.as_str(), s),
            ("AMD GPU (device id unread)", ModelSource::Fallback)
        );
    }

    #[test]
    fn brackets() {
        assert_eq!(marketing_name("Battlemage G21 [Arc B580]"), "Arc B580");
        assert_eq!(marketing_name("Raphael"), "Raphael");
        assert!(
            marketing_name("Strix Halo [Radeon 8050S / Radeon 8060S]").starts_with("Strix Halo")
        );
    }
}
