//! Small structured choices shared by the targets: host names, tricky strings, random bytes.

use arbitrary::{Result, Unstructured};

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A valid lower-case DNS name of 2 to 4 labels, unique enough (a random suffix) that two
/// picked names differ.
pub fn host(u: &mut Unstructured<'_>) -> Result<String> {
    let labels = u.int_in_range(2..=4)?;
    let mut parts = Vec::new();
    for _ in 0..labels {
        let len = u.int_in_range(1..=12)?;
        let mut label = String::new();
        for _ in 0..len {
            label.push(char::from(*u.choose(ALNUM)?));
        }
        parts.push(label);
    }
    // The top-level label is never all digits (that would read as an address).
    parts.push(format!("t{}", u.int_in_range(0..=999u16)?));
    Ok(parts.join("."))
}

/// `n` distinct hosts.
pub fn hosts(u: &mut Unstructured<'_>, n: usize) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    while out.len() < n {
        let h = host(u)?;
        if !out.contains(&h) {
            out.push(h);
        } else if u.is_empty() {
            out.push(format!("h{}.fallback.t0", out.len()));
        }
    }
    Ok(out)
}

/// `s` with the case of some letters flipped.
pub fn recase(u: &mut Unstructured<'_>, s: &str) -> Result<String> {
    s.chars()
        .map(|c| {
            Ok(if u.ratio(1, 3)? {
                c.to_ascii_uppercase()
            } else {
                c
            })
        })
        .collect()
}

/// A random token of `len` characters from `alphabet`.
pub fn token(u: &mut Unstructured<'_>, alphabet: &[u8], len: usize) -> Result<String> {
    (0..len)
        .map(|_| Ok(char::from(*u.choose(alphabet)?)))
        .collect()
}

/// Up to `max` raw bytes.
pub fn bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let n = u.int_in_range(0..=max)?;
    Ok(u.bytes(n.min(u.len()))?.to_vec())
}
