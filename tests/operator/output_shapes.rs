//! Output shapes: other key names and extra entries rendered from the token's fields.

use std::time::Duration;

use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::*;

fn keys(secret: &k8s_openapi::api::core::v1::Secret) -> Vec<String> {
    secret
        .data
        .as_ref()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_renamed_and_entries_rendered_and_a_layout_change_needs_no_new_token() {
    let mut env = TestEnv::new("shapes").await;
    env.start_operator();
    env.create_connection(
        "c",
        json!({"target": {
            "keys": {"accessToken": "token"},
            "extraEntries": [
                {"key": "authorization", "template": "Authorization: {{ .tokenType }} {{ .accessToken }}"},
                {"key": "token.env", "template": "TOKEN={{.accessToken}}\nEXPIRES_AT={{ .expiresAt }}\n"},
            ],
        }}),
    )
    .await;
    env.wait_ready("c").await;
    let secret = env.token_secret("c-token").await.unwrap();
    assert_eq!(
        keys(&secret),
        [
            "authorization",
            "expires_at",
            "token",
            "token.env",
            "token_type"
        ]
    );
    let token = data(&secret, "token").unwrap();
    let expires = data(&secret, "expires_at").unwrap();
    assert_eq!(
        data(&secret, "authorization").unwrap(),
        format!("Authorization: Bearer {token}")
    );
    assert_eq!(
        data(&secret, "token.env").unwrap(),
        format!("TOKEN={token}\nEXPIRES_AT={expires}\n")
    );
    assert!(
        env.standin.verify_token(&token).is_ok(),
        "the renamed key holds the token"
    );
    assert_eq!(env.standin.token_request_count(), 1);

    // Someone edits an entry: put back, with the same token.
    let mut edited = secret.clone();
    edited.metadata.managed_fields = None;
    edited.data.as_mut().unwrap().insert(
        "authorization".into(),
        k8s_openapi::ByteString(b"tampered".to_vec()),
    );
    env.secrets()
        .replace("c-token", &PostParams::default(), &edited)
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "entry repaired", || async {
        let s = env.token_secret("c-token").await?;
        (data(&s, "authorization")? == format!("Authorization: Bearer {token}")).then_some(())
    })
    .await;

    // Back to the default key, without the env file: the Secret follows, no new token, and
    // the keys it no longer has are gone.
    env.connections()
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"target": {
                "keys": null,
                "extraEntries": [{"key": "authorization", "template": "Bearer {{ .accessToken }}"}],
            }}})),
        )
        .await
        .unwrap();
    let secret = eventually(Duration::from_secs(20), "new layout written", || async {
        let s = env.token_secret("c-token").await?;
        (keys(&s) == ["access_token", "authorization", "expires_at", "token_type"]).then_some(s)
    })
    .await;
    assert_eq!(data(&secret, "access_token").unwrap(), token, "same token");
    assert_eq!(
        data(&secret, "authorization").unwrap(),
        format!("Bearer {token}")
    );
    assert_eq!(
        env.standin.token_request_count(),
        1,
        "a layout change asks PingOne for nothing"
    );
    env.wait_ready("c").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_templates_are_rejected_at_apply_time_and_collisions_named_in_a_condition() {
    let mut env = TestEnv::new("shapes-bad").await;
    for template in ["{{ .clientSecret }}", "{{ .accessToken ", "{\"json\": 1}"] {
        let obj = env.connection_object(
            "bad",
            json!({"target": {"extraEntries": [{"key": "x", "template": template}]}}),
        );
        let err = env
            .connections()
            .create(&PostParams::default(), &obj)
            .await
            .expect_err(template);
        assert!(
            err.to_string().contains("extraEntries[0].template"),
            "{template}: {err}"
        );
    }
    let obj = env.connection_object(
        "bad",
        json!({"target": {"keys": {"accessToken": "bad key!"}}}),
    );
    assert!(
        env.connections()
            .create(&PostParams::default(), &obj)
            .await
            .is_err()
    );

    // A collision the schema cannot see: a condition names the key; nothing is requested.
    env.start_operator();
    env.create_connection(
        "clash",
        json!({"target": {
            "keys": {"accessToken": "authorization"},
            "extraEntries": [{"key": "authorization", "template": "Bearer {{ .accessToken }}"}],
        }}),
    )
    .await;
    let conn = env
        .wait_stalled("clash", "TargetTemplateInvalid", Duration::from_secs(20))
        .await;
    let message = &TestEnv::condition(&conn, "Stalled").message;
    assert!(
        message.contains("\"authorization\" is used twice"),
        "{message}"
    );
    assert_eq!(env.standin.token_request_count(), 0);
}
