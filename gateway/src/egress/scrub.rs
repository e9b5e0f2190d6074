//! Streaming body wrappers built on [`super::rewrite`]: [`Scrub`] turns real values back into
//! placeholders in a response, [`Scan`] stops a request body before a placeholder's bytes
//! leave, [`Counted`] counts bytes and reports when the body ends (for the audit).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use super::rewrite::{Replacements, StreamRewriter};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Replaces the needles of `set` in every header value; a value that no longer parses is
/// dropped. A header whose name holds a needle is dropped, and so are all values of a name
/// whose concatenation still holds one once each value is scrubbed (a value split across
/// repeated headers, which a client may join back).
pub fn scrub_headers(headers: &mut HeaderMap, set: &Replacements) {
    let names: Vec<_> = headers.keys().cloned().collect();
    for name in names {
        if set.found_in(name.as_str().as_bytes()) {
            headers.remove(&name);
            continue;
        }
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        let joined: Vec<u8> = values.iter().flat_map(|v| v.as_bytes()).copied().collect();
        if !set.found_in(&joined) {
            continue;
        }
        headers.remove(&name);
        let scrubbed: Vec<HeaderValue> = values
            .iter()
            .filter_map(|v| HeaderValue::from_bytes(&set.replace_all(v.as_bytes())).ok())
            .collect();
        let rejoined: Vec<u8> = scrubbed
            .iter()
            .flat_map(|v| v.as_bytes())
            .copied()
            .collect();
        if set.found_in(&rejoined) {
            continue;
        }
        for v in scrubbed {
            headers.append(&name, v);
        }
    }
}

/// A response body with every needle replaced, across any chunk boundaries.
pub struct Scrub<B> {
    inner: B,
    set: Replacements,
    rw: StreamRewriter,
    /// Rewritten pieces not yet returned.
    ready: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    ended: bool,
}

impl<B> Scrub<B> {
    pub fn new(inner: B, set: Replacements) -> Self {
        Self {
            inner,
            rw: StreamRewriter::new(set.clone()),
            set,
            ready: VecDeque::new(),
            trailers: None,
            ended: false,
        }
    }
}

impl<B> Body for Scrub<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(piece) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if this.ended {
                let rest = this.rw.finish();
                if !rest.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                }
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => this.ended = true,
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut out = Vec::new();
                        this.rw.push(data, &mut out);
                        this.ready.extend(out.into_iter().filter(|p| !p.is_empty()));
                    }
                    Err(frame) => {
                        if let Ok(mut t) = frame.into_trailers() {
                            scrub_headers(&mut t, &this.set);
                            this.trailers = Some(t);
                        }
                        this.ended = true;
                    }
                },
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default() // the length changes: never a Content-Length
    }
}

/// The error a [`Scan`] body ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body carries a credential's real value or a placeholder for another host")]
pub struct PlaceholderInBody;

/// A request body that fails as soon as it is certain to contain one of the needles of its set
/// (placeholders, real values); the bytes of a (partial) needle are held back, so they never
/// reach the upstream.
pub struct Scan<B> {
    inner: B,
    rw: StreamRewriter,
    /// The needle found, for the caller's audit.
    found: Arc<Mutex<Option<usize>>>,
    /// Checked pieces not yet returned.
    ready: VecDeque<Bytes>,
    ended: bool,
}

impl<B> Scan<B> {
    /// `found` receives the index (in `set`) of the first needle seen.
    pub fn new(inner: B, set: Replacements, found: Arc<Mutex<Option<usize>>>) -> Self {
        Self {
            inner,
            rw: StreamRewriter::new(set),
            found,
            ready: VecDeque::new(),
            ended: false,
        }
    }

    fn trip(&self) -> PlaceholderInBody {
        *self.found.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(self.rw.first_hit.unwrap_or(0));
        PlaceholderInBody
    }
}

impl<B> Body for Scan<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(piece) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => {
                    this.ended = true;
                    let rest = this.rw.finish();
                    if this.rw.hits > 0 {
                        return Poll::Ready(Some(Err(this.trip().into())));
                    }
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Some(Ok(frame)) => {
                    // Request trailers are dropped (hop-by-hop `Trailer` was removed too).
                    if let Ok(data) = frame.into_data() {
                        let mut out = Vec::new();
                        this.rw.push(data, &mut out);
                        if this.rw.hits > 0 {
                            this.ended = true;
                            return Poll::Ready(Some(Err(this.trip().into())));
                        }
                        this.ready.extend(out.into_iter().filter(|p| !p.is_empty()));
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

macro_rules! opaque_debug {
    ($($t:ident),*) => {$(
        impl<B> std::fmt::Debug for $t<B> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($t))
            }
        }
    )*};
}
opaque_debug!(Scrub, Scan, Counted);

type OnEnd = Box<dyn FnOnce(u64, bool) + Send>;

/// Counts data bytes; `on_end(bytes, complete)` runs once, at the end or when dropped early.
pub struct Counted<B> {
    inner: B,
    bytes: u64,
    on_end: Option<OnEnd>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, on_end: impl FnOnce(u64, bool) + Send + 'static) -> Self {
        Self {
            inner,
            bytes: 0,
            on_end: Some(Box::new(on_end)),
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.bytes, false);
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            None => {
                if let Some(f) = this.on_end.take() {
                    f(this.bytes, true);
                }
            }
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use zeroize::Zeroizing;

    type TestBody =
        StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    fn frames(data: &[u8], size: usize) -> TestBody {
        let v: Vec<Result<Frame<Bytes>, BoxError>> = data
            .chunks(size)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(v))
    }

    #[tokio::test]
    async fn scrub_straddling_values() {
        let secret = b"sk-REALSECRETVALUE-0123456789";
        let set = Replacements::exact(vec![(
            Zeroizing::new(secret.to_vec()),
            Zeroizing::new(b"gmcp_ph_x".to_vec()),
        )])
        .unwrap()
        .unwrap();
        let mut text = Vec::new();
        for i in 0..20 {
            text.extend_from_slice(format!("line {i} ").as_bytes());
            text.extend_from_slice(secret);
        }
        let want = set.replace_all(&text);
        for size in 1..=40 {
            let got = Scrub::new(frames(&text, size), set.clone())
                .collect()
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(&got[..], &want[..], "chunk size {size}");
        }
    }

    fn placeholder_set(ph: &str) -> Replacements {
        let ph = Zeroizing::new(ph.as_bytes().to_vec());
        Replacements::exact(vec![(ph.clone(), ph)])
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_value_split_across_repeated_headers_is_dropped_and_a_named_one_too() {
        let set = Replacements::exact(vec![(
            Zeroizing::new(b"sk-realvalue-42".to_vec()),
            Zeroizing::new(b"gmcp_ph_x".to_vec()),
        )])
        .unwrap()
        .unwrap();
        let mut h = HeaderMap::new();
        h.append("x-split", HeaderValue::from_static("sk-real"));
        h.append("x-split", HeaderValue::from_static("value-42"));
        h.append("x-whole", HeaderValue::from_static("a sk-realvalue-42 b"));
        h.append("x-sk-realvalue-42", HeaderValue::from_static("1"));
        h.append("x-fine", HeaderValue::from_static("ok"));
        scrub_headers(&mut h, &set);
        assert!(h.get("x-split").is_none());
        assert_eq!(h["x-whole"], "a gmcp_ph_x b");
        assert_eq!(h["x-fine"], "ok");
        assert_eq!(h.len(), 2, "{h:?}");
    }

    #[tokio::test]
    async fn scan_stops_before_the_placeholder_leaves() {
        let ph = "gmcp_ph_00112233445566778899aabbccddeeff";
        let mut body = vec![b'a'; 1000];
        body.extend_from_slice(ph.as_bytes());
        body.extend_from_slice(&[b'b'; 100]);
        for size in [1, 7, 64, 4096] {
            let found = Arc::new(Mutex::new(None));
            let mut scan = Scan::new(frames(&body, size), placeholder_set(ph), found.clone());
            let mut sent = Vec::new();
            let mut failed = false;
            while let Some(f) = scan.frame().await {
                match f {
                    Ok(f) => sent.extend_from_slice(&f.into_data().unwrap()),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(failed, "size {size}");
            assert!(
                memchr::memmem::find(&sent, b"gmcp_ph_").is_none(),
                "size {size}"
            );
            assert_eq!(*found.lock().unwrap(), Some(0));
        }
        let clean = vec![b'c'; 5000];
        let found = Arc::new(Mutex::new(None));
        let scan = Scan::new(frames(&clean, 333), placeholder_set(ph), found);
        assert_eq!(scan.collect().await.unwrap().to_bytes().len(), 5000);
    }
}
