//! When to renew a token and when to retry after a failure: pure functions of time, and
//! [`Spread`], the source of evenly spread jitter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::api::RenewBefore;

/// A renewal is brought forward by a random share of the lifetime up to this fraction, so that
/// renewals that drifted together come apart.
pub const MAX_RENEWAL_JITTER: f64 = 0.10;
/// Largest jitter any token can carry (see [`choose_jitter`]).
pub const MAX_JITTER: f64 = 0.5;
/// A `renewBefore` longer than the lifetime is capped at this share of it.
const MAX_RENEW_BEFORE_SHARE: f64 = 0.90;

/// Timing policy of the controller.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Never ask for a new token for the same inputs sooner than this after the last one.
    pub min_interval: Duration,
    /// First retry delay after a retryable failure.
    pub backoff_base: Duration,
    /// Largest retry delay.
    pub backoff_cap: Duration,
    /// After a failure only a person can fix, check again this often anyway.
    pub stalled_recheck: Duration,
    /// At most one rollout restart of a workload per this interval.
    pub rollout_debounce: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            min_interval: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            stalled_recheck: Duration::from_secs(3600),
            rollout_debounce: Duration::from_secs(30),
        }
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Adds a std duration to a timestamp, saturating.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(signed(d)).unwrap_or(Timestamp::MAX)
}

/// The time from `now` until `t`, zero if it passed.
pub fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// When to renew a token issued at `issued_at` that expires at `expires_at`:
/// `expires_at - renewBefore - jitter × lifetime`, never sooner than `min_interval` after issue
/// (and never after expiry).
pub fn renewal_time(
    issued_at: Timestamp,
    expires_at: Timestamp,
    rule: RenewBefore,
    jitter: f64,
    min_interval: Duration,
) -> Timestamp {
    let lifetime = until(issued_at, expires_at).as_secs_f64();
    let before = match rule {
        RenewBefore::Duration(d) => d.as_secs_f64().min(lifetime * MAX_RENEW_BEFORE_SHARE),
        RenewBefore::Percentage(p) => lifetime * f64::from(p.clamp(1, 90)) / 100.0,
    };
    let jitter = jitter.clamp(0.0, MAX_JITTER) * lifetime;
    let renew = expires_at
        .checked_sub(SignedDuration::from_secs_f64(before + jitter))
        .unwrap_or(issued_at);
    let earliest = add(issued_at, min_interval).min(expires_at);
    // Whole seconds, rounded down (earlier, never later): it is stored with second precision,
    // and a recomputed value must equal the stored one or every reconcile would rewrite status.
    let renew = Timestamp::from_second(renew.as_second()).unwrap_or(renew);
    renew.max(earliest)
}

/// The share of the lifetime by which a token's renewal is brought forward, from `unit` in
/// [0, 1).
///
/// A renewed token gets up to 10 % (DESIGN §4). A token that is *not* a renewal (a new
/// connection, new credentials) gets up to half of the lifetime (never more than the time before
/// its normal renewal point, and [`renewal_time`] keeps the floor after issue), so its first
/// renewal falls anywhere in the half lifetime before the normal point. Connections created in
/// one burst thus spread their renewals over the whole renewal cycle instead of the 10 % window,
/// where they would otherwise stay bunched for ever (a herd of short-lived tokens renewing in the
/// same few seconds). The cost is one earlier-than-needed renewal per connection.
pub fn choose_jitter(renewal: bool, rule: RenewBefore, lifetime: Duration, unit: f64) -> f64 {
    let unit = unit.clamp(0.0, 1.0);
    if renewal {
        return unit * MAX_RENEWAL_JITTER;
    }
    let lifetime = lifetime.as_secs_f64();
    let before = match rule {
        RenewBefore::Duration(d) if lifetime > 0.0 => {
            (d.as_secs_f64() / lifetime).min(MAX_RENEW_BEFORE_SHARE)
        }
        RenewBefore::Duration(_) => MAX_RENEW_BEFORE_SHARE,
        RenewBefore::Percentage(p) => f64::from(p.clamp(1, 90)) / 100.0,
    };
    unit * (1.0 - before).clamp(MAX_RENEWAL_JITTER, MAX_JITTER)
}

/// Evenly spread numbers in [0, 1) for jitter: the golden-ratio sequence from a random start.
///
/// Random jitter leaves random clumps: 500 connections renewing at random over 37 s put about
/// 30 requests into the busiest second against an average of 13.5. Consecutive points of this
/// sequence are as far apart as any points can be, so tokens issued close together (a burst of new
/// connections, the renewals due in the same second) get jitters spread evenly over the window
/// and their renewals come out evenly spaced.
#[derive(Debug)]
pub struct Spread {
    start: f64,
    next: AtomicU64,
}

/// 1/φ: each step moves by the golden ratio's fraction, which keeps any run of consecutive
/// points the most evenly spread (three-distance theorem).
const GOLDEN_STEP: f64 = 0.618_033_988_749_894_9;

impl Spread {
    /// A sequence starting at `start` (taken modulo 1).
    pub fn new(start: f64) -> Self {
        Spread {
            start: start.rem_euclid(1.0),
            next: AtomicU64::new(0),
        }
    }

    /// The next point, in [0, 1).
    pub fn next(&self) -> f64 {
        // Bounded so the product keeps its fractional precision (better than 1e-6 at 2^32 steps).
        let n = self.next.fetch_add(1, Ordering::Relaxed) % (1 << 32);
        let x = (self.start + n as f64 * GOLDEN_STEP).fract();
        if x < 1.0 { x } else { 0.0 }
    }
}

/// Delay before retry number `attempts` (1 = first retry) after a retryable failure:
/// exponential from `base`, capped at `cap`, with "equal jitter" (`unit` in [0, 1) picks a point
/// in the upper half), so that connections that failed together do not retry together.
pub fn backoff(attempts: u32, timing: &Timing, unit: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let raw = timing
        .backoff_base
        .saturating_mul(1u32 << exp)
        .min(timing.backoff_cap);
    let half = raw / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn renews_at_a_third_of_the_lifetime_left_by_default() {
        let t = renewal_time(
            ts("2026-11-27T08:00:00Z"),
            ts("2026-11-27T09:00:00Z"),
            RenewBefore::Percentage(33),
            0.0,
            Duration::from_secs(10),
        );
        assert_eq!(t, ts("2026-11-27T08:40:12Z"));
    }

    #[test]
    fn jitter_brings_renewal_forward_and_is_clamped() {
        let issued = ts("2026-11-27T08:00:00Z");
        let expires = ts("2026-11-27T09:00:00Z");
        let base = renewal_time(
            issued,
            expires,
            RenewBefore::Percentage(33),
            0.0,
            Duration::ZERO,
        );
        let max = renewal_time(
            issued,
            expires,
            RenewBefore::Percentage(33),
            0.1,
            Duration::ZERO,
        );
        assert_eq!(base.duration_since(max), SignedDuration::from_secs(360));
        // Out-of-range jitter is clamped, never later than without jitter.
        let over = renewal_time(
            issued,
            expires,
            RenewBefore::Percentage(33),
            5.0,
            Duration::ZERO,
        );
        let half = renewal_time(
            issued,
            expires,
            RenewBefore::Percentage(33),
            MAX_JITTER,
            Duration::ZERO,
        );
        assert_eq!(over, half);
        let under = renewal_time(
            issued,
            expires,
            RenewBefore::Percentage(33),
            -1.0,
            Duration::ZERO,
        );
        assert_eq!(under, base);
    }

    #[test]
    fn first_tokens_spread_their_first_renewal_over_half_the_lifetime_before_the_normal_point() {
        let l = Duration::from_secs(3600);
        let rule = RenewBefore::Percentage(33);
        assert_eq!(choose_jitter(false, rule, l, 0.0), 0.0);
        assert!((choose_jitter(false, rule, l, 1.0) - 0.5).abs() < 1e-9);
        assert!((choose_jitter(true, rule, l, 1.0) - 0.1).abs() < 1e-9);
        // Renewal at the latest 67% into the lifetime, at the earliest 17%.
        let issued = ts("2026-11-27T08:00:00Z");
        let expires = ts("2026-11-27T09:00:00Z");
        let earliest = renewal_time(
            issued,
            expires,
            rule,
            choose_jitter(false, rule, l, 1.0),
            Duration::ZERO,
        );
        assert_eq!(earliest, ts("2026-11-27T08:10:12Z"));
        // A rule that renews late leaves a wide window; one that renews early a narrow one,
        // but never narrower than a renewal's.
        let late = choose_jitter(
            false,
            RenewBefore::Duration(Duration::from_secs(60)),
            l,
            1.0,
        );
        assert!((late - 0.5).abs() < 1e-9, "{late}");
        let early = choose_jitter(false, RenewBefore::Percentage(80), l, 1.0);
        assert!((early - 0.2).abs() < 1e-9, "{early}");
        let earliest = choose_jitter(false, RenewBefore::Percentage(90), l, 1.0);
        assert!((earliest - 0.1).abs() < 1e-9, "{earliest}");
        // A short token's first renewal still waits for the floor.
        let issued = ts("2026-11-27T08:00:00Z");
        let short = renewal_time(
            issued,
            ts("2026-11-27T08:00:30Z"),
            rule,
            choose_jitter(false, rule, Duration::from_secs(30), 1.0),
            Duration::from_secs(10),
        );
        assert_eq!(short, ts("2026-11-27T08:00:10Z"));
    }

    #[test]
    fn spread_points_are_in_range_and_any_run_of_them_is_even() {
        let spread = Spread::new(0.37);
        let points: Vec<f64> = (0..10_000).map(|_| spread.next()).collect();
        assert!(points.iter().all(|x| (0.0..1.0).contains(x)));
        // Any 100 consecutive points put between 8 and 12 into each tenth of [0, 1); random
        // points would often put 4 or 17 there.
        for run in points.windows(100).step_by(37) {
            let mut bins = [0; 10];
            for x in run {
                bins[(x * 10.0) as usize] += 1;
            }
            assert!(bins.iter().all(|&b| (8..=12).contains(&b)), "{bins:?}");
        }
        // Far along the sequence too.
        let far = Spread::new(0.9);
        far.next.store((1 << 32) - 50, Ordering::Relaxed);
        let run: Vec<f64> = (0..100).map(|_| far.next()).collect();
        assert!(run.iter().all(|x| (0.0..1.0).contains(x)));
        assert_eq!(Spread::new(-0.25).next(), 0.75);
    }

    #[test]
    fn fixed_renew_before_is_capped_at_ninety_percent() {
        let issued = ts("2026-11-27T08:00:00Z");
        let expires = ts("2026-11-27T09:00:00Z");
        let t = renewal_time(
            issued,
            expires,
            RenewBefore::Duration(Duration::from_secs(600)),
            0.0,
            Duration::ZERO,
        );
        assert_eq!(t, ts("2026-11-27T08:50:00Z"));
        let t = renewal_time(
            issued,
            expires,
            RenewBefore::Duration(Duration::from_secs(7200)),
            0.0,
            Duration::ZERO,
        );
        assert_eq!(t, ts("2026-11-27T08:06:00Z"));
    }

    #[test]
    fn never_renews_sooner_than_the_floor() {
        let issued = ts("2026-11-27T08:00:00Z");
        let expires = ts("2026-11-27T08:00:05Z");
        let t = renewal_time(
            issued,
            expires,
            RenewBefore::Percentage(90),
            0.1,
            Duration::from_secs(10),
        );
        // The floor would be after expiry: renew at expiry at the latest.
        assert_eq!(t, expires);
        let expires = ts("2026-11-27T08:00:30Z");
        let t = renewal_time(
            issued,
            expires,
            RenewBefore::Percentage(90),
            0.1,
            Duration::from_secs(10),
        );
        assert_eq!(t, ts("2026-11-27T08:00:10Z"));
    }

    #[test]
    fn renewal_times_are_whole_seconds() {
        let t = renewal_time(
            ts("2026-11-27T08:00:00Z"),
            ts("2026-11-27T09:00:00Z"),
            RenewBefore::Percentage(33),
            0.01234,
            Duration::from_secs(10),
        );
        assert_eq!(t.subsec_nanosecond(), 0);
        assert_eq!(t, ts("2026-11-27T08:39:27Z"));
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_equal_jitter() {
        let timing = Timing::default();
        assert_eq!(backoff(1, &timing, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(1, &timing, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(4, &timing, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(9, &timing, 1.0), Duration::from_secs(256));
        assert_eq!(backoff(10, &timing, 1.0), Duration::from_secs(300));
        assert_eq!(backoff(1000, &timing, 1.0), Duration::from_secs(300));
        assert_eq!(backoff(1000, &timing, 0.0), Duration::from_secs(150));
    }
}
