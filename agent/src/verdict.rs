//! Driver-stack verdicts per GPU (SPEC §5), each non-`ok` one with a one-line fix.
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
use crate::talos::{self, ExtensionNeed, FirmwareNeed, Flavor, GpuFacts, Need, Role, TalosVersion};

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
    /// Running Talos version (`None` off Talos or when unparsable).
    talos: Option<TalosVersion>,
    /// Installed extensions (`None` off Talos or when unreadable).
    exts: Option<&'a [Extension]>,
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
        talos::firmware_dir(self.talos)
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
    let (talos, exts) = match state {
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
            (
                *version,
                extensions.as_deref().filter(|_| version.is_some()),
            )
        }
    };
    let ctx = Ctx {
        root,
        host,
        ev,
        gpu,
        talos,
        exts,
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
    // Talos version unknown: judge like a plain host (kernel checks only).
    let table_version = ctx.talos.filter(|_| ctx.exts.is_some());
    let req = match talos::requirements(table_version, &facts) {
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

fn toolkit_missing(ctx: &Ctx<'_>, need: &ExtensionNeed) -> Problem {
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

fn modules_missing(
    ctx: &Ctx<'_>,
    req: &talos::Requirements,
    missing: &[&str],
    lead: &str,
) -> Problem {
    let list = missing.join(", ");
    let hint = if ctx.talos.is_some() && !req.autoload {
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
    let log = if ctx.talos.is_some() {
        "talosctl dmesg"
    } else {
        "dmesg"
    };
    if gpu.vendor == Vendor::Intel && module == "xe" && ctx.talos.is_none() {
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
        let hint = if ctx.talos.is_some() {
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

/// NVIDIA version and flavour coherence: kernel-module extension vs container toolkit vs
/// loaded module vs NVML; open vs proprietary; Blackwell needs open modules of branch ≥ 570.
/// Returns true when it reported a flavour/branch problem that explains an unbound device.
fn nvidia_coherence(ctx: &Ctx<'_>, out: &mut Vec<Problem>) -> bool {
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
        } else if ctx.talos.is_some() {
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
        let hint = if ctx.talos.is_some() {
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
            if ctx.talos.is_some() {
                "switch to siderolabs/nvidia-open-gpu-kernel-modules-production and siderolabs/nvidia-container-toolkit-production in the schematic and upgrade".to_owned()
            } else {
                format!("install the NVIDIA open driver {}+", talos::BLACKWELL_MIN_DRIVER_MAJOR)
            },
        ));
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelSource, ModuleState, NvidiaInfo, PcieLink, TalosInfo, Unread};

    fn ext(name: &str, version: &str) -> Extension {
        Extension {
            name: name.into(),
            version: version.into(),
        }
    }

    fn host(talos: Option<(&str, Vec<Extension>)>, modules: &[(&str, &str)]) -> Host {
        Host {
            kernel: Some(
                if talos.is_some() {
                    "6.12.57-talos"
                } else {
                    "6.8.0-49-generic"
                }
                .into(),
            ),
            os: None,
            talos: talos.map(|(v, e)| TalosInfo {
                version: v.into(),
                extensions: e,
            }),
            modules: modules
                .iter()
                .map(|(n, s)| ModuleState {
                    name: (*n).into(),
                    state: (*s).into(),
                    version: None,
                    taint: None,
                })
                .collect(),
            unread: Vec::new(),
        }
    }

    fn nvidia_gpu(device_id: &str, driver: Option<&str>, module: Option<(&str, &str)>) -> Gpu {
        Gpu {
            pci_address: "0000:01:00.0".into(),
            vendor: Vendor::Nvidia,
            vendor_id: "0x10de".into(),
            device_id: device_id.into(),
            subsystem_vendor_id: None,
            subsystem_device_id: None,
            class: "0x030000".into(),
            revision: None,
            model: "GeForce RTX".into(),
            model_source: ModelSource::PciIds,
            driver: driver.map(Into::into),
            card: None,
            render: None,
            numa_node: None,
            memory_bytes: None,
            pcie: PcieLink::default(),
            sriov: None,
            amd: None,
            nvidia: Some(NvidiaInfo {
                kernel_module_flavor: module.map(|m| m.0.to_owned()),
                kernel_module_version: module.map(|m| m.1.to_owned()),
                ..NvidiaInfo::default()
            }),
            intel: None,
            status: Status::Ok,
            problems: Vec::new(),
            unread: Vec::new(),
        }
    }

    const ALL_NV: &[(&str, &str)] = &[
        ("nvidia", "live"),
        ("nvidia_uvm", "live"),
        ("nvidia_drm", "live"),
        ("nvidia_modeset", "live"),
    ];

    fn run(host: &Host, gpu: Gpu, ev: &Evidence) -> Gpu {
        let t = tempfile::tempdir().unwrap();
        let root = HostRoot::new(t.path()).unwrap();
        let mut gpus = [gpu];
        assess(&root, host, &mut gpus, ev);
        let [g] = gpus;
        g
    }

    #[test]
    fn node_metadata_keeps_only_talos_extension_keys() {
        let e = extensions_from_node_metadata([
            ("extensions.talos.dev/amdgpu", "20251021-v1.11.5"),
            ("extensions.talos.dev/siderolabs/mei", "v1.11.5"),
            ("extensions.talos.dev/schematic", "3765..."),
            ("extensions.talos.dev/modules.dep", "6.12.57-talos"),
            ("extensions.talos.dev/", "x"),
            ("extensions.talos.dev/amdgpu", "duplicate"),
            ("feature.node.kubernetes.io/pci-0300_1002.present", "true"),
        ]);
        assert_eq!(
            e,
            vec![ext("amdgpu", "20251021-v1.11.5"), ext("mei", "v1.11.5")]
        );
    }

    #[test]
    fn node_entries_win_and_the_file_fills_gaps() {
        let h = host(
            Some((
                "v1.11.5",
                vec![ext("amd-ucode", "20251021"), ext("amdgpu", "old")],
            )),
            &[],
        );
        let none = Evidence::default();
        assert_eq!(effective_extensions(&h, &none).unwrap().len(), 2);
        let ev = Evidence {
            node_extensions: Some(vec![ext("amdgpu", "20251021-v1.11.5")]),
            nvml: None,
        };
        assert_eq!(
            effective_extensions(&h, &ev).unwrap(),
            vec![
                ext("amd-ucode", "20251021"),
                ext("amdgpu", "20251021-v1.11.5")
            ]
        );
        // An unreadable file without Node labels: unknown.
        let mut broken = h.clone();
        broken.unread.push(Unread {
            path: "/etc/extensions.yaml".into(),
            error: "permission denied".into(),
        });
        assert_eq!(effective_extensions(&broken, &none), None);
        assert_eq!(effective_extensions(&broken, &ev).unwrap().len(), 1);
        // Not Talos: no extension list at all.
        assert_eq!(effective_extensions(&host(None, &[]), &ev), None);
    }

    #[test]
    fn legacy_unsuffixed_nvidia_names_are_accepted() {
        let h = host(
            Some((
                "v1.7.6",
                vec![
                    ext("nonfree-kmod-nvidia", "535.161.08-v1.7.6"),
                    ext("nvidia-container-toolkit", "535.161.08-v1.14.6"),
                ],
            )),
            ALL_NV,
        );
        let g = run(
            &h,
            nvidia_gpu(
                "0x2684",
                Some("nvidia"),
                Some(("proprietary", "535.161.08")),
            ),
            &Evidence::default(),
        );
        assert_eq!(g.status, Status::Ok, "{:#?}", g.problems);
    }

    #[test]
    fn a_stale_record_of_a_working_driver_is_not_a_problem() {
        // Kernel first: the module is live and bound, so a suffix for another Talos build is
        // not reported (it could not have loaded if it did not match).
        let h = host(
            Some((
                "v1.11.5",
                vec![
                    ext("nonfree-kmod-nvidia-production", "570.172.08-v1.11.4"),
                    ext("nvidia-container-toolkit-production", "570.172.08-v1.17.8"),
                ],
            )),
            ALL_NV,
        );
        let g = run(
            &h,
            nvidia_gpu(
                "0x2684",
                Some("nvidia"),
                Some(("proprietary", "570.172.08")),
            ),
            &Evidence::default(),
        );
        assert_eq!(g.status, Status::Ok, "{:#?}", g.problems);
        let unbound = run(&h, nvidia_gpu("0x2684", None, None), &Evidence::default());
        assert_eq!(unbound.status, Status::ExtensionVersionMismatch);
        assert!(
            unbound.problems[0]
                .detail
                .contains("built for Talos v1.11.4")
        );
    }

    #[test]
    fn bound_nvidia_missing_helper_modules_and_flavour_mismatch() {
        let h = host(
            Some((
                "v1.11.5",
                vec![
                    ext(
                        "nvidia-open-gpu-kernel-modules-production",
                        "570.172.08-v1.11.5",
                    ),
                    ext("nvidia-container-toolkit-production", "570.172.08-v1.17.8"),
                ],
            )),
            &[("nvidia", "live")],
        );
        let g = run(
            &h,
            nvidia_gpu(
                "0x2684",
                Some("nvidia"),
                Some(("proprietary", "570.172.08")),
            ),
            &Evidence::default(),
        );
        let statuses: Vec<Status> = g.problems.iter().map(|p| p.status).collect();
        assert_eq!(
            statuses,
            [Status::DriverVersionMismatch, Status::ModuleNotLoaded],
            "{:#?}",
            g.problems
        );
        assert!(g.problems[0].detail.contains("is open"));
        assert!(
            g.problems[1]
                .hint
                .contains("nvidia_uvm, nvidia_drm, nvidia_modeset to machine.kernel.modules")
        );
    }

    #[test]
    fn blackwell_before_v1_10_is_unsupported_and_lts_is_too_old() {
        let h = host(Some(("v1.9.6", vec![])), &[]);
        let g = run(&h, nvidia_gpu("0x2b85", None, None), &Evidence::default());
        assert_eq!(g.status, Status::UnsupportedByTalosVersion);
        let h = host(
            Some((
                "v1.11.5",
                vec![
                    ext("nvidia-open-gpu-kernel-modules-lts", "535.247.01-v1.11.5"),
                    ext("nvidia-container-toolkit-lts", "535.247.01-v1.17.8"),
                ],
            )),
            ALL_NV,
        );
        let g = run(
            &h,
            nvidia_gpu("0x2b85", None, Some(("open", "535.247.01"))),
            &Evidence::default(),
        );
        assert_eq!(g.status, Status::DriverVersionMismatch, "{:#?}", g.problems);
        assert!(g.problems[0].detail.contains("branch 535"));
        assert_eq!(g.problems.len(), 1, "{:#?}", g.problems);
    }

    #[test]
    fn an_unparsable_talos_version_is_unknown_but_kernel_checks_run() {
        let h = host(Some(("unknown", vec![])), &[]);
        let g = run(&h, nvidia_gpu("0x2684", None, None), &Evidence::default());
        let statuses: Vec<Status> = g.problems.iter().map(|p| p.status).collect();
        assert_eq!(statuses, [Status::Unknown, Status::ModuleNotLoaded]);
        assert_eq!(g.status, Status::Unknown);
    }

    #[test]
    fn non_talos_hosts_get_kernel_checks_only() {
        let h = host(None, &[]);
        let g = run(&h, nvidia_gpu("0x2684", None, None), &Evidence::default());
        assert_eq!(g.status, Status::ModuleNotLoaded);
        assert!(g.problems[0].hint.contains("modprobe nvidia"));
        let h = host(None, &[("nvidia", "live")]);
        let g = run(
            &h,
            nvidia_gpu("0x2684", Some("nvidia"), Some(("open", "580.95.05"))),
            &Evidence::default(),
        );
        assert_eq!(
            g.status,
            Status::Ok,
            "no extension or machine-config checks off Talos"
        );
        let g = run(
            &h,
            nvidia_gpu("0x2684", Some("nouveau"), None),
            &Evidence::default(),
        );
        assert_eq!(g.status, Status::BoundToOtherDriver);
        assert!(g.problems[0].hint.contains("blacklist nouveau"));
    }

    #[test]
    fn nvidia_without_any_extension_on_talos() {
        let h = host(Some(("v1.11.5", vec![])), &[]);
        let g = run(&h, nvidia_gpu("0x2684", None, None), &Evidence::default());
        let statuses: Vec<Status> = g.problems.iter().map(|p| p.status).collect();
        assert_eq!(
            statuses,
            [Status::ExtensionMissing, Status::ExtensionMissing]
        );
        assert!(
            g.problems[0]
                .hint
                .contains("siderolabs/nvidia-container-toolkit-production")
        );
        assert!(
            g.problems[1]
                .detail
                .contains("no NVIDIA kernel-module extension")
        );
        assert!(g.problems[1].hint.contains(
            "siderolabs/nvidia-open-gpu-kernel-modules-production (or siderolabs/nonfree-kmod-nvidia-production)"
        ));
    }

    #[test]
    fn problem_lines_are_single_lines() {
        let g = nvidia_gpu("0x2684", None, None);
        let p = problem(Status::ModuleNotLoaded, "d", "h");
        assert_eq!(
            problem_line(&g, &p),
            "0000:01:00.0 nvidia module-not-loaded: d; fix: h"
        );
    }
}
