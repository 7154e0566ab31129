//! Who uses each GPU: device-plugin allocations from the kubelet and per-process usage
//! attributed to pods, for AMD, Intel and NVIDIA. Two metrics sources, which `serve` adds
//! (`serve::wire_pods`) as [`PodsConfig`] says:
//!
//! ```text
//!  podresources ── kubelet.sock (List, GetAllocatableResources) ── devids ──► gpu_allocation_info
//!  processes ──── /proc scan (fdinfo, cgroup) ─┐
//!                 NVML per-process calls ──────┼─ usage (per client → per pod) ──► process_gpu_*
//!                 /var/log/pods, /var/log/containers (names) ──┘
//! ```
//!
//! Reads (all through [`HostRoot`]): `var/lib/kubelet/pod-resources/kubelet.sock`
//! ([`podresources`]), `proc/`, `proc/<pid>/{fd/,fdinfo/<fd>,cgroup}` ([`scan`]),
//! `var/log/pods/`, `var/log/containers/` ([`podnames`]), and for AMD partitions
//! `sys/devices/platform/amdgpu_xcp_<n>/drm/` with the KFD topology. A missing kubelet socket
//! means "not a Kubernetes node or not mounted": nothing is exported and the source succeeds.
//! A missing `/proc` fails the `processes` source. Names of pods come from the node itself,
//! never from the Kubernetes API, so neither source needs RBAC. Full description, PromQL joins
//! and chart settings: `docs/POD-ATTRIBUTION.md`.

pub mod cgroup;
pub mod devids;
pub mod fdinfo;
pub mod nvidia;
pub mod podnames;
pub mod podresources;
pub mod scan;
pub mod usage;

use crate::hostroot::HostRoot;
use crate::lock::lock;
use crate::logonce::LogOnce;
use crate::metrics::families::{Desc, Kind};
use crate::metrics::{Errors, ScrapeContext, Sink, Source, SourceError};
use crate::model::Vendor;
use crate::nvml::NvmlHandle;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub static ALLOCATION_INFO: Desc = Desc {
    name: "gpu_allocation_info",
    help: "A device-plugin device of this GPU assigned to a container, from the kubelet's PodResources API; always 1.",
    kind: Kind::Gauge,
};
pub static ALLOCATABLE: Desc = Desc {
    name: "gpu_allocatable_devices",
    help: "Device ids of this GPU the kubelet can allocate, by resource (more than 1 with time-slicing replicas or shares).",
    kind: Kind::Gauge,
};
pub static ALLOCATION_UNMATCHED: Desc = Desc {
    name: "gpu_allocation_unmatched_devices",
    help: "Device ids in the kubelet's answer that map to no GPU of this node, by reason (unknown_resource, unknown_id, dynamic_resource).",
    kind: Kind::Gauge,
};
pub static BUSY: Desc = Desc {
    name: "process_gpu_busy_seconds",
    help: "GPU engine busy time of the processes of a container (namespace=\"\", pod=\"host\": processes outside pods), from DRM fdinfo or NVML.",
    kind: Kind::Counter,
};
pub static MEMORY: Desc = Desc {
    name: "process_gpu_memory_bytes",
    help: "GPU memory resident for the processes of a container, by memory region, from DRM fdinfo or NVML.",
    kind: Kind::Gauge,
};
pub static SERIES_DROPPED: Desc = Desc {
    name: "process_gpu_series_dropped",
    help: "Per-pod GPU usage series not exported because --process-max-series was reached.",
    kind: Kind::Gauge,
};
pub static SCAN_ERRORS: Desc = Desc {
    name: "process_scan_errors",
    help: "Reads of /proc that failed during the per-process GPU scan, by reason (vanished is normal process churn).",
    kind: Kind::Counter,
};
pub static SCAN_PROCESSES: Desc = Desc {
    name: "process_scan_processes",
    help: "Processes listed in /proc by the last per-process GPU scan.",
    kind: Kind::Gauge,
};
pub static SCAN_PENDING: Desc = Desc {
    name: "process_scan_pending",
    help: "New processes the last scan did not reach before its deadline (read by the next one).",
    kind: Kind::Gauge,
};
pub static CLIENTS_UNMATCHED: Desc = Desc {
    name: "process_drm_clients_unmatched",
    help: "DRM clients seen that belong to no GPU of the report, by reason (no_pdev, not_a_gpu).",
    kind: Kind::Counter,
};

/// Settings of this feature (`--process-metrics`, `--process-max-series`, `--pod-resources`,
/// `--pod-resources-socket`).
#[derive(Debug, Clone)]
pub struct PodsConfig {
    /// Per-process GPU usage (DRM fdinfo, NVML) summed per pod.
    pub process_metrics: bool,
    /// Most per-process usage series; more are counted, not exported.
    pub process_max_series: u64,
    /// Device-plugin allocations from the kubelet's PodResources API.
    pub pod_resources: bool,
    /// The kubelet's PodResources socket, below the host root.
    pub pod_resources_socket: PathBuf,
}

impl Default for PodsConfig {
    fn default() -> Self {
        Self {
            process_metrics: true,
            process_max_series: 1000,
            pod_resources: true,
            pod_resources_socket: PathBuf::from(podresources::DEFAULT_SOCKET),
        }
    }
}

/// How long MIG UUIDs read from NVML are reused.
const MIG_CACHE: Duration = Duration::from_secs(60);

/// MIG device UUIDs per GPU, and when they were read.
type MigCache = (Instant, HashMap<String, Vec<String>>);

/// The `podresources` source: `gpuscout_gpu_allocation_info` and friends.
pub struct AllocationSource {
    socket: PathBuf,
    nvml: Option<NvmlHandle>,
    timeout: Duration,
    last_good: Mutex<Option<podresources::Allocations>>,
    mig: Mutex<Option<MigCache>>,
    said_absent: LogOnce<()>,
}

impl AllocationSource {
    pub fn new(socket: PathBuf, nvml: Option<NvmlHandle>, timeout: Duration) -> Self {
        Self {
            socket,
            nvml,
            timeout,
            last_good: Mutex::new(None),
            mig: Mutex::new(None),
            said_absent: LogOnce::new(),
        }
    }

    fn mig_uuids(&self) -> HashMap<String, Vec<String>> {
        let mut m = lock(&self.mig);
        if let Some((at, v)) = &*m
            && at.elapsed() < MIG_CACHE
        {
            return v.clone();
        }
        let Some(nvml) = &self.nvml else {
            return HashMap::new();
        };
        match nvidia::mig_uuids(nvml) {
            Ok(v) => {
                *m = Some((Instant::now(), v.clone()));
                v
            }
            Err(e) => {
                tracing::debug!(error = %e, "NVML MIG devices not read");
                HashMap::new()
            }
        }
    }
}

/// The PCI address of the GPU an AMD partition device (`amdgpu_xcp_<n>`) belongs to: its render
/// node, the KFD node with that render minor, that node's `domain` + `location_id`.
fn xcp_gpu(root: &HostRoot, gpus: &[devids::GpuIds], id: &str) -> Option<String> {
    let n = id.strip_prefix("amdgpu_xcp_")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let names = root
        .list_dir(format!("sys/devices/platform/{id}/drm"))
        .ok()?;
    let minor: u64 = names
        .iter()
        .find_map(|n| n.strip_prefix("renderD")?.parse().ok())?;
    let kfd = crate::vendors::amd::read_kfd(root);
    let node = kfd.iter().find(|k| k.drm_render_minor == Some(minor))?;
    let loc = node.location_id? & 0x0fff_fff8;
    let dom = node.domain.unwrap_or(0);
    gpus.iter()
        .filter(|g| g.vendor == Vendor::Amd)
        .find(|g| {
            g.gpu.parse::<crate::pci::PciAddress>().is_ok_and(|a| {
                u64::from(a.location_id()) & 0x0fff_fff8 == loc && u64::from(a.domain) == dom
            })
        })
        .map(|g| g.gpu.clone())
}

/// Map every device id of an answer; push the three families.
pub fn push_allocations(
    a: &podresources::Allocations,
    gpus: &[devids::GpuIds],
    xcp: &dyn Fn(&str) -> Option<String>,
    out: &mut Sink,
) {
    let mut unmatched: BTreeMap<&'static str, u64> = [
        ("unknown_resource", 0),
        ("unknown_id", 0),
        ("dynamic_resource", a.dynamic_devices as u64),
    ]
    .into_iter()
    .collect();
    let mut info: BTreeSet<[String; 6]> = BTreeSet::new();
    for s in &a.assigned {
        for id in &s.device_ids {
            match devids::map(&s.resource, id, gpus, xcp) {
                devids::Mapped::Gpus(v) => {
                    for (gpu, uuid) in v {
                        info.insert([
                            gpu,
                            uuid,
                            s.namespace.clone(),
                            s.pod.clone(),
                            s.container.clone(),
                            s.resource.clone(),
                        ]);
                    }
                }
                devids::Mapped::Unmatched(r) => *unmatched.entry(r).or_insert(0) += 1,
            }
        }
    }
    for [gpu, uuid, namespace, pod, container, resource] in info {
        out.push(
            &ALLOCATION_INFO,
            vec![
                ("gpu", gpu),
                ("uuid", uuid),
                ("namespace", namespace),
                ("pod", pod),
                ("container", container),
                ("resource", resource),
            ],
            1.0,
        );
    }
    let mut allocatable: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (resource, ids) in &a.allocatable {
        for id in ids {
            match devids::map(resource, id, gpus, xcp) {
                devids::Mapped::Gpus(v) => {
                    for (gpu, _) in v {
                        *allocatable.entry((gpu, resource.clone())).or_insert(0) += 1;
                    }
                }
                devids::Mapped::Unmatched(r) => *unmatched.entry(r).or_insert(0) += 1,
            }
        }
    }
    for ((gpu, resource), n) in allocatable {
        out.push(
            &ALLOCATABLE,
            vec![("gpu", gpu), ("resource", resource)],
            n as f64,
        );
    }
    for (reason, n) in unmatched {
        out.push(
            &ALLOCATION_UNMATCHED,
            vec![("reason", reason.to_owned())],
            n as f64,
        );
    }
}

impl Source for AllocationSource {
    fn name(&self) -> &'static str {
        "podresources"
    }

    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        let socket = match ctx.root.resolve(&self.socket) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => {
                if self.said_absent.first(()) {
                    tracing::info!(socket = %e.path(), "no kubelet PodResources socket: no GPU allocation series");
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.said_absent.clear();
        let fetched = match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(podresources::fetch(&socket.abs, self.timeout)),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SourceError::Library(e.to_string()))?
                .block_on(podresources::fetch(&socket.abs, self.timeout)),
        };
        let (alloc, result) = match fetched {
            Ok(a) => {
                *lock(&self.last_good) = Some(a.clone());
                (a, Ok(()))
            }
            Err(e) => {
                // keep serving what the kubelet said last; the source reports the failure
                let last = lock(&self.last_good).clone();
                let err = Err(SourceError::Library(format!("kubelet PodResources: {e}")));
                match last {
                    Some(a) => (a, err),
                    None => return err,
                }
            }
        };
        let mut gpus = devids::GpuIds::from_report(&ctx.report);
        let wants_mig = alloc
            .assigned
            .iter()
            .map(|s| (&s.resource, &s.device_ids))
            .chain(alloc.allocatable.iter().map(|(r, i)| (r, i)))
            .any(|(r, ids)| {
                r.starts_with("nvidia.com/") && ids.iter().any(|i| i.starts_with("MIG-"))
            });
        if wants_mig {
            let mig = self.mig_uuids();
            for g in &mut gpus {
                if let Some(u) = mig.get(&g.gpu) {
                    g.mig_uuids = u.clone();
                }
            }
        }
        let root = ctx.root.clone();
        let ids = gpus.clone();
        let xcp = move |id: &str| xcp_gpu(&root, &ids, id);
        push_allocations(&alloc, &gpus, &xcp, out);
        result
    }
}

struct ProcessState {
    scanner: scan::Scanner,
    accountant: usage::Accountant,
    errors: BTreeMap<&'static str, u64>,
}

/// The `processes` source: `gpuscout_process_gpu_busy_seconds_total`,
/// `gpuscout_process_gpu_memory_bytes` and the scan's health.
pub struct ProcessSource {
    nvml: Option<NvmlHandle>,
    budget: Duration,
    state: Mutex<ProcessState>,
}

impl ProcessSource {
    pub fn new(nvml: Option<NvmlHandle>, budget: Duration, max_series: usize) -> Self {
        Self {
            nvml,
            budget,
            state: Mutex::new(ProcessState {
                scanner: scan::Scanner::new(scan::ScanConfig::default()),
                accountant: usage::Accountant::new(max_series),
                errors: BTreeMap::new(),
            }),
        }
    }
}

impl Source for ProcessSource {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        let deadline = Instant::now() + self.budget;
        let mut errors = Errors::default();
        let index = match podnames::PodIndex::read(&ctx.root) {
            Ok(i) => i,
            Err(e) => {
                errors.note(SourceError::Read(e));
                podnames::PodIndex::default()
            }
        };
        let gpus: HashSet<String> = ctx
            .report
            .gpus
            .iter()
            .map(|g| g.pci_address.to_string())
            .collect();
        let mut st = lock(&self.state);
        let st = &mut *st;
        let scan = st.scanner.scan(&ctx.root, deadline)?;
        let now = Instant::now();
        st.accountant.apply_drm(&scan, &gpus, &index, now);
        for (reason, n) in &scan.stats.errors {
            *st.errors.entry(reason).or_insert(0) += n;
        }
        let nvidia: Vec<String> = ctx
            .report
            .gpus
            .iter()
            .filter(|g| g.vendor == Vendor::Nvidia)
            .map(|g| g.pci_address.to_string())
            .collect();
        if let (Some(nvml), false) = (&self.nvml, nvidia.is_empty()) {
            let last_seen = nvidia
                .iter()
                .map(|g| (g.clone(), st.accountant.nvml_last_seen(g)))
                .collect();
            match nvidia::processes(nvml, last_seen) {
                Ok((read, failed)) => {
                    let mut pods = HashMap::new();
                    for g in &read {
                        for pid in g
                            .processes
                            .iter()
                            .map(|p| p.0)
                            .chain(g.samples.iter().map(|s| s.pid))
                        {
                            if pods.contains_key(&pid) {
                                continue;
                            }
                            let pod = match scan::pod_of(&ctx.root, pid) {
                                Ok(p) => p,
                                Err(e) => {
                                    let reason = if e.is_not_found() {
                                        "vanished"
                                    } else {
                                        e.metric_label()
                                    };
                                    *st.errors.entry(reason).or_insert(0) += 1;
                                    None
                                }
                            };
                            pods.insert(pid, pod);
                        }
                    }
                    st.accountant
                        .apply_nvml(&read, &pods, &index, Instant::now());
                    if let Some(f) = failed.first() {
                        errors.note(SourceError::Library(format!(
                            "NVML per-process reads of device {}: {}",
                            f.index, f.error
                        )));
                    }
                }
                Err(e) if e.is_absent() => {}
                Err(e) => errors.note(SourceError::Library(e.to_string())),
            }
        }
        for s in st.accountant.finish(&index) {
            let labels = |k: &'static str, v: &str| {
                vec![
                    ("gpu", s.key.gpu.clone()),
                    ("namespace", s.key.namespace.clone()),
                    ("pod", s.key.pod.clone()),
                    ("container", s.key.container.clone()),
                    (k, v.to_owned()),
                ]
            };
            for (engine, secs) in &s.busy_seconds {
                out.push(&BUSY, labels("engine", engine), *secs);
            }
            for (region, b) in &s.memory_bytes {
                out.push(&MEMORY, labels("region", region), *b as f64);
            }
        }
        out.push(&SERIES_DROPPED, Vec::new(), st.accountant.overflow() as f64);
        out.push(&SCAN_PROCESSES, Vec::new(), scan.stats.processes as f64);
        out.push(&SCAN_PENDING, Vec::new(), scan.stats.pending as f64);
        for reason in [
            "vanished",
            "permission_denied",
            "malformed",
            "io",
            "not_text",
            "symlink_loop",
            "not_a_file",
        ] {
            st.errors.entry(reason).or_insert(0);
        }
        for (reason, n) in &st.errors {
            out.push(
                &SCAN_ERRORS,
                vec![("reason", (*reason).to_owned())],
                *n as f64,
            );
        }
        for reason in ["no_pdev", "not_a_gpu"] {
            let n = st.accountant.unmatched.get(reason).copied().unwrap_or(0);
            out.push(
                &CLIENTS_UNMATCHED,
                vec![("reason", reason.to_owned())],
                n as f64,
            );
        }
        errors.finish()
    }
}
