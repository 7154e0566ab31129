//! ROCm SMI (`librocm_smi64`) through the `rocm_smi_lib` crate; only with the cargo feature
//! `rocm-smi` (off by default). The crate's build script emits `rustc-link-lib=rocm_smi64`, so a
//! binary built with the feature has `librocm_smi64.so.1` as a `DT_NEEDED` entry: the dynamic
//! loader refuses to start it on a node without the library (there is no run-time "library
//! absent" state as with NVML). The one shipped binary is built without the feature.
//!
//! Calls: `rsmi_init(0)`, `rsmi_num_monitor_devices`, per device `rsmi_dev_pci_id_get` (BDFID =
//! domain << 32 | partition << 28 | bus << 8 | device << 3 | function), `rsmi_dev_id_get`,
//! `rsmi_dev_vendor_id_get`, `rsmi_dev_unique_id_get`, `rsmi_dev_name_get`,
//! `rsmi_dev_memory_total_get`/`_usage_get` (VRAM, visible VRAM, GTT), `rsmi_dev_busy_percent_get`,
//! `rsmi_dev_memory_busy_percent_get` (`mem_busy_percent`), `rsmi_dev_temp_metric_get` (edge,
//! junction, memory; current), `rsmi_dev_power_ave_get`, `rsmi_dev_pci_replay_counter_get`
//! (`pcie_replay_count`), `rsmi_dev_energy_count_get` (the `energy_accumulator` of the binary
//! `gpu_metrics` table, times its resolution) and `rsmi_dev_ecc_count_get` per RAS block
//! (`ras/<block>_err_count`), then `rsmi_shut_down`.
//!
//! What it adds over our sysfs reader: the energy counter (from the SMU's `gpu_metrics`, not in
//! hwmon on amdgpu), RAS error counts per block, the memory-controller busy share and the PCIe
//! replay count. Everything else ROCm SMI reads from the same sysfs files we do; it always reads
//! the real `/sys` and ignores `--root` (release builds ignore its root-override variables),
//! which is why its test runs inside a private mount namespace.
//!
//! Every call is a blocking sysfs read: run [`read_all`] on a blocking thread, never in an async
//! task or an HTTP handler. A value ROCm SMI does not support or cannot read is absent (`None`),
//! never 0.
//!
//! **Aborts.** Debian's build (5.2.3) keeps its `assert`s, and some inputs make it abort the whole
//! process: a KFD node without `io_links/` (cannot happen on a real kernel), a RAS count file
//! that is not exactly `ue: N` / `ce: N` (newer kernels add a `de: N` line for UMC and print
//! `Query currently inaccessible` during a reset), and a `gpu_metrics` table of format 1 with a
//! content revision above 3 (MI300's v1.4/v1.5). [`Preflight`] reads those files through the
//! host root first; a call the library would abort on is not made, and the value is recorded in
//! [`RocmReading::refused`] instead. The library itself also fails `rsmi_init` when an amdgpu
//! hwmon has no `in0_label` (it looks the empty label up in a map), which is the case on
//! MI300-class GPUs (GC 9.4.3, 9.4.4, 9.5.0: `amdgpu_pm.c` hides `in0` there).
//!
//! The crate's own safe wrappers fetch several values all-or-nothing (its `Memory` fails when
//! `mem_busy_percent` is missing, common on APUs), so this module calls the crate's re-exported
//! bindings one value at a time; each `unsafe` block is a single call with out-pointers to
//! locals.

#![allow(unsafe_code)]

pub mod preflight;
pub mod source;

pub use preflight::Preflight;

use crate::pci::PciAddress;
use rocm_smi_lib::{
    rsmi_dev_busy_percent_get, rsmi_dev_ecc_count_get, rsmi_dev_energy_count_get, rsmi_dev_id_get,
    rsmi_dev_memory_busy_percent_get, rsmi_dev_memory_total_get, rsmi_dev_memory_usage_get,
    rsmi_dev_name_get, rsmi_dev_pci_id_get, rsmi_dev_pci_replay_counter_get,
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
/// The RAS blocks ROCm SMI 5.2 counts (`rsmi_gpu_block_t` bit, the kernel's file prefix in
/// `ras/`); it answers `NOT_SUPPORTED` for the other bits (ATHUB, DF, SMN, SEM, MP0, MP1, FUSE).
pub const RAS_BLOCKS: [(u32, &str); 7] = [
    (1 << 0, "umc"),
    (1 << 1, "sdma"),
    (1 << 2, "gfx"),
    (1 << 3, "mmhub"),
    (1 << 5, "pcie_bif"),
    (1 << 6, "hdp"),
    (1 << 7, "xgmi_wafl"),
];

/// Errors of the ROCm SMI reader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "rsmi_init failed with status {0} (no amdgpu device, /sys not readable, or a sysfs tree ROCm SMI cannot parse)"
    )]
    Init(u32),
    #[error("rsmi_num_monitor_devices failed with status {0}")]
    Count(u32),
}

/// Error counts of one RAS block, as the driver keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RasCount {
    pub correctable: u64,
    pub uncorrectable: u64,
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
    /// Memory controller busy share (`mem_busy_percent` / 100).
    pub memory_busy_ratio: Option<f64>,
    /// By sensor: `edge`, `junction`, `memory`.
    pub temperatures_celsius: BTreeMap<&'static str, f64>,
    pub power_watts: Option<f64>,
    /// `energy_accumulator` of `gpu_metrics` times its resolution.
    pub energy_joules: Option<f64>,
    /// PCIe replays (NAK or timeout) since boot.
    pub pcie_replays_total: Option<u64>,
    /// By RAS block (`umc`, `gfx`, ...): only blocks whose count file exists.
    pub ras: BTreeMap<&'static str, RasCount>,
    /// Values not read because the library would have aborted on the file (see [`Preflight`]).
    pub refused: Vec<String>,
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

/// Joules from an energy count and ROCm SMI's resolution (µJ per count, an `f32`: 15.3). The
/// resolution goes through its shortest decimal form so 15.3 stays 15.3, not 15.300000190734863.
/// An all-ones count is the SMU's "not supported" fill.
pub fn energy_joules(count: u64, resolution_uj: f32) -> Option<f64> {
    if count == u64::MAX
        || count == u64::from(u32::MAX)
        || resolution_uj.is_nan()
        || resolution_uj <= 0.0
    {
        return None;
    }
    let res: f64 = resolution_uj.to_string().parse().ok()?;
    Some(count as f64 * res / 1e6)
}

/// Read every device ROCm SMI sees. Blocking; initialises and shuts down the library.
/// `pre` vets the files the library could abort on.
pub fn read_all(pre: &Preflight) -> Result<Vec<RocmReading>, Error> {
    // SAFETY: plain call; the library keeps its own reference count.
    let st = unsafe { rsmi_init(0) };
    if !ok(st) {
        return Err(Error::Init(st));
    }
    let mut n = 0u32;
    // SAFETY: `n` outlives the call.
    let st = unsafe { rsmi_num_monitor_devices(&mut n) };
    let out = if ok(st) {
        Ok((0..n).map(|i| read_device(i, pre)).collect())
    } else {
        Err(Error::Count(st))
    };
    // SAFETY: balanced with the successful rsmi_init above.
    unsafe { rsmi_shut_down() };
    out
}

fn read_device(i: u32, pre: &Preflight) -> RocmReading {
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
    let mut mem_busy = 0u32;
    if ok(unsafe { rsmi_dev_memory_busy_percent_get(i, &mut mem_busy) }) && mem_busy <= 100 {
        r.memory_busy_ratio = Some(f64::from(mem_busy) / 100.0);
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
    let mut replays = 0u64;
    if ok(unsafe { rsmi_dev_pci_replay_counter_get(i, &mut replays) }) {
        r.pcie_replays_total = Some(replays);
    }
    // The calls below read files the library may abort on: only after the preflight says yes,
    // and only for a device whose address is known (the preflight reads by address).
    let Some(addr) = r.address else {
        return r;
    };
    match pre.gpu_metrics(addr) {
        Ok(true) => {
            let (mut count, mut resolution, mut ts) = (0u64, 0f32, 0u64);
            if ok(unsafe { rsmi_dev_energy_count_get(i, &mut count, &mut resolution, &mut ts) }) {
                r.energy_joules = energy_joules(count, resolution);
            }
        }
        Ok(false) => {}
        Err(why) => r.refused.push(why),
    }
    for (bit, block) in RAS_BLOCKS {
        match pre.ras_count(addr, block) {
            Ok(true) => {
                let mut ec = rsmi_error_count_t {
                    correctable_err: 0,
                    uncorrectable_err: 0,
                };
                if ok(unsafe { rsmi_dev_ecc_count_get(i, bit.into(), &mut ec) }) {
                    r.ras.insert(
                        block,
                        RasCount {
                            correctable: ec.correctable_err,
                            uncorrectable: ec.uncorrectable_err,
                        },
                    );
                }
            }
            Ok(false) => {}
            Err(why) => r.refused.push(why),
        }
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

    #[test]
    fn rocm_energy_resolution_keeps_its_decimal_and_all_ones_is_absent() {
        assert_eq!(energy_joules(1_000_000, 15.3), Some(15.3));
        assert_eq!(energy_joules(0, 15.3), Some(0.0));
        assert_eq!(energy_joules(u64::MAX, 15.3), None);
        assert_eq!(energy_joules(u64::from(u32::MAX), 15.3), None);
        assert_eq!(energy_joules(10, 0.0), None);
    }
}
