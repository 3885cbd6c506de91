//! Blob uploads: `POST` (with an optional cross-repository mount), a single streamed `PUT` for
//! small blobs, `PATCH` chunks with `Content-Range` for large ones, the session's status `GET`
//! to resume after a failed chunk, and `DELETE` for a session that will not be finished.

use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};
use url::Url;

use super::{Body, Registry, RegistryError, Request, Scope};
use crate::digest::Digest;

/// An open upload session: where to send the next request. Registries may move it on each answer.
#[derive(Debug, Clone)]
pub struct Session {
    pub repo: String,
    pub location: Url,
}

/// What `POST …/blobs/uploads/` gave us.
#[derive(Debug)]
pub enum Started {
    /// The mount worked: the blob is already in the repository.
    Mounted,
    /// An upload session (also the answer when a mount was refused: the 202 fallback).
    Session(Session),
}

impl Registry {
    /// Opens an upload session, first trying to mount `digest` from `from` (same registry) when given.
    pub async fn start_upload(&self, repo: &str, mount: Option<(&str, &Digest)>) -> Result<Started, RegistryError> {
        let mut url = self.v2(&format!("{repo}/blobs/uploads/"));
        let mut scopes = vec![Scope::push(repo)];
        if let Some((from, digest)) = mount {
            url.query_pairs_mut().append_pair("mount", digest.as_str()).append_pair("from", from);
            if from != repo {
                scopes.push(Scope::pull(from));
            }
        }
        let req = Request::new(Method::POST, url.clone(), scopes).header(CONTENT_LENGTH, "0");
        let resp = self.send(req).await?;
        let resp = self.expect(&Method::POST, &url, resp, &[201, 202]).await?;
        if resp.status().as_u16() == 201 {
            return Ok(Started::Mounted);
        }
        Ok(Started::Session(Session { repo: repo.to_string(), location: self.location(&resp)? }))
    }

    /// Opens an upload session for `digest` in `repo`, asking in the same request whether the
    /// repository already holds it: a mount of the blob from `repo` itself, which distribution
    /// answers 201 when the blob is there (a run killed mid-way left it) and 202 with a session
    /// when not, as for any refused mount. So a blob costs `POST` + `PUT`, as the spec's upload
    /// does, where a `HEAD` first cost a third request (and round trip) per blob. A registry that
    /// answers the self-mount with a client error is asked with a plain `POST` from then on.
    pub async fn start_upload_unless_present(&self, repo: &str, digest: &Digest) -> Result<Started, RegistryError> {
        use std::sync::atomic::Ordering;
        if !self.no_self_mount.load(Ordering::Relaxed) {
            match self.start_upload(repo, Some((repo, digest))).await {
                Err(e) if e.status().is_some_and(|s| (400..500).contains(&s) && s != 401 && s != 429) => {
                    tracing::debug!(registry = %self.host, "a mount from the repository itself was refused ({e}); plain uploads from now on");
                    self.no_self_mount.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.start_upload(repo, None).await
    }

    fn location(&self, resp: &reqwest::Response) -> Result<Url, RegistryError> {
        let loc =
            resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| RegistryError::Protocol {
                registry: self.host.clone(),
                message: "upload answer has no Location header".into(),
            })?;
        self.resolve_location(loc)
    }

    /// Sends the whole blob in one streamed `PUT …?digest=` (the registry checks the digest too).
    pub async fn put_whole(
        &self,
        session: &Session,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), RegistryError> {
        let mut url = session.location.clone();
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let req = Request::new(Method::PUT, url.clone(), vec![Scope::push(&session.repo)])
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, &size.to_string())
            .body(Body::Stream(body));
        let resp = self.send(req).await?;
        self.expect(&Method::PUT, &url, resp, &[201, 204]).await?;
        Ok(())
    }

    /// Sends bytes `start..start+len` of the blob as one `PATCH`; returns the session's next location.
    pub async fn patch_chunk(
        &self,
        session: &Session,
        start: u64,
        len: u64,
        body: reqwest::Body,
    ) -> Result<Session, RegistryError> {
        let url = session.location.clone();
        let end = start + len - 1;
        let req = Request::new(Method::PATCH, url.clone(), vec![Scope::push(&session.repo)])
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, &len.to_string())
            .header(reqwest::header::CONTENT_RANGE, &format!("{start}-{end}"))
            .body(Body::Stream(body));
        let resp = self.send(req).await?;
        let resp = self.expect(&Method::PATCH, &url, resp, &[202, 204]).await?;
        Ok(Session { repo: session.repo.clone(), location: self.location(&resp)? })
    }

    /// Asks a session how many bytes it holds (`Range: 0-N`), and where to continue.
    pub async fn upload_status(&self, session: &Session) -> Result<(u64, Session), RegistryError> {
        let url = session.location.clone();
        let resp = self.send(Request::new(Method::GET, url.clone(), vec![Scope::push(&session.repo)])).await?;
        let resp = self.expect(&Method::GET, &url, resp, &[204, 200]).await?;
        let range = resp.headers().get(RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let held = held_bytes(range);
        let next = match resp.headers().get(LOCATION) {
            Some(_) => Session { repo: session.repo.clone(), location: self.location(&resp)? },
            None => session.clone(),
        };
        Ok((held, next))
    }

    /// Completes a chunked upload: `PUT …?digest=` with no body.
    pub async fn complete_upload(&self, session: &Session, digest: &Digest) -> Result<(), RegistryError> {
        let mut url = session.location.clone();
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let req = Request::new(Method::PUT, url.clone(), vec![Scope::push(&session.repo)])
            .header(CONTENT_LENGTH, "0")
            .body(Body::Empty);
        let resp = self.send(req).await?;
        self.expect(&Method::PUT, &url, resp, &[201, 204]).await?;
        Ok(())
    }

    /// Abandons a session so the registry discards what it holds. Failure to cancel is only logged:
    /// registries expire abandoned sessions on their own.
    pub async fn cancel_upload(&self, session: &Session) {
        let url = session.location.clone();
        match self.send(Request::new(Method::DELETE, url.clone(), vec![Scope::push(&session.repo)])).await {
            Ok(resp) if resp.status().is_success() || resp.status().as_u16() == 404 => {}
            Ok(resp) => {
                tracing::debug!(registry = %self.host, status = resp.status().as_u16(), "upload cancel refused")
            }
            Err(e) => tracing::debug!(registry = %self.host, "upload cancel failed: {e}"),
        }
    }
}

/// How many bytes an upload session's `Range` header says it holds. "0-N" is the inclusive range
/// of N+1 bytes, but distribution writes `0-(size-1)` clamped at zero, so an empty session also
/// answers "0-0" (others send no `Range`): "0-0" is read as nothing held. Resuming from 0 is
/// always safe — a session that did hold one byte refuses the chunk, and the upload starts over
/// in a new session — whereas resuming from 1 corrupts an empty one (`DIGEST_INVALID` at the end).
fn held_bytes(range: &str) -> u64 {
    match range.trim().trim_start_matches("bytes=").split_once('-') {
        Some((_, end)) => end.trim().parse::<u64>().map(|e| if e == 0 { 0 } else { e + 1 }).unwrap_or(0),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::held_bytes;

    #[test]
    fn an_empty_session_holds_nothing() {
        // Checks the reading of `Range`: "0-0" (distribution's answer for an empty session) and
        // no header are 0 bytes, "0-N" is N+1; reading "0-0" as one byte made resumed uploads
        // skip the blob's first byte.
        assert_eq!(held_bytes("0-0"), 0);
        assert_eq!(held_bytes(""), 0);
        assert_eq!(held_bytes("0-1048575"), 1 << 20);
        assert_eq!(held_bytes("bytes=0-9"), 10);
    }
}
