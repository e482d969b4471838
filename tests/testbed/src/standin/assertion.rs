//! Client assertions (RFC 7523): parsing, signature verification with `ring`, claim checks.
//!
//! Written apart from the operator's signing code (no JWT crate), so that a mistake there
//! cannot be mirrored here. Every error is a description fit for `error_description`: it
//! names the rule, never the assertion or a key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

/// Clock leeway for `exp` (not yet past) and `nbf` (not in the future).
pub(crate) const LEEWAY_SECS: f64 = 5.0;
/// How far ahead `exp` may be.
pub(crate) const MAX_LIFETIME_SECS: f64 = 3600.0;

/// A compact JWS split into its parts; nothing verified yet.
pub(crate) struct Assertion<'a> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signing_input: &'a [u8],
    signature: Vec<u8>,
}

/// How an `alg` verifies.
#[derive(Clone, Copy)]
pub(crate) enum AlgKind {
    /// HS256/384/512 with the client secret.
    Hmac(ring::hmac::Algorithm),
    /// RS256/384/512 with an RSA JWK (2048 to 8192 bits).
    Rsa(&'static signature::RsaParameters),
    /// ES256/ES384 with an EC JWK of this curve; the signature is `r || s`.
    Ec(&'static signature::EcdsaVerificationAlgorithm, &'static str),
}

impl AlgKind {
    /// The algorithms PingOne accepts for client assertions; `none` and anything else is
    /// `None`. (ES512 is not offered: `ring` cannot verify P-521.)
    pub(crate) fn of(alg: &str) -> Option<AlgKind> {
        Some(match alg {
            "HS256" => AlgKind::Hmac(ring::hmac::HMAC_SHA256),
            "HS384" => AlgKind::Hmac(ring::hmac::HMAC_SHA384),
            "HS512" => AlgKind::Hmac(ring::hmac::HMAC_SHA512),
            "RS256" => AlgKind::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => AlgKind::Rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => AlgKind::Rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
            "ES256" => AlgKind::Ec(&signature::ECDSA_P256_SHA256_FIXED, "P-256"),
            "ES384" => AlgKind::Ec(&signature::ECDSA_P384_SHA384_FIXED, "P-384"),
            _ => return None,
        })
    }
}

/// `token_endpoint_auth_signing_alg_values_supported` of the discovery document.
pub(crate) const SUPPORTED_ALGS: [&str; 8] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384",
];

/// Header and claim values of an assertion for the request record, read without any check
/// (none of them is a secret).
#[derive(Default)]
pub(crate) struct Peek {
    pub(crate) alg: Option<String>,
    pub(crate) kid: Option<String>,
    pub(crate) iss: Option<String>,
    pub(crate) sub: Option<String>,
    pub(crate) jti: Option<String>,
}

impl Peek {
    pub(crate) fn of(raw: &str) -> Peek {
        let mut parts = raw.split('.');
        let decode = |part: Option<&str>| -> Map<String, Value> {
            part.and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        };
        let header = decode(parts.next());
        let claims = decode(parts.next());
        let text = |map: &Map<String, Value>, name: &str| {
            map.get(name).and_then(Value::as_str).map(str::to_owned)
        };
        Peek {
            alg: text(&header, "alg"),
            kid: text(&header, "kid"),
            iss: text(&claims, "iss"),
            sub: text(&claims, "sub"),
            jti: text(&claims, "jti"),
        }
    }
}

const MALFORMED: &str = "Request denied: The client assertion is not a well-formed JWT";

impl<'a> Assertion<'a> {
    pub(crate) fn parse(raw: &'a str) -> Result<Assertion<'a>, &'static str> {
        let mut parts = raw.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MALFORMED);
        };
        let object = |part: &str| -> Result<Map<String, Value>, &'static str> {
            let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| MALFORMED)?;
            match serde_json::from_slice(&bytes) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(MALFORMED),
            }
        };
        Ok(Assertion {
            header: object(header)?,
            claims: object(claims)?,
            signing_input: &raw.as_bytes()[..header.len() + 1 + claims.len()],
            signature: URL_SAFE_NO_PAD.decode(signature).map_err(|_| MALFORMED)?,
        })
    }

    fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    pub(crate) fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    pub(crate) fn alg(&self) -> Option<&str> {
        self.header_str("alg")
    }

    pub(crate) fn kid(&self) -> Option<&str> {
        self.header_str("kid")
    }

    /// Whether an HMAC signature verifies with `key`.
    pub(crate) fn verify_hmac(&self, alg: ring::hmac::Algorithm, key: &[u8]) -> bool {
        let key = ring::hmac::Key::new(alg, key);
        ring::hmac::verify(&key, self.signing_input, &self.signature).is_ok()
    }

    /// Verifies an RSA or EC signature with the JWKS key named by the header's `kid`, or
    /// without a `kid` with any key of the fitting type.
    pub(crate) fn verify_with_jwks(&self, alg: AlgKind, jwks: &Value) -> Result<(), &'static str> {
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let alg_name = self.alg().unwrap_or_default();
        let candidates: Vec<&Value> = match self.kid() {
            Some(kid) => {
                let Some(key) = keys
                    .iter()
                    .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
                else {
                    return Err(
                        "Request denied: No key of the application matches the client assertion's kid",
                    );
                };
                if !key_fits(key, alg, alg_name) {
                    return Err(
                        "Request denied: The key named by the client assertion's kid does not fit its alg",
                    );
                }
                vec![key]
            }
            None => keys.iter().filter(|k| key_fits(k, alg, alg_name)).collect(),
        };
        if candidates.is_empty() {
            return Err(
                "Request denied: The application has no key for the client assertion's alg",
            );
        }
        if candidates
            .iter()
            .any(|key| verify_with_jwk(key, alg, self.signing_input, &self.signature))
        {
            Ok(())
        } else {
            Err("Request denied: The client assertion's signature is invalid")
        }
    }

    /// Checks `iss`/`sub` were already matched by the caller; here `aud`, `exp`, `nbf`.
    /// `now` is in seconds since the epoch. Returns the `jti` and `exp` for the replay check.
    pub(crate) fn check_claims(
        &self,
        audiences: &[String],
        now: f64,
    ) -> Result<(Option<String>, f64), &'static str> {
        let aud_ok = match self.claims.get("aud") {
            Some(Value::String(aud)) => audiences.iter().any(|a| a == aud),
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .any(|aud| audiences.iter().any(|a| a == aud)),
            _ => false,
        };
        if !aud_ok {
            return Err(
                "Request denied: The client assertion's aud must be the token endpoint URL or the issuer",
            );
        }
        let exp = match self.claims.get("exp") {
            None => return Err("Request denied: The client assertion has no exp"),
            Some(v) => v
                .as_f64()
                .ok_or("Request denied: The client assertion's exp is not a number")?,
        };
        if exp + LEEWAY_SECS <= now {
            return Err("Request denied: The client assertion has expired");
        }
        if exp > now + MAX_LIFETIME_SECS {
            return Err("Request denied: The client assertion's exp is more than one hour ahead");
        }
        if let Some(nbf) = self.claims.get("nbf") {
            let nbf = nbf
                .as_f64()
                .ok_or("Request denied: The client assertion's nbf is not a number")?;
            if nbf > now + LEEWAY_SECS {
                return Err("Request denied: The client assertion is not valid yet (nbf)");
            }
        }
        let jti = match self.claims.get("jti") {
            None => None,
            Some(Value::String(jti)) if !jti.is_empty() => Some(jti.clone()),
            Some(_) => return Err("Request denied: The client assertion's jti is not a string"),
        };
        Ok((jti, exp))
    }
}

/// Whether a JWK may verify `alg`: its type (and curve) fit, `use` is absent or `sig`, and its
/// own `alg`, if any, is the same.
fn key_fits(key: &Value, alg: AlgKind, alg_name: &str) -> bool {
    let field = |name: &str| key.get(name).and_then(Value::as_str);
    let type_fits = match alg {
        AlgKind::Hmac(_) => false,
        AlgKind::Rsa(_) => field("kty") == Some("RSA"),
        AlgKind::Ec(_, crv) => field("kty") == Some("EC") && field("crv") == Some(crv),
    };
    type_fits
        && field("use").is_none_or(|u| u == "sig")
        && field("alg").is_none_or(|a| a == alg_name)
}

fn verify_with_jwk(key: &Value, alg: AlgKind, message: &[u8], sig: &[u8]) -> bool {
    let bytes = |name: &str| {
        key.get(name)
            .and_then(Value::as_str)
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
    };
    match alg {
        AlgKind::Hmac(_) => false,
        AlgKind::Rsa(params) => {
            let (Some(n), Some(e)) = (bytes("n"), bytes("e")) else {
                return false;
            };
            RsaPublicKeyComponents { n: &n, e: &e }
                .verify(params, message, sig)
                .is_ok()
        }
        AlgKind::Ec(params, crv) => {
            let (Some(x), Some(y)) = (bytes("x"), bytes("y")) else {
                return false;
            };
            let size = if crv == "P-256" { 32 } else { 48 };
            if x.len() != size || y.len() != size {
                return false;
            }
            // SEC 1 uncompressed point.
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            UnparsedPublicKey::new(params, &point)
                .verify(message, sig)
                .is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsigned(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn malformed_assertions_are_refused() {
        for raw in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.e30.",
            &format!("{}.e30.", URL_SAFE_NO_PAD.encode("[1]")),
        ] {
            assert!(Assertion::parse(raw).is_err(), "{raw:?}");
        }
        assert!(
            Assertion::parse(&unsigned(
                &serde_json::json!({"alg":"HS256"}),
                &serde_json::json!({})
            ))
            .is_ok()
        );
    }

    #[test]
    fn time_rules_have_leeway_only_where_allowed() {
        let aud = vec!["https://auth.pingone.eu/x/as".to_string()];
        let check = |claims: Value| {
            let raw = unsigned(&serde_json::json!({"alg":"HS256"}), &claims);
            Assertion::parse(&raw)
                .expect("parses")
                .check_claims(&aud, 1000.0)
                .map(|(jti, _)| jti)
        };
        let a = "https://auth.pingone.eu/x/as";
        assert!(check(serde_json::json!({"aud": a, "exp": 996})).is_ok());
        assert!(check(serde_json::json!({"aud": a, "exp": 995})).is_err());
        assert!(check(serde_json::json!({"aud": a, "exp": 4600})).is_ok());
        assert!(check(serde_json::json!({"aud": a, "exp": 4601})).is_err());
        assert!(check(serde_json::json!({"aud": a, "exp": "2000"})).is_err());
        assert!(check(serde_json::json!({"aud": a, "exp": 1060, "nbf": 1005})).is_ok());
        assert!(check(serde_json::json!({"aud": a, "exp": 1060, "nbf": 1006})).is_err());
        assert!(check(serde_json::json!({"aud": ["other", a], "exp": 1060})).is_ok());
        assert!(check(serde_json::json!({"aud": [], "exp": 1060})).is_err());
        assert_eq!(
            check(serde_json::json!({"aud": a, "exp": 1060, "jti": "j1"})),
            Ok(Some("j1".to_string()))
        );
        assert!(check(serde_json::json!({"aud": a, "exp": 1060, "jti": 7})).is_err());
    }
}
