//! The connection's status and conditions, computed from what the reconcile found and did.
//! Pure: the same facts give the same status, so the reconciler writes only on change.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::token_secret::IssuedToken;
use crate::api::{PingOneConnectionStatus, PublicJwk};

/// Condition types.
pub const READY: &str = "Ready";
/// In progress: a retryable failure is being retried.
pub const RECONCILING: &str = "Reconciling";
/// Needs a person: retrying will not help.
pub const STALLED: &str = "Stalled";

/// Reason of a Ready connection.
pub const REASON_TOKEN_ISSUED: &str = "TokenIssued";
/// Reason while a token is awaited without any failure.
pub const REASON_TOKEN_PENDING: &str = "TokenPending";
/// Reason when the token in the Secret expired.
pub const REASON_TOKEN_EXPIRED: &str = "TokenExpired";
/// Reason of a False Reconciling or Stalled condition.
pub const REASON_RECONCILED: &str = "Reconciled";

/// Why the connection cannot get a token right now.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// Stable CamelCase reason.
    pub reason: &'static str,
    /// Human message naming what is at fault; never a secret.
    pub message: String,
    /// Only a person can fix it.
    pub stalled: bool,
    /// When the next attempt is due, for retryable problems.
    pub retry_at: Option<Timestamp>,
}

/// What the reconcile found and did.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// Now, in whole seconds.
    pub now: Timestamp,
    /// The connection's metadata.generation.
    pub generation: Option<i64>,
    /// Name of the derived Secret.
    pub secret_name: &'a str,
    /// The intact token now in the Secret, if any.
    pub token: Option<&'a IssuedToken>,
    /// That token was issued for the current spec and credentials.
    pub token_current: bool,
    /// When it will be renewed.
    pub renew_at: Option<Timestamp>,
    /// What stands in the way, if anything.
    pub problem: Option<&'a Problem>,
    /// Failed token requests in a row, and when the last failed.
    pub failed_attempts: u32,
    /// When the last token request (or credentials read) failed.
    pub last_failure: Option<Timestamp>,
    /// When the next token request is due after a failure.
    pub next_attempt: Option<Timestamp>,
    /// The keyed digest of the inputs the last failed request was made with.
    pub failed_inputs_digest: Option<&'a str>,
    /// The public key of a private_key_jwt connection.
    pub public_jwk: Option<PublicJwk>,
    /// Client secret rotation, when configured.
    pub rotation: Option<RotationFacts>,
    /// The renew-requested-at value the current token was issued for.
    pub renew_request_served: Option<&'a str>,
    /// The check of the token in the Secret (JWTs only).
    pub token_check: Option<super::token_check::TokenCheck>,
}

/// What status shows of client secret rotation.
#[derive(Clone, Debug, PartialEq)]
pub struct RotationFacts {
    /// When the secret was last rotated (and a token was obtained with the new one).
    pub last: Option<Timestamp>,
    /// When the next rotation (or retry) is due.
    pub next: Option<Timestamp>,
    /// When the replaced secret stops working.
    pub previous_expires_at: Option<Timestamp>,
    /// The ClientSecretRotation condition: working, and why.
    pub healthy: bool,
    /// Its reason.
    pub reason: &'static str,
    /// Its message.
    pub message: String,
}

/// Condition type of client secret rotation (only on connections that rotate).
pub const CLIENT_SECRET_ROTATION: &str = "ClientSecretRotation";

fn fmt_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// True when the Ready condition of `status` is True.
pub fn is_ready(status: Option<&PingOneConnectionStatus>) -> bool {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
        .is_some_and(|c| c.status == "True")
}

/// Makes the conditions of one status: observed at `generation`, keeping the transition time of
/// the same condition in `previous` when its status did not change.
struct Stamp<'a> {
    previous: Option<&'a PingOneConnectionStatus>,
    now: Timestamp,
    generation: Option<i64>,
}

impl Stamp<'_> {
    fn condition(&self, type_: &str, status: bool, reason: &str, message: String) -> Condition {
        let status = if status { "True" } else { "False" };
        let last_transition_time = self
            .previous
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(self.now));
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: self.generation,
            last_transition_time,
        }
    }
}

/// The status for `facts`, keeping condition transition times from `previous` where the
/// condition's status did not change.
pub fn compute(
    previous: Option<&PingOneConnectionStatus>,
    facts: &Facts<'_>,
) -> PingOneConnectionStatus {
    let valid_token = facts.token.filter(|t| facts.now < t.expires_at);
    let ready = facts.token_current
        && valid_token.is_some()
        && facts
            .problem
            .is_none_or(|p| p.reason != super::REASON_TARGET_CONFLICT);

    let (ready_reason, ready_message) = match (ready, facts.problem, valid_token) {
        (true, _, Some(t)) => (
            REASON_TOKEN_ISSUED,
            match facts.renew_at {
                Some(r) => format!(
                    "Token in Secret {} is valid until {}; renewal at {}",
                    facts.secret_name,
                    fmt_time(t.expires_at),
                    fmt_time(r)
                ),
                None => format!(
                    "Token in Secret {} is valid until {}",
                    facts.secret_name,
                    fmt_time(t.expires_at)
                ),
            },
        ),
        // An expired token is the headline, whatever stands in the way of a new one (that
        // shows in Reconciling or Stalled).
        (_, problem, None) if facts.token.is_some() => (
            REASON_TOKEN_EXPIRED,
            match (facts.token, problem) {
                (Some(t), Some(p)) => format!(
                    "The token in Secret {} expired at {}; no new one yet: {}",
                    facts.secret_name,
                    fmt_time(t.expires_at),
                    p.message
                ),
                _ => format!("The token in Secret {} has expired", facts.secret_name),
            },
        ),
        (_, Some(p), _) => (p.reason, p.message.clone()),
        _ => (
            REASON_TOKEN_PENDING,
            format!("Waiting for a token for Secret {}", facts.secret_name),
        ),
    };

    let reconciling = match facts.problem {
        Some(p) if !p.stalled => Some((
            p.reason,
            match p.retry_at {
                Some(at) => format!("{}; retrying at {}", p.message, fmt_time(at)),
                None => p.message.clone(),
            },
        )),
        None if !ready => Some((REASON_TOKEN_PENDING, ready_message.clone())),
        _ => None,
    };
    let stalled = facts
        .problem
        .filter(|p| p.stalled)
        .map(|p| (p.reason, p.message.clone()));

    let stamp = Stamp {
        previous,
        now: facts.now,
        generation: facts.generation,
    };
    let condition =
        |type_, status, reason, message| stamp.condition(type_, status, reason, message);
    let mut conditions = vec![
        condition(READY, ready, ready_reason, ready_message),
        match reconciling {
            Some((reason, message)) => condition(RECONCILING, true, reason, message),
            None => condition(RECONCILING, false, REASON_RECONCILED, String::new()),
        },
        match stalled {
            Some((reason, message)) => condition(STALLED, true, reason, message),
            None => condition(STALLED, false, REASON_RECONCILED, String::new()),
        },
    ];
    if let Some(r) = &facts.rotation {
        conditions.push(condition(
            CLIENT_SECRET_ROTATION,
            r.healthy,
            r.reason,
            r.message.clone(),
        ));
    }

    if let Some(c) = &facts.token_check {
        conditions.push(condition(
            super::token_check::TOKEN_VERIFIED,
            c.ok,
            &c.reason,
            c.message.clone(),
        ));
    }

    PingOneConnectionStatus {
        observed_generation: facts.generation,
        conditions,
        token_secret_name: Some(facts.secret_name.to_string()),
        issued_at: facts.token.map(|t| Time(t.issued_at)),
        expires_at: facts.token.map(|t| Time(t.expires_at)),
        last_token_obtained_time: facts
            .token
            .map(|t| t.issued_at)
            .max(
                previous
                    .and_then(|p| p.last_token_obtained_time.as_ref())
                    .map(|t| t.0),
            )
            .map(Time),
        renewal_time: facts.renew_at.filter(|_| ready).map(Time),
        last_failure_time: facts.last_failure.map(Time),
        failed_attempts: facts.failed_attempts,
        next_attempt_time: facts.next_attempt.map(Time),
        failed_inputs_digest: facts.failed_inputs_digest.map(str::to_string),
        token_type: facts.token.map(|t| t.token_type.clone()),
        granted_scopes: facts.token.map(|t| t.scopes.clone()).unwrap_or_default(),
        public_jwk: facts.public_jwk.clone().map(Box::new),
        last_credential_rotation_time: facts.rotation.as_ref().and_then(|r| r.last).map(Time),
        next_credential_rotation_time: facts.rotation.as_ref().and_then(|r| r.next).map(Time),
        previous_client_secret_expires_at: facts
            .rotation
            .as_ref()
            .and_then(|r| r.previous_expires_at)
            .map(Time),
        renew_request_served: facts.renew_request_served.map(str::to_string),
        token_claims: facts.token_check.as_ref().and_then(|c| c.claims.clone()),
    }
}

/// Condition type present only while a Kubernetes API call of the connection's reconcile
/// fails: status `False`, with the failure's reason and message. It stands beside the token's
/// and the rotation's conditions, which keep what they said.
pub const KUBERNETES_ACCESS: &str = "KubernetesAccess";

/// `previous` with a problem outside the token's lifecycle (a failed Kubernetes API call)
/// reported in [`KUBERNETES_ACCESS`], and in Reconciling or Stalled unless those report a
/// failed token request (`token_failure`): that failure, its retry time and every other
/// condition (client secret rotation, token verification) stay as they were, so that a
/// restarted operator honours them. Everything the operator knows of the token stays as it was;
/// Ready turns False only when the recorded token has expired.
pub fn with_problem(
    previous: Option<&PingOneConnectionStatus>,
    problem: &Problem,
    now: Timestamp,
    generation: Option<i64>,
    token_failure: bool,
) -> PingOneConnectionStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let expired = status.expires_at.as_ref().is_some_and(|t| t.0 <= now);
    let ready_before = is_ready(previous) && !expired;
    let message = match problem.retry_at {
        Some(at) => format!("{}; retrying at {}", problem.message, fmt_time(at)),
        None => problem.message.clone(),
    };
    let stamp = Stamp {
        previous,
        now,
        generation,
    };
    let condition =
        |type_, status, reason, message| stamp.condition(type_, status, reason, message);
    let ready = match previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY)) {
        Some(c) if ready_before => c.clone(),
        _ if expired => condition(
            READY,
            false,
            REASON_TOKEN_EXPIRED,
            format!("The token has expired; no new one yet: {}", problem.message),
        ),
        _ => condition(READY, false, problem.reason, problem.message.clone()),
    };
    let kept = |type_: &str| {
        previous
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
            .cloned()
    };
    let (reconciling, stalled) = match (token_failure, kept(RECONCILING), kept(STALLED)) {
        (true, Some(reconciling), Some(stalled)) => (reconciling, stalled),
        _ if problem.stalled => (
            condition(RECONCILING, false, REASON_RECONCILED, String::new()),
            condition(STALLED, true, problem.reason, message.clone()),
        ),
        _ => (
            condition(RECONCILING, true, problem.reason, message.clone()),
            condition(STALLED, false, REASON_RECONCILED, String::new()),
        ),
    };
    let others = status
        .conditions
        .iter()
        .filter(|c| ![READY, RECONCILING, STALLED, KUBERNETES_ACCESS].contains(&c.type_.as_str()))
        .cloned();
    let mut conditions = vec![ready, reconciling, stalled];
    conditions.extend(others);
    conditions.push(condition(KUBERNETES_ACCESS, false, problem.reason, message));
    status.conditions = conditions;
    status.observed_generation = generation;
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn token() -> IssuedToken {
        IssuedToken {
            issued_at: ts("2026-11-27T08:00:00Z"),
            expires_at: ts("2026-11-27T09:00:00Z"),
            renewal_jitter: 0.0,
            inputs_digest: "d".into(),
            token_type: "Bearer".into(),
            scopes: vec!["s".into()],
        }
    }

    fn facts<'a>(token: Option<&'a IssuedToken>, problem: Option<&'a Problem>) -> Facts<'a> {
        Facts {
            now: ts("2026-11-27T08:10:00Z"),
            generation: Some(3),
            secret_name: "billing-token",
            token,
            token_current: true,
            renew_at: Some(ts("2026-11-27T08:40:12Z")),
            problem,
            failed_attempts: 0,
            last_failure: None,
            next_attempt: None,
            failed_inputs_digest: None,
            public_jwk: None,
            rotation: None,
            renew_request_served: None,
            token_check: None,
        }
    }

    #[test]
    fn a_kubernetes_problem_keeps_ready_and_the_token_facts() {
        let t = token();
        let ready = compute(None, &facts(Some(&t), None));
        let p = Problem {
            reason: "CredentialsForbidden",
            message: "the operator may not get Secret creds".into(),
            stalled: true,
            retry_at: None,
        };
        let s = with_problem(Some(&ready), &p, ts("2026-11-27T08:20:00Z"), Some(3), false);
        assert_eq!(cond(&s, READY), cond(&ready, READY));
        assert_eq!(cond(&s, STALLED).reason, "CredentialsForbidden");
        assert_eq!(s.expires_at, ready.expires_at);
        // Once the recorded token has expired, Ready says so.
        let s = with_problem(Some(&ready), &p, ts("2026-11-27T09:00:00Z"), Some(3), false);
        assert_eq!(cond(&s, READY).reason, REASON_TOKEN_EXPIRED);
        assert_eq!(cond(&s, READY).status, "False");
        // Without any status, Ready carries the problem.
        let s = with_problem(None, &p, ts("2026-11-27T08:20:00Z"), Some(3), false);
        assert_eq!(cond(&s, READY).reason, "CredentialsForbidden");
    }

    /// A Kubernetes failure after a rejected token request: the token failure (what a
    /// restarted operator honours), the rotation's condition and the token's facts stay; the
    /// Kubernetes problem stands beside them, and goes with the next full status.
    #[test]
    fn a_kubernetes_problem_keeps_the_token_and_rotation_conditions() {
        let t = token();
        let rejected = Problem {
            reason: "InvalidClient",
            message: "PingOne rejected the client credentials".into(),
            stalled: true,
            retry_at: None,
        };
        let mut f = facts(Some(&t), Some(&rejected));
        f.failed_attempts = 1;
        f.next_attempt = Some(ts("2026-11-27T08:40:00Z"));
        f.failed_inputs_digest = Some("v2:abc");
        f.rotation = Some(RotationFacts {
            last: None,
            next: Some(ts("2026-11-27T10:00:00Z")),
            previous_expires_at: None,
            healthy: false,
            reason: "ManagementApiForbidden",
            message: "refused".into(),
        });
        let failed = compute(None, &f);
        let kube = Problem {
            reason: "KubernetesApiError",
            message: "the API server did not answer".into(),
            stalled: false,
            retry_at: Some(ts("2026-11-27T08:20:05Z")),
        };
        let s = with_problem(
            Some(&failed),
            &kube,
            ts("2026-11-27T08:20:00Z"),
            Some(3),
            true,
        );
        for kept in [READY, RECONCILING, STALLED, CLIENT_SECRET_ROTATION] {
            assert_eq!(cond(&s, kept), cond(&failed, kept), "{kept}");
        }
        assert_eq!(cond(&s, STALLED).reason, "InvalidClient");
        assert_eq!(s.failed_inputs_digest.as_deref(), Some("v2:abc"));
        assert_eq!(s.next_attempt_time, failed.next_attempt_time);
        let access = cond(&s, KUBERNETES_ACCESS);
        assert_eq!(
            (access.status.as_str(), access.reason.as_str()),
            ("False", "KubernetesApiError")
        );
        assert!(
            access.message.contains("did not answer"),
            "{}",
            access.message
        );
        // Twice in a row: still one of each.
        let again = with_problem(Some(&s), &kube, ts("2026-11-27T08:20:10Z"), Some(3), true);
        assert_eq!(again.conditions.len(), s.conditions.len());
        // Without a token failure the Kubernetes problem is also in Reconciling.
        let s = with_problem(
            Some(&failed),
            &kube,
            ts("2026-11-27T08:20:00Z"),
            Some(3),
            false,
        );
        assert_eq!(cond(&s, RECONCILING).reason, "KubernetesApiError");
        assert_eq!(
            cond(&s, CLIENT_SECRET_ROTATION),
            cond(&failed, CLIENT_SECRET_ROTATION)
        );
        // The next full status has no such condition.
        let healthy = compute(Some(&s), &facts(Some(&t), None));
        assert!(
            healthy
                .conditions
                .iter()
                .all(|c| c.type_ != KUBERNETES_ACCESS)
        );
    }

    fn cond<'a>(s: &'a PingOneConnectionStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_valid_current_token_is_ready() {
        let t = token();
        let s = compute(None, &facts(Some(&t), None));
        let ready = cond(&s, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "TokenIssued")
        );
        assert!(ready.message.contains("2026-11-27T09:00:00Z"));
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(cond(&s, RECONCILING).status, "False");
        assert_eq!(cond(&s, STALLED).status, "False");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.expires_at, Some(Time(t.expires_at)));
        assert_eq!(s.renewal_time, Some(Time(ts("2026-11-27T08:40:12Z"))));
        assert_eq!(s.granted_scopes, vec!["s".to_string()]);
        assert_eq!(s.token_type.as_deref(), Some("Bearer"));
    }

    #[test]
    fn a_failed_renewal_keeps_ready_while_the_token_is_valid() {
        let t = token();
        let p = Problem {
            reason: "TokenEndpointUnavailable",
            message: "HTTP 503".into(),
            stalled: false,
            retry_at: Some(ts("2026-11-27T08:10:04Z")),
        };
        let mut f = facts(Some(&t), Some(&p));
        f.failed_attempts = 2;
        f.last_failure = Some(f.now);
        let s = compute(None, &f);
        assert_eq!(cond(&s, READY).status, "True");
        let r = cond(&s, RECONCILING);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("True", "TokenEndpointUnavailable")
        );
        assert!(r.message.contains("retrying at 2026-11-27T08:10:04Z"));
        assert_eq!(cond(&s, STALLED).status, "False");
        assert_eq!(s.failed_attempts, 2);
        assert_eq!(s.last_failure_time, Some(Time(f.now)));
    }

    #[test]
    fn stalled_problems_set_stalled_and_not_ready_without_a_current_token() {
        let t = token();
        let p = Problem {
            reason: "InvalidClient",
            message: "PingOne rejected the client credentials (HTTP 401 invalid_client)".into(),
            stalled: true,
            retry_at: None,
        };
        let mut f = facts(Some(&t), Some(&p));
        f.token_current = false;
        let s = compute(None, &f);
        let ready = cond(&s, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidClient")
        );
        assert_eq!(cond(&s, STALLED).status, "True");
        assert_eq!(cond(&s, RECONCILING).status, "False");
        assert_eq!(s.renewal_time, None);
    }

    #[test]
    fn expired_and_pending_tokens_are_not_ready() {
        let t = token();
        let mut f = facts(Some(&t), None);
        f.now = ts("2026-11-27T09:00:00Z");
        let s = compute(None, &f);
        assert_eq!(cond(&s, READY).reason, REASON_TOKEN_EXPIRED);
        let s = compute(None, &facts(None, None));
        assert_eq!(cond(&s, READY).reason, REASON_TOKEN_PENDING);
        assert_eq!(cond(&s, RECONCILING).status, "True");
        // Expired during an outage: TokenExpired, with the outage in Reconciling.
        let p = Problem {
            reason: "TokenEndpointUnavailable",
            message: "HTTP 503".into(),
            stalled: false,
            retry_at: Some(ts("2026-11-27T09:00:30Z")),
        };
        let mut f = facts(Some(&t), Some(&p));
        f.now = ts("2026-11-27T09:00:01Z");
        let s = compute(None, &f);
        let ready = cond(&s, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", REASON_TOKEN_EXPIRED)
        );
        assert!(ready.message.contains("HTTP 503"), "{}", ready.message);
        assert_eq!(cond(&s, RECONCILING).reason, "TokenEndpointUnavailable");
    }

    #[test]
    fn transition_times_survive_when_status_is_unchanged_so_status_is_stable() {
        let t = token();
        let first = compute(None, &facts(Some(&t), None));
        let mut later = facts(Some(&t), None);
        later.now = ts("2026-11-27T08:20:00Z");
        let second = compute(Some(&first), &later);
        assert_eq!(first, second, "nothing changed, so nothing to write");
        let p = Problem {
            reason: "InvalidClient",
            message: "m".into(),
            stalled: true,
            retry_at: None,
        };
        let mut failing = facts(Some(&t), Some(&p));
        failing.now = ts("2026-11-27T08:30:00Z");
        let third = compute(Some(&second), &failing);
        assert_eq!(
            cond(&third, READY).last_transition_time,
            cond(&first, READY).last_transition_time
        );
        assert_eq!(
            cond(&third, STALLED).last_transition_time,
            Time(ts("2026-11-27T08:30:00Z"))
        );
    }

    #[test]
    fn the_kept_token_check_goes_once_a_status_shows_it() {
        use super::super::state::States;
        use super::super::token_check::{REASON_TOKEN_VERIFIED, TokenCheck};
        let t = token();
        let check = TokenCheck {
            claims: Some(crate::api::TokenClaims {
                issuer: Some("https://auth.pingone.eu/env/as".into()),
                client_id: Some("client".into()),
                scopes: vec!["s".into()],
                ..Default::default()
            }),
            ok: true,
            reason: REASON_TOKEN_VERIFIED.into(),
            message: "the token's signature and claims are as asked".into(),
            skew_seconds: Some(2),
        };
        let written_with = |token: &IssuedToken, check: Option<&TokenCheck>| {
            let mut f = facts(Some(token), None);
            f.token_check = check.cloned();
            compute(None, &f)
        };
        let states = States::default();
        states.register("u", "ns", "a", &["creds"]);
        let kept = |states: &States| states.with("u", |s| s.token_check.is_some()).unwrap();
        states.with("u", |s| {
            s.token_check = Some((t.issued_at, Some(check.clone())))
        });
        // No status, then a status from before the write of the check.
        states.status_seen("u", None);
        assert!(kept(&states));
        states.status_seen("u", Some(&written_with(&t, None)));
        assert!(kept(&states));
        // The same verdict recorded for an earlier token is not this token's.
        let mut earlier = token();
        earlier.issued_at = ts("2026-11-27T07:00:00Z");
        states.status_seen("u", Some(&written_with(&earlier, Some(&check))));
        assert!(kept(&states));
        // Another verdict for this token is not this one.
        let mut other = check.clone();
        other.claims.as_mut().unwrap().client_id = Some("another".into());
        states.status_seen("u", Some(&written_with(&t, Some(&other))));
        assert!(kept(&states));
        // The status written with it: the kept copy goes, and status answers the same.
        let written = written_with(&t, Some(&check));
        states.status_seen("u", Some(&written));
        assert!(!kept(&states));
        let mut recorded = super::super::token_check::from_status(Some(&written)).unwrap();
        assert!(recorded.same_outcome(&check));
        recorded.skew_seconds = check.skew_seconds;
        assert_eq!(recorded, check);
        // An opaque token: no check kept, none shown.
        states.with("u", |s| s.token_check = Some((t.issued_at, None)));
        states.status_seen("u", Some(&written_with(&earlier, None)));
        assert!(kept(&states), "another token's status");
        states.status_seen("u", Some(&written_with(&t, None)));
        assert!(!kept(&states));
    }
}
