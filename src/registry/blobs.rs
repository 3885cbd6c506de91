//! `HEAD`/`GET /v2/<name>/blobs/<digest>`, as streams.
//!
//! MCR and ACR answer blob GETs with a redirect to a storage host; the redirect is followed by
//! the HTTP client, which drops `Authorization` on a cross-host hop (storage refuses a stray
//! bearer token, and it must not leak there anyway).

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use reqwest::header::RANGE;

use super::{Registry, RegistryError, Request, Scope};
use crate::digest::Digest;

/// A blob body as it arrives. The caller hashes it.
pub type BlobStream = BoxStream<'static, Result<Bytes, RegistryError>>;

impl Registry {
    /// The size of a blob in `repo`, or `None` when the repository does not have it.
    pub async fn head_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        let url = self.v2(&format!("{repo}/blobs/{digest}"));
        let resp = self.send(Request::new(Method::HEAD, url.clone(), vec![Scope::pull(repo)])).await?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let resp = self.expect(&Method::HEAD, &url, resp, &[200]).await?;
        // The header itself: a HEAD response's body is empty, so reqwest's content_length() is 0.
        let size = resp
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Some(size))
    }

    /// Streams a blob, from `offset` on (a ranged GET, used to resume). A registry that ignores
    /// the range and sends the whole blob is handled by skipping the first `offset` bytes.
    pub async fn get_blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobStream, RegistryError> {
        let url = self.v2(&format!("{repo}/blobs/{digest}"));
        // The body is read by the upload it feeds, which needs a slot of its own: this request
        // gives its slot back at the headers (see `Hold`); blob slots bound the open bodies.
        let mut req = Request::new(Method::GET, url.clone(), vec![Scope::pull(repo)]).blob_stream();
        if offset > 0 {
            req = req.header(RANGE, &format!("bytes={offset}-"));
        }
        let resp = self.send(req).await?;
        let resp = self.expect(&Method::GET, &url, resp, &[200, 206]).await?;
        let skip = if offset > 0 && resp.status().as_u16() == 200 { offset } else { 0 };
        let host = self.host.clone();
        let stream = resp.bytes_stream().map_err(move |e| RegistryError::Body {
            registry: host.clone(),
            message: super::error::describe_reqwest_error(&e),
        });
        if skip == 0 {
            return Ok(stream.boxed());
        }
        let mut remaining = skip;
        Ok(stream
            .filter_map(move |chunk| {
                let out = match chunk {
                    Err(e) => Some(Err(e)),
                    Ok(mut b) => {
                        if remaining >= b.len() as u64 {
                            remaining -= b.len() as u64;
                            None
                        } else {
                            let rest = b.split_off(remaining as usize);
                            remaining = 0;
                            Some(Ok(rest))
                        }
                    }
                };
                futures::future::ready(out)
            })
            .boxed())
    }
}
