//! One reconcile of one connection: the I/O shell around the pure decisions.
//!
//! It gathers the facts (the connection, its credentials and token Secrets, what the operator
//! remembers of it), asks [`plan`] what to do and [`policy`] when to retry, does it, and reports
//! the [`Outcome`] in status, Events and metrics. Kubernetes API failures are outcomes too: they
//! get their own backoff and show in status when status can be written.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{Span, debug, field, info, instrument, warn};

use super::credentials::{self, Credentials};
use super::events::{self, EventType};
use super::layout::Layout;
use super::own_writes::{OwnWrite, WrittenStatus};
use super::plan::{self, Need, Plan};
use super::policy::{self, Attempt, Failure, FailureClass, Validity};
use super::state::{KubeFailure, UnwrittenToken};
use super::status::{self, Facts, Problem};
use super::token_secret::{self, IssuedToken, TargetState};
use super::{
    Context, Error, FIELD_MANAGER, REASON_CREDENTIALS_FORBIDDEN, REASON_INSTALLATION_CONFLICT,
    REASON_INVALID_SPEC, REASON_KUBERNETES_CONFLICT, REASON_KUBERNETES_ERROR,
    REASON_RENEW_REQUEST_WAITING, REASON_TARGET_CONFLICT, REASON_TARGET_FORBIDDEN,
    REASON_TARGET_REJECTED, REASON_TARGET_TEMPLATE_INVALID,
};
use super::{rollout, rotation, schedule, token_check};
use crate::api::{
    PingOneConnection, PingOneConnectionStatus, PublicJwk, RENEW_REQUESTED_AT, RenewBefore,
    TokenEndpointAuthMethod,
};
use crate::pingone::TokenRequest;

/// A reserved request slot this close is taken as due (the scheduler's timers have millisecond
/// resolution).
const SLOT_TOLERANCE: Duration = Duration::from_millis(2);
/// A slot of the request budget this close is waited for within the reconcile, so that a
/// connection in a burst is reconciled once, not once to queue and once to send. With the
/// default concurrency and cap a reconcile waits about 0.3 s at most in a burst (32 workers,
/// 10.5 ms apart); a slot further away (a low cap, a 429's pause) frees the worker.
const IN_PLACE_WAIT: Duration = Duration::from_secs(1);
/// A wait for the request budget up to this long writes no status of its own.
const SHORT_THROTTLE: Duration = Duration::from_secs(5);

/// Now, truncated to whole seconds: everything the operator stores has second precision, so
/// comparing a computed status with the stored one is exact.
fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// What one reconcile did about the token.
enum Outcome {
    /// The token in the Secret is good and stays.
    Kept {
        token: IssuedToken,
        renew_at: Timestamp,
        /// Someone changed the Secret while the operator repaired it: look again at once.
        changed_meanwhile: bool,
    },
    /// A token was issued (or one obtained earlier was written).
    Issued {
        token: IssuedToken,
        renew_at: Timestamp,
        changed_meanwhile: bool,
    },
    /// The token request failed; retried at `failure.retry_at`.
    Failed {
        failure: Failure,
        current: Option<IssuedToken>,
        token_current: bool,
    },
    /// Nothing can be requested until a person changes something (spec, credentials, a
    /// conflicting Secret).
    Blocked {
        problem: Problem,
        current: Option<IssuedToken>,
    },
    /// A token is needed, but not before `until` (backoff, `Retry-After`, the floor).
    Waiting {
        need: Need,
        until: Timestamp,
        current: Option<IssuedToken>,
        /// The failure it waits out is PingOne refusing these very credentials (found in
        /// status by a restarted process): what the last request showed of the secret.
        refused: bool,
    },
    /// A token is needed, and the environment's request budget has a slot for it in `wait`.
    Throttled {
        need: Need,
        wait: Duration,
        current: Option<IssuedToken>,
    },
}

/// A failed Kubernetes API call, attributed to what the reconcile was doing.
#[derive(Debug)]
struct KubeError {
    reason: &'static str,
    message: String,
    stalled: bool,
}

/// What a reconcile of one connection works with.
struct Reconcile<'a> {
    ctx: &'a Context,
    conn: &'a PingOneConnection,
    namespace: String,
    name: String,
    uid: String,
    target_name: String,
    secrets: Api<Secret>,
    now: Timestamp,
    /// The last failed token request, from memory or (after a restart) from status.
    failure: Option<Failure>,
    /// The credentials Secret and the credentials as `act` read them.
    read: std::sync::Mutex<Option<(Secret, Credentials)>>,
    /// The check of a token this reconcile wrote (`Some(None)`: an opaque token).
    check: std::sync::Mutex<Option<Option<token_check::TokenCheck>>>,
    /// The Normal Event about the token this reconcile wrote (reason, note), published together
    /// with the status write rather than before it, so that Ready is not held back by it.
    issued_event: std::sync::Mutex<Option<(&'static str, String)>>,
}

/// What this reconcile did about client secret rotation.
struct RotationReport {
    facts: Option<status::RotationFacts>,
    /// A new secret was written: reconcile again at once to prove it.
    rotated: bool,
}

/// Reconciles one connection. Token failures and Kubernetes API failures are reported in status
/// and retried on their own schedules.
#[instrument(skip_all, fields(namespace = field::Empty, connection = field::Empty))]
pub async fn reconcile(conn: Arc<PingOneConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = conn
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = conn.name_any();
    let uid = conn.uid().ok_or(Error::MissingField("metadata.uid"))?;
    Span::current().record("namespace", namespace.as_str());
    Span::current().record("connection", name.as_str());
    // A leader that could not confirm its Lease in time does nothing: another replica may be
    // taking over (see leader::Fence). Looked at again shortly; gone if leadership is lost.
    if !ctx.may_act() {
        debug!("the leader election lease is not confirmed; not acting");
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    ctx.metrics.reconciles.inc();

    let target_name = conn.target_secret_name();
    ctx.states.register(
        &uid,
        &namespace,
        &name,
        &[&conn.spec.credentials_secret_ref.name, &target_name],
    );
    ctx.metrics.set_connections(ctx.states.len());
    // A failure survives a restart in status: the new process does not repeat it early.
    let failure = ctx
        .states
        .with(&uid, |s| {
            if s.failure.is_none() {
                s.failure = failure_from_status(conn.status.as_ref()).map(Box::new);
            }
            s.failure.as_deref().cloned()
        })
        .flatten();
    let r = Reconcile {
        ctx: &ctx,
        conn: &conn,
        secrets: Api::namespaced(ctx.client.clone(), &namespace),
        namespace,
        name,
        uid,
        target_name,
        now: now(),
        failure,
        read: std::sync::Mutex::new(None),
        check: std::sync::Mutex::new(None),
        issued_event: std::sync::Mutex::new(None),
    };
    match r.act().await {
        Ok(outcome) => {
            let rotation = r.rotate(&outcome).await;
            r.finish(outcome, rotation).await
        }
        Err(e) => Ok(r.kube_failed(e).await),
    }
}

impl Reconcile<'_> {
    /// Reads the Secrets, decides, and does what the plan says.
    async fn act(&self) -> Result<Outcome, KubeError> {
        let spec = &self.conn.spec;
        let cred_name = &spec.credentials_secret_ref.name;
        // A token Secret the Secret watch knows not to exist is not read (see presence.rs),
        // unless this process wrote it: its own write may be ahead of the watch. At the start,
        // that takes the watch's first list, which the read waits for.
        let own_write = self
            .ctx
            .states
            .with(&self.uid, |s| {
                s.own_write.is_some() || s.unwritten.is_some()
            })
            .unwrap_or(false);
        let (credentials_secret, target_secret) =
            tokio::join!(self.secrets.get_opt(cred_name), async {
                if !own_write {
                    self.ctx.secret_names.first_list(&self.namespace).await;
                }
                let names = &self.ctx.secret_names;
                if !own_write && names.absent(&self.namespace, &self.target_name) {
                    Ok(None)
                } else {
                    self.secrets.get_opt(&self.target_name).await
                }
            });
        let credentials_secret =
            credentials_secret.map_err(|e| self.read_error(&e, cred_name, true))?;
        let seen = credentials_secret
            .as_ref()
            .and_then(|s| s.metadata.resource_version.as_deref());
        self.ctx
            .states
            .with(&self.uid, |s| s.credentials_seen(cred_name, seen));
        let target_secret =
            target_secret.map_err(|e| self.read_error(&e, &self.target_name, false))?;
        let layout = Layout::of(&spec.target);
        let target = token_secret::inspect_with(
            target_secret.as_ref(),
            &self.uid,
            layout.as_ref().unwrap_or(&Layout::default()),
            &self.ctx.digest_key,
        );
        if let Err(message) = layout {
            return Ok(self.blocked(&target, REASON_TARGET_TEMPLATE_INVALID, message));
        }

        let rule = match spec.renewal.renew_before() {
            Ok(rule) => rule,
            Err(message) => return Ok(self.blocked(&target, REASON_INVALID_SPEC, message)),
        };
        let creds = match credentials::read(
            credentials_secret.as_ref(),
            &spec.credentials_secret_ref,
            &self.namespace,
            spec.token_endpoint_auth_method,
            spec.client_assertion_algorithm,
        ) {
            Ok(creds) => creds,
            Err(e) => return Ok(self.blocked(&target, e.reason(), e.to_string())),
        };
        if let Some(secret) = &credentials_secret {
            *self.read.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((secret.clone(), creds.clone()));
        }
        let digest = token_secret::inputs_digest(
            &self.ctx.digest_key,
            &spec.auth_domain,
            &spec.environment_id,
            &creds.client_id,
            creds.material(),
            &spec.scopes,
            &creds.method_label(),
        );
        let plan = plan::decide(
            self.now,
            plan::Inputs {
                target: &target,
                inputs_digest: &digest,
                generation: self.conn.metadata.generation,
                rule,
                failure: self.failure.as_ref(),
                last_issued: self.conn.status.as_ref().and_then(|s| {
                    s.issued_at
                        .as_ref()
                        .max(s.last_token_obtained_time.as_ref())
                        .map(|t| t.0)
                }),
                renew_requested: self.pending_renew_request().is_some(),
                retry_now: self.pending_renew_request().is_some_and(|value| {
                    self.ctx
                        .states
                        .with(&self.uid, |s| s.renew_attempted.as_deref() != Some(value))
                        .unwrap_or(true)
                }),
            },
            &self.ctx.timing,
        );
        Ok(match plan {
            Plan::Conflict => {
                let TargetState::Foreign { owner } = &target else {
                    unreachable!("a conflict is a foreign Secret");
                };
                self.conflict(owner)
            }
            Plan::OtherInstallation { id, until } => Outcome::Blocked {
                current: None,
                problem: Problem {
                    reason: REASON_INSTALLATION_CONFLICT,
                    message: format!(
                        "Secret {} was written by another installation of the operator ({id}; this one is {}), which keeps its token fresh: this installation sends no request for it. Run one installation per cluster; if the other was removed, this one takes the token over once its renewal is overdue ({})",
                        self.target_name,
                        self.ctx.digest_key.installation(),
                        until.strftime("%Y-%m-%dT%H:%M:%SZ")
                    ),
                    stalled: true,
                    retry_at: Some(until),
                },
            },
            Plan::Keep { token, renew_at } => {
                let changed_meanwhile = self.repair_metadata(&target, &token, renew_at).await?;
                // A token whose check could not be made (JWKS unreachable) is checked again.
                if let TargetState::Owned {
                    access_token: Some(access_token),
                    ..
                } = &target
                    && self
                        .known_check(&token)
                        .is_some_and(|c| c.reason == crate::pingone::REASON_JWKS_UNAVAILABLE)
                {
                    self.check_token(&creds, &token, access_token).await;
                }
                // A success for other inputs (e.g. someone else fixed the Secret) clears the
                // failure; one for these inputs stays until a request succeeds.
                if self
                    .failure
                    .as_ref()
                    .is_some_and(|f| f.inputs_digest != digest)
                {
                    self.set_failure(None);
                }
                Outcome::Kept {
                    token,
                    renew_at,
                    changed_meanwhile,
                }
            }
            Plan::Wait { need, until } => Outcome::Waiting {
                need,
                until,
                current: current_token(&target),
                refused: self.failure.as_ref().is_some_and(|f| {
                    f.inputs_digest == digest
                        && matches!(f.reason, "InvalidClient" | "UnauthorizedClient")
                }),
            },
            Plan::Request(need) => self.request(&target, &creds, &digest, need, rule).await?,
        })
    }

    /// Moves client secret rotation on (see [`rotation::intent`]): carries a rotation under
    /// way through, whatever the token's health and whether or not the spec still asks for
    /// rotation, and starts one when it is configured, due, and the token is current.
    async fn rotate(&self, outcome: &Outcome) -> RotationReport {
        let ctx = self.ctx;
        let config = self.conn.spec.client_secret_rotation.as_ref();
        let schedule = match config.map(|c| c.durations()).transpose() {
            Ok(d) => d.map(|(every, keep_previous_for)| rotation::Schedule {
                every,
                keep_previous_for,
            }),
            Err(message) => {
                return RotationReport {
                    facts: Some(status::RotationFacts {
                        last: None,
                        next: None,
                        previous_expires_at: None,
                        healthy: false,
                        reason: REASON_INVALID_SPEC,
                        message,
                    }),
                    rotated: false,
                };
            }
        };
        let failure = match schedule {
            None => None,
            Some(_) => ctx
                .states
                .with(&self.uid, |s| {
                    if !s.rotation_failure_read {
                        s.rotation_failure_read = true;
                        if s.rotation_failure.is_none() {
                            s.rotation_failure =
                                rotation::failure_from_status(self.status()).map(Box::new);
                        }
                    }
                    s.rotation_failure.as_deref().cloned()
                })
                .flatten(),
        };
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((secret, creds)) = &read else {
            // No credentials to rotate: what status shows follows the schedule alone.
            return RotationReport {
                facts: schedule.map(|s| {
                    rotation::facts(&rotation::FactsInput {
                        secret: None,
                        token_current: false,
                        failure: failure.as_ref(),
                        every: s.every,
                        previous: self.status(),
                    })
                }),
                rotated: false,
            };
        };
        let job = rotation::Rotation {
            ctx,
            conn: self.conn,
            secrets: &self.secrets,
            secret,
            creds,
        };
        let advanced = job
            .advance(rotation::AdvanceInput {
                schedule,
                proof: proof_of(outcome),
                failure,
                previous: self.status(),
                now: self.now,
            })
            .await;
        ctx.states.with(&self.uid, |s| {
            s.rotation_failure = advanced.failure.map(Box::new)
        });
        RotationReport {
            facts: advanced.facts,
            rotated: advanced.rotated,
        }
    }

    /// Turns the outcome into status, Events, metrics and the requeue.
    async fn finish(&self, outcome: Outcome, rotation: RotationReport) -> Result<Action, Error> {
        let ctx = self.ctx;
        let now = self.now;
        let (token, token_current, renew_at, problem, mut next) = match &outcome {
            Outcome::Kept {
                token,
                renew_at,
                changed_meanwhile,
            }
            | Outcome::Issued {
                token,
                renew_at,
                changed_meanwhile,
            } => (
                Some(token.clone()),
                true,
                Some(*renew_at),
                self.failure
                    .as_ref()
                    .filter(|_| matches!(outcome, Outcome::Kept { .. }))
                    .filter(|f| f.inputs_digest == token.inputs_digest)
                    .map(problem_of),
                Some(if *changed_meanwhile { now } else { *renew_at }),
            ),
            Outcome::Failed {
                failure,
                current,
                token_current,
            } => (
                current.clone(),
                *token_current,
                None,
                Some(problem_of(failure)),
                Some(failure.retry_at),
            ),
            Outcome::Blocked { problem, current } => (
                current.clone(),
                false,
                None,
                Some(problem.clone()),
                problem.retry_at,
            ),
            Outcome::Waiting {
                need,
                until,
                current,
                ..
            } => (
                current.clone(),
                need.is_renewal(),
                None,
                // A renew request held back by the floor says so (what `kubectl pingone renew
                // --wait` shows); a failure says why otherwise.
                self.failure.as_ref().map(problem_of).or_else(|| {
                    let value = self.pending_renew_request()?;
                    Some(Problem {
                        reason: REASON_RENEW_REQUEST_WAITING,
                        message: format!(
                            "The renew request {value:?} waits for the floor: no token request within {} s of the connection's last one",
                            ctx.timing.min_interval.as_secs()
                        ),
                        stalled: false,
                        retry_at: Some(*until),
                    })
                }),
                Some(*until),
            ),
            Outcome::Throttled { need, current, .. } => (
                current.clone(),
                need.is_renewal(),
                None,
                self.failure.as_ref().map(problem_of),
                None,
            ),
        };
        // Workloads that read the token only at start-up are restarted for a new token.
        if let (Some(token), true) = (&token, token_current)
            && !self.conn.spec.rollout_restart_targets.is_empty()
            && let Some(later) = rollout::restart_targets(
                ctx,
                self.conn,
                token,
                matches!(outcome, Outcome::Issued { .. }),
                now,
            )
            .await
        {
            next = Some(next.map_or(later, |n| n.min(later)));
        }

        // The failure as it stands after this reconcile (a success cleared it).
        let failure = match &outcome {
            Outcome::Issued { .. } => None,
            Outcome::Failed { failure, .. } => Some(failure.clone()),
            _ => self.failure.clone(),
        };
        // A new token serves a pending renew request; otherwise the last one served stays.
        let renew_served = match &outcome {
            Outcome::Issued { .. } => self.pending_renew_request().map(str::to_string),
            _ => None,
        };
        if let Some(served) = &renew_served {
            ctx.states
                .with(&self.uid, |s| s.renew_served = Some(served.clone()));
        }
        let renew_served = renew_served.or_else(|| self.last_renew_served());
        let facts = Facts {
            now,
            generation: self.conn.metadata.generation,
            secret_name: &self.target_name,
            token: token.as_ref(),
            token_current,
            renew_at,
            problem: problem.as_ref(),
            failed_attempts: failure.as_ref().map_or(0, |f| f.attempts),
            // A failed request's time, or for other problems when the status first reported one.
            last_failure: match (&failure, &problem) {
                (Some(f), _) => Some(f.at),
                (None, Some(_)) => Some(
                    self.status()
                        .and_then(|s| s.last_failure_time.as_ref())
                        .map_or(now, |t| t.0),
                ),
                (None, None) => None,
            },
            next_attempt: failure.as_ref().map(|f| f.retry_at),
            failed_inputs_digest: failure.as_ref().map(|f| f.inputs_digest.as_str()),
            public_jwk: public_jwk(self.conn, self.read_key_jwk()),
            rotation: rotation.facts.clone(),
            token_check: match self.check.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                Some(check) => check,
                None => token.as_ref().and_then(|t| self.known_check(t)),
            },
            renew_request_served: renew_served.as_deref(),
        };
        // A token that could not be checked waits for its environment's JWKS, which one task
        // rechecks for all of them (see jwks_wait.rs): the connection is reconciled when keys
        // come, and at its renewal (whose new token is checked anyway) whatever happens.
        if facts
            .token_check
            .as_ref()
            .is_some_and(|c| c.reason == crate::pingone::REASON_JWKS_UNAVAILABLE)
        {
            let spec = &self.conn.spec;
            ctx.jwks_waits.wait(
                &ctx.tokens,
                &spec.auth_domain,
                &spec.environment_id,
                kube::runtime::reflector::ObjectRef::from_obj(self.conn),
            );
        }
        // Wake for the next rotation (or its retry), and at once to prove a new secret.
        if rotation.rotated {
            next = Some(now);
        } else if let Some(at) = rotation.facts.as_ref().and_then(|f| f.next) {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        let new_status = status::compute(self.status(), &facts);
        let ready = status::is_ready(Some(&new_status));
        if let Outcome::Blocked { problem, .. } = &outcome {
            // Problems found without asking PingOne (credentials, conflict, spec): logged and
            // reported when they appear, not on every reconcile that still sees them.
            if previous_reason(self.status()) != Some(problem.reason) {
                ctx.metrics
                    .error(&self.namespace, &self.name, problem.reason);
                self.publish(EventType::Warning, problem.reason, &problem.message)
                    .await;
                warn!(reason = problem.reason, detail = %problem.message, "connection not healthy");
            }
        }
        // Under the states' lock: a connection deleted (and forgotten, metrics and all) while
        // this reconcile ran gets no series back, so no expiry alert fires for it.
        ctx.states.with(&self.uid, |_| {
            ctx.metrics.connection(
                &self.namespace,
                &self.name,
                ready,
                token.as_ref().map(|t| t.expires_at.as_second() as f64),
                renew_at.filter(|_| ready).map(|t| t.as_second() as f64),
            )
        });
        // A throttled connection comes back for its slot, and at the latest when its token
        // expires: Ready must turn False then.
        let expiry = token.as_ref().map(|t| t.expires_at).filter(|t| *t > now);
        let throttled_wake = |wait: Duration| {
            expiry
                .map_or(wait, |t| wait.min(schedule::until(Timestamp::now(), t)))
                .max(Duration::from_millis(100))
        };
        if let Outcome::Throttled { wait, .. } = outcome {
            ctx.metrics.throttled.inc();
            // A short wait for the request budget is not worth a status write of its own: the
            // token's status follows within seconds. A long one (a big burst) is shown.
            if wait <= SHORT_THROTTLE {
                ctx.metrics.reconciled();
                return Ok(Action::requeue(throttled_wake(wait)));
            }
        }
        let issued_event = self
            .issued_event
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // The reconcile counts as done when its status is written, not when its Event is.
        let status_written = async {
            let written = self.write_status(&new_status).await;
            if written.is_ok() {
                self.clear_kube_failure();
                ctx.metrics.reconciled();
            }
            written
        };
        let (written, ()) = tokio::join!(status_written, async {
            if let Some((reason, note)) = &issued_event {
                self.publish(EventType::Normal, reason, note).await;
            }
        });
        if let Err(e) = written {
            return Ok(self.kube_failed(e).await);
        }

        if let Outcome::Throttled { wait, .. } = outcome {
            return Ok(Action::requeue(throttled_wake(wait)));
        }
        // Wake for what is due next, and at the latest when the token expires: Ready must turn
        // False then even if nothing else happens.
        let wake = [next, expiry]
            .into_iter()
            .flatten()
            .min()
            // From the precise time, not the whole second `now` stands for: that would wake up
            // to a second late.
            .map(|t| schedule::until(Timestamp::now(), t))
            .unwrap_or(ctx.timing.stalled_recheck)
            .min(ctx.timing.stalled_recheck);
        // Wake at the due time at the earliest; a timer firing a little late is harmless.
        Ok(Action::requeue(wake.max(Duration::from_millis(100))))
    }

    fn status(&self) -> Option<&PingOneConnectionStatus> {
        self.conn.status.as_ref()
    }

    /// The public JWK of the private key this reconcile read, if any.
    fn read_key_jwk(&self) -> Option<PublicJwk> {
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        read.as_ref()
            .and_then(|(_, creds)| creds.private_key())
            .and_then(|key| serde_json::from_value(key.public_jwk().clone()).ok())
    }

    fn set_failure(&self, failure: Option<Failure>) {
        self.ctx
            .states
            .with(&self.uid, |s| s.failure = failure.map(Box::new));
    }

    /// The outcome when no token can be requested (bad spec, credentials).
    fn blocked(&self, target: &TargetState, reason: &'static str, message: String) -> Outcome {
        Outcome::Blocked {
            current: current_token(target),
            problem: Problem {
                reason,
                message,
                stalled: true,
                retry_at: None,
            },
        }
    }

    fn conflict(&self, owner: &str) -> Outcome {
        Outcome::Blocked {
            current: None,
            problem: Problem {
                reason: REASON_TARGET_CONFLICT,
                message: format!(
                    "Secret {} exists and is not owned by this connection (owner: {owner}); the operator will not overwrite it. Delete or rename it, or set spec.target.secretName",
                    self.target_name
                ),
                stalled: true,
                retry_at: None,
            },
        }
    }

    /// Gets a token (or writes one obtained before) and writes it into the Secret.
    async fn request(
        &self,
        target: &TargetState,
        creds: &Credentials,
        digest: &str,
        need: Need,
        rule: RenewBefore,
    ) -> Result<Outcome, KubeError> {
        let ctx = self.ctx;
        let spec = &self.conn.spec;
        let reused = ctx
            .states
            .with(&self.uid, |s| s.unwritten.take().map(|u| *u))
            .flatten()
            .filter(|u| {
                u.token.inputs_digest == digest
                    && self.now < plan::renewal_time(&u.token, rule, &ctx.timing)
            });
        let (token, access_token) = match reused {
            Some(u) => {
                info!("writing a token obtained before the Secret write failed");
                (u.token, u.access_token)
            }
            None => {
                if let Some(wait) = self.admission(current_token(target).as_ref()).await {
                    return Ok(Outcome::Throttled {
                        need,
                        wait,
                        current: current_token(target),
                    });
                }
                // The fence again, right before PingOne is asked: this reconcile may have
                // waited on an API server that was down while another replica took over.
                if !ctx.may_act() {
                    return Ok(Outcome::Throttled {
                        need,
                        wait: std::time::Duration::from_secs(1),
                        current: current_token(target),
                    });
                }
                let request = TokenRequest {
                    auth_domain: &spec.auth_domain,
                    environment_id: &spec.environment_id,
                    client_id: &creds.client_id,
                    auth: creds.auth(),
                    scopes: &spec.scopes,
                };
                if let Some(value) = self.pending_renew_request() {
                    ctx.states
                        .with(&self.uid, |s| s.renew_attempted = Some(value.to_string()));
                }
                let (result, elapsed) = ctx.tokens.request_admitted_timed(&request).await;
                match result {
                    Ok(response) => {
                        ctx.metrics
                            .token_request(&self.namespace, &self.name, "success", elapsed);
                        let renewal = need.is_renewal();
                        let token = IssuedToken {
                            // Counted from before the request was sent: errs on the early side.
                            issued_at: self.now,
                            expires_at: schedule::add(self.now, response.expires_in),
                            renewal_jitter: schedule::choose_jitter(
                                renewal,
                                rule,
                                response.expires_in,
                                ctx.jitter_unit(renewal),
                            ),
                            inputs_digest: digest.to_string(),
                            token_type: response.token_type.clone(),
                            scopes: response.scope.clone(),
                        }
                        .normalised();
                        (token, response.access_token)
                    }
                    Err(error) => {
                        let current = current_token(target);
                        let failure = Failure::record(
                            self.failure.as_ref().filter(|f| f.inputs_digest == digest),
                            Attempt {
                                // The precise time: the retry is counted from it, never from
                                // the whole second before it.
                                now: Timestamp::now(),
                                inputs_digest: digest,
                                generation: self.conn.metadata.generation,
                                token: current.as_ref().map(|t| Validity {
                                    issued_at: t.issued_at,
                                    expires_at: t.expires_at,
                                }),
                            },
                            &error,
                            &ctx.timing,
                            rand::random::<f64>(),
                        );
                        self.report_failure(&failure, elapsed).await;
                        self.set_failure(Some(failure.clone()));
                        return Ok(Outcome::Failed {
                            failure,
                            current,
                            token_current: need.is_renewal(),
                        });
                    }
                }
            }
        };
        let renew_at = plan::renewal_time(&token, rule, &ctx.timing);
        let secret = token_secret::build(
            self.conn,
            &token,
            &access_token,
            renew_at,
            match target {
                TargetState::Owned {
                    resource_version, ..
                } => resource_version.clone(),
                _ => None,
            },
            &ctx.digest_key,
        );
        let written = if matches!(target, TargetState::Absent) {
            match self.create_secret(&secret).await {
                Ok(Some(changed)) => Ok(changed),
                // A Secret of that name exists by now: this connection's own (the Secret watch
                // had not shown it yet) takes the token as any owned one; anyone else's is a
                // conflict.
                Ok(None) => match self.secrets.get_opt(&self.target_name).await {
                    Ok(Some(s)) if token_secret::is_owned_by(&s, &self.uid) => {
                        self.apply_secret(&secret).await
                    }
                    read => {
                        let owner = match read {
                            Ok(Some(s)) => token_secret::owner_of(&s),
                            _ => "unknown".to_string(),
                        };
                        // Kept: should the Secret go away, the token is written without a new
                        // request.
                        self.keep_unwritten(token, access_token);
                        return Ok(self.conflict(&owner));
                    }
                },
                Err(e) => Err(e),
            }
        } else {
            self.apply_secret(&secret).await
        };
        let changed_meanwhile = match written {
            Ok(changed) => changed,
            Err(e) => {
                // Kept: the retry writes it instead of asking PingOne again.
                self.keep_unwritten(token, access_token);
                return Err(e);
            }
        };
        self.set_failure(None);
        self.check_token(creds, &token, &access_token).await;
        let expiry = token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ");
        let secret_name = &self.target_name;
        let (reason, note) = match need {
            Need::First => (
                "TokenIssued",
                format!("Issued the first token, in Secret {secret_name}, valid until {expiry}"),
            ),
            Need::RenewalDue => (
                "TokenRenewed",
                format!("Renewed the token in Secret {secret_name}, valid until {expiry}"),
            ),
            Need::Requested => (
                "TokenRenewed",
                format!(
                    "Renewed the token in Secret {secret_name} on request ({}), valid until {expiry}",
                    RENEW_REQUESTED_AT
                ),
            ),
            other => (
                "TokenIssued",
                format!(
                    "Issued a new token ({}) in Secret {secret_name}, valid until {expiry}",
                    other.as_str()
                ),
            ),
        };
        info!(reason, expires_at = %token.expires_at, renew_at = %renew_at, "{}", need.as_str());
        *self.issued_event.lock().unwrap_or_else(|e| e.into_inner()) = Some((reason, note));
        Ok(Outcome::Issued {
            token,
            renew_at,
            changed_meanwhile,
        })
    }

    /// The renew-requested-at value not yet served, by what this process remembers and by
    /// status (the copy of the connection may predate the last status write).
    fn pending_renew_request(&self) -> Option<&str> {
        let value = self.conn.pending_renew_request()?;
        let served = self
            .ctx
            .states
            .with(&self.uid, |s| s.renew_served.as_deref() == Some(value))
            .unwrap_or(false);
        (!served).then_some(value)
    }

    /// The last renew-requested-at value served, remembered or from status.
    fn last_renew_served(&self) -> Option<String> {
        self.ctx
            .states
            .with(&self.uid, |s| s.renew_served.clone())
            .flatten()
            .or_else(|| self.status().and_then(|s| s.renew_request_served.clone()))
    }

    /// The check of `token` as this process made it, else as status recorded it: the status
    /// of the store's newest copy of the connection when it shows this token (this process's
    /// copy of the check goes once the watch brings that status, and this reconcile's copy of
    /// the connection may predate it), else of this reconcile's copy.
    fn known_check(&self, token: &IssuedToken) -> Option<token_check::TokenCheck> {
        let own = self
            .ctx
            .states
            .with(&self.uid, |s| s.token_check.clone())
            .flatten();
        if let Some((issued_at, check)) = own
            && issued_at == token.issued_at
        {
            return check;
        }
        let shows_token = |status: Option<&PingOneConnectionStatus>| {
            status
                .and_then(|s| s.issued_at.as_ref())
                .is_some_and(|t| t.0 == token.issued_at)
        };
        if let Some(newest) = self.ctx.newest(&self.namespace, &self.name)
            && newest.metadata.uid.as_deref() == Some(&*self.uid)
            && shows_token(newest.status.as_ref())
        {
            return token_check::from_status(newest.status.as_ref());
        }
        token_check::from_status(self.status())
    }

    /// Verifies a token just written against the environment's JWKS and compares its claims
    /// with what was asked for; the result goes to status (and a Warning Event when wrong).
    async fn check_token(
        &self,
        creds: &Credentials,
        token: &IssuedToken,
        access_token: &crate::pingone::SecretString,
    ) {
        use crate::pingone::ExposeSecret;
        let spec = &self.conn.spec;
        let verification = self
            .ctx
            .tokens
            .verify_token(
                &spec.auth_domain,
                &spec.environment_id,
                access_token.expose_secret(),
            )
            .await;
        let issuer = crate::pingone::expected_issuer(&spec.auth_domain, &spec.environment_id);
        let check = token_check::assess(
            verification,
            &token_check::Expected {
                issuer: issuer.as_deref(),
                client_id: &creds.client_id,
                asked_scopes: &spec.scopes,
                response_scopes: &token.scopes,
                expires_at: token.expires_at,
            },
        );
        if let Some(c) = &check {
            if let Some(skew) = c.skew_seconds {
                self.ctx
                    .metrics
                    .token_expiry_skew(&self.namespace, &self.name, skew as f64);
            }
            // Said once per token and reason: an unreachable JWKS rechecked again and again
            // is not a new Event each time.
            let said = self
                .known_check(token)
                .is_some_and(|previous| previous.reason == c.reason);
            if !c.ok && !said {
                warn!(reason = %c.reason, detail = %c.message, "token check");
                self.publish(EventType::Warning, &c.reason, &c.message)
                    .await;
            }
        }
        self.ctx.states.with(&self.uid, |s| {
            s.token_check = Some((token.issued_at, check.clone()));
        });
        *self.check.lock().unwrap_or_else(|e| e.into_inner()) = Some(check);
    }

    /// Takes a slot of the environment's request budget: `None` when the request may go now
    /// (a slot within [`IN_PLACE_WAIT`] is waited for here), else how long until the slot
    /// (which stays reserved for this connection). With a valid token in the Secret, a pause
    /// of the environment (a 429) that would hold the request past the token's validity bound
    /// lets it probe through (DESIGN §4: a `Retry-After` never lets a token expire unattempted).
    async fn admission(&self, current: Option<&IssuedToken>) -> Option<Duration> {
        let spec = &self.conn.spec;
        let held = self.ctx.states.with(&self.uid, |s| s.slot.take()).flatten();
        let probe_by = current.filter(|t| t.expires_at > self.now).map(|t| {
            let validity = Validity {
                issued_at: t.issued_at,
                expires_at: t.expires_at,
            };
            tokio::time::Instant::now()
                + policy::validity_bound(self.now, validity, &self.ctx.timing)
        });
        match self
            .ctx
            .tokens
            .admit_within(
                &spec.auth_domain,
                &spec.environment_id,
                held,
                SLOT_TOLERANCE,
                IN_PLACE_WAIT,
                probe_by,
            )
            .await
        {
            Ok(_) => None,
            Err(slot) => {
                self.ctx.states.with(&self.uid, |s| s.slot = Some(slot));
                Some(slot.saturating_duration_since(tokio::time::Instant::now()))
            }
        }
    }

    fn keep_unwritten(&self, token: IssuedToken, access_token: crate::pingone::SecretString) {
        self.ctx.states.with(&self.uid, |s| {
            s.unwritten = Some(Box::new(UnwrittenToken {
                token,
                access_token,
            }))
        });
    }

    /// Logs, counts and publishes a failed token request.
    async fn report_failure(&self, f: &Failure, elapsed: Duration) {
        let metrics = &self.ctx.metrics;
        metrics.token_request(&self.namespace, &self.name, f.reason, elapsed);
        metrics.error(&self.namespace, &self.name, f.reason);
        if f.class == FailureClass::NotSent {
            warn!(reason = f.reason, retry_at = %f.retry_at, "token request not sent: {}", f.message);
        } else {
            warn!(reason = f.reason, attempts = f.attempts, retry_at = %f.retry_at, "token request failed: {}", f.message);
        }
        // Identical repeats fold into a series; a different message is an Event of its own.
        self.publish(EventType::Warning, f.reason, &f.message).await;
    }

    /// Re-applies the Secret when its operator-set labels or annotations drifted, keeping the
    /// token. True when someone else changed the Secret during the write.
    async fn repair_metadata(
        &self,
        target: &TargetState,
        token: &IssuedToken,
        renew_at: Timestamp,
    ) -> Result<bool, KubeError> {
        let TargetState::Owned {
            access_token: Some(access_token),
            labels,
            annotations,
            resource_version,
            shape_ok,
            ..
        } = target
        else {
            return Ok(false);
        };
        let want_labels = token_secret::desired_labels(self.conn);
        let want_annotations = token_secret::desired_annotations(
            self.conn,
            token,
            access_token,
            renew_at,
            &self.ctx.digest_key,
        );
        if *shape_ok
            && !token_secret::metadata_drifted(labels, annotations, &want_labels, &want_annotations)
        {
            return Ok(false);
        }
        info!("restoring the token Secret's data layout, labels and annotations");
        let secret = token_secret::build(
            self.conn,
            token,
            access_token,
            renew_at,
            resource_version.clone(),
            &self.ctx.digest_key,
        );
        self.apply_secret(&secret).await
    }

    /// Registers the write with the own-write bookkeeping before it is sent: its watch event can
    /// arrive before the response does.
    fn begin_write(&self, secret: &Secret) {
        let write = secret
            .annotations()
            .get(token_secret::TOKEN_DIGEST)
            .map(|digest| OwnWrite::begin(&secret.name_any(), digest));
        self.ctx.states.with(&self.uid, |s| s.own_write = write);
        self.ctx.metrics.write("secret");
    }

    /// After the write: true when someone else changed the Secret while it was in flight (their
    /// watch event was taken for the echo of this write).
    fn end_write(&self, resource_version: Option<String>, ok: bool) -> bool {
        self.ctx
            .states
            .with(&self.uid, |s| match (ok, s.own_write.as_mut()) {
                (true, Some(w)) => w.end(resource_version),
                _ => {
                    s.own_write = None;
                    false
                }
            })
            .unwrap_or(false)
    }

    /// Updates the connection's own token Secret (server-side apply; the resourceVersion in
    /// `secret` is the precondition).
    async fn apply_secret(&self, secret: &Secret) -> Result<bool, KubeError> {
        self.begin_write(secret);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match self
            .secrets
            .patch(&secret.name_any(), &params, &Patch::Apply(secret))
            .await
        {
            Ok(written) => {
                let changed = self.end_write(written.resource_version(), true);
                self.remove_stray_keys(secret, &written).await?;
                Ok(changed)
            }
            Err(e) => {
                self.end_write(None, false);
                Err(self.write_error(&e))
            }
        }
    }

    /// Removes data keys the Secret should no longer have (a key renamed or an extra entry
    /// dropped in spec.target): server-side apply removes only keys it set itself, not those
    /// of the Secret's first write (a create).
    async fn remove_stray_keys(&self, desired: &Secret, written: &Secret) -> Result<(), KubeError> {
        let want = desired.data.as_ref();
        let stray: serde_json::Map<String, serde_json::Value> = written
            .data
            .iter()
            .flat_map(|d| d.keys())
            .filter(|k| !want.is_some_and(|w| w.contains_key(*k)))
            .map(|k| (k.clone(), serde_json::Value::Null))
            .collect();
        if stray.is_empty() {
            return Ok(());
        }
        info!(
            keys = stray.len(),
            "removing data keys the token Secret's layout no longer has"
        );
        self.begin_write(desired);
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": written.resource_version()},
            "data": stray,
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match self
            .secrets
            .patch(&written.name_any(), &params, &Patch::Merge(&patch))
            .await
        {
            Ok(w) => {
                self.end_write(w.resource_version(), true);
                Ok(())
            }
            Err(e) => {
                self.end_write(None, false);
                Err(self.write_error(&e))
            }
        }
    }

    /// Creates the token Secret; `None` when a Secret of that name exists by now (never taken
    /// over: a create fails on AlreadyExists).
    async fn create_secret(&self, secret: &Secret) -> Result<Option<bool>, KubeError> {
        self.begin_write(secret);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match self.secrets.create(&params, secret).await {
            Ok(written) => Ok(Some(self.end_write(written.resource_version(), true))),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.end_write(None, false);
                Ok(None)
            }
            Err(e) => {
                self.end_write(None, false);
                Err(self.write_error(&e))
            }
        }
    }

    /// Writes the status when it changed; remembers what it wrote so that a reconcile seeing a
    /// watch-cache copy older than the write does not write it again.
    async fn write_status(&self, status: &PingOneConnectionStatus) -> Result<(), KubeError> {
        let current = self.conn.resource_version();
        let unchanged = self.status() == Some(status)
            || self
                .ctx
                .states
                .with(&self.uid, |s| {
                    s.written_status
                        .as_ref()
                        .is_some_and(|w| w.is_current(current.as_deref(), status))
                })
                .unwrap_or(false);
        if unchanged {
            return Ok(());
        }
        let api: Api<PingOneConnection> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let patch = serde_json::json!({
            "apiVersion": PingOneConnection::api_version(&()),
            "kind": PingOneConnection::kind(&()),
            "status": status,
        });
        self.ctx.metrics.write("status");
        let written = api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| KubeError {
                reason: conflict_or(&e, REASON_KUBERNETES_ERROR),
                message: format!("writing the status failed: {}", api_message(&e)),
                stalled: false,
            })?;
        let remembered = WrittenStatus::new(written.resource_version(), status);
        self.ctx
            .states
            .with(&self.uid, |s| s.written_status = remembered);
        Ok(())
    }

    /// Reports a failed Kubernetes API call (in status when it can be written, once per change
    /// in the log, always in the metric) and schedules the retry on its own backoff.
    async fn kube_failed(&self, e: KubeError) -> Action {
        let ctx = self.ctx;
        let (attempts, changed) = ctx
            .states
            .with(&self.uid, |s| {
                let previous = s.kube_failure.take().map(|p| *p);
                let changed = previous
                    .as_ref()
                    .is_none_or(|p| p.reason != e.reason || p.message != e.message);
                let attempts = previous.as_ref().map_or(0, |p| p.attempts) + 1;
                s.kube_failure = Some(Box::new(KubeFailure {
                    reason: e.reason,
                    message: e.message.clone(),
                    attempts,
                    stalled: e.stalled,
                    since: previous.map_or(self.now, |p| p.since),
                }));
                (attempts, changed)
            })
            .unwrap_or((1, true));
        ctx.metrics
            .kubernetes_error(&self.namespace, &self.name, e.reason);
        ctx.metrics.error(&self.namespace, &self.name, e.reason);
        let wait = if e.reason == REASON_KUBERNETES_CONFLICT {
            // Lost a race: look again soon with fresh state.
            schedule::backoff(1, &ctx.timing, rand::random())
        } else {
            schedule::backoff(attempts, &ctx.timing, rand::random())
        };
        // Like every requeue, this one also wakes when the token status shows expires: then
        // Ready says so (the status can often be written when a Secret cannot), and the
        // write of a token obtained meanwhile is tried again when it matters most.
        let wait = match self.status().and_then(|s| s.expires_at.as_ref()) {
            Some(expires) if expires.0 > self.now => {
                let left = self.now.duration_until(expires.0).unsigned_abs();
                wait.min(left + Duration::from_millis(500))
            }
            _ => wait,
        };
        if changed {
            warn!(
                reason = e.reason,
                attempts,
                retry_in_ms = wait.as_millis() as u64,
                "Kubernetes API call failed: {}",
                e.message
            );
            self.publish(EventType::Warning, e.reason, &e.message).await;
        } else {
            debug!(
                reason = e.reason,
                attempts, "Kubernetes API call failed again: {}", e.message
            );
        }
        let problem = Problem {
            reason: e.reason,
            message: e.message,
            stalled: e.stalled,
            retry_at: (!e.stalled).then(|| schedule::add(self.now, wait)),
        };
        let mut status = status::with_problem(
            self.status(),
            &problem,
            self.now,
            self.conn.metadata.generation,
            failure_from_status(self.status()).is_some(),
        );
        // A token obtained and not written: a restarted operator or a new leader counts the
        // floor from it too.
        if let Some(Some(obtained)) = ctx.states.with(&self.uid, |s| {
            s.unwritten.as_ref().map(|u| u.token.issued_at)
        }) {
            status.last_token_obtained_time = status
                .last_token_obtained_time
                .map(|t| t.0)
                .max(Some(obtained))
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
        }
        if self.status() != Some(&status) {
            // Best effort: the status write may be what fails.
            if let Err(e) = self.write_status(&status).await {
                debug!(
                    reason = e.reason,
                    "the status could not be written either: {}", e.message
                );
            }
        }
        Action::requeue(wait)
    }

    /// The reconcile got through: a Kubernetes failure before it is over.
    fn clear_kube_failure(&self) {
        if let Some(Some(previous)) = self.ctx.states.with(&self.uid, |s| s.kube_failure.take()) {
            info!(
                reason = previous.reason,
                attempts = previous.attempts,
                "Kubernetes API calls succeed again"
            );
        }
    }

    fn read_error(&self, e: &kube::Error, secret: &str, credentials: bool) -> KubeError {
        match e {
            kube::Error::Api(s) if s.code == 403 => KubeError {
                reason: if credentials {
                    REASON_CREDENTIALS_FORBIDDEN
                } else {
                    REASON_TARGET_FORBIDDEN
                },
                message: format!(
                    "the operator may not get Secret {secret} in namespace {}: grant its ServiceAccount get on secrets there ({})",
                    self.namespace,
                    api_message(e)
                ),
                stalled: true,
            },
            _ => KubeError {
                reason: REASON_KUBERNETES_ERROR,
                message: format!("reading Secret {secret} failed: {}", api_message(e)),
                stalled: false,
            },
        }
    }

    fn write_error(&self, e: &kube::Error) -> KubeError {
        match e {
            kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => KubeError {
                reason: REASON_TARGET_REJECTED,
                message: format!(
                    "the API server rejected the write of Secret {}: {}",
                    self.target_name,
                    api_message(e)
                ),
                stalled: true,
            },
            _ => KubeError {
                reason: conflict_or(e, REASON_KUBERNETES_ERROR),
                message: format!(
                    "writing Secret {} failed: {}",
                    self.target_name,
                    api_message(e)
                ),
                stalled: false,
            },
        }
    }

    async fn publish(&self, type_: EventType, reason: &str, note: &str) {
        events::publish(self.ctx, self.conn, type_, reason, note).await;
    }
}

/// What this reconcile's token outcome shows of the credentials Secret's current secret.
fn proof_of(outcome: &Outcome) -> rotation::intent::Proof {
    use rotation::intent::Proof;
    match outcome {
        Outcome::Kept { token, .. } | Outcome::Issued { token, .. } => Proof::Proven {
            issued_at: token.issued_at,
        },
        Outcome::Failed { failure, .. }
            if matches!(failure.reason, "InvalidClient" | "UnauthorizedClient") =>
        {
            Proof::Refused
        }
        Outcome::Waiting { refused: true, .. } => Proof::Refused,
        _ => Proof::Unknown,
    }
}

/// The reason of a conflict (409), or `other`.
fn conflict_or(e: &kube::Error, other: &'static str) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 409 => REASON_KUBERNETES_CONFLICT,
        _ => other,
    }
}

/// The API server's own words for a failure, cleaned for a condition message.
fn api_message(e: &kube::Error) -> String {
    let text = match e {
        kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.message),
        other => other.to_string(),
    };
    crate::pingone::sanitize_message(&text)
}

fn current_token(target: &TargetState) -> Option<IssuedToken> {
    match target {
        TargetState::Owned { token, .. } => token.clone(),
        _ => None,
    }
}

fn problem_of(f: &Failure) -> Problem {
    Problem {
        reason: f.reason,
        message: f.message.clone(),
        stalled: f.stalled(),
        retry_at: (!f.stalled()).then_some(f.retry_at),
    }
}

/// The failure recorded in `status`, for a process that did not see it happen.
fn failure_from_status(status: Option<&PingOneConnectionStatus>) -> Option<Failure> {
    let status = status?;
    let inputs_digest = status.failed_inputs_digest.clone()?;
    let retry_at = status.next_attempt_time.as_ref()?.0;
    let condition = status.conditions.iter().find(|c| {
        (c.type_ == status::STALLED || c.type_ == status::RECONCILING) && c.status == "True"
    })?;
    let reason = policy::token_failure_reason(&condition.reason)?;
    let message = match condition.message.rsplit_once("; retrying at ") {
        Some((message, _)) => message.to_string(),
        None => condition.message.clone(),
    };
    Some(Failure {
        inputs_digest,
        generation: status.observed_generation,
        attempts: status.failed_attempts.max(1),
        at: status.last_failure_time.as_ref().map_or(retry_at, |t| t.0),
        retry_at,
        reason,
        message,
        class: FailureClass::of_reason(reason),
    })
}

/// The reason of the currently reported problem, if any.
fn previous_reason(status: Option<&PingOneConnectionStatus>) -> Option<&str> {
    let status = status?;
    status
        .conditions
        .iter()
        .find(|c| {
            (c.type_ == status::STALLED || c.type_ == status::RECONCILING) && c.status == "True"
        })
        .map(|c| c.reason.as_str())
}

/// The public JWK status shows: that of the key this reconcile loaded, for private_key_jwt.
/// A key that does not load shows none (there is nothing to register).
fn public_jwk(conn: &PingOneConnection, read: Option<PublicJwk>) -> Option<PublicJwk> {
    (conn.spec.token_endpoint_auth_method == TokenEndpointAuthMethod::PrivateKeyJwt)
        .then_some(read)
        .flatten()
}

/// Publishes an Event about `conn` (for the rollout module).
pub(super) async fn publish(
    ctx: &Context,
    conn: &PingOneConnection,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    events::publish(ctx, conn, type_, reason, note).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pingone::TokenError;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A failure written into status by one process is the failure the next process reads back:
    /// same inputs, retry time, reason, class and count.
    #[test]
    fn a_failure_survives_in_status() {
        let now = ts("2026-11-27T08:00:00Z");
        for (error, stalled) in [
            (
                TokenError::InvalidClient {
                    status: 401,
                    code: Some("invalid_client".into()),
                    description: Some("Invalid client credentials".into()),
                },
                true,
            ),
            (
                TokenError::Unavailable {
                    status: 503,
                    retry_after: None,
                    code: None,
                    description: None,
                },
                false,
            ),
        ] {
            let attempt = Attempt {
                now,
                inputs_digest: "v2:digest",
                generation: Some(4),
                token: None,
            };
            let failure = Failure::record(None, attempt, &error, &schedule::Timing::default(), 0.5);
            let problem = problem_of(&failure);
            let facts = Facts {
                now,
                generation: Some(4),
                secret_name: "c-token",
                token: None,
                token_current: false,
                renew_at: None,
                problem: Some(&problem),
                failed_attempts: failure.attempts,
                last_failure: Some(failure.at),
                next_attempt: Some(failure.retry_at),
                failed_inputs_digest: Some(&failure.inputs_digest),
                public_jwk: None,
                rotation: None,
                renew_request_served: None,
                token_check: None,
            };
            let written = status::compute(None, &facts);
            // Through the API server and back.
            let read: PingOneConnectionStatus =
                serde_json::from_value(serde_json::to_value(&written).unwrap()).unwrap();
            let restored = failure_from_status(Some(&read)).expect("a failure in status");
            assert_eq!(restored, failure);
            assert_eq!(restored.stalled(), stalled);
        }
        // No failure recorded, nothing restored.
        assert_eq!(
            failure_from_status(Some(&PingOneConnectionStatus::default())),
            None
        );
        assert_eq!(failure_from_status(None), None);
    }
}
