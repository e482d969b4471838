//! Seeing the token: a JWT access token is verified against its environment's `/as/jwks`
//! (cached per environment, refetched for an unknown `kid` at most once a minute) and its
//! claims are read. Opaque tokens are accepted as they are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;

use super::client::TokenClient;
use super::domain::{is_regional, normalize_domain};

/// A JWKS is fetched again for an unknown `kid` at most this often.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(60);

/// The claims of a verified access token that status shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// `iss`.
    pub issuer: Option<String>,
    /// `aud` (a string or a list).
    pub audience: Vec<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `scope`, split on spaces.
    pub scopes: Vec<String>,
    /// PingOne's `env` claim.
    pub environment_id: Option<String>,
    /// `exp` (Unix seconds).
    pub expires_at: Option<i64>,
    /// `iat` (Unix seconds).
    pub issued_at: Option<i64>,
}

/// What the verification found.
#[derive(Clone, Debug, PartialEq)]
pub enum Verification {
    /// Not a JWT: nothing to verify.
    Opaque,
    /// Signed by a key of the environment's JWKS.
    Verified {
        /// Its claims.
        claims: Claims,
        /// The key's id.
        kid: Option<String>,
    },
    /// Not signed by any key of the environment's JWKS, or not in a form that can be.
    Invalid {
        /// Stable CamelCase reason.
        reason: &'static str,
        /// What is wrong (never the token).
        message: String,
    },
    /// The JWKS could not be had; the token could not be checked.
    Unavailable {
        /// Why.
        message: String,
    },
}

/// Reason: the signature does not verify with the key the token names.
pub const REASON_SIGNATURE_INVALID: &str = "TokenSignatureInvalid";
/// Reason: the token names a key the environment's JWKS does not have.
pub const REASON_KEY_UNKNOWN: &str = "TokenKeyUnknown";
/// Reason: the JWKS could not be fetched.
pub const REASON_JWKS_UNAVAILABLE: &str = "JwksUnavailable";

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    #[serde(default)]
    aud: Option<OneOrMany>,
    client_id: Option<String>,
    scope: Option<String>,
    env: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<RawClaims> for Claims {
    fn from(raw: RawClaims) -> Self {
        Claims {
            issuer: raw.iss,
            audience: match raw.aud {
                Some(OneOrMany::One(a)) => vec![a],
                Some(OneOrMany::Many(a)) => a,
                None => Vec::new(),
            },
            client_id: raw.client_id,
            scopes: raw
                .scope
                .unwrap_or_default()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            environment_id: raw.env,
            expires_at: raw.exp,
            issued_at: raw.iat,
        }
    }
}

struct Entry {
    keys: Arc<JwkSet>,
    /// When the keys were fetched, or when the last attempt was, failed or not.
    fetched: Instant,
    /// Why the last attempt failed, while no keys were ever had.
    failed: Option<String>,
}

/// The JWKS of each environment, shared by every connection.
pub struct JwksCache {
    /// Per JWKS URL.
    entries: Mutex<HashMap<String, Arc<Slot>>>,
    min_refetch: Duration,
}

/// One JWKS: the keys, read under a short lock, and the one fetch in flight.
#[derive(Default)]
struct Slot {
    entry: Mutex<Option<Entry>>,
    /// Held for the length of a fetch: a verification that needs a fetch while another runs
    /// uses the cached keys when they have the token's key, and waits for that fetch only when
    /// it has nothing to verify with.
    fetch: tokio::sync::Mutex<()>,
}

impl Slot {
    /// The cached keys, whether they have the token's key, their age, and the failure of a
    /// JWKS never had.
    fn cached(
        &self,
        has_kid: impl Fn(&JwkSet) -> bool,
    ) -> Option<(Arc<JwkSet>, bool, Duration, Option<String>)> {
        let entry = self.entry.lock().unwrap_or_else(|e| e.into_inner());
        entry.as_ref().map(|e| {
            (
                e.keys.clone(),
                has_kid(&e.keys),
                e.fetched.elapsed(),
                e.failed.clone(),
            )
        })
    }
}

impl Slot {
    /// Keeps what a fetch brought: `true` when keys came.
    fn store(&self, fetched: Result<JwkSet, String>) -> bool {
        let mut entry = self.entry.lock().unwrap_or_else(|e| e.into_inner());
        match fetched {
            Ok(keys) => {
                *entry = Some(Entry {
                    keys: Arc::new(keys),
                    fetched: Instant::now(),
                    failed: None,
                });
                true
            }
            Err(message) => {
                match entry.as_mut() {
                    // Keep the keys we had (the token may still be signed by one of them), and
                    // count the attempt: no other verification tries again before the
                    // interval is over.
                    Some(e) if e.failed.is_none() => {
                        tracing::debug!(%message, "refetching the JWKS failed");
                        e.fetched = Instant::now();
                    }
                    // Never had keys: remember the failure, so that the connections of the
                    // environment do not each try again before the interval is over.
                    _ => {
                        *entry = Some(Entry {
                            keys: Arc::default(),
                            fetched: Instant::now(),
                            failed: Some(message),
                        });
                    }
                }
                false
            }
        }
    }
}

impl JwksCache {
    /// An empty cache that refetches a JWKS for an unknown `kid` at most every `min_refetch`.
    pub fn new(min_refetch: Duration) -> Self {
        JwksCache {
            entries: Mutex::default(),
            min_refetch,
        }
    }
}

/// Keys fetched this long ago are fetched again even when they verify the token: a key
/// PingOne withdrew stops verifying within a day.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Whether to fetch the JWKS: never fetched; or it lacks the token's key and was fetched (or
/// tried) at least `min_refetch` ago; or its keys are older than [`JWKS_MAX_AGE`].
fn should_fetch(cached: Option<(bool, Duration)>, min_refetch: Duration) -> bool {
    match cached {
        None => true,
        Some((has_key, age)) => (!has_key && age >= min_refetch) || age >= JWKS_MAX_AGE,
    }
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache").finish_non_exhaustive()
    }
}

/// The JWKS URL of an environment: `https://{domain}/{env}/as/jwks` for a regional domain,
/// `https://{domain}/as/jwks` for a custom one.
pub fn jwks_url(auth_domain: &str, environment_id: &str) -> Option<String> {
    let domain = normalize_domain(auth_domain).ok()?;
    Some(if is_regional(&domain) {
        format!("https://{domain}/{environment_id}/as/jwks")
    } else {
        format!("https://{domain}/as/jwks")
    })
}

/// The `iss` PingOne writes in tokens of an environment.
pub fn expected_issuer(auth_domain: &str, environment_id: &str) -> Option<String> {
    let domain = normalize_domain(auth_domain).ok()?;
    Some(if is_regional(&domain) {
        format!("https://{domain}/{environment_id}/as")
    } else {
        format!("https://{domain}/as")
    })
}

/// The header of a compact JWS, or `None` for anything else (an opaque token).
fn jwt_header(token: &str) -> Option<jsonwebtoken::Header> {
    if token.split('.').count() != 3 {
        return None;
    }
    jsonwebtoken::decode_header(token).ok()
}

impl JwksCache {
    fn slot(&self, url: &str) -> Arc<Slot> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(url.to_string())
            .or_default()
            .clone()
    }
}

impl TokenClient {
    /// The shortest interval between two fetches of one JWKS: also the first wait before a
    /// token that could not be checked is checked again.
    pub fn jwks_min_refetch(&self) -> Duration {
        self.jwks_cache().min_refetch
    }

    /// Fetches the JWKS of an environment now (after any fetch in flight) and caches what
    /// came: `true` when keys came. What rechecks an environment whose JWKS was unreachable.
    pub async fn refresh_jwks(&self, auth_domain: &str, environment_id: &str) -> bool {
        if self.policy().check(auth_domain).is_err() {
            return false;
        }
        let Some(url) = jwks_url(auth_domain, environment_id) else {
            return false;
        };
        let slot = self.jwks_cache().slot(&url);
        let _fetching = slot.fetch.lock().await;
        slot.store(self.fetch_jwks(&url).await)
    }

    /// Verifies `token` against the JWKS of its environment. The auth domain must be one the
    /// policy allows (it was just used for the token).
    pub async fn verify_token(
        &self,
        auth_domain: &str,
        environment_id: &str,
        token: &str,
    ) -> Verification {
        let Some(header) = jwt_header(token) else {
            return Verification::Opaque;
        };
        super::jose::install();
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ) {
            return Verification::Invalid {
                reason: REASON_SIGNATURE_INVALID,
                message: format!(
                    "the token is signed with {:?}, not with a public-key algorithm",
                    header.alg
                ),
            };
        }
        if self.policy().check(auth_domain).is_err() {
            return Verification::Unavailable {
                message: format!("{auth_domain} is not an allowed auth domain"),
            };
        }
        let Some(url) = jwks_url(auth_domain, environment_id) else {
            return Verification::Unavailable {
                message: format!("no JWKS URL for {auth_domain}"),
            };
        };
        let slot = self.jwks_cache().slot(&url);
        let kid = header.kid.clone();
        let has_kid = |keys: &JwkSet| match &kid {
            Some(k) => keys.find(k).is_some(),
            None => !keys.keys.is_empty(),
        };
        let min_refetch = self.jwks_cache().min_refetch;
        let mut cached = slot.cached(has_kid);
        let due = |c: &Option<(Arc<JwkSet>, bool, Duration, Option<String>)>| {
            should_fetch(c.as_ref().map(|c| (c.1, c.2)), min_refetch)
        };
        if due(&cached) {
            let fetching = match slot.fetch.try_lock() {
                Ok(guard) => Some(guard),
                // Another verification is fetching: use the cached keys if they will do,
                // else wait for that fetch and take what it brought.
                Err(_) if cached.as_ref().is_some_and(|c| c.1) => None,
                Err(_) => {
                    drop(slot.fetch.lock().await);
                    cached = slot.cached(has_kid);
                    None
                }
            };
            // Holding the fetch: unless one just finished meanwhile, fetch (with no lock on
            // the keys, which other verifications go on reading).
            if let Some(_guard) = fetching {
                cached = slot.cached(has_kid);
                if due(&cached) {
                    slot.store(self.fetch_jwks(&url).await);
                    cached = slot.cached(has_kid);
                }
            }
        }
        let Some((keys, _, _, failed)) = cached else {
            return Verification::Unavailable {
                message: "the JWKS could not be fetched".into(),
            };
        };
        if let Some(message) = failed {
            return Verification::Unavailable { message };
        }
        let jwk = match &kid {
            Some(k) => keys.find(k),
            None if keys.keys.len() == 1 => keys.keys.first(),
            None => None,
        };
        let Some(jwk) = jwk else {
            return Verification::Invalid {
                reason: REASON_KEY_UNKNOWN,
                message: match &kid {
                    Some(k) => format!("the environment's JWKS has no key {k:?}"),
                    None => "the token names no key (kid) and the JWKS has several".into(),
                },
            };
        };
        let key = match DecodingKey::from_jwk(jwk) {
            Ok(key) => key,
            Err(e) => {
                return Verification::Invalid {
                    reason: REASON_KEY_UNKNOWN,
                    message: format!("the JWKS key {kid:?} is unusable: {e}"),
                };
            }
        };
        let mut validation = Validation::new(header.alg);
        // Only the signature: times, audience and issuer are compared by the caller, who
        // reports them rather than rejecting the token.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        match jsonwebtoken::decode::<RawClaims>(token, &key, &validation) {
            Ok(data) => Verification::Verified {
                claims: data.claims.into(),
                kid,
            },
            Err(e) => Verification::Invalid {
                reason: REASON_SIGNATURE_INVALID,
                message: match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => format!(
                        "the signature does not verify with key {} of the environment's JWKS",
                        kid.as_deref().unwrap_or("(none)")
                    ),
                    other => format!("the token could not be verified: {other:?}"),
                },
            },
        }
    }

    async fn fetch_jwks(&self, url: &str) -> Result<JwkSet, String> {
        let host = url
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut response =
            self.http().get(url).send().await.map_err(|e| {
                format!("fetching the JWKS: {}", self.describe_transport(&host, &e))
            })?;
        let status = response.status();
        let body = self
            .read_capped(&mut response)
            .await
            .map_err(|e| format!("reading the JWKS: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "the JWKS endpoint answered HTTP {}",
                status.as_u16()
            ));
        }
        serde_json::from_slice::<JwkSet>(&body).map_err(|e| format!("the JWKS is not valid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "cd91070f-c371-480e-80b2-753c735f8aa1";

    #[test]
    fn urls_and_issuers_follow_the_domain_form() {
        assert_eq!(
            jwks_url("auth.pingone.eu", ENV).unwrap(),
            format!("https://auth.pingone.eu/{ENV}/as/jwks")
        );
        assert_eq!(
            jwks_url("login.example.com", ENV).unwrap(),
            "https://login.example.com/as/jwks"
        );
        assert_eq!(
            expected_issuer("auth.pingone.com", ENV).unwrap(),
            format!("https://auth.pingone.com/{ENV}/as")
        );
    }

    #[test]
    fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let min = JWKS_MIN_REFETCH;
        assert!(should_fetch(None, min), "first use");
        assert!(
            !should_fetch(Some((true, Duration::from_secs(86_399))), min),
            "key known"
        );
        assert!(
            should_fetch(Some((true, Duration::from_secs(86_400))), min),
            "keys a day old are fetched again"
        );
        assert!(
            !should_fetch(Some((false, Duration::from_secs(59))), min),
            "too soon"
        );
        assert!(
            should_fetch(Some((false, Duration::from_secs(60))), min),
            "a minute on"
        );
    }

    #[test]
    fn only_compact_jws_tokens_are_jwts() {
        assert!(jwt_header("opaque-token-value").is_none());
        assert!(jwt_header("a.b").is_none());
        assert!(jwt_header("not.base64!.x").is_none());
        // {"alg":"RS256","kid":"k1"}
        let header = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0";
        let h = jwt_header(&format!("{header}.e30.c2ln")).unwrap();
        assert_eq!(h.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn claims_take_a_string_or_a_list_audience_and_split_scopes() {
        let raw: RawClaims = serde_json::from_value(serde_json::json!({
            "iss": "i", "aud": "a", "client_id": "c", "scope": "x  y", "env": "e", "exp": 5
        }))
        .unwrap();
        let c = Claims::from(raw);
        assert_eq!(c.audience, ["a"]);
        assert_eq!(c.scopes, ["x", "y"]);
        let raw: RawClaims =
            serde_json::from_value(serde_json::json!({"aud": ["a", "b"]})).unwrap();
        assert_eq!(Claims::from(raw).audience, ["a", "b"]);
    }
}
