//! One discovery pass: host facts, PCI GPUs, vendor enrichment, verdicts and labels.
//!
//! ```text
//!  HostRoot ──► host::read ──────────────┐
//!      │                                 ▼
//!      ├──► pci::scan ──► vendors::{amd,nvidia,intel} ──► Gpu ──► verdict ──► labels ──► Report
//!      └──► amd::read_kfd / nvidia::read_kernel_module (once per pass)
//! ```

use crate::hostroot::HostRoot;
use crate::labels::{self, LabelConfig};
use crate::model::{Gpu, Report, Vendor};
use crate::names;
use crate::pci::{self, PciGpu};
use crate::vendors::{amd, intel, nvidia};
use crate::verdict::{self, Evidence};

/// What a pass needs besides the host root.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub labels: LabelConfig,
    /// What a daemon learned outside the host filesystem (Node labels, NVML); empty for the
    /// one-shot commands.
    pub evidence: Evidence,
    /// NVML readings to merge into NVIDIA GPUs (taken by the caller, off this thread).
    pub nvml: Option<std::sync::Arc<crate::nvml::NvmlSnapshot>>,
    /// The NVML source to ask when `nvml` is not given and PCI shows an NVIDIA GPU (blocking,
    /// bounded by the NVML deadlines): readings for the GPUs, versions for the verdicts.
    pub nvml_source: Option<crate::nvml::NvmlHandle>,
    /// The Kubernetes Node name for the report (`--node-name`, env `NODE_NAME`); without it the
    /// report names the host by its hostname.
    pub node_name: Option<String>,
}

/// Run one discovery pass. Never fails: unreadable input is recorded in the report.
pub fn discover(root: &HostRoot, opts: &Options) -> Report {
    let mut host = crate::host::read(root);
    let (pci_gpus, pci_unread) = pci::scan(root);
    host.unread.extend(pci_unread);
    let kfd = if pci_gpus.iter().any(|g| g.vendor == Vendor::Amd) {
        amd::read_kfd(root)
    } else {
        Vec::new()
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
    // NVML only where this pass's own PCI scan shows an NVIDIA GPU.
    let mut evidence = std::borrow::Cow::Borrowed(&opts.evidence);
    let mut nvml_snap = opts.nvml.clone();
    if nvml_snap.is_none()
        && has_nvidia
        && let Some(h) = &opts.nvml_source
    {
        nvml_snap = h.snapshot_blocking().ok();
        evidence.to_mut().nvml = h.facts();
    }
    let mut gpus: Vec<Gpu> = pci_gpus
        .into_iter()
        .map(|p| build_gpu(root, p, &kfd, nv_module.as_ref()))
        .collect();
    if let Some(snap) = &nvml_snap {
        for d in crate::nvml::enrich::apply(&mut gpus, snap) {
            let d = crate::model::Disagreement {
                gpu: d.gpu,
                source: "nvml".to_owned(),
                field: d.field.to_owned(),
                kernel: d.kernel,
                library: d.nvml,
            };
            match gpus.iter_mut().find(|g| g.pci_address == d.gpu) {
                Some(g) if d.kernel.is_some() => g.disagreements.push(d),
                _ => host.disagreements.push(d),
            }
        }
    }
    // The report shows the extension list the verdicts used (Node entries win over the file).
    if let Some(exts) = verdict::effective_extensions(&host, &evidence)
        && let Some(t) = host.talos.as_mut()
    {
        t.extensions = exts;
    }
    verdict::assess(root, &host, &mut gpus, &evidence);
    let labels = labels::compute(&host, &gpus, &opts.labels);
    let mut report = Report::new(host, gpus, labels);
    report.node = opts
        .node_name
        .clone()
        .or_else(|| crate::host::hostname(root));
    report.generated_at = Some(crate::model::now_rfc3339());
    report
}

fn hex4(v: u16) -> String {
    format!("{v:#06x}")
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
        Vendor::Intel => intel_info = Some(intel::classify(p.device_id)),
    }
    let (model, model_source) = names::model_name(
        p.vendor,
        p.vendor_id,
        p.device_id,
        p.revision,
        vendor_model.as_deref(),
    );
    Gpu {
        pci_address: p.address.to_string(),
        vendor: p.vendor,
        vendor_id: hex4(p.vendor_id),
        device_id: hex4(p.device_id),
        subsystem_vendor_id: p.subsystem_vendor_id.map(hex4),
        subsystem_device_id: p.subsystem_device_id.map(hex4),
        class: format!("{:#08x}", p.class),
        revision: p.revision.map(|r| format!("{r:#04x}")),
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

/// Evidence gathered outside the host filesystem for one pass.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Extensions Talos publishes on this Node (`extensions.talos.dev/*` labels/annotations).
    pub node_extensions: Option<Vec<crate::model::Extension>>,
    /// What the Talos API says about this node (`--talos-api`).
    pub talos: Option<std::sync::Arc<crate::talosapi::TalosApiFacts>>,
    /// The NVML source: readings and version facts, taken only when PCI shows an NVIDIA GPU.
    pub nvml: Option<crate::nvml::NvmlHandle>,
}

/// A discovery pass with the extra evidence applied: Node labels first, then the Talos API's
/// extension list where the Node said nothing, NVML readings and facts, then the Talos API
/// refinements, then labels. The one-shot commands and the daemon both run exactly this.
/// Blocking (NVML calls are bounded by their deadlines): run it on a blocking thread.
pub fn discover_with(root: &HostRoot, opts: &Options, extras: &Extras) -> Report {
    let mut opts = opts.clone();
    if extras.nvml.is_some() {
        opts.nvml_source = extras.nvml.clone();
    }
    if let Some(n) = &extras.node_extensions {
        opts.evidence.node_extensions = Some(n.clone());
    }
    if let Some(f) = &extras.talos {
        opts.evidence
            .node_extensions
            .get_or_insert_with(|| f.extensions.clone());
    }
    let mut report = discover(root, &opts);
    if let Some(f) = &extras.talos {
        crate::talosapi::refine(f, &report.host, &mut report.gpus);
        report.labels = labels::compute(&report.host, &report.gpus, &opts.labels);
    }
    report
}
