//! `jsonwebtoken`'s cryptography on `ring`, the provider the rest of the binary (rustls) uses.
//!
//! `jsonwebtoken` builds and parses JWTs and JWKs; since version 10 the signing itself is a
//! pluggable [`CryptoProvider`]. This module is that provider for the algorithms PingOne takes
//! for client assertions: HS256/384/512, RS256/384/512 (PKCS #1 v1.5) and ES256/ES384. RSA-PSS
//! and EdDSA are refused (PingOne does not list them for client authentication).
//!
//! Key bytes are DER: an RSA key as PKCS #8 or PKCS #1, an EC key as PKCS #8 (the key loader
//! wraps SEC1 keys), an HMAC key as the raw secret.

use std::sync::Once;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, KeyPair, RsaKeyPair};
use ring::{digest, hmac};

/// The provider; [`install`] makes it `jsonwebtoken`'s process default.
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidAlgorithm.into()),
        compute_digest,
    },
};

/// Installs [`RING_PROVIDER`] as `jsonwebtoken`'s provider, once. Called before any JWT is
/// built, so the crate never falls back to a provider chosen by feature flags.
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if RING_PROVIDER.install_default().is_err() {
            tracing::debug!("a jsonwebtoken crypto provider was already installed; keeping it");
        }
    });
}

/// An RSA key pair from PKCS #8 or PKCS #1 DER.
pub(crate) fn rsa_key_pair(
    der: &[u8],
) -> std::result::Result<RsaKeyPair, ring::error::KeyRejected> {
    RsaKeyPair::from_pkcs8(der).or_else(|pkcs8_error| {
        // PKCS #1 is tried second; when both fail, the PKCS #8 reason is usually the telling
        // one unless the input simply is PKCS #1.
        RsaKeyPair::from_der(der).map_err(|_| pkcs8_error)
    })
}

/// The ring signing algorithm of an ES algorithm.
pub(crate) fn ecdsa_signing(alg: Algorithm) -> Option<&'static sig::EcdsaSigningAlgorithm> {
    match alg {
        Algorithm::ES256 => Some(&sig::ECDSA_P256_SHA256_FIXED_SIGNING),
        Algorithm::ES384 => Some(&sig::ECDSA_P384_SHA384_FIXED_SIGNING),
        _ => None,
    }
}

fn rsa_encoding(alg: Algorithm) -> Option<&'static dyn sig::RsaEncoding> {
    match alg {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_SHA256),
        Algorithm::RS384 => Some(&sig::RSA_PKCS1_SHA384),
        Algorithm::RS512 => Some(&sig::RSA_PKCS1_SHA512),
        _ => None,
    }
}

fn rsa_verification(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    match alg {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&sig::RSA_PKCS1_2048_8192_SHA512),
        _ => None,
    }
}

fn hmac_algorithm(alg: Algorithm) -> Option<hmac::Algorithm> {
    match alg {
        Algorithm::HS256 => Some(hmac::HMAC_SHA256),
        Algorithm::HS384 => Some(hmac::HMAC_SHA384),
        Algorithm::HS512 => Some(hmac::HMAC_SHA512),
        _ => None,
    }
}

fn ecdsa_verification(alg: Algorithm) -> Option<&'static sig::EcdsaVerificationAlgorithm> {
    match alg {
        Algorithm::ES256 => Some(&sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Some(&sig::ECDSA_P384_SHA384_FIXED),
        _ => None,
    }
}

enum SignerKey {
    Hmac(hmac::Key),
    Rsa(RsaKeyPair, &'static dyn sig::RsaEncoding),
    Ecdsa(EcdsaKeyPair),
}

struct RingSigner {
    alg: Algorithm,
    key: SignerKey,
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        match &self.key {
            SignerKey::Hmac(key) => Ok(hmac::sign(key, msg).as_ref().to_vec()),
            SignerKey::Rsa(pair, encoding) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &SystemRandom::new(), msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
            SignerKey::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let alg = *alg;
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let key = if let Some(h) = hmac_algorithm(alg) {
        SignerKey::Hmac(hmac::Key::new(h, key.as_bytes()))
    } else if let Some(encoding) = rsa_encoding(alg) {
        let pair =
            rsa_key_pair(key.as_bytes()).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
        SignerKey::Rsa(pair, encoding)
    } else if let Some(signing) = ecdsa_signing(alg) {
        let pair = EcdsaKeyPair::from_pkcs8(signing, key.as_bytes(), &SystemRandom::new())
            .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
        SignerKey::Ecdsa(pair)
    } else {
        return Err(ErrorKind::InvalidAlgorithm.into());
    };
    Ok(Box::new(RingSigner { alg, key }))
}

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let failed = || signature::Error::new();
        if let Some(h) = hmac_algorithm(self.alg) {
            let secret = self.key.try_get_as_bytes().map_err(|_| failed())?;
            return hmac::verify(&hmac::Key::new(h, secret), msg, signature).map_err(|_| failed());
        }
        if let Some(params) = rsa_verification(self.alg) {
            return match self.key.kind() {
                DecodingKeyKind::SecretOrDer(der) => {
                    sig::UnparsedPublicKey::new(params, der).verify(msg, signature)
                }
                DecodingKeyKind::RsaModulusExponent { n, e } => {
                    sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
                }
            }
            .map_err(|_| failed());
        }
        if let Some(algorithm) = ecdsa_verification(self.alg) {
            let point = self.key.try_get_as_bytes().map_err(|_| failed())?;
            return sig::UnparsedPublicKey::new(algorithm, point)
                .verify(msg, signature)
                .map_err(|_| failed());
        }
        Err(failed())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let supported = hmac_algorithm(*alg).is_some()
        || rsa_verification(*alg).is_some()
        || ecdsa_verification(*alg).is_some();
    if !supported {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: key.clone(),
    }))
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let pair = rsa_key_pair(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
    let components = sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    Ok((components.n, components.e))
}

fn rsa_components_from_public_key(_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    // Only private keys are loaded by the operator; a public JWK comes from those.
    Err(Error::from(ErrorKind::InvalidKeyFormat))
}

fn ec_components_from_private_key(
    der: &[u8],
    alg: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    let (signing, curve, len) = match alg {
        Algorithm::ES256 => (
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            EllipticCurve::P256,
            32,
        ),
        Algorithm::ES384 => (
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            EllipticCurve::P384,
            48,
        ),
        _ => return Err(ErrorKind::InvalidEcdsaKey.into()),
    };
    let pair = EcdsaKeyPair::from_pkcs8(signing, der, &SystemRandom::new())
        .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
    let point = pair.public_key().as_ref();
    // Uncompressed SEC1 point: 0x04 || x || y.
    if point.len() != 1 + 2 * len || point[0] != 4 {
        return Err(ErrorKind::InvalidEcdsaKey.into());
    }
    let (x, y) = point[1..].split_at(len);
    Ok((curve, x.to_vec(), y.to_vec()))
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(digest::digest(algorithm, data).as_ref().to_vec())
}

/// Whether `family` is one the provider signs with.
pub(crate) fn is_supported(alg: Algorithm) -> bool {
    matches!(
        alg.family(),
        AlgorithmFamily::Hmac | AlgorithmFamily::Rsa | AlgorithmFamily::Ec
    ) && (hmac_algorithm(alg).is_some()
        || rsa_encoding(alg).is_some()
        || ecdsa_signing(alg).is_some())
}
