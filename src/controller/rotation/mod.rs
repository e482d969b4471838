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
//! No step loses access. Killed before step 2: nothing changed. Killed after PingOne answered
//! but before step 3: the Secret still holds the old secret, which PingOne accepts as the
//! previous one until `keepPreviousFor` runs out, and the rotation is still due, so the
//! restarted operator rotates at once (making the lost secret the previous one). Killed after
//! step 3: the Secret holds the new secret and the restarted operator proves it. A failed write
//! keeps the new secret in memory and writes it on the next reconcile.

use std::time::Duration;

use base64::Engine;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use tracing::{info, warn};

use super::Context;
use super::credentials::Credentials;
use super::events::{self, EventType};
use super::status::RotationFacts;
use crate::api::{PingOneConnection, PingOneConnectionStatus};
use crate::pingone::{ExposeSecret, ManagementError, SecretString, TokenRequest, api_domain_of};

/// Annotation on the credentials Secret: when its secret was last rotated by the operator.
pub const ROTATED_AT: &str = "pingone.tokenops.dev/client-secret-rotated-at";
/// Annotation on the credentials Secret: until when PingOne accepts the replaced secret.
pub const PREVIOUS_EXPIRES_AT: &str = "pingone.tokenops.dev/previous-client-secret-expires-at";

/// First wait after a failed rotation; doubles per failure up to [`RETRY_CAP`]. Failures that
/// need a person (a missing role) are not retried in a loop: minutes, then hours.
pub const RETRY_BASE: Duration = Duration::from_secs(5 * 60);
/// Longest wait between rotation attempts after failures.
pub const RETRY_CAP: Duration = Duration::from_secs(6 * 3600);

/// Condition reasons.
pub const REASON_SCHEDULED: &str = "RotationScheduled";
/// The last rotation is done and proven.
pub const REASON_ROTATED: &str = "SecretRotated";
/// A new secret is written; a token with it is awaited.
pub const REASON_PROVING: &str = "ProvingNewSecret";
/// The new secret could not be written yet (kept in memory, retried).
pub const REASON_WRITE_PENDING: &str = "RotatedSecretNotWritten";
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

/// A new secret PingOne returned whose write into the credentials Secret failed.
pub struct PendingWrite {
    /// The new secret.
    pub secret: SecretString,
    /// The secret it replaces: written only while the Secret still holds this one.
    pub replaces: SecretString,
    /// When it was rotated.
    pub rotated_at: Timestamp,
    /// Until when the replaced secret works.
    pub previous_expires_at: Option<Timestamp>,
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
}

impl AttemptError {
    /// Counted: the failure with its retry time.
    pub fn record(self, previous: Option<&RotationFailure>, now: Timestamp) -> RotationFailure {
        let attempts = previous.map_or(0, |f| f.attempts).saturating_add(1);
        RotationFailure {
            attempts,
            retry_at: retry_at(now, attempts, self.retry_after),
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
        }
    }
}

/// Everything one rotation needs.
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
    /// How long PingOne keeps accepting the previous secret.
    pub keep_previous_for: Duration,
}

/// Marks a credentials Secret as being rotated for as long as it lives.
struct Rotating<'a> {
    ctx: &'a Context,
    key: (String, String),
}

impl Drop for Rotating<'_> {
    fn drop(&mut self) {
        self.ctx
            .rotating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl Rotation<'_> {
    /// Rotates now, unless another connection sharing the credentials Secret is rotating it or
    /// just did (`Ok(None)`): token, Management API call, conditional write. On a failed write
    /// the new secret is returned in the error's pending write, to be kept and written later.
    pub async fn run(&self) -> Result<Option<Rotated>, (AttemptError, Option<PendingWrite>)> {
        let name = &self.conn.spec.credentials_secret_ref.name;
        let key = (
            self.secret.metadata.namespace.clone().unwrap_or_default(),
            name.clone(),
        );
        if !self
            .ctx
            .rotating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
        {
            return Ok(None);
        }
        let _rotating = Rotating { ctx: self.ctx, key };
        // Two rotations of one secret would leave one of the new secrets unwritten and the
        // other dead once the previous one expires: look again, under the mark, whether the
        // Secret is still the one this decision was made on.
        match self.secrets.get_opt(name).await {
            Ok(Some(fresh))
                if fresh.metadata.resource_version == self.secret.metadata.resource_version => {}
            Ok(_) => return Ok(None),
            Err(_) => {
                return Err((
                    AttemptError {
                        reason: REASON_WRITE_PENDING,
                        message: format!("could not read Secret {name} before rotating its secret"),
                        retry_after: Some(Duration::from_secs(5)),
                    },
                    None,
                ));
            }
        }
        if !has_rotation_label(self.secret) {
            self.check_writable(name).await?;
        }
        self.rotate().await.map(Some)
    }

    /// For a credentials Secret without [`ROTATION_LABEL`]: warns, and asks the API server with
    /// a dry run whether the rotated secret could be written at all. A denial (the guard rails'
    /// admission policy) stops the rotation before PingOne is asked for a secret that could not
    /// be stored.
    async fn check_writable(&self, name: &str) -> Result<(), (AttemptError, Option<PendingWrite>)> {
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
        let probe = serde_json::json!({
            "metadata": {"resourceVersion": self.secret.metadata.resource_version}
        });
        let params = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };
        match self
            .secrets
            .patch(name, &params, &Patch::Merge(&probe))
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 403 => Err((
                AttemptError {
                    reason: REASON_WRITE_DENIED,
                    message: format!(
                        "the API server would deny writing a rotated secret into Secret {name}: {}; label the Secret {ROTATION_LABEL}={ROTATION_LABEL_VALUE}. Nothing was rotated",
                        status.message
                    ),
                    retry_after: None,
                },
                None,
            )),
            // Anything else is for the real write to meet.
            _ => Ok(()),
        }
    }

    async fn rotate(&self) -> Result<Rotated, (AttemptError, Option<PendingWrite>)> {
        let spec = &self.conn.spec;
        let Some(old) = self.creds.client_secret() else {
            return Err((
                AttemptError {
                    reason: "RotationNotPossible",
                    message: "a private_key_jwt application has no client secret to rotate".into(),
                    retry_after: None,
                },
                None,
            ));
        };
        let api_domain = match spec
            .client_secret_rotation
            .as_ref()
            .and_then(|r| r.api_domain)
            .map(|d| d.as_str())
            .or_else(|| api_domain_of(&spec.auth_domain))
        {
            Some(domain) => domain,
            None => {
                return Err((
                    AttemptError {
                        reason: "RotationNotPossible",
                        message: "spec.clientSecretRotation.apiDomain is needed with a custom auth domain".into(),
                        retry_after: None,
                    },
                    None,
                ));
            }
        };
        // A token without scopes: the Management API's audience.
        let request = TokenRequest {
            auth_domain: &spec.auth_domain,
            environment_id: &spec.environment_id,
            client_id: &self.creds.client_id,
            auth: self.creds.auth(),
            scopes: &[],
        };
        let token = self.ctx.tokens.request_token(&request).await.map_err(|e| {
            (
                AttemptError {
                    reason: REASON_NO_TOKEN,
                    message: format!("could not get a token for the Management API: {e}"),
                    retry_after: e.retry_after(),
                },
                None,
            )
        })?;
        let now = Timestamp::now();
        let keep_until = now
            .checked_add(jiff::SignedDuration::try_from(self.keep_previous_for).unwrap_or_default())
            .unwrap_or(now);
        let rotated = self
            .ctx
            .tokens
            .rotate_client_secret(
                api_domain,
                &spec.environment_id,
                &self.creds.client_id,
                &token.access_token,
                keep_until,
            )
            .await
            .map_err(|e| (AttemptError::from(e), None))?;
        let pending = PendingWrite {
            secret: rotated.secret,
            replaces: old.clone(),
            rotated_at: Timestamp::from_second(now.as_second()).unwrap_or(now),
            previous_expires_at: rotated.previous_expires_at,
        };
        info!(previous_expires_at = ?pending.previous_expires_at, "client secret rotated at PingOne");
        self.write(pending).await
    }

    /// Writes a rotated secret into the credentials Secret, conditional on its resourceVersion;
    /// on a conflict, looks again and retries while the Secret still holds the replaced secret.
    pub async fn write(
        &self,
        pending: PendingWrite,
    ) -> Result<Rotated, (AttemptError, Option<PendingWrite>)> {
        let name = &self.conn.spec.credentials_secret_ref.name;
        let key = &self.conn.spec.credentials_secret_ref.client_secret_key;
        let mut current = self.secret.clone();
        for _ in 0..3 {
            if !holds(&current, key, &pending.replaces) {
                // Someone put another secret in since: theirs wins, the rotated one is dropped
                // (PingOne keeps the replaced one only for a while: a person is changing it).
                warn!(
                    "the credentials Secret changed during a rotation; the rotated secret is not written"
                );
                return Err((
                    AttemptError {
                        reason: "RotationSuperseded",
                        message: format!(
                            "Secret {name} got another client secret while the operator rotated it; the rotated secret was discarded, and PingOne accepts the secret it replaced only until {}",
                            pending
                                .previous_expires_at
                                .map(fmt_time)
                                .unwrap_or_else(|| "now".into())
                        ),
                        retry_after: None,
                    },
                    None,
                ));
            }
            let patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": current.metadata.resource_version,
                    "annotations": {
                        ROTATED_AT: fmt_time(pending.rotated_at),
                        PREVIOUS_EXPIRES_AT: pending.previous_expires_at.map(fmt_time),
                    }
                },
                "data": {
                    key.as_str(): base64::engine::general_purpose::STANDARD
                        .encode(pending.secret.expose_secret()),
                }
            });
            match self
                .secrets
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
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
                    return Ok(Rotated {
                        at: pending.rotated_at,
                        previous_expires_at: pending.previous_expires_at,
                    });
                }
                Err(kube::Error::Api(s)) if s.code == 409 => match self.secrets.get_opt(name).await
                {
                    Ok(Some(fresh)) => current = fresh,
                    _ => break,
                },
                Err(e) => {
                    let message = match &e {
                        kube::Error::Api(s) => format!(
                            "the rotated client secret could not be written to Secret {name} ({} {}); it is kept and written on the next attempt",
                            s.code, s.reason
                        ),
                        _ => format!(
                            "the rotated client secret could not be written to Secret {name}; it is kept and written on the next attempt"
                        ),
                    };
                    return Err((
                        AttemptError {
                            reason: REASON_WRITE_PENDING,
                            message,
                            retry_after: Some(Duration::from_secs(5)),
                        },
                        Some(pending),
                    ));
                }
            }
        }
        Err((
            AttemptError {
                reason: REASON_WRITE_PENDING,
                message: format!(
                    "the rotated client secret could not be written to Secret {name} (it kept changing); it is kept and written on the next attempt"
                ),
                retry_after: Some(Duration::from_secs(5)),
            },
            Some(pending),
        ))
    }
}

/// Whether `secret` holds `value` under `key` (constant time).
fn holds(secret: &Secret, key: &str, value: &SecretString) -> bool {
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) else {
        return false;
    };
    let stored = bytes.0.as_slice();
    let stored = stored.strip_suffix(b"\n").unwrap_or(stored);
    let want = value.expose_secret().as_bytes();
    stored.len() == want.len()
        && stored
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
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
