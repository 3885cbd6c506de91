//! The endpoint layer: which origin (scheme, host, port) a registry's credentials belong to, and
//! the rules for URLs a registry hands back (upload `Location`s, `Link` pages, token realms).
//!
//! A registry is trusted with its own credentials only. A URL it names on another origin is
//! either rebased onto the registry (a `Link` page: only its path and query are kept, as
//! containers/image does) or visited without credentials (an upload `Location`, a redirect).

use url::Url;

/// Scheme, host and port: what credentials are bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    pub fn of(url: &Url) -> Origin {
        Origin {
            scheme: url.scheme().to_string(),
            host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
            port: url.port_or_known_default(),
        }
    }

    /// Whether `url` is on this very origin, so the registry's credentials may go with it.
    pub fn owns(&self, url: &Url) -> bool {
        *self == Origin::of(url)
    }

    /// Whether `url` is on the same host (any port), reached with the same scheme.
    fn same_host_and_scheme(&self, url: &Url) -> bool {
        url.scheme() == self.scheme && url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
    }

    /// Whether a token realm the registry's challenge named may receive a password or refresh
    /// token: over https to any host (Docker Hub's realm is `auth.docker.io`), as docker and
    /// containerd send them; over plain http only on the registry's own host, which the config
    /// already chose to reach in plain http.
    pub fn may_send_secret_to_realm(&self, realm: &Url) -> bool {
        realm.scheme() == "https" || self.same_host_and_scheme(realm)
    }

    /// Whether an Entra-derived token may be exchanged at `realm`: only on the registry's own
    /// host, where ACR serves `/oauth2/exchange` and `/oauth2/token`, never over a weaker scheme
    /// than the registry's. (Any port: a token service beside the registry on the same machine
    /// is the same party.)
    pub fn may_exchange_entra_token_at(&self, realm: &Url) -> bool {
        self.same_host_and_scheme(realm)
    }
}

/// A `Link: <…>; rel="next"` target rebased onto the registry: only its path and query are kept,
/// so a page can never send the listing (and its credentials) to another host.
pub fn rebase_page(endpoint: &Url, current: &Url, link: &str) -> Option<Url> {
    let target = current.join(link).ok()?;
    let mut page = endpoint.clone();
    page.set_path(target.path());
    page.set_query(target.query());
    page.set_fragment(None);
    Some(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    /// Another port, host or scheme is another origin; default ports are the same origin.
    #[test]
    fn origins_compare_scheme_host_and_port() {
        let o = Origin::of(&u("https://r.azurecr.io/"));
        assert!(o.owns(&u("https://r.azurecr.io:443/v2/x/blobs/uploads/1?_state=s")));
        assert!(o.owns(&u("https://R.AZURECR.IO/v2/")));
        assert!(!o.owns(&u("https://r.azurecr.io:8443/v2/")));
        assert!(!o.owns(&u("http://r.azurecr.io/v2/")));
        assert!(!o.owns(&u("https://evil.example/v2/")));
    }

    /// A page link to another host keeps only its path and query, on the registry.
    #[test]
    fn pages_are_rebased_onto_the_registry() {
        let ep = u("http://127.0.0.1:5000/");
        let cur = u("http://127.0.0.1:5000/v2/a/tags/list?n=2");
        let p = rebase_page(&ep, &cur, "http://127.0.0.2:9/v2/a/tags/list?last=b&n=2").unwrap();
        assert_eq!(p.as_str(), "http://127.0.0.1:5000/v2/a/tags/list?last=b&n=2");
        let p = rebase_page(&ep, &cur, "/v2/a/tags/list?last=c").unwrap();
        assert_eq!(p.as_str(), "http://127.0.0.1:5000/v2/a/tags/list?last=c");
    }

    /// Passwords go to https realms anywhere, to plain-http realms only on the registry's host;
    /// Entra tokens only to the registry's host.
    #[test]
    fn realm_rules() {
        let http_reg = Origin::of(&u("http://127.0.0.1:5000/"));
        assert!(http_reg.may_send_secret_to_realm(&u("http://127.0.0.1:5001/token")));
        assert!(!http_reg.may_send_secret_to_realm(&u("http://127.0.0.2:5001/token")));
        assert!(http_reg.may_send_secret_to_realm(&u("https://auth.docker.io/token")));
        let acr = Origin::of(&u("https://r.azurecr.io/"));
        assert!(acr.may_exchange_entra_token_at(&u("https://r.azurecr.io/oauth2/token")));
        assert!(!acr.may_exchange_entra_token_at(&u("https://evil.example/oauth2/token")));
        assert!(!acr.may_exchange_entra_token_at(&u("http://r.azurecr.io/oauth2/token")));
    }
}
