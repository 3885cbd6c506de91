//! A thin client for the OCI distribution API, built as layers the way go-containerregistry's
//! `transport` is: [`Registry::send`] adds authentication (ping, challenge, token per scope set,
//! one re-authentication on 401), a per-registry request budget, and retries with backoff that
//! honour `Retry-After`; the operations ([`manifests`], [`blobs`], [`uploads`], [`referrers`],
//! [`tags`]) are small files that read like the protocol.
//!
//! Registries are addressed by their logical name (`mcr.microsoft.com`); the config can point a
//! name at another endpoint (`http://127.0.0.1:5101`), as containerd's hosts.toml does, so
//! production names stay in configs while tests connect locally. Plain http is used only when an
//! endpoint says so.

pub mod acr;
pub mod auth;
pub mod blobs;
pub mod docker_config;
pub mod error;
pub mod manifests;
pub mod referrers;
pub mod tags;
pub mod uploads;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::sync::{Mutex, Semaphore};
use url::Url;

use crate::config::{AuthConfig, Config, RegistryConfig};
pub use auth::{Credential, Scope, Secret};
pub use error::RegistryError;
use error::{describe_reqwest_error, display_url, parse_error_body};

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
}

impl Request {
    pub fn new(method: Method, url: Url, scopes: Vec<Scope>) -> Self {
        Request { method, url, headers: HeaderMap::new(), body: Body::Empty, scopes }
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

/// How many requests a registry takes per minute: a token bucket that allows a burst of ten
/// seconds' worth, since ACR enforces its tier limits as a bucket too.
#[derive(Debug)]
struct Budget {
    per_second: f64,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    fn new(per_minute: u32) -> Self {
        let per_second = per_minute as f64 / 60.0;
        let capacity = (per_second * 10.0).max(1.0);
        Budget { per_second, capacity, state: Mutex::new((capacity, Instant::now())) }
    }

    async fn take(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                let refill = now.duration_since(s.1).as_secs_f64() * self.per_second;
                s.0 = (s.0 + refill).min(self.capacity);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One registry: where it really is, how to sign in, and how hard it may be pushed.
#[derive(Debug)]
pub struct Registry {
    /// The logical name references use.
    pub host: String,
    base: Url,
    http: reqwest::Client,
    auth: auth::Authenticator,
    in_flight: Semaphore,
    budget: Option<Budget>,
    retries: u32,
    ping_lock: Mutex<()>,
    /// Set once the registry has shown it has no referrers API (it answered 404).
    no_referrers_api: std::sync::atomic::AtomicBool,
    /// Tags per repository, listed once (see `referrers`).
    tag_cache: std::sync::Mutex<HashMap<String, Arc<TagCell>>>,
    /// Set once the registry has shown it has no ACR listing API.
    no_acr_api: std::sync::atomic::AtomicBool,
    pub stats: Stats,
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

    /// Resolves a `Location` header against the endpoint (registries may answer with relative paths).
    pub fn resolve_location(&self, location: &str) -> Result<Url, RegistryError> {
        self.base.join(location).map_err(|e| RegistryError::Protocol {
            registry: self.host.clone(),
            message: format!("bad Location header {location:?}: {e}"),
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.base
    }

    pub fn credential(&self) -> &Credential {
        self.auth.credential()
    }

    pub fn request_count(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    /// `GET /v2/`: learns how the registry wants to be authenticated, before any body is sent.
    async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.v2("");
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self.http.get(url.clone()).send().await.map_err(|e| self.connect_error(&url, &e))?;
        match resp.status().as_u16() {
            200..=299 => self.auth.learn(None).await,
            401 => {
                let challenge = resp.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
                self.auth.learn(challenge).await
            }
            _ => {
                let status = resp.status().as_u16();
                let body = resp.bytes().await.unwrap_or_default();
                let (code, message) = parse_error_body(&body);
                return Err(RegistryError::status_error(crate::registry::error::StatusError {
                    registry: self.host.clone(),
                    method: "GET".into(),
                    url: display_url(&url),
                    status,
                    code,
                    message: if message.is_empty() {
                        "this endpoint does not answer the distribution API at /v2/".into()
                    } else {
                        message
                    },
                    retry_after: None,
                }));
            }
        }
        Ok(())
    }

    fn connect_error(&self, url: &Url, e: &reqwest::Error) -> RegistryError {
        RegistryError::Connect {
            registry: self.host.clone(),
            url: display_url(url),
            message: describe_reqwest_error(e),
        }
    }

    /// Sends a request through the layers: authentication, budget, retries. Returns any response
    /// that is not a 401, 429 or retryable 5xx; the caller checks the status it expects with
    /// [`Registry::expect`].
    pub async fn send(&self, mut req: Request) -> Result<reqwest::Response, RegistryError> {
        if self.auth.needs_ping().await {
            // One ping per registry, however many requests start at once.
            let _guard = self.ping_lock.lock().await;
            if self.auth.needs_ping().await {
                self.ping().await?;
            }
        }
        let mut attempt: u32 = 0;
        let mut reauthenticated = false;
        loop {
            let _permit = self.in_flight.acquire().await.expect("semaphore never closed");
            if let Some(b) = &self.budget {
                b.take().await;
            }
            let authorization = self.auth.authorization(&self.http, &req.scopes).await?;
            let replayable = req.body.replayable();
            let body = match std::mem::replace(&mut req.body, Body::Empty) {
                Body::Empty => None,
                Body::Bytes(b) => {
                    req.body = Body::Bytes(b.clone());
                    Some(reqwest::Body::from(b))
                }
                Body::Stream(s) => Some(s),
            };
            let mut builder = self.http.request(req.method.clone(), req.url.clone()).headers(req.headers.clone());
            if let Some(a) = &authorization {
                builder = builder.header(reqwest::header::AUTHORIZATION, a);
            }
            if let Some(b) = body {
                builder = builder.body(b);
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let result = builder.send().await;
            let resp = match result {
                Ok(r) => r,
                Err(e) => {
                    if replayable && attempt < self.retries {
                        attempt += 1;
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(registry = %self.host, url = %display_url(&req.url), "retrying after {}", describe_reqwest_error(&e));
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    return Err(self.connect_error(&req.url, &e));
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                let challenge = resp
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
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
                let body = resp.bytes().await.unwrap_or_default();
                let (_, message) = parse_error_body(&body);
                return Err(RegistryError::Unauthorized {
                    registry: self.host.clone(),
                    scope: req.scopes.iter().map(|s| s.0.as_str()).collect::<Vec<_>>().join(" "),
                    message: format!(
                        "{} {} answered 401 with {} credentials{}",
                        req.method,
                        display_url(&req.url),
                        self.auth.credential().describe(),
                        if message.is_empty() { String::new() } else { format!(": {message}") }
                    ),
                });
            }
            let retryable = matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504);
            if retryable && replayable && attempt < self.retries {
                attempt += 1;
                let wait = retry_after(resp.headers()).unwrap_or_else(|| backoff(attempt));
                if status == StatusCode::TOO_MANY_REQUESTS {
                    self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                }
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(registry = %self.host, status = status.as_u16(), "{} {}: retrying in {:?}", req.method, display_url(&req.url), wait);
                drop(resp);
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(resp);
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

    pub async fn status_error(&self, method: &Method, url: &Url, resp: reqwest::Response) -> RegistryError {
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let body = resp.bytes().await.unwrap_or_default();
        let (code, message) = parse_error_body(&body);
        RegistryError::status_error(crate::registry::error::StatusError {
            registry: self.host.clone(),
            method: method.to_string(),
            url: display_url(url),
            status,
            code,
            message,
            retry_after,
        })
    }
}

/// Exponential backoff with jitter: about 0.5 s, 1 s, 2 s, … capped at 30 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 0.5f64 * 2f64.powi(attempt.saturating_sub(1).min(6) as i32);
    let jitter = 0.5 + rand::random::<f64>();
    Duration::from_secs_f64((base * jitter).min(30.0))
}

/// `Retry-After` as seconds or an HTTP date, capped at five minutes.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO)
    };
    Some(d.min(Duration::from_secs(300)))
}

/// Every registry the run talks to, by logical name, created on first use.
#[derive(Debug)]
pub struct Registries {
    configs: HashMap<String, RegistryConfig>,
    http: reqwest::Client,
    retries: u32,
    open: std::sync::Mutex<HashMap<String, Arc<Registry>>>,
}

impl Registries {
    pub fn from_config(cfg: &Config) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("acr-mirror/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .pool_idle_timeout(Duration::from_secs(60))
            // Redirects to storage hosts (MCR's CDN, ACR's data endpoints) drop Authorization on
            // the cross-host hop: reqwest removes sensitive headers when host, port or scheme change.
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| RegistryError::Protocol {
                registry: "-".into(),
                message: format!("cannot build the HTTP client: {}", describe_reqwest_error(&e)),
            })?;
        let configs = cfg.registries.iter().map(|r| (r.host.clone(), r.clone())).collect();
        Ok(Registries { configs, http, retries: cfg.transfer.retries, open: Default::default() })
    }

    /// The registry for a logical host name, with its endpoint, credential and limits.
    pub fn get(&self, host: &str) -> Result<Arc<Registry>, RegistryError> {
        if let Some(r) = self.open.lock().expect("registry map lock").get(host) {
            return Ok(r.clone());
        }
        let cfg = self.configs.get(host);
        let base = match cfg.and_then(|c| c.endpoint.as_deref()) {
            Some(ep) => {
                let ep = if ep.ends_with('/') { ep.to_string() } else { format!("{ep}/") };
                Url::parse(&ep).map_err(|e| RegistryError::Protocol {
                    registry: host.to_string(),
                    message: format!("bad endpoint {ep:?}: {e}"),
                })?
            }
            None => {
                let real = if host == crate::reference::DOCKER_HUB { "registry-1.docker.io" } else { host };
                Url::parse(&format!("https://{real}/")).map_err(|e| RegistryError::Protocol {
                    registry: host.to_string(),
                    message: format!("bad registry host: {e}"),
                })?
            }
        };
        let credential = match cfg.and_then(|c| c.auth.as_ref()) {
            Some(a @ AuthConfig::Azure { .. }) => azure_credential(host, a, &self.http, &base)?,
            Some(a) => credential_from_config(host, a)?,
            None => docker_config::docker_config_credential(host)?.unwrap_or(Credential::Anonymous),
        };
        let registry = Arc::new(Registry {
            host: host.to_string(),
            base,
            http: self.http.clone(),
            auth: auth::Authenticator::new(host, credential),
            in_flight: Semaphore::new(cfg.and_then(|c| c.max_concurrent_requests).unwrap_or(32).max(1)),
            budget: cfg.and_then(|c| c.requests_per_minute).filter(|r| *r > 0).map(Budget::new),
            retries: self.retries,
            ping_lock: Mutex::new(()),
            no_referrers_api: Default::default(),
            tag_cache: Default::default(),
            no_acr_api: Default::default(),
            stats: Stats::default(),
        });
        self.open.lock().expect("registry map lock").insert(host.to_string(), registry.clone());
        Ok(registry)
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

/// Entra ID sign-in, exchanged for an ACR refresh token that is renewed during the run.
fn azure_credential(
    host: &str,
    auth: &AuthConfig,
    http: &reqwest::Client,
    base: &Url,
) -> Result<Credential, RegistryError> {
    let cred_err = |message: String| RegistryError::Credentials { registry: host.to_string(), message };
    let sign_in = auth.azure_sign_in().ok_or_else(|| cred_err("not an Azure sign-in".into()))?;
    let tenant = sign_in.tenant_id.clone();
    let entra = crate::azure::build_credential(&sign_in, None).map_err(|e| cred_err(e.to_string()))?;
    let source = crate::azure::AzureTokenSource::for_registry(entra, http.clone(), base, tenant)
        .map_err(|e| cred_err(e.to_string()))?;
    Ok(Credential::Dynamic(Arc::new(source)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(300)), "capped");
    }

    /// The budget lets a burst of ten seconds' worth through at once, then paces requests.
    #[tokio::test(start_paused = true)]
    async fn budget_allows_a_burst_then_paces() {
        let b = Budget::new(60); // one per second, burst of 10
        let start = Instant::now();
        for _ in 0..10 {
            b.take().await;
        }
        assert_eq!(Instant::now(), start, "the burst is not delayed");
        b.take().await;
        b.take().await;
        let waited = Instant::now() - start;
        assert!(waited >= Duration::from_millis(1900) && waited <= Duration::from_millis(2100), "{waited:?}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_secs_f64(0.75));
        assert!(backoff(3) >= Duration::from_secs(1));
        assert!(backoff(40) <= Duration::from_secs(30));
    }

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
