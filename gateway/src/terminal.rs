//! Text a server wrote, made safe for the admin's terminal.
//!
//! A server's stderr lines (`gigmcp server logs`) and its tool names and definitions
//! (`gigmcp server tools`) are the server's words, and the server is assumed hostile. Printed
//! raw, an ESC sequence could rewrite the screen, move the cursor over a warning or set the
//! window title; a carriage return could overwrite a line; a bidi override (U+202E) could
//! show text in another order than it has; zero-width and other format characters could hide
//! words or make two different names look the same. So everything that is not plainly visible
//! is shown as an escape instead:
//!
//! - C0 controls (tab and newline included), DEL and bytes that are not UTF-8: `\xNN`;
//! - C1 controls, every format character (Unicode category Cf: bidi embeddings, overrides and
//!   isolates, zero-width space/joiners, word joiner, BOM, tags, …), the line and paragraph
//!   separators, and every other default-ignorable code point (Unicode's
//!   Default_Ignorable_Code_Point: variation selectors, Mongolian free variation selectors,
//!   Hangul fillers, and the unassigned ones a terminal must render as nothing, such as
//!   U+FFF0..U+FFF8 and the rest of plane 14): `\u{XXXX}`;
//! - the backslash itself: `\\`, so that a server cannot write something that looks like an
//!   escape of another character: [`escape`] is injective.
//!
//! Hand-written on purpose: the Cf table is 21 ranges (Unicode 15.1), smaller than any crate
//! that would bring the whole category database.

use std::fmt::Write as _;

/// Format characters (general category Cf), Unicode 15.1.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Not Cf, but shown as nothing (or as a line break) by terminals: line/paragraph separators
/// and the rest of Default_Ignorable_Code_Point (Unicode 15.1, DerivedCoreProperties.txt):
/// the combining grapheme joiner, Hangul fillers, Mongolian and other variation selectors,
/// and the unassigned code points Unicode reserves as ignorable (U+2065, U+FFF0..U+FFF8,
/// plane 14), which a future font or terminal renders as nothing too.
const INVISIBLE: &[(u32, u32)] = &[
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180D),
    (0x180F, 0x180F),
    (0x2028, 0x2029),
    (0x2065, 0x2065),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0FFF),
];

fn in_table(table: &[(u32, u32)], c: char) -> bool {
    let c = u32::from(c);
    table.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Whether `c` is a format character (Unicode category Cf).
pub fn is_format(c: char) -> bool {
    in_table(FORMAT, c)
}

/// Whether `c` must not reach a terminal as itself.
pub fn is_hidden(c: char) -> bool {
    c.is_control() || is_format(c) || in_table(INVISIBLE, c)
}

/// How a backslash in the input is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backslash {
    /// `\\`: the rendering can be told apart from the escape of another character.
    Double,
    /// Kept: for text that was escaped once already.
    Keep,
}

fn render(mut bytes: &[u8], backslash: Backslash) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                push_text(&mut out, text, backslash);
                return out;
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                push_text(
                    &mut out,
                    std::str::from_utf8(good).expect("valid up to here"),
                    backslash,
                );
                let bad = e.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    let _ = write!(out, "\\x{b:02x}");
                }
                bytes = &rest[bad..];
            }
        }
    }
}

fn push_text(out: &mut String, text: &str, backslash: Backslash) {
    for c in text.chars() {
        match c {
            '\\' if backslash == Backslash::Double => out.push_str("\\\\"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_hidden(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// `bytes` as visible text: see the module's rules. Injective, and no character of the result
/// is hidden ([`is_hidden`]).
pub fn escape_bytes(bytes: &[u8]) -> String {
    render(bytes, Backslash::Double)
}

/// [`escape_bytes`] of a string.
pub fn escape(text: &str) -> String {
    escape_bytes(text.as_bytes())
}

/// Escapes what is hidden but keeps backslashes: for text escaped once already (the
/// daemon's kept stderr lines), where it changes nothing, while still making safe anything
/// that was not.
pub fn sanitize(text: &str) -> String {
    render(text.as_bytes(), Backslash::Keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undoes [`escape_bytes`]: the test's proof that the rendering loses nothing.
    fn unescape(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            if let Some(r) = rest.strip_prefix("\\\\") {
                out.push(b'\\');
                rest = r;
            } else if let Some(r) = rest.strip_prefix("\\x") {
                out.push(u8::from_str_radix(&r[..2], 16).unwrap());
                rest = &r[2..];
            } else if let Some(r) = rest.strip_prefix("\\u{") {
                let end = r.find('}').unwrap();
                let c = char::from_u32(u32::from_str_radix(&r[..end], 16).unwrap()).unwrap();
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                rest = &r[end + 1..];
            } else {
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    }

    fn random_bytes(n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        getrandom::fill(&mut b).unwrap();
        b
    }

    /// Characters an attacker would reach for, plus plain ones around them.
    const NASTY: &[char] = &[
        '\u{1b}',
        '\r',
        '\n',
        '\t',
        '\u{7}',
        '\u{8}',
        '\u{0}',
        '\u{7f}',
        '\u{85}',
        '\u{9b}',
        '\u{202a}',
        '\u{202b}',
        '\u{202c}',
        '\u{202d}',
        '\u{202e}',
        '\u{2066}',
        '\u{2067}',
        '\u{2068}',
        '\u{2069}',
        '\u{200b}',
        '\u{200c}',
        '\u{200d}',
        '\u{2060}',
        '\u{feff}',
        '\u{ad}',
        '\u{e0041}',
        '\u{2028}',
        '\u{fe0f}',
        '\\',
        'a',
        'é',
        '中',
        '😀',
        '[',
        ']',
    ];

    /// A random string mixing the nasty characters, random code points and raw bytes.
    fn random_input() -> Vec<u8> {
        let seed = random_bytes(64);
        let mut out = Vec::new();
        for pair in seed.chunks(2) {
            match pair[0] % 4 {
                0 => {
                    let c = NASTY[usize::from(pair[1]) % NASTY.len()];
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                1 => out.push(pair[1]),
                _ => {
                    let n = u32::from_le_bytes(random_bytes(4).try_into().unwrap()) % 0x11_0000;
                    if let Some(c) = char::from_u32(n) {
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                }
            }
        }
        out
    }

    #[test]
    fn no_character_of_a_rendering_is_a_control_or_a_format_character() {
        for _ in 0..20_000 {
            let input = random_input();
            let shown = escape_bytes(&input);
            assert!(
                !shown.chars().any(is_hidden),
                "{input:?} rendered as {shown:?}"
            );
            assert_eq!(unescape(&shown), input, "rendering lost information");
            assert_eq!(sanitize(&shown), shown, "sanitize changed safe text");
            let lossy = String::from_utf8_lossy(&input);
            assert!(!sanitize(&lossy).chars().any(is_hidden), "{lossy:?}");
        }
    }

    #[test]
    fn every_format_character_in_the_table_is_escaped() {
        for &(lo, hi) in FORMAT.iter().chain(INVISIBLE) {
            for n in lo..=hi {
                let c = char::from_u32(n).unwrap();
                assert_eq!(escape(&c.to_string()), format!("\\u{{{n:04x}}}"));
            }
        }
    }

    /// Default_Ignorable_Code_Point, Unicode 15.1 (DerivedCoreProperties.txt), copied from
    /// the standard rather than from the tables above: what a terminal renders as nothing.
    const DEFAULT_IGNORABLE: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x034F, 0x034F),
        (0x061C, 0x061C),
        (0x115F, 0x1160),
        (0x17B4, 0x17B5),
        (0x180B, 0x180F),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x206F),
        (0x3164, 0x3164),
        (0xFE00, 0xFE0F),
        (0xFEFF, 0xFEFF),
        (0xFFA0, 0xFFA0),
        (0xFFF0, 0xFFF8),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0000, 0xE0FFF),
    ];

    #[test]
    fn every_default_ignorable_code_point_is_escaped() {
        // Two tool names that differ by one of these would look the same to the admin.
        for &(lo, hi) in DEFAULT_IGNORABLE {
            for n in lo..=hi {
                let c = char::from_u32(n).unwrap();
                let name = format!("read{c}_file");
                assert_eq!(
                    escape(&name),
                    format!("read\\u{{{n:04x}}}_file"),
                    "U+{n:04X}"
                );
            }
        }
    }

    #[test]
    fn an_escape_sequence_and_a_bidi_override_are_shown_not_obeyed() {
        assert_eq!(
            escape("ok\u{1b}]0;pwned\u{7}\r\u{202e}txt.exe"),
            "ok\\x1b]0;pwned\\x07\\x0d\\u{202e}txt.exe"
        );
        assert_eq!(escape_bytes(b"a\xffb\xe2\x80"), "a\\xffb\\xe2\\x80");
        assert_eq!(escape("C:\\x41"), "C:\\\\x41");
        assert_eq!(escape("\u{85}\u{9b}2J"), "\\u{0085}\\u{009b}2J");
    }
}
