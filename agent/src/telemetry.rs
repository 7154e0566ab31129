//! Logging: `tracing` with an `EnvFilter` from `RUST_LOG` (default `info`), plain or JSON lines
//! on stderr (stdout carries command output).

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Safe to call once; a second call is ignored.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
