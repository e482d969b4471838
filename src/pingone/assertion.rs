//! JWT client assertions (RFC 7523) for `client_secret_jwt` and `private_key_jwt`.
//!
//! One fresh assertion per request: `iss` = `sub` = the client id, `aud` = the exact token
//! endpoint URL the request goes to (custom domains included), `iat` now, `exp` a minute ahead
//! (PingOne refuses more than an hour), and a random 128-bit `jti` that is never reused. No
//! `nbf`: a clock a little ahead of PingOne's would make it "in the future" and the assertion
//! void, and it adds nothing to a one-minute `exp`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::client::{ClientAuth, TokenRequest};
use super::error::TokenError;
use super::jose;
use super::secret::{ExposeSecret, SecretString};

/// `client_assertion_type` for a JWT bearer assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid. Long enough for a slow request, far below PingOne's hour.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
}

/// The assertion for `req` posted to `token_url`, or `None` for the secret-in-request methods.
pub(crate) fn for_request(
    req: &TokenRequest<'_>,
    token_url: &str,
) -> Result<Option<SecretString>, TokenError> {
    let now = jiff::Timestamp::now().as_second();
    let (alg, kid, key) = match req.auth {
        ClientAuth::SecretPost(_) | ClientAuth::SecretBasic(_) => return Ok(None),
        ClientAuth::SecretJwt(secret, alg) => (
            alg,
            None::<String>,
            EncodingKey::from_secret(secret.expose_secret().as_bytes()).map_err(|e| {
                TokenError::Assertion {
                    detail: format!("the client secret cannot key the assertion: {e}"),
                }
            })?,
        ),
        ClientAuth::PrivateKeyJwt(key) => (
            key.algorithm(),
            key.key_id().map(str::to_owned),
            key.encoding_key().clone(),
        ),
    };
    sign(req.client_id, token_url, alg, kid, &key, now, random_jti()).map(Some)
}

fn sign(
    client_id: &str,
    audience: &str,
    alg: Algorithm,
    kid: Option<String>,
    key: &EncodingKey,
    now: i64,
    jti: String,
) -> Result<SecretString, TokenError> {
    jose::install();
    if !jose::is_supported(alg) {
        return Err(TokenError::Assertion {
            detail: "the signing algorithm is not supported".into(),
        });
    }
    let header = Header {
        typ: Some("JWT".into()),
        alg,
        kid,
        ..Header::default()
    };
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: audience,
        iat: now,
        exp: now + ASSERTION_LIFETIME.as_secs() as i64,
        jti,
    };
    jsonwebtoken::encode(&header, &claims, key)
        .map(SecretString::from)
        // The error names the kind of failure only (e.g. an invalid key), never key material.
        .map_err(|e| TokenError::Assertion {
            detail: format!("the client assertion could not be signed: {e}"),
        })
}

/// 128 random bits, hex: unique per request for all practical purposes.
fn random_jti() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::pingone::private_key::PrivateKey;

    const URL: &str = "https://auth.pingone.eu/cd91070f-c371-480e-80b2-753c735f8aa1/as/token";

    fn parts(jwt: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>) {
        let p: Vec<&str> = jwt.split('.').collect();
        assert_eq!(p.len(), 3);
        let json = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
        (
            json(p[0]),
            json(p[1]),
            URL_SAFE_NO_PAD.decode(p[2]).unwrap(),
        )
    }

    #[test]
    fn hs256_assertion_has_the_claims_and_an_hmac_over_header_and_claims() {
        let secret = SecretString::from("s3cret-s3cret");
        let req = TokenRequest {
            auth_domain: "auth.pingone.eu",
            environment_id: "cd91070f-c371-480e-80b2-753c735f8aa1",
            client_id: "client-1",
            auth: ClientAuth::SecretJwt(&secret, Algorithm::HS256),
            scopes: &[],
        };
        let before = jiff::Timestamp::now().as_second();
        let jwt = for_request(&req, URL).unwrap().unwrap();
        let (header, claims, signature) = parts(jwt.expose_secret());
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["typ"], "JWT");
        assert!(header.get("kid").is_none());
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["aud"], URL);
        let iat = claims["iat"].as_i64().unwrap();
        assert!(iat >= before && iat <= before + 2);
        assert_eq!(claims["exp"].as_i64().unwrap(), iat + 60);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
        assert!(claims.get("nbf").is_none());
        // The MAC, computed independently with ring over "header.claims".
        let signing_input = jwt.expose_secret().rsplit_once('.').unwrap().0;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret-s3cret");
        assert!(ring::hmac::verify(&key, signing_input.as_bytes(), &signature).is_ok());
        // Another request, another jti.
        let again = for_request(&req, URL).unwrap().unwrap();
        assert_ne!(parts(again.expose_secret()).1["jti"], claims["jti"]);
    }

    #[test]
    fn hs384_and_hs512_sign_with_their_hash() {
        let secret = SecretString::from("k");
        for (alg, ring_alg, name) in [
            (Algorithm::HS384, ring::hmac::HMAC_SHA384, "HS384"),
            (Algorithm::HS512, ring::hmac::HMAC_SHA512, "HS512"),
        ] {
            let req = TokenRequest {
                auth_domain: "auth.pingone.eu",
                environment_id: "cd91070f-c371-480e-80b2-753c735f8aa1",
                client_id: "c",
                auth: ClientAuth::SecretJwt(&secret, alg),
                scopes: &[],
            };
            let jwt = for_request(&req, URL).unwrap().unwrap();
            let (header, _, signature) = parts(jwt.expose_secret());
            assert_eq!(header["alg"], name);
            let input = jwt.expose_secret().rsplit_once('.').unwrap().0;
            let key = ring::hmac::Key::new(ring_alg, b"k");
            assert!(ring::hmac::verify(&key, input.as_bytes(), &signature).is_ok());
        }
    }

    #[test]
    fn es256_assertion_verifies_with_the_public_jwk() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let pem = pem_of("PRIVATE KEY", pkcs8.as_ref());
        let key = PrivateKey::from_pem(pem.as_bytes(), Some("k1".into()), None).unwrap();
        let req = TokenRequest {
            auth_domain: "login.example.com",
            environment_id: "",
            client_id: "c",
            auth: ClientAuth::PrivateKeyJwt(&key),
            scopes: &[],
        };
        let jwt = for_request(&req, "https://login.example.com/as/token")
            .unwrap()
            .unwrap();
        let (header, claims, signature) = parts(jwt.expose_secret());
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "k1");
        assert_eq!(claims["aud"], "https://login.example.com/as/token");
        let jwk = key.public_jwk();
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
        let point = [&[4u8][..], &x, &y].concat();
        let input = jwt.expose_secret().rsplit_once('.').unwrap().0;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(input.as_bytes(), &signature)
            .expect("the signature verifies with the published key");
    }

    pub(crate) fn pem_of(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }
}
