//! Kubernetes side of the agent: keeps this Node's labels in sync with the latest discovery
//! report, watches the Node for drift and for Talos' extension records, and posts Events when a
//! GPU's driver verdict changes. Named `k8s` so it does not clash with the `kube` crate.
//!
//! ```text
//!  watch::Receiver<Arc<Report>> ──► LabelSync::run ──► output mode
//!                                        │   node:        SSA PATCH /api/v1/nodes/<node> (manager gpuscout, force)
//!                                        │                + merge-patch of prefix keys SSA cannot remove
//!                                        │   nfd-file:    temp file + rename (NFD local source)
//!                                        │   nodefeature: SSA of nfd.k8s-sigs.io/v1alpha1 NodeFeature
//!                                        │   off:         nothing
//!  GET + WATCH /api/v1/nodes?fieldSelector=metadata.name=<node> (metadata only)
//!        └─► drift repair, re-apply after re-creation, extensions.talos.dev/* ─► watch::Sender<Option<Vec<Extension>>>
//! ```
//!
//! API calls: `GET /api/v1/nodes/<node>` and `WATCH` of the same Node (metadata only, as
//! `PartialObjectMetadata`), `PATCH` of that Node (apply and merge), `POST
//! /api/v1/namespaces/default/events`, and in `nodefeature` mode `GET`/`PATCH` of one
//! NodeFeature. A Node that does not exist is never created: the agent only writes to a Node it
//! has seen, and the RBAC it ships with grants `patch` but not `create`. When the API cannot be
//! reached, or answers 403/404/429/5xx, the agent logs once per kind of failure, counts it in
//! `gpuscout_label_sync_total{result}` and retries with capped, jittered exponential backoff
//! (never sooner than a 429's `Retry-After`). A 410 Expired or a 504 with cause
//! `ResourceVersionTooLarge` is no outage: the agent lists its Node again (`result="relist"`).
//! A 404 names the kind of object it was about ([`Kind`]: a missing Node is
//! `result="node_not_found"`, a missing NodeFeature CRD or namespace `not_found`); no answer in
//! time is `timeout`. It never exits for an API failure and never removes
//! labels on shutdown. The request/response handling is ours (through [`kube::Client::send`]), so
//! kube's own retry layer is switched off by [`connect`] to avoid stacking two retry loops.

mod client;
mod events;
mod metrics;
mod mode;
mod nfd;
mod owned;
pub mod prune;
mod sync;

pub use client::connect;
pub use events::EventLimiter;
pub use metrics::SyncMetrics;
pub use mode::LabelMode;
pub use nfd::{nfd_file_text, nodefeature_body, write_nfd_file};
pub use owned::{FIELD_MANAGER, NodeView, extensions_from_node, needs_apply, stale_prefix_keys};
pub use sync::{LabelSync, SyncConfig};

use std::time::Duration;

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no node name: set NODE_NAME (downward API spec.nodeName) or --node-name")]
    NoNodeName,
    #[error("no cluster: not running in a pod (KUBERNETES_SERVICE_HOST unset) and no --kubeconfig")]
    NoCluster,
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("in-cluster config: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("building the API client: {0}")]
    Client(#[source] kube::Error),
    #[error("building a request: {0}")]
    Request(#[source] kube::core::request::Error),
    #[error("API unreachable: {0}")]
    Transport(#[source] kube::Error),
    /// HTTP 404: the object (or the collection a write or list went to) does not exist.
    #[error("{kind} not found: {path}{}", .kind.hint())]
    NotFound { kind: Kind, path: String },
    /// No answer within the request timeout (`SyncConfig::request_timeout`, 10 s).
    #[error("{what}: request timed out")]
    Timeout { what: String },
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("throttled (429)")]
    Throttled { retry_after: Option<Duration> },
    #[error("conflict (409): {0}")]
    Conflict(String),
    #[error("API answered {code}: {message}")]
    Api { code: u16, message: String },
    #[error("decoding an API response: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("watch ended: resource version too old (410)")]
    Gone,
    /// The server ended a watch as soon as it began.
    #[error("the watch closed at once")]
    WatchClosed,
    #[error("resource version newer than the server's (504 ResourceVersionTooLarge)")]
    TooLarge { retry_after: Option<Duration> },
    #[error("writing {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which kind of API object a [`Error::NotFound`] is about, from the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Node,
    /// An NFD `NodeFeature` (or its namespace, or the CRD itself).
    NodeFeature,
    /// A core `Event` (or its namespace).
    Event,
    Other,
}

impl Kind {
    /// The kind a request path addresses: `/api/v1/nodes/…`, `…/nodefeatures…`, `…/events…`.
    /// The resource is the segment after `/api/<version>` or `/apis/<group>/<version>` and an
    /// optional `namespaces/<ns>`, so a Node named `events` is still a Node.
    pub fn of_path(path: &str) -> Kind {
        let mut seg = path.split('/').filter(|s| !s.is_empty());
        let skip = match seg.next() {
            Some("api") => 1,
            Some("apis") => 2,
            _ => return Kind::Other,
        };
        let mut seg = seg.skip(skip);
        let mut resource = seg.next();
        if resource == Some("namespaces")
            && let (Some(_ns), Some(r)) = (seg.next(), seg.next())
        {
            resource = Some(r);
        }
        match resource {
            Some("nodes") => Kind::Node,
            Some("nodefeatures") => Kind::NodeFeature,
            Some("events") => Kind::Event,
            _ => Kind::Other,
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Kind::Node => " (is NODE_NAME right?)",
            Kind::NodeFeature => " (is NFD's NodeFeature CRD installed, and its namespace there?)",
            Kind::Event | Kind::Other => "",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Node => "Node",
            Kind::NodeFeature => "NodeFeature",
            Kind::Event => "Event",
            Kind::Other => "object",
        })
    }
}

impl Error {
    /// A 404 for the request at `path`.
    pub fn not_found(path: &str) -> Self {
        Error::NotFound {
            kind: Kind::of_path(path),
            path: path.to_owned(),
        }
    }

    /// Whether this is a 404 about an object of `kind`.
    pub fn is_not_found(&self, kind: Kind) -> bool {
        matches!(self, Error::NotFound { kind: k, .. } if *k == kind)
    }

    /// Bounded value for the `result` label of `gpuscout_label_sync_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NotFound {
                kind: Kind::Node, ..
            } => "node_not_found",
            Error::NotFound { .. } => "not_found",
            Error::Timeout { .. } => "timeout",
            Error::Forbidden(_) => "forbidden",
            Error::Throttled { .. } => "throttled",
            Error::Conflict(_) => "conflict",
            Error::Transport(_) => "unreachable",
            Error::Api { code, .. } if *code >= 500 => "server_error",
            Error::File { .. } => "file_error",
            Error::Gone | Error::TooLarge { .. } => "relist",
            _ => "error",
        }
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Throttled { retry_after } | Error::TooLarge { retry_after } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_of_a_request_path() {
        for (path, kind) in [
            ("/api/v1/nodes/n1", Kind::Node),
            ("/api/v1/nodes", Kind::Node),
            ("/api/v1/nodes/events", Kind::Node),
            ("/api/v1/namespaces/default/events", Kind::Event),
            ("/api/v1/namespaces/nodes/events/x", Kind::Event),
            (
                "/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/node-feature-discovery/nodefeatures/gpuscout-n1",
                Kind::NodeFeature,
            ),
            (
                "/apis/nfd.k8s-sigs.io/v1alpha1/nodefeatures",
                Kind::NodeFeature,
            ),
            ("/api/v1/namespaces/x/pods/p", Kind::Other),
            ("/healthz", Kind::Other),
            ("", Kind::Other),
        ] {
            assert_eq!(Kind::of_path(path), kind, "{path}");
        }
    }

    #[test]
    fn not_found_and_timeout_labels() {
        let node = Error::not_found("/api/v1/nodes/n1");
        assert!(node.is_not_found(Kind::Node));
        assert!(!node.is_not_found(Kind::NodeFeature));
        assert_eq!(node.metric_label(), "node_not_found");
        assert!(node.to_string().contains("NODE_NAME"), "{node}");
        let nf = Error::not_found("/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/x/nodefeatures/y");
        assert_eq!(nf.metric_label(), "not_found");
        assert!(!nf.to_string().contains("NODE_NAME"), "{nf}");
        let t = Error::Timeout {
            what: "/api/v1/nodes/n1".to_owned(),
        };
        assert_eq!(t.metric_label(), "timeout");
        assert_eq!(t.to_string(), "/api/v1/nodes/n1: request timed out");
    }
}
