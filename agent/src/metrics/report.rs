//! Series taken from the latest discovery report, without any read at scrape time: GPU
//! identity, GPU counts per vendor (absent when the PCI device list could not be read), the
//! driver verdict (one-hot over every SPEC §5 status),
//! readiness, kernel module state and the build. They change only when discovery runs again.

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
                ("gpu", g.pci_address.clone()),
                ("vendor", g.vendor.as_str().to_owned()),
                ("model", g.model.clone()),
                ("device_id", g.device_id.clone()),
                ("driver", g.driver.clone().unwrap_or_default()),
                ("card", g.card.clone().unwrap_or_default()),
                ("uuid", uuid.unwrap_or_default()),
            ],
            1.0,
        );
        for s in Status::ALL {
            out.push(
                &f::GPU_DRIVER_STATUS,
                vec![
                    ("gpu", g.pci_address.clone()),
                    ("vendor", g.vendor.as_str().to_owned()),
                    ("status", s.as_str().to_owned()),
                ],
                f64::from(u8::from(g.status == s)),
            );
        }
        let mut l = gpu_label(&g.pci_address);
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
