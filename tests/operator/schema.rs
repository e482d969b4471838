//! The API server rejects bad specs at apply time, with a message naming the field.

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use pingone_operator::api::PingOneConnection;
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn bad_specs_are_rejected_with_the_field_named() {
    let env = TestEnv::new("schema").await;
    let cases = [
        (
            json!({"environmentId": "CD91070F-C371-480E-80B2-753C735F8AA1"}),
            "spec.environmentId",
        ),
        (json!({"environmentId": "not-a-uuid"}), "spec.environmentId"),
        (
            json!({"authDomain": "https://auth.pingone.eu"}),
            "spec.authDomain",
        ),
        (
            json!({"authDomain": "auth.pingone.eu:443"}),
            "spec.authDomain",
        ),
        (json!({"authDomain": null}), "spec.authDomain"),
        (
            json!({"tokenEndpointAuthMethod": "private_key_jwt_or_so"}),
            "spec.tokenEndpointAuthMethod",
        ),
        (json!({"scopes": ["has space"]}), "spec.scopes[0]"),
        (json!({"scopes": ["a", "a"]}), "spec.scopes[1]"),
        (
            json!({"renewal": {"renewBefore": "10m", "renewBeforePercentage": 20}}),
            "spec.renewal",
        ),
        (
            json!({"renewal": {"renewBeforePercentage": 95}}),
            "spec.renewal.renewBeforePercentage",
        ),
        (
            json!({"renewal": {"renewBeforePercentage": 0}}),
            "spec.renewal.renewBeforePercentage",
        ),
        (
            json!({"renewal": {"renewBefore": "ten minutes"}}),
            "spec.renewal.renewBefore",
        ),
        (
            json!({"credentialsSecretRef": {"name": "Not_A_Name"}}),
            "spec.credentialsSecretRef.name",
        ),
        (
            json!({"credentialsSecretRef": {"name": "c", "clientIdKey": "bad key"}}),
            "spec.credentialsSecretRef.clientIdKey",
        ),
        (
            json!({"target": {"secretName": "UPPER"}}),
            "spec.target.secretName",
        ),
        (
            json!({"target": {"secretTemplate": {"labels": {"app.kubernetes.io/managed-by": "me"}}}}),
            "spec.target.secretTemplate.labels",
        ),
        // Assertion algorithms go with their method only.
        (
            json!({"tokenEndpointAuthMethod": "private_key_jwt", "clientAssertionAlgorithm": "HS256"}),
            "clientAssertionAlgorithm HS256, HS384 or HS512 goes with",
        ),
        (
            json!({"tokenEndpointAuthMethod": "client_secret_jwt", "clientAssertionAlgorithm": "RS256"}),
            "clientAssertionAlgorithm HS256, HS384 or HS512 goes with",
        ),
        (
            json!({"clientAssertionAlgorithm": "HS256"}),
            "clientAssertionAlgorithm HS256, HS384 or HS512 goes with",
        ),
        (
            json!({"tokenEndpointAuthMethod": "private_key_jwt", "clientAssertionAlgorithm": "ES512"}),
            "spec.clientAssertionAlgorithm",
        ),
        // Rotation: a secret to rotate, PingOne's bounds, a region for custom domains.
        (
            json!({"tokenEndpointAuthMethod": "private_key_jwt", "clientSecretRotation": {}}),
            "a private_key_jwt application has none",
        ),
        (
            json!({"clientSecretRotation": {"keepPreviousFor": "721h"}}),
            "keepPreviousFor must be between 1m and 720h",
        ),
        (
            json!({"clientSecretRotation": {"keepPreviousFor": "30s"}}),
            "keepPreviousFor must be between 1m and 720h",
        ),
        (
            json!({"clientSecretRotation": {"rotateEvery": "30m", "keepPreviousFor": "10m"}}),
            "rotateEvery must be between 1h and 8760h",
        ),
        (
            json!({"clientSecretRotation": {"rotateEvery": "24h", "keepPreviousFor": "48h"}}),
            "keepPreviousFor must be shorter than rotateEvery",
        ),
        (
            json!({"clientSecretRotation": {"rotateEvery": "30 days"}}),
            "spec.clientSecretRotation.rotateEvery",
        ),
        (
            json!({"authDomain": "login.example.com", "clientSecretRotation": {}}),
            "clientSecretRotation.apiDomain must name",
        ),
        (
            json!({"clientSecretRotation": {"apiDomain": "api.evil.com"}}),
            "spec.clientSecretRotation.apiDomain",
        ),
    ];
    // Untyped, so that specs the Rust types could not even express reach the API server.
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &ApiResource::erase::<PingOneConnection>(&()),
    );
    for (i, (overrides, field)) in cases.into_iter().enumerate() {
        let obj: DynamicObject =
            serde_json::from_value(env.connection_json(&format!("bad-{i}"), overrides.clone()))
                .unwrap();
        let err = api
            .create(&PostParams::default(), &obj)
            .await
            .expect_err(&format!("{overrides} must be rejected"));
        let text = err.to_string();
        assert!(
            text.contains(field),
            "{overrides}: {text} does not name {field}"
        );
    }
    // And a good one with every optional field passes.
    let good = env.connection_object(
        "good",
        json!({"tokenEndpointAuthMethod": "client_secret_basic",
               "scopes": ["billing:read"],
               "target": {"secretName": "x-token", "secretTemplate": {"labels": {"a": "b"}, "annotations": {"c": "d"}}},
               "renewal": {"renewBefore": "10m"}}),
    );
    let created = env
        .connections()
        .create(&PostParams::default(), &good)
        .await
        .unwrap();
    assert_eq!(
        created.spec.credentials_secret_ref.client_id_key,
        "clientId"
    );
    // The new methods with their options, and rotation with its defaults filled in.
    for (name, spec) in [
        (
            "good-jwt",
            json!({"tokenEndpointAuthMethod": "client_secret_jwt", "clientAssertionAlgorithm": "HS512",
                   "clientSecretRotation": {}}),
        ),
        (
            "good-key",
            json!({"tokenEndpointAuthMethod": "private_key_jwt", "clientAssertionAlgorithm": "ES384",
                   "credentialsSecretRef": {"name": "creds", "privateKeyKey": "tls.key"}}),
        ),
        (
            "good-custom",
            json!({"authDomain": "login.example.com",
                   "clientSecretRotation": {"apiDomain": "api.pingone.com.au", "rotateEvery": "2h", "keepPreviousFor": "1h59m"}}),
        ),
    ] {
        let created = env
            .connections()
            .create(
                &PostParams::default(),
                &env.connection_object(name, spec.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
        if name == "good-jwt" {
            let rotation = created.spec.client_secret_rotation.unwrap();
            assert_eq!(rotation.rotate_every, "720h");
            assert_eq!(rotation.keep_previous_for, "24h");
        }
        if name == "good-key" {
            assert_eq!(created.spec.credentials_secret_ref.key_id_key, "keyId");
            assert_eq!(
                created.spec.credentials_secret_ref.private_key_key,
                "tls.key"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_connection_is_accepted_by_the_schema() {
    let env = TestEnv::new("examples").await;
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &ApiResource::erase::<PingOneConnection>(&()),
    );
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_json::to_value(
                <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc).unwrap(),
            )
            .unwrap();
            if value["kind"] != "PingOneConnection" {
                continue;
            }
            let mut obj: DynamicObject = serde_json::from_value(value).unwrap();
            obj.metadata.namespace = Some(env.ns.clone());
            let params = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            api.create(&params, &obj)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked.push(obj.metadata.name.unwrap());
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "billing-api",
            "billing-api-jwt",
            "billing-api-key",
            "billing-api-rotated",
            "reports-api"
        ]
    );
}
