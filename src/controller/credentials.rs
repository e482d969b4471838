//! The client credentials, read from the Secret a connection references. Pure.

use k8s_openapi::api::core::v1::Secret;

use crate::api::CredentialsSecretRef;
use crate::pingone::SecretString;

/// Longest client id or secret accepted. PingOne's are far shorter; anything longer is a
/// mistake (a whole file in the key) and would only be posted to PingOne to be rejected.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

/// A worker application's client id and secret. Debug never prints the secret.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The client id (not secret, but kept out of messages anyway where it is not needed).
    pub client_id: String,
    /// The client secret, wiped from memory when dropped.
    pub client_secret: SecretString,
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
    /// A value is empty, not UTF-8, too long or has control characters.
    #[error("credentials Secret {secret} key {key}: {problem}")]
    Invalid {
        /// Secret name.
        secret: String,
        /// The bad key.
        key: String,
        /// What is wrong with it.
        problem: &'static str,
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

/// Reads the credentials from `secret` (None when it does not exist).
pub fn read(
    secret: Option<&Secret>,
    reference: &CredentialsSecretRef,
    namespace: &str,
) -> Result<Credentials, CredentialsError> {
    let Some(secret) = secret else {
        return Err(CredentialsError::NotFound {
            secret: reference.name.clone(),
            namespace: namespace.to_string(),
        });
    };
    Ok(Credentials {
        client_id: value(secret, &reference.name, &reference.client_id_key)?.to_string(),
        client_secret: SecretString::from(value(
            secret,
            &reference.name,
            &reference.client_secret_key,
        )?),
    })
}

/// The checked value of `key` in `secret` (named `secret_name`), borrowed: the only copy of a
/// client secret made while reading is the [`SecretString`] it ends up in.
fn value<'a>(
    secret: &'a Secret,
    secret_name: &str,
    key: &str,
) -> Result<&'a str, CredentialsError> {
    let invalid = |problem| CredentialsError::Invalid {
        secret: secret_name.to_string(),
        key: key.to_string(),
        problem,
    };
    // stringData is write-only and lands in data; both are looked at in case a client
    // hands us an object that was never round-tripped through the API server.
    let bytes: &[u8] = secret
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
        .ok_or_else(|| CredentialsError::KeyMissing {
            secret: secret_name.to_string(),
            key: key.to_string(),
        })?;
    if bytes.len() > MAX_CREDENTIAL_BYTES {
        return Err(invalid("value is longer than 4096 bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("value is not valid UTF-8"))?;
    // A trailing newline from `echo` or a file is a common slip; anything else is kept.
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
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

    fn reference() -> CredentialsSecretRef {
        CredentialsSecretRef {
            name: "creds".into(),
            client_id_key: "clientId".into(),
            client_secret_key: "clientSecret".into(),
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
        let c = read(Some(&s), &reference(), "ns").unwrap();
        assert_eq!(c.client_id, "id-1");
        assert_eq!(c.client_secret.expose_secret(), "s3cr3t");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn names_the_secret_and_key_at_fault_never_the_value() {
        let r = reference();
        let e = read(None, &r, "ns").unwrap_err();
        assert_eq!(e.reason(), "CredentialsNotFound");
        assert_eq!(
            e.to_string(),
            "credentials Secret creds not found in namespace ns"
        );

        let e = read(Some(&secret(&[("clientId", b"id")])), &r, "ns").unwrap_err();
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
