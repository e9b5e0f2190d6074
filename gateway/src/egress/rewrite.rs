//! Streaming search-and-replace over a body that arrives in chunks.
//!
//! Used in both directions at the network boundary: real secret values in a response are turned
//! back into their placeholders (so an echoing upstream cannot reflect a secret into the
//! sandbox), and placeholders in a request are looked for where no credential was declared.
//! A match may straddle any number of chunk boundaries, so the rewriter holds back the last
//! `longest needle - 1` bytes of each chunk until the next one shows whether they start a match.
//!
//! Search is two Aho-Corasick automata (one exact, one ignoring ASCII case, for the
//! [`super::forms`] whose hex digits may come in either case) built once per set of values and
//! shared by every request that uses them ([`Replacements`] is an `Arc`): a per-call search
//! costs nothing to set up, and the automata's prefilters run at memory speed on data that
//! never matches (the common case). Chunks that hold no match pass through as slices of the
//! upstream's buffers, without a copy.
//!
//! The automata's tables hold the needles (secret values and their forms) in memory that is
//! not wiped when they are dropped; they live as long as the values' generation, in the process
//! that holds the vault open anyway. Everything else here (carried bytes, replacements) is
//! wiped.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, Input, Match, MatchKind};
use bytes::Bytes as Chunk;
use zeroize::Zeroizing;

pub use super::forms::{Bytes, Form};

/// The automata would not build (a set far beyond any credential's size).
#[derive(Debug, thiserror::Error)]
#[error("the search automaton for secret values cannot be built")]
pub struct TooLarge;

/// A set of needles, each with its replacement. Built once per set of values; cheap to clone.
#[derive(Debug, Clone)]
pub struct Replacements {
    inner: Arc<Searchers>,
}

#[derive(Debug)]
struct Searchers {
    /// The exact automaton and the folded one (where there are needles for it), each with the
    /// index (in the pairs given to [`Replacements::new`]) of each of its patterns.
    automata: Vec<(AhoCorasick, Vec<usize>)>,
    /// By needle index.
    replacements: Vec<Bytes>,
    longest: usize,
}

/// Leftmost-longest, non-overlapping matches of both automata in one haystack.
struct Matches<'a> {
    set: &'a Searchers,
    hay: &'a [u8],
    /// Where the next match may start.
    pos: usize,
    /// Per automaton: `Some(m)` the next match found so far (searched again once `pos` has
    /// passed its start), `None` none left.
    next: Vec<Option<Match>>,
    searched: bool,
}

impl Matches<'_> {
    fn search(&self, ac: &AhoCorasick) -> Option<Match> {
        let hay = self.hay.get(self.pos..)?;
        if hay.is_empty() {
            return None;
        }
        ac.find(Input::new(self.hay).span(self.pos..self.hay.len()))
    }
}

impl Iterator for Matches<'_> {
    /// (start, end, needle index)
    type Item = (usize, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, usize, usize)> = None;
        for (k, (ac, index)) in self.set.automata.iter().enumerate() {
            let at = match self.next[k] {
                Some(m) if self.searched && m.start() >= self.pos => Some(m),
                None if self.searched => None,
                _ => self.search(ac),
            };
            self.next[k] = at;
            if let Some(m) = at {
                let (start, end) = (m.start(), m.end());
                if best.is_none_or(|(s, e, _)| start < s || (start == s && end > e)) {
                    best = Some((start, end, index[m.pattern().as_usize()]));
                }
            }
        }
        self.searched = true;
        if let Some((_, end, _)) = best {
            self.pos = end;
        }
        best
    }
}

fn automaton(needles: &[&[u8]], folded: bool) -> Result<AhoCorasick, TooLarge> {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .ascii_case_insensitive(folded)
        .build(needles)
        .map_err(|_| TooLarge)
}

impl Replacements {
    /// `pairs` are (needle, replacement); empty needles are ignored. `Ok(None)` if nothing is
    /// left to find.
    pub fn new(pairs: Vec<(Form, Bytes)>) -> Result<Option<Self>, TooLarge> {
        let longest = pairs.iter().map(|(n, _)| n.bytes.len()).max().unwrap_or(0);
        if longest == 0 {
            return Ok(None);
        }
        let mut automata = Vec::new();
        for fold in [false, true] {
            let (index, needles): (Vec<usize>, Vec<&[u8]>) = pairs
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| n.folded == fold && !n.bytes.is_empty())
                .map(|(i, (n, _))| (i, n.bytes.as_slice()))
                .unzip();
            if !needles.is_empty() {
                automata.push((automaton(&needles, fold)?, index));
            }
        }
        let replacements = pairs.into_iter().map(|(_, r)| r).collect();
        Ok(Some(Self {
            inner: Arc::new(Searchers {
                automata,
                replacements,
                longest,
            }),
        }))
    }

    /// Byte-exact needles only (placeholders, tests).
    pub fn exact(pairs: Vec<(Bytes, Bytes)>) -> Result<Option<Self>, TooLarge> {
        Self::new(
            pairs
                .into_iter()
                .map(|(n, r)| (Form::exact(&n), r))
                .collect(),
        )
    }

    fn matches<'a>(&'a self, hay: &'a [u8]) -> Matches<'a> {
        Matches {
            set: &self.inner,
            hay,
            pos: 0,
            next: vec![None; self.inner.automata.len()],
            searched: false,
        }
    }

    fn longest(&self) -> usize {
        self.inner.longest
    }

    fn replacement(&self, i: usize) -> &[u8] {
        &self.inner.replacements[i]
    }

    /// The needles (by index) found in `haystack`, one entry per match.
    pub fn hits(&self, haystack: &[u8]) -> Vec<usize> {
        self.matches(haystack).map(|(_, _, i)| i).collect()
    }

    /// The first needle (by index) found in `haystack`.
    pub fn first_in(&self, haystack: &[u8]) -> Option<usize> {
        self.matches(haystack).next().map(|(_, _, i)| i)
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
            out.extend_from_slice(self.replacement(i));
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
        if chunk.len() < self.set.longest() {
            // Small: join with what was held back and search the (short) whole.
            joined.extend_from_slice(&chunk);
            let keep_from = self.emit_copied(&joined, out);
            self.carry.extend_from_slice(&joined[keep_from..]);
            return;
        }
        // Settle the boundary on a short copy: the held-back bytes and the chunk's first
        // `longest` bytes hold every match that starts in the held-back part. What that holds
        // back in turn lies inside the chunk, so the rest is searched in the chunk itself.
        joined.extend_from_slice(&chunk[..self.set.longest()]);
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
                Piece::Replaced(i) => Chunk::copy_from_slice(self.set.replacement(i)),
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
                Piece::Replaced(i) => self.set.replacement(i),
            }));
        }
        keep_from
    }

    /// The matches in `buf` that are certain (they start before the last `longest - 1` bytes,
    /// which a later chunk may complete), and where the held-back part starts.
    fn plan(&mut self, buf: &[u8]) -> (Vec<Piece>, usize) {
        let mut safe_end = buf.len().saturating_sub(self.set.longest() - 1);
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
        Replacements::exact(
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
    fn folded_needles_match_in_any_case_and_exact_ones_only_as_they_are() {
        let s = Replacements::new(vec![
            (
                Form {
                    bytes: Zeroizing::new(b"deadbeef".to_vec()),
                    folded: true,
                },
                Zeroizing::new(b"H".to_vec()),
            ),
            (Form::exact(b"Secret"), Zeroizing::new(b"R".to_vec())),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.replace_all(b"DeAdBeEf secret Secret"), b"H secret R");
        let mut rw = StreamRewriter::new(s);
        assert_eq!(stream(&mut rw, &[b"xDEAD", b"BEEFSec", b"ret"]), b"xHR");
    }

    #[test]
    fn found_in_and_empty_sets() {
        let s = set(&[("gmcp_ph_abc", "")]);
        assert!(s.found_in(b"Bearer gmcp_ph_abc"));
        assert!(!s.found_in(b"Bearer gmcp_ph_ab"));
        assert!(Replacements::new(vec![]).unwrap().is_none());
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
