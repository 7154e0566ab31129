//! Per-client accounting across passes, summed per (GPU, namespace, pod, container). No I/O.
//!
//! A *client* is one DRM file (`drm-pdev` + `drm-client-id`, so a file open in several fds or
//! processes counts once; the first pid in pid order owns it) or one NVML process on one GPU.
//! Its busy time per engine is:
//! - `drm-engine-<e>` nanoseconds (amdgpu, i915), taken as the largest value seen (the kernel doc
//!   lets the value dip for a while);
//! - xe: `Δdrm-cycles / Δdrm-total-cycles × Δwall-time` between two passes, added up (the first
//!   sight of an xe client adds nothing: its history before that is not known);
//! - NVML: `smUtil`/`encUtil`/`decUtil` percent of the last sample × the time since the previous
//!   sample this agent took for that GPU (at most 60 s; the first query adds nothing).
//!
//! A series' busy counter is the busy time of its retired clients plus that of its live ones,
//! so it stays monotonic while clients come and go. A client is retired when its process is gone
//! or its fd closed (never because the scan ran out of time). Memory is the sum over live
//! clients and is left out when the series has none. A series disappears once it has no live
//! client and its pod is gone from the node (its `/var/log/pods` entry); host processes
//! (`namespace=""`, `pod="host"`) stay. Pods the node cannot name are exported under their UID
//! (`namespace=""`, `pod=<uid>`). At most `max_series` series are exported: clients that would
//! open another are tracked but not exported, and counted ([`Accountant::overflow`]).

use super::cgroup::PodRef;
use super::podnames::PodIndex;
use super::scan::Scan;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// Labels of one exported series (the `gpu` label is the PCI address).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub gpu: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// What one series exports now.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesOut {
    pub key: SeriesKey,
    pub busy_seconds: BTreeMap<String, f64>,
    /// Absent when the series has no live client.
    pub memory_bytes: BTreeMap<String, u64>,
    /// Live clients of this series.
    pub clients: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ClientKey {
    Drm { pdev: String, id: u64 },
    /// A DRM file without `drm-client-id` (old kernels): one per (pid, fd).
    DrmFd { pid: u32, fd: u32 },
    Nvml { gpu: String, pid: u32 },
}

#[derive(Debug, Clone)]
struct Client {
    wanted: SeriesKey,
    exported: bool,
    owner: u32,
    ns: BTreeMap<String, u64>,
    acc: BTreeMap<String, f64>,
    cycles_last: BTreeMap<String, (u64, u64)>,
    last_at: Instant,
    nvml_last_ts: u64,
    memory: BTreeMap<String, u64>,
}

impl Client {
    fn new(wanted: SeriesKey, exported: bool, owner: u32, now: Instant) -> Self {
        Self {
            wanted,
            exported,
            owner,
            ns: BTreeMap::new(),
            acc: BTreeMap::new(),
            cycles_last: BTreeMap::new(),
            last_at: now,
            nvml_last_ts: 0,
            memory: BTreeMap::new(),
        }
    }

    fn busy(&self) -> BTreeMap<String, f64> {
        let mut b: BTreeMap<String, f64> = self.acc.clone();
        for (e, ns) in &self.ns {
            *b.entry(e.clone()).or_insert(0.0) += *ns as f64 / 1e9;
        }
        b
    }
}

#[derive(Debug, Clone, Default)]
struct SeriesAcc {
    retired: BTreeMap<String, f64>,
    /// Pod UID; `None` for host processes.
    uid: Option<String>,
}

/// One NVML process sample (`nvmlDeviceGetProcessUtilization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvmlSample {
    pub pid: u32,
    /// CPU timestamp in microseconds.
    pub timestamp_us: u64,
    pub sm_percent: u32,
    pub enc_percent: u32,
    pub dec_percent: u32,
}

/// What NVML said about one GPU's processes in this pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NvmlGpu {
    /// PCI address, as in the report.
    pub gpu: String,
    /// Running compute and graphics processes with their used memory (when NVML knows it).
    pub processes: Vec<(u32, Option<u64>)>,
    pub samples: Vec<NvmlSample>,
}

/// Longest gap one NVML sample is taken to cover.
const MAX_SAMPLE_GAP_US: u64 = 60_000_000;

/// The accounting state (one per agent).
#[derive(Debug)]
pub struct Accountant {
    clients: HashMap<ClientKey, Client>,
    series: BTreeMap<SeriesKey, SeriesAcc>,
    max_series: usize,
    nvml_last_seen: HashMap<String, u64>,
    /// DRM clients whose `drm-pdev` names no GPU of the report, or that have none.
    pub unmatched: BTreeMap<&'static str, u64>,
}

/// Series labels for a process on `gpu`.
fn series_key(gpu: &str, pod: Option<&PodRef>, index: &PodIndex) -> (SeriesKey, Option<String>) {
    let Some(p) = pod else {
        return (
            SeriesKey {
                gpu: gpu.to_owned(),
                namespace: String::new(),
                pod: "host".into(),
                container: String::new(),
            },
            None,
        );
    };
    let container = p
        .container_id
        .as_ref()
        .and_then(|id| index.containers.get(id))
        .cloned()
        .unwrap_or_default();
    let (namespace, pod) = match index.pods.get(&p.uid) {
        Some(n) => (n.namespace.clone(), n.pod.clone()),
        None => (String::new(), p.uid.clone()),
    };
    (
        SeriesKey {
            gpu: gpu.to_owned(),
            namespace,
            pod,
            container,
        },
        Some(p.uid.clone()),
    )
}

impl Accountant {
    pub fn new(max_series: usize) -> Self {
        Self {
            clients: HashMap::new(),
            series: BTreeMap::new(),
            max_series,
            nvml_last_seen: HashMap::new(),
            unmatched: BTreeMap::new(),
        }
    }

    /// The `lastSeenTimeStamp` to pass to `nvmlDeviceGetProcessUtilization` for a GPU.
    pub fn nvml_last_seen(&self, gpu: &str) -> u64 {
        self.nvml_last_seen.get(gpu).copied().unwrap_or(0)
    }

    /// Distinct series not exported because of the cap.
    pub fn overflow(&self) -> usize {
        self.clients
            .values()
            .filter(|c| !c.exported)
            .map(|c| &c.wanted)
            .collect::<HashSet<_>>()
            .len()
    }

    fn client_for(
        &mut self,
        key: ClientKey,
        gpu: &str,
        pod: Option<&PodRef>,
        owner: u32,
        index: &PodIndex,
        now: Instant,
    ) -> &mut Client {
        if !self.clients.contains_key(&key) {
            let (wanted, uid) = series_key(gpu, pod, index);
            let exported = if self.series.contains_key(&wanted) {
                true
            } else if self.series.len() < self.max_series {
                self.series.insert(
                    wanted.clone(),
                    SeriesAcc {
                        retired: BTreeMap::new(),
                        uid,
                    },
                );
                true
            } else {
                false
            };
            self.clients
                .insert(key.clone(), Client::new(wanted, exported, owner, now));
        }
        // just inserted or present
        self.clients.get_mut(&key).expect("client present")
    }

    fn retire(&mut self, key: &ClientKey) {
        if let Some(c) = self.clients.remove(key) {
            if !c.exported {
                return;
            }
            if let Some(s) = self.series.get_mut(&c.wanted) {
                for (e, v) in c.busy() {
                    *s.retired.entry(e).or_insert(0.0) += v;
                }
            }
        }
    }

    /// Apply one DRM scan. `gpus` are the PCI addresses of the report's GPUs.
    pub fn apply_drm(&mut self, scan: &Scan, gpus: &HashSet<String>, index: &PodIndex, now: Instant) {
        let mut seen: HashSet<ClientKey> = HashSet::new();
        let mut obs: Vec<&super::scan::Observation> = scan.observations.iter().collect();
        obs.sort_by_key(|o| (o.pid, o.fd));
        for o in obs {
            let Some(pdev) = o.client.pdev.as_deref() else {
                *self.unmatched.entry("no_pdev").or_insert(0) += 1;
                continue;
            };
            if !gpus.contains(pdev) {
                *self.unmatched.entry("not_a_gpu").or_insert(0) += 1;
                continue;
            }
            let key = match o.client.client_id {
                Some(id) => ClientKey::Drm {
                    pdev: pdev.to_owned(),
                    id,
                },
                None => ClientKey::DrmFd {
                    pid: o.pid,
                    fd: o.fd,
                },
            };
            if !seen.insert(key.clone()) {
                continue; // the same DRM file through another fd or process
            }
            let c = self.client_for(key, pdev, o.pod.as_ref(), o.pid, index, now);
            c.owner = o.pid;
            for (e, ns) in &o.client.engines_ns {
                let v = c.ns.entry(e.clone()).or_insert(0);
                *v = (*v).max(*ns);
            }
            let dt = now.saturating_duration_since(c.last_at).as_secs_f64();
            for (e, (cyc, total)) in &o.client.cycles {
                match c.cycles_last.get(e).copied() {
                    Some((c0, t0)) if *cyc < c0 || *total <= t0 => {}
                    Some((c0, t0)) => {
                        let ratio = ((cyc - c0) as f64 / (total - t0) as f64).clamp(0.0, 64.0);
                        *c.acc.entry(e.clone()).or_insert(0.0) += ratio * dt;
                        c.cycles_last.insert(e.clone(), (*cyc, *total));
                    }
                    None => {
                        c.acc.entry(e.clone()).or_insert(0.0);
                        c.cycles_last.insert(e.clone(), (*cyc, *total));
                    }
                }
            }
            c.last_at = now;
            c.memory = o.client.memory.clone();
        }
        let gone: Vec<ClientKey> = self
            .clients
            .iter()
            .filter(|(k, c)| {
                let nvml = matches!(k, ClientKey::Nvml { .. });
                // not read this pass (deadline, read error): not known to be gone
                let unread = scan.alive.contains(&c.owner) && scan.incomplete.contains(&c.owner);
                !nvml && !seen.contains(*k) && !unread
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.retire(&k);
        }
    }

    /// Apply what NVML said about the GPUs it could read; `pods` has the pod of each pid.
    pub fn apply_nvml(
        &mut self,
        gpus: &[NvmlGpu],
        pods: &HashMap<u32, Option<PodRef>>,
        index: &PodIndex,
        now: Instant,
    ) {
        for g in gpus {
            let prev = self.nvml_last_seen(&g.gpu);
            let mut pids: BTreeMap<u32, Option<u64>> = BTreeMap::new();
            for (pid, mem) in &g.processes {
                let e = pids.entry(*pid).or_insert(None);
                *e = match (*e, *mem) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
            for s in &g.samples {
                pids.entry(s.pid).or_insert(None);
            }
            let mut newest = prev;
            for (pid, mem) in &pids {
                let pod = pods.get(pid).cloned().flatten();
                let key = ClientKey::Nvml {
                    gpu: g.gpu.clone(),
                    pid: *pid,
                };
                let c = self.client_for(key, &g.gpu, pod.as_ref(), *pid, index, now);
                for s in g.samples.iter().filter(|s| s.pid == *pid) {
                    let lower = c.nvml_last_ts.max(prev);
                    if lower > 0 && s.timestamp_us > lower {
                        let dt = (s.timestamp_us - lower).min(MAX_SAMPLE_GAP_US) as f64 / 1e6;
                        for (e, pct) in [
                            ("sm", s.sm_percent),
                            ("enc", s.enc_percent),
                            ("dec", s.dec_percent),
                        ] {
                            *c.acc.entry(e.to_owned()).or_insert(0.0) +=
                                f64::from(pct.min(100)) / 100.0 * dt;
                        }
                    }
                    c.nvml_last_ts = c.nvml_last_ts.max(s.timestamp_us);
                    newest = newest.max(s.timestamp_us);
                }
                for e in ["sm", "enc", "dec"] {
                    c.acc.entry(e.to_owned()).or_insert(0.0);
                }
                c.memory.clear();
                if let Some(m) = mem {
                    c.memory.insert("vram".into(), *m);
                }
                c.last_at = now;
            }
            self.nvml_last_seen.insert(g.gpu.clone(), newest);
            let gone: Vec<ClientKey> = self
                .clients
                .keys()
                .filter(|k| matches!(k, ClientKey::Nvml { gpu, pid } if *gpu == g.gpu && !pids.contains_key(pid)))
                .cloned()
                .collect();
            for k in gone {
                self.retire(&k);
            }
        }
    }

    /// Drop series of pods that are gone, and give what every remaining series exports.
    pub fn finish(&mut self, index: &PodIndex) -> Vec<SeriesOut> {
        let mut live: BTreeMap<SeriesKey, Vec<&Client>> = BTreeMap::new();
        for c in self.clients.values().filter(|c| c.exported) {
            live.entry(c.wanted.clone()).or_default().push(c);
        }
        self.series.retain(|k, s| {
            live.contains_key(k)
                || match &s.uid {
                    None => true,
                    Some(uid) => index.pods.contains_key(uid),
                }
        });
        let mut out = Vec::with_capacity(self.series.len());
        for (k, s) in &self.series {
            let mut busy = s.retired.clone();
            let mut memory: BTreeMap<String, u64> = BTreeMap::new();
            let clients = live.get(k).map(|v| v.as_slice()).unwrap_or(&[]);
            for c in clients {
                for (e, v) in c.busy() {
                    *busy.entry(e).or_insert(0.0) += v;
                }
                for (r, b) in &c.memory {
                    *memory.entry(r.clone()).or_insert(0) += b;
                }
            }
            out.push(SeriesOut {
                key: k.clone(),
                busy_seconds: busy,
                memory_bytes: memory,
                clients: clients.len(),
            });
        }
        out
    }
}
