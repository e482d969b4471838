//! What status says of the token itself: the `TokenVerified` condition and `tokenClaims`,
//! decided from the JWKS verification and what the connection asked for. Pure.

use jiff::Timestamp;

use crate::api::{PingOneConnectionStatus, TokenClaims};
use crate::pingone::{Claims, Verification};

/// Condition type: the token's signature and claims were checked (JWTs only).
pub const TOKEN_VERIFIED: &str = "TokenVerified";
/// Reason of a True TokenVerified condition.
pub const REASON_TOKEN_VERIFIED: &str = "TokenVerified";
/// Reason: the token's issuer is not the connection's environment.
pub const REASON_ISSUER_MISMATCH: &str = "TokenIssuerMismatch";
/// Reason: the token was issued to another client.
pub const REASON_CLIENT_MISMATCH: &str = "TokenClientMismatch";
/// Reason: scopes in spec.scopes were not granted.
pub const REASON_SCOPES_NOT_GRANTED: &str = "ScopesNotGranted";
/// Reason: the token's `exp` and the response's `expires_in` disagree by over a minute.
pub const REASON_EXPIRY_SKEW: &str = "TokenExpirySkew";

/// `exp` and `expires_in` may disagree by this much (whole seconds, network time) unremarked.
pub const MAX_EXPIRY_SKEW_SECONDS: i64 = 60;

/// The result of checking one token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenCheck {
    /// The claims, when the signature verified.
    pub claims: Option<TokenClaims>,
    /// Nothing to report.
    pub ok: bool,
    /// Condition reason.
    pub reason: String,
    /// Condition message.
    pub message: String,
    /// `exp` minus the expiry the operator computed from `expires_in`, in seconds.
    pub skew_seconds: Option<i64>,
}

/// What the token is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// The environment's issuer (`None` when unknown).
    pub issuer: Option<&'a str>,
    /// The client id the token was asked for with.
    pub client_id: &'a str,
    /// spec.scopes.
    pub asked_scopes: &'a [String],
    /// The scopes of the token response (`scope`), if it named any.
    pub response_scopes: &'a [String],
    /// The expiry computed from `expires_in`.
    pub expires_at: Timestamp,
}

/// The check of a token, or `None` for an opaque token (nothing to verify, nothing to report).
pub fn assess(verification: Verification, expected: &Expected<'_>) -> Option<TokenCheck> {
    let (claims, kid) = match verification {
        Verification::Opaque => return None,
        Verification::Invalid { reason, message } => {
            return Some(TokenCheck {
                claims: None,
                ok: false,
                reason: reason.to_string(),
                message: format!("The token was delivered, but {message}"),
                skew_seconds: None,
            });
        }
        Verification::Unavailable { message } => {
            return Some(TokenCheck {
                claims: None,
                ok: false,
                reason: crate::pingone::REASON_JWKS_UNAVAILABLE.to_string(),
                message: format!("The token was delivered unchecked: {message}"),
                skew_seconds: None,
            });
        }
        Verification::Verified { claims, kid } => (claims, kid),
    };
    let skew = claims
        .expires_at
        .map(|exp| exp - expected.expires_at.as_second());
    let granted: &[String] = if claims.scopes.is_empty() {
        expected.response_scopes
    } else {
        &claims.scopes
    };
    let missing: Vec<&str> = expected
        .asked_scopes
        .iter()
        .filter(|s| !granted.contains(s))
        .map(String::as_str)
        .collect();
    let (ok, reason, message) = if let (Some(want), Some(got)) =
        (expected.issuer, claims.issuer.as_deref())
        && want != got
    {
        (
            false,
            REASON_ISSUER_MISMATCH,
            format!("The token's issuer is {got}, not {want}: it is not for this environment"),
        )
    } else if let Some(got) = claims.client_id.as_deref()
        && got != expected.client_id
    {
        (
            false,
            REASON_CLIENT_MISMATCH,
            format!(
                "The token was issued to client {got}, not to {}",
                expected.client_id
            ),
        )
    } else if !missing.is_empty() {
        (
            false,
            REASON_SCOPES_NOT_GRANTED,
            format!(
                "PingOne did not grant the scopes {} asked for in spec.scopes (granted: {})",
                missing.join(" "),
                if granted.is_empty() {
                    "none".to_string()
                } else {
                    granted.join(" ")
                }
            ),
        )
    } else if let Some(s) = skew.filter(|s| s.abs() > MAX_EXPIRY_SKEW_SECONDS) {
        (
            false,
            REASON_EXPIRY_SKEW,
            format!(
                "The token's exp is {s} s {} the expiry expires_in gives: a clock is off (the operator's or PingOne's); the operator renews by expires_in",
                if s > 0 { "after" } else { "before" }
            ),
        )
    } else {
        (
            true,
            REASON_TOKEN_VERIFIED,
            format!(
                "Signed by key {} of the environment's JWKS",
                kid.as_deref().unwrap_or("(unnamed)")
            ),
        )
    };
    Some(TokenCheck {
        claims: Some(to_status(claims)),
        ok,
        reason: reason.to_string(),
        message,
        skew_seconds: skew,
    })
}

fn to_status(c: Claims) -> TokenClaims {
    TokenClaims {
        issuer: c.issuer,
        audience: c.audience,
        client_id: c.client_id,
        scopes: c.scopes,
        environment_id: c.environment_id,
    }
}

impl TokenCheck {
    /// The same claims and verdict (the skew goes to a metric, not to status).
    pub fn same_outcome(&self, other: &TokenCheck) -> bool {
        self.claims == other.claims
            && self.ok == other.ok
            && self.reason == other.reason
            && self.message == other.message
    }
}

/// The check recorded in `status` (for a token checked by an earlier reconcile).
pub fn from_status(status: Option<&PingOneConnectionStatus>) -> Option<TokenCheck> {
    let status = status?;
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == TOKEN_VERIFIED)?;
    Some(TokenCheck {
        claims: status.token_claims.clone(),
        ok: c.status == "True",
        reason: c.reason.clone(),
        message: c.message.clone(),
        skew_seconds: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://auth.pingone.eu/env/as";

    fn claims() -> Claims {
        Claims {
            issuer: Some(ISS.into()),
            audience: vec!["https://api.pingone.eu".into()],
            client_id: Some("client".into()),
            scopes: vec!["read".into()],
            environment_id: Some("env".into()),
            expires_at: Some(10_003_600),
            issued_at: Some(10_000_000),
        }
    }

    fn expected<'a>(asked: &'a [String]) -> Expected<'a> {
        Expected {
            issuer: Some(ISS),
            client_id: "client",
            asked_scopes: asked,
            response_scopes: &[],
            expires_at: Timestamp::from_second(10_003_600).unwrap(),
        }
    }

    fn verified(c: Claims) -> Verification {
        Verification::Verified {
            claims: c,
            kid: Some("k1".into()),
        }
    }

    #[test]
    fn opaque_tokens_give_nothing_to_report() {
        assert_eq!(assess(Verification::Opaque, &expected(&[])), None);
    }

    #[test]
    fn a_verified_token_shows_its_claims() {
        let check = assess(verified(claims()), &expected(&["read".into()])).unwrap();
        assert!(check.ok, "{check:?}");
        assert_eq!(check.reason, REASON_TOKEN_VERIFIED);
        let c = check.claims.unwrap();
        assert_eq!(c.client_id.as_deref(), Some("client"));
        assert_eq!(c.audience, ["https://api.pingone.eu"]);
        assert_eq!(check.skew_seconds, Some(0));
    }

    #[test]
    fn each_problem_has_its_reason() {
        let asked = ["read".to_string(), "write".to_string()];
        let check = assess(verified(claims()), &expected(&asked)).unwrap();
        assert_eq!(check.reason, REASON_SCOPES_NOT_GRANTED);
        assert!(check.message.contains("write") && check.message.contains("granted: read"));

        let mut c = claims();
        c.issuer = Some("https://auth.pingone.eu/other/as".into());
        assert_eq!(
            assess(verified(c), &expected(&[])).unwrap().reason,
            REASON_ISSUER_MISMATCH
        );
        let mut c = claims();
        c.client_id = Some("someone-else".into());
        assert_eq!(
            assess(verified(c), &expected(&[])).unwrap().reason,
            REASON_CLIENT_MISMATCH
        );
        // 61 s late is skew; 60 s is not.
        let mut c = claims();
        c.expires_at = Some(10_003_661);
        let check = assess(verified(c), &expected(&[])).unwrap();
        assert_eq!(check.reason, REASON_EXPIRY_SKEW);
        assert_eq!(check.skew_seconds, Some(61));
        let mut c = claims();
        c.expires_at = Some(10_003_540);
        assert!(assess(verified(c), &expected(&[])).unwrap().ok);

        let check = assess(
            Verification::Invalid {
                reason: crate::pingone::REASON_SIGNATURE_INVALID,
                message: "the signature does not verify".into(),
            },
            &expected(&[]),
        )
        .unwrap();
        assert!(!check.ok && check.claims.is_none());
        assert_eq!(check.reason, "TokenSignatureInvalid");
    }

    #[test]
    fn the_response_scope_counts_when_the_token_has_none() {
        let mut c = claims();
        c.scopes.clear();
        let asked = ["read".to_string()];
        let granted = ["read".to_string()];
        let e = Expected {
            response_scopes: &granted,
            ..expected(&asked)
        };
        assert!(assess(verified(c), &e).unwrap().ok);
    }
}
