//! The HTTP client that posts client credentials to a PingOne token endpoint.

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Url, redirect};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use jsonwebtoken::Algorithm;

use super::assertion;
use super::private_key::PrivateKey;
use super::ratelimit::{Admission, RateLimiter};

use super::domain::{AuthDomainPolicy, normalize_domain, token_url_normalised};
use super::error::{ClientBuildError, TokenError, sanitize_text};
use super::response::{
    Credential, ErrorContext, TokenResponse, classify_error_response, parse_retry_after,
    parse_token_response,
};
use super::secret::{ExposeSecret, SecretString};

/// Default time allowed to establish the TCP connection and TLS session.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed for a whole request, from connecting to the last byte of the body.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Default cap on a response body. A token response is a few KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default `User-Agent`.
pub const DEFAULT_USER_AGENT: &str = concat!("pingone-operator/", env!("CARGO_PKG_VERSION"));

/// Idle pooled connections are dropped after this; renewals are minutes apart, so keeping them
/// longer saves little and holds sockets PingOne's load balancers close anyway.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Installs the `ring` rustls crypto provider as the process-wide default, once.
///
/// The token client does not need it (it names its provider explicitly), but other TLS users in
/// the process (the Kubernetes client) do. Safe to call any number of times; when another
/// provider is already installed, that one is kept.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if rustls::crypto::ring::default_provider()
            .install_default()
            .is_err()
        {
            tracing::debug!("a rustls crypto provider was already installed; keeping it");
        }
    });
}

/// How the client authenticates to the token endpoint (the method's name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMethod {
    /// `client_id` and `client_secret` in the form body (PingOne's default for worker apps).
    #[default]
    ClientSecretPost,
    /// HTTP Basic authentication with the form-urlencoded client id and secret
    /// (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// A JWT client assertion signed with the client secret (HS256/384/512).
    ClientSecretJwt,
    /// A JWT client assertion signed with the application's private key (RFC 7523).
    PrivateKeyJwt,
}

/// The credential a request authenticates with, and how.
#[derive(Clone, Copy)]
pub enum ClientAuth<'a> {
    /// `client_secret_post`.
    SecretPost(&'a SecretString),
    /// `client_secret_basic`.
    SecretBasic(&'a SecretString),
    /// `client_secret_jwt` with an HMAC algorithm (HS256, HS384 or HS512).
    SecretJwt(&'a SecretString, Algorithm),
    /// `private_key_jwt`; the key carries its algorithm and key id.
    PrivateKeyJwt(&'a PrivateKey),
}

impl ClientAuth<'_> {
    /// The method's name.
    pub fn method(&self) -> AuthMethod {
        match self {
            ClientAuth::SecretPost(_) => AuthMethod::ClientSecretPost,
            ClientAuth::SecretBasic(_) => AuthMethod::ClientSecretBasic,
            ClientAuth::SecretJwt(..) => AuthMethod::ClientSecretJwt,
            ClientAuth::PrivateKeyJwt(_) => AuthMethod::PrivateKeyJwt,
        }
    }

    fn secret(&self) -> Option<&SecretString> {
        match self {
            ClientAuth::SecretPost(s)
            | ClientAuth::SecretBasic(s)
            | ClientAuth::SecretJwt(s, _) => Some(s),
            ClientAuth::PrivateKeyJwt(_) => None,
        }
    }
}

/// One client credentials token request.
///
/// `Debug` never prints the client secret or key.
#[derive(Clone, Copy)]
pub struct TokenRequest<'a> {
    /// The auth domain, e.g. `auth.pingone.eu`, or an allowed custom domain.
    pub auth_domain: &'a str,
    /// The environment id (a UUID); part of the URL for regional domains only.
    pub environment_id: &'a str,
    /// The worker application's client id.
    pub client_id: &'a str,
    /// The credential and the method that presents it.
    pub auth: ClientAuth<'a>,
    /// Scopes to request; none requests the application's role assignments.
    pub scopes: &'a [String],
}

impl fmt::Debug for TokenRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("auth_domain", &self.auth_domain)
            .field("environment_id", &self.environment_id)
            .field("client_id", &self.client_id)
            .field("credential", &super::secret::REDACTED)
            .field("scopes", &self.scopes)
            .field("method", &self.auth.method())
            .finish()
    }
}

/// Default cap on token requests per second per auth domain and environment.
pub const DEFAULT_MAX_REQUESTS_PER_SECOND: u32 = 100;

/// Configuration of a [`TokenClient`].
#[derive(Debug, Clone)]
pub struct TokenClientConfig {
    /// Custom auth domains allowed besides the six regional ones (`--allowed-auth-domains`).
    pub extra_allowed_domains: Vec<String>,
    /// A PEM bundle of CA certificates trusted in addition to the system roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Fixed addresses for host names, e.g. `auth.pingone.eu` → `127.0.0.1:8443` in tests. The
    /// URL, SNI and certificate verification still use the name; the override's port is used
    /// because token URLs never carry one. When any override is set, proxies from the
    /// environment (`HTTPS_PROXY`) are not used; otherwise they are.
    pub host_overrides: Vec<(String, SocketAddr)>,
    /// Time allowed to connect (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time allowed for the whole request including reading the body.
    pub request_timeout: Duration,
    /// Largest response body accepted.
    pub max_body_bytes: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// At most this many token requests per second per auth domain and environment (0: no
    /// limit); requests beyond it wait their turn.
    pub max_requests_per_second: u32,
    /// Environments (by id) with a request rate of their own, overriding
    /// `max_requests_per_second`.
    pub environment_max_requests_per_second: Vec<(String, u32)>,
    /// An environment's JWKS is fetched again for an unknown `kid` at most this often.
    pub jwks_min_refetch: Duration,
}

impl Default for TokenClientConfig {
    fn default() -> Self {
        Self {
            extra_allowed_domains: Vec::new(),
            extra_ca_pem: None,
            host_overrides: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            max_requests_per_second: DEFAULT_MAX_REQUESTS_PER_SECOND,
            environment_max_requests_per_second: Vec::new(),
            jwks_min_refetch: super::jwks::JWKS_MIN_REFETCH,
        }
    }
}

/// Posts client credentials to PingOne token endpoints.
///
/// HTTPS only, certificates verified against the system roots plus the optional extra CA
/// bundle, redirects never followed (credentials must not reach a host the policy did not
/// allow), connect and total timeouts, bodies capped. Cheap to clone; clones share the
/// connection pool.
#[derive(Debug, Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    policy: Arc<AuthDomainPolicy>,
    max_body_bytes: usize,
    limiter: Arc<RateLimiter>,
    jwks: Arc<super::jwks::JwksCache>,
}

impl TokenClient {
    /// Builds the client. Fails on an invalid allowed domain or host override, an unusable
    /// extra CA bundle, no trust roots at all, or out-of-range values.
    pub fn new(config: TokenClientConfig) -> Result<Self, ClientBuildError> {
        Self::build(config, false)
    }

    /// `allow_plain_http` exists for the unit tests' plain-TCP server only.
    fn build(config: TokenClientConfig, allow_plain_http: bool) -> Result<Self, ClientBuildError> {
        let invalid = |detail: String| ClientBuildError::InvalidConfig { detail };
        if config.connect_timeout.is_zero() {
            return Err(invalid("connect timeout must be greater than zero".into()));
        }
        if config.request_timeout.is_zero() {
            return Err(invalid("request timeout must be greater than zero".into()));
        }
        if config.max_body_bytes == 0 {
            return Err(invalid(
                "maximum body size must be greater than zero".into(),
            ));
        }
        let user_agent = HeaderValue::from_str(&config.user_agent)
            .map_err(|_| invalid("user agent is not a valid header value".into()))?;

        let policy = AuthDomainPolicy::new(&config.extra_allowed_domains)?;
        let tls = tls_config(config.extra_ca_pem.as_deref())?;

        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(!allow_plain_http)
            .redirect(redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_keepalive(TCP_KEEPALIVE)
            .user_agent(user_agent);
        // Host overrides mean "connect exactly there"; a proxy from the environment would
        // silently bypass them.
        if allow_plain_http || !config.host_overrides.is_empty() {
            builder = builder.no_proxy();
        }
        for (name, addr) in &config.host_overrides {
            let name = normalize_domain(name).map_err(|why| {
                invalid(format!(
                    "host override {:?}: {why}",
                    sanitize_text(name, &[])
                ))
            })?;
            builder = builder.resolve(&name, *addr);
        }
        let http = builder.build().map_err(|e| ClientBuildError::Http {
            detail: root_cause(&e),
        })?;
        Ok(Self {
            http,
            policy: Arc::new(policy),
            max_body_bytes: config.max_body_bytes,
            limiter: Arc::new(RateLimiter::new(
                config.max_requests_per_second,
                &config.environment_max_requests_per_second,
            )),
            jwks: Arc::new(super::jwks::JwksCache::new(config.jwks_min_refetch)),
        })
    }

    /// The auth domains this client may send credentials to.
    pub fn policy(&self) -> &AuthDomainPolicy {
        &self.policy
    }

    /// The environments' JWKS (see [`TokenClient::verify_token`]).
    pub(crate) fn jwks_cache(&self) -> &super::jwks::JwksCache {
        &self.jwks
    }

    /// The locked-down HTTP client (for the Management API).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A transport failure towards `domain`, as a short message without the URL.
    pub(crate) fn describe_transport(&self, domain: &str, error: &reqwest::Error) -> String {
        match transport_error(domain, error) {
            TokenError::Timeout { domain } => format!("no answer from {domain} in time"),
            TokenError::Tls { domain, detail } => format!("TLS with {domain} failed: {detail}"),
            TokenError::Connect { domain, detail } => {
                format!("could not connect to {domain}: {detail}")
            }
            other => other.to_string(),
        }
    }

    /// Reads a body up to the configured cap.
    pub(crate) async fn read_capped(
        &self,
        response: &mut reqwest::Response,
    ) -> Result<Vec<u8>, String> {
        match read_body(response, self.max_body_bytes).await {
            Ok(body) => Ok(body),
            Err(BodyError::TooLarge) => Err(format!("body exceeds {} bytes", self.max_body_bytes)),
            Err(BodyError::Transport(e)) => Err(root_cause(&e)),
        }
    }

    /// Requests a token. See [`TokenClient::request_token_timed`] for the duration.
    pub async fn request_token(&self, req: &TokenRequest<'_>) -> Result<TokenResponse, TokenError> {
        self.request_token_timed(req).await.0
    }

    /// Asks the request budget of an auth domain and environment (see [`RateLimiter`]) whether
    /// a request may go now, or when to come back; `held` is the slot the caller was given
    /// last time. A refused or malformed domain is always let through: nothing will be sent.
    pub fn admit(
        &self,
        auth_domain: &str,
        environment_id: &str,
        held: Option<tokio::time::Instant>,
        now: tokio::time::Instant,
        tolerance: Duration,
    ) -> Admission {
        match self.policy.allowed(auth_domain) {
            Ok(domain) => self
                .limiter
                .admit(&domain, environment_id, held, now, tolerance),
            Err(_) => Admission::Go,
        }
    }

    /// [`admit`](Self::admit), but a slot at most `within` away is waited for here (see
    /// [`RateLimiter::admit_within`]), and a caller whose token must be renewed by `probe_by`
    /// may probe through a pause: `Ok` once the request may go, `Err(slot)` to come back.
    pub async fn admit_within(
        &self,
        auth_domain: &str,
        environment_id: &str,
        held: Option<tokio::time::Instant>,
        tolerance: Duration,
        within: Duration,
        probe_by: Option<tokio::time::Instant>,
    ) -> Result<Duration, tokio::time::Instant> {
        match self.policy.allowed(auth_domain) {
            Ok(domain) => {
                self.limiter
                    .admit_within(&domain, environment_id, held, tolerance, within, probe_by)
                    .await
            }
            Err(_) => Ok(Duration::ZERO),
        }
    }

    /// Requests a token, waiting for the request budget first, and also returns how long the
    /// attempt took (for the request duration metric, which should count failures too; queued
    /// time is not counted).
    pub async fn request_token_timed(
        &self,
        req: &TokenRequest<'_>,
    ) -> (Result<TokenResponse, TokenError>, Duration) {
        if let Ok(domain) = self.policy.allowed(req.auth_domain) {
            self.limiter.acquire(&domain, req.environment_id).await;
        }
        self.request_admitted_timed(req).await
    }

    /// Requests a token now: the caller already holds a slot of the budget
    /// ([`TokenClient::reserve_slot`]). Returns how long the attempt took.
    ///
    /// The domain is checked against the policy before anything else; a refused or malformed
    /// domain returns at once with no I/O. A 429 with `Retry-After` pauses the budget of the
    /// whole environment. Callers computing an expiry time should count `expires_in` from the
    /// moment they called this, which errs on the early side.
    pub async fn request_admitted_timed(
        &self,
        req: &TokenRequest<'_>,
    ) -> (Result<TokenResponse, TokenError>, Duration) {
        let started = Instant::now();
        let (result, status) = match self.policy.allowed(req.auth_domain) {
            Ok(domain) => match token_url_normalised(&domain, req.environment_id) {
                Ok(url) => {
                    let answer = self.send(&domain, url, req).await;
                    if let Err(TokenError::RateLimited {
                        retry_after: Some(wait),
                        ..
                    }) = &answer.0
                    {
                        self.limiter.pause(
                            &domain,
                            req.environment_id,
                            tokio::time::Instant::now() + *wait,
                        );
                    }
                    answer
                }
                Err(error) => (Err(error), None),
            },
            Err(error) => (Err(error), None),
        };
        let elapsed = started.elapsed();
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(token) => tracing::debug!(
                auth_domain = req.auth_domain,
                environment_id = req.environment_id,
                client_id = req.client_id,
                status,
                elapsed_ms,
                expires_in_s = token.expires_in.as_secs(),
                "PingOne token request succeeded"
            ),
            Err(error) => tracing::debug!(
                auth_domain = req.auth_domain,
                environment_id = req.environment_id,
                client_id = req.client_id,
                status,
                elapsed_ms,
                reason = error.reason(),
                error = %error,
                "PingOne token request failed"
            ),
        }
        (result, elapsed)
    }

    /// Sends the request to `url` and interprets the answer; also returns the HTTP status when
    /// there was one. `domain` names the host in transport error messages.
    async fn send(
        &self,
        domain: &str,
        url: Url,
        req: &TokenRequest<'_>,
    ) -> (Result<TokenResponse, TokenError>, Option<u16>) {
        // A fresh assertion per request: its own `jti`, a short `exp`, `aud` the exact URL.
        let assertion = match assertion::for_request(req, url.as_str()) {
            Ok(assertion) => assertion,
            Err(error) => return (Err(error), None),
        };
        let mut request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(form_body(req, assertion.as_ref()));
        if let ClientAuth::SecretBasic(secret) = req.auth {
            // reqwest base64-encodes "user:password" and marks the header sensitive, so that
            // HTTP-level debug output never shows it.
            let (id, secret) = basic_credentials(req.client_id, secret.expose_secret());
            request = request.basic_auth(id, Some(secret));
        }

        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return (Err(transport_error(domain, &error)), None),
        };
        let status = response.status().as_u16();
        let body = match read_body(&mut response, self.max_body_bytes).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                let detail = format!("HTTP {status} body exceeds {} bytes", self.max_body_bytes);
                return (Err(TokenError::InvalidResponse { detail }), Some(status));
            }
            Err(BodyError::Transport(error)) => {
                return (Err(transport_error(domain, &error)), Some(status));
            }
        };
        let result = if response.status().is_success() {
            parse_token_response(&body)
        } else {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
            // An echo of the secret (or of the assertion, for a key) is scrubbed.
            let scrub = match (req.auth.secret(), &assertion) {
                (Some(secret), _) => secret.expose_secret(),
                (None, Some(assertion)) => assertion.expose_secret(),
                (None, None) => "",
            };
            let credential = match req.auth {
                ClientAuth::PrivateKeyJwt(key) => Credential::PrivateKey {
                    key_id: key.key_id(),
                },
                _ => Credential::Secret,
            };
            let context = ErrorContext {
                auth_domain: domain,
                environment_id: req.environment_id,
                credential,
                scrub,
            };
            Err(classify_error_response(
                status,
                retry_after,
                &body,
                &context,
            ))
        };
        (result, Some(status))
    }
}

/// The form body: `grant_type`, `scope` when any, and for `client_secret_post` the
/// credentials, for the JWT methods the assertion.
fn form_body(req: &TokenRequest<'_>, assertion: Option<&SecretString>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    let scope = req
        .scopes
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !scope.is_empty() {
        form.append_pair("scope", &scope);
    }
    if let ClientAuth::SecretPost(secret) = req.auth {
        form.append_pair("client_id", req.client_id);
        form.append_pair("client_secret", secret.expose_secret());
    }
    if let Some(assertion) = assertion {
        form.append_pair("client_assertion_type", assertion::ASSERTION_TYPE);
        form.append_pair("client_assertion", assertion.expose_secret());
    }
    form.finish()
}

/// The user and password of `Authorization: Basic base64(urlencode(client_id) ":"
/// urlencode(client_secret))` (RFC 6749 §2.3.1): each part form-urlencoded first, so that a `:`
/// in the client id cannot shift the split.
fn basic_credentials(client_id: &str, client_secret: &str) -> (String, String) {
    let id = form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    let secret = form_urlencoded::byte_serialize(client_secret.as_bytes()).collect();
    (id, secret)
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads the body chunk by chunk, giving up as soon as it exceeds `max` bytes, or before reading
/// when the announced length already does.
async fn read_body(response: &mut reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    let max_u64 = u64::try_from(max).unwrap_or(u64::MAX);
    if response.content_length().is_some_and(|len| len > max_u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Maps a reqwest error to a short message naming the host and the innermost cause; never the
/// URL or the request.
fn transport_error(domain: &str, error: &reqwest::Error) -> TokenError {
    let domain = domain.to_owned();
    if error.is_timeout() {
        return TokenError::Timeout { domain };
    }
    if let Some(detail) = tls_cause(error) {
        return TokenError::Tls { domain, detail };
    }
    TokenError::Connect {
        domain,
        detail: root_cause(error),
    }
}

/// The next error down the chain. `io::Error` needs special care: its `source()` skips the
/// error it wraps (it forwards to that error's own source), and TLS failures arrive as a rustls
/// error inside an `io::Error`, sometimes inside another `io::Error`.
fn next_cause<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    match error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        Some(inner) => Some(inner),
        None => error.source(),
    }
}

/// The description of the rustls error somewhere in the chain, if any.
fn tls_cause(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(sanitize_text(&tls.to_string(), &[]));
        }
        current = next_cause(err);
    }
    None
}

/// The innermost error's message, e.g. `Connection refused (os error 111)`. reqwest's own top
/// level message includes the URL, the innermost cause does not.
fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let mut innermost = error;
    while let Some(cause) = next_cause(innermost) {
        innermost = cause;
    }
    sanitize_text(&innermost.to_string(), &[])
}

/// The rustls client configuration: the ring provider named explicitly (the process default may
/// be unset or another), safe default protocol versions, system roots plus the extra bundle.
fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, ClientBuildError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(error = %error, "some system CA certificates could not be loaded");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::warn!(
            added,
            ignored,
            "some system CA certificates could not be parsed and are ignored"
        );
    }
    if let Some(pem) = extra_ca_pem {
        let count = add_pem_bundle(&mut roots, pem)?;
        tracing::debug!(count, "extra CA certificates trusted");
    }
    if roots.is_empty() {
        return Err(ClientBuildError::NoTrustRoots);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientBuildError::Tls {
        detail: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

/// Adds every certificate of a PEM bundle; all of them must parse and none may be missing.
fn add_pem_bundle(roots: &mut RootCertStore, pem: &[u8]) -> Result<usize, ClientBuildError> {
    let invalid = |detail: String| ClientBuildError::InvalidExtraCa { detail };
    let mut count = 0;
    for (index, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let number = index + 1;
        let cert =
            cert.map_err(|e| invalid(format!("certificate #{number} is not valid PEM: {e}")))?;
        roots.add(cert).map_err(|e| {
            invalid(format!(
                "certificate #{number} is not a usable CA certificate: {e}"
            ))
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid("it contains no PEM \"CERTIFICATE\" block".into()));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    const ENV: &str = "cd91070f-c371-480e-80b2-753c735f8aa1";
    const CLIENT_ID: &str = "my client&id";
    const SECRET: &str = "p@ss:w/rd+ü %";
    static SECRET_VALUE: std::sync::LazyLock<SecretString> =
        std::sync::LazyLock::new(|| SecretString::from(SECRET));
    const TOKEN_BODY: &str = r#"{"access_token":"eyJhbGciOiJSUzI1NiJ9.e30.sig","token_type":"Bearer","expires_in":3600,"scope":"a b"}"#;

    fn request(method: AuthMethod, scopes: &[String]) -> TokenRequest<'_> {
        let auth = match method {
            AuthMethod::ClientSecretPost => ClientAuth::SecretPost(&SECRET_VALUE),
            AuthMethod::ClientSecretBasic => ClientAuth::SecretBasic(&SECRET_VALUE),
            AuthMethod::ClientSecretJwt => ClientAuth::SecretJwt(&SECRET_VALUE, Algorithm::HS256),
            AuthMethod::PrivateKeyJwt => unreachable!("these tests use a secret"),
        };
        TokenRequest {
            auth_domain: "auth.pingone.eu",
            environment_id: ENV,
            client_id: CLIENT_ID,
            auth,
            scopes,
        }
    }

    fn test_ca_pem() -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pingone-operator test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem().into_bytes()
    }

    fn config() -> TokenClientConfig {
        TokenClientConfig {
            extra_ca_pem: Some(test_ca_pem()),
            ..TokenClientConfig::default()
        }
    }

    /// A client that may speak plain HTTP to the local test server.
    fn plain_client(config: TokenClientConfig) -> TokenClient {
        TokenClient::build(config, true).unwrap()
    }

    enum Reply {
        /// Read the request, write these bytes, close.
        Bytes(Vec<u8>),
        /// Read the request and never answer.
        Hang,
        /// Record whatever arrives in the first read (a TLS ClientHello), then close.
        FirstBytes,
    }

    fn http_reply(status: &str, headers: &[&str], body: &str) -> Reply {
        let mut text = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for header in headers {
            text.push_str(header);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        text.push_str(body);
        Reply::Bytes(text.into_bytes())
    }

    /// A tiny HTTP/1.1 server on loopback: one canned reply per connection, then 500s. It
    /// records every request and counts connections.
    struct TestServer {
        addr: SocketAddr,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
        connections: Arc<AtomicUsize>,
    }

    impl TestServer {
        async fn start(replies: Vec<Reply>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let requests: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
            let connections: Arc<AtomicUsize> = Arc::default();
            let (recorded, counted) = (requests.clone(), connections.clone());
            tokio::spawn(async move {
                let mut replies = replies.into_iter();
                // Bounded: a test never needs more than a handful of connections.
                for _ in 0..16 {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let reply = replies
                        .next()
                        .unwrap_or_else(|| http_reply("500 Internal Server Error", &[], ""));
                    let recorded = recorded.clone();
                    tokio::spawn(async move {
                        if let Reply::FirstBytes = reply {
                            let mut buf = vec![0; 4096];
                            let n = stream.read(&mut buf).await.unwrap_or(0);
                            recorded.lock().unwrap().push(buf[..n].to_vec());
                            return;
                        }
                        let request = read_request(&mut stream).await;
                        recorded.lock().unwrap().push(request);
                        match reply {
                            Reply::Bytes(bytes) => {
                                let _ = stream.write_all(&bytes).await;
                                let _ = stream.shutdown().await;
                            }
                            Reply::Hang => tokio::time::sleep(Duration::from_secs(10)).await,
                            Reply::FirstBytes => {}
                        }
                    });
                }
            });
            Self {
                addr,
                requests,
                connections,
            }
        }

        fn url(&self) -> Url {
            Url::parse(&format!("http://{}/{ENV}/as/token", self.addr)).unwrap()
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }

        fn request(&self, index: usize) -> (String, String) {
            let raw = self.requests.lock().unwrap()[index].clone();
            let text = String::from_utf8(raw).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            (head.to_ascii_lowercase(), body.to_owned())
        }
    }

    /// Whether `data` holds a whole request: the head and `Content-Length` bytes of body.
    fn request_complete(data: &[u8]) -> bool {
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        data.len() >= end + 4 + length
    }

    async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
        let mut data = Vec::new();
        let mut buf = [0; 4096];
        while !request_complete(&data) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
        data
    }

    /// A test CA and a server certificate it signed for `name`.
    struct TestPki {
        ca_pem: Vec<u8>,
        server: Arc<rustls::ServerConfig>,
    }

    fn test_pki(name: &str) -> TestPki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // A name of its own, so that a client trusting another test CA sees an unknown issuer.
        let ca_name = format!("test CA for {name} {}", rand::random::<u64>());
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
        TestPki {
            ca_pem: ca.pem().into_bytes(),
            server: Arc::new(server),
        }
    }

    /// An HTTPS server for one connection on a plain thread (rustls over std I/O): reads a
    /// request, answers `response`, closes.
    fn serve_tls_once(config: Arc<rustls::ServerConfig>, response: Vec<u8>) -> SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            let Ok(connection) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(connection, tcp);
            let mut data = Vec::new();
            let mut buf = [0; 4096];
            while !request_complete(&data) {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tls.write_all(&response);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
        addr
    }

    fn token_reply_bytes() -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{TOKEN_BODY}",
            TOKEN_BODY.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn https_end_to_end_through_override_and_extra_ca() {
        let pki = test_pki("auth.pingone.eu");
        let addr = serve_tls_once(pki.server.clone(), token_reply_bytes());
        let client = TokenClient::new(TokenClientConfig {
            extra_ca_pem: Some(pki.ca_pem),
            host_overrides: vec![("auth.pingone.eu".into(), addr)],
            ..TokenClientConfig::default()
        })
        .unwrap();
        let token = client
            .request_token(&request(AuthMethod::ClientSecretBasic, &[]))
            .await
            .unwrap();
        assert_eq!(
            token.access_token.expose_secret(),
            "eyJhbGciOiJSUzI1NiJ9.e30.sig"
        );
        assert_eq!(token.token_type, "Bearer");
    }

    #[tokio::test]
    async fn untrusted_certificate_is_a_tls_error() {
        let pki = test_pki("auth.pingone.eu");
        let addr = serve_tls_once(pki.server.clone(), token_reply_bytes());
        // Trusts another CA, not the one that signed the server's certificate.
        let client = TokenClient::new(TokenClientConfig {
            host_overrides: vec![("auth.pingone.eu".into(), addr)],
            ..config()
        })
        .unwrap();
        let error = client
            .request_token(&request(AuthMethod::ClientSecretPost, &[]))
            .await
            .unwrap_err();
        let TokenError::Tls { domain, detail } = &error else {
            panic!("expected Tls, got {error:?}")
        };
        assert_eq!(domain, "auth.pingone.eu");
        assert_eq!(detail, "invalid peer certificate: UnknownIssuer");
        assert_eq!(error.reason(), "TokenEndpointUnavailable");
        assert!(error.is_retryable() && !error.needs_person());
        assert!(
            error
                .to_string()
                .starts_with("TLS handshake with auth.pingone.eu failed: "),
            "{error}"
        );
    }

    #[tokio::test]
    async fn certificate_for_another_name_is_a_tls_error() {
        let pki = test_pki("other.example.com");
        let addr = serve_tls_once(pki.server.clone(), token_reply_bytes());
        let client = TokenClient::new(TokenClientConfig {
            extra_ca_pem: Some(pki.ca_pem),
            host_overrides: vec![("auth.pingone.eu".into(), addr)],
            ..TokenClientConfig::default()
        })
        .unwrap();
        let error = client
            .request_token(&request(AuthMethod::ClientSecretPost, &[]))
            .await
            .unwrap_err();
        let TokenError::Tls { detail, .. } = &error else {
            panic!("expected Tls, got {error:?}")
        };
        assert!(detail.contains("not valid for name"), "{detail}");
    }

    #[test]
    fn form_body_for_post_carries_credentials_and_scope() {
        let scopes = vec!["read:x".to_string(), " ".to_string(), "write:y".to_string()];
        assert_eq!(
            form_body(&request(AuthMethod::ClientSecretPost, &scopes), None),
            "grant_type=client_credentials&scope=read%3Ax+write%3Ay&client_id=my+client%26id\
             &client_secret=p%40ss%3Aw%2Frd%2B%C3%BC+%25"
        );
        assert_eq!(
            form_body(&request(AuthMethod::ClientSecretPost, &[]), None),
            "grant_type=client_credentials&client_id=my+client%26id&client_secret=p%40ss%3Aw%2Frd%2B%C3%BC+%25"
        );
    }

    #[test]
    fn form_body_for_basic_has_no_credentials() {
        let scopes = vec!["a".to_string()];
        let body = form_body(&request(AuthMethod::ClientSecretBasic, &scopes), None);
        assert_eq!(body, "grant_type=client_credentials&scope=a");
        assert_eq!(
            form_body(&request(AuthMethod::ClientSecretBasic, &[]), None),
            "grant_type=client_credentials"
        );
    }

    #[test]
    fn basic_credentials_are_form_urlencoded() {
        let (id, secret) = basic_credentials(CLIENT_ID, SECRET);
        assert_eq!(id, "my+client%26id");
        assert_eq!(secret, "p%40ss%3Aw%2Frd%2B%C3%BC+%25");
        let (id, secret) = basic_credentials("a:b", "c");
        assert_eq!((id.as_str(), secret.as_str()), ("a%3Ab", "c"));
    }

    #[test]
    fn debug_of_request_hides_the_secret() {
        let debug = format!("{:?}", request(AuthMethod::ClientSecretPost, &[]));
        assert!(
            !debug.contains("p@ss") && debug.contains("[redacted]") && debug.contains(CLIENT_ID),
            "{debug}"
        );
    }

    #[test]
    fn default_config() {
        let config = TokenClientConfig::default();
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.request_timeout, Duration::from_secs(15));
        assert_eq!(config.max_body_bytes, 65536);
        assert_eq!(
            config.user_agent,
            format!("pingone-operator/{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn extra_ca_bundle_must_hold_usable_certificates() {
        let ca = test_ca_pem();
        let mut roots = RootCertStore::empty();
        assert_eq!(add_pem_bundle(&mut roots, &ca), Ok(1));
        let mut two = ca.clone();
        two.extend_from_slice(&test_ca_pem());
        assert_eq!(add_pem_bundle(&mut RootCertStore::empty(), &two), Ok(2));

        let key_only = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let cases: [(&[u8], &str); 5] = [
            (b"", "no PEM"),
            (b"garbage, not PEM at all", "no PEM"),
            (key_only.as_bytes(), "no PEM"),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "#1 is not valid PEM",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "#1 is not a usable CA",
            ),
        ];
        for (pem, expected) in cases {
            let error = add_pem_bundle(&mut RootCertStore::empty(), pem).unwrap_err();
            assert!(
                matches!(error, ClientBuildError::InvalidExtraCa { .. }),
                "{error:?}"
            );
            assert!(error.to_string().contains(expected), "{error}");
        }
        let mut bad_second = ca;
        bad_second
            .extend_from_slice(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let error = add_pem_bundle(&mut RootCertStore::empty(), &bad_second).unwrap_err();
        assert!(error.to_string().contains("#2"), "{error}");
    }

    #[test]
    fn client_builds_with_valid_extra_ca_and_fails_on_garbage() {
        assert!(TokenClient::new(config()).is_ok());
        let error = TokenClient::new(TokenClientConfig {
            extra_ca_pem: Some(b"not a certificate".to_vec()),
            ..TokenClientConfig::default()
        })
        .unwrap_err();
        assert!(
            matches!(error, ClientBuildError::InvalidExtraCa { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with("extra CA bundle: "),
            "{error}"
        );
    }

    #[test]
    fn client_rejects_bad_configuration() {
        let cases = [
            TokenClientConfig {
                connect_timeout: Duration::ZERO,
                ..config()
            },
            TokenClientConfig {
                request_timeout: Duration::ZERO,
                ..config()
            },
            TokenClientConfig {
                max_body_bytes: 0,
                ..config()
            },
            TokenClientConfig {
                user_agent: "bad\nagent".into(),
                ..config()
            },
            TokenClientConfig {
                host_overrides: vec![("a.example.com:443".into(), ([127, 0, 0, 1], 1).into())],
                ..config()
            },
        ];
        for config in cases {
            let error = TokenClient::new(config).unwrap_err();
            assert!(
                matches!(error, ClientBuildError::InvalidConfig { .. }),
                "{error:?}"
            );
        }
        let error = TokenClient::new(TokenClientConfig {
            extra_allowed_domains: vec!["https://x.example.com".into()],
            ..config()
        })
        .unwrap_err();
        assert!(
            matches!(error, ClientBuildError::InvalidAllowedDomain { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn policy_comes_from_config() {
        let client = TokenClient::new(TokenClientConfig {
            extra_allowed_domains: vec!["SSO.Example.com".into()],
            ..config()
        })
        .unwrap();
        assert_eq!(client.policy().check("sso.example.com"), Ok(()));
        assert!(client.policy().check("other.example.com").is_err());
    }

    #[test]
    fn install_crypto_provider_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[tokio::test]
    async fn post_request_is_well_formed_and_parsed() {
        let server = TestServer::start(vec![http_reply(
            "200 OK",
            &["Content-Type: application/json"],
            TOKEN_BODY,
        )])
        .await;
        let client = plain_client(config());
        let scopes = vec!["a".to_string(), "b".to_string()];
        let (result, status) = client
            .send(
                "127.0.0.1",
                server.url(),
                &request(AuthMethod::ClientSecretPost, &scopes),
            )
            .await;
        let token = result.unwrap();
        assert_eq!(status, Some(200));
        assert_eq!(
            token.access_token.expose_secret(),
            "eyJhbGciOiJSUzI1NiJ9.e30.sig"
        );
        assert_eq!(token.expires_in, Duration::from_secs(3600));
        assert_eq!(token.scope, ["a", "b"]);

        let (head, body) = server.request(0);
        assert!(
            head.starts_with(&format!("post /{ENV}/as/token http/1.1\r\n")),
            "{head}"
        );
        assert!(
            head.contains("\r\ncontent-type: application/x-www-form-urlencoded\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\naccept: application/json\r\n"), "{head}");
        assert!(
            head.contains(&format!(
                "\r\nuser-agent: pingone-operator/{}\r\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{head}"
        );
        assert!(!head.contains("authorization"), "{head}");
        assert_eq!(
            body,
            "grant_type=client_credentials&scope=a+b&client_id=my+client%26id&client_secret=p%40ss%3Aw%2Frd%2B%C3%BC+%25"
        );
    }

    #[tokio::test]
    async fn basic_request_sends_the_hand_computed_header() {
        let server = TestServer::start(vec![http_reply("200 OK", &[], TOKEN_BODY)]).await;
        let client = plain_client(config());
        let (result, _) = client
            .send(
                "127.0.0.1",
                server.url(),
                &request(AuthMethod::ClientSecretBasic, &[]),
            )
            .await;
        assert!(result.is_ok(), "{result:?}");
        let (head, body) = server.request(0);
        // base64("my+client%26id:p%40ss%3Aw%2Frd%2B%C3%BC+%25"), computed independently.
        assert!(
            head.contains("\r\nauthorization: basic bxkry2xpzw50jti2awq6ccu0mhnzjtnbdyuyrnjkjtjcjumzjujdkyuynq==\r\n"),
            "{head}"
        );
        assert_eq!(body, "grant_type=client_credentials");
        assert!(!body.contains("secret") && !body.contains("client_id"));
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let server =
            TestServer::start(vec![http_reply("302 Found", &["Location: /elsewhere"], "")]).await;
        let client = plain_client(config());
        let (result, status) = client
            .send(
                "127.0.0.1",
                server.url(),
                &request(AuthMethod::ClientSecretPost, &[]),
            )
            .await;
        assert_eq!(status, Some(302));
        let error = result.unwrap_err();
        assert_eq!(
            error,
            TokenError::UnexpectedStatus {
                status: 302,
                code: None,
                description: None
            }
        );
        assert_eq!(error.reason(), "TokenEndpointError");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.connections(), 1);
    }

    #[tokio::test]
    async fn body_cap_is_enforced_while_streaming() {
        // No Content-Length: the body ends when the connection closes, so only streaming can
        // notice that it is too large.
        let mut bytes =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                .to_vec();
        bytes.extend(std::iter::repeat_n(b' ', 200 * 1024));
        let server = TestServer::start(vec![Reply::Bytes(bytes)]).await;
        let client = plain_client(TokenClientConfig {
            max_body_bytes: 64 * 1024,
            ..config()
        });
        let (result, _) = client
            .send(
                "127.0.0.1",
                server.url(),
                &request(AuthMethod::ClientSecretPost, &[]),
            )
            .await;
        let error = result.unwrap_err();
        assert_eq!(
            error,
            TokenError::InvalidResponse {
                detail: "HTTP 200 body exceeds 65536 bytes".into()
            }
        );
        assert!(error.is_retryable());
    }

    #[tokio::test]
    async fn oversized_content_length_is_rejected_before_reading() {
        let reply =
            Reply::Bytes(b"HTTP/1.1 500 Oops\r\nContent-Length: 10000000\r\n\r\n{}".to_vec());
        let server = TestServer::start(vec![reply]).await;
        let client = plain_client(TokenClientConfig {
            max_body_bytes: 1024,
            ..config()
        });
        let (result, status) = client
            .send(
                "127.0.0.1",
                server.url(),
                &request(AuthMethod::ClientSecretPost, &[]),
            )
            .await;
        assert_eq!(status, Some(500));
        assert_eq!(
            result.unwrap_err(),
            TokenError::InvalidResponse {
                detail: "HTTP 500 body exceeds 1024 bytes".into()
            }
        );
    }

    #[tokio::test]
    async fn body_at_the_cap_is_accepted() {
        let padded = format!("{}{}", TOKEN_BODY, " ".repeat(1024 - TOKEN_BODY.len()));
        let server = TestServer::start(vec![http_reply("200 OK", &[], &padded)]).await;
        let client = plain_client(TokenClientConfig {
            max_body_bytes: 1024,
            ..config()
        });
        let (result, _) = client
            .send(
                "127.0.0.1",
                server.url(),
                &request(AuthMethod::ClientSecretPost, &[]),
            )
            .await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn rate_limit_carries_retry_after() {
        let body = r#"{"error":"rate_limited","error_description":"Too many requests"}"#;
        let server = TestServer::start(vec![http_reply(
            "429 Too Many Requests",
            &["Retry-After: 7"],
            body,
        )])
        .await;
        let client = plain_client(config());
        let (result, _) = client
            .send(
                "127.0.0.1",
                server.url(),
                &request(AuthMethod::ClientSecretPost, &[]),
            )
            .await;
        let error = result.unwrap_err();
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(error.reason(), "RateLimited");
        assert!(
            error
                .to_string()
                .contains("HTTP 429, rate_limited: Too many requests); retry after 7s"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn invalid_client_message_is_scrubbed_of_the_secret() {
        let body = format!(
            r#"{{"error":"invalid_client","error_description":"secret {SECRET} rejected"}}"#
        );
        let server = TestServer::start(vec![http_reply("401 Unauthorized", &[], &body)]).await;
        let client = plain_client(config());
        let (result, _) = client
            .send(
                "127.0.0.1",
                server.url(),
                &request(AuthMethod::ClientSecretPost, &[]),
            )
            .await;
        let error = result.unwrap_err();
        assert_eq!(error.reason(), "InvalidClient");
        assert!(error.needs_person() && !error.is_retryable());
        let message = error.to_string();
        assert!(
            !message.contains(SECRET) && !message.contains("p@ss"),
            "{message}"
        );
        assert!(
            message.contains("HTTP 401, invalid_client: secret [redacted] rejected"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn total_timeout_is_enforced() {
        let server = TestServer::start(vec![Reply::Hang]).await;
        let client = plain_client(TokenClientConfig {
            request_timeout: Duration::from_millis(300),
            ..config()
        });
        let started = Instant::now();
        let (result, _) = client
            .send(
                "127.0.0.1",
                server.url(),
                &request(AuthMethod::ClientSecretPost, &[]),
            )
            .await;
        assert_eq!(
            result.unwrap_err(),
            TokenError::Timeout {
                domain: "127.0.0.1".into()
            }
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn connection_refused_gives_a_short_message() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = plain_client(config());
        let url = Url::parse(&format!("http://{addr}/{ENV}/as/token")).unwrap();
        let (result, status) = client
            .send(
                "127.0.0.1",
                url,
                &request(AuthMethod::ClientSecretPost, &[]),
            )
            .await;
        assert_eq!(status, None);
        let error = result.unwrap_err();
        assert!(matches!(error, TokenError::Connect { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with("connection to 127.0.0.1 failed: "),
            "{message}"
        );
        assert!(
            !message.contains("http://") && !message.contains(ENV),
            "{message}"
        );
        assert!(error.is_retryable());
    }

    #[tokio::test]
    async fn plain_http_is_refused_by_the_real_client() {
        let server = TestServer::start(vec![http_reply("200 OK", &[], TOKEN_BODY)]).await;
        let client = TokenClient::new(config()).unwrap();
        let (result, _) = client
            .send(
                "127.0.0.1",
                server.url(),
                &request(AuthMethod::ClientSecretPost, &[]),
            )
            .await;
        let error = result.unwrap_err();
        assert!(matches!(error, TokenError::Connect { .. }), "{error:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.connections(), 0);
    }

    #[tokio::test]
    async fn host_override_keeps_the_name_and_uses_its_port() {
        // The override points the real PingOne name at a loopback port. The URL has no port, so
        // the connection must go to the override's port, and the TLS ClientHello must carry the
        // real name (SNI): the certificate is verified against it.
        let server = TestServer::start(vec![Reply::FirstBytes]).await;
        let client = TokenClient::new(TokenClientConfig {
            host_overrides: vec![("Auth.PingOne.EU".into(), server.addr)],
            ..config()
        })
        .unwrap();
        let (result, elapsed) = client
            .request_token_timed(&request(AuthMethod::ClientSecretPost, &[]))
            .await;
        let error = result.unwrap_err();
        assert_eq!(error.reason(), "TokenEndpointUnavailable", "{error:?}");
        assert!(error.to_string().contains("auth.pingone.eu"), "{error}");
        assert!(elapsed < Duration::from_secs(5));
        assert_eq!(server.connections(), 1);
        let hello = server.requests.lock().unwrap()[0].clone();
        assert_eq!(hello.first(), Some(&0x16), "not a TLS handshake record");
        assert!(
            hello.windows(15).any(|w| w == b"auth.pingone.eu"),
            "SNI missing"
        );
        assert!(
            !hello.windows(4).any(|w| w == b"p%40"),
            "credentials before the handshake"
        );
    }

    #[tokio::test]
    async fn refused_domain_sends_nothing() {
        let server = TestServer::start(vec![http_reply("200 OK", &[], TOKEN_BODY)]).await;
        let client = TokenClient::new(TokenClientConfig {
            host_overrides: vec![
                ("evil.example.com".into(), server.addr),
                ("auth.pingone.eu".into(), server.addr),
            ],
            ..config()
        })
        .unwrap();
        let mut req = request(AuthMethod::ClientSecretPost, &[]);
        req.auth_domain = "evil.example.com";
        let (result, elapsed) = client.request_token_timed(&req).await;
        assert_eq!(
            result.unwrap_err(),
            TokenError::AuthDomainNotAllowed {
                domain: "evil.example.com".into()
            }
        );
        assert!(elapsed < Duration::from_secs(1));

        req.auth_domain = "evil.example.com:443";
        assert!(matches!(
            client.request_token(&req).await,
            Err(TokenError::InvalidAuthDomain { .. })
        ));

        req.auth_domain = "auth.pingone.eu";
        req.environment_id = "../admin";
        assert!(matches!(
            client.request_token(&req).await,
            Err(TokenError::InvalidEnvironmentId { .. })
        ));

        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.connections(), 0);
    }
}
