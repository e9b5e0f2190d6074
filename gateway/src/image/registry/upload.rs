//! The push half of the registry protocol: `HEAD` a blob, upload one monolithically (`POST`
//! then `PUT ?digest=`, so the registry re-hashes it), put a manifest and check the digest the
//! registry says it stored. The same transport and credential rules as a pull.

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri, header};

use super::client::{Body, Request};
use super::{RegistryClient, RegistryError};
use crate::image::digest::Digest;

impl RegistryClient {
    /// Whether the registry has blob `digest` in `repository` (`HEAD`).
    pub async fn has_blob(&self, repository: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let mut req = Request::get(self.url(&format!("/v2/{repository}/blobs/{digest}"))?);
        req.method = Method::HEAD;
        let resp = self.send(&Self::push_scope(repository), req).await?;
        match resp.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(RegistryError::Status {
                what: format!("HEAD blob {repository}@{digest}"),
                status: s.as_u16(),
                message: String::new(),
            }),
        }
    }

    /// Uploads the file at `path` as blob `digest` (monolithic: `POST` then `PUT ?digest=`).
    pub async fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        path: &std::path::Path,
    ) -> Result<(), RegistryError> {
        let scope = Self::push_scope(repository);
        let what = format!("upload of blob {repository}@{digest}");
        let mut start = Request::get(self.url(&format!("/v2/{repository}/blobs/uploads/"))?);
        start.method = Method::POST;
        let resp = self.send(&scope, start).await?;
        let resp = self.expect_ok(what.clone(), resp).await?;
        let location = resp
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::BadUrl {
                url: what.clone(),
                reason: "no Location for the upload",
            })?
            .to_owned();
        let base = if location.starts_with('/') {
            format!("{}{location}", self.registry)
        } else {
            location
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        let url: Uri =
            format!("{base}{sep}digest={digest}")
                .parse()
                .map_err(|_| RegistryError::BadUrl {
                    url: what.clone(),
                    reason: "not a valid upload location",
                })?;
        let mut put = Request::get(url);
        put.method = Method::PUT;
        put.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        put.body = Body::File(path.to_owned(), size);
        let resp = self.send(&scope, put).await?;
        let resp = self.expect_ok(what, resp).await?;
        drop(resp);
        Ok(())
    }

    /// Pushes a manifest or index under `reference` (a tag or its digest) and checks the
    /// digest the registry computed.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, RegistryError> {
        let expected = Digest::of(&bytes);
        let what = format!("manifest {repository}:{reference}");
        let mut put = Request::get(self.url(&format!("/v2/{repository}/manifests/{reference}"))?);
        put.method = Method::PUT;
        put.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| RegistryError::BadUrl {
                url: what.clone(),
                reason: "not a valid media type",
            })?,
        );
        put.body = Body::Bytes(bytes);
        let resp = self.send(&Self::push_scope(repository), put).await?;
        let resp = self.expect_ok(what.clone(), resp).await?;
        let got = resp
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if Digest::parse(&got).ok().as_ref() != Some(&expected) {
            return Err(RegistryError::PushedDigest {
                what,
                expected,
                got,
            });
        }
        Ok(expected)
    }
}
