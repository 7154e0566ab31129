//! The label-sync task: one sequential loop per agent, so at most one write is ever in flight.
//!
//! Each turn it (1) writes the NFD file in `nfd-file` mode, (2) makes sure it has seen its Node
//! (a metadata-only LIST with `fieldSelector=metadata.name=<node>`) and holds a metadata-only
//! WATCH of it from that resourceVersion, (3) in `node` mode applies the label set when it
//! differs from what the Node carries, then clears stale prefix keys SSA cannot remove, and in
//! `nodefeature` mode applies the NodeFeature when its labels differ. Then it waits for a new
//! report, a watch event, the end of a backoff, or shutdown. Watch events update the view of
//! the Node, so a `kubectl label --overwrite` of one of our keys, or a re-created Node, leads to
//! a re-apply on the next turn; events that change nothing of ours lead to no write.
//!
//! A Node that is absent (wrong NODE_NAME, or deleted) is reported (`result="node_not_found"`,
//! one error log) and waited for on the watch; nothing is ever created.
//!
//! Recovery and drift, as a real API server needs them:
//! - a watch that ran its course is renewed from its last resourceVersion (no LIST); one that
//!   ended midway (an API server restart cuts every watch), fell silent, or was answered 410
//!   Expired or 504 with cause `ResourceVersionTooLarge` is followed by a fresh LIST, so a
//!   server whose watch history or resourceVersion went back (etcd restored or re-created)
//!   cannot leave the agent watching from a version the server will not reach for hours;
//! - every `resync` (10 min, +0-20 % jitter) a LIST compares the Node with the desired set,
//!   so a missed event is corrected; a LIST whose resourceVersion is below the one being
//!   watched restarts the watch from the LIST;
//! - watch events older than the Node view we hold (numeric resourceVersions, as every
//!   etcd-backed server gives) are ignored, so a late event never rolls back our own write;
//! - keys under our prefix that another manager owns cost one merge patch, never an apply
//!   that cannot remove them;
//! - start-up waits a random time that grows with the cluster (`start_jitter_per_node` times
//!   the Node count from one `limit=1` LIST, at most `start_jitter_max`) before its LIST,
//!   WATCH and first write, so a single node is labelled within about a second of its first
//!   discovery and 5,000 agents still spread out.

use super::LabelMode;
use super::events::{EventLimiter, VerdictChange, event_body, verdict_changes};
use super::metrics::SyncMetrics;
use super::nfd::{nfd_file_text, nodefeature_body, nodefeature_name, write_nfd_file};
use super::owned::{
    FIELD_MANAGER, NODES, NodeView, extensions_from_node, needs_apply, remove_labels_request,
    stale_prefix_keys,
};
use super::{Error, Kind};
use crate::backoff::Backoff;
use crate::logonce::LogOnce;
use crate::model::{Extension, Report, Status};
use futures::{Stream, StreamExt};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use kube::Client;
use kube::core::params::{GetParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::core::{
    ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta, Resource, WatchEvent,
};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// How long shutdown waits for a turn in progress (the pod's default grace period is 30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Longest pause before renewing a watch the server dropped midway.
const DROPPED_WATCH_JITTER: Duration = Duration::from_secs(5);

/// Largest API response body read (then parsed as JSON; serde_json limits nesting to 128).
const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// First-write jitter when the cluster's size cannot be learnt.
const UNKNOWN_CLUSTER_JITTER: Duration = Duration::from_secs(10);

/// Verdict changes kept while the Node is unknown or the API is away.
const MAX_PENDING_EVENTS: usize = 20;

/// Settings of the sync loop. [`SyncConfig::new`] gives production defaults.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub node_name: String,
    /// Label prefix we own (`gpuscout.io`).
    pub prefix: String,
    pub mode: LabelMode,
    pub nfd_file: PathBuf,
    pub nodefeature_namespace: String,
    /// Post Events on verdict changes.
    pub events: bool,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// The first request waits a random time in `[0, start_jitter)`. Retries after failures
    /// are spread by the backoff's own jitter.
    pub start_jitter: Duration,
    /// After that first request (a metadata LIST with `limit=1` that counts the cluster's
    /// Nodes), the first LIST of the Node, its WATCH and the first write wait a further random
    /// time in `[0, min(nodes * start_jitter_per_node, start_jitter_max))`: a fleet restarted
    /// or installed at once spreads out, a small cluster is labelled at once. When the count
    /// fails or the server does not give it, 10 s. Zero skips the count.
    pub start_jitter_per_node: Duration,
    pub start_jitter_max: Duration,
    /// Period of the full resync (a LIST of the Node compared with the desired labels); a
    /// random 0-20 % is added each time. Zero turns it off.
    pub resync: Duration,
    /// Shortest `timeoutSeconds` of a WATCH; each watch asks for a random value in
    /// `[watch_timeout_s, 2 * watch_timeout_s)` (as client-go's reflector does), so renewals of
    /// agents that started together drift apart. The server ends the watch then and we
    /// re-watch from the last resourceVersion.
    pub watch_timeout_s: u32,
    /// Limit of one non-watch request; also bounds how long shutdown waits for it.
    pub request_timeout: Duration,
    pub event_burst: u32,
    pub event_every: Duration,
    /// Fixed seed for the jitter (tests, simulations); random when `None`.
    pub seed: Option<u64>,
}

impl SyncConfig {
    pub fn new(node_name: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            prefix: prefix.into(),
            mode: LabelMode::Node,
            nfd_file: PathBuf::from("/etc/kubernetes/node-feature-discovery/features.d/gpuscout"),
            nodefeature_namespace: "gpuscout".to_owned(),
            events: true,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            start_jitter: Duration::from_secs(1),
            start_jitter_per_node: Duration::from_millis(2),
            start_jitter_max: Duration::from_secs(30),
            resync: Duration::from_secs(600),
            watch_timeout_s: 300,
            request_timeout: Duration::from_secs(10),
            event_burst: 5,
            event_every: Duration::from_secs(60),
            seed: None,
        }
    }
}

/// Keeps one Node's labels in sync; see the module docs. Create with [`LabelSync::new`], hand
/// [`LabelSync::extensions`] to the verdict engine, then spawn [`LabelSync::run`].
pub struct LabelSync {
    cfg: SyncConfig,
    client: Option<Client>,
    metrics: SyncMetrics,
    ext_tx: watch::Sender<Option<Vec<Extension>>>,
}

impl LabelSync {
    /// `client` is `None` when there is no cluster (standalone exporter); then only
    /// `nfd-file` mode does anything. The metrics are registered into `registry`.
    pub fn new(cfg: SyncConfig, client: Option<Client>, registry: &mut Registry) -> Self {
        let metrics = SyncMetrics::new();
        metrics.register(registry);
        Self::with_metrics(cfg, client, metrics)
    }

    /// Same as [`LabelSync::new`] with metrics the caller registers (or not) itself.
    pub fn with_metrics(cfg: SyncConfig, client: Option<Client>, metrics: SyncMetrics) -> Self {
        let (ext_tx, _) = watch::channel(None);
        Self {
            cfg,
            client,
            metrics,
            ext_tx,
        }
    }

    pub fn metrics(&self) -> SyncMetrics {
        self.metrics.clone()
    }

    /// Talos extensions from the Node's `extensions.talos.dev/*` labels and annotations
    /// (`None` until the Node has been seen, and while it carries no such key), for
    /// `verdict::Evidence::node_extensions`.
    pub fn extensions(&self) -> watch::Receiver<Option<Vec<Extension>>> {
        self.ext_tx.subscribe()
    }

    /// Run until `shutdown` resolves or the report sender is dropped. The channel's current
    /// value must be a real discovery report (create the channel with the first pass's
    /// report), because its labels are applied as the complete owned set. Labels are left on
    /// the Node when this returns.
    #[tracing::instrument(name = "label_sync", skip_all, fields(node = %self.cfg.node_name, mode = ?self.cfg.mode))]
    pub async fn run(
        self,
        mut reports: watch::Receiver<Arc<Report>>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut r = Runner::new(self);
        if r.cfg.node_name.is_empty() && r.client.is_some() {
            error!(error = %Error::NoNodeName, "label sync disabled: it cannot tell which Node is its own");
            r.metrics.sync_result("no_node_name");
            shutdown.await;
            return;
        }
        let first = reports.borrow_and_update().clone();
        r.on_report(first);
        let jitter = r.backoff.jitter(r.cfg.start_jitter);
        if !jitter.is_zero() {
            r.retry_at = Some(Instant::now() + jitter);
        }
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            if r.retry_at.is_none_or(|t| Instant::now() >= t) {
                r.retry_at = None;
                let turn = r.turn();
                tokio::pin!(turn);
                let stopping = tokio::select! {
                    () = &mut turn => false,
                    () = &mut shutdown => {
                        // Let the write in flight finish, within the pod's grace period.
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, turn).await;
                        true
                    }
                };
                if stopping {
                    break;
                }
            }
            let retry_at = r.retry_at;
            let watch_deadline = r.watch_deadline;
            let resync_at = r.resync_at;
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                changed = reports.changed() => match changed {
                    Ok(()) => {
                        let rep = reports.borrow_and_update().clone();
                        r.on_report(rep);
                    }
                    Err(_) => break,
                },
                ev = next_event(&mut r.watch, watch_deadline) => r.on_watch(ev),
                () = sleep_until_opt(retry_at) => {}
                () = sleep_until_opt(resync_at) => {
                    debug!(node = %r.cfg.node_name, "periodic resync");
                    r.resync_at = None;
                    r.relist = true;
                }
            }
        }
        info!(node = %r.cfg.node_name, "label sync stopped; labels stay on the Node");
    }
}

type MetaEvent = WatchEvent<PartialObjectMeta<Node>>;
type WatchStream = Pin<Box<dyn Stream<Item = Result<MetaEvent, kube::Error>> + Send>>;

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// What a watch produced: an event, its end (`None`), or silence past the deadline.
enum WatchNext {
    Event(Box<Result<MetaEvent, kube::Error>>),
    Ended,
    Silent,
}

async fn next_event(w: &mut Option<WatchStream>, deadline: Option<Instant>) -> WatchNext {
    let Some(s) = w.as_mut() else {
        return std::future::pending().await;
    };
    let next = s.next();
    match deadline {
        Some(d) => match tokio::time::timeout_at(d, next).await {
            Ok(Some(e)) => WatchNext::Event(Box::new(e)),
            Ok(None) => WatchNext::Ended,
            Err(_) => WatchNext::Silent,
        },
        None => match next.await {
            Some(e) => WatchNext::Event(Box::new(e)),
            None => WatchNext::Ended,
        },
    }
}

#[derive(Deserialize)]
struct MetaOnly {
    #[serde(default)]
    metadata: ObjectMeta,
}

#[derive(Deserialize)]
struct MetaList {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<MetaOnly>,
}

#[derive(Deserialize)]
struct NodeFeatureSpecOnly {
    #[serde(default)]
    spec: Option<NodeFeatureSpec>,
}

#[derive(Deserialize)]
struct NodeFeatureSpec {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Result of one turn.
enum Outcome {
    Unchanged,
    Wrote,
    NodeAbsent,
    /// Waiting for the start-up spread: nothing done yet.
    Deferred,
}

struct Runner {
    cfg: SyncConfig,
    client: Option<Client>,
    metrics: SyncMetrics,
    ext_tx: watch::Sender<Option<Vec<Extension>>>,
    report: Option<Arc<Report>>,
    node: Option<NodeView>,
    /// The Node was absent at the last LIST or deleted on the watch.
    node_absent: bool,
    watch: Option<WatchStream>,
    watch_rv: Option<String>,
    watch_started: Option<Instant>,
    /// `timeoutSeconds` asked for by the current watch.
    watch_timeout: Duration,
    watch_deadline: Option<Instant>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    file_text: Option<String>,
    nodefeature_labels: Option<BTreeMap<String, String>>,
    prev_status: BTreeMap<String, Status>,
    pending_events: Vec<VerdictChange>,
    limiter: EventLimiter,
    /// Failure kinds logged since the last successful sync (each is logged once).
    logged: LogOnce<&'static str>,
    /// Event posts: a failure is logged once until a post succeeds again. Separate from
    /// `logged`, so a failing Event neither hides nor fakes a "label sync recovered".
    events_logged: LogOnce<()>,
    /// LIST before the next watch or write (resync due, watch cut midway, 410, 504).
    relist: bool,
    resync_at: Option<Instant>,
    /// The start-up spread (cluster-size jitter) has been waited for.
    spread_done: bool,
}

impl Runner {
    fn new(s: LabelSync) -> Self {
        let backoff = match s.cfg.seed {
            Some(seed) => Backoff::with_seed(s.cfg.backoff_base, s.cfg.backoff_cap, seed),
            None => Backoff::new(s.cfg.backoff_base, s.cfg.backoff_cap),
        };
        let limiter = EventLimiter::new(s.cfg.event_burst, s.cfg.event_every);
        Self {
            cfg: s.cfg,
            client: s.client,
            metrics: s.metrics,
            ext_tx: s.ext_tx,
            report: None,
            node: None,
            node_absent: false,
            watch: None,
            watch_rv: None,
            watch_started: None,
            watch_timeout: Duration::ZERO,
            watch_deadline: None,
            backoff,
            retry_at: None,
            file_text: None,
            nodefeature_labels: None,
            prev_status: BTreeMap::new(),
            pending_events: Vec::new(),
            limiter,
            logged: LogOnce::new(),
            events_logged: LogOnce::new(),
            relist: false,
            resync_at: None,
            spread_done: false,
        }
    }

    fn on_report(&mut self, report: Arc<Report>) {
        if self.cfg.events && self.client.is_some() {
            let changes = verdict_changes(&self.prev_status, &report.gpus);
            self.pending_events.extend(changes);
            // Bounded: a long outage keeps only the latest changes.
            let excess = self.pending_events.len().saturating_sub(MAX_PENDING_EVENTS);
            if excess > 0 {
                self.pending_events.drain(..excess);
                for _ in 0..excess {
                    self.metrics.event("dropped");
                }
            }
        }
        self.prev_status = report
            .gpus
            .iter()
            .map(|g| (g.pci_address.to_string(), g.status))
            .collect();
        self.report = Some(report);
    }

    /// One turn of the loop: sync, bookkeeping of success or failure, then queued Events.
    async fn turn(&mut self) {
        // While the API fails, Events stay queued (bounded) rather than fail one by one.
        if self.sync_and_count().await {
            self.post_events().await;
        }
    }

    /// Whether the API answered.
    async fn sync_and_count(&mut self) -> bool {
        match self.sync_once().await {
            Ok(Outcome::NodeAbsent) => {
                self.metrics.sync_result("node_not_found");
                if self.logged.first("node_not_found") {
                    error!(
                        node = %self.cfg.node_name,
                        "Node not found: check NODE_NAME (downward API spec.nodeName); waiting for it to appear, nothing is created"
                    );
                }
                true
            }
            Ok(Outcome::Deferred) => false,
            Ok(outcome) => {
                let wrote = matches!(outcome, Outcome::Wrote);
                self.metrics
                    .sync_result(if wrote { "applied" } else { "unchanged" });
                self.metrics.mark_synced();
                if self.logged.clear() {
                    info!(node = %self.cfg.node_name, "label sync recovered");
                }
                self.backoff.reset();
                true
            }
            Err(e) => {
                self.on_error(e);
                false
            }
        }
    }

    fn on_error(&mut self, e: Error) {
        if matches!(e, Error::Gone | Error::TooLarge { .. }) {
            // Not an outage: the server's watch history or resourceVersion moved (compaction, a
            // restart, a restored etcd). LIST again, after the server's Retry-After if any.
            self.metrics.sync_result(e.metric_label());
            debug!(node = %self.cfg.node_name, error = %e, "listing the Node again");
            self.drop_watch();
            self.watch_rv = None;
            self.node = None;
            self.relist = true;
            let pause = e.retry_after().unwrap_or(Duration::ZERO)
                + self.backoff.jitter(Duration::from_secs(1));
            self.retry_at = Some(Instant::now() + pause);
            return;
        }
        let label = e.metric_label();
        self.metrics.sync_result(label);
        let delay = self.backoff.next_delay(e.retry_after());
        if self.logged.first(label) {
            match e {
                Error::Forbidden(_)
                | Error::NotFound {
                    kind: Kind::Node, ..
                } => {
                    error!(node = %self.cfg.node_name, error = %e, retry_in = ?delay, "label sync failed; check the agent's RBAC and NODE_NAME")
                }
                Error::NotFound { .. } => {
                    error!(node = %self.cfg.node_name, error = %e, retry_in = ?delay, "label sync failed; what it writes to does not exist")
                }
                _ => {
                    warn!(node = %self.cfg.node_name, error = %e, retry_in = ?delay, "label sync failed; retrying with backoff")
                }
            }
        } else {
            debug!(node = %self.cfg.node_name, error = %e, retry_in = ?delay, "label sync failed again");
        }
        if matches!(e, Error::Conflict(_) | Error::Transport(_)) {
            // Our view may be stale (a conflict), or the server may have restarted meanwhile:
            // LIST before the next write or watch.
            self.relist = true;
        }
        if matches!(e, Error::Conflict(_)) {
            self.node = None;
            self.drop_watch();
        }
        self.retry_at = Some(Instant::now() + delay);
    }

    fn drop_watch(&mut self) {
        self.watch = None;
        self.watch_started = None;
        self.watch_deadline = None;
    }

    fn set_node(&mut self, view: NodeView) {
        let ext = extensions_from_node(&view);
        self.ext_tx.send_if_modified(|cur| {
            if *cur == ext {
                false
            } else {
                *cur = ext;
                true
            }
        });
        if let Some(old) = &self.node
            && old.uid != view.uid
        {
            info!(node = %self.cfg.node_name, old_uid = %old.uid, new_uid = %view.uid, "Node was re-created");
        }
        // Any object we were given is a consistent point to resume the watch from.
        self.watch_rv = Some(view.resource_version.clone());
        self.node = Some(view);
        self.node_absent = false;
    }

    /// Is a watch event for `meta` older than the Node view we hold? Resource versions are
    /// opaque by contract, but every etcd-backed server gives increasing integers; when either
    /// does not parse, the event is taken.
    fn is_stale(&self, meta: &ObjectMeta) -> bool {
        let (Some(held), Some(ev)) = (
            self.node
                .as_ref()
                .and_then(|n| n.resource_version.parse::<u64>().ok()),
            meta.resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok()),
        ) else {
            return false;
        };
        ev < held
    }

    fn on_watch(&mut self, ev: WatchNext) {
        // `None`: the watch ended or fell silent past its deadline.
        let silent = matches!(ev, WatchNext::Silent);
        let ev = match ev {
            WatchNext::Event(e) => Some(*e),
            WatchNext::Ended | WatchNext::Silent => None,
        };
        match ev {
            Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                self.bump_watch_deadline();
                if self.is_stale(&o.metadata) {
                    debug!(node = %self.cfg.node_name, rv = ?o.metadata.resource_version, "watch event older than our view; ignored");
                    return;
                }
                self.set_node(NodeView::from_meta(&o.metadata));
            }
            Some(Ok(WatchEvent::Deleted(o))) => {
                self.bump_watch_deadline();
                if self.is_stale(&o.metadata) {
                    return;
                }
                warn!(node = %self.cfg.node_name, "Node deleted; waiting for it to be re-created");
                self.watch_rv = o.metadata.resource_version.clone();
                self.node = None;
                self.node_absent = true;
            }
            Some(Ok(WatchEvent::Bookmark(b))) => {
                self.watch_rv = Some(b.metadata.resource_version);
                self.bump_watch_deadline();
            }
            Some(Ok(WatchEvent::Error(status))) => {
                self.drop_watch();
                if status.code == 410 {
                    self.on_error(Error::Gone);
                } else if is_too_large(&status) {
                    self.on_error(Error::TooLarge {
                        retry_after: retry_after_of(&status),
                    });
                } else {
                    self.relist = true;
                    self.on_error(Error::Api {
                        code: status.code,
                        message: status.message.clone(),
                    });
                }
            }
            Some(Err(e)) => {
                self.drop_watch();
                self.relist = true;
                self.on_error(Error::Transport(e));
            }
            None => {
                // A watch that ends at once is a failure (back off). One that ran its course is
                // renewed at once from the last resourceVersion, without a LIST. One dropped
                // midway or silent past its deadline (a restarting apiserver or load balancer
                // drops every watch at the same moment) is followed by a LIST, after a random
                // pause so thousands do not return together: the server may have lost its watch
                // history or gone back in resourceVersion.
                let ran = self.watch_started.map(|t| t.elapsed());
                self.drop_watch();
                match ran {
                    Some(d) if d >= Duration::from_secs(1) => {
                        if silent || d + Duration::from_secs(5) < self.watch_timeout {
                            self.relist = true;
                            let pause = self.backoff.jitter(DROPPED_WATCH_JITTER);
                            self.retry_at = Some(Instant::now() + pause);
                        }
                    }
                    _ => {
                        self.relist = true;
                        self.on_error(Error::WatchClosed)
                    }
                }
            }
        }
    }

    fn bump_watch_deadline(&mut self) {
        self.watch_deadline = Some(Instant::now() + self.watch_timeout + Duration::from_secs(30));
    }

    async fn sync_once(&mut self) -> Result<Outcome, Error> {
        let mut wrote = false;
        if self.cfg.mode == LabelMode::NfdFile {
            wrote |= self.sync_file()?;
        }
        if self.client.is_none() {
            return Ok(if wrote {
                Outcome::Wrote
            } else {
                Outcome::Unchanged
            });
        }
        if !self.spread_done {
            self.spread_done = true;
            let wait = self.start_spread().await;
            if !wait.is_zero() {
                self.retry_at = Some(Instant::now() + wait);
                return Ok(Outcome::Deferred);
            }
        }
        if self.relist
            || (self.watch.is_none()
                && (self.watch_rv.is_none() || (self.node.is_none() && !self.node_absent)))
        {
            self.list_node().await?;
        }
        if self.node.is_none() {
            // Wait for the Node on the watch rather than by polling.
            if self.watch.is_none() {
                self.start_watch().await?;
            }
            return Ok(Outcome::NodeAbsent);
        }
        if let Some(report) = self.report.clone() {
            match self.cfg.mode {
                LabelMode::Node => wrote |= self.sync_node_labels(&report.labels).await?,
                LabelMode::Nodefeature => wrote |= self.sync_nodefeature(&report.labels).await?,
                LabelMode::NfdFile | LabelMode::Off => {}
            }
        }
        // After the write: a cluster that refuses watches still gets its labels.
        if self.watch.is_none() {
            self.start_watch().await?;
        }
        Ok(if wrote {
            Outcome::Wrote
        } else {
            Outcome::Unchanged
        })
    }

    #[allow(clippy::disallowed_methods)] // our own output file, not a host fact
    fn sync_file(&mut self) -> Result<bool, Error> {
        let Some(report) = &self.report else {
            return Ok(false);
        };
        let text = nfd_file_text(&report.labels);
        if self.file_text.is_none() {
            // After a restart, an identical file needs no write (nfd-worker sees no change).
            self.file_text = std::fs::read_to_string(&self.cfg.nfd_file).ok();
        }
        if self.file_text.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        write_nfd_file(&self.cfg.nfd_file, &text)?;
        self.metrics.write("nfd_file");
        info!(path = %self.cfg.nfd_file.display(), labels = report.labels.len(), "wrote NFD features file");
        self.file_text = Some(text);
        Ok(true)
    }

    async fn list_node(&mut self) -> Result<(), Error> {
        let lp = ListParams::default().fields(&format!("metadata.name={}", self.cfg.node_name));
        let req = kube::core::Request::new(NODES)
            .list_metadata(&lp)
            .map_err(Error::Request)?;
        let body = self.send(req).await?;
        let list: MetaList = serde_json::from_slice(&body).map_err(Error::Decode)?;
        match list
            .items
            .into_iter()
            .find(|i| i.metadata.name.as_deref() == Some(self.cfg.node_name.as_str()))
        {
            Some(item) => self.set_node(NodeView::from_meta(&item.metadata)),
            None => {
                self.node = None;
                self.node_absent = true;
            }
        }
        let num = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok());
        let listed = list.metadata.resource_version.clone();
        if let (Some(l), Some(w)) = (num(listed.as_deref()), num(self.watch_rv.as_deref()))
            && l < w
        {
            // etcd restored from a backup or re-created: a watch from our version would stay
            // silent until the server passes it. Watch again from the LIST.
            warn!(node = %self.cfg.node_name, was = w, now = l, "the API server's resourceVersion went back; watching again from a fresh LIST");
            self.drop_watch();
        }
        // The list's version, not the object's: an unchanged Node's version can be older
        // than the server's watch window, and resuming from it would only get 410.
        self.watch_rv = listed;
        self.relist = false;
        self.schedule_resync();
        Ok(())
    }

    fn schedule_resync(&mut self) {
        self.resync_at = (!self.cfg.resync.is_zero())
            .then(|| Instant::now() + self.cfg.resync + self.backoff.jitter(self.cfg.resync / 5));
    }

    /// The cluster's Node count from one metadata LIST with `limit=1` (`remainingItemCount`),
    /// for the first write's jitter. `None` when the server does not say.
    async fn count_nodes(&mut self) -> Result<Option<u64>, Error> {
        let lp = ListParams::default().limit(1);
        let req = kube::core::Request::new(NODES)
            .list_metadata(&lp)
            .map_err(Error::Request)?;
        let body = self.send(req).await?;
        let list: MetaList = serde_json::from_slice(&body).map_err(Error::Decode)?;
        let items = list.items.len() as u64;
        Ok(
            match (list.metadata.remaining_item_count, &list.metadata.continue_) {
                (Some(rest), _) => Some(items + u64::try_from(rest).unwrap_or(0)),
                (None, Some(c)) if !c.is_empty() => None,
                (None, _) => Some(items),
            },
        )
    }

    /// How long the first LIST, WATCH and write wait (cluster-size jitter, see
    /// [`SyncConfig::start_jitter_per_node`]): a random time below the cluster's Node count
    /// times the per-Node jitter.
    async fn start_spread(&mut self) -> Duration {
        if self.cfg.start_jitter_per_node.is_zero() {
            return Duration::ZERO;
        }
        // A server that does not count, or an RBAC that allows only the agent's own Node:
        // spread as for an unknown, possibly large cluster.
        let span = match self.count_nodes().await {
            Ok(Some(nodes)) => self
                .cfg
                .start_jitter_per_node
                .saturating_mul(u32::try_from(nodes).unwrap_or(u32::MAX)),
            Ok(None) => UNKNOWN_CLUSTER_JITTER,
            Err(e) => {
                debug!(node = %self.cfg.node_name, error = %e, "could not count the cluster's Nodes");
                UNKNOWN_CLUSTER_JITTER
            }
        }
        .min(self.cfg.start_jitter_max);
        let wait = self.backoff.jitter(span);
        debug!(node = %self.cfg.node_name, span = ?span, wait = ?wait, "start-up spread over the cluster");
        wait
    }

    async fn start_watch(&mut self) -> Result<(), Error> {
        let Some(client) = self.client.clone() else {
            return Ok(());
        };
        let rv = self.watch_rv.clone().unwrap_or_else(|| "0".to_owned());
        let base = self.cfg.watch_timeout_s.max(1);
        let timeout_s = base
            + u32::try_from(
                self.backoff
                    .jitter(Duration::from_secs(u64::from(base)))
                    .as_secs(),
            )
            .unwrap_or(0);
        self.watch_timeout = Duration::from_secs(u64::from(timeout_s));
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={}", self.cfg.node_name))
            .timeout(timeout_s);
        let req = kube::core::Request::new(NODES)
            .watch_metadata(&wp, &rv)
            .map_err(Error::Request)?;
        let stream = match tokio::time::timeout(
            self.cfg.request_timeout,
            client.request_events::<PartialObjectMeta<Node>>(req),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.metrics.request("error");
                return Err(map_kube_error(e));
            }
            Err(_) => {
                self.metrics.request("timeout");
                return Err(Error::Timeout {
                    what: "watching the Node".to_owned(),
                });
            }
        };
        self.metrics.request("2xx");
        self.watch = Some(Box::pin(stream));
        self.watch_started = Some(Instant::now());
        self.bump_watch_deadline();
        Ok(())
    }

    /// Apply when needed, then remove stale prefix keys; whether anything was written.
    async fn sync_node_labels(
        &mut self,
        desired: &BTreeMap<String, String>,
    ) -> Result<bool, Error> {
        let Some(node) = &self.node else {
            return Ok(false);
        };
        let prefix = self.cfg.prefix.clone();
        let mut wrote = false;
        if needs_apply(desired, node, &prefix) {
            let body = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": self.cfg.node_name, "labels": desired},
            });
            let req = kube::core::Request::new(NODES)
                .patch_metadata(
                    &self.cfg.node_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .map_err(Error::Request)?;
            let resp = self.send_write(req, "apply").await?;
            let meta: MetaOnly = serde_json::from_slice(&resp).map_err(Error::Decode)?;
            info!(node = %self.cfg.node_name, labels = desired.len(), "applied labels");
            self.set_node(NodeView::from_meta(&meta.metadata));
            wrote = true;
        }
        let Some(node) = &self.node else {
            return Ok(wrote);
        };
        let stale = stale_prefix_keys(desired, node, &prefix);
        if !stale.is_empty() {
            // Keys under our prefix that another manager owns: SSA cannot remove them, so a
            // merge patch sets exactly those to null, guarded by the resourceVersion we saw.
            let req =
                remove_labels_request(&self.cfg.node_name, node, &stale).map_err(Error::Request)?;
            let resp = self.send_write(req, "cleanup").await?;
            let meta: MetaOnly = serde_json::from_slice(&resp).map_err(Error::Decode)?;
            info!(node = %self.cfg.node_name, keys = ?stale, "removed stale labels owned by another manager");
            self.set_node(NodeView::from_meta(&meta.metadata));
            wrote = true;
        }
        Ok(wrote)
    }

    fn nodefeature_resource() -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("nfd.k8s-sigs.io", "v1alpha1", "NodeFeature"),
            "nodefeatures",
        )
    }

    async fn sync_nodefeature(
        &mut self,
        desired: &BTreeMap<String, String>,
    ) -> Result<bool, Error> {
        let ar = Self::nodefeature_resource();
        let path = DynamicObject::url_path(&ar, Some(&self.cfg.nodefeature_namespace));
        let name = nodefeature_name(&self.cfg.node_name);
        if self.nodefeature_labels.is_none() {
            let req = kube::core::Request::new(&path)
                .get(&name, &GetParams::default())
                .map_err(Error::Request)?;
            match self.send(req).await {
                Ok(body) => {
                    let nf: NodeFeatureSpecOnly =
                        serde_json::from_slice(&body).map_err(Error::Decode)?;
                    self.nodefeature_labels = Some(nf.spec.map(|s| s.labels).unwrap_or_default());
                }
                // Absent: the apply below creates it (the first write).
                Err(e) if e.is_not_found(Kind::NodeFeature) => {
                    self.nodefeature_labels = Some(BTreeMap::new())
                }
                Err(e) => return Err(e),
            }
        }
        if self.nodefeature_labels.as_ref() == Some(desired) {
            return Ok(false);
        }
        self.apply_nodefeature(&path, &name, desired).await
    }

    async fn apply_nodefeature(
        &mut self,
        path: &str,
        name: &str,
        desired: &BTreeMap<String, String>,
    ) -> Result<bool, Error> {
        let body = nodefeature_body(
            &self.cfg.node_name,
            &self.cfg.nodefeature_namespace,
            desired,
        );
        let req = kube::core::Request::new(path)
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .map_err(Error::Request)?;
        self.send_write(req, "nodefeature").await?;
        info!(node = %self.cfg.node_name, object = %name, labels = desired.len(), "applied NodeFeature");
        self.nodefeature_labels = Some(desired.clone());
        Ok(true)
    }

    /// Post the queued verdict changes, once the Node (and its uid) is known.
    async fn post_events(&mut self) {
        if self.node.is_none() || self.pending_events.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.pending_events);
        let uid = self
            .node
            .as_ref()
            .map(|n| n.uid.clone())
            .unwrap_or_default();
        for change in changes {
            if !self.limiter.try_take() {
                self.metrics.event("dropped");
                debug!(gpu = %change.gpu, "event rate limit reached; dropping Event");
                continue;
            }
            let body = event_body(&self.cfg.node_name, &uid, &change);
            let bytes = match serde_json::to_vec(&body) {
                Ok(b) => b,
                Err(_) => continue,
            };
            let req = match kube::core::Request::new("/api/v1/namespaces/default/events")
                .create(&PostParams::default(), bytes)
            {
                Ok(r) => r,
                Err(_) => continue,
            };
            match self.send(req).await {
                Ok(_) => {
                    self.metrics.event("posted");
                    self.events_logged.clear();
                    info!(gpu = %change.gpu, status = %change.to, "posted Event");
                }
                Err(e) => {
                    self.metrics.event("failed");
                    if self.events_logged.first(()) {
                        warn!(error = %e, "posting an Event failed; Events are best effort");
                    } else {
                        debug!(error = %e, "posting an Event failed again");
                    }
                }
            }
        }
    }

    async fn send_write(
        &mut self,
        req: http::Request<Vec<u8>>,
        kind: &str,
    ) -> Result<bytes::Bytes, Error> {
        let r = self.send(req).await?;
        self.metrics.write(kind);
        Ok(r)
    }

    /// One request with our status handling; the body of a 2xx answer.
    async fn send(&mut self, req: http::Request<Vec<u8>>) -> Result<bytes::Bytes, Error> {
        let Some(client) = self.client.clone() else {
            return Err(Error::NoCluster);
        };
        let path = req.uri().path().to_owned();
        let fut = async move {
            let resp = client
                .send(req.map(kube::client::Body::from))
                .await
                .map_err(Error::Transport)?;
            let status = resp.status().as_u16();
            let retry_after = crate::backoff::retry_after_header(resp.headers());
            // Bounded before JSON parsing: one Node's metadata is far below etcd's 1.5 MiB
            // object limit; a larger answer is not one the agent asked for.
            let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| match e.downcast::<kube::Error>() {
                    Ok(k) => Error::Transport(*k),
                    Err(e) => Error::Api {
                        code: status,
                        message: format!("response body over {MAX_RESPONSE_BYTES} bytes: {e}"),
                    },
                })?
                .to_bytes();
            Ok::<_, Error>((status, retry_after, body))
        };
        let (status, retry_after, body) =
            match tokio::time::timeout(self.cfg.request_timeout, fut).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    self.metrics.request("unreachable");
                    return Err(e);
                }
                Err(_) => {
                    self.metrics.request("timeout");
                    return Err(Error::Timeout { what: path });
                }
            };
        self.metrics.request(match status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        });
        if (200..300).contains(&status) {
            return Ok(body);
        }
        if status == 504
            && let Ok(st) = serde_json::from_slice::<kube::core::Status>(&body)
            && is_too_large(&st)
        {
            return Err(Error::TooLarge {
                retry_after: retry_after_of(&st).or(retry_after),
            });
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(match status {
            403 => Error::Forbidden(message),
            404 => Error::not_found(&path),
            409 => Error::Conflict(message),
            410 => Error::Gone,
            429 => Error::Throttled { retry_after },
            code => Error::Api { code, message },
        })
    }
}

/// The apiserver's answer to a resourceVersion it has not reached: 504, reason `Timeout`, cause
/// `ResourceVersionTooLarge` (`storage.NewTooLargeResourceVersionError`).
fn is_too_large(s: &kube::core::Status) -> bool {
    s.code == 504
        && (s.details.as_ref().is_some_and(|d| {
            d.causes
                .iter()
                .any(|c| c.reason == "ResourceVersionTooLarge")
        }) || s.message.contains("Too large resource version"))
}

fn retry_after_of(s: &kube::core::Status) -> Option<Duration> {
    s.details
        .as_ref()
        .map(|d| d.retry_after_seconds)
        .filter(|r| *r > 0)
        .map(|r| Duration::from_secs(u64::from(r)))
}

fn map_kube_error(e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) if is_too_large(&s) => Error::TooLarge {
            retry_after: retry_after_of(&s),
        },
        kube::Error::Api(s) => match s.code {
            403 => Error::Forbidden(s.message.clone()),
            410 => Error::Gone,
            429 => Error::Throttled { retry_after: None },
            code => Error::Api {
                code,
                message: s.message.clone(),
            },
        },
        other => Error::Transport(other),
    }
}
