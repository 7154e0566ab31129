//! The NVML calls themselves. Everything here runs on the NVML worker thread, and every call goes
//! through [`Beat::call`], which records which call is in flight and since when, so the async
//! side can tell a slow call from a hung one.
//!
//! Calls: `nvmlDeviceGetCount_v2`, `nvmlDeviceGetHandleByIndex_v2`, `nvmlDeviceGetPciInfo_v3`,
//! `nvmlDeviceGetName`, `nvmlDeviceGetUUID`, `nvmlDeviceGetMemoryInfo_v2`,
//! `nvmlDeviceGetUtilizationRates`, `nvmlDeviceGetTemperature`, `nvmlDeviceGetPowerUsage`,
//! `nvmlDeviceGetEnforcedPowerLimit` (else `nvmlDeviceGetPowerManagementLimit`),
//! `nvmlDeviceGetTotalEnergyConsumption`, `nvmlDeviceGetClockInfo`/`MaxClockInfo` (graphics, SM,
//! memory), `nvmlDeviceGetCudaComputeCapability`, `nvmlDeviceGetArchitecture`,
//! `nvmlDeviceGetMigMode`, `nvmlDeviceGetMaxMigDeviceCount` + `nvmlDeviceGetMigDeviceHandleByIndex`
//! (MIG devices present), `nvmlDeviceGetTotalEccErrors` (aggregate, corrected/uncorrected),
//! `nvmlDeviceGet{Curr,Max}PcieLink{Generation,Width}`, and for XID events (one event set per
//! GPU, so an event names its GPU even after it fell off the bus) `nvmlEventSetCreate`,
//! `nvmlDeviceRegisterEvents`, `nvmlEventSetWait_v2`.
//!
//! `NotSupported` (and a symbol the installed library lacks) makes a reading absent. `GpuLost`
//! marks that GPU lost and stops reading it; the other GPUs are still read. Any other error makes
//! the reading absent and is listed in the GPU's `errors`.

use super::{GpuReading, UnjoinedDevice};
use crate::pci::PciAddress;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::device::DeviceArchitecture;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, EventSet, Nvml};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The call in flight on the worker, if any.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InCall {
    pub since: Instant,
    pub limit: Duration,
    pub call: &'static str,
}

/// Heartbeat shared between the worker thread and the async side.
#[derive(Debug, Default)]
pub(crate) struct Beat {
    current: Mutex<Option<InCall>>,
}

impl Beat {
    /// Run one NVML call with a deadline of `limit`, recorded for the watchdog.
    pub fn call<T>(&self, call: &'static str, limit: Duration, f: impl FnOnce() -> T) -> T {
        self.set(Some(InCall {
            since: Instant::now(),
            limit,
            call,
        }));
        let out = f();
        self.set(None);
        out
    }

    fn set(&self, v: Option<InCall>) {
        // A poisoned lock only means a panic elsewhere; the data is a plain value.
        *crate::lock::lock(&self.current) = v;
    }

    /// The call in flight that has run past its deadline, if any.
    pub fn overdue(&self) -> Option<InCall> {
        let cur = *crate::lock::lock(&self.current);
        cur.filter(|c| c.since.elapsed() > c.limit)
    }
}

/// Deadlines for the two kinds of call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Ordinary reads.
    pub call: Duration,
    /// Init and device-handle calls, which may legitimately take seconds (a GPU without
    /// persistence mode is brought up on first open).
    pub slow: Duration,
}

/// Human name of an NVML error for logs, reports and metric-free text.
pub(crate) fn error_text(e: &NvmlError) -> String {
    match e {
        NvmlError::GpuLost => "gpu-lost (fell off the bus)".into(),
        NvmlError::LibRmVersionMismatch => "driver/library version mismatch".into(),
        NvmlError::DriverNotLoaded => "driver not loaded".into(),
        NvmlError::NoPermission => "no permission".into(),
        NvmlError::NotSupported => "not supported".into(),
        other => other.to_string(),
    }
}

/// Reads one device, tracking whether it fell off the bus.
struct DevReader<'a, 'n> {
    dev: &'a Device<'n>,
    beat: &'a Beat,
    limits: Limits,
    reading: GpuReading,
}

impl<'n> DevReader<'_, 'n> {
    fn get<T>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&Device<'n>) -> Result<T, NvmlError>,
    ) -> Option<T> {
        if self.reading.lost {
            return None;
        }
        match self.beat.call(call, self.limits.call, || f(self.dev)) {
            Ok(v) => Some(v),
            Err(NvmlError::NotSupported)
            | Err(NvmlError::FailedToLoadSymbol(_))
            | Err(NvmlError::FunctionNotFound) => None,
            Err(NvmlError::GpuLost) => {
                self.reading.lost = true;
                self.reading.errors.push(format!("{call}: gpu-lost"));
                None
            }
            Err(e) => {
                self.reading
                    .errors
                    .push(format!("{call}: {}", error_text(&e)));
                None
            }
        }
    }
}

/// Family name of an architecture, lower case as in the `nvidia.family` label.
pub(crate) fn family(a: &DeviceArchitecture) -> Option<&'static str> {
    Some(match a {
        DeviceArchitecture::Kepler => "kepler",
        DeviceArchitecture::Maxwell => "maxwell",
        DeviceArchitecture::Pascal => "pascal",
        DeviceArchitecture::Volta => "volta",
        DeviceArchitecture::Turing => "turing",
        DeviceArchitecture::Ampere => "ampere",
        DeviceArchitecture::Ada => "ada",
        DeviceArchitecture::Hopper => "hopper",
        DeviceArchitecture::Blackwell => "blackwell",
        DeviceArchitecture::Unknown => return None,
    })
}

const MHZ: u64 = 1_000_000;

/// Read every reading of one device. The address comes from its PCI info.
fn read_device(dev: &Device<'_>, beat: &Beat, limits: Limits) -> Result<GpuReading, String> {
    let mut r = DevReader {
        dev,
        beat,
        limits,
        reading: GpuReading::default(),
    };
    let pci = match beat.call("nvmlDeviceGetPciInfo_v3", limits.call, || dev.pci_info()) {
        Ok(p) => p,
        Err(e) => return Err(format!("nvmlDeviceGetPciInfo_v3: {}", error_text(&e))),
    };
    let address: PciAddress = pci
        .bus_id
        .parse()
        .map_err(|e| format!("NVML bus id: {e}"))?;
    r.reading.address = Some(address);
    r.reading.nvml_bus_id = Some(pci.bus_id.clone());
    // pciDeviceId is (device << 16) | vendor.
    r.reading.pci_vendor_id = Some((pci.pci_device_id & 0xffff) as u16).filter(|v| *v != 0);
    r.reading.pci_device_id = Some((pci.pci_device_id >> 16) as u16).filter(|v| *v != 0);

    read_identity_and_load(&mut r);
    read_power(&mut r);
    read_clocks(&mut r);
    read_arch(&mut r);
    read_mig(&mut r);
    read_ecc_and_link(&mut r);
    Ok(r.reading)
}

/// Name, UUID, memory, utilisation and temperature.
fn read_identity_and_load(r: &mut DevReader<'_, '_>) {
    r.reading.name = r.get("nvmlDeviceGetName", |d| d.name());
    r.reading.uuid = r.get("nvmlDeviceGetUUID", |d| d.uuid());
    if let Some(m) = r.get("nvmlDeviceGetMemoryInfo_v2", |d| d.memory_info()) {
        r.reading.memory_total_bytes = Some(m.total);
        r.reading.memory_used_bytes = Some(m.used);
        r.reading.memory_free_bytes = Some(m.free);
    }
    if let Some(u) = r.get("nvmlDeviceGetUtilizationRates", |d| d.utilization_rates()) {
        r.reading.utilization_gpu_ratio = Some(f64::from(u.gpu.min(100)) / 100.0);
        r.reading.utilization_memory_ratio = Some(f64::from(u.memory.min(100)) / 100.0);
    }
    r.reading.temperature_celsius = r.get("nvmlDeviceGetTemperature", |d| {
        d.temperature(TemperatureSensor::Gpu)
    });
}

/// Power draw, its limit and the energy counter.
fn read_power(r: &mut DevReader<'_, '_>) {
    r.reading.power_watts = r
        .get("nvmlDeviceGetPowerUsage", |d| d.power_usage())
        .map(|mw| f64::from(mw) / 1000.0);
    let limit = r
        .get("nvmlDeviceGetEnforcedPowerLimit", |d| {
            d.enforced_power_limit()
        })
        .or_else(|| {
            r.get("nvmlDeviceGetPowerManagementLimit", |d| {
                d.power_management_limit()
            })
        });
    r.reading.power_limit_watts = limit.map(|mw| f64::from(mw) / 1000.0);
    r.reading.energy_joules = r
        .get("nvmlDeviceGetTotalEnergyConsumption", |d| {
            d.total_energy_consumption()
        })
        .map(|mj| mj as f64 / 1000.0);
}

/// Current and maximum graphics, SM and memory clocks.
fn read_clocks(r: &mut DevReader<'_, '_>) {
    for (domain, clock) in [
        ("graphics", Clock::Graphics),
        ("sm", Clock::SM),
        ("memory", Clock::Memory),
    ] {
        if let Some(c) = r.get("nvmlDeviceGetClockInfo", |d| d.clock_info(clock)) {
            r.reading.clocks_hz.insert(domain, u64::from(c) * MHZ);
        }
        if let Some(c) = r.get("nvmlDeviceGetMaxClockInfo", |d| d.max_clock_info(clock)) {
            r.reading.max_clocks_hz.insert(domain, u64::from(c) * MHZ);
        }
    }
}

/// CUDA compute capability and architecture family.
fn read_arch(r: &mut DevReader<'_, '_>) {
    r.reading.compute_capability = r
        .get("nvmlDeviceGetCudaComputeCapability", |d| {
            d.cuda_compute_capability()
        })
        .map(|c| format!("{}.{}", c.major, c.minor));
    r.reading.family = r
        .get("nvmlDeviceGetArchitecture", |d| d.architecture())
        .as_ref()
        .and_then(family);
}

/// MIG mode (current and pending) and, when on, how many MIG devices exist.
fn read_mig(r: &mut DevReader<'_, '_>) {
    if let Some(m) = r.get("nvmlDeviceGetMigMode", |d| d.mig_mode()) {
        r.reading.mig_enabled = Some(m.current == 1);
        r.reading.mig_pending_enabled = Some(m.pending == 1);
        if m.current == 1 {
            if let Some(max) = r.get("nvmlDeviceGetMaxMigDeviceCount", |d| d.mig_device_count()) {
                // A slot without a MIG device answers NotFound (or InvalidArg past the end).
                let mut n = 0;
                for i in 0..max.min(64) {
                    let present = r.get("nvmlDeviceGetMigDeviceHandleByIndex", |d| {
                        match d.mig_device_by_index(i) {
                            Ok(_) => Ok(true),
                            Err(NvmlError::NotFound | NvmlError::InvalidArg) => Ok(false),
                            Err(e) => Err(e),
                        }
                    });
                    if present == Some(true) {
                        n += 1;
                    }
                }
                r.reading.mig_devices = Some(n);
            }
        } else {
            r.reading.mig_devices = Some(0);
        }
    }
}

/// ECC error totals and the PCIe link (current and maximum generation and width).
fn read_ecc_and_link(r: &mut DevReader<'_, '_>) {
    r.reading.ecc_corrected_total = r.get("nvmlDeviceGetTotalEccErrors", |d| {
        d.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate)
    });
    r.reading.ecc_uncorrected_total = r.get("nvmlDeviceGetTotalEccErrors", |d| {
        d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate)
    });
    r.reading.pcie_current_gen = r.get("nvmlDeviceGetCurrPcieLinkGeneration", |d| {
        d.current_pcie_link_gen()
    });
    r.reading.pcie_current_width = r.get("nvmlDeviceGetCurrPcieLinkWidth", |d| {
        d.current_pcie_link_width()
    });
    r.reading.pcie_max_gen = r.get("nvmlDeviceGetMaxPcieLinkGeneration", |d| {
        d.max_pcie_link_gen()
    });
    r.reading.pcie_max_width = r.get("nvmlDeviceGetMaxPcieLinkWidth", |d| d.max_pcie_link_width());
}

/// One pass over all devices.
pub(crate) struct Pass {
    pub gpus: Vec<GpuReading>,
    pub unjoined: Vec<UnjoinedDevice>,
}

/// Read every device NVML reports. Fails only when the device count cannot be read.
pub(crate) fn read_all(nvml: &Nvml, beat: &Beat, limits: Limits) -> Result<Pass, NvmlError> {
    let count = beat.call("nvmlDeviceGetCount_v2", limits.call, || nvml.device_count())?;
    let mut pass = Pass {
        gpus: Vec::new(),
        unjoined: Vec::new(),
    };
    for index in 0..count.min(256) {
        let dev = match beat.call("nvmlDeviceGetHandleByIndex_v2", limits.slow, || {
            nvml.device_by_index(index)
        }) {
            Ok(d) => d,
            Err(e) => {
                pass.unjoined.push(UnjoinedDevice {
                    index,
                    error: format!("nvmlDeviceGetHandleByIndex_v2: {}", error_text(&e)),
                });
                continue;
            }
        };
        match read_device(&dev, beat, limits) {
            Ok(mut g) => {
                g.index = Some(index);
                pass.gpus.push(g);
            }
            Err(error) => pass.unjoined.push(UnjoinedDevice { index, error }),
        }
    }
    Ok(pass)
}

/// XID counts per GPU and XID (999 = NVML's "unknown").
pub(crate) type XidCounts = BTreeMap<PciAddress, BTreeMap<u64, u64>>;

/// Most events taken from the set in one drain (a storm must not starve the requests).
const MAX_EVENTS_PER_DRAIN: usize = 1024;

/// XID event sets, one per GPU, each with the GPU's address read when it was registered. An
/// event names its GPU by the set it came from: a GPU that fell off the bus (XID 79) answers
/// `GPU_IS_LOST` to every later call, its PCI info included, so asking the event's device for
/// its address would lose exactly the XID that matters most.
pub(crate) struct XidSets<'n> {
    sets: Vec<(PciAddress, EventSet<'n>)>,
}

/// Register every device that supports it for critical XID events, each in its own event set.
/// Devices without a handle, a readable bus id or XID support are skipped (logged at debug
/// level). Returns `None` when no device can deliver XID events.
pub(crate) fn register_xid<'n>(nvml: &'n Nvml, beat: &Beat, limits: Limits) -> Option<XidSets<'n>> {
    use nvml_wrapper::bitmasks::event::EventTypes;
    let count = beat
        .call("nvmlDeviceGetCount_v2", limits.call, || nvml.device_count())
        .ok()?;
    let mut sets = Vec::new();
    for i in 0..count.min(256) {
        let dev = match beat.call("nvmlDeviceGetHandleByIndex_v2", limits.slow, || {
            nvml.device_by_index(i)
        }) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(index = i, error = %error_text(&e), "NVML: no XID events for this GPU");
                continue;
            }
        };
        let addr = match beat.call("nvmlDeviceGetPciInfo_v3", limits.call, || dev.pci_info()) {
            Ok(p) => match p.bus_id.parse::<PciAddress>() {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(index = i, error = %e, "NVML: no XID events for this GPU");
                    continue;
                }
            },
            Err(e) => {
                tracing::debug!(index = i, error = %error_text(&e), "NVML: no XID events for this GPU");
                continue;
            }
        };
        let Ok(set) = beat.call("nvmlEventSetCreate", limits.call, || {
            nvml.create_event_set()
        }) else {
            continue;
        };
        // On failure nvml-wrapper frees the set (NVML leaves it undefined).
        match beat.call("nvmlDeviceRegisterEvents", limits.call, || {
            dev.register_events(EventTypes::CRITICAL_XID_ERROR, set)
        }) {
            Ok(set) => sets.push((addr, set)),
            Err(e) => {
                tracing::debug!(gpu = %addr, error = %e, "NVML: no XID events for this GPU");
            }
        }
    }
    (!sets.is_empty()).then_some(XidSets { sets })
}

/// Take every pending event from every set and count XIDs per GPU.
pub(crate) fn drain_xid(xid: &XidSets<'_>, beat: &Beat, limits: Limits, counts: &Mutex<XidCounts>) {
    let per_set = (MAX_EVENTS_PER_DRAIN / xid.sets.len().max(1)).max(1);
    for (addr, set) in &xid.sets {
        for _ in 0..per_set {
            let ev = match beat.call("nvmlEventSetWait_v2", limits.call, || set.wait(0)) {
                Ok(ev) => ev,
                Err(NvmlError::Timeout) => break,
                Err(e) => {
                    tracing::debug!(gpu = %addr, error = %e, "NVML: reading XID events failed");
                    break;
                }
            };
            let Some(xid) = ev.event_data.map(|x| match x {
                XidError::Value(v) => v,
                XidError::Unknown => 999,
            }) else {
                continue;
            };
            tracing::warn!(gpu = %addr, xid, "NVML: XID error");
            let mut c = crate::lock::lock(counts);
            *c.entry(*addr).or_default().entry(xid).or_default() += 1;
        }
    }
}
