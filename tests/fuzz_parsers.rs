//! Property-based fuzzing of everything that parses untrusted input: PingOne's token and error
//! responses, Retry-After, credential values, durations. Bounded: a fixed number of cases each.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use pingone_operator::api::{CredentialsSecretRef, parse_go_duration};
use pingone_operator::controller::credentials;
use pingone_operator::pingone::{
    ExposeSecret, MAX_EXPIRES_IN, MIN_EXPIRES_IN, classify_error_response, parse_retry_after,
    parse_token_response,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 20_000,
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
    #![proptest_config(config())]

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
        let _ = classify_error_response(status, retry.map(Duration::from_secs), &body, &secret);
        // A body that quotes the secret must not get it into the message.
        let quoting = serde_json::to_vec(&json!({
            "error": "invalid_client",
            "error_description": format!("{description}{secret}{description}"),
        })).unwrap();
        let e = classify_error_response(status, None, &quoting, &secret);
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
            ])),
            ..Default::default()
        };
        let reference = CredentialsSecretRef {
            name: "creds".into(),
            client_id_key: "clientId".into(),
            client_secret_key: "clientSecret".into(),
        };
        if let (Err(e), Ok(text)) = (credentials::read(Some(&s), &reference, "ns"), String::from_utf8(secret))
            && text.len() >= 4
        {
            prop_assert!(!e.to_string().contains(&text));
        }
    }

    #[test]
    fn duration_parser_never_panics(text in ".{0,30}") {
        let _ = parse_go_duration(&text);
    }
}
