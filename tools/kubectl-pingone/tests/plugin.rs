//! `kubectl-pingone` against the real control plane (tests/testbed), with the operator running
//! in-process on the test's namespace and the PingOne stand-in answering token requests.

use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use pingone_operator::api::PingOneConnection;
use pingone_operator::controller::digest_key::DigestKey;
use pingone_operator::controller::{self, Context, ControllerConfig, schedule::Timing};
use pingone_operator::metrics::Metrics;
use pingone_operator::pingone::{
    API_DOMAINS, REGIONAL_AUTH_DOMAINS, TokenClient, TokenClientConfig,
};
use pingone_testbed::controlplane::ControlPlane;
use pingone_testbed::standin::{ClientRegistration, StandIn, StandInConfig};
use serde_json::json;

#[allow(dead_code)]
#[path = "../src/readme.rs"]
mod readme;

const CRD: &str = include_str!("../../../crds/pingoneconnections.pingone.tokenops.dev.yaml");
const ENV_ID: &str = "cd91070f-c371-480e-80b2-753c735f8aa1";
const CLIENT_ID: &str = "6f5b6ab5-0c4e-4ea4-9d3b-1c1f0f6a1d01";
const CLIENT_SECRET: &str = "plugin-test-secret";

/// A namespace with a credentials Secret `creds`, a stand-in, and the operator watching the
/// namespace until the test ends.
struct Env {
    cp: &'static ControlPlane,
    client: Client,
    ns: String,
    standin: StandIn,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Env {
    async fn new(prefix: &str) -> Env {
        pingone_operator::pingone::install_crypto_provider();
        let cp = ControlPlane::shared();
        cp.install_crds(CRD).await.expect("CRD installs");
        let client = cp.client().await.expect("client");
        let ns = cp.namespace(prefix).await.expect("namespace");
        let standin = StandIn::start(StandInConfig::default())
            .await
            .expect("stand-in starts");
        standin.add_client(ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET));
        let creds: Secret = serde_json::from_value(json!({
            "metadata": {"name": "creds"},
            "stringData": {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET},
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &creds)
            .await
            .unwrap();

        let addr = standin.addr();
        let tokens = TokenClient::new(TokenClientConfig {
            extra_ca_pem: Some(standin.ca_pem().as_bytes().to_vec()),
            host_overrides: REGIONAL_AUTH_DOMAINS
                .iter()
                .chain(API_DOMAINS.iter())
                .map(|d| (d.to_string(), addr))
                .collect(),
            request_timeout: Duration::from_secs(5),
            ..TokenClientConfig::default()
        })
        .expect("token client");
        let ctx = Arc::new(Context::new(
            client.clone(),
            tokens,
            Arc::new(Metrics::new()),
            Timing {
                min_interval: Duration::from_secs(2),
                ..Timing::default()
            },
            DigestKey::random(),
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = ControllerConfig {
            namespaces: vec![ns.clone()],
            concurrency: 4,
            ..Default::default()
        };
        tokio::spawn(controller::run(ctx, config, async {
            let _ = stopped.await;
        }));
        Env {
            cp,
            client,
            ns,
            standin,
            stop: Some(stop),
        }
    }

    /// A credentials Secret `name` holding `client_id` and `secret`.
    async fn credentials(&self, name: &str, client_id: &str, secret: &str) {
        let creds: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {"clientId": client_id, "clientSecret": secret},
        }))
        .unwrap();
        Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &creds)
            .await
            .unwrap();
    }

    async fn connection(&self, name: &str, credentials: &str) {
        let obj: PingOneConnection = serde_json::from_value(json!({
            "apiVersion": "pingone.tokenops.dev/v1alpha1",
            "kind": "PingOneConnection",
            "metadata": {"name": name},
            "spec": {
                "authDomain": "auth.pingone.eu",
                "environmentId": ENV_ID,
                "credentialsSecretRef": {"name": credentials},
            },
        }))
        .unwrap();
        Api::<PingOneConnection>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }

    /// Waits until condition `type_` of `name` has `reason`.
    async fn wait_reason(&self, name: &str, type_: &str, reason: &str) {
        let api = Api::<PingOneConnection>::namespaced(self.client.clone(), &self.ns);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = api.get(name).await.ok().and_then(|c| {
                c.status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == type_ && c.reason == reason)
            });
            if found.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {type_} {reason} not within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the plugin with the admin kubeconfig and `args`; fails the test on a non-zero exit.
    async fn plugin(&self, args: &[&str]) -> (String, String) {
        let out = self.plugin_output(args, true).await;
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "kubectl-pingone {args:?}: {}\n{stdout}\n{stderr}",
            out.status
        );
        (stdout, stderr)
    }

    async fn plugin_output(&self, args: &[&str], kubeconfig_flag: bool) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-pingone"));
        if kubeconfig_flag {
            cmd.arg(format!("--kubeconfig={}", self.cp.kubeconfig().display()));
        } else {
            cmd.env("KUBECONFIG", self.cp.kubeconfig());
        }
        cmd.env("HOME", self.cp.dir()).args(args);
        tokio::task::spawn_blocking(move || cmd.output().expect("kubectl-pingone runs"))
            .await
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line of a table whose cells include `name`, split into cells.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.iter().any(|c| c == name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_why_token_and_renew_against_a_running_operator() {
    let env = Env::new("plugin").await;
    env.connection("good", "creds").await;
    env.connection("broken", "missing").await;
    env.wait_reason("good", "Ready", "TokenIssued").await;
    env.wait_reason("broken", "Stalled", "CredentialsNotFound")
        .await;

    // status in the namespace: a header and one row per connection.
    let (out, _) = env.plugin(&["status", "-n", &env.ns]).await;
    let header = out.lines().next().unwrap();
    for column in [
        "NAME",
        "READY",
        "REASON",
        "EXPIRES",
        "NEXT RENEWAL",
        "LAST FAILURE",
        "NEXT ATTEMPT",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(!header.contains("NAMESPACE"), "{header}");
    let good = row(&out, "good");
    assert_eq!(good[1..3], ["True", "TokenIssued"], "{out}");
    assert_eq!(good[3], "in", "expiry is relative: {out}");
    assert_eq!(good.last().unwrap(), "-", "no retry scheduled: {out}");
    let broken = row(&out, "broken");
    assert_eq!(broken[1..3], ["False", "CredentialsNotFound"], "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");

    // -A, with KUBECONFIG and the context named explicitly: the namespace column.
    let all = env
        .plugin_output(&["status", "-A", "--context", "local"], false)
        .await;
    let (out, err) = texts(&all);
    assert!(all.status.success(), "{err}");
    assert!(
        out.lines().next().unwrap().starts_with("NAMESPACE"),
        "{out}"
    );
    let good = row(&out, "good");
    assert_eq!(good[0], env.ns, "{out}");
    assert_eq!(good[2], "True", "{out}");
    // A context that does not exist is an error, not the default context.
    let wrong = env
        .plugin_output(&["status", "--context", "nowhere", "-n", &env.ns], true)
        .await;
    assert!(!wrong.status.success());

    // why: the conditions, the Event, and the README's hint for the reason.
    let (out, _) = env.plugin(&["why", "broken", "-n", &env.ns]).await;
    assert!(out.contains("Stalled"), "{out}");
    assert!(out.contains("CredentialsNotFound"), "{out}");
    assert!(
        out.contains(
            "What to do: create it (same namespace; there is no cross-namespace reference)"
        ),
        "{out}"
    );
    let events = out
        .split("Recent Events:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    assert!(events.contains("Warning"), "{out}");
    assert!(events.contains("CredentialsNotFound"), "{out}");
    let (out, _) = env.plugin(&["why", "good", "-n", &env.ns]).await;
    assert!(out.contains("Ready: nothing to do."), "{out}");
    assert!(out.contains("TokenIssued"), "{out}");

    // token: the claims and times, never the token itself unless asked.
    let secret = Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .get("good-token")
        .await
        .unwrap();
    let token = String::from_utf8(secret.data.unwrap()["access_token"].0.clone()).unwrap();
    let signature = token.rsplit('.').next().unwrap().to_string();
    let shown = env
        .plugin_output(&["token", "good", "-n", &env.ns], true)
        .await;
    let (out, err) = texts(&shown);
    assert!(shown.status.success(), "{err}");
    for claim in ["iss", "aud", "client_id", "iat", "exp", "expires_at"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(claim)),
            "no {claim}: {out}"
        );
    }
    assert!(out.contains(CLIENT_ID), "{out}");
    assert!(out.contains(&format!("/{ENV_ID}/as")), "issuer: {out}");
    assert!(out.contains("(in "), "relative times: {out}");
    for text in [&out, &err] {
        assert!(!text.contains(&token), "the token was printed");
        assert!(
            !text.contains(&signature),
            "the token's signature was printed"
        );
    }
    let (out, _) = env
        .plugin(&["token", "good", "-n", &env.ns, "--show-token"])
        .await;
    assert!(out.contains(&token), "--show-token: {out}");

    // renew: the annotation, with the time of the request.
    let before = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    let (out, _) = env.plugin(&["renew", "good", "-n", &env.ns]).await;
    assert!(out.contains("renewal requested"), "{out}");
    let conn = Api::<PingOneConnection>::namespaced(env.client.clone(), &env.ns)
        .get("good")
        .await
        .unwrap();
    let requested: jiff::Timestamp = conn.annotations()["pingone.tokenops.dev/renew-requested-at"]
        .parse()
        .unwrap();
    assert!(
        requested >= before && requested <= jiff::Timestamp::now(),
        "{requested}"
    );
    // --wait: until the operator has served it (status.renewRequestServed), with a new token.
    let (out, _) = env
        .plugin(&["renew", "good", "-n", &env.ns, "--wait", "--timeout", "30s"])
        .await;
    assert!(out.contains("renewal served"), "{out}");
    let conn = Api::<PingOneConnection>::namespaced(env.client.clone(), &env.ns)
        .get("good")
        .await
        .unwrap();
    assert_eq!(
        conn.status
            .as_ref()
            .unwrap()
            .renew_request_served
            .as_deref(),
        conn.annotations()
            .get("pingone.tokenops.dev/renew-requested-at")
            .map(String::as_str)
    );
    // An unknown connection is an error, and nothing is created.
    let missing = env
        .plugin_output(&["renew", "nonexistent", "-n", &env.ns], true)
        .await;
    assert!(!missing.status.success());
    assert!(
        texts(&missing).1.contains("not found"),
        "{:?}",
        texts(&missing)
    );
}

/// `status` shows when a failed connection is tried next; `why` of a connection whose token
/// expired gives what to do for each reason it shows (the expiry and its cause); a connection
/// that does not exist is one line saying so.
#[tokio::test(flavor = "multi_thread")]
async fn next_attempts_expired_tokens_and_missing_connections() {
    let env = Env::new("plugin-retry").await;
    // Rejected from the start: retried at the hourly recheck.
    env.credentials("wrong", CLIENT_ID, "not-the-secret").await;
    env.connection("rejected", "wrong").await;
    // Tokens of 6 s, then the application is gone: the token expires, renewals are rejected.
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, "short-lived", "short-secret")
            .with_token_lifetime(Duration::from_secs(6)),
    );
    env.credentials("short", "short-lived", "short-secret")
        .await;
    env.connection("expiring", "short").await;
    env.wait_reason("rejected", "Stalled", "InvalidClient")
        .await;
    env.wait_reason("expiring", "Ready", "TokenIssued").await;
    assert!(env.standin.remove_client(ENV_ID, "short-lived"));
    env.wait_reason("expiring", "Ready", "TokenExpired").await;
    env.wait_reason("expiring", "Stalled", "InvalidClient")
        .await;

    let (out, _) = env.plugin(&["status", "-n", &env.ns]).await;
    let header = out.lines().next().unwrap();
    assert!(header.trim_end().ends_with("NEXT ATTEMPT"), "{header}");
    let rejected = row(&out, "rejected");
    assert_eq!(rejected[1..3], ["False", "InvalidClient"], "{out}");
    // The hourly recheck: 3600 s (or a second less) ahead.
    let next = rejected[rejected.len() - 2..].join(" ");
    assert!(
        next == "in 1h" || next == "in 59m",
        "next attempt {next:?}: {out}"
    );

    let (out, _) = env.plugin(&["why", "expiring", "-n", &env.ns]).await;
    for (heading, reason) in [
        ("Problem: Stalled=True: InvalidClient", "InvalidClient"),
        ("Problem: Ready=False: TokenExpired", "TokenExpired"),
    ] {
        assert!(out.contains(heading), "{heading}: {out}");
        let what = format!("What to do: {}", readme::hint(reason).unwrap().what_to_do);
        assert_eq!(out.matches(&what).count(), 1, "{reason}: {out}");
    }

    // Not there: one line naming it, no API error structure, for every command that reads it.
    for command in ["why", "token", "renew"] {
        let missing = env
            .plugin_output(&[command, "nonexistent", "-n", &env.ns], true)
            .await;
        let (out, err) = texts(&missing);
        assert!(!missing.status.success(), "{command}: {out}");
        assert_eq!(
            err,
            format!(
                "error: pingoneconnection nonexistent not found in namespace {}\n",
                env.ns
            ),
            "{command}"
        );
        assert!(out.is_empty(), "{command}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_opaque_token_is_reported_as_opaque() {
    let env = Env::new("plugin-opaque").await;
    // A connection whose Secret holds an opaque token (the operator is not involved: the
    // Secret is written here, named in status as the operator would), under the data keys
    // its spec.target.keys names.
    env.connection("opaque", "missing").await;
    env.wait_reason("opaque", "Stalled", "CredentialsNotFound")
        .await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "elsewhere"},
        "stringData": {"token": "opaque-token-value", "type": "Bearer",
                       "expiry": "2099-01-01T00:00:00Z"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &ApiResource::erase::<PingOneConnection>(&()),
    );
    api.patch(
        "opaque",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"target": {
            "secretName": "elsewhere",
            "keys": {"accessToken": "token", "tokenType": "type", "expiresAt": "expiry"},
        }}})),
    )
    .await
    .unwrap();
    let (out, err) = env.plugin(&["token", "opaque", "-n", &env.ns]).await;
    assert!(out.contains("opaque (not a JWT)"), "{out}");
    assert!(out.contains("2099-01-01T00:00:00Z"), "{out}");
    assert!(!out.contains("opaque-token-value") && !err.contains("opaque-token-value"));
}

/// Every reason the operator's code lists has a row in the README's tables, as `why` parses
/// them. (The reasons of credentials and Kubernetes failures have no exported list; the unit
/// tests check the README side: every row parses.)
#[test]
fn the_readme_has_a_row_for_every_listed_reason() {
    let mut missing = Vec::new();
    let reasons = pingone_operator::controller::policy::TOKEN_FAILURE_REASONS
        .iter()
        .chain(
            [
                pingone_operator::controller::rotation::REASON_SCHEDULED,
                pingone_operator::controller::rotation::REASON_ROTATED,
                pingone_operator::controller::rotation::REASON_PROVING,
                pingone_operator::controller::rotation::REASON_WRITE_PENDING,
                pingone_operator::controller::rotation::REASON_WRITE_DENIED,
                pingone_operator::controller::rotation::REASON_NO_TOKEN,
                pingone_operator::controller::REASON_TARGET_TEMPLATE_INVALID,
                pingone_operator::controller::REASON_TARGET_CONFLICT,
                pingone_operator::controller::token_check::REASON_TOKEN_VERIFIED,
                pingone_operator::controller::token_check::REASON_ISSUER_MISMATCH,
                pingone_operator::controller::token_check::REASON_CLIENT_MISMATCH,
                pingone_operator::controller::token_check::REASON_SCOPES_NOT_GRANTED,
                pingone_operator::controller::token_check::REASON_EXPIRY_SKEW,
                pingone_operator::pingone::REASON_SIGNATURE_INVALID,
                pingone_operator::pingone::REASON_KEY_UNKNOWN,
                pingone_operator::pingone::REASON_JWKS_UNAVAILABLE,
            ]
            .iter(),
        );
    for reason in reasons {
        if readme::hint(reason).is_none() {
            missing.push(*reason);
        }
    }
    assert!(missing.is_empty(), "no README row for {missing:?}");
}
