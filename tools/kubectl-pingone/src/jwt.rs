//! Reading a JWT access token's claims, without verifying it: the plugin shows what the token
//! says; the operator and the APIs that accept the token are the ones that verify it.

use base64::Engine;
use serde_json::{Map, Value};

/// The decoded header and claims, or `None` for an opaque (non-JWT) token.
pub fn decode(token: &str) -> Option<(Map<String, Value>, Map<String, Value>)> {
    let mut parts = token.trim().split('.');
    let (header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let part = |s: &str| -> Option<Map<String, Value>> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            Value::Object(map) => Some(map),
            _ => None,
        }
    };
    Some((part(header)?, part(payload)?))
}

/// A claim as text: strings as they are, arrays joined with ", ", others as JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn decodes_header_and_claims() {
        let token = format!(
            "{}.{}.c2ln",
            b64(&serde_json::json!({"alg": "RS256", "kid": "k"})),
            b64(&serde_json::json!({"iss": "https://x", "aud": ["a", "b"], "exp": 5}))
        );
        let (header, claims) = decode(&token).unwrap();
        assert_eq!(header["kid"], "k");
        assert_eq!(text(&claims["aud"]), "a, b");
        assert_eq!(text(&claims["exp"]), "5");
    }

    #[test]
    fn opaque_tokens_are_none() {
        assert!(decode("abcdef").is_none());
        assert!(decode("a.b.c").is_none());
        assert!(decode("a.b.c.d.e").is_none());
        let not_object = format!(
            "{}.{}.x",
            b64(&serde_json::json!(1)),
            b64(&serde_json::json!(2))
        );
        assert!(decode(&not_object).is_none());
    }
}
