//! OCI 1.1 referrers (signatures, SBOMs attached to a manifest): the referrers API
//! `GET /v2/<name>/referrers/<digest>`, or, where a registry lacks it (distribution 2.8 answers
//! 404), the tag schema fallback: an index at tag `sha256-<hex>` listing the referrers.

use reqwest::Method;
use reqwest::header::ACCEPT;

use super::{Registry, RegistryError, Request, Scope};
use crate::digest::Digest;
use crate::manifest::{Descriptor, Manifest, OCI_INDEX};

/// The referrers of one manifest and how they were found.
#[derive(Debug, Clone, Default)]
pub struct Referrers {
    /// True when the registry answered the referrers API.
    pub via_api: bool,
    pub descriptors: Vec<Descriptor>,
}

impl Registry {
    /// Lists the referrers of `digest` in `repo`, through the API when the registry has it,
    /// else through the tag schema.
    pub async fn referrers(&self, repo: &str, digest: &Digest) -> Result<Referrers, RegistryError> {
        use std::sync::atomic::Ordering;
        if !self.no_referrers_api.load(Ordering::Relaxed) {
            let url = self.v2(&format!("{repo}/referrers/{digest}"));
            let resp = self
                .send(Request::new(Method::GET, url.clone(), vec![Scope::pull(repo)]).header(ACCEPT, OCI_INDEX))
                .await?;
            let status = resp.status().as_u16();
            let is_index = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with(OCI_INDEX));
            if status == 200 && is_index {
                let bytes = super::manifests::read_limited(
                    self,
                    resp,
                    crate::manifest::MAX_MANIFEST_BYTES,
                    &format!("referrers of {digest}"),
                )
                .await?;
                let m = Manifest::from_bytes(bytes, Some(OCI_INDEX)).map_err(|source| RegistryError::Manifest {
                    reference: format!("{}/{repo} referrers of {digest}", self.host),
                    source,
                })?;
                return Ok(Referrers { via_api: true, descriptors: m.parsed.manifests });
            }
            if status != 404 && status != 200 {
                return Err(self.status_error(&Method::GET, &url, resp).await);
            }
            // A registry with the API answers 200 even when nothing refers to a manifest, so a 404
            // means it has none: ask no more for the rest of the run.
            self.no_referrers_api.store(true, Ordering::Relaxed);
        }
        // The tag schema: list the repository's tags once, then fetch only fallback indexes that exist.
        if !self.tags_of(repo).await?.contains(&digest.referrers_tag()) {
            return Ok(Referrers::default());
        }
        Ok(Referrers {
            via_api: false,
            descriptors: self.referrers_by_tag(repo, digest).await?.map(|m| m.parsed.manifests).unwrap_or_default(),
        })
    }

    /// A repository's tags, listed once per run (used for the `sha256-<hex>` fallback tags of sources).
    async fn tags_of(&self, repo: &str) -> Result<std::sync::Arc<std::collections::HashSet<String>>, RegistryError> {
        let cell = self.tag_cache.lock().expect("tag cache lock").entry(repo.to_string()).or_default().clone();
        cell.get_or_try_init(|| async { Ok(std::sync::Arc::new(self.list_tags(repo).await?.into_iter().collect())) })
            .await
            .cloned()
    }

    /// The tag schema index for `digest`, when there is one.
    pub async fn referrers_by_tag(&self, repo: &str, digest: &Digest) -> Result<Option<Manifest>, RegistryError> {
        match self.get_manifest(repo, &digest.referrers_tag()).await {
            Ok(m) if m.is_index() => Ok(Some(m)),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}
