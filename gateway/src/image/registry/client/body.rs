//! Reading a response's body under the registry client's rules: a cap (refused before reading
//! when the declared length passes it), an idle timeout per chunk and a deadline scaled by the
//! size, so a registry that streams forever or trickles costs a bounded time and memory.

use bytes::Bytes;
use http::header;
use http_body_util::BodyExt;
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use super::{MAX_SMALL_BODY, Origin, Response, Timeouts};
use crate::image::blobs::BlobWriter;
use crate::image::registry::RegistryError;

impl Response {
    /// The declared length, if any.
    fn content_length(&self) -> Option<u64> {
        self.headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// The body whole, refused past `max` bytes (before reading when the length says so).
    pub async fn read_capped(
        mut self,
        what: &str,
        max: u64,
        t: &Timeouts,
    ) -> Result<Bytes, RegistryError> {
        let too_large = || RegistryError::TooLarge {
            what: what.to_owned(),
            max,
        };
        if self.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let budget = t.deadline_for(max);
        let deadline = Instant::now() + budget;
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk(what, t, deadline, budget).await? {
            if out.len() as u64 + chunk.len() as u64 > max {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    /// Streams the body into `writer`, which refuses bytes past the pinned size (so the
    /// temporary file never grows past it). `what` names the blob in errors.
    pub async fn stream_into(
        mut self,
        what: &str,
        writer: &mut BlobWriter,
        pinned: u64,
        t: &Timeouts,
    ) -> Result<(), RegistryError> {
        if self.content_length().is_some_and(|n| n > pinned) {
            return Err(RegistryError::TooLarge {
                what: what.to_owned(),
                max: pinned,
            });
        }
        let budget = t.deadline_for(pinned);
        let deadline = Instant::now() + budget;
        while let Some(chunk) = self.next_chunk(what, t, deadline, budget).await? {
            writer.write(&chunk)?;
        }
        Ok(())
    }

    /// A short, printable excerpt of an error body (registries explain refusals in JSON).
    pub async fn error_excerpt(self, t: &Timeouts) -> String {
        let quick = Timeouts {
            deadline_base: t.idle.min(Duration::from_secs(5)),
            ..*t
        };
        match self
            .read_capped("an error body", MAX_SMALL_BODY, &quick)
            .await
        {
            Ok(b) => String::from_utf8_lossy(&b)
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect(),
            Err(_) => String::new(),
        }
    }

    async fn next_chunk(
        &mut self,
        what: &str,
        t: &Timeouts,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Option<Bytes>, RegistryError> {
        loop {
            let idle_end = (Instant::now() + t.idle).min(deadline);
            let frame = match timeout_at(idle_end, self.body.frame()).await {
                Ok(f) => f,
                Err(_) if Instant::now() >= deadline => {
                    return Err(RegistryError::Timeout {
                        what: format!("{what}: the whole body (its deadline)"),
                        after: budget,
                    });
                }
                Err(_) => {
                    return Err(RegistryError::Timeout {
                        what: format!("{what}: the next bytes"),
                        after: t.idle,
                    });
                }
            };
            let Some(frame) = frame else {
                return Ok(None);
            };
            let frame = frame.map_err(|source| RegistryError::Http {
                origin: Origin::of(&self.url)
                    .map_or_else(|_| self.url.to_string(), |o| o.to_string()),
                source,
            })?;
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
    }
}
