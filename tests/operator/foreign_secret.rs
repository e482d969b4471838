//! The operator never takes over a Secret it did not create, also when the Secret appears while
//! its token request is in flight.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use pingone_testbed::standin::Fault;
use serde_json::json;

use crate::support::*;

/// No Secret in the namespace holds any token the stand-in issued.
async fn no_issued_token_stored(env: &TestEnv) {
    let tokens = env.standin.issued_tokens();
    assert!(!tokens.is_empty(), "the stand-in issued no token");
    for s in env.secrets().list(&ListParams::default()).await.unwrap() {
        for (key, value) in s.data.clone().unwrap_or_default() {
            let value = String::from_utf8_lossy(&value.0);
            assert!(
                !tokens.iter().any(|t| value.contains(t.as_str())),
                "Secret {} key {key} holds an issued token",
                s.name_any()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_created_by_someone_else_during_the_token_request_is_left_alone() {
    let mut env = TestEnv::new("foreign").await;
    // The first token request hangs at PingOne for 4 s.
    env.standin
        .push_fault(Fault::Delay(Duration::from_secs(4)), 1);
    env.start_operator();
    env.create_connection("c", json!({})).await;
    eventually(Duration::from_secs(20), "token request in flight", || {
        let pending = env.standin.pending_faults();
        async move { (pending == 0).then_some(()) }
    })
    .await;

    // Meanwhile another tool creates the Secret the connection would write, owned by one of its
    // own objects.
    let configmaps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let owner = configmaps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("other-tool".into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([("purpose".into(), "test".into())])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let theirs = Secret {
        metadata: ObjectMeta {
            name: Some("c-token".into()),
            labels: Some(BTreeMap::from([("team".into(), "payments".into())])),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "other-tool".into(),
                uid: owner.uid().unwrap(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "config".into(),
            ByteString(b"theirs, not a token".to_vec()),
        )])),
        ..Default::default()
    };
    let created = env
        .secrets()
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    assert_eq!(
        env.standin.token_request_count(),
        0,
        "the delayed request answered before the Secret was created"
    );

    let conn = env
        .wait_stalled("c", "TargetSecretConflict", Duration::from_secs(30))
        .await;
    let message = &TestEnv::condition(&conn, "Stalled").message;
    assert!(message.contains("ConfigMap/other-tool"), "{message}");
    assert_eq!(TestEnv::condition(&conn, "Ready").status, "False");
    // The delayed request did get a token; it is written nowhere.
    eventually(Duration::from_secs(10), "the delayed token issued", || {
        let n = env.standin.issued_tokens().len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let now = env.secrets().get("c-token").await.unwrap();
    assert_eq!(now.data, created.data);
    assert_eq!(now.metadata.labels, created.metadata.labels);
    assert_eq!(
        now.metadata.owner_references,
        created.metadata.owner_references
    );
    assert_eq!(now.resource_version(), created.resource_version());
    no_issued_token_stored(&env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_with_an_unowned_secret_names_its_field_manager() {
    let mut env = TestEnv::new("unowned").await;
    let theirs = Secret {
        metadata: ObjectMeta {
            name: Some("c-token".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("config".into(), "theirs".into())])),
        ..Default::default()
    };
    let params = PostParams {
        field_manager: Some("handmade-by-ops".into()),
        ..Default::default()
    };
    let created = env.secrets().create(&params, &theirs).await.unwrap();
    env.start_operator();
    env.create_connection("c", json!({})).await;
    let conn = env
        .wait_stalled("c", "TargetSecretConflict", Duration::from_secs(30))
        .await;
    let message = &TestEnv::condition(&conn, "Stalled").message;
    assert!(
        message.contains("no owner") && message.contains("handmade-by-ops"),
        "{message}"
    );
    let now = env.secrets().get("c-token").await.unwrap();
    assert_eq!(now.resource_version(), created.resource_version());
    assert_eq!(env.standin.token_request_count(), 0);
}
