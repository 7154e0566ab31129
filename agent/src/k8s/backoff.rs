//! Capped exponential backoff with jitter, honouring a server's `Retry-After`. Pure arithmetic
//! plus `fastrand`; the caller sleeps with `tokio::time`, so tests can run it in paused time.

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
    fn jitter_is_bounded() {
        let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(2), 3);
        assert_eq!(b.jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(b.jitter(Duration::from_secs(10)) < Duration::from_secs(10));
        }
    }
}
