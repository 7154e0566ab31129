//! NVIDIA coherence: the kernel-module extension, the container toolkit, the fabric manager
//! (NVLink systems), the loaded module (`/proc/driver/nvidia/version`,
//! `/sys/module/nvidia/version`) and NVML must agree on the driver version; the extension's
//! flavour (open or proprietary) must be the loaded one; and the GPU's architecture
//! ([`crate::vendors::nvidia_arch`]) decides which flavours and branches can drive it:
//! Blackwell only the open modules of branch 570 or later, Maxwell, Pascal and Volta only the
//! proprietary ones of branch 580 or older. Pure: it reads only what discovery already
//! collected and the [`Inputs`](super::Inputs).

use super::{Ctx, problem};
use crate::cause::{Cause, SeenVersion, Swap, VersionFix};
use crate::model::{Extension, Problem};
use crate::talos::{self, ExtensionNeed, Flavor, OPEN_GEFORCE_BRANCH, siderolabs};
use crate::vendors::nvidia_arch::{self, Arch};

/// Branch (`lts`, `production`) of the installed kernel-module extension, for the companion
/// extensions.
fn kmod_branch(ctx: &Ctx<'_>) -> Option<&'static str> {
    ctx.installed_any(talos::NVIDIA_KMODS)
        .and_then(|k| talos::nvidia_branch(&k.name))
}

pub(super) fn toolkit_missing(ctx: &Ctx<'_>, need: &ExtensionNeed) -> Problem {
    // Match the branch of the installed kernel-module extension.
    let kmod = ctx.installed_any(talos::NVIDIA_KMODS);
    let extension = match kmod_branch(ctx) {
        Some(b) => siderolabs(&format!("nvidia-container-toolkit-{b}")),
        None => need.suggest.extensions.first().cloned().unwrap_or_default(),
    };
    problem(Cause::ToolkitMissing {
        extension,
        driver_version: kmod.map(|k| talos::driver_part(&k.version).to_owned()),
    })
}

pub(super) fn fabricmanager_missing(ctx: &Ctx<'_>, need: &ExtensionNeed) -> Problem {
    let kmod = ctx.installed_any(talos::NVIDIA_KMODS);
    let extension = match kmod_branch(ctx) {
        Some(b) => siderolabs(&format!("nvidia-fabricmanager-{b}")),
        None => need.suggest.extensions.first().cloned().unwrap_or_default(),
    };
    problem(Cause::FabricManagerMissing {
        nvswitches: ctx.host.nvswitches.clone(),
        extension,
        driver_version: kmod
            .map(|k| talos::driver_part(&k.version).to_owned())
            .or_else(|| running_version(ctx)),
    })
}

/// The loaded module's version (procfs, else `/sys/module/nvidia/version`).
pub(super) fn running_version(ctx: &Ctx<'_>) -> Option<String> {
    ctx.gpu
        .nvidia
        .as_ref()
        .and_then(|n| n.kernel_module_version.clone())
        .or_else(|| ctx.module("nvidia").and_then(|m| m.version.clone()))
}

fn running_flavor(ctx: &Ctx<'_>) -> Option<Flavor> {
    ctx.gpu
        .nvidia
        .as_ref()
        .and_then(|n| n.kernel_module_flavor.as_deref())
        .and_then(Flavor::parse)
}

/// The open NVIDIA modules of branch 535 or older (loaded, else installed) on a GeForce or
/// workstation card: they drive it only with `NVreg_OpenRmEnableUnsupportedGpus=1`.
pub(super) fn open_alpha(ctx: &Ctx<'_>) -> bool {
    let kmod = ctx.installed_any(talos::NVIDIA_KMODS);
    let flavor = running_flavor(ctx).or(kmod.and_then(|k| talos::kmod_flavor(&k.name)));
    let major = running_version(ctx)
        .as_deref()
        .or(kmod.map(|k| k.version.as_str()))
        .and_then(talos::driver_major);
    flavor == Some(Flavor::Open)
        && major.is_some_and(|m| m < OPEN_GEFORCE_BRANCH)
        && nvidia_arch::is_geforce_or_workstation(&ctx.gpu.model)
        && arch(ctx).is_none_or(Arch::has_gsp)
}

fn arch(ctx: &Ctx<'_>) -> Option<Arch> {
    nvidia_arch::arch_of(ctx.gpu.device_id?)
}

/// The NVIDIA pieces a coherence check compares: installed extensions (the fabric manager only
/// on an NVSwitch system) and the loaded module's version and flavour.
struct Pieces<'a> {
    kmod: Option<&'a Extension>,
    toolkit: Option<&'a Extension>,
    fabric: Option<&'a Extension>,
    running: Option<String>,
    running_flavor: Option<Flavor>,
}

/// NVIDIA version and flavour coherence, and what the architecture can run. Returns true when
/// it reported a flavour/branch problem that explains an unbound device.
pub(super) fn nvidia_coherence(ctx: &Ctx<'_>, out: &mut Vec<Problem>) -> bool {
    let p = Pieces {
        kmod: ctx.installed_any(talos::NVIDIA_KMODS),
        toolkit: ctx.installed_any(talos::NVIDIA_TOOLKITS),
        fabric: ctx
            .installed_any(talos::NVIDIA_FABRICMANAGERS)
            .filter(|_| !ctx.host.nvswitches.is_empty()),
        running: running_version(ctx),
        running_flavor: running_flavor(ctx),
    };
    version_coherence(ctx, &p, out);
    let ext_flavor = p.kmod.and_then(|k| talos::kmod_flavor(&k.name));
    if let (Some(k), Some(ef), Some(rf)) = (p.kmod, ext_flavor, p.running_flavor)
        && ef != rf
    {
        out.push(problem(Cause::FlavorMismatch {
            loaded: rf.as_str().to_owned(),
            extension: k.name.clone(),
            installed: ef.as_str().to_owned(),
        }));
    }
    arch_fit(ctx, &p, p.running_flavor.or(ext_flavor), out)
}

/// Every driver version seen (extensions, loaded module, NVML) must be one, and NVML must not
/// report its own version mismatch; the fix depends on which pieces disagree.
fn version_coherence(ctx: &Ctx<'_>, p: &Pieces<'_>, out: &mut Vec<Problem>) {
    let (kmod, toolkit, fabric, running) = (p.kmod, p.toolkit, p.fabric, &p.running);
    let nvml = ctx.ev.nvml.as_ref();
    let mut versions: Vec<SeenVersion> = Vec::new();
    let seen = |source: &str, v: &str| SeenVersion {
        source: source.to_owned(),
        version: talos::driver_part(v).to_owned(),
    };
    if let Some(k) = kmod {
        versions.push(seen(&k.name, &k.version));
    }
    if let Some(t) = toolkit {
        versions.push(seen(&t.name, &t.version));
    }
    if let Some(f) = fabric {
        versions.push(seen(&f.name, &f.version));
    }
    if let Some(r) = running {
        versions.push(seen("loaded nvidia module", r));
    }
    if let Some(v) = nvml.and_then(|n| n.driver_version.clone()) {
        versions.push(seen("NVML", &v));
    }
    let disagree = versions.windows(2).any(|w| w[0].version != w[1].version);
    let nvml_mismatch = nvml.is_some_and(|n| n.version_mismatch);
    if !(disagree || nvml_mismatch) {
        return;
    }
    let part = |e: &Extension| talos::driver_part(&e.version).to_owned();
    let fix = if matches!((kmod, toolkit), (Some(k), Some(t)) if part(k) != part(t)) {
        VersionFix::SameBranch
    } else if let (Some(k), Some(r)) = (kmod, running)
        && &part(k) != r
    {
        VersionFix::Reboot {
            extension: k.name.clone(),
            version: part(k),
        }
    } else if let (Some(f), Some(v)) = (fabric, kmod.map(part).or_else(|| running.clone()))
        && part(f) != v
    {
        VersionFix::FabricManager {
            extension: talos::siderolabs(&f.name),
            version: v,
        }
    } else if ctx.on_talos {
        VersionFix::Toolkit
    } else {
        VersionFix::Libraries
    };
    out.push(problem(Cause::DriverVersionsDisagree {
        versions,
        nvml_mismatch,
        fix,
    }));
}

/// Whether the GPU's architecture can run the module flavour and branch in use (loaded, else
/// installed). Returns true when it reported that it cannot.
fn arch_fit(ctx: &Ctx<'_>, p: &Pieces<'_>, flavor: Option<Flavor>, out: &mut Vec<Problem>) -> bool {
    let gpu = ctx.gpu;
    let kmod = p.kmod;
    let Some(arch) = arch(ctx) else {
        return false;
    };
    let major = p
        .running
        .as_deref()
        .or(kmod.map(|k| k.version.as_str()))
        .and_then(talos::driver_major);
    // On Talos: the kernel-module extension of this Talos that drives the GPU, preferring the
    // installed one's branch.
    let choices = ctx
        .talos
        .map(|v| talos::nvidia_kmod_choices(v, Some(arch)))
        .unwrap_or_default();
    let branch = kmod.and_then(|k| talos::nvidia_branch(&k.name));
    let pick = |open: bool| {
        choices
            .iter()
            .filter(|c| c.open == open)
            .min_by_key(|c| c.branch != branch)
            .map(|c| siderolabs(&c.name))
    };
    let swap = |open: bool, default: &str| {
        ctx.talos.and_then(|_| {
            pick(open).map(|with| Swap {
                replace: siderolabs(kmod.map_or(default, |k| k.name.as_str())),
                with,
            })
        })
    };
    if arch.open_only() && flavor == Some(Flavor::Proprietary) {
        out.push(problem(Cause::OpenModulesRequired {
            model: gpu.model.clone(),
            arch: arch.name().to_owned(),
            proprietary_loaded: p.running_flavor.is_some(),
            min_major: arch.min_branch().unwrap_or_default(),
            swap: swap(true, "nonfree-kmod-nvidia-production"),
        }));
        return true;
    }
    if !arch.has_gsp() && flavor == Some(Flavor::Open) {
        out.push(problem(Cause::ProprietaryModulesRequired {
            model: gpu.model.clone(),
            arch: arch.name().to_owned(),
            open_loaded: p.running_flavor.is_some(),
            swap: swap(false, "nvidia-open-gpu-kernel-modules-production"),
        }));
        return true;
    }
    if let Some(m) = major
        && !arch.runs(flavor == Some(Flavor::Open), m)
    {
        out.push(problem(Cause::NvidiaBranchUnsupported {
            model: gpu.model.clone(),
            arch: arch.name().to_owned(),
            major: m,
            min_major: arch.min_branch(),
            max_major: arch.max_branch(),
            extensions: ctx
                .talos
                .map(|_| choices.iter().map(|c| siderolabs(&c.name)).collect()),
        }));
        return true;
    }
    false
}
