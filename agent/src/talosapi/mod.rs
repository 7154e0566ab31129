//! Optional Talos API evidence: COSI resources read over mutual TLS from apid.
//!
//! ```text
//!  /var/run/secrets/talos.dev/config ──► config (talosconfig: CA, cert, key, endpoint)
//!                                            │
//!  talos.default:50000  ◄── client (tonic, rustls/ring, metadata node=<node IP>, deadline)
//!        │  cosi.resource.State/List
//!        ▼
//!  facts: ExtensionStatuses, KernelModuleSpecs, Services, PCIDevices (YAML specs)
//!        │
//!        ▼
//!  refine(&facts, &mut gpus)  (after the verdict engine; pure)
//! ```
//!
//! Off unless `--talos-api` (env `GPUSCOUT_TALOS_API`) is given. It needs Talos'
//! `machine.features.kubernetesTalosAPIAccess` on the control-plane nodes and a
//! `talos.dev/v1alpha1` ServiceAccount with role `os:reader` whose secret is mounted at
//! `/var/run/secrets/talos.dev` (see `docs/talos-api.md`). When the file is missing, apid is
//! unreachable, the certificate is refused or the deadline passes, the agent logs one line with
//! the reason and goes on with file and label evidence; the daemon retries with a capped
//! backoff ([`Poller`]).

mod client;
mod config;
mod facts;
mod poller;
mod refine;

/// Code generated from `proto/cosi/state.proto` (messages, `state_client`, `state_server`).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("cosi.resource");
}

pub use crate::cause::kernel_modules_hint;
pub use client::{Client, Error, Settings};
pub use config::{
    APID_PORT, DEFAULT_CONFIG_PATH, Endpoint, TalosConfig, TalosConfigError, normalise_key_pem,
};
pub use facts::{
    EXTENSION_STATUSES, KERNEL_MODULE_SPECS, PCI_DEVICES, SERVICES, ServiceState, TalosApiFacts,
    TalosPciDevice,
};
pub use poller::{Poller, fetch_once};
pub use refine::{NVIDIA_MODULES, PERSISTENCED, refine};

use std::path::PathBuf;
use std::time::Duration;

/// Settings of the Talos API client (`--talos-api`, `--talos-config`, `--talos-endpoint`,
/// `--talos-node`, `--talos-timeout`).
#[derive(Debug, Clone)]
pub struct TalosApiConfig {
    /// Off unless set.
    pub enabled: bool,
    /// talosconfig to use: the ServiceAccount secret's `config` key, mounted in the pod.
    pub config: PathBuf,
    /// Talos API endpoint (`host[:port]`); `None`: the talosconfig's first endpoint.
    pub endpoint: Option<String>,
    /// IP of this node, sent as gRPC metadata `node`.
    pub node: Option<String>,
    /// Deadline in seconds for connecting and for each call (checked by [`Self::settings`]).
    pub timeout_s: f64,
}

impl Default for TalosApiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            config: PathBuf::from(DEFAULT_CONFIG_PATH),
            endpoint: None,
            node: None,
            timeout_s: 5.0,
        }
    }
}

impl TalosApiConfig {
    /// `Ok(None)` when the feature is off; the settings when it is on and configured.
    pub fn settings(&self) -> Result<Option<Settings>, Error> {
        if !self.enabled {
            return Ok(None);
        }
        let node = self
            .node
            .clone()
            .filter(|n| !n.trim().is_empty())
            .ok_or(Error::NoNode)?;
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0 && self.timeout_s <= 3600.0) {
            return Err(Error::BadTimeout(self.timeout_s));
        }
        let config = TalosConfig::load(&self.config)?;
        Ok(Some(Settings {
            config,
            endpoint: self.endpoint.clone(),
            node: node.trim().to_owned(),
            deadline: Duration::from_secs_f64(self.timeout_s),
        }))
    }
}

/// One-shot commands: fetch the facts once within the deadline. `None` when the feature is off,
/// or, after one `warn` line with the reason, when it cannot be used.
pub fn fetch_for_oneshot(args: &TalosApiConfig) -> Option<TalosApiFacts> {
    let settings = match args.settings() {
        Ok(None) => return None,
        Ok(Some(s)) => s,
        Err(e) => {
            tracing::warn!(
                kind = e.metric_label(),
                "{e}; using file and label evidence"
            );
            return None;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(
                "Talos API: cannot start an async runtime: {e}; using file and label evidence"
            );
            return None;
        }
    };
    match rt.block_on(fetch_once(&settings)) {
        Ok(f) => {
            tracing::info!(
                extensions = f.extensions.len(),
                kernel_modules = f.kernel_modules.len(),
                services = f.services.len(),
                pci_devices = f.pci_devices.len(),
                skipped = f.skipped,
                "Talos API facts read"
            );
            Some(f)
        }
        Err(e) => {
            tracing::warn!(
                kind = e.metric_label(),
                "{e}; using file and label evidence"
            );
            None
        }
    }
}
