//! One reconcile of one connection: the I/O shell around the pure decisions.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tracing::{Span, field, info, instrument, warn};

use super::credentials::{self, Credentials};
use super::plan::{self, Failure, Need, Plan};
use super::status::{self, Facts, Problem};
use super::token_secret::{self, IssuedToken, TargetState};
use super::{
    Context, Error, FIELD_MANAGER, REASON_INVALID_SPEC, REASON_TARGET_CONFLICT, UnwrittenToken,
};
use super::{rollout, schedule};
use crate::api::{PingOneConnection, PingOneConnectionStatus, TokenEndpointAuthMethod};
use crate::pingone::{AuthMethod, TokenError, TokenRequest};

/// Now, truncated to whole seconds: everything the operator stores has second precision, so
/// comparing a computed status with the stored one is exact.
fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// What the reconcile ended with, for status, metrics and the requeue.
struct Outcome {
    /// The intact token in the Secret after this reconcile.
    token: Option<IssuedToken>,
    /// It matches the current inputs.
    token_current: bool,
    renew_at: Option<Timestamp>,
    problem: Option<Problem>,
    /// Wake up no later than this.
    next: Option<Timestamp>,
    /// A token request failed in this reconcile (already logged and reported).
    request_failed: bool,
    /// The token was issued by this reconcile.
    issued: bool,
}

/// Reconciles one connection. Token failures are reported in status and retried on schedule;
/// only Kubernetes API failures return an error.
#[instrument(skip_all, fields(namespace = field::Empty, connection = field::Empty))]
pub async fn reconcile(conn: Arc<PingOneConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = conn
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = conn.name_any();
    let uid = conn.uid().ok_or(Error::MissingField("metadata.uid"))?;
    Span::current().record("namespace", namespace.as_str());
    Span::current().record("connection", name.as_str());
    ctx.metrics.reconciles.inc();

    let now = now();
    let generation = conn.metadata.generation;
    let spec = &conn.spec;
    let target_name = conn.target_secret_name();
    ctx.index.set(
        &namespace,
        &name,
        &[&spec.credentials_secret_ref.name, &target_name],
    );

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let (credentials_secret, target_secret) = tokio::try_join!(
        secrets.get_opt(&spec.credentials_secret_ref.name),
        secrets.get_opt(&target_name)
    )?;
    let target = token_secret::inspect(target_secret.as_ref(), &uid);

    let mut outcome = act(
        &ctx,
        &conn,
        &secrets,
        &target,
        credentials_secret.as_ref(),
        now,
    )
    .await?;
    // Workloads that read the token only at start-up are restarted for a new token.
    if let (Some(token), true) = (&outcome.token, outcome.token_current)
        && !spec.rollout_restart_targets.is_empty()
        && let Some(later) = rollout::restart_targets(&ctx, &conn, token, outcome.issued, now).await
    {
        outcome.next = Some(outcome.next.map_or(later, |n| n.min(later)));
    }

    let failure = ctx.failure(&uid);
    let facts = Facts {
        now,
        generation,
        secret_name: &target_name,
        token: outcome.token.as_ref(),
        token_current: outcome.token_current,
        renew_at: outcome.renew_at,
        problem: outcome.problem.as_ref(),
        failed_attempts: failure.as_ref().map_or(0, |f| f.attempts),
        // A failed request's time, or for other problems when the status first reported one.
        last_failure: match (&failure, &outcome.problem) {
            (Some(f), _) => Some(f.at),
            (None, Some(_)) => Some(
                conn.status
                    .as_ref()
                    .and_then(|s| s.last_failure_time.as_ref())
                    .map_or(now, |t| t.0),
            ),
            (None, None) => None,
        },
    };
    let new_status = status::compute(conn.status.as_ref(), &facts);
    let ready = status::is_ready(Some(&new_status));
    if let Some(problem) = outcome.problem.as_ref().filter(|_| !outcome.request_failed) {
        // Problems found without asking PingOne (credentials, conflict, spec): logged and
        // reported when they appear, not on every reconcile that still sees them.
        if previous_reason(conn.status.as_ref()) != Some(problem.reason) {
            ctx.metrics.error(&namespace, &name, problem.reason);
            publish(
                &ctx,
                &conn,
                EventType::Warning,
                problem.reason,
                &problem.message,
            )
            .await;
            warn!(reason = problem.reason, detail = %problem.message, "connection not healthy");
        }
    }
    ctx.metrics.connection(
        &namespace,
        &name,
        ready,
        outcome
            .token
            .as_ref()
            .map(|t| t.expires_at.as_second() as f64),
        outcome
            .renew_at
            .filter(|_| ready)
            .map(|t| t.as_second() as f64),
    );
    if conn.status.as_ref() != Some(&new_status)
        && !ctx
            .written_status
            .is_current(&uid, conn.resource_version().as_deref(), &new_status)
    {
        let resource_version = write_status(&ctx, &conn, &namespace, &new_status).await?;
        ctx.written_status
            .remember(&uid, resource_version, &new_status);
    }

    // Wake for what is due next, and at the latest when the token expires: Ready must turn
    // False then even if nothing else happens.
    let expiry = outcome
        .token
        .as_ref()
        .map(|t| t.expires_at)
        .filter(|t| *t > now);
    let wake = [outcome.next, expiry]
        .into_iter()
        .flatten()
        .min()
        .map(|t| schedule::until(now, t))
        .unwrap_or(ctx.timing.stalled_recheck)
        .min(ctx.timing.stalled_recheck);
    // Wake at the due time at the earliest; a timer firing a little late is harmless.
    Ok(Action::requeue(wake.max(Duration::from_millis(100))))
}

/// Decides what to do about the token and does it: nothing, a metadata repair, or a token
/// request and the Secret write.
async fn act(
    ctx: &Context,
    conn: &PingOneConnection,
    secrets: &Api<Secret>,
    target: &TargetState,
    credentials_secret: Option<&Secret>,
    now: Timestamp,
) -> Result<Outcome, Error> {
    let spec = &conn.spec;
    let namespace = conn.namespace().unwrap_or_default();
    let uid = conn.uid().unwrap_or_default();
    let target_name = conn.target_secret_name();
    let generation = conn.metadata.generation;
    let failure = ctx.failure(&uid);
    Ok(
        match (
            spec.renewal.renew_before(),
            credentials::read(credentials_secret, &spec.credentials_secret_ref, &namespace),
        ) {
            (Err(message), _) => blocked(target, REASON_INVALID_SPEC, message),
            (_, Err(e)) => blocked(target, e.reason(), e.to_string()),
            (Ok(rule), Ok(creds)) => {
                let digest = token_secret::inputs_digest(
                    &ctx.digest_key,
                    &spec.auth_domain,
                    &spec.environment_id,
                    &creds.client_id,
                    &creds.client_secret,
                    &spec.scopes,
                    spec.token_endpoint_auth_method,
                );
                let plan = plan::decide(
                    now,
                    target,
                    &digest,
                    generation,
                    rule,
                    failure.as_ref(),
                    &ctx.timing,
                );
                match plan {
                    Plan::Conflict => blocked(
                        target,
                        REASON_TARGET_CONFLICT,
                        format!(
                            "Secret {target_name} exists and is not owned by this connection; the operator will not overwrite it. Delete or rename it, or set spec.target.secretName"
                        ),
                    ),
                    Plan::Keep { token, renew_at } => {
                        let changed_meanwhile =
                            repair_metadata(ctx, secrets, conn, target, &token, renew_at).await?;
                        // A success after failures (e.g. someone else fixed the Secret) clears them.
                        if failure.as_ref().is_some_and(|f| f.inputs_digest != digest) {
                            ctx.set_failure(&uid, None);
                        }
                        Outcome {
                            token: Some(token),
                            token_current: true,
                            renew_at: Some(renew_at),
                            problem: failure
                                .as_ref()
                                .filter(|f| f.inputs_digest == digest)
                                .map(problem_of),
                            next: Some(if changed_meanwhile { now } else { renew_at }),
                            request_failed: false,
                            issued: false,
                        }
                    }
                    Plan::Wait { need, until } => {
                        let token = current_token(target);
                        let token_current = need == Need::RenewalDue;
                        Outcome {
                            renew_at: None,
                            token_current,
                            token,
                            problem: failure.as_ref().map(problem_of),
                            next: Some(until),
                            request_failed: false,
                            issued: false,
                        }
                    }
                    Plan::Request(need) => {
                        request(
                            ctx,
                            conn,
                            secrets,
                            target,
                            &creds,
                            &digest,
                            need,
                            rule,
                            failure.as_ref(),
                            now,
                        )
                        .await?
                    }
                }
            }
        },
    )
}

/// The outcome when no token can be requested (bad spec, credentials, conflict).
fn blocked(target: &TargetState, reason: &'static str, message: String) -> Outcome {
    Outcome {
        token: current_token(target),
        token_current: false,
        renew_at: None,
        problem: Some(Problem {
            reason,
            message,
            stalled: true,
            retry_at: None,
        }),
        next: None,
        request_failed: false,
        issued: false,
    }
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
        stalled: f.stalled,
        retry_at: (!f.stalled).then_some(f.retry_at),
    }
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

fn auth_method(method: TokenEndpointAuthMethod) -> AuthMethod {
    match method {
        TokenEndpointAuthMethod::ClientSecretPost => AuthMethod::ClientSecretPost,
        TokenEndpointAuthMethod::ClientSecretBasic => AuthMethod::ClientSecretBasic,
    }
}

#[allow(clippy::too_many_arguments)]
async fn request(
    ctx: &Context,
    conn: &PingOneConnection,
    secrets: &Api<Secret>,
    target: &TargetState,
    creds: &Credentials,
    digest: &str,
    need: Need,
    rule: crate::api::RenewBefore,
    failure: Option<&Failure>,
    now: Timestamp,
) -> Result<Outcome, Error> {
    let namespace = conn.namespace().unwrap_or_default();
    let name = conn.name_any();
    let uid = conn.uid().unwrap_or_default();
    let spec = &conn.spec;
    let request = TokenRequest {
        auth_domain: &spec.auth_domain,
        environment_id: &spec.environment_id,
        client_id: &creds.client_id,
        client_secret: &creds.client_secret,
        scopes: &spec.scopes,
        method: auth_method(spec.token_endpoint_auth_method),
    };
    let reused = ctx.take_unwritten(&uid).filter(|u| {
        u.token.inputs_digest == digest && now < plan::renewal_time(&u.token, rule, &ctx.timing)
    });
    let (token, access_token) = match reused {
        Some(u) => {
            info!("writing a token obtained before the Secret write failed");
            (u.token, u.access_token)
        }
        None => {
            let (result, elapsed) = ctx.tokens.request_token_timed(&request).await;
            match result {
                Ok(response) => {
                    ctx.metrics
                        .token_request(&namespace, &name, "success", elapsed);
                    let token = IssuedToken {
                        // Counted from before the request was sent: errs on the early side.
                        issued_at: now,
                        expires_at: schedule::add(now, response.expires_in),
                        renewal_jitter: schedule::choose_jitter(
                            need == Need::RenewalDue,
                            rule,
                            response.expires_in,
                            ctx.jitter_unit(need == Need::RenewalDue),
                        ),
                        inputs_digest: digest.to_string(),
                        token_type: response.token_type.clone(),
                        scopes: response.scope.clone(),
                    }
                    .normalised();
                    (token, response.access_token)
                }
                Err(error) => {
                    return Ok(failed(
                        ctx, conn, target, digest, need, failure, now, error, elapsed,
                    )
                    .await);
                }
            }
        }
    };
    let renew_at = plan::renewal_time(&token, rule, &ctx.timing);
    let resource_version = match target {
        TargetState::Owned {
            resource_version, ..
        } => resource_version.clone(),
        _ => None,
    };
    let secret = token_secret::build(conn, &token, &access_token, renew_at, resource_version);
    let changed_meanwhile = match apply_secret(ctx, secrets, &secret).await {
        Ok(changed) => changed,
        Err(e) => {
            // Keep the token: the retry writes it instead of asking PingOne again.
            ctx.put_unwritten(
                &uid,
                UnwrittenToken {
                    token,
                    access_token,
                },
            );
            return Err(e);
        }
    };
    ctx.set_failure(&uid, None);
    let (reason, verb) = match need {
        Need::RenewalDue => ("TokenRenewed", "Renewed"),
        _ => ("TokenIssued", "Issued"),
    };
    let note = format!(
        "{verb} a token ({}) in Secret {}, valid until {}",
        need.as_str(),
        secret.name_any(),
        token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    );
    info!(reason, expires_at = %token.expires_at, renew_at = %renew_at, "{}", need.as_str());
    publish(ctx, conn, EventType::Normal, reason, &note).await;
    Ok(Outcome {
        token: Some(token),
        token_current: true,
        renew_at: Some(renew_at),
        problem: None,
        next: Some(if changed_meanwhile { now } else { renew_at }),
        request_failed: false,
        issued: true,
    })
}

/// Records a failed token request and reports it.
#[allow(clippy::too_many_arguments)]
async fn failed(
    ctx: &Context,
    conn: &PingOneConnection,
    target: &TargetState,
    digest: &str,
    need: Need,
    failure: Option<&Failure>,
    now: Timestamp,
    error: TokenError,
    elapsed: Duration,
) -> Outcome {
    let namespace = conn.namespace().unwrap_or_default();
    let name = conn.name_any();
    let reason = error.reason();
    ctx.metrics
        .token_request(&namespace, &name, reason, elapsed);
    ctx.metrics.error(&namespace, &name, reason);
    let f = Failure::record(
        failure.filter(|f| f.inputs_digest == digest),
        now,
        digest.to_string(),
        conn.metadata.generation,
        reason,
        error.to_string(),
        error.needs_person() || !error.is_retryable(),
        error.retry_after(),
        &ctx.timing,
        rand::random::<f64>(),
    );
    warn!(reason, attempts = f.attempts, retry_at = %f.retry_at, "token request failed: {}", f.message);
    // A Warning for each failed request; the recorder folds repeats into a series.
    publish(ctx, conn, EventType::Warning, reason, &f.message).await;
    ctx.set_failure(&conn.uid().unwrap_or_default(), Some(f.clone()));
    Outcome {
        token_current: need == Need::RenewalDue,
        renew_at: None,
        token: current_token(target),
        problem: Some(problem_of(&f)),
        next: Some(f.retry_at),
        request_failed: true,
        issued: false,
    }
}

/// Re-applies the Secret when its operator-set labels or annotations drifted, keeping the token.
/// True when someone else changed the Secret during the write (see [`apply_secret`]).
async fn repair_metadata(
    ctx: &Context,
    secrets: &Api<Secret>,
    conn: &PingOneConnection,
    target: &TargetState,
    token: &IssuedToken,
    renew_at: Timestamp,
) -> Result<bool, Error> {
    let TargetState::Owned {
        access_token: Some(access_token),
        labels,
        annotations,
        resource_version,
        ..
    } = target
    else {
        return Ok(false);
    };
    let want_labels = token_secret::desired_labels(conn);
    let want_annotations = token_secret::desired_annotations(conn, token, access_token, renew_at);
    if !token_secret::metadata_drifted(labels, annotations, &want_labels, &want_annotations) {
        return Ok(false);
    }
    info!("restoring the token Secret's labels and annotations");
    let secret = token_secret::build(
        conn,
        token,
        access_token,
        renew_at,
        resource_version.clone(),
    );
    apply_secret(ctx, secrets, &secret).await
}

/// Writes the token Secret. True when someone else changed it while the write was in flight
/// (their watch event was taken for the echo of this write): the caller reconciles again soon.
async fn apply_secret(
    ctx: &Context,
    secrets: &Api<Secret>,
    secret: &Secret,
) -> Result<bool, Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    ctx.metrics.write("secret");
    // Registered before the write: its watch event can arrive before the response does.
    ctx.own_writes.begin(
        &namespace,
        &name,
        secret
            .annotations()
            .get(token_secret::TOKEN_DIGEST)
            .map(String::as_str),
    );
    match secrets.patch(&name, &params, &Patch::Apply(secret)).await {
        Ok(written) => Ok(ctx
            .own_writes
            .end(&namespace, &name, written.resource_version())),
        Err(e) => {
            ctx.own_writes.end(&namespace, &name, None);
            Err(e.into())
        }
    }
}

/// Writes the status; returns the resourceVersion the write produced.
async fn write_status(
    ctx: &Context,
    conn: &PingOneConnection,
    namespace: &str,
    status: &PingOneConnectionStatus,
) -> Result<Option<String>, Error> {
    let api: Api<PingOneConnection> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": PingOneConnection::api_version(&()),
        "kind": PingOneConnection::kind(&()),
        "status": status,
    });
    ctx.metrics.write("status");
    let written = api
        .patch_status(
            &conn.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(written.resource_version())
}

pub(super) async fn publish(
    ctx: &Context,
    conn: &PingOneConnection,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &conn.object_ref(&())).await {
        // Events are best effort; the status carries the same information.
        warn!(error = %e, "publishing an Event failed");
    }
}
