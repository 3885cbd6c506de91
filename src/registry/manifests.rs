//! `HEAD`/`GET`/`PUT /v2/<name>/manifests/<reference>`, keeping the exact bytes.

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};

use super::transport::limits::ReadError;
use super::{Body, Registry, RegistryError, Request, Scope};
use crate::digest::{Digest, verify_bytes};
use crate::manifest::{ACCEPT_MANIFESTS, MAX_MANIFEST_BYTES, Manifest};

/// What a `HEAD` says about a manifest without fetching it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
    pub size: Option<u64>,
}

/// The result of pushing a manifest.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: Digest,
    /// The registry's `OCI-Subject` answer: it indexed the manifest's subject in its referrers API.
    pub oci_subject: Option<String>,
}

impl Registry {
    /// `HEAD` a manifest: its digest and media type, or `None` when it does not exist. Registries
    /// that omit `Docker-Content-Digest` are answered with a `GET` instead.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>, RegistryError> {
        let url = self.v2(&format!("{repo}/manifests/{reference}"));
        let req = Request::new(Method::HEAD, url.clone(), vec![Scope::pull(repo)]).header(ACCEPT, ACCEPT_MANIFESTS);
        let resp = self.send(req).await?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let resp = self.expect(&Method::HEAD, &url, resp, &[200]).await?;
        let h = resp.headers();
        let media_type = h
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let size = h.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let digest = h.get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|v| Digest::parse(v).ok());
        // The answer goes before asking again: it holds a request permit until dropped.
        drop(resp);
        match digest {
            Some(digest) => Ok(Some(ManifestHead { digest, media_type, size })),
            None => {
                let m = self.get_manifest(repo, reference).await?;
                Ok(Some(ManifestHead { size: Some(m.bytes.len() as u64), digest: m.digest, media_type: m.media_type }))
            }
        }
    }

    /// `GET` a manifest, refusing more than 4 MiB, verifying it against the digest asked for (when
    /// the reference is a digest) and against the `Docker-Content-Digest` the registry sent. A
    /// manifest handed to [`Registry::read_ahead`] (or [`Registry::read_ahead_tag`]) is answered
    /// from there, once, with no request.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest, RegistryError> {
        let key = match Digest::parse(reference) {
            Ok(digest) => digest.to_string(),
            Err(_) => reference.to_string(),
        };
        if let Some(m) = self.read_ahead.lock().expect("read-ahead lock").remove(&(repo.to_string(), key)) {
            return Ok(m);
        }
        Ok(self.get_manifest_and_origin(repo, reference).await?.0)
    }

    /// Keeps a manifest just read (by tag) for the next `GET` of it by digest, which then costs no
    /// request: the plan reads the source tag of an image it finds missing, and the copy that
    /// follows reads it by the digest the plan saw. A manifest is content-addressed and was
    /// verified when read, so the bytes are exactly what the `GET` would return; each is served
    /// once and then forgotten, so the table holds only what is between a plan and its copy.
    pub fn read_ahead(&self, repo: &str, manifest: &Manifest) {
        self.read_ahead
            .lock()
            .expect("read-ahead lock")
            .insert((repo.to_string(), manifest.digest.to_string()), manifest.clone());
    }

    /// Keeps a manifest just read by `tag` for the next `GET` of that tag, once: the provenance
    /// gate reads cosign's signature tag `sha256-<hex>.sig`, and the copy that follows takes the
    /// very manifest the gate judged (cosign replaces the tag's manifest to add a signature, so
    /// asking again could only give one the gate did not see).
    pub fn read_ahead_tag(&self, repo: &str, tag: &str, manifest: &Manifest) {
        self.read_ahead.lock().expect("read-ahead lock").insert((repo.to_string(), tag.to_string()), manifest.clone());
    }

    /// [`Registry::get_manifest`], with the answer's ACR `X-Azure-Origin` (see
    /// [`Registry::manifest_origin`]): a warm learns from the `GET` it makes anyway whether the
    /// cache already serves the manifest itself, and re-checks only those it does not.
    pub async fn get_manifest_and_origin(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(Manifest, Option<String>), RegistryError> {
        let url = self.v2(&format!("{repo}/manifests/{reference}"));
        let req = Request::new(Method::GET, url.clone(), vec![Scope::pull(repo)]).header(ACCEPT, ACCEPT_MANIFESTS);
        let resp = self.send(req).await?;
        let resp = self.expect(&Method::GET, &url, resp, &[200]).await?;
        let origin = super::acr::azure_origin(resp.headers());
        let display = format!("{}/{repo}:{reference}", crate::sanitize::short(&self.host));
        if let Some(len) = resp.content_length()
            && len > MAX_MANIFEST_BYTES
        {
            return Err(RegistryError::ManifestTooLarge { reference: display, size: len, limit: MAX_MANIFEST_BYTES });
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_string());
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let bytes = read_limited(self, resp, MAX_MANIFEST_BYTES, &display).await?;
        if let Ok(expected) = Digest::parse(reference) {
            verify_bytes(&bytes, &expected, None)
                .map_err(|mismatch| RegistryError::Mismatch { what: format!("manifest {display}"), mismatch })?;
        } else if let Some(expected) = header_digest.filter(|d| d.algorithm() == "sha256") {
            verify_bytes(&bytes, &expected, None).map_err(|mismatch| RegistryError::Mismatch {
                what: format!("manifest {display} (against the registry's Docker-Content-Digest)"),
                mismatch,
            })?;
        }
        let manifest = Manifest::from_bytes(bytes, content_type.as_deref())
            .map_err(|source| RegistryError::Manifest { reference: display, source })?;
        Ok((manifest, origin))
    }

    /// `PUT` a manifest's exact bytes under a tag or its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<Pushed, RegistryError> {
        let url = self.v2(&format!("{repo}/manifests/{reference}"));
        let req = Request::new(Method::PUT, url.clone(), vec![Scope::push(repo)])
            .header(CONTENT_TYPE, &manifest.media_type)
            .body(Body::Bytes(manifest.bytes.clone()));
        let resp = self.send(req).await?;
        let resp = self.expect(&Method::PUT, &url, resp, &[200, 201, 202]).await?;
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok())
            .unwrap_or_else(|| manifest.digest.clone());
        if digest != manifest.digest {
            return Err(RegistryError::Mismatch {
                what: format!("pushed manifest {}/{repo}:{reference}", self.host),
                mismatch: crate::digest::Mismatch::Digest { expected: manifest.digest.clone(), actual: digest },
            });
        }
        let oci_subject = resp.headers().get("oci-subject").and_then(|v| v.to_str().ok()).map(String::from);
        Ok(Pushed { digest, oci_subject })
    }
}

/// Reads a manifest-sized body, failing as soon as it grows past `limit` or takes longer than
/// the registry's response timeout.
pub(crate) async fn read_limited(
    registry: &Registry,
    resp: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Bytes, RegistryError> {
    let within = registry.transport.timeouts.response;
    super::transport::limits::read_within(resp, limit as usize, within).await.map_err(|e| match e {
        ReadError::TooLarge(_) => {
            RegistryError::ManifestTooLarge { reference: what.to_string(), size: limit + 1, limit }
        }
        e => RegistryError::Body { registry: registry.host.clone(), message: format!("{what}: {e}") },
    })
}
