//! The NVML metrics source (`source="nvml"`): one [`NvmlHandle::snapshot_blocking`] per scrape
//! pass, on the metrics pass's blocking thread. The handle's worker makes the NVML calls; this
//! source only waits for the reply, bounded by the NVML call deadlines, so a hung driver costs a
//! scrape at most one call deadline and then `gpuscout_scrape_source_success{source="nvml"} 0`
//! until the source recovers.
//!
//! Series (label `gpu` = PCI address as in the report): `gpu_memory_total_bytes` /
//! `gpu_memory_used_bytes` (`pool="vram"`), `gpu_utilization_ratio`,
//! `gpu_temperature_celsius{sensor="gpu"}`, `gpu_power_watts`, `gpu_power_limit_watts`,
//! `gpu_energy_joules_total`, `gpu_clock_hertz{domain=graphics|sm|memory}`,
//! `gpu_ecc_errors_total{type=corrected|uncorrected}`, `gpu_xid_errors_total{xid}`, and
//! `nvml_stuck_threads`. PCIe link series come from sysfs (the `pci` source), not from here,
//! so no series is exported twice. A node without NVIDIA GPUs never loads NVML; a node whose
//! NVML library is absent exports nothing from this source and counts as a success.

use super::NvmlHandle;
use crate::metrics::{ScrapeContext, Sink, Source, SourceError, families as f};
use crate::model::Vendor;

/// NVML as a metrics source.
#[derive(Debug, Clone)]
pub struct NvmlSource {
    handle: NvmlHandle,
}

impl NvmlSource {
    pub fn new(handle: NvmlHandle) -> Self {
        Self { handle }
    }
}

impl Source for NvmlSource {
    fn name(&self) -> &'static str {
        "nvml"
    }

    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        if !ctx.report.gpus.iter().any(|g| g.vendor == Vendor::Nvidia) {
            return Ok(());
        }
        let result = self.handle.snapshot_blocking();
        out.push(
            &f::NVML_STUCK_THREADS,
            Vec::new(),
            self.handle.health().stuck_threads as f64,
        );
        let snap = match result {
            Ok(s) => s,
            Err(e) if e.is_absent() => return Ok(()),
            Err(e) => return Err(SourceError::Library(e.to_string())),
        };
        let mut first_error = None;
        for (addr, r) in &snap.gpus {
            let gpu = addr.to_string();
            let l = |extra: Option<(&'static str, &str)>| {
                let mut v = vec![("gpu", gpu.clone())];
                if let Some((k, val)) = extra {
                    v.push((k, val.to_owned()));
                }
                v
            };
            out.push_opt(
                &f::MEMORY_TOTAL,
                l(Some(("pool", "vram"))),
                r.memory_total_bytes.map(|b| b as f64),
            );
            out.push_opt(
                &f::MEMORY_USED,
                l(Some(("pool", "vram"))),
                r.memory_used_bytes.map(|b| b as f64),
            );
            out.push_opt(&f::UTILIZATION, l(None), r.utilization_gpu_ratio);
            out.push_opt(
                &f::TEMPERATURE,
                l(Some(("sensor", "gpu"))),
                r.temperature_celsius.map(f64::from),
            );
            out.push_opt(&f::POWER, l(None), r.power_watts);
            out.push_opt(&f::POWER_LIMIT, l(None), r.power_limit_watts);
            out.push_opt(&f::ENERGY, l(None), r.energy_joules);
            for (domain, hz) in &r.clocks_hz {
                out.push(&f::CLOCK, l(Some(("domain", domain))), *hz as f64);
            }
            out.push_opt(
                &f::ECC_ERRORS,
                l(Some(("type", "corrected"))),
                r.ecc_corrected_total.map(|n| n as f64),
            );
            out.push_opt(
                &f::ECC_ERRORS,
                l(Some(("type", "uncorrected"))),
                r.ecc_uncorrected_total.map(|n| n as f64),
            );
            if first_error.is_none() {
                if r.lost {
                    first_error = Some(format!("{gpu}: gpu-lost"));
                } else if let Some(e) = r.errors.first() {
                    first_error = Some(format!("{gpu}: {e}"));
                }
            }
        }
        // XID counts of every GPU that delivered one, joined this pass or lost since.
        for (addr, counts) in &snap.xid_errors {
            for (xid, n) in counts {
                out.push(
                    &f::XID_ERRORS,
                    vec![("gpu", addr.to_string()), ("xid", xid.to_string())],
                    *n as f64,
                );
            }
        }
        if let Some(u) = snap.unjoined.first() {
            first_error.get_or_insert_with(|| format!("NVML device {}: {}", u.index, u.error));
        }
        match first_error {
            Some(e) => Err(SourceError::Library(e)),
            None => Ok(()),
        }
    }
}
