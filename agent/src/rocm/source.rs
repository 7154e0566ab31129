//! The ROCm SMI metrics source (`source="rocm_smi"`, feature `rocm-smi`): one [`read_all`] per
//! scrape pass (`rsmi_init` … `rsmi_shut_down`, so a GPU that appears or goes away is seen at the
//! next pass), on the pass's blocking thread under its deadline. A call that hangs in sysfs keeps
//! that thread; the exporter reports the source failed (`timeout`, then `busy`) and does not
//! start it again until the call returns, while every other source is served.
//!
//! Exports only what the sysfs sources do not (label `gpu` = PCI address as in the report):
//! `gpu_energy_joules_total`, `gpu_ras_errors_total{block,type=corrected|uncorrected}`,
//! `gpu_memory_busy_ratio` and `gpu_pcie_replays_total`. Memory, busy, temperatures and power
//! come from the `amdgpu` source, so no series is exported twice.
//!
//! A node whose report has no GPU bound to `amdgpu` never calls the library and succeeds with
//! nothing. When `rsmi_init` fails on a node that has one, or a value was refused by the
//! [`Preflight`] (the library would have aborted), the source fails
//! (`gpuscout_scrape_source_success{source="rocm_smi"} 0`) with the other values still served;
//! the exporter logs the failure once per kind and an info line when it recovers.
//! Devices ROCm SMI lists that the report does not (or a second device at an address already
//! seen, a compute partition) are skipped.

use super::{Preflight, RocmReading, read_all};
use crate::metrics::{ScrapeContext, Sink, Source, SourceError, families as f};
use crate::model::Vendor;
use std::collections::BTreeSet;

/// ROCm SMI as a metrics source.
#[derive(Debug, Default)]
pub struct RocmSmiSource;

impl RocmSmiSource {
    pub fn new() -> Self {
        Self
    }
}

impl Source for RocmSmiSource {
    fn name(&self) -> &'static str {
        "rocm_smi"
    }

    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        let ours: BTreeSet<String> = ctx
            .report
            .gpus
            .iter()
            .filter(|g| g.vendor == Vendor::Amd && g.driver.as_deref() == Some("amdgpu"))
            .map(|g| g.pci_address.to_string())
            .collect();
        if ours.is_empty() {
            return Ok(());
        }
        let readings = match read_all(&Preflight::new(ctx.root.clone())) {
            Ok(r) => r,
            Err(e) => return Err(SourceError::Library(e.to_string())),
        };
        match export(&readings, &ours, out) {
            Some(e) => Err(SourceError::Library(e)),
            None => Ok(()),
        }
    }
}

/// Push the readings of the GPUs in `ours`; the first refusal of any of them, if one.
fn export(readings: &[RocmReading], ours: &BTreeSet<String>, out: &mut Sink) -> Option<String> {
    let mut seen = BTreeSet::new();
    let mut first_refusal = None;
    for r in readings {
        let Some(addr) = r.address.map(|a| a.to_string()) else {
            tracing::debug!(
                index = r.index,
                "ROCm SMI device without a PCI address, skipped"
            );
            continue;
        };
        if !ours.contains(&addr) || !seen.insert(addr.clone()) {
            tracing::debug!(gpu = %addr, index = r.index, "ROCm SMI device not in the report (or seen), skipped");
            continue;
        }
        let gpu = || vec![("gpu", addr.clone())];
        out.push_opt(&f::ENERGY, gpu(), r.energy_joules);
        out.push_opt(&f::MEMORY_BUSY, gpu(), r.memory_busy_ratio);
        out.push_opt(
            &f::PCIE_REPLAYS,
            gpu(),
            r.pcie_replays_total.map(|n| n as f64),
        );
        for (block, c) in &r.ras {
            for (kind, n) in [
                ("corrected", c.correctable),
                ("uncorrected", c.uncorrectable),
            ] {
                out.push(
                    &f::RAS_ERRORS,
                    vec![
                        ("gpu", addr.clone()),
                        ("block", (*block).to_owned()),
                        ("type", kind.to_owned()),
                    ],
                    n as f64,
                );
            }
        }
        if first_refusal.is_none() {
            first_refusal = r.refused.first().map(|why| format!("{addr}: {why}"));
        }
    }
    first_refusal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rocm::RasCount;

    fn reading(addr: &str) -> RocmReading {
        RocmReading {
            address: addr.parse().ok(),
            ..Default::default()
        }
    }

    #[test]
    fn rocm_source_exports_only_report_gpus_once_and_unread_values_are_absent() {
        let mut a = reading("0000:03:00.0");
        a.energy_joules = Some(12.5);
        a.ras.insert(
            "umc",
            RasCount {
                correctable: 2,
                uncorrectable: 0,
            },
        );
        a.refused.push("ras/sdma_err_count: bad".into());
        // A second partition at the same address, and a device the report does not have.
        let mut dup = reading("0000:03:00.0");
        dup.energy_joules = Some(99.0);
        let mut other = reading("0000:c1:00.0");
        other.energy_joules = Some(1.0);
        let ours = BTreeSet::from(["0000:03:00.0".to_owned()]);
        let mut sink = Sink::default();
        let refusal = export(&[a, dup, other], &ours, &mut sink);
        assert_eq!(
            refusal.as_deref(),
            Some("0000:03:00.0: ras/sdma_err_count: bad")
        );
        let energy = sink.samples("gpu_energy_joules");
        assert_eq!(energy.len(), 1);
        assert_eq!(energy[0].value, 12.5);
        assert_eq!(sink.samples("gpu_ras_errors").len(), 2);
        // Never read: absent, not 0.
        assert!(sink.samples("gpu_memory_busy_ratio").is_empty());
        assert!(sink.samples("gpu_pcie_replays").is_empty());
    }
}
