//! The layers under every registry request, innermost last:
//!
//! 1. [`origin`] — the endpoint: which scheme, host and port the registry's credentials are
//!    bound to, and how URLs the registry names (pages, uploads, realms) are treated;
//! 2. authentication ([`super::auth`]) — challenges and tokens, applied only to the registry's
//!    own origin;
//! 3. [`budget`] — the per-registry in-flight limit and requests-per-minute bucket;
//! 4. [`retry`] — backoff with jitter, `Retry-After`, on every request including the first and
//!    token fetches;
//! 5. [`timeouts`] — connect, response headers, idle body;
//! 6. [`limits`] — ceilings on every body read whole.
//!
//! Why a small stack of our own rather than tower or reqwest-middleware: reqwest 0.13 exposes no
//! tower `Service` for its client, and reqwest-middleware cannot replay a streamed body or hand a
//! permit to the response body. The layers here are plain functions and types, each tested
//! alone; [`Transport::round_trip`] composes budget, retry and timeouts, and
//! [`super::Registry::send`] puts the endpoint and authentication rules on top.

pub mod budget;
pub mod limits;
pub mod origin;
pub mod retry;
pub mod timeouts;

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::StatusCode;
use url::Url;

use super::Stats;
use super::error::{RegistryError, describe_reqwest_error, display_url};
use budget::Gate;
use origin::Origin;
use retry::{Cause, Retry};
use timeouts::{Timeouts, Upload};

/// Everything below authentication for one registry.
#[derive(Debug)]
pub struct Transport {
    /// The registry's logical name, for messages.
    pub registry: String,
    pub origin: Origin,
    http: reqwest::Client,
    pub timeouts: Timeouts,
    retries: u32,
    gate: Gate,
    pub stats: Stats,
}

/// What one attempt sends: a request and, for a streamed body, its progress.
pub type Attempt = (reqwest::RequestBuilder, Option<Upload>);

/// How long a request holds one of the registry's in-flight slots (`maxConcurrentRequests`).
///
/// A slot must never be held while its holder waits for another one: a blob copy reads the
/// source and writes the target at once, and when a download's body held its slot to the end,
/// every slot of a registry that is both source and target (or of two registries copying both
/// ways) could be held by downloads whose uploads waited for a slot, for ever. So the rule is:
/// what a caller reads as it goes (manifests, listings, error bodies) holds its slot until the
/// body ends; a blob download, whose body is consumed by an upload that needs a slot of its
/// own, gives its slot back when the headers arrive (the transfer engine's blob slots bound how
/// many such bodies stream at once); token fetches take no slot, since the request that needs
/// the token may itself be waiting behind a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The slot is held until the response body ends or is dropped.
    Body,
    /// The slot is given back when the response headers arrive.
    Headers,
    /// No slot is taken (the per-minute budget still is).
    Nothing,
}

impl Transport {
    pub fn new(
        registry: &str,
        endpoint: &Url,
        http: reqwest::Client,
        timeouts: Timeouts,
        retries: u32,
        gate: Gate,
    ) -> Self {
        Transport {
            registry: registry.to_string(),
            origin: Origin::of(endpoint),
            http,
            timeouts,
            retries,
            gate,
            stats: Stats::default(),
        }
    }

    /// Sends a request through the budget, timeouts and retries. `make` builds each attempt
    /// (so a replayable body is sent again); `replayable` says whether it can. Returns any
    /// answer that is not retried (a 429 or 5xx once the retries are spent), its body guarded
    /// by the idle timeout and, as `hold` says, holding the request permit.
    pub async fn round_trip(
        &self,
        method: &reqwest::Method,
        url: &Url,
        replayable: bool,
        hold: Hold,
        make: &mut (dyn FnMut(&reqwest::Client) -> Attempt + Send),
    ) -> Result<reqwest::Response, RegistryError> {
        let mut retry = Retry::new(if replayable { self.retries } else { 0 });
        loop {
            let permit = match hold {
                Hold::Nothing => {
                    self.gate.pace().await;
                    None
                }
                Hold::Body | Hold::Headers => Some(self.gate.enter().await),
            };
            let (builder, upload) = make(&self.http);
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let cause = match timeouts::within(builder.send(), upload, self.timeouts).await {
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    let cause = Cause::Status(status, retry::retry_after(resp.headers()));
                    let permit = if hold == Hold::Body { permit } else { None };
                    if !retry::retryable_status(status) {
                        return Ok(timeouts::guard(resp, permit, self.timeouts.idle));
                    }
                    match retry.next(cause) {
                        None => return Ok(timeouts::guard(resp, permit, self.timeouts.idle)),
                        Some(wait) => {
                            if resp.status() == StatusCode::TOO_MANY_REQUESTS {
                                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                            }
                            tracing::info!(registry = %self.registry, status, "{method} {}: retrying in {wait:?}", display_url(url));
                            drop((resp, permit));
                            self.pause(wait).await;
                            continue;
                        }
                    }
                }
                Ok(Err(e)) => (Cause::Connection, self.connect_error(url, &describe_reqwest_error(&e))),
                Err(late) => (Cause::Timeout, self.timeout_error(method, url, late)),
            };
            drop(permit);
            let (cause, error) = cause;
            match retry.next(cause) {
                Some(wait) => {
                    tracing::info!(registry = %self.registry, "{method} {}: {error}; retrying in {wait:?}", display_url(url));
                    self.pause(wait).await;
                }
                None => return Err(error),
            }
        }
    }

    /// Sleeps before a retry, holding no permit.
    async fn pause(&self, wait: Duration) {
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
    }

    fn connect_error(&self, url: &Url, message: &str) -> RegistryError {
        RegistryError::Connect { registry: self.registry.clone(), url: display_url(url), message: message.to_string() }
    }

    fn timeout_error(&self, method: &reqwest::Method, url: &Url, late: timeouts::Late) -> RegistryError {
        RegistryError::Timeout {
            registry: self.registry.clone(),
            request: format!("{method} {}", display_url(url)),
            message: late.to_string(),
        }
    }
}

/// The TLS and connection settings of one registry's HTTP client.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// PEM certificates trusted besides the system's (`caFile`).
    pub ca_pem: Option<Vec<u8>>,
    /// `insecureSkipTlsVerify: true`.
    pub skip_verify: bool,
}

/// The HTTP client of one registry: its connect timeout and TLS trust. Redirects are followed
/// (MCR's CDN, ACR's data endpoints); reqwest drops `Authorization` on a hop to another host,
/// port or scheme.
///
/// HTTP/1.1 only, a pooled connection per request in flight (bounded by `maxConcurrentRequests`
/// and `transfer.concurrency`), never HTTP/2: over TLS, ALPN made every request to a host one
/// stream of a single HTTP/2 connection, so all of a run's uploads shared the server's
/// connection-level receive window (Go's HTTP/2 server, distribution's, grants 1 MiB per
/// connection, and no client setting enlarges it) and all downloads hyper's. At 25 ms each way
/// that capped a sync at about 1 MiB per round trip, 20 MiB/s, where the links carried over
/// 100 MiB/s (`benches/wire.rs`: the same copies over one HTTP/2 connection against one HTTP/1.1
/// connection each; docs/benchmarks.md). Each HTTP/1.1 connection has TCP's own window, which
/// grows with the link. Registries that speak only HTTP/1.1 are served the same way.
pub fn client(registry: &str, connect: Duration, tls: &Tls) -> Result<reqwest::Client, RegistryError> {
    let err = |message: String| RegistryError::Protocol { registry: registry.to_string(), message };
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("acr-mirror/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect)
        .http1_only()
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::limited(10));
    if let Some(pem) = &tls.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| err(format!("caFile holds no usable PEM certificate: {}", describe_reqwest_error(&e))))?;
        if certs.is_empty() {
            return Err(err("caFile holds no PEM certificate".into()));
        }
        b = b.tls_certs_merge(certs);
    }
    if tls.skip_verify {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| err(format!("cannot build the HTTP client: {}", describe_reqwest_error(&e))))
}
