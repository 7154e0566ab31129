//! NVIDIA per-process readings through NVML, run on the NVML worker ([`NvmlHandle::run`]) with
//! its per-call deadlines.
//!
//! Calls per GPU: `nvmlDeviceGetCount_v2`, `nvmlDeviceGetHandleByIndex_v2`,
//! `nvmlDeviceGetPciInfo_v3` (the join key), `nvmlDeviceGetComputeRunningProcesses_v3` and
//! `nvmlDeviceGetGraphicsRunningProcesses_v3` (pids and used memory),
//! `nvmlDeviceGetProcessUtilization` (per-process SM / encoder / decoder percent since the last
//! timestamp this agent saw), and for the allocation mapping `nvmlDeviceGetUUID` of each MIG
//! device (`nvmlDeviceGetMigMode`, `nvmlDeviceGetMaxMigDeviceCount`,
//! `nvmlDeviceGetMigDeviceHandleByIndex`). `NotSupported` (and `NotFound`: no sample since that
//! timestamp) give empty lists; a GPU whose calls fail otherwise is left out of the pass, so
//! its clients are kept, not retired. The pids are the host's: the agent needs the host's pid
//! namespace (`hostPID`) for them to match `/proc`.

use super::usage::{NvmlGpu, NvmlSample};
use crate::nvml::{Beat, Limits, NvmlHandle, error_text};
use crate::pci::PciAddress;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use std::collections::HashMap;

/// A GPU NVML could not read this pass, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub index: u32,
    pub error: String,
}

/// Per-process readings of every GPU NVML lists.
pub fn processes(
    nvml: &NvmlHandle,
    last_seen: HashMap<String, u64>,
) -> Result<(Vec<NvmlGpu>, Vec<Failed>), crate::nvml::Error> {
    nvml.run_blocking(move |n, beat, limits| read_processes(n, beat, limits, &last_seen))
}

/// MIG device UUIDs per GPU (PCI address → UUIDs).
pub fn mig_uuids(nvml: &NvmlHandle) -> Result<HashMap<String, Vec<String>>, crate::nvml::Error> {
    nvml.run_blocking(read_mig_uuids)
}

fn empty_if_unsupported<T>(r: Result<Vec<T>, NvmlError>) -> Result<Vec<T>, NvmlError> {
    match r {
        Err(
            NvmlError::NotSupported
            | NvmlError::NotFound
            | NvmlError::FailedToLoadSymbol(_)
            | NvmlError::FunctionNotFound,
        ) => Ok(Vec::new()),
        other => other,
    }
}

fn devices<'n>(
    nvml: &'n nvml_wrapper::Nvml,
    beat: &Beat,
    limits: Limits,
    failed: &mut Vec<Failed>,
) -> Vec<(u32, String, nvml_wrapper::Device<'n>)> {
    let count = match beat.call("nvmlDeviceGetCount_v2", limits.call, || nvml.device_count()) {
        Ok(c) => c,
        Err(e) => {
            failed.push(Failed {
                index: u32::MAX,
                error: format!("nvmlDeviceGetCount_v2: {}", error_text(&e)),
            });
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for i in 0..count.min(256) {
        let dev = match beat.call("nvmlDeviceGetHandleByIndex_v2", limits.slow, || {
            nvml.device_by_index(i)
        }) {
            Ok(d) => d,
            Err(e) => {
                failed.push(Failed {
                    index: i,
                    error: format!("nvmlDeviceGetHandleByIndex_v2: {}", error_text(&e)),
                });
                continue;
            }
        };
        let addr = beat
            .call("nvmlDeviceGetPciInfo_v3", limits.call, || dev.pci_info())
            .map_err(|e| error_text(&e))
            .and_then(|p| {
                p.bus_id
                    .parse::<PciAddress>()
                    .map_err(|e| format!("bus id: {e}"))
            });
        match addr {
            Ok(a) => out.push((i, a.to_string(), dev)),
            Err(error) => failed.push(Failed { index: i, error }),
        }
    }
    out
}

fn read_processes(
    nvml: &nvml_wrapper::Nvml,
    beat: &Beat,
    limits: Limits,
    last_seen: &HashMap<String, u64>,
) -> (Vec<NvmlGpu>, Vec<Failed>) {
    let mut failed = Vec::new();
    let mut out = Vec::new();
    for (index, gpu, dev) in devices(nvml, beat, limits, &mut failed) {
        let mut g = NvmlGpu {
            gpu: gpu.clone(),
            ..Default::default()
        };
        let compute = beat.call(
            "nvmlDeviceGetComputeRunningProcesses_v3",
            limits.call,
            || empty_if_unsupported(dev.running_compute_processes()),
        );
        let graphics = beat.call(
            "nvmlDeviceGetGraphicsRunningProcesses_v3",
            limits.call,
            || empty_if_unsupported(dev.running_graphics_processes()),
        );
        let since = last_seen.get(&gpu).copied().unwrap_or(0);
        let samples = beat.call("nvmlDeviceGetProcessUtilization", limits.call, || {
            empty_if_unsupported(dev.process_utilization_stats(since))
        });
        match (compute, graphics, samples) {
            (Ok(c), Ok(gr), Ok(s)) => {
                for p in c.into_iter().chain(gr) {
                    let mem = match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some(b),
                        UsedGpuMemory::Unavailable => None,
                    };
                    g.processes.push((p.pid, mem));
                }
                g.samples = s
                    .into_iter()
                    .map(|s| NvmlSample {
                        pid: s.pid,
                        timestamp_us: s.timestamp,
                        sm_percent: s.sm_util,
                        enc_percent: s.enc_util,
                        dec_percent: s.dec_util,
                    })
                    .collect();
                out.push(g);
            }
            (c, gr, s) => {
                let e = [c.err(), gr.err(), s.err()]
                    .into_iter()
                    .flatten()
                    .next()
                    .map(|e| error_text(&e))
                    .unwrap_or_default();
                failed.push(Failed { index, error: e });
            }
        }
    }
    (out, failed)
}

fn read_mig_uuids(
    nvml: &nvml_wrapper::Nvml,
    beat: &Beat,
    limits: Limits,
) -> HashMap<String, Vec<String>> {
    let mut failed = Vec::new();
    let mut out = HashMap::new();
    for (_, gpu, dev) in devices(nvml, beat, limits, &mut failed) {
        let on = beat
            .call("nvmlDeviceGetMigMode", limits.call, || dev.mig_mode())
            .is_ok_and(|m| m.current == 1);
        if !on {
            continue;
        }
        let Ok(max) = beat.call("nvmlDeviceGetMaxMigDeviceCount", limits.call, || {
            dev.mig_device_count()
        }) else {
            continue;
        };
        let mut uuids = Vec::new();
        for i in 0..max.min(64) {
            let Ok(mig) = beat.call("nvmlDeviceGetMigDeviceHandleByIndex", limits.call, || {
                dev.mig_device_by_index(i)
            }) else {
                continue;
            };
            if let Ok(u) = beat.call("nvmlDeviceGetUUID", limits.call, || mig.uuid()) {
                uuids.push(u);
            }
        }
        out.insert(gpu, uuids);
    }
    out
}
