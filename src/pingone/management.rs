//! PingOne's Management API, for one operation: rotating a worker application's own client
//! secret (`POST /v1/environments/{envId}/applications/{appId}/secret`).
//!
//! The same discipline as the token endpoint: only the six regional `api.pingone.*` hosts ever
//! receive the bearer token, HTTPS only, no redirects, bounded bodies, and no secret or token
//! in any message. The new secret is in the response body only; it is parsed straight into a
//! [`SecretString`] and the body is never echoed.

use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;

use super::client::TokenClient;
use super::domain::is_environment_id;
use super::error::sanitize_text;
use super::response::parse_retry_after;
use super::secret::{ExposeSecret, SecretString};

/// PingOne's regional Management API hosts.
pub const API_DOMAINS: [&str; 6] = [
    "api.pingone.com",
    "api.pingone.eu",
    "api.pingone.ca",
    "api.pingone.com.au",
    "api.pingone.sg",
    "api.pingone.asia",
];

/// The Management API host of a regional auth domain (`auth.pingone.eu` → `api.pingone.eu`).
pub fn api_domain_of(auth_domain: &str) -> Option<&'static str> {
    let auth = auth_domain.trim_end_matches('.').to_ascii_lowercase();
    let tld = auth.strip_prefix("auth.pingone.")?;
    API_DOMAINS
        .iter()
        .copied()
        .find(|api| api.strip_prefix("api.pingone.") == Some(tld))
}

/// Longest secret accepted from PingOne (its secrets are 64+ characters).
const MAX_SECRET_CHARS: usize = 4096;

/// A rotated secret, as PingOne returned it once.
#[derive(Debug)]
pub struct RotatedSecret {
    /// The new client secret.
    pub secret: SecretString,
    /// Until when PingOne accepts the previous secret (`None`: not said, or unreadable).
    pub previous_expires_at: Option<Timestamp>,
}

/// Why a rotation call failed. Messages never contain a secret or token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagementError {
    /// The host is not one of PingOne's regional API hosts. Nothing was sent.
    #[error(
        "{domain} is not a PingOne Management API domain ({}); nothing was sent",
        API_DOMAINS.join(", ")
    )]
    DomainNotAllowed {
        /// The refused host.
        domain: String,
    },
    /// The environment or application id is not a UUID. Nothing was sent.
    #[error(
        "the client id is not a PingOne application id (a UUID); secret rotation needs the worker application's id as client id"
    )]
    InvalidApplicationId,
    /// 401: the token was not accepted.
    #[error(
        "PingOne's Management API did not accept the worker's access token (HTTP 401{}); a token requested with scopes cannot call the Management API",
        code_suffix(code.as_deref())
    )]
    Unauthorized {
        /// PingOne's error code.
        code: Option<String>,
    },
    /// 403: the application's roles do not allow it.
    #[error(
        "PingOne's Management API refused to rotate the client secret (HTTP 403{}): the worker application needs a role on its environment that includes the permission applications:update:secret and covers the application's own roles, such as Environment Admin or Client Application Developer",
        code_suffix(code.as_deref())
    )]
    Forbidden {
        /// PingOne's error code.
        code: Option<String>,
    },
    /// 404: no such application in that environment.
    #[error(
        "PingOne's Management API found no application with this client id in environment {environment_id} (HTTP 404)"
    )]
    NotFound {
        /// The environment asked.
        environment_id: String,
    },
    /// Another 4xx.
    #[error("PingOne's Management API rejected the request (HTTP {status}{}{})", code_suffix(code.as_deref()), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Rejected {
        /// HTTP status.
        status: u16,
        /// PingOne's error code.
        code: Option<String>,
        /// PingOne's message, sanitised.
        message: Option<String>,
    },
    /// 408 or 429 (the request was turned away), or no connection: nothing was rotated.
    #[error("PingOne's Management API is unavailable ({detail})")]
    Unavailable {
        /// What happened.
        detail: String,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// The request was sent and no usable answer came back (a timeout or reset after sending,
    /// a 5xx, an unreadable body): PingOne may have rotated the secret.
    #[error(
        "no usable answer from PingOne's Management API after the request was sent ({detail}); PingOne may have rotated the secret"
    )]
    OutcomeUnknown {
        /// What happened.
        detail: String,
    },
    /// A 200 whose body is not a rotated secret: PingOne rotated, and the new secret cannot be
    /// read.
    #[error(
        "PingOne's Management API answered with an unusable body ({detail}); PingOne may have rotated the secret"
    )]
    InvalidResponse {
        /// What is wrong (never the body).
        detail: &'static str,
    },
}

fn code_suffix(code: Option<&str>) -> String {
    code.map(|c| format!(" {c}")).unwrap_or_default()
}

impl ManagementError {
    /// Stable CamelCase reason for the rotation condition and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::DomainNotAllowed { .. } | Self::InvalidApplicationId => "RotationNotPossible",
            Self::Unauthorized { .. } => "ManagementApiUnauthorized",
            Self::Forbidden { .. } => "ManagementApiForbidden",
            Self::NotFound { .. } => "ApplicationNotFound",
            Self::Rejected { .. } => "ManagementApiRejected",
            Self::Unavailable { .. } => "ManagementApiUnavailable",
            Self::OutcomeUnknown { .. } | Self::InvalidResponse { .. } => "RotationOutcomeUnknown",
        }
    }

    /// Whether PingOne may have rotated the secret: the request was sent and no answer says
    /// what happened.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Self::OutcomeUnknown { .. } | Self::InvalidResponse { .. }
        )
    }

    /// Whether a person must act (roles, ids): retried only on the slow schedule.
    pub fn needs_person(&self) -> bool {
        !matches!(
            self,
            Self::Unavailable { .. } | Self::OutcomeUnknown { .. } | Self::InvalidResponse { .. }
        )
    }

    /// The server's `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct SecretBody {
    secret: Option<String>,
    previous: Option<PreviousBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PreviousBody {
    expires_at: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// Reads the rotated secret from a 200 body.
fn parse_rotated(body: &[u8]) -> Result<RotatedSecret, ManagementError> {
    let parsed: SecretBody =
        serde_json::from_slice(body).map_err(|_| ManagementError::InvalidResponse {
            detail: "not the JSON of an application secret",
        })?;
    let secret = SecretString::from(parsed.secret.ok_or(ManagementError::InvalidResponse {
        detail: "no secret in it",
    })?);
    let text = secret.expose_secret();
    if text.is_empty() || text.chars().count() > MAX_SECRET_CHARS {
        return Err(ManagementError::InvalidResponse {
            detail: "the secret is empty or too long",
        });
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ManagementError::InvalidResponse {
            detail: "the secret contains whitespace or control characters",
        });
    }
    // An unreadable `previous.expiresAt` does not make the new secret unusable: it is PingOne's
    // current secret either way, and the caller knows the grace end it asked for.
    let previous_expires_at = parsed
        .previous
        .and_then(|p| p.expires_at)
        .and_then(|text| text.parse::<Timestamp>().ok());
    Ok(RotatedSecret {
        secret,
        previous_expires_at,
    })
}

/// Turns a non-2xx answer into an error; `body` is sanitised, never echoed whole.
fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    environment_id: &str,
) -> ManagementError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|b| b.code.as_deref())
        .map(|c| sanitize_text(c, &[]))
        .filter(|c| !c.is_empty());
    let message = parsed
        .as_ref()
        .and_then(|b| b.message.as_deref())
        .map(|m| sanitize_text(m, &[]))
        .filter(|m| !m.is_empty());
    match status {
        401 => ManagementError::Unauthorized { code },
        403 => ManagementError::Forbidden { code },
        404 => ManagementError::NotFound {
            environment_id: environment_id.to_owned(),
        },
        408 | 429 => ManagementError::Unavailable {
            detail: format!("HTTP {status}{}", code_suffix(code.as_deref())),
            retry_after,
        },
        // A gateway's or PingOne's 5xx may come after the rotation was committed.
        500..=599 => ManagementError::OutcomeUnknown {
            detail: format!("HTTP {status}{}", code_suffix(code.as_deref())),
        },
        _ => ManagementError::Rejected {
            status,
            code,
            message,
        },
    }
}

/// An application's secret as PingOne holds it, read with another application's token.
#[derive(Debug)]
pub struct ApplicationSecret {
    /// The current secret.
    pub secret: SecretString,
    /// Until when PingOne accepts the previous secret, if it still does.
    pub previous_expires_at: Option<Timestamp>,
}

impl TokenClient {
    /// Reads the current client secret of application `application_id` in `environment_id`
    /// (`GET …/applications/{id}/secret`), authenticating with another application's
    /// `access_token`: a worker cannot read its own secret.
    pub async fn read_client_secret(
        &self,
        api_domain: &str,
        environment_id: &str,
        application_id: &str,
        access_token: &SecretString,
    ) -> Result<ApplicationSecret, ManagementError> {
        let (domain, url) = secret_url(api_domain, environment_id, application_id)?;
        let request = self
            .http()
            .get(url)
            .header(AUTHORIZATION, bearer(access_token)?)
            .header(ACCEPT, "application/json");
        let body = self.call(&domain, request, environment_id, false).await?;
        // The body has the shape of a rotation's answer.
        let read = parse_rotated(&body)?;
        Ok(ApplicationSecret {
            secret: read.secret,
            previous_expires_at: read.previous_expires_at,
        })
    }

    /// Rotates the client secret of application `application_id` in `environment_id` at
    /// `api_domain` (one of [`API_DOMAINS`]), authenticating with `access_token`; PingOne keeps
    /// accepting the previous secret until `keep_previous_until`.
    pub async fn rotate_client_secret(
        &self,
        api_domain: &str,
        environment_id: &str,
        application_id: &str,
        access_token: &SecretString,
        keep_previous_until: Timestamp,
    ) -> Result<RotatedSecret, ManagementError> {
        let (domain, url) = secret_url(api_domain, environment_id, application_id)?;
        let body = serde_json::json!({
            "previous": {
                "expiresAt": keep_previous_until
                    .round(jiff::Unit::Second)
                    .unwrap_or(keep_previous_until)
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            }
        });
        let request = self
            .http()
            .post(url)
            .header(AUTHORIZATION, bearer(access_token)?)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body.to_string());
        let body = self.call(&domain, request, environment_id, true).await?;
        parse_rotated(&body)
    }

    /// Sends a Management API request and returns the body of a 2xx answer. With
    /// `changes_state`, a failure after the request was sent (a timeout or reset, an unreadable
    /// body, a 5xx) is [`ManagementError::OutcomeUnknown`]: the change may have been made.
    async fn call(
        &self,
        domain: &str,
        request: reqwest::RequestBuilder,
        environment_id: &str,
        changes_state: bool,
    ) -> Result<Vec<u8>, ManagementError> {
        let after_sending = |detail: String| {
            if changes_state {
                ManagementError::OutcomeUnknown { detail }
            } else {
                ManagementError::Unavailable {
                    detail,
                    retry_after: None,
                }
            }
        };
        let mut response = match request.send().await {
            Ok(r) => r,
            // No connection (TLS included): nothing was sent.
            Err(e) if e.is_connect() => {
                return Err(ManagementError::Unavailable {
                    detail: self.describe_transport(domain, &e),
                    retry_after: None,
                });
            }
            Err(e) => return Err(after_sending(self.describe_transport(domain, &e))),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Timestamp::now()));
        let body = self
            .read_capped(&mut response)
            .await
            .map_err(after_sending)?;
        if response.status().is_success() {
            return Ok(body);
        }
        match classify(status, retry_after, &body, environment_id) {
            ManagementError::OutcomeUnknown { detail } if !changes_state => {
                Err(ManagementError::Unavailable {
                    detail,
                    retry_after,
                })
            }
            e => Err(e),
        }
    }
}

/// The host and URL of an application's secret resource; nothing is sent to a host that is
/// not one of [`API_DOMAINS`], or for ids that are not UUIDs.
fn secret_url(
    api_domain: &str,
    environment_id: &str,
    application_id: &str,
) -> Result<(String, String), ManagementError> {
    let domain = api_domain.trim_end_matches('.').to_ascii_lowercase();
    if !API_DOMAINS.contains(&domain.as_str()) {
        return Err(ManagementError::DomainNotAllowed {
            domain: sanitize_text(api_domain, &[]),
        });
    }
    if !is_environment_id(environment_id) || !is_environment_id(application_id) {
        return Err(ManagementError::InvalidApplicationId);
    }
    let url = format!(
        "https://{domain}/v1/environments/{}/applications/{}/secret",
        environment_id.to_ascii_lowercase(),
        application_id.to_ascii_lowercase()
    );
    Ok((domain, url))
}

/// The `Authorization` header for `access_token`, marked sensitive (never logged).
fn bearer(access_token: &SecretString) -> Result<reqwest::header::HeaderValue, ManagementError> {
    let mut value =
        reqwest::header::HeaderValue::try_from(format!("Bearer {}", access_token.expose_secret()))
            .map_err(|_| ManagementError::Unavailable {
                detail: "the access token is not a valid header value".into(),
                retry_after: None,
            })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_domain_follows_the_auth_domains_region() {
        assert_eq!(api_domain_of("auth.pingone.eu"), Some("api.pingone.eu"));
        assert_eq!(
            api_domain_of("AUTH.PingOne.com.au."),
            Some("api.pingone.com.au")
        );
        assert_eq!(api_domain_of("auth.pingone.asia"), Some("api.pingone.asia"));
        assert_eq!(api_domain_of("login.example.com"), None);
        assert_eq!(api_domain_of("auth.pingone.evil.com"), None);
    }

    #[test]
    fn a_rotated_secret_is_read_and_never_shown() {
        let body = br#"{"environment":{"id":"e"},"secret":"n3w-S3cret._~","previous":{"secret":"old","expiresAt":"2026-12-02T08:00:00.000Z"}}"#;
        let rotated = parse_rotated(body).unwrap();
        assert_eq!(rotated.secret.expose_secret(), "n3w-S3cret._~");
        assert_eq!(
            rotated.previous_expires_at,
            Some("2026-12-02T08:00:00Z".parse().unwrap())
        );
        assert!(!format!("{rotated:?}").contains("n3w"));
        let none = parse_rotated(br#"{"secret":"abc"}"#).unwrap();
        assert_eq!(none.previous_expires_at, None);
        // The new secret is kept even when the grace end cannot be read.
        let unread =
            parse_rotated(br#"{"secret":"abc","previous":{"expiresAt":"tomorrow"}}"#).unwrap();
        assert_eq!(unread.secret.expose_secret(), "abc");
        assert_eq!(unread.previous_expires_at, None);
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"{"secret":""}"#,
            br#"{"secret":"a b"}"#,
        ] {
            let e = parse_rotated(bad).unwrap_err();
            assert!(
                matches!(e, ManagementError::InvalidResponse { .. }),
                "{e:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_role_and_never_the_body() {
        let e = classify(
            403,
            None,
            br#"{"id":"x","code":"ACCESS_FAILED","message":"secret-looking text"}"#,
            "env",
        );
        assert_eq!(e.reason(), "ManagementApiForbidden");
        let text = e.to_string();
        assert!(text.contains("applications:update:secret"), "{text}");
        assert!(text.contains("Environment Admin"), "{text}");
        assert!(!text.contains("secret-looking"), "{text}");
        assert!(e.needs_person());
        let e = classify(429, Some(Duration::from_secs(7)), b"<html>", "env");
        assert_eq!(e.reason(), "ManagementApiUnavailable");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(!e.needs_person() && !e.outcome_unknown());
        // A 5xx may come from a gateway after PingOne committed the rotation.
        for status in [500, 502, 503, 504] {
            let e = classify(status, Some(Duration::from_secs(7)), b"<html>", "env");
            assert_eq!(e.reason(), "RotationOutcomeUnknown", "{status}");
            assert!(e.outcome_unknown() && !e.needs_person(), "{status}");
        }
        for status in [400, 401, 403, 404, 408, 429] {
            assert!(
                !classify(status, None, b"", "env").outcome_unknown(),
                "{status}"
            );
        }
        assert_eq!(
            classify(401, None, b"", "env").reason(),
            "ManagementApiUnauthorized"
        );
        assert_eq!(
            classify(404, None, b"", "env").reason(),
            "ApplicationNotFound"
        );
        assert_eq!(
            classify(400, None, b"", "env").reason(),
            "ManagementApiRejected"
        );
    }

    #[tokio::test]
    async fn nothing_is_sent_to_a_host_that_is_not_a_pingone_api_domain() {
        super::super::client::install_crypto_provider();
        let client = TokenClient::new(Default::default()).unwrap();
        let token = SecretString::from("tok");
        let env = "cd91070f-c371-480e-80b2-753c735f8aa1";
        let e = client
            .rotate_client_secret("evil.example.com", env, env, &token, Timestamp::now())
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "RotationNotPossible");
        let e = client
            .rotate_client_secret("api.pingone.eu", env, "my-client", &token, Timestamp::now())
            .await
            .unwrap_err();
        assert_eq!(e, ManagementError::InvalidApplicationId);
    }
}
