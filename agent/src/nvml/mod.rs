//! NVML through `nvml-wrapper`, loaded at run time (never linked), behind a watchdog.
//!
//! ```text
//!  async callers ──request──► mpsc ──► [nvml-worker thread] ── every NVML call ──► libnvidia-ml
//!       │  ▲                                   │ Beat: which call, since when, its deadline
//!       │  └──────── oneshot reply ◄───────────┘
//!       └── watchdog: a call past its deadline = hung → source failed, worker abandoned
//! ```
//!
//! * **Library**: see [`locate`]: `--nvml-lib`, then the Talos paths under the host root, then
//!   the loader's `libnvidia-ml.so.1`. A missing library is normal on a node without NVIDIA
//!   GPUs: the source is [`NvmlState::Absent`], logged at debug level, never an error.
//! * **One worker thread** (a `std::thread` named `nvml-worker`) makes every NVML call:
//!   `nvmlInit_v2`, `nvmlSystemGetDriverVersion`, `nvmlSystemGetCudaDriverVersion_v2`, the device
//!   reads listed in [`read`], and the XID event set. NVML is never called from an async task or
//!   an HTTP handler; they only send requests and await replies.
//! * **Deadlines**: each call has a deadline ([`NvmlConfig::call_timeout`]; init and device
//!   handles get [`NvmlConfig::init_timeout`]). The waiting side watches the worker's heartbeat;
//!   when a call overruns, the NVML source is marked failed ([`NvmlState::Failed`] with
//!   [`Error::Hung`]), one warning is logged, and the caller gets the error at once. A thread
//!   blocked inside the driver (uninterruptible `D` state) **cannot be killed**: it is abandoned,
//!   and a fresh worker is started after a backoff. At most [`NvmlConfig::max_threads`] worker
//!   threads may exist at once (stuck ones included); past that the source stays failed
//!   ([`Error::Wedged`]) until a stuck thread returns, and the liveness probe is the way out.
//! * **Init failures** (`DriverNotLoaded`, library missing, version mismatch) are retried with
//!   capped exponential backoff (the shared [`crate::backoff::Backoff`]:
//!   [`NvmlConfig::backoff_initial`] doubling up to [`NvmlConfig::backoff_max`], jittered);
//!   between attempts callers get the last error at once.
//! * **Facts** for the `driver-version-mismatch` verdict: [`NvmlFacts`]:
//!   NVML's driver and CUDA versions, and NVML's own `NVML_ERROR_LIB_RM_VERSION_MISMATCH`. A
//!   driver version that differs from the kernel module's (`/proc/driver/nvidia/version`,
//!   [`crate::vendors::nvidia`]) is logged once here and turned into a verdict by
//!   [`crate::verdict`], which compares every version it knows.
//! * **Join**: NVML's bus id (`00000000:3B:00.0`) is parsed into a [`PciAddress`], the key that
//!   PCI discovery uses; [`enrich`] merges readings into the report (PCI identity wins).

pub mod enrich;
pub mod locate;
mod read;
pub mod source;

use crate::backoff::Backoff;
use crate::hostroot::HostRoot;
use crate::lock::lock;
use crate::logonce::LogOnce;
use crate::pci::PciAddress;
use crate::vendors::nvidia::{self as nvidia_procfs, KernelModule};
use read::XidCounts;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub use locate::LibChoice;

/// What can go wrong with the NVML source.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No NVML library on this node (normal without NVIDIA GPUs).
    #[error("NVML library not found ({0})")]
    Absent(String),
    /// `nvmlInit` failed (driver not loaded yet, no permission, ...).
    #[error("NVML init failed: {0}")]
    Init(String),
    /// `NVML_ERROR_LIB_RM_VERSION_MISMATCH`: the library does not match the kernel module.
    #[error(
        "NVML driver/library version mismatch (libnvidia-ml does not match the loaded kernel module)"
    )]
    VersionMismatch,
    /// A call ran past its deadline; the worker was abandoned.
    #[error("NVML call {call} did not return within {limit:?}; NVML source marked failed")]
    Hung { call: &'static str, limit: Duration },
    /// Too many worker threads are stuck inside the driver to start another.
    #[error("{0} NVML worker threads are stuck in the driver; not starting another")]
    Wedged(usize),
    /// A call that a snapshot cannot do without failed.
    #[error("NVML {call}: {error}")]
    Call { call: &'static str, error: String },
    /// The worker thread ended without answering (it panicked).
    #[error("NVML worker thread ended unexpectedly")]
    WorkerGone,
    /// The worker thread could not be started.
    #[error("cannot start the NVML worker thread: {0}")]
    Spawn(String),
}

impl Error {
    /// True when NVML is simply not installed: not a failure.
    pub fn is_absent(&self) -> bool {
        matches!(self, Error::Absent(_))
    }

    /// Bounded label value for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Absent(_) => "absent",
            Error::Init(_) => "init",
            Error::VersionMismatch => "version_mismatch",
            Error::Hung { .. } => "hung",
            Error::Wedged(_) => "wedged",
            Error::Call { .. } => "call",
            Error::WorkerGone => "worker_gone",
            Error::Spawn(_) => "spawn",
        }
    }
}

/// Settings of the NVML source.
#[derive(Debug, Clone)]
pub struct NvmlConfig {
    /// Host root: the Talos library paths and `/proc/driver/nvidia/version` are read below it.
    pub root: HostRoot,
    /// `--nvml-lib` / `GPUSCOUT_NVML_LIB`.
    pub lib_path: Option<PathBuf>,
    /// Deadline of one ordinary NVML call.
    pub call_timeout: Duration,
    /// Deadline of `nvmlInit` and of getting a device handle.
    pub init_timeout: Duration,
    /// Upper bound of the first retry delay after a failure; doubles per failure (jittered
    /// into its upper half by [`Backoff`]).
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Most worker threads that may exist at once, stuck ones included.
    pub max_threads: usize,
    /// How often an idle worker drains the XID event set.
    pub xid_poll: Duration,
    /// Log failures at debug level instead of warn: for one-shot commands, where NVML is
    /// best-effort enrichment and stderr carries the verdicts. The daemon keeps warnings.
    pub quiet: bool,
}

/// Default deadline of one NVML call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(500);

impl NvmlConfig {
    /// Defaults: 500 ms per call, 10 s for init, backoff 1 s → 5 min, at most 4 threads, warnings.
    pub fn new(root: HostRoot) -> Self {
        Self {
            root,
            lib_path: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            init_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_threads: 4,
            xid_poll: Duration::from_secs(1),
            quiet: false,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            call: self.call_timeout,
            slow: self.init_timeout.max(self.call_timeout),
        }
    }
}

/// NVML's view of the driver: what the `driver-version-mismatch` verdict needs from NVML
/// ([`crate::verdict::Inputs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NvmlFacts {
    /// `nvmlSystemGetDriverVersion` (`570.172.08`).
    pub driver_version: Option<String>,
    /// `nvmlSystemGetCudaDriverVersion_v2`, as `12.8`.
    pub cuda_driver_version: Option<String>,
    /// NVML init failed with "Driver/library version mismatch" (`NVML_ERROR_LIB_RM_VERSION_MISMATCH`).
    pub version_mismatch: bool,
}

/// The facts from what NVML said at init. `version_mismatch` is NVML's own
/// `NVML_ERROR_LIB_RM_VERSION_MISMATCH`; a driver version that merely differs from the kernel
/// module's is visible through `driver_version`, which the verdict compares with every other
/// version it knows (see [`version_differs`]).
pub fn facts(
    driver_version: Option<String>,
    cuda_driver_version: Option<String>,
    rm_mismatch: bool,
) -> NvmlFacts {
    NvmlFacts {
        driver_version,
        cuda_driver_version,
        version_mismatch: rm_mismatch,
    }
}

/// True when NVML's driver version and the loaded kernel module's (`/proc/driver/nvidia/version`)
/// are both known and differ.
pub fn version_differs(facts: &NvmlFacts, kernel: Option<&KernelModule>) -> bool {
    matches!((facts.driver_version.as_deref(), kernel), (Some(n), Some(k)) if n != k.version)
}

/// `12040` → `12.4` (NVML encodes major * 1000 + minor * 10).
pub fn cuda_version_string(v: i32) -> Option<String> {
    (v > 0).then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
}

/// What NVML reports for one GPU. Every value is optional: absent when NVML does not support
/// it on this GPU or the call failed. Units are base units (bytes, watts, joules, hertz).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuReading {
    /// From NVML's bus id; the join key with PCI discovery.
    pub address: Option<PciAddress>,
    /// NVML's own spelling, e.g. `00000000:01:00.0`.
    pub nvml_bus_id: Option<String>,
    /// NVML device index.
    pub index: Option<u32>,
    pub pci_vendor_id: Option<u16>,
    pub pci_device_id: Option<u16>,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_free_bytes: Option<u64>,
    pub utilization_gpu_ratio: Option<f64>,
    pub utilization_memory_ratio: Option<f64>,
    pub temperature_celsius: Option<u32>,
    pub power_watts: Option<f64>,
    /// Enforced limit, else the management limit.
    pub power_limit_watts: Option<f64>,
    /// Since the driver was loaded (Volta and newer).
    pub energy_joules: Option<f64>,
    /// Current clocks by domain (`graphics`, `sm`, `memory`).
    pub clocks_hz: BTreeMap<&'static str, u64>,
    pub max_clocks_hz: BTreeMap<&'static str, u64>,
    /// `major.minor`, e.g. `8.9`.
    pub compute_capability: Option<String>,
    /// `ada`, `hopper`, ...
    pub family: Option<&'static str>,
    pub mig_enabled: Option<bool>,
    pub mig_pending_enabled: Option<bool>,
    /// MIG devices that exist now (0 when MIG is off).
    pub mig_devices: Option<u32>,
    /// Aggregate (lifetime) ECC error counts.
    pub ecc_corrected_total: Option<u64>,
    pub ecc_uncorrected_total: Option<u64>,
    pub pcie_current_gen: Option<u32>,
    pub pcie_current_width: Option<u32>,
    pub pcie_max_gen: Option<u32>,
    pub pcie_max_width: Option<u32>,
    /// The GPU fell off the bus (`NVML_ERROR_GPU_IS_LOST`); later readings are absent.
    pub lost: bool,
    /// Calls that failed for another reason than "not supported".
    pub errors: Vec<String>,
}

/// A device NVML lists but that could not be joined to a PCI address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnjoinedDevice {
    pub index: u32,
    pub error: String,
}

/// One complete read of every GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct NvmlSnapshot {
    pub taken: Instant,
    /// How long the worker took.
    pub duration: Duration,
    pub driver_version: Option<String>,
    pub cuda_driver_version: Option<String>,
    pub gpus: BTreeMap<PciAddress, GpuReading>,
    pub unjoined: Vec<UnjoinedDevice>,
    /// Critical XID events seen since the agent started, per GPU and XID, for every GPU that
    /// delivered one: a GPU that fell off the bus after its XID 79 is no longer in `gpus` (it
    /// answers GPU_IS_LOST) but keeps its count here.
    pub xid_errors: BTreeMap<PciAddress, BTreeMap<u64, u64>>,
}

/// State of the NVML source, for `/readyz`, logs and `gpuscout_scrape_source_success`.
#[derive(Debug, Clone, PartialEq)]
pub enum NvmlState {
    /// Not tried yet.
    NotStarted,
    /// Initialised and answering.
    Ready,
    /// No library on this node.
    Absent,
    /// The last attempt failed; retried after a backoff.
    Failed(Error),
}

/// Health counters of the NVML source.
#[derive(Debug, Clone, PartialEq)]
pub struct NvmlHealth {
    pub state: NvmlState,
    /// Worker threads that were abandoned inside a call and have not returned.
    pub stuck_threads: usize,
    /// Calls that overran their deadline since start.
    pub hangs_total: u64,
    /// Worker threads started since start.
    pub workers_started: u64,
}

enum Request {
    Snapshot(oneshot::Sender<Result<read::Pass, Error>>),
    /// Another module's NVML calls ([`NvmlHandle::run`]).
    Run(Job),
}

/// NVML calls of another module, run on the worker thread ([`NvmlHandle::run`]).
type Job = Box<dyn FnOnce(&nvml_wrapper::Nvml, &Beat, Limits) + Send>;

pub(crate) use read::{Beat, Limits, error_text};

/// What the worker reports after init.
struct InitInfo {
    driver_version: Option<String>,
    cuda_driver_version: Option<String>,
}

/// A freshly started worker: its request channel, heartbeat and init reply.
type Spawned = (
    mpsc::Sender<Request>,
    Arc<Beat>,
    oneshot::Receiver<Result<InitInfo, Error>>,
);

struct Worker {
    tx: mpsc::Sender<Request>,
    beat: Arc<Beat>,
}

struct State {
    worker: Option<Worker>,
    state: NvmlState,
    next_attempt: Option<Instant>,
    backoff: Backoff,
    facts: Option<NvmlFacts>,
    last: Option<Arc<NvmlSnapshot>>,
}

struct Inner {
    cfg: NvmlConfig,
    state: Mutex<State>,
    /// One request in flight at a time.
    request: tokio::sync::Mutex<()>,
    live_threads: Arc<AtomicUsize>,
    hangs: AtomicU64,
    started: AtomicU64,
    xid: Arc<Mutex<XidCounts>>,
    /// Failure reasons warned about since the worker was last ready.
    logged: LogOnce<String>,
}

/// Handle to the NVML source. Cheap to clone; all clones share one worker.
#[derive(Clone)]
pub struct NvmlHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NvmlHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlHandle")
            .field("state", &self.state())
            .finish()
    }
}

/// Entry point: `Nvml::start(cfg)`.
pub struct Nvml;

impl Nvml {
    /// Create the source. Nothing is loaded until the first [`NvmlHandle::snapshot`] (or
    /// [`NvmlHandle::init`]).
    pub fn start(cfg: NvmlConfig) -> NvmlHandle {
        let backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
        NvmlHandle {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(State {
                    worker: None,
                    state: NvmlState::NotStarted,
                    next_attempt: None,
                    backoff,
                    facts: None,
                    last: None,
                }),
                request: tokio::sync::Mutex::new(()),
                live_threads: Arc::new(AtomicUsize::new(0)),
                hangs: AtomicU64::new(0),
                started: AtomicU64::new(0),
                xid: Arc::new(Mutex::new(BTreeMap::new())),
                logged: LogOnce::new(),
            }),
        }
    }
}

/// Decrements the live-thread count when a worker thread ends, however it ends.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl NvmlHandle {
    /// Current state.
    pub fn state(&self) -> NvmlState {
        lock(&self.inner.state).state.clone()
    }

    /// State and counters.
    pub fn health(&self) -> NvmlHealth {
        let st = lock(&self.inner.state);
        let live = self.inner.live_threads.load(Ordering::SeqCst);
        let stuck = live.saturating_sub(usize::from(st.worker.is_some()));
        NvmlHealth {
            state: st.state.clone(),
            stuck_threads: stuck,
            hangs_total: self.inner.hangs.load(Ordering::SeqCst),
            workers_started: self.inner.started.load(Ordering::SeqCst),
        }
    }

    /// Facts for the `driver-version-mismatch` verdict: `None` until NVML answered init (or
    /// when the library is absent).
    pub fn facts(&self) -> Option<NvmlFacts> {
        lock(&self.inner.state).facts.clone()
    }

    /// The last successful snapshot, however old (never calls NVML, never blocks).
    pub fn last_snapshot(&self) -> Option<Arc<NvmlSnapshot>> {
        lock(&self.inner.state).last.clone()
    }

    /// Make sure a worker is up (starting one if the backoff allows). Bounded by the deadlines.
    pub async fn init(&self) -> Result<(), Error> {
        let _one = self.inner.request.lock().await;
        self.ensure_worker().await.map(|_| ())
    }

    /// Read every GPU through the worker. Returns within the call deadlines: a hung call gives
    /// [`Error::Hung`]; while the source backs off after a failure, the last error comes back
    /// at once.
    pub async fn snapshot(&self) -> Result<Arc<NvmlSnapshot>, Error> {
        let _one = self.inner.request.lock().await;
        let (tx, beat) = self.ensure_worker().await?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let t0 = Instant::now();
        if tx.send(Request::Snapshot(reply_tx)).is_err() {
            return Err(self.fail(Error::WorkerGone, true));
        }
        let pass = match self.wait(&beat, reply_rx).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(self.fail(e, true)),
            Err(e) => return Err(self.fail(e, true)),
        };
        let duration = t0.elapsed();
        let xid = lock(&self.inner.xid).clone();
        let mut st = lock(&self.inner.state);
        let (driver_version, cuda_driver_version) = st
            .facts
            .as_ref()
            .map(|f| (f.driver_version.clone(), f.cuda_driver_version.clone()))
            .unwrap_or_default();
        let mut gpus = BTreeMap::new();
        let mut unjoined = pass.unjoined;
        for g in pass.gpus {
            match g.address {
                Some(a) => {
                    gpus.insert(a, g);
                }
                None => unjoined.push(UnjoinedDevice {
                    index: g.index.unwrap_or(u32::MAX),
                    error: "no PCI address".into(),
                }),
            }
        }
        let snap = Arc::new(NvmlSnapshot {
            taken: Instant::now(),
            duration,
            driver_version,
            cuda_driver_version,
            gpus,
            unjoined,
            xid_errors: xid,
        });
        st.last = Some(snap.clone());
        st.state = NvmlState::Ready;
        Ok(snap)
    }

    /// Blocking variant, for one-shot commands and for metrics sources that run on a blocking
    /// thread (`spawn_blocking`): inside a Tokio runtime it blocks on that runtime's handle,
    /// elsewhere on a private current-thread runtime. Never call it from an async task.
    pub fn snapshot_blocking(&self) -> Result<Arc<NvmlSnapshot>, Error> {
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            return h.block_on(self.snapshot());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Error::Spawn(e.to_string()))?;
        rt.block_on(self.snapshot())
    }

    /// Run `f` on the worker thread with the initialised library, under the same watchdog as
    /// every other call: `f` must make each NVML call through [`Beat::call`] with a deadline
    /// from the given [`Limits`]. For other modules' reads (per-process usage in
    /// [`crate::pods`]); one request in flight at a time, like [`snapshot`](Self::snapshot).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&nvml_wrapper::Nvml, &Beat, Limits) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let _one = self.inner.request.lock().await;
        let (tx, beat) = self.ensure_worker().await?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |nvml, beat, limits| {
            let _ = reply_tx.send(f(nvml, beat, limits));
        });
        if tx.send(Request::Run(job)).is_err() {
            return Err(self.fail(Error::WorkerGone, true));
        }
        match self.wait(&beat, reply_rx).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.fail(e, true)),
        }
    }

    /// [`run`](Self::run) from a blocking thread (see [`snapshot_blocking`](Self::snapshot_blocking)).
    pub(crate) fn run_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&nvml_wrapper::Nvml, &Beat, Limits) -> T + Send + 'static,
    ) -> Result<T, Error> {
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            return h.block_on(self.run(f));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Error::Spawn(e.to_string()))?;
        rt.block_on(self.run(f))
    }

    /// Wait for a reply while watching the worker's heartbeat.
    async fn wait<T>(&self, beat: &Beat, mut rx: oneshot::Receiver<T>) -> Result<T, Error> {
        let cfg = &self.inner.cfg;
        let tick =
            (cfg.call_timeout / 4).clamp(Duration::from_millis(2), Duration::from_millis(50));
        loop {
            tokio::select! {
                r = &mut rx => return r.map_err(|_| Error::WorkerGone),
                _ = tokio::time::sleep(tick) => {}
            }
            if let Some(c) = beat.overdue() {
                self.inner.hangs.fetch_add(1, Ordering::SeqCst);
                return Err(Error::Hung {
                    call: c.call,
                    limit: c.limit,
                });
            }
        }
    }

    /// Record a failure: drop (abandon) the worker when asked, schedule the next attempt, warn
    /// once per reason until the source is ready again. Returns the error for the caller.
    fn fail(&self, e: Error, drop_worker: bool) -> Error {
        let mut st = lock(&self.inner.state);
        if drop_worker {
            // Dropping the sender disconnects the channel: a worker that is merely busy exits
            // after its call; a stuck one stays stuck and is counted until it returns.
            st.worker = None;
        }
        let delay = st.backoff.next_delay(None);
        st.next_attempt = Some(Instant::now() + delay);
        let new_state = if e.is_absent() {
            NvmlState::Absent
        } else {
            NvmlState::Failed(e.clone())
        };
        st.state = new_state;
        drop(st);
        if e.is_absent() {
            tracing::debug!(error = %e, "NVML not available on this node");
        } else if self.inner.logged.first(e.to_string()) && !self.inner.cfg.quiet {
            let stuck = self.health().stuck_threads;
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, stuck_threads = stuck, "NVML source failed");
        } else {
            tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "NVML source failed");
        }
        e
    }

    /// The worker's request channel and heartbeat, starting a worker when needed and allowed.
    async fn ensure_worker(&self) -> Result<(mpsc::Sender<Request>, Arc<Beat>), Error> {
        {
            let st = lock(&self.inner.state);
            if let Some(w) = &st.worker {
                return Ok((w.tx.clone(), w.beat.clone()));
            }
            if let Some(at) = st.next_attempt
                && Instant::now() < at
            {
                return Err(match &st.state {
                    NvmlState::Failed(e) => e.clone(),
                    _ => Error::Absent("backing off".into()),
                });
            }
        }
        let live = self.inner.live_threads.load(Ordering::SeqCst);
        if live >= self.inner.cfg.max_threads.max(1) {
            return Err(self.fail(Error::Wedged(live), false));
        }
        let (tx, beat, init_rx) = self.spawn()?;
        match self.wait(&beat, init_rx).await {
            Ok(Ok(info)) => {
                let kernel = nvidia_procfs::read_kernel_module(&self.inner.cfg.root);
                let facts = facts(info.driver_version, info.cuda_driver_version, false);
                if version_differs(&facts, kernel.as_ref()) {
                    tracing::warn!(
                        nvml = facts.driver_version.as_deref().unwrap_or("?"),
                        kernel = kernel.as_ref().map(|k| k.version.as_str()).unwrap_or("?"),
                        "NVML driver version differs from the loaded kernel module"
                    );
                }
                let mut st = lock(&self.inner.state);
                st.facts = Some(facts);
                st.worker = Some(Worker {
                    tx: tx.clone(),
                    beat: beat.clone(),
                });
                st.state = NvmlState::Ready;
                st.backoff.reset();
                st.next_attempt = None;
                drop(st);
                self.inner.logged.clear();
                Ok((tx, beat))
            }
            Ok(Err(e)) => {
                if e == Error::VersionMismatch {
                    let mut st = lock(&self.inner.state);
                    st.facts = Some(facts(None, None, true));
                }
                // The thread has already returned; nothing to abandon.
                Err(self.fail(e, true))
            }
            Err(e) => Err(self.fail(e, true)),
        }
    }

    fn spawn(&self) -> Result<Spawned, Error> {
        let cfg = self.inner.cfg.clone();
        let choice = locate::choose(&cfg.root, cfg.lib_path.as_deref());
        let beat = Arc::new(Beat::default());
        let (tx, rx) = mpsc::channel::<Request>();
        let (init_tx, init_rx) = oneshot::channel();
        let live = self.inner.live_threads.clone();
        let xid = self.inner.xid.clone();
        let wbeat = beat.clone();
        live.fetch_add(1, Ordering::SeqCst);
        let guard = LiveGuard(live);
        let spawned = std::thread::Builder::new()
            .name("nvml-worker".into())
            .spawn(move || worker_main(&cfg, &choice, &wbeat, &rx, init_tx, &xid, guard));
        match spawned {
            Ok(_) => {
                self.inner.started.fetch_add(1, Ordering::SeqCst);
                Ok((tx, beat, init_rx))
            }
            // The closure (and the guard in it) was dropped: the count is already back.
            Err(e) => Err(self.fail(Error::Spawn(e.to_string()), false)),
        }
    }
}

/// The worker thread: init, then serve requests until the channel closes.
fn worker_main(
    cfg: &NvmlConfig,
    choice: &LibChoice,
    beat: &Beat,
    rx: &mpsc::Receiver<Request>,
    init_tx: oneshot::Sender<Result<InitInfo, Error>>,
    xid: &Mutex<XidCounts>,
    live: LiveGuard,
) {
    use nvml_wrapper::error::NvmlError;
    let limits = cfg.limits();
    let path = choice.load_path().as_os_str().to_owned();
    let init = beat.call("nvmlInit_v2", limits.slow, || {
        nvml_wrapper::Nvml::builder().lib_path(&path).init()
    });
    let nvml = match init {
        Ok(n) => n,
        Err(e) => {
            let err = match (&e, choice) {
                // Nothing found anywhere: NVML is not installed here.
                (NvmlError::LibloadingError(_), LibChoice::Loader) => {
                    Error::Absent(choice.describe())
                }
                (NvmlError::LibloadingError(le), _) => {
                    Error::Init(format!("loading {}: {le}", choice.describe()))
                }
                (NvmlError::LibRmVersionMismatch, _) => Error::VersionMismatch,
                (e, _) => Error::Init(format!("{} ({})", read::error_text(e), choice.describe())),
            };
            // Not live any more before the waiter hears of it, so it never counts as stuck.
            drop(live);
            let _ = init_tx.send(Err(err));
            return;
        }
    };
    tracing::debug!(library = %choice.describe(), "NVML initialised");
    let driver_version = beat
        .call("nvmlSystemGetDriverVersion", limits.call, || {
            nvml.sys_driver_version()
        })
        .ok();
    let cuda_driver_version = beat
        .call("nvmlSystemGetCudaDriverVersion_v2", limits.call, || {
            nvml.sys_cuda_driver_version()
        })
        .ok()
        .and_then(cuda_version_string);
    if init_tx
        .send(Ok(InitInfo {
            driver_version,
            cuda_driver_version,
        }))
        .is_err()
    {
        // The waiter gave up (init overran its deadline): this worker was abandoned.
        return;
    }
    let set = read::register_xid(&nvml, beat, limits);
    loop {
        match rx.recv_timeout(cfg.xid_poll) {
            Ok(Request::Snapshot(reply)) => {
                if let Some(s) = &set {
                    read::drain_xid(s, beat, limits, xid);
                }
                let pass = read::read_all(&nvml, beat, limits).map_err(|e| Error::Call {
                    call: "nvmlDeviceGetCount_v2",
                    error: read::error_text(&e),
                });
                let _ = reply.send(pass);
            }
            Ok(Request::Run(job)) => job(&nvml, beat, limits),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(s) = &set {
                    read::drain_xid(s, beat, limits, xid);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(set);
    // Dropping `nvml` calls nvmlShutdown on this same thread.
    drop(nvml);
    drop(live);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_versions() {
        assert_eq!(cuda_version_string(12040).as_deref(), Some("12.4"));
        assert_eq!(cuda_version_string(12080).as_deref(), Some("12.8"));
        assert_eq!(cuda_version_string(11020).as_deref(), Some("11.2"));
        assert_eq!(cuda_version_string(0), None);
    }

    #[test]
    fn facts_compare_with_the_kernel_module() {
        let k = KernelModule {
            flavor: "proprietary",
            version: "550.127.05".into(),
        };
        let same = facts(Some("550.127.05".into()), None, false);
        assert!(!version_differs(&same, Some(&k)));
        assert!(!same.version_mismatch);
        let other = facts(Some("550.135".into()), None, false);
        assert!(version_differs(&other, Some(&k)));
        // Without a kernel module version nothing can be compared.
        assert!(!version_differs(&other, None));
        assert!(facts(None, None, true).version_mismatch);
    }

    #[test]
    fn heartbeat_reports_only_overdue_calls() {
        let b = Beat::default();
        assert!(b.overdue().is_none());
        let seen = b.call("fast", Duration::from_secs(10), || b.overdue().is_none());
        assert!(seen);
        let seen = b.call("slow", Duration::from_millis(1), || {
            std::thread::sleep(Duration::from_millis(5));
            b.overdue().map(|c| c.call)
        });
        assert_eq!(seen, Some("slow"));
        assert!(b.overdue().is_none());
    }
}
