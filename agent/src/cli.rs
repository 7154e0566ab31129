//! Command-line interface: flags (each with a `GPUSCOUT_*` env var) and the commands.
//!
//! Precedence for every setting: command-line flag, then environment variable, then default.

use crate::discover::{self, Options};
use crate::hostroot::HostRoot;
use crate::labels::{CompatProfiles, LabelConfig};
use crate::model::Status;
use crate::render::{self, Format};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// GPU node agent: discovers AMD, NVIDIA and Intel GPUs, verifies their driver stack (Talos
/// extensions, modules, binding, firmware), labels the Node and exports Prometheus metrics.
///
/// Every flag can also be set with the environment variable named in its help; a flag given on
/// the command line wins over the environment, which wins over the default.
#[derive(Debug, Parser)]
#[command(name = "gpuscout", version, propagate_version = true)]
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
    #[arg(long, env = "GPUSCOUT_ROOT", default_value = "/", global = true)]
    pub root: PathBuf,

    /// Prefix of the label keys gpuscout owns.
    #[arg(long, env = "GPUSCOUT_LABEL_PREFIX", default_value = crate::labels::DEFAULT_PREFIX, global = true)]
    pub label_prefix: String,

    /// Also write the `nvidia.com/gpu.*` / `nvidia.com/cuda.*` keys of NVIDIA GPU Feature Discovery.
    #[arg(long, env = "GPUSCOUT_COMPAT_NVIDIA_GFD", global = true)]
    pub compat_nvidia_gfd: bool,

    /// Also write the `amd.com/gpu.*` keys of AMD's node labeller.
    #[arg(long, env = "GPUSCOUT_COMPAT_AMD_LABELLER", global = true)]
    pub compat_amd_labeller: bool,

    /// Also write the Intel NFD rule keys (`intel.feature.node.kubernetes.io/gpu`, ...).
    #[arg(long, env = "GPUSCOUT_COMPAT_INTEL_NFD", global = true)]
    pub compat_intel_nfd: bool,

    /// NVML library to load instead of the Talos paths under --root
    /// (`usr/local/glibc/usr/lib/libnvidia-ml.so.1`, `usr/local/lib/libnvidia-ml.so.1`) and the
    /// loader's `libnvidia-ml.so.1`.
    #[arg(long, env = "GPUSCOUT_NVML_LIB", global = true)]
    pub nvml_lib: Option<PathBuf>,

    /// Deadline of one NVML call in milliseconds; a call past it marks NVML failed.
    #[arg(long, env = "GPUSCOUT_NVML_CALL_TIMEOUT_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=60_000), global = true)]
    pub nvml_call_timeout_ms: u64,

    /// Log format: `plain` or `json`. The level comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "GPUSCOUT_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"], global = true)]
    pub log_format: String,

    #[command(flatten)]
    pub talos_api: crate::talosapi::TalosApiArgs,
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
        format: Format,
    },
    /// Exit 0 when every GPU's driver stack is `ok`, 1 otherwise (one line per problem on
    /// stderr, with its fix), 2 on a usage or configuration error.
    Check {
        /// Also exit 1 when fewer than N GPUs are found (every GPU PCI function `discover`
        /// lists counts, SR-IOV virtual functions included).
        #[arg(long, env = "GPUSCOUT_MIN_GPUS", value_name = "N")]
        min_gpus: Option<usize>,
    },
    /// Run as a daemon: rediscover periodically and serve Prometheus `/metrics` (read from
    /// sysfs at scrape time), `/healthz` and `/readyz`. Standalone unless label sync is on.
    Serve(ServeArgs),
}

/// Flags of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve on, `host:port` (`[::]:10106` for IPv6).
    #[arg(long, env = "GPUSCOUT_LISTEN", default_value = crate::serve::DEFAULT_LISTEN)]
    pub listen: String,

    /// How often discovery runs again (`30s`, `2m`, `500ms`).
    #[arg(long, env = "GPUSCOUT_DISCOVERY_INTERVAL", default_value = "30s", value_parser = crate::serve::parse_positive_duration)]
    pub discovery_interval: Duration,

    /// Deadline of one scrape: sources still reading then are reported failed
    /// (`gpuscout_scrape_source_success 0`) and the rest is served.
    #[arg(long, env = "GPUSCOUT_SCRAPE_TIMEOUT", default_value = "4s", value_parser = crate::serve::parse_positive_duration)]
    pub scrape_timeout: Duration,

    /// How long one scrape's readings are reused for back-to-back scrapes (`0` turns the cache
    /// off; scrapes that arrive while a pass runs still share it).
    #[arg(long, env = "GPUSCOUT_SCRAPE_CACHE", default_value = "500ms", value_parser = crate::serve::parse_duration)]
    pub scrape_cache: Duration,

    #[command(flatten)]
    pub k8s: crate::k8s::K8sArgs,

    #[command(flatten)]
    pub pods: crate::pods::PodsArgs,

    #[command(flatten)]
    pub security: crate::authn::SecurityArgs,
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
    #[error("`serve` is not a one-shot command")]
    NotOneShot,
    #[error(
        "--root {path}: no sys/bus/pci below it, so no GPU can be seen: point --root at a host root whose sys/ is the host's sysfs (in a pod: mount the host / or /sys read-only)"
    )]
    NoPciBus { path: String },
    #[error("--root {path}: sys/bus/pci cannot be read: {error}")]
    PciBusUnreadable { path: String, error: String },
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
            evidence: Default::default(),
            nvml: None,
            nvml_source: None,
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

/// Run a one-shot command; returns the process exit status.
pub fn run_oneshot(cli: &Cli) -> Result<u8, ConfigError> {
    let root = cli.global.host_root()?;
    require_pci_bus(&root)?;
    let opts = cli.global.discover_options()?;
    // NVML is tried only when PCI shows an NVIDIA GPU, bounded by its call deadlines.
    let mut nvml_cfg = cli.global.nvml_config(&root);
    nvml_cfg.quiet = true;
    let extras = discover::Extras {
        talos: crate::talosapi::fetch_for_oneshot(&cli.global.talos_api).map(std::sync::Arc::new),
        nvml: Some(crate::nvml::Nvml::start(nvml_cfg)),
        ..Default::default()
    };
    let report = discover::discover_with(&root, &opts, &extras);
    match &cli.command {
        Command::Discover { format } => {
            let text = render::render(&report, *format)?;
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(ConfigError::Output)?;
            Ok(0)
        }
        Command::Check { min_gpus } => {
            let mut err = std::io::stderr().lock();
            let mut bad = false;
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
            Ok(u8::from(bad))
        }
        Command::Serve(_) => Err(ConfigError::NotOneShot),
    }
}
