//! Refine the per-GPU verdicts with what the Talos API says. Pure: no I/O.
//!
//! Runs after the verdict engine, on the typed [`Cause`]s it produced (never on their text).
//! The kernel stays the most trusted evidence: nothing here turns a problem into `ok` or
//! invents a driver. What it adds:
//!
//! 1. **`machine.kernel.modules`** (`KernelModuleSpecs`), for NVIDIA GPUs with NVIDIA modules
//!    not loaded ([`Cause::ModulesNotLoaded`]). The NVIDIA extensions blacklist their modules in
//!    modprobe.d, so they load only when listed there. The cause records which of the
//!    [`NVIDIA_MODULES`] the config lacks; its hint becomes the exact fix ("add `nvidia`,
//!    `nvidia_uvm`, ... to machine.kernel.modules"), or, when what did not load *is* listed,
//!    points at the kernel log (module built for another Talos, or the first boot after
//!    install). A bound module that is unloading ([`Cause::ModuleUnusable`]) is left alone.
//! 2. **Extension services** (`Services`), for NVIDIA GPUs. Talos keeps a `Services` resource
//!    only while a service runs: it destroys it on every other state (siderolabs/talos
//!    `internal/app/machined/pkg/controllers/v1alpha1/service.go`). So a service of an
//!    installed extension without a running resource is not running:
//!    `ext-nvidia-persistenced` of the container toolkit, and `ext-nvidia-fabricmanager` of the
//!    fabric manager on NVSwitch systems. Next to a bound `nvidia` driver that is a
//!    [`Cause::ServiceNotRunning`] problem (`service-not-running`); while the driver is not
//!    bound the services wait for it (persistenced `depends: path /sys/bus/pci/drivers/nvidia`),
//!    which is noted on the existing problem. The toolkit's `ext-nvidia-cdi-gen` (extensions
//!    v1.13+) is a one-shot service whose resource is gone once it finished, so it cannot be
//!    judged this way and is not.
//! 3. **The PCI driver Talos saw** (`PCIDevices`, scanned once at boot). When the kernel shows
//!    the device unbound (or its `driver` link could not be read) but Talos saw a driver bound,
//!    that is noted on the problem: the device lost its driver after boot, or the agent cannot
//!    see the link.
//!
//! Calling it twice changes nothing more than calling it once.

use super::facts::TalosApiFacts;
use crate::cause::{Cause, ModulesConfig, Note};
use crate::model::{Gpu, Host, Problem, Status, Vendor};
use crate::talos::{self, FABRICMANAGER_SERVICE, PERSISTENCED_SERVICE};

pub use crate::talos::NVIDIA_MODULES;

/// Extension service of the NVIDIA container toolkit extension.
pub const PERSISTENCED: &str = PERSISTENCED_SERVICE;

/// Refine every GPU's problems with the Talos API facts, then settle each status. `host` is
/// the report's host (the installed extensions the verdicts used, the NVSwitch functions).
pub fn refine(facts: &TalosApiFacts, host: &Host, gpus: &mut [Gpu]) {
    for gpu in gpus.iter_mut() {
        if gpu.vendor == Vendor::Nvidia {
            refine_nvidia_modules(facts, gpu);
            refine_services(facts, host, gpu);
        }
        refine_pci_driver(facts, gpu);
        gpu.settle_status();
    }
}

fn refine_nvidia_modules(facts: &TalosApiFacts, gpu: &mut Gpu) {
    // All four belong in machine.kernel.modules, whichever of them a problem names.
    let lacking: Vec<String> = NVIDIA_MODULES
        .iter()
        .filter(|m| !facts.kernel_modules.contains(**m))
        .map(|m| (*m).to_owned())
        .collect();
    for p in &mut gpu.problems {
        if let Cause::ModulesNotLoaded { config, .. } = &mut p.cause {
            *config = Some(ModulesConfig {
                lacking: lacking.clone(),
            });
        }
    }
}

/// Whether the Talos API shows `service` running.
fn running(facts: &TalosApiFacts, service: &str) -> bool {
    facts.services.get(service).is_some_and(|s| s.running)
}

fn refine_services(facts: &TalosApiFacts, host: &Host, gpu: &mut Gpu) {
    let installed = |names: &[&str]| {
        host.talos
            .as_ref()
            .and_then(|t| {
                t.extensions
                    .iter()
                    .find(|e| names.contains(&e.name.as_str()))
            })
            .cloned()
    };
    let kmod_version =
        installed(talos::NVIDIA_KMODS).map(|k| talos::driver_part(&k.version).to_owned());
    let mut wanted: Vec<(&str, String, Option<String>)> = Vec::new();
    if let Some(t) = installed(talos::NVIDIA_TOOLKITS) {
        wanted.push((PERSISTENCED_SERVICE, t.name, None));
    }
    if !host.nvswitches.is_empty()
        && let Some(f) = installed(talos::NVIDIA_FABRICMANAGERS)
    {
        wanted.push((FABRICMANAGER_SERVICE, f.name, kmod_version.clone()));
    }
    for (service, extension, driver_version) in wanted {
        if running(facts, service) {
            continue;
        }
        if gpu.driver.as_deref() == Some("nvidia") {
            let cause = Cause::ServiceNotRunning {
                service: service.to_owned(),
                driver: "nvidia".to_owned(),
                extension,
                driver_version,
            };
            if !gpu.problems.iter().any(|p| p.cause == cause) {
                gpu.problems.push(Problem::new(cause));
            }
        } else if let Some(p) = gpu.problems.iter_mut().max_by_key(|p| p.status) {
            p.note(Note::ServiceWaits {
                service: service.to_owned(),
                driver: "nvidia".to_owned(),
            });
        }
    }
}

fn refine_pci_driver(facts: &TalosApiFacts, gpu: &mut Gpu) {
    let Some(dev) = facts.pci_devices.get(&gpu.pci_address.to_string()) else {
        return;
    };
    let Some(talos_driver) = dev.driver.as_deref() else {
        return;
    };
    if gpu.driver.is_some() {
        // The kernel's current link wins; Talos' record is a boot-time snapshot.
        return;
    }
    let note = Note::TalosSawDriver {
        driver: talos_driver.to_owned(),
        link_unreadable: gpu.driver_link_error.is_some(),
    };
    if let Some(p) = gpu
        .problems
        .iter_mut()
        .filter(|p| p.status != Status::Ok)
        .max_by_key(|p| p.status)
    {
        p.note(note);
    }
}

#[cfg(test)]
mod tests;
