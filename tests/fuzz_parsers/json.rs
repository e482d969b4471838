//! A JSON writer that spells documents the way odd servers do (escapes, whitespace, byte order
//! marks, raw control characters, trailing garbage, duplicate keys), and a model of which
//! spellings RFC 8259 (as serde_json implements it) accepts. The model is written from the RFC,
//! not from the parser under test, so that the two can disagree.

use proptest::prelude::*;

/// A JSON document as generated: strings are the decoded values; number literals are kept as
/// text so that their spelling is part of what is generated.
#[derive(Clone, Debug)]
pub enum Json {
    Null,
    Bool(bool),
    /// A number literal as written; it may break the JSON number grammar on purpose.
    Number(String),
    Str(String),
    Array(Vec<Json>),
    /// Members in order; a key may repeat.
    Object(Vec<(String, Json)>),
    /// Bytes that make any document holding them not JSON (a lone surrogate escape, invalid
    /// UTF-8, `NaN`, a single-quoted string, ...).
    Broken(&'static [u8]),
}

impl Json {
    pub fn str(text: impl Into<String>) -> Json {
        Json::Str(text.into())
    }

    pub fn int(n: impl std::fmt::Display) -> Json {
        Json::Number(n.to_string())
    }

    pub fn object<'a>(members: impl IntoIterator<Item = (&'a str, Json)>) -> Json {
        Json::Object(
            members
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// The member `key` of an object as a JSON parser sees it: the last one wins when the key
    /// repeats (what RFC 8259 §4 leaves open and ECMAScript and serde_json do).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Every string under `key` at any depth, overwritten duplicates included.
    pub fn strings_under(&self, key: &str, out: &mut Vec<String>) {
        match self {
            Json::Array(items) => items.iter().for_each(|v| v.strings_under(key, out)),
            Json::Object(members) => {
                for (k, v) in members {
                    if let (true, Json::Str(s)) = (k == key, v) {
                        out.push(s.clone());
                    }
                    v.strings_under(key, out);
                }
            }
            _ => {}
        }
    }

    /// Nesting depth: a scalar is 0, `[]` is 1.
    fn depth(&self) -> usize {
        match self {
            Json::Array(items) => 1 + items.iter().map(Json::depth).max().unwrap_or(0),
            Json::Object(members) => 1 + members.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn all_valid(&self, spelling: &Spelling) -> bool {
        let string_ok = |s: &str| !spelling.raw_controls || !s.chars().any(|c| c < ' ');
        match self {
            Json::Null | Json::Bool(_) => true,
            Json::Number(text) => is_json_number(text),
            Json::Str(s) => string_ok(s),
            Json::Array(items) => items.iter().all(|v| v.all_valid(spelling)),
            Json::Object(members) => members
                .iter()
                .all(|(k, v)| string_ok(k) && v.all_valid(spelling)),
            Json::Broken(_) => false,
        }
    }
}

/// `\uXXXX` escapes used for which characters (the decoded text is the same).
#[derive(Clone, Copy, Debug)]
pub enum Escapes {
    /// Only `"`, `\` and control characters, as most servers write.
    Minimal,
    /// Also everything outside ASCII (surrogate pairs above U+FFFF).
    NonAscii,
    /// Every character.
    All,
}

/// How a document is spelt around and between its tokens.
#[derive(Clone, Debug)]
pub struct Spelling {
    pub escapes: Escapes,
    /// Control characters written raw inside strings, which RFC 8259 §7 forbids.
    pub raw_controls: bool,
    /// Written between every two tokens.
    pub gap: &'static str,
    /// Written before the document (whitespace, a byte order mark, ...).
    pub lead: &'static str,
    /// Written after the document (whitespace, garbage, a second document, ...).
    pub trail: &'static str,
}

impl Spelling {
    /// What a well-behaved server sends.
    pub const PLAIN: Spelling = Spelling {
        escapes: Escapes::Minimal,
        raw_controls: false,
        gap: "",
        lead: "",
        trail: "",
    };
}

/// Deepest nesting serde_json parses before it refuses (its recursion limit, which guards the
/// stack). The generators stay far from it on either side.
pub const MAX_DEPTH: usize = 128;

/// RFC 8259 §2: the only insignificant whitespace.
fn is_json_whitespace(text: &str) -> bool {
    text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

/// RFC 8259 §6 number grammar, and a value a double can hold (serde_json refuses overflow).
pub fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len() && text.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Whether a JSON parser accepts `value` written with `spelling`.
pub fn is_json(value: &Json, spelling: &Spelling) -> bool {
    is_json_whitespace(spelling.lead)
        && is_json_whitespace(spelling.gap)
        && is_json_whitespace(spelling.trail)
        && value.depth() <= MAX_DEPTH
        && value.all_valid(spelling)
}

/// The document's bytes.
pub fn write(value: &Json, spelling: &Spelling) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(spelling.lead.as_bytes());
    write_value(value, spelling, &mut out);
    out.extend_from_slice(spelling.trail.as_bytes());
    out
}

fn write_value(value: &Json, spelling: &Spelling, out: &mut Vec<u8>) {
    let gap = spelling.gap.as_bytes();
    match value {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Json::Number(text) => out.extend_from_slice(text.as_bytes()),
        Json::Str(s) => write_string(s, spelling, out),
        Json::Broken(bytes) => out.extend_from_slice(bytes),
        Json::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(gap);
                write_value(item, spelling, out);
                out.extend_from_slice(gap);
            }
            out.push(b']');
        }
        Json::Object(members) => {
            out.push(b'{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(gap);
                write_string(key, spelling, out);
                out.extend_from_slice(gap);
                out.push(b':');
                out.extend_from_slice(gap);
                write_value(item, spelling, out);
                out.extend_from_slice(gap);
            }
            out.push(b'}');
        }
    }
}

fn write_string(text: &str, spelling: &Spelling, out: &mut Vec<u8>) {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in text.chars() {
        let escape = match spelling.escapes {
            Escapes::Minimal => false,
            Escapes::NonAscii => !c.is_ascii(),
            Escapes::All => true,
        };
        match c {
            c if c < ' ' && spelling.raw_controls => s.push(c),
            '"' | '\\' if !escape => {
                s.push('\\');
                s.push(c);
            }
            c if c < ' ' || escape => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    s.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => s.push(c),
        }
    }
    s.push('"');
    out.extend_from_slice(s.as_bytes());
}

/// Spellings, mostly ones every parser must accept.
pub fn spelling() -> BoxedStrategy<Spelling> {
    let escapes = prop_oneof![
        4 => Just(Escapes::Minimal),
        1 => Just(Escapes::NonAscii),
        1 => Just(Escapes::All),
    ];
    let gap = prop_oneof![
        24 => prop::sample::select(vec!["", " ", "\n  ", "\t", "\r\n"]),
        // Whitespace outside RFC 8259's four.
        1 => prop::sample::select(vec!["\u{a0}", "\u{c}", "\u{2028}", "\u{3000}", "\u{b}"]),
    ];
    let lead = prop_oneof![
        24 => prop::sample::select(vec!["", " ", "\n", "\r\n\t "]),
        1 => prop::sample::select(vec!["\u{feff}", "\u{feff} ", "\0", "\u{a0}", ")]}'\n"]),
    ];
    let trail = prop_oneof![
        24 => prop::sample::select(vec!["", " ", "\n", "\r\n", "\t\n "]),
        1 => prop::sample::select(vec![
            "x", "}", ",", "\0", "{}", "null", " []", "\u{feff}", "\u{a0}", "<!-- -->",
        ]),
    ];
    (escapes, prop::bool::weighted(0.1), gap, lead, trail)
        .prop_map(|(escapes, raw_controls, gap, lead, trail)| Spelling {
            escapes,
            raw_controls,
            gap,
            lead,
            trail,
        })
        .boxed()
}

/// Fragments that make a document not JSON wherever they stand.
pub fn broken() -> BoxedStrategy<Json> {
    prop::sample::select(vec![
        &b"\"\\ud800\""[..],
        b"\"\\udc00x\"",
        b"\"\\ud83d\\u0041\"",
        b"\"\\x41\"",
        b"\"\\u12\"",
        b"\"\xff\xfe\"",
        b"\"\xc3\"",
        b"\"unterminated",
        b"'single'",
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"undefined",
        b"True",
        b"nul",
        b"",
    ])
    .prop_map(Json::Broken)
    .boxed()
}

/// JSON values of any shape, small, none of them broken.
pub fn any_value() -> BoxedStrategy<Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::int),
        (-1000i32..1000, 0u32..100).prop_map(|(a, b)| Json::Number(format!("{a}.{b}"))),
        ".{0,12}".prop_map(Json::Str),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Json::Array),
            prop::collection::vec(("[a-z_]{0,6}", inner), 0..3).prop_map(Json::Object),
        ]
    })
    .boxed()
}

/// `value` inside `depth` levels of arrays and objects.
pub fn nest(value: Json, depth: usize) -> Json {
    (0..depth).fold(value, |v, level| {
        if level % 2 == 0 {
            Json::Array(vec![v])
        } else {
            Json::object([("n", v)])
        }
    })
}
