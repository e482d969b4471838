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
}
