//! The admin API under `/__standin/`, for the standalone binary (demo, benchmarks).
//!
//! | method and path | body | effect |
//! | --- | --- | --- |
//! | `GET /__standin/requests` | | recorded token requests ([`RecordedRequest`](super::RecordedRequest) list) |
//! | `DELETE /__standin/requests` | | forget them |
//! | `GET /__standin/stats` | | `{"token_requests","connections","issued_tokens","pending_faults","management_requests","pending_management_faults","held_requests"}` |
//! | `POST /__standin/faults` | [`FaultRequest`] | queue a fault, or set the persistent one |
//! | `DELETE /__standin/faults` | | clear all faults |
//! | `POST /__standin/management-faults` | [`FaultRequest`] (not `persistent`) | queue a fault for the Management API |
//! | `DELETE /__standin/management-faults` | | clear the Management API's faults |
//! | `GET /__standin/management-requests` | | recorded Management API requests ([`RecordedManagementRequest`](super::RecordedManagementRequest) list) |
//! | `POST /__standin/release-held` | | let every held request proceed |
//! | `POST /__standin/clients` | [`ClientSpec`] | register (or replace) a client |
//! | `POST /__standin/environments` | `{"environment_id"}` | make an environment known |
//! | `POST /__standin/custom-domains` | `{"host","environment_id"}` | serve an environment on a custom domain |
//! | `POST /__standin/lifetime` | `{"seconds"}` | default token lifetime |
//! | `POST /__standin/rate-limit` | [`RateLimitSpec`] or `null` | set or clear the rate limit |
//! | `DELETE /__standin/rate-limit` | | clear the rate limit |
//! | `GET /__standin/jwks` | | the JWKS |
//!
//! Changes answer `204 No Content`; bad input `400 {"error": "..."}`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::server::{Resp, json_response};
use super::state::Shared;
use super::{AuthMethod, ClientRegistration, Fault, is_environment_id};

/// A fault in JSON, tagged by `kind`:
/// `{"kind":"status","status":503,"retry_after":7}`, `{"kind":"delay","millis":1500}`,
/// `{"kind":"malformed_json"}`, `{"kind":"missing_field","field":"expires_in"}`,
/// `{"kind":"expires_in","value":0}`, `{"kind":"oversized","bytes":100000}`,
/// `{"kind":"drop_connection"}`, `{"kind":"redirect","location":"https://example.com/"}`,
/// `{"kind":"hold"}`, `{"kind":"hold_after_commit"}`, `{"kind":"drop_after_commit"}`,
/// `{"kind":"status_after_commit","status":502}`, `{"kind":"delay_after_commit","millis":30000}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultSpec {
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    Delay {
        millis: u64,
    },
    MalformedJson,
    MissingField {
        field: String,
    },
    ExpiresIn {
        value: i64,
    },
    Oversized {
        bytes: usize,
    },
    DropConnection,
    Redirect {
        location: String,
    },
    Hold,
    HoldAfterCommit,
    DropAfterCommit,
    StatusAfterCommit {
        status: u16,
    },
    DelayAfterCommit {
        millis: u64,
    },
    OpaqueToken,
    BadSignature,
    UnknownKid,
    ExpSkew {
        seconds: i64,
    },
    GrantOnly {
        scopes: Vec<String>,
    },
}

impl From<FaultSpec> for Fault {
    fn from(spec: FaultSpec) -> Fault {
        match spec {
            FaultSpec::Status {
                status,
                retry_after,
                body,
            } => Fault::Status {
                status,
                retry_after,
                body,
            },
            FaultSpec::Delay { millis } => Fault::Delay(Duration::from_millis(millis)),
            FaultSpec::MalformedJson => Fault::MalformedJson,
            FaultSpec::MissingField { field } => Fault::MissingField(field),
            FaultSpec::ExpiresIn { value } => Fault::ExpiresIn(value),
            FaultSpec::Oversized { bytes } => Fault::Oversized(bytes),
            FaultSpec::DropConnection => Fault::DropConnection,
            FaultSpec::Redirect { location } => Fault::Redirect(location),
            FaultSpec::Hold => Fault::Hold,
            FaultSpec::HoldAfterCommit => Fault::HoldAfterCommit,
            FaultSpec::DropAfterCommit => Fault::DropAfterCommit,
            FaultSpec::StatusAfterCommit { status } => Fault::StatusAfterCommit(status),
            FaultSpec::DelayAfterCommit { millis } => {
                Fault::DelayAfterCommit(Duration::from_millis(millis))
            }
            FaultSpec::OpaqueToken => Fault::OpaqueToken,
            FaultSpec::BadSignature => Fault::BadSignature,
            FaultSpec::UnknownKid => Fault::UnknownKid,
            FaultSpec::ExpSkew { seconds } => Fault::ExpSkew(seconds),
            FaultSpec::GrantOnly { scopes } => Fault::GrantOnly(scopes),
        }
    }
}

impl From<Fault> for FaultSpec {
    fn from(fault: Fault) -> FaultSpec {
        match fault {
            Fault::Status {
                status,
                retry_after,
                body,
            } => FaultSpec::Status {
                status,
                retry_after,
                body,
            },
            Fault::Delay(d) => FaultSpec::Delay {
                millis: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            Fault::MalformedJson => FaultSpec::MalformedJson,
            Fault::MissingField(field) => FaultSpec::MissingField { field },
            Fault::ExpiresIn(value) => FaultSpec::ExpiresIn { value },
            Fault::Oversized(bytes) => FaultSpec::Oversized { bytes },
            Fault::DropConnection => FaultSpec::DropConnection,
            Fault::Redirect(location) => FaultSpec::Redirect { location },
            Fault::Hold => FaultSpec::Hold,
            Fault::HoldAfterCommit => FaultSpec::HoldAfterCommit,
            Fault::DropAfterCommit => FaultSpec::DropAfterCommit,
            Fault::StatusAfterCommit(status) => FaultSpec::StatusAfterCommit { status },
            Fault::DelayAfterCommit(d) => FaultSpec::DelayAfterCommit {
                millis: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            Fault::OpaqueToken => FaultSpec::OpaqueToken,
            Fault::BadSignature => FaultSpec::BadSignature,
            Fault::UnknownKid => FaultSpec::UnknownKid,
            Fault::ExpSkew(seconds) => FaultSpec::ExpSkew { seconds },
            Fault::GrantOnly(scopes) => FaultSpec::GrantOnly { scopes },
        }
    }
}

fn one() -> usize {
    1
}

/// Body of `POST /__standin/faults`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRequest {
    pub fault: FaultSpec,
    /// How many token requests get it (default 1).
    #[serde(default = "one")]
    pub times: usize,
    /// Apply to every token request until cleared, instead of `times`.
    #[serde(default)]
    pub persistent: bool,
}

/// Body of `POST /__standin/clients`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSpec {
    pub environment_id: String,
    pub client_id: String,
    /// Not needed for `private_key_jwt`.
    #[serde(default)]
    pub client_secret: String,
    /// `client_secret_post` (default), `client_secret_basic`, `client_secret_jwt` or
    /// `private_key_jwt`.
    #[serde(default)]
    pub auth_method: AuthMethod,
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_lifetime_secs: Option<u64>,
    /// The public JWKS of a `private_key_jwt` client (required for that method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// Whether the client's tokens may rotate secrets through the Management API.
    #[serde(default)]
    pub can_rotate_secret: bool,
    /// Whether the client's tokens may read other applications' secrets.
    #[serde(default)]
    pub can_read_secrets: bool,
}

impl std::fmt::Debug for ClientSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        ClientRegistration::from(self.clone()).fmt(f)
    }
}

impl From<ClientSpec> for ClientRegistration {
    fn from(spec: ClientSpec) -> ClientRegistration {
        ClientRegistration {
            environment_id: spec.environment_id,
            client_id: spec.client_id,
            client_secret: spec.client_secret,
            auth_method: spec.auth_method,
            allowed_scopes: spec.allowed_scopes,
            token_lifetime: spec.token_lifetime_secs.map(Duration::from_secs),
            jwks: spec.jwks,
            can_rotate_secret: spec.can_rotate_secret,
            can_read_secrets: spec.can_read_secrets,
        }
    }
}

/// Body of `POST /__standin/rate-limit`: at most `requests` per `per_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitSpec {
    pub requests: u32,
    pub per_seconds: u64,
}

#[derive(Deserialize)]
struct EnvironmentSpec {
    environment_id: String,
}

#[derive(Deserialize)]
struct CustomDomainSpec {
    host: String,
    environment_id: String,
}

#[derive(Deserialize)]
struct LifetimeSpec {
    seconds: u64,
}

fn bad_request(message: impl std::fmt::Display) -> Resp {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({ "error": message.to_string() }),
    )
}

fn no_content() -> Resp {
    let mut resp = hyper::Response::new(http_body_util::Full::default());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<Resp>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(bad_request(format!("invalid JSON body: {e}"))))
}

fn check_env(env: &str) -> Result<(), Box<Resp>> {
    if is_environment_id(env) {
        Ok(())
    } else {
        Err(Box::new(bad_request(format!(
            "environment id {env:?} is not a lowercase UUID"
        ))))
    }
}

/// Handles `/__standin/{path}`.
pub(crate) fn handle(shared: &Shared, method: &Method, path: &str, body: &[u8]) -> Resp {
    match route(shared, method, path.trim_end_matches('/'), body) {
        Ok(resp) => resp,
        Err(resp) => *resp,
    }
}

fn route(shared: &Shared, method: &Method, path: &str, body: &[u8]) -> Result<Resp, Box<Resp>> {
    match (method.as_str(), path) {
        ("GET", "requests") => Ok(json_response(StatusCode::OK, &shared.state().requests)),
        ("DELETE", "requests") => {
            let mut state = shared.state();
            state.requests.clear();
            state.issued_tokens.clear();
            Ok(no_content())
        }
        ("GET", "stats") => {
            let state = shared.state();
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "token_requests": state.requests.len(),
                    "connections": shared.connections.load(Ordering::SeqCst),
                    "issued_tokens": state.issued_tokens.len(),
                    "pending_faults": state.faults.iter().map(|(_, n)| n).sum::<usize>(),
                    "persistent_fault": state.persistent_fault.clone().map(FaultSpec::from),
                    "management_requests": state.management_requests.len(),
                    "pending_management_faults":
                        state.management_faults.iter().map(|(_, n)| n).sum::<usize>(),
                    "held_requests": shared.held_requests(),
                }),
            ))
        }
        ("POST", "faults") => {
            let req: FaultRequest = parse(body)?;
            let mut state = shared.state();
            if req.persistent {
                state.persistent_fault = Some(req.fault.into());
            } else {
                state.push_fault(req.fault.into(), req.times);
            }
            Ok(no_content())
        }
        ("DELETE", "faults") => {
            let mut state = shared.state();
            state.faults.clear();
            state.persistent_fault = None;
            Ok(no_content())
        }
        ("POST", "management-faults") => {
            let req: FaultRequest = parse(body)?;
            if req.persistent {
                return Err(Box::new(bad_request(
                    "Management API faults cannot be persistent",
                )));
            }
            shared
                .state()
                .push_management_fault(req.fault.into(), req.times);
            Ok(no_content())
        }
        ("DELETE", "management-faults") => {
            shared.state().management_faults.clear();
            Ok(no_content())
        }
        ("GET", "management-requests") => Ok(json_response(
            StatusCode::OK,
            &shared.state().management_requests,
        )),
        ("POST", "release-held") => {
            shared.release_held();
            Ok(no_content())
        }
        ("POST", "clients") => {
            let spec: ClientSpec = parse(body)?;
            check_env(&spec.environment_id)?;
            if spec.auth_method == AuthMethod::PrivateKeyJwt
                && !spec
                    .jwks
                    .as_ref()
                    .and_then(|j| j.get("keys"))
                    .is_some_and(serde_json::Value::is_array)
            {
                return Err(Box::new(bad_request(
                    "a private_key_jwt client needs a jwks with a keys array",
                )));
            }
            shared.state().add_client(spec.into());
            Ok(no_content())
        }
        ("POST", "environments") => {
            let spec: EnvironmentSpec = parse(body)?;
            check_env(&spec.environment_id)?;
            shared.state().add_environment(&spec.environment_id);
            Ok(no_content())
        }
        ("POST", "custom-domains") => {
            let spec: CustomDomainSpec = parse(body)?;
            check_env(&spec.environment_id)?;
            shared
                .state()
                .add_custom_domain(&spec.host, &spec.environment_id);
            Ok(no_content())
        }
        ("POST", "lifetime") => {
            let spec: LifetimeSpec = parse(body)?;
            shared.state().token_lifetime = Duration::from_secs(spec.seconds);
            Ok(no_content())
        }
        ("POST", "rate-limit") => {
            let spec: Option<RateLimitSpec> = parse(body)?;
            if let Some(RateLimitSpec { per_seconds: 0, .. }) = spec {
                return Err(Box::new(bad_request("per_seconds must be at least 1")));
            }
            shared
                .state()
                .set_rate_limit(spec.map(|s| (s.requests, Duration::from_secs(s.per_seconds))));
            Ok(no_content())
        }
        ("DELETE", "rate-limit") => {
            shared.state().set_rate_limit(None);
            Ok(no_content())
        }
        ("GET", "jwks") => Ok(json_response(StatusCode::OK, &shared.jwks())),
        (
            _,
            "requests"
            | "stats"
            | "faults"
            | "clients"
            | "environments"
            | "custom-domains"
            | "lifetime"
            | "rate-limit"
            | "jwks"
            | "management-faults"
            | "management-requests"
            | "release-held",
        ) => Ok(json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "error": format!("{method} is not supported on /__standin/{path}") }),
        )),
        _ => Ok(json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("no admin resource /__standin/{path}") }),
        )),
    }
}
