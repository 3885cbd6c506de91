//! OCI 1.1 referrers (signatures, SBOMs attached to a manifest): the referrers API
//! `GET /v2/<name>/referrers/<digest>`, or, where a registry lacks it (distribution 2.8 answers
//! 404), the tag schema fallback: an index at tag `sha256-<hex>` listing the referrers.
//!
//! Also cosign's own older scheme, still what cosign 2 writes by default and so what most signed
//! images on Docker Hub, GHCR and Quay carry: plain tags `sha256-<hex>.sig`, `.att` and `.sbom`
//! next to the image, invisible to the referrers API.

use reqwest::Method;
use reqwest::header::ACCEPT;

use super::{Registry, RegistryError, Request, Scope};
use crate::digest::Digest;
use crate::manifest::{Descriptor, Manifest, OCI_INDEX};

/// The tag suffixes cosign gives a subject's signatures, attestations and attached SBOMs.
const COSIGN_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

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
    /// A listing handed over by [`Registry::referrers_ahead`] is answered from there, once.
    pub async fn referrers(&self, repo: &str, digest: &Digest) -> Result<Referrers, RegistryError> {
        use std::sync::atomic::Ordering;
        if let Some(listed) =
            self.referrers_ahead.lock().expect("referrers read-ahead lock").remove(&(repo.to_string(), digest.clone()))
        {
            return Ok(listed);
        }
        // Until the registry has shown whether it has the API, one lookup at a time asks it:
        // a copy looks up every child's referrers at once, and each asked a registry without
        // the API (a wasted 404 per child).
        let probing = if self.referrers_api_seen.load(Ordering::Relaxed) {
            None
        } else {
            Some(self.referrers_probe.lock().await)
        };
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
                self.referrers_api_seen.store(true, Ordering::Relaxed);
                drop(probing);
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
        drop(probing);
        // The tag schema: list the repository's tags once, then fetch only fallback indexes that exist.
        if !self.tags_of(repo).await?.contains(&digest.referrers_tag()) {
            return Ok(Referrers::default());
        }
        Ok(Referrers {
            via_api: false,
            descriptors: self.referrers_by_tag(repo, digest).await?.map(|m| m.parsed.manifests).unwrap_or_default(),
        })
    }

    /// Keeps a referrers listing just made (by the provenance gate) for the next lookup of the
    /// same subject (the copy's), which then costs no request. The listing is of the same
    /// registry and repository moments earlier, exactly what asking again would most likely
    /// answer; every manifest it names is still read by digest and verified. Each is served
    /// once and then forgotten, so the table holds only what is between a gate and its copy.
    pub fn referrers_ahead(&self, repo: &str, digest: &Digest, listed: Referrers) {
        self.referrers_ahead.lock().expect("referrers read-ahead lock").insert((repo.to_string(), digest.clone()), listed);
    }

    /// cosign's signature, attestation and SBOM tags for `digest` that exist in `repo`. A registry
    /// that refuses to list tags (401/403) cannot show them: that is one warning per repository
    /// (the refusal stands for the run), not a failed copy.
    pub async fn cosign_tags(&self, repo: &str, digest: &Digest) -> Result<Vec<String>, RegistryError> {
        // The refusal is recorded inside the cell's one initialisation: lookups for several
        // subjects run at once, and each would otherwise ask (and warn) again.
        let tags = self
            .tag_cell(repo)
            .get_or_try_init(|| async {
                match self.list_tags(repo).await {
                    Ok(tags) => Ok(std::sync::Arc::new(tags.into_iter().collect())),
                    Err(e) if matches!(e.status(), Some(401 | 403)) => {
                        tracing::warn!(registry = %self.host, repo, "cannot list tags, so cosign signature tags are not looked for: {e}");
                        Ok(Default::default())
                    }
                    Err(e) => Err(e),
                }
            })
            .await?
            .clone();
        let base = digest.referrers_tag();
        Ok(COSIGN_SUFFIXES.iter().map(|s| format!("{base}{s}")).filter(|t| tags.contains(t)).collect())
    }

    /// A repository's tags, listed once per run (used for the `sha256-<hex>` fallback tags of sources).
    async fn tags_of(&self, repo: &str) -> Result<std::sync::Arc<std::collections::HashSet<String>>, RegistryError> {
        self.tag_cell(repo)
            .get_or_try_init(|| async { Ok(std::sync::Arc::new(self.list_tags(repo).await?.into_iter().collect())) })
            .await
            .cloned()
    }

    fn tag_cell(&self, repo: &str) -> std::sync::Arc<super::TagCell> {
        self.tag_cache.lock().expect("tag cache lock").entry(repo.to_string()).or_default().clone()
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
