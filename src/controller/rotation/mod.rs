//! Client secret rotation through PingOne's Management API (DESIGN §7).
//!
//! On schedule, with the connection's credentials healthy (its token current), the operator:
//!
//! 1. gets a token without scopes with the current secret (the Management API takes no
//!    custom-resource token, and this proves the current secret still works);
//! 2. asks PingOne for a new secret, keeping the previous one valid for `keepPreviousFor`;
//! 3. writes the new secret into the credentials Secret in one patch, conditional on the
//!    resourceVersion it read, together with the rotation time (an annotation: the schedule's
//!    record survives anything that happens to the operator);
//! 4. proves it: the changed credentials make the next reconcile get a token with the new
//!    secret, and only then does status report the rotation.
//!
//! No step loses access (see [`intent`] for the invariant and why it holds). Killed before
//! step 2: nothing changed. PingOne's answer lost, or the operator killed before it arrived:
//! the record on the Secret makes the outcome *unknown*, reported with its deadline, and no
//! other rotation starts. Once the answer is in, the returned secret goes into a hold (see
//! [`hold`]) before anything else: killed before step 3, or with the write refused (a
//! person's edit, an admission policy), the operator (this one, a restarted one, a new leader)
//! writes it from there. Killed after step 3: the Secret holds the new secret and the
//! restarted operator proves it.

use std::time::Duration;

use base64::Engine;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use tracing::{info, warn};

pub mod hold;
pub mod intent;

use super::Context;
use super::credentials::Credentials;
use super::events::{self, EventType};
use super::schedule;
use super::status::RotationFacts;
use crate::api::{PingOneConnection, PingOneConnectionStatus};
use crate::pingone::{ExposeSecret, ManagementError, TokenRequest, TokenResponse, api_domain_of};
use intent::{Facts, Holds, INTENT, Intent, Memory, Pending, Proof, Step};

/// Annotation on the credentials Secret: when its secret was last rotated by the operator.
pub const ROTATED_AT: &str = "pingone.tokenops.dev/client-secret-rotated-at";
/// Annotation on the credentials Secret: until when PingOne accepts the replaced secret.
pub const PREVIOUS_EXPIRES_AT: &str = "pingone.tokenops.dev/previous-client-secret-expires-at";

/// First wait after a failed rotation; doubles per failure up to [`RETRY_CAP`]. Failures that
/// need a person (a missing role) are not retried in a loop: minutes, then hours.
pub const RETRY_BASE: Duration = Duration::from_secs(5 * 60);
/// Longest wait between rotation attempts after failures.
pub const RETRY_CAP: Duration = Duration::from_secs(6 * 3600);
/// First wait after a failed write of the operator's own (the record, a returned secret);
/// doubles per failure up to [`FAST_RETRY_CAP`].
pub const FAST_RETRY_BASE: Duration = Duration::from_secs(5);
/// Longest wait between such writes.
pub const FAST_RETRY_CAP: Duration = Duration::from_secs(5 * 60);

/// Condition reasons.
pub const REASON_SCHEDULED: &str = "RotationScheduled";
/// The last rotation is done and proven.
pub const REASON_ROTATED: &str = "SecretRotated";
/// A new secret is written; a token with it is awaited.
pub const REASON_PROVING: &str = "ProvingNewSecret";
/// The new secret could not be written yet (kept in memory, retried).
pub const REASON_WRITE_PENDING: &str = "RotatedSecretNotWritten";
/// A rotation was sent and no usable answer came back: PingOne may have rotated the secret.
pub const REASON_OUTCOME_UNKNOWN: &str = "RotationOutcomeUnknown";
/// The Secret got another secret during a rotation; the returned one is kept until a token
/// shows which works.
pub const REASON_AWAITING_PROOF: &str = "RotationAwaitingProof";
/// Another secret in the Secret works; the returned one is no longer needed.
pub const REASON_SUPERSEDED: &str = "RotationSuperseded";
/// The rotation could not be recorded on the credentials Secret; nothing was rotated.
pub const REASON_NOT_STARTED: &str = "RotationNotStarted";
/// Event: an unknown outcome was resolved with the recovery credentials.
pub const REASON_RECOVERED: &str = "RotationRecovered";
/// The token for the Management API could not be had.
pub const REASON_NO_TOKEN: &str = "ManagementTokenFailed";
/// Reason: the API server would deny the write of the rotated secret (the guard rails'
/// admission policy, for a credentials Secret without [`ROTATION_LABEL`]); nothing was rotated.
pub const REASON_WRITE_DENIED: &str = "RotationWriteDenied";
/// Label a credentials Secret carries when its client secret may be rotated: the guard rails'
/// admission policy (deploy/guard-rails) lets the operator write only such credentials Secrets.
pub const ROTATION_LABEL: &str = "pingone.tokenops.dev/rotation";
/// Value of [`ROTATION_LABEL`].
pub const ROTATION_LABEL_VALUE: &str = "enabled";

/// A failed rotation, retried at `retry_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct RotationFailure {
    /// Failures in a row.
    pub attempts: u32,
    /// When the next attempt is due.
    pub retry_at: Timestamp,
    /// Condition reason.
    pub reason: &'static str,
    /// Human message, never a secret.
    pub message: String,
}

/// When the next rotation is due: `every` after the last rotation, or after the credentials
/// Secret was created when the operator never rotated it.
pub fn due_at(
    rotated_at: Option<Timestamp>,
    secret_created: Option<Timestamp>,
    every: Duration,
) -> Option<Timestamp> {
    let base = rotated_at.or(secret_created)?;
    jiff::SignedDuration::try_from(every)
        .ok()
        .and_then(|d| base.checked_add(d).ok())
}

/// When to try again after the `attempts`-th failure in a row.
pub fn retry_at(now: Timestamp, attempts: u32, retry_after: Option<Duration>) -> Timestamp {
    let exp = attempts.saturating_sub(1).min(16);
    let backoff = RETRY_BASE
        .saturating_mul(1u32 << exp)
        .min(RETRY_CAP)
        .max(retry_after.unwrap_or_default().min(RETRY_CAP));
    now.checked_add(jiff::SignedDuration::try_from(backoff).unwrap_or_default())
        .unwrap_or(now)
}

/// Whether the credentials Secret carries [`ROTATION_LABEL`]`=`[`ROTATION_LABEL_VALUE`].
pub fn has_rotation_label(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ROTATION_LABEL))
        .is_some_and(|v| v == ROTATION_LABEL_VALUE)
}

fn annotation_time(secret: &Secret, key: &str) -> Option<Timestamp> {
    secret.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// The last rotation recorded on the credentials Secret.
pub fn rotated_at(secret: &Secret) -> Option<Timestamp> {
    annotation_time(secret, ROTATED_AT)
}

/// Until when the replaced secret works, as recorded on the credentials Secret.
pub fn previous_expires_at(secret: &Secret) -> Option<Timestamp> {
    annotation_time(secret, PREVIOUS_EXPIRES_AT)
}

/// A rotation failure recorded in status by an earlier process: the retry time is honoured.
pub fn failure_from_status(status: Option<&PingOneConnectionStatus>) -> Option<RotationFailure> {
    let status = status?;
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == super::status::CLIENT_SECRET_ROTATION && c.status == "False")?;
    let retry_at = status.next_credential_rotation_time.as_ref()?.0;
    Some(RotationFailure {
        attempts: 1,
        retry_at,
        reason: static_reason(&condition.reason),
        message: condition
            .message
            .split("; retrying at")
            .next()
            .unwrap_or_default()
            .to_owned(),
    })
}

fn static_reason(reason: &str) -> &'static str {
    const REASONS: &[&str] = &[
        "RotationNotPossible",
        "ManagementApiUnauthorized",
        "ManagementApiForbidden",
        "ApplicationNotFound",
        "ManagementApiRejected",
        "ManagementApiUnavailable",
        "ManagementApiError",
        REASON_WRITE_PENDING,
        REASON_WRITE_DENIED,
        REASON_NO_TOKEN,
        REASON_NOT_STARTED,
    ];
    REASONS
        .iter()
        .find(|r| **r == reason)
        .copied()
        .unwrap_or("RotationFailed")
}

fn fmt_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What status shows of rotation.
pub struct FactsInput<'a> {
    /// The credentials Secret as read.
    pub secret: Option<&'a Secret>,
    /// The token in the target Secret was obtained with the current credentials.
    pub token_current: bool,
    /// The failure in force, if any.
    pub failure: Option<&'a RotationFailure>,
    /// The rotation interval.
    pub every: Duration,
    /// The status before this reconcile.
    pub previous: Option<&'a PingOneConnectionStatus>,
}

/// The rotation part of status.
pub fn facts(input: &FactsInput<'_>) -> RotationFacts {
    let recorded = input.secret.and_then(rotated_at);
    let created = input
        .secret
        .and_then(|s| s.metadata.creation_timestamp.as_ref())
        .map(|t| t.0);
    // Reported as done only once a token was obtained with the new secret.
    let last = if input.token_current {
        recorded
    } else {
        input
            .previous
            .and_then(|s| s.last_credential_rotation_time.as_ref())
            .map(|t| t.0)
    };
    let due = due_at(recorded, created, input.every);
    let previous_expires_at = input.secret.and_then(previous_expires_at);
    if let Some(f) = input.failure {
        return RotationFacts {
            last,
            next: Some(f.retry_at),
            previous_expires_at,
            healthy: false,
            reason: f.reason,
            message: format!(
                "{}; retrying at {}; token issuance is not affected",
                f.message,
                fmt_time(f.retry_at)
            ),
        };
    }
    let next_text = due.map(fmt_time).unwrap_or_else(|| "unknown".into());
    let (reason, message) = match (recorded, input.token_current, last) {
        (Some(at), false, _) => (
            REASON_PROVING,
            format!(
                "The client secret was rotated at {}; waiting for a token obtained with it",
                fmt_time(at)
            ),
        ),
        (_, _, Some(at)) => (
            REASON_ROTATED,
            format!(
                "The client secret was rotated at {}{}; next rotation at {next_text}",
                fmt_time(at),
                previous_expires_at
                    .map(|p| format!(
                        "; PingOne accepts the previous secret until {}",
                        fmt_time(p)
                    ))
                    .unwrap_or_default()
            ),
        ),
        _ => (
            REASON_SCHEDULED,
            format!("The first rotation of the client secret is due at {next_text}"),
        ),
    };
    RotationFacts {
        last,
        next: due,
        previous_expires_at,
        healthy: true,
        reason,
        message,
    }
}

/// A rotation that happened: the Secret now holds the new secret.
pub struct Rotated {
    /// When.
    pub at: Timestamp,
    /// Until when the replaced secret works.
    pub previous_expires_at: Option<Timestamp>,
}

/// Why a rotation attempt failed (before the failure is counted).
pub struct AttemptError {
    reason: &'static str,
    message: String,
    retry_after: Option<Duration>,
    /// When to try again.
    retry: Retry,
}

/// How a rotation attempt is retried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// On the slow backoff (5 min doubling to 6 h): PingOne or a person must change something.
    Slow,
    /// Soon (5 s doubling to 5 min): a Kubernetes write of the operator's own failed.
    Fast,
    /// Exactly after `retry_after`, not counted: the environment's request budget has no slot
    /// yet.
    Throttled,
}

impl AttemptError {
    fn new(reason: &'static str, message: String) -> Self {
        AttemptError {
            reason,
            message,
            retry_after: None,
            retry: Retry::Slow,
        }
    }

    /// Counted: the failure with its retry time.
    pub fn record(self, previous: Option<&RotationFailure>, now: Timestamp) -> RotationFailure {
        let before = previous.map_or(0, |f| f.attempts);
        let (attempts, retry_at) = match self.retry {
            Retry::Throttled => (
                before,
                schedule::add(now, self.retry_after.unwrap_or_default()),
            ),
            Retry::Fast => {
                let attempts = before.saturating_add(1);
                let wait = FAST_RETRY_BASE
                    .saturating_mul(1 << attempts.saturating_sub(1).min(16))
                    .min(FAST_RETRY_CAP);
                (attempts, schedule::add(now, wait))
            }
            Retry::Slow => {
                let attempts = before.saturating_add(1);
                (attempts, retry_at(now, attempts, self.retry_after))
            }
        };
        RotationFailure {
            attempts,
            retry_at,
            reason: self.reason,
            message: self.message,
        }
    }
}

impl From<ManagementError> for AttemptError {
    fn from(e: ManagementError) -> Self {
        AttemptError {
            reason: e.reason(),
            retry_after: e.retry_after(),
            message: e.to_string(),
            retry: Retry::Slow,
        }
    }
}

/// What this process knows of a rotation of one credentials Secret.
enum InFlight {
    /// A reconcile is calling PingOne or writing its answer.
    Calling,
    /// PingOne returned this secret; it is not known to be in the Secret yet. `true`: a copy
    /// is in the hold (see [`hold`]).
    Pending(Box<Pending>, bool),
    /// PingOne said no to the rotation recorded by this intent annotation (its value), and the
    /// patch that removes the record failed.
    Void(String),
    /// Recovering an unknown outcome with the recovery credentials failed; not tried again
    /// before `retry_at`.
    RecoveryFailed(Box<RecoveryFailure>),
}

/// The last failed recovery of an unknown outcome.
#[derive(Clone)]
struct RecoveryFailure {
    attempts: u32,
    retry_at: Timestamp,
    /// Why, for the condition's message (never a secret).
    problem: String,
}

/// First wait after a failed recovery; doubles per failure up to [`RECOVERY_RETRY_CAP`].
const RECOVERY_RETRY_BASE: Duration = Duration::from_secs(60);
/// Longest wait between recovery attempts: well inside the shortest useful deadline.
const RECOVERY_RETRY_CAP: Duration = Duration::from_secs(15 * 60);

/// What this process knows of the rotations of credentials Secrets, keyed by (namespace,
/// name): a rotation belongs to the Secret, whichever connection started it, so that every
/// connection sharing the Secret sees it.
#[derive(Default)]
pub struct Registry(std::sync::Mutex<std::collections::HashMap<(String, String), InFlight>>);

impl Registry {
    /// Whether anything is known of the Secret `key`.
    fn knows(&self, key: &(String, String)) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    /// Marks the Secret `key` as being worked on and hands over what was known of it; `None`
    /// while another reconcile works on it.
    fn claim(&self, key: (String, String)) -> Option<Claim<'_>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let known = match map.insert(key.clone(), InFlight::Calling) {
            Some(InFlight::Calling) => return None,
            other => other,
        };
        drop(map);
        Some(Claim {
            registry: self,
            key,
            restore: known,
        })
    }
}

/// The mark of [`Registry::claim`]: when it goes (also when the reconcile is cancelled), what
/// `restore` holds is what the process knows of the Secret afterwards. Whoever learns something
/// sets it: a returned secret is never forgotten by a cancelled reconcile.
struct Claim<'a> {
    registry: &'a Registry,
    key: (String, String),
    restore: Option<InFlight>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut map = self.registry.0.lock().unwrap_or_else(|e| e.into_inner());
        match self.restore.take() {
            Some(known) => map.insert(self.key.clone(), known),
            None => map.remove(&self.key),
        };
    }
}

/// Everything one reconcile needs to move a rotation on.
pub struct Rotation<'a> {
    /// The operator's context.
    pub ctx: &'a Context,
    /// The connection.
    pub conn: &'a PingOneConnection,
    /// Secrets of its namespace.
    pub secrets: &'a Api<Secret>,
    /// The credentials Secret as read by this reconcile.
    pub secret: &'a Secret,
    /// The credentials read from it.
    pub creds: &'a Credentials,
}

/// What the connection's rotation settings say (`None`: it does not rotate).
#[derive(Clone, Copy)]
pub struct Schedule {
    /// The rotation interval.
    pub every: Duration,
    /// How long PingOne keeps accepting the previous secret.
    pub keep_previous_for: Duration,
}

/// What [`Rotation::advance`] takes besides the Secret.
pub struct AdvanceInput<'a> {
    /// The rotation settings; `None` when the spec has none (a rotation under way is still
    /// carried through).
    pub schedule: Option<Schedule>,
    /// What a token request with the Secret's secret showed in this reconcile.
    pub proof: Proof,
    /// The failed rotation in force, if any.
    pub failure: Option<RotationFailure>,
    /// The status before this reconcile.
    pub previous: Option<&'a PingOneConnectionStatus>,
    /// Now.
    pub now: Timestamp,
}

/// What a reconcile did about rotation.
pub struct Advanced {
    /// What status shows (`None`: the connection does not rotate and nothing is under way).
    pub facts: Option<RotationFacts>,
    /// A new secret was written: reconcile again at once to prove it.
    pub rotated: bool,
    /// The failed rotation in force afterwards.
    pub failure: Option<RotationFailure>,
}

/// Why no Management API token was had.
enum PlatformToken {
    /// The environment's request budget has no slot for this long.
    Throttled(Duration),
    /// The token request failed.
    Failed(crate::pingone::TokenError),
}

/// How a write of a returned secret ended.
enum WriteError {
    /// The Secret holds another secret than the replaced one: kept until a token decides.
    AwaitProof,
    /// The write failed; the secret is kept and written on the next attempt.
    Failed(AttemptError),
}

impl Rotation<'_> {
    fn name(&self) -> &str {
        &self.conn.spec.credentials_secret_ref.name
    }

    fn key(&self) -> &str {
        &self.conn.spec.credentials_secret_ref.client_secret_key
    }

    /// The raw client secret value `secret` holds.
    fn stored<'s>(&self, secret: &'s Secret) -> Option<&'s [u8]> {
        super::credentials::raw(secret, self.key())
    }

    /// Moves the rotation of the credentials Secret on by one step (see [`intent::decide`]):
    /// carries a rotation under way through, or starts one when it is due.
    pub async fn advance(&self, input: AdvanceInput<'_>) -> Advanced {
        let namespace = self.secret.metadata.namespace.clone().unwrap_or_default();
        let key = (namespace, self.name().to_owned());
        let on_secret = Intent::on(self.secret);
        // The common case, on every reconcile of a connection that does not rotate: nothing
        // under way, nothing to do. A refused secret looks for a held one first.
        if input.schedule.is_none()
            && on_secret.is_none()
            && input.proof != Proof::Refused
            && !self.ctx.rotations.knows(&key)
        {
            return Advanced {
                facts: None,
                rotated: false,
                failure: None,
            };
        }
        let Some(mut claim) = self.ctx.rotations.claim(key) else {
            // Another reconcile of a connection sharing the Secret is at it.
            return self.report(&input, None, false, input.failure.clone());
        };
        // A restarted process, or a new leader, knows nothing: a rotation under way (the
        // record), or a refused secret, may have left a returned secret in the hold.
        if matches!(claim.restore, None | Some(InFlight::RecoveryFailed(_)))
            && (on_secret.is_some() || input.proof == Proof::Refused)
        {
            let started_at = on_secret.as_ref().map(|i| i.as_ref().map(|i| i.started_at));
            if let Some(held) = self.load_hold(started_at).await {
                claim.restore = Some(InFlight::Pending(Box::new(held), true));
            }
        }
        let memory = match &claim.restore {
            // A claim hands over what was known before it; `Calling` is never handed over. A
            // failed recovery is about the record on the Secret, which decides.
            None | Some(InFlight::Calling) | Some(InFlight::RecoveryFailed(_)) => Memory::None,
            Some(InFlight::Pending(..)) => Memory::Pending,
            // Only the record PingOne said no to, not a newer one.
            Some(InFlight::Void(value)) => {
                let current = self
                    .secret
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(INTENT));
                if current == Some(value) {
                    Memory::Void
                } else {
                    claim.restore = None;
                    Memory::None
                }
            }
        };
        let holds = match (&claim.restore, self.stored(self.secret)) {
            (Some(InFlight::Pending(p, _)), Some(stored)) if intent::same(stored, &p.secret) => {
                Holds::New
            }
            (Some(InFlight::Pending(p, _)), Some(stored)) if intent::same(stored, &p.replaces) => {
                Holds::Replaced
            }
            _ => Holds::Other,
        };
        // A keyed fingerprint of the Secret's secret: what a record names.
        let current = self
            .creds
            .client_secret()
            .and_then(|_| self.stored(self.secret))
            .filter(|_| on_secret.is_some())
            .map(|stored| intent::fingerprint(&self.ctx.digest_key, stored));
        let step = intent::decide(Facts {
            intent: on_secret.as_ref().map(Option::as_ref),
            current: current.as_deref(),
            memory,
            holds,
            proof: input.proof,
        });
        let mut failure = input.failure.clone();
        match step {
            Step::Schedule => {
                let Some(schedule) = input.schedule else {
                    claim.restore = None;
                    return Advanced {
                        facts: None,
                        rotated: false,
                        failure: None,
                    };
                };
                let created = self
                    .secret
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0);
                let due = due_at(rotated_at(self.secret), created, schedule.every);
                let waiting = failure.as_ref().is_some_and(|f| f.retry_at > input.now);
                let proven = matches!(input.proof, Proof::Proven { .. });
                if !proven || waiting || due.is_none_or(|d| d > input.now) {
                    return self.report(&input, None, false, failure);
                }
                match self.run(&mut claim, schedule).await {
                    Ok(None) => self.report(&input, None, false, failure),
                    Ok(Some(done)) => self.rotated(&input, done),
                    // Kept until a token shows which secret works: not a failure.
                    Err(e) if e.reason == REASON_AWAITING_PROOF => {
                        let facts = match &claim.restore {
                            Some(InFlight::Pending(p, held)) => Some(self.awaiting_proof(p, *held)),
                            _ => None,
                        };
                        self.report(&input, facts, false, failure)
                    }
                    Err(e) => {
                        failure = Some(self.failed(e, failure.as_ref()).await);
                        // An unknown outcome is reported from the record on the Secret.
                        let unknown = failure
                            .as_ref()
                            .is_some_and(|f| f.reason == REASON_OUTCOME_UNKNOWN);
                        if unknown {
                            let deadline = schedule::add(input.now, schedule.keep_previous_for);
                            return self
                                .resolve_unknown(
                                    &mut claim,
                                    &input,
                                    Some(input.now),
                                    Some(deadline),
                                    false,
                                )
                                .await;
                        }
                        self.report(&input, None, false, failure)
                    }
                }
            }
            Step::WritePending | Step::Landed => {
                let Some(InFlight::Pending(pending, held)) = &claim.restore else {
                    unreachable!("a pending secret is remembered");
                };
                let (pending, held) = (pending.clone(), *held);
                let over_refused = holds == Holds::Other && input.proof == Proof::Refused;
                match self
                    .write(&pending, self.secret.clone(), over_refused, held)
                    .await
                {
                    Ok(done) => {
                        claim.restore = None;
                        if held {
                            self.empty_hold().await;
                        }
                        self.rotated(&input, done)
                    }
                    Err(WriteError::AwaitProof) => self.report(
                        &input,
                        Some(self.awaiting_proof(&pending, held)),
                        false,
                        failure,
                    ),
                    Err(WriteError::Failed(e)) => {
                        failure = Some(self.failed(e, failure.as_ref()).await);
                        self.report(&input, None, false, failure)
                    }
                }
            }
            Step::AwaitProof => {
                let facts = match &claim.restore {
                    Some(InFlight::Pending(p, held)) => Some(self.awaiting_proof(p, *held)),
                    _ => None,
                };
                self.report(&input, facts, false, failure)
            }
            Step::Superseded => {
                if let Some(InFlight::Pending(_, true)) = claim.restore.take() {
                    self.empty_hold().await;
                }
                let note = format!(
                    "Secret {} got another client secret during a rotation, and PingOne accepts it; the secret the rotation returned is no longer needed",
                    self.name()
                );
                info!("{note}");
                events::publish(
                    self.ctx,
                    self.conn,
                    EventType::Normal,
                    REASON_SUPERSEDED,
                    &note,
                )
                .await;
                if on_secret.is_some() {
                    self.clear_intent(&mut claim, self.secret).await;
                }
                self.report(&input, None, false, None)
            }
            Step::ClearIntent => {
                self.clear_intent(&mut claim, self.secret).await;
                self.report(&input, None, false, failure)
            }
            Step::Unknown {
                deadline,
                other_secret,
            } => {
                let started_at = on_secret.flatten().map(|i| i.started_at);
                self.resolve_unknown(&mut claim, &input, started_at, deadline, other_secret)
                    .await
            }
        }
    }

    /// An unknown outcome: resolved with the recovery credentials when the spec has them,
    /// else (or when that fails) reported with its deadline.
    async fn resolve_unknown(
        &self,
        claim: &mut Claim<'_>,
        input: &AdvanceInput<'_>,
        started_at: Option<Timestamp>,
        deadline: Option<Timestamp>,
        other_secret: bool,
    ) -> Advanced {
        let recovery = self
            .conn
            .spec
            .client_secret_rotation
            .as_ref()
            .and_then(|r| r.recovery_credentials_ref.as_ref());
        let mut unknown = self.unknown(deadline, other_secret);
        let failed = match claim.restore.take() {
            Some(InFlight::RecoveryFailed(f)) => Some(*f),
            _ => None,
        };
        let Some(recovery) = recovery else {
            return self.report(input, Some(unknown), false, None);
        };
        let failed = match failed {
            // Not yet: the last failure stands.
            Some(f) if f.retry_at > input.now => f,
            previous => match self
                .recover(claim, recovery, started_at.unwrap_or(input.now))
                .await
            {
                Ok(Some(done)) => return self.rotated(input, done),
                Ok(None) => return self.report(input, None, false, None),
                Err(problem) => {
                    warn!(detail = %problem, "recovery of an unknown rotation outcome failed");
                    let attempts = previous.map_or(0, |f| f.attempts).saturating_add(1);
                    let wait = RECOVERY_RETRY_BASE
                        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
                        .min(RECOVERY_RETRY_CAP);
                    RecoveryFailure {
                        attempts,
                        retry_at: schedule::add(Timestamp::now(), wait),
                        problem,
                    }
                }
            },
        };
        unknown.message = format!(
            "{} The recovery credentials did not resolve it: {}; next try at {}",
            unknown.message,
            failed.problem,
            fmt_time(failed.retry_at)
        );
        // Wake for the next try.
        unknown.next = Some(failed.retry_at);
        claim.restore = Some(InFlight::RecoveryFailed(Box::new(failed)));
        self.report(input, Some(unknown), false, None)
    }

    /// Reads the application's current secret with the recovery application's credentials
    /// and sets the credentials Secret right: `Ok(Some)` when PingOne's current secret was
    /// written (it is proven next), `Ok(None)` when the Secret holds it already (the record is
    /// removed). `Err` says why not, without any secret.
    async fn recover(
        &self,
        claim: &mut Claim<'_>,
        recovery: &crate::api::RecoveryCredentialsRef,
        rotated_at: Timestamp,
    ) -> Result<Option<Rotated>, String> {
        let spec = &self.conn.spec;
        let namespace = self.secret.metadata.namespace.clone().unwrap_or_default();
        let secret = self.secrets.get_opt(&recovery.name).await.map_err(|e| {
            format!(
                "Secret {} could not be read ({})",
                recovery.name,
                kube_detail(&e)
            )
        })?;
        let creds = super::credentials::read(
            secret.as_ref(),
            &recovery.as_credentials_ref(),
            &namespace,
            crate::api::TokenEndpointAuthMethod::ClientSecretPost,
            None,
        )
        .map_err(|e| e.to_string())?;
        let api_domain = self.api_domain().map_err(|e| e.message)?;
        let token = self.platform_token(&creds).await.map_err(|e| match e {
            PlatformToken::Throttled(wait) => format!(
                "the environment's token request budget is paused for {} s more",
                wait.as_secs()
            ),
            PlatformToken::Failed(e) => format!("no token for the recovery application: {e}"),
        })?;
        let read = self
            .ctx
            .tokens
            .read_client_secret(
                api_domain,
                &spec.environment_id,
                &self.creds.client_id,
                &token.access_token,
            )
            .await
            .map_err(|e| match e {
                ManagementError::Forbidden { .. } | ManagementError::Unauthorized { .. } => format!(
                    "PingOne refused the recovery application ({}): it needs a role that allows applications:read:secret on this application",
                    e.reason()
                ),
                e => e.to_string(),
            })?;
        let Some(stored) = self.stored(self.secret) else {
            return Err(format!("Secret {} has no client secret", self.name()));
        };
        if intent::same(stored, &read.secret) {
            // The Secret holds PingOne's current secret: nothing to write.
            self.clear_intent(claim, self.secret).await;
            return Ok(None);
        }
        let replaces =
            std::str::from_utf8(super::credentials::normalised(stored)).map_err(|_| {
                format!(
                    "Secret {} holds a client secret that is not UTF-8",
                    self.name()
                )
            })?;
        let pending = Pending {
            secret: read.secret,
            replaces: replaces.to_owned().into(),
            rotated_at,
            previous_expires_at: read.previous_expires_at,
        };
        claim.restore = Some(InFlight::Pending(Box::new(pending.clone()), false));
        match self
            .write(&pending, self.secret.clone(), false, false)
            .await
        {
            Ok(done) => {
                claim.restore = None;
                let note = format!(
                    "Read the application's current client secret with the recovery credentials (Secret {}) and wrote it into Secret {}",
                    recovery.name,
                    self.name()
                );
                info!("{note}");
                events::publish(
                    self.ctx,
                    self.conn,
                    EventType::Normal,
                    REASON_RECOVERED,
                    &note,
                )
                .await;
                Ok(Some(done))
            }
            Err(WriteError::AwaitProof) => Err(format!(
                "Secret {} got another client secret meanwhile",
                self.name()
            )),
            Err(WriteError::Failed(e)) => Err(e.message),
        }
    }

    /// A token without scopes (the Management API's audience) for `creds` in the connection's
    /// environment. It takes a slot of the environment's request budget like any token
    /// request, waiting for one in this worker only when it is within a second.
    async fn platform_token(&self, creds: &Credentials) -> Result<TokenResponse, PlatformToken> {
        let spec = &self.conn.spec;
        self.ctx
            .tokens
            .admit_within(
                &spec.auth_domain,
                &spec.environment_id,
                None,
                Duration::from_millis(2),
                Duration::from_secs(1),
                None,
            )
            .await
            .map_err(|slot| {
                PlatformToken::Throttled(
                    slot.saturating_duration_since(tokio::time::Instant::now()),
                )
            })?;
        let request = TokenRequest {
            auth_domain: &spec.auth_domain,
            environment_id: &spec.environment_id,
            client_id: &creds.client_id,
            auth: creds.auth(),
            scopes: &[],
        };
        self.ctx
            .tokens
            .request_admitted_timed(&request)
            .await
            .0
            .map_err(PlatformToken::Failed)
    }

    /// The Management API host: the spec's, or the one of a regional auth domain.
    fn api_domain(&self) -> Result<&'static str, AttemptError> {
        let spec = &self.conn.spec;
        spec.client_secret_rotation
            .as_ref()
            .and_then(|r| r.api_domain)
            .map(|d| d.as_str())
            .or_else(|| api_domain_of(&spec.auth_domain))
            .ok_or_else(|| {
                AttemptError::new(
                    "RotationNotPossible",
                    "spec.clientSecretRotation.apiDomain is needed with a custom auth domain"
                        .into(),
                )
            })
    }

    /// Counts a failure and says so.
    async fn failed(&self, e: AttemptError, previous: Option<&RotationFailure>) -> RotationFailure {
        let recorded = e.record(previous, Timestamp::now());
        warn!(reason = recorded.reason, detail = %recorded.message, "client secret rotation failed");
        events::publish(
            self.ctx,
            self.conn,
            EventType::Warning,
            recorded.reason,
            &recorded.message,
        )
        .await;
        let (namespace, name) = (
            self.conn.metadata.namespace.as_deref().unwrap_or_default(),
            self.conn.metadata.name.as_deref().unwrap_or_default(),
        );
        self.ctx
            .metrics
            .secret_rotation(namespace, name, recorded.reason);
        recorded
    }

    /// Status after a new secret was written: it is proven next.
    fn rotated(&self, input: &AdvanceInput<'_>, done: Rotated) -> Advanced {
        let (namespace, name) = (
            self.conn.metadata.namespace.as_deref().unwrap_or_default(),
            self.conn.metadata.name.as_deref().unwrap_or_default(),
        );
        self.ctx.metrics.secret_rotation(namespace, name, "success");
        Advanced {
            facts: Some(RotationFacts {
                last: input
                    .previous
                    .and_then(|s| s.last_credential_rotation_time.as_ref())
                    .map(|t| t.0),
                next: input
                    .schedule
                    .and_then(|s| due_at(Some(done.at), None, s.every)),
                previous_expires_at: done.previous_expires_at,
                healthy: true,
                reason: REASON_PROVING,
                message: format!(
                    "The client secret was rotated at {}; waiting for a token obtained with it",
                    fmt_time(done.at)
                ),
            }),
            rotated: true,
            failure: None,
        }
    }

    /// The status facts: `special` when a rotation under way says more than the schedule.
    fn report(
        &self,
        input: &AdvanceInput<'_>,
        special: Option<RotationFacts>,
        rotated: bool,
        failure: Option<RotationFailure>,
    ) -> Advanced {
        let facts = special.or_else(|| {
            input.schedule.map(|s| {
                facts(&FactsInput {
                    secret: Some(self.secret),
                    token_current: matches!(input.proof, Proof::Proven { .. }),
                    failure: failure.as_ref(),
                    every: s.every,
                    previous: input.previous,
                })
            })
        });
        Advanced {
            facts,
            rotated,
            failure,
        }
    }

    fn awaiting_proof(&self, pending: &Pending, held: bool) -> RotationFacts {
        RotationFacts {
            last: None,
            next: None,
            previous_expires_at: pending.previous_expires_at,
            healthy: false,
            reason: REASON_AWAITING_PROOF,
            message: format!(
                "Secret {} got another client secret while the operator rotated it. The operator keeps the secret PingOne returned ({}), and writes it if PingOne refuses the other one; it discards it once a token is obtained with the other one",
                self.name(),
                self.kept_where(held)
            ),
        }
    }

    fn unknown(&self, deadline: Option<Timestamp>, other_secret: bool) -> RotationFacts {
        let name = self.name();
        let by = match deadline {
            Some(d) => format!("before {}", fmt_time(d)),
            None => "as soon as possible (the record's deadline cannot be read)".to_string(),
        };
        let held = if other_secret {
            "Secret {name} now holds another client secret, which no token has proven yet"
                .replace("{name}", name)
        } else {
            format!(
                "Secret {name} still holds the secret the rotation replaces, which PingOne accepts only until the deadline if the rotation happened"
            )
        };
        RotationFacts {
            last: None,
            next: None,
            previous_expires_at: deadline,
            healthy: false,
            reason: REASON_OUTCOME_UNKNOWN,
            message: format!(
                "A rotation of the client secret was sent to PingOne and no usable answer came back, so the operator does not know whether PingOne rotated it; it starts no other rotation until this is resolved. {held}. {by}: read the application's current client secret in the PingOne admin console (Applications, the worker application, Configuration) and put it in Secret {name} under key {key}, or generate a new one there and put that in. If you know nothing was rotated, remove the annotation {INTENT} from Secret {name}. Once the deadline has passed, a token obtained with the secret the Secret holds resolves this by itself",
                key = self.key()
            ),
        }
    }

    /// Starts a rotation: records the intent, gets a Management API token, asks PingOne for a
    /// new secret and writes it. `Ok(None)`: the Secret changed since this reconcile read it
    /// (another writer, another leader); nothing was done.
    async fn run(
        &self,
        claim: &mut Claim<'_>,
        schedule: Schedule,
    ) -> Result<Option<Rotated>, AttemptError> {
        let spec = &self.conn.spec;
        let name = self.name();
        let (Some(old), Some(stored)) = (self.creds.client_secret(), self.stored(self.secret))
        else {
            return Err(AttemptError::new(
                "RotationNotPossible",
                "a private_key_jwt application has no client secret to rotate".into(),
            ));
        };
        let api_domain = self.api_domain()?;
        if !has_rotation_label(self.secret) {
            self.warn_unlabelled().await;
        }
        // A token without scopes (the Management API's audience), which also proves the
        // current secret; a paused environment (a 429) makes the rotation come back later.
        let token = match self.platform_token(self.creds).await {
            Ok(token) => token,
            Err(PlatformToken::Throttled(wait)) => {
                return Err(AttemptError {
                    reason: REASON_NO_TOKEN,
                    message: "the environment's token request budget is paused (PingOne answered 429); the Management API token is asked for when it has a slot".into(),
                    retry_after: Some(wait),
                    retry: Retry::Throttled,
                });
            }
            Err(PlatformToken::Failed(e)) => {
                return Err(AttemptError {
                    reason: REASON_NO_TOKEN,
                    message: format!("could not get a token for the Management API: {e}"),
                    retry_after: e.retry_after(),
                    retry: Retry::Slow,
                });
            }
        };
        let now = Timestamp::now();
        let keep_until = schedule::add(now, schedule.keep_previous_for);
        let intent = Intent {
            started_at: Timestamp::from_second(now.as_second()).unwrap_or(now),
            deadline: keep_until,
            replaces: intent::fingerprint(&self.ctx.digest_key, stored),
        };
        // The record, conditional on the version this decision was made on: of two leaders,
        // replicas or connections sharing the Secret, one gets past it.
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": self.secret.metadata.resource_version,
                "annotations": { INTENT: intent.to_annotation() }
            }
        });
        let recorded = match self
            .secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(recorded) => recorded,
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(None),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(AttemptError::new(
                    REASON_WRITE_DENIED,
                    format!(
                        "the API server denied the operator a write of Secret {name}: {}; label the Secret {ROTATION_LABEL}={ROTATION_LABEL_VALUE}. Nothing was rotated",
                        s.message
                    ),
                ));
            }
            Err(e) => {
                return Err(AttemptError {
                    reason: REASON_NOT_STARTED,
                    message: format!(
                        "the rotation could not be recorded on Secret {name} ({}); nothing was rotated",
                        kube_detail(&e)
                    ),
                    retry_after: None,
                    retry: Retry::Fast,
                });
            }
        };
        let answer = self
            .ctx
            .tokens
            .rotate_client_secret(
                api_domain,
                &spec.environment_id,
                &self.creds.client_id,
                &token.access_token,
                keep_until,
            )
            .await;
        let rotated = match answer {
            Ok(rotated) => rotated,
            // The record stays: the next reconcile reports what is unknown, and until when.
            Err(e) if e.outcome_unknown() => {
                claim.restore = None;
                return Err(AttemptError::from(e));
            }
            Err(e) => {
                self.clear_intent(claim, &recorded).await;
                return Err(AttemptError::from(e));
            }
        };
        let pending = Pending {
            secret: rotated.secret,
            replaces: old.clone(),
            rotated_at: intent.started_at,
            previous_expires_at: rotated.previous_expires_at.or(Some(keep_until)),
        };
        info!(previous_expires_at = ?pending.previous_expires_at, "client secret rotated at PingOne");
        // Kept from this moment on, whatever happens to this reconcile, and kept in the hold
        // whatever happens to this process.
        claim.restore = Some(InFlight::Pending(Box::new(pending.clone()), false));
        let held = self.hold(&pending).await;
        claim.restore = Some(InFlight::Pending(Box::new(pending.clone()), held));
        match self.write(&pending, recorded, false, held).await {
            Ok(done) => {
                claim.restore = None;
                if held {
                    self.empty_hold().await;
                }
                Ok(Some(done))
            }
            Err(WriteError::AwaitProof) => Err(AttemptError::new(
                REASON_AWAITING_PROOF,
                format!(
                    "Secret {name} got another client secret while the operator rotated it; the secret PingOne returned is kept until a token shows which one works"
                ),
            )),
            Err(WriteError::Failed(e)) => Err(e),
        }
    }

    /// Warns that a credentials Secret without [`ROTATION_LABEL`] is about to be written: the
    /// guard rails' admission policy denies that (the record's write then fails, before PingOne
    /// is asked for anything).
    async fn warn_unlabelled(&self) {
        let name = self.name();
        warn!(
            secret = %name,
            "the credentials Secret of a connection with clientSecretRotation lacks the label {ROTATION_LABEL}={ROTATION_LABEL_VALUE}; the guard rails admission policy denies writing a rotated secret into it"
        );
        events::publish(
            self.ctx,
            self.conn,
            EventType::Warning,
            "RotationLabelMissing",
            &format!(
                "Secret {name} lacks the label {ROTATION_LABEL}={ROTATION_LABEL_VALUE}; with the guard rails admission policy installed the operator may not write a rotated secret into it"
            ),
        )
        .await;
    }

    /// Removes the intent recorded on `secret` (PingOne said no, or the outcome is known now),
    /// conditional on its version; what cannot be removed now is remembered as void.
    async fn clear_intent(&self, claim: &mut Claim<'_>, secret: &Secret) {
        let Some(value) = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INTENT))
            .cloned()
        else {
            claim.restore = None;
            return;
        };
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": secret.metadata.resource_version,
                "annotations": { INTENT: null }
            }
        });
        claim.restore = match self
            .secrets
            .patch(self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => None,
            // Changed meanwhile: the next reconcile looks at the new version.
            Err(_) => Some(InFlight::Void(value)),
        };
    }

    /// Writes a returned secret into the credentials Secret (`current`, as last read), with the
    /// rotation time and without the intent, in one patch conditional on its version. Looks
    /// again after a conflict or a lost answer: a Secret that holds the new secret already is a
    /// success; one that holds a third secret is left alone.
    async fn write(
        &self,
        pending: &Pending,
        mut current: Secret,
        over_refused: bool,
        held: bool,
    ) -> Result<Rotated, WriteError> {
        let name = self.name();
        let kept = self.kept_where(held);
        let key = self.key();
        let done = Rotated {
            at: pending.rotated_at,
            previous_expires_at: pending.previous_expires_at,
        };
        // The version whose (third) secret PingOne refused in this reconcile: written over as
        // long as it is unchanged.
        let refused = over_refused
            .then(|| current.metadata.resource_version.clone())
            .flatten();
        for _ in 0..3 {
            let writable = refused.is_some() && current.metadata.resource_version == refused;
            let holds_new = match self.stored(&current) {
                Some(stored) if intent::same(stored, &pending.secret) => true,
                Some(stored) if intent::same(stored, &pending.replaces) => false,
                _ if writable => false,
                _ => {
                    warn!(
                        "the credentials Secret got another client secret during a rotation; the returned secret is kept until a token shows which one works"
                    );
                    return Err(WriteError::AwaitProof);
                }
            };
            // The new secret is there (the answer to an earlier write was lost, or a person
            // put it in): done once the rotation time is recorded and the intent gone.
            let annotations = current.metadata.annotations.as_ref();
            let recorded = annotations.and_then(|a| a.get(ROTATED_AT))
                == Some(&fmt_time(pending.rotated_at))
                && annotations.is_none_or(|a| !a.contains_key(INTENT));
            if holds_new && recorded {
                return Ok(done);
            }
            let mut patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": current.metadata.resource_version,
                    "annotations": {
                        ROTATED_AT: fmt_time(pending.rotated_at),
                        PREVIOUS_EXPIRES_AT: pending.previous_expires_at.map(fmt_time),
                        INTENT: null,
                    }
                },
            });
            if !holds_new {
                patch["data"] = serde_json::json!({
                    key: base64::engine::general_purpose::STANDARD
                        .encode(pending.secret.expose_secret()),
                });
            }
            let written = self
                .secrets
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            let error = match written {
                Ok(_) => {
                    self.written(name, pending).await;
                    return Ok(done);
                }
                Err(e) => e,
            };
            // A conflict, or an answer lost on the way back: look at what the Secret holds.
            match self.secrets.get_opt(name).await {
                Ok(Some(fresh)) => current = fresh,
                _ => return Err(not_written(name, &kube_detail(&error), &kept)),
            }
            if !matches!(&error, kube::Error::Api(s) if s.code == 409)
                && !self
                    .stored(&current)
                    .is_some_and(|s| intent::same(s, &pending.secret))
            {
                return Err(not_written(name, &kube_detail(&error), &kept));
            }
        }
        Err(not_written(name, "it kept changing", &kept))
    }

    /// Where a returned secret is kept, for a message.
    fn kept_where(&self, held: bool) -> String {
        if held {
            format!(
                "a copy is in Secret {}, key {}",
                hold::name(self.name()),
                hold::NEW_KEY
            )
        } else {
            "in the operator's memory only: the hold could not be written".into()
        }
    }

    /// Puts a returned secret into the hold; `false` (and a warning) when that failed: the
    /// secret is then kept in memory only.
    async fn hold(&self, pending: &Pending) -> bool {
        let namespace = self.secret.metadata.namespace.clone().unwrap_or_default();
        let name = hold::name(self.name());
        let Some(owner) = kube::Resource::controller_owner_ref(self.conn, &()) else {
            return false;
        };
        let problem = match self.secrets.get_opt(&name).await {
            Ok(Some(s)) if !hold::is_hold(&s) => {
                format!("Secret {name} exists and is not the operator's")
            }
            Ok(_) => {
                let desired = hold::build(&namespace, self.name(), owner, pending);
                let params = PatchParams::apply(super::FIELD_MANAGER).force();
                match self
                    .secrets
                    .patch(&name, &params, &Patch::Apply(&desired))
                    .await
                {
                    Ok(_) => {
                        self.ctx.metrics.write("rotation-hold");
                        return true;
                    }
                    Err(e) => format!("Secret {name} could not be written ({})", kube_detail(&e)),
                }
            }
            Err(e) => format!("Secret {name} could not be read ({})", kube_detail(&e)),
        };
        warn!(detail = %problem, "the returned client secret could not be put into the hold; it is kept in memory");
        false
    }

    /// Empties the hold: the secret it keeps is in the credentials Secret, or another secret
    /// there is proven. A failure leaves it behind, recognised as old by its rotation time.
    async fn empty_hold(&self) {
        let name = hold::name(self.name());
        match self
            .secrets
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&hold::empty_patch()),
            )
            .await
        {
            Ok(_) => self.ctx.metrics.write("rotation-hold"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                warn!(secret = %name, detail = %kube_detail(&e), "the hold of a rotated client secret could not be emptied");
            }
        }
    }

    /// The secret the hold keeps for a rotation that started at `started_at` (`Some(None)`:
    /// an unreadable record), or, without a record, one rotated after the last rotation
    /// recorded on the Secret. `None` when there is none, or it cannot be read now.
    async fn load_hold(&self, started_at: Option<Option<Timestamp>>) -> Option<Pending> {
        let name = hold::name(self.name());
        let secret = match self.secrets.get_opt(&name).await {
            Ok(s) => s?,
            Err(e) => {
                warn!(secret = %name, detail = %kube_detail(&e), "the hold of a rotated client secret could not be read");
                return None;
            }
        };
        let held = hold::read(&secret, self.name())?;
        let fits = match started_at {
            Some(Some(at)) => held.rotated_at == at,
            Some(None) | None => hold::is_newer(&held, rotated_at(self.secret)),
        };
        if fits {
            info!(secret = %name, "found a rotated client secret in the hold");
        }
        fits.then_some(held)
    }

    /// Says that a returned secret is in the Secret.
    async fn written(&self, name: &str, pending: &Pending) {
        let note = format!(
            "Rotated the client secret in Secret {name}{}",
            pending
                .previous_expires_at
                .map(|p| format!(
                    "; PingOne accepts the previous secret until {}",
                    fmt_time(p)
                ))
                .unwrap_or_default()
        );
        events::publish(
            self.ctx,
            self.conn,
            EventType::Normal,
            "ClientSecretRotated",
            &note,
        )
        .await;
        self.ctx.metrics.write("credentials");
    }
}

/// A returned secret that could not be written: kept (`kept` says where), and written again
/// 5 s later (doubling).
fn not_written(name: &str, detail: &str, kept: &str) -> WriteError {
    WriteError::Failed(AttemptError {
        reason: REASON_WRITE_PENDING,
        message: format!(
            "the rotated client secret could not be written to Secret {name} ({detail}); it is kept ({kept}) and written on the next attempt"
        ),
        retry_after: None,
        retry: Retry::Fast,
    })
}

/// A Kubernetes error for a message: the status code and reason, never a body.
fn kube_detail(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.reason),
        _ => "no answer from the API server".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn due_counts_from_the_last_rotation_or_the_secrets_creation() {
        let every = Duration::from_secs(720 * 3600);
        assert_eq!(
            due_at(
                Some(ts("2026-11-01T00:00:00Z")),
                Some(ts("2020-01-01T00:00:00Z")),
                every
            ),
            Some(ts("2026-12-01T00:00:00Z"))
        );
        assert_eq!(
            due_at(None, Some(ts("2026-11-15T12:00:00Z")), every),
            Some(ts("2026-12-15T12:00:00Z"))
        );
        assert_eq!(due_at(None, None, every), None);
    }

    #[test]
    fn failed_rotations_back_off_from_minutes_to_hours_never_in_a_loop() {
        let now = ts("2026-12-01T00:00:00Z");
        // 5 min, 10, 20, 40, 80, 160, 320, then capped at 6 h.
        let expected = [300, 600, 1200, 2400, 4800, 9600, 19200, 21600, 21600];
        for (i, secs) in expected.iter().enumerate() {
            let at = retry_at(now, i as u32 + 1, None);
            assert_eq!((at - now).get_seconds(), *secs, "attempt {}", i + 1);
        }
        // Retry-After longer than the backoff wins; it is capped too.
        assert_eq!(
            (retry_at(now, 1, Some(Duration::from_secs(900))) - now).get_seconds(),
            900
        );
        assert_eq!(
            (retry_at(now, 1, Some(Duration::from_secs(86400 * 9))) - now).get_seconds(),
            21600
        );
    }

    /// A failed write of the operator's own is retried in seconds, not on the slow backoff;
    /// a wait for the environment's request budget is not a failure at all.
    #[test]
    fn own_writes_retry_fast_and_a_throttled_attempt_is_not_counted() {
        let now = ts("2026-12-01T00:00:00Z");
        let fast = |previous: Option<&RotationFailure>| {
            AttemptError {
                reason: REASON_WRITE_PENDING,
                message: String::new(),
                retry_after: None,
                retry: Retry::Fast,
            }
            .record(previous, now)
        };
        let mut previous = None;
        for secs in [5, 10, 20, 40, 80, 160, 300, 300] {
            let f = fast(previous.as_ref());
            assert_eq!((f.retry_at - now).get_seconds(), secs);
            previous = Some(f);
        }
        let throttled = AttemptError {
            reason: REASON_NO_TOKEN,
            message: String::new(),
            retry_after: Some(Duration::from_secs(42)),
            retry: Retry::Throttled,
        }
        .record(previous.as_ref(), now);
        assert_eq!((throttled.retry_at - now).get_seconds(), 42);
        assert_eq!(throttled.attempts, previous.unwrap().attempts);
    }

    #[test]
    fn status_reports_a_rotation_only_once_a_token_proved_it() {
        let mut secret = Secret::default();
        secret.metadata.creation_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts("2026-11-01T00:00:00Z")),
        );
        let every = Duration::from_secs(24 * 3600);
        let f = facts(&FactsInput {
            secret: Some(&secret),
            token_current: true,
            failure: None,
            every,
            previous: None,
        });
        assert_eq!(f.reason, REASON_SCHEDULED);
        assert_eq!(f.next, Some(ts("2026-11-02T00:00:00Z")));
        assert_eq!(f.last, None);

        secret.metadata.annotations = Some(
            [
                (ROTATED_AT.to_string(), "2026-11-20T10:00:00Z".to_string()),
                (
                    PREVIOUS_EXPIRES_AT.to_string(),
                    "2026-11-21T10:00:00Z".to_string(),
                ),
            ]
            .into(),
        );
        let proving = facts(&FactsInput {
            secret: Some(&secret),
            token_current: false,
            failure: None,
            every,
            previous: None,
        });
        assert_eq!(proving.reason, REASON_PROVING);
        assert_eq!(proving.last, None, "not reported before the proof");
        let done = facts(&FactsInput {
            secret: Some(&secret),
            token_current: true,
            failure: None,
            every,
            previous: None,
        });
        assert_eq!(done.reason, REASON_ROTATED);
        assert_eq!(done.last, Some(ts("2026-11-20T10:00:00Z")));
        assert_eq!(done.next, Some(ts("2026-11-21T10:00:00Z")));
        assert_eq!(done.previous_expires_at, Some(ts("2026-11-21T10:00:00Z")));

        let failure = RotationFailure {
            attempts: 2,
            retry_at: ts("2026-11-22T00:10:00Z"),
            reason: "ManagementApiForbidden",
            message: "refused".into(),
        };
        let failed = facts(&FactsInput {
            secret: Some(&secret),
            token_current: true,
            failure: Some(&failure),
            every,
            previous: None,
        });
        assert!(!failed.healthy);
        assert_eq!(failed.next, Some(failure.retry_at));
        assert!(failed.message.contains("token issuance is not affected"));
    }
}
