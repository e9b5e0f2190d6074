//! Streaming search-and-replace over a body that arrives in chunks.
//!
//! Used in both directions at the network boundary: real secret values in a response are turned
//! back into their placeholders (so an echoing upstream cannot reflect a secret into the
//! sandbox), and placeholders in a request are looked for where no credential was declared.
//! A match may straddle any number of chunk boundaries, so the rewriter holds back the last
//! `longest needle - 1` bytes of each chunk until the next one shows whether they start a match.
//!
//! Search is `memchr::memmem` per needle (a handful per host), not an Aho-Corasick automaton:
//! nothing to build per request, several GB/s on data that never matches (the common case), and
//! the needles (secret values) stay only in wiped buffers. Chunks that hold no match pass
//! through as slices of the upstream's buffers, without a copy.

use bytes::Bytes as Chunk;
use memchr::memmem::Finder;
use zeroize::Zeroizing;

/// Bytes that may be secret: wiped when dropped.
pub type Bytes = Zeroizing<Vec<u8>>;

/// A set of needles, each with its replacement. Cheap to build: once per request or response.
#[derive(Debug, Clone)]
pub struct Replacements {
    needles: Vec<Bytes>,
    replacements: Vec<Bytes>,
    longest: usize,
}

const STALE: usize = usize::MAX;

/// Leftmost-longest, non-overlapping matches of several needles in one haystack.
struct Matches<'a> {
    finders: Vec<Finder<'a>>,
    hay: &'a [u8],
    /// Where the next match may start.
    pos: usize,
    /// Per needle: `Some(p)` the next occurrence found so far, `None` none left, or
    /// `Some(STALE)` not searched yet. An occurrence before `pos` is searched again.
    next: Vec<Option<usize>>,
}

impl Iterator for Matches<'_> {
    /// (start, end, needle index)
    type Item = (usize, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, usize, usize)> = None;
        for (i, f) in self.finders.iter().enumerate() {
            let at = match self.next[i] {
                Some(p) if p != STALE && p >= self.pos => Some(p),
                Some(_) => {
                    let found = self.hay.get(self.pos..).and_then(|h| f.find(h));
                    found.map(|p| p + self.pos)
                }
                None => None,
            };
            self.next[i] = at;
            if let Some(start) = at {
                let end = start + f.needle().len();
                if best.is_none_or(|(s, e, _)| start < s || (start == s && end > e)) {
                    best = Some((start, end, i));
                }
            }
        }
        if let Some((_, end, _)) = best {
            self.pos = end;
        }
        best
    }
}

impl Replacements {
    /// `pairs` are (needle, replacement); empty needles are ignored. `None` if nothing to find.
    pub fn new(pairs: Vec<(Bytes, Bytes)>) -> Option<Self> {
        let (needles, replacements): (Vec<_>, Vec<_>) =
            pairs.into_iter().filter(|(n, _)| !n.is_empty()).unzip();
        let longest = needles.iter().map(|n| n.len()).max()?;
        Some(Self {
            needles,
            replacements,
            longest,
        })
    }

    fn matches<'a>(&'a self, hay: &'a [u8]) -> Matches<'a> {
        Matches {
            finders: self
                .needles
                .iter()
                .map(|n| Finder::new(n.as_slice()))
                .collect(),
            hay,
            pos: 0,
            next: vec![Some(STALE); self.needles.len()],
        }
    }

    /// The needles (by index) found in `haystack`, one entry per match.
    pub fn hits(&self, haystack: &[u8]) -> Vec<usize> {
        self.matches(haystack).map(|(_, _, i)| i).collect()
    }

    /// Whether `haystack` contains any needle (for data that is not streamed, e.g. a header).
    pub fn found_in(&self, haystack: &[u8]) -> bool {
        self.matches(haystack).next().is_some()
    }

    /// Replaces every needle in a complete buffer.
    pub fn replace_all(&self, haystack: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(haystack.len());
        let mut done = 0;
        for (start, end, i) in self.matches(haystack) {
            out.extend_from_slice(&haystack[done..start]);
            out.extend_from_slice(&self.replacements[i]);
            done = end;
        }
        out.extend_from_slice(&haystack[done..]);
        out
    }
}

/// One piece of rewritten output: a range of the input, or a needle's replacement.
enum Piece {
    Kept(usize, usize),
    Replaced(usize),
}

/// The state of one stream being rewritten.
#[derive(Debug)]
pub struct StreamRewriter {
    set: Replacements,
    /// Bytes held back because they may be the start of a needle (fewer than `longest`).
    carry: Bytes,
    /// How many replacements were made so far.
    pub hits: usize,
    /// The needle (index) of the first replacement.
    pub first_hit: Option<usize>,
}

impl StreamRewriter {
    pub fn new(set: Replacements) -> Self {
        Self {
            set,
            carry: Zeroizing::new(Vec::new()),
            hits: 0,
            first_hit: None,
        }
    }

    /// Feeds one chunk; appends the bytes that are now final to `out` (a chunk without a
    /// match: one slice of it, no copy).
    pub fn push(&mut self, chunk: Chunk, out: &mut Vec<Chunk>) {
        if self.carry.is_empty() {
            return self.push_in_place(chunk, out);
        }
        let held = self.carry.len();
        let mut joined = Zeroizing::new(std::mem::take(&mut *self.carry));
        if chunk.len() < self.set.longest {
            // Small: join with what was held back and search the (short) whole.
            joined.extend_from_slice(&chunk);
            let keep_from = self.emit_copied(&joined, out);
            self.carry.extend_from_slice(&joined[keep_from..]);
            return;
        }
        // Settle the boundary on a short copy: the held-back bytes and the chunk's first
        // `longest` bytes hold every match that starts in the held-back part. What that holds
        // back in turn lies inside the chunk, so the rest is searched in the chunk itself.
        joined.extend_from_slice(&chunk[..self.set.longest]);
        let keep_from = self.emit_copied(&joined, out);
        debug_assert!(keep_from > held, "the held-back part is settled");
        self.push_in_place(chunk.slice(keep_from - held..), out);
    }

    /// [`Self::push`] with nothing held back: untouched ranges are slices of `chunk`.
    fn push_in_place(&mut self, chunk: Chunk, out: &mut Vec<Chunk>) {
        let (pieces, keep_from) = self.plan(&chunk);
        for p in pieces {
            out.push(match p {
                Piece::Kept(a, b) => chunk.slice(a..b),
                Piece::Replaced(i) => Chunk::copy_from_slice(&self.set.replacements[i]),
            });
        }
        self.carry.extend_from_slice(&chunk[keep_from..]);
    }

    /// Rewrites the settled part of `buf` into `out` as copies; returns where the held-back
    /// part starts.
    fn emit_copied(&mut self, buf: &[u8], out: &mut Vec<Chunk>) -> usize {
        let (pieces, keep_from) = self.plan(buf);
        for p in pieces {
            out.push(Chunk::copy_from_slice(match p {
                Piece::Kept(a, b) => &buf[a..b],
                Piece::Replaced(i) => &self.set.replacements[i],
            }));
        }
        keep_from
    }

    /// The matches in `buf` that are certain (they start before the last `longest - 1` bytes,
    /// which a later chunk may complete), and where the held-back part starts.
    fn plan(&mut self, buf: &[u8]) -> (Vec<Piece>, usize) {
        let mut safe_end = buf.len().saturating_sub(self.set.longest - 1);
        let mut pieces = Vec::new();
        let mut done = 0;
        for (start, end, i) in self.set.matches(buf) {
            if start >= safe_end {
                break;
            }
            if start > done {
                pieces.push(Piece::Kept(done, start));
            }
            pieces.push(Piece::Replaced(i));
            done = end;
            self.hits += 1;
            self.first_hit.get_or_insert(i);
            safe_end = safe_end.max(done);
        }
        if safe_end > done {
            pieces.push(Piece::Kept(done, safe_end));
        }
        (pieces, safe_end.max(done))
    }

    /// Ends the stream; returns the held-back bytes, rewritten.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = Zeroizing::new(std::mem::take(&mut *self.carry));
        for (_, _, i) in self.set.matches(&rest) {
            self.hits += 1;
            self.first_hit.get_or_insert(i);
        }
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
        let mut pieces = Vec::new();
        for c in chunks {
            rw.push(Chunk::copy_from_slice(c), &mut pieces);
        }
        let mut out: Vec<u8> = pieces.concat();
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

    /// Leftmost-longest by brute force, the oracle for the search.
    fn naive(pairs: &[(&str, &str)], hay: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < hay.len() {
            let best = pairs
                .iter()
                .filter(|(n, _)| hay[i..].starts_with(n.as_bytes()))
                .max_by_key(|(n, _)| n.len());
            match best {
                Some((n, r)) => {
                    out.extend_from_slice(r.as_bytes());
                    i += n.len();
                }
                None => {
                    out.push(hay[i]);
                    i += 1;
                }
            }
        }
        out
    }

    #[test]
    fn overlapping_needles_match_the_oracle_under_any_chunking() {
        let pairs = [("ab", "1"), ("aab", "22"), ("bba", "333"), ("abababa", "4")];
        let s = set(&pairs);
        // A small alphabet makes overlaps and boundary cases common.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let len = (rnd() % 60) as usize;
            let hay: Vec<u8> = (0..len).map(|_| b"ab"[(rnd() % 2) as usize]).collect();
            let want = naive(&pairs, &hay);
            assert_eq!(s.replace_all(&hay), want);
            let mut chunks = Vec::new();
            let mut at = 0;
            while at < hay.len() {
                let n = 1 + (rnd() % 12) as usize;
                chunks.push(&hay[at..(at + n).min(hay.len())]);
                at += n;
            }
            let mut rw = StreamRewriter::new(s.clone());
            assert_eq!(
                stream(&mut rw, &chunks),
                want,
                "{:?}",
                String::from_utf8_lossy(&hay)
            );
        }
    }
}
