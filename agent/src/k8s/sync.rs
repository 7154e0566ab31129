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

use super::Error;
use super::args::LabelMode;
use super::backoff::Backoff;
use super::events::{EventLimiter, VerdictChange, event_body, verdict_changes};
use super::metrics::SyncMetrics;
use super::nfd::{nfd_file_text, nodefeature_body, nodefeature_name, write_nfd_file};
use super::owned::{FIELD_MANAGER, NodeView, extensions_from_node, needs_apply, stale_prefix_keys};
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
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

const NODES: &str = "/api/v1/nodes";

/// How long shutdown waits for a turn in progress (the pod's default grace period is 30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Longest pause before renewing a watch the server dropped midway.
const DROPPED_WATCH_JITTER: Duration = Duration::from_secs(5);

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
    /// The first turn (LIST, WATCH, first write) waits a random time in `[0, start_jitter)`,
    /// so thousands of agents restarted together do not arrive as one burst. Retries after
    /// failures are spread by the backoff's own jitter.
    pub start_jitter: Duration,
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
            start_jitter: Duration::from_secs(10),
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
    /// Failure kinds logged since the last success (each is logged once).
    logged: BTreeSet<&'static str>,
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
            logged: BTreeSet::new(),
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
            .map(|g| (g.pci_address.clone(), g.status))
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
                if self.logged.insert("node_not_found") {
                    error!(
                        node = %self.cfg.node_name,
                        "Node not found: check NODE_NAME (downward API spec.nodeName); waiting for it to appear, nothing is created"
                    );
                }
                true
            }
            Ok(outcome) => {
                let wrote = matches!(outcome, Outcome::Wrote);
                self.metrics
                    .sync_result(if wrote { "applied" } else { "unchanged" });
                self.metrics.mark_synced();
                if !self.logged.is_empty() {
                    info!(node = %self.cfg.node_name, "label sync recovered");
                    self.logged.clear();
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
        let label = e.metric_label();
        self.metrics.sync_result(label);
        let delay = self.backoff.next_delay(e.retry_after());
        if self.logged.insert(label) {
            match e {
                Error::Forbidden(_) | Error::NodeNotFound(_) => {
                    error!(node = %self.cfg.node_name, error = %e, retry_in = ?delay, "label sync failed; check the agent's RBAC and NODE_NAME")
                }
                _ => {
                    warn!(node = %self.cfg.node_name, error = %e, retry_in = ?delay, "label sync failed; retrying with backoff")
                }
            }
        } else {
            debug!(node = %self.cfg.node_name, error = %e, retry_in = ?delay, "label sync failed again");
        }
        if matches!(e, Error::Gone) {
            self.drop_watch();
            self.watch_rv = None;
            self.node = None;
        }
        if matches!(e, Error::Conflict(_)) {
            // Our view is stale; the watch brings the newer Node, or a fresh LIST does.
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

    fn on_watch(&mut self, ev: WatchNext) {
        // `None`: the watch ended or fell silent past its deadline.
        let ev = match ev {
            WatchNext::Event(e) => Some(*e),
            WatchNext::Ended | WatchNext::Silent => None,
        };
        match ev {
            Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                self.set_node(NodeView::from_meta(&o.metadata));
                self.bump_watch_deadline();
            }
            Some(Ok(WatchEvent::Deleted(o))) => {
                warn!(node = %self.cfg.node_name, "Node deleted; waiting for it to be re-created");
                self.watch_rv = o.metadata.resource_version.clone();
                self.node = None;
                self.node_absent = true;
                self.bump_watch_deadline();
            }
            Some(Ok(WatchEvent::Bookmark(b))) => {
                self.watch_rv = Some(b.metadata.resource_version);
                self.bump_watch_deadline();
            }
            Some(Ok(WatchEvent::Error(status))) => {
                self.drop_watch();
                if status.code == 410 {
                    debug!(node = %self.cfg.node_name, "watch expired (410); listing again");
                    self.watch_rv = None;
                    self.node = None;
                } else {
                    self.on_error(Error::Api {
                        code: status.code,
                        message: status.message.clone(),
                    });
                }
            }
            Some(Err(e)) => {
                self.drop_watch();
                self.on_error(Error::Transport(e));
            }
            None => {
                // A watch that ends at once is a failure (back off). One that ran its course is
                // renewed at once from the last resourceVersion, without a LIST. One dropped
                // midway (a restarting apiserver or load balancer drops every watch at the same
                // moment) is renewed after a random pause, so thousands do not return together.
                let ran = self.watch_started.map(|t| t.elapsed());
                self.drop_watch();
                match ran {
                    Some(d) if d >= Duration::from_secs(1) => {
                        if d + Duration::from_secs(5) < self.watch_timeout {
                            let pause = self.backoff.jitter(DROPPED_WATCH_JITTER);
                            self.retry_at = Some(Instant::now() + pause);
                        }
                    }
                    _ => self.on_error(Error::Api {
                        code: 0,
                        message: "watch closed at once".to_owned(),
                    }),
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
        if self.watch.is_none()
            && (self.watch_rv.is_none() || (self.node.is_none() && !self.node_absent))
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
        // The list's version, not the object's: an unchanged Node's version can be older
        // than the server's watch window, and resuming from it would only get 410.
        self.watch_rv = list.metadata.resource_version.clone();
        Ok(())
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
                return Err(Error::Api {
                    code: 0,
                    message: "watch request timed out".to_owned(),
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
            let labels: serde_json::Map<String, serde_json::Value> = stale
                .iter()
                .map(|k| (k.clone(), serde_json::Value::Null))
                .collect();
            let body = serde_json::json!({
                "metadata": {"resourceVersion": node.resource_version, "labels": labels},
            });
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            let req = kube::core::Request::new(NODES)
                .patch_metadata(&self.cfg.node_name, &pp, &Patch::Merge(&body))
                .map_err(Error::Request)?;
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
                Err(Error::NodeNotFound(_)) => self.nodefeature_labels = Some(BTreeMap::new()),
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
                    info!(gpu = %change.gpu, status = %change.to, "posted Event");
                }
                Err(e) => {
                    self.metrics.event("failed");
                    if self.logged.insert("event") {
                        warn!(error = %e, "posting an Event failed; Events are best effort");
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
        let fut = async move {
            let resp = client
                .send(req.map(kube::client::Body::from))
                .await
                .map_err(Error::Transport)?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(Error::Transport)?
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
                    return Err(Error::Api {
                        code: 0,
                        message: "request timed out".to_owned(),
                    });
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
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(match status {
            403 => Error::Forbidden(message),
            404 => Error::NodeNotFound(self.cfg.node_name.clone()),
            409 => Error::Conflict(message),
            410 => Error::Gone,
            429 => Error::Throttled { retry_after },
            code => Error::Api { code, message },
        })
    }
}

fn map_kube_error(e: kube::Error) -> Error {
    match e {
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
