//! `GET /v2/<name>/tags/list`, following `Link` pages: one listing per repository instead of one
//! request per tag, which is what keeps a no-op run cheap.

use reqwest::Method;

use super::{Registry, RegistryError, Request, Scope};

impl Registry {
    /// Every tag of `repo`; empty when the repository does not exist.
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut url = self.v2(&format!("{repo}/tags/list"));
        url.query_pairs_mut().append_pair("n", "1000");
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let resp = self.send(Request::new(Method::GET, url.clone(), vec![Scope::pull(repo)])).await?;
            if resp.status().as_u16() == 404 {
                return Ok(out);
            }
            let resp = self.expect(&Method::GET, &url, resp, &[200]).await?;
            let next = next_link(resp.headers());
            let page: Page = resp.json().await.map_err(|e| RegistryError::Protocol {
                registry: self.host.clone(),
                message: format!("tag list of {repo} is not JSON: {}", super::error::describe_reqwest_error(&e)),
            })?;
            out.extend(page.tags.unwrap_or_default());
            match next {
                Some(link) => url = self.resolve_location(&link)?,
                None => return Ok(out),
            }
        }
        Err(RegistryError::Protocol { registry: self.host.clone(), message: format!("tag list of {repo} never ends") })
    }
}

/// The target of a `Link: <…>; rel="next"` header.
pub fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    for v in headers.get_all(reqwest::header::LINK) {
        let v = v.to_str().ok()?;
        for part in v.split(',') {
            let part = part.trim();
            if part.contains("rel=\"next\"") || part.contains("rel=next") {
                let start = part.find('<')? + 1;
                let end = part.find('>')?;
                return Some(part[start..end].to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, LINK};

    #[test]
    fn reads_next_links() {
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_static("</v2/a/tags/list?last=x&n=2>; rel=\"next\""));
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?last=x&n=2"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }
}

/// A repository's tags, with their digests where the registry's listing gives them.
#[derive(Debug, Clone, Default)]
pub struct TagListing {
    /// Tag → digest; `None` when the listing did not say (plain `/v2/` tag lists).
    pub tags: std::collections::HashMap<String, Option<crate::digest::Digest>>,
    /// Whether the digests came from ACR's `/acr/v1/{repo}/_tags`.
    pub with_digests: bool,
}

impl Registry {
    /// Lists a repository once: ACR's `/acr/v1/{repo}/_tags` (digests included, `Link` paging) when
    /// the registry has it, else `/v2/{repo}/tags/list` (names only). A registry whose answer to the
    /// ACR path is not ACR's is remembered, so it is asked once per run.
    pub async fn list_tag_digests(&self, repo: &str) -> Result<TagListing, RegistryError> {
        if !self.no_acr_api.load(std::sync::atomic::Ordering::Relaxed) {
            match self.acr_tags(repo).await? {
                Some(listing) => return Ok(listing),
                None => self.no_acr_api.store(true, std::sync::atomic::Ordering::Relaxed),
            }
        }
        let tags = self.list_tags(repo).await?;
        Ok(TagListing { tags: tags.into_iter().map(|t| (t, None)).collect(), with_digests: false })
    }

    /// `GET /acr/v1/{repo}/_tags`; `None` when the registry does not speak ACR's API.
    async fn acr_tags(&self, repo: &str) -> Result<Option<TagListing>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Vec<Tag>,
        }
        #[derive(serde::Deserialize)]
        struct Tag {
            name: String,
            #[serde(default)]
            digest: Option<String>,
        }
        let mut url = self.api(&format!("acr/v1/{repo}/_tags"));
        url.query_pairs_mut().append_pair("n", "1000");
        let mut listing = TagListing { with_digests: true, ..Default::default() };
        for _ in 0..10_000 {
            let req = Request::new(Method::GET, url.clone(), vec![crate::registry::Scope::metadata_read(repo)]);
            let resp = self.send(req).await?;
            let status = resp.status().as_u16();
            let is_json = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.contains("json"));
            if status == 404 {
                // ACR answers an unknown repository with a JSON error; anything else has no such API.
                let body = resp.bytes().await.unwrap_or_default();
                let (code, _) = super::error::parse_error_body(&body);
                return Ok(match code.as_deref() {
                    Some("NAME_UNKNOWN") | Some("REPOSITORY_NOT_FOUND") if is_json => Some(listing),
                    _ => None,
                });
            }
            if !(200..300).contains(&status) || !is_json {
                if status == 401 || status == 403 || (400..500).contains(&status) && !is_json {
                    return Ok(None);
                }
                return Err(self.status_error(&Method::GET, &url, resp).await);
            }
            let next = next_link(resp.headers());
            let page: Page = resp.json().await.map_err(|e| RegistryError::Protocol {
                registry: self.host.clone(),
                message: format!("ACR tag listing of {repo}: {}", super::error::describe_reqwest_error(&e)),
            })?;
            for t in page.tags {
                let d = t.digest.and_then(|d| crate::digest::Digest::parse(&d).ok());
                listing.tags.insert(t.name, d);
            }
            match next {
                Some(link) => url = self.resolve_location(&link)?,
                None => return Ok(Some(listing)),
            }
        }
        Ok(Some(listing))
    }
}
