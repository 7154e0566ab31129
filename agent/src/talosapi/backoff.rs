//! Capped exponential backoff with jitter, and the daemon-side poller that uses it.
//!
//! The daemon asks [`Poller::poll`] once per pass. After a failure it does not call the API
//! again until the backoff has passed (1 s, 2 s, 4 s, ... up to 5 min, ±20 % jitter), and it logs
//! one `warn` line per *distinct* reason, not one per attempt: no retry storm, no log storm.
//! While the API is unusable `poll` returns `None` and the agent uses file and label evidence.

use super::TalosApiConfig;
use super::client::{Client, Error, Settings};
use super::facts::TalosApiFacts;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Exponential backoff between `base` and `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    next: Option<Instant>,
}

impl Backoff {
    pub const DEFAULT_BASE: Duration = Duration::from_secs(1);
    pub const DEFAULT_CAP: Duration = Duration::from_secs(300);

    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
            next: None,
        }
    }

    /// May we try now?
    pub fn ready(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| now >= t)
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Delay before try number `failures + 1`, without jitter: base·2^(failures-1), capped.
    pub fn delay_for(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let shift = (failures - 1).min(30);
        self.base.saturating_mul(1u32 << shift).min(self.cap)
    }

    /// Record a failure at `now`; returns the wait before the next try (jittered, ≤ cap).
    pub fn failure(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let d = self.delay_for(self.failures);
        // ±20 % jitter so a DaemonSet's pods do not retry in lockstep; never above the cap.
        let factor = 0.8 + 0.4 * fastrand::f64();
        let d = d.mul_f64(factor).min(self.cap);
        self.next = Some(now + d);
        d
    }

    /// Record a success: the next failure starts again at `base`.
    pub fn success(&mut self) {
        self.failures = 0;
        self.next = None;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Self::DEFAULT_BASE, Self::DEFAULT_CAP)
    }
}

/// Fetch the facts once: connect, read the four resource types.
pub async fn fetch_once(settings: &Settings) -> Result<TalosApiFacts, Error> {
    let client = Client::connect(settings).await?;
    TalosApiFacts::fetch(&client).await
}

/// Daemon-side state: where the settings come from, the client, the backoff and the last error
/// reported.
///
/// The talosconfig is read again before every poll: Talos renews the ServiceAccount's client
/// certificate (6 h lifetime, renewed with under 1 h left) and the kubelet updates the mounted
/// secret, so a changed file means a new connection with the new certificate.
#[derive(Debug)]
pub struct Poller {
    args: TalosApiConfig,
    client: Option<(Settings, Client)>,
    backoff: Backoff,
    last_error: Option<String>,
}

impl Poller {
    /// `None` when the Talos API is not enabled.
    pub fn new(args: TalosApiConfig) -> Option<Self> {
        Self::with_backoff(args, Backoff::default())
    }

    /// With a custom backoff.
    pub fn with_backoff(args: TalosApiConfig, backoff: Backoff) -> Option<Self> {
        args.enabled.then_some(Poller {
            args,
            client: None,
            backoff,
            last_error: None,
        })
    }

    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The last failure's one-line reason, while the API is unusable.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Fresh facts, or `None` when the API cannot be used now (or is backing off).
    pub async fn poll(&mut self) -> Option<TalosApiFacts> {
        let now = Instant::now();
        if !self.backoff.ready(now) {
            return None;
        }
        match self.try_fetch().await {
            Ok(f) => {
                if self.last_error.take().is_some() {
                    info!(
                        endpoint = self.client.as_ref().map(|(_, c)| c.endpoint()),
                        "Talos API reachable again"
                    );
                }
                self.backoff.success();
                Some(f)
            }
            Err(e) => {
                // Reconnect from scratch next time: the channel may be wedged.
                self.client = None;
                let wait = self.backoff.failure(Instant::now());
                let reason = e.to_string();
                if self.last_error.as_deref() != Some(reason.as_str()) {
                    warn!(
                        kind = e.metric_label(),
                        retry_in_s = wait.as_secs(),
                        "{reason}; using file and label evidence"
                    );
                } else {
                    debug!(
                        kind = e.metric_label(),
                        retry_in_s = wait.as_secs(),
                        failures = self.backoff.failures(),
                        "{reason}"
                    );
                }
                self.last_error = Some(reason);
                None
            }
        }
    }

    async fn try_fetch(&mut self) -> Result<TalosApiFacts, Error> {
        let settings = self.args.settings()?.ok_or(Error::Disabled)?;
        let client = match &self.client {
            Some((s, c)) if *s == settings => c.clone(),
            _ => {
                self.client = None;
                let c = Client::connect(&settings).await?;
                self.client = Some((settings, c.clone()));
                c
            }
        };
        TalosApiFacts::fetch(&client).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_stop_at_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let d: Vec<u64> = (0..12).map(|n| b.delay_for(n).as_secs()).collect();
        assert_eq!(d, vec![0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.delay_for(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn failure_blocks_until_the_jittered_delay_and_success_resets() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(b.ready(t0));
        for _ in 0..20 {
            let d = b.failure(t0);
            assert!(d <= Duration::from_secs(60), "{d:?}");
            assert!(!b.ready(t0));
            assert!(b.ready(t0 + d));
        }
        assert_eq!(b.failures(), 20);
        let first = {
            let mut fresh = Backoff::new(Duration::from_secs(10), Duration::from_secs(60));
            fresh.failure(t0)
        };
        assert!(first >= Duration::from_secs(8) && first <= Duration::from_secs(12));
        b.success();
        assert!(b.ready(t0));
        assert_eq!(b.failures(), 0);
    }
}
