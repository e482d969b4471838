//! The shape of the token Secret's data: the key names (`spec.target.keys`) and extra entries
//! rendered from a small template language over the token's fields only
//! (`spec.target.extraEntries`). Pure.
//!
//! A template is literal text with placeholders `{{ .accessToken }}`, `{{ .tokenType }}`,
//! `{{ .expiresAt }}`, `{{ .issuedAt }}` and `{{ .scope }}` (spaces inside the braces
//! optional). Literal text cannot contain `{` or `}`. Nothing else exists: no functions, no
//! access to anything but these five values. The CRD checks the same grammar at apply time.

use std::collections::BTreeMap;

use super::token_secret::{KEY_ACCESS_TOKEN, KEY_EXPIRES_AT, KEY_SCOPE, KEY_TOKEN_TYPE};
use crate::api::TargetSpec;

/// The template grammar as an RE2 regular expression (for the CRD's CEL rule).
pub const TEMPLATE_PATTERN: &str =
    r"^([^{}]|\{\{ *\.(accessToken|tokenType|expiresAt|issuedAt|scope) *\}\})*$";

/// A token field a template may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The access token.
    AccessToken,
    /// Its type (Bearer).
    TokenType,
    /// Its expiry, RFC 3339 UTC.
    ExpiresAt,
    /// When it was issued, RFC 3339 UTC.
    IssuedAt,
    /// The granted scopes, space-separated.
    Scope,
}

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// A token field.
    Field(Field),
}

/// Parses a template, or says what is wrong with it.
pub fn parse(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("{{") {
            let end = after
                .find("}}")
                .ok_or_else(|| "a {{ without its }}".to_string())?;
            let inner = after[..end].trim_matches(' ');
            let field = match inner {
                ".accessToken" => Field::AccessToken,
                ".tokenType" => Field::TokenType,
                ".expiresAt" => Field::ExpiresAt,
                ".issuedAt" => Field::IssuedAt,
                ".scope" => Field::Scope,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{{{other}}}}}; use .accessToken, .tokenType, .expiresAt, .issuedAt or .scope"
                    ));
                }
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Field(field));
            rest = &after[end + 2..];
        } else if c == '{' || c == '}' {
            return Err(format!(
                "a single {c} outside a placeholder (literal braces are not allowed)"
            ));
        } else {
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// The values a template is rendered from.
#[derive(Clone, Copy, Debug)]
pub struct Values<'a> {
    /// The access token.
    pub access_token: &'a str,
    /// Its type.
    pub token_type: &'a str,
    /// Expiry, RFC 3339.
    pub expires_at: &'a str,
    /// Issue time, RFC 3339.
    pub issued_at: &'a str,
    /// Granted scopes, space-separated.
    pub scope: &'a str,
}

/// Renders parsed parts.
pub fn render(parts: &[Part], v: &Values<'_>) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Field(Field::AccessToken) => out.push_str(v.access_token),
            Part::Field(Field::TokenType) => out.push_str(v.token_type),
            Part::Field(Field::ExpiresAt) => out.push_str(v.expires_at),
            Part::Field(Field::IssuedAt) => out.push_str(v.issued_at),
            Part::Field(Field::Scope) => out.push_str(v.scope),
        }
    }
    out
}

/// The data keys of the token Secret and its extra entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Key of the access token.
    pub access_token: String,
    /// Key of the token type.
    pub token_type: String,
    /// Key of the expiry.
    pub expires_at: String,
    /// Key of the granted scopes (written only when scopes were granted).
    pub scope: String,
    /// Extra entries: key and parsed template.
    pub extra: Vec<(String, Vec<Part>)>,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            access_token: KEY_ACCESS_TOKEN.into(),
            token_type: KEY_TOKEN_TYPE.into(),
            expires_at: KEY_EXPIRES_AT.into(),
            scope: KEY_SCOPE.into(),
            extra: Vec::new(),
        }
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Layout {
    /// The layout `target` asks for, or a message naming the key or entry that is wrong.
    pub fn of(target: &TargetSpec) -> Result<Layout, String> {
        let mut layout = Layout::default();
        if let Some(k) = &target.keys {
            let pick = |field: &Option<String>, default: &mut String| {
                if let Some(name) = field {
                    *default = name.clone();
                }
            };
            pick(&k.access_token, &mut layout.access_token);
            pick(&k.token_type, &mut layout.token_type);
            pick(&k.expires_at, &mut layout.expires_at);
            pick(&k.scope, &mut layout.scope);
        }
        for entry in &target.extra_entries {
            let parts = parse(&entry.template).map_err(|why| {
                format!("spec.target.extraEntries[{}].template: {why}", entry.key)
            })?;
            layout.extra.push((entry.key.clone(), parts));
        }
        let mut seen = std::collections::BTreeSet::new();
        for key in layout.keys() {
            if !valid_key(key) {
                return Err(format!(
                    "spec.target: {key:?} is not a valid Secret data key (letters, digits, '-', '_', '.')"
                ));
            }
            if !seen.insert(key) {
                return Err(format!(
                    "spec.target: the data key {key:?} is used twice (keys and extraEntries must all differ)"
                ));
            }
        }
        Ok(layout)
    }

    /// Every data key this layout can write.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        [
            self.access_token.as_str(),
            self.token_type.as_str(),
            self.expires_at.as_str(),
            self.scope.as_str(),
        ]
        .into_iter()
        .chain(self.extra.iter().map(|(k, _)| k.as_str()))
    }

    /// The four key names, for the Secret's annotation: which keys hold the token's fields
    /// (`accessToken,tokenType,expiresAt,scope` order), so a later layout can still find them.
    pub fn annotation(&self) -> String {
        [
            &self.access_token,
            &self.token_type,
            &self.expires_at,
            &self.scope,
        ]
        .map(String::as_str)
        .join(",")
    }

    /// The layout whose key names an annotation records (extra entries are not needed to read
    /// a token); `None` when it is not such a record.
    pub fn from_annotation(text: &str) -> Option<Layout> {
        let keys: Vec<&str> = text.split(',').collect();
        let [a, t, e, s] = keys.as_slice() else {
            return None;
        };
        let layout = Layout {
            access_token: a.to_string(),
            token_type: t.to_string(),
            expires_at: e.to_string(),
            scope: s.to_string(),
            extra: Vec::new(),
        };
        let valid = layout.keys().all(valid_key);
        valid.then_some(layout)
    }

    /// The Secret's data for these values.
    pub fn data(&self, v: &Values<'_>) -> BTreeMap<String, String> {
        let mut data = BTreeMap::new();
        data.insert(self.access_token.clone(), v.access_token.to_string());
        data.insert(self.token_type.clone(), v.token_type.to_string());
        data.insert(self.expires_at.clone(), v.expires_at.to_string());
        if !v.scope.is_empty() {
            data.insert(self.scope.clone(), v.scope.to_string());
        }
        for (key, parts) in &self.extra {
            data.insert(key.clone(), render(parts, v));
        }
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ExtraEntry, TargetKeys};

    const V: Values<'static> = Values {
        access_token: "tok",
        token_type: "Bearer",
        expires_at: "2026-12-01T11:00:00Z",
        issued_at: "2026-12-01T10:00:00Z",
        scope: "a b",
    };

    #[test]
    fn templates_render_the_five_fields_and_nothing_else() {
        let parts = parse("Authorization: {{ .tokenType }} {{.accessToken}}").unwrap();
        assert_eq!(render(&parts, &V), "Authorization: Bearer tok");
        let env = parse("TOKEN={{ .accessToken }}\nEXPIRES_AT={{ .expiresAt }}\nISSUED_AT={{ .issuedAt }}\nSCOPE={{ .scope }}\n").unwrap();
        assert_eq!(
            render(&env, &V),
            "TOKEN=tok\nEXPIRES_AT=2026-12-01T11:00:00Z\nISSUED_AT=2026-12-01T10:00:00Z\nSCOPE=a b\n"
        );
        for bad in [
            "{{ .clientSecret }}",
            "{{ accessToken }}",
            "{{ .accessToken ",
            "{ .accessToken }",
            "a } b",
            "{{ .accessToken | printf }}",
            "{{{ .accessToken }}}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn the_parser_and_the_schema_pattern_agree() {
        // The same grammar in RE2 (the CRD) and here; checked on a spread of inputs with a
        // regex engine of the same syntax.
        let re = regex::Regex::new(TEMPLATE_PATTERN).unwrap();
        for t in [
            "",
            "plain",
            "{{.scope}}",
            "{{   .issuedAt   }}",
            "x{{ .accessToken }}y{{ .tokenType }}",
            "{{ .nope }}",
            "{",
            "}",
            "{{",
            "}}",
            "{{ .scope }",
            "a{b",
            "{{ .scope }}}",
            "ünïcode {{ .scope }}",
        ] {
            assert_eq!(re.is_match(t), parse(t).is_ok(), "{t:?}");
        }
    }

    #[test]
    fn layouts_rename_keys_and_reject_collisions() {
        let mut target = TargetSpec {
            keys: Some(Box::new(TargetKeys {
                access_token: Some("token".into()),
                ..Default::default()
            })),
            extra_entries: vec![ExtraEntry {
                key: "auth-header".into(),
                template: "Authorization: Bearer {{ .accessToken }}".into(),
            }],
            ..Default::default()
        };
        let layout = Layout::of(&target).unwrap();
        let data = layout.data(&V);
        assert_eq!(data["token"], "tok");
        assert_eq!(data["auth-header"], "Authorization: Bearer tok");
        assert!(!data.contains_key("access_token"));
        assert_eq!(layout.annotation(), "token,token_type,expires_at,scope");
        let read = Layout::from_annotation(&layout.annotation()).unwrap();
        assert_eq!(read.access_token, "token");
        assert_eq!(
            Layout::default().annotation(),
            "access_token,token_type,expires_at,scope"
        );
        assert!(Layout::from_annotation("a,b,c").is_none());
        assert!(Layout::from_annotation("a,b,c,d e").is_none());

        target.extra_entries.push(ExtraEntry {
            key: "token".into(),
            template: "x".into(),
        });
        let e = Layout::of(&target).unwrap_err();
        assert!(e.contains("\"token\" is used twice"), "{e}");

        target.extra_entries = vec![ExtraEntry {
            key: "env".into(),
            template: "{{ .password }}".into(),
        }];
        let e = Layout::of(&target).unwrap_err();
        assert!(
            e.contains("extraEntries[env]") && e.contains(".password"),
            "{e}"
        );
    }
}
