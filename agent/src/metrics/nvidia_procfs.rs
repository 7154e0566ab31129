//! Source `nvidia_procfs`: what the NVIDIA kernel module tells without NVML, re-read at each
//! scrape so a module reload (driver upgrade) shows up at once.
//!
//! Reads `proc/driver/nvidia/version` through [`HostRoot`] (only when discovery found NVIDIA
//! GPUs) and exports `gpuscout_nvidia_driver_info{version,flavor}`. Missing file (module not
//! loaded): no series, success 1 (the driver verdict already says it). Unreadable or
//! unparsable file: no series, success 0. Temperatures, power, memory, clocks and XID counters
//! of NVIDIA GPUs come only from NVML (the `nvml` source in `agent/src/nvml/`).
//!
//! [`HostRoot`]: crate::hostroot::HostRoot

use super::{Errors, ScrapeContext, Sink, Source, SourceError, families as f};
use crate::model::Vendor;
use crate::vendors::nvidia;

const VERSION: &str = "proc/driver/nvidia/version";

/// NVIDIA procfs source.
#[derive(Debug)]
pub struct NvidiaProcfs;

impl Source for NvidiaProcfs {
    fn name(&self) -> &'static str {
        "nvidia_procfs"
    }

    fn shares_thread(&self) -> bool {
        true
    }

    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        if !ctx.report.gpus.iter().any(|g| g.vendor == Vendor::Nvidia) {
            return Ok(());
        }
        let mut errors = Errors::default();
        if let Some(text) = errors.ok(ctx.root.read_string(VERSION)) {
            match nvidia::parse_version(&text) {
                Some(m) => out.push(
                    &f::NVIDIA_DRIVER_INFO,
                    vec![("version", m.version), ("flavor", m.flavor.to_owned())],
                    1.0,
                ),
                None => errors.note(SourceError::Malformed {
                    path: format!("/{VERSION}"),
                    reason: "no `NVRM version:` line with a version".to_owned(),
                }),
            }
        }
        errors.finish()
    }
}
