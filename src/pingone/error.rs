//! Errors of the PingOne client: one enum per boundary, each variant knowing its condition
//! reason, whether it is retried and whether only a person can fix it.

use std::fmt::Write as _;
use std::time::Duration;

use super::domain::REGIONAL_AUTH_DOMAINS;
use super::secret::REDACTED;

/// Longest text taken from a server-provided field (error description, code) into a message.
pub const MAX_DESCRIPTION_CHARS: usize = 200;

/// Why a token request failed.
///
/// Messages are written for the person reading a status condition or an Event: they name the
/// host, the HTTP status and PingOne's error code and description. They never contain the client
/// secret or an access token: server-provided text is sanitised (printable characters only, at
/// most [`MAX_DESCRIPTION_CHARS`]) and scrubbed of the client secret when the error is built, and
/// transport errors carry only the innermost cause, never the request URL or headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The auth domain is neither a regional PingOne domain nor listed by the cluster admin.
    /// No request was sent.
    #[error(
        "auth domain {domain} is not allowed; the token request was not sent: credentials are only sent to the regional PingOne \
         domains ({}) and to custom domains the cluster admin lists in --allowed-auth-domains",
        REGIONAL_AUTH_DOMAINS.join(", ")
    )]
    AuthDomainNotAllowed {
        /// The (normalised) domain that was refused.
        domain: String,
    },

    /// The auth domain is not a plain host name (it has a port, path, user info, is an IP
    /// literal, ...). No request was sent.
    #[error("auth domain {domain:?} is not a plain host name: {why}")]
    InvalidAuthDomain {
        /// The domain as given (sanitised).
        domain: String,
        /// What is wrong with it.
        why: &'static str,
    },

    /// The environment id is not a UUID, so it cannot be put in the token URL. No request was
    /// sent.
    #[error(
        "environment id {environment_id:?} is not a UUID \
         (expected the form cd91070f-c371-480e-80b2-753c735f8aa1)"
    )]
    InvalidEnvironmentId {
        /// The environment id as given (sanitised).
        environment_id: String,
    },

    /// The client assertion (`client_secret_jwt`, `private_key_jwt`) could not be built. No
    /// request was sent.
    #[error("{detail}; the token request was not sent")]
    Assertion {
        /// What failed, never key material.
        detail: String,
    },

    /// PingOne did not accept the client credentials (HTTP 401, or `invalid_client`).
    #[error(
        "PingOne rejected the client credentials ({}); check the client id, the client secret \
         and the token endpoint auth method",
        reply_summary(*status, code.as_deref(), description.as_deref())
    )]
    InvalidClient {
        /// HTTP status code.
        status: u16,
        /// Error code from the body (`error` or PingOne's `code`), sanitised.
        code: Option<String>,
        /// Error description from the body, sanitised and scrubbed of the client secret.
        description: Option<String>,
    },

    /// PingOne did not accept the client assertion of a `private_key_jwt` client (HTTP 401, or
    /// `invalid_client`): there is no client secret, so the key is what to check.
    #[error(
        "PingOne rejected the client assertion signed with the private key ({}); check the client \
         id, that the application's token endpoint auth method is Private Key JWT, and that the \
         public key in status.publicJwk is registered in the application's JWKS (or served at \
         its JWKS URL){}",
        reply_summary(*status, code.as_deref(), description.as_deref()),
        key_id_clause(key_id.as_deref())
    )]
    InvalidClientKey {
        /// HTTP status code.
        status: u16,
        /// Error code from the body (`error` or PingOne's `code`), sanitised.
        code: Option<String>,
        /// Error description from the body, sanitised and scrubbed of the assertion.
        description: Option<String>,
        /// The key id the assertion named in its `kid` header (sanitised), if any.
        key_id: Option<String>,
    },

    /// The client may not use the client credentials grant (`unauthorized_client`, or HTTP 403).
    #[error(
        "PingOne does not allow this client to use the client credentials grant ({}); \
         check that the application is a worker application and is enabled",
        reply_summary(*status, code.as_deref(), description.as_deref())
    )]
    UnauthorizedClient {
        /// HTTP status code.
        status: u16,
        /// Error code from the body, sanitised.
        code: Option<String>,
        /// Error description from the body, sanitised and scrubbed of the client secret.
        description: Option<String>,
    },

    /// PingOne refused the requested scopes (`invalid_scope`).
    #[error(
        "PingOne rejected the requested scopes ({}); scopes must belong to one custom resource \
         the application is granted",
        reply_summary(*status, code.as_deref(), description.as_deref())
    )]
    InvalidScope {
        /// HTTP status code.
        status: u16,
        /// Error code from the body, sanitised.
        code: Option<String>,
        /// Error description from the body, sanitised and scrubbed of the client secret.
        description: Option<String>,
    },

    /// PingOne refused the request for another client-side reason (`invalid_request`,
    /// `unsupported_grant_type`, any other 4xx that is not retryable).
    #[error(
        "PingOne rejected the token request ({})",
        reply_summary(*status, code.as_deref(), description.as_deref())
    )]
    InvalidRequest {
        /// HTTP status code.
        status: u16,
        /// Error code from the body, sanitised.
        code: Option<String>,
        /// Error description from the body, sanitised and scrubbed of the client secret.
        description: Option<String>,
    },

    /// HTTP 404 with an error body PingOne writes: most likely a wrong environment id or region
    /// (or a custom domain that is not the environment's).
    #[error("{}", not_found_message(domain, environment_id, *custom_domain, code.as_deref(), description.as_deref()))]
    NotFound {
        /// The auth domain the request went to.
        domain: String,
        /// The connection's environment id (sanitised).
        environment_id: String,
        /// The domain is a custom domain: the environment id is not part of the URL.
        custom_domain: bool,
        /// Error code from the body, sanitised.
        code: Option<String>,
        /// Error description from the body, sanitised and scrubbed of the client secret.
        description: Option<String>,
    },

    /// HTTP 429.
    #[error(
        "PingOne rate limited the token request ({}){}",
        reply_summary(429, code.as_deref(), description.as_deref()),
        retry_after_suffix(*retry_after)
    )]
    RateLimited {
        /// How long the server asked to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
        /// Error code from the body, sanitised.
        code: Option<String>,
        /// Error description from the body, sanitised and scrubbed of the client secret.
        description: Option<String>,
    },

    /// HTTP 408, 500, 502, 503 or 504: a transient server-side failure.
    #[error(
        "token endpoint unavailable ({}){}",
        reply_summary(*status, code.as_deref(), description.as_deref()),
        retry_after_suffix(*retry_after)
    )]
    Unavailable {
        /// HTTP status code.
        status: u16,
        /// `Retry-After` sent along (typically with 503), if any.
        retry_after: Option<Duration>,
        /// Error code from the body, sanitised.
        code: Option<String>,
        /// Error description from the body, sanitised and scrubbed of the client secret.
        description: Option<String>,
    },

    /// A 4xx whose body is an HTML page: PingOne answers the token endpoint with JSON, so the
    /// page came from something in between (a proxy, a WAF, a CDN).
    #[error(
        "the token request to {domain} was answered with an HTML page (HTTP {status}{}), not by \
         PingOne, which answers with JSON: it came from something between the cluster and \
         PingOne (a proxy, WAF or CDN); check the egress proxy, firewall or CDN rules for {domain}",
        title.as_deref().map(|t| format!(", titled \"{t}\"")).unwrap_or_default()
    )]
    NotFromPingOne {
        /// HTTP status code.
        status: u16,
        /// The auth domain the request went to.
        domain: String,
        /// The page's `<title>`, sanitised and scrubbed of the credential, if it has one.
        title: Option<String>,
    },

    /// Any other status, including redirects (which are never followed, so that credentials
    /// never reach a host that was not allowed).
    #[error(
        "token endpoint answered with an unexpected status ({}){}",
        reply_summary(*status, code.as_deref(), description.as_deref()),
        if (300..400).contains(status) { "; redirects are not followed" } else { "" }
    )]
    UnexpectedStatus {
        /// HTTP status code.
        status: u16,
        /// Error code from the body, sanitised.
        code: Option<String>,
        /// Error description from the body, sanitised and scrubbed of the client secret.
        description: Option<String>,
    },

    /// The connect timeout or the total request timeout elapsed.
    #[error("token request to {domain} timed out")]
    Timeout {
        /// The auth domain.
        domain: String,
    },

    /// The connection could not be made or broke (DNS, refused, reset, closed early).
    #[error("connection to {domain} failed: {detail}")]
    Connect {
        /// The auth domain.
        domain: String,
        /// The innermost cause, e.g. `Connection refused (os error 111)`.
        detail: String,
    },

    /// The TLS handshake failed (untrusted or mismatching certificate, protocol error).
    #[error("TLS handshake with {domain} failed: {detail}")]
    Tls {
        /// The auth domain.
        domain: String,
        /// The TLS library's description, e.g. `invalid peer certificate: UnknownIssuer`.
        detail: String,
    },

    /// A 2xx answer that is not a usable token response, or a body over the size cap.
    #[error("token endpoint returned an invalid response: {detail}")]
    InvalidResponse {
        /// What is wrong; never contains the body itself.
        detail: String,
    },
}

impl TokenError {
    /// The stable CamelCase reason for status conditions, Events and the error metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::AuthDomainNotAllowed { .. } => "AuthDomainNotAllowed",
            Self::InvalidAuthDomain { .. } => "InvalidAuthDomain",
            Self::InvalidEnvironmentId { .. } => "InvalidEnvironmentId",
            Self::Assertion { .. } => "ClientAssertionFailed",
            Self::InvalidClient { .. } | Self::InvalidClientKey { .. } => "InvalidClient",
            Self::UnauthorizedClient { .. } => "UnauthorizedClient",
            Self::InvalidScope { .. } => "InvalidScope",
            Self::InvalidRequest { .. } => "InvalidRequest",
            Self::NotFound { .. } => "EnvironmentNotFound",
            Self::RateLimited { .. } => "RateLimited",
            Self::Unavailable { .. }
            | Self::Timeout { .. }
            | Self::Connect { .. }
            | Self::Tls { .. } => "TokenEndpointUnavailable",
            Self::UnexpectedStatus { .. }
            | Self::NotFromPingOne { .. }
            | Self::InvalidResponse { .. } => "TokenEndpointError",
        }
    }

    /// Whether trying again later (with backoff, or after [`TokenError::retry_after`]) may
    /// succeed without anyone changing anything.
    ///
    /// TLS failures count as retryable: a certificate problem is often fixed on the server side
    /// (rotation, a proxy) and exponential backoff keeps the load low meanwhile. Unexpected
    /// statuses (3xx, 501, ...) are retryable for the same reason: they usually come from
    /// something in front of PingOne; the condition reason `TokenEndpointError` tells a person
    /// to look if it persists.
    pub fn is_retryable(&self) -> bool {
        !self.needs_person()
    }

    /// Whether only a person can fix this (the `Stalled` class): wrong credentials, scopes,
    /// grant, request, environment id or a domain that is not allowed. Such errors are not
    /// retried until the spec or the credentials change.
    pub fn needs_person(&self) -> bool {
        matches!(
            self,
            Self::AuthDomainNotAllowed { .. }
                | Self::InvalidAuthDomain { .. }
                | Self::InvalidEnvironmentId { .. }
                | Self::Assertion { .. }
                | Self::InvalidClient { .. }
                | Self::InvalidClientKey { .. }
                | Self::UnauthorizedClient { .. }
                | Self::InvalidScope { .. }
                | Self::InvalidRequest { .. }
                | Self::NotFound { .. }
        )
    }

    /// How long the server asked us to wait before the next attempt (`Retry-After` on 429,
    /// and on 503 when sent).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Unavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The HTTP status the token endpoint answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::InvalidClient { status, .. }
            | Self::InvalidClientKey { status, .. }
            | Self::UnauthorizedClient { status, .. }
            | Self::InvalidScope { status, .. }
            | Self::InvalidRequest { status, .. }
            | Self::Unavailable { status, .. }
            | Self::NotFromPingOne { status, .. }
            | Self::UnexpectedStatus { status, .. } => Some(*status),
            Self::NotFound { .. } => Some(404),
            Self::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}

/// Errors building a [`TokenClient`](super::TokenClient) from its configuration. These are
/// start-up errors: the operator should refuse to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientBuildError {
    /// An entry of `--allowed-auth-domains` (or a host override) is not a plain host name.
    #[error("allowed auth domain {domain:?} is not a plain host name: {why}")]
    InvalidAllowedDomain {
        /// The entry as given (sanitised).
        domain: String,
        /// What is wrong with it.
        why: &'static str,
    },

    /// The extra CA bundle could not be used.
    #[error("extra CA bundle: {detail}")]
    InvalidExtraCa {
        /// What is wrong, e.g. which certificate could not be parsed.
        detail: String,
    },

    /// Neither the system trust store nor the extra CA bundle provided a certificate.
    #[error(
        "no trusted CA certificates: the system trust store is empty or unreadable and no extra \
         CA bundle was given"
    )]
    NoTrustRoots,

    /// A configuration value is out of range.
    #[error("invalid token client configuration: {detail}")]
    InvalidConfig {
        /// Which value and why.
        detail: String,
    },

    /// The TLS configuration could not be built.
    #[error("TLS configuration: {detail}")]
    Tls {
        /// The TLS library's description.
        detail: String,
    },

    /// The HTTP client could not be built.
    #[error("HTTP client: {detail}")]
    Http {
        /// The HTTP library's description.
        detail: String,
    },
}

/// "HTTP 401, invalid_client: Invalid client credentials", leaving out what is unknown.
fn reply_summary(status: u16, code: Option<&str>, description: Option<&str>) -> String {
    let mut out = format!("HTTP {status}");
    if let Some(code) = code {
        let _ = write!(out, ", {code}");
    }
    if let Some(description) = description {
        let _ = write!(out, ": {description}");
    }
    out
}

/// What the key id (the assertion's `kid` header) adds to an `invalid_client` message.
fn key_id_clause(key_id: Option<&str>) -> String {
    match key_id {
        Some(kid) => format!(" under the key id {kid}, the kid the assertion names"),
        None => "; the assertion names no key id, so when the JWKS holds several keys, set keyId \
                 in the credentials Secret to this key's kid"
            .to_string(),
    }
}

/// The message of a 404: the environment and the domain that were tried.
fn not_found_message(
    domain: &str,
    environment_id: &str,
    custom_domain: bool,
    code: Option<&str>,
    description: Option<&str>,
) -> String {
    let reply = reply_summary(404, code, description);
    if custom_domain {
        format!(
            "PingOne found no token endpoint at the custom domain {domain} ({reply}); check that \
             {domain} is a custom domain of environment {environment_id} in PingOne"
        )
    } else {
        format!(
            "PingOne found no environment {environment_id} at {domain} ({reply}); check \
             environmentId, and that authDomain is the environment's region"
        )
    }
}

fn retry_after_suffix(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!("; retry after {}s", wait.as_secs()),
        None => String::new(),
    }
}

/// A message from elsewhere (the Kubernetes API server) made fit for a condition: control
/// characters become spaces, runs of whitespace collapse, at most 1,000 characters (an
/// admission policy's message comes after the API server's own words and must survive).
pub fn sanitize_message(text: &str) -> String {
    let cleaned = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    cleaned.chars().take(1000).collect()
}

/// Makes server- or user-provided text safe for a message: every occurrence of a secret (and
/// of its form-urlencoded spelling, in case a server echoes the request body) is replaced by
/// `[redacted]`, control characters become spaces, runs of whitespace collapse, and the result
/// is cut to [`MAX_DESCRIPTION_CHARS`] characters.
///
/// Secrets are scrubbed before cutting, so a cut can never leave a prefix of a secret behind,
/// and again after whitespace clean-up in case the raw text hid a secret behind control
/// characters.
pub(crate) fn sanitize_text(text: &str, secrets: &[&str]) -> String {
    let scrubbed = scrub(text, secrets);
    let mut cleaned = String::with_capacity(scrubbed.len());
    for word in scrubbed
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
    {
        if !cleaned.is_empty() {
            cleaned.push(' ');
        }
        cleaned.extend(word.chars().filter(|c| !is_invisible(*c)));
    }
    let cleaned = scrub(&cleaned, secrets);
    truncate_chars(&cleaned, MAX_DESCRIPTION_CHARS)
}

/// Format characters (bidi overrides, zero-width joiners) could make a message read
/// differently from what it contains.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, REDACTED);
        let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        if encoded != *secret {
            out = out.replace(&encoded, REDACTED);
        }
    }
    out
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_errors() -> Vec<TokenError> {
        let reply = |status| (status, Some("code".to_string()), Some("why".to_string()));
        let (s, c, d) = reply(400);
        vec![
            TokenError::AuthDomainNotAllowed {
                domain: "evil.example.com".into(),
            },
            TokenError::InvalidAuthDomain {
                domain: "a:1".into(),
                why: "has a port",
            },
            TokenError::InvalidEnvironmentId {
                environment_id: "x".into(),
            },
            TokenError::InvalidClient {
                status: 401,
                code: c.clone(),
                description: d.clone(),
            },
            TokenError::UnauthorizedClient {
                status: 403,
                code: c.clone(),
                description: d.clone(),
            },
            TokenError::InvalidScope {
                status: s,
                code: c.clone(),
                description: d.clone(),
            },
            TokenError::InvalidRequest {
                status: s,
                code: c.clone(),
                description: d.clone(),
            },
            TokenError::NotFound {
                domain: "auth.pingone.eu".into(),
                environment_id: "cd91070f-c371-480e-80b2-753c735f8aa1".into(),
                custom_domain: false,
                code: c.clone(),
                description: d.clone(),
            },
            TokenError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                code: None,
                description: None,
            },
            TokenError::Unavailable {
                status: 503,
                retry_after: None,
                code: None,
                description: None,
            },
            TokenError::UnexpectedStatus {
                status: 302,
                code: None,
                description: None,
            },
            TokenError::Timeout {
                domain: "auth.pingone.eu".into(),
            },
            TokenError::Connect {
                domain: "auth.pingone.eu".into(),
                detail: "refused".into(),
            },
            TokenError::Tls {
                domain: "auth.pingone.eu".into(),
                detail: "bad cert".into(),
            },
            TokenError::InvalidResponse {
                detail: "not JSON".into(),
            },
            TokenError::InvalidClientKey {
                status: 401,
                code: c.clone(),
                description: d.clone(),
                key_id: None,
            },
            TokenError::NotFromPingOne {
                status: 403,
                domain: "auth.pingone.eu".into(),
                title: None,
            },
        ]
    }

    #[test]
    fn reason_retryable_and_needs_person_table() {
        let expected: &[(&str, bool, bool)] = &[
            ("AuthDomainNotAllowed", false, true),
            ("InvalidAuthDomain", false, true),
            ("InvalidEnvironmentId", false, true),
            ("InvalidClient", false, true),
            ("UnauthorizedClient", false, true),
            ("InvalidScope", false, true),
            ("InvalidRequest", false, true),
            ("EnvironmentNotFound", false, true),
            ("RateLimited", true, false),
            ("TokenEndpointUnavailable", true, false),
            ("TokenEndpointError", true, false),
            ("TokenEndpointUnavailable", true, false),
            ("TokenEndpointUnavailable", true, false),
            ("TokenEndpointUnavailable", true, false),
            ("TokenEndpointError", true, false),
            ("InvalidClient", false, true),
            ("TokenEndpointError", true, false),
        ];
        let errors = all_errors();
        assert_eq!(errors.len(), expected.len());
        for (error, (reason, retryable, person)) in errors.iter().zip(expected) {
            assert_eq!(error.reason(), *reason, "{error:?}");
            assert_eq!(error.is_retryable(), *retryable, "{error:?}");
            assert_eq!(error.needs_person(), *person, "{error:?}");
        }
    }

    #[test]
    fn reasons_are_camel_case() {
        for error in all_errors() {
            let reason = error.reason();
            assert!(
                reason
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase())
            );
            assert!(
                reason.chars().all(|c| c.is_ascii_alphanumeric()),
                "{reason}"
            );
        }
    }

    #[test]
    fn retry_after_and_status() {
        let limited = TokenError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            code: None,
            description: None,
        };
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(limited.status(), Some(429));
        assert_eq!(
            limited.to_string(),
            "PingOne rate limited the token request (HTTP 429); retry after 7s"
        );
        let unavailable = TokenError::Unavailable {
            status: 503,
            retry_after: Some(Duration::from_secs(3)),
            code: None,
            description: None,
        };
        assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(
            TokenError::Timeout { domain: "d".into() }.retry_after(),
            None
        );
        assert_eq!(TokenError::Timeout { domain: "d".into() }.status(), None);
        assert_eq!(
            TokenError::NotFound {
                domain: "auth.pingone.eu".into(),
                environment_id: "cd91070f-c371-480e-80b2-753c735f8aa1".into(),
                custom_domain: false,
                code: None,
                description: None
            }
            .status(),
            Some(404)
        );
    }

    #[test]
    fn messages_name_status_code_and_description() {
        let error = TokenError::InvalidClient {
            status: 401,
            code: Some("invalid_client".into()),
            description: Some("Request denied: Unsupported authentication method".into()),
        };
        let message = error.to_string();
        assert!(
            message.contains(
                "HTTP 401, invalid_client: Request denied: Unsupported authentication method"
            ),
            "{message}"
        );
        let redirect = TokenError::UnexpectedStatus {
            status: 302,
            code: None,
            description: None,
        }
        .to_string();
        assert!(
            redirect.contains("HTTP 302") && redirect.contains("redirects are not followed"),
            "{redirect}"
        );
        let not_allowed = TokenError::AuthDomainNotAllowed {
            domain: "evil.example.com".into(),
        }
        .to_string();
        assert!(
            not_allowed.contains("evil.example.com") && not_allowed.contains("auth.pingone.eu"),
            "{not_allowed}"
        );
    }

    /// A private_key_jwt client has no secret: its invalid_client names the key, where it must
    /// be registered and the key id, never a client secret.
    #[test]
    fn invalid_client_of_a_key_speaks_of_the_key() {
        let with_kid = TokenError::InvalidClientKey {
            status: 401,
            code: Some("invalid_client".into()),
            description: Some("Request denied: Invalid client credentials".into()),
            key_id: Some("rsa-1".into()),
        }
        .to_string();
        assert_eq!(
            with_kid,
            "PingOne rejected the client assertion signed with the private key (HTTP 401, \
             invalid_client: Request denied: Invalid client credentials); check the client id, \
             that the application's token endpoint auth method is Private Key JWT, and that the \
             public key in status.publicJwk is registered in the application's JWKS (or served \
             at its JWKS URL) under the key id rsa-1, the kid the assertion names"
        );
        let without_kid = TokenError::InvalidClientKey {
            status: 401,
            code: Some("invalid_client".into()),
            description: None,
            key_id: None,
        }
        .to_string();
        assert!(
            without_kid.ends_with(
                "(or served at its JWKS URL); the assertion names no key id, so when the JWKS \
                 holds several keys, set keyId in the credentials Secret to this key's kid"
            ),
            "{without_kid}"
        );
        for message in [&with_kid, &without_kid] {
            assert!(!message.contains("secret,"), "{message}");
            assert!(!message.contains("client secret"), "{message}");
        }
        // The methods with a secret still speak of the secret.
        let secret = TokenError::InvalidClient {
            status: 401,
            code: Some("invalid_client".into()),
            description: None,
        }
        .to_string();
        assert!(secret.contains("the client secret"), "{secret}");
        assert!(!secret.contains("publicJwk"), "{secret}");
    }

    #[test]
    fn environment_not_found_names_the_environment_and_the_domain() {
        let regional = TokenError::NotFound {
            domain: "auth.pingone.ca".into(),
            environment_id: "cd91070f-c371-480e-80b2-753c735f8aa1".into(),
            custom_domain: false,
            code: Some("NOT_FOUND".into()),
            description: Some("The requested resource was not found.".into()),
        }
        .to_string();
        assert_eq!(
            regional,
            "PingOne found no environment cd91070f-c371-480e-80b2-753c735f8aa1 at \
             auth.pingone.ca (HTTP 404, NOT_FOUND: The requested resource was not found.); check \
             environmentId, and that authDomain is the environment's region"
        );
        let custom = TokenError::NotFound {
            domain: "login.example.com".into(),
            environment_id: "cd91070f-c371-480e-80b2-753c735f8aa1".into(),
            custom_domain: true,
            code: None,
            description: None,
        }
        .to_string();
        assert_eq!(
            custom,
            "PingOne found no token endpoint at the custom domain login.example.com (HTTP 404); \
             check that login.example.com is a custom domain of environment \
             cd91070f-c371-480e-80b2-753c735f8aa1 in PingOne"
        );
    }

    #[test]
    fn an_html_page_is_said_to_come_from_between_the_cluster_and_pingone() {
        let titled = TokenError::NotFromPingOne {
            status: 403,
            domain: "auth.pingone.eu".into(),
            title: Some("Attention Required!".into()),
        }
        .to_string();
        assert_eq!(
            titled,
            "the token request to auth.pingone.eu was answered with an HTML page (HTTP 403, \
             titled \"Attention Required!\"), not by PingOne, which answers with JSON: it came \
             from something between the cluster and PingOne (a proxy, WAF or CDN); check the \
             egress proxy, firewall or CDN rules for auth.pingone.eu"
        );
        let untitled = TokenError::NotFromPingOne {
            status: 401,
            domain: "auth.pingone.eu".into(),
            title: None,
        }
        .to_string();
        assert!(
            untitled.contains("an HTML page (HTTP 401), not by PingOne"),
            "{untitled}"
        );
    }

    #[test]
    fn sanitize_scrubs_secrets_and_control_characters() {
        let secret = "s3cr3t/+?&=%";
        let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let text = format!("bad\nsecret {secret}\tand encoded {encoded}\u{202E}!\u{0007}");
        let clean = sanitize_text(&text, &[secret]);
        assert_eq!(clean, "bad secret [redacted] and encoded [redacted]!");
        assert!(!clean.contains(secret));
    }

    #[test]
    fn sanitize_scrubs_before_truncating() {
        let secret = "ABCDEFGHIJKLMNOP";
        let text = format!("{}{secret}", "x".repeat(MAX_DESCRIPTION_CHARS - 5));
        let clean = sanitize_text(&text, &[secret]);
        assert!(!clean.contains("ABCDE"), "{clean}");
        assert_eq!(clean.chars().count(), MAX_DESCRIPTION_CHARS + 1);
        assert!(clean.ends_with('…'));
    }

    #[test]
    fn sanitize_scrubs_secret_hidden_by_control_characters() {
        // A secret that itself contains a space must be found after whitespace clean-up too.
        let secret = "two words";
        let clean = sanitize_text("leak: two\u{0000}words", &[secret]);
        assert!(!clean.contains("two words"), "{clean}");
    }

    #[test]
    fn sanitize_ignores_empty_secret_and_keeps_unicode() {
        assert_eq!(sanitize_text("Zürich  ok", &[""]), "Zürich ok");
        let long = "é".repeat(300);
        assert_eq!(
            sanitize_text(&long, &[]).chars().count(),
            MAX_DESCRIPTION_CHARS + 1
        );
    }
}
