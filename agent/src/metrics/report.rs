//! Series taken from the latest discovery report, without any read at scrape time: GPU
//! identity, GPU counts per vendor (absent when the PCI device list could not be read), the
//! driver verdict (one-hot over every status of `docs/reference/verdicts.md`), readiness, kernel
//! module state and the build. They change only when discovery runs again.
//!
//! `gpuscout_gpu_info` carries, for NVIDIA GPUs, `pci_bus_id` in the form NVML and DCGM exporter
//! write it (`00000000:3B:00.0`: 8-digit domain, upper-case hex), so DCGM series join on it
//! (`docs/coexistence.md`); it is empty for other vendors.

use super::{Sink, families as f, gpu_label};
use crate::model::{Report, Status, Vendor};

/// Push the report-derived series.
pub fn collect(report: &Report, out: &mut Sink) {
    out.push(
        &f::BUILD_INFO,
        vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
        1.0,
    );
    // When the PCI device list could not be read, how many GPUs there are is unknown: absent,
    // not 0 (the reason is in the report's `host.unread`).
    if crate::pci::device_list_unread(&report.host.unread).is_none() {
        for v in Vendor::ALL {
            let n = report.gpus.iter().filter(|g| g.vendor == v).count();
            out.push(&f::GPUS, vec![("vendor", v.as_str().to_owned())], n as f64);
        }
    }
    for g in &report.gpus {
        let uuid = g.nvidia.as_ref().and_then(|n| n.uuid.clone());
        out.push(
            &f::GPU_INFO,
            vec![
                ("gpu", g.pci_address.to_string()),
                ("vendor", g.vendor.as_str().to_owned()),
                ("model", g.model.clone()),
                (
                    "device_id",
                    g.device_id.map(|d| format!("{d:#06x}")).unwrap_or_default(),
                ),
                ("driver", g.driver.clone().unwrap_or_default()),
                ("card", g.card.clone().unwrap_or_default()),
                ("uuid", uuid.unwrap_or_default()),
                ("pci_bus_id", dcgm_bus_id(g)),
            ],
            1.0,
        );
        for s in Status::ALL {
            out.push(
                &f::GPU_DRIVER_STATUS,
                vec![
                    ("gpu", g.pci_address.to_string()),
                    ("vendor", g.vendor.as_str().to_owned()),
                    ("status", s.as_str().to_owned()),
                ],
                f64::from(u8::from(g.status == s)),
            );
        }
        let mut l = gpu_label(&g.pci_address.to_string());
        l.push(("vendor", g.vendor.as_str().to_owned()));
        out.push(
            &f::GPU_READY,
            l,
            f64::from(u8::from(g.status == Status::Ok)),
        );
    }
    for m in &report.host.modules {
        out.push(
            &f::KERNEL_MODULE_LOADED,
            vec![("module", m.name.clone())],
            f64::from(u8::from(m.is_usable())),
        );
    }
}

/// The PCI address as NVML's `nvmlPciInfo_t.busId` and DCGM exporter's `pci_bus_id` label spell
/// it (`0000:3b:00.0` gives `00000000:3B:00.0`); empty for non-NVIDIA GPUs.
pub fn dcgm_bus_id(g: &crate::model::Gpu) -> String {
    if g.vendor != Vendor::Nvidia {
        return String::new();
    }
    let a = g.pci_address;
    format!(
        "{:08X}:{:02X}:{:02X}.{:X}",
        a.domain, a.bus, a.device, a.function
    )
}

#[cfg(test)]
mod tests {
    use super::dcgm_bus_id;

    #[test]
    fn bus_id_in_dcgm_form() {
        let r = crate::discover::discover(
            &crate::hostroot::HostRoot::new(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/hosts/dual-vendor"),
            )
            .unwrap(),
            &Default::default(),
            &Default::default(),
        );
        let mut g = r
            .gpus
            .iter()
            .find(|g| g.vendor == crate::model::Vendor::Nvidia)
            .unwrap()
            .clone();
        assert_eq!(dcgm_bus_id(&g), "00000000:01:00.0");
        g.pci_address = "0000:3b:0a.1".parse().unwrap();
        assert_eq!(dcgm_bus_id(&g), "00000000:3B:0A.1");
        let amd = r
            .gpus
            .iter()
            .find(|g| g.vendor == crate::model::Vendor::Amd)
            .unwrap();
        assert_eq!(dcgm_bus_id(amd), "");
    }
}
