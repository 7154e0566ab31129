//! Every metric family gpuscout exports (`docs/reference/metrics.md`), with its help text. Names carry base units
//! and are written without the `gpuscout_` prefix (the registry adds it) and, for counters,
//! without `_total` (the encoder adds it).

/// Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// Name, help and type of one family.
#[derive(Debug)]
pub struct Desc {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

const fn gauge(name: &'static str, help: &'static str) -> Desc {
    Desc {
        name,
        help,
        kind: Kind::Gauge,
    }
}

const fn counter(name: &'static str, help: &'static str) -> Desc {
    Desc {
        name,
        help,
        kind: Kind::Counter,
    }
}

pub static BUILD_INFO: Desc = gauge("build_info", "gpuscout build; always 1.");
pub static GPU_INFO: Desc = gauge(
    "gpu_info",
    "Identity of a GPU (PCI address as gpu); always 1.",
);
pub static GPUS: Desc = gauge(
    "gpus",
    "Number of GPUs found by the last discovery, by vendor.",
);
pub static GPU_DRIVER_STATUS: Desc = gauge(
    "gpu_driver_status",
    "Driver-stack verdict of a GPU, one-hot over all statuses (1 for the current one).",
);
pub static GPU_READY: Desc = gauge(
    "gpu_ready",
    "1 when the GPU's driver stack verdict is ok, 0 otherwise.",
);
pub static KERNEL_MODULE_LOADED: Desc = gauge(
    "kernel_module_loaded",
    "1 when a GPU kernel module is live or built in, 0 when present but not usable.",
);
pub static TALOS_INFO: Desc = gauge("talos_info", "Talos Linux version of this node; always 1.");
pub static TALOS_EXTENSION_INFO: Desc = gauge(
    "talos_extension_info",
    "Installed Talos system extension; always 1.",
);
pub static SCRAPE_SOURCE_SUCCESS: Desc = gauge(
    "scrape_source_success",
    "1 when a metrics source read everything it found during the last scrape, 0 when it failed or ran out of time.",
);
pub static SCRAPE_SOURCE_DURATION: Desc = gauge(
    "scrape_source_duration_seconds",
    "Time a metrics source took during the last scrape.",
);
pub static MEMORY_TOTAL: Desc = gauge(
    "gpu_memory_total_bytes",
    "GPU memory size by pool (vram, visible_vram, gtt).",
);
pub static MEMORY_USED: Desc = gauge(
    "gpu_memory_used_bytes",
    "GPU memory in use by pool (vram, visible_vram, gtt).",
);
pub static UTILIZATION: Desc = gauge(
    "gpu_utilization_ratio",
    "Fraction of time the GPU was busy (0 to 1).",
);
pub static TEMPERATURE: Desc = gauge(
    "gpu_temperature_celsius",
    "GPU temperature by sensor (edge, junction, mem, ...).",
);
pub static POWER: Desc = gauge("gpu_power_watts", "GPU power draw.");
pub static POWER_LIMIT: Desc = gauge("gpu_power_limit_watts", "GPU power limit (cap).");
pub static ENERGY: Desc = counter(
    "gpu_energy_joules",
    "GPU energy consumed since the driver loaded.",
);
pub static CLOCK: Desc = gauge("gpu_clock_hertz", "Current GPU clock by domain.");
pub static FAN: Desc = gauge(
    "gpu_fan_speed_rpm",
    "GPU fan speed in revolutions per minute.",
);
pub static PCIE_WIDTH: Desc = gauge(
    "gpu_pcie_link_width",
    "PCIe link width in lanes, by state (current, max).",
);
pub static PCIE_SPEED: Desc = gauge(
    "gpu_pcie_link_transfers_per_second",
    "PCIe link speed in transfers per second per lane, by state (current, max).",
);
pub static NVIDIA_DRIVER_INFO: Desc = gauge(
    "nvidia_driver_info",
    "Loaded NVIDIA kernel module version and flavor (open or proprietary); always 1.",
);
pub static ECC_ERRORS: Desc = counter(
    "gpu_ecc_errors",
    "GPU memory ECC errors since the counters were last cleared, by type (corrected, uncorrected).",
);
pub static XID_ERRORS: Desc = counter(
    "gpu_xid_errors",
    "NVIDIA XID errors seen by the agent since it started, by XID.",
);
pub static NVML_STUCK_THREADS: Desc = gauge(
    "nvml_stuck_threads",
    "NVML worker threads abandoned inside a call that has not returned (a hung driver).",
);
pub static RAS_ERRORS: Desc = counter(
    "gpu_ras_errors",
    "AMD RAS error counts as the driver keeps them, by hardware block (umc is memory ECC) and type (corrected, uncorrected).",
);
pub static MEMORY_BUSY: Desc = gauge(
    "gpu_memory_busy_ratio",
    "Fraction of time the GPU memory controller was busy (0 to 1).",
);
pub static PCIE_REPLAYS: Desc = counter(
    "gpu_pcie_replays",
    "PCIe link replays (a NAK or replay timer timeout) of the GPU since boot.",
);
