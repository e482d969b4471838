//! Property-based fuzzing of everything that parses untrusted input: PingOne's token and error
//! responses, Retry-After, credential values, durations. Bounded: a fixed number of cases each.
//!
//! Random bytes only show that a parser does not panic; most of them fail at the first byte. The
//! near-valid generators (`token_response`, `error_response`, `retry_after`) start from what
//! PingOne sends and change one or a few things, and each has a model of the right answer
//! written from the RFCs and the parsers' documented contracts, so that a parser that accepts too
//! much or too little fails here.

mod error_response;
mod json;
mod retry_after;
mod token_response;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use pingone_operator::api::{CredentialsSecretRef, TokenEndpointAuthMethod, parse_go_duration};
use pingone_operator::controller::credentials;
use pingone_operator::pingone::{
    ErrorContext, MAX_EXPIRES_IN, MIN_EXPIRES_IN, classify_error_response, parse_retry_after,
    parse_token_response,
};
use pingone_operator::pingone::{ExposeSecret, TokenError, TokenResponse};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

/// `cases` per property: enough to reach the rarer mutations every run, few enough that the
/// whole file runs in a few seconds in a debug build on two busy cores.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// JSON values of any shape, to put in the fields the parser looks at.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        "[0-9]{1,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config(4_000))]

    #[test]
    fn token_response_parser_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_token_response(&body);
    }

    #[test]
    fn token_response_parser_accepts_only_sound_tokens(
        access_token in any_json(),
        token_type in any_json(),
        expires_in in any_json(),
        scope in any_json(),
        drop in prop::collection::vec(any::<bool>(), 4),
    ) {
        let mut obj = serde_json::Map::new();
        for (i, (k, v)) in [("access_token", access_token), ("token_type", token_type), ("expires_in", expires_in), ("scope", scope)].into_iter().enumerate() {
            if !drop[i] {
                obj.insert(k.into(), v);
            }
        }
        let body = serde_json::to_vec(&Value::Object(obj)).unwrap();
        if let Ok(t) = parse_token_response(&body) {
            prop_assert!(!t.access_token.expose_secret().is_empty());
            prop_assert!(t.token_type.eq_ignore_ascii_case("bearer"));
            prop_assert!(t.expires_in >= MIN_EXPIRES_IN && t.expires_in <= MAX_EXPIRES_IN);
        }
    }

    #[test]
    fn error_classification_never_panics_nor_echoes_the_secret(
        status in 100u16..600,
        retry in prop::option::of(0u64..100_000),
        body in prop::collection::vec(any::<u8>(), 0..300),
        secret in "[A-Za-z0-9._~+/=-]{8,40}",
        description in ".{0,100}",
    ) {
        let _ = classify_error_response(status, retry.map(Duration::from_secs), &body, &context(&secret));
        // A body that quotes the secret must not get it into the message.
        let quoting = serde_json::to_vec(&json!({
            "error": "invalid_client",
            "error_description": format!("{description}{secret}{description}"),
        })).unwrap();
        let e = classify_error_response(status, None, &quoting, &context(&secret));
        prop_assert!(!e.to_string().contains(&secret), "{}", e);
    }

    #[test]
    fn retry_after_parser_never_panics_and_stays_bounded(value in ".{0,60}") {
        if let Some(d) = parse_retry_after(&value, jiff::Timestamp::now()) {
            prop_assert!(d <= Duration::from_secs(24 * 3600));
        }
    }

    #[test]
    fn credentials_reader_never_panics_and_never_echoes_values(
        id in prop::collection::vec(any::<u8>(), 0..64),
        secret in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let s = Secret {
            data: Some(BTreeMap::from([
                ("clientId".to_string(), ByteString(id)),
                ("clientSecret".to_string(), ByteString(secret.clone())),
                ("privateKey".to_string(), ByteString(secret.clone())),
            ])),
            ..Default::default()
        };
        let reference = CredentialsSecretRef {
            name: "creds".into(),
            client_id_key: "clientId".into(),
            client_secret_key: "clientSecret".into(),
            private_key_key: "privateKey".into(),
            key_id_key: "keyId".into(),
        };
        for method in [TokenEndpointAuthMethod::ClientSecretPost, TokenEndpointAuthMethod::PrivateKeyJwt] {
            if let (Err(e), Ok(text)) = (credentials::read(Some(&s), &reference, "ns", method, None), String::from_utf8(secret.clone()))
                && text.len() >= 4
            {
                prop_assert!(!e.to_string().contains(&text));
            }
        }
    }

    #[test]
    fn duration_parser_never_panics(text in ".{0,30}") {
        let _ = parse_go_duration(&text);
    }
}

/// Whether `error`, as a person or a log would see it, contains `needle`.
/// A request to a regional domain that authenticated with `secret`.
fn context(secret: &str) -> ErrorContext<'_> {
    ErrorContext::secret(
        "auth.pingone.eu",
        "cd91070f-c371-480e-80b2-753c735f8aa1",
        secret,
    )
}

fn says(error: &TokenError, needle: &str) -> bool {
    error.to_string().contains(needle) || format!("{error:?}").contains(needle)
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn near_valid_token_responses_are_accepted_exactly_when_valid(case in token_response::case()) {
        let body = case.body();
        let parsed = parse_token_response(&body);
        let expected = token_response::expected(&case);
        match (&parsed, &expected) {
            (Ok(token), _) => {
                prop_assert!(!token.access_token.expose_secret().is_empty());
                prop_assert!((MIN_EXPIRES_IN..=MAX_EXPIRES_IN).contains(&token.expires_in));
                // Field by field: the token is a secret type without equality.
                let fields = |t: &TokenResponse| {
                    (t.access_token.expose_secret().to_string(), t.token_type.clone(), t.expires_in, t.scope.clone())
                };
                prop_assert_eq!(Some(fields(token)), expected.as_ref().map(fields), "accepted {:?}", String::from_utf8_lossy(&body));
            }
            (Err(error), None) => {
                for token in case.tokens() {
                    prop_assert!(!says(error, &token), "{:?} quotes the token", error);
                }
            }
            (Err(error), Some(_)) => {
                prop_assert!(false, "refused {:?}: {}", String::from_utf8_lossy(&body), error);
            }
        }
    }

    #[test]
    fn near_valid_error_responses_are_classified_and_never_quote_the_secret(case in error_response::case()) {
        let error = classify_error_response(case.status, case.retry_after, &case.bytes(), &context(&case.secret));
        let expected = error_response::expected(&case);
        let message = error.to_string();
        prop_assert!(!says(&error, &case.secret), "{:?} quotes the secret", error);
        prop_assert_eq!(error.reason(), expected.reason, "{}", message);
        prop_assert_eq!(error.status(), Some(case.status));
        prop_assert_eq!(error.retry_after(), expected.retry_after);
        // One line of bounded length, whatever the body held.
        prop_assert!(!message.chars().any(char::is_control), "{:?}", message);
        prop_assert!(message.chars().count() <= 800, "{} characters", message.chars().count());
        // Plain server text is passed on as it is: a sanitiser that drops everything fails here.
        for plain in [&expected.plain_code, &expected.plain_description].into_iter().flatten() {
            prop_assert!(message.contains(plain.as_str()), "{:?} lacks {:?}", message, plain);
        }
    }

    #[test]
    fn retry_after_values_give_the_wait_they_spell(case in retry_after::case()) {
        let parsed = parse_retry_after(&case.value, case.now);
        if let Some(wait) = parsed {
            prop_assert!(wait <= pingone_operator::pingone::MAX_RETRY_AFTER);
        }
        if let Some(expected) = case.expected {
            prop_assert_eq!(parsed, expected, "{:?} at {}", case.value, case.now);
        }
    }
}

/// The share of generated cases the model calls valid: properties that compare the parser with
/// the model say little if nearly every case is refused, or nearly none.
fn valid_share<S: Strategy>(strategy: S, valid: impl Fn(&S::Value) -> bool) -> f64 {
    let mut runner = TestRunner::deterministic();
    let n = 500;
    let hits = (0..n)
        .filter(|_| valid(&strategy.new_tree(&mut runner).expect("a case").current()))
        .count();
    hits as f64 / n as f64
}

#[test]
fn the_generators_mix_valid_and_invalid_cases() {
    let share = valid_share(token_response::case(), |c| {
        token_response::expected(c).is_some()
    });
    assert!(
        (0.25..=0.75).contains(&share),
        "valid token responses: {share}"
    );
    let share = valid_share(token_response::case(), |c| !c.tokens().is_empty());
    assert!(share >= 0.5, "cases with a token to look for: {share}");
    let share = valid_share(error_response::case(), |c| {
        error_response::expected(c).plain_description.is_some()
    });
    assert!(
        (0.05..=0.85).contains(&share),
        "plain descriptions: {share}"
    );
    let share = valid_share(retry_after::case(), |c| matches!(c.expected, Some(Some(_))));
    assert!(
        (0.3..=0.9).contains(&share),
        "readable Retry-After values: {share}"
    );
}
