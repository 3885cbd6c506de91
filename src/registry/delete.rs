//! Retiring content, for `mirror prune`: `DELETE /v2/<name>/manifests/<digest>` (the
//! distribution API deletes by digest only, and drops every tag on the manifest with it) and
//! ACR's untag, `DELETE /acr/v1/<name>/_tags/<tag>`, which leaves the manifest. Both go through
//! [`Registry::send`] like every other operation, so the same origin rules, token scopes,
//! timeouts and body limits apply.
//!
//! Also the one read `prune` needs besides listings: an image's `created` time from its config
//! blob, where the registry keeps no tag times of its own (distribution).

use futures::StreamExt;
use reqwest::Method;

use super::{Registry, RegistryError, Request, Scope};
use crate::digest::{Digest, verify_bytes};
use crate::manifest::Manifest;

/// The most of a config blob read for its `created` time. Configs are a few KiB; one with a
/// long history is still far below this, and a larger one is read as "age unknown".
const CONFIG_LIMIT: usize = 4 << 20;

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The registry accepted the delete.
    Done,
    /// There was nothing to delete (404): someone else deleted it first.
    Absent,
}

impl Registry {
    /// `DELETE /v2/{repo}/manifests/{digest}`.
    pub async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<Deleted, RegistryError> {
        self.delete(repo, self.v2(&format!("{repo}/manifests/{digest}"))).await
    }

    /// ACR's `DELETE /acr/v1/{repo}/_tags/{tag}`: the tag goes, the manifest stays.
    pub async fn acr_untag(&self, repo: &str, tag: &str) -> Result<Deleted, RegistryError> {
        self.delete(repo, self.api(&format!("acr/v1/{repo}/_tags/{tag}"))).await
    }

    async fn delete(&self, repo: &str, url: url::Url) -> Result<Deleted, RegistryError> {
        let resp = self.send(Request::new(Method::DELETE, url.clone(), vec![Scope::delete(repo)])).await?;
        if resp.status().as_u16() == 404 {
            // A 404 with an error code that is not about the content (UNSUPPORTED on a
            // registry without the route) is a refusal, not an absence.
            let e = self.status_error(&Method::DELETE, &url, resp).await;
            return match e.code() {
                None | Some("MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "TAG_UNKNOWN" | "MANIFEST_BLOB_UNKNOWN") => {
                    Ok(Deleted::Absent)
                }
                _ => Err(e),
            };
        }
        self.expect(&Method::DELETE, &url, resp, &[200, 202, 204]).await?;
        Ok(Deleted::Done)
    }

    /// When the image was built: its config's `created`. `None` for an index (the caller asks
    /// of a child), an artifact without one, or a config that cannot be read within the bound;
    /// the config is verified against its digest before it is believed.
    pub async fn image_created(
        &self,
        repo: &str,
        manifest: &Manifest,
    ) -> Result<Option<std::time::SystemTime>, RegistryError> {
        let Some(config) = &manifest.parsed.config else { return Ok(None) };
        if config.size as usize > CONFIG_LIMIT {
            return Ok(None);
        }
        let mut stream = self.get_blob(repo, &config.digest, 0).await?;
        let mut bytes = Vec::with_capacity(config.size as usize);
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() > CONFIG_LIMIT {
                return Ok(None);
            }
        }
        verify_bytes(&bytes, &config.digest, Some(config.size)).map_err(|mismatch| RegistryError::Mismatch {
            what: format!("config {} of {}/{repo}", config.digest, self.host),
            mismatch,
        })?;
        #[derive(serde::Deserialize)]
        struct Created {
            #[serde(default)]
            created: Option<String>,
        }
        Ok(serde_json::from_slice::<Created>(&bytes)
            .ok()
            .and_then(|c| c.created)
            .and_then(|c| crate::time::parse_rfc3339(&c)))
    }
}

/// Whether `e` says the registry does not let this client delete at all (405, `UNSUPPORTED`, a
/// refused or missing permission), as opposed to one delete that failed.
pub fn is_refusal(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Unauthorized { .. })
        || matches!(e.status(), Some(401 | 403 | 405))
        || matches!(e.code(), Some("UNSUPPORTED" | "DENIED" | "UNAUTHORIZED"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error::StatusError;

    fn status(status: u16, code: Option<&str>) -> RegistryError {
        RegistryError::status_error(StatusError {
            registry: "r".into(),
            method: "DELETE".into(),
            url: "u".into(),
            status,
            code: code.map(String::from),
            message: String::new(),
            retry_after: None,
        })
    }

    #[test]
    fn a_refusal_is_told_from_one_failed_delete() {
        // Checks the answers that mean "this client may not delete here" (which stop a prune
        // before it touches anything else) against those that fail one deletion only.
        for refused in [
            status(405, Some("UNSUPPORTED")),
            status(404, Some("UNSUPPORTED")),
            status(403, Some("DENIED")),
            status(401, None),
            RegistryError::Unauthorized { registry: "r".into(), scope: "s".into(), message: "m".into() },
        ] {
            assert!(is_refusal(&refused), "{refused}");
        }
        for one in [status(500, None), status(429, Some("TOOMANYREQUESTS")), status(400, Some("DIGEST_INVALID"))] {
            assert!(!is_refusal(&one), "{one}");
        }
    }
}
