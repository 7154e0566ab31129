//! Driver-stack verdicts per GPU (`docs/reference/verdicts.md`), each non-`ok` one with a
//! one-line fix.
//!
//! Evidence, most trusted first:
//! 1. the kernel: the PCI `driver` link, module state from `/proc/modules` and
//!    `/sys/module/<m>/initstate` ([`crate::host`]), `/proc/driver/nvidia/version`
//!    ([`crate::vendors::nvidia`]) and, for a device that failed to probe, the firmware files
//!    under the host firmware directory (`lib/firmware`, `usr/lib/firmware` from Talos v1.10),
//!    listed through [`HostRoot`];
//! 2. Talos' records of installed extensions: the Node's `extensions.talos.dev/<name>` labels and
//!    annotations ([`Evidence::node_extensions`], passed in by the daemon) and the host's
//!    `/etc/extensions.yaml`; a Node entry wins over a file entry of the same name;
//! 3. vendor libraries: what NVML said ([`Evidence::nvml`]).
//!
//! What the GPU needs comes from the table in [`crate::talos`]. The kernel wins: a GPU whose
//! native driver is bound and live is never reported for a missing *driver* extension record;
//! user space (NVIDIA container toolkit, Intel `mei`) and version coherence are still checked.
//! On a host that does not run Talos only the kernel checks apply. Evidence that could not be
//! read (the `driver` link, `/etc/os-release` on a `-talos` kernel, `/etc/extensions.yaml`,
//! the firmware directory) gives `unknown`, never a guess.

use crate::host::EXTENSIONS_YAML;
use crate::hostroot::HostRoot;
use crate::model::{Extension, Gpu, Host, Problem, Status, Vendor};
use crate::talos::{self, ExtensionNeed, FirmwareNeed, GpuFacts, Need, Role, TalosVersion};

mod nvidia;
use nvidia::{nvidia_coherence, toolkit_missing};

/// Drivers that serve each vendor's GPUs for our purposes.
pub fn native_drivers(vendor: Vendor) -> &'static [&'static str] {
    match vendor {
        Vendor::Amd => &["amdgpu"],
        Vendor::Nvidia => &["nvidia"],
        Vendor::Intel => &["i915", "xe"],
    }
}

/// What the agent learned outside the host filesystem. Empty by default (one-shot commands).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Extensions from the Node's `extensions.talos.dev/<name>=<version>` labels and
    /// annotations (see [`extensions_from_node_metadata`]); `None` when the Node was not read.
    pub node_extensions: Option<Vec<Extension>>,
    /// What NVML reported; `None` when NVML was not tried or could not be loaded.
    pub nvml: Option<NvmlFacts>,
}

/// NVML's view of the driver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NvmlFacts {
    /// `nvmlSystemGetDriverVersion` (`570.172.08`).
    pub driver_version: Option<String>,
    /// `nvmlSystemGetCudaDriverVersion_v2`, as `12.8`.
    pub cuda_driver_version: Option<String>,
    /// NVML init failed with "Driver/library version mismatch" (`NVML_ERROR_LIB_RM_VERSION_MISMATCH`).
    pub version_mismatch: bool,
}

/// Label/annotation key prefix Talos publishes installed extensions under.
pub const NODE_EXTENSION_PREFIX: &str = "extensions.talos.dev/";

/// Installed extensions from a Node's labels and annotations (`extensions.talos.dev/<name>` =
/// `<version>`; Talos publishes a version that is not a valid label value as an annotation, so
/// pass labels chained with annotations). Other keys, and Talos' synthetic `schematic` and
/// `modules.dep` entries, are dropped. Sorted by name; a name seen twice keeps its first version.
pub fn extensions_from_node_metadata<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<Extension> {
    let mut out: Vec<Extension> = Vec::new();
    for (k, v) in entries {
        let Some(name) = k.strip_prefix(NODE_EXTENSION_PREFIX) else {
            continue;
        };
        let name = name.trim_start_matches("siderolabs/");
        if name.is_empty() || name == "schematic" || name == "modules.dep" {
            continue;
        }
        if out.iter().any(|e| e.name == name) {
            continue;
        }
        out.push(Extension {
            name: name.to_owned(),
            version: v.trim().to_owned(),
        });
    }
    out.sort();
    out
}

/// The installed extensions the verdicts use: the Node's entries, plus file entries for names
/// the Node does not list. `None` when neither source could be read (Talos hosts only).
pub fn effective_extensions(host: &Host, ev: &Evidence) -> Option<Vec<Extension>> {
    let talos = host.talos.as_ref()?;
    let file_path = format!("/{EXTENSIONS_YAML}");
    let file_ok = !host.unread.iter().any(|u| u.path == file_path);
    match (&ev.node_extensions, file_ok) {
        (None, false) => None,
        (None, true) => Some(talos.extensions.clone()),
        (Some(node), ok) => {
            let mut all = node.clone();
            if ok {
                for e in &talos.extensions {
                    if !all.iter().any(|n| n.name == e.name) {
                        all.push(e.clone());
                    }
                }
            }
            all.sort();
            Some(all)
        }
    }
}

/// What the host tells us about Talos.
enum TalosState {
    NotTalos,
    /// A `-talos` kernel whose `/etc/os-release` could not be read.
    Unreadable(String),
    Talos {
        raw: String,
        version: Option<TalosVersion>,
        /// `None`: the installed-extension list could not be read.
        extensions: Option<Vec<Extension>>,
    },
}

fn talos_state(host: &Host, ev: &Evidence) -> TalosState {
    match &host.talos {
        Some(t) => TalosState::Talos {
            raw: t.version.clone(),
            version: TalosVersion::parse(&t.version),
            extensions: effective_extensions(host, ev),
        },
        None => {
            let talos_kernel = host
                .kernel
                .as_deref()
                .is_some_and(|k| k.ends_with("-talos"));
            if talos_kernel || ev.node_extensions.is_some() {
                let why = host
                    .unread
                    .iter()
                    .find(|u| u.path.ends_with("os-release"))
                    .map(|u| format!("{}: {}", u.path, u.error))
                    .unwrap_or_else(|| "/etc/os-release is missing".to_owned());
                TalosState::Unreadable(why)
            } else {
                TalosState::NotTalos
            }
        }
    }
}

/// Assess every GPU and set its `problems` and `status`.
pub fn assess(root: &HostRoot, host: &Host, gpus: &mut [Gpu], ev: &Evidence) {
    let state = talos_state(host, ev);
    for gpu in gpus.iter_mut() {
        gpu.problems = judge(root, host, &state, ev, gpu);
        gpu.settle_status();
        if gpu.status != Status::Ok {
            tracing::debug!(gpu = %gpu.pci_address, vendor = %gpu.vendor, status = %gpu.status, "driver stack not ok");
        }
    }
}

/// One line of `check` output and of the `discover` table: `<bdf> <vendor> <status>: <detail>;
/// fix: <hint>`.
pub fn problem_line(gpu: &Gpu, p: &Problem) -> String {
    format!(
        "{} {} {}: {}; fix: {}",
        gpu.pci_address, gpu.vendor, p.status, p.detail, p.hint
    )
}

fn problem(status: Status, detail: impl Into<String>, hint: impl Into<String>) -> Problem {
    Problem {
        status,
        detail: detail.into(),
        hint: hint.into(),
    }
}

/// Everything one GPU's verdict looks at.
struct Ctx<'a> {
    root: &'a HostRoot,
    host: &'a Host,
    ev: &'a Evidence,
    gpu: &'a Gpu,
    /// Running Talos version, only when the installed extensions are known too: the
    /// extension checks run only then (`None` off Talos or when either is unreadable).
    talos: Option<TalosVersion>,
    /// Installed extensions (`None` off Talos or when unreadable).
    exts: Option<&'a [Extension]>,
    /// The host is (or looks like) Talos, known or not which version: fixes go through
    /// `talosctl` and the schematic, never a package manager.
    on_talos: bool,
    /// The running Talos version when readable (it picks the firmware directory).
    version: Option<TalosVersion>,
}

impl Ctx<'_> {
    fn module(&self, name: &str) -> Option<&crate::model::ModuleState> {
        self.host.modules.iter().find(|m| m.name == name)
    }

    fn usable(&self, name: &str) -> bool {
        self.module(name).is_some_and(|m| m.is_usable())
    }

    fn installed(&self, need: &ExtensionNeed) -> Option<&Extension> {
        self.exts?
            .iter()
            .find(|e| need.accepted.contains(&e.name.as_str()))
    }

    fn installed_any(&self, names: &[&str]) -> Option<&Extension> {
        self.exts?.iter().find(|e| names.contains(&e.name.as_str()))
    }

    fn firmware_dir(&self) -> &'static str {
        talos::firmware_dir(self.version)
    }
}

fn judge(
    root: &HostRoot,
    host: &Host,
    state: &TalosState,
    ev: &Evidence,
    gpu: &Gpu,
) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(u) = gpu.unread.iter().find(|u| u.path.ends_with("/driver")) {
        // Without the binding nothing else can be judged.
        return vec![problem(
            Status::Unknown,
            format!("the driver link {} could not be read: {}", u.path, u.error),
            "give the agent read access to the host /sys (read-only hostPath mount of /sys)",
        )];
    }
    let on_talos = !matches!(state, TalosState::NotTalos);
    let (version, exts) = match state {
        TalosState::NotTalos => (None, None),
        TalosState::Unreadable(why) => {
            out.push(problem(
                Status::Unknown,
                format!(
                    "the kernel is a Talos kernel but the Talos version is unreadable ({why}); extension checks skipped"
                ),
                "mount the host root (including /etc and /usr/lib) read-only into the agent and pass it as --root",
            ));
            (None, None)
        }
        TalosState::Talos {
            raw,
            version,
            extensions,
        } => {
            if version.is_none() {
                out.push(problem(
                    Status::Unknown,
                    format!("Talos version {raw:?} in /etc/os-release is not a Talos release tag; extension checks skipped"),
                    "check the host's /etc/os-release VERSION_ID (expected vX.Y.Z)",
                ));
            } else if extensions.is_none() {
                out.push(problem(
                    Status::Unknown,
                    format!("installed Talos extensions unknown: /{EXTENSIONS_YAML} could not be read and no Node labels were given"),
                    "let the agent read its Node (RBAC get nodes) or mount the host /etc read-only",
                ));
            }
            (*version, extensions.as_deref())
        }
    };
    let (talos, exts) = match (version, exts) {
        (Some(v), Some(e)) => (Some(v), Some(e)),
        _ => (None, None),
    };
    let ctx = Ctx {
        root,
        host,
        ev,
        gpu,
        talos,
        exts,
        on_talos,
        version,
    };
    judge_stack(&ctx, &mut out);
    out
}

fn judge_stack(ctx: &Ctx<'_>, out: &mut Vec<Problem>) {
    let gpu = ctx.gpu;
    let natives = native_drivers(gpu.vendor);
    if let Some(other) = gpu.driver.as_deref().filter(|d| !natives.contains(d)) {
        let hint = if other.starts_with("vfio") || other == "pci-stub" {
            format!(
                "{other} holds this device for passthrough to a VM: expected there; gpuscout reports it and changes nothing"
            )
        } else {
            format!(
                "{other} owns this device: if {} should drive it, blacklist {other} (or unbind it) and reboot; gpuscout changes nothing",
                natives.join(" or ")
            )
        };
        out.push(problem(
            Status::BoundToOtherDriver,
            format!("bound to {other}, not {}", natives.join(" or ")),
            hint,
        ));
        return;
    }
    let bound = gpu.driver.as_deref();
    let facts = GpuFacts {
        vendor: gpu.vendor,
        device_id: gpu.device_id_u16().unwrap_or(0),
        intel: gpu.intel.as_ref(),
        amd_gc_version: gpu.amd.as_ref().and_then(|a| a.gc_version.as_deref()),
    };
    // Talos version or extensions unknown: judge like a plain host (kernel checks only).
    let req = match talos::requirements(ctx.talos, &facts) {
        Need::Supported(r) => r,
        Need::Unsupported { detail, hint } => {
            if bound.is_none() {
                out.push(problem(Status::UnsupportedByTalosVersion, detail, hint));
            }
            // Bound anyway: the kernel says it works.
            return;
        }
    };
    let driver_module = bound.unwrap_or(req.modules[0]);
    let driver_live = ctx.usable(driver_module);

    // Talos records: missing extensions and extensions built for another Talos.
    let mut missing_driver_ext: Option<&ExtensionNeed> = None;
    let mut missing_mei = false;
    let mut stale_driver_ext = false;
    if let (Some(running), Some(_)) = (ctx.talos, ctx.exts) {
        for need in &req.extensions {
            match ctx.installed(need) {
                Some(e) => {
                    // Kernel first: modules that are live work, whatever their record says.
                    let works = match need.role {
                        Role::Driver => bound.is_some() && driver_live,
                        Role::Mei => ctx.usable("mei_me"),
                        Role::Firmware | Role::ContainerToolkit => false,
                    };
                    if let Some(built) =
                        talos::built_for(&e.version).filter(|_| talos::ships_modules(&e.name))
                        && built != running
                        && !works
                    {
                        if need.role == Role::Driver {
                            stale_driver_ext = true;
                        }
                        out.push(problem(
                            Status::ExtensionVersionMismatch,
                            format!("extension {} {} is built for Talos {built}, the node runs {running}", e.name, e.version),
                            format!("regenerate the installer for {running} in Image Factory with the same schematic and upgrade, so {} matches the running Talos", e.name),
                        ));
                    }
                }
                None => match need.role {
                    Role::Driver => missing_driver_ext = Some(need),
                    Role::Firmware => {} // judged with the firmware files below
                    Role::ContainerToolkit => out.push(toolkit_missing(ctx, need)),
                    Role::Mei => {
                        missing_mei = true;
                        out.push(problem(
                            Status::ExtensionMissing,
                            format!(
                                "Arc discrete GPU without the mei extension (installed: {})",
                                installed_names(ctx)
                            ),
                            format!(
                                "add {} to the Image Factory schematic and upgrade",
                                need.suggest
                            ),
                        ));
                    }
                },
            }
        }
    }

    let nvidia_flavor_problem = if gpu.vendor == Vendor::Nvidia {
        nvidia_coherence(ctx, out)
    } else {
        false
    };

    match bound {
        Some(d) => {
            if let Some(m) = ctx.module(d).filter(|m| !m.is_usable()) {
                out.push(problem(
                    Status::ModuleNotLoaded,
                    format!("{d} is bound but its module is {}", m.state),
                    format!("check the kernel log for {d} errors; the module is unloading or failed to initialise"),
                ));
            }
            let missing: Vec<&str> = req
                .modules
                .iter()
                .copied()
                .filter(|m| *m != d && !natives.contains(m) && !ctx.usable(m))
                .filter(|m| !(missing_mei && m.starts_with("mei")))
                .collect();
            if !missing.is_empty() {
                out.push(modules_missing(
                    ctx,
                    &req,
                    &missing,
                    "the driver is bound but",
                ));
            }
        }
        None if driver_live => {
            // The module is there but did not take the device: explain the failed probe.
            let mut explained = nvidia_flavor_problem;
            // A GPU the loaded driver cannot support at all needs no firmware verdict on top.
            let needs = if explained {
                Vec::new()
            } else {
                firmware_needs(ctx, &req)
            };
            for need in needs {
                match firmware_present(ctx, &need) {
                    Ok(true) => {}
                    Ok(false) => {
                        out.push(firmware_missing(ctx, &need));
                        explained = true;
                    }
                    Err(why) => {
                        out.push(problem(
                            Status::Unknown,
                            format!("{driver_module} did not bind and the firmware directory could not be read: {why}"),
                            "mount the host firmware directory read-only into the agent",
                        ));
                        explained = true;
                    }
                }
            }
            if !explained {
                out.push(problem(
                    Status::DriverNotBound,
                    format!(
                        "{driver_module} is loaded but not bound to this device (probe failed)"
                    ),
                    not_bound_hint(ctx, driver_module),
                ));
            }
        }
        None => {
            if nvidia_flavor_problem {
                // Reported by the coherence check: wrong flavour or branch for this GPU.
            } else if let Some(need) = missing_driver_ext {
                out.push(problem(
                    Status::ExtensionMissing,
                    format!(
                        "no {} extension installed (installed: {}) and {driver_module} is not loaded",
                        if gpu.vendor == Vendor::Nvidia {
                            "NVIDIA kernel-module"
                        } else {
                            need.accepted.first().copied().unwrap_or(driver_module)
                        },
                        installed_names(ctx)
                    ),
                    format!("add {} to the Image Factory schematic and upgrade the node with the new installer", need.suggest),
                ));
            } else if stale_driver_ext {
                // Reported above: the extension's modules do not match the running kernel.
            } else {
                let missing: Vec<&str> = req
                    .modules
                    .iter()
                    .copied()
                    .filter(|m| !ctx.usable(m))
                    .filter(|m| !(missing_mei && m.starts_with("mei")))
                    .collect();
                out.push(modules_missing(
                    ctx,
                    &req,
                    &missing,
                    "no driver is bound and",
                ));
            }
        }
    }
}

fn installed_names(ctx: &Ctx<'_>) -> String {
    match ctx.exts {
        Some(e) if !e.is_empty() => e
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".to_owned(),
    }
}

fn modules_missing(
    ctx: &Ctx<'_>,
    req: &talos::Requirements,
    missing: &[&str],
    lead: &str,
) -> Problem {
    let list = missing.join(", ");
    let hint = if ctx.on_talos && ctx.talos.is_none() {
        format!(
            "check `talosctl get extensions` for the GPU's driver extension and `talosctl dmesg` for why {list} did not load"
        )
    } else if ctx.talos.is_some() && !req.autoload {
        format!(
            "add {list} to machine.kernel.modules in the machine config and reboot (the extension's modprobe.d blacklists them)"
        )
    } else if ctx.talos.is_some() && req.builtin_driver {
        format!(
            "{list} is part of the Talos base image: check the kernel log (`talosctl dmesg`) for why it did not load"
        )
    } else if ctx.talos.is_some() {
        format!(
            "the extension is installed but {list} did not load: check `talosctl dmesg` for 'module not found' (reboot once after install) or 'key was rejected' (extension built for another Talos)"
        )
    } else {
        format!(
            "load {list} (`modprobe {}`) and make it persistent in /etc/modules-load.d; install the driver package if modprobe cannot find it",
            missing.first().copied().unwrap_or_default()
        )
    };
    problem(
        Status::ModuleNotLoaded,
        format!("{lead} {list} not loaded"),
        hint,
    )
}

fn not_bound_hint(ctx: &Ctx<'_>, module: &str) -> String {
    let gpu = ctx.gpu;
    let log = if ctx.on_talos {
        "talosctl dmesg"
    } else {
        "dmesg"
    };
    if gpu.vendor == Vendor::Intel && module == "xe" && !ctx.on_talos {
        return format!(
            "xe did not take {} ({}): use kernel 6.12 or later, or boot with xe.force_probe={}; see `{log}`",
            gpu.pci_address,
            gpu.model,
            gpu.device_id.trim_start_matches("0x")
        );
    }
    format!(
        "read the probe error for {} in `{log} | grep {}` (unsupported id, firmware, power or BAR problems)",
        gpu.pci_address, gpu.pci_address
    )
}

/// Firmware to check for an unbound GPU: the table's, plus the GSP firmware of NVIDIA's open
/// modules (`nvidia/<version>/gsp_*.bin`, shipped by the container toolkit on Talos).
fn firmware_needs(ctx: &Ctx<'_>, req: &talos::Requirements) -> Vec<FirmwareNeed> {
    let mut v = req.firmware.clone();
    if let Some(nv) = &ctx.gpu.nvidia
        && nv.kernel_module_flavor.as_deref() == Some("open")
        && let Some(ver) = &nv.kernel_module_version
    {
        v.push(FirmwareNeed {
            subdir: format!("nvidia/{ver}"),
            prefix: "gsp_".to_owned(),
            shipped_by: ctx.talos.map(|_| {
                ctx.installed_any(talos::NVIDIA_TOOLKITS)
                    .map(|e| e.name.clone())
                    .unwrap_or_else(|| "nvidia-container-toolkit-production".to_owned())
            }),
        });
    }
    v
}

/// Whether the host firmware directory has a file for `need`. `Err` when it cannot be listed.
fn firmware_present(ctx: &Ctx<'_>, need: &FirmwareNeed) -> Result<bool, String> {
    let dir = format!("{}/{}", ctx.firmware_dir(), need.subdir);
    match ctx.root.list_dir(&dir) {
        Ok(names) => Ok(names.iter().any(|n| n.starts_with(&need.prefix))),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

fn firmware_missing(ctx: &Ctx<'_>, need: &FirmwareNeed) -> Problem {
    let pattern = format!("/{}/{}/{}*", ctx.firmware_dir(), need.subdir, need.prefix);
    let detail = format!(
        "{} is loaded but not bound, and no firmware matches {pattern}",
        ctx.gpu
            .driver
            .as_deref()
            .unwrap_or_else(|| native_drivers(ctx.gpu.vendor)[0])
    );
    if let Some(ver) = need.subdir.strip_prefix("nvidia/") {
        // Open modules load GSP firmware of exactly their own version.
        let hint = if ctx.on_talos {
            let branch = ctx
                .installed_any(talos::NVIDIA_KMODS)
                .and_then(|k| talos::nvidia_branch(&k.name))
                .unwrap_or("production");
            format!(
                "install siderolabs/nvidia-container-toolkit-{branch} of driver {ver} (it ships the GSP firmware of the open modules) and upgrade"
            )
        } else {
            format!(
                "install the NVIDIA firmware package of driver {ver} (gsp_*.bin) matching the loaded open module"
            )
        };
        return problem(Status::FirmwareMissing, detail, hint);
    }
    let hint = match (&need.shipped_by, ctx.talos) {
        (None, _) if ctx.on_talos => format!(
            "check `talosctl get extensions` for the extension that ships {}/{}* (installed extensions are unknown to gpuscout)",
            need.subdir, need.prefix
        ),
        (Some(ext), Some(running)) => {
            match ctx.exts.and_then(|x| x.iter().find(|e| &e.name == ext)) {
                None => format!("add siderolabs/{ext} to the Image Factory schematic and upgrade"),
                Some(e) => format!(
                    "the installed {ext} {} lacks {}/{}*: upgrade to a Talos release newer than {running} whose {ext} carries it",
                    e.version, need.subdir, need.prefix
                ),
            }
        }
        _ => format!(
            "install a linux-firmware package that provides {}/{}* in /lib/firmware and reload the driver",
            need.subdir, need.prefix
        ),
    };
    problem(Status::FirmwareMissing, detail, hint)
}

#[cfg(test)]
mod tests;
