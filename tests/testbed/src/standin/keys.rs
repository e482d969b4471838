//! The RS256 signing key, the JWKS and JWT signing and verification.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::EncodePublicKey;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub(crate) struct SigningKeys {
    signing: SigningKey<Sha256>,
    public: RsaPublicKey,
    kid: String,
}

#[derive(Serialize)]
struct JwtHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

impl SigningKeys {
    /// A fresh 2048-bit key; its `kid` is derived from the public key.
    pub(crate) fn generate() -> Result<SigningKeys> {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .context("generating the RSA signing key")?;
        let public = private.to_public_key();
        let der = public
            .to_public_key_der()
            .context("encoding the RSA public key")?;
        let digest = Sha256::digest(der.as_bytes());
        let kid = URL_SAFE_NO_PAD.encode(&digest[..18]);
        Ok(SigningKeys {
            signing: SigningKey::<Sha256>::new(private),
            public,
            kid,
        })
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }

    pub(crate) fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "RSA",
                "kid": self.kid,
                "use": "sig",
                "alg": "RS256",
                "n": URL_SAFE_NO_PAD.encode(self.public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(self.public.e().to_bytes_be()),
            }]
        })
    }

    /// A compact RS256 JWS of `claims`.
    pub(crate) fn sign_jwt(&self, claims: &impl Serialize) -> Result<String> {
        let header = serde_json::to_vec(&JwtHeader {
            alg: "RS256",
            typ: "JWT",
            kid: &self.kid,
        })?;
        let claims = serde_json::to_vec(claims)?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.signing.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }
}

/// Why a token did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not a compact JWS with three parts")]
    Format,
    #[error("a part is not valid base64url")]
    Base64,
    #[error("the header or the claims are not a JSON object")]
    Json,
    #[error("the header's alg is not RS256")]
    Algorithm,
    #[error("the signature does not verify")]
    Signature,
}

/// Verifies a compact RS256 JWS with `key` and returns its claims. Does not look at `exp`.
pub fn verify_rs256_jwt(token: &str, key: &RsaPublicKey) -> Result<serde_json::Value, VerifyError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Format);
    };
    let header_json: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| VerifyError::Base64)?,
    )
    .map_err(|_| VerifyError::Json)?;
    if header_json.get("alg").and_then(|a| a.as_str()) != Some("RS256") {
        return Err(VerifyError::Algorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| VerifyError::Base64)?;
    let signature =
        Signature::try_from(signature.as_slice()).map_err(|_| VerifyError::Signature)?;
    let signing_input = &token[..header.len() + 1 + claims.len()];
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| VerifyError::Signature)?;
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|_| VerifyError::Base64)?,
    )
    .map_err(|_| VerifyError::Json)?;
    if !claims.is_object() {
        return Err(VerifyError::Json);
    }
    Ok(claims)
}
