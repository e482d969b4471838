//! The private key of a `private_key_jwt` application: loaded from PEM, checked before anything
//! is sent, and shown to people only as its public JWK.

use std::fmt;
use zeroize::Zeroizing;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use super::jose;

/// Why a PEM private key cannot be used. Messages describe the key, never its content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a PEM private key at all.
    #[error("{0}")]
    NotAKey(&'static str),
    /// An RSA key below 2048 bits.
    #[error("the RSA key is smaller than 2048 bits; PingOne needs at least 2048")]
    RsaTooSmall,
    /// An RSA key that does not parse or is inconsistent.
    #[error("the RSA key is not usable ({0})")]
    RsaInvalid(String),
    /// An EC key on another curve, or without its public key.
    #[error(
        "the EC key is not usable: only P-256 and P-384 keys that include their public key are supported"
    )]
    EcUnsupported,
    /// The algorithm named in the spec does not fit the key.
    #[error("the key is {key} but the algorithm is {algorithm}; {hint}")]
    AlgorithmMismatch {
        /// What the key is, e.g. `an EC P-256 key`.
        key: &'static str,
        /// The algorithm named.
        algorithm: &'static str,
        /// What would fit.
        hint: &'static str,
    },
}

/// What kind of key was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA, 2048 bits or more.
    Rsa,
    /// EC on P-256.
    EcP256,
    /// EC on P-384.
    EcP384,
}

impl KeyKind {
    fn describe(self) -> &'static str {
        match self {
            KeyKind::Rsa => "an RSA key",
            KeyKind::EcP256 => "an EC P-256 key",
            KeyKind::EcP384 => "an EC P-384 key",
        }
    }

    /// The algorithm used when the spec names none.
    pub fn default_algorithm(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::EcP256 => Algorithm::ES256,
            KeyKind::EcP384 => Algorithm::ES384,
        }
    }

    fn fits(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => matches!(alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512),
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
        }
    }

    fn hint(self) -> &'static str {
        match self {
            KeyKind::Rsa => "use RS256, RS384 or RS512, or leave the algorithm unset",
            KeyKind::EcP256 => "use ES256, or leave the algorithm unset",
            KeyKind::EcP384 => "use ES384, or leave the algorithm unset",
        }
    }
}

/// A loaded signing key with its algorithm and optional key id. `Debug` never shows the key.
#[derive(Clone)]
pub struct PrivateKey {
    kind: KeyKind,
    algorithm: Algorithm,
    key_id: Option<String>,
    encoding: EncodingKey,
    public_jwk: serde_json::Value,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kind", &self.kind)
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Loads a PEM private key: PKCS #8 (`PRIVATE KEY`), PKCS #1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`). `algorithm` is the one the spec names, if any; otherwise it follows
    /// the key (RS256, ES256, ES384).
    pub fn from_pem(
        pem: &[u8],
        key_id: Option<String>,
        algorithm: Option<Algorithm>,
    ) -> Result<Self, KeyError> {
        jose::install();
        let text = std::str::from_utf8(pem).map_err(|_| KeyError::NotAKey("it is not PEM text"))?;
        if text.contains("ENCRYPTED") {
            return Err(KeyError::NotAKey(
                "it is an encrypted private key; store the key unencrypted (the Secret is the protection)",
            ));
        }
        // Every copy of the key's bytes made here is wiped when it goes (the loaded
        // EncodingKey wipes its own).
        let der = match PrivateKeyDer::from_pem_slice(pem) {
            Ok(der) => Zeroizing::new(der),
            Err(_) if text.contains("-----BEGIN PUBLIC KEY") || text.contains("CERTIFICATE") => {
                return Err(KeyError::NotAKey(
                    "it holds a public key or certificate, not the private key",
                ));
            }
            Err(_) => {
                return Err(KeyError::NotAKey(
                    "it is not a PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
                ));
            }
        };
        let (kind, der): (KeyKind, Zeroizing<Vec<u8>>) = match &*der {
            PrivateKeyDer::Pkcs1(der) => (
                rsa_kind(der.secret_pkcs1_der())?,
                Zeroizing::new(der.secret_pkcs1_der().to_vec()),
            ),
            PrivateKeyDer::Pkcs8(der) => {
                let bytes = der.secret_pkcs8_der();
                if contains(bytes, EC_PUBLIC_KEY) {
                    (
                        ec_kind(bytes).ok_or(KeyError::EcUnsupported)?,
                        Zeroizing::new(bytes.to_vec()),
                    )
                } else if contains(bytes, RSA_ENCRYPTION) {
                    (rsa_kind(bytes)?, Zeroizing::new(bytes.to_vec()))
                } else {
                    return Err(KeyError::NotAKey(
                        "it is neither an RSA nor an EC key (Ed25519 and others are not supported by PingOne for private_key_jwt)",
                    ));
                }
            }
            PrivateKeyDer::Sec1(der) => {
                let sec1 = der.secret_sec1_der();
                [KeyKind::EcP256, KeyKind::EcP384]
                    .into_iter()
                    .find_map(|kind| {
                        let pkcs8 = Zeroizing::new(sec1_to_pkcs8(sec1, kind));
                        (ec_kind(&pkcs8) == Some(kind)).then_some((kind, pkcs8))
                    })
                    .ok_or(KeyError::EcUnsupported)?
            }
            _ => {
                return Err(KeyError::NotAKey(
                    "it is not a PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
                ));
            }
        };
        let algorithm = match algorithm {
            None => kind.default_algorithm(),
            Some(alg) if kind.fits(alg) => alg,
            Some(alg) => {
                return Err(KeyError::AlgorithmMismatch {
                    key: kind.describe(),
                    algorithm: algorithm_name(alg),
                    hint: kind.hint(),
                });
            }
        };
        let encoding = match kind {
            KeyKind::Rsa => EncodingKey::from_rsa_der(&der),
            KeyKind::EcP256 | KeyKind::EcP384 => EncodingKey::from_ec_der(&der),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm)
            .map_err(|e| KeyError::RsaInvalid(e.to_string()))?;
        jwk.common.key_id = key_id.clone();
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let public_jwk = serde_json::to_value(&jwk).unwrap_or_default();
        Ok(PrivateKey {
            kind,
            algorithm,
            key_id,
            encoding,
            public_jwk,
        })
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key id sent as the `kid` header, if any.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// The public key as a JWK (`kty`, `alg`, `use`, `kid`, and `n`/`e` or `crv`/`x`/`y`):
    /// what an administrator registers on the PingOne application.
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.public_jwk
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// The JOSE name of an algorithm.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unknown",
    }
}

fn rsa_kind(der: &[u8]) -> Result<KeyKind, KeyError> {
    match jose::rsa_key_pair(der) {
        Ok(_) => Ok(KeyKind::Rsa),
        Err(e) if e.to_string() == "TooSmall" => Err(KeyError::RsaTooSmall),
        Err(e) => Err(KeyError::RsaInvalid(e.to_string())),
    }
}

fn ec_kind(pkcs8: &[u8]) -> Option<KeyKind> {
    let rng = SystemRandom::new();
    [
        (KeyKind::EcP256, &sig::ECDSA_P256_SHA256_FIXED_SIGNING),
        (KeyKind::EcP384, &sig::ECDSA_P384_SHA384_FIXED_SIGNING),
    ]
    .into_iter()
    .find_map(|(kind, alg)| {
        EcdsaKeyPair::from_pkcs8(alg, pkcs8, &rng)
            .ok()
            .map(|_| kind)
    })
}

/// id-ecPublicKey 1.2.840.10045.2.1, as a DER OID.
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// rsaEncryption 1.2.840.113549.1.1.1, as a DER OID.
const RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Wraps a SEC1 `ECPrivateKey` into PKCS #8 for `kind`'s curve (RFC 5915 / RFC 5208).
fn sec1_to_pkcs8(sec1: &[u8], kind: KeyKind) -> Vec<u8> {
    // prime256v1 1.2.840.10045.3.1.7, secp384r1 1.3.132.0.34
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let curve = if kind == KeyKind::EcP384 { P384 } else { P256 };
    let algorithm = der(0x30, &[EC_PUBLIC_KEY, curve].concat());
    let version = [0x02, 0x01, 0x00];
    der(0x30, &[&version[..], &algorithm, &der(0x04, sec1)].concat())
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use ring::rand::SystemRandom;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;

    use super::*;

    fn pem(label: &str, der: &[u8]) -> String {
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

    fn rsa_key(bits: usize) -> rsa::RsaPrivateKey {
        rsa::RsaPrivateKey::new(&mut rand08::thread_rng(), bits).unwrap()
    }

    /// The ECPrivateKey inside a PKCS #8 document: its last top-level OCTET STRING.
    fn sec1_of(pkcs8: &[u8]) -> Vec<u8> {
        fn tlv(b: &[u8]) -> (u8, usize, usize) {
            let (len, head) = if b[1] < 0x80 {
                (b[1] as usize, 2)
            } else {
                let n = (b[1] & 0x7f) as usize;
                (
                    b[2..2 + n].iter().fold(0, |a, x| a * 256 + *x as usize),
                    2 + n,
                )
            };
            (b[0], head, len)
        }
        let (_, head, len) = tlv(pkcs8);
        let mut rest = &pkcs8[head..head + len];
        let mut last = Vec::new();
        while !rest.is_empty() {
            let (tag, head, len) = tlv(rest);
            if tag == 0x04 {
                last = rest[head..head + len].to_vec();
            }
            rest = &rest[head + len..];
        }
        last
    }

    fn ec_pkcs8(alg: &'static ring::signature::EcdsaSigningAlgorithm) -> Vec<u8> {
        EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn rsa_keys_load_from_pkcs8_and_pkcs1_and_default_to_rs256() {
        let key = rsa_key(2048);
        let pkcs8 = key.to_pkcs8_der().unwrap();
        let pkcs1 = key.to_pkcs1_der().unwrap();
        for text in [
            pem("PRIVATE KEY", pkcs8.as_bytes()),
            pem("RSA PRIVATE KEY", pkcs1.as_bytes()),
        ] {
            let loaded = PrivateKey::from_pem(text.as_bytes(), Some("kid-1".into()), None).unwrap();
            assert_eq!(loaded.kind(), KeyKind::Rsa);
            assert_eq!(loaded.algorithm(), Algorithm::RS256);
            let jwk = loaded.public_jwk();
            assert_eq!(jwk["kty"], "RSA");
            assert_eq!(jwk["alg"], "RS256");
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], "kid-1");
            assert_eq!(jwk["e"], "AQAB");
            assert!(
                jwk.get("d").is_none() && jwk.get("p").is_none(),
                "no private part"
            );
            assert!(!format!("{loaded:?}").contains("MII"));
        }
        let rs512 = PrivateKey::from_pem(
            pem("PRIVATE KEY", pkcs8.as_bytes()).as_bytes(),
            None,
            Some(Algorithm::RS512),
        )
        .unwrap();
        assert_eq!(rs512.algorithm(), Algorithm::RS512);
        assert!(rs512.public_jwk().get("kid").is_none());
    }

    #[test]
    fn ec_keys_load_from_pkcs8_and_sec1_and_follow_their_curve() {
        for (alg, kind, crv, jose_alg) in [
            (
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                KeyKind::EcP256,
                "P-256",
                Algorithm::ES256,
            ),
            (
                &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                KeyKind::EcP384,
                "P-384",
                Algorithm::ES384,
            ),
        ] {
            let pkcs8 = ec_pkcs8(alg);
            let sec1 = sec1_of(&pkcs8);
            for text in [pem("PRIVATE KEY", &pkcs8), pem("EC PRIVATE KEY", &sec1)] {
                let loaded = PrivateKey::from_pem(text.as_bytes(), None, None).unwrap();
                assert_eq!(loaded.kind(), kind);
                assert_eq!(loaded.algorithm(), jose_alg);
                assert_eq!(loaded.public_jwk()["crv"], crv);
                assert_eq!(loaded.public_jwk()["kty"], "EC");
                assert!(loaded.public_jwk().get("d").is_none());
            }
        }
    }

    #[test]
    fn unusable_keys_are_refused_with_the_reason() {
        let small = rsa_key(1024).to_pkcs8_der().unwrap();
        assert_eq!(
            PrivateKey::from_pem(pem("PRIVATE KEY", small.as_bytes()).as_bytes(), None, None)
                .unwrap_err(),
            KeyError::RsaTooSmall
        );
        let p256 = pem(
            "PRIVATE KEY",
            &ec_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        );
        let e = PrivateKey::from_pem(p256.as_bytes(), None, Some(Algorithm::RS256)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the key is an EC P-256 key but the algorithm is RS256; use ES256, or leave the algorithm unset"
        );
        let e = PrivateKey::from_pem(p256.as_bytes(), None, Some(Algorithm::ES384)).unwrap_err();
        assert!(matches!(e, KeyError::AlgorithmMismatch { .. }), "{e:?}");
        let rsa = pem(
            "PRIVATE KEY",
            rsa_key(2048).to_pkcs8_der().unwrap().as_bytes(),
        );
        let e = PrivateKey::from_pem(rsa.as_bytes(), None, Some(Algorithm::ES256)).unwrap_err();
        assert!(matches!(e, KeyError::AlgorithmMismatch { .. }), "{e:?}");

        let ed = ring::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let e = PrivateKey::from_pem(pem("PRIVATE KEY", ed.as_ref()).as_bytes(), None, None)
            .unwrap_err();
        assert!(
            e.to_string().contains("neither an RSA nor an EC key"),
            "{e}"
        );

        for (text, expect) in [
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "public key",
            ),
            ("just some text", "not a PEM private key"),
        ] {
            let e = PrivateKey::from_pem(text.as_bytes(), None, None).unwrap_err();
            assert!(e.to_string().contains(expect), "{text}: {e}");
        }
        // A damaged key body is refused, and the message shows none of it.
        let mut der = rsa_key(2048).to_pkcs1_der().unwrap().as_bytes().to_vec();
        let n = der.len();
        der[n - 10] ^= 0xff;
        let e =
            PrivateKey::from_pem(pem("RSA PRIVATE KEY", &der).as_bytes(), None, None).unwrap_err();
        assert!(matches!(e, KeyError::RsaInvalid(_)), "{e:?}");
    }
}
