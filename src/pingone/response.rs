//! Parsing token endpoint answers: pure functions from status, headers and body bytes to a
//! [`TokenResponse`] or a [`TokenError`].

use std::time::Duration;

use serde_json::{Map, Value};

use super::error::{TokenError, sanitize_text};
use super::secret::SecretString;

/// Shortest lifetime accepted for a token.
pub const MIN_EXPIRES_IN: Duration = Duration::from_secs(1);

/// Longest lifetime accepted for a token: ten years. PingOne issues 300 s … 30 days; anything
/// beyond ten years is a broken server, and scheduling from it would never renew.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(10 * 366 * 24 * 60 * 60);

/// Longest `Retry-After` honoured; longer values are cut to this so that one odd header cannot
/// park a connection for weeks while its token expires.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// A successful token response.
///
/// `Debug` is safe to log: the access token prints as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token (a JWT for PingOne).
    pub access_token: SecretString,
    /// The token type as the server spelt it; always `Bearer` in some capitalisation.
    pub token_type: String,
    /// The lifetime the server granted, counted from when the request was sent.
    pub expires_in: Duration,
    /// The scopes granted, when the server listed them (PingOne does only when scopes were
    /// requested).
    pub scope: Vec<String>,
}

/// Parses a 2xx body into a [`TokenResponse`].
///
/// Requires `access_token` (a non-empty string of visible ASCII characters), `token_type`
/// (`Bearer`, any case: a token of another type, e.g. DPoP-bound, is useless to the pods that
/// mount it) and `expires_in` (a whole number of seconds, 1 s … 10 years, as a number or a
/// numeric string). `scope`, when present, is split on spaces. Unknown fields are ignored.
/// Error details never quote the body, which may carry the token.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, TokenError> {
    let invalid = |detail: String| TokenError::InvalidResponse { detail };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        // Only the position: the body may hold the token.
        invalid(format!(
            "body is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(fields) = value else {
        return Err(invalid("body is not a JSON object".into()));
    };

    let access_token = match fields.get("access_token") {
        Some(Value::String(token)) if token.is_empty() => {
            return Err(invalid("access_token is empty".into()));
        }
        Some(Value::String(token)) => token,
        Some(_) => return Err(invalid("access_token is not a string".into())),
        None => return Err(invalid(missing_field_detail("access_token", &fields))),
    };
    if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "access_token contains characters that are not visible ASCII".into(),
        ));
    }

    let token_type = match fields.get("token_type") {
        Some(Value::String(kind)) if kind.is_empty() => {
            return Err(invalid("token_type is empty".into()));
        }
        Some(Value::String(kind)) => kind,
        Some(_) => return Err(invalid("token_type is not a string".into())),
        None => return Err(invalid("token_type is missing".into())),
    };
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(invalid(format!(
            "token_type is {:?}, only Bearer tokens are supported",
            sanitize_text(token_type, &[access_token])
        )));
    }

    let expires_in = match fields.get("expires_in") {
        Some(value) => {
            parse_expires_in(value).map_err(|why| invalid(format!("expires_in {why}")))?
        }
        None => return Err(invalid("expires_in is missing".into())),
    };

    let scope = match fields.get("scope") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(scope)) => scope.split_whitespace().map(str::to_owned).collect(),
        Some(_) => return Err(invalid("scope is not a string".into())),
    };

    Ok(TokenResponse {
        access_token: SecretString::from(access_token.as_str()),
        token_type: token_type.clone(),
        expires_in,
        scope,
    })
}

/// A 2xx body without a token but with an OAuth error deserves a clearer message.
fn missing_field_detail(field: &str, fields: &Map<String, Value>) -> String {
    match fields.get("error").and_then(Value::as_str) {
        Some(code) => format!(
            "{field} is missing; the body carries error {:?}",
            sanitize_text(code, &[])
        ),
        None => format!("{field} is missing"),
    }
}

/// `expires_in` as a whole number of seconds within [`MIN_EXPIRES_IN`] … [`MAX_EXPIRES_IN`].
/// Accepts a JSON number (a float only when whole) or a string of decimal digits.
fn parse_expires_in(value: &Value) -> Result<Duration, String> {
    let max = MAX_EXPIRES_IN.as_secs();
    let seconds: u64 = match value {
        Value::Number(number) => {
            if let Some(seconds) = number.as_u64() {
                seconds
            } else if number.as_i64().is_some() {
                return Err("must be positive".into());
            } else {
                let float = number.as_f64().unwrap_or(f64::NAN);
                if !float.is_finite() || float.fract() != 0.0 {
                    return Err("must be a whole number of seconds".into());
                }
                if float <= 0.0 {
                    return Err("must be positive".into());
                }
                if float > max as f64 {
                    return Err(format!("is absurdly long (more than {max} seconds)"));
                }
                // Whole and within range, so the conversion is exact.
                float as u64
            }
        }
        Value::String(text) => {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err("must be a whole number of seconds".into());
            }
            // All digits: the only parse failure left is overflow, i.e. absurdly long.
            text.parse::<u64>().unwrap_or(u64::MAX)
        }
        _ => return Err("must be a number".into()),
    };
    if seconds < MIN_EXPIRES_IN.as_secs() {
        return Err("must be positive".into());
    }
    if seconds > max {
        return Err(format!("is absurdly long (more than {max} seconds)"));
    }
    Ok(Duration::from_secs(seconds))
}

/// The error fields of a non-2xx body: RFC 6749 `error`/`error_description`, or PingOne
/// platform `code`/`message`. Both are raw (not yet sanitised); `None` when absent or when the
/// body is not JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub code: Option<String>,
    pub description: Option<String>,
}

pub(crate) fn parse_error_body(body: &[u8]) -> ErrorBody {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return ErrorBody::default();
    };
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    if let Some(code) = text("error") {
        return ErrorBody {
            code: Some(code),
            description: text("error_description"),
        };
    }
    ErrorBody {
        code: text("code"),
        description: text("message").or_else(|| text("error_description")),
    }
}

/// What a token request authenticated with, as far as error messages care.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A client secret (`client_secret_post`, `client_secret_basic`, `client_secret_jwt`).
    #[default]
    Secret,
    /// A private key (`private_key_jwt`), named in the assertion by this key id, if any.
    PrivateKey {
        /// The `kid` header of the assertion.
        key_id: Option<&'a str>,
    },
}

/// What the message of a failed token request names besides the answer itself: where the
/// request went and what it authenticated with. It also holds the text to scrub from what the
/// server wrote (the client secret, or the assertion), so it has no `Debug`.
#[derive(Clone, Copy)]
pub struct ErrorContext<'a> {
    /// The auth domain the request went to.
    pub auth_domain: &'a str,
    /// The connection's environment id.
    pub environment_id: &'a str,
    /// What the request authenticated with.
    pub credential: Credential<'a>,
    /// Removed from server-provided text wherever it appears (empty: nothing to remove).
    pub scrub: &'a str,
}

impl<'a> ErrorContext<'a> {
    /// A request to `auth_domain` for `environment_id` that authenticated with `client_secret`.
    pub fn secret(auth_domain: &'a str, environment_id: &'a str, client_secret: &'a str) -> Self {
        ErrorContext {
            auth_domain,
            environment_id,
            credential: Credential::Secret,
            scrub: client_secret,
        }
    }
}

/// Whether a body is an HTML page (what a proxy, a WAF or a CDN sends), by its first bytes.
fn is_html(body: &[u8]) -> bool {
    let head = &body[..body.len().min(1024)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let text = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    text.starts_with('<')
        && ["<!doctype html", "<html", "<head", "<body", "<title"]
            .iter()
            .any(|tag| text.contains(tag))
}

/// The `<title>` of an HTML page, raw; `None` when it has none or an empty one.
fn html_title(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    Some(text[start..end].to_string()).filter(|t| !t.trim().is_empty())
}

/// Turns a non-2xx answer into a [`TokenError`].
///
/// Classification: 429 → rate limited, 408/500/502/503/504 → unavailable. A 4xx is PingOne's
/// own refusal only when its body is an error PingOne writes (RFC 6749 `error`, or the
/// platform's `code`): 404 → environment not found; otherwise the OAuth error code decides
/// (`invalid_client`, `unauthorized_client`, `invalid_scope`), falling back to the status (401
/// → invalid client, 403 → unauthorised client, else invalid request); an invalid client that
/// authenticated with a private key is [`TokenError::InvalidClientKey`]. A 4xx without such a
/// body is unexpected, like 3xx, other 5xx and 1xx: transient, since nobody at PingOne refused
/// anything; when the body is an HTML page (a proxy's, a WAF's or a CDN's) it is
/// [`TokenError::NotFromPingOne`]. Server-provided text is sanitised and scrubbed of
/// `context.scrub`.
pub fn classify_error_response(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    context: &ErrorContext<'_>,
) -> TokenError {
    let parsed = parse_error_body(body);
    let clean = |text: Option<String>| {
        text.map(|t| sanitize_text(&t, &[context.scrub]))
            .filter(|t| !t.is_empty())
    };
    let raw_code = parsed.code.clone().unwrap_or_default();
    let from_pingone = parsed.code.is_some();
    let code = clean(parsed.code);
    let description = clean(parsed.description);
    let invalid_client = |code, description| match context.credential {
        Credential::Secret => TokenError::InvalidClient {
            status,
            code,
            description,
        },
        Credential::PrivateKey { key_id } => TokenError::InvalidClientKey {
            status,
            code,
            description,
            key_id: key_id.map(|k| sanitize_text(k, &[])),
        },
    };
    match status {
        400..=499 if status != 429 && status != 408 && !from_pingone && is_html(body) => {
            TokenError::NotFromPingOne {
                status,
                domain: sanitize_text(context.auth_domain, &[]),
                title: clean(html_title(body)),
            }
        }
        400..=499 if status != 429 && status != 408 && !from_pingone => {
            TokenError::UnexpectedStatus {
                status,
                code,
                description,
            }
        }
        404 => TokenError::NotFound {
            domain: sanitize_text(context.auth_domain, &[]),
            environment_id: sanitize_text(context.environment_id, &[]),
            custom_domain: !super::domain::is_regional(context.auth_domain),
            code,
            description,
        },
        429 => TokenError::RateLimited {
            retry_after,
            code,
            description,
        },
        408 | 500 | 502 | 503 | 504 => TokenError::Unavailable {
            status,
            retry_after,
            code,
            description,
        },
        400..=499 => match raw_code.as_str() {
            "invalid_client" => invalid_client(code, description),
            "unauthorized_client" => TokenError::UnauthorizedClient {
                status,
                code,
                description,
            },
            "invalid_scope" => TokenError::InvalidScope {
                status,
                code,
                description,
            },
            _ => match status {
                401 => invalid_client(code, description),
                403 => TokenError::UnauthorizedClient {
                    status,
                    code,
                    description,
                },
                _ => TokenError::InvalidRequest {
                    status,
                    code,
                    description,
                },
            },
        },
        _ => TokenError::UnexpectedStatus {
            status,
            code,
            description,
        },
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3), relative to
/// `now`. A date in the past means "now" (zero). The result is capped at [`MAX_RETRY_AFTER`].
/// `None` when the value is neither form.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Overflowing digits are a very long wait, which the cap below handles.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        let delta = at.as_duration().checked_sub(now.as_duration())?;
        Duration::try_from(delta).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pingone::ExposeSecret;

    const SECRET: &str = "0nKzq~Ux9-worker-secret";
    const ENV: &str = "cd91070f-c371-480e-80b2-753c735f8aa1";

    fn ctx(secret: &str) -> ErrorContext<'_> {
        ErrorContext::secret("auth.pingone.eu", ENV, secret)
    }

    fn parse(body: &str) -> Result<TokenResponse, TokenError> {
        parse_token_response(body.as_bytes())
    }

    fn detail(result: Result<TokenResponse, TokenError>) -> String {
        match result {
            Err(TokenError::InvalidResponse { detail }) => detail,
            other => panic!("expected InvalidResponse, got {other:?}"),
        }
    }

    #[test]
    fn parses_pingone_success() {
        let token = parse(r#"{"access_token":"eyJhbGciOiJSUzI1NiJ9.e30.sig","token_type":"Bearer","expires_in":3600}"#).unwrap();
        assert_eq!(
            token.access_token.expose_secret(),
            "eyJhbGciOiJSUzI1NiJ9.e30.sig"
        );
        assert_eq!(token.token_type, "Bearer");
        assert_eq!(token.expires_in, Duration::from_secs(3600));
        assert!(token.scope.is_empty());
    }

    #[test]
    fn keeps_token_type_spelling_and_parses_scope() {
        let token = parse(r#"{"access_token":"t","token_type":"bearer","expires_in":"300","scope":"read:a  write:b ","id_token":"x","extra":{"n":1}}"#).unwrap();
        assert_eq!(token.token_type, "bearer");
        assert_eq!(token.expires_in, Duration::from_secs(300));
        assert_eq!(token.scope, ["read:a", "write:b"]);
        let token =
            parse(r#"{"access_token":"t","token_type":"BEARER","expires_in":3600.0,"scope":null}"#)
                .unwrap();
        assert_eq!(token.expires_in, Duration::from_secs(3600));
        assert!(token.scope.is_empty());
        let token =
            parse(r#"{"access_token":"t","token_type":"Bearer","expires_in":3600,"scope":""}"#)
                .unwrap();
        assert!(token.scope.is_empty());
    }

    #[test]
    fn expires_in_edge_cases() {
        let with = |v: &str| {
            parse(&format!(
                r#"{{"access_token":"t","token_type":"Bearer","expires_in":{v}}}"#
            ))
        };
        assert_eq!(with("1").unwrap().expires_in, Duration::from_secs(1));
        assert_eq!(
            with("2592000").unwrap().expires_in,
            Duration::from_secs(2_592_000)
        );
        assert_eq!(
            with(&MAX_EXPIRES_IN.as_secs().to_string())
                .unwrap()
                .expires_in,
            MAX_EXPIRES_IN
        );
        let cases = [
            ("0", "must be positive"),
            ("-1", "must be positive"),
            ("\"0\"", "must be positive"),
            ("-5.0", "must be positive"),
            ("3600.5", "whole number"),
            ("\"3600.5\"", "whole number"),
            ("\"-1\"", "whole number"),
            ("\" 3600\"", "whole number"),
            ("\"\"", "whole number"),
            ("\"abc\"", "whole number"),
            ("1e30", "absurdly long"),
            ("18446744073709551615", "absurdly long"),
            ("\"99999999999999999999999\"", "absurdly long"),
            (&(MAX_EXPIRES_IN.as_secs() + 1).to_string(), "absurdly long"),
            ("null", "must be a number"),
            ("true", "must be a number"),
            ("[3600]", "must be a number"),
        ];
        for (value, expected) in cases {
            let detail = detail(with(value));
            assert!(
                detail.starts_with("expires_in ") && detail.contains(expected),
                "{value}: {detail}"
            );
        }
    }

    #[test]
    fn missing_and_malformed_fields() {
        let cases = [
            ("", "not JSON"),
            ("<html>oops</html>", "not JSON"),
            ("{\"access_token\":", "not JSON"),
            ("[1,2]", "not a JSON object"),
            (
                r#"{"token_type":"Bearer","expires_in":3600}"#,
                "access_token is missing",
            ),
            (
                r#"{"error":"invalid_client"}"#,
                "access_token is missing; the body carries error \"invalid_client\"",
            ),
            (
                r#"{"access_token":"","token_type":"Bearer","expires_in":3600}"#,
                "access_token is empty",
            ),
            (
                r#"{"access_token":42,"token_type":"Bearer","expires_in":3600}"#,
                "access_token is not a string",
            ),
            (
                r#"{"access_token":"a b","token_type":"Bearer","expires_in":3600}"#,
                "visible ASCII",
            ),
            (
                r#"{"access_token":"a\nb","token_type":"Bearer","expires_in":3600}"#,
                "visible ASCII",
            ),
            (
                r#"{"access_token":"t","expires_in":3600}"#,
                "token_type is missing",
            ),
            (
                r#"{"access_token":"t","token_type":"","expires_in":3600}"#,
                "token_type is empty",
            ),
            (
                r#"{"access_token":"t","token_type":1,"expires_in":3600}"#,
                "token_type is not a string",
            ),
            (
                r#"{"access_token":"t","token_type":"DPoP","expires_in":3600}"#,
                "only Bearer",
            ),
            (
                r#"{"access_token":"t","token_type":"Bearer"}"#,
                "expires_in is missing",
            ),
            (
                r#"{"access_token":"t","token_type":"Bearer","expires_in":3600,"scope":["a"]}"#,
                "scope is not a string",
            ),
        ];
        for (body, expected) in cases {
            let detail = detail(parse(body));
            assert!(detail.contains(expected), "{body}: {detail}");
        }
    }

    #[test]
    fn invalid_response_details_never_quote_the_token() {
        let token = "eyJsecret-token-value";
        let bodies = [
            format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":"{token}"}}"#),
            format!(r#"{{"access_token":"{token}","token_type":"{token}","expires_in":3600}}"#),
            format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":0}}"#),
            format!(
                r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600,"scope":{{"a":"{token}"}}}}"#
            ),
            format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600,"#),
        ];
        for body in bodies {
            let error = parse(&body).unwrap_err();
            assert!(!error.to_string().contains(token), "{error}");
            assert!(!format!("{error:?}").contains(token), "{error:?}");
        }
    }

    #[test]
    fn debug_of_response_hides_the_token() {
        let token = parse(
            r#"{"access_token":"eyJtop.secret.sig","token_type":"Bearer","expires_in":3600}"#,
        )
        .unwrap();
        let debug = format!("{token:?}");
        assert!(!debug.contains("eyJtop"), "{debug}");
        assert!(
            debug.contains("[REDACTED]") && debug.contains("3600"),
            "{debug}"
        );
    }

    #[test]
    fn parses_error_bodies() {
        assert_eq!(
            parse_error_body(br#"{"error":"invalid_client","error_description":"Bad creds"}"#),
            ErrorBody {
                code: Some("invalid_client".into()),
                description: Some("Bad creds".into())
            }
        );
        assert_eq!(
            parse_error_body(
                br#"{"id":"1","code":"INVALID_DATA","message":"Invalid scope","details":[]}"#
            ),
            ErrorBody {
                code: Some("INVALID_DATA".into()),
                description: Some("Invalid scope".into())
            }
        );
        assert_eq!(
            parse_error_body(br#"{"error":"invalid_request"}"#).description,
            None
        );
        assert_eq!(
            parse_error_body(b"<html>Bad Gateway</html>"),
            ErrorBody::default()
        );
        assert_eq!(parse_error_body(b"[]"), ErrorBody::default());
        assert_eq!(parse_error_body(br#"{"error":7}"#), ErrorBody::default());
    }

    #[test]
    fn classifies_statuses_and_codes() {
        let body = |code: &str| format!(r#"{{"error":"{code}","error_description":"d"}}"#);
        let reason = |status: u16, body: &str| {
            classify_error_response(status, None, body.as_bytes(), &ctx("secret")).reason()
        };
        assert_eq!(reason(401, &body("invalid_client")), "InvalidClient");
        assert_eq!(reason(400, &body("invalid_client")), "InvalidClient");
        // Without an error body PingOne writes, a 4xx is someone else's page: transient.
        assert_eq!(reason(401, ""), "TokenEndpointError");
        assert_eq!(reason(401, r#"{"code":"UNAUTHORIZED"}"#), "InvalidClient");
        assert_eq!(
            reason(400, &body("unauthorized_client")),
            "UnauthorizedClient"
        );
        assert_eq!(reason(403, "{}"), "TokenEndpointError");
        assert_eq!(
            reason(403, "<html>Access denied</html>"),
            "TokenEndpointError"
        );
        assert_eq!(
            reason(403, r#"{"code":"ACCESS_FAILED"}"#),
            "UnauthorizedClient"
        );
        assert_eq!(reason(400, &body("invalid_scope")), "InvalidScope");
        assert_eq!(reason(400, &body("invalid_request")), "InvalidRequest");
        assert_eq!(
            reason(400, &body("unsupported_grant_type")),
            "InvalidRequest"
        );
        assert_eq!(reason(400, "not json"), "TokenEndpointError");
        assert_eq!(reason(405, ""), "TokenEndpointError");
        assert_eq!(reason(415, &body("x")), "InvalidRequest");
        assert_eq!(reason(404, &body("invalid_client")), "EnvironmentNotFound");
        assert_eq!(reason(404, "<html>Not Found</html>"), "TokenEndpointError");
        assert_eq!(reason(429, ""), "RateLimited");
        for status in [408, 500, 502, 503, 504] {
            let error = classify_error_response(status, None, b"", &ctx(SECRET));
            assert_eq!(error.reason(), "TokenEndpointUnavailable", "{status}");
            assert!(error.is_retryable());
        }
        for status in [301, 302, 307, 308, 501, 505, 199] {
            let error = classify_error_response(status, None, b"", &ctx(SECRET));
            assert_eq!(error.reason(), "TokenEndpointError", "{status}");
            assert!(error.is_retryable());
        }
        for status in [400, 401, 403, 404] {
            assert!(
                classify_error_response(status, None, b"", &ctx(SECRET)).is_retryable(),
                "{status}"
            );
            assert!(
                !classify_error_response(
                    status,
                    None,
                    body("invalid_request").as_bytes(),
                    &ctx(SECRET)
                )
                .is_retryable(),
                "{status}"
            );
        }
    }

    /// A 4xx with an HTML page is not PingOne's: the message says where it came from and
    /// carries the page's title (scrubbed), never PingOne's name as the one who refused.
    #[test]
    fn an_html_4xx_is_said_to_come_from_in_between() {
        let page = format!(
            "{}\n  <!DOCTYPE html>\n<html><head><TITLE>Access denied | {SECRET}</TITLE></head>\
             <body><h1>Sorry, you have been blocked</h1></body></html>",
            '\u{feff}'
        );
        for status in [400, 401, 403, 404, 405] {
            let error = classify_error_response(status, None, page.as_bytes(), &ctx(SECRET));
            assert_eq!(
                error,
                TokenError::NotFromPingOne {
                    status,
                    domain: "auth.pingone.eu".into(),
                    title: Some("Access denied | [redacted]".into()),
                },
                "{status}"
            );
            assert_eq!(error.reason(), "TokenEndpointError");
            assert!(error.is_retryable());
            let message = error.to_string();
            assert!(
                message.contains(
                    "it came from something between the cluster and PingOne (a proxy, WAF or CDN)"
                ),
                "{message}"
            );
            assert!(!message.contains("PingOne rejected"), "{message}");
        }
        // nginx's own error page, without a doctype; a page without a title.
        let nginx = b"<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body></body></html>";
        assert_eq!(
            classify_error_response(403, None, nginx, &ctx(SECRET)),
            TokenError::NotFromPingOne {
                status: 403,
                domain: "auth.pingone.eu".into(),
                title: Some("403 Forbidden".into()),
            }
        );
        assert!(matches!(
            classify_error_response(403, None, b"<html><body>no</body></html>", &ctx(SECRET)),
            TokenError::NotFromPingOne { title: None, .. }
        ));
        // Not HTML, or not a 4xx of this kind: as before.
        for (status, body) in [
            (403, &b"Forbidden"[..]),
            (403, b""),
            (403, b"<error>xml</error>"),
            (429, b"<html><title>Slow down</title></html>"),
            (502, b"<html><title>Bad Gateway</title></html>"),
        ] {
            let error = classify_error_response(status, None, body, &ctx(SECRET));
            assert!(
                !matches!(error, TokenError::NotFromPingOne { .. }),
                "{status} {:?}: {error:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// `invalid_client` (or a 401 with PingOne's body) of a private_key_jwt client speaks of the
    /// key and its key id; the secret methods keep speaking of the secret.
    #[test]
    fn invalid_client_of_a_private_key_names_the_key() {
        let key = |key_id| ErrorContext {
            auth_domain: "auth.pingone.eu",
            environment_id: ENV,
            credential: Credential::PrivateKey { key_id },
            scrub: "the.assertion.jwt",
        };
        let body = br#"{"error":"invalid_client","error_description":"Request denied: Invalid client credentials"}"#;
        for (status, body) in [
            (401, &body[..]),
            (400, body),
            (401, br#"{"code":"UNAUTHORIZED"}"#),
        ] {
            let error = classify_error_response(status, None, body, &key(Some("rsa-1")));
            let TokenError::InvalidClientKey { key_id, .. } = &error else {
                panic!("{status}: {error:?}");
            };
            assert_eq!(key_id.as_deref(), Some("rsa-1"));
            assert_eq!(error.reason(), "InvalidClient");
            assert!(error.needs_person());
            let message = error.to_string();
            assert!(
                message.contains("status.publicJwk") && message.contains("under the key id rsa-1"),
                "{message}"
            );
            assert!(!message.contains("client secret"), "{message}");
        }
        let no_kid = classify_error_response(401, None, body, &key(None));
        assert!(
            matches!(no_kid, TokenError::InvalidClientKey { key_id: None, .. }),
            "{no_kid:?}"
        );
        // Other refusals of a key client are what they were.
        assert_eq!(
            classify_error_response(400, None, br#"{"error":"invalid_scope"}"#, &key(None))
                .reason(),
            "InvalidScope"
        );
        let secret = classify_error_response(401, None, body, &ctx(SECRET));
        assert!(
            matches!(secret, TokenError::InvalidClient { .. }),
            "{secret:?}"
        );
    }

    #[test]
    fn a_404_names_the_environment_and_the_domain() {
        let body = br#"{"code":"NOT_FOUND","message":"The requested resource was not found."}"#;
        let error = classify_error_response(404, None, body, &ctx(SECRET));
        assert_eq!(
            error,
            TokenError::NotFound {
                domain: "auth.pingone.eu".into(),
                environment_id: ENV.into(),
                custom_domain: false,
                code: Some("NOT_FOUND".into()),
                description: Some("The requested resource was not found.".into()),
            }
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("no environment {ENV} at auth.pingone.eu")),
            "{message}"
        );
        let custom = classify_error_response(
            404,
            None,
            body,
            &ErrorContext::secret("login.example.com", ENV, SECRET),
        );
        assert!(
            matches!(&custom, TokenError::NotFound { custom_domain: true, domain, .. } if domain == "login.example.com"),
            "{custom:?}"
        );
        let message = custom.to_string();
        assert!(
            message.contains("login.example.com") && message.contains(ENV),
            "{message}"
        );
    }

    #[test]
    fn platform_error_bodies_fill_code_and_description() {
        let error = classify_error_response(
            400,
            None,
            br#"{"code":"INVALID_DATA","message":"The request could not be completed."}"#,
            &ctx(SECRET),
        );
        assert_eq!(
            error,
            TokenError::InvalidRequest {
                status: 400,
                code: Some("INVALID_DATA".into()),
                description: Some("The request could not be completed.".into()),
            }
        );
        assert!(
            error
                .to_string()
                .contains("HTTP 400, INVALID_DATA: The request could not be completed."),
            "{error}"
        );
    }

    #[test]
    fn error_messages_never_contain_the_secret() {
        let secret = "Sup3r~Secret/Value+=";
        let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let bodies = [
            format!(
                r#"{{"error":"invalid_client","error_description":"secret {secret} is wrong"}}"#
            ),
            format!(
                r#"{{"error":"{secret}","error_description":"echo: client_secret={encoded}"}}"#
            ),
            format!(r#"{{"code":"X","message":"{}{secret}"}}"#, "x".repeat(150)),
        ];
        for status in [400, 401, 403, 404, 429, 500, 302] {
            for body in &bodies {
                let error = classify_error_response(
                    status,
                    Some(Duration::from_secs(1)),
                    body.as_bytes(),
                    &ctx(secret),
                );
                let message = error.to_string();
                assert!(
                    !message.contains(secret) && !message.contains(&encoded),
                    "{message}"
                );
                assert!(!message.contains("Sup3r"), "{message}");
                assert!(!format!("{error:?}").contains(secret));
                assert!(message.contains("[redacted]"), "{message}");
            }
        }
    }

    #[test]
    fn error_descriptions_are_cut_and_cleaned() {
        let body = format!(
            r#"{{"error":"invalid_request","error_description":"line1\nline2\u0000{}"}}"#,
            "y".repeat(500)
        );
        let TokenError::InvalidRequest {
            description: Some(description),
            ..
        } = classify_error_response(400, None, body.as_bytes(), &ctx(SECRET))
        else {
            panic!("wrong variant");
        };
        assert!(description.starts_with("line1 line2 yyy"), "{description}");
        assert_eq!(description.chars().count(), 201);
    }

    #[test]
    fn retry_after_forms() {
        let now = jiff::Timestamp::from_second(1_445_412_480).unwrap(); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Thu, 21 Oct 2055 07:28:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
