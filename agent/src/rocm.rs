//! ROCm SMI (`librocm_smi64`) through the `rocm_smi_lib` crate; only with the cargo feature
//! `rocm-smi` (off by default: the crate links the library at build and load time, and the one
//! shipped binary must start on every node).
//!
//! Calls: `rsmi_init(0)`, `rsmi_num_monitor_devices`, per device `rsmi_dev_pci_id_get` (BDFID =
//! domain << 32 | partition << 28 | bus << 8 | device << 3 | function), `rsmi_dev_id_get`,
//! `rsmi_dev_vendor_id_get`, `rsmi_dev_unique_id_get`, `rsmi_dev_name_get`,
//! `rsmi_dev_memory_total_get`/`_usage_get` (VRAM, visible VRAM, GTT), `rsmi_dev_busy_percent_get`,
//! `rsmi_dev_temp_metric_get` (edge, junction, memory; current), `rsmi_dev_power_ave_get`,
//! `rsmi_dev_energy_count_get` (accumulated energy counter × its resolution) and
//! `rsmi_dev_ecc_count_get` (summed over the blocks that report), then `rsmi_shut_down`.
//!
//! What it adds over our sysfs reader: the energy counter (from the SMU, not in hwmon on most
//! dGPUs), RAS/ECC counts per block, and a second, independent reading of the same sysfs values
//! for cross-checks. Everything else ROCm SMI reads from the same sysfs files we do
//! (`/sys/class/drm/card*/device/...`, hwmon, KFD topology); it always reads the real `/sys` and
//! ignores `--root` (release builds ignore its root-override variables), which is why its test
//! runs inside a private mount namespace.
//!
//! Every call is a blocking sysfs read: run [`read_all`] on a blocking thread, never in an async
//! task or an HTTP handler. A value ROCm SMI does not support or cannot read is absent (`None`),
//! never 0. The library asserts (aborts the process) on some malformed KFD trees (a node without
//! `io_links/`); that cannot happen on a real kernel's sysfs, but is one more reason the feature
//! is opt-in.
//!
//! The crate's own safe wrappers fetch several values all-or-nothing (its `Memory` fails when
//! `mem_busy_percent` is missing, common on APUs), so this module calls the crate's re-exported
//! bindings one value at a time; each `unsafe` block is a single call with out-pointers to
//! locals.

#![allow(unsafe_code)]

use crate::pci::PciAddress;
use rocm_smi_lib::{
    rsmi_dev_busy_percent_get, rsmi_dev_ecc_count_get, rsmi_dev_energy_count_get, rsmi_dev_id_get,
    rsmi_dev_memory_total_get, rsmi_dev_memory_usage_get, rsmi_dev_name_get, rsmi_dev_pci_id_get,
    rsmi_dev_power_ave_get, rsmi_dev_temp_metric_get, rsmi_dev_unique_id_get,
    rsmi_dev_vendor_id_get, rsmi_error_count_t, rsmi_init, rsmi_num_monitor_devices,
    rsmi_shut_down, rsmi_status_t,
};
use std::collections::BTreeMap;
use std::os::raw::c_char;

// Values from rocm_smi.h; identical in the crate's vendored header and Debian's 5.2.3 header.
const RSMI_STATUS_SUCCESS: rsmi_status_t = 0;
const MEM_VRAM: u32 = 0;
const MEM_VIS_VRAM: u32 = 1;
const MEM_GTT: u32 = 2;
const TEMP_CURRENT: u32 = 0;
/// `(label, rsmi_temperature_type_t)`: edge, junction (hotspot), memory.
const TEMP_SENSORS: [(&str, u32); 3] = [("edge", 0), ("junction", 1), ("memory", 2)];
/// `RSMI_GPU_BLOCK_UMC` .. `RSMI_GPU_BLOCK_FUSE` are the bits 1 << 0 .. 1 << 13.
const ECC_BLOCKS: u32 = 14;

/// Errors of the ROCm SMI source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("rsmi_init failed with status {0} (no amdgpu devices, or /sys not readable)")]
    Init(u32),
    #[error("rsmi_num_monitor_devices failed with status {0}")]
    Count(u32),
}

/// What ROCm SMI reports for one GPU; absent values are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RocmReading {
    /// ROCm SMI's device index.
    pub index: u32,
    pub address: Option<PciAddress>,
    pub vendor_id: Option<u16>,
    pub device_id: Option<u16>,
    pub name: Option<String>,
    /// `unique_id` (from the sysfs file of the same name), where the ASIC has one.
    pub unique_id: Option<u64>,
    pub vram_total_bytes: Option<u64>,
    pub vram_used_bytes: Option<u64>,
    pub visible_vram_total_bytes: Option<u64>,
    pub gtt_total_bytes: Option<u64>,
    pub gtt_used_bytes: Option<u64>,
    pub busy_ratio: Option<f64>,
    /// By sensor: `edge`, `junction`, `memory`.
    pub temperatures_celsius: BTreeMap<&'static str, f64>,
    pub power_watts: Option<f64>,
    /// Accumulated energy counter times its resolution.
    pub energy_joules: Option<f64>,
    pub ecc_correctable_total: Option<u64>,
    pub ecc_uncorrectable_total: Option<u64>,
}

/// Decode ROCm SMI's BDFID.
pub fn address_from_bdfid(id: u64) -> PciAddress {
    PciAddress {
        domain: (id >> 32) as u32,
        bus: ((id >> 8) & 0xff) as u8,
        device: ((id >> 3) & 0x1f) as u8,
        function: (id & 0x7) as u8,
    }
}

fn ok(status: rsmi_status_t) -> bool {
    status == RSMI_STATUS_SUCCESS
}

/// Read every device ROCm SMI sees. Blocking; initialises and shuts down the library.
pub fn read_all() -> Result<Vec<RocmReading>, Error> {
    // SAFETY: plain call; the library keeps its own reference count.
    let st = unsafe { rsmi_init(0) };
    if !ok(st) {
        return Err(Error::Init(st));
    }
    let mut n = 0u32;
    // SAFETY: `n` outlives the call.
    let st = unsafe { rsmi_num_monitor_devices(&mut n) };
    let out = if ok(st) {
        Ok((0..n).map(read_device).collect())
    } else {
        Err(Error::Count(st))
    };
    // SAFETY: balanced with the successful rsmi_init above.
    unsafe { rsmi_shut_down() };
    out
}

fn read_device(i: u32) -> RocmReading {
    let mut r = RocmReading {
        index: i,
        ..Default::default()
    };
    // Each block: one call writing into a local that outlives it.
    let mut bdfid = 0u64;
    if ok(unsafe { rsmi_dev_pci_id_get(i, &mut bdfid) }) {
        r.address = Some(address_from_bdfid(bdfid));
    }
    let mut v16 = 0u16;
    if ok(unsafe { rsmi_dev_vendor_id_get(i, &mut v16) }) {
        r.vendor_id = Some(v16);
    }
    if ok(unsafe { rsmi_dev_id_get(i, &mut v16) }) {
        r.device_id = Some(v16);
    }
    let mut u = 0u64;
    if ok(unsafe { rsmi_dev_unique_id_get(i, &mut u) }) {
        r.unique_id = Some(u);
    }
    let mut name = [0 as c_char; 256];
    if ok(unsafe { rsmi_dev_name_get(i, name.as_mut_ptr(), name.len()) }) {
        let bytes: Vec<u8> = name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        // Without a pci.ids entry ROCm SMI falls back to the hex vendor id: not a name.
        r.name = String::from_utf8(bytes)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && !s.starts_with("0x"));
    }
    let mem = |kind: u32, total: bool| {
        let mut v = 0u64;
        let st = if total {
            unsafe { rsmi_dev_memory_total_get(i, kind, &mut v) }
        } else {
            unsafe { rsmi_dev_memory_usage_get(i, kind, &mut v) }
        };
        ok(st).then_some(v)
    };
    r.vram_total_bytes = mem(MEM_VRAM, true);
    r.vram_used_bytes = mem(MEM_VRAM, false);
    r.visible_vram_total_bytes = mem(MEM_VIS_VRAM, true);
    r.gtt_total_bytes = mem(MEM_GTT, true);
    r.gtt_used_bytes = mem(MEM_GTT, false);
    let mut busy = 0u32;
    if ok(unsafe { rsmi_dev_busy_percent_get(i, &mut busy) }) && busy <= 100 {
        r.busy_ratio = Some(f64::from(busy) / 100.0);
    }
    for (label, sensor) in TEMP_SENSORS {
        let mut t = 0i64;
        if ok(unsafe { rsmi_dev_temp_metric_get(i, sensor, TEMP_CURRENT, &mut t) }) {
            r.temperatures_celsius.insert(label, t as f64 / 1000.0);
        }
    }
    let mut uw = 0u64;
    if ok(unsafe { rsmi_dev_power_ave_get(i, 0, &mut uw) }) {
        r.power_watts = Some(uw as f64 / 1e6);
    }
    let (mut count, mut resolution, mut ts) = (0u64, 0f32, 0u64);
    if ok(unsafe { rsmi_dev_energy_count_get(i, &mut count, &mut resolution, &mut ts) })
        && resolution > 0.0
    {
        // The resolution is in microjoules per count.
        r.energy_joules = Some(count as f64 * f64::from(resolution) / 1e6);
    }
    let (mut ce, mut ue, mut any) = (0u64, 0u64, false);
    for b in 0..ECC_BLOCKS {
        let mut ec = rsmi_error_count_t {
            correctable_err: 0,
            uncorrectable_err: 0,
        };
        if ok(unsafe { rsmi_dev_ecc_count_get(i, 1 << b, &mut ec) }) {
            any = true;
            ce = ce.saturating_add(ec.correctable_err);
            ue = ue.saturating_add(ec.uncorrectable_err);
        }
    }
    if any {
        r.ecc_correctable_total = Some(ce);
        r.ecc_uncorrectable_total = Some(ue);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdfid_decodes_like_rocm_smi() {
        // domain 1, partition 2, bus 0xc5, device 0x1f, function 3
        let id = (1u64 << 32) | (2 << 28) | (0xc5 << 8) | (0x1f << 3) | 3;
        assert_eq!(address_from_bdfid(id).to_string(), "0001:c5:1f.3");
        assert_eq!(address_from_bdfid(0x0400).to_string(), "0000:04:00.0");
    }
}
