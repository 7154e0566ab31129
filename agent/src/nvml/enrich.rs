//! Merge an [`NvmlSnapshot`] into the discovery report.
//!
//! Policy (issue 4): PCI/sysfs identity wins, NVML enriches. A GPU is matched by its normalised
//! PCI address only. Fields discovery could not read are filled from NVML (model when it came
//! from the ID table or a fallback, UUID, memory size, compute capability, CUDA driver version,
//! family, MIG). Where both have a value and they disagree, the sysfs/procfs value stays and
//! the disagreement is returned as a [`Discrepancy`] (and logged); nothing is overwritten
//! silently. A GPU NVML reports that PCI discovery did not find is a discrepancy too. An NVIDIA
//! GPU that NVML did not join while NVML has devices it could not identify (no handle or PCI
//! info, e.g. `GPU_IS_LOST`) gets `nvidia.nvml_error` = `not joined (NVML device N: why)`.

use super::{GpuReading, NvmlSnapshot};
use crate::model::{Gpu, ModelSource, NvidiaInfo, Vendor};
use crate::pci::PciAddress;

/// A value on which NVML and the kernel's files disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    /// The GPU's PCI address.
    pub gpu: PciAddress,
    pub field: &'static str,
    /// What sysfs/procfs says (kept), `None` when PCI discovery did not see the GPU.
    pub kernel: Option<String>,
    pub nvml: String,
}

fn note(
    out: &mut Vec<Discrepancy>,
    gpu: PciAddress,
    field: &'static str,
    kernel: &str,
    nvml: &str,
) {
    out.push(Discrepancy {
        gpu,
        field,
        kernel: Some(kernel.to_owned()),
        nvml: nvml.to_owned(),
    });
}

/// Fill `slot` from NVML when empty; report when both are set and differ.
fn merge(
    slot: &mut Option<String>,
    nvml: Option<&str>,
    out: &mut Vec<Discrepancy>,
    gpu: PciAddress,
    field: &'static str,
) {
    match (slot.as_deref(), nvml) {
        (_, None) => {}
        (None, Some(n)) => *slot = Some(n.to_owned()),
        (Some(k), Some(n)) if k != n => note(out, gpu, field, k, n),
        _ => {}
    }
}

/// Apply `snap` to the NVIDIA GPUs in `gpus`. Returns the disagreements.
pub fn apply(gpus: &mut [Gpu], snap: &NvmlSnapshot) -> Vec<Discrepancy> {
    let mut out = Vec::new();
    let mut matched: Vec<PciAddress> = Vec::new();
    for gpu in gpus.iter_mut().filter(|g| g.vendor == Vendor::Nvidia) {
        let addr = gpu.pci_address;
        let Some(r) = snap.gpus.get(&addr) else {
            note_unjoined(gpu, snap);
            continue;
        };
        matched.push(addr);
        merge_identity(gpu, r, &mut out);
        merge_nvidia_info(gpu, r, snap, &mut out);
    }
    for (addr, r) in &snap.gpus {
        if !matched.contains(addr) {
            out.push(Discrepancy {
                gpu: *addr,
                field: "presence",
                kernel: None,
                nvml: r.name.clone().unwrap_or_else(|| "present".into()),
            });
        }
    }
    for d in &out {
        tracing::warn!(gpu = %d.gpu, field = d.field, kernel = d.kernel.as_deref().unwrap_or("absent"), nvml = %d.nvml, "NVML disagrees with the kernel's files; keeping the kernel's value");
    }
    out
}

/// NVML has devices it could not join (no handle or no PCI info: a GPU that fell off the bus
/// answers GPU_IS_LOST there). Which of them is this GPU cannot be told, so say that NVML
/// could not read it, and why, without attributing a reading.
fn note_unjoined(gpu: &mut Gpu, snap: &NvmlSnapshot) {
    if snap.unjoined.is_empty() {
        return;
    }
    let why: Vec<String> = snap
        .unjoined
        .iter()
        .map(|u| format!("NVML device {}: {}", u.index, u.error))
        .collect();
    gpu.nvidia
        .get_or_insert_with(NvidiaInfo::default)
        .nvml_error = Some(format!("not joined ({})", why.join("; ")));
}

/// Device id, model and memory size: the kernel's values stay, NVML fills the gaps (and its
/// name replaces a model from the ID tables).
fn merge_identity(gpu: &mut Gpu, r: &GpuReading, out: &mut Vec<Discrepancy>) {
    let id = gpu.pci_address;
    if let (Some(d), Some(k)) = (r.pci_device_id, gpu.device_id)
        && d != k
    {
        note(
            out,
            id,
            "device_id",
            &format!("{k:#06x}"),
            &format!("{d:#06x}"),
        );
    }
    if let Some(name) = &r.name {
        if gpu.model_source == ModelSource::Vendor {
            if &gpu.model != name {
                note(out, id, "model", &gpu.model, name);
            }
        } else {
            gpu.model = name.clone();
            gpu.model_source = ModelSource::Vendor;
        }
    }
    match (gpu.memory_bytes, r.memory_total_bytes) {
        (None, Some(m)) => gpu.memory_bytes = Some(m),
        (Some(k), Some(m)) if k != m => {
            note(out, id, "memory_bytes", &k.to_string(), &m.to_string());
        }
        _ => {}
    }
}

/// The NVIDIA details: UUID, compute capability, CUDA driver version, family, MIG and NVML's
/// own read errors.
fn merge_nvidia_info(
    gpu: &mut Gpu,
    r: &GpuReading,
    snap: &NvmlSnapshot,
    out: &mut Vec<Discrepancy>,
) {
    let id = gpu.pci_address;
    let info = gpu.nvidia.get_or_insert_with(NvidiaInfo::default);
    merge(&mut info.uuid, r.uuid.as_deref(), out, id, "uuid");
    merge(
        &mut info.compute_capability,
        r.compute_capability.as_deref(),
        out,
        id,
        "compute_capability",
    );
    merge(
        &mut info.cuda_driver_version,
        snap.cuda_driver_version.as_deref(),
        out,
        id,
        "cuda_driver_version",
    );
    merge(&mut info.family, r.family, out, id, "family");
    if let Some(m) = r.mig_enabled {
        info.mig_enabled = Some(m);
    }
    if r.mig_devices.is_some() {
        info.mig_devices = r.mig_devices;
    }
    if r.lost {
        info.nvml_error = Some("gpu-lost".into());
    } else if let Some(e) = r.errors.first() {
        info.nvml_error = Some(e.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvml::GpuReading;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    fn gpu(addr: &str, model_source: ModelSource) -> Gpu {
        Gpu {
            device_id: Some(0x2684),
            model: "NVIDIA GeForce RTX 4090".into(),
            model_source,
            driver: Some("nvidia".into()),
            nvidia: Some(NvidiaInfo {
                uuid: Some("GPU-aaaa".into()),
                ..Default::default()
            }),
            ..Gpu::test(Vendor::Nvidia, addr)
        }
    }

    fn snap(readings: Vec<GpuReading>) -> NvmlSnapshot {
        NvmlSnapshot {
            taken: Instant::now(),
            duration: Duration::ZERO,
            driver_version: Some("550.127.05".into()),
            cuda_driver_version: Some("12.4".into()),
            gpus: readings
                .into_iter()
                .map(|r| (r.address.unwrap(), r))
                .collect::<BTreeMap<_, _>>(),
            unjoined: vec![],
            xid_errors: BTreeMap::new(),
        }
    }

    #[test]
    fn fills_gaps_and_reports_disagreements() {
        let mut gpus = vec![gpu("0000:3b:00.0", ModelSource::PciIds)];
        let r = GpuReading {
            address: Some("00000000:3B:00.0".parse().unwrap()),
            pci_device_id: Some(0x2684),
            name: Some("NVIDIA GeForce RTX 4090 D".into()),
            uuid: Some("GPU-bbbb".into()),
            memory_total_bytes: Some(25_757_220_864),
            compute_capability: Some("8.9".into()),
            family: Some("ada"),
            mig_enabled: Some(false),
            mig_devices: Some(0),
            ..Default::default()
        };
        let other = GpuReading {
            address: Some("00000000:5E:00.0".parse().unwrap()),
            ..Default::default()
        };
        let d = apply(&mut gpus, &snap(vec![r, other]));
        let g = &gpus[0];
        // The ID-table name is replaced by the vendor's own string.
        assert_eq!(g.model, "NVIDIA GeForce RTX 4090 D");
        assert_eq!(g.model_source, ModelSource::Vendor);
        assert_eq!(g.memory_bytes, Some(25_757_220_864));
        let n = g.nvidia.as_ref().unwrap();
        // procfs UUID kept, the difference reported.
        assert_eq!(n.uuid.as_deref(), Some("GPU-aaaa"));
        assert_eq!(n.compute_capability.as_deref(), Some("8.9"));
        assert_eq!(n.cuda_driver_version.as_deref(), Some("12.4"));
        assert_eq!(n.family.as_deref(), Some("ada"));
        assert_eq!(n.mig_devices, Some(0));
        let fields: Vec<_> = d.iter().map(|x| (x.gpu.to_string(), x.field)).collect();
        assert_eq!(
            fields,
            vec![
                ("0000:3b:00.0".to_owned(), "uuid"),
                ("0000:5e:00.0".to_owned(), "presence")
            ]
        );
    }

    #[test]
    fn vendor_model_is_kept() {
        let mut gpus = vec![gpu("0000:01:00.0", ModelSource::Vendor)];
        let r = GpuReading {
            address: Some("0000:01:00.0".parse().unwrap()),
            name: Some("Something else".into()),
            lost: true,
            ..Default::default()
        };
        let d = apply(&mut gpus, &snap(vec![r]));
        assert_eq!(gpus[0].model, "NVIDIA GeForce RTX 4090");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].field, "model");
        assert_eq!(
            gpus[0].nvidia.as_ref().unwrap().nvml_error.as_deref(),
            Some("gpu-lost")
        );
    }
}
