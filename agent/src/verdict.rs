//! Driver-stack verdicts per GPU (SPEC §5).
//!
//! This first layer uses kernel evidence only: the PCI `driver` link and the module state
//! from [`crate::host`]. The Talos extension checks build on it.

use crate::model::{Gpu, Host, Problem, Status, Vendor};

/// Drivers that serve each vendor's GPUs for our purposes.
pub fn native_drivers(vendor: Vendor) -> &'static [&'static str] {
    match vendor {
        Vendor::Amd => &["amdgpu"],
        Vendor::Nvidia => &["nvidia"],
        Vendor::Intel => &["i915", "xe"],
    }
}

/// Assess every GPU and set its `problems` and `status`.
pub fn assess(host: &Host, gpus: &mut [Gpu]) {
    for gpu in gpus.iter_mut() {
        gpu.problems = kernel_problems(host, gpu);
        gpu.settle_status();
    }
}

fn module_usable(host: &Host, name: &str) -> bool {
    host.modules.iter().any(|m| m.name == name && m.is_usable())
}

fn kernel_problems(host: &Host, gpu: &Gpu) -> Vec<Problem> {
    let natives = native_drivers(gpu.vendor);
    match gpu.driver.as_deref() {
        Some(d) if natives.contains(&d) => {
            if module_usable(host, d) || !host.modules.iter().any(|m| m.name == d) {
                Vec::new()
            } else {
                vec![Problem {
                    status: Status::ModuleNotLoaded,
                    detail: format!("{d} is bound but its module is not live"),
                    hint: format!(
                        "check `dmesg` for {d} errors; the module is unloading or failed to initialise"
                    ),
                }]
            }
        }
        Some(other) => vec![Problem {
            status: Status::BoundToOtherDriver,
            detail: format!("bound to {other}, not {}", natives.join(" or ")),
            hint: format!(
                "{other} owns this device (e.g. passthrough to a VM); gpuscout reports it and changes nothing"
            ),
        }],
        None => {
            let loaded: Vec<&str> = natives
                .iter()
                .copied()
                .filter(|m| module_usable(host, m))
                .collect();
            if loaded.is_empty() {
                vec![Problem {
                    status: Status::ModuleNotLoaded,
                    detail: format!("no driver bound and {} not loaded", natives.join("/")),
                    hint: format!("load the {} kernel module", natives.join(" or ")),
                }]
            } else {
                vec![Problem {
                    status: Status::DriverNotBound,
                    detail: format!("{} is loaded but not bound to this device", loaded.join("/")),
                    hint: "the driver rejected the device: check `dmesg` (unsupported id, missing firmware, force_probe)".to_owned(),
                }]
            }
        }
    }
}
