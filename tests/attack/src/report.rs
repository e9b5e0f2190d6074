//! The one-line result protocol the escape tests parse.

use crate::errno::Errno;

/// What an attack observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The operation failed with this errno: `ATTACK <name> BLOCKED <ERRNO-NAME>`.
    Blocked(Errno),
    /// The attack worked (a security failure): `ATTACK <name> SUCCEEDED <detail>`.
    Succeeded(String),
    /// An observation the test checks itself: `ATTACK <name> RESULT <detail>`.
    Result(String),
}

/// The line (without the newline) reporting `outcome` for attack `name`.
pub fn line(name: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Blocked(errno) => format!("ATTACK {name} BLOCKED {errno}"),
        Outcome::Succeeded(detail) => format!("ATTACK {name} SUCCEEDED {}", one_line(detail)),
        Outcome::Result(detail) => format!("ATTACK {name} RESULT {}", one_line(detail)),
    }
    .trim_end()
    .to_owned()
}

/// Escapes control characters (newlines included) so a detail stays on one line. Backslashes
/// are kept as they are: details that carry raw data escape it themselves ([`escape_bytes`]).
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Like [`one_line`] for raw bytes: printable ASCII kept, everything else `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_three_kinds() {
        assert_eq!(
            line("mount", &Outcome::Blocked(Errno(libc::EPERM))),
            "ATTACK mount BLOCKED EPERM"
        );
        assert_eq!(
            line("chroot", &Outcome::Succeeded("chroot /tmp".into())),
            "ATTACK chroot SUCCEEDED chroot /tmp"
        );
        assert_eq!(
            line("env", &Outcome::Result("A=1;B=2".into())),
            "ATTACK env RESULT A=1;B=2"
        );
        assert_eq!(
            line("env", &Outcome::Result(String::new())),
            "ATTACK env RESULT"
        );
    }

    #[test]
    fn details_never_span_lines() {
        let l = line("read-file", &Outcome::Succeeded("a\nb\r\tc\u{1b}\\".into()));
        assert_eq!(l, "ATTACK read-file SUCCEEDED a\\nb\\r\\tc\\x1b\\");
        assert!(!l.contains('\n'));
        assert_eq!(escape_bytes(b"ok\n\xff\x00"), "ok\\n\\xff\\x00");
    }
}
