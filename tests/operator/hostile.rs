//! Hostile and bad input: other namespaces, bad credential values, leaks, least privilege.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use pingone_operator::api::PingOneConnection;
use pingone_testbed::standin::{AuthMethod, ClientRegistration, Fault};
use serde_json::json;

use crate::process::OperatorProcess;
use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_cannot_reach_a_secret_in_another_namespace() {
    let mut env = TestEnv::new("xns").await;
    // The Secret exists, but in another namespace.
    let other = env.cp.namespace("xns-other").await.unwrap();
    let foreign: Api<Secret> = Api::namespaced(env.client.clone(), &other);
    let s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "elsewhere"},
        "stringData": {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET},
    }))
    .unwrap();
    foreign.create(&PostParams::default(), &s).await.unwrap();

    // kubectl (strict field validation) refuses a namespace field outright.
    let manifest = serde_json::to_string(&env.connection_json(
        "x",
        json!({"credentialsSecretRef": {"name": "elsewhere", "namespace": other}}),
    ))
    .unwrap();
    let path = env.cp.dir().join(format!("xns-{}.json", env.ns));
    std::fs::write(&path, manifest).unwrap();
    let mut cmd = env.cp.kubectl();
    cmd.args(["apply", "-n", &env.ns, "-f"]).arg(&path);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown field") && stderr.contains("namespace"),
        "{stderr}"
    );

    // Through the API without strict validation the field is pruned, never used.
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &ApiResource::erase::<PingOneConnection>(&()),
    );
    let obj: DynamicObject = serde_json::from_value(env.connection_json(
        "x",
        json!({"credentialsSecretRef": {"name": "elsewhere", "namespace": other}}),
    ))
    .unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert!(
        created.data["spec"]["credentialsSecretRef"]
            .get("namespace")
            .is_none()
    );
    env.start_operator();
    let conn = env
        .wait_stalled("x", "CredentialsNotFound", Duration::from_secs(30))
        .await;
    let message = &TestEnv::condition(&conn, "Ready").message;
    assert!(
        message.contains(&env.ns) && !message.contains(&other),
        "{message}"
    );
    assert_eq!(env.standin.token_request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn credential_values_the_schema_cannot_check_get_a_clear_condition() {
    let mut env = TestEnv::new("badvalues").await;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("empty", b"".to_vec(), "value is empty"),
        ("binary", b"\xff\xfe\xfd".to_vec(), "not valid UTF-8"),
        // Half a MiB: the API server's limit for a whole Secret is 1 MiB.
        ("huge", vec![b'a'; 512 * 1024], "longer than 4096 bytes"),
        ("control", b"sec\x07ret".to_vec(), "control characters"),
    ];
    for (name, value, _) in &cases {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(format!("creds-{name}")),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (
                    "clientId".to_string(),
                    ByteString(CLIENT_ID.as_bytes().to_vec()),
                ),
                ("clientSecret".to_string(), ByteString(value.clone())),
            ])),
            ..Default::default()
        };
        env.secrets()
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
        env.create_connection(
            name,
            json!({"credentialsSecretRef": {"name": format!("creds-{name}")}}),
        )
        .await;
    }
    env.start_operator();
    for (name, _, problem) in &cases {
        let conn = env
            .wait_stalled(name, "CredentialsInvalid", Duration::from_secs(30))
            .await;
        let message = &TestEnv::condition(&conn, "Ready").message;
        assert!(
            message.contains(&format!("creds-{name}"))
                && message.contains("clientSecret")
                && message.contains(problem),
            "{name}: {message}"
        );
    }
    assert_eq!(env.standin.token_request_count(), 0);
}

/// Everything the operator said: logs, Events, statuses. None may contain a secret or token.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_or_token_appears_in_logs_events_or_status() {
    no_secret_or_token_leaks(AuthMethod::ClientSecretPost).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_or_token_appears_in_logs_events_or_status_with_basic_auth() {
    no_secret_or_token_leaks(AuthMethod::ClientSecretBasic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_or_token_appears_in_logs_events_or_status_with_client_secret_jwt() {
    no_secret_or_token_leaks(AuthMethod::ClientSecretJwt).await;
}

/// `value` as it could turn up in text: verbatim, form-urlencoded (a request body), and
/// base64-encoded (Secret data, an `Authorization: Basic` header), padded and not.
pub(crate) fn encodings(what: &str, value: &str) -> Vec<(String, String)> {
    let urlencoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let base64 = STANDARD.encode(value);
    let mut forms = vec![
        (what.to_string(), value.to_string()),
        (format!("{what}, form-urlencoded"), urlencoded),
        (
            format!("{what}, base64"),
            base64.trim_end_matches('=').to_string(),
        ),
        (format!("{what}, base64url"), URL_SAFE_NO_PAD.encode(value)),
    ];
    forms.dedup_by(|a, b| a.1 == b.1);
    forms
}

/// Runs the operator through success, renewals, rotation and every failure kind with clients
/// that authenticate with `method`, then searches its logs, the Events and every status for the
/// client secrets and the tokens in any encoding.
async fn no_secret_or_token_leaks(method: AuthMethod) {
    let env = TestEnv::new("leak").await;
    env.standin.set_token_lifetime(Duration::from_secs(20));
    let method_name = method.as_str();
    let register = |secret: &str| {
        env.standin.add_client(
            ClientRegistration::new(ENV_ID, CLIENT_ID, secret).with_auth_method(method),
        );
    };
    register(CLIENT_SECRET);
    let secrets_used = [
        CLIENT_SECRET.to_string(),
        "leak-wrong-secret-0xDEADBEEF".to_string(),
        "leak-rotated-secret-0xC0FFEE".to_string(),
    ];
    env.put_credentials("wrong", CLIENT_ID, &secrets_used[1])
        .await;
    let half: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "half"},
        "stringData": {"clientId": CLIENT_ID},
    }))
    .unwrap();
    env.secrets()
        .create(&PostParams::default(), &half)
        .await
        .unwrap();

    // Everything the operator and its HTTP and Kubernetes clients log, down to debug.
    let operator = OperatorProcess::start_logging(
        &env,
        "debug,pingone_operator=trace",
        &["--leader-election=false", "--min-renewal-interval=2s"],
    );
    let env_ref = &env;
    let create = move |name: &'static str, mut spec: serde_json::Value| {
        spec["tokenEndpointAuthMethod"] = json!(method_name);
        async move { env_ref.create_connection(name, spec).await }
    };
    // Success, renewals, and every failure kind.
    create("ok", json!({})).await;
    env.wait_ready("ok").await;
    env.standin
        .push_fault(Fault::status_with_retry_after(429, 1), 1);
    env.standin.push_fault(Fault::status(503), 1);
    env.standin.push_fault(Fault::MalformedJson, 1);
    env.standin.push_fault(Fault::Oversized(200_000), 1);
    env.standin.push_fault(Fault::DropConnection, 1);
    env.standin.push_fault(Fault::ExpiresIn(0), 1);
    create("wrong", json!({"credentialsSecretRef": {"name": "wrong"}})).await;
    create("scope", json!({"scopes": ["admin:everything"]})).await;
    create("domain", json!({"authDomain": "login.attacker.example"})).await;
    create("half", json!({"credentialsSecretRef": {"name": "half"}})).await;
    create("faulty", json!({})).await;
    env.wait_ready("faulty").await;
    for (name, reason) in [
        ("wrong", "InvalidClient"),
        ("scope", "InvalidScope"),
        ("domain", "AuthDomainNotAllowed"),
        ("half", "CredentialsKeyMissing"),
    ] {
        env.wait_stalled(name, reason, Duration::from_secs(30))
            .await;
    }
    // Rotation of the secret, and a tampered token Secret.
    register(&secrets_used[2]);
    env.put_credentials("creds", CLIENT_ID, &secrets_used[2])
        .await;
    env.secrets()
        .patch(
            "ok-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"access_token": "tampered"}})),
        )
        .await
        .unwrap();
    // Two renewals of the 20 s tokens.
    tokio::time::sleep(Duration::from_secs(25)).await;
    env.wait_ready("ok").await;
    // The requests used the method under test.
    let methods: BTreeSet<String> = env
        .standin
        .requests()
        .iter()
        .map(|r| serde_json::to_value(r.auth_method).unwrap().to_string())
        .collect();
    assert_eq!(methods, BTreeSet::from([format!("{method_name:?}")]));

    let tokens = env.standin.issued_tokens();
    assert!(tokens.len() >= 5, "only {} tokens issued", tokens.len());
    let mut haystacks = vec![("operator logs".to_string(), operator.output())];
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    for e in events.list(&ListParams::default()).await.unwrap() {
        haystacks.push((
            format!("event {:?}", e.reason),
            serde_json::to_string(&e).unwrap(),
        ));
    }
    for c in env
        .connections()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        haystacks.push((
            format!("status of {:?}", c.metadata.name),
            serde_json::to_string(&c.status).unwrap(),
        ));
    }
    assert!(
        haystacks.len() > 10,
        "too little to search: {}",
        haystacks.len()
    );
    assert!(haystacks[0].1.lines().count() > 10, "too few log lines");
    let mut needles: Vec<(String, String)> = Vec::new();
    for s in &secrets_used {
        needles.extend(encodings(&format!("client secret {s:?}"), s));
        // What an `Authorization: Basic` header carries.
        let id: String = form_urlencoded::byte_serialize(CLIENT_ID.as_bytes()).collect();
        let password: String = form_urlencoded::byte_serialize(s.as_bytes()).collect();
        needles.push((
            format!("Basic credentials with {s:?}"),
            STANDARD.encode(format!("{id}:{password}")),
        ));
    }
    // The encodings must differ from the value, or the search covers less than it says.
    assert_ne!(needles[0].1, needles[1].1, "{needles:?}");
    for (i, t) in tokens.iter().enumerate() {
        needles.extend(encodings(&format!("token #{i}"), t));
        // The signature alone would be enough to use a stolen token's identity elsewhere.
        if let Some(sig) = t.rsplit('.').next() {
            needles.push((format!("token #{i} signature"), sig.to_string()));
        }
    }
    let mut hits = Vec::new();
    for (what, hay) in &haystacks {
        for (name, needle) in &needles {
            if hay.contains(needle.as_str()) {
                hits.push(format!("{name} in {what}"));
            }
        }
    }
    assert!(hits.is_empty(), "leaks: {hits:#?}");
    drop(operator);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_namespaced_rbac_the_operator_works_in_its_namespaces_and_reads_nothing_else() {
    let env = TestEnv::new("nsrbac").await;
    // The shipped namespaced variant, moved to this test's namespaces.
    let operator_ns = format!("op-{}", env.ns);
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let ns_obj = Namespace {
        metadata: ObjectMeta {
            name: Some(operator_ns.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns_obj)
        .await
        .unwrap();
    let rewrite = |text: &str| {
        text.replace("namespace: team-a", &format!("namespace: {}", env.ns))
            .replace(
                "namespace: pingone-operator",
                &format!("namespace: {operator_ns}"),
            )
    };
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    let mut docs = String::new();
    for f in [
        "base/serviceaccount.yaml",
        "base/leader-election-role.yaml",
        "base/digest-key-role.yaml",
        "namespaced/role.yaml",
    ] {
        docs.push_str(&rewrite(
            &std::fs::read_to_string(format!("{deploy}/{f}")).unwrap(),
        ));
        docs.push_str("\n---\n");
    }
    assert!(
        !docs.contains("kind: ClusterRole"),
        "namespaced variant must not use a ClusterRole"
    );
    let path = env.cp.dir().join(format!("nsrbac-{}.yaml", env.ns));
    std::fs::write(&path, &docs).unwrap();
    let mut cmd = env.cp.kubectl();
    cmd.args(["apply", "--server-side", "-f"]).arg(&path);
    run_ok(cmd, &docs).await;

    let kubeconfig = env
        .cp
        .serviceaccount_kubeconfig(&operator_ns, "pingone-operator")
        .await
        .unwrap();
    let operator = OperatorProcess::start_with_lease(
        &env,
        &kubeconfig,
        (&operator_ns, "pingone-operator"),
        &[],
    );
    env.create_connection("scoped", json!({})).await;
    env.wait_ready("scoped").await;
    assert!(
        !operator.output().to_lowercase().contains("forbidden"),
        "{}",
        operator.output()
    );

    // It cannot read Secrets anywhere else.
    let as_operator = pingone_testbed::controlplane::client_from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    for ns in ["default", "kube-system"] {
        let other: Api<Secret> = Api::namespaced(as_operator.clone(), ns);
        let err = other.list(&ListParams::default()).await.unwrap_err();
        assert!(err.to_string().contains("forbidden"), "{ns}: {err}");
    }
    let all: Api<Secret> = Api::all(as_operator.clone());
    assert!(
        all.list(&ListParams::default()).await.is_err(),
        "cluster-wide Secret list allowed"
    );
    // In its own namespace it created its digest key Secret and may read that one only.
    let own: Api<Secret> = Api::namespaced(as_operator.clone(), &operator_ns);
    let key = own
        .get("pingone-operator-digest-key")
        .await
        .expect("the digest key Secret, readable by the operator");
    assert_eq!(key.data.as_ref().unwrap()["key"].0.len(), 32);
    assert_eq!(
        key.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "pingone-operator"
    );
    let err = own.list(&ListParams::default()).await.unwrap_err();
    assert!(err.to_string().contains("forbidden"), "{err}");
    let admin_secrets: Api<Secret> = Api::namespaced(env.client.clone(), &operator_ns);
    admin_secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
        )
        .await
        .unwrap();
    let err = own.get("other").await.unwrap_err();
    assert!(err.to_string().contains("forbidden"), "{err}");
    let sa = format!("--as=system:serviceaccount:{operator_ns}:pingone-operator");
    let mut cmd = env.cp.kubectl();
    cmd.args(["auth", "can-i", "get", "secrets", "-n", "default", &sa]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
}
