//! Kubernetes Events on the Node when a GPU's driver verdict changes (e.g. `ok` →
//! `extension-missing`, with the verdict's hint in the message), as `kubectl describe node`
//! shows them. Best effort: an Event that fails is counted and dropped, never retried, and a
//! token bucket caps how many one agent can post (so a flapping GPU cannot flood the API).

use crate::model::{Gpu, Status};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Token bucket: `burst` Events at once, then one per `every`.
#[derive(Debug, Clone)]
pub struct EventLimiter {
    burst: u32,
    every: Duration,
    tokens: f64,
    last: Instant,
}

impl EventLimiter {
    pub fn new(burst: u32, every: Duration) -> Self {
        Self {
            burst,
            every,
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Take a token if one is left.
    pub fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        if !self.every.is_zero() {
            self.tokens = (self.tokens + elapsed.as_secs_f64() / self.every.as_secs_f64())
                .min(f64::from(self.burst));
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One verdict change worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictChange {
    pub gpu: String,
    pub from: Option<Status>,
    pub to: Status,
    pub message: String,
}

/// Compare the new GPUs' verdicts with the previous ones (by PCI address). The first sight of a
/// GPU counts as a change only when it is not `ok`, so a healthy node starts silently.
pub fn verdict_changes(prev: &BTreeMap<String, Status>, gpus: &[Gpu]) -> Vec<VerdictChange> {
    let mut out = Vec::new();
    for g in gpus {
        let before = prev.get(&g.pci_address.to_string()).copied();
        if before == Some(g.status) || (before.is_none() && g.status == Status::Ok) {
            continue;
        }
        let from = before.map_or_else(|| "new".to_owned(), |s| s.to_string());
        let mut message = format!(
            "GPU {} ({} {}): {} -> {}",
            g.pci_address, g.vendor, g.model, from, g.status
        );
        if let Some(p) = g.problems.iter().find(|p| p.status == g.status) {
            message.push_str(&format!(": {}; fix: {}", p.detail, p.hint));
        }
        out.push(VerdictChange {
            gpu: g.pci_address.to_string(),
            from: before,
            to: g.status,
            message,
        });
    }
    out
}

/// `extension-missing` → `ExtensionMissing` (Event reasons are CamelCase).
pub fn reason(status: Status) -> String {
    let mut s = String::from("Gpu");
    for part in status.as_str().split('-') {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            s.extend(first.to_uppercase());
            s.push_str(c.as_str());
        }
    }
    s
}

/// A core/v1 Event about `node` (namespace `default`, where node Events live).
pub fn event_body(node: &str, node_uid: &str, change: &VerdictChange) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let kind = if change.to == Status::Ok {
        "Normal"
    } else {
        "Warning"
    };
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{node}.gpuscout.{:016x}", fastrand::u64(..)),
            "namespace": "default",
        },
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid},
        "reason": reason(change.to),
        "message": truncate(&change.message, 1024),
        "type": kind,
        "source": {"component": "gpuscout", "host": node},
        "reportingComponent": "gpuscout",
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_camel_case() {
        assert_eq!(reason(Status::ExtensionMissing), "GpuExtensionMissing");
        assert_eq!(reason(Status::Ok), "GpuOk");
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_refills_over_time() {
        let mut l = EventLimiter::new(2, Duration::from_secs(60));
        assert!(l.try_take());
        assert!(l.try_take());
        assert!(!l.try_take());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(l.try_take());
        assert!(!l.try_take());
    }
}
