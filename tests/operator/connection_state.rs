//! One state per connection: what the operator holds for a connection is forgotten when the
//! connection is gone, also when its deletion was never seen as a watch event (a re-list after a
//! watch gap).

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use pingone_testbed::controlplane::ControlPlane;
use serde_json::json;

use crate::process::OperatorProcess;
use crate::resilience::{compact_etcd, etcd_revision};
use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_deleted_during_a_watch_gap_is_forgotten_after_the_relist() {
    // A control plane of its own: its API server is restarted.
    let cp: &'static ControlPlane = Box::leak(Box::new(
        tokio::task::spawn_blocking(ControlPlane::start_blocking)
            .await
            .unwrap()
            .expect("own control plane"),
    ));
    let env = TestEnv::on(cp, "onestate").await;
    // Hour-long tokens: no renewal during the test.
    let mut operator = OperatorProcess::start_logging(
        &env,
        "info,kube_runtime=debug",
        &["--leader-election=false"],
    );
    operator.wait_serving(Duration::from_secs(20)).await;
    env.create_connection("keep", json!({})).await;
    env.create_connection("gone", json!({})).await;
    env.wait_ready("keep").await;
    env.wait_ready("gone").await;
    let ns = env.ns.clone();
    eventually(
        Duration::from_secs(10),
        "both connections in metrics",
        || {
            let url = operator.url("/metrics");
            let ns = ns.clone();
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                let ready = |name: &str| {
                    metric_value(
                        &text,
                        "pingone_operator_ready_status",
                        &[("namespace", ns.as_str()), ("name", name)],
                    )
                };
                (ready("keep") == Some(1.0) && ready("gone") == Some(1.0)).then_some(())
            }
        },
    )
    .await;
    assert_eq!(env.standin.token_request_count(), 2);

    // The operator sleeps through an API server restart during which `gone` is removed from
    // etcd directly and etcd's history is compacted: no watch can deliver that deletion (a
    // deletion through the API while the operator sleeps would wait in its socket), and its
    // watches cannot resume from their resourceVersion (410 Gone) but must re-list, which no
    // longer has `gone`.
    operator.signal("STOP");
    let key = format!("/registry/pingone.tokenops.dev/pingoneconnections/{ns}/gone");
    tokio::task::spawn_blocking(move || {
        cp.restart_apiserver_with(Duration::from_secs(3), || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let http = reqwest::Client::new();
                let deleted: serde_json::Value = http
                    .post(format!("{}/v3/kv/deleterange", cp.etcd_url()))
                    .json(&json!({"key": BASE64.encode(&key)}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(deleted["deleted"], "1", "{key}: {deleted}");
                compact_etcd(cp, etcd_revision(cp).await).await;
            });
        })
        .expect("API server restarts")
    })
    .await
    .unwrap();
    assert!(
        env.connections().get_opt("gone").await.unwrap().is_none(),
        "`gone` still served"
    );
    operator.signal("CONT");
    let resumed = Instant::now();
    // Within the watcher's backoff after an outage (see resilience.rs).
    operator
        .wait_log("code: 410", Duration::from_secs(45))
        .await;

    let text = eventually(
        Duration::from_secs(20),
        "the deleted connection's series removed after the re-list",
        || {
            let url = operator.url("/metrics");
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                (!text.contains("name=\"gone\"")).then_some(text)
            }
        },
    )
    .await;
    println!(
        "forgotten {:?} after the operator resumed",
        resumed.elapsed()
    );
    assert_eq!(
        metric_value(&text, "pingone_operator_connections", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "pingone_operator_ready_status",
            &[("namespace", ns.as_str()), ("name", "keep")]
        ),
        Some(1.0)
    );
    assert!(
        metric_value(
            &text,
            "pingone_operator_token_expiration_timestamp_seconds",
            &[("name", "keep")]
        )
        .is_some()
    );
    let keep = env.connections().get("keep").await.unwrap();
    assert_eq!(TestEnv::condition(&keep, "Ready").status, "True");
    assert_eq!(
        env.standin.token_request_count(),
        2,
        "a token request for `keep`"
    );
}
