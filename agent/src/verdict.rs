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
//!    annotations ([`Inputs::node_extensions`], passed in by the daemon, or the Talos API's list) and the host's
//!    `/etc/extensions.yaml`; a Node entry wins over a file entry of the same name;
//! 3. vendor libraries: what NVML said ([`Inputs::nvml`]).
//!
//! What the GPU needs comes from the table in [`crate::talos`]. The kernel wins: a GPU whose
//! native driver is bound and live is never reported for a missing *driver* extension record;
//! user space (NVIDIA container toolkit, Intel `mei`) and version coherence are still checked.
//! On a host that does not run Talos only the kernel checks apply. Evidence that could not be
//! read (the `driver` link, `/etc/os-release` on a `-talos` kernel, `/etc/extensions.yaml`,
//! the firmware directory) gives `unknown`, never a guess.
//!
//! What makes a host Talos comes from the host: `/etc/os-release` `ID=talos`, or a `-talos`
//! kernel whose os-release cannot be read. The Node adds evidence only where it carries Talos'
//! own `extensions.talos.dev/*` records (Talos v1.8 and later); a Node without them says
//! nothing, and a readable os-release of another system wins over it.
//!
//! Every problem is a typed [`Cause`]; its text is rendered from it ([`crate::cause`]).

use crate::cause::{Cause, FirmwareFix, ModulesFix, NotBound, OsRelease, TalosEvidence};
use crate::hostroot::HostRoot;
use crate::model::{Extension, Gpu, Host, Problem, Status, Vendor};
use crate::nvml::NvmlFacts;
use crate::talos::{self, ExtensionNeed, FirmwareNeed, GpuFacts, Need, Role, TalosVersion};

mod nvidia;
use nvidia::{fabricmanager_missing, nvidia_coherence, toolkit_missing};

/// Drivers that serve each vendor's GPUs for our purposes.
pub fn native_drivers(vendor: Vendor) -> &'static [&'static str] {
    match vendor {
        Vendor::Amd => &["amdgpu"],
        Vendor::Nvidia => &["nvidia"],
        Vendor::Intel => &["i915", "xe"],
    }
}

/// What the verdicts use besides the host facts, taken by [`crate::discover`] from the pass's
/// evidence. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Extensions from the Node's `extensions.talos.dev/<name>=<version>` labels and
    /// annotations (see [`extensions_from_node_metadata`]); `None` when the Node was not read.
    pub node_extensions: Option<Vec<Extension>>,
    /// What NVML reported; `None` when NVML was not tried or could not be loaded.
    pub nvml: Option<NvmlFacts>,
}

/// Label/annotation key prefix Talos publishes installed extensions under.
pub const NODE_EXTENSION_PREFIX: &str = "extensions.talos.dev/";

/// Installed extensions from a Node's labels and annotations (`extensions.talos.dev/<name>` =
/// `<version>`; Talos publishes a version that is not a valid label value as an annotation, so
/// pass labels chained with annotations). Other keys, and Talos' synthetic `schematic` and
/// `modules.dep` entries, are dropped from the list. Sorted by name; a name seen twice keeps its
/// first version.
///
/// `None` when the Node carries no `extensions.talos.dev/` key at all: Talos publishes them
/// only from v1.8 (siderolabs/talos commit 7a1c62b8b, `NodeLabelSpecController`), and other
/// systems never do, so such a Node says nothing about installed extensions, nor that the host
/// runs Talos. A Node with only the synthetic entries (an Image Factory schematic with no
/// extension) gives `Some` of an empty list.
pub fn extensions_from_node_metadata<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<Vec<Extension>> {
    let mut published = false;
    let mut out: Vec<Extension> = Vec::new();
    for (k, v) in entries {
        let Some(name) = k.strip_prefix(NODE_EXTENSION_PREFIX) else {
            continue;
        };
        let name = name.trim_start_matches("siderolabs/");
        if name.is_empty() {
            continue;
        }
        published = true;
        if name == "schematic" || name == "modules.dep" {
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
    published.then_some(out)
}

/// The installed extensions the verdicts use: the Node's entries, plus file entries for names
/// the Node does not list. `None` when neither source could be read (Talos hosts only). Node
/// entries count only where Talos publishes them (v1.8 and later, or a version that cannot be
/// read): on an older Talos any `extensions.talos.dev/*` key was written by someone else.
pub fn effective_extensions(host: &Host, ev: &Inputs) -> Option<Vec<Extension>> {
    let talos = host.talos.as_ref()?;
    let file_ok = host.read_errors.extensions_yaml.is_none();
    let node = ev.node_extensions.as_ref().filter(|_| {
        TalosVersion::parse(&talos.version).is_none_or(|v| v >= talos::NODE_EXTENSION_LABELS)
    });
    match (node, file_ok) {
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
    /// The host looks like Talos but its os-release cannot say which version.
    Unreadable(Cause),
    Talos {
        raw: String,
        version: Option<TalosVersion>,
        /// `None`: the installed-extension list could not be read.
        extensions: Option<Vec<Extension>>,
    },
}

fn talos_state(host: &Host, ev: &Inputs) -> TalosState {
    if let Some(t) = &host.talos {
        return TalosState::Talos {
            raw: t.version.clone(),
            version: TalosVersion::parse(&t.version),
            extensions: effective_extensions(host, ev),
        };
    }
    // Host facts first: a `-talos` kernel is Talos. Node records of Talos extensions count
    // only where the host's own os-release could not be read; a readable os-release of another
    // system wins over them.
    let os_release = match (&host.read_errors.os_release, &host.os) {
        (Some(u), _) => OsRelease::Unreadable {
            path: u.path.clone(),
            error: u.error.clone(),
        },
        (None, Some(name)) => OsRelease::OtherOs { name: name.clone() },
        (None, None) => OsRelease::Missing,
    };
    let evidence = match host.kernel.as_deref() {
        Some(k) if k.ends_with("-talos") => TalosEvidence::Kernel {
            release: k.to_owned(),
        },
        _ if host.os.is_none() && ev.node_extensions.is_some() => TalosEvidence::Node,
        _ => return TalosState::NotTalos,
    };
    TalosState::Unreadable(Cause::TalosVersionUnreadable {
        evidence,
        os_release,
    })
}

/// Assess every GPU and set its `problems` and `status`.
pub fn assess(root: &HostRoot, host: &Host, gpus: &mut [Gpu], ev: &Inputs) {
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

fn problem(cause: Cause) -> Problem {
    Problem::new(cause)
}

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Everything one GPU's verdict looks at.
struct Ctx<'a> {
    root: &'a HostRoot,
    host: &'a Host,
    ev: &'a Inputs,
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

    fn installed_names(&self) -> Vec<String> {
        self.exts
            .unwrap_or_default()
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }

    fn firmware_dir(&self) -> &'static str {
        talos::firmware_dir(self.version)
    }
}

fn judge(root: &HostRoot, host: &Host, state: &TalosState, ev: &Inputs, gpu: &Gpu) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(u) = &gpu.driver_link_error {
        // Without the binding nothing else can be judged.
        return vec![problem(Cause::DriverLinkUnreadable {
            path: u.path.clone(),
            error: u.error.clone(),
        })];
    }
    let on_talos = !matches!(state, TalosState::NotTalos);
    let (version, exts) = match state {
        TalosState::NotTalos => (None, None),
        TalosState::Unreadable(cause) => {
            out.push(problem(cause.clone()));
            (None, None)
        }
        TalosState::Talos {
            raw,
            version,
            extensions,
        } => {
            match (version, extensions) {
                (None, _) => out.push(problem(Cause::TalosVersionUnparsable { raw: raw.clone() })),
                (Some(v), None) => out.push(problem(Cause::ExtensionsUnknown {
                    path: host
                        .read_errors
                        .extensions_yaml
                        .as_ref()
                        .map_or_else(|| "/etc/extensions.yaml".to_owned(), |u| u.path.clone()),
                    running: v.to_string(),
                    node_publishes: *v >= talos::NODE_EXTENSION_LABELS,
                })),
                _ => {}
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

/// What the extension and NVIDIA checks found that the driver checks after them need.
#[derive(Default)]
struct Flags<'a> {
    /// The driver's extension is not installed (Talos, extensions known).
    missing_driver_ext: Option<&'a ExtensionNeed>,
    /// The MEI extension is not installed: its `mei*` modules are not reported again.
    missing_mei: bool,
    /// The driver's extension was built for another Talos (already reported).
    stale_driver_ext: bool,
    /// The NVIDIA coherence check reported a wrong flavour or branch for this GPU.
    nvidia_flavor: bool,
}

/// The driver stack of one GPU: the other-driver and Talos-support checks, then the extension
/// checks, the NVIDIA coherence check, and the bound-driver or unbound-driver checks.
fn judge_stack(ctx: &Ctx<'_>, out: &mut Vec<Problem>) {
    let gpu = ctx.gpu;
    let natives = native_drivers(gpu.vendor);
    if let Some(other) = gpu.driver.as_deref().filter(|d| !natives.contains(d)) {
        out.push(problem(Cause::BoundToOtherDriver {
            driver: other.to_owned(),
            native: owned(natives),
        }));
        return;
    }
    let bound = gpu.driver.as_deref();
    let facts = GpuFacts {
        vendor: gpu.vendor,
        device_id: gpu.device_id,
        intel: gpu.intel.as_ref(),
        amd_gc_version: gpu.amd.as_ref().and_then(|a| a.gc_version.as_deref()),
        model: &gpu.model,
        nvswitches: !ctx.host.nvswitches.is_empty(),
    };
    // Talos version or extensions unknown: judge like a plain host (kernel checks only).
    let req = match talos::requirements(ctx.talos, &facts) {
        Need::Supported(r) => r,
        Need::Unsupported(cause) => {
            if bound.is_none() {
                out.push(problem(cause));
            }
            // Bound anyway: the kernel says it works.
            return;
        }
    };
    let driver_module = bound.unwrap_or(req.modules[0]);
    let driver_live = ctx.usable(driver_module);
    let mut flags = extension_checks(ctx, &req, bound.is_some() && driver_live, out);
    flags.nvidia_flavor = gpu.vendor == Vendor::Nvidia && nvidia_coherence(ctx, out);
    match bound {
        Some(d) => bound_driver_checks(ctx, &req, d, &flags, out),
        None if driver_live => live_unbound_checks(ctx, &req, driver_module, &flags, out),
        None => unbound_driver_checks(ctx, &req, driver_module, &flags, out),
    }
}

/// Talos records: missing extensions and extensions built for another Talos (only when the
/// Talos version and the installed extensions are known). `driver_works`: the driver is bound
/// and its module live, so its extension's record does not matter.
fn extension_checks<'a>(
    ctx: &Ctx<'_>,
    req: &'a talos::Requirements,
    driver_works: bool,
    out: &mut Vec<Problem>,
) -> Flags<'a> {
    let mut flags = Flags::default();
    let (Some(running), Some(_)) = (ctx.talos, ctx.exts) else {
        return flags;
    };
    for need in &req.extensions {
        match ctx.installed(need) {
            Some(e) => {
                // Kernel first: modules that are live work, whatever their record says.
                let works = match need.role {
                    Role::Driver => driver_works,
                    Role::Mei => ctx.usable("mei_gsc"),
                    Role::Firmware | Role::ContainerToolkit | Role::FabricManager => false,
                };
                if let Some(built) =
                    talos::built_for(&e.version).filter(|_| talos::ships_modules(&e.name))
                    && built != running
                    && !works
                {
                    if need.role == Role::Driver {
                        flags.stale_driver_ext = true;
                    }
                    out.push(problem(Cause::ExtensionBuiltForOtherTalos {
                        extension: e.name.clone(),
                        version: e.version.clone(),
                        built: built.to_string(),
                        running: running.to_string(),
                    }));
                }
            }
            None => match need.role {
                Role::Driver => flags.missing_driver_ext = Some(need),
                Role::Firmware => {} // judged with the firmware files
                Role::ContainerToolkit => out.push(toolkit_missing(ctx, need)),
                Role::FabricManager => out.push(fabricmanager_missing(ctx, need)),
                Role::Mei => {
                    flags.missing_mei = true;
                    out.push(problem(Cause::MeiMissing {
                        installed: ctx.installed_names(),
                        extension: need.suggest.extensions.first().cloned().unwrap_or_default(),
                    }));
                }
            },
        }
    }
    flags
}

/// Bound to its native driver `d`: the module must be usable and the other modules loaded.
fn bound_driver_checks(
    ctx: &Ctx<'_>,
    req: &talos::Requirements,
    d: &str,
    flags: &Flags<'_>,
    out: &mut Vec<Problem>,
) {
    let natives = native_drivers(ctx.gpu.vendor);
    if let Some(m) = ctx.module(d).filter(|m| !m.is_usable()) {
        out.push(problem(Cause::ModuleUnusable {
            module: d.to_owned(),
            state: m.state.to_string(),
        }));
    }
    let missing: Vec<&str> = req
        .modules
        .iter()
        .copied()
        .filter(|m| *m != d && !natives.contains(m) && !ctx.usable(m))
        .filter(|m| !(flags.missing_mei && m.starts_with("mei")))
        .collect();
    if !missing.is_empty() {
        out.push(modules_missing(ctx, req, &missing, true));
    }
}

/// Not bound although the driver module is live: explain the failed probe (wrong NVIDIA
/// flavour, missing or unreadable firmware), else say it is not bound.
fn live_unbound_checks(
    ctx: &Ctx<'_>,
    req: &talos::Requirements,
    driver_module: &str,
    flags: &Flags<'_>,
    out: &mut Vec<Problem>,
) {
    let mut explained = flags.nvidia_flavor;
    // A GPU the loaded driver cannot support at all needs no firmware verdict on top.
    let needs = if explained {
        Vec::new()
    } else {
        firmware_needs(ctx, req)
    };
    for need in needs {
        match firmware_present(ctx, &need) {
            Ok(true) => {}
            Ok(false) => {
                out.push(firmware_missing(ctx, &need));
                explained = true;
            }
            Err(error) => {
                out.push(problem(Cause::FirmwareUnreadable {
                    driver: driver_module.to_owned(),
                    error,
                }));
                explained = true;
            }
        }
    }
    if !explained {
        out.push(problem(Cause::DriverNotBound {
            driver: driver_module.to_owned(),
            address: ctx.gpu.pci_address.to_string(),
            on_talos: ctx.on_talos,
            reason: not_bound_reason(ctx, driver_module),
        }));
    }
}

/// Not bound and the driver module not live: the missing driver extension, else the modules
/// that are not loaded (unless an earlier check already said why).
fn unbound_driver_checks(
    ctx: &Ctx<'_>,
    req: &talos::Requirements,
    driver_module: &str,
    flags: &Flags<'_>,
    out: &mut Vec<Problem>,
) {
    if flags.nvidia_flavor {
        // Reported by the coherence check: wrong flavour or branch for this GPU.
    } else if let Some(need) = flags.missing_driver_ext {
        out.push(problem(Cause::DriverExtensionMissing {
            what: if ctx.gpu.vendor == Vendor::Nvidia {
                "NVIDIA kernel-module".to_owned()
            } else {
                need.accepted
                    .first()
                    .copied()
                    .unwrap_or(driver_module)
                    .to_owned()
            },
            installed: ctx.installed_names(),
            module: driver_module.to_owned(),
            add: need.suggest.clone(),
        }));
    } else if flags.stale_driver_ext {
        // Reported by the extension checks: its modules do not match the running kernel.
    } else {
        let missing: Vec<&str> = req
            .modules
            .iter()
            .copied()
            .filter(|m| !ctx.usable(m))
            .filter(|m| !(flags.missing_mei && m.starts_with("mei")))
            .collect();
        out.push(modules_missing(ctx, req, &missing, false));
    }
}

fn modules_missing(
    ctx: &Ctx<'_>,
    req: &talos::Requirements,
    missing: &[&str],
    bound: bool,
) -> Problem {
    let fix = if ctx.on_talos && ctx.talos.is_none() {
        ModulesFix::TalosUnknown
    } else if ctx.talos.is_some() && !req.autoload {
        ModulesFix::MachineConfig
    } else if ctx.talos.is_some() && req.builtin_driver {
        ModulesFix::BaseImage
    } else if ctx.talos.is_some() {
        ModulesFix::ExtensionInstalled
    } else {
        ModulesFix::Modprobe
    };
    problem(Cause::ModulesNotLoaded {
        modules: owned(missing),
        bound,
        fix,
        config: None,
        open_alpha: ctx.gpu.vendor == Vendor::Nvidia && nvidia::open_alpha(ctx),
    })
}

fn not_bound_reason(ctx: &Ctx<'_>, module: &str) -> NotBound {
    let gpu = ctx.gpu;
    if gpu.vendor == Vendor::Intel && module == "xe" && !ctx.on_talos {
        return NotBound::XeForceProbe {
            model: gpu.model.clone(),
            device_id: gpu
                .device_id
                .map_or_else(|| "<device id>".to_owned(), |d| format!("{d:04x}")),
        };
    }
    if gpu.vendor == Vendor::Nvidia && nvidia::open_alpha(ctx) {
        return NotBound::OpenAlpha {
            version: nvidia::running_version(ctx).unwrap_or_default(),
        };
    }
    NotBound::Probe
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
    let files = format!("{}/{}*", need.subdir, need.prefix);
    let driver = ctx
        .gpu
        .driver
        .as_deref()
        .unwrap_or_else(|| native_drivers(ctx.gpu.vendor)[0])
        .to_owned();
    let fix = if let Some(ver) = need.subdir.strip_prefix("nvidia/") {
        // Open modules load GSP firmware of exactly their own version.
        if ctx.on_talos {
            let branch = ctx
                .installed_any(talos::NVIDIA_KMODS)
                .and_then(|k| talos::nvidia_branch(&k.name))
                .unwrap_or("production");
            FirmwareFix::NvidiaGspExtension {
                version: ver.to_owned(),
                extension: talos::siderolabs(&format!("nvidia-container-toolkit-{branch}")),
            }
        } else {
            FirmwareFix::NvidiaGspPackage {
                version: ver.to_owned(),
            }
        }
    } else {
        match (&need.shipped_by, ctx.talos) {
            (None, _) if ctx.on_talos => FirmwareFix::ExtensionsUnknown { files },
            (Some(ext), Some(running)) => {
                match ctx.exts.and_then(|x| x.iter().find(|e| &e.name == ext)) {
                    None => FirmwareFix::AddExtension {
                        extension: talos::siderolabs(ext),
                    },
                    Some(e) => FirmwareFix::UpgradeExtension {
                        extension: ext.clone(),
                        version: e.version.clone(),
                        files,
                        running: running.to_string(),
                    },
                }
            }
            _ => FirmwareFix::LinuxFirmware { files },
        }
    };
    problem(Cause::FirmwareMissing {
        driver,
        pattern,
        fix,
    })
}

#[cfg(test)]
mod tests;
