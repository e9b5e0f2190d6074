//! [`Hostile`]: a scripted HTTP(S) server that records every request and answers whatever the
//! test says (wrong bytes, endless or trickling bodies, redirects).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};

use super::{AbortOnDrop, serve};
use crate::metadata::acceptor;

/// A response body of the scripted server.
pub type ReplyBody = BoxBody<Bytes, Infallible>;

/// A response with a whole body (its true `Content-Length`).
pub fn reply(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> Response<ReplyBody> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Full::new(Bytes::from(body)).boxed()).unwrap()
}

/// A response whose body is sent in chunks (no `Content-Length`): `chunks` of `chunk` bytes
/// (`None`: forever), each after `interval`.
pub fn streamed(
    status: u16,
    headers: &[(&str, &str)],
    chunk: Vec<u8>,
    chunks: Option<usize>,
    interval: Duration,
) -> Response<ReplyBody> {
    let chunk = Bytes::from(chunk);
    let stream = futures_util::stream::unfold(0usize, move |sent| {
        let chunk = chunk.clone();
        async move {
            if chunks.is_some_and(|n| sent >= n) {
                return None;
            }
            if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            Some((Ok::<_, Infallible>(Frame::data(chunk)), sent + 1))
        }
    });
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(BodyExt::boxed(StreamBody::new(stream))).unwrap()
}

/// A request as the hostile server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
}

type Script = Arc<dyn Fn(&Seen) -> Response<ReplyBody> + Send + Sync>;

/// A scripted server: records each request, answers with `script`.
#[derive(Debug)]
pub struct Hostile {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _task: AbortOnDrop,
}

impl Hostile {
    /// Listens on `addr` (port 0: any), over TLS with `tls` = (cert PEM, key PEM) if given.
    pub async fn start(
        addr: SocketAddr,
        tls: Option<(String, String)>,
        script: impl Fn(&Seen) -> Response<ReplyBody> + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let records = seen.clone();
        let script: Script = Arc::new(script);
        let tls = tls.map(|(c, k)| acceptor(&c, &k));
        let task = serve(listener, tls, move |req: Request<Incoming>| {
            let s = Seen {
                method: req.method().to_string(),
                path_and_query: req
                    .uri()
                    .path_and_query()
                    .map_or("/".into(), |p| p.to_string()),
                headers: req.headers().clone(),
            };
            records.lock().unwrap().push(s.clone());
            let resp = script(&s);
            async move { resp }
        });
        Self {
            addr,
            seen,
            _task: task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether any request carried an `Authorization` header.
    pub fn saw_authorization(&self) -> bool {
        self.seen()
            .iter()
            .any(|s| s.headers.contains_key("authorization"))
    }
}
