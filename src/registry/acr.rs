//! ACR's own listing API (`/acr/v1/…`, REST spec `Azure.ContainerRegistry` 2021-07-01,
//! <https://learn.microsoft.com/rest/api/containerregistry/>), with fallbacks to the distribution
//! API for every other registry:
//!
//! - `GET /acr/v1/_catalog` (`{"repositories":[…]}`, scope `registry:catalog:*`);
//! - `GET /acr/v1/{repo}/_tags` (`{"tags":[{"name","digest",…}]}`, scope `metadata_read`);
//! - `GET /acr/v1/{repo}/_manifests` (`{"manifests":[{"digest","imageSize","mediaType",
//!   "architecture","os","tags","references":[{"digest","architecture","os"}],…}]}`).
//!
//! All page with a `Link: <…>; rel="next"` header; as for tag lists, only a link's path and
//! query are followed (on this registry), and pages are bounded in size and number. `_manifests` is the one the plan uses: one
//! listing tells, per repository, which tag points at which digest *and* which manifests
//! (including the untagged children of an index) exist, so a no-op plan asks nothing per image.
//!
//! Also here: ACR's `X-Azure-Origin` header, which says a manifest is still served from a cache
//! rule's upstream rather than from the registry itself.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use reqwest::Method;
use reqwest::header::ACCEPT;
use serde::de::DeserializeOwned;
use url::Url;

use super::error::parse_error_body;
use super::tags::next_link;
use super::transport::limits::{self, LISTING_PAGES};
use super::{Registry, RegistryError, Request, Scope};
use crate::digest::Digest;
use crate::manifest::ACCEPT_MANIFESTS;

/// Page size asked for. ACR caps pages on its side; `Link` brings the rest.
const PAGE: &str = "1000";

/// The header ACR puts on a manifest answer while a cache rule still serves it from upstream.
pub const AZURE_ORIGIN: &str = "x-azure-origin";

/// A repository's tags, with their digests where the registry's listing gives them.
#[derive(Debug, Clone, Default)]
pub struct TagListing {
    /// Tag → digest; `None` when the listing did not say (plain `/v2/` tag lists).
    pub tags: HashMap<String, Option<Digest>>,
    /// Whether the digests came from ACR's listing API.
    pub with_digests: bool,
    /// Every manifest of the repository (tagged or not), when ACR's `_manifests` listed them.
    pub manifests: Option<HashSet<Digest>>,
}

impl TagListing {
    /// Whether the listing says `digest` exists; `None` when the listing cannot say.
    pub fn has_manifest(&self, digest: &Digest) -> Option<bool> {
        self.manifests.as_ref().map(|m| m.contains(digest))
    }
}

/// One manifest in `/acr/v1/{repo}/_manifests` (ManifestAttributesBase in the REST spec).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcrManifest {
    pub digest: String,
    #[serde(default)]
    pub image_size: Option<u64>,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The children of an index (empty for an image manifest).
    #[serde(default)]
    pub references: Vec<AcrReference>,
}

/// A child of an index as `_manifests` lists it (ManifestAttributesManifestReferences).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct AcrReference {
    pub digest: String,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
}

/// One tag in `/acr/v1/{repo}/_tags` (TagAttributesBase).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct AcrTag {
    pub name: String,
    #[serde(default)]
    pub digest: Option<String>,
    /// When the tag last changed (RFC 3339): its age for `prune`.
    #[serde(default, rename = "lastUpdateTime")]
    pub last_update_time: Option<String>,
}

impl Registry {
    /// Whether an earlier answer showed this registry has no ACR listing API.
    fn acr_api_absent(&self) -> bool {
        self.no_acr_api.load(Ordering::Relaxed)
    }

    /// Lists a repository once: ACR's `/acr/v1/{repo}/_manifests` (tags, digests and every
    /// manifest, `Link` paging) when the registry has it, else `/v2/{repo}/tags/list` (names only).
    /// A registry whose answer to the ACR path is not ACR's is remembered, so later listings go
    /// straight to `/v2/`. Until the first answer, listings ask one at a time: a plan lists every
    /// repository at once, and each probed a registry without the API (one wasted request per
    /// repository, up to the plan's concurrency).
    pub async fn list_tag_digests(&self, repo: &str) -> Result<TagListing, RegistryError> {
        let mut probing =
            if self.acr_api_seen.load(Ordering::Relaxed) { None } else { Some(self.acr_probe.lock().await) };
        // The listings that queued behind the first one go ahead together once it has answered:
        // holding the lock through each of them put one round trip per repository in a row.
        if self.acr_api_seen.load(Ordering::Relaxed) {
            probing = None;
        }
        if !self.acr_api_absent() {
            match self.acr_manifests(repo).await? {
                Some(manifests) => {
                    self.acr_api_seen.store(true, Ordering::Relaxed);
                    drop(probing);
                    let mut listing = TagListing { with_digests: true, ..Default::default() };
                    let mut all = HashSet::new();
                    for m in manifests {
                        let Ok(d) = Digest::parse(&m.digest) else { continue };
                        for t in m.tags {
                            listing.tags.insert(t, Some(d.clone()));
                        }
                        all.insert(d);
                    }
                    self.listed.lock().expect("listed lock").insert(repo.to_string(), std::sync::Arc::new(all.clone()));
                    listing.manifests = Some(all);
                    return Ok(listing);
                }
                None => self.no_acr_api.store(true, Ordering::Relaxed),
            }
        }
        drop(probing);
        let tags = self.list_tags(repo).await?;
        Ok(TagListing { tags: tags.into_iter().map(|t| (t, None)).collect(), with_digests: false, manifests: None })
    }

    /// Whether this run's ACR listing of `repo` (the plan's) held the manifest `digest`; `None`
    /// when the repository was not listed that way (no ACR API, or not listed yet). The copy
    /// asks this before a `HEAD` of a child manifest: the listing already answered it.
    pub fn listed_manifest(&self, repo: &str, digest: &Digest) -> Option<bool> {
        self.listed.lock().expect("listed lock").get(repo).map(|all| all.contains(digest))
    }

    /// `GET /acr/v1/{repo}/_manifests`, all pages; `None` when the registry does not speak ACR's
    /// API, empty when the repository does not exist.
    pub async fn acr_manifests(&self, repo: &str) -> Result<Option<Vec<AcrManifest>>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            manifests: Vec<AcrManifest>,
        }
        let url = self.api(&format!("acr/v1/{repo}/_manifests"));
        let pages: Option<Vec<Page>> =
            self.acr_pages(&format!("ACR manifest listing of {repo}"), url, Scope::metadata_read(repo)).await?;
        Ok(pages.map(|p| p.into_iter().flat_map(|p| p.manifests).collect()))
    }

    /// `GET /acr/v1/{repo}/_tags`, all pages; `None` when the registry does not speak ACR's API.
    pub async fn acr_tags(&self, repo: &str) -> Result<Option<Vec<AcrTag>>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Vec<AcrTag>,
        }
        let url = self.api(&format!("acr/v1/{repo}/_tags"));
        let pages: Option<Vec<Page>> =
            self.acr_pages(&format!("ACR tag listing of {repo}"), url, Scope::metadata_read(repo)).await?;
        Ok(pages.map(|p| p.into_iter().flat_map(|p| p.tags).collect()))
    }

    /// Every repository: `/acr/v1/_catalog` when the registry has it, else `/v2/_catalog`.
    pub async fn list_repositories(&self) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        if !self.acr_api_absent() {
            let pages: Option<Vec<Page>> =
                self.acr_pages("ACR catalog", self.api("acr/v1/_catalog"), Scope::catalog()).await?;
            match pages {
                Some(p) => return Ok(p.into_iter().flat_map(|p| p.repositories.unwrap_or_default()).collect()),
                None => self.no_acr_api.store(true, Ordering::Relaxed),
            }
        }
        let mut url = self.v2("_catalog");
        url.query_pairs_mut().append_pair("n", PAGE);
        let mut out = Vec::new();
        let mut read = 0;
        for _ in 0..LISTING_PAGES {
            let resp = self.send(Request::new(Method::GET, url.clone(), vec![Scope::catalog()])).await?;
            let resp = self.expect(&Method::GET, &url, resp, &[200]).await?;
            let next = next_link(resp.headers());
            let body = self.read_page("catalog", resp, &mut read).await?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                registry: self.host.clone(),
                message: format!("catalog is not JSON: {}", crate::sanitize::short(&e.to_string())),
            })?;
            out.extend(page.repositories.unwrap_or_default());
            match next {
                Some(link) => url = self.next_page(&url, &link)?,
                None => return Ok(out),
            }
        }
        Err(RegistryError::Protocol { registry: self.host.clone(), message: "the catalog never ends".into() })
    }

    /// Reads every page of an `/acr/v1/…` listing. `None` when the answer is not ACR's: a 404 or
    /// other client error without ACR's JSON error body, a non-JSON success, or a refusal (a
    /// token without `metadata_read` can still pull, so the caller falls back to `/v2/`).
    async fn acr_pages<P: DeserializeOwned>(
        &self,
        what: &str,
        first: Url,
        scope: Scope,
    ) -> Result<Option<Vec<P>>, RegistryError> {
        let mut url = first;
        url.query_pairs_mut().append_pair("n", PAGE);
        let mut pages = Vec::new();
        let mut read = 0;
        for _ in 0..LISTING_PAGES {
            let resp = self.send(Request::new(Method::GET, url.clone(), vec![scope.clone()])).await?;
            let status = resp.status().as_u16();
            let is_json = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.contains("json"));
            if status == 404 {
                // ACR answers an unknown repository with a JSON error; anything else has no such API.
                let body = limits::read_capped(resp, limits::SMALL_BODY, self.transport.timeouts.response).await.bytes;
                let (code, _) = parse_error_body(&body);
                return Ok(match code.as_deref() {
                    Some("NAME_UNKNOWN") | Some("REPOSITORY_NOT_FOUND") if is_json => Some(pages),
                    _ => None,
                });
            }
            if !(200..300).contains(&status) || !is_json {
                if status == 401 || status == 403 || (400..500).contains(&status) && !is_json {
                    return Ok(None);
                }
                if (200..300).contains(&status) {
                    return Ok(None);
                }
                return Err(self.status_error(&Method::GET, &url, resp).await);
            }
            let next = next_link(resp.headers());
            let body = self.read_page(what, resp, &mut read).await?;
            let page: P = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                registry: self.host.clone(),
                message: format!("{what}: {}", crate::sanitize::short(&e.to_string())),
            })?;
            pages.push(page);
            match next {
                Some(link) => url = self.next_page(&url, &link)?,
                None => return Ok(Some(pages)),
            }
        }
        Err(RegistryError::Protocol { registry: self.host.clone(), message: format!("{what} never ends") })
    }

    /// `HEAD` a manifest and return ACR's `X-Azure-Origin` (`upstream` while a cache rule still
    /// serves it from the upstream registry); `Ok(None)` when the header is absent.
    pub async fn manifest_origin(&self, repo: &str, reference: &str) -> Result<Option<String>, RegistryError> {
        let url = self.v2(&format!("{repo}/manifests/{reference}"));
        let req = Request::new(Method::HEAD, url.clone(), vec![Scope::pull(repo)]).header(ACCEPT, ACCEPT_MANIFESTS);
        let resp = self.send(req).await?;
        let resp = self.expect(&Method::HEAD, &url, resp, &[200]).await?;
        Ok(azure_origin(resp.headers()))
    }
}

/// An answer's `X-Azure-Origin`, trimmed and lower-cased; `None` when absent.
pub(crate) fn azure_origin(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get(AZURE_ORIGIN).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_listing_reads_the_rest_spec_shape() {
        // Checks the field names of the REST spec's AcrManifests/ManifestAttributesBase, with
        // `references` for an index and unknown fields ignored.
        let body = r#"{"registry":"r.azurecr.io","imageName":"app","manifests":[
          {"digest":"sha256:aa","imageSize":1234,"createdTime":"2026-01-01T00:00:00Z","lastUpdateTime":"2026-01-01T00:00:00Z",
           "mediaType":"application/vnd.oci.image.index.v1+json","tags":["1.0","latest"],
           "references":[{"digest":"sha256:bb","architecture":"amd64","os":"linux"}],
           "changeableAttributes":{"deleteEnabled":true,"writeEnabled":true,"readEnabled":true,"listEnabled":true}},
          {"digest":"sha256:bb","imageSize":10,"architecture":"amd64","os":"linux"}]}"#;
        #[derive(serde::Deserialize)]
        struct Page {
            manifests: Vec<AcrManifest>,
        }
        let p: Page = serde_json::from_str(body).unwrap();
        assert_eq!(p.manifests[0].tags, vec!["1.0", "latest"]);
        assert_eq!(p.manifests[0].references[0].architecture.as_deref(), Some("amd64"));
        assert_eq!(p.manifests[1].image_size, Some(10));
        assert!(p.manifests[1].references.is_empty());
    }
}
