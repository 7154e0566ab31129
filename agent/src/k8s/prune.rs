//! `gpuscout prune-labels`: remove what the agent wrote, so an uninstall leaves the cluster as
//! it found it. The chart runs it once, cluster-wide, in a post-delete hook Job.
//!
//! In order:
//! 1. Wait until no pod matches `wait_for_pods` (the agents of the release): a running agent
//!    watches its Node and would put a pruned label straight back. `GET
//!    /api/v1/namespaces/<ns>/pods?labelSelector=…` (metadata only) every `poll`; after `wait`
//!    it prunes anyway and reports that agents were still running.
//! 2. Delete the agent's NodeFeature objects (`nfd.k8s-sigs.io/v1alpha1`, named
//!    `gpuscout-<node>` and labelled `nfd.node.kubernetes.io/node-name=<node>`, exactly what
//!    `--labels nodefeature` creates) in `nodefeature_namespace`; nfd-master then drops the
//!    labels it published for them. A cluster without the NFD API has none (404 is fine).
//! 3. On every Node (`LIST /api/v1/nodes`, metadata only) or the one named: remove every label
//!    that is ours in the sense of the sync loop ([`NodeView::is_ours`]): every key under the
//!    prefix, whoever set it, and every other key (compat profiles such as
//!    `nvidia.com/gpu.product`) that field manager `gpuscout` applied. One merge patch per
//!    Node setting exactly those keys to null, with the `resourceVersion` it read as a
//!    precondition; on 409 it reads the Node again and recomputes (a few times). Every other
//!    label stays, including a compat-looking key another manager set.
//! 4. Remove the NFD features file when given (only meaningful on the node itself).
//!
//! A failure on one Node or object is logged, counted and does not stop the others; the
//! caller exits non-zero when any happened, so a Job retries.

use super::nfd::nodefeature_name;
use super::owned::{NODES, NodeView, remove_labels_request};
use super::{Error, Kind};
use crate::logonce::LogOnce;
use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::core::params::ListParams;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The label NFD and our NodeFeature carry: the Node it describes.
const NFD_NODE_LABEL: &str = "nfd.node.kubernetes.io/node-name";
/// Attempts per Node when its resourceVersion moves under us.
const CONFLICT_RETRIES: u32 = 5;

/// Which Nodes to prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nodes {
    All,
    One(String),
    /// None (only the NFD file, on the node itself).
    None,
}

/// What to prune and how long to wait first.
#[derive(Debug, Clone)]
pub struct PruneConfig {
    /// Label prefix we own (`gpuscout.io`).
    pub prefix: String,
    pub nodes: Nodes,
    /// Delete our NodeFeature objects in this namespace.
    pub nodefeature_namespace: Option<String>,
    /// Remove this NFD features file.
    pub nfd_file: Option<PathBuf>,
    /// Wait for pods matching `(namespace, label selector)` to be gone first.
    pub wait_for_pods: Option<(String, String)>,
    /// Longest wait for those pods.
    pub wait: Duration,
    /// How often to look again.
    pub poll: Duration,
    /// Limit of one request.
    pub request_timeout: Duration,
}

impl PruneConfig {
    /// Production defaults: every Node, wait up to 120 s polling every 2 s, 10 s per request.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            nodes: Nodes::All,
            nodefeature_namespace: None,
            nfd_file: None,
            wait_for_pods: None,
            wait: Duration::from_secs(120),
            poll: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Nodes looked at.
    pub nodes: usize,
    /// Nodes that had labels of ours, and the labels removed, per Node.
    pub removed: BTreeMap<String, Vec<String>>,
    /// NodeFeature objects deleted.
    pub nodefeatures_deleted: Vec<String>,
    /// Whether the NFD file existed and was removed.
    pub nfd_file_removed: bool,
    /// Pods still matched the wait selector when the wait ran out.
    pub pods_still_running: usize,
    /// One line per failure (a Node, an object, the file).
    pub failures: Vec<String>,
}

#[derive(Deserialize)]
struct MetaItem {
    #[serde(default)]
    metadata: ObjectMeta,
}

#[derive(Deserialize)]
struct MetaList {
    #[serde(default)]
    items: Vec<MetaItem>,
}

/// The labels of this Node that a prune removes: every key [`NodeView::is_ours`], sorted.
pub fn keys_to_prune(node: &NodeView, prefix: &str) -> Vec<String> {
    node.labels
        .keys()
        .filter(|k| node.is_ours(k, prefix))
        .cloned()
        .collect()
}

/// Run a prune with `client` (`None`: only the NFD file, which needs no API).
pub async fn prune(client: Option<&Client>, cfg: &PruneConfig) -> PruneReport {
    let mut report = PruneReport::default();
    if let Some(client) = client {
        let api = Api { client, cfg };
        if let Some((ns, selector)) = &cfg.wait_for_pods {
            report.pods_still_running = api.wait_for_pods(ns, selector).await;
        }
        if let Some(ns) = &cfg.nodefeature_namespace {
            api.delete_nodefeatures(ns, &mut report).await;
        }
        api.prune_nodes(&mut report).await;
    }
    if let Some(path) = &cfg.nfd_file {
        match std::fs::remove_file(path) {
            Ok(()) => {
                info!(path = %path.display(), "removed the NFD features file");
                report.nfd_file_removed = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report
                .failures
                .push(format!("removing {}: {e}", path.display())),
        }
    }
    for f in &report.failures {
        warn!(failure = %f, "prune incomplete");
    }
    report
}

struct Api<'a> {
    client: &'a Client,
    cfg: &'a PruneConfig,
}

impl Api<'_> {
    /// Poll until no pod matches; the number still matching when the wait ran out.
    async fn wait_for_pods(&self, ns: &str, selector: &str) -> usize {
        let deadline = Instant::now() + self.cfg.wait;
        let path = format!("/api/v1/namespaces/{ns}/pods");
        let lp = ListParams::default().labels(selector);
        let said = LogOnce::new();
        let failed = LogOnce::new();
        loop {
            let left = match kube::core::Request::new(&path).list_metadata(&lp) {
                Ok(req) => match self.send(req).await {
                    Ok(body) => serde_json::from_slice::<MetaList>(&body)
                        .map(|l| l.items.len())
                        .map_err(Error::Decode),
                    Err(e) => Err(e),
                },
                Err(e) => Err(Error::Request(e)),
            };
            match left {
                Ok(0) => {
                    if said.any() {
                        info!(namespace = ns, selector, "the agents are gone");
                    }
                    return 0;
                }
                Ok(n) if Instant::now() >= deadline => {
                    warn!(namespace = ns, selector, pods = n, waited = ?self.cfg.wait,
                        "agents still running; pruning anyway (a running agent may put its labels back)");
                    return n;
                }
                Ok(n) => {
                    failed.clear();
                    if said.first(()) {
                        info!(
                            namespace = ns,
                            selector,
                            pods = n,
                            "waiting for the agents to stop"
                        );
                    }
                }
                Err(e) if Instant::now() >= deadline => {
                    warn!(error = %e, "cannot list the agent pods; pruning without waiting longer");
                    return 0;
                }
                Err(e) if failed.first(e.metric_label()) => {
                    warn!(error = %e, "listing the agent pods failed; retrying")
                }
                Err(e) => debug!(error = %e, "listing the agent pods failed again"),
            }
            tokio::time::sleep(self.cfg.poll).await;
        }
    }

    async fn delete_nodefeatures(&self, ns: &str, report: &mut PruneReport) {
        let base = format!("/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/{ns}/nodefeatures");
        let names: Vec<String> = match &self.cfg.nodes {
            Nodes::None => return,
            Nodes::One(node) => vec![nodefeature_name(node)],
            Nodes::All => {
                let list = kube::core::Request::new(&base)
                    .list_metadata(&ListParams::default())
                    .map_err(Error::Request);
                let body = match list {
                    Ok(req) => self.send(req).await,
                    Err(e) => Err(e),
                };
                match body
                    .and_then(|b| serde_json::from_slice::<MetaList>(&b).map_err(Error::Decode))
                {
                    Ok(list) => list
                        .items
                        .into_iter()
                        .filter_map(|i| {
                            let name = i.metadata.name?;
                            let node = i.metadata.labels?.get(NFD_NODE_LABEL)?.clone();
                            (name == nodefeature_name(&node)).then_some(name)
                        })
                        .collect(),
                    Err(e) if e.is_not_found(Kind::NodeFeature) => {
                        info!(
                            namespace = ns,
                            "no NodeFeature API in this cluster: nothing to delete"
                        );
                        return;
                    }
                    Err(e) => {
                        report
                            .failures
                            .push(format!("listing NodeFeatures in {ns}: {e}"));
                        return;
                    }
                }
            }
        };
        for name in names {
            let req = kube::core::Request::new(&base)
                .delete(&name, &Default::default())
                .map_err(Error::Request);
            let r = match req {
                Ok(req) => self.send(req).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(_) => {
                    info!(namespace = ns, name = %name, "deleted NodeFeature");
                    report.nodefeatures_deleted.push(name);
                }
                Err(e) if e.is_not_found(Kind::NodeFeature) => {}
                Err(e) => report
                    .failures
                    .push(format!("deleting NodeFeature {ns}/{name}: {e}")),
            }
        }
    }

    async fn prune_nodes(&self, report: &mut PruneReport) {
        let views: Vec<(String, NodeView)> = match &self.cfg.nodes {
            Nodes::None => return,
            Nodes::All => match self.list_nodes().await {
                Ok(v) => v,
                Err(e) => {
                    report.failures.push(format!("listing Nodes: {e}"));
                    return;
                }
            },
            Nodes::One(name) => match self.get_node(name).await {
                Ok(v) => vec![(name.clone(), v)],
                Err(e) if e.is_not_found(Kind::Node) => {
                    report.failures.push(format!("node {name:?} not found"));
                    return;
                }
                Err(e) => {
                    report.failures.push(format!("reading node {name}: {e}"));
                    return;
                }
            },
        };
        report.nodes = views.len();
        for (name, view) in views {
            match self.prune_node(&name, view).await {
                Ok(keys) if keys.is_empty() => {}
                Ok(keys) => {
                    info!(node = %name, keys = ?keys, "removed labels");
                    report.removed.insert(name, keys);
                }
                Err(e) => report.failures.push(format!("node {name}: {e}")),
            }
        }
    }

    /// Remove our keys from one Node; the keys removed.
    async fn prune_node(&self, name: &str, mut view: NodeView) -> Result<Vec<String>, Error> {
        for _ in 0..CONFLICT_RETRIES {
            let keys = keys_to_prune(&view, &self.cfg.prefix);
            if keys.is_empty() {
                return Ok(keys);
            }
            let req = remove_labels_request(name, &view, &keys).map_err(Error::Request)?;
            match self.send(req).await {
                Ok(_) => return Ok(keys),
                Err(Error::Conflict(_)) => view = self.get_node(name).await?,
                // Deleted since the list: nothing left to clean.
                Err(e) if e.is_not_found(Kind::Node) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!(
            "the Node changed {CONFLICT_RETRIES} times while pruning"
        )))
    }

    async fn list_nodes(&self) -> Result<Vec<(String, NodeView)>, Error> {
        let req = kube::core::Request::new(NODES)
            .list_metadata(&ListParams::default())
            .map_err(Error::Request)?;
        let body = self.send(req).await?;
        let list: MetaList = serde_json::from_slice(&body).map_err(Error::Decode)?;
        Ok(list
            .items
            .iter()
            .filter_map(|i| Some((i.metadata.name.clone()?, NodeView::from_meta(&i.metadata))))
            .collect())
    }

    async fn get_node(&self, name: &str) -> Result<NodeView, Error> {
        let req = kube::core::Request::new(NODES)
            .get_metadata(name, &Default::default())
            .map_err(Error::Request)?;
        let body = self.send(req).await?;
        let item: MetaItem = serde_json::from_slice(&body).map_err(Error::Decode)?;
        Ok(NodeView::from_meta(&item.metadata))
    }

    /// One request under the request timeout; the body of a 2xx answer. 404 is
    /// [`Error::NotFound`] with the kind the path addresses (the callers treat it as "gone");
    /// no answer in time is [`Error::Timeout`].
    async fn send(&self, req: http::Request<Vec<u8>>) -> Result<bytes::Bytes, Error> {
        let path = req.uri().path().to_owned();
        let fut = async {
            let resp = self
                .client
                .send(req.map(kube::client::Body::from))
                .await
                .map_err(Error::Transport)?;
            let status = resp.status().as_u16();
            let retry_after = crate::backoff::retry_after_header(resp.headers());
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
                Ok(r) => r?,
                Err(_) => {
                    return Err(Error::Timeout { what: path });
                }
            };
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(match status {
            403 => Error::Forbidden(message),
            404 => Error::not_found(&path),
            409 => Error::Conflict(message),
            429 => Error::Throttled { retry_after },
            code => Error::Api { code, message },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn prefix_keys_and_our_applied_compat_keys_only() {
        let view = NodeView {
            labels: [
                ("gpuscout.io/present", "true"),
                ("gpuscout.io/set-by-hand", "x"),
                ("gpuscout.iox/other", "y"),
                ("nvidia.com/gpu.product", "RTX-4090"),
                ("nvidia.com/gpu.count", "1"),
                ("kubernetes.io/hostname", "n1"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
            applied_by_us: BTreeSet::from(["nvidia.com/gpu.product".to_owned()]),
            ..NodeView::default()
        };
        assert_eq!(
            keys_to_prune(&view, "gpuscout.io"),
            [
                "gpuscout.io/present",
                "gpuscout.io/set-by-hand",
                "nvidia.com/gpu.product"
            ]
        );
    }
}
