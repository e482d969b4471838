//! client_secret_jwt and private_key_jwt end to end: the operator's assertions pass the
//! stand-in's verification (written independently, on ring) for every algorithm, both path
//! forms, RSA and EC keys in each PEM form; unusable keys stop before anything is sent.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use pingone_testbed::standin::{AuthMethod, ClientRegistration, RecordedAuthMethod, StandInConfig};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::support::*;

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The ECPrivateKey (SEC1) inside a PKCS #8 document: its last top-level OCTET STRING.
fn sec1_of(pkcs8: &[u8]) -> Vec<u8> {
    fn tlv(b: &[u8]) -> (u8, usize, usize) {
        let (len, head) = if b[1] < 0x80 {
            (b[1] as usize, 2)
        } else {
            let n = (b[1] & 0x7f) as usize;
            (
                b[2..2 + n].iter().fold(0, |a, x| a * 256 + *x as usize),
                2 + n,
            )
        };
        (b[0], head, len)
    }
    let (_, head, len) = tlv(pkcs8);
    let mut rest = &pkcs8[head..head + len];
    let mut last = Vec::new();
    while !rest.is_empty() {
        let (tag, head, len) = tlv(rest);
        if tag == 0x04 {
            last = rest[head..head + len].to_vec();
        }
        rest = &rest[head + len..];
    }
    last
}

struct TestKey {
    pem: String,
    /// The public JWK, computed here from the key (not by the operator).
    jwk: Value,
}

fn rsa_key(bits: usize, kid: &str, pkcs1: bool) -> TestKey {
    let key = rsa::RsaPrivateKey::new(&mut rand08::thread_rng(), bits).unwrap();
    let pem = if pkcs1 {
        pem("RSA PRIVATE KEY", key.to_pkcs1_der().unwrap().as_bytes())
    } else {
        pem("PRIVATE KEY", key.to_pkcs8_der().unwrap().as_bytes())
    };
    let jwk = json!({
        "kty": "RSA", "kid": kid, "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    });
    TestKey { pem, jwk }
}

fn ec_key(p384: bool, kid: Option<&str>, sec1: bool) -> TestKey {
    let (alg, crv, len) = if p384 {
        (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48)
    } else {
        (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32)
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let pem = if sec1 {
        pem("EC PRIVATE KEY", &sec1_of(pkcs8.as_ref()))
    } else {
        pem("PRIVATE KEY", pkcs8.as_ref())
    };
    let mut jwk = json!({
        "kty": "EC", "crv": crv, "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..1 + len]),
        "y": URL_SAFE_NO_PAD.encode(&point[1 + len..]),
    });
    if let Some(kid) = kid {
        jwk["kid"] = json!(kid);
    }
    TestKey { pem, jwk }
}

async fn put_key(env: &TestEnv, name: &str, client_id: &str, key: &TestKey, kid: Option<&str>) {
    let mut data = json!({"clientId": client_id, "privateKey": key.pem});
    if let Some(kid) = kid {
        data["keyId"] = json!(kid);
    }
    let s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": data,
    }))
    .unwrap();
    env.secrets()
        .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&s))
        .await
        .expect("key Secret applied");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_secret_jwt_gets_tokens_with_each_hmac_algorithm() {
    let mut env = TestEnv::new("csjwt").await;
    env.standin.add_client(
        ClientRegistration::new(ENV_ID, CLIENT_ID, CLIENT_SECRET)
            .with_auth_method(AuthMethod::ClientSecretJwt),
    );
    env.start_operator();
    let cases = [
        ("hs256", None),
        ("hs384", Some("HS384")),
        ("hs512", Some("HS512")),
    ];
    for (name, alg) in cases {
        let mut spec = json!({"tokenEndpointAuthMethod": "client_secret_jwt"});
        if let Some(alg) = alg {
            spec["clientAssertionAlgorithm"] = json!(alg);
        }
        env.create_connection(name, spec).await;
    }
    for (name, _) in cases {
        let conn = env.wait_ready(name).await;
        assert!(conn.status.unwrap().public_jwk.is_none(), "no key, no JWK");
    }
    let requests = env.standin.requests();
    let granted: BTreeSet<Option<String>> = requests
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.assertion_alg.clone())
        .collect();
    let expected: BTreeSet<_> = ["HS256", "HS384", "HS512"]
        .into_iter()
        .map(|a| Some(a.to_string()))
        .collect();
    assert_eq!(granted, expected);
    // The secret itself never travelled: every request authenticated with an assertion, each
    // with its own jti.
    assert!(
        requests
            .iter()
            .all(|r| r.auth_method == RecordedAuthMethod::ClientSecretJwt && r.client_secret_ok),
        "{requests:#?}"
    );
    let jtis: HashSet<_> = requests
        .iter()
        .filter_map(|r| r.assertion_jti.clone())
        .collect();
    assert_eq!(jtis.len(), requests.len(), "a jti per request");
}

#[tokio::test(flavor = "multi_thread")]
async fn private_key_jwt_with_rsa_and_ec_keys_on_both_path_forms() {
    let mut env = TestEnv::with_standin(
        "pkjwt",
        StandInConfig {
            custom_domains: vec![("login.example.com".into(), ENV_ID.into())],
            ..StandInConfig::default()
        },
    )
    .await;
    // RSA in PKCS #1 with a kid (the JWKS has a decoy key first), RSA in PKCS #8, EC P-256 in
    // SEC1 without a kid, EC P-384 in PKCS #8.
    let rsa1 = rsa_key(2048, "rsa-1", true);
    let decoy = rsa_key(2048, "decoy", false);
    let rsa8 = rsa_key(3072, "rsa-8", false);
    let ec256 = ec_key(false, None, true);
    let ec384 = ec_key(true, Some("ec-384"), false);
    let clients = [
        ("rsa-client", json!({"keys": [decoy.jwk, rsa1.jwk]})),
        ("rsa8-client", json!({"keys": [rsa8.jwk]})),
        ("ec-client", json!({"keys": [ec256.jwk]})),
        ("ec384-client", json!({"keys": [ec384.jwk]})),
    ];
    for (id, jwks) in &clients {
        env.standin
            .add_client(ClientRegistration::private_key(ENV_ID, *id, jwks.clone()));
    }
    put_key(&env, "creds-rsa", "rsa-client", &rsa1, Some("rsa-1")).await;
    put_key(&env, "creds-rsa8", "rsa8-client", &rsa8, Some("rsa-8")).await;
    put_key(&env, "creds-ec", "ec-client", &ec256, None).await;
    put_key(&env, "creds-ec384", "ec384-client", &ec384, Some("ec-384")).await;
    env.start_operator_with(test_timing(), &["login.example.com"]);

    // (connection, Secret, auth domain, algorithm named in the spec, expected alg, expected kid)
    let cases = [
        (
            "rsa-regional",
            "creds-rsa",
            "auth.pingone.eu",
            None,
            "RS256",
            Some("rsa-1"),
        ),
        (
            "rsa-custom",
            "creds-rsa",
            "login.example.com",
            Some("RS384"),
            "RS384",
            Some("rsa-1"),
        ),
        (
            "rsa8-rs512",
            "creds-rsa8",
            "auth.pingone.eu",
            Some("RS512"),
            "RS512",
            Some("rsa-8"),
        ),
        (
            "ec-custom",
            "creds-ec",
            "login.example.com",
            None,
            "ES256",
            None,
        ),
        (
            "ec-regional",
            "creds-ec",
            "auth.pingone.eu",
            None,
            "ES256",
            None,
        ),
        (
            "ec384",
            "creds-ec384",
            "auth.pingone.eu",
            None,
            "ES384",
            Some("ec-384"),
        ),
    ];
    for (name, secret, domain, alg, _, _) in cases {
        let mut spec = json!({
            "authDomain": domain,
            "tokenEndpointAuthMethod": "private_key_jwt",
            "credentialsSecretRef": {"name": secret},
        });
        if let Some(alg) = alg {
            spec["clientAssertionAlgorithm"] = json!(alg);
        }
        env.create_connection(name, spec).await;
    }
    let jwk_of = |secret: &str| match secret {
        "creds-rsa" => &rsa1.jwk,
        "creds-rsa8" => &rsa8.jwk,
        "creds-ec" => &ec256.jwk,
        _ => &ec384.jwk,
    };
    for (name, secret, _, _, alg, kid) in cases {
        env.wait_ready(name).await;
        // Status shows the public key, as computed here from the key itself, and never more.
        let shown = env.status_json(name).await["publicJwk"].clone();
        let expected = jwk_of(secret);
        for field in ["kty", "n", "e", "crv", "x", "y"] {
            assert_eq!(shown.get(field), expected.get(field), "{name}: {field}");
        }
        assert_eq!(shown["alg"], alg, "{name}");
        assert_eq!(shown["use"], "sig", "{name}");
        assert_eq!(shown.get("kid").and_then(Value::as_str), kid, "{name}");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(shown.get(private).is_none(), "{name}: {private} in status");
        }
    }
    let requests = env.standin.requests();
    let granted: BTreeSet<(String, String, Option<String>, Option<String>)> = requests
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            (
                r.host.clone(),
                r.client_id.clone().unwrap_or_default(),
                r.assertion_alg.clone(),
                r.assertion_kid.clone(),
            )
        })
        .collect();
    let s = |v: &str| Some(v.to_string());
    let expected: BTreeSet<_> = [
        ("auth.pingone.eu", "rsa-client", s("RS256"), s("rsa-1")),
        ("login.example.com", "rsa-client", s("RS384"), s("rsa-1")),
        ("auth.pingone.eu", "rsa8-client", s("RS512"), s("rsa-8")),
        ("login.example.com", "ec-client", s("ES256"), None),
        ("auth.pingone.eu", "ec-client", s("ES256"), None),
        ("auth.pingone.eu", "ec384-client", s("ES384"), s("ec-384")),
    ]
    .into_iter()
    .map(|(h, c, a, k)| (h.to_string(), c.to_string(), a, k))
    .collect();
    assert_eq!(granted, expected);
    assert!(
        requests
            .iter()
            .all(|r| r.status == 200 && r.auth_method == RecordedAuthMethod::PrivateKeyJwt),
        "every request passed the stand-in's checks: {requests:#?}"
    );
}

/// PingOne's `invalid_client` for a key it does not know (the application's JWKS lacks it):
/// there is no client secret to check, so the condition speaks of the key, where it must be
/// registered and the key id the assertion named.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_client_of_a_private_key_speaks_of_the_key() {
    let mut env = TestEnv::new("pkjwt-unknown").await;
    let key = rsa_key(2048, "rsa-1", false);
    let registered = rsa_key(2048, "other", false);
    let ec = ec_key(false, None, false);
    let registered_ec = ec_key(false, None, false);
    env.standin.add_client(ClientRegistration::private_key(
        ENV_ID,
        "rsa-client",
        json!({"keys": [registered.jwk]}),
    ));
    env.standin.add_client(ClientRegistration::private_key(
        ENV_ID,
        "ec-client",
        json!({"keys": [registered_ec.jwk]}),
    ));
    put_key(&env, "creds-rsa", "rsa-client", &key, Some("rsa-1")).await;
    put_key(&env, "creds-ec", "ec-client", &ec, None).await;
    env.start_operator();
    for (name, secret) in [("with-kid", "creds-rsa"), ("without-kid", "creds-ec")] {
        env.create_connection(
            name,
            json!({"tokenEndpointAuthMethod": "private_key_jwt", "credentialsSecretRef": {"name": secret}}),
        )
        .await;
    }
    let conn = env
        .wait_stalled("with-kid", "InvalidClient", Duration::from_secs(30))
        .await;
    let message = &TestEnv::condition(&conn, "Stalled").message;
    // PingOne's own words (the stand-in's description of the failed check) in the middle.
    assert!(
        message.starts_with(
            "PingOne rejected the client assertion signed with the private key (HTTP 401, \
             invalid_client: Request denied: "
        ),
        "{message}"
    );
    assert!(
        message.ends_with(
            "); check the client id, that the application's token endpoint auth method is \
             Private Key JWT, and that the public key in status.publicJwk is registered in the \
             application's JWKS (or served at its JWKS URL) under the key id rsa-1, the kid the \
             assertion names"
        ),
        "{message}"
    );
    // The key the message points at is there to register.
    let shown = conn
        .status
        .clone()
        .unwrap()
        .public_jwk
        .expect("status.publicJwk");
    let shown = serde_json::to_value(shown).unwrap();
    assert_eq!(shown["n"], key.jwk["n"]);
    assert_eq!(shown["kid"], "rsa-1");

    let conn = env
        .wait_stalled("without-kid", "InvalidClient", Duration::from_secs(30))
        .await;
    let message = &TestEnv::condition(&conn, "Stalled").message;
    assert!(
        message.contains("status.publicJwk")
            && message.ends_with(
                "; the assertion names no key id, so when the JWKS holds several keys, set keyId \
                 in the credentials Secret to this key's kid"
            ),
        "{message}"
    );
    for name in ["with-kid", "without-kid"] {
        let conn = env.connections().get(name).await.unwrap();
        for c in &conn.status.unwrap().conditions {
            assert!(
                !c.message.contains("client secret"),
                "{name}: {}",
                c.message
            );
            assert!(!c.message.contains("MII"), "{name}: no key material");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_private_key_stops_before_anything_is_sent() {
    let mut env = TestEnv::new("badkey").await;
    let small = rsa_key(1024, "k", false);
    let ec = ec_key(false, None, false);
    put_key(&env, "creds-small", CLIENT_ID, &small, None).await;
    put_key(&env, "creds-ec", CLIENT_ID, &ec, None).await;
    let s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds-public"},
        "stringData": {"clientId": CLIENT_ID, "privateKey": "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"},
    }))
    .unwrap();
    env.secrets()
        .patch(
            "creds-public",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&s),
        )
        .await
        .unwrap();
    env.start_operator();
    let cases = [
        (
            "small",
            json!({"name": "creds-small"}),
            None,
            "the RSA key is smaller than 2048 bits",
        ),
        (
            "mismatch",
            json!({"name": "creds-ec"}),
            Some("RS256"),
            "the key is an EC P-256 key but the algorithm is RS256",
        ),
        (
            "public",
            json!({"name": "creds-public"}),
            None,
            "it holds a public key or certificate",
        ),
        (
            "custom-key",
            json!({"name": "creds-ec", "privateKeyKey": "tls.key"}),
            None,
            "",
        ),
    ];
    for (name, reference, alg, _) in &cases {
        let mut spec = json!({"tokenEndpointAuthMethod": "private_key_jwt", "credentialsSecretRef": reference});
        if let Some(alg) = alg {
            spec["clientAssertionAlgorithm"] = json!(alg);
        }
        env.create_connection(name, spec).await;
    }
    for (name, reference, _, problem) in &cases {
        let secret = reference["name"].as_str().unwrap();
        let (reason, message) = if problem.is_empty() {
            (
                "CredentialsKeyMissing",
                format!("credentials Secret {secret} has no key tls.key"),
            )
        } else {
            (
                "CredentialsInvalid",
                format!("credentials Secret {secret} key privateKey: {problem}"),
            )
        };
        let conn = env
            .wait_stalled(name, reason, Duration::from_secs(30))
            .await;
        let stalled = TestEnv::condition(&conn, "Stalled");
        assert!(
            stalled.message.starts_with(&message),
            "{name}: {}",
            stalled.message
        );
        assert!(!stalled.message.contains("MII"), "no key material");
        assert!(conn.status.unwrap().public_jwk.is_none());
    }
    assert_eq!(env.standin.token_request_count(), 0, "nothing was sent");
}
