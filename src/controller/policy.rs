//! The failure policy (DESIGN §4 "Failures"): after a failed token request, when the next one
//! may go out. Pure, and the only place that decides it.
//!
//! | class | what | wait after failure n | condition |
//! | --- | --- | --- | --- |
//! | [`FailureClass::Rejected`] | an RFC 6749 error the operator understands (`invalid_client`, `unauthorized_client`, `invalid_scope`, `invalid_request`, …), PingOne's own 404 | valid token: slow backoff, 60 s doubling to the stalled recheck; none: the stalled recheck (1 h) | Stalled |
//! | [`FailureClass::RateLimited`] | 429, or 503 with `Retry-After` | `Retry-After`, or the backoff when that is longer | Reconciling |
//! | [`FailureClass::Transient`] | 5xx, 408, timeouts, connection and TLS errors, unusable answers, any 4xx without an RFC 6749 error body | backoff, 1 s doubling to 5 min | Reconciling |
//! | [`FailureClass::NotSent`] | refused domain, malformed environment id: no request left the operator | the stalled recheck | Stalled |
//!
//! Every wait carries "equal jitter" (a point in the upper half), and every wait is **bounded by
//! the token in the Secret**: while it is valid, no wait exceeds a third of its remaining validity
//! (but never less than a floor of 1 % of its lifetime or the backoff base, and never past
//! expiry). So whatever the class, at least three attempts fall inside the remaining validity, the
//! third with at least 4/9 of it left, and a `Retry-After` of hours never lets a token expire
//! unattempted. Near expiry the attempts come no closer than the floor, so a failing renewal of a
//! one-hour token costs about ten requests, not a storm.

use std::time::Duration;

use jiff::Timestamp;

use super::schedule::{self, Timing};
use crate::pingone::TokenError;

/// Once the token in the Secret has expired, a transient failure (5xx, a timeout, a WAF's page)
/// is retried at least this often (with equal jitter): recovery follows the cause within about
/// this long, not the 5-minute backoff cap. Still under the environment's request budget.
pub const EXPIRED_RECHECK: Duration = Duration::from_secs(30);

/// First step of the slow backoff for rejected requests while a valid token remains.
pub const REJECTED_BACKOFF_BASE: Duration = Duration::from_secs(60);
/// The floor is this share of the token's lifetime (but at least the backoff base).
const FLOOR_SHARE_OF_LIFETIME: f64 = 0.01;

/// What kind of failure a token request ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// PingOne understood and refused the request; only a person can fix it.
    Rejected,
    /// PingOne asked to slow down (429, or a 503 with `Retry-After`), for this long when it
    /// said.
    RateLimited(Option<Duration>),
    /// Anything that may pass by itself.
    Transient,
    /// Nothing was sent: the spec names a domain or environment the operator refuses.
    NotSent,
}

impl FailureClass {
    /// The class of a failed token request.
    pub fn of(error: &TokenError) -> FailureClass {
        match error {
            TokenError::AuthDomainNotAllowed { .. }
            | TokenError::InvalidAuthDomain { .. }
            | TokenError::InvalidEnvironmentId { .. }
            | TokenError::Assertion { .. } => FailureClass::NotSent,
            TokenError::InvalidClient { .. }
            | TokenError::InvalidClientKey { .. }
            | TokenError::UnauthorizedClient { .. }
            | TokenError::InvalidScope { .. }
            | TokenError::InvalidRequest { .. }
            | TokenError::NotFound { .. } => FailureClass::Rejected,
            TokenError::RateLimited { retry_after, .. } => FailureClass::RateLimited(*retry_after),
            // A 503 that says when to come back is heeded like a 429.
            TokenError::Unavailable {
                retry_after: Some(wait),
                ..
            } => FailureClass::RateLimited(Some(*wait)),
            TokenError::Unavailable { .. }
            | TokenError::UnexpectedStatus { .. }
            | TokenError::NotFromPingOne { .. }
            | TokenError::Timeout { .. }
            | TokenError::Connect { .. }
            | TokenError::Tls { .. }
            | TokenError::InvalidResponse { .. } => FailureClass::Transient,
        }
    }

    /// The class a recorded condition reason stands for (a failure read back from status after
    /// a restart).
    pub fn of_reason(reason: &str) -> FailureClass {
        match reason {
            "AuthDomainNotAllowed"
            | "InvalidAuthDomain"
            | "InvalidEnvironmentId"
            | "ClientAssertionFailed" => FailureClass::NotSent,
            "InvalidClient"
            | "UnauthorizedClient"
            | "InvalidScope"
            | "InvalidRequest"
            | "EnvironmentNotFound" => FailureClass::Rejected,
            "RateLimited" => FailureClass::RateLimited(None),
            _ => FailureClass::Transient,
        }
    }

    /// Only a person can fix it: reported as Stalled.
    pub fn needs_person(self) -> bool {
        matches!(self, FailureClass::Rejected | FailureClass::NotSent)
    }
}

/// The validity of the token in the Secret, the bound of every wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// When the token was issued.
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
}

/// How long to wait after failure number `attempts` (1 for the first) of `class`, with `token`
/// the token in the Secret (if any) and `unit` in [0, 1) choosing the jitter.
pub fn wait_after(
    class: FailureClass,
    attempts: u32,
    now: Timestamp,
    token: Option<Validity>,
    timing: &Timing,
    unit: f64,
) -> Duration {
    let valid = token.filter(|t| t.expires_at > now);
    let expired = token.is_some_and(|t| t.expires_at <= now);
    let class_wait = match class {
        FailureClass::Transient | FailureClass::RateLimited(None) if expired => {
            let half = EXPIRED_RECHECK / 2;
            schedule::backoff(attempts, timing, unit).min(half + half.mul_f64(unit))
        }
        FailureClass::Transient => schedule::backoff(attempts, timing, unit),
        // Never sooner than asked; and a server that keeps saying "1 s" is backed off from too.
        FailureClass::RateLimited(Some(retry_after)) => {
            retry_after.max(schedule::backoff(attempts, timing, unit))
        }
        FailureClass::RateLimited(None) => schedule::backoff(attempts, timing, unit),
        FailureClass::Rejected if valid.is_some() => slow_backoff(attempts, timing, unit),
        FailureClass::Rejected | FailureClass::NotSent => timing.stalled_recheck,
    };
    match valid {
        // A refused domain sends nothing: no attempt can save the token, so none is hurried.
        Some(token) if class != FailureClass::NotSent => {
            class_wait.min(validity_bound(now, token, timing))
        }
        _ => class_wait,
    }
}

/// The validity bound [`wait_after`] holds a wait after a failure of `class` to, if any.
fn bound_of(
    class: FailureClass,
    now: Timestamp,
    token: Option<Validity>,
    timing: &Timing,
) -> Option<Duration> {
    let valid = token.filter(|t| t.expires_at > now)?;
    (class != FailureClass::NotSent).then(|| validity_bound(now, valid, timing))
}

/// The longest wait that keeps three attempts inside the remaining validity of `token`.
pub fn validity_bound(now: Timestamp, token: Validity, timing: &Timing) -> Duration {
    let remaining = schedule::until(now, token.expires_at);
    let lifetime = schedule::until(token.issued_at, token.expires_at);
    let floor = lifetime
        .mul_f64(FLOOR_SHARE_OF_LIFETIME)
        .max(timing.backoff_base);
    (remaining / 3).max(floor.min(remaining))
}

/// Exponential from [`REJECTED_BACKOFF_BASE`] (or the stalled recheck when shorter) to the
/// stalled recheck, with equal jitter.
fn slow_backoff(attempts: u32, timing: &Timing, unit: f64) -> Duration {
    let slow = Timing {
        backoff_base: REJECTED_BACKOFF_BASE.min(timing.stalled_recheck),
        backoff_cap: timing.stalled_recheck,
        ..*timing
    };
    schedule::backoff(attempts, &slow, unit)
}

/// The last failure to get a token for a connection: kept in memory, and in status so that a
/// restarted operator finds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// Inputs the failed request was made with.
    pub inputs_digest: String,
    /// metadata.generation at the time.
    pub generation: Option<i64>,
    /// Failures in a row.
    pub attempts: u32,
    /// When the last one happened.
    pub at: Timestamp,
    /// No request before this time for the same inputs.
    pub retry_at: Timestamp,
    /// Condition reason.
    pub reason: &'static str,
    /// Human message (no secrets).
    pub message: String,
    /// What kind of failure.
    pub class: FailureClass,
}

/// A token request that failed: when, for which inputs, and what token the Secret held.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// When it was made, precisely: the retry is counted from it.
    pub now: Timestamp,
    /// Digest of the inputs it was made with.
    pub inputs_digest: &'a str,
    /// The connection's metadata.generation.
    pub generation: Option<i64>,
    /// The token in the Secret, if any.
    pub token: Option<Validity>,
}

impl Failure {
    /// Records the failure `error` of `attempt`, after `previous` (the last failure of the same
    /// connection for the same inputs, if any); `unit` in [0, 1) picks the jitter.
    pub fn record(
        previous: Option<&Failure>,
        attempt: Attempt<'_>,
        error: &TokenError,
        timing: &Timing,
        unit: f64,
    ) -> Failure {
        let Attempt {
            now,
            inputs_digest,
            generation,
            token,
        } = attempt;
        let class = FailureClass::of(error);
        let attempts = previous.map_or(0, |p| p.attempts).saturating_add(1);
        let wait = wait_after(class, attempts, now, token, timing, unit);
        // Whole seconds, rounded up: status stores seconds, and a restarted operator must read
        // back exactly this time, never an earlier one. But rounding never carries it past the
        // validity bound (a third of what remains): there it is rounded down instead.
        let mut retry_at = ceil_second(schedule::add(now, wait));
        if let Some(bound) = bound_of(class, now, token, timing) {
            retry_at = retry_at.min(floor_second(schedule::add(now, bound)));
        }
        Failure {
            inputs_digest: inputs_digest.to_string(),
            generation,
            attempts,
            // Whole seconds, as status stores it (a recomputed status must equal the stored one).
            at: Timestamp::from_second(now.as_second()).unwrap_or(now),
            retry_at,
            reason: error.reason(),
            message: error.to_string(),
            class,
        }
    }

    /// Only a person can fix it.
    pub fn stalled(&self) -> bool {
        self.class.needs_person()
    }
}

fn floor_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn ceil_second(t: Timestamp) -> Timestamp {
    let whole = Timestamp::from_second(t.as_second()).unwrap_or(t);
    if whole < t {
        Timestamp::from_second(t.as_second() + 1).unwrap_or(t)
    } else {
        whole
    }
}

/// Every reason a token failure can carry, to map a reason read back from status to the
/// `&'static str` the rest of the code uses.
pub const TOKEN_FAILURE_REASONS: &[&str] = &[
    "AuthDomainNotAllowed",
    "InvalidAuthDomain",
    "InvalidEnvironmentId",
    "ClientAssertionFailed",
    "InvalidClient",
    "UnauthorizedClient",
    "InvalidScope",
    "InvalidRequest",
    "EnvironmentNotFound",
    "RateLimited",
    "TokenEndpointUnavailable",
    "TokenEndpointError",
];

/// The static form of a token failure reason, if it is one.
pub fn token_failure_reason(reason: &str) -> Option<&'static str> {
    TOKEN_FAILURE_REASONS.iter().copied().find(|r| *r == reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn token(lifetime_s: i64) -> Validity {
        let issued_at = ts("2026-11-27T08:00:00Z");
        Validity {
            issued_at,
            expires_at: issued_at
                .checked_add(jiff::SignedDuration::from_secs(lifetime_s))
                .unwrap(),
        }
    }

    fn at(v: Validity, offset_s: i64) -> Timestamp {
        v.issued_at
            .checked_add(jiff::SignedDuration::from_secs(offset_s))
            .unwrap()
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// The policy as a table: class × token state × attempt → the longest wait (jitter unit
    /// 1.0 picks the top of the jitter range). Worked out by hand from DESIGN §4.
    #[test]
    fn the_policy_table() {
        let t = Timing::default(); // base 1 s, cap 5 min, recheck 1 h
        let hour = token(3600);
        // At the default renewal point of a 1 h token, 20 min (1200 s) remain: bound 400 s.
        let renewal = at(hour, 2400);
        let expired = at(hour, 3600);
        let ra = |s| FailureClass::RateLimited(Some(S(s)));
        let rows: &[(FailureClass, Option<Validity>, Timestamp, u32, Duration)] = &[
            // Transient: 1 s doubling to 5 min; the bound (400 s) does not bite below the cap.
            (FailureClass::Transient, Some(hour), renewal, 1, S(1)),
            (FailureClass::Transient, Some(hour), renewal, 4, S(8)),
            (FailureClass::Transient, Some(hour), renewal, 12, S(300)),
            // ... but does with 3 min left: a third of 180 s.
            (
                FailureClass::Transient,
                Some(hour),
                at(hour, 3420),
                12,
                S(60),
            ),
            // ... never below the floor (1 % of the lifetime: 36 s) while time remains ...
            (
                FailureClass::Transient,
                Some(hour),
                at(hour, 3500),
                12,
                S(36),
            ),
            // ... and never past expiry.
            (
                FailureClass::Transient,
                Some(hour),
                at(hour, 3590),
                12,
                S(10),
            ),
            (FailureClass::Transient, None, renewal, 12, S(300)),
            // Once the token has expired: at most 30 s (a WAF block lifted is noticed within
            // about half a minute), the steps below it as before.
            (FailureClass::Transient, Some(hour), expired, 12, S(30)),
            (FailureClass::Transient, Some(hour), expired, 4, S(8)),
            (
                FailureClass::RateLimited(None),
                Some(hour),
                expired,
                12,
                S(30),
            ),
            // ... but a Retry-After is still honoured.
            (ra(600), Some(hour), expired, 1, S(600)),
            // Rejected: slow backoff 60 s doubling, bounded by the token ...
            (FailureClass::Rejected, Some(hour), renewal, 1, S(60)),
            (FailureClass::Rejected, Some(hour), renewal, 2, S(120)),
            (FailureClass::Rejected, Some(hour), renewal, 3, S(240)),
            (FailureClass::Rejected, Some(hour), renewal, 4, S(400)),
            // ... and the hourly recheck once no valid token is left.
            (FailureClass::Rejected, None, renewal, 1, S(3600)),
            (FailureClass::Rejected, Some(hour), expired, 9, S(3600)),
            // Rate limited: exactly Retry-After, at least the base, bounded by the token.
            (ra(7), Some(hour), renewal, 1, S(7)),
            // ... and backed off from when it keeps coming with a short Retry-After.
            (ra(1), Some(hour), renewal, 6, S(32)),
            (ra(0), Some(hour), renewal, 1, S(1)),
            (ra(86_400), Some(hour), renewal, 1, S(400)),
            (ra(86_400), None, renewal, 1, S(86_400)),
            (FailureClass::RateLimited(None), None, renewal, 3, S(4)),
            // Not sent: nothing to hurry, with or without a token.
            (FailureClass::NotSent, Some(hour), renewal, 1, S(3600)),
            (FailureClass::NotSent, None, renewal, 1, S(3600)),
        ];
        for (i, (class, tok, now, attempts, want)) in rows.iter().enumerate() {
            let got = wait_after(*class, *attempts, *now, *tok, &t, 1.0);
            assert_eq!(got, *want, "row {i}: {class:?} attempt {attempts}");
        }
        // The 30 s recheck after expiry carries equal jitter: 15 s at the bottom.
        assert_eq!(
            wait_after(FailureClass::Transient, 12, expired, Some(hour), &t, 0.0),
            S(15)
        );
    }

    #[test]
    fn jitter_picks_the_upper_half() {
        let t = Timing::default();
        assert_eq!(
            wait_after(
                FailureClass::Transient,
                4,
                ts("2026-01-01T00:00:00Z"),
                None,
                &t,
                0.0
            ),
            S(4)
        );
        assert_eq!(
            wait_after(
                FailureClass::Rejected,
                1,
                at(token(3600), 2400),
                Some(token(3600)),
                &t,
                0.0
            ),
            S(30)
        );
    }

    #[test]
    fn classes_of_errors() {
        let rejected = TokenError::InvalidClient {
            status: 401,
            code: Some("invalid_client".into()),
            description: None,
        };
        assert_eq!(FailureClass::of(&rejected), FailureClass::Rejected);
        let html = TokenError::UnexpectedStatus {
            status: 403,
            code: None,
            description: None,
        };
        assert_eq!(FailureClass::of(&html), FailureClass::Transient);
        for reason in TOKEN_FAILURE_REASONS {
            assert_eq!(token_failure_reason(reason), Some(*reason));
        }
        assert_eq!(
            FailureClass::of_reason("InvalidClient"),
            FailureClass::Rejected
        );
        assert_eq!(
            FailureClass::of_reason("TokenEndpointError"),
            FailureClass::Transient
        );
    }

    /// The recorded retry time is whole seconds, rounded up, except where that would pass the
    /// validity bound: then it is rounded down, never later than a third of what remains.
    /// Worked out by hand for a token valid 08:00:00 to 09:00:00 (floor 36 s).
    #[test]
    fn the_recorded_retry_never_rounds_past_a_third_of_what_remains() {
        let t = Timing::default();
        let hour = token(3600);
        let retry = |class, attempts, now: &str, token| {
            let attempt = Attempt {
                now: ts(now),
                inputs_digest: "d",
                generation: None,
                token,
            };
            let error = match class {
                FailureClass::Rejected => TokenError::InvalidClient {
                    status: 401,
                    code: None,
                    description: None,
                },
                _ => TokenError::Timeout { domain: "d".into() },
            };
            let previous = Failure {
                attempts: attempts - 1,
                ..Failure::record(None, attempt, &error, &t, 1.0)
            };
            let failure = Failure::record(
                (attempts > 1).then_some(&previous),
                attempt,
                &error,
                &t,
                1.0,
            );
            assert_eq!(failure.attempts, attempts);
            failure.retry_at
        };
        // 1199.5 s remain at 08:40:00.5: a third is 399.833… s, so the bound is
        // 08:46:40.333…; the slow backoff (480 s at attempt 4) is cut to it. Rounded up it
        // would be 08:46:41, past the bound; rounded down it is 08:46:40.
        assert_eq!(
            retry(
                FailureClass::Rejected,
                4,
                "2026-11-27T08:40:00.5Z",
                Some(hour)
            ),
            ts("2026-11-27T08:46:40Z")
        );
        // 768.9 s remain at 08:47:11.1: a third is 256.3 s, the bound 08:51:27.4. The backoff
        // of attempt 9 (256 s) is shorter and due at 08:51:27.1, but 08:51:28 would pass the
        // bound: 08:51:27.
        assert_eq!(
            retry(
                FailureClass::Transient,
                9,
                "2026-11-27T08:47:11.1Z",
                Some(hour)
            ),
            ts("2026-11-27T08:51:27Z")
        );
        // Where rounding up stays inside the bound, or nothing bounds the wait, it rounds up:
        // 08:00:00.5 + 1 s (attempt 1) is 08:00:01.5, the bound (1199.83 s) is far.
        assert_eq!(
            retry(
                FailureClass::Transient,
                1,
                "2026-11-27T08:40:00.5Z",
                Some(hour)
            ),
            ts("2026-11-27T08:40:02Z")
        );
        assert_eq!(
            retry(FailureClass::Rejected, 4, "2026-11-27T08:40:00.5Z", None),
            ts("2026-11-27T09:40:01Z")
        );
        // A whole-second bound is kept exactly: 1200 s remain at 08:40:00, a third is 400 s.
        assert_eq!(
            retry(
                FailureClass::Rejected,
                4,
                "2026-11-27T08:40:00Z",
                Some(hour)
            ),
            ts("2026-11-27T08:46:40Z")
        );
    }

    /// Drives one connection whose every token request fails with `class`, on tokio's paused
    /// clock: the first failure at the renewal point of a token of `lifetime_s` (renewBefore
    /// 33 %, no jitter), then each retry when the policy says. Returns the attempt times in
    /// seconds after issue, up to `until_s`.
    async fn attempts(class: FailureClass, lifetime_s: i64, until_s: i64) -> Vec<f64> {
        let t = Timing::default();
        let tok = token(lifetime_s);
        let start = tokio::time::Instant::now();
        let renewal = lifetime_s as f64 * 0.67;
        tokio::time::sleep(Duration::from_secs_f64(renewal)).await;
        let mut times = Vec::new();
        let mut n = 0;
        loop {
            let elapsed = start.elapsed();
            if elapsed.as_secs_f64() > until_s as f64 {
                return times;
            }
            times.push(elapsed.as_secs_f64());
            n += 1;
            let now = schedule::add(tok.issued_at, elapsed);
            let unit = rand::random::<f64>();
            tokio::time::sleep(wait_after(class, n, now, Some(tok), &t, unit)).await;
        }
    }

    /// For every class and lifetimes of 60 s, 1 h and 24 h: at least three attempts inside the
    /// validity left at the renewal point (R), the third with at least 4/9 R left (each wait is
    /// at most a third of what remains); no attempt planned inside the validity lands after
    /// expiry; and the count is bounded.
    #[tokio::test(start_paused = true)]
    async fn every_class_gets_three_attempts_before_expiry_over_60s_1h_24h() {
        let classes = [
            FailureClass::Transient,
            FailureClass::Rejected,
            FailureClass::RateLimited(None),
            FailureClass::RateLimited(Some(S(1))),
            FailureClass::RateLimited(Some(S(86_400))),
        ];
        for lifetime in [60_i64, 3600, 86_400] {
            for class in classes {
                let times = attempts(class, lifetime, lifetime).await;
                let remaining = lifetime as f64 * 0.33;
                let expiry = lifetime as f64;
                let inside: Vec<f64> = times.iter().copied().filter(|t| *t < expiry).collect();
                assert!(
                    inside.len() >= 3,
                    "{class:?} {lifetime}s: {} attempts before expiry: {inside:?}",
                    inside.len()
                );
                let third_left = expiry - inside[2];
                assert!(
                    third_left >= remaining * 4.0 / 9.0 - 1.0,
                    "{class:?} {lifetime}s: third attempt {third_left:.1}s before expiry"
                );
                // The bound, worked out from the rules alone: while a wait is the class's
                // own, it is at least half its nominal step (1 s doubling to the 5 min cap for
                // the backoff, so at most 9 steps below the cap, then R / 150 s at the cap);
                // while it is the validity bound, each wait is at least the floor
                // f = max(1 s, 1 % of the lifetime) and at least a third of what remains
                // while that exceeds 3f, so at most log_1.5(R / f) + 3 of them.
                println!(
                    "{class:?} over a {lifetime} s token: {} attempts before expiry, the third {third_left:.0} s before it",
                    inside.len()
                );
                let floor = (lifetime as f64 * 0.01).max(1.0);
                let bound = 9.0
                    + (remaining / 150.0).ceil()
                    + (remaining / floor).ln() / 1.5_f64.ln()
                    + 3.0;
                assert!(
                    (inside.len() as f64) <= bound,
                    "{class:?} {lifetime}s: {} attempts, bound {bound:.0}",
                    inside.len()
                );
            }
        }
    }

    /// Ten minutes of 503s without any token (the old ten-minute wall-clock test, now on the
    /// paused clock): each delay lies in the upper half of its nominal step, the steps written
    /// out here as DESIGN §4 states them (1 s doubling, capped at 5 min).
    #[tokio::test(start_paused = true)]
    async fn ten_minutes_of_503_follow_the_backoff_schedule() {
        let nominal = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300];
        let t = Timing::default();
        let start = tokio::time::Instant::now();
        let mut times = vec![0.0];
        let mut n = 0;
        while start.elapsed() < S(600) {
            n += 1;
            let now = schedule::add(ts("2026-11-27T08:00:00Z"), start.elapsed());
            tokio::time::sleep(wait_after(
                FailureClass::Transient,
                n,
                now,
                None,
                &t,
                rand::random(),
            ))
            .await;
            times.push(start.elapsed().as_secs_f64());
        }
        let within: Vec<f64> = times.iter().copied().filter(|t| *t <= 600.0).collect();
        for (i, pair) in times.windows(2).enumerate() {
            let delay = pair[1] - pair[0];
            let step = nominal[i] as f64;
            assert!(
                delay >= step / 2.0 - 0.001 && delay <= step + 0.001,
                "delay {i} was {delay}s, step {step}s"
            );
        }
        // With the first attempt at 0: at the shortest delays (½, 1, 2, … 128, 150, 150 s) 12
        // attempts fall in 10 minutes (the last at 555.5 s); at the longest (1, 2, … 256 s) 10
        // (the last at 511 s).
        assert!(
            (10..=12).contains(&within.len()),
            "{} attempts in 10 minutes: {within:?}",
            within.len()
        );
    }
}
