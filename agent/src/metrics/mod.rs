//! Prometheus metrics read at scrape time (`docs/reference/metrics.md`).
//!
//! ```text
//!  GET /metrics ──► Exporter::scrape() ──(single flight + short cache)──► one pass:
//!                      │   report series (info, status, modules; from the latest Arc<Report>)
//!                      ├── sysfs/procfs sources one after another on ONE blocking thread:
//!                      │     pci · amdgpu · i915 · xe · nvidia_procfs · talos
//!                      └── library/socket sources each on its own blocking thread:
//!                            (nvml · rocm_smi · podresources · processes); all under one deadline
//!  Snapshot ──► SnapshotCollector (prometheus_client Collector, ConstGauge/ConstCounter)
//!           ──► text 0.0.4 or OpenMetrics, encoded once per snapshot
//! ```
//!
//! Every source is one file in this directory and implements [`Source`]. It reads its kernel files
//! through [`HostRoot`] on a blocking thread (sysfs reads block; the async executor never does
//! them). The sources that [share a thread](Source::shares_thread) cost one thread hop per pass
//! together; if one of them stalls that thread, the rest move to threads of their own (see
//! `run_pass`). Each pass reports `gpuscout_scrape_source_success{source}` and
//! `gpuscout_scrape_source_duration_seconds{source}`. A failing, panicking or slow source is
//! reported as failed and never hides the others; a value that cannot be read is left out
//! (never 0). A failure is logged at `error` once per kind until the source succeeds again
//! (then one `info` line), and at `debug` on every later pass.
//!
//! Concurrent scrapes share one pass (single flight), and a finished pass is reused for
//! `cache` (default 500 ms), so N clients cost one sysfs pass. A pass has a deadline; sources
//! still running at the deadline are reported failed and the rest is served. A source whose
//! previous call is still running (hung sysfs read) is not started again until it returns.

pub mod amdgpu;
pub mod families;
pub mod hwmon;
pub mod i915;
pub mod kept;
pub mod nvidia_procfs;
pub mod pci;
pub mod report;
pub mod talos;
pub mod xe;

use crate::hostroot::HostRoot;
use crate::lock::lock;
use crate::model::Report;
use families::Desc;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// Content type of OpenMetrics text 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why a source did not deliver all of its readings.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file that exists could not be read (permission, I/O, not text).
    #[error(transparent)]
    Read(#[from] crate::hostroot::Error),
    /// A file was read but its content is not what the kernel documents.
    #[error("{path}: {reason}")]
    Malformed { path: String, reason: String },
    /// A library call failed (NVML, ROCm SMI).
    #[error("{0}")]
    Library(String),
    /// The pass deadline passed before the source returned.
    #[error("deadline of {0:?} exceeded")]
    Timeout(Duration),
    /// The previous call of this source has not returned yet.
    #[error("previous call still running")]
    Busy,
    /// The source panicked.
    #[error("source panicked")]
    Panicked,
}

impl SourceError {
    /// Bounded label value for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SourceError::Read(e) => e.metric_label(),
            SourceError::Malformed { .. } => "malformed",
            SourceError::Library(_) => "library",
            SourceError::Timeout(_) => "timeout",
            SourceError::Busy => "busy",
            SourceError::Panicked => "panicked",
        }
    }
}

/// What a source gets for one pass.
#[derive(Debug, Clone)]
pub struct ScrapeContext {
    pub root: HostRoot,
    /// The latest discovery report: which GPUs exist, their PCI address, vendor and driver.
    pub report: Arc<Report>,
}

/// One source of readings (a kernel interface or a vendor library).
///
/// Contract, for the sources in this directory and for the NVML / ROCm SMI sources written in
/// `agent/src/nvml/` (register them with [`Exporter::new`]'s `sources` list, e.g. through
/// `serve::Daemon::add_source`):
/// - [`name`](Source::name) MUST be a short, stable, lower-case value (`nvml`, `rocm_smi`): it
///   is the `source` label of the scrape-health series.
/// - [`collect`](Source::collect) is called once per scrape pass on a blocking thread; it MAY
///   block (sysfs reads, library calls) but SHOULD return well within the scrape deadline. It
///   is never called again while a previous call is still running.
/// - It MUST push only values it actually read. A value that cannot be read is left out, never
///   pushed as 0. Per-GPU series carry the PCI address (`0000:03:00.0`, as in the report) as
///   label `gpu`; identity (model, uuid, ...) belongs in `gpuscout_gpu_info` only.
/// - It SHOULD keep going after a failed read and return the first real error at the end: what
///   was pushed before and after is served, and `gpuscout_scrape_source_success{source}` is 0.
///   "No such file" for an optional attribute is not an error.
/// - It MUST NOT panic on host or library data (a panic is caught and reported as a failure).
/// - [`shares_thread`](Source::shares_thread) says whether it may run on the pass's shared
///   blocking thread; the default (`false`, a thread of its own) is right for library and
///   socket calls.
pub trait Source: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError>;

    /// True when the source only reads kernel files (sysfs, procfs) and returns in
    /// microseconds: it then runs on one blocking thread with the other such sources, one
    /// after another, instead of on a thread of its own. A source that stalls that thread is
    /// moved to a thread of its own for good, so `true` costs nothing but speed when wrong.
    fn shares_thread(&self) -> bool {
        false
    }
}

/// One sample: label pairs and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// Samples of one metric family.
#[derive(Debug, Clone)]
pub struct Family {
    pub desc: &'static Desc,
    pub samples: Vec<Sample>,
}

/// Where sources push samples. Families are keyed by name, so two sources may feed the same
/// family (`gpuscout_gpu_clock_hertz` from amdgpu and i915) and it is still encoded once.
#[derive(Debug, Default, Clone)]
pub struct Sink {
    families: BTreeMap<&'static str, Family>,
}

impl Sink {
    /// Push one sample.
    pub fn push(
        &mut self,
        desc: &'static Desc,
        mut labels: Vec<(&'static str, String)>,
        value: f64,
    ) {
        if !value.is_finite() {
            return;
        }
        // Label values come from host files and libraries: bounded, with a marker when cut.
        for (_, v) in &mut labels {
            crate::textcap::cap(v, crate::textcap::MAX_VALUE);
        }
        self.families
            .entry(desc.name)
            .or_insert_with(|| Family {
                desc,
                samples: Vec::new(),
            })
            .samples
            .push(Sample { labels, value });
    }

    /// Push a sample when the value was read; do nothing otherwise (absent, never 0).
    pub fn push_opt(
        &mut self,
        desc: &'static Desc,
        labels: Vec<(&'static str, String)>,
        value: Option<f64>,
    ) {
        if let Some(v) = value {
            self.push(desc, labels, v);
        }
    }

    /// Move every sample of `other` into this sink.
    pub fn merge(&mut self, other: Sink) {
        for (name, fam) in other.families {
            match self.families.get_mut(name) {
                Some(f) => f.samples.extend(fam.samples),
                None => {
                    self.families.insert(name, fam);
                }
            }
        }
    }

    /// The families, by name.
    pub fn families(&self) -> impl Iterator<Item = &Family> {
        self.families.values()
    }

    /// Samples of one family (tests and golden checks).
    pub fn samples(&self, name: &str) -> &[Sample] {
        self.families
            .get(name)
            .map(|f| f.samples.as_slice())
            .unwrap_or(&[])
    }
}

/// Records the first real error of a source while it keeps reading.
#[derive(Debug, Default)]
pub struct Errors {
    first: Option<SourceError>,
}

impl Errors {
    /// Unwrap a read: `Some` on success, `None` when the file is absent (silently) or broken
    /// (remembered as the source's error).
    pub fn ok<T>(&mut self, r: Result<T, crate::hostroot::Error>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                self.note(SourceError::Read(e));
                None
            }
        }
    }

    /// Remember an error (the first one is returned at the end).
    pub fn note(&mut self, e: SourceError) {
        tracing::debug!(error = %e, "metrics read failed");
        if self.first.is_none() {
            self.first = Some(e);
        }
    }

    /// `Err` with the first error, if any.
    pub fn finish(self) -> Result<(), SourceError> {
        match self.first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The result of one pass, with its encodings made on first use.
#[derive(Debug)]
pub struct Snapshot {
    pub sink: Sink,
    text: OnceLock<Arc<str>>,
    openmetrics: OnceLock<Arc<str>>,
}

impl Snapshot {
    pub fn new(sink: Sink) -> Self {
        Self {
            sink,
            text: OnceLock::new(),
            openmetrics: OnceLock::new(),
        }
    }

    /// The Prometheus text format 0.0.4 of this snapshot (encoded once).
    pub fn text(self: &Arc<Self>) -> Arc<str> {
        self.text
            .get_or_init(|| {
                let mut s = String::with_capacity(8192);
                // Writing into a String cannot fail.
                let _ =
                    prometheus_client::encoding::prometheus_text::encode(&mut s, &self.registry());
                s.into()
            })
            .clone()
    }

    /// The OpenMetrics 1.0 text of this snapshot (encoded once), ending in `# EOF`.
    pub fn openmetrics(self: &Arc<Self>) -> Arc<str> {
        self.openmetrics
            .get_or_init(|| {
                let mut s = String::with_capacity(8192);
                let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry());
                s.into()
            })
            .clone()
    }

    fn registry(self: &Arc<Self>) -> Registry {
        let mut reg = Registry::with_prefix("gpuscout");
        reg.register_collector(Box::new(SnapshotCollector(self.clone())));
        reg
    }
}

/// A `/metrics` body: the cached snapshot text itself (no copy), or a copy with more appended.
#[derive(Debug, Clone)]
pub enum Exposition {
    Shared(Arc<str>),
    Owned(String),
}

impl Exposition {
    pub fn as_str(&self) -> &str {
        match self {
            Exposition::Shared(s) => s,
            Exposition::Owned(s) => s,
        }
    }
}

impl AsRef<[u8]> for Exposition {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

/// The full exposition: the snapshot, then `extra` (a registry of live metrics such as
/// `gpuscout_label_sync_total`, encoded now, not cached), then `# EOF` for OpenMetrics. Without
/// `extra` this is the cached text itself, shared by every scrape of the snapshot.
pub fn exposition(snap: &Arc<Snapshot>, extra: Option<&Registry>, openmetrics: bool) -> Exposition {
    let part = if openmetrics {
        snap.openmetrics()
    } else {
        snap.text()
    };
    let Some(reg) = extra else {
        return Exposition::Shared(part);
    };
    let head = if openmetrics {
        part.strip_suffix("# EOF\n").unwrap_or(&part)
    } else {
        &part
    };
    let mut s = String::with_capacity(part.len() + 2048);
    s.push_str(head);
    // Writing into a String cannot fail.
    let _ = if openmetrics {
        prometheus_client::encoding::text::encode(&mut s, reg)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut s, reg)
    };
    Exposition::Owned(s)
}

/// Encodes a snapshot with `ConstGauge`/`ConstCounter` (the linkerd collect-on-scrape pattern).
#[derive(Debug)]
struct SnapshotCollector(Arc<Snapshot>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for fam in self.0.sink.families() {
            let kind = match fam.desc.kind {
                families::Kind::Gauge => MetricType::Gauge,
                families::Kind::Counter => MetricType::Counter,
            };
            let mut fe = encoder.encode_descriptor(fam.desc.name, fam.desc.help, None, kind)?;
            for s in &fam.samples {
                let me = fe.encode_family(&s.labels)?;
                match fam.desc.kind {
                    families::Kind::Gauge => ConstGauge::new(s.value).encode(me)?,
                    families::Kind::Counter => ConstCounter::new(s.value).encode(me)?,
                }
            }
        }
        Ok(())
    }
}

/// Settings of the exporter.
#[derive(Debug, Clone)]
pub struct ExporterConfig {
    /// Deadline of one pass; sources still running then are reported failed.
    pub deadline: Duration,
    /// How long a finished pass is reused for later scrapes.
    pub cache: Duration,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(4),
            cache: Duration::from_millis(500),
        }
    }
}

/// Names of every metrics source `serve` can run (`--disable-source` takes these): the built-in
/// [`default_sources`], `nvml` (`crate::nvml::source`), the pod-attribution sources
/// `podresources` and `processes` (`crate::pods`, which also have flags of their own) and, with
/// the feature `rocm-smi`, `rocm_smi` (`crate::rocm::source`).
pub const SOURCE_NAMES: &[&str] = &[
    "pci",
    "amdgpu",
    "i915",
    "xe",
    "nvidia_procfs",
    "talos",
    "nvml",
    "podresources",
    "processes",
    #[cfg(feature = "rocm-smi")]
    "rocm_smi",
];

/// The built-in sysfs/procfs sources, in output order.
pub fn default_sources() -> Vec<Arc<dyn Source>> {
    vec![
        Arc::new(pci::Pci::default()),
        Arc::new(amdgpu::Amdgpu::default()),
        Arc::new(i915::I915::default()),
        Arc::new(xe::Xe::default()),
        Arc::new(nvidia_procfs::NvidiaProcfs),
        Arc::new(talos::Talos),
    ]
}

type PassFuture = Shared<BoxFuture<'static, Option<Arc<Snapshot>>>>;

#[derive(Default)]
struct State {
    pending: Option<PassFuture>,
    last: Option<(Instant, Arc<Snapshot>)>,
}

struct SourceSlot {
    source: Arc<dyn Source>,
    busy: AtomicBool,
    /// Runs on a blocking thread of its own (not [`Source::shares_thread`], or it stalled the
    /// shared thread once).
    isolated: AtomicBool,
    /// Failure kinds already logged at `error` since the source last succeeded.
    failures: crate::logonce::LogOnce<&'static str>,
}

struct Inner {
    root: HostRoot,
    sources: Vec<SourceSlot>,
    reports: watch::Receiver<Arc<Report>>,
    config: ExporterConfig,
    state: Mutex<State>,
    passes: AtomicU64,
}

/// Runs scrape passes: single flight, short cache, per-pass deadline.
#[derive(Clone)]
pub struct Exporter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    pub fn new(
        root: HostRoot,
        reports: watch::Receiver<Arc<Report>>,
        sources: Vec<Arc<dyn Source>>,
        config: ExporterConfig,
    ) -> Self {
        let sources = sources
            .into_iter()
            .map(|source| SourceSlot {
                isolated: AtomicBool::new(!source.shares_thread()),
                source,
                busy: AtomicBool::new(false),
                failures: crate::logonce::LogOnce::new(),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                root,
                sources,
                reports,
                config,
                state: Mutex::new(State::default()),
                passes: AtomicU64::new(0),
            }),
        }
    }

    /// Number of passes run so far (each pass reads sysfs once per source).
    pub fn passes(&self) -> u64 {
        self.inner.passes.load(Ordering::Relaxed)
    }

    /// Join the pass in flight, reuse a pass younger than the cache time, or start a new one.
    /// The decision is taken now, not when the returned future is first polled. Must be called
    /// inside a Tokio runtime. `None` only if the pass itself died.
    pub fn scrape(&self) -> PassFuture {
        let mut st = lock(&self.inner.state);
        if let Some((at, snap)) = &st.last
            && at.elapsed() < self.inner.config.cache
        {
            let snap = snap.clone();
            return async move { Some(snap) }.boxed().shared();
        }
        if let Some(p) = &st.pending {
            return p.clone();
        }
        let inner = self.inner.clone();
        let handle = tokio::spawn(async move {
            let guard = PendingGuard(inner.clone());
            let snap = Arc::new(run_pass(&inner).await);
            let mut st = lock(&inner.state);
            st.last = Some((Instant::now(), snap.clone()));
            drop(st);
            drop(guard);
            snap
        });
        let fut = async move { handle.await.ok() }.boxed().shared();
        st.pending = Some(fut.clone());
        fut
    }
}

/// Clears the in-flight marker when a pass ends, even by panic.
struct PendingGuard(Arc<Inner>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        lock(&self.0.state).pending = None;
    }
}

/// What one source's call gave: name, samples, result, time taken.
type Outcome = (&'static str, Sink, Result<(), SourceError>, Duration);

/// Run one source on the current thread: skipped as busy while a previous call still runs,
/// panics caught. Called on a blocking thread.
fn run_source(slot: &SourceSlot, ctx: &ScrapeContext) -> Outcome {
    let name = slot.source.name();
    let start = Instant::now();
    if slot.busy.swap(true, Ordering::AcqRel) {
        return (
            name,
            Sink::default(),
            Err(SourceError::Busy),
            start.elapsed(),
        );
    }
    let mut out = Sink::default();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        slot.source.collect(ctx, &mut out)
    }));
    slot.busy.store(false, Ordering::Release);
    match r {
        Ok(r) => (name, out, r, start.elapsed()),
        Err(_) => (
            name,
            Sink::default(),
            Err(SourceError::Panicked),
            start.elapsed(),
        ),
    }
}

/// Start source `i` on a blocking thread of its own now; the returned future waits for it
/// under the pass deadline.
fn run_isolated(
    inner: &Arc<Inner>,
    i: usize,
    ctx: ScrapeContext,
    deadline: tokio::time::Instant,
) -> BoxFuture<'static, (usize, Outcome)> {
    let start = Instant::now();
    let name = inner.sources[i].source.name();
    let limit = inner.config.deadline;
    let task = tokio::task::spawn_blocking({
        let inner = inner.clone();
        move || run_source(&inner.sources[i], &ctx)
    });
    async move {
        let o = match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => (
                name,
                Sink::default(),
                Err(SourceError::Panicked),
                start.elapsed(),
            ),
            Err(_) => (
                name,
                Sink::default(),
                Err(SourceError::Timeout(limit)),
                start.elapsed(),
            ),
        };
        (i, o)
    }
    .boxed()
}

/// One pass. Sources that [share a thread](Source::shares_thread) run one after another on a
/// single blocking thread (one thread hop per pass, not one per source); the others run on a
/// thread each. If the shared thread makes no progress for an eighth of the deadline (a sysfs
/// read hangs), the sources it has not started yet are moved to threads of their own, and the
/// one it is stuck in runs on a thread of its own in later passes; so a hung source never
/// blocks the others, and every source is still bounded by the deadline.
async fn run_pass(inner: &Arc<Inner>) -> Snapshot {
    inner.passes.fetch_add(1, Ordering::Relaxed);
    let report = inner.reports.borrow().clone();
    let deadline = tokio::time::Instant::now() + inner.config.deadline;
    let stall = inner.config.deadline / 8;
    let mut sink = Sink::default();
    report::collect(&report, &mut sink);
    let ctx = ScrapeContext {
        root: inner.root.clone(),
        report,
    };
    let (shared, own): (Vec<usize>, Vec<usize>) =
        (0..inner.sources.len()).partition(|&i| !inner.sources[i].isolated.load(Ordering::Relaxed));
    let mut isolated = futures::stream::FuturesUnordered::new();
    for i in own {
        isolated.push(run_isolated(inner, i, ctx.clone(), deadline));
    }
    let mut outcomes: Vec<Option<Outcome>> = (0..inner.sources.len()).map(|_| None).collect();
    if !shared.is_empty() {
        let queue = Arc::new(Mutex::new(std::collections::VecDeque::from(shared)));
        // usize::MAX: between sources.
        let current = Arc::new(AtomicU64::new(u64::MAX));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let runner = {
            let (inner, ctx, queue, current) =
                (inner.clone(), ctx.clone(), queue.clone(), current.clone());
            move || {
                loop {
                    let Some(i) = lock(&queue).pop_front() else {
                        return;
                    };
                    current.store(i as u64, Ordering::Release);
                    let o = run_source(&inner.sources[i], &ctx);
                    current.store(u64::MAX, Ordering::Release);
                    if tx.send((i, o)).is_err() {
                        return;
                    }
                }
            }
        };
        drop(tokio::task::spawn_blocking(runner));
        loop {
            let wait = (tokio::time::Instant::now() + stall).min(deadline);
            match tokio::time::timeout_at(wait, rx.recv()).await {
                Ok(Some((i, o))) => outcomes[i] = Some(o),
                // The runner is done (queue empty) or died: what it did not deliver is
                // settled below.
                Ok(None) => break,
                Err(_) => {
                    // No progress: move the rest off the shared thread.
                    let stuck = current.load(Ordering::Acquire);
                    if let Some(slot) = usize::try_from(stuck)
                        .ok()
                        .and_then(|i| inner.sources.get(i))
                    {
                        slot.isolated.store(true, Ordering::Relaxed);
                        tracing::warn!(
                            source = slot.source.name(),
                            "metrics source stalled the shared scrape thread; it runs on a thread of its own from now on"
                        );
                    }
                    let rest: Vec<usize> = lock(&queue).drain(..).collect();
                    for i in rest {
                        isolated.push(run_isolated(inner, i, ctx.clone(), deadline));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    // Keep waiting for the stuck one, up to the deadline.
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some((i, o))) => outcomes[i] = Some(o),
                        _ => break,
                    }
                }
            }
        }
    }
    while let Some((i, o)) = isolated.next().await {
        outcomes[i] = Some(o);
    }
    for (i, o) in outcomes.into_iter().enumerate() {
        // Not delivered: started on the shared thread and still running at the deadline, or
        // the shared thread died.
        let (name, out, result, took) = o.unwrap_or_else(|| {
            (
                inner.sources[i].source.name(),
                Sink::default(),
                Err(SourceError::Timeout(inner.config.deadline)),
                inner.config.deadline,
            )
        });
        sink.merge(out);
        let failures = &inner.sources[i].failures;
        let ok = match &result {
            Ok(()) => {
                if failures.clear() {
                    tracing::info!(source = name, "metrics source recovered");
                }
                true
            }
            Err(e) if failures.first(e.metric_label()) => {
                tracing::error!(source = name, kind = e.metric_label(), error = %e, "metrics source failed");
                false
            }
            Err(e) => {
                tracing::debug!(source = name, kind = e.metric_label(), error = %e, "metrics source still failing");
                false
            }
        };
        let labels = vec![("source", name.to_owned())];
        sink.push(
            &families::SCRAPE_SOURCE_SUCCESS,
            labels.clone(),
            f64::from(u8::from(ok)),
        );
        sink.push(
            &families::SCRAPE_SOURCE_DURATION,
            labels,
            took.as_secs_f64(),
        );
    }
    Snapshot::new(sink)
}

/// The `gpu` label of a GPU (its PCI address).
pub(crate) fn gpu_label(addr: &str) -> Vec<(&'static str, String)> {
    vec![("gpu", addr.to_owned())]
}

/// Parse a decimal integer attribute; a malformed value is an error, an empty one absent.
pub(crate) fn parse_num(errors: &mut Errors, path: &str, text: Option<String>) -> Option<f64> {
    let t = text?;
    let t = t.trim();
    if t.is_empty() {
        return None;
    }
    match t.parse::<i64>() {
        Ok(v) => Some(v as f64),
        Err(_) => {
            errors.note(SourceError::Malformed {
                path: path.to_owned(),
                reason: format!("not an integer: {t:?}"),
            });
            None
        }
    }
}
