//! PingOne token endpoint and Management API stand-in.
//!
//! A small HTTPS server that speaks PingOne's OAuth 2 token endpoint as PingOne documents it
//! (DESIGN.md sections 2, 6 and 7): both path forms (`/{environmentId}/as/token` on the regional
//! domains, `/as/token` on custom domains), `client_secret_post`, `client_secret_basic`,
//! `client_secret_jwt` and `private_key_jwt` client authentication, RS256 JWT access tokens with
//! a configurable lifetime, `/as/jwks`, `/as/.well-known/openid-configuration`,
//! `/as/introspect`, RFC 6749 error bodies, a rate limit and injectable faults (status codes with
//! `Retry-After`, delays, malformed, incomplete or oversized bodies, dropped connections,
//! redirects, requests held until released). It records every token request.
//!
//! It also serves the one Management API call the operator makes, the rotation of an
//! application's client secret (`POST /v1/environments/{envId}/applications/{appId}/secret`,
//! see [`StandIn::management_secret_url`]), with its own fault queue and its own record.
//!
//! Client assertions are verified with `ring` directly, written apart from the operator's
//! signing code so that a mistake there cannot be mirrored here.
//!
//! Its certificate is issued by a test CA generated at start ([`StandIn::ca_pem`],
//! [`StandIn::ca_path`]) for the six regional auth domains, the six Management API domains,
//! `localhost`, `127.0.0.1` and any extra names, so a client that resolves `auth.pingone.eu`
//! to [`StandIn::addr`] exercises the real URL and TLS verification.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use pingone_testbed::standin::{AuthMethod, ClientRegistration, Fault, StandIn, StandInConfig};
//! let standin = StandIn::start(StandInConfig::default()).await?;
//! standin.add_client(
//!     ClientRegistration::new("cd91070f-c371-480e-80b2-753c735f8aa1", "my-client", "s3cret")
//!         .with_auth_method(AuthMethod::ClientSecretBasic),
//! );
//! standin.push_fault(Fault::status_with_retry_after(429, 7), 1);
//! # Ok(()) }
//! ```
//!
//! A token request is evaluated in this order: method (`POST`, else 405), rate limit (429),
//! the next fault, environment (404), content type, client authentication (`invalid_client`
//! 401, or `invalid_request` 400 for two methods at once), `grant_type`, `scope`. Faults that
//! rewrite a success ([`Fault::MissingField`], [`Fault::ExpiresIn`]), [`Fault::Delay`] and the
//! holds ([`Fault::Hold`], [`Fault::HoldAfterCommit`]) go through the normal checks; the others
//! answer whatever the request was.
//!
//! A client assertion (`client_assertion_type` =
//! `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`) is checked in this order, each
//! failure a 401 `invalid_client` that never echoes the assertion: well-formed JWT; `iss` =
//! `sub`; the `client_id` form field, if sent, equals them; the client exists; its registered
//! method is a JWT method; `alg` fits that method (HS256/384/512 for `client_secret_jwt`,
//! RS256/384/512 or ES256/ES384 for `private_key_jwt`); the signature (with the current client
//! secret, then with a previous one still valid; or with the JWKS key named by `kid`, else any
//! key of the fitting type); `aud` holds the token URL or the issuer, both written with the
//! request's host *without* a port (`https://{host}/{envId}/as/token`,
//! `https://{host}/{envId}/as`, or `https://{host}/as/...` on a custom domain); `exp` present,
//! not past (5 s leeway) and at most 3600 s ahead; `nbf`, if present, not in the future (5 s
//! leeway); a `jti`, if present, not seen before for that client while its earlier assertion
//! was unexpired.
//!
//! The same server has a small admin API under `/__standin/` for the standalone
//! `pingone-standin` binary (see [`admin`]).

pub mod admin;
mod assertion;
mod keys;
mod management;
mod server;
mod state;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use keys::{VerifyError, verify_rs256_jwt};

use self::state::{Shared, State};

/// The six regional PingOne auth domains (NA, EU, CA, AU, SG and the legacy AP domain).
pub const REGIONAL_AUTH_DOMAINS: [&str; 6] = [
    "auth.pingone.com",
    "auth.pingone.eu",
    "auth.pingone.ca",
    "auth.pingone.com.au",
    "auth.pingone.sg",
    "auth.pingone.asia",
];

/// The six regional PingOne Management API domains, in the order of
/// [`REGIONAL_AUTH_DOMAINS`].
pub const MANAGEMENT_API_DOMAINS: [&str; 6] = [
    "api.pingone.com",
    "api.pingone.eu",
    "api.pingone.ca",
    "api.pingone.com.au",
    "api.pingone.sg",
    "api.pingone.asia",
];

/// `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The organisation id put in the `org` claim of every token.
pub const STANDIN_ORG_ID: &str = "5a9e3c2e-1b7d-4f0a-9c4e-7d2f1e6b8a30";

/// Common name of the test CA.
pub const TEST_CA_COMMON_NAME: &str = "pingone-operator test CA";

/// Default token lifetime of PingOne worker applications.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Whether `s` is an environment id as PingOne writes them: a lowercase UUID.
pub fn is_environment_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// How the stand-in is started.
#[derive(Clone, Debug)]
pub struct StandInConfig {
    /// Address to listen on; the default `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// DNS names put in the server certificate besides the regional domains, `localhost` and
    /// `127.0.0.1`. Custom domains must be named here (or in `custom_domains`) to be usable.
    pub extra_dns_names: Vec<String>,
    /// Custom domains (`host`, `environment id`) registered at start; their hosts also go into
    /// the certificate.
    pub custom_domains: Vec<(String, String)>,
    /// Lifetime of issued tokens unless a client overrides it.
    pub token_lifetime: Duration,
    /// The `org` claim.
    pub org_id: String,
}

impl Default for StandInConfig {
    fn default() -> Self {
        StandInConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            extra_dns_names: Vec::new(),
            custom_domains: Vec::new(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            org_id: STANDIN_ORG_ID.to_string(),
        }
    }
}

/// Token endpoint authentication method of a registered client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuthMethod {
    /// `client_id` and `client_secret` in the form body (PingOne's default for worker apps).
    #[default]
    #[serde(rename = "client_secret_post")]
    ClientSecretPost,
    /// HTTP Basic authentication with form-urlencoded id and secret (RFC 6749 §2.3.1).
    #[serde(rename = "client_secret_basic")]
    ClientSecretBasic,
    /// A client assertion signed HS256/HS384/HS512 with the client secret.
    #[serde(rename = "client_secret_jwt")]
    ClientSecretJwt,
    /// A client assertion signed with a private key whose public key is in the client's
    /// [`ClientRegistration::jwks`]; the client has no usable secret.
    #[serde(rename = "private_key_jwt")]
    PrivateKeyJwt,
}

impl AuthMethod {
    /// The name PingOne and RFC 8414 use.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretJwt => "client_secret_jwt",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// A worker application known to the stand-in. In PingOne the application id is the client id.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRegistration {
    /// The environment the application lives in.
    pub environment_id: String,
    /// The client id (also the application id of the Management API).
    pub client_id: String,
    /// The client secret; empty for none. A `private_key_jwt` client never authenticates with
    /// it. Kept in memory only (HMAC of `client_secret_jwt` needs it), never logged.
    pub client_secret: String,
    /// The one token endpoint authentication method the client may use.
    pub auth_method: AuthMethod,
    /// Scopes (of one custom resource) that the client may request. Requesting no scope is
    /// always allowed.
    pub allowed_scopes: Vec<String>,
    /// Overrides the stand-in's token lifetime for this client.
    pub token_lifetime: Option<Duration>,
    /// The public keys of a `private_key_jwt` client: a JWKS `{"keys":[...]}` of RSA and EC
    /// P-256/P-384 public JWKs, each optionally with a `kid`.
    pub jwks: Option<serde_json::Value>,
    /// Whether the client's tokens may rotate application secrets through the Management API
    /// (a role covering the application's roles, in PingOne's terms).
    pub can_rotate_secret: bool,
    /// Whether the client's tokens may read other applications' secrets
    /// (`applications:read:secret`): `GET …/applications/{id}/secret`. A worker cannot read
    /// its own secret.
    pub can_read_secrets: bool,
}

impl std::fmt::Debug for ClientRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRegistration")
            .field("environment_id", &self.environment_id)
            .field("client_id", &self.client_id)
            .field("auth_method", &self.auth_method)
            .field("allowed_scopes", &self.allowed_scopes)
            .field("token_lifetime", &self.token_lifetime)
            .field("jwks", &self.jwks)
            .field("can_rotate_secret", &self.can_rotate_secret)
            .field("can_read_secrets", &self.can_read_secrets)
            .finish_non_exhaustive()
    }
}

impl ClientRegistration {
    /// A `client_secret_post` client without scopes and with the default lifetime.
    pub fn new(
        environment_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        ClientRegistration {
            environment_id: environment_id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            auth_method: AuthMethod::ClientSecretPost,
            allowed_scopes: Vec::new(),
            token_lifetime: None,
            jwks: None,
            can_rotate_secret: false,
            can_read_secrets: false,
        }
    }

    /// A `private_key_jwt` client with these public keys and no secret.
    pub fn private_key(
        environment_id: impl Into<String>,
        client_id: impl Into<String>,
        jwks: serde_json::Value,
    ) -> Self {
        ClientRegistration::new(environment_id, client_id, "")
            .with_auth_method(AuthMethod::PrivateKeyJwt)
            .with_jwks(jwks)
    }

    /// Sets the authentication method.
    pub fn with_auth_method(mut self, auth_method: AuthMethod) -> Self {
        self.auth_method = auth_method;
        self
    }

    /// Sets the scopes the client may request.
    pub fn with_scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.allowed_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the client's own token lifetime.
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = Some(lifetime);
        self
    }

    /// Sets the public keys used to verify `private_key_jwt` assertions.
    pub fn with_jwks(mut self, jwks: serde_json::Value) -> Self {
        self.jwks = Some(jwks);
        self
    }

    /// Lets the client's tokens rotate application secrets through the Management API.
    pub fn with_secret_rotation(mut self, allowed: bool) -> Self {
        self.can_rotate_secret = allowed;
        self
    }

    /// Lets the client's tokens read other applications' secrets through the Management API.
    pub fn with_secret_read(mut self, allowed: bool) -> Self {
        self.can_read_secrets = allowed;
        self
    }
}

/// The `<title>` of [`Fault::html_page`].
pub const HTML_PAGE_TITLE: &str = "Attention Required! | Example Edge";

/// A fault injected into token requests ([`StandIn::push_fault`]) or Management API requests
/// ([`StandIn::push_management_fault`]); each queue serves only its own endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status, a `Retry-After: <secs>` header when set, and the given body or
    /// an RFC 6749 error body that fits the status.
    Status {
        status: u16,
        retry_after: Option<u64>,
        body: Option<String>,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// A 200 whose JSON body is cut short.
    MalformedJson,
    /// A normal answer (after normal authentication) without this field of the JSON body.
    MissingField(String),
    /// A normal answer (after normal authentication) whose `expires_in` is this value. The
    /// token's own `exp` keeps the configured lifetime.
    ExpiresIn(i64),
    /// A 200 with a body of exactly this many bytes: valid token JSON padded in the token when
    /// the size allows, otherwise a cut-off prefix of it.
    Oversized(usize),
    /// Close the connection without writing any response.
    DropConnection,
    /// A `302 Found` to this location.
    Redirect(String),
    /// Park the request before anything is decided (no token issued, no rotation committed)
    /// until [`StandIn::release_held`]; then it proceeds normally.
    Hold,
    /// A normal answer whose access token is opaque (not a JWT).
    OpaqueToken,
    /// A normal answer whose JWT signature does not verify (the signature bytes are changed).
    BadSignature,
    /// A normal answer whose JWT names a `kid` the JWKS does not have.
    UnknownKid,
    /// A normal answer whose JWT `exp` is this many seconds off the `expires_in` it states.
    ExpSkew(i64),
    /// A normal answer that grants only these scopes (in the token and the response), whatever
    /// was asked for.
    GrantOnly(Vec<String>),
    /// On the Management API: commit the rotation (the new secret is current), then park the
    /// response until [`StandIn::release_held`]. On the token endpoint the same as
    /// [`Fault::Hold`].
    HoldAfterCommit,
    /// Commit (issue the token, rotate the secret), then close the connection without an
    /// answer: an answer lost on the way back.
    DropAfterCommit,
    /// Commit, then answer with this status and the platform's error body, as a gateway does
    /// whose upstream committed before it failed.
    StatusAfterCommit(u16),
    /// Commit, then wait this long before answering: slower than a client's timeout.
    DelayAfterCommit(Duration),
}

impl Fault {
    /// [`Fault::Status`] with the default body and no `Retry-After`.
    pub fn status(status: u16) -> Self {
        Fault::Status {
            status,
            retry_after: None,
            body: None,
        }
    }

    /// [`Fault::Status`] with the default body and `Retry-After: retry_after`.
    pub fn status_with_retry_after(status: u16, retry_after: u64) -> Self {
        Fault::Status {
            status,
            retry_after: Some(retry_after),
            body: None,
        }
    }

    /// [`Fault::Status`] with the HTML page a WAF in front of the token endpoint sends when it
    /// blocks a request (titled [`HTML_PAGE_TITLE`], served as `text/html`): no JSON, nothing
    /// PingOne wrote.
    pub fn html_page(status: u16) -> Self {
        Fault::Status {
            status,
            retry_after: None,
            body: Some(format!(
                "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
                 <title>{HTML_PAGE_TITLE}</title></head>\n<body><h1>Sorry, you have been \
                 blocked</h1><p>This request was blocked by the security service.</p>\
                 <p>Ray ID: 8f2c4e1a9b7d3c21</p></body>\n</html>\n"
            )),
        }
    }

    /// A short name for logs and [`RecordedRequest::fault`].
    pub fn name(&self) -> String {
        match self {
            Fault::Status {
                status,
                retry_after: Some(after),
                ..
            } => format!("status {status} retry-after {after}"),
            Fault::Status { status, .. } => format!("status {status}"),
            Fault::Delay(d) => format!("delay {} ms", d.as_millis()),
            Fault::MalformedJson => "malformed json".to_string(),
            Fault::MissingField(f) => format!("missing field {f}"),
            Fault::ExpiresIn(v) => format!("expires_in {v}"),
            Fault::Oversized(n) => format!("oversized {n} bytes"),
            Fault::DropConnection => "drop connection".to_string(),
            Fault::Redirect(_) => "redirect".to_string(),
            Fault::Hold => "hold".to_string(),
            Fault::HoldAfterCommit => "hold after commit".to_string(),
            Fault::DropAfterCommit => "drop after commit".to_string(),
            Fault::StatusAfterCommit(status) => format!("status {status} after commit"),
            Fault::DelayAfterCommit(d) => format!("delay {} ms after commit", d.as_millis()),
            Fault::OpaqueToken => "opaque token".to_string(),
            Fault::BadSignature => "bad signature".to_string(),
            Fault::UnknownKid => "unknown kid".to_string(),
            Fault::ExpSkew(s) => format!("exp skew {s} s"),
            Fault::GrantOnly(scopes) => format!("grant only {}", scopes.join(" ")),
        }
    }
}

/// How a recorded request authenticated its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordedAuthMethod {
    /// `client_secret` in the form body.
    #[serde(rename = "client_secret_post")]
    Post,
    /// An `Authorization: Basic` header (also when both were used).
    #[serde(rename = "client_secret_basic")]
    Basic,
    /// A client assertion whose header names an HMAC algorithm (`HS…`).
    #[serde(rename = "client_secret_jwt")]
    ClientSecretJwt,
    /// A client assertion with any other (or no readable) algorithm.
    #[serde(rename = "private_key_jwt")]
    PrivateKeyJwt,
    /// No client secret at all.
    #[serde(rename = "none")]
    None,
}

/// One request to a token endpoint. Never holds a secret or a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// When the request arrived.
    #[serde(with = "rfc3339")]
    pub time: SystemTime,
    /// HTTP method.
    pub method: String,
    /// Host name from the `Host` header (without port), or the TLS SNI when there was none.
    pub host: String,
    /// TLS server name indication, if the client sent one.
    pub sni: Option<String>,
    pub path: String,
    /// The environment addressed: the path's for the regional form, the custom domain's
    /// otherwise (`None` for an unknown custom domain).
    pub environment_id: Option<String>,
    /// From the Basic header or the form body; for an assertion without a `client_id` field,
    /// its (unverified) `sub`, else its `iss`.
    pub client_id: Option<String>,
    pub auth_method: RecordedAuthMethod,
    pub grant_type: Option<String>,
    /// The `scope` form parameter as sent.
    pub scope: Option<String>,
    /// Response status; 0 when the connection was dropped without a response.
    pub status: u16,
    /// Whether the client authenticated: for a secret, that the client exists in that
    /// environment and the secret matches its current secret or a still valid previous one
    /// (whatever the method used); for an assertion, that it passed every check.
    pub client_secret_ok: bool,
    /// Whether the credentials matched only the previous secret (post, basic, or an HMAC
    /// assertion).
    #[serde(default)]
    pub used_previous_secret: bool,
    /// The `alg` header of a client assertion.
    #[serde(default)]
    pub assertion_alg: Option<String>,
    /// The `kid` header of a client assertion.
    #[serde(default)]
    pub assertion_kid: Option<String>,
    /// The `jti` claim of a client assertion; `None` also when the assertion had none (PingOne
    /// expects one; the stand-in accepts its absence).
    #[serde(default)]
    pub assertion_jti: Option<String>,
    /// The fault applied, if any (see [`Fault::name`]).
    pub fault: Option<String>,
}

/// One request to the Management API. Never holds a secret or a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedManagementRequest {
    /// When the request arrived.
    #[serde(with = "rfc3339")]
    pub time: SystemTime,
    /// HTTP method.
    pub method: String,
    /// Host name from the `Host` header (without port), or the TLS SNI when there was none.
    pub host: String,
    pub path: String,
    /// The environment id of the path.
    pub environment_id: String,
    /// The application id of the path (a client id).
    pub application_id: String,
    /// The `client_id` of the bearer token, when its signature verified.
    pub caller_client_id: Option<String>,
    /// Response status; 0 when the connection was dropped without a response.
    pub status: u16,
    /// The fault applied, if any (see [`Fault::name`]).
    pub fault: Option<String>,
    /// Whether a new secret was committed (also when the response was then held or lost).
    pub rotated: bool,
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        match jiff::Timestamp::try_from(*t) {
            Ok(ts) => s.collect_str(&ts),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        let ts: jiff::Timestamp = s.parse().map_err(D::Error::custom)?;
        Ok(SystemTime::from(ts))
    }
}

/// A running stand-in. Dropping it stops the server and removes the CA file.
pub struct StandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    ca_der: Vec<u8>,
    ca_path: PathBuf,
    _dir: tempfile::TempDir,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Generates the CA, the server certificate and the signing key, binds the listener and
    /// starts serving. Ready to accept connections when this returns.
    pub async fn start(config: StandInConfig) -> Result<StandIn> {
        for (_, env) in &config.custom_domains {
            anyhow::ensure!(
                is_environment_id(env),
                "custom domain environment id {env:?} is not a lowercase UUID"
            );
        }
        let mut names: Vec<String> = REGIONAL_AUTH_DOMAINS
            .iter()
            .chain(MANAGEMENT_API_DOMAINS.iter())
            .map(|d| d.to_string())
            .chain(["localhost".to_string(), "127.0.0.1".to_string()])
            .collect();
        for name in config
            .extra_dns_names
            .iter()
            .chain(config.custom_domains.iter().map(|(host, _)| host))
        {
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let certs = tls::TestCerts::generate(&names)?;
        let keys = tokio::task::spawn_blocking(keys::SigningKeys::generate)
            .await
            .context("RSA key generation task")??;

        let dir = tempfile::Builder::new()
            .prefix("pingone-standin-")
            .tempdir()
            .context("creating the stand-in's temporary directory")?;
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &certs.ca_pem)
            .with_context(|| format!("writing {}", ca_path.display()))?;

        let mut state = State::new(config.token_lifetime);
        for (host, env) in &config.custom_domains {
            state.add_custom_domain(host, env);
        }
        let shared = Arc::new(Shared::new(state, keys, config.org_id.clone()));

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certs.server_config()?));
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(server::serve(
            listener,
            acceptor,
            Arc::clone(&shared),
            shutdown_rx,
        ));
        Ok(StandIn {
            shared,
            addr,
            ca_pem: certs.ca_pem,
            ca_der: certs.ca_der,
            ca_path,
            _dir: dir,
            shutdown_tx: Some(shutdown_tx),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The test CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The test CA certificate (DER).
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// A file holding [`StandIn::ca_pem`], removed when the stand-in is dropped.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// A rustls client configuration (ring provider, HTTP/1.1) that trusts only the test CA.
    pub fn client_tls_config(&self) -> Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(self.ca_der.clone()))?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// `https://{auth_domain}/{environment_id}/as/token` (no port: resolve the domain to
    /// [`StandIn::addr`], which also carries the port).
    pub fn token_url(auth_domain: &str, environment_id: &str) -> String {
        format!("https://{auth_domain}/{environment_id}/as/token")
    }

    /// `https://{api_domain}/v1/environments/{environment_id}/applications/{application_id}/secret`
    /// (no port, as [`StandIn::token_url`]).
    pub fn management_secret_url(
        api_domain: &str,
        environment_id: &str,
        application_id: &str,
    ) -> String {
        format!(
            "https://{api_domain}/v1/environments/{environment_id}/applications/{application_id}/secret"
        )
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }

    /// Registers a client, replacing one with the same environment and client id (e.g. to
    /// rotate its secret). Its environment becomes known.
    pub fn add_client(&self, client: ClientRegistration) {
        self.state().add_client(client);
    }

    /// Gives a client a new secret, as a person does in the admin console: the old one stays
    /// accepted until `keep_previous_until` (`None`: not at all). Returns whether the client
    /// exists.
    pub fn set_client_secret(
        &self,
        environment_id: &str,
        client_id: &str,
        secret: &str,
        keep_previous_until: Option<SystemTime>,
    ) -> bool {
        let mut state = self.state();
        match state.client_mut(environment_id, client_id) {
            Some(client) => {
                client.rotate(secret.to_string(), keep_previous_until);
                true
            }
            None => false,
        }
    }

    /// Removes a client; its environment stays known. Returns whether it existed.
    pub fn remove_client(&self, environment_id: &str, client_id: &str) -> bool {
        self.state().remove_client(environment_id, client_id)
    }

    /// Makes an environment known without registering a client (unknown environments get 404).
    pub fn add_environment(&self, environment_id: &str) {
        self.state().add_environment(environment_id);
    }

    /// Serves `environment_id` at `https://{host}/as/...`. The host must have been in
    /// [`StandInConfig::extra_dns_names`] for clients to accept the certificate.
    pub fn add_custom_domain(&self, host: &str, environment_id: &str) {
        self.state().add_custom_domain(host, environment_id);
    }

    /// Lifetime of tokens of clients without their own (default 3600 s).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state().token_lifetime = lifetime;
    }

    /// Queues a fault for the next `times` token requests (FIFO after earlier faults).
    pub fn push_fault(&self, fault: Fault, times: usize) {
        self.state().push_fault(fault, times);
    }

    /// A fault for every token request until cleared; while set, it wins over queued faults
    /// (which stay queued).
    pub fn set_persistent_fault(&self, fault: Option<Fault>) {
        self.state().persistent_fault = fault;
    }

    /// Clears queued and persistent faults.
    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.faults.clear();
        state.persistent_fault = None;
    }

    /// How many queued fault applications are left.
    pub fn pending_faults(&self) -> usize {
        self.state().faults.iter().map(|(_, n)| n).sum()
    }

    /// At most `requests` token requests per sliding `window`; beyond it 429 with
    /// `Retry-After`. Rejected requests do not count against the limit. `None` removes it.
    pub fn set_rate_limit(&self, limit: Option<(u32, Duration)>) {
        self.state().set_rate_limit(limit);
    }

    /// Every token endpoint request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// Queues a fault for the next `times` Management API requests (FIFO); token requests do
    /// not see it.
    pub fn push_management_fault(&self, fault: Fault, times: usize) {
        self.state().push_management_fault(fault, times);
    }

    /// Clears queued Management API faults.
    pub fn clear_management_faults(&self) {
        self.state().management_faults.clear();
    }

    /// Lets every request parked by [`Fault::Hold`] or [`Fault::HoldAfterCommit`] proceed.
    /// Requests parked later stay parked until the next call.
    pub fn release_held(&self) {
        self.shared.release_held();
    }

    /// How many requests (of both endpoints) are parked right now.
    pub fn held_requests(&self) -> usize {
        self.shared.held_requests()
    }

    /// Every Management API request so far, oldest first (a held one once it has finished).
    pub fn management_requests(&self) -> Vec<RecordedManagementRequest> {
        self.state().management_requests.clone()
    }

    /// The client's current secret (`None` for an unknown client or one without a secret).
    pub fn current_secret(&self, environment_id: &str, client_id: &str) -> Option<String> {
        self.state()
            .client(environment_id, client_id)?
            .current_secret()
            .map(str::to_owned)
    }

    /// The client's previous secret and when it stops working, while the token endpoint still
    /// accepts it (judged by the stand-in's clock, see [`StandIn::advance_clock`]).
    pub fn previous_secret(
        &self,
        environment_id: &str,
        client_id: &str,
    ) -> Option<(String, SystemTime)> {
        let state = self.state();
        let now = state.now();
        state
            .client(environment_id, client_id)?
            .previous_secret(now)
            .map(|(secret, until)| (secret.to_owned(), until))
    }

    /// Moves the clock that decides whether a previous secret has expired forward by `by`.
    /// Nothing else follows it: token `iat`/`exp`, assertion time checks and the bounds of a
    /// rotation's `expiresAt` stay on the real clock, so clients keep working.
    pub fn advance_clock(&self, by: Duration) {
        self.state().clock_offset += by;
    }

    /// Number of token endpoint requests recorded.
    pub fn token_request_count(&self) -> usize {
        self.state().requests.len()
    }

    /// Forgets recorded requests and issued tokens.
    pub fn reset_requests(&self) {
        let mut state = self.state();
        state.requests.clear();
        state.issued_tokens.clear();
    }

    /// TCP connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Makes the JWKS answer 503 (`true`) or serve its keys again (`false`); requests are
    /// counted either way.
    pub fn set_jwks_unavailable(&self, down: bool) {
        self.state().jwks_down = down;
    }

    /// Makes the JWKS answer `delay` late (zero: at once).
    pub fn set_jwks_delay(&self, delay: Duration) {
        self.state().jwks_delay = delay;
    }

    /// How many times the JWKS was requested.
    pub fn jwks_requests(&self) -> usize {
        self.state().jwks_requests
    }

    /// Every access token issued so far (for tests that look for leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued_tokens.clone()
    }

    /// The JSON Web Key Set served at `/as/jwks`.
    pub fn jwks(&self) -> serde_json::Value {
        self.shared.jwks()
    }

    /// The public key that signs new tokens.
    pub fn public_key(&self) -> rsa::RsaPublicKey {
        self.shared.signing().public_key().clone()
    }

    /// The `kid` of the key that signs new tokens.
    pub fn kid(&self) -> String {
        self.shared.signing().kid().to_string()
    }

    /// Signs new tokens with a new key (new `kid`), as PingOne does when a signing key is
    /// rotated; the old key stays in the JWKS.
    pub async fn rotate_signing_key(&self) {
        let keys = tokio::task::spawn_blocking(keys::SigningKeys::generate)
            .await
            .expect("key generation task")
            .expect("signing key");
        self.shared.rotate_keys(keys);
    }

    /// The `org` claim of issued tokens.
    pub fn org_id(&self) -> &str {
        &self.shared.org_id
    }

    /// Verifies a token's RS256 signature with the stand-in's key and returns its claims
    /// (expiry is not checked).
    pub fn verify_token(&self, token: &str) -> std::result::Result<serde_json::Value, VerifyError> {
        self.shared.verify(token)
    }

    /// Stops accepting connections, closes open ones and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("addr", &self.addr)
            .field("ca_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
