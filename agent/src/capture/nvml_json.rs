//! What NVML said during a capture, in two forms written next to the host tree:
//!
//! * `nvml.json` ([`NvmlCapture`]): every reading of [`NvmlSnapshot`] in base units, the
//!   library's versions and the source's state, for the person reading a bug report;
//! * `nvml_double.conf` ([`double_conf`]): the same readings as a script for the NVML test
//!   double (`tests/nvml-double/nvml_double.c`), so `discover`/`serve` on the unpacked capture
//!   can be given the NVML this host had (`--nvml-lib` pointing at a copy of the double with
//!   this file next to it). `discover --root <unpacked>` alone never loads NVML from the
//!   capture: the NVML library files in it are empty name-only stubs.
//!
//! Readings NVML did not give stay absent (`null` / no line), as everywhere else.

use crate::nvml::{GpuReading, NvmlSnapshot};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// `nvml.json`.
#[derive(Debug, Clone, Serialize)]
pub struct NvmlCapture {
    /// `ready`, `absent`, `failed: <why>`, `not-started` (no NVIDIA GPU, so NVML was not tried).
    pub state: String,
    pub driver_version: Option<String>,
    pub cuda_driver_version: Option<String>,
    /// Wall time of the snapshot's pass on the worker, in seconds.
    pub pass_seconds: Option<f64>,
    pub gpus: Vec<NvmlGpu>,
    pub unjoined: Vec<String>,
}

/// One GPU as NVML read it.
#[derive(Debug, Clone, Serialize)]
pub struct NvmlGpu {
    pub pci_address: Option<String>,
    pub nvml_bus_id: Option<String>,
    pub index: Option<u32>,
    pub pci_vendor_id: Option<String>,
    pub pci_device_id: Option<String>,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_free_bytes: Option<u64>,
    pub utilization_gpu_ratio: Option<f64>,
    pub utilization_memory_ratio: Option<f64>,
    pub temperature_celsius: Option<u32>,
    pub power_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    pub energy_joules: Option<f64>,
    pub clocks_hz: BTreeMap<String, u64>,
    pub max_clocks_hz: BTreeMap<String, u64>,
    pub compute_capability: Option<String>,
    pub family: Option<String>,
    pub mig_enabled: Option<bool>,
    pub mig_pending_enabled: Option<bool>,
    pub mig_devices: Option<u32>,
    pub ecc_corrected_total: Option<u64>,
    pub ecc_uncorrected_total: Option<u64>,
    pub pcie_current_gen: Option<u32>,
    pub pcie_current_width: Option<u32>,
    pub pcie_max_gen: Option<u32>,
    pub pcie_max_width: Option<u32>,
    pub xid_errors: BTreeMap<u64, u64>,
    pub lost: bool,
    pub errors: Vec<String>,
}

impl NvmlGpu {
    fn from_reading(r: &GpuReading) -> Self {
        let clocks = |m: &BTreeMap<&'static str, u64>| {
            m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        Self {
            pci_address: r.address.map(|a| a.to_string()),
            nvml_bus_id: r.nvml_bus_id.clone(),
            index: r.index,
            pci_vendor_id: r.pci_vendor_id.map(|v| format!("0x{v:04x}")),
            pci_device_id: r.pci_device_id.map(|v| format!("0x{v:04x}")),
            name: r.name.clone(),
            uuid: r.uuid.clone(),
            memory_total_bytes: r.memory_total_bytes,
            memory_used_bytes: r.memory_used_bytes,
            memory_free_bytes: r.memory_free_bytes,
            utilization_gpu_ratio: r.utilization_gpu_ratio,
            utilization_memory_ratio: r.utilization_memory_ratio,
            temperature_celsius: r.temperature_celsius,
            power_watts: r.power_watts,
            power_limit_watts: r.power_limit_watts,
            energy_joules: r.energy_joules,
            clocks_hz: clocks(&r.clocks_hz),
            max_clocks_hz: clocks(&r.max_clocks_hz),
            compute_capability: r.compute_capability.clone(),
            family: r.family.map(str::to_owned),
            mig_enabled: r.mig_enabled,
            mig_pending_enabled: r.mig_pending_enabled,
            mig_devices: r.mig_devices,
            ecc_corrected_total: r.ecc_corrected_total,
            ecc_uncorrected_total: r.ecc_uncorrected_total,
            pcie_current_gen: r.pcie_current_gen,
            pcie_current_width: r.pcie_current_width,
            pcie_max_gen: r.pcie_max_gen,
            pcie_max_width: r.pcie_max_width,
            xid_errors: r.xid_errors.clone(),
            lost: r.lost,
            errors: r.errors.clone(),
        }
    }
}

impl NvmlCapture {
    /// From the source's state and its last snapshot (if any).
    pub fn new(state: String, snap: Option<&NvmlSnapshot>) -> Self {
        Self {
            state,
            driver_version: snap.and_then(|s| s.driver_version.clone()),
            cuda_driver_version: snap.and_then(|s| s.cuda_driver_version.clone()),
            pass_seconds: snap.map(|s| s.duration.as_secs_f64()),
            gpus: snap
                .map(|s| s.gpus.values().map(NvmlGpu::from_reading).collect())
                .unwrap_or_default(),
            unjoined: snap
                .map(|s| {
                    s.unjoined
                        .iter()
                        .map(|u| format!("index {}: {}", u.index, u.error))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// NVML's `nvmlDeviceArchitecture_t` number of a family name (nvml.h: `NVML_DEVICE_ARCH_*`).
fn arch_number(family: &str) -> Option<u32> {
    Some(match family {
        "kepler" => 2,
        "maxwell" => 3,
        "pascal" => 4,
        "volta" => 5,
        "turing" => 6,
        "ampere" => 7,
        "ada" => 8,
        "hopper" => 9,
        "blackwell" => 10,
        _ => return None,
    })
}

/// `12.4` → `12040` (NVML's `major * 1000 + minor * 10`).
fn cuda_number(v: &str) -> Option<u32> {
    let (maj, min) = v.split_once('.')?;
    Some(maj.parse::<u32>().ok()? * 1000 + min.parse::<u32>().ok()? * 10)
}

/// The readings as a script for the NVML test double (see its header for the keys): GPU `i`
/// is NVML index `i`, every value in the double's units (MHz, mW, mJ, percent).
pub fn double_conf(c: &NvmlCapture) -> String {
    let mut s = String::from(
        "# NVML test double script written by `gpuscout capture` from this host's NVML readings.\n",
    );
    if let Some(v) = &c.driver_version {
        let _ = writeln!(s, "driver_version={v}");
    }
    if let Some(v) = c.cuda_driver_version.as_deref().and_then(cuda_number) {
        let _ = writeln!(s, "cuda_version={v}");
    }
    let mut next = 0;
    for g in &c.gpus {
        let i = g.index.unwrap_or(next);
        next = i + 1;
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                let _ = writeln!(s, "gpu.{i}.{k}={v}");
            }
        };
        put("bus_id", g.nvml_bus_id.clone());
        put("name", g.name.clone());
        put("uuid", g.uuid.clone());
        let hex = |v: &Option<String>| {
            v.as_deref()
                .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        };
        if let (Some(d), Some(v)) = (hex(&g.pci_device_id), hex(&g.pci_vendor_id)) {
            put("pci_device_id", Some(format!("0x{:08x}", (d << 16) | v)));
        }
        put("mem_total", g.memory_total_bytes.map(|v| v.to_string()));
        put("mem_used", g.memory_used_bytes.map(|v| v.to_string()));
        put("mem_free", g.memory_free_bytes.map(|v| v.to_string()));
        let pct = |r: Option<f64>| r.map(|r| format!("{}", (r * 100.0).round() as u64));
        put("util_gpu", pct(g.utilization_gpu_ratio));
        put("util_mem", pct(g.utilization_memory_ratio));
        put("temp", g.temperature_celsius.map(|v| v.to_string()));
        let milli = |w: Option<f64>| w.map(|w| format!("{}", (w * 1000.0).round() as u64));
        put("power_mw", milli(g.power_watts));
        put("power_limit_mw", milli(g.power_limit_watts));
        put("enforced_limit_mw", milli(g.power_limit_watts));
        put("energy_mj", milli(g.energy_joules));
        for (dom, key) in [("graphics", "graphics"), ("sm", "sm"), ("memory", "mem")] {
            put(
                &format!("clock_{key}"),
                g.clocks_hz.get(dom).map(|hz| (hz / 1_000_000).to_string()),
            );
            put(
                &format!("max_clock_{key}"),
                g.max_clocks_hz
                    .get(dom)
                    .map(|hz| (hz / 1_000_000).to_string()),
            );
        }
        put("cc", g.compute_capability.clone());
        put(
            "arch",
            g.family
                .as_deref()
                .and_then(arch_number)
                .map(|n| n.to_string()),
        );
        put(
            "mig_current",
            g.mig_enabled.map(|b| u8::from(b).to_string()),
        );
        put(
            "mig_pending",
            g.mig_pending_enabled.map(|b| u8::from(b).to_string()),
        );
        put("mig_devices", g.mig_devices.map(|v| v.to_string()));
        put(
            "ecc_corrected",
            g.ecc_corrected_total.map(|v| v.to_string()),
        );
        put(
            "ecc_uncorrected",
            g.ecc_uncorrected_total.map(|v| v.to_string()),
        );
        put("pcie_gen", g.pcie_current_gen.map(|v| v.to_string()));
        put("pcie_width", g.pcie_current_width.map(|v| v.to_string()));
        put("pcie_max_gen", g.pcie_max_gen.map(|v| v.to_string()));
        put("pcie_max_width", g.pcie_max_width.map(|v| v.to_string()));
        if !g.xid_errors.is_empty() {
            let list: Vec<String> = g
                .xid_errors
                .iter()
                .flat_map(|(x, n)| std::iter::repeat_n(x.to_string(), *n as usize))
                .collect();
            put("xid", Some(list.join(",")));
        }
        if g.lost {
            put("lost", Some("1".into()));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_convert_back_to_the_doubles_script() {
        let g = NvmlGpu {
            pci_address: Some("0000:01:00.0".into()),
            nvml_bus_id: Some("00000000:01:00.0".into()),
            index: Some(0),
            pci_vendor_id: Some("0x10de".into()),
            pci_device_id: Some("0x2684".into()),
            name: Some("NVIDIA GeForce RTX 4090".into()),
            uuid: Some("GPU-x".into()),
            memory_total_bytes: Some(25_757_220_864),
            memory_used_bytes: None,
            memory_free_bytes: None,
            utilization_gpu_ratio: Some(0.37),
            utilization_memory_ratio: None,
            temperature_celsius: Some(54),
            power_watts: Some(123.456),
            power_limit_watts: Some(450.0),
            energy_joules: Some(987_654.321),
            clocks_hz: [("memory".to_owned(), 10_501_000_000)].into(),
            max_clocks_hz: BTreeMap::new(),
            compute_capability: Some("8.9".into()),
            family: Some("ada".into()),
            mig_enabled: Some(false),
            mig_pending_enabled: None,
            mig_devices: None,
            ecc_corrected_total: None,
            ecc_uncorrected_total: None,
            pcie_current_gen: Some(1),
            pcie_current_width: Some(16),
            pcie_max_gen: None,
            pcie_max_width: None,
            xid_errors: [(79, 2)].into(),
            lost: false,
            errors: vec![],
        };
        let c = NvmlCapture {
            state: "ready".into(),
            driver_version: Some("570.172.08".into()),
            cuda_driver_version: Some("12.8".into()),
            pass_seconds: None,
            gpus: vec![g],
            unjoined: vec![],
        };
        let conf = double_conf(&c);
        for line in [
            "driver_version=570.172.08",
            "cuda_version=12080",
            "gpu.0.pci_device_id=0x268410de",
            "gpu.0.util_gpu=37",
            "gpu.0.power_mw=123456",
            "gpu.0.enforced_limit_mw=450000",
            "gpu.0.energy_mj=987654321",
            "gpu.0.clock_mem=10501",
            "gpu.0.arch=8",
            "gpu.0.mig_current=0",
            "gpu.0.xid=79,79",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing in\n{conf}");
        }
        assert!(!conf.contains("mem_used"), "absent stays absent");
    }
}
