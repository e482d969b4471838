//! `Retry-After` values (RFC 9110 §10.2.3): delay-seconds and IMF-fixdate, near misses of both,
//! and the obsolete date forms; what `parse_retry_after` must make of each.

use std::time::Duration;

use jiff::Timestamp;
use pingone_operator::pingone::MAX_RETRY_AFTER;
use proptest::prelude::*;

/// A generated header value and the moment it is read at.
#[derive(Clone, Debug)]
pub struct Case {
    pub value: String,
    pub now: Timestamp,
    /// The wait a correct parser returns; `None` inside: no wait can be read from the value.
    /// `None` outside: the value is in a form the model does not decide (only the cap applies).
    pub expected: Option<Option<Duration>>,
}

/// Optional whitespace around a field value (RFC 9110 §5.5).
fn ows() -> BoxedStrategy<&'static str> {
    prop::sample::select(vec!["", "", "", " ", "\t", "  "]).boxed()
}

fn now() -> BoxedStrategy<Timestamp> {
    // 2001 … 2099, any sub-second part.
    (978_307_200i64..4_102_444_800, 0i32..1_000_000_000)
        .prop_map(|(s, n)| Timestamp::new(s, n).expect("in range"))
        .boxed()
}

fn delay_seconds() -> BoxedStrategy<Case> {
    let digits = prop_oneof![
        4 => (0u64..100_000).prop_map(|n| n.to_string()),
        1 => "[0-9]{1,40}",
    ];
    (ows(), digits, ows(), now())
        .prop_map(|(a, digits, b, now)| {
            let significant = digits.trim_start_matches('0');
            let wait = if significant.len() > 19 {
                MAX_RETRY_AFTER
            } else {
                Duration::from_secs(significant.parse().unwrap_or(0)).min(MAX_RETRY_AFTER)
            };
            Case {
                value: format!("{a}{digits}{b}"),
                now,
                expected: Some(Some(wait)),
            }
        })
        .boxed()
}

/// An IMF-fixdate some time before or after `now`.
fn http_date() -> BoxedStrategy<Case> {
    let offset = prop_oneof![
        4 => -100_000i64..100_000,
        1 => -3_000_000_000i64..3_000_000_000,
    ];
    (ows(), now(), offset, ows())
        .prop_map(|(a, now, offset, b)| {
            let at = Timestamp::from_second(now.as_second() + offset).expect("in range");
            let wait = if at > now {
                Duration::try_from(at.duration_since(now))
                    .expect("positive")
                    .min(MAX_RETRY_AFTER)
            } else {
                Duration::ZERO
            };
            Case {
                value: format!("{a}{}{b}", at.strftime("%a, %d %b %Y %H:%M:%S GMT")),
                now,
                expected: Some(Some(wait)),
            }
        })
        .boxed()
}

/// Values that are neither form.
fn neither() -> BoxedStrategy<Case> {
    let value = prop_oneof![
        prop::sample::select(vec![
            "", " ", "-1", "-0", "+5", "1.5", "1e3", "0x10", "5 s", "5s", "five", "1 0", "\u{665}",
            "\u{ff15}", "Infinity", "NaN", "\u{a0}", ",", "5,5",
        ])
        .prop_map(str::to_string),
        "-[0-9]{1,20}",
        "[0-9]{1,5}\\.[0-9]{1,5}",
        "[a-zA-Z]{1,12}",
    ];
    (value, now())
        .prop_map(|(value, now)| Case {
            value,
            now,
            expected: Some(None),
        })
        .boxed()
}

/// Dates that are near IMF-fixdate (other zones, no weekday, a wrong weekday, lower case, the
/// obsolete RFC 850 and asctime forms RFC 9110 asks recipients to read), and anything at all.
/// Only the cap is checked for these.
fn undecided() -> BoxedStrategy<Case> {
    let value = prop_oneof![
        (
            0i64..4_102_444_800,
            prop::sample::select(vec![
                "%a, %d %b %Y %H:%M:%S +0000",
                "%a, %d %b %Y %H:%M:%S UTC",
                "%d %b %Y %H:%M:%S GMT",
                "%a, %d %b %Y %H:%M GMT",
                "%A, %d-%b-%y %H:%M:%S GMT",
                "%a %b %e %H:%M:%S %Y",
                "%a, %d %b %Y %H:%M:%S -2359",
                "%a, %d %b %Y %H:%M:%S EST",
                "%Y-%m-%dT%H:%M:%SZ",
            ])
        )
            .prop_map(|(s, format)| Timestamp::from_second(s)
                .expect("in range")
                .strftime(format)
                .to_string()),
        Just("Mon, 01 Jan 2001 00:00:00 GMT".to_string()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_string()),
        Just("Mon, 01 Jan 0001 00:00:00 GMT".to_string()),
        Just("Sun, 30 Feb 2031 00:00:00 GMT".to_string()),
        Just("Tue, 01 Jan 2030 24:00:00 GMT".to_string()),
        Just("Tue, 01 Jan 2030 23:59:60 GMT".to_string()),
        ".{0,60}",
    ];
    (value, now())
        .prop_map(|(value, now)| Case {
            value,
            now,
            expected: None,
        })
        .boxed()
}

pub fn case() -> BoxedStrategy<Case> {
    prop_oneof![
        3 => delay_seconds(),
        3 => http_date(),
        2 => neither(),
        2 => undecided(),
    ]
    .boxed()
}
