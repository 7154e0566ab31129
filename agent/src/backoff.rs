//! The one retry backoff of the agent: capped exponential growth, one jitter rule, and a
//! server's `Retry-After` as a lower bound. Used by the label sync (`k8s::sync`), the Talos API
//! poller (`talosapi::poller`) and the NVML worker (`nvml`).
//!
//! Pure arithmetic plus `fastrand`; reads no files and calls no library. The caller sleeps or
//! schedules with `tokio::time` / `Instant`, so tests run it in paused time or with a seed.

use std::time::Duration;

/// Retry delays: `base * 2^n`, capped, "equal jitter" (uniform in the upper half, so a delay is
/// never near zero and thousands of agents spread out), and never shorter than `Retry-After`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

/// Longest `Retry-After` we accept from a server; a larger one is clamped to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// Same, with a fixed random seed (tests, simulations).
    pub fn with_seed(base: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            ..Self::new(base, cap)
        }
    }

    /// The first delay's upper bound.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay (before `Retry-After`).
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// Failures since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Forget past failures.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The upper bound of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next try, and count one more failure.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        let jittered = half + Duration::from_millis(self.rng.u64(0..=span));
        match retry_after {
            Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }

    /// A uniform random delay in `[0, max)`, for spreading first writes.
    pub fn jitter(&mut self, max: Duration) -> Duration {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(self.rng.u64(0..ms))
    }
}

/// A `Retry-After` header value in delta-seconds (RFC 9110 §10.2.3), clamped to
/// [`MAX_RETRY_AFTER`]. An HTTP date or anything unparsable is `None`: the backoff alone decides.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// The `Retry-After` of an HTTP response's headers, if present and in delta-seconds.
pub fn retry_after_header(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(300), 7);
        let mut last_ceiling = Duration::ZERO;
        for _ in 0..20 {
            let c = b.ceiling();
            let d = b.next_delay(None);
            assert!(d >= c / 2 && d <= c, "{d:?} outside [{:?}, {c:?}]", c / 2);
            assert!(c >= last_ceiling);
            last_ceiling = c;
        }
        assert_eq!(last_ceiling, Duration::from_secs(300));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn never_sooner_than_retry_after() {
        let mut b = Backoff::with_seed(Duration::from_millis(100), Duration::from_secs(5), 1);
        for _ in 0..10 {
            assert!(b.next_delay(Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        }
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(1_000_000))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn first_delay_is_within_the_upper_half_of_base() {
        for seed in 0..50 {
            let mut b = Backoff::with_seed(Duration::from_secs(10), Duration::from_secs(60), seed);
            let d = b.next_delay(None);
            assert!(
                d >= Duration::from_secs(5) && d <= Duration::from_secs(10),
                "{d:?}"
            );
            assert_eq!(b.attempts(), 1);
        }
    }

    #[test]
    fn ceilings_double_then_stop_at_the_cap() {
        let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(300), 9);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling().as_secs());
            b.next_delay(None);
        }
        assert_eq!(
            ceilings,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
        for _ in 0..100 {
            b.next_delay(None);
        }
        assert_eq!(
            b.ceiling(),
            Duration::from_secs(300),
            "no overflow past 2^31"
        );
    }

    #[test]
    fn reset_starts_again_at_base() {
        let mut b = Backoff::with_seed(Duration::from_secs(2), Duration::from_secs(64), 5);
        for _ in 0..6 {
            b.next_delay(None);
        }
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.attempts(), 0);
        let d = b.next_delay(None);
        assert!(
            d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
            "{d:?}"
        );
    }

    #[test]
    fn zero_base_never_waits_unless_told() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay(None), Duration::ZERO);
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn cap_below_base_is_raised_to_base() {
        let b = Backoff::new(Duration::from_secs(8), Duration::from_secs(1));
        assert_eq!(b.cap(), Duration::from_secs(8));
        assert_eq!(b.base(), Duration::from_secs(8));
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after_header(&h), None);
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("3"),
        );
        assert_eq!(retry_after_header(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn jitter_is_bounded() {
        let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(2), 3);
        assert_eq!(b.jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(b.jitter(Duration::from_secs(10)) < Duration::from_secs(10));
        }
    }
}
