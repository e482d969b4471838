//! Rolling restarts of workloads that read the token only at start-up
//! (`spec.rolloutRestartTargets`): after a rotation the operator stamps the pod template with
//! the new token's issue time, which makes the workload controller roll the pods.
//!
//! The stamp is the token's issue time, not the time of the restart, so that the decision
//! needs no memory: a workload stamped with the current token is never restarted again, which
//! is why an operator restart (or any re-reconcile) restarts nothing.

use std::time::Duration;

use super::events::EventType;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use tracing::{info, warn};

use super::schedule;
use super::token_secret::IssuedToken;
use super::{Context, reconcile::publish};
use crate::api::{PingOneConnection, RolloutRestartTarget};

/// Pod template annotation holding the issue time of the token the pods were started for.
pub const RESTARTED_FOR: &str = "pingone.tokenops.dev/restarted-for-token-issued-at";

/// What to do about one workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Its pods already run with this token, or restarting it would be unexpected.
    Skip,
    /// Restart it now.
    Restart,
    /// Restart it, but not before this time (debounce).
    Later(Timestamp),
}

/// Decides for a workload stamped with `stamped` (None: never restarted by the operator) and the
/// token issued at `issued`. `fresh`: the token was issued by this very reconcile. A workload
/// never stamped is restarted only for a token issued just now, so that enabling the feature
/// or restarting the operator does not restart anything.
pub fn decide(
    stamped: Option<Timestamp>,
    issued: Timestamp,
    fresh: bool,
    now: Timestamp,
    debounce: Duration,
) -> Decision {
    match stamped {
        Some(s) if s >= issued => Decision::Skip,
        Some(s) => {
            let due = schedule::add(s, debounce);
            if now < due {
                Decision::Later(due)
            } else {
                Decision::Restart
            }
        }
        None if fresh => Decision::Restart,
        None => Decision::Skip,
    }
}

fn api_resource(target: &RolloutRestartTarget) -> ApiResource {
    ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: target.kind.as_str().into(),
        plural: target.kind.plural().into(),
    }
}

/// Restarts the connection's targets as needed for `token`. Failures are reported as Warning
/// Events and never fail the reconcile: the token is what matters. Returns when to look again
/// for debounced restarts.
pub async fn restart_targets(
    ctx: &Context,
    conn: &PingOneConnection,
    token: &IssuedToken,
    fresh: bool,
    now: Timestamp,
) -> Option<Timestamp> {
    let namespace = conn.namespace()?;
    let mut next: Option<Timestamp> = None;
    for target in &conn.spec.rollout_restart_targets {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &api_resource(target));
        let what = format!("{} {}", target.kind.as_str(), target.name);
        let workload = match api.get_opt(&target.name).await {
            Ok(Some(w)) => w,
            Ok(None) => {
                publish(
                    ctx,
                    conn,
                    EventType::Warning,
                    "RolloutRestartFailed",
                    &format!("{what} not found"),
                )
                .await;
                continue;
            }
            Err(e) => {
                warn!(target = %what, error = %e, "reading a rollout restart target failed");
                publish(
                    ctx,
                    conn,
                    EventType::Warning,
                    "RolloutRestartFailed",
                    &format!("reading {what} failed: {}", short(&e)),
                )
                .await;
                continue;
            }
        };
        let stamped = workload.data["spec"]["template"]["metadata"]["annotations"][RESTARTED_FOR]
            .as_str()
            .and_then(|s| s.parse().ok());
        match decide(
            stamped,
            token.issued_at,
            fresh,
            now,
            ctx.timing.rollout_debounce,
        ) {
            Decision::Skip => {}
            Decision::Later(at) => next = Some(next.map_or(at, |n| n.min(at))),
            Decision::Restart => {
                let stamp = token.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                let patch = serde_json::json!({
                    "spec": {"template": {"metadata": {"annotations": {RESTARTED_FOR: stamp}}}}
                });
                match api
                    .patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        info!(target = %what, "restarted after token rotation");
                        ctx.metrics.rollout_restart(
                            &namespace,
                            &conn.name_any(),
                            target.kind.as_str(),
                        );
                        publish(
                            ctx,
                            conn,
                            EventType::Normal,
                            "RolloutRestarted",
                            &format!("Restarted {what} for the new token"),
                        )
                        .await;
                    }
                    Err(e) => {
                        warn!(target = %what, error = %e, "restarting a workload failed");
                        publish(
                            ctx,
                            conn,
                            EventType::Warning,
                            "RolloutRestartFailed",
                            &format!("restarting {what} failed: {}", short(&e)),
                        )
                        .await;
                    }
                }
            }
        }
    }
    next
}

fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}", s.code, s.reason),
        other => other.to_string().chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const D: Duration = Duration::from_secs(30);

    #[test]
    fn restarts_once_per_token_and_never_for_an_old_one() {
        let issued = ts("2026-11-27T08:00:00Z");
        let now = ts("2026-11-27T08:00:01Z");
        // Stamped for this token already (e.g. after an operator restart): nothing.
        assert_eq!(decide(Some(issued), issued, false, now, D), Decision::Skip);
        assert_eq!(decide(Some(issued), issued, true, now, D), Decision::Skip);
        // Stamped for an older token, long enough ago: restart.
        assert_eq!(
            decide(Some(ts("2026-11-27T07:00:00Z")), issued, false, now, D),
            Decision::Restart
        );
    }

    #[test]
    fn never_stamped_workloads_restart_only_for_a_token_issued_just_now() {
        let issued = ts("2026-11-27T08:00:00Z");
        let now = ts("2026-11-27T08:00:01Z");
        assert_eq!(decide(None, issued, true, now, D), Decision::Restart);
        assert_eq!(decide(None, issued, false, now, D), Decision::Skip);
    }

    #[test]
    fn rotations_in_quick_succession_are_debounced() {
        let previous = ts("2026-11-27T08:00:00Z");
        let issued = ts("2026-11-27T08:00:12Z");
        assert_eq!(
            decide(Some(previous), issued, true, ts("2026-11-27T08:00:12Z"), D),
            Decision::Later(ts("2026-11-27T08:00:30Z"))
        );
        assert_eq!(
            decide(Some(previous), issued, false, ts("2026-11-27T08:00:30Z"), D),
            Decision::Restart
        );
    }
}
