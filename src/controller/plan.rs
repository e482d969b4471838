//! What a reconcile should do, decided from the facts it gathered. Pure.

use std::time::Duration;

use jiff::Timestamp;

use super::policy::Failure;
use super::schedule::{self, Timing};
use super::token_secret::{IssuedToken, OtherInstallation, TargetState};
use crate::api::RenewBefore;

/// Why a new token is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The connection never had a token.
    First,
    /// The Secret was deleted.
    Missing,
    /// Spec or credentials changed since the token was issued.
    InputsChanged,
    /// The Secret's token or its bookkeeping was edited or removed.
    Damaged,
    /// The renewal time has come.
    RenewalDue,
    /// Someone asked for a new token (the renew-requested-at annotation).
    Requested,
}

impl Need {
    /// Words for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Need::First => "first token",
            Need::Missing => "token secret missing",
            Need::InputsChanged => "spec or credentials changed",
            Need::Damaged => "token secret was modified",
            Need::RenewalDue => "renewal due",
            Need::Requested => "renewal requested",
        }
    }

    /// The token in the Secret is still the one for the current inputs: a renewal of it.
    pub fn is_renewal(self) -> bool {
        matches!(self, Need::RenewalDue | Need::Requested)
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
    /// The token Secret is another installation's, which keeps it fresh: nothing to do before
    /// `until` (when that installation's renewal is overdue, this one takes over).
    OtherInstallation {
        /// The other installation's name.
        id: String,
        /// When to look again.
        until: Timestamp,
    },
    /// A token is needed, but not before `until` (backoff, Retry-After, stalled, or the floor).
    Wait {
        /// Why a token is needed.
        need: Need,
        /// When to try.
        until: Timestamp,
    },
}

/// What a plan is decided from.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// What the target Secret holds.
    pub target: &'a TargetState,
    /// Digest of the current spec and credentials.
    pub inputs_digest: &'a str,
    /// The connection's metadata.generation.
    pub generation: Option<i64>,
    /// When to renew.
    pub rule: RenewBefore,
    /// The last failure, if unresolved.
    pub failure: Option<&'a Failure>,
    /// When the connection's last token was issued, as its status says (`None`: never).
    pub last_issued: Option<Timestamp>,
    /// A new token was asked for (renew-requested-at) and not yet issued.
    pub renew_requested: bool,
    /// That request has not been tried yet: it is also "try again now" for a connection that
    /// is Stalled or backing off (once per request value, still under the floor).
    pub retry_now: bool,
}

/// Decides what to do, given the Secret's state, the current inputs and the last failure.
pub fn decide(now: Timestamp, inputs: Inputs<'_>, timing: &Timing) -> Plan {
    let Inputs {
        target,
        inputs_digest,
        generation,
        rule,
        failure,
        last_issued,
        renew_requested,
        retry_now,
    } = inputs;
    let had_token = last_issued.is_some();
    if let TargetState::Owned {
        other_installation: Some(other),
        ..
    } = target
        && let Some(until) = takeover_time(other)
        && now < until
    {
        return Plan::OtherInstallation {
            id: other.id.clone(),
            until,
        };
    }
    let need = match target {
        TargetState::Foreign { .. } => return Plan::Conflict,
        TargetState::Absent if !had_token => Need::First,
        TargetState::Absent => Need::Missing,
        TargetState::Owned { token: None, .. } => Need::Damaged,
        TargetState::Owned {
            token: Some(token), ..
        } => {
            if token.inputs_digest != inputs_digest {
                Need::InputsChanged
            } else {
                let renew_at = renewal_time(token, rule, timing);
                if renew_requested {
                    Need::Requested
                } else if now < renew_at {
                    return Plan::Keep {
                        token: token.clone(),
                        renew_at,
                    };
                } else {
                    Need::RenewalDue
                }
            }
        }
    };
    // The floor holds for every request of the connection, whatever its inputs: never within
    // min_interval of the last token issued (spec flips, Secret edits, renew requests), nor of
    // a failed request for other inputs than these. A retry of the same inputs follows the
    // failure policy instead.
    let in_secret = match target {
        TargetState::Owned {
            token: Some(token), ..
        } => Some(token.issued_at),
        _ => None,
    };
    let mut until = in_secret
        .max(last_issued)
        .map(|t| schedule::add(t, timing.min_interval));
    if let Some(f) = failure {
        let same_inputs = f.inputs_digest == inputs_digest;
        let same_spec = f.generation == generation;
        if same_inputs && (!f.stalled() || same_spec) && !retry_now {
            until = until.max(Some(f.retry_at));
        } else {
            until = until.max(Some(schedule::add(f.at, timing.min_interval)));
        }
    }
    match until {
        Some(until) if now < until => Plan::Wait { need, until },
        _ => Plan::Request(need),
    }
}

/// When this installation takes over a token Secret another installation wrote: once that
/// one's renewal is overdue by a third of what was left at it (at most five minutes), so that a
/// removed installation's tokens are renewed well before they expire. `None` (take over now)
/// when its times cannot be read.
pub fn takeover_time(other: &OtherInstallation) -> Option<Timestamp> {
    let (renew_at, expires_at) = (other.renew_at?, other.expires_at?);
    let grace = (schedule::until(renew_at, expires_at) / 3).min(Duration::from_secs(300));
    Some(schedule::add(renew_at, grace))
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
    use super::*;
    use crate::controller::policy::FailureClass;
    use std::collections::BTreeMap;

    fn decide(
        now: Timestamp,
        target: &TargetState,
        inputs_digest: &str,
        generation: Option<i64>,
        rule: RenewBefore,
        failure: Option<&Failure>,
        timing: &Timing,
    ) -> Plan {
        super::decide(
            now,
            Inputs {
                target,
                inputs_digest,
                generation,
                rule,
                failure,
                last_issued: Some(ts("2026-11-27T08:00:00Z")),
                renew_requested: false,
                retry_now: false,
            },
            timing,
        )
    }

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
            shape_ok: true,
            other_installation: None,
        }
    }

    const RULE: RenewBefore = RenewBefore::Percentage(33);

    /// Another installation's token Secret (its renewal at 08:40, expiry at 09:00): left alone
    /// until its renewal is overdue by a third of the 20 min left then, capped at 5 min
    /// (08:45), then taken over; with unreadable times, at once.
    #[test]
    fn another_installations_token_is_left_alone_until_its_renewal_is_overdue() {
        let t = Timing::default();
        let other = |renew_at: Option<&str>| {
            let mut target = owned(None);
            if let TargetState::Owned {
                other_installation, ..
            } = &mut target
            {
                *other_installation = Some(OtherInstallation {
                    id: "a1b2c3".into(),
                    renew_at: renew_at.map(ts),
                    expires_at: Some(ts("2026-11-27T09:00:00Z")),
                });
            }
            target
        };
        let at =
            |now: &str, target: &TargetState| decide(ts(now), target, "d", Some(1), RULE, None, &t);
        let keeping = other(Some("2026-11-27T08:40:00Z"));
        assert_eq!(
            at("2026-11-27T08:10:00Z", &keeping),
            Plan::OtherInstallation {
                id: "a1b2c3".into(),
                until: ts("2026-11-27T08:45:00Z")
            }
        );
        assert_eq!(
            at("2026-11-27T08:45:00Z", &keeping),
            Plan::Request(Need::Damaged)
        );
        // A short token: renewal at 08:58, 2 min left: a third of it, 40 s.
        let short = other(Some("2026-11-27T08:58:00Z"));
        assert_eq!(
            at("2026-11-27T08:58:30Z", &short),
            Plan::OtherInstallation {
                id: "a1b2c3".into(),
                until: ts("2026-11-27T08:58:40Z")
            }
        );
        assert_eq!(
            at("2026-11-27T08:10:00Z", &other(None)),
            Plan::Request(Need::Damaged)
        );
    }

    fn failure(digest: &str, stalled: bool, retry_at: &str) -> Failure {
        Failure {
            inputs_digest: digest.into(),
            generation: Some(1),
            attempts: 1,
            at: ts("2026-11-27T08:45:00Z"),
            retry_at: ts(retry_at),
            reason: "X",
            message: "m".into(),
            class: if stalled {
                FailureClass::Rejected
            } else {
                FailureClass::Transient
            },
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
        let first = Inputs {
            target: &TargetState::Absent,
            inputs_digest: "d",
            generation: Some(1),
            rule: RULE,
            failure: None,
            last_issued: None,
            renew_requested: false,
            retry_now: false,
        };
        assert_eq!(super::decide(now, first, &t), Plan::Request(Need::First));
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
            decide(
                now,
                &TargetState::Foreign { owner: "x".into() },
                "d",
                Some(1),
                RULE,
                None,
                &t
            ),
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
    fn a_renew_request_renews_a_fresh_token_after_the_floor_and_any_retry_time() {
        let t = Timing::default();
        let inputs = |target, failure| Inputs {
            target,
            inputs_digest: "d",
            generation: Some(1),
            rule: RULE,
            failure,
            last_issued: Some(ts("2026-11-27T08:00:00Z")),
            renew_requested: true,
            retry_now: false,
        };
        let fresh = owned(Some(token("d")));
        // Issued 08:00:00, renewal due 08:40: a request at 08:10 renews now.
        assert_eq!(
            super::decide(ts("2026-11-27T08:10:00Z"), inputs(&fresh, None), &t),
            Plan::Request(Need::Requested)
        );
        // Within the 10 s floor after issue, it waits for the floor.
        assert_eq!(
            super::decide(ts("2026-11-27T08:00:04Z"), inputs(&fresh, None), &t),
            Plan::Wait {
                need: Need::Requested,
                until: ts("2026-11-27T08:00:10Z")
            }
        );
        // A failure's retry time holds it back too.
        let f = failure("d", false, "2026-11-27T08:12:00Z");
        assert_eq!(
            super::decide(ts("2026-11-27T08:10:00Z"), inputs(&fresh, Some(&f)), &t),
            Plan::Wait {
                need: Need::Requested,
                until: ts("2026-11-27T08:12:00Z")
            }
        );
        // Without a token it is the first token, whatever was asked.
        let first = Inputs {
            last_issued: None,
            ..inputs(&TargetState::Absent, None)
        };
        assert_eq!(
            super::decide(ts("2026-11-27T08:10:00Z"), first, &t),
            Plan::Request(Need::First)
        );
    }

    /// A renew request not tried yet is "try again now": it lifts a Stalled connection's
    /// hourly recheck and a backoff, under the floor (from the failed request).
    #[test]
    fn a_renew_request_is_try_again_now_once() {
        let t = Timing::default();
        let stalled = failure("d", true, "2026-11-27T09:45:00Z");
        let inputs = |retry_now| Inputs {
            target: &TargetState::Absent,
            inputs_digest: "d",
            generation: Some(1),
            rule: RULE,
            failure: Some(&stalled),
            last_issued: None,
            renew_requested: true,
            retry_now,
        };
        // The failed request was at 08:45:00: not before 08:45:10, then at once.
        assert_eq!(
            super::decide(ts("2026-11-27T08:45:04Z"), inputs(true), &t),
            Plan::Wait {
                need: Need::First,
                until: ts("2026-11-27T08:45:10Z")
            }
        );
        assert_eq!(
            super::decide(ts("2026-11-27T08:46:00Z"), inputs(true), &t),
            Plan::Request(Need::First)
        );
        // Tried once already: the failure's retry time again.
        assert_eq!(
            super::decide(ts("2026-11-27T08:46:00Z"), inputs(false), &t),
            Plan::Wait {
                need: Need::First,
                until: ts("2026-11-27T09:45:00Z")
            }
        );
    }

    /// Someone flips the spec (or the credentials) back and forth: each flip changes the
    /// inputs, and each would cost a request. The floor (10 s by default) counts from the last
    /// token issued or the last request that failed for other inputs, whatever the inputs.
    #[test]
    fn the_floor_holds_for_every_request_not_only_renewals() {
        let t = Timing::default();
        // A token for inputs "a" issued 08:00:00; the spec now says "b".
        let fresh = owned(Some(token("a")));
        let at = |s| decide(ts(s), &fresh, "b", Some(2), RULE, None, &t);
        assert_eq!(
            at("2026-11-27T08:00:04Z"),
            Plan::Wait {
                need: Need::InputsChanged,
                until: ts("2026-11-27T08:00:10Z")
            }
        );
        assert_eq!(
            at("2026-11-27T08:00:10Z"),
            Plan::Request(Need::InputsChanged)
        );
        // The Secret deleted or edited right after the issue: the same floor (status still
        // says when the last token was issued).
        for target in [TargetState::Absent, owned(None)] {
            assert!(
                matches!(
                    decide(ts("2026-11-27T08:00:04Z"), &target, "a", Some(2), RULE, None, &t),
                    Plan::Wait { until, .. } if until == ts("2026-11-27T08:00:10Z")
                ),
                "{target:?}"
            );
        }
        // A request for "b" failed at 08:45:00; the spec flips to "c": not before 08:45:10.
        let failed = failure("b", true, "2026-11-27T09:45:00Z");
        let old = owned(Some(token("a")));
        assert_eq!(
            decide(
                ts("2026-11-27T08:45:03Z"),
                &old,
                "c",
                Some(3),
                RULE,
                Some(&failed),
                &t
            ),
            Plan::Wait {
                need: Need::InputsChanged,
                until: ts("2026-11-27T08:45:10Z")
            }
        );
        // A retry of the failed inputs themselves follows the failure policy, not the floor.
        let transient = failure("b", false, "2026-11-27T08:45:01Z");
        assert_eq!(
            decide(
                ts("2026-11-27T08:45:01Z"),
                &old,
                "b",
                Some(1),
                RULE,
                Some(&transient),
                &t
            ),
            Plan::Request(Need::InputsChanged)
        );
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
