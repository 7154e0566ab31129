//! Logging: `tracing` with an `EnvFilter` from `RUST_LOG` (default `info`), plain or JSON lines
//! on stderr (stdout carries command output).
//!
//! kube's HTTP client logs an ERROR for every failed request and a WARN for every watch cut
//! (`kube_client::client::builder` "failed with error …", `kube_client::client` "eof in
//! poll"): during an API outage that is one line per retry. The agent says the same once per
//! outage itself (`k8s::sync`), so those targets are quieted unless `RUST_LOG` names
//! `kube_client` explicitly.

use tracing_subscriber::EnvFilter;

/// Directives added to every filter that does not mention `kube_client` itself.
pub const KUBE_NOISE: &str = "kube_client::client::builder=off,kube_client::client=error";

/// The filter for a `RUST_LOG` value (`None`: unset).
pub fn filter(rust_log: Option<&str>) -> EnvFilter {
    let base = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or("info");
    let spec = if base.contains("kube_client") {
        base.to_owned()
    } else {
        format!("{base},{KUBE_NOISE}")
    };
    EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new(format!("info,{KUBE_NOISE}")))
}

/// Install the global subscriber. Safe to call once; a second call is ignored.
pub fn init(format: &str) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
