//! Secret values that must never be printed: client secrets and access tokens.
//!
//! They are held in [`secrecy`]'s [`SecretString`]: no `Display`, a `Debug` that prints
//! `[REDACTED]`, no `Serialize`, and wiped from memory when dropped. The value is reachable only
//! through [`ExposeSecret::expose_secret`], so that every place that handles it is easy to find
//! and review: call it only where the value goes to its destination (the token request, the
//! token Secret's data).

pub use secrecy::{ExposeSecret, SecretString};

/// Placeholder printed instead of a secret value in messages the operator builds itself.
pub const REDACTED: &str = "[redacted]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_and_expose_returns_it() {
        let secret = SecretString::from("eyJhbGciOiJSUzI1NiJ9.payload.sig");
        for shown in [format!("{secret:?}"), format!("{:#?}", Some(&secret))] {
            assert!(!shown.contains("payload"), "{shown}");
            assert!(shown.contains("REDACTED"), "{shown}");
        }
        assert_eq!(secret.expose_secret(), "eyJhbGciOiJSUzI1NiJ9.payload.sig");
    }
}
