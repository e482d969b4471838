//! A cap on token requests per second per auth domain and environment, so that a burst of
//! thousands of connections queues here instead of drawing 429s from PingOne (whose rate limits
//! are shared by everything on the license).
//!
//! The cap is admission, not a sleep: a caller reserves the next free slot of its environment's
//! budget and learns when it is; the reconciler then returns and comes back at that time, so a
//! connection waiting for a slow environment holds no worker. Slots are handed out in the order
//! they are asked for, evenly spaced, with no burst allowance. The spacing is 5 % wider than
//! `1/rate`: requests spaced exactly `1/rate` apart put `rate + 1` of them in a closed
//! one-second window, and the few milliseconds by which delivery varies would push a server's
//! sliding window over its limit now and then. A 429 pauses the whole environment's budget
//! (PingOne's limits are per license and environment, not per client).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How much wider than `1/rate` requests are spaced.
const SPACING: f64 = 1.05;
/// Keys idle this long are forgotten once the map grows.
const IDLE: Duration = Duration::from_secs(60);

/// The budget of one auth domain and environment.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// The next free slot.
    next: Instant,
    /// No slot before this (after a 429).
    paused_until: Option<Instant>,
}

/// Per-key request spacing.
#[derive(Debug)]
pub struct RateLimiter {
    default_interval: Option<Duration>,
    /// Environments with a rate of their own.
    intervals: HashMap<String, Option<Duration>>,
    budgets: Mutex<HashMap<(String, String), Budget>>,
}

fn interval(per_second: u32) -> Option<Duration> {
    (per_second > 0).then(|| Duration::from_secs(1).mul_f64(SPACING) / per_second)
}

impl RateLimiter {
    /// At most `per_second` requests per second per key (0: unlimited), and the rates of
    /// `overrides` (environment id → requests per second) for those environments.
    pub fn new(per_second: u32, overrides: &[(String, u32)]) -> Self {
        RateLimiter {
            default_interval: interval(per_second),
            intervals: overrides
                .iter()
                .map(|(env, rate)| (env.to_ascii_lowercase(), interval(*rate)))
                .collect(),
            budgets: Mutex::default(),
        }
    }

    fn interval_for(&self, environment_id: &str) -> Option<Duration> {
        self.intervals
            .get(&environment_id.to_ascii_lowercase())
            .copied()
            .unwrap_or(self.default_interval)
    }

    fn key(auth_domain: &str, environment_id: &str) -> (String, String) {
        (
            auth_domain.to_ascii_lowercase(),
            environment_id.to_ascii_lowercase(),
        )
    }

    /// Reserves the next slot of this key's budget: the time at which the caller may send one
    /// request (`now` or later). Each call takes a slot.
    pub fn reserve(&self, auth_domain: &str, environment_id: &str, now: Instant) -> Instant {
        let interval = self.interval_for(environment_id);
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        // Forget keys idle for a while so the map stays as small as the active set.
        if budgets.len() > 1024 {
            budgets.retain(|_, b| b.next.max(b.paused_until.unwrap_or(b.next)) + IDLE > now);
        }
        let budget = budgets
            .entry(Self::key(auth_domain, environment_id))
            .or_insert(Budget {
                next: now,
                paused_until: None,
            });
        let slot = budget.next.max(now).max(budget.paused_until.unwrap_or(now));
        if let Some(interval) = interval {
            budget.next = slot + interval;
        }
        slot
    }

    /// True when a slot reserved for `slot` is still good: the budget was not paused past it.
    pub fn still_valid(&self, auth_domain: &str, environment_id: &str, slot: Instant) -> bool {
        let budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        budgets
            .get(&Self::key(auth_domain, environment_id))
            .and_then(|b| b.paused_until)
            .is_none_or(|until| slot >= until)
    }

    /// Pauses this key's budget until `until` (a 429's `Retry-After`): no slot before then, for
    /// any caller.
    pub fn pause(&self, auth_domain: &str, environment_id: &str, until: Instant) {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let budget = budgets
            .entry(Self::key(auth_domain, environment_id))
            .or_insert(Budget {
                next: until,
                paused_until: None,
            });
        budget.paused_until = Some(budget.paused_until.map_or(until, |p| p.max(until)));
        budget.next = budget.next.max(until);
    }

    /// Waits for this key's next slot (for callers without a scheduler of their own). Returns
    /// how long it waited.
    pub async fn acquire(&self, auth_domain: &str, environment_id: &str) -> Duration {
        let now = Instant::now();
        let slot = self.reserve(auth_domain, environment_id, now);
        tokio::time::sleep_until(slot).await;
        slot - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_for_one_key_are_spaced_and_others_are_independent() {
        let limiter = RateLimiter::new(10, &[]);
        let start = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..5 {
            waits.push(limiter.acquire("auth.pingone.eu", "env").await);
        }
        assert_eq!(start.elapsed(), Duration::from_millis(420));
        assert_eq!(waits[0], Duration::ZERO);
        // Another environment does not wait behind the first.
        let other = limiter.acquire("auth.pingone.eu", "env2").await;
        assert_eq!(other, Duration::ZERO);
    }

    #[test]
    fn slots_are_handed_out_in_the_order_they_are_asked_for() {
        let limiter = RateLimiter::new(100, &[]);
        let now = Instant::now();
        // 200 callers asking in turn (as reconciles do) get strictly increasing slots, each
        // exactly 10.5 ms after the one before: the order of asking is the order of sending.
        let slots: Vec<Instant> = (0..200)
            .map(|_| limiter.reserve("AUTH.pingone.eu", "e", now))
            .collect();
        for (i, pair) in slots.windows(2).enumerate() {
            assert_eq!(pair[1] - pair[0], Duration::from_micros(10_500), "slot {i}");
        }
        assert_eq!(slots[0], now);
        assert_eq!(slots[199] - now, Duration::from_micros(2_089_500));
        // At most 96 in any one-second window: the 97th slot is 1.008 s after the 1st.
        assert!(slots[96] - slots[0] > Duration::from_secs(1));
    }

    #[test]
    fn an_environment_can_have_a_rate_of_its_own() {
        let limiter = RateLimiter::new(100, &[("SLOW".into(), 1)]);
        let now = Instant::now();
        let slow: Vec<Instant> = (0..3).map(|_| limiter.reserve("d", "slow", now)).collect();
        assert_eq!(slow[2] - now, Duration::from_millis(2100));
        let fast: Vec<Instant> = (0..3).map(|_| limiter.reserve("d", "fast", now)).collect();
        assert_eq!(fast[2] - now, Duration::from_millis(21));
    }

    #[test]
    fn a_pause_holds_every_caller_of_that_environment_only() {
        let limiter = RateLimiter::new(10, &[]);
        let now = Instant::now();
        let early = limiter.reserve("d", "e", now);
        limiter.pause("d", "e", now + Duration::from_secs(3));
        // The slot taken before the pause is no longer good; new slots start after it.
        assert!(!limiter.still_valid("d", "e", early));
        let after = limiter.reserve("d", "e", now);
        assert_eq!(after - now, Duration::from_secs(3));
        assert!(limiter.still_valid("d", "e", after));
        assert_eq!(limiter.reserve("d", "other", now), now);
    }

    #[tokio::test]
    async fn zero_means_unlimited() {
        let limiter = RateLimiter::new(0, &[]);
        for _ in 0..1000 {
            assert_eq!(limiter.acquire("a", "b").await, Duration::ZERO);
        }
    }
}
