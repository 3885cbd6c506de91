//! `GET /v2/<name>/tags/list`, following `Link` pages: one listing per repository instead of one
//! request per tag, which is what keeps a no-op run cheap. Pages stay on the registry (only a
//! link's path and query are followed) and are bounded in size and number.

use reqwest::Method;

use super::transport::limits::LISTING_PAGES;
use super::{Registry, RegistryError, Request, Scope};

/// A repository's tags with their digests, defined beside the ACR listings that fill them in.
pub use super::acr::TagListing;

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
        let mut read = 0;
        let what = format!("tag list of {repo}");
        for _ in 0..LISTING_PAGES {
            let resp = self.send(Request::new(Method::GET, url.clone(), vec![Scope::pull(repo)])).await?;
            if resp.status().as_u16() == 404 {
                return Ok(out);
            }
            let resp = self.expect(&Method::GET, &url, resp, &[200]).await?;
            let next = next_link(resp.headers());
            let body = self.read_page(&what, resp, &mut read).await?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                registry: self.host.clone(),
                message: format!("{what} is not JSON: {}", crate::sanitize::short(&e.to_string())),
            })?;
            out.extend(page.tags.unwrap_or_default());
            match next {
                Some(link) => url = self.next_page(&url, &link)?,
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
