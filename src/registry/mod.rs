//! A thin client for the OCI distribution API. [`Registry::send`] runs every request through
//! the layers of [`transport`] — endpoint and origin rules, authentication ([`auth`]), request
//! budget, retries, timeouts, body limits — and the operations ([`manifests`], [`blobs`],
//! [`uploads`], [`referrers`], [`tags`], [`acr`]) are small files that read like the protocol.
//!
//! Registries are addressed by their logical name (`mcr.microsoft.com`); the config can point a
//! name at another endpoint (`http://127.0.0.1:5101`), as containerd's hosts.toml does, so
//! production names stay in configs while tests connect locally. Plain http is used only when an
//! endpoint says so. Each registry has its own HTTP client, because its timeouts and TLS trust
//! (`caFile`, `insecureSkipTlsVerify`) are its own.

pub mod acr;
pub mod auth;
pub mod blobs;
pub mod delete;
pub mod docker_config;
pub mod error;
pub mod manifests;
pub mod referrers;
pub mod signatures;
pub mod tags;
pub mod transport;
pub mod uploads;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::sync::Mutex;
use url::Url;

use crate::config::{AuthConfig, Config, RegistryConfig};
pub use auth::{Credential, EntraSignIn, Scope, Secret};
pub use error::RegistryError;
use error::{display_url, parse_error_body};
pub use transport::retry::{backoff, retry_after};
use transport::timeouts::{self, Timeouts};
pub use transport::Hold;
use transport::{Attempt, Transport, limits};

/// A repository's tags, listed at most once per run.
type TagCell = tokio::sync::OnceCell<Arc<std::collections::HashSet<String>>>;

/// A request body. Only `Empty` and `Bytes` can be replayed after a 401 or a 429; a streamed
/// body is sent once and its operation is retried as a whole by the caller.
pub enum Body {
    Empty,
    Bytes(Bytes),
    Stream(reqwest::Body),
}

impl Body {
    fn replayable(&self) -> bool {
        !matches!(self, Body::Stream(_))
    }
}

/// One request to a registry, with the token scopes it needs.
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Body,
    pub scopes: Vec<Scope>,
    /// How long the request holds its in-flight slot ([`Hold::Body`] unless said otherwise).
    pub hold: Hold,
}

impl Request {
    pub fn new(method: Method, url: Url, scopes: Vec<Scope>) -> Self {
        Request { method, url, headers: HeaderMap::new(), body: Body::Empty, scopes, hold: Hold::Body }
    }
    /// A blob download: its slot is given back at the headers (see [`Hold`]).
    pub fn blob_stream(mut self) -> Self {
        self.hold = Hold::Headers;
        self
    }
    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }
    pub fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }
}

/// Counters a run reports (and the benchmark prints): requests by kind.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
}

/// One registry: where it really is, how to sign in, and how hard it may be pushed.
#[derive(Debug)]
pub struct Registry {
    /// The logical name references use.
    pub host: String,
    base: Url,
    transport: Transport,
    auth: auth::Authenticator,
    /// Whether `/v2/` was asked yet, and the failure that ended it for the run.
    ping: Mutex<Option<String>>,
    /// Set once the registry has shown it has no referrers API (it answered 404).
    no_referrers_api: std::sync::atomic::AtomicBool,
    /// Set once the registry has answered the referrers API; until then one lookup at a time asks.
    referrers_api_seen: std::sync::atomic::AtomicBool,
    referrers_probe: Mutex<()>,
    /// Tags per repository, listed once (see `referrers`).
    tag_cache: std::sync::Mutex<HashMap<String, Arc<TagCell>>>,
    /// Set once the registry has shown it has no ACR listing API.
    no_acr_api: std::sync::atomic::AtomicBool,
    /// Set once the registry refused a mount from a repository into itself (see
    /// `start_upload_unless_present`).
    no_self_mount: std::sync::atomic::AtomicBool,
    /// Set once the registry has answered an ACR listing; until then one listing at a time asks
    /// (see `list_tag_digests`), so a registry without the API is probed once, not per repository.
    acr_api_seen: std::sync::atomic::AtomicBool,
    acr_probe: Mutex<()>,
    /// Every manifest digest of a repository, from this run's ACR listing of it (see
    /// [`Registry::listed_manifest`]).
    listed: std::sync::Mutex<HashMap<String, Arc<std::collections::HashSet<crate::digest::Digest>>>>,
    /// Manifests read ahead for a later `GET`, by repository and digest (or tag; see
    /// [`Registry::read_ahead`]).
    read_ahead: std::sync::Mutex<HashMap<(String, String), crate::manifest::Manifest>>,
    /// Referrers listings made ahead for a later lookup (see [`Registry::referrers_ahead`]).
    referrers_ahead: std::sync::Mutex<HashMap<(String, crate::digest::Digest), referrers::Referrers>>,
}

impl Registry {
    /// The `/v2/…` URL for a path below the API root.
    pub fn v2(&self, path: &str) -> Url {
        self.base.join(&format!("v2/{path}")).expect("a path below the base URL is valid")
    }

    /// The URL of a registry API outside `/v2/` (ACR's `/acr/v1/…`).
    pub fn api(&self, path: &str) -> Url {
        self.base.join(path).expect("a path below the base URL is valid")
    }

    /// Resolves a `Location` header against the endpoint (registries may answer with relative
    /// paths). A location on another origin is kept, but [`Registry::send`] sends no credentials
    /// there.
    pub fn resolve_location(&self, location: &str) -> Result<Url, RegistryError> {
        let url = self.base.join(location).map_err(|e| RegistryError::Protocol {
            registry: self.host.clone(),
            message: format!("bad Location header {}: {e}", crate::sanitize::short(location)),
        })?;
        if !self.transport.origin.owns(&url) {
            tracing::warn!(registry = %self.host, location = %display_url(&url), "the registry sent a location on another host; it gets no credentials");
        }
        Ok(url)
    }

    /// The next page of a listing, from a `Link: <…>; rel="next"` target: only its path and
    /// query are kept, on this registry, so a page never leads the listing (and the
    /// credentials) to another host.
    pub fn next_page(&self, current: &Url, link: &str) -> Result<Url, RegistryError> {
        transport::origin::rebase_page(&self.base, current, link).ok_or_else(|| RegistryError::Protocol {
            registry: self.host.clone(),
            message: format!("bad Link header {}", crate::sanitize::short(link)),
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.base
    }

    pub fn credential(&self) -> &Credential {
        self.auth.credential()
    }

    pub fn stats(&self) -> &Stats {
        &self.transport.stats
    }

    pub fn request_count(&self) -> u64 {
        self.transport.stats.requests.load(Ordering::Relaxed)
    }

    /// Asks `/v2/` once per registry, however many requests start at once, to learn how it
    /// wants to be authenticated before any body is sent. A registry that did not answer it
    /// through every retry is given up for the run: each later request fails at once with that
    /// error instead of waiting out the same timeouts again.
    async fn ensure_pinged(&self) -> Result<(), RegistryError> {
        if !self.auth.needs_ping().await {
            return Ok(());
        }
        let mut failed = self.ping.lock().await;
        if let Some(first) = failed.as_ref() {
            return Err(RegistryError::Protocol {
                registry: self.host.clone(),
                message: format!("given up for this run after: {first}"),
            });
        }
        if !self.auth.needs_ping().await {
            return Ok(());
        }
        self.ping().await.inspect_err(|e| *failed = Some(e.to_string()))
    }

    /// Says that this run will push to `repo` (see [`auth::Authenticator::will_push`]).
    pub fn will_push(&self, repo: &str) {
        self.auth.will_push(repo);
    }

    /// Asks `/v2/` now if it was not yet (see `ensure_pinged`), so that a later first request
    /// does not wait for it; a failure is kept for that request to report.
    pub async fn greet(&self) {
        if let Err(e) = self.ensure_pinged().await {
            tracing::debug!(registry = %self.host, "greeting failed: {e}");
        }
    }

    /// `GET /v2/`: learns the authentication scheme from the answer.
    async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.v2("");
        let mut make = |http: &reqwest::Client| -> Attempt { (http.get(url.clone()), None) };
        let resp = self.transport.round_trip(&Method::GET, &url, true, Hold::Body, &mut make).await?;
        match resp.status().as_u16() {
            200..=299 => self.auth.learn(None).await,
            401 => {
                let challenge = resp.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
                self.auth.learn(challenge).await
            }
            _ => {
                let mut e = self.status_error(&Method::GET, &url, resp).await;
                if let RegistryError::Status(s) = &mut e
                    && s.message.is_empty()
                {
                    s.message = "this endpoint does not answer the distribution API at /v2/".into();
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Sends a request through the layers. Credentials (and the ping that learns how to present
    /// them) only go with a request to the registry's own origin; a URL elsewhere (an upload
    /// `Location` on another host) is sent without them. Returns any response that is not a 401
    /// and not retried (a 429 or 5xx once retries are spent); the caller checks the status it
    /// expects with [`Registry::expect`]. The response body holds a request permit until it is
    /// read to its end or dropped.
    pub async fn send(&self, mut req: Request) -> Result<reqwest::Response, RegistryError> {
        let ours = self.transport.origin.owns(&req.url);
        if ours {
            self.ensure_pinged().await?;
        }
        let replayable = req.body.replayable();
        let mut once = match std::mem::replace(&mut req.body, Body::Empty) {
            Body::Stream(s) => Some(s),
            other => {
                req.body = other;
                None
            }
        };
        let mut reauthenticated = false;
        loop {
            let authorization = match ours {
                true => self.auth.authorization(&self.transport, &req.scopes).await?,
                false => None,
            };
            let mut make = |http: &reqwest::Client| -> Attempt {
                let mut b = http.request(req.method.clone(), req.url.clone()).headers(req.headers.clone());
                if let Some(a) = &authorization {
                    b = b.header(reqwest::header::AUTHORIZATION, a);
                }
                match (&req.body, once.take()) {
                    (_, Some(stream)) => {
                        let (body, upload) = timeouts::watch_upload(stream);
                        (b.body(body), Some(upload))
                    }
                    (Body::Bytes(bytes), None) => (b.body(bytes.clone()), None),
                    _ => (b, None),
                }
            };
            let resp = self.transport.round_trip(&req.method, &req.url, replayable, req.hold, &mut make).await?;
            if resp.status() != StatusCode::UNAUTHORIZED || !ours {
                return Ok(resp);
            }
            let challenge =
                resp.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(String::from);
            if !reauthenticated {
                reauthenticated = true;
                self.auth.invalidate(&req.scopes).await;
                if let Some(c) = &challenge {
                    self.auth.learn(Some(c)).await;
                    // A challenge can name a scope we did not ask for (a mount's source repository).
                    if let Some(auth::Challenge::Bearer { scope: Some(s), .. }) = auth::parse_challenge(c) {
                        for one in s.split(' ') {
                            let one = Scope(one.to_string());
                            if !req.scopes.contains(&one) {
                                req.scopes.push(one);
                            }
                        }
                    }
                }
                if replayable {
                    continue;
                }
            }
            let body = limits::read_capped(resp, limits::SMALL_BODY, self.transport.timeouts.response).await;
            let (_, message) = parse_error_body(&body.bytes);
            return Err(RegistryError::Unauthorized {
                registry: self.host.clone(),
                scope: crate::sanitize::short(&req.scopes.iter().map(|s| s.0.as_str()).collect::<Vec<_>>().join(" ")),
                message: format!(
                    "{} {} answered 401 with {} credentials{}{}",
                    req.method,
                    display_url(&req.url),
                    self.auth.credential().describe(),
                    if message.is_empty() { String::new() } else { format!(": {message}") },
                    body.note()
                ),
            });
        }
    }

    /// Turns a response with an unexpected status into a [`RegistryError::Status`] carrying the
    /// OCI error code and `Retry-After`.
    pub async fn expect(
        &self,
        method: &Method,
        url: &Url,
        resp: reqwest::Response,
        ok: &[u16],
    ) -> Result<reqwest::Response, RegistryError> {
        let status = resp.status().as_u16();
        if ok.contains(&status) {
            return Ok(resp);
        }
        Err(self.status_error(method, url, resp).await)
    }

    /// The error for an unexpected answer, reading at most 1 MiB of its body (the message says
    /// when it was cut) and keeping the registry's text short and free of control characters.
    pub async fn status_error(&self, method: &Method, url: &Url, resp: reqwest::Response) -> RegistryError {
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let body = limits::read_capped(resp, limits::SMALL_BODY, self.transport.timeouts.response).await;
        let (code, message) = parse_error_body(&body.bytes);
        RegistryError::status_error(crate::registry::error::StatusError {
            registry: self.host.clone(),
            method: method.to_string(),
            url: display_url(url),
            status,
            code,
            message: format!("{message}{}", body.note()),
            retry_after,
        })
    }

    /// Reads one page of a listing: at most [`limits::LISTING_PAGE`] bytes, and no more than
    /// what is left of the listing's [`limits::LISTING_TOTAL`] (`read` so far, updated).
    pub(crate) async fn read_page(
        &self,
        what: &str,
        resp: reqwest::Response,
        read: &mut usize,
    ) -> Result<Bytes, RegistryError> {
        let left = limits::LISTING_TOTAL.saturating_sub(*read).min(limits::LISTING_PAGE);
        let page = limits::read_within(resp, left, self.transport.timeouts.response).await.map_err(|e| match e {
            limits::ReadError::TooLarge(_) => RegistryError::Protocol {
                registry: self.host.clone(),
                message: format!(
                    "{what} is too large: a page is limited to {} MiB and a whole listing to {} MiB",
                    limits::LISTING_PAGE >> 20,
                    limits::LISTING_TOTAL >> 20
                ),
            },
            e => RegistryError::Body { registry: self.host.clone(), message: format!("{what}: {e}") },
        })?;
        *read += page.len();
        Ok(page)
    }
}

/// Every registry the run talks to, by logical name, created on first use.
#[derive(Debug)]
pub struct Registries {
    configs: HashMap<String, RegistryConfig>,
    retries: u32,
    entra: Option<Arc<dyn EntraSignIn>>,
    open: std::sync::Mutex<HashMap<String, Arc<Registry>>>,
}

impl Registries {
    pub fn from_config(cfg: &Config) -> Result<Self, RegistryError> {
        let configs = cfg.registries.iter().map(|r| (r.host.clone(), r.clone())).collect();
        Ok(Registries { configs, retries: cfg.transfer.retries, entra: None, open: Default::default() })
    }

    /// Plugs in Entra ID sign-in for `auth: {type: azure}` registries (`crate::azure::EntraSignIn`).
    pub fn with_entra(mut self, entra: Arc<dyn EntraSignIn>) -> Self {
        self.entra = Some(entra);
        self
    }

    /// The registry for a logical host name, with its endpoint, credential and limits.
    pub fn get(&self, host: &str) -> Result<Arc<Registry>, RegistryError> {
        if let Some(r) = self.open.lock().expect("registry map lock").get(host) {
            return Ok(r.clone());
        }
        let registry = Arc::new(self.open_registry(host)?);
        let mut open = self.open.lock().expect("registry map lock");
        Ok(open.entry(host.to_string()).or_insert(registry).clone())
    }

    fn open_registry(&self, host: &str) -> Result<Registry, RegistryError> {
        let cfg = self
            .configs
            .get(host)
            .cloned()
            .unwrap_or_else(|| RegistryConfig { host: host.to_string(), ..Default::default() });
        let protocol = |message: String| RegistryError::Protocol { registry: host.to_string(), message };
        let base = match cfg.endpoint_url().map_err(protocol)? {
            Some(url) => url,
            None => {
                let real = if host == crate::reference::DOCKER_HUB { "registry-1.docker.io" } else { host };
                Url::parse(&format!("https://{real}/")).map_err(|e| protocol(format!("bad registry host: {e}")))?
            }
        };
        let [connect, response, idle] = cfg.timeouts();
        let tls = transport::Tls {
            ca_pem: match &cfg.ca_file {
                Some(path) => Some(
                    std::fs::read(path).map_err(|e| protocol(format!("cannot read caFile {}: {e}", path.display())))?,
                ),
                None => None,
            },
            skip_verify: cfg.insecure_skip_tls_verify,
        };
        if tls.skip_verify {
            tracing::warn!(registry = %host, "insecureSkipTlsVerify is set: this registry's TLS certificate is not checked, so anyone on the network path can read and change what is pulled and pushed");
        }
        let http = transport::client(host, connect, &tls)?;
        let credential = match &cfg.auth {
            Some(AuthConfig::Azure { .. }) => self.azure_credential(host, &cfg, &http, &base)?,
            Some(a) => credential_from_config(host, a)?,
            None => docker_config::docker_config_credential(host)?.unwrap_or(Credential::Anonymous),
        };
        let gate = transport::budget::Gate::new(cfg.max_concurrent_requests.unwrap_or(32), cfg.requests_per_minute);
        Ok(Registry {
            host: host.to_string(),
            transport: Transport::new(host, &base, http, Timeouts { connect, response, idle }, self.retries, gate),
            base,
            auth: auth::Authenticator::new(host, credential),
            ping: Mutex::new(None),
            no_referrers_api: Default::default(),
            referrers_api_seen: Default::default(),
            referrers_probe: Mutex::new(()),
            tag_cache: Default::default(),
            no_acr_api: Default::default(),
            no_self_mount: Default::default(),
            acr_api_seen: Default::default(),
            acr_probe: Mutex::new(()),
            listed: Default::default(),
            read_ahead: Default::default(),
            referrers_ahead: Default::default(),
        })
    }

    /// Entra ID sign-in, exchanged for an ACR refresh token that is renewed during the run.
    fn azure_credential(
        &self,
        host: &str,
        cfg: &RegistryConfig,
        http: &reqwest::Client,
        base: &Url,
    ) -> Result<Credential, RegistryError> {
        let cred_err = |message: String| RegistryError::Credentials { registry: host.to_string(), message };
        let sign_in = cfg
            .auth
            .as_ref()
            .and_then(AuthConfig::azure_sign_in)
            .ok_or_else(|| cred_err("not an Azure sign-in".into()))?;
        let entra = self.entra.as_ref().ok_or_else(|| {
            cred_err(
                "auth type azure needs Entra ID sign-in, which this program did not set up (Registries::with_entra)"
                    .into(),
            )
        })?;
        Ok(Credential::Dynamic(entra.token_source(&sign_in, base, http.clone()).map_err(cred_err)?))
    }

    /// Requests made to every registry so far.
    pub fn request_counts(&self) -> Vec<(String, u64)> {
        let open = self.open.lock().expect("registry map lock");
        let mut v: Vec<_> = open.values().map(|r| (r.host.clone(), r.request_count())).collect();
        v.sort();
        v
    }
}

/// Reads the secret a config entry names. The secret itself never appears in an error.
fn credential_from_config(host: &str, auth: &AuthConfig) -> Result<Credential, RegistryError> {
    let cred_err = |message: String| RegistryError::Credentials { registry: host.to_string(), message };
    let read_secret = |env: &Option<String>, file: &Option<std::path::PathBuf>| -> Result<Secret, RegistryError> {
        if let Some(var) = env {
            let v = std::env::var(var).map_err(|_| cred_err(format!("environment variable {var} is not set")))?;
            if v.is_empty() {
                return Err(cred_err(format!("environment variable {var} is empty")));
            }
            return Ok(Secret::new(v));
        }
        if let Some(path) = file {
            let v = std::fs::read_to_string(path)
                .map_err(|e| cred_err(format!("cannot read secret file {}: {e}", path.display())))?;
            return Ok(Secret::new(v.trim_end_matches(['\n', '\r']).to_string()));
        }
        Err(cred_err("no secret source configured".into()))
    };
    match auth {
        AuthConfig::Anonymous => Ok(Credential::Anonymous),
        AuthConfig::Basic { username, password_env, password_file } => {
            Ok(Credential::from_user_password(username.clone(), read_secret(password_env, password_file)?))
        }
        AuthConfig::RefreshToken { token_env, token_file } => {
            Ok(Credential::RefreshToken(read_secret(token_env, token_file)?))
        }
        AuthConfig::Azure { .. } => Err(cred_err("Entra ID sign-in is set up by azure_credential".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_override_hosts() {
        let cfg = Config::parse(
            "registries:\n  - host: mcr.microsoft.com\n    endpoint: http://127.0.0.1:5101\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap();
        let regs = Registries::from_config(&cfg).unwrap();
        let mcr = regs.get("mcr.microsoft.com").unwrap();
        assert_eq!(mcr.v2("oss/pause/manifests/3.9").as_str(), "http://127.0.0.1:5101/v2/oss/pause/manifests/3.9");
        let other = regs.get("quay.io").unwrap();
        assert_eq!(other.endpoint().as_str(), "https://quay.io/", "unlisted hosts use https");
        assert_eq!(regs.get("docker.io").unwrap().endpoint().as_str(), "https://registry-1.docker.io/");
    }

    #[test]
    fn a_missing_password_variable_is_named_but_no_secret_printed() {
        let cfg = Config::parse(
            "registries:\n  - host: a.io\n    auth: {type: basic, username: u, passwordEnv: ACR_MIRROR_TEST_UNSET_VAR}\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap();
        let regs = Registries::from_config(&cfg).unwrap();
        let e = regs.get("a.io").unwrap_err().to_string();
        assert!(e.contains("ACR_MIRROR_TEST_UNSET_VAR"), "{e}");
    }
}
