//! Streaming search-and-replace over a body that arrives in chunks.
//!
//! Used in both directions at the network boundary: real secret values in a response are turned
//! back into their placeholders (so an echoing upstream cannot reflect a secret into the
//! sandbox), and placeholders in a request are looked for where no credential was declared.
//! A match may straddle any number of chunk boundaries, so the rewriter holds back the last
//! `longest needle - 1` bytes of each chunk until the next one shows whether they start a match.

use aho_corasick::{AhoCorasick, MatchKind};
use zeroize::Zeroizing;

/// Bytes that may be secret: wiped when dropped.
pub type Bytes = Zeroizing<Vec<u8>>;

/// A set of needles, each with its replacement. Built once per request or response.
#[derive(Debug, Clone)]
pub struct Replacements {
    finder: AhoCorasick,
    replacements: Vec<Bytes>,
    longest: usize,
}

impl Replacements {
    /// `pairs` are (needle, replacement); empty needles are ignored. `None` if nothing to find.
    pub fn new(pairs: Vec<(Bytes, Bytes)>) -> Option<Self> {
        let pairs: Vec<_> = pairs.into_iter().filter(|(n, _)| !n.is_empty()).collect();
        if pairs.is_empty() {
            return None;
        }
        let longest = pairs.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(pairs.iter().map(|(n, _)| n.as_slice()))
            .expect("needles are bounded in number and size");
        Some(Self {
            finder,
            replacements: pairs.into_iter().map(|(_, r)| r).collect(),
            longest,
        })
    }

    /// Whether `haystack` contains any needle (for data that is not streamed, e.g. a header).
    pub fn found_in(&self, haystack: &[u8]) -> bool {
        self.finder.is_match(haystack)
    }

    /// Replaces every needle in a complete buffer.
    pub fn replace_all(&self, haystack: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(haystack.len());
        self.finder
            .replace_all_with_bytes(haystack, &mut out, |m, _, dst| {
                dst.extend_from_slice(&self.replacements[m.pattern().as_usize()]);
                true
            });
        out
    }
}

/// The state of one stream being rewritten.
#[derive(Debug)]
pub struct StreamRewriter {
    set: Replacements,
    /// Bytes held back because they may be the start of a needle.
    carry: Zeroizing<Vec<u8>>,
    /// How many replacements were made so far.
    pub hits: usize,
}

impl StreamRewriter {
    pub fn new(set: Replacements) -> Self {
        Self {
            set,
            carry: Zeroizing::new(Vec::new()),
            hits: 0,
        }
    }

    /// Feeds one chunk; returns the bytes that are now final.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut buf = Zeroizing::new(std::mem::take(&mut *self.carry));
        buf.extend_from_slice(chunk);
        // A needle may start in the last `longest - 1` bytes and end in a later chunk; hold
        // those back, unless a match already covers them.
        let mut safe_end = buf.len().saturating_sub(self.set.longest - 1);
        let mut out = Vec::with_capacity(buf.len());
        let mut done = 0;
        for m in self.set.finder.find_iter(buf.as_slice()) {
            if m.start() >= safe_end {
                break;
            }
            out.extend_from_slice(&buf[done..m.start()]);
            out.extend_from_slice(&self.set.replacements[m.pattern().as_usize()]);
            done = m.end();
            self.hits += 1;
            safe_end = safe_end.max(done);
        }
        let keep_from = safe_end.max(done);
        out.extend_from_slice(&buf[done..keep_from]);
        self.carry.extend_from_slice(&buf[keep_from..]);
        out
    }

    /// Ends the stream; returns the held-back bytes, rewritten.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = Zeroizing::new(std::mem::take(&mut *self.carry));
        let before = self.set.finder.find_iter(rest.as_slice()).count();
        self.hits += before;
        self.set.replace_all(&rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Replacements {
        Replacements::new(
            pairs
                .iter()
                .map(|(n, r)| {
                    (
                        Zeroizing::new(n.as_bytes().to_vec()),
                        Zeroizing::new(r.as_bytes().to_vec()),
                    )
                })
                .collect(),
        )
        .unwrap()
    }

    fn stream(rw: &mut StreamRewriter, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(rw.push(c));
        }
        out.extend(rw.finish());
        out
    }

    #[test]
    fn replaces_across_every_possible_split() {
        let s = set(&[("SECRETVALUE", "gmcp_ph_x")]);
        let input = b"aa SECRETVALUE bb SECRETVALUESECRETVALUE cc SECRETVALU";
        let expected = b"aa gmcp_ph_x bb gmcp_ph_xgmcp_ph_x cc SECRETVALU".to_vec();
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let mut rw = StreamRewriter::new(s.clone());
                let out = stream(&mut rw, &[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(out, expected, "split at {i},{j}");
                assert_eq!(rw.hits, 3);
            }
        }
    }

    #[test]
    fn one_byte_chunks() {
        let s = set(&[("abc", "X"), ("bcd", "Y")]);
        let input = b"zabcdz bcd";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let mut rw = StreamRewriter::new(s.clone());
        assert_eq!(stream(&mut rw, &chunks), s.replace_all(input));
    }

    #[test]
    fn nothing_to_find_passes_bytes_through() {
        let s = set(&[("needle", "n")]);
        let mut rw = StreamRewriter::new(s);
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let out = stream(&mut rw, &big.chunks(4096).collect::<Vec<_>>());
        assert_eq!(out, big);
        assert_eq!(rw.hits, 0);
    }

    #[test]
    fn found_in_and_empty_sets() {
        let s = set(&[("gmcp_ph_abc", "")]);
        assert!(s.found_in(b"Bearer gmcp_ph_abc"));
        assert!(!s.found_in(b"Bearer gmcp_ph_ab"));
        assert!(Replacements::new(vec![]).is_none());
    }
}
