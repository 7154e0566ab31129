//! Command-line flags of the Kubernetes side, for `serve` to flatten in. No I/O.

use super::SyncConfig;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Where the label set goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LabelMode {
    /// Server-side apply of the labels on this Node (field manager `gpuscout`).
    #[default]
    Node,
    /// An NFD local-source features file that nfd-worker turns into labels.
    NfdFile,
    /// An `nfd.k8s-sigs.io/v1alpha1` NodeFeature object that nfd-master turns into labels.
    Nodefeature,
    /// No labels at all (metrics only).
    Off,
}

/// Kubernetes flags of `gpuscout serve`.
#[derive(Debug, Clone, Args)]
pub struct K8sArgs {
    /// Kubeconfig file; without it gpuscout uses the in-cluster service account, and outside a
    /// pod it runs as a standalone exporter. Also used by `--metrics-auth kubernetes`.
    #[arg(long, env = "GPUSCOUT_KUBECONFIG", help_heading = "Kubernetes")]
    pub kubeconfig: Option<PathBuf>,

    /// Where the labels go: node, nfd-file, nodefeature or off.
    #[arg(
        long = "labels",
        env = "GPUSCOUT_LABELS",
        value_enum,
        default_value = "node",
        help_heading = "Labels"
    )]
    pub labels: LabelMode,

    /// Features file written in `--labels nfd-file` mode (NFD local source directory).
    #[arg(
        long,
        env = "GPUSCOUT_NFD_FILE",
        default_value = "/etc/kubernetes/node-feature-discovery/features.d/gpuscout",
        help_heading = "Labels"
    )]
    pub nfd_file: PathBuf,

    /// Namespace of the NodeFeature object in `--labels nodefeature` mode (where nfd-master
    /// looks; usually the agent's own namespace).
    #[arg(
        long,
        env = "GPUSCOUT_NODEFEATURE_NAMESPACE",
        default_value = "gpuscout",
        help_heading = "Labels"
    )]
    pub nodefeature_namespace: String,

    /// Do not post Kubernetes Events when a GPU's driver verdict changes.
    #[arg(long, env = "GPUSCOUT_NO_EVENTS", help_heading = "Kubernetes")]
    pub no_events: bool,
}

impl K8sArgs {
    /// The sync settings; `node_name` is the global `--node-name` (env `NODE_NAME`), `prefix`
    /// the validated label prefix. A missing node name is not an error here:
    /// [`super::LabelSync::run`] reports it (log + `result="no_node_name"`) and touches nothing,
    /// because without a name it cannot tell which Node is its own.
    pub fn sync_config(&self, node_name: Option<&str>, prefix: &str) -> SyncConfig {
        let node_name = node_name.map(str::trim).unwrap_or_default().to_owned();
        let mut cfg = SyncConfig::new(node_name, prefix);
        cfg.mode = self.labels;
        cfg.nfd_file = self.nfd_file.clone();
        cfg.nodefeature_namespace = self.nodefeature_namespace.clone();
        cfg.events = !self.no_events;
        cfg
    }
}
