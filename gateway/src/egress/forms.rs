//! The encoded forms of a secret value: the one definition of "the value, in any form a leak
//! usually takes" that the egress scrubber (responses), the egress exfiltration scan (requests)
//! and the MCP front's redaction (tool arguments and results) all search for.
//!
//! Forms: raw; base64 standard and URL-safe, padded and not, and the part of the value's
//! encoding that is the same wherever it sits inside a longer base64 stream (at each of the
//! three byte alignments); hex; percent-encoding with the character sets encoders use
//! (everything, RFC 3986 unreserved kept, `encodeURIComponent`, Python's `quote`, HTML form
//! encoding with `+` for space); JSON string escapes (`\"`, `\\`, controls, and optionally
//! `\/`, HTML-safe `\u003c`, ASCII-only `\uXXXX`, or every character as `\uXXXX`); and the
//! standard base64 forms as JSON encoders write them inside a string (PHP's `\/` for `/`,
//! .NET's `\u002B` for `+`): an upstream echoing a Basic credential in JSON does that.
//!
//! Hex digits are case-insensitive in hex, percent escapes and all-`\u` JSON: those forms are
//! [`Form::folded`] and matched ignoring ASCII case (in a percent form this also folds the
//! value's own letters, an over-match that only ever scrubs or refuses more).
//!
//! Limits: values shorter than [`MIN_LEN`] bytes are searched raw only (their encodings would
//! match ordinary text); forms nested in one another (base64 of hex, percent of base64), MIME
//! line-wrapped base64 and a value cut into pieces by the upstream are not searched.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use zeroize::Zeroizing;

/// Bytes that may be secret: wiped when dropped.
pub type Bytes = Zeroizing<Vec<u8>>;

/// Shorter values are searched only as they are.
pub const MIN_LEN: usize = 8;

/// One form of a value, as searched for.
#[derive(Debug, Clone)]
pub struct Form {
    pub bytes: Bytes,
    /// Matched ignoring ASCII case.
    pub folded: bool,
}

impl Form {
    /// A needle matched byte for byte.
    pub fn exact(bytes: &[u8]) -> Self {
        Self {
            bytes: Zeroizing::new(bytes.to_vec()),
            folded: false,
        }
    }

    fn folded(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
            folded: true,
        }
    }

    fn same_as(&self, other: &Form) -> bool {
        self.folded == other.folded
            && if self.folded {
                self.bytes.eq_ignore_ascii_case(&other.bytes)
            } else {
                self.bytes == other.bytes
            }
    }
}

/// Which base64 alphabet.
#[derive(Debug, Clone, Copy)]
enum Alphabet {
    Standard,
    UrlSafe,
}

/// JSON string escaping, as the common encoders do it.
#[derive(Debug, Clone, Copy)]
struct JsonStyle {
    /// `/` as `\/` (PHP).
    slash: bool,
    /// `<`, `>`, `&`, U+2028, U+2029 as `\u....` (Go).
    html: bool,
    /// Everything outside ASCII as `\u....` (Python's default, PHP).
    ascii: bool,
    /// Hex digits of `\u` escapes in upper case.
    upper: bool,
}

/// One way of encoding a value.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Raw,
    /// The whole value, from the start of a base64 stream.
    Base64Whole(Alphabet, bool),
    /// The characters that depend on the value alone when it starts at byte `offset % 3` of a
    /// longer base64 stream.
    Base64Inner(Alphabet, usize),
    Hex,
    Percent(&'static AsciiSet),
    /// `application/x-www-form-urlencoded`: space as `+`, the rest escaped outside the set.
    Form(&'static AsciiSet),
    Json(JsonStyle),
    /// Every character as `\uXXXX`.
    JsonAllEscaped,
    /// A standard-alphabet base64 form inside a JSON string, escaped as an encoder does.
    Base64InJson(Base64Part, JsonBase64),
}

/// Which part of a value's standard base64 encoding.
#[derive(Debug, Clone, Copy)]
enum Base64Part {
    /// From the start of the stream, padded or not.
    Whole(bool),
    /// The part that is the same at this byte alignment inside a longer stream.
    Inner(usize),
}

/// How a JSON encoder escapes the base64 characters it escapes.
#[derive(Debug, Clone, Copy)]
enum JsonBase64 {
    /// `/` as `\/` (PHP's `json_encode`).
    Slash,
    /// `+` as `\u002B` (.NET's default `JavaScriptEncoder`).
    Plus,
}

/// RFC 3986 unreserved characters kept (the proxy's own query encoding).
pub(crate) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// JavaScript's `encodeURIComponent`.
const URI_COMPONENT: &AsciiSet = &UNRESERVED
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');
/// Python's `urllib.parse.quote` (safe `/`).
const PY_QUOTE: &AsciiSet = &UNRESERVED.remove(b'/');
/// The HTML form set (WHATWG, Java's `URLEncoder`): `*-._` kept, space handled as `+`.
const FORM_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');
/// PHP's `urlencode`: `-._` kept, space as `+`.
const PHP_FORM_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// Every encoding, in the order their forms are listed (the first of equal forms is kept).
fn encodings() -> Vec<Encoding> {
    let mut all = vec![Encoding::Raw];
    for a in [Alphabet::Standard, Alphabet::UrlSafe] {
        all.push(Encoding::Base64Whole(a, true));
        all.push(Encoding::Base64Whole(a, false));
        for offset in 0..3 {
            all.push(Encoding::Base64Inner(a, offset));
        }
    }
    all.push(Encoding::Hex);
    for set in [NON_ALPHANUMERIC, UNRESERVED, URI_COMPONENT, PY_QUOTE] {
        all.push(Encoding::Percent(set));
    }
    // Python's `quote_plus` keeps the unreserved set.
    for set in [FORM_SET, UNRESERVED, PHP_FORM_SET] {
        all.push(Encoding::Form(set));
    }
    for bits in 0..16u8 {
        all.push(Encoding::Json(JsonStyle {
            slash: bits & 1 != 0,
            html: bits & 2 != 0,
            ascii: bits & 4 != 0,
            upper: bits & 8 != 0,
        }));
    }
    all.push(Encoding::JsonAllEscaped);
    for escape in [JsonBase64::Slash, JsonBase64::Plus] {
        for part in [Base64Part::Whole(true), Base64Part::Whole(false)]
            .into_iter()
            .chain((0..3).map(Base64Part::Inner))
        {
            all.push(Encoding::Base64InJson(part, escape));
        }
    }
    all
}

fn base64_engine(a: Alphabet, pad: bool) -> &'static base64::engine::GeneralPurpose {
    match (a, pad) {
        (Alphabet::Standard, true) => &STANDARD,
        (Alphabet::Standard, false) => &STANDARD_NO_PAD,
        (Alphabet::UrlSafe, true) => &URL_SAFE,
        (Alphabet::UrlSafe, false) => &URL_SAFE_NO_PAD,
    }
}

/// The base64 characters that only `v`'s bits decide when `v` starts `offset` bytes into a
/// stream: character j covers bits 6j..6j+6, the value bits 8·offset..8·(offset+len).
fn base64_inner(a: Alphabet, offset: usize, v: &[u8]) -> Vec<u8> {
    let mut shifted = Zeroizing::new(vec![0u8; offset]);
    shifted.extend_from_slice(v);
    let text = Zeroizing::new(base64_engine(a, false).encode(&*shifted).into_bytes());
    let start = (8 * offset).div_ceil(6);
    let end = 8 * (offset + v.len()) / 6;
    text.get(start..end).map(<[u8]>::to_vec).unwrap_or_default()
}

fn json_escape(s: &str, style: JsonStyle) -> Vec<u8> {
    let mut out = String::with_capacity(s.len() + 8);
    let unicode = |out: &mut String, c: char| {
        let mut units = [0u16; 2];
        for u in c.encode_utf16(&mut units) {
            if style.upper {
                out.push_str(&format!("\\u{u:04X}"));
            } else {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    };
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '/' if style.slash => out.push_str("\\/"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if style.html => unicode(&mut out, c),
            c if c.is_control() && (c as u32) < 0x20 => unicode(&mut out, c),
            c if !c.is_ascii() && style.ascii => unicode(&mut out, c),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

impl Encoding {
    /// `v` in this encoding, if it applies to `v` (JSON forms need UTF-8).
    fn apply(self, v: &[u8]) -> Option<Form> {
        let exact = |b: Vec<u8>| {
            Some(Form {
                bytes: Zeroizing::new(b),
                folded: false,
            })
        };
        match self {
            Self::Raw => exact(v.to_vec()),
            Self::Base64Whole(a, pad) => exact(base64_engine(a, pad).encode(v).into_bytes()),
            Self::Base64Inner(a, offset) => exact(base64_inner(a, offset, v)),
            Self::Hex => Some(Form::folded(hex::encode(v).into_bytes())),
            Self::Percent(set) => Some(Form::folded(
                percent_encode(v, set).to_string().into_bytes(),
            )),
            Self::Form(set) => {
                let text = percent_encode(v, set).to_string().replace("%20", "+");
                Some(Form::folded(text.into_bytes()))
            }
            Self::Json(style) => exact(json_escape(std::str::from_utf8(v).ok()?, style)),
            Self::JsonAllEscaped => {
                let s = std::str::from_utf8(v).ok()?;
                let mut out = String::new();
                let mut units = [0u16; 2];
                for c in s.chars() {
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
                Some(Form::folded(out.into_bytes()))
            }
            Self::Base64InJson(part, escape) => {
                let text = match part {
                    Base64Part::Whole(pad) => base64_engine(Alphabet::Standard, pad)
                        .encode(v)
                        .into_bytes(),
                    Base64Part::Inner(offset) => base64_inner(Alphabet::Standard, offset, v),
                };
                let (from, to): (u8, &[u8]) = match escape {
                    JsonBase64::Slash => (b'/', b"\\/"),
                    JsonBase64::Plus => (b'+', b"\\u002B"),
                };
                let mut out = Vec::with_capacity(text.len() + 8);
                for &b in &text {
                    if b == from {
                        out.extend_from_slice(to);
                    } else {
                        out.push(b);
                    }
                }
                exact(out)
            }
        }
    }
}

/// The forms of `value` to search for, each paired with the same form of `replacement` (or
/// with `replacement` itself where that form does not apply to it). A form equal to an
/// earlier one is listed once.
pub fn paired(value: &[u8], replacement: &[u8]) -> Vec<(Form, Bytes)> {
    if value.len() < MIN_LEN {
        return vec![(Form::exact(value), Zeroizing::new(replacement.to_vec()))];
    }
    let mut out: Vec<(Form, Bytes)> = Vec::new();
    for e in encodings() {
        let Some(form) = e.apply(value) else {
            continue;
        };
        // A folded form with nothing escaped (a percent form of an alphanumeric value) is the
        // raw value: folding it would only match the value's letters in the wrong case.
        let repeated = out
            .iter()
            .any(|(f, _)| f.same_as(&form) || f.bytes == form.bytes);
        if form.bytes.is_empty() || repeated {
            continue;
        }
        let with = e
            .apply(replacement)
            .map_or_else(|| Zeroizing::new(replacement.to_vec()), |f| f.bytes);
        out.push((form, with));
    }
    out
}

/// The forms of `value`, each to be replaced by `tag` (redaction).
pub fn tagged(value: &[u8], tag: &[u8]) -> Vec<(Form, Bytes)> {
    paired(value, b"")
        .into_iter()
        .map(|(f, _)| (f, Zeroizing::new(tag.to_vec())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(forms: &[(Form, Bytes)], want: &[u8]) -> bool {
        forms.iter().any(|(f, _)| {
            if f.folded {
                f.bytes.eq_ignore_ascii_case(want)
            } else {
                f.bytes.as_slice() == want
            }
        })
    }

    #[test]
    fn the_usual_encodings_are_listed() {
        let v = "sk-live-0123456789abcdef/+= \"é<".as_bytes();
        let f = paired(v, b"gmcp_ph_x");
        assert!(has(&f, v));
        assert!(has(&f, STANDARD.encode(v).as_bytes()));
        assert!(has(&f, URL_SAFE_NO_PAD.encode(v).as_bytes()));
        assert!(has(&f, hex::encode_upper(v).as_bytes()));
        assert!(has(&f, b"sk-live-0123456789abcdef%2F%2B%3D%20%22%C3%A9%3C"));
        assert!(has(&f, b"sk-live-0123456789abcdef%2F%2B%3D+%22%C3%A9%3C"));
        assert!(has(&f, br#"sk-live-0123456789abcdef\/+= \"\u00e9\u003c"#));
        assert!(has(&f, br#"sk-live-0123456789abcdef/+= \"\u00E9<"#));
    }

    #[test]
    fn a_base64_inner_form_is_in_every_stream_that_carries_the_value() {
        let v = b"0123456789-value";
        let f = paired(v, b"ph");
        for pre in 0..6 {
            for post in 0..4 {
                let mut plain = vec![b'#'; pre];
                plain.extend_from_slice(v);
                plain.extend(std::iter::repeat_n(b'!', post));
                for e in [&STANDARD, &URL_SAFE_NO_PAD] {
                    let text = e.encode(&plain);
                    assert!(
                        f.iter().any(|(n, _)| text
                            .as_bytes()
                            .windows(n.bytes.len())
                            .any(|w| w == n.bytes.as_slice())),
                        "pre {pre} post {post}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_alphanumeric_value_is_not_matched_in_the_wrong_case() {
        let f = paired(b"AbcDef0123456789", b"gmcp_ph_x");
        let folded: Vec<_> = f.iter().filter(|(n, _)| n.folded).collect();
        assert!(
            folded
                .iter()
                .all(|(n, _)| n.bytes.as_slice() != b"AbcDef0123456789")
        );
    }

    /// An upstream echoing a Basic credential (or any base64 carrying the value) inside a JSON
    /// string: PHP writes its `/` as `\/`, .NET its `+` as `\u002B`.
    #[test]
    fn base64_inside_a_json_string_is_listed_as_encoders_escape_it() {
        // Bytes whose base64 holds both `/` and `+`.
        let v = b"\xfb\xff\xbf\xfb\xef\xbe-user:pass\xff\xfe";
        let f = paired(v, b"gmcp_ph_x");
        let b64 = STANDARD.encode(v);
        assert!(b64.contains('/') && b64.contains('+'), "{b64}");
        assert!(has(&f, b64.replace('/', "\\/").as_bytes()));
        assert!(has(&f, b64.replace('+', "\\u002B").as_bytes()));
        let inner = base64_inner(Alphabet::Standard, 1, v);
        let inner = String::from_utf8(inner).unwrap();
        assert!(has(&f, inner.replace('/', "\\/").as_bytes()));
    }

    #[test]
    fn short_values_are_searched_raw_only() {
        assert_eq!(paired(b"abc", b"x").len(), 1);
    }
}
