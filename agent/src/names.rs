//! Model names: the vendor's own string where the host has one, then (AMD) libdrm's
//! `amdgpu.ids` marketing name for the device and revision, then the embedded PCI ID database
//! (the `pci-ids` crate, built from pciutils' `pci.ids`), else `<Vendor> device 0xNNNN`.
//!
//! `amdgpu.ids` is embedded at build time (`agent/data/amdgpu.ids`, provenance in
//! `agent/data/README.md`) and parsed once, the way libdrm's `amdgpu_parse_asic_ids()` parses
//! it: the first non-comment line is the file version; every later non-comment line is
//! `device,revision,name` with hexadecimal ids (leading blanks allowed), the name running to the
//! next comma with leading blanks trimmed; the first line for a (device, revision) wins.

use crate::model::{ModelSource, Vendor};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The vendored libdrm file.
const AMDGPU_IDS: &str = include_str!("../data/amdgpu.ids");
/// Where it came from (also in `agent/data/README.md`).
pub const AMDGPU_IDS_SOURCE: &str = "libdrm data/amdgpu.ids @ 369990d9660a (2025-12-19)";

/// One data line of `amdgpu.ids`, or why libdrm would reject it.
fn parse_ids_line(line: &str) -> Result<(u16, u8, &str), String> {
    let mut parts = line.splitn(3, ',');
    let hex = |s: Option<&str>, what: &str| -> Result<u32, String> {
        let s = s.ok_or_else(|| format!("no {what}"))?;
        u32::from_str_radix(s.trim_start(), 16).map_err(|e| format!("{what} {s:?}: {e}"))
    };
    let did = hex(parts.next(), "device id")?;
    let rid = hex(parts.next(), "revision id")?;
    let name = parts
        .next()
        .map(|n| {
            n.split(',')
                .next()
                .unwrap_or(n)
                .trim_start_matches([' ', '\t'])
        })
        .filter(|n| !n.is_empty())
        .ok_or("no name")?;
    let did = u16::try_from(did).map_err(|_| format!("device id {did:#x} too large"))?;
    let rid = u8::try_from(rid).map_err(|_| format!("revision id {rid:#x} too large"))?;
    Ok((did, rid, name))
}

/// The data lines of `amdgpu.ids` (comments, blank lines and the version line skipped).
fn ids_lines() -> impl Iterator<Item = &'static str> {
    AMDGPU_IDS
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .skip(1)
}

fn amdgpu_ids() -> &'static HashMap<(u16, u8), &'static str> {
    static IDS: OnceLock<HashMap<(u16, u8), &'static str>> = OnceLock::new();
    IDS.get_or_init(|| {
        let mut m = HashMap::new();
        for (did, rid, name) in ids_lines().filter_map(|l| parse_ids_line(l).ok()) {
            m.entry((did, rid)).or_insert(name);
        }
        m
    })
}

/// The AMD marketing name of a device and revision (`0x7550`, `0xc0` gives
/// `AMD Radeon RX 9070 XT`), as libdrm's `amdgpu_get_marketing_name()` gives it.
pub fn amdgpu_marketing_name(device_id: u16, revision: u8) -> Option<&'static str> {
    amdgpu_ids().get(&(device_id, revision)).copied()
}

/// Pick the model name for a GPU.
pub fn model_name(
    vendor: Vendor,
    vendor_id: u16,
    device_id: u16,
    revision: Option<u8>,
    vendor_string: Option<&str>,
) -> (String, ModelSource) {
    if let Some(s) = vendor_string.map(str::trim).filter(|s| !s.is_empty()) {
        return (s.to_owned(), ModelSource::Vendor);
    }
    if vendor == Vendor::Amd
        && let Some(name) = revision.and_then(|r| amdgpu_marketing_name(device_id, r))
    {
        return (name.trim().to_owned(), ModelSource::AmdgpuIds);
    }
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
            0x2684,
            Some(0xa1),
            Some("NVIDIA GeForce RTX 4090"),
        );
        assert_eq!(
            (m.as_str(), s),
            ("NVIDIA GeForce RTX 4090", ModelSource::Vendor)
        );
        let (m, s) = model_name(Vendor::Nvidia, 0x10de, 0x2684, None, Some("  "));
        assert_eq!((m.as_str(), s), ("GeForce RTX 4090", ModelSource::PciIds));
        let (m, s) = model_name(Vendor::Amd, 0x1002, 0xfffe, Some(0xc0), None);
        assert_eq!(
            (m.as_str(), s),
            ("AMD device 0xfffe", ModelSource::Fallback)
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

    #[test]
    fn amd_marketing_names_come_before_pci_ids() {
        // RX 9070 XT: pci.ids names only the chip (Navi 48); amdgpu.ids names the product.
        let (m, s) = model_name(Vendor::Amd, 0x1002, 0x7550, Some(0xc0), None);
        assert_eq!(
            (m.as_str(), s),
            ("AMD Radeon RX 9070 XT", ModelSource::AmdgpuIds)
        );
        let (m, _) = model_name(Vendor::Amd, 0x1002, 0x744c, Some(0xc8), None);
        assert_eq!(m, "AMD Radeon RX 7900 XTX");
        // The FRU product_name still wins.
        let (m, s) = model_name(
            Vendor::Amd,
            0x1002,
            0x74a1,
            Some(0x00),
            Some("AMD Instinct MI300X OAM"),
        );
        assert_eq!(
            (m.as_str(), s),
            ("AMD Instinct MI300X OAM", ModelSource::Vendor)
        );
        // An unknown revision falls through to pci.ids, an unknown revision-less read too.
        let (_, s) = model_name(Vendor::Amd, 0x1002, 0x7550, Some(0x01), None);
        assert_eq!(s, ModelSource::PciIds);
        let (_, s) = model_name(Vendor::Amd, 0x1002, 0x7550, None, None);
        assert_eq!(s, ModelSource::PciIds);
        // amdgpu.ids is AMD's table: never used for another vendor's ids.
        let (_, s) = model_name(Vendor::Intel, 0x8086, 0x7550, Some(0xc0), None);
        assert_ne!(s, ModelSource::AmdgpuIds);
    }

    /// Every data line of the vendored file parses the way libdrm parses it, and the lookup
    /// reaches it (or the earlier line for the same device and revision, which libdrm returns).
    #[test]
    fn every_amdgpu_ids_line_parses_and_is_reachable() {
        let mut count = 0;
        for line in ids_lines() {
            let (did, rid, name) = parse_ids_line(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            let first = ids_lines()
                .filter_map(|l| parse_ids_line(l).ok())
                .find(|(d, r, _)| (*d, *r) == (did, rid))
                .map(|(_, _, n)| n);
            assert_eq!(amdgpu_marketing_name(did, rid), first, "{line:?}");
            assert!(!name.trim().is_empty(), "{line:?}");
            count += 1;
        }
        assert!(count > 600, "only {count} lines: is the file truncated?");
        // The version line is not data; the one line with spaces instead of tabs still parses.
        assert_eq!(
            AMDGPU_IDS
                .lines()
                .find(|l| !l.starts_with('#') && !l.is_empty()),
            Some("1.0.0")
        );
        assert_eq!(
            amdgpu_marketing_name(0x7481, 0xc7),
            Some("AMD Steam Machine")
        );
    }

    #[test]
    fn libdrm_line_rules() {
        assert_eq!(
            parse_ids_line("7550,\tC0,\tAMD Radeon RX 9070 XT"),
            Ok((0x7550, 0xc0, "AMD Radeon RX 9070 XT"))
        );
        // The name ends at a comma, as libdrm's strtok_r splits it.
        assert_eq!(parse_ids_line("1234,\t00,\tA, B").map(|t| t.2), Ok("A"));
        assert!(parse_ids_line("zz,\t00,\tX").is_err());
        assert!(parse_ids_line("1234,\t00,\t").is_err());
        assert!(parse_ids_line("1234").is_err());
    }
}
