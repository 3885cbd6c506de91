//! `GET /v2/<name>/tags/list`, following `Link` pages: one listing per repository instead of one
//! request per tag, which is what keeps a no-op run cheap.

use reqwest::Method;

use super::{Registry, RegistryError, Request, Scope};

/// Defined in [`super::acr`] with the ACR listings, which fill it.
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
