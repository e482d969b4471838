//! Near-valid error answers: RFC 6749 §5.2 bodies and PingOne platform bodies with odd values,
//! bodies that echo the client secret, and the HTML pages proxies send with a 4xx; a model of the
//! classification `classify_error_response` documents.

use std::time::Duration;

use proptest::prelude::*;

use crate::json::{self, Json, Spelling};

/// A generated error answer.
#[derive(Clone, Debug)]
pub struct Case {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Body,
    pub secret: String,
}

#[derive(Clone, Debug)]
pub enum Body {
    Json(Json, Spelling),
    /// Not JSON at all: an HTML page, plain text, nothing.
    Text(String),
}

impl Case {
    pub fn bytes(&self) -> Vec<u8> {
        match &self.body {
            Body::Json(doc, spelling) => json::write(doc, spelling),
            Body::Text(text) => text.clone().into_bytes(),
        }
    }
}

/// What the classification must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub reason: &'static str,
    pub retry_after: Option<Duration>,
    /// The code and description the body carries, when they are plain enough to appear in the
    /// message unchanged (printable ASCII, single spaces, short, no secret).
    pub plain_code: Option<String>,
    pub plain_description: Option<String>,
}

/// The fields of a JSON object body: RFC 6749 `error`/`error_description` when `error` is a
/// non-blank string, else PingOne's `code`/`message` (or `error_description`).
fn fields(case: &Case) -> (Option<String>, Option<String>) {
    let Body::Json(doc @ Json::Object(_), spelling) = &case.body else {
        return (None, None);
    };
    if !json::is_json(doc, spelling) {
        return (None, None);
    }
    let text = |key: &str| match doc.get(key) {
        Some(Json::Str(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    };
    match text("error") {
        Some(code) => (Some(code), text("error_description")),
        None => (
            text("code"),
            text("message").or_else(|| text("error_description")),
        ),
    }
}

pub fn expected(case: &Case) -> Expected {
    let (code, description) = fields(case);
    let reason = match (case.status, code.as_deref()) {
        (404, _) => "EnvironmentNotFound",
        (429, _) => "RateLimited",
        (408 | 500 | 502 | 503 | 504, _) => "TokenEndpointUnavailable",
        // The OAuth error code decides; without one the status does.
        (400..=499, Some("invalid_client")) => "InvalidClient",
        (400..=499, Some("unauthorized_client")) => "UnauthorizedClient",
        (400..=499, Some("invalid_scope")) => "InvalidScope",
        (401, _) => "InvalidClient",
        (403, _) => "UnauthorizedClient",
        (400..=499, _) => "InvalidRequest",
        _ => "TokenEndpointError",
    };
    let retry_after = match case.status {
        429 | 408 | 500 | 502 | 503 | 504 => case.retry_after,
        _ => None,
    };
    let encoded: String = form_urlencoded::byte_serialize(case.secret.as_bytes()).collect();
    let plain = |text: Option<String>| {
        text.filter(|t| {
            t.len() <= 100
                && t.bytes().all(|b| (b' '..=b'~').contains(&b))
                && !t.starts_with(' ')
                && !t.ends_with(' ')
                && !t.contains("  ")
                && !t.contains(&case.secret)
                && !t.contains(&encoded)
        })
    };
    Expected {
        reason,
        retry_after,
        plain_code: plain(code),
        plain_description: plain(description),
    }
}

/// Client secrets as PingOne generates them, some with the characters form encoding changes.
fn secret() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[A-Za-z0-9._~-]{16,64}",
        1 => "[A-Za-z0-9+/=]{16,64}",
    ]
    .boxed()
}

/// How a body may quote the secret: raw, form-encoded as the request carried it, broken up by
/// characters a sanitiser removes or turns into spaces, or cut by the length limit.
fn echo(secret: String) -> BoxedStrategy<String> {
    let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let half = secret.len() / 2;
    prop_oneof![
        Just(secret.clone()),
        Just(format!(
            "client_secret={encoded}&grant_type=client_credentials"
        )),
        Just(format!("{}\u{200b}{}", &secret[..half], &secret[half..])),
        Just(format!("{}\u{202e}{}", &secret[..half], &secret[half..])),
        Just(format!("{}\u{feff}{}", &secret[..half], &secret[half..])),
        Just(format!("{}\n{}", &secret[..half], &secret[half..])),
        Just(secret.repeat(3)),
        (150usize..210).prop_map(move |n| format!("{}{secret}", "x".repeat(n))),
    ]
    .boxed()
}

/// Text for a code or a description: plain, odd, huge, or quoting the secret.
fn text(secret: String) -> BoxedStrategy<Json> {
    prop_oneof![
        6 => "[A-Za-z][A-Za-z0-9 ,.:'()_-]{0,60}[a-z.]".prop_map(Json::Str),
        2 => prop::sample::select(vec!["", " ", "\t\n", "\u{a0}", "null"]).prop_map(Json::str),
        2 => ".{0,40}".prop_map(Json::Str),
        1 => "\\PC{0,40}".prop_map(Json::Str),
        1 => "[\\x00-\\x1f\\x7f]{1,10}".prop_map(Json::Str),
        1 => (1usize..5_000).prop_map(|n| Json::Str("y".repeat(n))),
        3 => echo(secret).prop_map(Json::Str),
        2 => prop_oneof![
            Just(Json::Null),
            any::<i32>().prop_map(Json::int),
            Just(Json::Array(vec![Json::str("invalid_client")])),
            Just(Json::object([("code", Json::str("invalid_client"))])),
        ],
    ]
    .boxed()
}

fn code(secret: String) -> BoxedStrategy<Json> {
    prop_oneof![
        8 => prop::sample::select(vec![
            "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
            "unsupported_grant_type", "invalid_scope", "access_denied", "server_error",
            "temporarily_unavailable",
        ])
        .prop_map(Json::str),
        2 => prop::sample::select(vec![
            "INVALID_CLIENT", "Invalid_Client", " invalid_client", "invalid_client ",
            "invalid_client\n", "invalid_client\u{0}", "invalid-client", "invalid_clientx",
            "invalid_\u{200b}client", "unauthorized_client\t", "INVALID_DATA", "UNAUTHORIZED",
        ])
        .prop_map(Json::str),
        4 => text(secret),
    ]
    .boxed()
}

/// A member that may be missing.
fn maybe(
    key: &'static str,
    value: impl Strategy<Value = Json> + 'static,
) -> BoxedStrategy<Vec<(String, Json)>> {
    prop::option::weighted(0.8, value)
        .prop_map(move |v| v.into_iter().map(|v| (key.to_string(), v)).collect())
        .boxed()
}

fn rfc6749(secret: String) -> BoxedStrategy<Json> {
    (
        maybe("error", code(secret.clone())),
        maybe("error_description", text(secret.clone())),
        maybe("error_uri", text(secret)),
        prop::collection::vec(("[a-z_]{1,10}", json::any_value()), 0..2),
    )
        .prop_map(|(a, b, c, d)| Json::Object([a, b, c, d].concat()))
        .boxed()
}

fn platform(secret: String) -> BoxedStrategy<Json> {
    (
        maybe("code", code(secret.clone())),
        maybe("message", text(secret.clone())),
        maybe("error_description", text(secret.clone())),
        maybe(
            "details",
            text(secret).prop_map(|t| Json::Array(vec![Json::object([("message", t)])])),
        ),
    )
        .prop_map(|(a, b, c, d)| {
            let id = (
                "id".to_string(),
                Json::str("c8d4f0a4-7b3e-4c2a-9e1f-0a1b2c3d4e5f"),
            );
            Json::Object([vec![id], a, b, c, d].concat())
        })
        .boxed()
}

/// What a proxy, a WAF or a load balancer sends instead of PingOne's JSON.
fn page(secret: String) -> BoxedStrategy<String> {
    let title = prop::sample::select(vec![
        "400 Bad Request",
        "401 Unauthorized",
        "403 Forbidden",
        "404 Not Found",
        "413 Request Entity Too Large",
        "429 Too Many Requests",
        "502 Bad Gateway",
    ]);
    prop_oneof![
        (title, prop::bool::ANY).prop_map(move |(t, quote)| format!(
            "<!DOCTYPE html>\n<html><head><title>{t}</title></head><body><center><h1>{t}</h1>\
             </center>{}<hr><center>nginx</center></body></html>\n",
            if quote {
                format!("<!-- client_secret={secret} -->")
            } else {
                String::new()
            }
        )),
        Just(String::new()),
        ".{0,80}",
        Just("Bad Request".to_string()),
        Just("{\"error\":\"invalid_client\"".to_string()),
        Just("[{\"error\":\"invalid_client\"}]".to_string()),
        Just("\"invalid_client\"".to_string()),
    ]
    .boxed()
}

pub fn case() -> BoxedStrategy<Case> {
    let status = prop_oneof![
        10 => prop::sample::select(vec![
            400u16, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 451, 500, 501, 502, 503,
            504, 505, 301, 302, 307, 308, 304, 204, 101,
        ]),
        1 => 100u16..600,
    ];
    let retry_after = prop::option::of(prop_oneof![
        Just(Duration::ZERO),
        (0u64..100_000).prop_map(Duration::from_secs),
    ]);
    (status, retry_after, secret()).prop_flat_map(|(status, retry_after, secret)| {
        let body = prop_oneof![
            6 => (rfc6749(secret.clone()), json::spelling()).prop_map(|(d, s)| Body::Json(d, s)),
            2 => (platform(secret.clone()), json::spelling()).prop_map(|(d, s)| Body::Json(d, s)),
            1 => rfc6749(secret.clone()).prop_map(|d| Body::Json(json::nest(d, 1), Spelling::PLAIN)),
            3 => page(secret.clone()).prop_map(Body::Text),
        ];
        body.prop_map(move |body| Case {
            status,
            retry_after,
            body,
            secret: secret.clone(),
        })
    }).boxed()
}
