//! Keeps a GPU's Node labels through transient read failures (`serve` only). No I/O: the caller
//! passes the listing of `sys/bus/pci/devices` it took in the same pass.
//!
//! One failed sysfs read (an EIO on `device`, a vanished driver link, a KFD file that cannot be
//! read) must not unschedule a node's GPU workloads. The report shows the truth of each pass
//! (the GPU with its `unread` entries and an `unknown` verdict); only the **labels** are computed
//! from each GPU's last good observation while it is *held*:
//!
//! - a GPU of this pass is **degraded** when it has an `unread` path its last good observation
//!   did not have; its last good record is used for the labels;
//! - a GPU of the last good set missing from this pass is held while its address is still listed
//!   in `sys/bus/pci/devices` (it could not be classified), or when the listing itself failed;
//!   an address really absent from the listing is held for one pass and dropped on the second,
//!   so an unplugged GPU's labels go after two passes;
//! - a hold lasts at most `--label-hold` (default 10 min); then the current observation wins
//!   and becomes the new baseline. A GPU seen degraded on its very first pass has no good record:
//!   its labels are what was read.
//!
//! While a GPU is held, `gpuscout_label_hold_seconds{gpu,vendor}` gives the seconds since its
//! labels were last confirmed by a good read (absent when nothing is held).

use crate::labels::{self, LabelConfig};
use crate::model::{Gpu, Report, Vendor};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// Default of `--label-hold`.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(600);

/// What this pass saw in `sys/bus/pci/devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// The device directory names (PCI addresses).
    Listed(BTreeSet<String>),
    /// The listing failed: presence is unknown.
    Unknown,
}

#[derive(Debug)]
struct Entry {
    good: Gpu,
    good_at: Instant,
    /// Consecutive passes the address was missing from the listing.
    absent: u32,
    held: bool,
}

/// State across discovery passes; see the module docs.
#[derive(Debug)]
pub struct LabelHold {
    max_hold: Duration,
    entries: BTreeMap<String, Entry>,
    gauge: HoldGauge,
}

fn unread_paths(g: &Gpu) -> BTreeSet<&str> {
    g.unread.iter().map(|u| u.path.as_str()).collect()
}

impl LabelHold {
    pub fn new(max_hold: Duration) -> Self {
        Self {
            max_hold,
            entries: BTreeMap::new(),
            gauge: HoldGauge::default(),
        }
    }

    /// `gpuscout_label_hold_seconds`, for the daemon's registry.
    pub fn gauge(&self) -> HoldGauge {
        self.gauge.clone()
    }

    /// Addresses held now.
    pub fn held(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.held)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Account for one pass: replace `report.labels` when a GPU is held, keep it otherwise.
    pub fn apply(
        &mut self,
        report: &mut Report,
        listing: &Listing,
        cfg: &LabelConfig,
        now: Instant,
    ) {
        let mut for_labels: BTreeMap<String, Gpu> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for g in &report.gpus {
            seen.insert(g.pci_address.to_string());
            let use_good = match self.entries.get_mut(&g.pci_address.to_string()) {
                Some(e) => {
                    e.absent = 0;
                    let new_failure = !unread_paths(g).is_subset(&unread_paths(&e.good));
                    if !new_failure {
                        if e.held {
                            info!(gpu = %g.pci_address, "GPU read cleanly again; its labels follow discovery again");
                        }
                        e.good = g.clone();
                        e.good_at = now;
                        e.held = false;
                        None
                    } else if now.duration_since(e.good_at) < self.max_hold {
                        if !e.held {
                            warn!(gpu = %g.pci_address, hold = ?self.max_hold, "a read of this GPU failed; keeping its last good labels");
                        }
                        e.held = true;
                        Some(e.good.clone())
                    } else {
                        warn!(gpu = %g.pci_address, hold = ?self.max_hold, "GPU still unreadable after the label hold; labels now follow what was read");
                        e.good = g.clone();
                        e.good_at = now;
                        e.held = false;
                        None
                    }
                }
                None => {
                    self.entries.insert(
                        g.pci_address.to_string(),
                        Entry {
                            good: g.clone(),
                            good_at: now,
                            absent: 0,
                            held: false,
                        },
                    );
                    None
                }
            };
            for_labels.insert(
                g.pci_address.to_string(),
                use_good.unwrap_or_else(|| g.clone()),
            );
        }
        let max_hold = self.max_hold;
        self.entries.retain(|addr, e| {
            if seen.contains(addr) {
                return true;
            }
            let listed = match listing {
                Listing::Listed(names) => names.contains(addr),
                Listing::Unknown => true,
            };
            if listed {
                e.absent = 0;
            } else {
                e.absent += 1;
            }
            if !listed && e.absent >= 2 {
                info!(gpu = %addr, "GPU absent from sys/bus/pci/devices for two passes; its labels go");
                false
            } else if now.duration_since(e.good_at) >= max_hold {
                warn!(gpu = %addr, hold = ?max_hold, "GPU still not discovered after the label hold; its labels go");
                false
            } else {
                if !e.held {
                    warn!(gpu = %addr, listed, "GPU missing from this discovery pass; keeping its last good labels");
                }
                e.held = true;
                for_labels.insert(addr.clone(), e.good.clone());
                true
            }
        });
        let held: Vec<(String, Vendor, Instant)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.held)
            .map(|(a, e)| (a.clone(), e.good.vendor, e.good_at))
            .collect();
        if !held.is_empty() {
            let gpus: Vec<Gpu> = for_labels.into_values().collect();
            report.labels = labels::compute(&report.host, &gpus, cfg);
        }
        self.gauge.set(held);
    }
}

/// `gpuscout_label_hold_seconds{gpu,vendor}`: seconds since a held GPU's labels were last
/// confirmed by a good read. Emitted only for held GPUs.
#[derive(Debug, Clone, Default)]
pub struct HoldGauge(Arc<Mutex<Vec<(String, Vendor, Instant)>>>);

impl HoldGauge {
    fn set(&self, v: Vec<(String, Vendor, Instant)>) {
        *crate::lock::lock(&self.0) = v;
    }

    /// `(gpu, seconds held)` now.
    pub fn values(&self) -> Vec<(String, f64)> {
        let now = Instant::now();
        crate::lock::lock(&self.0)
            .iter()
            .map(|(a, _, t)| (a.clone(), now.duration_since(*t).as_secs_f64()))
            .collect()
    }
}

impl Collector for HoldGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let held = crate::lock::lock(&self.0).clone();
        if held.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "gpuscout_label_hold_seconds",
            "Seconds since a GPU's Node labels were last confirmed by a good read, while they are held through read failures",
            None,
            MetricType::Gauge,
        )?;
        let now = Instant::now();
        for (gpu, vendor, since) in held {
            let labels = [("gpu", gpu), ("vendor", vendor.as_str().to_owned())];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(now.duration_since(since).as_secs_f64()).encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Host, Status, Unread};

    fn gpu(addr: &str, unread: &[&str]) -> Gpu {
        Gpu {
            device_id: Some(0x744c),
            model: "Radeon RX 7900 XT".into(),
            driver: Some("amdgpu".into()),
            memory_bytes: Some(1 << 34),
            unread: unread
                .iter()
                .map(|p| Unread {
                    path: (*p).to_owned(),
                    error: "Input/output error".into(),
                })
                .collect(),
            ..Gpu::test(Vendor::Amd, addr)
        }
    }

    fn report(gpus: Vec<Gpu>, cfg: &LabelConfig) -> Report {
        let host = Host::default();
        let labels = labels::compute(&host, &gpus, cfg);
        Report::new(host, gpus, labels)
    }

    fn listed(a: &[&str]) -> Listing {
        Listing::Listed(a.iter().map(|s| (*s).to_owned()).collect())
    }

    const A: &str = "0000:10:00.0";
    const B: &str = "0000:11:00.0";

    #[tokio::test(start_paused = true)]
    async fn read_failures_hold_labels_and_absence_twice_drops_them() {
        let cfg = LabelConfig {
            prefix: "gpuscout.io".into(),
            ..LabelConfig::default()
        };
        let mut h = LabelHold::new(Duration::from_secs(600));
        let mut good = report(vec![gpu(A, &[]), gpu(B, &[])], &cfg);
        h.apply(&mut good, &listed(&[A, B]), &cfg, Instant::now());
        let want = good.labels.clone();
        assert_eq!(want["gpuscout.io/amd.count"], "2");

        // A's device id unreadable, B gone from the scan though still listed.
        let mut bad_a = gpu(A, &["/sys/bus/pci/devices/0000:10:00.0/device"]);
        bad_a.device_id = None;
        bad_a.memory_bytes = None;
        bad_a.status = Status::Unknown;
        let mut r = report(vec![bad_a.clone()], &cfg);
        assert_ne!(r.labels, want);
        h.apply(&mut r, &listed(&[A, B]), &cfg, Instant::now());
        assert_eq!(r.labels, want, "labels held");
        assert_eq!(r.gpus.len(), 1, "the report itself is not changed");
        assert_eq!(h.held(), [A, B]);
        assert_eq!(h.gauge().values().len(), 2);

        // B really unplugged: held one pass, dropped on the second.
        let mut r = report(vec![bad_a.clone()], &cfg);
        h.apply(&mut r, &listed(&[A]), &cfg, Instant::now());
        assert_eq!(r.labels["gpuscout.io/amd.count"], "2");
        let mut r = report(vec![bad_a.clone()], &cfg);
        h.apply(&mut r, &listed(&[A]), &cfg, Instant::now());
        assert_eq!(r.labels["gpuscout.io/amd.count"], "1");
        assert_eq!(r.labels["gpuscout.io/amd.ready"], "true", "A still held");

        // A reads cleanly again: nothing held.
        let mut r = report(vec![gpu(A, &[])], &cfg);
        let fresh = r.labels.clone();
        h.apply(&mut r, &listed(&[A]), &cfg, Instant::now());
        assert_eq!(r.labels, fresh);
        assert!(h.held().is_empty());
        assert!(h.gauge().values().is_empty());

        // A hold ends after max_hold: the current observation wins.
        let mut r = report(vec![bad_a.clone()], &cfg);
        h.apply(&mut r, &listed(&[A]), &cfg, Instant::now());
        assert_eq!(r.labels["gpuscout.io/amd.ready"], "true");
        tokio::time::advance(Duration::from_secs(601)).await;
        let mut r = report(vec![bad_a.clone()], &cfg);
        let current = r.labels.clone();
        h.apply(&mut r, &listed(&[A]), &cfg, Instant::now());
        assert_eq!(r.labels, current);
        assert_eq!(r.labels["gpuscout.io/amd.ready"], "false");
        // ... and is the new baseline: the same failure is not "new" any more.
        let mut r = report(vec![bad_a], &cfg);
        h.apply(&mut r, &listed(&[A]), &cfg, Instant::now());
        assert!(h.held().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_listing_holds_and_first_sight_is_taken_as_read() {
        let cfg = LabelConfig {
            prefix: "gpuscout.io".into(),
            ..LabelConfig::default()
        };
        let mut h = LabelHold::new(Duration::from_secs(600));
        // Degraded on first sight: nothing to hold.
        let mut r = report(vec![gpu(A, &["/x"])], &cfg);
        let first = r.labels.clone();
        h.apply(&mut r, &listed(&[A]), &cfg, Instant::now());
        assert_eq!(r.labels, first);
        // The PCI listing fails: the GPU is held, however many passes, until max_hold.
        for _ in 0..5 {
            let mut r = report(vec![], &cfg);
            h.apply(&mut r, &Listing::Unknown, &cfg, Instant::now());
            assert_eq!(r.labels, first);
        }
        tokio::time::advance(Duration::from_secs(600)).await;
        let mut r = report(vec![], &cfg);
        h.apply(&mut r, &Listing::Unknown, &cfg, Instant::now());
        assert!(r.labels.is_empty());
    }
}
