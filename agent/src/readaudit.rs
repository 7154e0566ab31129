//! What the agent reads of a host: one discovery pass (NVML included) and one scrape of every
//! metrics source (the built-in sysfs/procfs sources and NVML) on a [`HostRoot`] with read
//! recording on, and the recorded host paths checked against the mount table
//! ([`crate::hostpaths`]).
//!
//! `gpuscout host-paths --audit` runs it on a node (or a host root) to show that the chart's
//! mounts cover what the agent reads there; the mount-table test runs it on every fixture;
//! `gpuscout capture` copies what [`record`] saw read. The files it touches are exactly those
//! of `discover` plus one scrape; nothing is written. ROCm SMI is not run: it reads the real
//! `/sys` and ignores the root.

use crate::discover::{self, Evidence, Options};
use crate::hostroot::{HostRoot, ReadLog};
use crate::metrics::{self, Exporter, ExporterConfig, Snapshot};
use crate::model::Report;
use crate::nvml::{Nvml, NvmlConfig, NvmlHandle, source::NvmlSource};
use std::sync::Arc;
use tokio::sync::watch;

/// One recorded pass: what was read, and what the agent made of it.
pub struct Pass {
    /// Every path touched, and the directories listed.
    pub log: Arc<ReadLog>,
    /// The discovery report; `None` when discovery panicked (the log holds what it read).
    pub report: Option<Arc<Report>>,
    /// The scrape; `None` when discovery failed or the pass died.
    pub metrics: Option<Arc<Snapshot>>,
    /// The NVML source both used (its state and last snapshot).
    pub nvml: NvmlHandle,
}

/// Run discovery and one full scrape on `root` with read recording on. `nvml` gives the NVML
/// settings; its root is replaced by the recording one. Must run inside a multi-threaded Tokio
/// runtime (discovery runs on a blocking thread).
pub async fn record(root: &HostRoot, opts: &Options, mut nvml: NvmlConfig) -> Pass {
    let (root, log) = root.clone().recording();
    nvml.root = root.clone();
    let handle = Nvml::start(nvml);
    let evidence = Evidence::with_nvml(handle.clone());
    let (r, o) = (root.clone(), opts.clone());
    let mut pass = Pass {
        log,
        report: None,
        metrics: None,
        nvml: handle.clone(),
    };
    let report =
        match tokio::task::spawn_blocking(move || discover::discover(&r, &o, &evidence)).await {
            Ok(report) => Arc::new(report),
            // A panic in discovery: what was recorded up to it is still the answer.
            Err(_) => return pass,
        };
    pass.report = Some(report.clone());
    let (_tx, rx) = watch::channel(report);
    let mut sources = metrics::default_sources();
    sources.push(Arc::new(NvmlSource::new(handle)));
    let exporter = Exporter::new(root, rx, sources, ExporterConfig::default());
    pass.metrics = exporter.scrape().await;
    pass
}

/// Every host path (as `/sys/...`) that discovery and one full scrape touch on `root`, sorted
/// ([`record`]).
pub async fn reads(root: &HostRoot, opts: &Options, nvml: NvmlConfig) -> Vec<String> {
    record(root, opts, nvml).await.log.paths()
}

/// The reads of `paths` that no mount of the table covers.
pub fn uncovered(paths: &[String]) -> Vec<String> {
    crate::hostpaths::uncovered(paths.iter().map(String::as_str))
        .into_iter()
        .map(str::to_owned)
        .collect()
}
