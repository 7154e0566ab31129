//! Incremental scan of `/proc` for DRM clients, through [`HostRoot`] (`<root>/proc`).
//!
//! Reads: the `/proc` listing (with each entry's inode number), `/proc/<pid>/fd/` (listing and
//! the name of each link's target: `renderD128`, `card1`, …), `/proc/<pid>/fdinfo/<fd>` of the
//! DRM fds ([`super::fdinfo`]) and `/proc/<pid>/cgroup` of processes that have one
//! ([`super::cgroup`]).
//!
//! Cost: a process is keyed by its pid and the inode of its `/proc/<pid>` entry (a reused pid
//! gets a new inode), an fd by its number and the inode of the open file (fdinfo's `ino:`).
//! Every pass lists `/proc` and re-reads only the fdinfo of the DRM fds it already knows (the
//! counters move). A process is read in full (every fd link) when it is new, and again when its
//! last full read is older than [`ScanConfig::rescan_after`], at most
//! [`ScanConfig::rescans_per_pass`] per pass, oldest first, so a long-lived process that opens a
//! GPU later is found within that time. Everything stops at the pass deadline; unread processes
//! wait for the next pass ([`ScanStats::pending`]).
//!
//! Missing files: a process or fd that disappears mid-scan is dropped and counted as
//! `vanished` (normal churn); `permission_denied` (the agent lacks `CAP_SYS_PTRACE` /
//! `CAP_DAC_READ_SEARCH` for that process) and other read errors are counted by reason, and the
//! process is tried again at its next rescan. A missing `/proc` is an error of the source.

use super::cgroup::{self, PodRef};
use super::fdinfo::{self, DrmClient};
use crate::hostroot::{self, HostRoot, Resolved};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Tuning of the incremental scan.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// A process's fd table is read in full again after this long.
    pub rescan_after: Duration,
    /// Most full re-reads of known processes per pass (new processes are not limited).
    pub rescans_per_pass: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            rescan_after: Duration::from_secs(30),
            rescans_per_pass: 256,
        }
    }
}

/// One DRM client seen in this pass.
#[derive(Debug, Clone)]
pub struct Observation {
    pub pid: u32,
    pub fd: u32,
    pub pod: Option<PodRef>,
    pub client: DrmClient,
}

/// What one pass did, for the scan-health series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Processes listed in `/proc`.
    pub processes: usize,
    /// Processes read in full for the first time.
    pub new_scanned: usize,
    /// Known processes read in full again.
    pub rescanned: usize,
    /// fdinfo files of DRM fds read.
    pub drm_fds_read: usize,
    /// New processes left for the next pass when the deadline came.
    pub pending: usize,
    /// Whether the deadline stopped the pass.
    pub deadline_hit: bool,
    /// Read failures by reason (`vanished`, `permission_denied`, `malformed`, `io`, ...).
    pub errors: BTreeMap<&'static str, u64>,
}

/// The result of one pass.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub observations: Vec<Observation>,
    /// Pids listed in `/proc` in this pass.
    pub alive: HashSet<u32>,
    /// Pids with known DRM fds that were not read in this pass (deadline): their clients are
    /// not known to be gone.
    pub incomplete: HashSet<u32>,
    pub stats: ScanStats,
}

#[derive(Debug, Clone)]
struct Proc {
    /// Inode of the `/proc/<pid>` entry: a reused pid has another.
    ino: u64,
    /// DRM fds: number and the open file's inode (fdinfo `ino:`).
    drm_fds: Vec<(u32, Option<u64>)>,
    pod: Option<PodRef>,
    last_full: Instant,
    /// `/proc/<pid>/fdinfo`, resolved once at the full read (procfs never turns it into a link).
    fdinfo: Option<Resolved>,
}

/// The scanner and its cache (one per agent; not shared between threads).
#[derive(Debug, Default)]
pub struct Scanner {
    config: ScanConfig,
    procs: HashMap<u32, Proc>,
}

/// Whether the name of an fd link's target is a DRM device node.
fn is_drm_node(name: &str) -> bool {
    name.starts_with("renderD") || name.starts_with("card")
}

enum Read<T> {
    Ok(T),
    /// The process or fd is gone.
    Gone,
    Failed,
}

impl Scanner {
    pub fn new(config: ScanConfig) -> Self {
        Self {
            config,
            procs: HashMap::new(),
        }
    }

    /// Processes in the cache (tests, benches).
    pub fn cached(&self) -> usize {
        self.procs.len()
    }

    /// One pass. Errors only when `/proc` itself cannot be listed.
    pub fn scan(&mut self, root: &HostRoot, deadline: Instant) -> Result<Scan, hostroot::Error> {
        let proc_dir = root.resolve("proc")?;
        let listing = root.list_dir_inodes_in(&proc_dir, "")?;
        let mut out = Scan::default();
        let mut listed: Vec<(u32, u64)> = listing
            .into_iter()
            .filter_map(|(n, ino)| n.parse::<u32>().ok().map(|p| (p, ino)))
            .collect();
        listed.sort_unstable();
        out.stats.processes = listed.len();
        out.alive = listed.iter().map(|(p, _)| *p).collect();
        let now_ino: HashMap<u32, u64> = listed.iter().copied().collect();
        self.procs
            .retain(|pid, p| now_ino.get(pid).is_some_and(|ino| *ino == p.ino));

        // 1. The DRM fds we know: their counters move every pass.
        let mut known: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| !p.drm_fds.is_empty())
            .map(|(pid, _)| *pid)
            .collect();
        known.sort_unstable();
        for (i, pid) in known.iter().enumerate() {
            if Instant::now() >= deadline {
                out.stats.deadline_hit = true;
                out.incomplete.extend(known[i..].iter().copied());
                break;
            }
            self.read_known(root, &proc_dir, *pid, &mut out);
        }

        // 2. New processes, in pid order.
        let new: Vec<(u32, u64)> = listed
            .iter()
            .filter(|(pid, _)| !self.procs.contains_key(pid))
            .copied()
            .collect();
        for (i, (pid, ino)) in new.iter().enumerate() {
            if Instant::now() >= deadline {
                out.stats.deadline_hit = true;
                out.stats.pending = new.len() - i;
                break;
            }
            out.stats.new_scanned += 1;
            self.read_full(root, &proc_dir, *pid, *ino, &mut out);
        }

        // 3. Known processes whose full read is old, oldest first, within the budget.
        if !out.stats.deadline_hit {
            let now = Instant::now();
            let mut stale: Vec<(Instant, u32, u64)> = self
                .procs
                .iter()
                .filter(|(_, p)| now.duration_since(p.last_full) >= self.config.rescan_after)
                .map(|(pid, p)| (p.last_full, *pid, p.ino))
                .collect();
            stale.sort_unstable();
            for (_, pid, ino) in stale.into_iter().take(self.config.rescans_per_pass) {
                if Instant::now() >= deadline {
                    out.stats.deadline_hit = true;
                    break;
                }
                out.stats.rescanned += 1;
                // Its DRM fds were read in step 1: drop those observations, the full read
                // gives them again.
                out.observations.retain(|o| o.pid != pid);
                self.read_full(root, &proc_dir, pid, ino, &mut out);
            }
        }
        Ok(out)
    }

    fn count(out: &mut Scan, e: &hostroot::Error) {
        let reason = if e.is_not_found() {
            "vanished"
        } else {
            e.metric_label()
        };
        *out.stats.errors.entry(reason).or_insert(0) += 1;
    }

    /// Read one fdinfo file below `fdinfo_dir`.
    fn read_fdinfo(
        root: &HostRoot,
        fdinfo_dir: &Resolved,
        fd: &str,
        out: &mut Scan,
    ) -> Read<Option<DrmClient>> {
        match root.read_attr(fdinfo_dir, fd) {
            Ok(text) => {
                out.stats.drm_fds_read += 1;
                let c = fdinfo::parse(&text);
                if let Some(c) = &c
                    && c.malformed > 0
                {
                    *out.stats.errors.entry("malformed").or_insert(0) += u64::from(c.malformed);
                }
                Read::Ok(c)
            }
            Err(e) if e.is_not_found() => Read::Gone,
            Err(e) => {
                Self::count(out, &e);
                Read::Failed
            }
        }
    }

    /// Re-read the fdinfo of a process's known DRM fds.
    fn read_known(&mut self, root: &HostRoot, proc_dir: &Resolved, pid: u32, out: &mut Scan) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let cached = p.fdinfo.clone();
        let fdinfo_dir =
            match cached.map_or_else(|| root.resolve_in(proc_dir, format!("{pid}/fdinfo")), Ok) {
                Ok(d) => d,
                Err(e) => {
                    Self::count(out, &e);
                    if e.is_not_found() {
                        // exited since the listing: its clients are gone
                        self.procs.remove(&pid);
                    } else {
                        out.incomplete.insert(pid);
                    }
                    return;
                }
            };
        let mut keep = Vec::with_capacity(p.drm_fds.len());
        for (fd, _ino) in std::mem::take(&mut p.drm_fds) {
            match Self::read_fdinfo(root, &fdinfo_dir, &fd.to_string(), out) {
                Read::Ok(Some(client)) => {
                    keep.push((fd, client.ino));
                    out.observations.push(Observation {
                        pid,
                        fd,
                        pod: p.pod.clone(),
                        client,
                    });
                }
                // closed, or reused for something that is not a DRM file
                Read::Ok(None) | Read::Gone => {}
                Read::Failed => {
                    keep.push((fd, None));
                    out.incomplete.insert(pid);
                }
            }
        }
        p.drm_fds = keep;
    }

    /// Read a process in full: every fd link, the fdinfo of the DRM ones, its cgroup.
    fn read_full(
        &mut self,
        root: &HostRoot,
        proc_dir: &Resolved,
        pid: u32,
        ino: u64,
        out: &mut Scan,
    ) {
        let now = Instant::now();
        let mut entry = Proc {
            ino,
            drm_fds: Vec::new(),
            pod: None,
            last_full: now,
            fdinfo: None,
        };
        let fd_dir = match root.resolve_in(proc_dir, format!("{pid}/fd")) {
            Ok(d) => d,
            Err(e) => {
                Self::count(out, &e);
                if !e.is_not_found() {
                    // kept (no DRM fds known), tried again at its next rescan
                    self.procs.insert(pid, entry);
                } else {
                    self.procs.remove(&pid);
                }
                return;
            }
        };
        let names = match root.list_dir_inodes_in(&fd_dir, "") {
            Ok(n) => n,
            Err(e) => {
                Self::count(out, &e);
                if !e.is_not_found() {
                    self.procs.insert(pid, entry);
                } else {
                    self.procs.remove(&pid);
                }
                return;
            }
        };
        let mut fds: Vec<u32> = names
            .iter()
            .filter_map(|(n, _)| n.parse::<u32>().ok())
            .collect();
        fds.sort_unstable();
        let mut fdinfo_dir: Option<Resolved> = None;
        let mut found = Vec::new();
        for fd in fds {
            let name = fd.to_string();
            let target = match root.link_name_in(&fd_dir, &name) {
                Ok(t) => t,
                Err(e) if e.is_not_found() => continue, // closed meanwhile
                Err(e) => {
                    Self::count(out, &e);
                    continue;
                }
            };
            if !is_drm_node(&target) {
                continue;
            }
            if fdinfo_dir.is_none() {
                match root.resolve_in(proc_dir, format!("{pid}/fdinfo")) {
                    Ok(d) => fdinfo_dir = Some(d),
                    Err(e) => {
                        Self::count(out, &e);
                        break;
                    }
                }
            }
            let Some(dir) = &fdinfo_dir else { break };
            match Self::read_fdinfo(root, dir, &name, out) {
                Read::Ok(Some(client)) => {
                    entry.drm_fds.push((fd, client.ino));
                    found.push((fd, client));
                }
                Read::Ok(None) | Read::Gone => {}
                Read::Failed => {}
            }
        }
        entry.fdinfo = fdinfo_dir;
        if !found.is_empty() {
            let cg = root
                .resolve_in(proc_dir, pid.to_string())
                .and_then(|d| root.read_attr(&d, "cgroup"));
            entry.pod = match cg {
                Ok(t) => cgroup::parse(&t),
                Err(e) => {
                    Self::count(out, &e);
                    None
                }
            };
            for (fd, client) in found {
                out.observations.push(Observation {
                    pid,
                    fd,
                    pod: entry.pod.clone(),
                    client,
                });
            }
        }
        self.procs.insert(pid, entry);
    }
}

/// Read `/proc/<pid>/cgroup` of one process (NVML gives pids without fds).
pub fn pod_of(root: &HostRoot, pid: u32) -> Result<Option<PodRef>, hostroot::Error> {
    Ok(cgroup::parse(
        &root.read_string(format!("proc/{pid}/cgroup"))?,
    ))
}
