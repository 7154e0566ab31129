//! Command-line interface: flags (each with a `GPUSCOUT_*` env var) and the commands.
//!
//! Precedence for every setting: command-line flag, then environment variable, then default.
//! Flags are grouped under help headings (Host, Discovery, Labels, Kubernetes, Metrics,
//! Security, Talos API, Logging); `docs/reference/cli.md` is generated from this command tree
//! ([`crate::clidoc`]).

use crate::discover::{self, Options};
use crate::duration::{parse_duration, parse_positive_duration};
use crate::hostroot::HostRoot;
use crate::labels::{CompatProfiles, LabelConfig};
use crate::model::{Report, Status, Vendor};
use crate::render::{self, Format};
use crate::serve::ServeConfig;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

mod serve_flags;
pub use serve_flags::{AuthModeArg, K8sArgs, LabelModeArg, PodsArgs, SecurityArgs, TalosApiArgs};

/// Default `--listen` address. Port 10106 is outside 9100–9999, the range of the Prometheus
/// "default port allocations" wiki page, which its maintainers declared fully allocated in
/// 2023; that keeps it clear of node_exporter (9100), dcgm-exporter (9400) and
/// nvidia_gpu_exporter (9835).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:10106";

/// Output format of `discover` (see [`render::Format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Table,
    Json,
    Yaml,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Table => Format::Table,
            FormatArg::Json => Format::Json,
            FormatArg::Yaml => Format::Yaml,
        }
    }
}

/// `--version`: the package version and the commit it was built from (`build.rs`; `unknown`
/// when built outside a git checkout without `GPUSCOUT_GIT_COMMIT`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GPUSCOUT_GIT_COMMIT"),
    ")"
);

/// Help headings, in the order `--help` shows them.
pub const HEADINGS: &[&str] = &[
    "Host",
    "Discovery",
    "Labels",
    "Kubernetes",
    "Metrics",
    "Security",
    "Talos API",
    "Logging",
];

/// GPU node agent: discovers AMD, NVIDIA and Intel GPUs, verifies their driver stack (Talos
/// extensions, modules, binding, firmware), labels the Node and exports Prometheus metrics.
///
/// Every flag can also be set with the environment variable named in its help; a flag given on
/// the command line wins over the environment, which wins over the default.
#[derive(Debug, Parser)]
#[command(name = "gpuscout", version = VERSION, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings shared by all commands.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Host filesystem root: sys/, proc/, dev/, etc/, usr/ and lib/ are read below it.
    #[arg(
        long,
        env = "GPUSCOUT_ROOT",
        default_value = "/",
        global = true,
        help_heading = "Host"
    )]
    pub root: PathBuf,

    /// Name of this Node: the report's `node`, and the Node whose labels `serve` keeps in sync.
    /// In the DaemonSet set NODE_NAME from the downward API (spec.nodeName). Without it the
    /// report names the host by its hostname.
    #[arg(long, env = "NODE_NAME", global = true, help_heading = "Host")]
    pub node_name: Option<String>,

    /// Prefix of the label keys gpuscout owns.
    #[arg(long, env = "GPUSCOUT_LABEL_PREFIX", default_value = crate::labels::DEFAULT_PREFIX, global = true, help_heading = "Labels")]
    pub label_prefix: String,

    /// Also write the `nvidia.com/gpu.*` / `nvidia.com/cuda.*` keys of NVIDIA GPU Feature Discovery.
    #[arg(
        long,
        env = "GPUSCOUT_COMPAT_NVIDIA_GFD",
        global = true,
        help_heading = "Labels"
    )]
    pub compat_nvidia_gfd: bool,

    /// Also write the `amd.com/gpu.*` keys of AMD's node labeller.
    #[arg(
        long,
        env = "GPUSCOUT_COMPAT_AMD_LABELLER",
        global = true,
        help_heading = "Labels"
    )]
    pub compat_amd_labeller: bool,

    /// Also write the Intel NFD rule keys (`intel.feature.node.kubernetes.io/gpu`, ...).
    #[arg(
        long,
        env = "GPUSCOUT_COMPAT_INTEL_NFD",
        global = true,
        help_heading = "Labels"
    )]
    pub compat_intel_nfd: bool,

    /// NVML library to load instead of the Talos paths under --root
    /// (`usr/local/glibc/usr/lib/libnvidia-ml.so.1`, `usr/local/lib/libnvidia-ml.so.1`) and the
    /// loader's `libnvidia-ml.so.1`.
    #[arg(
        long,
        env = "GPUSCOUT_NVML_LIB",
        global = true,
        help_heading = "Discovery"
    )]
    pub nvml_lib: Option<PathBuf>,

    /// Deadline of one NVML call in milliseconds; a call past it marks NVML failed.
    #[arg(long, env = "GPUSCOUT_NVML_CALL_TIMEOUT_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=60_000), global = true, help_heading = "Discovery")]
    pub nvml_call_timeout_ms: u64,

    /// Log format: `plain` or `json`. The level comes from `RUST_LOG` (default `info`). Plain
    /// logs are coloured only when stderr is a terminal and `NO_COLOR` is unset; JSON never.
    #[arg(long, env = "GPUSCOUT_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"], global = true, help_heading = "Logging")]
    pub log_format: String,

    #[command(flatten)]
    pub talos_api: TalosApiArgs,
}

/// What to do.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of `Serve`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// One-shot report of this host: GPUs, driver verdicts, Talos facts and the labels.
    Discover {
        /// Output format.
        #[arg(long, env = "GPUSCOUT_FORMAT", value_enum, default_value = "table")]
        format: FormatArg,
    },
    /// Exit 0 when every GPU's driver stack is `ok` (with a one-line summary on stdout), 1
    /// otherwise (one line per problem on stderr, with its fix), 2 on a usage or configuration
    /// error.
    Check {
        /// Also exit 1 when fewer than N GPUs are found (every GPU PCI function `discover`
        /// lists counts, SR-IOV virtual functions included).
        #[arg(long, env = "GPUSCOUT_MIN_GPUS", value_name = "N")]
        min_gpus: Option<usize>,
    },
    /// Run as a daemon: rediscover periodically and serve Prometheus `/metrics` (read from
    /// sysfs at scrape time), `/healthz` and `/readyz`. Standalone unless label sync is on.
    Serve(ServeArgs),
    /// Write everything the agent reads on this host (discovery and one scrape, NVML
    /// included) into a `.tar.zst` laid out as a host root for --root: for bug reports and
    /// fixtures. Serial numbers and UUIDs are replaced by stable fakes unless --keep-ids.
    Capture(CaptureArgs),
    /// Remove what gpuscout wrote to the cluster, for an uninstall: on the Nodes every label
    /// under --label-prefix and every label field manager `gpuscout` applied (compat keys),
    /// never another label; with --nodefeature-namespace its NodeFeature objects; with
    /// --nfd-file the NFD features file. Exit 0 when everything was removed, 1 otherwise.
    PruneLabels(PruneArgs),
    /// Print the host paths the agent reads, as the Helm chart mounts them (YAML; the chart's
    /// `files/host-paths.yaml` is this output).
    #[command(hide = true)]
    HostPaths {
        /// Instead: run discovery and one scrape of every source on --root with every read
        /// recorded, print each path read and the mount that covers it, and exit 1 when one
        /// falls outside the table.
        #[arg(long)]
        audit: bool,
    },
    /// Print a shell completion script (bash, elvish, fish, powershell, zsh) to stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per command into a directory.
    Man {
        /// Write `gpuscout.1`, `gpuscout-discover.1`, ... into this directory instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Flags of `capture`.
#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    /// The archive to write (zstd-compressed tar; unpack with `tar --zstd -xf`).
    #[arg(short = 'o', long, env = "GPUSCOUT_CAPTURE_OUTPUT")]
    pub output: PathBuf,

    /// Keep serial numbers and UUIDs as they are instead of replacing them with fakes.
    #[arg(long, env = "GPUSCOUT_CAPTURE_KEEP_IDS")]
    pub keep_ids: bool,

    /// Key of the fake ids: the same key gives the same fakes in every capture (default: a
    /// random key, so fakes are stable within one capture only).
    #[arg(
        long,
        env = "GPUSCOUT_CAPTURE_ID_KEY",
        conflicts_with = "keep_ids",
        hide_env_values = true
    )]
    pub id_key: Option<String>,
}

/// Flags of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve on, `host:port` (`[::]:10106` for IPv6).
    #[arg(long, env = "GPUSCOUT_LISTEN", default_value = DEFAULT_LISTEN, help_heading = "Metrics")]
    pub listen: String,

    /// How often discovery runs again (`30s`, `2m`, `500ms`).
    #[arg(long, env = "GPUSCOUT_DISCOVERY_INTERVAL", default_value = "30s", value_parser = parse_positive_duration, help_heading = "Discovery")]
    pub discovery_interval: Duration,

    /// Deadline of one scrape: sources still reading then are reported failed
    /// (`gpuscout_scrape_source_success 0`) and the rest is served.
    #[arg(long, env = "GPUSCOUT_SCRAPE_TIMEOUT", default_value = "4s", value_parser = parse_positive_duration, help_heading = "Metrics")]
    pub scrape_timeout: Duration,

    /// How long one scrape's readings are reused for back-to-back scrapes (`0` turns the cache
    /// off; scrapes that arrive while a pass runs still share it).
    #[arg(long, env = "GPUSCOUT_SCRAPE_CACHE", default_value = "500ms", value_parser = parse_duration, help_heading = "Metrics")]
    pub scrape_cache: Duration,

    /// Metrics sources not to read at scrape time (repeat it, or separate with commas), e.g.
    /// `nvml` beside DCGM exporter so NVML is not polled twice. Their series and
    /// `gpuscout_scrape_source_*{source}` disappear; discovery still asks NVML once per
    /// --discovery-interval for the GPU identity and driver versions.
    #[arg(long, env = "GPUSCOUT_DISABLE_SOURCE", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(crate::metrics::SOURCE_NAMES), help_heading = "Metrics")]
    pub disable_source: Vec<String>,

    /// How long a GPU's last good Node labels are kept while a read of it fails (an unreadable
    /// sysfs file, a device that could not be classified); `0` turns holding off. A GPU absent
    /// from sys/bus/pci/devices for two passes loses its labels at once.
    #[arg(long, env = "GPUSCOUT_LABEL_HOLD", default_value = "10m", value_parser = parse_duration, help_heading = "Labels")]
    pub label_hold: Duration,

    /// Most HTTP connections open at once. At the cap the longest-idle connection is closed for
    /// a newcomer; when none is idle, `/healthz` and `/readyz` are still answered (then closed)
    /// and everything else gets 503.
    #[arg(long, env = "GPUSCOUT_HTTP_MAX_CONNECTIONS", default_value_t = crate::httpconn::DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536), help_heading = "Metrics")]
    pub http_max_connections: usize,

    /// Longest time from the first byte of a request to the end of its header (slow clients
    /// are disconnected).
    #[arg(long, env = "GPUSCOUT_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration, help_heading = "Metrics")]
    pub http_header_timeout: Duration,

    /// How long a keep-alive connection may sit idle between requests.
    #[arg(long, env = "GPUSCOUT_HTTP_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_positive_duration, help_heading = "Metrics")]
    pub http_idle_timeout: Duration,

    #[command(flatten)]
    pub k8s: K8sArgs,

    #[command(flatten)]
    pub pods: PodsArgs,

    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Flags of `prune-labels`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Prune every Node of the cluster (the chart's uninstall hook does this).
    #[arg(long, conflicts_with = "node")]
    pub all_nodes: bool,

    /// Prune only this Node.
    #[arg(long)]
    pub node: Option<String>,

    /// Also delete the agent's NodeFeature objects (`gpuscout-<node>`) in this namespace.
    #[arg(long)]
    pub nodefeature_namespace: Option<String>,

    /// Also remove this NFD features file (on the node itself).
    #[arg(long)]
    pub nfd_file: Option<PathBuf>,

    /// First wait until no pod in --pods-namespace matches this label selector (the agents: a
    /// running agent puts its labels back).
    #[arg(long, requires = "pods_namespace")]
    pub wait_for_pods: Option<String>,

    /// Namespace of the pods of --wait-for-pods.
    #[arg(long)]
    pub pods_namespace: Option<String>,

    /// Longest wait for those pods (`120s`, `2m`); then prune anyway and say so.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub wait_timeout: Duration,

    /// Kubeconfig file; without it the in-cluster service account is used.
    #[arg(long, env = "GPUSCOUT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

impl PruneArgs {
    /// The prune settings; `prefix` is the validated label prefix.
    pub fn prune_config(&self, prefix: &str) -> crate::k8s::prune::PruneConfig {
        use crate::k8s::prune::{Nodes, PruneConfig};
        let mut c = PruneConfig::new(prefix);
        c.nodes = match (&self.node, self.all_nodes) {
            (Some(n), _) => Nodes::One(n.clone()),
            (None, true) => Nodes::All,
            (None, false) => Nodes::None,
        };
        c.nodefeature_namespace = self.nodefeature_namespace.clone();
        c.nfd_file = self.nfd_file.clone();
        c.wait_for_pods = self
            .wait_for_pods
            .clone()
            .zip(self.pods_namespace.clone())
            .map(|(sel, ns)| (ns, sel));
        c.wait = self.wait_timeout;
        c
    }

    /// Whether the Kubernetes API is needed at all.
    pub fn needs_api(&self) -> bool {
        self.all_nodes || self.node.is_some() || self.nodefeature_namespace.is_some()
    }
}

/// A configuration error: reported in one line, exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--root {path}: {source}")]
    Root {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--label-prefix {0:?}: {1}")]
    LabelPrefix(String, String),
    #[error(transparent)]
    Render(#[from] render::Error),
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    #[error("this command is not a one-shot discovery command")]
    NotOneShot,
    #[error(
        "--root {path}: no sys/bus/pci below it, so no GPU can be seen: point --root at a host root whose sys/ is the host's sysfs (in a pod: mount the host / or /sys read-only)"
    )]
    NoPciBus { path: String },
    #[error("--root {path}: sys/bus/pci cannot be read: {error}")]
    PciBusUnreadable { path: String, error: String },
    #[error("capture {path}: {source}")]
    Capture {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl GlobalArgs {
    /// The host root, checked to be a readable directory.
    pub fn host_root(&self) -> Result<HostRoot, ConfigError> {
        HostRoot::new(&self.root).map_err(|source| ConfigError::Root {
            path: self.root.display().to_string(),
            source,
        })
    }

    /// Label settings, with the prefix validated.
    pub fn label_config(&self) -> Result<LabelConfig, ConfigError> {
        crate::labels::validate_prefix(&self.label_prefix)
            .map_err(|e| ConfigError::LabelPrefix(self.label_prefix.clone(), e))?;
        Ok(LabelConfig {
            prefix: self.label_prefix.clone(),
            compat: CompatProfiles {
                nvidia_gfd: self.compat_nvidia_gfd,
                amd_labeller: self.compat_amd_labeller,
                intel_nfd: self.compat_intel_nfd,
            },
        })
    }

    /// Options for a discovery pass.
    pub fn discover_options(&self) -> Result<Options, ConfigError> {
        Ok(Options {
            labels: self.label_config()?,
            node_name: self
                .node_name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
        })
    }

    /// NVML settings.
    pub fn nvml_config(&self, root: &HostRoot) -> crate::nvml::NvmlConfig {
        let mut c = crate::nvml::NvmlConfig::new(root.clone());
        c.lib_path = self.nvml_lib.clone();
        c.call_timeout = std::time::Duration::from_millis(self.nvml_call_timeout_ms);
        c
    }
}

/// `serve`'s settings from the global flags and its own: the host root and label prefix are
/// checked here (a configuration error, exit 2); the listen address is checked by
/// [`crate::serve::run`].
pub fn serve_config(global: &GlobalArgs, args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
    let root = global.host_root()?;
    let discover = global.discover_options()?;
    let sync = args
        .k8s
        .sync_config(global.node_name.as_deref(), &discover.labels.prefix);
    Ok(ServeConfig {
        nvml: global.nvml_config(&root),
        root,
        discover,
        listen: args.listen.clone(),
        discovery_interval: args.discovery_interval,
        scrape_timeout: args.scrape_timeout,
        scrape_cache: args.scrape_cache,
        disable_source: args.disable_source.clone(),
        label_hold: args.label_hold,
        http: crate::httpconn::Limits {
            max_connections: args.http_max_connections,
            header_timeout: args.http_header_timeout,
            idle_timeout: args.http_idle_timeout,
        },
        kubeconfig: args.k8s.kubeconfig.clone(),
        sync,
        pods: (&args.pods).into(),
        security: (&args.security).into(),
        talos_api: (&global.talos_api).into(),
    })
}

/// The one-shot commands need the host's PCI bus in sysfs: a root without `sys/bus/pci` is a
/// wrong `--root` (an empty directory, a container's own filesystem), not a host without GPUs.
pub fn require_pci_bus(root: &HostRoot) -> Result<(), ConfigError> {
    let path = root.dir().display().to_string();
    match root.list_dir("sys/bus/pci") {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Err(ConfigError::NoPciBus { path }),
        Err(e) => Err(ConfigError::PciBusUnreadable {
            path,
            error: e.to_string(),
        }),
    }
}

/// The `check --min-gpus` line, when fewer GPUs were found.
pub fn min_gpus_line(found: usize, min: usize) -> Option<String> {
    (found < min).then(|| {
        format!(
            "found {found} GPU{}, --min-gpus requires at least {min}: check that every GPU is seated and powered and shows in /sys/bus/pci/devices (`lspci -nn`)",
            if found == 1 { "" } else { "s" }
        )
    })
}

/// `host-paths --audit`: every host path discovery and one scrape read on --root, each with the
/// mount that covers it (`OUTSIDE` when none does); exit status 1 when any is outside. Needs a
/// multi-threaded Tokio runtime.
pub async fn run_audit(global: &GlobalArgs) -> Result<u8, ConfigError> {
    let root = global.host_root()?;
    let opts = global.discover_options()?;
    let mut nvml = global.nvml_config(&root);
    nvml.quiet = true;
    let reads = crate::readaudit::reads(&root, &opts, nvml).await;
    let mut out = String::new();
    for p in &reads {
        let mount = crate::hostpaths::covering(p).map_or("OUTSIDE", |(m, _)| m.path);
        out.push_str(&format!("{p}\t{mount}\n"));
    }
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(ConfigError::Output)?;
    Ok(u8::from(!crate::readaudit::uncovered(&reads).is_empty()))
}

/// Run a one-shot command; returns the process exit status.
pub fn run_oneshot(cli: &Cli) -> Result<u8, ConfigError> {
    match &cli.command {
        Command::HostPaths { audit: false } => {
            return write_stdout(crate::hostpaths::chart_file().as_bytes()).map(|()| 0);
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "gpuscout", &mut out);
            return write_stdout(&out).map(|()| 0);
        }
        Command::Man { dir: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(ConfigError::Output)?;
            return write_stdout(&out).map(|()| 0);
        }
        Command::Man { dir: Some(dir) } => {
            // Writing files the user asked for, not host reads: HostRoot does not apply.
            #[allow(clippy::disallowed_methods)]
            std::fs::create_dir_all(dir).map_err(ConfigError::Output)?;
            clap_mangen::generate_to(Cli::command(), dir).map_err(ConfigError::Output)?;
            return Ok(0);
        }
        _ => {}
    }
    let root = cli.global.host_root()?;
    require_pci_bus(&root)?;
    let opts = cli.global.discover_options()?;
    // NVML is tried only when PCI shows an NVIDIA GPU, bounded by its call deadlines.
    let mut nvml_cfg = cli.global.nvml_config(&root);
    nvml_cfg.quiet = true;
    let evidence = discover::Evidence {
        talos: crate::talosapi::fetch_for_oneshot(&(&cli.global.talos_api).into())
            .map(std::sync::Arc::new),
        ..discover::Evidence::with_nvml(crate::nvml::Nvml::start(nvml_cfg))
    };
    let report = discover::discover(&root, &opts, &evidence);
    match &cli.command {
        Command::Discover { format } => {
            let text = render::render(&report, (*format).into())?;
            write_stdout(text.as_bytes())?;
            Ok(0)
        }
        Command::Check { min_gpus } => {
            let mut err = std::io::stderr().lock();
            let mut bad = false;
            // GPUs that cannot be listed are unknown, never "all ok".
            if let Some(u) = crate::pci::device_list_unread(&report.host.unread) {
                bad = true;
                let _ = writeln!(
                    err,
                    "cannot list the PCI devices ({}: {}): which GPUs this host has is unknown",
                    u.path, u.error
                );
            }
            if let Some(line) = min_gpus.and_then(|m| min_gpus_line(report.gpus.len(), m)) {
                bad = true;
                let _ = writeln!(err, "{line}");
            }
            for g in &report.gpus {
                if g.status == Status::Ok {
                    continue;
                }
                bad = true;
                for p in &g.problems {
                    let _ = writeln!(err, "{}", crate::verdict::problem_line(g, p));
                }
            }
            if !bad {
                write_stdout(format!("{}\n", check_summary(&report)).as_bytes())?;
            }
            Ok(u8::from(bad))
        }
        Command::Serve(_)
        | Command::Capture(_)
        | Command::HostPaths { .. }
        | Command::PruneLabels(_)
        | Command::Completions { .. }
        | Command::Man { .. } => Err(ConfigError::NotOneShot),
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), ConfigError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(ConfigError::Output)
}

/// The line `check` prints on success, e.g.
/// `ok: 2 GPUs (amd 1, nvidia 1), every driver stack ok, node gpu-7`.
pub fn check_summary(report: &Report) -> String {
    let n = report.gpus.len();
    let node = report
        .node
        .as_deref()
        .map(|n| format!(", node {n}"))
        .unwrap_or_default();
    if n == 0 {
        return format!("ok: no GPUs found{node}");
    }
    let per_vendor: Vec<String> = Vendor::ALL
        .iter()
        .filter_map(|v| {
            let c = report.gpus.iter().filter(|g| g.vendor == *v).count();
            (c > 0).then(|| format!("{v} {c}"))
        })
        .collect();
    let noun = if n == 1 { "GPU" } else { "GPUs" };
    format!(
        "ok: {n} {noun} ({}), every driver stack ok{node}",
        per_vendor.join(", ")
    )
}

/// `capture`: write the archive next to its final name, then rename it into place; print one
/// summary line. Needs a multi-threaded Tokio runtime.
pub async fn run_capture(global: &GlobalArgs, args: &CaptureArgs) -> Result<u8, ConfigError> {
    use crate::capture::{self, CaptureOptions, sanitise::Sanitiser};
    let root = global.host_root()?;
    require_pci_bus(&root)?;
    let mut nvml = global.nvml_config(&root);
    nvml.quiet = true;
    let opts = CaptureOptions {
        discover: global.discover_options()?,
        nvml,
        sanitiser: match (&args.id_key, args.keep_ids) {
            (_, true) => None,
            (Some(k), false) => Some(Sanitiser::with_key(k)),
            (None, false) => Some(Sanitiser::random()),
        },
    };
    let path = args.output.display().to_string();
    let err = |source: Box<dyn std::error::Error + Send + Sync>| ConfigError::Capture {
        path: path.clone(),
        source,
    };
    let mut tmp_name = args.output.clone().into_os_string();
    tmp_name.push(".partial");
    let tmp = PathBuf::from(tmp_name);
    let file = std::fs::File::create(&tmp).map_err(|e| err(e.into()))?;
    let result = capture::capture(&root, opts, std::io::BufWriter::new(file)).await;
    let (buf, m) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e.into()));
        }
    };
    let done = buf
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &args.output));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e.into()));
    }
    let line = format!(
        "{path}: {} files ({} names only), {} directories, {} symlinks; ids {}; {} skipped; NVML {}\n",
        m.files,
        m.name_only_files,
        m.directories,
        m.symlinks,
        m.ids,
        m.skipped.len(),
        m.nvml
    );
    std::io::stdout()
        .write_all(line.as_bytes())
        .map_err(ConfigError::Output)?;
    Ok(0)
}
