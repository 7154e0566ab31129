//! Refine the per-GPU verdicts with what the Talos API says. Pure: no I/O.
//!
//! Runs after the verdict engine. The kernel stays the most trusted evidence: nothing here turns
//! a problem into `ok` or invents a driver. What it adds:
//!
//! 1. **`machine.kernel.modules`** (`KernelModuleSpecs`), for NVIDIA GPUs with a
//!    `module-not-loaded` verdict. The NVIDIA extensions blacklist their modules in modprobe.d,
//!    so they load only when listed there. When a module the problem names is not listed, the
//!    hint becomes the exact fix: "add `nvidia`, `nvidia_uvm`, `nvidia_drm`, `nvidia_modeset` to
//!    machine.kernel.modules" (every NVIDIA module the list lacks). When what did not load *is*
//!    listed, the config is not the cause: the hint points at the kernel log (module built for
//!    another Talos, or the first boot after install). A module that is bound but unloading is
//!    left to the kernel verdict.
//! 2. **`ext-nvidia-persistenced`** (`Services`), for NVIDIA GPUs. Not running while `nvidia`
//!    is bound: a new `driver-version-mismatch` problem (user space cannot drive the loaded
//!    module; the usual cause is a container toolkit whose driver version differs from the
//!    kernel module's). Not running while the driver is not bound: expected, since the service
//!    waits for `/sys/bus/pci/drivers/nvidia`; noted on the existing problem.
//! 3. **The PCI driver Talos saw** (`PCIDevices`, scanned once at boot). When the kernel shows
//!    the device unbound (or its `driver` link could not be read) but Talos saw a driver bound,
//!    that is added to the problem: the device lost its driver after boot, or the agent cannot
//!    see the link.
//!
//! Calling it twice changes nothing more than calling it once.

use super::facts::TalosApiFacts;
use crate::model::{Gpu, Problem, Status, Vendor};

/// The modules the NVIDIA kernel-module extensions ship and the Talos docs list in
/// `machine.kernel.modules`.
pub const NVIDIA_MODULES: [&str; 4] = ["nvidia", "nvidia_uvm", "nvidia_drm", "nvidia_modeset"];
/// Extension service of the NVIDIA container toolkit extension.
pub const PERSISTENCED: &str = "ext-nvidia-persistenced";

/// Refine every GPU's problems with the Talos API facts, then settle each status.
pub fn refine(facts: &TalosApiFacts, gpus: &mut [Gpu]) {
    for gpu in gpus.iter_mut() {
        if gpu.vendor == Vendor::Nvidia {
            refine_nvidia_modules(facts, gpu);
            refine_persistenced(facts, gpu);
        }
        refine_pci_driver(facts, gpu);
        gpu.settle_status();
    }
}

fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The exact `machine.kernel.modules` fix for the given missing modules.
pub fn kernel_modules_hint(missing: &[&str]) -> String {
    format!(
        "add {} to machine.kernel.modules and reboot (the NVIDIA extension blacklists them, so they never autoload)",
        backticked(missing)
    )
}

fn append_detail(p: &mut Problem, note: &str) {
    if !p.detail.contains(note) {
        p.detail = format!("{}; {note}", p.detail);
    }
}

/// The NVIDIA modules a problem's detail names (whole words); all four when it names none.
/// Stable under [`refine`]'s own notes, which only name modules already named.
fn named_modules(detail: &str) -> Vec<&'static str> {
    let words: Vec<&str> = detail
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let named: Vec<&'static str> = NVIDIA_MODULES
        .iter()
        .copied()
        .filter(|m| words.contains(m))
        .collect();
    if named.is_empty() {
        NVIDIA_MODULES.to_vec()
    } else {
        named
    }
}

fn refine_nvidia_modules(facts: &TalosApiFacts, gpu: &mut Gpu) {
    // All four belong in machine.kernel.modules, whichever of them a problem names.
    let missing: Vec<&str> = NVIDIA_MODULES
        .iter()
        .copied()
        .filter(|m| !facts.kernel_modules.contains(*m))
        .collect();
    let lacks = format!(
        "machine.kernel.modules lacks {} (Talos API)",
        missing.join(", ")
    );
    for p in gpu
        .problems
        .iter_mut()
        .filter(|p| p.status == Status::ModuleNotLoaded)
    {
        if p.detail.contains("is bound but its module is") {
            // Loaded and bound, now unloading or failed: not a configuration question.
            continue;
        }
        let named = named_modules(&p.detail);
        if named.iter().any(|m| missing.contains(m)) {
            append_detail(p, &lacks);
            p.hint = kernel_modules_hint(&missing);
            continue;
        }
        // What did not load is configured: the config is not the cause.
        append_detail(
            p,
            &format!(
                "machine.kernel.modules lists {} (Talos API)",
                named.join(", ")
            ),
        );
        if !missing.is_empty() {
            append_detail(p, &lacks);
        }
        p.hint = format!(
            "{} configured but did not load: check `talosctl dmesg` for 'key was rejected' or 'Unknown symbol' (kernel-module extension built for another Talos version) or 'module not found' (first boot after install: reboot once)",
            if named.len() == 1 {
                format!("{} is", named.join(""))
            } else {
                format!("{} are", named.join(", "))
            }
        );
    }
}

fn refine_persistenced(facts: &TalosApiFacts, gpu: &mut Gpu) {
    let Some(svc) = facts.services.get(PERSISTENCED) else {
        // No service: the container toolkit extension is absent; the extension checks say so.
        return;
    };
    if svc.running {
        return;
    }
    if gpu.driver.as_deref() == Some("nvidia") {
        let detail = format!("{PERSISTENCED} is not running although nvidia is bound (Talos API)");
        if gpu.problems.iter().any(|p| p.detail == detail) {
            return;
        }
        gpu.problems.push(Problem {
            status: Status::DriverVersionMismatch,
            detail,
            hint: format!(
                "read `talosctl logs {PERSISTENCED}`; the usual cause is a nvidia-container-toolkit extension whose driver version differs from the kernel-module extension's (both must carry the same version)"
            ),
        });
    } else if let Some(p) = gpu.problems.iter_mut().max_by_key(|p| p.status) {
        append_detail(
            p,
            &format!("{PERSISTENCED} waits for the nvidia driver (Talos API)"),
        );
    }
}

fn refine_pci_driver(facts: &TalosApiFacts, gpu: &mut Gpu) {
    let Some(dev) = facts.pci_devices.get(&gpu.pci_address) else {
        return;
    };
    let Some(talos_driver) = dev.driver.as_deref() else {
        return;
    };
    if gpu.driver.is_some() {
        // The kernel's current link wins; Talos' record is a boot-time snapshot.
        return;
    }
    let link_unread = gpu.unread.iter().any(|u| u.path.ends_with("/driver"));
    let note = if link_unread {
        format!("Talos saw {talos_driver} bound at boot (Talos API PCIDevices)")
    } else {
        format!(
            "Talos saw {talos_driver} bound at boot, so it was unbound since or the device fell off the bus: see `talosctl dmesg` (Talos API PCIDevices)"
        )
    };
    if let Some(p) = gpu.problems.iter_mut().max_by_key(|p| p.status) {
        append_detail(p, &note);
    }
}

#[cfg(test)]
mod tests;
