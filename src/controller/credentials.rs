//! The client credentials, read from the Secret a connection references. Pure.

use k8s_openapi::api::core::v1::Secret;

use std::sync::Arc;

use crate::api::{AssertionAlgorithm, CredentialsSecretRef, TokenEndpointAuthMethod};
use crate::pingone::{ClientAuth, PrivateKey, SecretString};

/// Longest client id or secret accepted. PingOne's are far shorter; anything longer is a
/// mistake (a whole file in the key) and would only be posted to PingOne to be rejected.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

/// Longest PEM private key accepted: an RSA 8192-bit PKCS #1 key is about 6.3 KiB.
pub const MAX_PRIVATE_KEY_BYTES: usize = 16 * 1024;

/// A worker application's client id and its secret or private key. Debug never prints either.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The client id (not secret, but kept out of messages anyway where it is not needed).
    pub client_id: String,
    /// The client secret or the private key.
    pub credential: Credential,
    /// The token endpoint auth method these credentials were read for.
    pub method: TokenEndpointAuthMethod,
    /// The HMAC algorithm for client_secret_jwt.
    pub hmac_algorithm: jsonwebtoken::Algorithm,
}

/// What the client authenticates with.
#[derive(Clone, Debug)]
pub enum Credential {
    /// The client secret, wiped from memory when dropped.
    Secret(SecretString),
    /// The private key (private_key_jwt) and the PEM text and key id it was loaded from (for
    /// the inputs digest only).
    Key {
        /// The loaded key.
        key: Arc<PrivateKey>,
        /// The PEM text and key id, wiped from memory when dropped.
        material: SecretString,
    },
}

impl Credentials {
    /// How a token request presents these credentials.
    pub fn auth(&self) -> ClientAuth<'_> {
        match (&self.credential, self.method) {
            (Credential::Key { key, .. }, _) => ClientAuth::PrivateKeyJwt(key),
            (Credential::Secret(s), TokenEndpointAuthMethod::ClientSecretBasic) => {
                ClientAuth::SecretBasic(s)
            }
            (Credential::Secret(s), TokenEndpointAuthMethod::ClientSecretJwt) => {
                ClientAuth::SecretJwt(s, self.hmac_algorithm)
            }
            (Credential::Secret(s), _) => ClientAuth::SecretPost(s),
        }
    }

    /// The secret, or the key's PEM text and id: what the inputs digest covers.
    pub fn material(&self) -> &SecretString {
        match &self.credential {
            Credential::Secret(s) => s,
            Credential::Key { material, .. } => material,
        }
    }

    /// The client secret, for the methods that have one.
    pub fn client_secret(&self) -> Option<&SecretString> {
        match &self.credential {
            Credential::Secret(s) => Some(s),
            Credential::Key { .. } => None,
        }
    }

    /// The private key, for private_key_jwt.
    pub fn private_key(&self) -> Option<&PrivateKey> {
        match &self.credential {
            Credential::Key { key, .. } => Some(key),
            Credential::Secret(_) => None,
        }
    }

    /// The method's name as the inputs digest records it: the algorithm is part of it, since
    /// changing it changes what PingOne checks.
    pub fn method_label(&self) -> String {
        match (&self.credential, self.method) {
            (Credential::Key { key, .. }, _) => format!(
                "private_key_jwt:{}",
                crate::pingone::algorithm_name(key.algorithm())
            ),
            (Credential::Secret(_), TokenEndpointAuthMethod::ClientSecretJwt) => format!(
                "client_secret_jwt:{}",
                crate::pingone::algorithm_name(self.hmac_algorithm)
            ),
            (Credential::Secret(_), method) => method.as_str().to_owned(),
        }
    }
}

/// Why the credentials cannot be used. Messages name the Secret and key, never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The Secret does not exist.
    #[error("credentials Secret {secret} not found in namespace {namespace}")]
    NotFound {
        /// Secret name.
        secret: String,
        /// Namespace.
        namespace: String,
    },
    /// A key is absent.
    #[error("credentials Secret {secret} has no key {key}")]
    KeyMissing {
        /// Secret name.
        secret: String,
        /// The missing key.
        key: String,
    },
    /// A value is empty, not UTF-8, too long or has control characters, or a private key is
    /// not usable.
    #[error("credentials Secret {secret} key {key}: {problem}")]
    Invalid {
        /// Secret name.
        secret: String,
        /// The bad key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl CredentialsError {
    /// Stable condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialsError::NotFound { .. } => "CredentialsNotFound",
            CredentialsError::KeyMissing { .. } => "CredentialsKeyMissing",
            CredentialsError::Invalid { .. } => "CredentialsInvalid",
        }
    }
}

/// Reads the credentials from `secret` (None when it does not exist) for `method`: the client
/// secret, or for private_key_jwt the PEM private key (checked and loaded here, before anything
/// is sent) and the optional key id. `algorithm` is the spec's clientAssertionAlgorithm.
pub fn read(
    secret: Option<&Secret>,
    reference: &CredentialsSecretRef,
    namespace: &str,
    method: TokenEndpointAuthMethod,
    algorithm: Option<AssertionAlgorithm>,
) -> Result<Credentials, CredentialsError> {
    let Some(secret) = secret else {
        return Err(CredentialsError::NotFound {
            secret: reference.name.clone(),
            namespace: namespace.to_string(),
        });
    };
    let client_id = value(secret, &reference.name, &reference.client_id_key)?.to_string();
    let hmac_algorithm = match algorithm {
        Some(alg @ (AssertionAlgorithm::HS384 | AssertionAlgorithm::HS512)) => alg.jose(),
        _ => jsonwebtoken::Algorithm::HS256,
    };
    let credential = if method == TokenEndpointAuthMethod::PrivateKeyJwt {
        read_key(secret, reference, algorithm)?
    } else {
        Credential::Secret(SecretString::from(value(
            secret,
            &reference.name,
            &reference.client_secret_key,
        )?))
    };
    Ok(Credentials {
        client_id,
        credential,
        method,
        hmac_algorithm,
    })
}

/// The private key and optional key id of a private_key_jwt application.
fn read_key(
    secret: &Secret,
    reference: &CredentialsSecretRef,
    algorithm: Option<AssertionAlgorithm>,
) -> Result<Credential, CredentialsError> {
    let name = &reference.name;
    let invalid = |key: &str, problem: String| CredentialsError::Invalid {
        secret: name.clone(),
        key: key.to_string(),
        problem,
    };
    let pem =
        raw(secret, &reference.private_key_key).ok_or_else(|| CredentialsError::KeyMissing {
            secret: name.clone(),
            key: reference.private_key_key.clone(),
        })?;
    if pem.len() > MAX_PRIVATE_KEY_BYTES {
        return Err(invalid(
            &reference.private_key_key,
            "value is longer than 16384 bytes".into(),
        ));
    }
    let key_id = match raw(secret, &reference.key_id_key) {
        None => None,
        Some(_) => Some(value(secret, name, &reference.key_id_key)?.to_string()),
    };
    let key = PrivateKey::from_pem(pem, key_id.clone(), algorithm.map(AssertionAlgorithm::jose))
        .map_err(|e| invalid(&reference.private_key_key, e.to_string()))?;
    let pem_text = String::from_utf8_lossy(pem);
    let material = SecretString::from(format!(
        "{}\n{}",
        pem_text.trim(),
        key_id.as_deref().unwrap_or("")
    ));
    Ok(Credential::Key {
        key: Arc::new(key),
        material,
    })
}

/// The raw bytes of `key`, from data or stringData.
pub(crate) fn raw<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.as_bytes())
        })
}

/// A stored value as the operator reads it: without one trailing line ending (`\n` or `\r\n`,
/// from `echo` or a file, a common slip); anything else is kept. The one normalisation for
/// reading a credential and for comparing one (client secret rotation compares what it wrote
/// and what it replaced with what a Secret holds).
pub fn normalised(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// The checked value of `key` in `secret` (named `secret_name`), borrowed: the only copy of a
/// client secret made while reading is the [`SecretString`] it ends up in.
fn value<'a>(
    secret: &'a Secret,
    secret_name: &str,
    key: &str,
) -> Result<&'a str, CredentialsError> {
    let invalid = |problem: &str| CredentialsError::Invalid {
        secret: secret_name.to_string(),
        key: key.to_string(),
        problem: problem.to_string(),
    };
    // stringData is write-only and lands in data; both are looked at in case a client
    // hands us an object that was never round-tripped through the API server.
    let bytes: &[u8] = raw(secret, key).ok_or_else(|| CredentialsError::KeyMissing {
        secret: secret_name.to_string(),
        key: key.to_string(),
    })?;
    if bytes.len() > MAX_CREDENTIAL_BYTES {
        return Err(invalid("value is longer than 4096 bytes"));
    }
    let text =
        std::str::from_utf8(normalised(bytes)).map_err(|_| invalid("value is not valid UTF-8"))?;
    if text.is_empty() {
        return Err(invalid("value is empty"));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid("value contains control characters"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;
    use crate::pingone::ExposeSecret;

    const POST: TokenEndpointAuthMethod = TokenEndpointAuthMethod::ClientSecretPost;

    fn reference() -> CredentialsSecretRef {
        CredentialsSecretRef {
            name: "creds".into(),
            client_id_key: "clientId".into(),
            client_secret_key: "clientSecret".into(),
            private_key_key: "privateKey".into(),
            key_id_key: "keyId".into(),
        }
    }

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn reads_both_values_and_trims_one_trailing_newline() {
        let s = secret(&[("clientId", b"id-1\n"), ("clientSecret", b"s3cr3t")]);
        let c = read(Some(&s), &reference(), "ns", POST, None).unwrap();
        assert_eq!(c.client_id, "id-1");
        assert_eq!(c.client_secret().unwrap().expose_secret(), "s3cr3t");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn names_the_secret_and_key_at_fault_never_the_value() {
        let r = reference();
        let e = read(None, &r, "ns", POST, None).unwrap_err();
        assert_eq!(e.reason(), "CredentialsNotFound");
        assert_eq!(
            e.to_string(),
            "credentials Secret creds not found in namespace ns"
        );

        let e = read(Some(&secret(&[("clientId", b"id")])), &r, "ns", POST, None).unwrap_err();
        assert_eq!(e.reason(), "CredentialsKeyMissing");
        assert_eq!(
            e.to_string(),
            "credentials Secret creds has no key clientSecret"
        );

        let cases: [(&[u8], &str); 4] = [
            (b"", "value is empty"),
            (b"\xff\xfe", "value is not valid UTF-8"),
            (b"a\x00b", "value contains control characters"),
            (&[b'x'; 5000], "value is longer than 4096 bytes"),
        ];
        for (value, problem) in cases {
            let e = read(
                Some(&secret(&[("clientId", b"id"), ("clientSecret", value)])),
                &r,
                "ns",
                POST,
                None,
            )
            .unwrap_err();
            assert_eq!(e.reason(), "CredentialsInvalid");
            assert_eq!(
                e.to_string(),
                format!("credentials Secret creds key clientSecret: {problem}")
            );
        }
    }
}
