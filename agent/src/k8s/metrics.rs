//! The agent's own label-sync metrics (prometheus-client), registered into a registry that the
//! caller owns and serves. Names are complete (`gpuscout_…`), so register into an unprefixed
//! registry.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Counters and gauges of the sync loop; cheap to clone (shared atomics).
#[derive(Debug, Clone, Default)]
pub struct SyncMetrics {
    /// `gpuscout_label_sync_total{result}`: every sync attempt, by outcome (`applied`,
    /// `unchanged`, `forbidden`, `node_not_found`, `throttled`, `unreachable`, ...).
    pub sync: Family<ResultLabel, Counter>,
    /// `gpuscout_label_writes_total{kind}`: writes made (`apply`, `cleanup`, `nodefeature`,
    /// `nfd_file`).
    pub writes: Family<KindLabel, Counter>,
    /// `gpuscout_label_last_sync_timestamp_seconds`: Unix time of the last successful sync.
    /// Absent until the first successful sync (never a made-up 0).
    pub last_sync: LastSync,
    /// `gpuscout_k8s_api_requests_total{result}`: every API request by HTTP status class.
    pub requests: Family<ResultLabel, Counter>,
    /// `gpuscout_k8s_events_total{result}`: Events `posted`, `dropped` by the rate limit, `failed`.
    pub events: Family<ResultLabel, Counter>,
}

impl SyncMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register every metric into `registry` (which must not add its own prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gpuscout_label_sync",
            "Label sync attempts by result",
            self.sync.clone(),
        );
        registry.register(
            "gpuscout_label_writes",
            "Writes made to keep the labels in sync, by kind",
            self.writes.clone(),
        );
        registry.register_collector(Box::new(self.last_sync.clone()));
        registry.register(
            "gpuscout_k8s_api_requests",
            "Kubernetes API requests by result",
            self.requests.clone(),
        );
        registry.register(
            "gpuscout_k8s_events",
            "Kubernetes Events about GPU verdict changes, by result",
            self.events.clone(),
        );
    }

    pub fn sync_result(&self, result: &str) {
        self.sync
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn write(&self, kind: &str) {
        self.writes
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn request(&self, result: &str) {
        self.requests
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn event(&self, result: &str) {
        self.events
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Value of `gpuscout_label_sync_total{result}` (tests, simulations).
    pub fn sync_count(&self, result: &str) -> u64 {
        self.sync
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .get()
    }

    /// Sum of `gpuscout_label_writes_total` over kinds.
    pub fn write_count(&self, kind: &str) -> u64 {
        self.writes
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .get()
    }

    pub fn event_count(&self, result: &str) -> u64 {
        self.events
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .get()
    }

    pub fn mark_synced(&self) {
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            self.last_sync.set(d.as_secs_f64());
        }
    }
}

/// `gpuscout_label_last_sync_timestamp_seconds`, emitted only once a sync has succeeded.
#[derive(Debug, Clone, Default)]
pub struct LastSync(Arc<Mutex<Option<f64>>>);

impl LastSync {
    pub fn set(&self, unix_seconds: f64) {
        *crate::lock::lock(&self.0) = Some(unix_seconds);
    }

    pub fn get(&self) -> Option<f64> {
        *crate::lock::lock(&self.0)
    }
}

impl Collector for LastSync {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(v) = self.get() else {
            return Ok(());
        };
        let metric = encoder.encode_descriptor(
            "gpuscout_label_last_sync_timestamp_seconds",
            "Unix time of the last successful label sync",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(v).encode(metric)
    }
}
