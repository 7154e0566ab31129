//! "Log once per reason": the one rule for repeated failures (label sync, Talos API poller,
//! NVML source, the HTTP accept loop, the kubelet PodResources socket).
//!
//! A failure that repeats every pass or every retry is logged at `warn`/`error` the first time
//! its reason is seen, at `debug` after that; when the failure clears, the caller may say so once
//! and the next failure is news again. Reads no files and calls no library: it only remembers
//! which reasons were already logged. Shared by reference (`&self`), so it works behind an `Arc`
//! and in `Fn` sources.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// The reasons logged since the last [`clear`](LogOnce::clear).
#[derive(Debug)]
pub struct LogOnce<K> {
    seen: Mutex<BTreeSet<K>>,
}

impl<K: Ord> Default for LogOnce<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord> LogOnce<K> {
    pub const fn new() -> Self {
        Self {
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    /// Whether `reason` is news: `true` the first time it is seen since the last clear (log it
    /// loudly), `false` afterwards (log it at debug, if at all).
    pub fn first(&self, reason: K) -> bool {
        crate::lock::lock(&self.seen).insert(reason)
    }

    /// The failure has cleared: forget every reason. `true` when something had been logged, so
    /// the caller can say "recovered" once.
    pub fn clear(&self) -> bool {
        let mut seen = crate::lock::lock(&self.seen);
        let had = !seen.is_empty();
        seen.clear();
        had
    }

    /// Whether any reason has been logged since the last clear.
    pub fn any(&self) -> bool {
        !crate::lock::lock(&self.seen).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_once_until_cleared() {
        let l = LogOnce::new();
        assert!(!l.any());
        assert!(l.first("forbidden"));
        assert!(!l.first("forbidden"));
        assert!(l.first("throttled"), "a different reason is news");
        assert!(!l.first("forbidden"));
        assert!(l.any());
        assert!(l.clear(), "something had been logged");
        assert!(!l.clear(), "nothing since");
        assert!(l.first("forbidden"), "news again after the failure cleared");
    }

    #[test]
    fn owned_reasons() {
        let l: LogOnce<String> = LogOnce::default();
        assert!(l.first("connection refused".to_owned()));
        assert!(!l.first("connection refused".to_owned()));
        assert!(l.first("certificate expired".to_owned()));
    }
}
