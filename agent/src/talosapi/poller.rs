//! The daemon-side Talos API poller.
//!
//! The daemon asks [`Poller::poll`] once per pass. After a failure it does not call the API
//! again until the shared [`Backoff`] has passed (up to 1 s, 2 s, 4 s, ... up to 5 min, with the
//! backoff's jitter), and it logs one `warn` line per *distinct* reason until the API answers
//! again ([`crate::logonce::LogOnce`]), not one per attempt: no retry storm, no log storm. While
//! the API is unusable `poll` returns `None` and the agent uses file and label evidence. It reads
//! the talosconfig (`--talos-config`) before every poll; a missing file is an error like any
//! other and is retried the same way.

use super::TalosApiConfig;
use super::client::{Client, Error, Settings};
use super::facts::TalosApiFacts;
use crate::backoff::Backoff;
use crate::logonce::LogOnce;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Fetch the facts once: connect, read the four resource types.
pub async fn fetch_once(settings: &Settings) -> Result<TalosApiFacts, Error> {
    let client = Client::connect(settings).await?;
    TalosApiFacts::fetch(&client).await
}

/// Daemon-side state: where the settings come from, the client, the backoff, the last error and
/// the reasons already logged.
///
/// The talosconfig is read again before every poll: Talos renews the ServiceAccount's client
/// certificate (6 h lifetime, renewed with under 1 h left) and the kubelet updates the mounted
/// secret, so a changed file means a new connection with the new certificate.
#[derive(Debug)]
pub struct Poller {
    args: TalosApiConfig,
    client: Option<(Settings, Client)>,
    backoff: Backoff,
    /// No attempt before this instant (set after a failure).
    next_try: Option<Instant>,
    last_error: Option<String>,
    logged: LogOnce<String>,
}

/// The poller's default backoff: 1 s doubling up to 5 min.
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// See [`DEFAULT_BACKOFF_BASE`].
const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(300);

impl Poller {
    /// `None` when the Talos API is not enabled.
    pub fn new(args: TalosApiConfig) -> Option<Self> {
        Self::with_backoff(
            args,
            Backoff::new(DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP),
        )
    }

    /// With a custom backoff.
    pub fn with_backoff(args: TalosApiConfig, backoff: Backoff) -> Option<Self> {
        args.enabled.then_some(Poller {
            args,
            client: None,
            backoff,
            next_try: None,
            last_error: None,
            logged: LogOnce::new(),
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
        if self.next_try.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        match self.try_fetch().await {
            Ok(f) => {
                self.last_error = None;
                if self.logged.clear() {
                    info!(
                        endpoint = self.client.as_ref().map(|(_, c)| c.endpoint()),
                        "Talos API reachable again"
                    );
                }
                self.backoff.reset();
                self.next_try = None;
                Some(f)
            }
            Err(e) => {
                // Reconnect from scratch next time: the channel may be wedged.
                self.client = None;
                let wait = self.backoff.next_delay(None);
                self.next_try = Some(Instant::now() + wait);
                let reason = e.to_string();
                if self.logged.first(reason.clone()) {
                    warn!(
                        kind = e.metric_label(),
                        retry_in_s = wait.as_secs(),
                        "{reason}; using file and label evidence"
                    );
                } else {
                    debug!(
                        kind = e.metric_label(),
                        retry_in_s = wait.as_secs(),
                        failures = self.backoff.attempts(),
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
