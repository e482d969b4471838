//! What platform tools read: metrics, Events, logs, `kubectl explain`, rollout restarts.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use pingone_operator::controller::schedule::Timing;
use pingone_testbed::standin::Fault;
use serde_json::json;

use crate::process::OperatorProcess;
use crate::resilience::metric_sum;
use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_expiry_renewal_readiness_requests_and_errors() {
    let env = TestEnv::new("metrics").await;
    env.put_credentials("bad", CLIENT_ID, "wrong").await;
    let operator = OperatorProcess::start(&env, &["--leader-election=false"]);
    env.create_connection("good", json!({})).await;
    env.create_connection("bad", json!({"credentialsSecretRef": {"name": "bad"}}))
        .await;
    let good = env.wait_ready("good").await;
    env.wait_stalled("bad", "InvalidClient", Duration::from_secs(30))
        .await;

    let text = eventually(
        Duration::from_secs(10),
        "metrics for both connections",
        || {
            let url = operator.url("/metrics");
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                text.contains("name=\"bad\"").then_some(text)
            }
        },
    )
    .await;
    let ns = env.ns.as_str();
    let status = good.status.unwrap();
    let p = "pingone_operator_";
    assert_eq!(
        metric_value(
            &text,
            &format!("{p}token_expiration_timestamp_seconds"),
            &[("namespace", ns), ("name", "good")]
        ),
        Some(status.expires_at.unwrap().0.as_second() as f64)
    );
    assert_eq!(
        metric_value(
            &text,
            &format!("{p}token_renewal_timestamp_seconds"),
            &[("namespace", ns), ("name", "good")]
        ),
        Some(status.renewal_time.unwrap().0.as_second() as f64)
    );
    assert_eq!(
        metric_value(&text, &format!("{p}ready_status"), &[("name", "good")]),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&text, &format!("{p}ready_status"), &[("name", "bad")]),
        Some(0.0)
    );
    assert_eq!(
        metric_value(
            &text,
            &format!("{p}token_requests_total"),
            &[("name", "good"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            &format!("{p}token_requests_total"),
            &[("name", "bad"), ("result", "InvalidClient")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            &format!("{p}reconcile_errors_total"),
            &[("name", "bad"), ("reason", "InvalidClient")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            &format!("{p}token_request_duration_seconds_count"),
            &[("result", "success")]
        ),
        Some(1.0)
    );
    assert!(metric_sum(&text, &format!("{p}token_request_duration_seconds_sum")) > 0.0);
    // No expiry series for a connection without a token.
    assert_eq!(
        metric_value(
            &text,
            &format!("{p}token_expiration_timestamp_seconds"),
            &[("name", "bad")]
        ),
        None
    );

    // Deleting a connection removes its series.
    env.delete_connection("bad").await;
    eventually(
        Duration::from_secs(10),
        "series of a deleted connection removed",
        || {
            let url = operator.url("/metrics");
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                (!text.contains("name=\"bad\"")).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_report_issue_renewal_and_failures_and_repeats_aggregate() {
    let mut env = TestEnv::new("events").await;
    // The first renewal comes 1.7-6.7 s after issue.
    env.standin.set_token_lifetime(Duration::from_secs(10));
    env.start_operator();
    env.create_connection("c", json!({})).await;
    env.wait_ready("c").await;
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let find = |reason: &'static str| {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
        }
    };
    let issued = eventually(Duration::from_secs(10), "TokenIssued", || {
        find("TokenIssued")
    })
    .await;
    assert_eq!(issued.type_.as_deref(), Some("Normal"));
    assert_eq!(
        issued.regarding.as_ref().unwrap().name.as_deref(),
        Some("c")
    );
    assert!(issued.note.as_deref().unwrap().contains("c-token"));
    let renewed = eventually(Duration::from_secs(20), "TokenRenewed", || {
        find("TokenRenewed")
    })
    .await;
    assert_eq!(renewed.type_.as_deref(), Some("Normal"));

    // Repeated failures of one kind: one Event with a growing series, not one Event each.
    env.standin.set_persistent_fault(Some(Fault::status(503)));
    let warning = eventually(
        Duration::from_secs(40),
        "repeated TokenEndpointUnavailable",
        || {
            let f = find("TokenEndpointUnavailable");
            async move {
                f.await
                    .filter(|e| e.series.as_ref().is_some_and(|s| s.count >= 2))
            }
        },
    )
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(warning.note.as_deref().unwrap().contains("503"));
    let all = events.list(&ListParams::default()).await.unwrap().items;
    let same: Vec<_> = all
        .iter()
        .filter(|e| e.reason.as_deref() == Some("TokenEndpointUnavailable"))
        .collect();
    assert_eq!(same.len(), 1, "repeats were not aggregated: {}", same.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_restart_targets_restart_after_rotations_only() {
    let mut env = TestEnv::new("rollout").await;
    // 10 s tokens renew 3.3-4.3 s before expiry (the first one from 1.7 s on); restarts are
    // debounced to one per 5 s (the decisions are unit-tested in rollout.rs).
    env.standin.set_token_lifetime(Duration::from_secs(10));
    let timing = Timing {
        rollout_debounce: Duration::from_secs(5),
        ..test_timing()
    };
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "billing"},
        "spec": {
            "replicas": 1,
            // Every rolled-out ReplicaSet is kept, so the ones seen can be compared.
            "revisionHistoryLimit": 50,
            "selector": {"matchLabels": {"app": "billing"}},
            "template": {
                "metadata": {"labels": {"app": "billing"}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}
            }
        }
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    env.start_operator_with(timing, &[]);
    env.create_connection(
        "c",
        json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "billing"}]}),
    )
    .await;
    env.wait_ready("c").await;
    let stamp = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| {
                a.get("pingone.tokenops.dev/restarted-for-token-issued-at")
                    .cloned()
            })
    };
    let first = eventually(
        Duration::from_secs(10),
        "restart for the first token",
        || {
            let deployments = deployments.clone();
            async move { stamp(&deployments.get("billing").await.ok()?) }
        },
    )
    .await;
    let issued =
        env.token_secret("c-token").await.unwrap().annotations()["pingone.tokenops.dev/issued-at"]
            .clone();
    // The stamp names the first token; with 10 s tokens a renewal may already have replaced it
    // by the time the Secret is read (RFC 3339 UTC times compare as strings).
    assert!(
        first <= issued,
        "stamped for {first}, token issued at {issued}"
    );
    let replicasets: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    // The Deployment controller sees the stamped pod template and rolls it out: a ReplicaSet
    // whose pod template carries the stamp (no node runs its pods; the object is the rollout).
    replicaset_for(&replicasets, &first).await;

    // A rotation restarts again.
    let second = eventually(Duration::from_secs(20), "restart after a rotation", || {
        let deployments = deployments.clone();
        let first = first.clone();
        async move { stamp(&deployments.get("billing").await.ok()?).filter(|s| *s != first) }
    })
    .await;
    assert!(second.parse::<jiff::Timestamp>().unwrap() > first.parse().unwrap());
    // A rotation rolls out a new ReplicaSet, next to the first one.
    let rolled = replicaset_for(&replicasets, &second).await;
    assert!(
        rolled.len() >= 2
            && rolled
                .values()
                .any(|s| s.as_deref() == Some(first.as_str())),
        "ReplicaSets: {rolled:?}"
    );
    // Two stamps prove two restarts; the counter has seen at least one (with 10 s tokens the
    // first stamp read may already be the second restart's).
    assert!(
        metric_sum(
            &env.metrics.encode(),
            "pingone_operator_rollout_restarts_total"
        ) >= 1.0
    );

    // From the next rotation on, tokens last an hour: the workload ends up stamped for a token
    // that stays current while the operator restarts.
    env.standin.set_token_lifetime(Duration::from_secs(3600));
    let current = eventually(
        Duration::from_secs(20),
        "restart for an hour-long token",
        || {
            let deployments = deployments.clone();
            let secrets = env.secrets();
            async move {
                let annotations = secrets.get("c-token").await.ok()?.metadata.annotations?;
                let issued = annotations.get("pingone.tokenops.dev/issued-at")?;
                let expires = annotations.get("pingone.tokenops.dev/expires-at")?;
                let lifetime = expires
                    .parse::<jiff::Timestamp>()
                    .ok()?
                    .duration_since(issued.parse().ok()?);
                let stamped = stamp(&deployments.get("billing").await.ok()?)?;
                (lifetime.as_secs() > 60 && stamped == *issued).then_some(stamped)
            }
        },
    )
    .await;

    // An operator restart restarts nothing.
    env.stop_operator().await;
    let before = deployments.get("billing").await.unwrap();
    assert_eq!(stamp(&before).as_deref(), Some(current.as_str()));
    let sets_before = replicaset_for(&replicasets, &current).await;
    env.start_operator_with(timing, &[]);
    env.reconciled_to_the_end("c").await;
    let after = deployments.get("billing").await.unwrap();
    assert_eq!(stamp(&after), stamp(&before));
    assert_eq!(after.metadata.generation, before.metadata.generation);
    // The Deployment controller has seen the Deployment as it is now (it would have rolled a
    // changed template out by then), and no ReplicaSet came or went.
    eventually(
        Duration::from_secs(10),
        "the Deployment controller observes the current generation",
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("billing").await.ok()?;
                (d.status?.observed_generation == d.metadata.generation).then_some(())
            }
        },
    )
    .await;
    let sets_after = replicasets_of_billing(&replicasets).await;
    assert_eq!(
        sets_after, sets_before,
        "a ReplicaSet was created or removed after the operator restart"
    );
    assert_eq!(
        metric_sum(
            &env.metrics.encode(),
            "pingone_operator_rollout_restarts_total"
        ),
        0.0
    );
    let issued_after =
        env.token_secret("c-token").await.unwrap().annotations()["pingone.tokenops.dev/issued-at"]
            .clone();
    assert_eq!(
        issued_after, current,
        "the restarted operator renewed the token"
    );
}

/// The ReplicaSets of Deployment `billing`, by name, with the restart stamp of their pod
/// template.
async fn replicasets_of_billing(
    replicasets: &Api<ReplicaSet>,
) -> std::collections::BTreeMap<String, Option<String>> {
    replicasets
        .list(&ListParams::default())
        .await
        .expect("list ReplicaSets")
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.kind == "Deployment" && o.name == "billing")
        })
        .map(|rs| {
            let stamp = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get("pingone.tokenops.dev/restarted-for-token-issued-at"))
                .cloned();
            (rs.name_any(), stamp)
        })
        .collect()
}

/// Waits until the Deployment controller has created a ReplicaSet for `billing` whose pod
/// template carries `stamp`; returns all of billing's ReplicaSets then.
async fn replicaset_for(
    replicasets: &Api<ReplicaSet>,
    stamp: &str,
) -> std::collections::BTreeMap<String, Option<String>> {
    eventually(
        Duration::from_secs(20),
        &format!("a ReplicaSet rolled out for {stamp}"),
        || async {
            let sets = replicasets_of_billing(replicasets).await;
            sets.values()
                .any(|s| s.as_deref() == Some(stamp))
                .then_some(sets)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_carry_one_span_per_reconcile_and_each_failure_once() {
    let env = TestEnv::new("logs").await;
    env.put_credentials("bad", CLIENT_ID, "wrong").await;
    let operator = OperatorProcess::start(&env, &["--leader-election=false"]);
    env.create_connection("bad", json!({"credentialsSecretRef": {"name": "bad"}}))
        .await;
    env.create_connection("missing", json!({"credentialsSecretRef": {"name": "nope"}}))
        .await;
    env.wait_stalled("bad", "InvalidClient", Duration::from_secs(30))
        .await;
    env.wait_stalled("missing", "CredentialsNotFound", Duration::from_secs(30))
        .await;
    // Let a few more reconciles happen (status writes, Secret events).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lines: Vec<serde_json::Value> = operator
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !lines.is_empty(),
        "JSON logs expected:\n{}",
        operator.output()
    );
    let failures = |reason: &str, name: &str| {
        lines
            .iter()
            .filter(|l| {
                l["level"] == "WARN"
                    && l["fields"]["reason"] == reason
                    && l["span"]["connection"] == name
            })
            .count()
    };
    assert_eq!(failures("InvalidClient", "bad"), 1, "{}", operator.output());
    assert_eq!(
        failures("CredentialsNotFound", "missing"),
        1,
        "{}",
        operator.output()
    );
    let warn = lines
        .iter()
        .find(|l| l["fields"]["reason"] == "InvalidClient")
        .unwrap();
    assert_eq!(warn["span"]["namespace"], env.ns.as_str());
    assert_eq!(warn["span"]["connection"], "bad");
    assert_eq!(warn["span"]["name"], "reconcile");
    assert!(
        !operator.output().contains("wrong\""),
        "client secret value in logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_explain_reads_well() {
    let env = TestEnv::new("explain").await;
    let mut cmd = env.cp.kubectl();
    cmd.args(["explain", "pingoneconnection.spec", "--recursive=false"]);
    let text = run_ok(cmd, "").await;
    for needle in [
        "authDomain",
        "auth.pingone.eu",
        "environmentId",
        "credentialsSecretRef",
        "tokenEndpointAuthMethod",
        "client_secret_basic",
        "renewal",
        "rolloutRestartTargets",
        "target",
    ] {
        assert!(
            text.contains(needle),
            "kubectl explain lacks {needle}:\n{text}"
        );
    }
    let mut cmd = env.cp.kubectl();
    cmd.args(["explain", "pingoneconnection.status.conditions"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Ready"));
}
