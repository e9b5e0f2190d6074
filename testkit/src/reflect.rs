//! Encodings an upstream (or an exfiltrating sandbox) writes a credential in, made with the
//! encoders' own crates, and what a reader of such a stream learns about the value: the oracle
//! of the reflection and exfiltration tests (the gateway's own list of forms is what is tested,
//! so it is not used here).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

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

/// Every encoding by its name in `/reflect?form=`.
pub const ALL: &[&str] = &[
    "raw",
    "b64",
    "b64np",
    "b64url",
    "b64urlnp",
    "hex",
    "hexmix",
    "pct",
    "pctlow",
    "pctu",
    "form",
    "json",
    "jsonslash",
    "jsonu",
];

fn lower_escapes(text: &str) -> String {
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

/// `bytes` in encoding `form` (JSON forms take them as UTF-8, lossily).
pub fn encode(form: &str, bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let json = || {
        let q = serde_json::to_string(&text).unwrap();
        q[1..q.len() - 1].to_owned()
    };
    match form {
        "raw" => bytes.to_vec(),
        "b64" => STANDARD.encode(bytes).into_bytes(),
        "b64np" => STANDARD_NO_PAD.encode(bytes).into_bytes(),
        "b64url" => URL_SAFE.encode(bytes).into_bytes(),
        "b64urlnp" => URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
        "hex" => hex::encode(bytes).into_bytes(),
        "hexmix" => hex::encode(bytes)
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 3 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect::<String>()
            .into_bytes(),
        "pct" => percent_encode(bytes, NON_ALPHANUMERIC)
            .to_string()
            .into_bytes(),
        "pctlow" => {
            lower_escapes(&percent_encode(bytes, NON_ALPHANUMERIC).to_string()).into_bytes()
        }
        "pctu" => percent_encode(bytes, UNRESERVED).to_string().into_bytes(),
        "form" => percent_encode(bytes, WHATWG_FORM)
            .to_string()
            .replace("%20", "+")
            .into_bytes(),
        "json" => json().into_bytes(),
        "jsonslash" => json().replace('/', "\\/").into_bytes(),
        "jsonu" => text
            .encode_utf16()
            .map(|u| format!("\\u{u:04x}"))
            .collect::<String>()
            .into_bytes(),
        other => panic!("unknown form {other}"),
    }
}

/// What a reader of `encode(form, pre + value + post)` learns about `value`: for base64, the
/// characters that change when every bit of the value flips, less the first and last (they mix
/// in the neighbours' bits); for the other encodings, the value's own encoding.
pub fn revealing(form: &str, pre: &[u8], value: &[u8], post: &[u8]) -> Vec<u8> {
    if !form.starts_with("b64") {
        return encode(form, value);
    }
    let a = encode(form, &[pre, value, post].concat());
    let flipped: Vec<u8> = value.iter().map(|b| !b).collect();
    let b = encode(form, &[pre, &flipped, post].concat());
    let differs: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    a[differs[0] + 1..*differs.last().expect("the value changes the encoding")].to_vec()
}

/// Whether `hay` holds `needle`, ignoring ASCII case (hex digits come in either case).
pub fn holds(hay: &[u8], needle: &[u8]) -> bool {
    let hay = hay.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// A random credential value of `len` characters (≥ 2) that is valid in a header: letters at
/// both ends, and inside also what encoders escape (`/ + = % " \ < & ~` and space).
pub fn random_value(len: usize) -> String {
    const EDGE: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const INNER: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/+=%\"\\<&~ -_.";
    let mut r = vec![0u8; len];
    getrandom::fill(&mut r).expect("random");
    r.iter()
        .enumerate()
        .map(|(i, b)| {
            let set = if i == 0 || i + 1 == len { EDGE } else { INNER };
            set[*b as usize % set.len()] as char
        })
        .collect()
}

/// A random number below `n`.
pub fn below(n: usize) -> usize {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random");
    (u64::from_le_bytes(b) % n as u64) as usize
}
