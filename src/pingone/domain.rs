//! Auth domains: which hosts may receive credentials, and the token URL for each.

use std::collections::BTreeSet;
use std::net::IpAddr;

use reqwest::Url;

use super::error::{ClientBuildError, TokenError, sanitize_text};

/// PingOne's regional auth domains. A token URL on one of these carries the environment id as
/// its first path segment.
pub const REGIONAL_AUTH_DOMAINS: [&str; 6] = [
    "auth.pingone.com",
    "auth.pingone.eu",
    "auth.pingone.ca",
    "auth.pingone.com.au",
    "auth.pingone.sg",
    "auth.pingone.asia",
];

/// Whether `domain` (already normalised: lowercase, no trailing dot) is a regional domain.
fn is_regional_normalised(domain: &str) -> bool {
    REGIONAL_AUTH_DOMAINS.contains(&domain)
}

/// Whether `domain` is one of PingOne's regional auth domains (case-insensitive, a trailing dot
/// ignored).
pub fn is_regional(domain: &str) -> bool {
    normalize_domain(domain).is_ok_and(|d| is_regional_normalised(&d))
}

/// Checks that `domain` is a plain DNS host name and returns it lowercased without a trailing
/// dot. On failure returns what is wrong with it.
///
/// Ports, paths, user info, schemes and IP literals are refused: the allow-list compares host
/// names, and any of those would let a value slip past it or change where credentials go.
pub fn normalize_domain(domain: &str) -> Result<String, &'static str> {
    if domain.is_empty() {
        return Err("it is empty");
    }
    if domain.contains("://") {
        return Err("give the host name only, without a scheme such as https://");
    }
    if domain.contains('@') {
        return Err("it must not contain user info (@)");
    }
    if domain.contains(['/', '?', '#', '\\']) {
        return Err("give the host name only, without a path, query or fragment");
    }
    if domain.starts_with('[') || domain.parse::<IpAddr>().is_ok() {
        return Err("IP addresses are not allowed, give a DNS host name");
    }
    if domain.contains(':') {
        return Err("it must not contain a port");
    }
    if !domain.is_ascii() {
        return Err("it must be ASCII (write internationalised names in their xn-- form)");
    }
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    if trimmed.len() > 253 {
        return Err("it is longer than 253 characters");
    }
    let lower = trimmed.to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err("it has an empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("it may contain only letters, digits, hyphens and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with a hyphen");
        }
    }
    // An all-numeric last label is how IPv4 literals in their odd forms ("127.1", "0x7f.1"
    // aside) look; no real top-level domain is numeric.
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("IP addresses are not allowed, give a DNS host name");
    }
    Ok(lower)
}

/// Normalises an auth domain from a request, as a [`TokenError`].
fn normalize_auth_domain(domain: &str) -> Result<String, TokenError> {
    normalize_domain(domain).map_err(|why| TokenError::InvalidAuthDomain {
        domain: sanitize_text(domain, &[]),
        why,
    })
}

/// Whether `id` has the form of a UUID (8-4-4-4-12 hex digits). Upper case is tolerated here;
/// the CRD schema already insists on PingOne's lowercase form.
pub fn is_environment_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The token endpoint URL for an auth domain and environment:
/// `https://{domain}/{environmentId}/as/token` for a regional domain,
/// `https://{domain}/as/token` for a custom domain (whose host already identifies the
/// environment, so `environment_id` is not used or checked then).
///
/// This only builds the URL; whether the domain may receive credentials is
/// [`AuthDomainPolicy::check`]'s decision.
pub fn token_url(auth_domain: &str, environment_id: &str) -> Result<Url, TokenError> {
    let domain = normalize_auth_domain(auth_domain)?;
    token_url_normalised(&domain, environment_id)
}

/// [`token_url`] for a domain already normalised by [`normalize_domain`].
pub(crate) fn token_url_normalised(domain: &str, environment_id: &str) -> Result<Url, TokenError> {
    let text = if is_regional_normalised(domain) {
        if !is_environment_id(environment_id) {
            return Err(TokenError::InvalidEnvironmentId {
                environment_id: sanitize_text(environment_id, &[]),
            });
        }
        format!("https://{domain}/{environment_id}/as/token")
    } else {
        format!("https://{domain}/as/token")
    };
    let url = Url::parse(&text).map_err(|_| TokenError::InvalidAuthDomain {
        domain: domain.to_owned(),
        why: "it does not form a valid URL",
    })?;
    // Belt and braces: the validated name must be exactly the host the URL points at.
    if url.host_str() != Some(domain) || url.port().is_some() {
        return Err(TokenError::InvalidAuthDomain {
            domain: domain.to_owned(),
            why: "it does not form a valid URL",
        });
    }
    Ok(url)
}

/// Which auth domains may receive client credentials: the six regional PingOne domains plus the
/// custom domains the cluster admin lists (`--allowed-auth-domains`).
///
/// Comparison ignores case and a trailing dot. Anything else is refused with
/// [`TokenError::AuthDomainNotAllowed`] before any I/O, so a connection cannot be used to send a
/// worker application's secret to an arbitrary host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthDomainPolicy {
    extra: BTreeSet<String>,
}

impl AuthDomainPolicy {
    /// The regional domains only.
    pub fn regional_only() -> Self {
        Self::default()
    }

    /// The regional domains plus `extra` custom domains. Each entry must be a plain host name.
    pub fn new<I, S>(extra: I) -> Result<Self, ClientBuildError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for entry in extra {
            let entry = entry.as_ref();
            let domain =
                normalize_domain(entry).map_err(|why| ClientBuildError::InvalidAllowedDomain {
                    domain: sanitize_text(entry, &[]),
                    why,
                })?;
            if !is_regional_normalised(&domain) {
                set.insert(domain);
            }
        }
        Ok(Self { extra: set })
    }

    /// The custom domains allowed in addition to the regional ones (normalised, sorted).
    pub fn custom_domains(&self) -> impl Iterator<Item = &str> {
        self.extra.iter().map(String::as_str)
    }

    /// Ok when `domain` is a plain host name that may receive credentials;
    /// [`TokenError::InvalidAuthDomain`] or [`TokenError::AuthDomainNotAllowed`] otherwise.
    pub fn check(&self, domain: &str) -> Result<(), TokenError> {
        self.allowed(domain).map(|_| ())
    }

    /// Like [`AuthDomainPolicy::check`], returning the normalised domain.
    pub(crate) fn allowed(&self, domain: &str) -> Result<String, TokenError> {
        let domain = normalize_auth_domain(domain)?;
        if is_regional_normalised(&domain) || self.extra.contains(&domain) {
            Ok(domain)
        } else {
            Err(TokenError::AuthDomainNotAllowed { domain })
        }
    }

    /// The token URL for an allowed domain: the policy check, then [`token_url`].
    pub fn token_url(&self, auth_domain: &str, environment_id: &str) -> Result<Url, TokenError> {
        let domain = self.allowed(auth_domain)?;
        token_url_normalised(&domain, environment_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "cd91070f-c371-480e-80b2-753c735f8aa1";

    #[test]
    fn regional_token_urls_carry_the_environment() {
        for domain in REGIONAL_AUTH_DOMAINS {
            let url = token_url(domain, ENV).map(|u| u.to_string());
            assert_eq!(url, Ok(format!("https://{domain}/{ENV}/as/token")));
        }
    }

    #[test]
    fn regional_domains_match_case_insensitively_with_trailing_dot() {
        let url = token_url("AUTH.PingOne.EU.", ENV).map(|u| u.to_string());
        assert_eq!(url, Ok(format!("https://auth.pingone.eu/{ENV}/as/token")));
        assert!(is_regional("Auth.PingOne.Com.AU."));
        assert!(!is_regional("pingone.eu"));
        assert!(!is_regional("auth.pingone.eu.evil.com"));
    }

    #[test]
    fn custom_domain_has_no_environment_in_path() {
        let url = token_url("login.example.com", ENV).map(|u| u.to_string());
        assert_eq!(url, Ok("https://login.example.com/as/token".to_string()));
        // The environment id is not part of a custom domain's URL, so it is not checked.
        let url = token_url("login.example.com", "").map(|u| u.to_string());
        assert_eq!(url, Ok("https://login.example.com/as/token".to_string()));
    }

    #[test]
    fn regional_domain_needs_a_uuid_environment() {
        for bad in [
            "",
            "not-a-uuid",
            "../../admin",
            "cd91070f-c371-480e-80b2-753c735f8aa1/x",
            "cd91070fxc371-480e-80b2-753c735f8aa1",
        ] {
            let result = token_url("auth.pingone.eu", bad);
            assert!(
                matches!(result, Err(TokenError::InvalidEnvironmentId { .. })),
                "{bad}: {result:?}"
            );
        }
        assert!(is_environment_id("CD91070F-C371-480E-80B2-753C735F8AA1"));
    }

    #[test]
    fn invalid_host_names_are_rejected() {
        let cases = [
            ("", "empty"),
            ("auth.pingone.eu:443", "port"),
            ("auth.pingone.eu/path", "path"),
            ("https://auth.pingone.eu", "scheme"),
            ("user@auth.pingone.eu", "user info"),
            ("user:pw@auth.pingone.eu", "user info"),
            ("127.0.0.1", "IP"),
            ("10.1.2.3", "IP"),
            ("127.1", "IP"),
            ("[::1]", "IP"),
            ("::1", "IP"),
            ("auth..pingone.eu", "empty label"),
            (".auth.pingone.eu", "empty label"),
            ("auth.pingone.eu..", "empty label"),
            ("auth_x.example.com", "letters"),
            ("-auth.example.com", "hyphen"),
            ("auth.example-.com", "hyphen"),
            ("auth example.com", "letters"),
            ("auth.pingone.eu?x=1", "query"),
            ("bücher.example", "ASCII"),
        ];
        for (domain, expected) in cases {
            match normalize_domain(domain) {
                Err(why) => assert!(why.contains(expected), "{domain:?}: {why}"),
                Ok(ok) => panic!("{domain:?} accepted as {ok}"),
            }
            let error = token_url(domain, ENV);
            assert!(
                matches!(error, Err(TokenError::InvalidAuthDomain { .. })),
                "{domain:?}"
            );
        }
        let long_label = format!("{}.example.com", "a".repeat(64));
        assert!(normalize_domain(&long_label).is_err());
        let long_name = format!("{}com", "a.".repeat(126));
        assert!(normalize_domain(&long_name).is_err());
    }

    #[test]
    fn valid_host_names_are_normalised() {
        assert_eq!(
            normalize_domain("Login.Example.COM."),
            Ok("login.example.com".to_string())
        );
        assert_eq!(
            normalize_domain("xn--bcher-kva.example"),
            Ok("xn--bcher-kva.example".to_string())
        );
        assert_eq!(
            normalize_domain("sso-1.example.io"),
            Ok("sso-1.example.io".to_string())
        );
        assert_eq!(
            normalize_domain("pingone-mock"),
            Ok("pingone-mock".to_string())
        );
    }

    #[test]
    fn policy_allows_regional_and_listed_domains_only() {
        let policy = AuthDomainPolicy::new(["Login.Example.com.", "auth.pingone.eu"]).unwrap();
        assert_eq!(
            policy.custom_domains().collect::<Vec<_>>(),
            ["login.example.com"]
        );
        for domain in REGIONAL_AUTH_DOMAINS {
            assert_eq!(policy.check(domain), Ok(()));
            assert_eq!(policy.check(&domain.to_uppercase()), Ok(()));
            assert_eq!(policy.check(&format!("{domain}.")), Ok(()));
        }
        assert_eq!(policy.check("login.example.com"), Ok(()));
        assert_eq!(policy.check("LOGIN.EXAMPLE.COM."), Ok(()));
        assert_eq!(
            policy.check("evil.example.com"),
            Err(TokenError::AuthDomainNotAllowed {
                domain: "evil.example.com".into()
            })
        );
        assert_eq!(
            policy.check("Example.com"),
            Err(TokenError::AuthDomainNotAllowed {
                domain: "example.com".into()
            })
        );
        assert!(matches!(
            policy.check("login.example.com:8443"),
            Err(TokenError::InvalidAuthDomain { .. })
        ));
        assert_eq!(
            AuthDomainPolicy::regional_only().check("login.example.com"),
            Err(TokenError::AuthDomainNotAllowed {
                domain: "login.example.com".into()
            })
        );
    }

    #[test]
    fn policy_token_url_checks_before_building() {
        let policy = AuthDomainPolicy::new(["login.example.com"]).unwrap();
        assert_eq!(
            policy
                .token_url("login.example.com", ENV)
                .map(|u| u.to_string()),
            Ok("https://login.example.com/as/token".to_string())
        );
        assert!(matches!(
            policy.token_url("other.example.com", ENV),
            Err(TokenError::AuthDomainNotAllowed { .. })
        ));
    }

    #[test]
    fn policy_rejects_invalid_entries() {
        let error = AuthDomainPolicy::new(["ok.example.com", "bad.example.com:443"]).unwrap_err();
        assert!(
            matches!(error, ClientBuildError::InvalidAllowedDomain { ref domain, .. } if domain == "bad.example.com:443")
        );
        assert!(error.to_string().contains("port"), "{error}");
    }

    #[test]
    fn invalid_domain_message_is_sanitised() {
        let error = token_url("a\nb", ENV).unwrap_err();
        assert!(!error.to_string().contains('\n'));
    }
}
