//! A string that must never be printed: access tokens.

use std::fmt;

/// Placeholder printed instead of a secret value.
pub const REDACTED: &str = "[redacted]";

/// A secret string (an access token) whose `Debug` and `Display` print `[redacted]`.
///
/// The value is reachable only through [`SecretString::expose`], so that every place that
/// handles the raw token is easy to find and review. There is deliberately no `Serialize`
/// implementation: writing the token somewhere must be an explicit act.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret value. Call this only where the value is written to its destination.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length of the secret in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let secret = SecretString::new("eyJhbGciOiJSUzI1NiJ9.payload.sig");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{:#?}", Some(&secret)), "Some(\n    [redacted],\n)");
    }

    #[test]
    fn expose_returns_the_value() {
        let secret = SecretString::from("abc".to_string());
        assert_eq!(secret.expose(), "abc");
        assert_eq!(secret.len(), 3);
        assert!(!secret.is_empty());
        assert!(SecretString::new("").is_empty());
    }
}
