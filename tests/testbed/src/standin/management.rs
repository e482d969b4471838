//! The Management API's application secret: rotation,
//! `POST /v1/environments/{envId}/applications/{appId}/secret`, and reading it, `GET` on the
//! same path (on any host; PingOne's are `api.pingone.{region}`).
//!
//! `GET` needs a caller allowed to read application secrets, never the application itself
//! ([`read_secret`]). A `POST` is evaluated in this order: method (`POST` or `GET`, else 405), the next Management API
//! fault, the bearer token (401 `ACCESS_FAILED` unless it is an unexpired access token of this
//! stand-in for the path's environment, requested without a scope), the caller's permission
//! (403 unless its client may rotate secrets), the application (404), the body (400
//! `INVALID_DATA`), then the rotation is committed.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rand::Rng;
use serde_json::{Map, Value, json};

use super::server::{
    BodyError, Ctx, Dropped, Resp, json_response, method_not_allowed, no_store, oversized_body,
    platform_error, random_uuid, raw_response, read_body, retry_after, rewrite_success, too_large,
};
use super::state::Shared;
use super::{Fault, RecordedManagementRequest};

/// The shortest retention of a previous secret PingOne accepts.
const MIN_RETENTION: Duration = Duration::from_secs(60);
/// The longest.
const MAX_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The characters of a generated secret.
const SECRET_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

const ACCESS_FAILED_MESSAGE: &str =
    "The request could not be completed. You do not have access to this resource.";

/// Handles one request to the secret resource of application `app` in environment `env`.
pub(crate) async fn secret_endpoint(
    shared: &Shared,
    ctx: &Ctx,
    path: &str,
    env: &str,
    app: &str,
    req: Request<Incoming>,
) -> Result<Resp, Dropped> {
    let mut record = RecordedManagementRequest {
        time: SystemTime::now(),
        method: req.method().to_string(),
        host: ctx.host.clone(),
        path: path.to_owned(),
        environment_id: env.to_owned(),
        application_id: app.to_owned(),
        caller_client_id: None,
        status: 0,
        fault: None,
        rotated: false,
    };
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(body) => Some(body),
        Err(BodyError::TooLarge) => None,
        Err(BodyError::Io) => return Err(Dropped),
    };
    let (resp, after) = match (&parts.method, body) {
        (&Method::GET, _) => (
            read_secret(shared, env, app, &parts.headers, &mut record),
            After::Answer,
        ),
        (method, _) if method != Method::POST => (method_not_allowed("GET, POST"), After::Answer),
        (_, None) => (too_large(), After::Answer),
        (_, Some(body)) => {
            let fault = shared.state().take_management_fault();
            record.fault = fault.as_ref().map(Fault::name);
            // What happens once the rotation is committed (and recorded).
            let after = match &fault {
                Some(Fault::HoldAfterCommit) => After::Park,
                Some(Fault::DropAfterCommit) => After::Drop,
                Some(Fault::DelayAfterCommit(d)) => After::Sleep(*d),
                _ => After::Answer,
            };
            let request = Rotation {
                shared,
                env,
                app,
                headers: &parts.headers,
                body: &body,
            };
            let resp = match fault {
                // Token-shape faults mean nothing here: a normal answer.
                None
                | Some(
                    Fault::ExpiresIn(_)
                    | Fault::OpaqueToken
                    | Fault::BadSignature
                    | Fault::UnknownKid
                    | Fault::ExpSkew(_)
                    | Fault::GrantOnly(_),
                ) => request.run(&mut record),
                Some(Fault::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    request.run(&mut record)
                }
                Some(Fault::Hold) => {
                    shared.park().await;
                    request.run(&mut record)
                }
                // Committed; the answer is held, lost or late (see `after`).
                Some(
                    Fault::HoldAfterCommit | Fault::DropAfterCommit | Fault::DelayAfterCommit(_),
                ) => request.run(&mut record),
                // Committed; a gateway's error replaces the answer.
                Some(Fault::StatusAfterCommit(status)) => {
                    let _ = request.run(&mut record);
                    status_fault(status, None, None)
                }
                Some(Fault::MissingField(field)) => {
                    rewrite_success(request.run(&mut record), |body| {
                        body.remove(&field);
                    })
                }
                Some(Fault::DropConnection) => {
                    shared.state().management_requests.push(record);
                    return Err(Dropped);
                }
                Some(Fault::Status {
                    status,
                    retry_after: retry,
                    body,
                }) => status_fault(status, retry, body),
                // The faults below answer without committing anything.
                Some(Fault::MalformedJson) => no_store(raw_response(
                    StatusCode::OK,
                    "application/json;charset=UTF-8",
                    Bytes::from_static(b"{\"environment\":{\"id\":\"cd91070f-c3"),
                )),
                Some(Fault::Oversized(n)) => no_store(raw_response(
                    StatusCode::OK,
                    "application/json;charset=UTF-8",
                    oversized_body(n),
                )),
                Some(Fault::Redirect(location)) => match HeaderValue::from_str(&location) {
                    Ok(location) => {
                        let mut resp = raw_response(StatusCode::FOUND, "text/plain", Bytes::new());
                        resp.headers_mut().insert(header::LOCATION, location);
                        resp
                    }
                    Err(_) => status_fault(500, None, None),
                },
            };
            (resp, after)
        }
    };
    // Recorded before the answer is held, delayed or dropped: the rotation is committed even
    // when the caller goes away meanwhile (its connection closed, its process killed).
    record.status = match after {
        After::Drop => 0,
        _ => resp.status().as_u16(),
    };
    shared.state().management_requests.push(record);
    match after {
        After::Answer => {}
        After::Park => shared.park().await,
        After::Sleep(d) => tokio::time::sleep(d).await,
        After::Drop => return Err(Dropped),
    }
    Ok(resp)
}

/// `GET …/applications/{app}/secret`: the application's current secret and the previous one
/// while it is accepted, for a caller whose token may read application secrets
/// (`applications:read:secret`, [`super::ClientRegistration::with_secret_read`]). A worker
/// cannot read its own secret: PingOne's roles never grant an application access to itself.
fn read_secret(
    shared: &Shared,
    env: &str,
    app: &str,
    headers: &HeaderMap,
    record: &mut RecordedManagementRequest,
) -> Resp {
    let now = SystemTime::now();
    let caller = match platform_caller(shared, headers, env, record) {
        Ok(caller) => caller,
        Err(resp) => return *resp,
    };
    let caller = caller.as_str();
    let state = shared.state();
    let allowed = caller != app
        && state
            .client(env, caller)
            .is_some_and(|c| c.can_read_secrets);
    if !allowed {
        return forbidden();
    }
    let Some(client) = state.client(env, app) else {
        return platform_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource was not found.",
        );
    };
    let mut body = Map::new();
    body.insert("environment".into(), json!({ "id": env }));
    body.insert(
        "secret".into(),
        Value::from(client.current_secret().unwrap_or_default()),
    );
    if let Some((previous, until)) = client.previous_secret(now) {
        body.insert(
            "previous".into(),
            json!({ "secret": previous, "expiresAt": format!("{:.3}", jiff::Timestamp::try_from(until).unwrap_or_default()) }),
        );
    }
    no_store(json_response(StatusCode::OK, &Value::Object(body)))
}

/// What the endpoint does between committing a rotation and answering.
enum After {
    Answer,
    Park,
    Sleep(Duration),
    Drop,
}

/// One rotation request, ready to be checked and committed.
struct Rotation<'a> {
    shared: &'a Shared,
    env: &'a str,
    app: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl Rotation<'_> {
    /// Checks and commits.
    fn run(&self, record: &mut RecordedManagementRequest) -> Resp {
        match self.commit(record) {
            Ok(body) => no_store(json_response(StatusCode::OK, &body)),
            Err(resp) => *resp,
        }
    }

    fn commit(&self, record: &mut RecordedManagementRequest) -> Result<Value, Box<Resp>> {
        let now = SystemTime::now();
        let caller = platform_caller(self.shared, self.headers, self.env, record)?;
        let caller = caller.as_str();

        let mut state = self.shared.state();
        if !state
            .client(self.env, caller)
            .is_some_and(|c| c.can_rotate_secret)
        {
            return Err(Box::new(forbidden()));
        }
        if state.client(self.env, self.app).is_none() {
            return Err(Box::new(platform_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource was not found.",
            )));
        }
        let keep_until =
            retention(self.body, now).map_err(|message| Box::new(invalid_data(message)))?;
        let Some(client) = state.client_mut(self.env, self.app) else {
            return Err(Box::new(super::server::not_found()));
        };
        let new = generate_secret();
        let old = client.current_secret().map(str::to_owned);
        client.rotate(new.clone(), keep_until.map(SystemTime::from));
        record.rotated = true;

        let mut body = Map::new();
        body.insert("environment".into(), json!({ "id": self.env }));
        body.insert("secret".into(), Value::from(new));
        if let (Some(old), Some(until)) = (old, keep_until) {
            body.insert(
                "previous".into(),
                json!({ "secret": old, "expiresAt": format!("{until:.3}") }),
            );
        }
        Ok(Value::Object(body))
    }
}

/// The client id of the caller of a Management API request (recorded), when its bearer token
/// is an unexpired access token of this stand-in for `env`, requested without a scope (a token
/// for a custom resource's scopes has that resource as its audience); else 401 `ACCESS_FAILED`.
fn platform_caller(
    shared: &Shared,
    headers: &HeaderMap,
    env: &str,
    record: &mut RecordedManagementRequest,
) -> Result<String, Box<Resp>> {
    let claims = bearer_token(headers)
        .and_then(|token| shared.verify(token).ok())
        .ok_or_else(access_failed)?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    record.caller_client_id = text("client_id").map(str::to_owned);
    let unexpired = claims
        .get("exp")
        .and_then(Value::as_u64)
        .is_some_and(|exp| exp > super::server::epoch_secs(SystemTime::now()) as u64);
    let for_platform = claims
        .get("scope")
        .is_none_or(|scope| scope.as_str() == Some(""));
    match record.caller_client_id.clone() {
        Some(caller) if unexpired && for_platform && text("env") == Some(env) => Ok(caller),
        _ => Err(access_failed()),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// When the previous secret stops working, from the body: `None` without `previous` (the old
/// secret stops at once). Rounded down to milliseconds, the precision of the answer.
fn retention(body: &[u8], now: SystemTime) -> Result<Option<jiff::Timestamp>, &'static str> {
    const MALFORMED: &str = "The request body must be a JSON object.";
    const EXPIRES_AT: &str = "previous.expiresAt must be an RFC 3339 date-time.";
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let previous = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut body)) => body.remove("previous"),
        Ok(Value::Null) => None,
        _ => return Err(MALFORMED),
    };
    let previous = match previous {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(previous)) => previous,
        Some(_) => return Err(EXPIRES_AT),
    };
    let until: jiff::Timestamp = previous
        .get("expiresAt")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or(EXPIRES_AT)?;
    let until =
        jiff::Timestamp::from_millisecond(until.as_millisecond()).map_err(|_| EXPIRES_AT)?;
    let until_time = SystemTime::from(until);
    if until_time < now + MIN_RETENTION || until_time > now + MAX_RETENTION {
        return Err("previous.expiresAt must be between 1 minute and 30 days from now.");
    }
    Ok(Some(until))
}

/// 64 to 80 characters of `a-zA-Z0-9-._~`, as PingOne generates them.
fn generate_secret() -> String {
    let mut rng = rand::thread_rng();
    let len = rng.gen_range(64..=80);
    (0..len)
        .map(|_| char::from(SECRET_ALPHABET[rng.gen_range(0..SECRET_ALPHABET.len())]))
        .collect()
}

fn access_failed() -> Box<Resp> {
    let mut resp = platform_error(
        StatusCode::UNAUTHORIZED,
        "ACCESS_FAILED",
        ACCESS_FAILED_MESSAGE,
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"PingOne\""),
    );
    Box::new(resp)
}

fn forbidden() -> Resp {
    json_response(
        StatusCode::FORBIDDEN,
        &json!({
            "id": random_uuid(),
            "code": "ACCESS_FAILED",
            "message": ACCESS_FAILED_MESSAGE,
            "details": [{
                "code": "INSUFFICIENT_PERMISSIONS",
                "message": "The actor does not have the permissions needed to update this application's secret.",
            }],
        }),
    )
}

fn invalid_data(message: &str) -> Resp {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({
            "id": random_uuid(),
            "code": "INVALID_DATA",
            "message": "The request could not be completed. One or more validation errors were in the request.",
            "details": [{
                "code": "INVALID_VALUE",
                "target": "previous.expiresAt",
                "message": message,
            }],
        }),
    )
}

/// The answer to a [`Fault::Status`]: the given body, or PingOne's platform error that fits.
fn status_fault(status: u16, retry: Option<u64>, body: Option<String>) -> Resp {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let resp = match body {
        Some(body) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = code;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            resp
        }
        None => {
            let (error, message) = match code.as_u16() {
                400 => (
                    "INVALID_REQUEST",
                    "The request could not be completed. The request was malformed or invalid.",
                ),
                401 | 403 => ("ACCESS_FAILED", ACCESS_FAILED_MESSAGE),
                404 => ("NOT_FOUND", "The requested resource was not found."),
                429 => (
                    "REQUEST_LIMITED",
                    "The request could not be completed. Too many requests were sent.",
                ),
                503 => (
                    "SERVICE_UNAVAILABLE",
                    "The service is temporarily unavailable. Try again later.",
                ),
                _ => ("UNEXPECTED_ERROR", "An unexpected error occurred."),
            };
            platform_error(code, error, message)
        }
    };
    match retry {
        Some(secs) => retry_after(resp, secs),
        None => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_fit_pingone_s_alphabet_and_length() {
        for _ in 0..50 {
            let secret = generate_secret();
            assert!((64..=80).contains(&secret.len()), "{}", secret.len());
            assert!(secret.bytes().all(|b| SECRET_ALPHABET.contains(&b)));
        }
        assert_ne!(generate_secret(), generate_secret());
    }

    #[test]
    fn retention_bounds_and_formats() {
        let now = SystemTime::now();
        let at = |d: Duration| {
            let ts = jiff::Timestamp::try_from(now + d).expect("timestamp");
            format!(r#"{{"previous":{{"expiresAt":"{ts}"}}}}"#)
        };
        assert_eq!(retention(b"", now), Ok(None));
        assert_eq!(retention(b"{}", now), Ok(None));
        assert_eq!(retention(br#"{"previous":null}"#, now), Ok(None));
        assert!(retention(at(Duration::from_secs(61)).as_bytes(), now).is_ok_and(|t| t.is_some()));
        assert!(retention(at(Duration::from_secs(59)).as_bytes(), now).is_err());
        assert!(retention(at(MAX_RETENTION).as_bytes(), now).is_ok());
        assert!(retention(at(MAX_RETENTION + Duration::from_secs(1)).as_bytes(), now).is_err());
        assert!(retention(br#"{"previous":{"expiresAt":"tomorrow"}}"#, now).is_err());
        assert!(retention(br#"{"previous":{}}"#, now).is_err());
        assert!(retention(b"[]", now).is_err());
        let ts: jiff::Timestamp = "2030-01-02T03:04:05.678901Z".parse().expect("ts");
        let ms = jiff::Timestamp::from_millisecond(ts.as_millisecond()).expect("ms");
        assert_eq!(format!("{ms:.3}"), "2030-01-02T03:04:05.678Z");
    }
}
