//! One discovery pass: host facts, PCI GPUs, vendor enrichment, verdicts and labels.
//!
//! ```text
//!  caller ──► Evidence (Node extensions, NVML source or readings, Talos API facts)
//!                 │
//!  HostRoot ──► scan: host::read, pci::scan, vendors::{amd,nvidia,intel}, KFD, NVSwitches
//!                 │
//!             enrich: NVML readings merged into NVIDIA GPUs (asked only when PCI shows one)
//!                 │
//!             verdicts: verdict::assess, device-id check, talosapi::refine
//!                 │
//!             labels ──► Report
//! ```
//!
//! Every step runs exactly once per pass. The one-shot commands, `serve`'s discovery loop,
//! `capture` and `host-paths --audit` all call [`discover`]; they differ only in the
//! [`Evidence`] they build, which keeps the daemon's report equal to the one-shot's.

use crate::hostroot::HostRoot;
use crate::labels::{self, LabelConfig};
use crate::model::{Extension, Gpu, Host, Report, Vendor};
use crate::names;
use crate::nvml::{NvmlFacts, NvmlHandle, NvmlSnapshot};
use crate::pci::{self, PciGpu};
use crate::talosapi::TalosApiFacts;
use crate::vendors::{amd, intel, nvidia};
use crate::verdict;
use std::sync::Arc;

/// How a pass is configured (flags), as opposed to what it learns ([`Evidence`]).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub labels: LabelConfig,
    /// The Kubernetes Node name for the report (`--node-name`, env `NODE_NAME`); without it the
    /// report names the host by its hostname.
    pub node_name: Option<String>,
}

/// What a pass learns outside the host filesystem, built by the caller. Empty by default (no
/// Node, no NVML, no Talos API).
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Extensions Talos publishes on this Node (`extensions.talos.dev/*` labels/annotations,
    /// see [`verdict::extensions_from_node_metadata`]); `None` when the Node was not read.
    pub node_extensions: Option<Vec<Extension>>,
    /// Where NVML readings and driver facts come from.
    pub nvml: NvmlEvidence,
    /// What the Talos API says about this node (`--talos-api`).
    pub talos: Option<Arc<TalosApiFacts>>,
}

impl Evidence {
    /// Evidence with only an NVML source.
    pub fn with_nvml(handle: NvmlHandle) -> Self {
        Self {
            nvml: NvmlEvidence::Source(handle),
            ..Self::default()
        }
    }
}

/// NVML's part of the [`Evidence`].
#[derive(Debug, Clone, Default)]
pub enum NvmlEvidence {
    /// NVML not used.
    #[default]
    None,
    /// Ask this source, only when the pass's own PCI scan shows an NVIDIA GPU (blocking,
    /// bounded by the NVML deadlines): readings for the GPUs, facts for the verdicts.
    Source(NvmlHandle),
    /// Readings and facts already taken (tests, replays); used whatever the PCI scan shows.
    Taken {
        readings: Option<Arc<NvmlSnapshot>>,
        facts: Option<NvmlFacts>,
    },
}

/// Run one discovery pass: scan, enrich, verdicts, labels, each once. Never fails: unreadable
/// input is recorded in the report. Blocking (NVML calls are bounded by their deadlines): run
/// it on a blocking thread inside async code.
pub fn discover(root: &HostRoot, opts: &Options, ev: &Evidence) -> Report {
    let (mut host, mut gpus) = scan(root);
    let facts = enrich(&mut host, &mut gpus, &ev.nvml);
    judge(root, &mut host, &mut gpus, ev, facts);
    let labels = labels::compute(&host, &gpus, &opts.labels);
    let mut report = Report::new(host, gpus, labels);
    report.node = opts
        .node_name
        .clone()
        .or_else(|| crate::host::hostname(root));
    report.generated_at = Some(crate::model::now_rfc3339());
    crate::textcap::cap_report(&mut report);
    report
}

/// The host filesystem: host facts and every GPU with its vendor details.
fn scan(root: &HostRoot) -> (Host, Vec<Gpu>) {
    let mut host = crate::host::read(root);
    let (pci_gpus, pci_unread) = pci::scan(root);
    host.unread.extend(pci_unread);
    let (kfd, kfd_unread) = if pci_gpus.iter().any(|g| g.vendor == Vendor::Amd) {
        amd::read_kfd_with_errors(root)
    } else {
        Default::default()
    };
    let has_nvidia = pci_gpus.iter().any(|g| g.vendor == Vendor::Nvidia);
    let nv_module = if has_nvidia {
        nvidia::read_kernel_module(root)
    } else {
        None
    };
    if has_nvidia {
        host.nvswitches = crate::vendors::nvswitch::scan(root);
    }
    let mut gpus: Vec<Gpu> = pci_gpus
        .into_iter()
        .map(|p| build_gpu(root, p, &kfd, nv_module.as_ref()))
        .collect();
    // A KFD node that could not be read may be any AMD GPU's: each GPU left without its node
    // lists it (so its gfx target, CU count and labels are known to be unread, not absent).
    for g in gpus
        .iter_mut()
        .filter(|g| g.amd.as_ref().is_some_and(|a| a.kfd_node.is_none()))
    {
        g.unread.extend(kfd_unread.iter().cloned());
    }
    (host, gpus)
}

/// Merge NVML readings into the GPUs (disagreements with the kernel recorded); returns NVML's
/// driver facts for the verdicts. A source is asked only when PCI shows an NVIDIA GPU.
fn enrich(host: &mut Host, gpus: &mut [Gpu], nvml: &NvmlEvidence) -> Option<NvmlFacts> {
    let (readings, facts) = match nvml {
        NvmlEvidence::None => return None,
        NvmlEvidence::Source(h) => {
            if !gpus.iter().any(|g| g.vendor == Vendor::Nvidia) {
                return None;
            }
            (h.snapshot_blocking().ok(), h.facts())
        }
        NvmlEvidence::Taken { readings, facts } => (readings.clone(), facts.clone()),
    };
    if let Some(snap) = &readings {
        for d in crate::nvml::enrich::apply(gpus, snap) {
            let gpu = gpus.iter_mut().find(|g| g.pci_address == d.gpu);
            let d = crate::model::Disagreement {
                gpu: d.gpu.to_string(),
                source: "nvml".to_owned(),
                field: d.field.to_owned(),
                kernel: d.kernel,
                library: d.nvml,
            };
            match gpu {
                Some(g) if d.kernel.is_some() => g.disagreements.push(d),
                _ => host.disagreements.push(d),
            }
        }
    }
    facts
}

/// The verdicts: Node extensions (or the Talos API's list where the Node said nothing) and
/// NVML facts into [`verdict::assess`], the device-id check, then the Talos API refinements.
fn judge(
    root: &HostRoot,
    host: &mut Host,
    gpus: &mut [Gpu],
    ev: &Evidence,
    nvml: Option<NvmlFacts>,
) {
    let inputs = verdict::Inputs {
        node_extensions: ev
            .node_extensions
            .clone()
            .or_else(|| ev.talos.as_ref().map(|f| f.extensions.clone())),
        nvml,
    };
    // The report shows the extension list the verdicts used (Node entries win over the file).
    if let Some(exts) = verdict::effective_extensions(host, &inputs)
        && let Some(t) = host.talos.as_mut()
    {
        t.extensions = exts;
    }
    verdict::assess(root, host, gpus, &inputs);
    for g in gpus.iter_mut() {
        identity_problem(g);
    }
    if let Some(f) = &ev.talos {
        crate::talosapi::refine(f, host, gpus);
    }
}

/// A GPU whose PCI device id could not be read is `unknown`: which driver, extension and
/// firmware it needs all depend on the id. It stays in the report (a transient sysfs error must
/// not make a GPU vanish); the failed read is in its `unread` list.
fn identity_problem(g: &mut Gpu) {
    if g.device_id.is_some() {
        return;
    }
    let (path, error) = g
        .unread
        .iter()
        .find(|u| u.path.ends_with("/device"))
        .map(|u| (u.path.clone(), u.error.clone()))
        .unwrap_or_else(|| {
            (
                format!("/sys/bus/pci/devices/{}/device", g.pci_address),
                "unreadable".to_owned(),
            )
        });
    g.problems.push(crate::model::Problem::new(
        crate::cause::Cause::DeviceIdUnreadable { path, error },
    ));
    g.settle_status();
}

fn build_gpu(
    root: &HostRoot,
    p: PciGpu,
    kfd: &[amd::KfdNode],
    nv_module: Option<&nvidia::KernelModule>,
) -> Gpu {
    let mut unread = p.unread.clone();
    let (mut amd_info, mut nv_info, mut intel_info) = (None, None, None);
    let mut vendor_model = None;
    let mut memory_bytes = None;
    match p.vendor {
        Vendor::Amd => {
            let (info, product, u) = amd::read(root, &p, kfd);
            unread.extend(u);
            memory_bytes = info.vram_bytes;
            vendor_model = product;
            amd_info = Some(info);
        }
        Vendor::Nvidia => {
            let (info, model) = nvidia::read(root, &p, nv_module);
            vendor_model = model;
            nv_info = Some(info);
        }
        Vendor::Intel => intel_info = Some(p.device_id.map(intel::classify).unwrap_or_default()),
    }
    let (model, model_source) = names::model_name(
        p.vendor,
        p.vendor_id,
        p.device_id,
        p.revision,
        vendor_model.as_deref(),
    );
    Gpu {
        pci_address: p.address,
        vendor: p.vendor,
        vendor_id: p.vendor_id,
        device_id: p.device_id,
        subsystem_vendor_id: p.subsystem_vendor_id,
        subsystem_device_id: p.subsystem_device_id,
        class: p.class,
        revision: p.revision,
        model,
        model_source,
        driver: p.driver,
        card: p.card,
        render: p.render,
        numa_node: p.numa_node,
        memory_bytes,
        pcie: p.link,
        sriov: p.sriov,
        amd: amd_info,
        nvidia: nv_info,
        intel: intel_info,
        status: Default::default(),
        problems: Vec::new(),
        unread,
        disagreements: Vec::new(),
        driver_link_error: p.driver_error,
    }
}
