//! What a reconcile should do, decided from the facts it gathered. Pure.

use jiff::Timestamp;

use super::schedule::{self, Timing};
use super::token_secret::{IssuedToken, TargetState};
use crate::api::RenewBefore;

/// Why a new token is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The Secret does not exist yet (or was deleted).
    Missing,
    /// Spec or credentials changed since the token was issued.
    InputsChanged,
    /// The Secret's token or its bookkeeping was edited or removed.
    Damaged,
    /// The renewal time has come.
    RenewalDue,
}

impl Need {
    /// Words for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Missing => "token secret missing",
            Need::InputsChanged => "spec or credentials changed",
            Need::Damaged => "token secret was modified",
            Need::RenewalDue => "renewal due",
        }
    }
}

/// The last failure to get a token for a connection, remembered between reconciles.
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
    /// Only a person can fix it.
    pub stalled: bool,
}

impl Failure {
    /// Records a failure after `previous` (if any, for the same connection).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        previous: Option<&Failure>,
        now: Timestamp,
        inputs_digest: String,
        generation: Option<i64>,
        reason: &'static str,
        message: String,
        stalled: bool,
        retry_after: Option<std::time::Duration>,
        timing: &Timing,
        unit: f64,
    ) -> Failure {
        let attempts = previous.map_or(0, |p| p.attempts).saturating_add(1);
        let wait = if stalled {
            timing.stalled_recheck
        } else if let Some(retry_after) = retry_after {
            // PingOne says exactly when to come back; a zero would invite a storm.
            retry_after.max(timing.backoff_base)
        } else {
            schedule::backoff(attempts, timing, unit)
        };
        Failure {
            inputs_digest,
            generation,
            attempts,
            at: now,
            retry_at: schedule::add(now, wait),
            reason,
            message,
            stalled,
        }
    }
}

/// What to do about the token.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// The Secret belongs to someone else: touch nothing.
    Conflict,
    /// The token is good; wake up at `renew_at`.
    Keep {
        /// The token in the Secret.
        token: IssuedToken,
        /// When to renew it.
        renew_at: Timestamp,
    },
    /// Ask PingOne for a token now.
    Request(Need),
    /// A token is needed, but not before `until` (backoff, Retry-After, stalled, or the floor).
    Wait {
        /// Why a token is needed.
        need: Need,
        /// When to try.
        until: Timestamp,
    },
}

/// Decides what to do, given the Secret's state, the current inputs and the last failure.
pub fn decide(
    now: Timestamp,
    target: &TargetState,
    inputs_digest: &str,
    generation: Option<i64>,
    rule: RenewBefore,
    failure: Option<&Failure>,
    timing: &Timing,
) -> Plan {
    let (need, last_issued) = match target {
        TargetState::Foreign => return Plan::Conflict,
        TargetState::Absent => (Need::Missing, None),
        TargetState::Owned { token: None, .. } => (Need::Damaged, None),
        TargetState::Owned {
            token: Some(token), ..
        } => {
            if token.inputs_digest != inputs_digest {
                (Need::InputsChanged, None)
            } else {
                let renew_at = renewal_time(token, rule, timing);
                if now < renew_at {
                    return Plan::Keep {
                        token: token.clone(),
                        renew_at,
                    };
                }
                (Need::RenewalDue, Some(token.issued_at))
            }
        }
    };
    // The floor: never a second token for the same inputs within min_interval.
    let mut until = last_issued.map(|t| schedule::add(t, timing.min_interval));
    if let Some(f) = failure {
        let same_inputs = f.inputs_digest == inputs_digest;
        let same_spec = f.generation == generation;
        if same_inputs && (!f.stalled || same_spec) {
            until = until.max(Some(f.retry_at));
        }
    }
    match until {
        Some(until) if now < until => Plan::Wait { need, until },
        _ => Plan::Request(need),
    }
}

/// When to renew `token` under `rule`.
pub fn renewal_time(token: &IssuedToken, rule: RenewBefore, timing: &Timing) -> Timestamp {
    schedule::renewal_time(
        token.issued_at,
        token.expires_at,
        rule,
        token.renewal_jitter,
        timing.min_interval,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn token(digest: &str) -> IssuedToken {
        IssuedToken {
            issued_at: ts("2026-11-27T08:00:00Z"),
            expires_at: ts("2026-11-27T09:00:00Z"),
            renewal_jitter: 0.0,
            inputs_digest: digest.into(),
            token_type: "Bearer".into(),
            scopes: vec![],
        }
    }

    fn owned(token: Option<IssuedToken>) -> TargetState {
        TargetState::Owned {
            token,
            access_token: Some("t".into()),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            resource_version: None,
        }
    }

    const RULE: RenewBefore = RenewBefore::Percentage(33);

    fn failure(digest: &str, stalled: bool, retry_at: &str) -> Failure {
        Failure {
            inputs_digest: digest.into(),
            generation: Some(1),
            attempts: 1,
            at: ts("2026-11-27T08:45:00Z"),
            retry_at: ts(retry_at),
            reason: "X",
            message: "m".into(),
            stalled,
        }
    }

    #[test]
    fn fresh_token_is_kept_until_renewal() {
        let t = Timing::default();
        let plan = decide(
            ts("2026-11-27T08:10:00Z"),
            &owned(Some(token("d"))),
            "d",
            Some(1),
            RULE,
            None,
            &t,
        );
        assert_eq!(
            plan,
            Plan::Keep {
                token: token("d"),
                renew_at: ts("2026-11-27T08:40:12Z")
            }
        );
    }

    #[test]
    fn a_token_is_requested_when_missing_damaged_changed_or_due() {
        let t = Timing::default();
        let now = ts("2026-11-27T08:10:00Z");
        assert_eq!(
            decide(now, &TargetState::Absent, "d", Some(1), RULE, None, &t),
            Plan::Request(Need::Missing)
        );
        assert_eq!(
            decide(now, &owned(None), "d", Some(1), RULE, None, &t),
            Plan::Request(Need::Damaged)
        );
        assert_eq!(
            decide(
                now,
                &owned(Some(token("old"))),
                "d",
                Some(1),
                RULE,
                None,
                &t
            ),
            Plan::Request(Need::InputsChanged)
        );
        assert_eq!(
            decide(
                ts("2026-11-27T08:40:12Z"),
                &owned(Some(token("d"))),
                "d",
                Some(1),
                RULE,
                None,
                &t
            ),
            Plan::Request(Need::RenewalDue)
        );
        assert_eq!(
            decide(now, &TargetState::Foreign, "d", Some(1), RULE, None, &t),
            Plan::Conflict
        );
    }

    #[test]
    fn retryable_failures_wait_for_their_retry_time_unless_inputs_change() {
        let t = Timing::default();
        let f = failure("d", false, "2026-11-27T08:46:00Z");
        let target = owned(Some(token("d")));
        assert_eq!(
            decide(
                ts("2026-11-27T08:45:30Z"),
                &target,
                "d",
                Some(1),
                RULE,
                Some(&f),
                &t
            ),
            Plan::Wait {
                need: Need::RenewalDue,
                until: ts("2026-11-27T08:46:00Z")
            }
        );
        assert_eq!(
            decide(
                ts("2026-11-27T08:46:00Z"),
                &target,
                "d",
                Some(1),
                RULE,
                Some(&f),
                &t
            ),
            Plan::Request(Need::RenewalDue)
        );
        // New credentials: no reason to wait.
        assert_eq!(
            decide(
                ts("2026-11-27T08:45:30Z"),
                &target,
                "new",
                Some(1),
                RULE,
                Some(&f),
                &t
            ),
            Plan::Request(Need::InputsChanged)
        );
    }

    #[test]
    fn stalled_failures_wait_for_a_change_of_spec_or_inputs() {
        let t = Timing::default();
        let f = failure("d", true, "2026-11-27T09:45:00Z");
        let now = ts("2026-11-27T08:50:00Z");
        assert!(matches!(
            decide(now, &TargetState::Absent, "d", Some(1), RULE, Some(&f), &t),
            Plan::Wait { .. }
        ));
        assert_eq!(
            decide(now, &TargetState::Absent, "d", Some(2), RULE, Some(&f), &t),
            Plan::Request(Need::Missing)
        );
        assert_eq!(
            decide(
                now,
                &TargetState::Absent,
                "other",
                Some(1),
                RULE,
                Some(&f),
                &t
            ),
            Plan::Request(Need::Missing)
        );
    }

    #[test]
    fn failure_record_counts_and_schedules() {
        let t = Timing::default();
        let now = ts("2026-11-27T08:00:00Z");
        let f1 = Failure::record(
            None,
            now,
            "d".into(),
            Some(1),
            "TokenEndpointUnavailable",
            "m".into(),
            false,
            None,
            &t,
            1.0,
        );
        assert_eq!(f1.attempts, 1);
        assert_eq!(f1.retry_at, ts("2026-11-27T08:00:01Z"));
        let f2 = Failure::record(
            Some(&f1),
            now,
            "d".into(),
            Some(1),
            "TokenEndpointUnavailable",
            "m".into(),
            false,
            None,
            &t,
            1.0,
        );
        assert_eq!(f2.attempts, 2);
        assert_eq!(f2.retry_at, ts("2026-11-27T08:00:02Z"));
        let limited = Failure::record(
            Some(&f2),
            now,
            "d".into(),
            Some(1),
            "RateLimited",
            "m".into(),
            false,
            Some(Duration::from_secs(7)),
            &t,
            0.0,
        );
        assert_eq!(limited.retry_at, ts("2026-11-27T08:00:07Z"));
        let stalled = Failure::record(
            None,
            now,
            "d".into(),
            Some(1),
            "InvalidClient",
            "m".into(),
            true,
            None,
            &t,
            0.0,
        );
        assert_eq!(stalled.retry_at, ts("2026-11-27T09:00:00Z"));
    }

    #[test]
    fn the_floor_holds_even_when_renewal_is_due_at_once() {
        let t = Timing::default();
        let mut tok = token("d");
        tok.expires_at = ts("2026-11-27T08:00:03Z");
        let plan = decide(
            ts("2026-11-27T08:00:02Z"),
            &owned(Some(tok)),
            "d",
            Some(1),
            RULE,
            None,
            &t,
        );
        // renewal_time clamps to expiry (08:00:03) since the floor lies after it.
        assert_eq!(
            plan,
            Plan::Keep {
                token: IssuedToken {
                    expires_at: ts("2026-11-27T08:00:03Z"),
                    ..token("d")
                },
                renew_at: ts("2026-11-27T08:00:03Z")
            }
        );
    }
}
