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
    Drm {
        pdev: String,
        id: u64,
    },
    /// A DRM file without `drm-client-id` (old kernels): one per (pid, fd).
    DrmFd {
        pid: u32,
        fd: u32,
    },
    Nvml {
        gpu: String,
        pid: u32,
    },
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
    pub fn apply_drm(
        &mut self,
        scan: &Scan,
        gpus: &HashSet<String>,
        index: &PodIndex,
        now: Instant,
    ) {
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

#[cfg(test)]
mod tests {
    use super::super::fdinfo::DrmClient;
    use super::super::podnames::PodName;
    use super::super::scan::Observation;
    use super::*;
    use std::time::Duration;

    const GPU: &str = "0000:03:00.0";
    const UID: &str = "1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b";

    fn index() -> PodIndex {
        let mut ix = PodIndex::default();
        ix.pods.insert(
            UID.into(),
            PodName {
                namespace: "media".into(),
                pod: "jellyfin-0".into(),
            },
        );
        ix.containers.insert("c".repeat(64), "server".into());
        ix
    }

    fn pod() -> Option<PodRef> {
        Some(PodRef {
            uid: UID.into(),
            container_id: Some("c".repeat(64)),
        })
    }

    fn obs(pid: u32, fd: u32, id: u64, gfx_ns: u64, pod: Option<PodRef>) -> Observation {
        let mut c = DrmClient {
            driver: "amdgpu".into(),
            pdev: Some(GPU.into()),
            client_id: Some(id),
            ..Default::default()
        };
        c.engines_ns.insert("gfx".into(), gfx_ns);
        c.memory.insert("vram".into(), 1 << 20);
        Observation {
            pid,
            fd,
            pod,
            client: c,
        }
    }

    fn scan(observations: Vec<Observation>, alive: &[u32]) -> Scan {
        Scan {
            observations,
            alive: alive.iter().copied().collect(),
            ..Default::default()
        }
    }

    fn gpus() -> HashSet<String> {
        [GPU.to_owned()].into()
    }

    fn busy(out: &[SeriesOut], pod: &str) -> Option<f64> {
        out.iter()
            .find(|s| s.key.pod == pod)
            .map(|s| s.busy_seconds["gfx"])
    }

    #[test]
    fn one_client_open_twice_counts_once() {
        let mut a = Accountant::new(100);
        let ix = index();
        let now = Instant::now();
        // the same drm_file (client 7) in two fds of pid 10 and inherited by pid 11
        let s = scan(
            vec![
                obs(10, 5, 7, 2_000_000_000, pod()),
                obs(10, 6, 7, 2_000_000_000, pod()),
                obs(11, 5, 7, 2_000_000_000, pod()),
            ],
            &[10, 11],
        );
        a.apply_drm(&s, &gpus(), &ix, now);
        let out = a.finish(&ix);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key.namespace, "media");
        assert_eq!(out[0].key.container, "server");
        assert_eq!(out[0].busy_seconds["gfx"], 2.0);
        assert_eq!(out[0].memory_bytes["vram"], 1 << 20);
    }

    #[test]
    fn busy_stays_monotonic_through_churn_and_gone_pods_disappear() {
        let mut a = Accountant::new(100);
        let mut ix = index();
        let t0 = Instant::now();
        a.apply_drm(
            &scan(vec![obs(10, 5, 7, 3_000_000_000, pod())], &[10]),
            &gpus(),
            &ix,
            t0,
        );
        assert_eq!(busy(&a.finish(&ix), "jellyfin-0"), Some(3.0));
        // pid 10 exits, pid 12 of the same pod opens a new client
        a.apply_drm(
            &scan(vec![obs(12, 3, 8, 500_000_000, pod())], &[12]),
            &gpus(),
            &ix,
            t0,
        );
        let out = a.finish(&ix);
        assert_eq!(busy(&out, "jellyfin-0"), Some(3.5));
        assert_eq!(out[0].clients, 1);
        // every process gone, the pod still on the node: the counter stays, memory goes
        a.apply_drm(&scan(vec![], &[]), &gpus(), &ix, t0);
        let out = a.finish(&ix);
        assert_eq!(busy(&out, "jellyfin-0"), Some(3.5));
        assert!(out[0].memory_bytes.is_empty());
        // the pod is deleted: its series disappears
        ix.pods.clear();
        assert!(a.finish(&ix).is_empty());
    }

    #[test]
    fn a_process_not_read_in_time_keeps_its_clients() {
        let mut a = Accountant::new(100);
        let ix = index();
        let t0 = Instant::now();
        a.apply_drm(
            &scan(vec![obs(10, 5, 7, 3_000_000_000, pod())], &[10]),
            &gpus(),
            &ix,
            t0,
        );
        let mut s = scan(vec![], &[10]);
        s.incomplete.insert(10);
        a.apply_drm(&s, &gpus(), &ix, t0);
        // seen again with the same cumulative value: not counted twice
        a.apply_drm(
            &scan(vec![obs(10, 5, 7, 3_000_000_000, pod())], &[10]),
            &gpus(),
            &ix,
            t0,
        );
        assert_eq!(busy(&a.finish(&ix), "jellyfin-0"), Some(3.0));
    }

    #[test]
    fn host_processes_and_unnamed_pods() {
        let mut a = Accountant::new(100);
        let ix = PodIndex::default();
        let t0 = Instant::now();
        a.apply_drm(
            &scan(
                vec![
                    obs(1, 5, 1, 1_000_000_000, None),
                    obs(2, 5, 2, 1_000_000_000, pod()),
                ],
                &[1, 2],
            ),
            &gpus(),
            &ix,
            t0,
        );
        let out = a.finish(&ix);
        let keys: Vec<(&str, &str)> = out
            .iter()
            .map(|s| (s.key.namespace.as_str(), s.key.pod.as_str()))
            .collect();
        assert_eq!(keys, [("", UID), ("", "host")]);
    }

    #[test]
    fn xe_cycles_become_busy_seconds() {
        let mut a = Accountant::new(100);
        let ix = index();
        let t0 = Instant::now();
        let xe = |cycles: u64, total: u64| {
            let mut o = obs(10, 5, 7, 0, pod());
            o.client.engines_ns.clear();
            o.client.cycles.insert("rcs".into(), (cycles, total));
            o
        };
        a.apply_drm(&scan(vec![xe(1_000, 10_000)], &[10]), &gpus(), &ix, t0);
        assert_eq!(a.finish(&ix)[0].busy_seconds["rcs"], 0.0);
        // a quarter of the GPU timestamp ticks busy over 8 s of wall time: 2 s
        a.apply_drm(
            &scan(vec![xe(3_500, 20_000)], &[10]),
            &gpus(),
            &ix,
            t0 + Duration::from_secs(8),
        );
        let b = a.finish(&ix)[0].busy_seconds["rcs"];
        assert!((b - 2.0).abs() < 1e-9, "{b}");
        // a dip is ignored until the counter catches up
        a.apply_drm(
            &scan(vec![xe(3_000, 30_000)], &[10]),
            &gpus(),
            &ix,
            t0 + Duration::from_secs(16),
        );
        assert!((a.finish(&ix)[0].busy_seconds["rcs"] - 2.0).abs() < 1e-9);
    }

    #[test]
    fn nvml_samples_and_process_exit() {
        let mut a = Accountant::new(100);
        let ix = index();
        let t0 = Instant::now();
        let pods: HashMap<u32, Option<PodRef>> = [(40, pod())].into();
        let pass = |ts: u64, sm: u32, procs: Vec<(u32, Option<u64>)>| NvmlGpu {
            gpu: "0000:01:00.0".into(),
            processes: procs,
            samples: if sm > 0 {
                vec![NvmlSample {
                    pid: 40,
                    timestamp_us: ts,
                    sm_percent: sm,
                    enc_percent: 0,
                    dec_percent: 10,
                }]
            } else {
                vec![]
            },
        };
        a.apply_nvml(
            &[pass(1_000_000, 50, vec![(40, Some(4096))])],
            &pods,
            &ix,
            t0,
        );
        assert_eq!(a.nvml_last_seen("0000:01:00.0"), 1_000_000);
        assert_eq!(a.finish(&ix)[0].busy_seconds["sm"], 0.0);
        // 10 s later at 50 %: 5 s of SM time, 1 s of decoder
        a.apply_nvml(
            &[pass(11_000_000, 50, vec![(40, Some(4096))])],
            &pods,
            &ix,
            t0,
        );
        let out = a.finish(&ix);
        assert_eq!(out[0].busy_seconds["sm"], 5.0);
        assert_eq!(out[0].busy_seconds["dec"], 1.0);
        assert_eq!(out[0].memory_bytes["vram"], 4096);
        // the process exits: retired, the counter stays
        a.apply_nvml(&[pass(0, 0, vec![])], &pods, &ix, t0);
        let out = a.finish(&ix);
        assert_eq!(out[0].busy_seconds["sm"], 5.0);
        assert_eq!(out[0].clients, 0);
    }

    #[test]
    fn series_are_capped_and_counted() {
        let mut a = Accountant::new(1);
        let ix = index();
        let t0 = Instant::now();
        a.apply_drm(
            &scan(vec![obs(1, 5, 1, 1, None), obs(2, 5, 2, 1, pod())], &[1, 2]),
            &gpus(),
            &ix,
            t0,
        );
        assert_eq!(a.finish(&ix).len(), 1);
        assert_eq!(a.overflow(), 1);
    }

    #[test]
    fn clients_of_other_devices_are_counted() {
        let mut a = Accountant::new(10);
        let ix = index();
        let mut o = obs(1, 5, 1, 1, None);
        o.client.pdev = Some("0000:0a:00.0".into());
        let mut p = obs(2, 5, 2, 1, None);
        p.client.pdev = None;
        a.apply_drm(&scan(vec![o, p], &[1, 2]), &gpus(), &ix, Instant::now());
        assert!(a.finish(&ix).is_empty());
        assert_eq!(a.unmatched["not_a_gpu"], 1);
        assert_eq!(a.unmatched["no_pdev"], 1);
    }
}
