//! What the agent reads of a host: one discovery pass (NVML included) and one scrape of every
//! metrics source (the built-in sysfs/procfs sources and NVML) on a [`HostRoot`] with read
//! recording on, and the recorded host paths checked against the mount table
//! ([`crate::hostpaths`]).
//!
//! `gpuscout host-paths --audit` runs it on a node (or a host root) to show that the chart's
//! mounts cover what the agent reads there; the mount-table test runs it on every fixture; a host
//! capture can use [`reads`] to learn which files to copy. The files it touches are exactly those
//! of `discover` plus one scrape; nothing is written. ROCm SMI is not run: it reads the real
//! `/sys` and ignores the root.

use crate::discover::{self, Extras, Options};
use crate::hostroot::HostRoot;
use crate::metrics::{self, Exporter, ExporterConfig};
use crate::nvml::{Nvml, NvmlConfig, source::NvmlSource};
use std::sync::Arc;
use tokio::sync::watch;

/// Every host path (as `/sys/...`) that discovery and one full scrape touch on `root`, sorted.
/// `nvml` gives the NVML settings; its root is replaced by the recording one. Must run inside a
/// multi-threaded Tokio runtime (discovery runs on a blocking thread).
pub async fn reads(root: &HostRoot, opts: &Options, mut nvml: NvmlConfig) -> Vec<String> {
    let (root, log) = root.clone().recording();
    nvml.root = root.clone();
    let handle = Nvml::start(nvml);
    let extras = Extras {
        nvml: Some(handle.clone()),
        ..Default::default()
    };
    let (r, o) = (root.clone(), opts.clone());
    let report =
        match tokio::task::spawn_blocking(move || discover::discover_with(&r, &o, &extras)).await {
            Ok(report) => report,
            // A panic in discovery: what was recorded up to it is still the answer.
            Err(_) => return log.paths(),
        };
    let (_tx, rx) = watch::channel(Arc::new(report));
    let mut sources = metrics::default_sources();
    sources.push(Arc::new(NvmlSource::new(handle)));
    let exporter = Exporter::new(root, rx, sources, ExporterConfig::default());
    let _ = exporter.scrape().await;
    log.paths()
}

/// The reads of `paths` that no mount of the table covers.
pub fn uncovered(paths: &[String]) -> Vec<String> {
    crate::hostpaths::uncovered(paths.iter().map(String::as_str))
        .into_iter()
        .map(str::to_owned)
        .collect()
}
