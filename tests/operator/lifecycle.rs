//! A connection becomes a token Secret; the Secret is kept, restored, collected, and never
//! taken from someone else.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use pingone_testbed::standin::{AuthMethod, ClientRegistration, RecordedAuthMethod, StandInConfig};
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_becomes_ready_with_a_verified_token_in_its_secret() {
    let mut env = TestEnv::new("ready").await;
    env.start_operator();
    env.create_connection(
        "billing",
        json!({"target": {"secretTemplate": {
            "labels": {"team": "payments"},
            "annotations": {"reloader.stakater.com/match": "true"}}}}),
    )
    .await;
    let conn = env.wait_ready("billing").await;

    let secret = env
        .token_secret("billing-token")
        .await
        .expect("token Secret exists");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let token = data(&secret, "access_token").unwrap();
    let claims = env
        .standin
        .verify_token(&token)
        .expect("JWT verifies against the JWKS");
    assert_eq!(claims["client_id"], CLIENT_ID);
    assert_eq!(claims["env"], ENV_ID);
    assert_eq!(
        claims["iss"],
        format!("https://auth.pingone.eu/{ENV_ID}/as")
    );
    assert_eq!(data(&secret, "token_type").as_deref(), Some("Bearer"));
    let expires_at = data(&secret, "expires_at").unwrap();
    assert!(expires_at.ends_with('Z'), "{expires_at}");
    assert!(
        data(&secret, "scope").is_none(),
        "no scope key without granted scopes"
    );

    assert_eq!(
        secret.labels()["app.kubernetes.io/managed-by"],
        "pingone-operator"
    );
    assert_eq!(
        secret.labels()["pingone.tokenops.dev/connection"],
        "billing"
    );
    assert_eq!(secret.labels()["team"], "payments");
    assert_eq!(secret.annotations()["reloader.stakater.com/match"], "true");
    for key in [
        "issued-at",
        "expires-at",
        "renew-at",
        "inputs-digest",
        "renewal-jitter",
    ] {
        assert!(
            secret
                .annotations()
                .contains_key(&format!("pingone.tokenops.dev/{key}")),
            "annotation {key}"
        );
    }
    let all_metadata = serde_json::to_string(&secret.metadata).unwrap();
    assert!(!all_metadata.contains(CLIENT_SECRET) && !all_metadata.contains(CLIENT_ID));
    let owner = &secret.owner_references()[0];
    assert_eq!(owner.kind, "PingOneConnection");
    assert_eq!(Some(&owner.uid), conn.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));

    let status = conn.status.as_ref().unwrap();
    assert_eq!(status.observed_generation, conn.metadata.generation);
    assert_eq!(status.token_secret_name.as_deref(), Some("billing-token"));
    assert_eq!(status.token_type.as_deref(), Some("Bearer"));
    assert_eq!(status.failed_attempts, 0);
    let expires = status.expires_at.as_ref().unwrap().0;
    assert_eq!(expires.to_string(), expires_at);
    let issued = status.issued_at.as_ref().unwrap().0;
    assert_eq!(expires.duration_since(issued).as_secs(), 3600);
    let renewal = status.renewal_time.as_ref().unwrap().0;
    // A first token: 33% before expiry, brought forward by up to half the lifetime, so that
    // connections created together spread their renewals.
    let before = expires.duration_since(renewal).as_secs();
    assert!(
        (1188..=1188 + 1800).contains(&before),
        "renewal {before}s before expiry"
    );
    for c in &status.conditions {
        assert_eq!(
            c.observed_generation, conn.metadata.generation,
            "{}",
            c.type_
        );
    }
    assert_eq!(TestEnv::condition(&conn, "Ready").reason, "TokenIssued");
    assert_eq!(TestEnv::condition(&conn, "Stalled").status, "False");
    assert_eq!(TestEnv::condition(&conn, "Reconciling").status, "False");

    let requests = env.standin.requests();
    assert_eq!(requests.len(), 1, "exactly one token request");
    let r = &requests[0];
    assert_eq!(r.path, format!("/{ENV_ID}/as/token"));
    assert_eq!(r.sni.as_deref(), Some("auth.pingone.eu"));
    assert_eq!(r.auth_method, RecordedAuthMethod::Post);
    assert_eq!(r.client_id.as_deref(), Some(CLIENT_ID));
    assert!(r.client_secret_ok);
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_authentication_and_scopes_reach_pingone_and_the_secret() {
    let mut env = TestEnv::new("basic").await;
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, "basic-client", "b@sic:secret/+")
            .with_auth_method(AuthMethod::ClientSecretBasic)
            .with_scopes(["billing:read", "billing:write"]),
    );
    env.put_credentials("basic-creds", "basic-client", "b@sic:secret/+")
        .await;
    env.start_operator();
    env.create_connection(
        "scoped",
        json!({"credentialsSecretRef": {"name": "basic-creds"},
               "tokenEndpointAuthMethod": "client_secret_basic",
               "scopes": ["billing:read", "billing:write"]}),
    )
    .await;
    let conn = env.wait_ready("scoped").await;
    let secret = env.token_secret("scoped-token").await.unwrap();
    assert_eq!(
        data(&secret, "scope").as_deref(),
        Some("billing:read billing:write")
    );
    assert_eq!(
        conn.status.unwrap().granted_scopes,
        vec!["billing:read".to_string(), "billing:write".to_string()]
    );
    let r = &env.standin.requests()[0];
    assert_eq!(r.auth_method, RecordedAuthMethod::Basic);
    assert_eq!(r.scope.as_deref(), Some("billing:read billing:write"));
    assert!(r.client_secret_ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_custom_domain_uses_the_path_without_environment() {
    let config = StandInConfig {
        extra_dns_names: vec!["login.example.com".into()],
        custom_domains: vec![("login.example.com".into(), ENV_ID.into())],
        ..StandInConfig::default()
    };
    let mut env = TestEnv::with_standin("custom", config).await;
    env.start_operator_with(test_timing(), &["login.example.com"]);
    env.create_connection("custom", json!({"authDomain": "login.example.com"}))
        .await;
    env.wait_ready("custom").await;
    let r = &env.standin.requests()[0];
    assert_eq!(r.path, "/as/token");
    assert_eq!(r.sni.as_deref(), Some("login.example.com"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_minute_costs_no_token_request_and_no_write() {
    let mut env = TestEnv::new("idle").await;
    env.start_operator();
    env.create_connection("idle", json!({})).await;
    env.wait_ready("idle").await;
    // Let the writes of the first reconcile settle and their watch events come back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests = env.standin.token_request_count();
    let writes = env.metrics.encode();
    let secret_rv = env
        .token_secret("idle-token")
        .await
        .unwrap()
        .resource_version();
    let conn_rv = env
        .connections()
        .get("idle")
        .await
        .unwrap()
        .resource_version();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        env.standin.token_request_count(),
        requests,
        "token requests while idle"
    );
    assert_eq!(
        write_counts(&env.metrics.encode()),
        write_counts(&writes),
        "Kubernetes writes while idle"
    );
    assert_eq!(
        env.token_secret("idle-token")
            .await
            .unwrap()
            .resource_version(),
        secret_rv
    );
    assert_eq!(
        env.connections()
            .get("idle")
            .await
            .unwrap()
            .resource_version(),
        conn_rv
    );
}

fn write_counts(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("pingone_operator_kubernetes_writes_total"))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_client_secret_yields_a_token_issued_with_it_within_seconds() {
    let mut env = TestEnv::new("rotate").await;
    env.start_operator();
    env.create_connection("rot", json!({})).await;
    env.wait_ready("rot").await;
    let before = env.token_secret("rot-token").await.unwrap();
    let old_digest = before.annotations()["pingone.tokenops.dev/inputs-digest"].clone();

    // The secret is rotated in PingOne, then in the credentials Secret.
    env.standin
        .add_client(ClientRegistration::new(ENV_ID, CLIENT_ID, "n3w-s3cret"));
    let changed = Instant::now();
    env.put_credentials("creds", CLIENT_ID, "n3w-s3cret").await;
    let secrets = env.secrets();
    let after: Secret = eventually(
        Duration::from_secs(5),
        "token issued with the new secret",
        || {
            let secrets = secrets.clone();
            let old_digest = old_digest.clone();
            async move {
                let s = secrets.get("rot-token").await.ok()?;
                (s.annotations()["pingone.tokenops.dev/inputs-digest"] != old_digest).then_some(s)
            }
        },
    )
    .await;
    let took = changed.elapsed();
    assert_ne!(data(&after, "access_token"), data(&before, "access_token"));
    let last = env.standin.requests().last().cloned().unwrap();
    assert!(last.client_secret_ok && last.status == 200, "{last:?}");
    println!("credentials change to new token: {took:?}");
    env.wait_ready("rot").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_or_edited_token_secret_is_restored() {
    let mut env = TestEnv::new("restore").await;
    env.start_operator();
    env.create_connection("svc", json!({})).await;
    env.wait_ready("svc").await;
    let secrets = env.secrets();

    // Deleted: recreated with a fresh token.
    let original = secrets.get("svc-token").await.unwrap();
    secrets
        .delete("svc-token", &DeleteParams::default())
        .await
        .unwrap();
    let restored: Secret = eventually(Duration::from_secs(10), "deleted Secret restored", || {
        let secrets = secrets.clone();
        let uid = original.uid();
        async move {
            secrets
                .get_opt("svc-token")
                .await
                .ok()?
                .filter(|s| s.uid() != uid)
        }
    })
    .await;
    let token = data(&restored, "access_token").unwrap();
    env.standin
        .verify_token(&token)
        .expect("restored token is valid");

    // Token edited: replaced by a valid token.
    let patch = json!({"stringData": {"access_token": "forged"}});
    secrets
        .patch("svc-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let repaired: Secret = eventually(Duration::from_secs(10), "edited token replaced", || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get("svc-token").await.ok()?;
            (data(&s, "access_token")? != "forged").then_some(s)
        }
    })
    .await;
    env.standin
        .verify_token(&data(&repaired, "access_token").unwrap())
        .expect("replacement token is valid");

    // The expiry moved a year on, in the annotation and in the data alike: a token whose
    // times no longer match their keyed digest is replaced, not trusted until next year.
    let later = "2027-12-01T00:00:00Z";
    let patch = json!({
        "metadata": {"annotations": {"pingone.tokenops.dev/expires-at": later}},
        "stringData": {"expires_at": later},
    });
    secrets
        .patch("svc-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let repaired: Secret = eventually(Duration::from_secs(10), "edited expiry replaced", || {
        let secrets = secrets.clone();
        let before = data(&repaired, "access_token");
        async move {
            let s = secrets.get("svc-token").await.ok()?;
            (data(&s, "access_token") != before && data(&s, "expires_at")? != later).then_some(s)
        }
    })
    .await;
    env.standin
        .verify_token(&data(&repaired, "access_token").unwrap())
        .expect("replacement token is valid");

    // Labels removed: put back without a new token.
    let requests = env.standin.token_request_count();
    let patch = json!({"metadata": {"labels": {"pingone.tokenops.dev/connection": null, "app.kubernetes.io/managed-by": null}}});
    secrets
        .patch("svc-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "labels restored", || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get("svc-token").await.ok()?;
            s.labels()
                .contains_key("pingone.tokenops.dev/connection")
                .then_some(())
        }
    })
    .await;
    let after = secrets.get("svc-token").await.unwrap();
    assert_eq!(
        data(&after, "access_token"),
        data(&repaired, "access_token")
    );
    assert_eq!(
        env.standin.token_request_count(),
        requests,
        "no token request for a label repair"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_connection_garbage_collects_its_secret() {
    let mut env = TestEnv::new("gc").await;
    env.start_operator();
    env.create_connection("gone", json!({})).await;
    env.wait_ready("gone").await;
    env.delete_connection("gone").await;
    let secrets = env.secrets();
    eventually(Duration::from_secs(60), "token Secret collected", || {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt("gone-token")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    // The credentials are the user's: untouched.
    assert!(secrets.get_opt("creds").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_owned_by_someone_else_is_never_overwritten() {
    let mut env = TestEnv::new("conflict").await;
    let foreign: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "taken-token", "labels": {"owner": "someone"}},
        "stringData": {"access_token": "theirs"},
    }))
    .unwrap();
    let secrets = env.secrets();
    let foreign = secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    env.start_operator();
    env.create_connection("taken", json!({})).await;
    let conn = env
        .wait_stalled("taken", "TargetSecretConflict", Duration::from_secs(30))
        .await;
    let ready = TestEnv::condition(&conn, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "TargetSecretConflict")
    );
    assert!(ready.message.contains("taken-token"), "{}", ready.message);
    let now = secrets.get("taken-token").await.unwrap();
    assert_eq!(
        now.resource_version(),
        foreign.resource_version(),
        "foreign Secret untouched"
    );
    assert_eq!(data(&now, "access_token").as_deref(), Some("theirs"));
    assert_eq!(
        env.standin.token_request_count(),
        0,
        "no token requested for a Secret it cannot write"
    );

    // Once the other Secret is gone, the operator takes the name.
    secrets
        .delete("taken-token", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_ready("taken").await;
}
