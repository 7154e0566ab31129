//! Logging: `tracing` with an `EnvFilter` from `RUST_LOG` (default `info`), plain or JSON lines
//! on stderr (stdout carries command output).
//!
//! Colour (ANSI escapes) only in plain logs written to a terminal, and not when `NO_COLOR` is
//! set (no-color.org); never in JSON lines, never when stderr is a pipe or file (`kubectl logs`).
//!
//! kube's HTTP client logs an ERROR for every failed request and a WARN for every watch cut
//! (`kube_client::client::builder` "failed with error …", `kube_client::client` "eof in
//! poll"): during an API outage that is one line per retry. The agent says the same once per
//! outage itself (`k8s::sync`), so those targets are quieted unless `RUST_LOG` names
//! `kube_client` explicitly.

use std::io::IsTerminal;
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

/// Whether plain log lines get ANSI colour: stderr is a terminal and `NO_COLOR` is unset or
/// empty.
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Install the global subscriber. Safe to call once; a second call is ignored.
pub fn init(format: &str) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().with_ansi(false).try_init()
    } else {
        builder.with_ansi(ansi).try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }

    #[test]
    fn kube_reconnect_noise_is_quieted_unless_asked_for() {
        assert!(
            super::filter(None)
                .to_string()
                .contains("kube_client::client::builder=off")
        );
        assert!(
            super::filter(Some("debug"))
                .to_string()
                .contains("kube_client::client=error")
        );
        let asked = super::filter(Some("info,kube_client=debug")).to_string();
        assert!(!asked.contains("=off"), "{asked}");
    }
}
