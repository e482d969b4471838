//! A cap on token requests per second per auth domain and environment, so that a burst of
//! thousands of connections queues here instead of drawing 429s from PingOne (whose rate limits
//! are shared by everything on the license).
//!
//! The cap is admission, not a sleep: a caller reserves the next free slot of its environment's
//! budget and learns when it is; when the slot is far (see [`RateLimiter::admit_within`]) the
//! reconciler returns and comes back at that time, so a connection waiting for a slow
//! environment holds no worker, and only a slot within a second is waited for in place. Slots are handed out in the order
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
/// The longest a 429 pauses an environment's budget, whatever its `Retry-After` says. Each
/// connection still honours a longer `Retry-After` itself, up to its token's validity bound
/// (see `controller::policy`); the environment's pause only keeps the others from piling in.
pub const MAX_PAUSE: Duration = Duration::from_secs(5 * 60);

/// The budget of one auth domain and environment.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// The next free slot.
    next: Instant,
    /// No slot before this (after a 429).
    paused_until: Option<Instant>,
    /// When the last request was let through: a caller that comes late for its slot must not
    /// end up closer than the spacing to the one before.
    last_sent: Option<Instant>,
}

/// What [`RateLimiter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send now.
    Go,
    /// Come back at this slot (reserved for the caller).
    Wait(Instant),
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

    fn take_slot(budget: &mut Budget, interval: Option<Duration>, now: Instant) -> Instant {
        let mut slot = budget.next.max(now).max(budget.paused_until.unwrap_or(now));
        if let Some(interval) = interval {
            if let Some(last) = budget.last_sent {
                slot = slot.max(last + interval);
            }
            budget.next = slot + interval;
        }
        slot
    }

    /// Lets a request through or says when to come back. `held` is a slot the caller reserved
    /// before (it keeps its place in line); without one, a slot is reserved now. A held slot
    /// goes at its time, within `tolerance`, unless a 429 paused the budget past it or the last
    /// request went out less than the spacing ago (its caller came late for its own slot): then
    /// the caller gets a new slot.
    pub fn admit(
        &self,
        auth_domain: &str,
        environment_id: &str,
        held: Option<Instant>,
        now: Instant,
        tolerance: Duration,
    ) -> Admission {
        self.admit_probing(auth_domain, environment_id, held, now, tolerance, None)
    }

    /// [`admit`](Self::admit) for a caller whose token must be renewed by `probe_by` (its
    /// validity bound): when a pause would hold it past that time, it may probe at once,
    /// spaced from the request before it, without moving the pause.
    pub fn admit_probing(
        &self,
        auth_domain: &str,
        environment_id: &str,
        held: Option<Instant>,
        now: Instant,
        tolerance: Duration,
        probe_by: Option<Instant>,
    ) -> Admission {
        let interval = self.interval_for(environment_id);
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        if budgets.len() > 1024 {
            budgets.retain(|_, b| b.next.max(b.paused_until.unwrap_or(b.next)) + IDLE > now);
        }
        let budget = budgets
            .entry(Self::key(auth_domain, environment_id))
            .or_insert(Budget {
                next: now,
                paused_until: None,
                last_sent: None,
            });
        let spaced = |b: &Budget| match (interval, b.last_sent) {
            (Some(interval), Some(last)) => now + tolerance >= last + interval,
            _ => true,
        };
        let paused_past = |b: &Budget, slot: Instant| b.paused_until.is_some_and(|p| slot < p);
        let slot = match held {
            Some(slot)
                if !paused_past(budget, slot) && (slot > now + tolerance || spaced(budget)) =>
            {
                slot
            }
            _ => Self::take_slot(budget, interval, now),
        };
        let paused = budget.paused_until.is_some_and(|p| p > now + tolerance);
        if let Some(by) = probe_by
            && paused
            && slot > by
        {
            let probe = match (interval, budget.last_sent) {
                (Some(interval), Some(last)) => now.max(last + interval),
                _ => now,
            };
            if probe > now + tolerance {
                return Admission::Wait(probe);
            }
            budget.last_sent = Some(now);
            return Admission::Go;
        }
        // A slot now is spaced from the last request: a held one by the guard above, a new one
        // by `take_slot`.
        if slot <= now + tolerance {
            budget.last_sent = Some(now);
            Admission::Go
        } else {
            Admission::Wait(slot)
        }
    }

    /// Pauses this key's budget until `until` (a 429's `Retry-After`), at most [`MAX_PAUSE`]
    /// from now: no slot before then, for any caller but a probe (see
    /// [`admit_probing`](Self::admit_probing)).
    pub fn pause(&self, auth_domain: &str, environment_id: &str, until: Instant) {
        let until = until.min(Instant::now() + MAX_PAUSE);
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let budget = budgets
            .entry(Self::key(auth_domain, environment_id))
            .or_insert(Budget {
                next: until,
                paused_until: None,
                last_sent: None,
            });
        budget.paused_until = Some(budget.paused_until.map_or(until, |p| p.max(until)));
        budget.next = budget.next.max(until);
    }

    /// Takes a slot like [`admit`](Self::admit), and when it is at most `within` away waits for
    /// it here: `Ok(waited)` once the request may go, `Err(slot)` (reserved, to be held) when the
    /// slot is further away. A caller at the front of a queue (a reconcile in a burst: with `n`
    /// workers the slots reserved reach at most `n` spacings ahead) then takes its slot in one
    /// go instead of coming back for it, which would cost it a second pass.
    pub async fn admit_within(
        &self,
        auth_domain: &str,
        environment_id: &str,
        mut held: Option<Instant>,
        tolerance: Duration,
        within: Duration,
        probe_by: Option<Instant>,
    ) -> Result<Duration, Instant> {
        let start = Instant::now();
        loop {
            let now = Instant::now();
            match self.admit_probing(auth_domain, environment_id, held, now, tolerance, probe_by) {
                Admission::Go => return Ok(now - start),
                Admission::Wait(slot) if slot <= now + within => {
                    held = Some(slot);
                    tokio::time::sleep_until(slot).await;
                }
                Admission::Wait(slot) => return Err(slot),
            }
        }
    }

    /// Waits for this key's next slot (for callers without a scheduler of their own). Returns
    /// how long it waited.
    pub async fn acquire(&self, auth_domain: &str, environment_id: &str) -> Duration {
        let start = Instant::now();
        let mut held = None;
        loop {
            match self.admit(
                auth_domain,
                environment_id,
                held,
                Instant::now(),
                Duration::ZERO,
            ) {
                Admission::Go => return held.map_or(Duration::ZERO, |slot| slot - start),
                Admission::Wait(slot) => {
                    held = Some(slot);
                    tokio::time::sleep_until(slot).await;
                }
            }
        }
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

    fn slot(limiter: &RateLimiter, env: &str, now: Instant) -> Instant {
        match limiter.admit("AUTH.pingone.eu", env, None, now, Duration::ZERO) {
            Admission::Go => now,
            Admission::Wait(slot) => slot,
        }
    }

    #[test]
    fn slots_are_handed_out_in_the_order_they_are_asked_for() {
        let limiter = RateLimiter::new(100, &[]);
        let now = Instant::now();
        // 200 callers asking in turn (as reconciles do) get strictly increasing slots, each
        // exactly 10.5 ms after the one before: the order of asking is the order of sending.
        let slots: Vec<Instant> = (0..200).map(|_| slot(&limiter, "e", now)).collect();
        for (i, pair) in slots.windows(2).enumerate() {
            assert_eq!(pair[1] - pair[0], Duration::from_micros(10_500), "slot {i}");
        }
        assert_eq!(slots[0], now);
        assert_eq!(slots[199] - now, Duration::from_micros(2_089_500));
        // At most 96 in any one-second window: the 97th slot is 1.008 s after the 1st.
        assert!(slots[96] - slots[0] > Duration::from_secs(1));
    }

    /// A `Retry-After: 3600` pauses the environment for [`MAX_PAUSE`] at most; a caller whose
    /// token must be renewed before the pause ends probes through it, spaced from the request
    /// before it, and the pause stays for everyone else.
    #[tokio::test(start_paused = true)]
    async fn a_long_pause_is_bounded_and_a_caller_at_its_validity_bound_may_probe() {
        let limiter = RateLimiter::new(10, &[]);
        let tol = Duration::ZERO;
        let t0 = Instant::now();
        limiter.pause("d", "e", t0 + Duration::from_secs(3600));
        assert_eq!(
            limiter.admit("d", "e", None, t0, tol),
            Admission::Wait(t0 + MAX_PAUSE),
            "bounded"
        );
        // Its bound lies after the pause's end: no probe, it waits like everyone.
        let late = Some(t0 + MAX_PAUSE + Duration::from_secs(1));
        assert!(matches!(
            limiter.admit_probing("d", "e", None, t0, tol, late),
            Admission::Wait(slot) if slot >= t0 + MAX_PAUSE
        ));
        // Its bound comes first: it may go now.
        let soon = Some(t0 + Duration::from_secs(60));
        assert_eq!(
            limiter.admit_probing("d", "e", None, t0, tol, soon),
            Admission::Go
        );
        // A second probe right after is spaced from it (10/s, 5 % wider: 105 ms).
        assert_eq!(
            limiter.admit_probing("d", "e", None, t0, tol, soon),
            Admission::Wait(t0 + Duration::from_millis(105))
        );
        // The pause still holds everyone else.
        assert!(matches!(
            limiter.admit("d", "e", None, t0 + Duration::from_secs(1), tol),
            Admission::Wait(slot) if slot >= t0 + MAX_PAUSE
        ));
        // Without a pause, a probe bound changes nothing.
        let other = limiter.admit_probing("d", "other", None, t0, tol, Some(t0));
        assert_eq!(other, Admission::Go);
    }

    #[test]
    fn an_environment_can_have_a_rate_of_its_own() {
        let limiter = RateLimiter::new(100, &[("SLOW".into(), 1)]);
        let now = Instant::now();
        let slow: Vec<Instant> = (0..3).map(|_| slot(&limiter, "slow", now)).collect();
        assert_eq!(slow[2] - now, Duration::from_millis(2100));
        let fast: Vec<Instant> = (0..3).map(|_| slot(&limiter, "fast", now)).collect();
        assert_eq!(fast[2] - now, Duration::from_millis(21));
    }

    #[test]
    fn a_pause_holds_every_caller_of_that_environment_only() {
        let limiter = RateLimiter::new(10, &[]);
        let now = Instant::now();
        limiter.pause("auth.pingone.eu", "e", now + Duration::from_secs(3));
        assert_eq!(slot(&limiter, "e", now) - now, Duration::from_secs(3));
        assert_eq!(slot(&limiter, "other", now), now);
    }

    #[test]
    fn a_caller_late_for_its_slot_pushes_the_next_one_back() {
        let limiter = RateLimiter::new(1, &[]);
        let t0 = Instant::now();
        let tol = Duration::from_millis(2);
        let ms = Duration::from_millis;
        // Three callers: the first goes now, the others get slots 1.05 s apart.
        assert_eq!(limiter.admit("d", "e", None, t0, tol), Admission::Go);
        let Admission::Wait(second) = limiter.admit("d", "e", None, t0, tol) else {
            panic!("the second waits");
        };
        let Admission::Wait(third) = limiter.admit("d", "e", None, t0, tol) else {
            panic!("the third waits");
        };
        assert_eq!((second - t0, third - t0), (ms(1050), ms(2100)));
        // The second comes 0.3 s late for its slot: it goes (the last request is 1.35 s back).
        let late = second + ms(300);
        assert_eq!(
            limiter.admit("d", "e", Some(second), late, tol),
            Admission::Go
        );
        // The third comes on time, 0.75 s after that request: it must wait for a new slot, at
        // least the spacing after the late one.
        match limiter.admit("d", "e", Some(third), third, tol) {
            Admission::Wait(next) => assert!(next >= late + ms(1050), "{:?}", next - t0),
            Admission::Go => panic!("sent {:?} after the last request", third - late),
        }
        // A slot held from before a pause is replaced by one after it.
        let limiter = RateLimiter::new(10, &[]);
        let Admission::Go = limiter.admit("d", "e", None, t0, tol) else {
            panic!("the first goes");
        };
        let Admission::Wait(held) = limiter.admit("d", "e", None, t0, tol) else {
            panic!("the second waits");
        };
        limiter.pause("d", "e", t0 + ms(3000));
        assert_eq!(
            limiter.admit("d", "e", Some(held), held, tol),
            Admission::Wait(t0 + ms(3000))
        );
        // An unlimited budget always lets through.
        let free = RateLimiter::new(0, &[]);
        for _ in 0..10 {
            assert_eq!(free.admit("d", "e", None, t0, tol), Admission::Go);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_near_slot_is_waited_for_in_place_and_a_far_one_is_handed_back() {
        let limiter = RateLimiter::new(10, &[]);
        let tol = Duration::from_millis(2);
        let within = Duration::from_millis(500);
        let t0 = Instant::now();
        // Slots 105 ms apart: the first goes at once, the next four are waited for here.
        for i in 0..5u32 {
            let waited = limiter
                .admit_within("d", "e", None, tol, within, None)
                .await
                .expect("within reach");
            assert_eq!(waited, Duration::from_millis(if i == 0 { 0 } else { 105 }));
        }
        assert_eq!(t0.elapsed(), Duration::from_millis(420));
        // Six callers reserve without waiting; the seventh's slot is 735 ms away: handed back.
        for _ in 0..6 {
            let _ = limiter.admit("d", "e", None, Instant::now(), tol);
        }
        let far = limiter
            .admit_within("d", "e", None, tol, within, None)
            .await
            .expect_err("beyond reach");
        assert_eq!(far - Instant::now(), Duration::from_millis(735));
        // Held and brought back near its time, it is waited for and goes.
        tokio::time::sleep_until(far - Duration::from_millis(300)).await;
        assert_eq!(
            limiter
                .admit_within("d", "e", Some(far), tol, within, None)
                .await,
            Ok(Duration::from_millis(300))
        );
    }

    #[tokio::test]
    async fn zero_means_unlimited() {
        let limiter = RateLimiter::new(0, &[]);
        for _ in 0..1000 {
            assert_eq!(limiter.acquire("a", "b").await, Duration::ZERO);
        }
    }
}
