//! Logging: `tracing` with an `EnvFilter` from `RUST_LOG` (default `info`), plain or JSON lines
//! on stderr (stdout carries command output).
//!
//! Colour (ANSI escapes) only in plain logs written to a terminal, and not when `NO_COLOR` is
//! set (no-color.org); never in JSON lines, never when stderr is a pipe or file (`kubectl logs`).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Whether plain log lines get ANSI colour: stderr is a terminal and `NO_COLOR` is unset or
/// empty.
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Install the global subscriber. Safe to call once; a second call is ignored.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
}
