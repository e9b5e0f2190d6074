//! The response scrubber's property (issue section 8): no form of a credential's value survives
//! the streaming rewrite, whatever the value, wherever it sits in a longer encoded stream, and
//! however the stream is cut into chunks; and the output is the same under every chunking.
//!
//! Each case: a random value, a random encoding applied here by the encoders' own crates (base64,
//! hex, percent-encoding, serde_json), random bytes before and after it inside the encoded
//! stream (every base64 alignment), random text around, random chunk cuts. The seed and the
//! case count are fixed, so CI runs the same bounded set every time.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use bytes::Bytes;
use gateway::egress::forms::paired;
use gateway::egress::rewrite::{Replacements, StreamRewriter};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const WHATWG_FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');
const PHP_FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// How the upstream wrote the value.
#[derive(Debug, Clone, Copy)]
enum Enc {
    Raw,
    Base64(usize),
    Hex {
        upper_mask: u64,
    },
    Percent {
        unreserved: bool,
        lower: bool,
    },
    /// Form encoding with `+` for space: WHATWG (0), Python's `quote_plus` (1), PHP (2).
    FormPlus(usize),
    Json {
        slash: bool,
    },
    JsonAllEscaped,
}

fn enc_strategy() -> impl Strategy<Value = Enc> {
    prop_oneof![
        Just(Enc::Raw),
        (0..4usize).prop_map(Enc::Base64),
        any::<u64>().prop_map(|upper_mask| Enc::Hex { upper_mask }),
        (any::<bool>(), any::<bool>())
            .prop_map(|(unreserved, lower)| Enc::Percent { unreserved, lower }),
        (0..3usize).prop_map(Enc::FormPlus),
        any::<bool>().prop_map(|slash| Enc::Json { slash }),
        Just(Enc::JsonAllEscaped),
    ]
}

fn base64_engine(i: usize) -> &'static base64::engine::GeneralPurpose {
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD][i]
}

/// Upper-cases the hex digits (`a`-`f`) whose bit is set in `mask` (cycled).
fn mixed_case(text: &str, mask: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn lower_hex_escapes(text: &str) -> String {
    // `%2F` → `%2f`: only the two characters after each `%`.
    let mut out = String::new();
    let mut left = 0;
    for c in text.chars() {
        if c == '%' {
            left = 2;
            out.push(c);
        } else if left > 0 {
            left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn json_string(s: &str, slash: bool) -> String {
    let quoted = serde_json::to_string(s).unwrap();
    let inner = &quoted[1..quoted.len() - 1];
    if slash {
        inner.replace('/', "\\/")
    } else {
        inner.to_owned()
    }
}

/// `bytes` as the upstream writes them (text encodings need UTF-8: the value is a string).
fn encode(e: Enc, bytes: &[u8]) -> Vec<u8> {
    let text = || std::str::from_utf8(bytes).expect("text encodings get strings");
    match e {
        Enc::Raw => bytes.to_vec(),
        Enc::Base64(i) => base64_engine(i).encode(bytes).into_bytes(),
        Enc::Hex { upper_mask } => mixed_case(&hex::encode(bytes), upper_mask).into_bytes(),
        Enc::Percent { unreserved, lower } => {
            let set = if unreserved {
                UNRESERVED
            } else {
                NON_ALPHANUMERIC
            };
            let t = percent_encode(bytes, set).to_string();
            if lower { lower_hex_escapes(&t) } else { t }.into_bytes()
        }
        Enc::FormPlus(i) => percent_encode(bytes, [WHATWG_FORM, UNRESERVED, PHP_FORM][i])
            .to_string()
            .replace("%20", "+")
            .into_bytes(),
        Enc::Json { slash } => json_string(text(), slash).into_bytes(),
        Enc::JsonAllEscaped => text()
            .encode_utf16()
            .map(|u| format!("\\u{u:04X}"))
            .collect::<String>()
            .into_bytes(),
    }
}

/// What a reader of `stream` learns about the value: for base64, the characters that change
/// when every bit of the value flips, less the first and last (they mix in the neighbours'
/// bits); for the other encodings, the value's own encoding.
fn revealing_part(e: Enc, pre: &[u8], value: &[u8], post: &[u8]) -> Vec<u8> {
    let whole = |v: &[u8]| [pre, v, post].concat();
    match e {
        Enc::Base64(_) => {
            let a = encode(e, &whole(value));
            let flipped: Vec<u8> = value.iter().map(|b| !b).collect();
            let b = encode(e, &whole(&flipped));
            let differs: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
            a[differs[0] + 1..*differs.last().unwrap()].to_vec()
        }
        _ => encode(e, value),
    }
}

fn contains_folded(hay: &[u8], needle: &[u8]) -> bool {
    let hay = hay.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    hay.windows(needle.len()).any(|w| w == needle.as_slice())
}

fn stream(set: &Replacements, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut rw = StreamRewriter::new(set.clone());
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    points.push(input.len());
    for p in points {
        rw.push(Bytes::copy_from_slice(&input[at..p]), &mut pieces);
        at = p;
    }
    let mut out: Vec<u8> = pieces.concat();
    out.extend(rw.finish());
    out
}

/// Values: text (so every encoding applies) of 8 to 40 characters, from an alphabet heavy in
/// what encoders escape (`/ + = % " \ < & space`, control and non-ASCII characters).
fn value_strategy() -> impl Strategy<Value = String> {
    let interesting = prop_oneof![
        4 => proptest::char::range('a', 'z'),
        2 => proptest::char::range('A', 'Z'),
        2 => proptest::char::range('0', '9'),
        3 => proptest::sample::select(vec!['/', '+', '=', '%', '"', '\\', '<', '&', ' ', '-', '_', '.', '~']),
        1 => proptest::char::range('\u{1}', '\u{1f}'),
        1 => proptest::char::range('\u{a0}', '\u{2fff}'),
    ];
    proptest::collection::vec(interesting, 8..40).prop_map(|cs| cs.into_iter().collect())
}

fn config() -> Config {
    Config {
        cases: 768,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5c2b_0b5e_ed00_0001),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_form_of_the_value_survives_any_chunking(
        value in value_strategy(),
        placeholder_bits in any::<u128>(),
        e in enc_strategy(),
        pre in proptest::collection::vec(any::<u8>(), 0..7),
        post in proptest::collection::vec(any::<u8>(), 0..7),
        around in ("[ -~]{0,40}", "[ -~]{0,40}"),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let value = value.as_bytes();
        let placeholder = format!("gmcp_ph_{placeholder_bits:032x}");
        // Text encodings carry text: the bytes around the value are then ASCII letters.
        let (pre, post): (Vec<u8>, Vec<u8>) = match e {
            Enc::Base64(_) => (pre, post),
            _ => (
                pre.iter().map(|b| b'a' + b % 26).collect(),
                post.iter().map(|b| b'a' + b % 26).collect(),
            ),
        };
        let inner = encode(e, &[&pre[..], value, &post[..]].concat());
        let input = [around.0.as_bytes(), &inner, around.1.as_bytes()].concat();
        let set = Replacements::new(paired(value, placeholder.as_bytes()))
            .unwrap()
            .unwrap();
        let out = stream(&set, &input, &cuts);
        prop_assert_eq!(&out, &set.replace_all(&input), "chunking changed the output");
        let revealing = revealing_part(e, &pre, value, &post);
        prop_assert!(revealing.len() >= 8, "value too short to test: {:?}", revealing);
        prop_assert!(
            !contains_folded(&out, &revealing),
            "{:?} survived in {:?}",
            String::from_utf8_lossy(&revealing),
            String::from_utf8_lossy(&out)
        );
    }
}
