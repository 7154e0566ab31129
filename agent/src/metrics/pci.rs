//! Source `pci`: the PCIe link of every GPU, re-read at each scrape because links retrain
//! (an idle GPU drops to 2.5 GT/s, a bad riser to x8).
//!
//! Reads `sys/bus/pci/devices/<gpu>/{current,max}_link_{speed,width}` through [`HostRoot`].
//! Missing files (conventional PCI), `Unknown` speeds and the widths 0 and 255 (the kernel's
//! "no link" / "unknown", see [`parse::link_width`]) are absent; a GPU directory that
//! vanished since discovery, or a malformed value, makes the source fail (other GPUs are still
//! read). The files are read through kept-open descriptors on sysfs ([`super::kept`]).
//!
//! [`HostRoot`]: crate::hostroot::HostRoot

use super::kept::{Kept, Reader};
use super::{Errors, ScrapeContext, Sink, Source, SourceError, families as f};
use crate::hostroot::Resolved;
use crate::parse;

/// PCIe link source.
#[derive(Debug, Default)]
pub struct Pci {
    kept: Kept,
}

/// The device directory of a GPU of the report.
pub(crate) fn device_dir(
    r: &mut Reader<'_>,
    gpu: &str,
) -> Result<Resolved, crate::hostroot::Error> {
    r.resolve(format!("{}/{gpu}", crate::pci::DEVICES))
}

/// The report's GPUs of `vendor` bound to `driver`, each with its resolved device directory.
/// A device whose directory is gone since discovery (hot unplug) is noted and skipped.
pub(crate) fn bound_devices<'a>(
    ctx: &'a ScrapeContext,
    r: &mut Reader<'_>,
    errors: &mut Errors,
    vendor: crate::model::Vendor,
    driver: &str,
) -> Vec<(&'a crate::model::Gpu, Resolved)> {
    ctx.report
        .gpus
        .iter()
        .filter(|g| g.vendor == vendor && g.driver.as_deref() == Some(driver))
        .filter_map(|g| match device_dir(r, &g.pci_address.to_string()) {
            Ok(d) => Some((g, d)),
            Err(e) => {
                errors.note(e.into());
                None
            }
        })
        .collect()
}

impl Source for Pci {
    fn name(&self) -> &'static str {
        "pci"
    }

    fn shares_thread(&self) -> bool {
        true
    }

    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        let mut errors = Errors::default();
        let mut r = self.kept.reader(&ctx.root, &ctx.report);
        for g in &ctx.report.gpus {
            let dir = match device_dir(&mut r, &g.pci_address.to_string()) {
                Ok(d) => d,
                Err(e) => {
                    errors.note(e.into());
                    continue;
                }
            };
            for state in ["current", "max"] {
                let labels = vec![
                    ("gpu", g.pci_address.to_string()),
                    ("state", state.to_owned()),
                ];
                let speed_file = format!("{state}_link_speed");
                if let Some(s) = errors.ok(r.read(&dir, &speed_file))
                    && !s.trim().is_empty()
                {
                    // `Unknown` (no trained link) is absent, not an error.
                    match parse::link_speed_gts(&s) {
                        Ok(gts) => {
                            out.push_opt(&f::PCIE_SPEED, labels.clone(), gts.map(|g| g * 1e9))
                        }
                        Err(e) => errors.note(e.at(&dir, &speed_file).into()),
                    }
                }
                let width_file = format!("{state}_link_width");
                if let Some(s) = errors.ok(r.read(&dir, &width_file))
                    && !s.trim().is_empty()
                {
                    // 0 and 255 are the kernel's "no link / unknown": absent, not an error.
                    match parse::link_width(&s) {
                        Ok(w) => out.push_opt(&f::PCIE_WIDTH, labels, w.map(f64::from)),
                        Err(e) => errors.note(e.at(&dir, &width_file).into()),
                    }
                }
            }
        }
        errors.finish()
    }
}
