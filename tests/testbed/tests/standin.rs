//! Integration tests of the PingOne token endpoint stand-in, through a real HTTPS client that
//! trusts only the stand-in's CA file and reaches it under PingOne's real domain names.

use std::io::BufRead;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pingone_testbed::standin::{
    AuthMethod, ClientRegistration, Fault, HTML_PAGE_TITLE, JWT_BEARER_ASSERTION_TYPE,
    RecordedAuthMethod, STANDIN_ORG_ID, StandIn, StandInConfig,
};
use reqwest::StatusCode;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::{BigUint, RsaPublicKey};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use sha2::Sha256;

const ENV: &str = "cd91070f-c371-480e-80b2-753c735f8aa1";
const OTHER_ENV: &str = "0b8d4c1e-6f0a-4e47-9d55-2a7c3e9f1b64";
const REGION: &str = "auth.pingone.eu";
const CUSTOM_DOMAIN: &str = "login.example.com";
/// In the certificate but not registered as a custom domain.
const UNREGISTERED_DOMAIN: &str = "sso.example.org";

const POST_ID: &str = "6a1c3a5e-8d7b-4f2e-9a0c-1b2d3e4f5a6b";
const POST_SECRET: &str = "post-secret-~.ABCdef123";
/// Reserved characters and spaces in both parts, to check RFC 6749 §2.3.1 encoding.
const BASIC_ID: &str = "basic client:1+2";
const BASIC_SECRET: &str = "s+e/c:r%e&t=x y?#ü";
/// The Management API host of [`REGION`].
const API_EU: &str = "api.pingone.eu";
const SCOPED_ID: &str = "scoped-client";
const SCOPED_SECRET: &str = "scoped-secret";

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn start(config: StandInConfig) -> StandIn {
    init();
    let standin = StandIn::start(config).await.expect("stand-in starts");
    standin.add_client(ClientRegistration::new(ENV, POST_ID, POST_SECRET));
    standin.add_client(
        ClientRegistration::new(ENV, BASIC_ID, BASIC_SECRET)
            .with_auth_method(AuthMethod::ClientSecretBasic),
    );
    standin.add_client(
        ClientRegistration::new(ENV, SCOPED_ID, SCOPED_SECRET)
            .with_scopes(["billing:read", "billing:write"]),
    );
    standin
}

fn config() -> StandInConfig {
    StandInConfig {
        extra_dns_names: vec![UNREGISTERED_DOMAIN.to_string()],
        custom_domains: vec![(CUSTOM_DOMAIN.to_string(), ENV.to_string())],
        ..StandInConfig::default()
    }
}

/// A client that trusts only the CA file and resolves the PingOne names to the stand-in.
fn http(standin: &StandIn) -> reqwest::Client {
    let pem = std::fs::read(standin.ca_path()).expect("CA file");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("PEM certificate")).expect("CA added");
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30));
    for name in [
        REGION,
        "auth.pingone.com",
        "auth.pingone.com.au",
        CUSTOM_DOMAIN,
        UNREGISTERED_DOMAIN,
        "localhost",
        API_EU,
        "api.pingone.com",
    ] {
        builder = builder.resolve(name, standin.addr());
    }
    builder.build().expect("HTTP client")
}

fn token_url(domain: &str, env: &str) -> String {
    format!("https://{domain}/{env}/as/token")
}

fn form(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut form = vec![("grant_type".to_string(), "client_credentials".to_string())];
    form.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    form
}

async fn post_form(
    http: &reqwest::Client,
    url: &str,
    form: &[(String, String)],
) -> reqwest::Response {
    http.post(url).form(form).send().await.expect("request")
}

async fn token_post(http: &reqwest::Client, id: &str, secret: &str) -> reqwest::Response {
    post_form(
        http,
        &token_url(REGION, ENV),
        &form(&[("client_id", id), ("client_secret", secret)]),
    )
    .await
}

/// RFC 6749 §2.3.1: form-urlencode each part, then Base64.
fn basic_header(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

async fn token_basic(http: &reqwest::Client, id: &str, secret: &str) -> reqwest::Response {
    http.post(token_url(REGION, ENV))
        .header("Authorization", basic_header(id, secret))
        .form(&form(&[]))
        .send()
        .await
        .expect("request")
}

async fn json(resp: reqwest::Response) -> Value {
    let bytes = resp.bytes().await.expect("body");
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_string())
}

async fn assert_oauth_error(resp: reqwest::Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(resp.status(), status);
    let body = json(resp).await;
    assert_eq!(body["error"], error, "body: {body}");
    assert!(body["error_description"].is_string(), "body: {body}");
    body
}

/// Verifies `token` with the key rebuilt from the JWKS `n` and `e` and returns (header, claims).
fn verify_with_jwks(token: &str, jwks: &Value) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("a JWKS key with the token's kid");
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["use"], "sig");
    let n = URL_SAFE_NO_PAD
        .decode(key["n"].as_str().expect("n"))
        .expect("n b64");
    let e = URL_SAFE_NO_PAD
        .decode(key["e"].as_str().expect("e"))
        .expect("e b64");
    let public =
        RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).expect("RSA key");
    let signature = Signature::try_from(
        URL_SAFE_NO_PAD
            .decode(parts[2])
            .expect("signature b64")
            .as_slice(),
    )
    .expect("signature");
    let input = format!("{}.{}", parts[0], parts[1]);
    VerifyingKey::<Sha256>::new(public)
        .verify(input.as_bytes(), &signature)
        .expect("signature verifies with the JWKS key");
    // A tampered payload must not verify.
    let tampered = format!("{}.{}x", parts[0], parts[1]);
    let n = URL_SAFE_NO_PAD
        .decode(key["n"].as_str().expect("n"))
        .expect("n b64");
    let public =
        RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).expect("RSA key");
    assert!(
        VerifyingKey::<Sha256>::new(public)
            .verify(tampered.as_bytes(), &signature)
            .is_err()
    );
    (header, claims)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn post_credentials_get_a_jwt_that_verifies_against_the_jwks() {
    let standin = start(config()).await;
    let http = http(&standin);
    let before = now_secs();
    let resp = token_post(&http, POST_ID, POST_SECRET).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(header(&resp, "pragma").as_deref(), Some("no-cache"));
    assert!(
        header(&resp, "content-type")
            .expect("content type")
            .starts_with("application/json")
    );
    let body = json(resp).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body.get("scope").is_none(), "no scope requested: {body}");
    assert!(body.get("refresh_token").is_none());
    let token = body["access_token"].as_str().expect("access_token");

    let jwks = json(
        http.get(format!("https://{REGION}/{ENV}/as/jwks"))
            .send()
            .await
            .expect("jwks"),
    )
    .await;
    assert_eq!(jwks, standin.jwks());
    let (header, claims) = verify_with_jwks(token, &jwks);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], standin.kid());
    assert_eq!(claims["iss"], format!("https://{REGION}/{ENV}/as"));
    assert_eq!(claims["client_id"], POST_ID);
    assert_eq!(claims["aud"], serde_json::json!(["https://api.pingone.eu"]));
    assert_eq!(claims["env"], ENV);
    assert_eq!(claims["org"], STANDIN_ORG_ID);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(claims.get("scope").is_none_or(|s| s == ""), "{claims}");
    let iat = claims["iat"].as_u64().expect("iat");
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(iat >= before && iat <= now_secs(), "iat {iat}");
    assert_eq!(exp - iat, 3600);
    assert_eq!(standin.issued_tokens(), vec![token.to_string()]);
    assert_eq!(
        standin.verify_token(token).expect("verifies")["client_id"],
        POST_ID
    );
}

#[tokio::test]
async fn basic_credentials_with_reserved_characters_are_accepted() {
    let standin = start(config()).await;
    let http = http(&standin);
    let resp = token_basic(&http, BASIC_ID, BASIC_SECRET).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    let claims = standin
        .verify_token(body["access_token"].as_str().expect("token"))
        .expect("verifies");
    assert_eq!(claims["client_id"], BASIC_ID);

    // The same credentials Base64-encoded without form-urlencoding first: `+` decodes to a
    // space, so the secret no longer matches.
    let raw = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", "basic%20client%3A1%2B2", BASIC_SECRET))
    );
    let resp = http
        .post(token_url(REGION, ENV))
        .header("Authorization", raw)
        .form(&form(&[]))
        .send()
        .await
        .expect("request");
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;

    let recorded = standin.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].auth_method, RecordedAuthMethod::Basic);
    assert_eq!(recorded[0].client_id.as_deref(), Some(BASIC_ID));
    assert!(recorded[0].client_secret_ok);
    assert!(!recorded[1].client_secret_ok);
}

#[tokio::test]
async fn wrong_secret_is_invalid_client_for_both_methods() {
    let standin = start(config()).await;
    let http = http(&standin);
    let wrong = "wrong-secret-value";

    let resp = token_post(&http, POST_ID, wrong).await;
    assert_eq!(header(&resp, "www-authenticate"), None);
    let body = assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert!(!body.to_string().contains(wrong));

    let resp = token_basic(&http, BASIC_ID, wrong).await;
    assert_eq!(
        header(&resp, "www-authenticate").as_deref(),
        Some("Basic realm=\"PingOne\"")
    );
    let body = assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert!(!body.to_string().contains(wrong));

    // An unknown client, and a known client of another environment.
    let resp = token_post(&http, "no-such-client", POST_SECRET).await;
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    standin.add_environment(OTHER_ENV);
    let resp = post_form(
        &http,
        &token_url(REGION, OTHER_ENV),
        &form(&[("client_id", POST_ID), ("client_secret", POST_SECRET)]),
    )
    .await;
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;

    assert!(standin.requests().iter().all(|r| !r.client_secret_ok));
    assert!(standin.issued_tokens().is_empty());
    let recorded = serde_json::to_string(&standin.requests()).expect("json");
    assert!(!recorded.contains(wrong) && !recorded.contains(POST_SECRET));
}

#[tokio::test]
async fn authenticating_with_the_other_method_is_invalid_client() {
    let standin = start(config()).await;
    let http = http(&standin);
    // A post client using Basic, with the right secret.
    let resp = token_basic(&http, POST_ID, POST_SECRET).await;
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    // A basic client using post, with the right secret.
    let resp = token_post(&http, BASIC_ID, BASIC_SECRET).await;
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let recorded = standin.requests();
    assert_eq!(recorded.len(), 2);
    assert!(
        recorded
            .iter()
            .all(|r| r.client_secret_ok && r.status == 401)
    );
    assert_eq!(recorded[0].auth_method, RecordedAuthMethod::Basic);
    assert_eq!(recorded[1].auth_method, RecordedAuthMethod::Post);
}

#[tokio::test]
async fn both_methods_or_none_are_rejected() {
    let standin = start(config()).await;
    let http = http(&standin);
    let resp = http
        .post(token_url(REGION, ENV))
        .header("Authorization", basic_header(BASIC_ID, BASIC_SECRET))
        .form(&form(&[
            ("client_id", BASIC_ID),
            ("client_secret", BASIC_SECRET),
        ]))
        .send()
        .await
        .expect("request");
    assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;

    let resp = post_form(
        &http,
        &token_url(REGION, ENV),
        &form(&[("client_id", POST_ID)]),
    )
    .await;
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert_eq!(standin.requests()[1].auth_method, RecordedAuthMethod::None);
}

#[tokio::test]
async fn request_format_errors() {
    let standin = start(config()).await;
    let http = http(&standin);
    // Wrong content type, otherwise a correct request.
    let resp = http
        .post(token_url(REGION, ENV))
        .header("Content-Type", "application/json")
        .body(
            serde_json::json!({
                "grant_type": "client_credentials",
                "client_id": POST_ID,
                "client_secret": POST_SECRET,
            })
            .to_string(),
        )
        .send()
        .await
        .expect("request");
    assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;

    // A charset parameter is fine.
    let resp = http
        .post(token_url(REGION, ENV))
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body(format!(
            "grant_type=client_credentials&client_id={POST_ID}&client_secret={}",
            form_urlencoded::byte_serialize(POST_SECRET.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);

    let mut bad_grant = form(&[("client_id", POST_ID), ("client_secret", POST_SECRET)]);
    bad_grant[0].1 = "password".to_string();
    let resp = post_form(&http, &token_url(REGION, ENV), &bad_grant).await;
    assert_oauth_error(resp, StatusCode::BAD_REQUEST, "unsupported_grant_type").await;

    let no_grant = bad_grant[1..].to_vec();
    let resp = post_form(&http, &token_url(REGION, ENV), &no_grant).await;
    assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;

    let resp = http
        .get(token_url(REGION, ENV))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);

    let statuses: Vec<u16> = standin.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 200, 400, 400, 405]);
    assert_eq!(
        standin.requests()[2].grant_type.as_deref(),
        Some("password")
    );
}

#[tokio::test]
async fn scopes_are_checked_and_echoed() {
    let standin = start(config()).await;
    let http = http(&standin);
    let resp = post_form(
        &http,
        &token_url(REGION, ENV),
        &form(&[
            ("client_id", SCOPED_ID),
            ("client_secret", SCOPED_SECRET),
            ("scope", "billing:read billing:write"),
        ]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["scope"], "billing:read billing:write");
    let claims = standin
        .verify_token(body["access_token"].as_str().expect("token"))
        .expect("verifies");
    assert_eq!(claims["scope"], "billing:read billing:write");

    let resp = post_form(
        &http,
        &token_url(REGION, ENV),
        &form(&[
            ("client_id", SCOPED_ID),
            ("client_secret", SCOPED_SECRET),
            ("scope", "billing:read p1:read:user"),
        ]),
    )
    .await;
    assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_scope").await;

    // A client without scopes may not request any.
    let resp = post_form(
        &http,
        &token_url(REGION, ENV),
        &form(&[
            ("client_id", POST_ID),
            ("client_secret", POST_SECRET),
            ("scope", "billing:read"),
        ]),
    )
    .await;
    assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_scope").await;

    let recorded = standin.requests();
    assert_eq!(
        recorded[0].scope.as_deref(),
        Some("billing:read billing:write")
    );
    assert_eq!(recorded[1].status, 400);
}

#[tokio::test]
async fn custom_domain_form_and_unknown_environments() {
    let standin = start(config()).await;
    let http = http(&standin);
    let resp = post_form(
        &http,
        &format!("https://{CUSTOM_DOMAIN}/as/token"),
        &form(&[("client_id", POST_ID), ("client_secret", POST_SECRET)]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let token = json(resp).await["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let jwks = json(
        http.get(format!("https://{CUSTOM_DOMAIN}/as/jwks"))
            .send()
            .await
            .expect("jwks"),
    )
    .await;
    let (_, claims) = verify_with_jwks(&token, &jwks);
    assert_eq!(claims["iss"], format!("https://{CUSTOM_DOMAIN}/as"));
    assert_eq!(claims["env"], ENV);
    let recorded = &standin.requests()[0];
    assert_eq!(recorded.host, CUSTOM_DOMAIN);
    assert_eq!(recorded.sni.as_deref(), Some(CUSTOM_DOMAIN));
    assert_eq!(recorded.path, "/as/token");
    assert_eq!(recorded.environment_id.as_deref(), Some(ENV));

    // A host that is not a registered custom domain.
    let resp = post_form(
        &http,
        &format!("https://{UNREGISTERED_DOMAIN}/as/token"),
        &form(&[("client_id", POST_ID), ("client_secret", POST_SECRET)]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(resp).await["code"], "NOT_FOUND");

    // An environment nobody registered, and a path that is no environment id.
    let resp = post_form(
        &http,
        &token_url(REGION, OTHER_ENV),
        &form(&[("client_id", POST_ID), ("client_secret", POST_SECRET)]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body = json(resp).await;
    assert_eq!(body["code"], "NOT_FOUND");
    assert!(body["message"].is_string());
    for url in [
        format!("https://{REGION}/{}/as/token", ENV.to_uppercase()),
        format!("https://{REGION}/not-an-env/as/token"),
    ] {
        let resp = http
            .post(&url)
            .form(&form(&[]))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{url}");
    }
    let resp = http
        .get(format!("https://{REGION}/{OTHER_ENV}/as/jwks"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let statuses: Vec<(Option<String>, u16)> = standin
        .requests()
        .into_iter()
        .map(|r| (r.environment_id, r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (Some(ENV.to_string()), 200),
            (None, 404),
            (Some(OTHER_ENV.to_string()), 404)
        ]
    );
}

#[tokio::test]
async fn jwks_and_openid_configuration_are_served() {
    let standin = start(config()).await;
    let http = http(&standin);
    for (prefix, issuer) in [
        (
            format!("https://auth.pingone.com.au/{ENV}/as"),
            format!("https://auth.pingone.com.au/{ENV}/as"),
        ),
        (
            format!("https://{CUSTOM_DOMAIN}/as"),
            format!("https://{CUSTOM_DOMAIN}/as"),
        ),
    ] {
        let resp = http
            .get(format!("{prefix}/.well-known/openid-configuration"))
            .send()
            .await
            .expect("discovery");
        assert_eq!(resp.status(), StatusCode::OK);
        let conf = json(resp).await;
        assert_eq!(conf["issuer"], issuer);
        assert_eq!(conf["token_endpoint"], format!("{issuer}/token"));
        assert_eq!(conf["jwks_uri"], format!("{issuer}/jwks"));
        assert_eq!(
            conf["token_endpoint_auth_methods_supported"],
            serde_json::json!([
                "client_secret_basic",
                "client_secret_post",
                "client_secret_jwt",
                "private_key_jwt"
            ])
        );
        assert_eq!(
            conf["token_endpoint_auth_signing_alg_values_supported"],
            serde_json::json!([
                "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"
            ])
        );
        assert!(
            conf["grant_types_supported"]
                .as_array()
                .expect("grant types")
                .contains(&Value::from("client_credentials"))
        );

        let jwks = json(
            http.get(conf["jwks_uri"].as_str().expect("jwks_uri"))
                .send()
                .await
                .expect("jwks"),
        )
        .await;
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["kid"], standin.kid());
        assert_eq!(keys[0]["e"], "AQAB");
        // 2048-bit modulus.
        let n = URL_SAFE_NO_PAD
            .decode(keys[0]["n"].as_str().expect("n"))
            .expect("b64");
        assert_eq!(n.len(), 256);
    }
    // Discovery requests are not token requests.
    assert_eq!(standin.token_request_count(), 0);
}

#[tokio::test]
async fn token_lifetime_is_configurable_and_per_client_wins() {
    let standin = start(config()).await;
    let http = http(&standin);
    standin.set_token_lifetime(Duration::from_secs(300));
    standin.add_client(
        ClientRegistration::new(ENV, "long-lived", "ll-secret")
            .with_token_lifetime(Duration::from_secs(86_400)),
    );
    for (id, secret, lifetime) in [
        (POST_ID, POST_SECRET, 300),
        ("long-lived", "ll-secret", 86_400),
    ] {
        let body = json(token_post(&http, id, secret).await).await;
        assert_eq!(body["expires_in"], lifetime);
        let claims = standin
            .verify_token(body["access_token"].as_str().expect("token"))
            .expect("verifies");
        assert_eq!(
            claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"),
            lifetime
        );
    }
}

#[tokio::test]
async fn tokens_are_unique_and_requests_are_recorded() {
    let standin = start(config()).await;
    let http = http(&standin);
    let a = json(token_post(&http, POST_ID, POST_SECRET).await).await;
    let b = json(token_post(&http, POST_ID, POST_SECRET).await).await;
    assert_ne!(a["access_token"], b["access_token"]);
    let ja = standin
        .verify_token(a["access_token"].as_str().expect("token"))
        .expect("verifies");
    let jb = standin
        .verify_token(b["access_token"].as_str().expect("token"))
        .expect("verifies");
    assert_ne!(ja["jti"], jb["jti"]);
    assert_eq!(standin.issued_tokens().len(), 2);

    let resp = post_form(
        &http,
        &token_url(REGION, ENV),
        &form(&[
            ("client_id", SCOPED_ID),
            ("client_secret", SCOPED_SECRET),
            ("scope", "billing:read"),
        ]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    assert_eq!(standin.token_request_count(), 3);
    let recorded = standin.requests();
    let last = &recorded[2];
    assert_eq!(last.method, "POST");
    assert_eq!(last.host, REGION);
    assert_eq!(last.path, format!("/{ENV}/as/token"));
    assert_eq!(last.environment_id.as_deref(), Some(ENV));
    assert_eq!(last.client_id.as_deref(), Some(SCOPED_ID));
    assert_eq!(last.auth_method, RecordedAuthMethod::Post);
    assert_eq!(last.scope.as_deref(), Some("billing:read"));
    assert_eq!(last.status, 200);
    assert!(last.client_secret_ok);
    assert!(last.fault.is_none());
    assert!(recorded[0].time <= recorded[1].time && recorded[1].time <= last.time);

    standin.reset_requests();
    assert_eq!(standin.token_request_count(), 0);
    assert!(standin.issued_tokens().is_empty());
}

#[tokio::test]
async fn status_faults_with_retry_after_are_consumed_in_order() {
    let standin = start(config()).await;
    let http = http(&standin);
    standin.push_fault(Fault::status_with_retry_after(503, 7), 2);
    standin.push_fault(
        Fault::Status {
            status: 500,
            retry_after: None,
            body: Some("{\"error\":\"server_error\",\"error_description\":\"custom\"}".into()),
        },
        1,
    );
    assert_eq!(standin.pending_faults(), 3);
    for _ in 0..2 {
        let resp = token_post(&http, POST_ID, POST_SECRET).await;
        assert_eq!(header(&resp, "retry-after").as_deref(), Some("7"));
        assert_oauth_error(
            resp,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
        )
        .await;
    }
    let resp = token_post(&http, POST_ID, POST_SECRET).await;
    assert_eq!(header(&resp, "retry-after"), None);
    let body = assert_oauth_error(resp, StatusCode::INTERNAL_SERVER_ERROR, "server_error").await;
    assert_eq!(body["error_description"], "custom");
    assert_eq!(
        token_post(&http, POST_ID, POST_SECRET).await.status(),
        StatusCode::OK
    );
    assert_eq!(standin.pending_faults(), 0);
    let faults: Vec<Option<String>> = standin.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        [
            Some("status 503 retry-after 7".to_string()),
            Some("status 503 retry-after 7".to_string()),
            Some("status 500".to_string()),
            None
        ]
    );
}

/// What a WAF in front of the token endpoint sends: an HTML page as `text/html`, with the
/// status asked for and nothing PingOne writes.
#[tokio::test]
async fn html_page_fault_serves_a_blocking_page() {
    let standin = start(config()).await;
    let http = http(&standin);
    standin.push_fault(Fault::html_page(403), 1);
    let resp = token_post(&http, POST_ID, POST_SECRET).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let page = resp.text().await.unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(
        page.contains(&format!("<title>{HTML_PAGE_TITLE}</title>")),
        "{page}"
    );
    assert!(serde_json::from_str::<Value>(&page).is_err());
    // A JSON body of its own is still served as JSON.
    standin.push_fault(
        Fault::Status {
            status: 400,
            retry_after: None,
            body: Some("{\"error\":\"invalid_request\"}".into()),
        },
        1,
    );
    let resp = token_post(&http, POST_ID, POST_SECRET).await;
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/json;charset=UTF-8")
    );
}

#[tokio::test]
async fn persistent_fault_applies_until_cleared() {
    let standin = start(config()).await;
    let http = http(&standin);
    standin.push_fault(Fault::status(502), 1);
    standin.set_persistent_fault(Some(Fault::status(504)));
    for _ in 0..3 {
        assert_eq!(
            token_post(&http, POST_ID, POST_SECRET).await.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
    standin.set_persistent_fault(None);
    // The queued fault was kept while the persistent one applied.
    assert_eq!(
        token_post(&http, POST_ID, POST_SECRET).await.status(),
        StatusCode::BAD_GATEWAY
    );
    standin.set_persistent_fault(Some(Fault::status(500)));
    standin.push_fault(Fault::status(502), 1);
    standin.clear_faults();
    assert_eq!(
        token_post(&http, POST_ID, POST_SECRET).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn delay_fault_delays_then_answers() {
    let standin = start(config()).await;
    let http = http(&standin);
    // Warm the connection so the handshake does not count.
    assert_eq!(
        token_post(&http, POST_ID, POST_SECRET).await.status(),
        StatusCode::OK
    );
    let started = Instant::now();
    assert_eq!(
        token_post(&http, POST_ID, POST_SECRET).await.status(),
        StatusCode::OK
    );
    let undelayed = started.elapsed();

    let delay = Duration::from_millis(600);
    standin.push_fault(Fault::Delay(delay), 1);
    let started = Instant::now();
    let resp = token_post(&http, POST_ID, POST_SECRET).await;
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(json(resp).await["access_token"].is_string());
    assert!(
        elapsed >= delay,
        "took {elapsed:?}, undelayed {undelayed:?}"
    );

    // A client timeout shorter than the delay fires.
    standin.push_fault(Fault::Delay(Duration::from_secs(30)), 1);
    let err = http
        .post(token_url(REGION, ENV))
        .form(&form(&[
            ("client_id", POST_ID),
            ("client_secret", POST_SECRET),
        ]))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout(), "{err}");
}

#[tokio::test]
async fn body_faults_malformed_missing_field_expires_in_oversized() {
    let standin = start(config()).await;
    let http = http(&standin);

    standin.push_fault(Fault::MalformedJson, 1);
    let resp = token_post(&http, POST_ID, POST_SECRET).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.bytes().await.expect("body");
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
    assert!(bytes.starts_with(b"{\"access_token\""));

    standin.push_fault(Fault::MissingField("expires_in".into()), 1);
    let body = json(token_post(&http, POST_ID, POST_SECRET).await).await;
    assert!(body.get("expires_in").is_none(), "{body}");
    assert!(body["access_token"].is_string());
    assert_eq!(body["token_type"], "Bearer");

    // Response faults that keep authentication still reject bad credentials.
    standin.push_fault(Fault::MissingField("access_token".into()), 1);
    let resp = token_post(&http, POST_ID, "wrong").await;
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;

    for value in [0_i64, -5, 9_999_999_999] {
        standin.push_fault(Fault::ExpiresIn(value), 1);
        let body = json(token_post(&http, POST_ID, POST_SECRET).await).await;
        assert_eq!(body["expires_in"], value);
    }

    let size = 300_000;
    standin.push_fault(Fault::Oversized(size), 1);
    let resp = token_post(&http, POST_ID, POST_SECRET).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.content_length(), Some(size as u64));
    let bytes = resp.bytes().await.expect("body");
    assert_eq!(bytes.len(), size);
    assert!(bytes.starts_with(b"{\"access_token\":\""));

    let statuses: Vec<u16> = standin.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 401, 200, 200, 200, 200]);
}

#[tokio::test]
async fn dropped_connection_gives_a_client_error_without_response() {
    let standin = start(config()).await;
    let http = http(&standin);
    standin.push_fault(Fault::DropConnection, 1);
    let err = http
        .post(token_url(REGION, ENV))
        .form(&form(&[
            ("client_id", POST_ID),
            ("client_secret", POST_SECRET),
        ]))
        .send()
        .await
        .expect_err("the connection is dropped");
    assert!(err.status().is_none(), "{err}");
    // Consumed once: the next request succeeds, on a new connection.
    assert_eq!(
        token_post(&http, POST_ID, POST_SECRET).await.status(),
        StatusCode::OK
    );
    let recorded = standin.requests();
    assert_eq!(recorded.len(), 2, "the client did not retry: {recorded:?}");
    assert_eq!(recorded[0].status, 0);
    assert_eq!(recorded[0].fault.as_deref(), Some("drop connection"));
    assert_eq!(standin.connection_count(), 2);
}

#[tokio::test]
async fn redirect_fault_gives_302_with_location() {
    let standin = start(config()).await;
    let http = http(&standin);
    let location = "https://evil.example.net/steal";
    standin.push_fault(Fault::Redirect(location.into()), 1);
    let resp = token_post(&http, POST_ID, POST_SECRET).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(header(&resp, "location").as_deref(), Some(location));
    assert_eq!(standin.requests()[0].status, 302);
}

#[tokio::test]
async fn rate_limit_gives_429_with_retry_after() {
    let standin = start(config()).await;
    let http = http(&standin);
    standin.set_rate_limit(Some((2, Duration::from_secs(60))));
    for _ in 0..2 {
        assert_eq!(
            token_post(&http, POST_ID, POST_SECRET).await.status(),
            StatusCode::OK
        );
    }
    let resp = token_post(&http, POST_ID, POST_SECRET).await;
    let retry: u64 = header(&resp, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("integer seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_oauth_error(resp, StatusCode::TOO_MANY_REQUESTS, "request_limited").await;
    // Faults are not consumed by rate-limited requests.
    standin.push_fault(Fault::status(500), 1);
    assert_eq!(
        token_post(&http, POST_ID, POST_SECRET).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(standin.pending_faults(), 1);
    standin.set_rate_limit(None);
    assert_eq!(
        token_post(&http, POST_ID, POST_SECRET).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let statuses: Vec<u16> = standin.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 429, 429, 500]);
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let standin = start(config()).await;
    let http = http(&standin);
    for _ in 0..5 {
        assert_eq!(
            token_post(&http, POST_ID, POST_SECRET).await.status(),
            StatusCode::OK
        );
    }
    // Errors do not close the connection either.
    assert_eq!(
        token_post(&http, POST_ID, "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(standin.token_request_count(), 6);
    assert_eq!(standin.connection_count(), 1);
    // A second client opens a second connection.
    let other = self::http(&standin);
    assert_eq!(
        token_post(&other, POST_ID, POST_SECRET).await.status(),
        StatusCode::OK
    );
    assert_eq!(standin.connection_count(), 2);
}

#[tokio::test]
async fn introspection_reports_active_tokens() {
    let standin = start(config()).await;
    let http = http(&standin);
    let token = json(token_post(&http, POST_ID, POST_SECRET).await).await["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let url = format!("https://{REGION}/{ENV}/as/introspect");
    let active = json(
        post_form(
            &http,
            &url,
            &[
                ("token".to_string(), token.clone()),
                ("client_id".to_string(), POST_ID.to_string()),
                ("client_secret".to_string(), POST_SECRET.to_string()),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], POST_ID);
    let forged = format!("{}x", &token[..token.len() - 1]);
    let inactive = json(
        post_form(
            &http,
            &url,
            &[
                ("token".to_string(), forged),
                ("client_id".to_string(), POST_ID.to_string()),
                ("client_secret".to_string(), POST_SECRET.to_string()),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(inactive["active"], false);
    let resp = post_form(&http, &url, &[("token".to_string(), token)]).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_api_configures_the_stand_in() {
    let standin = start(config()).await;
    let http = http(&standin);
    let admin = |path: &str| format!("https://localhost/__standin/{path}");
    let resp = http
        .post(admin("clients"))
        .json(&serde_json::json!({
            "environment_id": OTHER_ENV,
            "client_id": "admin-made",
            "client_secret": "admin-secret",
            "auth_method": "client_secret_basic",
            "allowed_scopes": ["x:read"],
            "token_lifetime_secs": 900,
        }))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = http
        .post(token_url(REGION, OTHER_ENV))
        .header("Authorization", basic_header("admin-made", "admin-secret"))
        .form(&form(&[("scope", "x:read")]))
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "x:read");

    let resp = http
        .post(admin("faults"))
        .json(&serde_json::json!({
            "fault": {"kind": "status", "status": 429, "retry_after": 3},
            "times": 1,
        }))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = token_post(&http, POST_ID, POST_SECRET).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "retry-after").as_deref(), Some("3"));

    let resp = http
        .post(admin("faults"))
        .json(&serde_json::json!({"fault": {"kind": "drop_connection"}, "persistent": true}))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(
        http.post(token_url(REGION, ENV))
            .form(&form(&[
                ("client_id", POST_ID),
                ("client_secret", POST_SECRET)
            ]))
            .send()
            .await
            .is_err()
    );
    let resp = http.delete(admin("faults")).send().await.expect("admin");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let resp = http
        .post(admin("lifetime"))
        .json(&serde_json::json!({"seconds": 120}))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = http
        .post(admin("rate-limit"))
        .json(&serde_json::json!({"requests": 1, "per_seconds": 30}))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let body = json(token_post(&http, POST_ID, POST_SECRET).await).await;
    assert_eq!(body["expires_in"], 120);
    assert_eq!(
        token_post(&http, POST_ID, POST_SECRET).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let requests = json(http.get(admin("requests")).send().await.expect("admin")).await;
    let requests = requests.as_array().expect("list");
    assert_eq!(requests.len(), 5);
    assert_eq!(requests[0]["client_id"], "admin-made");
    assert_eq!(requests[0]["auth_method"], "client_secret_basic");
    assert_eq!(requests[2]["status"], 0);
    assert_eq!(requests[4]["status"], 429);
    assert!(
        !Value::Array(requests.clone())
            .to_string()
            .contains("admin-secret")
    );

    let resp = http
        .post(admin("faults"))
        .body("not json")
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = http.get(admin("nothing")).send().await.expect("admin");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Admin requests are not token requests.
    assert_eq!(standin.token_request_count(), 5);
}

#[tokio::test]
async fn shutdown_stops_serving_and_drop_removes_the_ca_file() {
    let standin = start(config()).await;
    let addr = standin.addr();
    let ca_path = standin.ca_path().to_path_buf();
    assert!(
        std::fs::read_to_string(&ca_path)
            .expect("CA file")
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(
        std::fs::read_to_string(&ca_path).expect("CA"),
        standin.ca_pem()
    );
    standin.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(!ca_path.exists());

    let standin = start(config()).await;
    let ca_path = standin.ca_path().to_path_buf();
    drop(standin);
    assert!(!ca_path.exists());
}

/// Kills the child process if the test fails before it is stopped.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("child")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn standalone_binary_serves_until_sigterm() {
    init();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pingone-standin"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--ca-out",
            ca.to_str().expect("utf-8 path"),
            "--client",
            // Client ids are UUIDs in PingOne; the secret may hold ':'.
            &format!("{ENV}:binary-basic:{BASIC_SECRET}:basic"),
            "--client",
            &format!("{ENV}:{POST_ID}:{POST_SECRET}"),
            "--custom-domain",
            &format!("{CUSTOM_DOMAIN}={ENV}"),
            "--token-lifetime",
            "600",
            "--rate-limit",
            "100/60",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut child = KillOnDrop(Some(child));
    let stdout = child.get().stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read");
        line
    })
    .await
    .expect("reader");
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");

    let pem = std::fs::read(&ca).expect("CA written");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("cert")).expect("added");
    }
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
        .resolve(REGION, addr)
        .resolve(CUSTOM_DOMAIN, addr)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let resp = token_basic(&http, "binary-basic", BASIC_SECRET).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json(resp).await["expires_in"], 600);
    let resp = post_form(
        &http,
        &format!("https://{CUSTOM_DOMAIN}/as/token"),
        &form(&[("client_id", POST_ID), ("client_secret", POST_SECRET)]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let mut child = child.0.take().expect("child");
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("waiter")
        .expect("wait");
    assert!(status.success(), "{status}");
}

// ---------------------------------------------------------------------------------------------
// Client assertions (client_secret_jwt, private_key_jwt), built with ring alone.

mod jwt {
    use std::sync::LazyLock;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
    use serde_json::{Value, json};

    /// One 2048-bit RSA key for the whole test binary: generating it is the slow part.
    static RSA_PKCS8: LazyLock<Vec<u8>> = LazyLock::new(|| {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key");
        key.to_pkcs8_der().expect("PKCS#8").as_bytes().to_vec()
    });

    pub enum Signer {
        Rsa(RsaKeyPair),
        Ec(EcdsaKeyPair),
    }

    /// A private key and its public JWK.
    pub struct TestKey {
        pub jwk: Value,
        signer: Signer,
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    impl TestKey {
        pub fn rsa(kid: Option<&str>) -> TestKey {
            let pair = RsaKeyPair::from_pkcs8(&RSA_PKCS8).expect("ring RSA key");
            let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
            let mut jwk = json!({
                "kty": "RSA",
                "use": "sig",
                "n": b64(&public.n),
                "e": b64(&public.e),
            });
            if let Some(kid) = kid {
                jwk["kid"] = json!(kid);
            }
            TestKey {
                jwk,
                signer: Signer::Rsa(pair),
            }
        }

        /// `p384` false: P-256.
        pub fn ec(kid: Option<&str>, p384: bool) -> TestKey {
            let (alg, crv, size) = if p384 {
                (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48)
            } else {
                (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32)
            };
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("EC key");
            let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("ring EC key");
            let point = pair.public_key().as_ref();
            assert_eq!(point.len(), 1 + 2 * size);
            let mut jwk = json!({
                "kty": "EC",
                "crv": crv,
                "x": b64(&point[1..1 + size]),
                "y": b64(&point[1 + size..]),
            });
            if let Some(kid) = kid {
                jwk["kid"] = json!(kid);
            }
            TestKey {
                jwk,
                signer: Signer::Ec(pair),
            }
        }

        pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
            let rng = SystemRandom::new();
            match &self.signer {
                Signer::Rsa(pair) => {
                    let padding: &'static dyn signature::RsaEncoding = match alg {
                        "RS256" => &signature::RSA_PKCS1_SHA256,
                        "RS384" => &signature::RSA_PKCS1_SHA384,
                        "RS512" => &signature::RSA_PKCS1_SHA512,
                        other => panic!("no RSA signing for {other}"),
                    };
                    let mut sig = vec![0; pair.public().modulus_len()];
                    pair.sign(padding, &rng, input, &mut sig).expect("RSA sign");
                    sig
                }
                Signer::Ec(pair) => pair.sign(&rng, input).expect("EC sign").as_ref().to_vec(),
            }
        }
    }

    /// HMAC of `input` with the secret's UTF-8 bytes.
    pub fn hmac(alg: &str, secret: &str, input: &[u8]) -> Vec<u8> {
        let alg = match alg {
            "HS256" => ring::hmac::HMAC_SHA256,
            "HS384" => ring::hmac::HMAC_SHA384,
            "HS512" => ring::hmac::HMAC_SHA512,
            other => panic!("no HMAC for {other}"),
        };
        ring::hmac::sign(&ring::hmac::Key::new(alg, secret.as_bytes()), input)
            .as_ref()
            .to_vec()
    }

    /// A compact JWS of `header` and `claims` signed by `sign`.
    pub fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    pub fn header(alg: &str, kid: Option<&str>) -> Value {
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        header
    }

    /// Valid claims for `client_id` and `aud`: `exp` 60 s ahead and a fresh `jti`.
    pub fn claims(client_id: &str, aud: &str) -> Value {
        let now = super::now_secs();
        json!({
            "iss": client_id,
            "sub": client_id,
            "aud": aud,
            "iat": now,
            "exp": now + 60,
            "jti": format!("{:032x}", rand::random::<u128>()),
        })
    }

    /// `jws` with its signature bytes changed.
    pub fn tamper_signature(jws: &str) -> String {
        let (input, sig) = jws.rsplit_once('.').expect("three parts");
        let mut sig = URL_SAFE_NO_PAD.decode(sig).expect("b64");
        sig[0] ^= 0x01;
        format!("{input}.{}", b64(&sig))
    }
}

const SECRET_JWT_ID: &str = "a0f1e2d3-c4b5-4a69-8877-665544332211";
/// HS512 wants a long key; PingOne's secrets are 64+ characters.
const SECRET_JWT_SECRET: &str =
    "hmac-Secret.0123456789~abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123";
const KEY_JWT_ID: &str = "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e";

/// The keys of the `private_key_jwt` client: RSA `rsa-1`, P-256 `ec-256`, P-256 `ec-256-b`,
/// and a P-384 key without `kid`.
struct JwtKeys {
    rsa: jwt::TestKey,
    ec256: jwt::TestKey,
    ec256_b: jwt::TestKey,
    ec384: jwt::TestKey,
}

impl JwtKeys {
    fn new() -> JwtKeys {
        JwtKeys {
            rsa: jwt::TestKey::rsa(Some("rsa-1")),
            ec256: jwt::TestKey::ec(Some("ec-256"), false),
            ec256_b: jwt::TestKey::ec(Some("ec-256-b"), false),
            ec384: jwt::TestKey::ec(None, true),
        }
    }

    fn jwks(&self) -> Value {
        serde_json::json!({"keys": [
            self.rsa.jwk, self.ec256.jwk, self.ec256_b.jwk, self.ec384.jwk
        ]})
    }
}

/// The stand-in of [`start`] with a `client_secret_jwt` and a `private_key_jwt` client.
async fn start_jwt(keys: &JwtKeys) -> StandIn {
    let standin = start(config()).await;
    standin.add_client(
        ClientRegistration::new(ENV, SECRET_JWT_ID, SECRET_JWT_SECRET)
            .with_auth_method(AuthMethod::ClientSecretJwt),
    );
    standin.add_client(ClientRegistration::private_key(
        ENV,
        KEY_JWT_ID,
        keys.jwks(),
    ));
    standin
}

fn issuer(domain: &str, env: &str) -> String {
    format!("https://{domain}/{env}/as")
}

fn hs_assertion(alg: &str, secret: &str, claims: &Value) -> String {
    jwt::jws(&jwt::header(alg, None), claims, |input| {
        jwt::hmac(alg, secret, input)
    })
}

fn key_assertion(key: &jwt::TestKey, alg: &str, kid: Option<&str>, claims: &Value) -> String {
    jwt::jws(&jwt::header(alg, kid), claims, |input| key.sign(alg, input))
}

async fn token_assertion(
    http: &reqwest::Client,
    url: &str,
    assertion: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut fields = vec![
        ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
        ("client_assertion", assertion),
    ];
    fields.extend_from_slice(extra);
    post_form(http, url, &form(&fields)).await
}

async fn assert_token_for(standin: &StandIn, resp: reqwest::Response, client_id: &str) {
    let status = resp.status();
    let body = json(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claims = standin
        .verify_token(body["access_token"].as_str().expect("access_token"))
        .expect("verifies");
    assert_eq!(claims["client_id"], client_id);
}

#[tokio::test]
async fn client_secret_jwt_accepts_hs256_hs384_hs512_with_either_audience() {
    let keys = JwtKeys::new();
    let standin = start_jwt(&keys).await;
    let http = http(&standin);
    let url = token_url(REGION, ENV);
    let mut jtis = Vec::new();
    for alg in ["HS256", "HS384", "HS512"] {
        let claims = jwt::claims(SECRET_JWT_ID, &url);
        jtis.push(claims["jti"].as_str().expect("jti").to_string());
        let resp = token_assertion(
            &http,
            &url,
            &hs_assertion(alg, SECRET_JWT_SECRET, &claims),
            &[],
        )
        .await;
        assert_token_for(&standin, resp, SECRET_JWT_ID).await;
    }
    // The issuer as audience, in an array, with a matching client_id field.
    let mut claims = jwt::claims(SECRET_JWT_ID, "");
    claims["aud"] = serde_json::json!(["https://example.com/other", issuer(REGION, ENV)]);
    let resp = token_assertion(
        &http,
        &url,
        &hs_assertion("HS256", SECRET_JWT_SECRET, &claims),
        &[("client_id", SECRET_JWT_ID)],
    )
    .await;
    assert_token_for(&standin, resp, SECRET_JWT_ID).await;

    let recorded = standin.requests();
    assert_eq!(recorded.len(), 4);
    for (r, alg) in recorded.iter().zip(["HS256", "HS384", "HS512", "HS256"]) {
        assert_eq!(r.status, 200);
        assert_eq!(r.auth_method, RecordedAuthMethod::ClientSecretJwt);
        assert_eq!(r.assertion_alg.as_deref(), Some(alg));
        assert_eq!(r.assertion_kid, None);
        assert_eq!(r.client_id.as_deref(), Some(SECRET_JWT_ID));
        assert!(r.client_secret_ok && !r.used_previous_secret);
    }
    let recorded_jtis: Vec<String> = recorded[..3]
        .iter()
        .map(|r| r.assertion_jti.clone().expect("jti recorded"))
        .collect();
    assert_eq!(recorded_jtis, jtis);
    let text = serde_json::to_string(&recorded).expect("json");
    assert!(!text.contains(SECRET_JWT_SECRET));
}

#[tokio::test]
async fn private_key_jwt_accepts_rs256_es256_es384_on_both_path_forms() {
    let keys = JwtKeys::new();
    let standin = start_jwt(&keys).await;
    let http = http(&standin);
    let regional = token_url(REGION, ENV);
    let custom = format!("https://{CUSTOM_DOMAIN}/as/token");
    let custom_issuer = format!("https://{CUSTOM_DOMAIN}/as");
    let cases: [(&jwt::TestKey, &str, Option<&str>, &str, &str); 6] = [
        (&keys.rsa, "RS256", Some("rsa-1"), &regional, &regional),
        (&keys.rsa, "RS512", None, &regional, &issuer(REGION, ENV)),
        (&keys.ec256, "ES256", Some("ec-256"), &custom, &custom),
        // Without kid: the stand-in tries every P-256 key.
        (&keys.ec256_b, "ES256", None, &custom, &custom_issuer),
        (&keys.ec384, "ES384", None, &custom, &custom),
        (&keys.rsa, "RS384", Some("rsa-1"), &custom, &custom_issuer),
    ];
    for (key, alg, kid, url, aud) in cases {
        let assertion = key_assertion(key, alg, kid, &jwt::claims(KEY_JWT_ID, aud));
        let resp = token_assertion(&http, url, &assertion, &[]).await;
        assert_token_for(&standin, resp, KEY_JWT_ID).await;
    }
    let recorded = standin.requests();
    assert_eq!(recorded.len(), cases.len());
    for (r, (_, alg, kid, url, _)) in recorded.iter().zip(cases) {
        assert_eq!(r.auth_method, RecordedAuthMethod::PrivateKeyJwt);
        assert_eq!(r.assertion_alg.as_deref(), Some(alg));
        assert_eq!(r.assertion_kid.as_deref(), kid);
        assert_eq!(r.environment_id.as_deref(), Some(ENV));
        assert_eq!(
            r.host,
            if url.contains(CUSTOM_DOMAIN) {
                CUSTOM_DOMAIN
            } else {
                REGION
            }
        );
        assert!(r.client_secret_ok);
    }
}

#[tokio::test]
async fn each_assertion_rule_rejects() {
    let keys = JwtKeys::new();
    let standin = start_jwt(&keys).await;
    let http = http(&standin);
    let url = token_url(REGION, ENV);
    let now = now_secs();
    let hs = |claims: &Value| hs_assertion("HS256", SECRET_JWT_SECRET, claims);
    let es = |claims: &Value| key_assertion(&keys.ec256, "ES256", Some("ec-256"), claims);
    let base_hs = || jwt::claims(SECRET_JWT_ID, &url);
    let base_es = || jwt::claims(KEY_JWT_ID, &url);
    let with = |mut claims: Value, name: &str, value: Value| {
        claims[name] = value;
        claims
    };
    let without = |mut claims: Value, name: &str| {
        claims.as_object_mut().expect("object").remove(name);
        claims
    };
    let none_alg = jwt::jws(&jwt::header("none", None), &base_hs(), |_| Vec::new());

    // (what, assertion, extra form fields, a word the description must hold)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("not a JWT", "not-a-jwt".into(), vec![], "well-formed"),
        (
            "four parts",
            format!("{}.x", hs(&base_hs())),
            vec![],
            "well-formed",
        ),
        (
            "HS256 with another secret",
            hs_assertion("HS256", "not-the-secret", &base_hs()),
            vec![],
            "signature",
        ),
        (
            "ES256 signature changed",
            jwt::tamper_signature(&es(&base_es())),
            vec![],
            "signature",
        ),
        (
            "RS256 signature changed",
            jwt::tamper_signature(&key_assertion(
                &keys.rsa,
                "RS256",
                Some("rsa-1"),
                &base_es(),
            )),
            vec![],
            "signature",
        ),
        (
            "signed by ec-256, kid of ec-256-b",
            key_assertion(&keys.ec256, "ES256", Some("ec-256-b"), &base_es()),
            vec![],
            "signature",
        ),
        (
            "kid of the RSA key on ES256",
            key_assertion(&keys.ec256, "ES256", Some("rsa-1"), &base_es()),
            vec![],
            "kid",
        ),
        (
            "unknown kid",
            key_assertion(&keys.ec256, "ES256", Some("nope"), &base_es()),
            vec![],
            "kid",
        ),
        ("alg none", none_alg, vec![], "algorithm"),
        (
            "ES512",
            jwt::jws(&jwt::header("ES512", None), &base_es(), |_| vec![0; 132]),
            vec![],
            "algorithm",
        ),
        (
            "HS256 for a private_key_jwt client",
            hs_assertion("HS256", SECRET_JWT_SECRET, &base_es()),
            vec![],
            "alg",
        ),
        (
            "RS256 for a client_secret_jwt client",
            key_assertion(&keys.rsa, "RS256", Some("rsa-1"), &base_hs()),
            vec![],
            "alg",
        ),
        (
            "iss is another client",
            hs(&with(base_hs(), "iss", KEY_JWT_ID.into())),
            vec![],
            "iss",
        ),
        (
            "sub is another client",
            hs(&with(base_hs(), "sub", KEY_JWT_ID.into())),
            vec![],
            "iss",
        ),
        ("no sub", hs(&without(base_hs(), "sub")), vec![], "sub"),
        (
            "iss and sub an unknown client",
            hs(&with(
                with(base_hs(), "iss", "ghost".into()),
                "sub",
                "ghost".into(),
            )),
            vec![],
            "credentials",
        ),
        (
            "client_id field differs",
            hs(&base_hs()),
            vec![("client_id", KEY_JWT_ID)],
            "client_id",
        ),
        (
            "aud of another environment",
            hs(&with(base_hs(), "aud", token_url(REGION, OTHER_ENV).into())),
            vec![],
            "aud",
        ),
        (
            "aud on another host",
            hs(&with(
                base_hs(),
                "aud",
                token_url("auth.pingone.com", ENV).into(),
            )),
            vec![],
            "aud",
        ),
        (
            "aud with a port",
            hs(&with(
                base_hs(),
                "aud",
                format!("https://{REGION}:443/{ENV}/as/token").into(),
            )),
            vec![],
            "aud",
        ),
        ("aud missing", hs(&without(base_hs(), "aud")), vec![], "aud"),
        ("exp missing", hs(&without(base_hs(), "exp")), vec![], "exp"),
        (
            "exp past",
            es(&with(base_es(), "exp", (now - 30).into())),
            vec![],
            "expired",
        ),
        (
            "exp a string",
            hs(&with(base_hs(), "exp", (now + 60).to_string().into())),
            vec![],
            "exp",
        ),
        (
            "exp more than an hour ahead",
            hs(&with(base_hs(), "exp", (now + 3700).into())),
            vec![],
            "one hour",
        ),
        (
            "nbf in the future",
            hs(&with(base_hs(), "nbf", (now + 60).into())),
            vec![],
            "nbf",
        ),
    ];
    for (what, assertion, extra, word) in &cases {
        let resp = token_assertion(&http, &url, assertion, extra).await;
        assert_eq!(header(&resp, "www-authenticate"), None, "{what}");
        let body = assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
        let description = body["error_description"].as_str().expect("description");
        assert!(
            description.starts_with("Request denied: "),
            "{what}: {description}"
        );
        assert!(
            description.contains(word),
            "{what}: {description:?} lacks {word:?}"
        );
        assert!(
            !body.to_string().contains(assertion.as_str()),
            "{what} echoed"
        );
    }
    assert!(standin.issued_tokens().is_empty());
    assert!(
        standin
            .requests()
            .iter()
            .all(|r| !r.client_secret_ok && r.status == 401)
    );
    // The same clients, keys and URL pass with valid assertions: the rejections were the rules.
    assert_token_for(
        &standin,
        token_assertion(&http, &url, &hs(&base_hs()), &[]).await,
        SECRET_JWT_ID,
    )
    .await;
    assert_token_for(
        &standin,
        token_assertion(&http, &url, &es(&base_es()), &[]).await,
        KEY_JWT_ID,
    )
    .await;
    // nbf within the leeway, exp just under an hour.
    let edge = with(
        with(base_hs(), "nbf", (now + 2).into()),
        "exp",
        (now + 3590).into(),
    );
    assert_token_for(
        &standin,
        token_assertion(&http, &url, &hs(&edge), &[]).await,
        SECRET_JWT_ID,
    )
    .await;
}

#[tokio::test]
async fn replayed_jti_is_refused_and_a_missing_jti_is_recorded() {
    let keys = JwtKeys::new();
    let standin = start_jwt(&keys).await;
    let http = http(&standin);
    let url = token_url(REGION, ENV);
    let claims = jwt::claims(KEY_JWT_ID, &url);
    let assertion = key_assertion(&keys.ec384, "ES384", None, &claims);

    // A rejected assertion does not use up its jti.
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = Value::from(token_url(REGION, OTHER_ENV));
    let resp = token_assertion(
        &http,
        &url,
        &key_assertion(&keys.ec384, "ES384", None, &wrong_aud),
        &[],
    )
    .await;
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;

    assert_token_for(
        &standin,
        token_assertion(&http, &url, &assertion, &[]).await,
        KEY_JWT_ID,
    )
    .await;
    let resp = token_assertion(&http, &url, &assertion, &[]).await;
    let body = assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert!(
        body["error_description"]
            .as_str()
            .expect("d")
            .contains("jti"),
        "{body}"
    );
    // The same jti on another client is that client's business.
    let mut other = jwt::claims(SECRET_JWT_ID, &url);
    other["jti"] = claims["jti"].clone();
    assert_token_for(
        &standin,
        token_assertion(
            &http,
            &url,
            &hs_assertion("HS256", SECRET_JWT_SECRET, &other),
            &[],
        )
        .await,
        SECRET_JWT_ID,
    )
    .await;

    // No jti: accepted (twice), and the record shows it was missing.
    let mut no_jti = jwt::claims(KEY_JWT_ID, &url);
    no_jti.as_object_mut().expect("object").remove("jti");
    let assertion = key_assertion(&keys.ec384, "ES384", None, &no_jti);
    for _ in 0..2 {
        assert_token_for(
            &standin,
            token_assertion(&http, &url, &assertion, &[]).await,
            KEY_JWT_ID,
        )
        .await;
    }
    let recorded = standin.requests();
    assert_eq!(recorded.len(), 6);
    assert_eq!(recorded[1].assertion_jti.as_deref(), claims["jti"].as_str());
    assert!(!recorded[2].client_secret_ok);
    assert_eq!(recorded[4].assertion_jti, None);
    assert_eq!(recorded[5].assertion_jti, None);
}

#[tokio::test]
async fn assertion_mixed_with_a_secret_or_sent_by_a_secret_client_is_refused() {
    let keys = JwtKeys::new();
    let standin = start_jwt(&keys).await;
    let http = http(&standin);
    let url = token_url(REGION, ENV);
    let assertion = hs_assertion(
        "HS256",
        SECRET_JWT_SECRET,
        &jwt::claims(SECRET_JWT_ID, &url),
    );

    let resp = token_assertion(
        &http,
        &url,
        &assertion,
        &[("client_secret", SECRET_JWT_SECRET)],
    )
    .await;
    let body = assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        body["error_description"]
            .as_str()
            .expect("d")
            .contains("Multiple"),
        "{body}"
    );
    let resp = http
        .post(&url)
        .header(
            "Authorization",
            basic_header(SECRET_JWT_ID, SECRET_JWT_SECRET),
        )
        .form(&form(&[
            ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ]))
        .send()
        .await
        .expect("request");
    assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
    // Half an assertion, and another assertion type.
    let resp = post_form(&http, &url, &form(&[("client_assertion", &assertion)])).await;
    assert_oauth_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
    let resp = post_form(
        &http,
        &url,
        &form(&[
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            ),
            ("client_assertion", &assertion),
        ]),
    )
    .await;
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;

    // A client registered for client_secret_post, with an assertion signed by its secret.
    let post_assertion = hs_assertion("HS256", POST_SECRET, &jwt::claims(POST_ID, &url));
    let resp = token_assertion(&http, &url, &post_assertion, &[]).await;
    let body = assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert_eq!(
        body["error_description"],
        "Request denied: Unsupported authentication method"
    );
    // And the other way round: the client_secret_jwt client posting its secret.
    let resp = token_post(&http, SECRET_JWT_ID, SECRET_JWT_SECRET).await;
    let body = assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert_eq!(
        body["error_description"],
        "Request denied: Unsupported authentication method"
    );
    // A private_key_jwt client has no secret to post.
    let resp = token_post(&http, KEY_JWT_ID, "").await;
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert!(standin.issued_tokens().is_empty());
    // The assertion itself was fine.
    assert_token_for(
        &standin,
        token_assertion(&http, &url, &assertion, &[]).await,
        SECRET_JWT_ID,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Management API: rotation of the application secret.

const ROTATOR_ID: &str = "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f";
const ROTATOR_SECRET: &str = "rotator-secret-0123456789";
const NO_ROLE_ID: &str = "d4e5f6a7-b8c9-4d0e-9f1a-2b3c4d5e6f70";
const NO_ROLE_SECRET: &str = "no-role-secret-0123456789";

/// The stand-in of [`start`] with a client that may rotate secrets and one that may not.
async fn start_management() -> StandIn {
    let standin = start(config()).await;
    standin.add_client(
        ClientRegistration::new(ENV, ROTATOR_ID, ROTATOR_SECRET).with_secret_rotation(true),
    );
    standin.add_client(ClientRegistration::new(ENV, NO_ROLE_ID, NO_ROLE_SECRET));
    standin
}

/// Authenticates at the regional token endpoint with `method`.
async fn token_with(
    http: &reqwest::Client,
    method: AuthMethod,
    id: &str,
    secret: &str,
) -> reqwest::Response {
    match method {
        AuthMethod::ClientSecretPost => token_post(http, id, secret).await,
        AuthMethod::ClientSecretBasic => token_basic(http, id, secret).await,
        AuthMethod::ClientSecretJwt => {
            let url = token_url(REGION, ENV);
            let assertion = hs_assertion("HS512", secret, &jwt::claims(id, &url));
            token_assertion(http, &url, &assertion, &[]).await
        }
        AuthMethod::PrivateKeyJwt => panic!("no secret for private_key_jwt"),
    }
}

async fn access_token(http: &reqwest::Client, id: &str, secret: &str) -> String {
    let resp = token_post(http, id, secret).await;
    assert_eq!(resp.status(), StatusCode::OK);
    json(resp).await["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// `{"previous":{"expiresAt": now + after}}`.
fn retain(after: Duration) -> Value {
    let at = jiff::Timestamp::try_from(SystemTime::now() + after).expect("timestamp");
    serde_json::json!({"previous": {"expiresAt": at.to_string()}})
}

async fn rotate(
    http: &reqwest::Client,
    token: Option<&str>,
    app: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    rotate_at(http, API_EU, token, app, body)
        .await
        .expect("management request")
}

async fn rotate_at(
    http: &reqwest::Client,
    host: &str,
    token: Option<&str>,
    app: &str,
    body: Option<&Value>,
) -> reqwest::Result<reqwest::Response> {
    let mut req = http.post(StandIn::management_secret_url(host, ENV, app));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await
}

async fn assert_platform_error(resp: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(resp.status(), status);
    let body = json(resp).await;
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["id"].as_str().is_some_and(|id| id.len() == 36),
        "{body}"
    );
    assert!(body["message"].is_string(), "{body}");
    body
}

/// Polls until exactly `n` requests are parked, for at most 10 s.
async fn wait_held(standin: &StandIn, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while standin.held_requests() != n {
        assert!(
            Instant::now() < deadline,
            "{} requests held, waiting for {n}",
            standin.held_requests()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_generated(secret: &str) {
    assert!((64..=80).contains(&secret.len()), "length {}", secret.len());
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    );
}

#[tokio::test]
async fn rotation_keeps_the_previous_secret_until_expires_at_for_every_secret_method() {
    let standin = start_management().await;
    let http = http(&standin);
    let clients = [
        (
            AuthMethod::ClientSecretPost,
            "rot-post",
            "rot-post-secret-0",
        ),
        (
            AuthMethod::ClientSecretBasic,
            "rot-basic",
            "rot-basic-secret-0",
        ),
        (
            AuthMethod::ClientSecretJwt,
            "rot-jwt",
            "rot-jwt-secret-0-long-enough-for-hmac-sha-512-0123456789abcdefghij",
        ),
    ];
    let mut secrets = Vec::new();
    let mut tokens = Vec::new();
    for (method, id, old) in clients {
        standin.add_client(
            ClientRegistration::new(ENV, id, old)
                .with_auth_method(method)
                .with_secret_rotation(true),
        );
        let resp = token_with(&http, method, id, old).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let token = json(resp).await["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        let before = SystemTime::now();
        let resp = rotate(
            &http,
            Some(&token),
            id,
            Some(&retain(Duration::from_secs(120))),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
        let body = json(resp).await;
        assert_eq!(body["environment"]["id"], ENV);
        let new = body["secret"].as_str().expect("secret").to_string();
        assert_generated(&new);
        assert_eq!(body["previous"]["secret"], old);
        let expires_at = body["previous"]["expiresAt"].as_str().expect("expiresAt");
        // RFC 3339, millisecond precision, UTC.
        assert_eq!(
            expires_at.len(),
            "2026-01-01T00:00:00.000Z".len(),
            "{expires_at}"
        );
        assert!(expires_at.ends_with('Z') && expires_at.as_bytes()[19] == b'.');
        let until = SystemTime::from(expires_at.parse::<jiff::Timestamp>().expect("RFC 3339"));
        assert!(until >= before + Duration::from_secs(119));
        assert!(until <= SystemTime::now() + Duration::from_secs(120));
        assert_eq!(
            standin.current_secret(ENV, id).as_deref(),
            Some(new.as_str())
        );
        assert_eq!(
            standin.previous_secret(ENV, id),
            Some((old.to_string(), until))
        );

        // Both work now; the record tells which one was used.
        for (secret, previous) in [(old, true), (new.as_str(), false)] {
            let resp = token_with(&http, method, id, secret).await;
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "{method:?} previous={previous}"
            );
            let last = standin.requests().pop().expect("recorded");
            assert!(last.client_secret_ok);
            assert_eq!(last.used_previous_secret, previous, "{method:?}");
        }
        secrets.extend([old.to_string(), new.clone()]);
        tokens.push(token);
    }

    // Past expiresAt (on the stand-in's clock) the previous secrets stop working.
    standin.advance_clock(Duration::from_secs(121));
    for (i, (method, id, old)) in clients.into_iter().enumerate() {
        assert_eq!(standin.previous_secret(ENV, id), None);
        let resp = token_with(&http, method, id, old).await;
        assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
        assert!(!standin.requests().pop().expect("recorded").client_secret_ok);
        let resp = token_with(&http, method, id, &secrets[2 * i + 1]).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }

    let recorded = standin.management_requests();
    assert_eq!(recorded.len(), 3);
    for (r, (_, id, _)) in recorded.iter().zip(clients) {
        assert_eq!(r.method, "POST");
        assert_eq!(r.host, API_EU);
        assert_eq!(r.environment_id, ENV);
        assert_eq!(r.application_id, id);
        assert_eq!(r.caller_client_id.as_deref(), Some(id));
        assert_eq!(
            r.path,
            format!("/v1/environments/{ENV}/applications/{id}/secret")
        );
        assert_eq!((r.status, r.rotated, r.fault.as_deref()), (200, true, None));
    }
    let text = serde_json::to_string(&recorded).expect("json")
        + &serde_json::to_string(&standin.requests()).expect("json");
    for leak in secrets.iter().chain(&tokens) {
        assert!(
            !text.contains(leak.as_str()),
            "a secret or token was recorded"
        );
    }
}

#[tokio::test]
async fn rotation_without_previous_ends_the_old_secret_and_a_second_rotation_replaces_the_previous()
{
    let standin = start_management().await;
    let http = http(&standin);
    let token = access_token(&http, ROTATOR_ID, ROTATOR_SECRET).await;
    let secret = |body: &Value| body["secret"].as_str().expect("secret").to_string();

    // Another region's API host is fine too.
    let resp = rotate_at(&http, "api.pingone.com", Some(&token), ROTATOR_ID, None)
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert!(body.get("previous").is_none(), "{body}");
    let s1 = secret(&body);
    assert_eq!(standin.previous_secret(ENV, ROTATOR_ID), None);
    let resp = token_post(&http, ROTATOR_ID, ROTATOR_SECRET).await;
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert_eq!(
        token_post(&http, ROTATOR_ID, &s1).await.status(),
        StatusCode::OK
    );

    let hour = retain(Duration::from_secs(3600));
    let s2 = secret(&json(rotate(&http, Some(&token), ROTATOR_ID, Some(&hour)).await).await);
    assert_eq!(
        token_post(&http, ROTATOR_ID, &s1).await.status(),
        StatusCode::OK
    );
    let body = json(rotate(&http, Some(&token), ROTATOR_ID, Some(&hour)).await).await;
    assert_eq!(body["previous"]["secret"], s2.as_str());
    let s3 = secret(&body);
    // Only one previous secret: s1 stopped at once.
    let resp = token_post(&http, ROTATOR_ID, &s1).await;
    assert_oauth_error(resp, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert_eq!(
        token_post(&http, ROTATOR_ID, &s2).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        token_post(&http, ROTATOR_ID, &s3).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        standin.previous_secret(ENV, ROTATOR_ID).map(|(s, _)| s),
        Some(s2)
    );
    let hosts: Vec<String> = standin
        .management_requests()
        .into_iter()
        .map(|r| r.host)
        .collect();
    assert_eq!(hosts, ["api.pingone.com", API_EU, API_EU]);
}

#[tokio::test]
async fn management_api_refuses_bad_tokens_missing_roles_unknown_apps_and_bad_bodies() {
    let standin = start_management().await;
    let http = http(&standin);
    standin.add_client(
        ClientRegistration::new(ENV, SCOPED_ID, SCOPED_SECRET)
            .with_scopes(["billing:read"])
            .with_secret_rotation(true),
    );
    standin.add_client(
        ClientRegistration::new(ENV, "expiring", "expiring-secret")
            .with_token_lifetime(Duration::ZERO)
            .with_secret_rotation(true),
    );
    standin.add_client(
        ClientRegistration::new(OTHER_ENV, ROTATOR_ID, ROTATOR_SECRET).with_secret_rotation(true),
    );
    let token = access_token(&http, ROTATOR_ID, ROTATOR_SECRET).await;
    let scoped = json(token_post_scoped(&http, SCOPED_ID, SCOPED_SECRET, "billing:read").await)
        .await["access_token"]
        .as_str()
        .expect("scoped token")
        .to_string();
    let expired = access_token(&http, "expiring", "expiring-secret").await;
    let other_env = json(
        post_form(
            &http,
            &token_url(REGION, OTHER_ENV),
            &form(&[("client_id", ROTATOR_ID), ("client_secret", ROTATOR_SECRET)]),
        )
        .await,
    )
    .await["access_token"]
        .as_str()
        .expect("other env token")
        .to_string();
    let tampered = jwt::tamper_signature(&token);
    let no_role = access_token(&http, NO_ROLE_ID, NO_ROLE_SECRET).await;

    let message = "The request could not be completed. You do not have access to this resource.";
    for (what, bearer) in [
        ("no token", None),
        ("not a JWT", Some("not-a-token")),
        ("bad signature", Some(tampered.as_str())),
        ("scoped token", Some(scoped.as_str())),
        ("expired token", Some(expired.as_str())),
        ("token of another environment", Some(other_env.as_str())),
    ] {
        let resp = rotate(&http, bearer, ROTATOR_ID, None).await;
        let body = assert_platform_error(resp, StatusCode::UNAUTHORIZED, "ACCESS_FAILED").await;
        assert_eq!(body["message"], message, "{what}");
    }
    for app in [ROTATOR_ID, NO_ROLE_ID] {
        let resp = rotate(&http, Some(&no_role), app, None).await;
        let body = assert_platform_error(resp, StatusCode::FORBIDDEN, "ACCESS_FAILED").await;
        assert_eq!(body["message"], message);
        assert!(
            body["details"]
                .as_array()
                .is_some_and(|d| !d.is_empty() && d[0]["message"].is_string()),
            "{body}"
        );
    }
    let resp = rotate(&http, Some(&token), "no-such-application", None).await;
    assert_platform_error(resp, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    for body in [
        retain(Duration::from_secs(30)),
        retain(Duration::from_secs(31 * 24 * 3600)),
        serde_json::json!({"previous": {"expiresAt": "tomorrow"}}),
        serde_json::json!({"previous": {}}),
        serde_json::json!(["previous"]),
    ] {
        let resp = rotate(&http, Some(&token), ROTATOR_ID, Some(&body)).await;
        let err = assert_platform_error(resp, StatusCode::BAD_REQUEST, "INVALID_DATA").await;
        assert!(err["details"][0]["message"].is_string(), "{body}: {err}");
    }
    let resp = rotate(
        &http,
        Some(&token),
        ROTATOR_ID,
        Some(&retain(Duration::from_secs(30))),
    )
    .await;
    let err = json(resp).await;
    assert!(
        err["details"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 minute and 30 days")),
        "{err}"
    );
    // A worker may not read its own secret (GET is for another application allowed
    // applications:read:secret); other methods are not served.
    let resp = http
        .get(StandIn::management_secret_url(API_EU, ENV, ROTATOR_ID))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = http
        .put(StandIn::management_secret_url(API_EU, ENV, ROTATOR_ID))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Nothing changed, and the record says who asked where the token verified.
    assert_eq!(
        standin.current_secret(ENV, ROTATOR_ID).as_deref(),
        Some(ROTATOR_SECRET)
    );
    assert_eq!(standin.previous_secret(ENV, ROTATOR_ID), None);
    let recorded = standin.management_requests();
    assert!(recorded.iter().all(|r| !r.rotated));
    let callers: Vec<Option<&str>> = recorded[..8]
        .iter()
        .map(|r| r.caller_client_id.as_deref())
        .collect();
    assert_eq!(
        callers,
        [
            None,
            None,
            None,
            Some(SCOPED_ID),
            Some("expiring"),
            Some(ROTATOR_ID),
            Some(NO_ROLE_ID),
            Some(NO_ROLE_ID)
        ]
    );
    let statuses: Vec<u16> = recorded.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            401, 401, 401, 401, 401, 401, 403, 403, 404, 400, 400, 400, 400, 400, 400, 403, 405
        ]
    );
    // The same caller with an unscoped token and a good body succeeds.
    let unscoped = access_token(&http, SCOPED_ID, SCOPED_SECRET).await;
    let resp = rotate(&http, Some(&unscoped), ROTATOR_ID, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

async fn token_post_scoped(
    http: &reqwest::Client,
    id: &str,
    secret: &str,
    scope: &str,
) -> reqwest::Response {
    post_form(
        http,
        &token_url(REGION, ENV),
        &form(&[
            ("client_id", id),
            ("client_secret", secret),
            ("scope", scope),
        ]),
    )
    .await
}

#[tokio::test]
async fn hold_parks_before_the_rotation_and_hold_after_commit_after_it() {
    let standin = start_management().await;
    let http = http(&standin);
    let token = access_token(&http, ROTATOR_ID, ROTATOR_SECRET).await;
    let spawn_rotation = |body: Value| {
        let (http, token) = (http.clone(), token.clone());
        tokio::spawn(async move {
            json(rotate(&http, Some(&token), ROTATOR_ID, Some(&body)).await).await
        })
    };
    let hour = retain(Duration::from_secs(3600));

    // Hold: nothing is decided until the release.
    standin.push_management_fault(Fault::Hold, 1);
    let task = spawn_rotation(hour.clone());
    wait_held(&standin, 1).await;
    assert_eq!(
        standin.current_secret(ENV, ROTATOR_ID).as_deref(),
        Some(ROTATOR_SECRET)
    );
    assert!(standin.management_requests().is_empty());
    standin.release_held();
    let body = task.await.expect("rotation task");
    let s1 = body["secret"].as_str().expect("secret").to_string();
    assert_eq!(standin.current_secret(ENV, ROTATOR_ID), Some(s1.clone()));
    wait_held(&standin, 0).await;
    let recorded = standin.management_requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].fault.as_deref(), Some("hold"));
    assert!(recorded[0].rotated);

    // HoldAfterCommit: the new secret is current while the caller still waits for it.
    standin.push_management_fault(Fault::HoldAfterCommit, 1);
    let task = spawn_rotation(hour.clone());
    wait_held(&standin, 1).await;
    let s2 = standin.current_secret(ENV, ROTATOR_ID).expect("secret");
    assert_ne!(s2, s1);
    assert!(!task.is_finished());
    assert_eq!(
        token_post(&http, ROTATOR_ID, &s2).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        token_post(&http, ROTATOR_ID, &s1).await.status(),
        StatusCode::OK
    );
    standin.release_held();
    let body = task.await.expect("rotation task");
    assert_eq!(body["secret"], s2.as_str());
    assert_eq!(body["previous"]["secret"], s1.as_str());
    wait_held(&standin, 0).await;

    // A caller that gives up on a held answer wedges nothing.
    standin.push_management_fault(Fault::HoldAfterCommit, 1);
    let task = spawn_rotation(hour.clone());
    wait_held(&standin, 1).await;
    let s3 = standin.current_secret(ENV, ROTATOR_ID).expect("secret");
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());
    assert_eq!(
        token_post(&http, ROTATOR_ID, &s3).await.status(),
        StatusCode::OK
    );
    let resp = rotate(&http, Some(&token), ROTATOR_ID, Some(&hour)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    standin.release_held();
    wait_held(&standin, 0).await;
}

#[tokio::test]
async fn token_endpoint_holds_issue_nothing_until_released() {
    let standin = start(config()).await;
    let http = http(&standin);
    standin.push_fault(Fault::Hold, 1);
    standin.push_fault(Fault::HoldAfterCommit, 1);
    let spawn_token = || {
        let http = http.clone();
        tokio::spawn(async move { token_post(&http, POST_ID, POST_SECRET).await.status() })
    };
    let first = spawn_token();
    wait_held(&standin, 1).await;
    let second = spawn_token();
    wait_held(&standin, 2).await;
    assert!(standin.issued_tokens().is_empty());
    assert!(standin.requests().is_empty());
    assert!(!first.is_finished() && !second.is_finished());
    standin.release_held();
    assert_eq!(first.await.expect("task"), StatusCode::OK);
    assert_eq!(second.await.expect("task"), StatusCode::OK);
    wait_held(&standin, 0).await;
    assert_eq!(standin.issued_tokens().len(), 2);
    let mut faults: Vec<Option<String>> = standin.requests().into_iter().map(|r| r.fault).collect();
    faults.sort();
    assert_eq!(
        faults,
        [
            Some("hold".to_string()),
            Some("hold after commit".to_string())
        ]
    );
}

#[tokio::test]
async fn management_faults_and_token_faults_stay_apart() {
    let standin = start_management().await;
    let http = http(&standin);
    let token = access_token(&http, ROTATOR_ID, ROTATOR_SECRET).await;
    let current = || standin.current_secret(ENV, ROTATOR_ID).expect("secret");

    standin.push_management_fault(Fault::status_with_retry_after(503, 7), 1);
    assert_eq!(
        token_post(&http, ROTATOR_ID, &current()).await.status(),
        StatusCode::OK
    );
    assert_eq!(standin.pending_faults(), 0);
    let before = current();
    let resp = rotate(&http, Some(&token), ROTATOR_ID, None).await;
    assert_eq!(header(&resp, "retry-after").as_deref(), Some("7"));
    assert_platform_error(resp, StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE").await;
    assert_eq!(current(), before);

    standin.push_fault(Fault::status(500), 1);
    let resp = rotate(&http, Some(&token), ROTATOR_ID, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_ne!(current(), before);
    assert_eq!(standin.pending_faults(), 1);
    assert_eq!(
        token_post(&http, ROTATOR_ID, &current()).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let before = current();
    standin.push_management_fault(Fault::DropConnection, 1);
    assert!(
        rotate_at(&http, API_EU, Some(&token), ROTATOR_ID, None)
            .await
            .is_err()
    );
    standin.push_management_fault(Fault::MalformedJson, 1);
    let resp = rotate(&http, Some(&token), ROTATOR_ID, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.bytes().await.expect("body");
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
    assert_eq!(current(), before, "a faulty answer commits nothing");

    standin.push_management_fault(Fault::Delay(Duration::from_millis(300)), 1);
    let started = Instant::now();
    let resp = rotate(&http, Some(&token), ROTATOR_ID, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_ne!(current(), before);

    standin.push_management_fault(Fault::status(500), 3);
    standin.clear_management_faults();
    assert_eq!(
        rotate(&http, Some(&token), ROTATOR_ID, None).await.status(),
        StatusCode::OK
    );
    let recorded: Vec<(u16, Option<String>, bool)> = standin
        .management_requests()
        .into_iter()
        .map(|r| (r.status, r.fault, r.rotated))
        .collect();
    assert_eq!(
        recorded,
        [
            (503, Some("status 503 retry-after 7".to_string()), false),
            (200, None, true),
            (0, Some("drop connection".to_string()), false),
            (200, Some("malformed json".to_string()), false),
            (200, Some("delay 300 ms".to_string()), true),
            (200, None, true),
        ]
    );
}

#[tokio::test]
async fn admin_api_registers_jwt_clients_and_drives_the_management_api() {
    let standin = start_management().await;
    let http = http(&standin);
    let admin = |path: &str| format!("https://localhost/__standin/{path}");
    let key = jwt::TestKey::ec(Some("admin-ec"), false);
    let resp = http
        .post(admin("clients"))
        .json(&serde_json::json!({
            "environment_id": ENV,
            "client_id": "admin-pkj",
            "auth_method": "private_key_jwt",
            "jwks": {"keys": [key.jwk]},
            "can_rotate_secret": true,
        }))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = http
        .post(admin("clients"))
        .json(&serde_json::json!({
            "environment_id": ENV,
            "client_id": "admin-no-keys",
            "auth_method": "private_key_jwt",
        }))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let url = token_url(REGION, ENV);
    let assertion = key_assertion(
        &key,
        "ES256",
        Some("admin-ec"),
        &jwt::claims("admin-pkj", &url),
    );
    let resp = token_assertion(&http, &url, &assertion, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let token = json(resp).await["access_token"]
        .as_str()
        .expect("token")
        .to_string();

    let resp = http
        .post(admin("management-faults"))
        .json(&serde_json::json!({"fault": {"kind": "status", "status": 429, "retry_after": 2}}))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = http
        .post(admin("management-faults"))
        .json(&serde_json::json!({"fault": {"kind": "hold"}, "persistent": true}))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = rotate(&http, Some(&token), ROTATOR_ID, None).await;
    assert_eq!(header(&resp, "retry-after").as_deref(), Some("2"));
    assert_platform_error(resp, StatusCode::TOO_MANY_REQUESTS, "REQUEST_LIMITED").await;

    let resp = http
        .post(admin("management-faults"))
        .json(&serde_json::json!({"fault": {"kind": "hold"}}))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let task = {
        let (http, token) = (http.clone(), token.clone());
        tokio::spawn(async move { rotate(&http, Some(&token), ROTATOR_ID, None).await.status() })
    };
    wait_held(&standin, 1).await;
    let stats = json(http.get(admin("stats")).send().await.expect("admin")).await;
    assert_eq!(stats["held_requests"], 1);
    let resp = http
        .post(admin("release-held"))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(task.await.expect("task"), StatusCode::OK);

    let recorded = json(
        http.get(admin("management-requests"))
            .send()
            .await
            .expect("admin"),
    )
    .await;
    let recorded = recorded.as_array().expect("list");
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0]["status"], 429);
    assert_eq!(recorded[1]["fault"], "hold");
    assert_eq!(recorded[1]["rotated"], true);
    assert_eq!(recorded[1]["caller_client_id"], "admin-pkj");
    let secret = standin.current_secret(ENV, ROTATOR_ID).expect("secret");
    assert!(!Value::Array(recorded.clone()).to_string().contains(&secret));

    let requests = json(http.get(admin("requests")).send().await.expect("admin")).await;
    let last = requests
        .as_array()
        .and_then(|r| r.last())
        .expect("a token request");
    assert_eq!(last["auth_method"], "private_key_jwt");
    assert_eq!(last["assertion_alg"], "ES256");
    assert_eq!(last["assertion_kid"], "admin-ec");
    let resp = http
        .delete(admin("management-faults"))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

/// `GET …/applications/{id}/secret`: another application allowed to read secrets gets the
/// current secret and the previous one while it is accepted; one without the permission gets
/// 403, as does an application asking for its own.
#[tokio::test]
async fn the_management_api_serves_an_application_secret_to_an_allowed_reader() {
    const READER_ID: &str = "e5f6a7b8-c9d0-4e1f-8a2b-3c4d5e6f7081";
    let standin = start_management().await;
    let http = http(&standin);
    standin.add_client(
        ClientRegistration::new(ENV, READER_ID, "reader-secret").with_secret_read(true),
    );
    let rotator = access_token(&http, ROTATOR_ID, ROTATOR_SECRET).await;
    let resp = rotate(
        &http,
        Some(&rotator),
        ROTATOR_ID,
        Some(&retain(Duration::from_secs(3600))),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let new = standin.current_secret(ENV, ROTATOR_ID).unwrap();

    let read = |token: String| {
        let http = http.clone();
        async move {
            http.get(StandIn::management_secret_url(API_EU, ENV, ROTATOR_ID))
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
        }
    };
    let reader = access_token(&http, READER_ID, "reader-secret").await;
    let resp = read(reader).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["secret"], new.as_str());
    assert_eq!(body["previous"]["secret"], ROTATOR_SECRET);
    assert!(body["previous"]["expiresAt"].as_str().is_some(), "{body}");

    let no_role = access_token(&http, NO_ROLE_ID, NO_ROLE_SECRET).await;
    assert_eq!(read(no_role).await.status(), StatusCode::FORBIDDEN);
    let own = access_token(&http, ROTATOR_ID, &new).await;
    assert_eq!(read(own).await.status(), StatusCode::FORBIDDEN);
    let reads: Vec<(String, u16)> = standin
        .management_requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| (r.caller_client_id.unwrap_or_default(), r.status))
        .collect();
    assert_eq!(
        reads,
        [
            (READER_ID.to_string(), 200),
            (NO_ROLE_ID.to_string(), 403),
            (ROTATOR_ID.to_string(), 403)
        ]
    );
}
