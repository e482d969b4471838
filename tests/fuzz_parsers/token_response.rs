//! Near-valid token responses: a PingOne answer with one or more things wrong with it, a model
//! of which of them are usable tokens (RFC 6749 §5.1 and the limits `parse_token_response`
//! documents), and the properties that tie the parser to the model.

use std::time::Duration;

use pingone_operator::pingone::{MAX_EXPIRES_IN, MIN_EXPIRES_IN, SecretString, TokenResponse};
use proptest::prelude::*;

use crate::json::{self, Json, Spelling};

/// A generated response: the document, how it is spelt, and the tokens placed in it (which no
/// error message may quote).
#[derive(Clone, Debug)]
pub struct Case {
    pub document: Json,
    pub spelling: Spelling,
}

impl Case {
    pub fn body(&self) -> Vec<u8> {
        json::write(&self.document, &self.spelling)
    }

    /// Every string that stood at an `access_token` key, long enough that a message could not
    /// contain it by chance.
    pub fn tokens(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.document.strings_under("access_token", &mut out);
        out.retain(|t| t.chars().count() >= 12);
        out
    }
}

/// What a correct parser makes of `case`: the token response, or `None` for a refusal.
pub fn expected(case: &Case) -> Option<TokenResponse> {
    if !json::is_json(&case.document, &case.spelling) {
        return None;
    }
    let doc = &case.document;
    let Some(Json::Str(access_token)) = doc.get("access_token") else {
        return None;
    };
    // RFC 6749 §A.12: access-token = 1*VSCHAR, printable ASCII without space.
    if access_token.is_empty() || !access_token.chars().all(|c| ('!'..='~').contains(&c)) {
        return None;
    }
    let Some(Json::Str(token_type)) = doc.get("token_type") else {
        return None;
    };
    // RFC 6749 §5.1: case-insensitive; anything but Bearer is useless to the pods.
    if !token_type.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let expires_in = seconds(doc.get("expires_in")?)?;
    let scope = match doc.get("scope") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Str(scope)) => scope
            .split(char::is_whitespace)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(_) => return None,
    };
    Some(TokenResponse {
        access_token: SecretString::from(access_token.as_str()),
        token_type: token_type.clone(),
        expires_in,
        scope,
    })
}

/// A whole number of seconds within the documented bounds: an integer literal, a float literal
/// whose double is whole, or a string of ASCII digits.
fn seconds(value: &Json) -> Option<Duration> {
    let (min, max) = (
        MIN_EXPIRES_IN.as_secs() as u128,
        MAX_EXPIRES_IN.as_secs() as u128,
    );
    let in_bounds = |n: u128| {
        (min..=max)
            .contains(&n)
            .then(|| Duration::from_secs(n as u64))
    };
    match value {
        Json::Number(text) if !text.contains(['.', 'e', 'E']) => {
            // Negative, or too many digits for u128: out of bounds either way.
            text.parse::<u128>().ok().and_then(in_bounds)
        }
        Json::Number(text) => {
            let float: f64 = text.parse().ok()?;
            (float.fract() == 0.0 && float >= min as f64 && float <= max as f64)
                .then(|| Duration::from_secs(float as u64))
        }
        Json::Str(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            // Leading zeros are fine; more digits than u128 holds is out of bounds.
            let significant = text.trim_start_matches('0');
            if significant.len() > 30 {
                None
            } else {
                in_bounds(significant.parse::<u128>().unwrap_or(0))
            }
        }
        _ => None,
    }
}

/// A JWT-shaped token, as PingOne issues.
fn jwt() -> BoxedStrategy<String> {
    "eyJ[A-Za-z0-9_-]{8,30}\\.[A-Za-z0-9_-]{8,60}\\.[A-Za-z0-9_-]{8,40}".boxed()
}

/// Characters that break a token, a number or a keyword where they are slipped in.
const ODD_CHARS: &[char] = &[
    ' ',
    '\t',
    '\n',
    '\r',
    '\0',
    '\u{1b}',
    '\u{7f}',
    '\u{85}',
    '\u{a0}',
    '\u{200b}',
    '\u{202e}',
    '\u{2028}',
    '\u{feff}',
    'é',
    'ß',
    'İ',
    '\u{10ffff}',
    '😀',
    '"',
    '\\',
];

fn insert_odd(text: String) -> BoxedStrategy<String> {
    let len = text.chars().count();
    (0..=len, prop::sample::select(ODD_CHARS))
        .prop_map(move |(at, c)| {
            let mut chars: Vec<char> = text.chars().collect();
            chars.insert(at, c);
            chars.into_iter().collect()
        })
        .boxed()
}

/// Values of the wrong JSON type, holding `like` somewhere.
fn wrong_type(like: Json) -> BoxedStrategy<Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i32>().prop_map(Json::int),
        Just(Json::Array(vec![like.clone()])),
        Just(Json::Array(vec![])),
        Just(Json::object([("value", like)])),
        Just(Json::Object(vec![])),
    ]
    .boxed()
}

fn access_token() -> BoxedStrategy<Json> {
    let usable = prop_oneof![
        12 => jwt().prop_map(Json::Str),
        // Any visible ASCII, quotes and backslashes included.
        3 => "[!-~]{1,40}".prop_map(Json::Str),
        1 => (jwt(), 100usize..300).prop_map(|(t, n)| Json::Str(t.repeat(n))),
    ];
    let broken = prop_oneof![
        1 => Just(Json::str("")),
        3 => jwt().prop_flat_map(insert_odd).prop_map(Json::Str),
        1 => "\\PC{1,20}".prop_map(Json::Str),
        2 => jwt().prop_flat_map(|t| wrong_type(Json::Str(t))),
        1 => json::broken(),
    ];
    prop_oneof![6 => usable, 1 => broken].boxed()
}

fn token_type(token: Json) -> BoxedStrategy<Json> {
    let any_case = prop::collection::vec(any::<bool>(), 6).prop_map(|upper| {
        "bearer"
            .chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect::<String>()
    });
    let usable = prop_oneof![
        3 => prop::sample::select(vec!["Bearer", "bearer", "BEARER"]).prop_map(Json::str),
        1 => any_case.prop_map(Json::Str),
    ];
    let broken = prop_oneof![
        3 => prop::sample::select(vec![
            "", " ", "Bearer ", " Bearer", "Bearer\u{0}", "Bear", "Bearerx", "Bearer Bearer",
            "DPoP", "MAC", "N_A", "urn:ietf:params:oauth:token-type:jwt",
            // Cyrillic a, fullwidth, a zero-width space, a dotted capital I.
            "Be\u{430}rer", "\u{ff22}\u{ff25}\u{ff21}\u{ff32}\u{ff25}\u{ff32}", "Bea\u{200b}rer",
            "BEARER\u{130}",
        ])
        .prop_map(Json::str),
        2 => insert_odd("Bearer".to_string()).prop_map(Json::Str),
        // The token where the type belongs: the message must not quote it.
        1 => (Just(token), "\\PC{0,8}").prop_map(|(t, s)| match t {
            Json::Str(t) => Json::Str(format!("{s}{t}{s}")),
            other => other,
        }),
        1 => (1usize..2000).prop_map(|n| Json::Str("Bearer".repeat(n))),
        2 => wrong_type(Json::str("Bearer")),
        1 => json::broken(),
    ];
    prop_oneof![6 => usable, 1 => broken].boxed()
}

/// Number literals around the bounds and beyond, in integer and float spellings.
fn expires_in() -> BoxedStrategy<Json> {
    let max = MAX_EXPIRES_IN.as_secs();
    let typical = || {
        prop::sample::select(vec![
            1u64,
            2,
            59,
            60,
            300,
            3599,
            3600,
            86_400,
            2_592_000,
            max - 1,
            max,
        ])
    };
    let usable = prop_oneof![
        8 => typical().prop_map(Json::int),
        4 => (1..=max).prop_map(Json::int),
        // Whole floats in several spellings.
        2 => typical().prop_map(|n| Json::Number(format!("{n}.0"))),
        1 => (typical(), 0usize..4).prop_map(|(n, k)| Json::Number(format!("{n}{}E-{k}", "0".repeat(k)))),
        1 => (1u64..999, 0u32..6).prop_map(|(m, e)| Json::Number(format!("{m}e{e}"))),
        1 => (1u64..999, 1u32..4).prop_map(|(m, e)| Json::Number(format!("{}.{}e+{e}", m / 10 + 1, m % 10))),
        // Digits in a string, leading zeros allowed.
        2 => (typical(), 0usize..40).prop_map(|(n, z)| Json::Str(format!("{}{n}", "0".repeat(z)))),
    ];
    let broken = prop_oneof![
        3 => prop::sample::select(vec!["0", "-0", "-1", "-3600", "-9223372036854775808",
            "18446744073709551615", "18446744073709551616",
            "340282366920938463463374607431768211456"])
            .prop_map(Json::int),
        2 => (max + 1..u64::MAX).prop_map(Json::int),
        1 => any::<i64>().prop_map(Json::int),
        1 => "[1-9][0-9]{20,400}".prop_map(Json::Number),
        // Fractions, tiny and huge values, negative zero.
        3 => (0u64..1_000_000_000, 1u32..999_999).prop_map(|(n, f)| Json::Number(format!("{n}.{f}"))),
        2 => prop::sample::select(vec!["0.0", "-0.0", "0.5", "0.999999", "1.5", "-1.0",
            "3600.5", "1e-7", "1e30", "1E308", "1e400", "-1e400", "1e-400", "2.5e-1"])
            .prop_map(|n| Json::Number(n.to_string())),
        3 => prop::sample::select(vec![
            "0", "-1", "+3600", " 3600", "3600 ", "3600.0", "1e3", "", "0x10",
            "\u{663}\u{666}\u{660}\u{660}", "\u{ff13}\u{ff16}\u{ff10}\u{ff10}", "3600s",
            "99999999999999999999999999999999999999999", "00000000000000000000000000000000000000000000",
        ])
        .prop_map(Json::str),
        1 => "[0-9]{1,12}".prop_map(Json::Str),
        1 => insert_odd("3600".to_string()).prop_map(Json::Str),
        2 => wrong_type(Json::int(3600)),
        2 => prop::sample::select(vec![&b"+1"[..], b"01", b".5", b"1.", b"0x10", b"1e", b"-",
            b"--1", b"1_000", b"3600 3600"])
            .prop_map(Json::Broken),
    ];
    prop_oneof![3 => usable, 1 => broken].boxed()
}

fn scope(token: Json) -> BoxedStrategy<Json> {
    prop_oneof![
        6 => prop::sample::select(vec!["", "read", "read write", "p1:read:user p1:update:user"])
            .prop_map(Json::str),
        2 => Just(Json::Null),
        3 => "[a-z:]{1,8}([ \t\n\u{a0}\u{3000}\u{2028}]{1,3}[a-z:]{1,8}){0,4}[ \t]{0,2}"
            .prop_map(Json::Str),
        1 => "\\PC{0,30}".prop_map(Json::Str),
        1 => ".{0,30}".prop_map(Json::Str),
        1 => (1usize..2000).prop_map(|n| Json::Str("scope ".repeat(n))),
        1 => Just(token),
        2 => wrong_type(Json::str("read")),
        1 => json::broken(),
    ]
    .boxed()
}

/// Members a real or a confused server adds, some of them close to the ones that count.
fn extra_members(token: Json) -> BoxedStrategy<Vec<(String, Json)>> {
    let member = prop_oneof![
        2 => Just(("id_token".to_string(), token.clone())),
        1 => Just(("refresh_token".to_string(), token)),
        2 => ("[a-z_]{1,12}", json::any_value()),
        // Keys that differ from the real ones only in case, padding, or an invisible character.
        2 => (prop::sample::select(vec![
            "Access_Token", "ACCESS_TOKEN", "access_token ", " access_token", "access\u{200b}_token",
            "accessToken", "access-token", "token_type\u{0}", "Expires_In", "expiresIn", "SCOPE",
        ]), json::any_value()).prop_map(|(k, v)| (k.to_string(), v)),
        1 => prop::sample::select(vec!["error", "error_description"])
            .prop_map(|k| (k.to_string(), Json::str("invalid_client"))),
        // Shallow nesting, and nesting past any sane parser's limit.
        1 => prop_oneof![1usize..30, 200usize..260]
            .prop_map(|depth| ("deep".to_string(), json::nest(Json::Null, depth))),
        1 => json::broken().prop_map(|b| ("broken".to_string(), b)),
    ];
    prop::collection::vec(member, 0..4).boxed()
}

/// A member that may be missing, or spelt twice (the earlier value first).
fn member(
    key: &'static str,
    value: BoxedStrategy<Json>,
    dup: BoxedStrategy<Json>,
) -> BoxedStrategy<Vec<(String, Json)>> {
    prop_oneof![
        30 => value.clone().prop_map(move |v| vec![(key.to_string(), v)]),
        2 => Just(Vec::new()),
        1 => (dup, value).prop_map(move |(first, last)| vec![(key.to_string(), first), (key.to_string(), last)]),
    ].boxed()
}

/// Near-valid token responses.
pub fn case() -> BoxedStrategy<Case> {
    access_token()
        .prop_flat_map(|token| {
            let members = (
                member("access_token", Just(token.clone()).boxed(), access_token().boxed()),
                member("token_type", token_type(token.clone()).boxed(), token_type(token.clone()).boxed()),
                member("expires_in", expires_in().boxed(), expires_in().boxed()),
                // scope is optional, so missing is as good as present.
                prop_oneof![
                    1 => Just(Vec::new()),
                    3 => member("scope", scope(token.clone()).boxed(), scope(token.clone()).boxed()),
                ],
                extra_members(token),
                any::<prop::sample::Index>(),
            );
            let shape = prop_oneof![
                40 => Just(Shape::Object),
                1 => Just(Shape::InArray),
                1 => Just(Shape::Nested),
                1 => Just(Shape::Scalar),
            ];
            (members, shape, json::spelling())
        })
        .prop_map(|((a, b, c, d, extras, at), shape, spelling)| {
            let mut members: Vec<(String, Json)> = [a, b, c, d].concat();
            // Extras go in one place among the real members: order must not matter.
            let at = at.index(members.len() + 1);
            members.splice(at..at, extras);
            let object = Json::Object(members);
            let document = match shape {
                Shape::Object => object,
                Shape::InArray => Json::Array(vec![object]),
                Shape::Nested => Json::object([("data", object)]),
                Shape::Scalar => object.get("access_token").cloned().unwrap_or(Json::Null),
            };
            Case { document, spelling }
        }).boxed()
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    Object,
    InArray,
    Nested,
    Scalar,
}
