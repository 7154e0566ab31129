//! The flag groups of `serve` that configure a library part (label sync, pods, endpoint
//! security, Talos API), each converted into that part's plain settings. No I/O.

use crate::authn::{AuthMode, SecurityConfig};
use crate::duration::parse_duration;
use crate::k8s::{LabelMode, SyncConfig};
use crate::pods::PodsConfig;
use crate::talosapi::{DEFAULT_CONFIG_PATH, TalosApiConfig};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Where the label set goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LabelModeArg {
    /// Server-side apply of the labels on this Node (field manager `gpuscout`).
    Node,
    /// An NFD local-source features file that nfd-worker turns into labels.
    NfdFile,
    /// An `nfd.k8s-sigs.io/v1alpha1` NodeFeature object that nfd-master turns into labels.
    Nodefeature,
    /// No labels at all (metrics only).
    Off,
}

impl From<LabelModeArg> for LabelMode {
    fn from(m: LabelModeArg) -> Self {
        match m {
            LabelModeArg::Node => LabelMode::Node,
            LabelModeArg::NfdFile => LabelMode::NfdFile,
            LabelModeArg::Nodefeature => LabelMode::Nodefeature,
            LabelModeArg::Off => LabelMode::Off,
        }
    }
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
    pub labels: LabelModeArg,

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

    /// How often the Node is listed again and compared with the desired labels, whatever the
    /// watch said (a random 0-20 % is added); `0` turns it off.
    #[arg(long, env = "GPUSCOUT_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration, help_heading = "Kubernetes")]
    pub resync_interval: std::time::Duration,

    /// At start-up, after one LIST that counts the cluster's Nodes, the agent waits a random
    /// time of up to this much per Node (at most 30 s) before it lists, watches and labels its
    /// Node: a small cluster is labelled at once, a fleet restarted at once spreads out. `0`
    /// skips the count and the wait.
    #[arg(long, env = "GPUSCOUT_START_JITTER_PER_NODE", default_value = "2ms", value_parser = parse_duration, help_heading = "Kubernetes")]
    pub start_jitter_per_node: std::time::Duration,
}

impl K8sArgs {
    /// The sync settings; `node_name` is the global `--node-name` (env `NODE_NAME`), `prefix`
    /// the validated label prefix. A missing node name is not an error here:
    /// [`crate::k8s::LabelSync::run`] reports it (log + `result="no_node_name"`) and touches
    /// nothing, because without a name it cannot tell which Node is its own.
    pub fn sync_config(&self, node_name: Option<&str>, prefix: &str) -> SyncConfig {
        let node_name = node_name.map(str::trim).unwrap_or_default().to_owned();
        let mut cfg = SyncConfig::new(node_name, prefix);
        cfg.mode = self.labels.into();
        cfg.nfd_file = self.nfd_file.clone();
        cfg.nodefeature_namespace = self.nodefeature_namespace.clone();
        cfg.events = !self.no_events;
        cfg.resync = self.resync_interval;
        cfg.start_jitter_per_node = self.start_jitter_per_node;
        cfg
    }
}

/// Flags of `serve` for per-pod GPU usage.
#[derive(Debug, Clone, Args)]
pub struct PodsArgs {
    /// Per-process GPU usage (DRM fdinfo, NVML) summed per pod: `--process-metrics=false` turns
    /// it off. Needs the host's /proc below --root, and for NVIDIA the host's pid namespace.
    #[arg(long, env = "GPUSCOUT_PROCESS_METRICS", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Metrics")]
    pub process_metrics: bool,

    /// Most per-process usage series (GPU × namespace × pod × container); more are counted in
    /// `gpuscout_process_gpu_series_dropped`, not exported.
    #[arg(long, env = "GPUSCOUT_PROCESS_MAX_SERIES", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000), help_heading = "Metrics")]
    pub process_max_series: u64,

    /// Device-plugin allocations from the kubelet's PodResources API: `--pod-resources=false`
    /// turns it off.
    #[arg(long, env = "GPUSCOUT_POD_RESOURCES", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Metrics")]
    pub pod_resources: bool,

    /// The kubelet's PodResources socket, below --root.
    #[arg(long, env = "GPUSCOUT_POD_RESOURCES_SOCKET", default_value = crate::pods::podresources::DEFAULT_SOCKET, help_heading = "Metrics")]
    pub pod_resources_socket: PathBuf,
}

impl From<&PodsArgs> for PodsConfig {
    fn from(a: &PodsArgs) -> Self {
        Self {
            process_metrics: a.process_metrics,
            process_max_series: a.process_max_series,
            pod_resources: a.pod_resources,
            pod_resources_socket: a.pod_resources_socket.clone(),
        }
    }
}

/// Which authentication `/metrics` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthModeArg {
    /// Anyone who can reach the port may scrape (default; use a NetworkPolicy).
    None,
    /// Bearer token checked with TokenReview + SubjectAccessReview (get on /metrics).
    Kubernetes,
}

/// Flags of `serve` for securing the endpoint.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
    /// Authentication of `/metrics`: `none`, or `kubernetes` (TokenReview +
    /// SubjectAccessReview for `get` on `/metrics`; needs a cluster). `/healthz` and `/readyz`
    /// stay open for the kubelet's probes.
    #[arg(
        long,
        env = "GPUSCOUT_METRICS_AUTH",
        value_enum,
        default_value = "none"
    )]
    pub metrics_auth: AuthModeArg,

    /// PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key).
    #[arg(long, env = "GPUSCOUT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "GPUSCOUT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl From<&SecurityArgs> for SecurityConfig {
    fn from(a: &SecurityArgs) -> Self {
        Self {
            metrics_auth: match a.metrics_auth {
                AuthModeArg::None => AuthMode::None,
                AuthModeArg::Kubernetes => AuthMode::Kubernetes,
            },
            tls_cert: a.tls_cert.clone(),
            tls_key: a.tls_key.clone(),
        }
    }
}

/// Command-line settings of the Talos API client.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Talos API")]
pub struct TalosApiArgs {
    /// Read deeper driver facts from the Talos API (needs Talos' kubernetesTalosAPIAccess and an
    /// os:reader talos.dev ServiceAccount; see docs/talos-api.md). Off by default.
    #[arg(long = "talos-api", env = "GPUSCOUT_TALOS_API", global = true)]
    pub enabled: bool,

    /// talosconfig to use: the ServiceAccount secret's `config` key, mounted in the pod.
    #[arg(long = "talos-config", env = "GPUSCOUT_TALOS_CONFIG", default_value = DEFAULT_CONFIG_PATH, global = true)]
    pub config: PathBuf,

    /// Talos API endpoint (`host[:port]`, port 50000 by default). Default: the talosconfig's
    /// first endpoint (`talos.default`).
    #[arg(
        long = "talos-endpoint",
        env = "GPUSCOUT_TALOS_ENDPOINT",
        global = true
    )]
    pub endpoint: Option<String>,

    /// IP of this node, sent as gRPC metadata `node` so apid answers for this node (set it from
    /// the downward API `status.hostIP`).
    #[arg(long = "talos-node", env = "GPUSCOUT_TALOS_NODE", global = true)]
    pub node: Option<String>,

    /// Deadline in seconds for connecting and for each Talos API call.
    #[arg(
        long = "talos-timeout",
        env = "GPUSCOUT_TALOS_TIMEOUT",
        default_value_t = 5.0,
        global = true
    )]
    pub timeout_s: f64,
}

impl From<&TalosApiArgs> for TalosApiConfig {
    fn from(a: &TalosApiArgs) -> Self {
        Self {
            enabled: a.enabled,
            config: a.config.clone(),
            endpoint: a.endpoint.clone(),
            node: a.node.clone(),
            timeout_s: a.timeout_s,
        }
    }
}
