//! A Kubernetes API **stand-in** for tests: an in-process HTTP server (hyper 1) that answers the
//! handful of requests gpuscout and `kubectl get/label node` send. It is NOT a kube-apiserver:
//! no etcd, no authentication or RBAC (any bearer token is accepted; 403s come only from
//! injected faults or an apply that would create a Node), no admission, no OpenAPI, no
//! protobuf, no Table output. What it implements:
//!
//! - discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/apps/v1`,
//!   `/apis/nfd.k8s-sigs.io/v1alpha1`
//!   (plain JSON; kubectl falls back from aggregated discovery);
//! - Nodes: GET, LIST (`fieldSelector=metadata.name=…`; `limit`/`continue` with
//!   `remainingItemCount` when there is no selector), WATCH (chunked newline-delimited events,
//!   `resourceVersion` replay from a bounded history, `410 Expired` as an ERROR event when
//!   compacted, `timeoutSeconds`, BOOKMARKs every [`StandIn::set_bookmark_every`] (60 s, as the
//!   watch cache) and 2 s before the timeout when `allowWatchBookmarks=true`), full objects or
//!   `PartialObjectMetadata` by `Accept`, which is negotiated like the apiserver does (406 for a
//!   media type it cannot serve, e.g. `as=PartialObjectMetadata` without `g`/`v`, or the list
//!   form on a single object);
//! - resourceVersions newer than the server's, as the watch cache answers them: a plain WATCH
//!   is accepted and stays silent until the server passes that version (events at or below it
//!   are never sent); a WATCH with `sendInitialEvents=true` ends with an ERROR event, and a
//!   GET or LIST with `resourceVersion` answers HTTP 504, both after 3 s, with reason `Timeout`,
//!   message `Timeout: Too large resource version: N, current: M`, cause
//!   `ResourceVersionTooLarge` and `retryAfterSeconds: 1`;
//! - restarts ([`StandIn::restart`]): every watch is cut; the state and the watch history are
//!   kept (etcd survives, the watch cache is rebuilt: a watch from before the restart gets 410)
//!   or lost (the resourceVersion starts again from 0), as the test chooses;
//! - PATCH of Nodes: `application/apply-patch+yaml` with label ownership per field manager in
//!   `managedFields` (see `ssa.rs`: release of keys a manager stops sending, shared equal values,
//!   409 conflicts without `force`), merge and strategic-merge patch (`metadata.labels`,
//!   `metadata.annotations`, `metadata.resourceVersion` precondition → 409), JSON patch
//!   (`add`/`replace`/`remove`/`test` on labels and annotations); resourceVersion bumps only on
//!   real changes, so a no-op write emits no watch event; label keys and values are validated
//!   like `IsQualifiedName`/`IsValidLabelValue` (422 `Invalid` with one `FieldValueInvalid`
//!   cause per bad key or value, as the apiserver answers);
//! - core/v1 Events (create, list) and `nfd.k8s-sigs.io/v1alpha1` NodeFeatures (get, list,
//!   apply, delete);
//! - Pods: LIST in a namespace with an equality-based `labelSelector` (`a=b,c==d`), full
//!   objects or `PartialObjectMetadata`; pods exist only as tests add them ([`StandIn::add_pod`]);
//! - read-only LISTs of seeded `apps/v1` DaemonSets and `nfd.k8s-sigs.io/v1alpha1`
//!   NodeFeatureRules, and GET of the NFD CustomResourceDefinitions, for the Helm chart's
//!   `lookup` peer check;
//! - `TokenReview` and `SubjectAccessReview` (create) with scripted answers: tokens registered
//!   with [`StandIn::add_token`] authenticate as their user, every other token does not; a SAR
//!   for `get` on the non-resource URL `/metrics` is allowed for users given to
//!   [`StandIn::allow_metrics`], everything else is denied;
//! - faults: a status (403, 404, 429 with Retry-After, 500, 503 …) for matching requests,
//!   latency, dropped or refused watches; and a request log.
//!
//! Two transports share one handler: [`StandIn::service`] (in memory, for `kube::Client::new`,
//! deterministic under paused tokio time) and [`StandIn::serve_tcp`] (127.0.0.1:<free port>,
//! for kubectl and for kube's real HTTP client).

mod handler;
pub mod ssa;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde_json::{Value, json};
use ssa::Owned;
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Watch events kept for `resourceVersion` replay.
const HISTORY: usize = 1000;

/// A response body: a whole buffer, or a channel of chunks (a watch).
pub struct ChanBody {
    first: Option<Bytes>,
    rx: Option<mpsc::UnboundedReceiver<Bytes>>,
}

impl ChanBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self {
            first: Some(b.into()),
            rx: None,
        }
    }
    fn stream(rx: mpsc::UnboundedReceiver<Bytes>) -> Self {
        Self {
            first: None,
            rx: Some(rx),
        }
    }
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }
    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rx.is_none()
    }
    fn size_hint(&self) -> SizeHint {
        match (&self.first, &self.rx) {
            (Some(b), None) => SizeHint::with_exact(b.len() as u64),
            _ => SizeHint::default(),
        }
    }
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub method: Option<&'static str>,
    pub path_contains: Option<String>,
    /// `Some(true)`: only watches; `Some(false)`: only non-watch requests.
    pub watch: Option<bool>,
}

impl Match {
    pub fn any() -> Self {
        Self::default()
    }
    pub fn method(m: &'static str) -> Self {
        Self {
            method: Some(m),
            ..Self::default()
        }
    }
    pub fn watches() -> Self {
        Self {
            watch: Some(true),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Answer with this status (a Status body) and optional `Retry-After` seconds.
    Status(u16, Option<u64>),
    /// Wait this long (tokio time), then answer normally.
    Latency(Duration),
    /// Answer as the apiserver does for a resourceVersion newer than its own: a watch gets a
    /// 200 stream with one ERROR event, anything else HTTP 504, both with the
    /// `ResourceVersionTooLarge` cause (see the module docs).
    TooLargeResourceVersion,
}

/// What survives [`StandIn::restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// etcd survives: objects and resourceVersions stay; the watch cache is rebuilt, so a
    /// watch from a version older than the current one gets 410 Expired.
    KeepState,
    /// etcd is gone (re-created or restored from an old backup): no objects, the
    /// resourceVersion starts again from 0, no watch history.
    LoseState,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub when: Match,
    pub what: Action,
    /// How many matching requests it hits; `None` = until cleared.
    pub times: Option<u32>,
}

/// One logged request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    pub accept: String,
    pub status: u16,
    pub at: Instant,
    pub watch: bool,
}

impl Logged {
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "PATCH" | "POST" | "PUT" | "DELETE")
    }
}

#[derive(Debug, Clone)]
pub struct NodeObj {
    pub name: String,
    pub uid: String,
    pub rv: u64,
    pub owned: Owned,
    pub annotations: BTreeMap<String, String>,
    pub node_info: NodeInfo,
}

/// `status.nodeInfo` fields the kubelet reports from the host (`osImage` is os-release's
/// `PRETTY_NAME`, `kernelVersion` the kernel release).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub os_image: String,
    pub kernel_version: String,
}

impl Default for NodeInfo {
    fn default() -> Self {
        Self {
            os_image: "Debian GNU/Linux 12 (bookworm)".to_owned(),
            kernel_version: "6.1.0-28-amd64".to_owned(),
        }
    }
}

struct Watcher {
    name: Option<String>,
    meta_only: bool,
    tx: mpsc::UnboundedSender<Bytes>,
    id: u64,
    /// Events at or below this resourceVersion are not sent (the version the watch asked for).
    min_rv: u64,
}

#[derive(Default)]
struct State {
    rv: u64,
    uids: u64,
    nodes: BTreeMap<String, NodeObj>,
    history: VecDeque<(u64, &'static str, NodeObj)>,
    /// Oldest resourceVersion a watch may resume from (raised by `compact`).
    compacted_to: u64,
    watchers: Vec<Watcher>,
    next_watcher: u64,
    nodefeatures: BTreeMap<(String, String), Value>,
    /// (namespace, name) → labels.
    pods: BTreeMap<(String, String), BTreeMap<String, String>>,
    events: Vec<Value>,
    faults: Vec<Fault>,
    log: Vec<Logged>,
    allow_create: bool,
    port: u16,
    /// token → (username, groups) for TokenReview.
    tokens: BTreeMap<String, (String, Vec<String>)>,
    /// Users a SubjectAccessReview for `get /metrics` allows.
    metrics_readers: std::collections::BTreeSet<String>,
    /// Specs of the SubjectAccessReviews received.
    sars: Vec<Value>,
    /// Period of watch BOOKMARKs (`None`: the default of 60 s).
    bookmark_every: Option<Duration>,
    /// apps/v1 DaemonSets (read-only: LIST, all namespaces or one), for the chart's peer check.
    daemonsets: Vec<Value>,
    /// nfd.k8s-sigs.io/v1alpha1 NodeFeatureRules (cluster-scoped, read-only LIST).
    nodefeaturerules: Vec<Value>,
}

/// The stand-in API server. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct StandIn {
    state: Arc<Mutex<State>>,
}

impl StandIn {
    pub fn new() -> Self {
        Self::default()
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add a DaemonSet `namespace/name` whose one container runs `image` (LIST only).
    pub fn add_daemonset(&self, namespace: &str, name: &str, image: &str) {
        let mut st = self.st();
        st.uids += 1;
        st.rv += 1;
        let (uid, rv) = (st.uids, st.rv);
        st.daemonsets.push(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{uid}"),
                         "resourceVersion": rv.to_string()},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": name, "image": image}]}}}
        }));
    }

    /// Add a NodeFeatureRule (cluster-scoped) with one rule that writes `labels` (LIST only).
    pub fn add_nodefeaturerule(&self, name: &str, labels: &[(&str, &str)]) {
        let mut st = self.st();
        st.uids += 1;
        st.rv += 1;
        let (uid, rv) = (st.uids, st.rv);
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        st.nodefeaturerules.push(serde_json::json!({
            "apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeatureRule",
            "metadata": {"name": name, "uid": format!("uid-{uid}"), "resourceVersion": rv.to_string()},
            "spec": {"rules": [{"name": name, "labels": labels}]}
        }));
    }

    /// Let an apply to a missing Node create it (a cluster that granted `create`); off by
    /// default, where such an apply is 403 as under the agent's RBAC.
    pub fn allow_create(&self, yes: bool) {
        self.st().allow_create = yes;
    }

    /// Register a Node as the kubelet would (manager `kubelet`, operation Update).
    pub fn add_node(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let mut st = self.st();
        st.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", st.uids);
        let mut owned = Owned::default();
        owned.update(
            "kubelet",
            &labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
                .collect(),
        );
        st.rv += 1;
        let node = NodeObj {
            name: name.to_owned(),
            uid: uid.clone(),
            rv: st.rv,
            owned,
            annotations: BTreeMap::new(),
            node_info: NodeInfo::default(),
        };
        st.nodes.insert(name.to_owned(), node.clone());
        st.emit("ADDED", node);
        uid
    }

    pub fn delete_node(&self, name: &str) {
        let mut st = self.st();
        if let Some(mut n) = st.nodes.remove(name) {
            st.rv += 1;
            n.rv = st.rv;
            st.emit("DELETED", n);
        }
    }

    /// A non-apply write by `manager` (as `kubectl label` or a merge patch would do).
    pub fn set_labels_as(&self, node: &str, manager: &str, changes: &[(&str, Option<&str>)]) {
        let mut st = self.st();
        let ch: BTreeMap<String, Option<String>> = changes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect();
        st.mutate_node(node, |n| {
            n.owned.update(manager, &ch);
            true
        });
    }

    /// Like [`StandIn::set_labels_as`], but the open watches miss the event (it is still in the
    /// history a new watch replays): a watch event lost between server and client.
    pub fn set_labels_unwatched(
        &self,
        node: &str,
        manager: &str,
        changes: &[(&str, Option<&str>)],
    ) {
        let watchers = std::mem::take(&mut self.st().watchers);
        self.set_labels_as(node, manager, changes);
        self.st().watchers.extend(watchers);
    }

    pub fn set_annotation(&self, node: &str, key: &str, value: &str) {
        let mut st = self.st();
        st.mutate_node(node, |n| {
            n.annotations.insert(key.to_owned(), value.to_owned()) != Some(value.to_owned())
        });
    }

    /// Set `status.nodeInfo.osImage` and `kernelVersion`, as the kubelet reports them.
    pub fn set_node_info(&self, node: &str, os_image: &str, kernel_version: &str) {
        let info = NodeInfo {
            os_image: os_image.to_owned(),
            kernel_version: kernel_version.to_owned(),
        };
        self.st().mutate_node(node, |n| {
            let changed = n.node_info != info;
            n.node_info = info.clone();
            changed
        });
    }

    /// Modify nothing of interest but bump the resourceVersion (a status heartbeat).
    pub fn touch(&self, node: &str) {
        self.st().mutate_node(node, |_| true);
    }

    pub fn node(&self, name: &str) -> Option<NodeObj> {
        self.st().nodes.get(name).cloned()
    }

    pub fn labels(&self, name: &str) -> BTreeMap<String, String> {
        self.node(name).map(|n| n.owned.labels).unwrap_or_default()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.st().nodes.keys().cloned().collect()
    }

    pub fn nodefeature(&self, ns: &str, name: &str) -> Option<Value> {
        self.st()
            .nodefeatures
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Names of the NodeFeatures in `ns`.
    pub fn nodefeature_names(&self, ns: &str) -> Vec<String> {
        self.st()
            .nodefeatures
            .keys()
            .filter(|(n, _)| n == ns)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Store a NodeFeature as another client would have created it.
    pub fn put_nodefeature(&self, ns: &str, name: &str, labels: &[(&str, &str)]) {
        let mut st = self.st();
        st.rv += 1;
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let obj = json!({
            "apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeature",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "resourceVersion": st.rv.to_string(), "uid": format!("nf-{}", st.rv)},
            "spec": {"labels": {}},
        });
        st.nodefeatures
            .insert((ns.to_owned(), name.to_owned()), obj);
    }

    /// A pod with these labels exists in `ns` (for label-selector LISTs).
    pub fn add_pod(&self, ns: &str, name: &str, labels: &[(&str, &str)]) {
        self.st().pods.insert(
            (ns.to_owned(), name.to_owned()),
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
    }

    pub fn remove_pod(&self, ns: &str, name: &str) {
        self.st().pods.remove(&(ns.to_owned(), name.to_owned()));
    }

    pub fn events(&self) -> Vec<Value> {
        self.st().events.clone()
    }

    /// A token that TokenReview authenticates as `user` in `groups`.
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.st().tokens.insert(
            token.to_owned(),
            (
                user.to_owned(),
                groups.iter().map(|g| (*g).to_owned()).collect(),
            ),
        );
    }

    /// Let `user` `get` the non-resource URL `/metrics` (a ClusterRole + binding).
    pub fn allow_metrics(&self, user: &str) {
        self.st().metrics_readers.insert(user.to_owned());
    }

    /// Specs of the SubjectAccessReviews received, oldest first.
    pub fn sar_specs(&self) -> Vec<Value> {
        self.st().sars.clone()
    }

    /// Requests logged whose path contains `needle`.
    pub fn requests_to(&self, needle: &str) -> usize {
        self.st()
            .log
            .iter()
            .filter(|l| l.path.contains(needle))
            .count()
    }

    pub fn fail(&self, f: Fault) {
        self.st().faults.push(f);
    }

    pub fn clear_faults(&self) {
        self.st().faults.clear();
    }

    /// Close every open watch (the server side of a dropped connection).
    pub fn drop_watches(&self) {
        self.st().watchers.clear();
    }

    pub fn open_watches(&self) -> usize {
        let mut st = self.st();
        st.watchers.retain(|w| !w.tx.is_closed());
        st.watchers.len()
    }

    /// Restart the server: every open watch is cut (as when the apiserver process exits) and
    /// the state is kept or lost (see [`Restart`]). Faults, tokens and the request log stay.
    pub fn restart(&self, what: Restart) {
        let mut st = self.st();
        st.watchers.clear();
        st.history.clear();
        match what {
            Restart::KeepState => st.compacted_to = st.rv,
            Restart::LoseState => {
                st.rv = 0;
                st.compacted_to = 0;
                st.nodes.clear();
                st.nodefeatures.clear();
                st.events.clear();
            }
        }
    }

    /// The server's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.st().rv
    }

    /// How often an open watch that allows bookmarks gets one (default 60 s, the watch cache's
    /// `bookmarkFrequency`).
    pub fn set_bookmark_every(&self, every: Duration) {
        self.st().bookmark_every = Some(every);
    }

    /// Forget the watch history: resuming from an older resourceVersion gets 410 Expired.
    pub fn compact(&self) {
        let mut st = self.st();
        st.history.clear();
        st.compacted_to = st.rv;
    }

    pub fn log(&self) -> Vec<Logged> {
        self.st().log.clone()
    }

    pub fn clear_log(&self) {
        self.st().log.clear();
    }

    /// Writes (PATCH/POST/PUT/DELETE) answered 2xx.
    pub fn successful_writes(&self) -> usize {
        self.st()
            .log
            .iter()
            .filter(|l| l.is_write() && (200..300).contains(&l.status))
            .count()
    }

    /// An in-memory transport for `kube::Client::new(standin.service(), "default")`.
    pub fn service(
        &self,
    ) -> impl tower::Service<
        http::Request<kube::client::Body>,
        Response = http::Response<ChanBody>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static {
        let me = self.clone();
        tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let me = me.clone();
            async move {
                use http_body_util::BodyExt;
                let (parts, body) = req.into_parts();
                let bytes = match body.collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                Ok::<_, Infallible>(me.handle(http::Request::from_parts(parts, bytes)).await)
            }
        })
    }

    /// A kube client over the in-memory transport.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.service(), "default")
    }

    /// Serve on 127.0.0.1:<free port> until the runtime stops; returns the address.
    pub async fn serve_tcp(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        self.st().port = addr.port();
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let me = me.clone();
                            async move {
                                use http_body_util::BodyExt;
                                let (parts, body) = req.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(
                                    me.handle(http::Request::from_parts(parts, bytes)).await,
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }
}

impl State {
    fn mutate_node(&mut self, name: &str, f: impl FnOnce(&mut NodeObj) -> bool) -> Option<NodeObj> {
        let mut n = self.nodes.get(name)?.clone();
        if !f(&mut n) {
            return Some(n);
        }
        self.rv += 1;
        n.rv = self.rv;
        self.nodes.insert(name.to_owned(), n.clone());
        self.emit("MODIFIED", n.clone());
        Some(n)
    }

    fn emit(&mut self, kind: &'static str, node: NodeObj) {
        self.history.push_back((node.rv, kind, node.clone()));
        while self.history.len() > HISTORY {
            if let Some((rv, _, _)) = self.history.pop_front() {
                self.compacted_to = rv;
            }
        }
        self.watchers.retain(|w| {
            if w.name.as_deref().is_some_and(|n| n != node.name) || node.rv <= w.min_rv {
                return !w.tx.is_closed();
            }
            w.tx.send(watch_line(kind, &node, w.meta_only)).is_ok()
        });
    }
}

pub fn meta_json(n: &NodeObj) -> Value {
    let managed: Vec<Value> = n
        .owned
        .managed
        .iter()
        .map(|m| {
            let keys: serde_json::Map<String, Value> = m
                .keys
                .iter()
                .map(|k| (format!("f:{k}"), json!({})))
                .collect();
            json!({
                "manager": m.manager, "operation": m.operation, "apiVersion": "v1",
                "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": keys}},
            })
        })
        .collect();
    let mut meta = json!({
        "name": n.name, "uid": n.uid, "resourceVersion": n.rv.to_string(),
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": n.owned.labels, "managedFields": managed,
    });
    if !n.annotations.is_empty() {
        meta["annotations"] = json!(n.annotations);
    }
    meta
}

pub fn node_json(n: &NodeObj, meta_only: bool) -> Value {
    if meta_only {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta_json(n)})
    } else {
        json!({
            "kind": "Node", "apiVersion": "v1", "metadata": meta_json(n),
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0", "operatingSystem": "linux", "architecture": "amd64",
                                    "osImage": n.node_info.os_image, "kernelVersion": n.node_info.kernel_version}},
        })
    }
}

fn watch_line(kind: &str, n: &NodeObj, meta_only: bool) -> Bytes {
    let mut s = json!({"type": kind, "object": node_json(n, meta_only)}).to_string();
    s.push('\n');
    Bytes::from(s)
}
