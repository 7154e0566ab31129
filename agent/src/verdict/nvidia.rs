//! NVIDIA coherence: the kernel-module extension, the container toolkit, the loaded module
//! (`/proc/driver/nvidia/version`, `/sys/module/nvidia/version`) and NVML must agree on the
//! driver version; the extension's flavour (open or proprietary) must be the loaded one; and
//! Blackwell GPUs need the open modules of branch 570 or later. Pure: it reads only what
//! discovery already collected and the [`Evidence`](super::Evidence).

use super::{Ctx, problem};
use crate::model::{Problem, Status};
use crate::talos::{self, ExtensionNeed, Flavor};

pub(super) fn toolkit_missing(ctx: &Ctx<'_>, need: &ExtensionNeed) -> Problem {
    // Match the branch of the installed kernel-module extension.
    let kmod = ctx.installed_any(talos::NVIDIA_KMODS);
    let suggest = match kmod.and_then(|k| talos::nvidia_branch(&k.name)) {
        Some(b) => format!("siderolabs/nvidia-container-toolkit-{b}"),
        None => need.suggest.clone(),
    };
    let version = kmod
        .map(|k| format!(" {}", talos::driver_part(&k.version)))
        .unwrap_or_default();
    problem(
        Status::ExtensionMissing,
        "no nvidia-container-toolkit extension: containers cannot use the GPU (no libraries, runtime or GSP firmware)",
        format!(
            "add {suggest}{version} (same driver version as the kernel-module extension) to the Image Factory schematic and upgrade"
        ),
    )
}

/// NVIDIA version and flavour coherence: kernel-module extension vs container toolkit vs
/// loaded module vs NVML; open vs proprietary; Blackwell needs open modules of branch ≥ 570.
/// Returns true when it reported a flavour/branch problem that explains an unbound device.
pub(super) fn nvidia_coherence(ctx: &Ctx<'_>, out: &mut Vec<Problem>) -> bool {
    let gpu = ctx.gpu;
    let nv = gpu.nvidia.as_ref();
    let running = nv
        .and_then(|n| n.kernel_module_version.clone())
        .or_else(|| ctx.module("nvidia").and_then(|m| m.version.clone()));
    let running_flavor = nv
        .and_then(|n| n.kernel_module_flavor.as_deref())
        .and_then(Flavor::parse);
    let kmod = ctx.installed_any(talos::NVIDIA_KMODS);
    let toolkit = ctx.installed_any(talos::NVIDIA_TOOLKITS);
    let nvml = ctx.ev.nvml.as_ref();

    let mut versions: Vec<(String, String)> = Vec::new();
    if let Some(k) = kmod {
        versions.push((k.name.clone(), talos::driver_part(&k.version).to_owned()));
    }
    if let Some(t) = toolkit {
        versions.push((t.name.clone(), talos::driver_part(&t.version).to_owned()));
    }
    if let Some(r) = &running {
        versions.push(("loaded nvidia module".to_owned(), r.clone()));
    }
    if let Some(v) = nvml.and_then(|n| n.driver_version.clone()) {
        versions.push(("NVML".to_owned(), v));
    }
    let disagree = versions.windows(2).any(|w| w[0].1 != w[1].1);
    let nvml_mismatch = nvml.is_some_and(|n| n.version_mismatch);
    if disagree || nvml_mismatch {
        let mut listed: Vec<String> = versions.iter().map(|(w, v)| format!("{w} {v}")).collect();
        if nvml_mismatch {
            listed.push("NVML: Driver/library version mismatch".to_owned());
        }
        let ext_split = matches!((kmod, toolkit), (Some(k), Some(t)) if talos::driver_part(&k.version) != talos::driver_part(&t.version));
        let hint = if ext_split {
            "install the kernel-module and container-toolkit extensions of the same branch (both -lts or both -production) in the schematic and upgrade".to_owned()
        } else if let (Some(k), Some(r)) = (kmod, &running)
            && talos::driver_part(&k.version) != r
        {
            format!(
                "reboot so the loaded module matches the installed {} {}",
                k.name,
                talos::driver_part(&k.version)
            )
        } else if ctx.on_talos {
            "the NVIDIA user-space libraries do not match the loaded module: install the nvidia-container-toolkit extension of the kernel module's driver version and reboot".to_owned()
        } else {
            "install user-space NVIDIA libraries of the loaded module's version (or reboot after a driver upgrade)".to_owned()
        };
        out.push(problem(
            Status::DriverVersionMismatch,
            format!("NVIDIA driver versions disagree: {}", listed.join(", ")),
            hint,
        ));
    }

    let ext_flavor = kmod.and_then(|k| talos::kmod_flavor(&k.name));
    if let (Some(k), Some(ef), Some(rf)) = (kmod, ext_flavor, running_flavor)
        && ef != rf
    {
        out.push(problem(
            Status::DriverVersionMismatch,
            format!(
                "the loaded nvidia module is {} but the installed extension {} is {}",
                rf.as_str(),
                k.name,
                ef.as_str()
            ),
            "keep exactly one NVIDIA kernel-module extension in the schematic and reboot",
        ));
    }

    let device_id = gpu.device_id_u16().unwrap_or(0);
    if !talos::nvidia_needs_open(device_id) {
        return false;
    }
    // Blackwell: open modules only, branch 570 or later.
    let flavor = running_flavor.or(ext_flavor);
    if flavor == Some(Flavor::Proprietary) {
        let hint = if ctx.on_talos {
            let branch = kmod
                .and_then(|k| talos::nvidia_branch(&k.name))
                .unwrap_or("production");
            format!(
                "replace siderolabs/{} with siderolabs/nvidia-open-gpu-kernel-modules-{branch} in the Image Factory schematic and upgrade",
                kmod.map_or("nonfree-kmod-nvidia-production", |k| k.name.as_str())
            )
        } else {
            format!(
                "install NVIDIA's open kernel modules ({}+ '-open' driver package) instead of the proprietary ones",
                talos::BLACKWELL_MIN_DRIVER_MAJOR
            )
        };
        out.push(problem(
            Status::DriverVersionMismatch,
            format!("{} (Blackwell) needs the open NVIDIA kernel modules; the proprietary flavour is {}", gpu.model, if running_flavor.is_some() { "loaded" } else { "installed" }),
            hint,
        ));
        return true;
    }
    let major = running
        .as_deref()
        .or(kmod.map(|k| k.version.as_str()))
        .and_then(talos::driver_major);
    if let Some(m) = major.filter(|m| *m < talos::BLACKWELL_MIN_DRIVER_MAJOR) {
        out.push(problem(
            Status::DriverVersionMismatch,
            format!("{} (Blackwell) needs NVIDIA driver {}+; branch {m} is installed", gpu.model, talos::BLACKWELL_MIN_DRIVER_MAJOR),
            if ctx.on_talos {
                "switch to siderolabs/nvidia-open-gpu-kernel-modules-production and siderolabs/nvidia-container-toolkit-production in the schematic and upgrade".to_owned()
            } else {
                format!("install the NVIDIA open driver {}+", talos::BLACKWELL_MIN_DRIVER_MAJOR)
            },
        ));
        return true;
    }
    false
}
