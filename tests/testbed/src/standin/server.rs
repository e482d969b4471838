//! The accept loop, the routing and the OAuth endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::assertion::{self, AlgKind, Assertion};
use super::state::{SecretMatch, Shared, State};
use super::{
    AuthMethod, Fault, JWT_BEARER_ASSERTION_TYPE, RecordedAuthMethod, RecordedRequest, admin,
    is_environment_id, management,
};

pub(crate) type Resp = Response<Full<Bytes>>;

/// Largest request body read.
const MAX_REQUEST_BODY: usize = 1 << 20;
/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

/// Accepts connections until `shutdown` fires (or its sender is dropped); then closes them all.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(connection(tcp, peer, acceptor.clone(), Arc::clone(&shared)));
                }
                Err(e) => {
                    // E.g. out of file descriptors: do not spin.
                    tracing::warn!(error = %e, "stand-in: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
) {
    let local = tcp.local_addr().ok();
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "stand-in: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "stand-in: TLS handshake timed out");
            return;
        }
    };
    let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
    let fallback_host = sni
        .clone()
        .or_else(|| local.map(|a| a.ip().to_string()))
        .unwrap_or_else(|| "localhost".to_string());
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let sni = sni.clone();
        let fallback_host = fallback_host.clone();
        async move { handle(&shared, sni, &fallback_host, req).await }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "stand-in: connection ended with an error");
    }
}

/// What the client addressed.
pub(crate) struct Ctx {
    /// `host[:port]` as in the Host header, for URLs.
    authority: String,
    /// Lowercase host name without port.
    pub(crate) host: String,
    sni: Option<String>,
}

impl Ctx {
    fn new(headers: &HeaderMap, uri: &hyper::Uri, sni: Option<String>, fallback: &str) -> Ctx {
        let authority = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
            .unwrap_or_else(|| fallback.to_owned())
            .to_ascii_lowercase();
        let host = strip_port(&authority).to_owned();
        Ctx {
            authority,
            host,
            sni,
        }
    }
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Where a request's OAuth prefix points.
enum Prefix {
    /// `/{environmentId}/as/...`
    Regional(String),
    /// `/as/...` on a custom domain.
    Custom,
}

impl Prefix {
    fn environment(&self, state: &State, ctx: &Ctx) -> Option<String> {
        match self {
            Prefix::Regional(env) => Some(env.clone()),
            Prefix::Custom => state
                .custom_domain_environment(&ctx.host)
                .map(str::to_owned),
        }
    }

    fn issuer(&self, ctx: &Ctx) -> String {
        match self {
            Prefix::Regional(env) => format!("https://{}/{env}/as", ctx.authority),
            Prefix::Custom => format!("https://{}/as", ctx.authority),
        }
    }

    /// The `aud` values a client assertion may carry: the token URL and the issuer, written
    /// with the host *without* a port (PingOne is only ever reached on 443, and the operator
    /// never writes a port), so a client behind a host override still builds the real URL.
    fn assertion_audiences(&self, ctx: &Ctx) -> [String; 2] {
        let issuer = match self {
            Prefix::Regional(env) => format!("https://{}/{env}/as", ctx.host),
            Prefix::Custom => format!("https://{}/as", ctx.host),
        };
        [format!("{issuer}/token"), issuer]
    }

    /// `aud` of access tokens: the PingOne API of the region.
    fn audience(&self, ctx: &Ctx) -> String {
        match (self, ctx.host.strip_prefix("auth.pingone.")) {
            (Prefix::Regional(_), Some(tld)) => format!("https://api.pingone.{tld}"),
            // localhost, 127.0.0.1 and custom domains: PingOne's API stays on the regional
            // domain (custom domains only cover the auth endpoints); NA is as good as any.
            _ => "https://api.pingone.com".to_string(),
        }
    }
}

async fn handle(
    shared: &Shared,
    sni: Option<String>,
    fallback_host: &str,
    req: Request<Incoming>,
) -> Result<Resp, Dropped> {
    let ctx = Ctx::new(req.headers(), req.uri(), sni, fallback_host);
    let path = req.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/__standin/") {
        let rest = rest.to_owned();
        let method = req.method().clone();
        let body = match read_body(req.into_body()).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => return Ok(too_large()),
            Err(BodyError::Io) => return Err(Dropped),
        };
        return Ok(admin::handle(shared, &method, &rest, &body));
    }

    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["v1", "environments", env, "applications", app, "secret"] = segments.as_slice() {
        let (env, app) = (env.to_string(), app.to_string());
        return management::secret_endpoint(shared, &ctx, &path, &env, &app, req).await;
    }
    let (prefix, rest) = match segments.as_slice() {
        [env, "as", rest @ ..] if is_environment_id(env) => {
            (Prefix::Regional(env.to_string()), rest)
        }
        ["as", rest @ ..] => (Prefix::Custom, rest),
        _ => return Ok(not_found()),
    };
    match rest {
        ["token"] => token_endpoint(shared, &ctx, &prefix, &path, req).await,
        ["jwks"] => Ok({
            let (down, delay) = {
                let mut state = shared.state();
                state.jwks_requests += 1;
                (state.jwks_down, state.jwks_delay)
            };
            tokio::time::sleep(delay).await;
            if down {
                status_fault(503, None, None)
            } else {
                discovery(shared, &ctx, &prefix, req.method(), Discovery::Jwks)
            }
        }),
        [".well-known", "openid-configuration"] => Ok(discovery(
            shared,
            &ctx,
            &prefix,
            req.method(),
            Discovery::OpenIdConfiguration,
        )),
        ["introspect"] => introspect(shared, &ctx, &prefix, req).await,
        _ => Ok(not_found()),
    }
}

pub(crate) enum BodyError {
    TooLarge,
    Io,
}

pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Io),
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    raw_response(status, "application/json;charset=UTF-8", Bytes::from(bytes))
}

pub(crate) fn raw_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// PingOne's platform error body, e.g. for unknown resources.
pub(crate) fn platform_error(status: StatusCode, code: &str, message: &str) -> Resp {
    json_response(
        status,
        &json!({ "id": random_uuid(), "code": code, "message": message }),
    )
}

pub(crate) fn not_found() -> Resp {
    platform_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource was not found.",
    )
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Resp {
    let mut resp = platform_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "The request method is not supported for this resource.",
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

pub(crate) fn too_large() -> Resp {
    platform_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "REQUEST_TOO_LARGE",
        "The request body is too large.",
    )
}

/// An RFC 6749 §5.2 error.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Resp {
    no_store(json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    ))
}

/// `invalid_client`, with the `WWW-Authenticate` challenge when the client used Basic.
fn invalid_client(description: &str, basic_used: bool) -> Resp {
    let mut resp = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    if basic_used {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"PingOne\""),
        );
    }
    resp
}

fn invalid_request(description: &str) -> Resp {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

pub(crate) fn no_store(mut resp: Resp) -> Resp {
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

pub(crate) fn retry_after(mut resp: Resp, secs: u64) -> Resp {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn rate_limited(secs: u64) -> Resp {
    retry_after(
        oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "request_limited",
            &format!("Request denied: Too many requests. Retry after {secs} seconds."),
        ),
        secs,
    )
}

/// The answer to a [`Fault::Status`]: its own body (served as HTML when it is a page, as a
/// proxy or a WAF serves it, else as JSON), or the error body PingOne writes for the status.
fn status_fault(status: u16, retry: Option<u64>, body: Option<&str>) -> Resp {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let resp = match body {
        Some(body) => no_store(raw_response(
            code,
            if body.trim_start().starts_with('<') {
                "text/html; charset=utf-8"
            } else {
                "application/json;charset=UTF-8"
            },
            Bytes::from(body.to_owned()),
        )),
        None => match code.as_u16() {
            400 => invalid_request("Request denied: Invalid request"),
            401 => invalid_client("Request denied: Invalid client credentials", false),
            403 => oauth_error(code, "unauthorized_client", "Request denied: Access denied"),
            404 => not_found(),
            429 => oauth_error(code, "request_limited", "Request denied: Too many requests"),
            408 | 502..=504 => oauth_error(
                code,
                "temporarily_unavailable",
                "The service is temporarily unavailable. Try again later.",
            ),
            c if (400..500).contains(&c) => oauth_error(code, "invalid_request", "Request denied"),
            c if (500..600).contains(&c) => {
                oauth_error(code, "server_error", "An unexpected error occurred")
            }
            _ => no_store(raw_response(
                code,
                "application/json;charset=UTF-8",
                Bytes::new(),
            )),
        },
    };
    match retry {
        Some(secs) => retry_after(resp, secs),
        None => resp,
    }
}

// ---------------------------------------------------------------------------------------------
// Request parsing

pub(crate) enum Basic {
    Absent,
    Malformed,
    Present { client_id: String, secret: String },
}

struct FormRequest {
    content_type_ok: bool,
    /// The form (empty when the content type is wrong).
    params: Vec<(String, String)>,
    basic: Basic,
}

impl FormRequest {
    fn parse(headers: &HeaderMap, body: &[u8]) -> FormRequest {
        let content_type_ok = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        let params = if content_type_ok {
            form_urlencoded::parse(body).into_owned().collect()
        } else {
            Vec::new()
        };
        FormRequest {
            content_type_ok,
            params,
            basic: parse_basic(headers),
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// RFC 6749 §3.2: parameters must not be included more than once.
    fn duplicate(&self) -> Option<&str> {
        self.params.iter().enumerate().find_map(|(i, (k, _))| {
            self.params[..i]
                .iter()
                .any(|(earlier, _)| earlier == k)
                .then_some(k.as_str())
        })
    }

    fn client_id(&self) -> Option<String> {
        match &self.basic {
            Basic::Present { client_id, .. } => Some(client_id.clone()),
            _ => self.param("client_id").map(str::to_owned).or_else(|| {
                let peek = assertion::Peek::of(self.param("client_assertion")?);
                peek.sub.or(peek.iss)
            }),
        }
    }

    /// Whether the request carries a client assertion (or half of one).
    fn uses_assertion(&self) -> bool {
        self.param("client_assertion").is_some() || self.param("client_assertion_type").is_some()
    }

    fn auth_method(&self) -> RecordedAuthMethod {
        if self.uses_assertion() {
            let peek = assertion::Peek::of(self.param("client_assertion").unwrap_or_default());
            return match peek.alg.as_deref() {
                Some(alg) if alg.starts_with("HS") => RecordedAuthMethod::ClientSecretJwt,
                _ => RecordedAuthMethod::PrivateKeyJwt,
            };
        }
        match (&self.basic, self.param("client_secret")) {
            (Basic::Absent, None) => RecordedAuthMethod::None,
            (Basic::Absent, Some(_)) => RecordedAuthMethod::Post,
            _ => RecordedAuthMethod::Basic,
        }
    }

    /// The client id and secret presented, Basic first.
    fn credentials(&self) -> Option<(&str, &str)> {
        match &self.basic {
            Basic::Present { client_id, secret } => Some((client_id, secret)),
            _ => Some((self.param("client_id")?, self.param("client_secret")?)),
        }
    }
}

fn parse_basic(headers: &HeaderMap) -> Basic {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Basic::Absent;
    };
    let Ok(value) = value.to_str() else {
        return Basic::Malformed;
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        // Another scheme (e.g. Bearer) is no client authentication.
        return Basic::Absent;
    }
    let Ok(decoded) = STANDARD.decode(rest.trim()) else {
        return Basic::Malformed;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Basic::Malformed;
    };
    let Some((id, secret)) = decoded.split_once(':') else {
        return Basic::Malformed;
    };
    match (form_decode(id), form_decode(secret)) {
        (Some(client_id), Some(secret)) => Basic::Present { client_id, secret },
        _ => Basic::Malformed,
    }
}

/// `application/x-www-form-urlencoded` decoding of one value (RFC 6749 §2.3.1, Appendix B):
/// `+` is a space, `%XX` a byte; a `%` not followed by two hex digits stays as it is.
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------------------------
// Client authentication

/// A client that authenticated, with what the token endpoint needs of it.
pub(crate) struct Authenticated {
    pub(crate) client_id: String,
    allowed_scopes: Vec<String>,
    token_lifetime: Option<Duration>,
    /// The credentials matched only the previous secret.
    pub(crate) used_previous: bool,
}

/// The client authentication a request presents, before it is checked.
enum Presented<'f> {
    Secret {
        client_id: &'f str,
        secret: &'f str,
        method: AuthMethod,
        basic_used: bool,
    },
    Assertion(&'f str),
}

/// The form of the request's client authentication: one method, complete.
fn presented(form: &FormRequest) -> Result<Presented<'_>, Box<Resp>> {
    let basic_used = !matches!(form.basic, Basic::Absent);
    if matches!(form.basic, Basic::Malformed) {
        return Err(Box::new(invalid_client(
            "Request denied: Malformed Authorization header",
            true,
        )));
    }
    if form.uses_assertion() {
        if basic_used || form.param("client_secret").is_some() {
            return Err(Box::new(invalid_request(
                "Request denied: Multiple client authentication methods used",
            )));
        }
        return match (
            form.param("client_assertion_type"),
            form.param("client_assertion"),
        ) {
            (Some(JWT_BEARER_ASSERTION_TYPE), Some(raw)) => Ok(Presented::Assertion(raw)),
            (Some(_), Some(_)) => Err(Box::new(invalid_client(
                "Request denied: Unsupported client_assertion_type",
                false,
            ))),
            _ => Err(Box::new(invalid_request(
                "Request denied: client_assertion and client_assertion_type are both required",
            ))),
        };
    }
    match (&form.basic, form.param("client_secret")) {
        (Basic::Present { .. }, Some(_)) => Err(Box::new(invalid_request(
            "Request denied: Multiple client authentication methods used",
        ))),
        (Basic::Present { client_id, secret }, None) => {
            if form.param("client_id").is_some_and(|id| id != client_id) {
                return Err(Box::new(invalid_request(
                    "Request denied: client_id does not match the Authorization header",
                )));
            }
            Ok(Presented::Secret {
                client_id,
                secret,
                method: AuthMethod::ClientSecretBasic,
                basic_used,
            })
        }
        (_, Some(secret)) => match form.param("client_id") {
            Some(client_id) => Ok(Presented::Secret {
                client_id,
                secret,
                method: AuthMethod::ClientSecretPost,
                basic_used,
            }),
            None => Err(Box::new(invalid_client(
                "Request denied: client_id is required",
                basic_used,
            ))),
        },
        (_, None) => Err(Box::new(invalid_client(
            "Request denied: Client authentication is required",
            basic_used,
        ))),
    }
}

/// Authenticates the client of a form request against `env`'s clients; an accepted
/// assertion's `jti` is remembered against replays.
fn authenticate(
    state: &mut State,
    env: &str,
    form: &FormRequest,
    audiences: &[String],
) -> Result<Authenticated, Box<Resp>> {
    match presented(form)? {
        Presented::Assertion(raw) => {
            let now = SystemTime::now();
            let checked = check_assertion(state, env, form, raw, audiences, now)?;
            if let Some((jti, exp)) = checked.jti
                && let Some(client) = state.client_mut(env, &checked.authenticated.client_id)
            {
                client.remember_jti(jti, exp, epoch_secs(now));
            }
            Ok(checked.authenticated)
        }
        Presented::Secret {
            client_id,
            secret,
            method,
            basic_used,
        } => {
            let bad_credentials = || {
                Box::new(invalid_client(
                    "Request denied: Invalid client credentials",
                    basic_used,
                ))
            };
            let client = state.client(env, client_id).ok_or_else(bad_credentials)?;
            let matched = client.match_secret(secret, state.now());
            if matched == SecretMatch::None {
                return Err(bad_credentials());
            }
            if client.auth_method != method {
                return Err(Box::new(invalid_client(
                    "Request denied: Unsupported authentication method",
                    basic_used,
                )));
            }
            Ok(Authenticated {
                client_id: client_id.to_owned(),
                allowed_scopes: client.allowed_scopes.clone(),
                token_lifetime: client.token_lifetime,
                used_previous: matched == SecretMatch::Previous,
            })
        }
    }
}

/// An assertion that passed every check, with its `jti` and `exp` still to remember.
struct CheckedAssertion {
    authenticated: Authenticated,
    jti: Option<(String, f64)>,
}

/// Every check of a client assertion (see the module docs for the order); changes nothing.
fn check_assertion(
    state: &State,
    env: &str,
    form: &FormRequest,
    raw: &str,
    audiences: &[String],
    now: SystemTime,
) -> Result<CheckedAssertion, Box<Resp>> {
    let deny = |description: &str| Box::new(invalid_client(description, false));
    let assertion = Assertion::parse(raw).map_err(deny)?;
    let (Some(iss), Some(sub)) = (assertion.claim_str("iss"), assertion.claim_str("sub")) else {
        return Err(deny(
            "Request denied: The client assertion must name the client in iss and sub",
        ));
    };
    if iss != sub {
        return Err(deny(
            "Request denied: The client assertion's iss and sub must both be the client id",
        ));
    }
    if form.param("client_id").is_some_and(|id| id != sub) {
        return Err(deny(
            "Request denied: client_id does not match the client assertion",
        ));
    }
    let client = state
        .client(env, sub)
        .ok_or_else(|| deny("Request denied: Invalid client credentials"))?;
    let method = client.auth_method;
    if !matches!(
        method,
        AuthMethod::ClientSecretJwt | AuthMethod::PrivateKeyJwt
    ) {
        return Err(deny("Request denied: Unsupported authentication method"));
    }
    let kind = assertion.alg().and_then(AlgKind::of).ok_or_else(|| {
        deny("Request denied: Unsupported signing algorithm for the client assertion")
    })?;
    let used_previous = match (method, kind) {
        (AuthMethod::ClientSecretJwt, AlgKind::Hmac(alg)) => {
            let verifies = |secret: &str| assertion.verify_hmac(alg, secret.as_bytes());
            if client.current_secret().is_some_and(verifies) {
                false
            } else if client
                .previous_secret(state.now())
                .is_some_and(|(secret, _)| verifies(secret))
            {
                true
            } else {
                return Err(deny(
                    "Request denied: The client assertion's signature is invalid",
                ));
            }
        }
        (AuthMethod::PrivateKeyJwt, AlgKind::Rsa(_) | AlgKind::Ec(..)) => {
            let jwks = client
                .jwks
                .as_ref()
                .ok_or_else(|| deny("Request denied: The application has no public keys"))?;
            assertion.verify_with_jwks(kind, jwks).map_err(deny)?;
            false
        }
        _ => {
            return Err(deny(
                "Request denied: The client assertion's alg does not fit the application's authentication method",
            ));
        }
    };
    let now = epoch_secs(now);
    let (jti, exp) = assertion.check_claims(audiences, now).map_err(deny)?;
    if let Some(jti) = &jti
        && client.jti_replayed(jti, now)
    {
        return Err(deny(
            "Request denied: The client assertion was already used (jti replayed)",
        ));
    }
    Ok(CheckedAssertion {
        authenticated: Authenticated {
            client_id: sub.to_owned(),
            allowed_scopes: client.allowed_scopes.clone(),
            token_lifetime: client.token_lifetime,
            used_previous,
        },
        jti: jti.map(|jti| (jti, exp)),
    })
}

/// Whether the request's credentials authenticate its client, and whether only through the
/// previous secret, without remembering anything. For a secret this ignores the method (the
/// record says whether the secret was right even when the method was wrong).
fn credentials_check(
    state: &State,
    env: &str,
    form: &FormRequest,
    audiences: &[String],
) -> Option<bool> {
    if form.uses_assertion() {
        let Ok(Presented::Assertion(raw)) = presented(form) else {
            return None;
        };
        return check_assertion(state, env, form, raw, audiences, SystemTime::now())
            .ok()
            .map(|checked| checked.authenticated.used_previous);
    }
    let (id, secret) = form.credentials()?;
    match state.client(env, id)?.match_secret(secret, state.now()) {
        SecretMatch::Current => Some(false),
        SecretMatch::Previous => Some(true),
        SecretMatch::None => None,
    }
}

pub(crate) fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

#[derive(Serialize)]
struct Claims<'a> {
    client_id: &'a str,
    iss: String,
    jti: String,
    iat: u64,
    exp: u64,
    aud: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    env: &'a str,
    org: &'a str,
}

async fn token_endpoint(
    shared: &Shared,
    ctx: &Ctx,
    prefix: &Prefix,
    path: &str,
    req: Request<Incoming>,
) -> Result<Resp, Dropped> {
    let time = SystemTime::now();
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(body) => Some(body),
        Err(BodyError::TooLarge) => None,
        Err(BodyError::Io) => return Err(Dropped),
    };
    let form = FormRequest::parse(&parts.headers, body.as_deref().unwrap_or_default());
    let peek = form
        .param("client_assertion")
        .map(assertion::Peek::of)
        .unwrap_or_default();
    let mut record = RecordedRequest {
        time,
        method: parts.method.to_string(),
        host: ctx.host.clone(),
        sni: ctx.sni.clone(),
        path: path.to_owned(),
        environment_id: None,
        client_id: form.client_id(),
        auth_method: form.auth_method(),
        grant_type: form.param("grant_type").map(str::to_owned),
        scope: form.param("scope").map(str::to_owned),
        status: 0,
        client_secret_ok: false,
        used_previous_secret: false,
        assertion_alg: peek.alg,
        assertion_kid: peek.kid,
        assertion_jti: peek.jti,
        fault: None,
    };

    // Bookkeeping, method, rate limit and fault selection under one lock.
    let mut early = None;
    let fault = {
        let mut state = shared.state();
        let env = prefix.environment(&state, ctx);
        if let Some(env) = &env
            && let Some(used_previous) =
                credentials_check(&state, env, &form, &prefix.assertion_audiences(ctx))
        {
            record.client_secret_ok = true;
            record.used_previous_secret = used_previous;
        }
        record.environment_id = env;
        if parts.method != Method::POST {
            early = Some(method_not_allowed("POST"));
            None
        } else if body.is_none() {
            early = Some(too_large());
            None
        } else if let Err(secs) = state.rate_limit_check(Instant::now()) {
            early = Some(rate_limited(secs));
            None
        } else {
            state.take_fault()
        }
    };
    record.fault = fault.as_ref().map(Fault::name);

    let resp = match (early, fault) {
        (Some(resp), _) => resp,
        (None, None) => issue(shared, ctx, prefix, &form),
        (None, Some(fault)) => match fault {
            Fault::DropConnection => {
                record.status = 0;
                shared.state().requests.push(record);
                return Err(Dropped);
            }
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                issue(shared, ctx, prefix, &form)
            }
            // Nothing to commit before the answer here, so both holds park first.
            Fault::Hold | Fault::HoldAfterCommit => {
                shared.park().await;
                issue(shared, ctx, prefix, &form)
            }
            // The token is issued (and recorded as such); its answer is lost or replaced.
            Fault::DropAfterCommit => {
                let _ = issue(shared, ctx, prefix, &form);
                record.status = 0;
                shared.state().requests.push(record);
                return Err(Dropped);
            }
            Fault::StatusAfterCommit(status) => {
                let _ = issue(shared, ctx, prefix, &form);
                status_fault(status, None, None)
            }
            Fault::DelayAfterCommit(d) => {
                let resp = issue(shared, ctx, prefix, &form);
                tokio::time::sleep(d).await;
                resp
            }
            Fault::Status {
                status,
                retry_after,
                body,
            } => status_fault(status, retry_after, body.as_deref()),
            Fault::Redirect(location) => {
                let mut resp = raw_response(StatusCode::FOUND, "text/plain", Bytes::new());
                match HeaderValue::from_str(&location) {
                    Ok(v) => {
                        resp.headers_mut().insert(header::LOCATION, v);
                        resp
                    }
                    Err(_) => status_fault(500, None, None),
                }
            }
            Fault::MalformedJson => no_store(raw_response(
                StatusCode::OK,
                "application/json;charset=UTF-8",
                Bytes::from_static(
                    b"{\"access_token\":\"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJjbGllbnRfaWQiOi\",\"token_type\":\"Bearer\",\"expires_in\":36",
                ),
            )),
            Fault::Oversized(n) => no_store(raw_response(
                StatusCode::OK,
                "application/json;charset=UTF-8",
                oversized_body(n),
            )),
            Fault::MissingField(field) => rewrite_success(issue(shared, ctx, prefix, &form), |b| {
                b.remove(&field);
            }),
            Fault::ExpiresIn(v) => rewrite_success(issue(shared, ctx, prefix, &form), |b| {
                b.insert("expires_in".to_string(), Value::from(v));
            }),
            Fault::OpaqueToken => rewrite_success(issue(shared, ctx, prefix, &form), |b| {
                b.insert(
                    "access_token".to_string(),
                    Value::from(format!("opaque-{}", random_uuid())),
                );
            }),
            Fault::BadSignature => rewrite_token(shared, issue(shared, ctx, prefix, &form), |t| {
                let (rest, sig) = t.rsplit_once('.')?;
                // Same length, other bytes: still base64url, never the right signature.
                let flipped: String = sig
                    .chars()
                    .map(|c| if c == 'A' { 'B' } else { 'A' })
                    .collect();
                Some(format!("{rest}.{flipped}"))
            }),
            Fault::UnknownKid => rewrite_token(shared, issue(shared, ctx, prefix, &form), |t| {
                let (_, rest) = t.split_once('.')?;
                let header = URL_SAFE_NO_PAD
                    .encode(br#"{"alg":"RS256","typ":"JWT","kid":"no-such-key"}"#);
                Some(format!("{header}.{rest}"))
            }),
            Fault::ExpSkew(skew) => {
                rewrite_claims(shared, issue(shared, ctx, prefix, &form), |claims, _| {
                    let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or_default();
                    claims.insert("exp".into(), Value::from(exp + skew));
                })
            }
            Fault::GrantOnly(scopes) => {
                rewrite_claims(shared, issue(shared, ctx, prefix, &form), |claims, body| {
                    let scope = scopes.join(" ");
                    claims.insert("scope".into(), Value::from(scope.clone()));
                    if scope.is_empty() {
                        body.remove("scope");
                    } else {
                        body.insert("scope".into(), Value::from(scope));
                    }
                })
            }
        },
    };
    record.status = resp.status().as_u16();
    shared.state().requests.push(record);
    Ok(resp)
}

/// A 200 body of exactly `n` bytes: token JSON padded inside the token, or a prefix of it.
pub(crate) fn oversized_body(n: usize) -> Bytes {
    const HEAD: &str = "{\"access_token\":\"";
    const TAIL: &str = "\",\"token_type\":\"Bearer\",\"expires_in\":3600}";
    let pad = n.saturating_sub(HEAD.len() + TAIL.len());
    let mut body = String::with_capacity(HEAD.len() + pad + TAIL.len());
    body.push_str(HEAD);
    body.extend(std::iter::repeat_n('A', pad));
    body.push_str(TAIL);
    body.truncate(n);
    Bytes::from(body)
}

/// Replaces the access token of a successful response with `f(token)`, and records it as issued.
fn rewrite_token(shared: &Shared, resp: Resp, f: impl FnOnce(&str) -> Option<String>) -> Resp {
    rewrite_success(resp, |body| {
        let Some(token) = body.get("access_token").and_then(Value::as_str) else {
            return;
        };
        if let Some(new) = f(token) {
            shared.state().issued_tokens.push(new.clone());
            body.insert("access_token".into(), Value::from(new));
        }
    })
}

/// Re-signs the access token of a successful response with its claims changed by `f` (which
/// may change the response body too).
fn rewrite_claims(
    shared: &Shared,
    resp: Resp,
    f: impl FnOnce(&mut Map<String, Value>, &mut Map<String, Value>),
) -> Resp {
    rewrite_success(resp, |body| {
        let Some(Value::Object(mut claims)) = body
            .get("access_token")
            .and_then(Value::as_str)
            .and_then(|t| shared.verify(t).ok())
        else {
            return;
        };
        f(&mut claims, body);
        if let Ok(token) = shared.signing().sign_jwt(&claims) {
            shared.state().issued_tokens.push(token.clone());
            body.insert("access_token".into(), Value::from(token));
        }
    })
}

/// Applies `f` to the JSON object of a successful token response.
pub(crate) fn rewrite_success(resp: Resp, f: impl FnOnce(&mut Map<String, Value>)) -> Resp {
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = body.into_inner().unwrap_or_default();
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Full::new(bytes));
    };
    f(&mut obj);
    let bytes = serde_json::to_vec(&obj).unwrap_or_default();
    Response::from_parts(parts, Full::new(Bytes::from(bytes)))
}

/// The real token endpoint: validation, client authentication, scopes, the signed JWT.
fn issue(shared: &Shared, ctx: &Ctx, prefix: &Prefix, form: &FormRequest) -> Resp {
    let mut state = shared.state();
    let Some(env) = prefix.environment(&state, ctx) else {
        return not_found();
    };
    if !state.environment_known(&env) {
        return not_found();
    }
    if !form.content_type_ok {
        return invalid_request(
            "Request denied: Content-Type must be application/x-www-form-urlencoded",
        );
    }
    if let Some(name) = form.duplicate() {
        return invalid_request(&format!(
            "Request denied: Parameter {name} is included more than once"
        ));
    }
    let client = match authenticate(&mut state, &env, form, &prefix.assertion_audiences(ctx)) {
        Ok(client) => client,
        Err(resp) => return *resp,
    };
    match form.param("grant_type") {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Request denied: Unsupported grant type",
            );
        }
        None => return invalid_request("Request denied: grant_type is required"),
    }
    let mut requested: Vec<&str> = Vec::new();
    for scope in form.param("scope").unwrap_or_default().split(' ') {
        if !scope.is_empty() && !requested.contains(&scope) {
            requested.push(scope);
        }
    }
    let invalid: Vec<&str> = requested
        .iter()
        .copied()
        .filter(|s| !client.allowed_scopes.iter().any(|a| a == s))
        .collect();
    if !invalid.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!(
                "Request denied: Invalid scopes ({}) for the requested resource",
                invalid.join(" ")
            ),
        );
    }
    let lifetime = client
        .token_lifetime
        .unwrap_or(state.token_lifetime)
        .as_secs();
    let scope = (!requested.is_empty()).then(|| requested.join(" "));
    let client_id = client.client_id;
    drop(state);

    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let claims = Claims {
        client_id: &client_id,
        iss: prefix.issuer(ctx),
        jti: random_uuid(),
        iat,
        exp: iat.saturating_add(lifetime),
        aud: vec![prefix.audience(ctx)],
        scope: scope.clone(),
        env: &env,
        org: &shared.org_id,
    };
    let token = match shared.signing().sign_jwt(&claims) {
        Ok(token) => token,
        Err(e) => {
            tracing::error!(error = %e, "stand-in: signing failed");
            return status_fault(500, None, None);
        }
    };
    let mut body = Map::new();
    body.insert("access_token".into(), Value::from(token.clone()));
    body.insert("token_type".into(), Value::from("Bearer"));
    body.insert("expires_in".into(), Value::from(lifetime));
    if let Some(scope) = scope {
        body.insert("scope".into(), Value::from(scope));
    }
    shared.state().issued_tokens.push(token);
    no_store(json_response(StatusCode::OK, &body))
}

// ---------------------------------------------------------------------------------------------
// Introspection (RFC 7662), JWKS and discovery

async fn introspect(
    shared: &Shared,
    ctx: &Ctx,
    prefix: &Prefix,
    req: Request<Incoming>,
) -> Result<Resp, Dropped> {
    if req.method() != Method::POST {
        return Ok(method_not_allowed("POST"));
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return Ok(too_large()),
        Err(BodyError::Io) => return Err(Dropped),
    };
    let form = FormRequest::parse(&parts.headers, &body);
    let mut state = shared.state();
    let Some(env) = prefix.environment(&state, ctx) else {
        return Ok(not_found());
    };
    if !state.environment_known(&env) {
        return Ok(not_found());
    }
    if !form.content_type_ok {
        return Ok(invalid_request(
            "Request denied: Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    if let Err(resp) = authenticate(&mut state, &env, &form, &prefix.assertion_audiences(ctx)) {
        return Ok(*resp);
    }
    let Some(token) = form.param("token") else {
        return Ok(invalid_request("Request denied: token is required"));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let active = shared.verify(token).ok().filter(|claims| {
        claims.get("env").and_then(Value::as_str) == Some(env.as_str())
            && claims
                .get("exp")
                .and_then(Value::as_u64)
                .is_some_and(|exp| exp > now)
    });
    let body = match active {
        Some(Value::Object(mut claims)) => {
            claims.insert("active".into(), Value::Bool(true));
            claims.insert("token_type".into(), Value::from("Bearer"));
            Value::Object(claims)
        }
        _ => json!({ "active": false }),
    };
    Ok(no_store(json_response(StatusCode::OK, &body)))
}

enum Discovery {
    Jwks,
    OpenIdConfiguration,
}

fn discovery(
    shared: &Shared,
    ctx: &Ctx,
    prefix: &Prefix,
    method: &Method,
    what: Discovery,
) -> Resp {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    {
        let state = shared.state();
        match prefix.environment(&state, ctx) {
            Some(env) if state.environment_known(&env) => {}
            _ => return not_found(),
        }
    }
    match what {
        Discovery::Jwks => json_response(StatusCode::OK, &shared.jwks()),
        Discovery::OpenIdConfiguration => {
            json_response(StatusCode::OK, &openid_configuration(&prefix.issuer(ctx)))
        }
    }
}

fn openid_configuration(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "pushed_authorization_request_endpoint": format!("{issuer}/par"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "end_session_endpoint": format!("{issuer}/signoff"),
        "check_session_iframe": format!("{issuer}/checksession"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "device_authorization_endpoint": format!("{issuer}/device_authorization"),
        "claims_parameter_supported": false,
        "request_parameter_supported": true,
        "request_uri_parameter_supported": false,
        "require_pushed_authorization_requests": false,
        "scopes_supported": ["openid", "profile", "email", "address", "phone", "offline_access"],
        "response_types_supported": [
            "code", "id_token", "token id_token", "code id_token", "code token",
            "code token id_token"
        ],
        "response_modes_supported": ["pi.flow", "query", "fragment", "form_post"],
        "grant_types_supported": [
            "authorization_code", "implicit", "client_credentials", "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code"
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "userinfo_signing_alg_values_supported": ["none"],
        "request_object_signing_alg_values_supported": [
            "none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512"
        ],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt"
        ],
        "token_endpoint_auth_signing_alg_values_supported": assertion::SUPPORTED_ALGS,
        "claim_types_supported": ["normal"],
        "claims_supported": [
            "sub", "iss", "auth_time", "acr", "name", "given_name", "family_name",
            "middle_name", "preferred_username", "profile", "picture", "zoneinfo", "phone_number",
            "updated_at", "address", "email", "locale"
        ],
        "code_challenge_methods_supported": ["plain", "S256"],
    })
}

/// A random version 4 UUID.
pub(crate) fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decode_handles_reserved_characters() {
        assert_eq!(
            form_decode("a+b%2B%2F%3A%25%26%3D").as_deref(),
            Some("a b+/:%&=")
        );
        assert_eq!(form_decode("100%").as_deref(), Some("100%"));
        assert_eq!(form_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(form_decode("%e2%82%ac").as_deref(), Some("€"));
    }

    #[test]
    fn oversized_body_has_exact_length_and_parses_when_large_enough() {
        for n in [0, 10, 80, 4096] {
            assert_eq!(oversized_body(n).len(), n);
        }
        let v: Value = serde_json::from_slice(&oversized_body(4096)).expect("valid JSON");
        assert_eq!(v["token_type"], "Bearer");
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("auth.pingone.eu:443"), "auth.pingone.eu");
        assert_eq!(strip_port("auth.pingone.eu"), "auth.pingone.eu");
        assert_eq!(strip_port("[::1]:8443"), "::1");
    }
}
