//! Source `talos`: the Talos version and installed system extensions of this node, from the
//! latest discovery report (`etc/os-release` `ID=talos`/`VERSION_ID` and `etc/extensions.yaml`,
//! read by `host.rs`; they change only at reboot, so they are not re-read per scrape).
//!
//! Not Talos: no series, success 1. Fails (success 0) when discovery could not read one of
//! those files (it is listed in the report's `host.unread`): the series it would give are
//! then absent, not guessed.

use super::{ScrapeContext, Sink, Source, SourceError, families as f};

/// Talos facts source.
#[derive(Debug)]
pub struct Talos;

const FILES: &[&str] = &[
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/extensions.yaml",
];

impl Source for Talos {
    fn name(&self) -> &'static str {
        "talos"
    }

    fn shares_thread(&self) -> bool {
        true
    }

    fn collect(&self, ctx: &ScrapeContext, out: &mut Sink) -> Result<(), SourceError> {
        let host = &ctx.report.host;
        if let Some(t) = &host.talos {
            out.push(&f::TALOS_INFO, vec![("version", t.version.clone())], 1.0);
            for e in &t.extensions {
                out.push(
                    &f::TALOS_EXTENSION_INFO,
                    vec![("name", e.name.clone()), ("version", e.version.clone())],
                    1.0,
                );
            }
        }
        match host
            .unread
            .iter()
            .find(|u| FILES.contains(&u.path.as_str()))
        {
            Some(u) => Err(SourceError::Malformed {
                path: u.path.clone(),
                reason: u.error.clone(),
            }),
            None => Ok(()),
        }
    }
}
