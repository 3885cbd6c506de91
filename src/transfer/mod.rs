//! Moving one image graph: verified streaming copy into a target ([`copy`]), or warming a
//! pull-through cache by reading everything through it ([`warm`]).
//!
//! The order is what keeps a target consistent at every instant: blobs before the manifests
//! that reference them, children before the index, referrers before the tag, and the tag
//! last. A failure at any point leaves no tag pointing at content that is not all there.
//!
//! A [`Context`] is shared by every image of a run: one bound on blob transfers, one table of
//! blobs in flight (a layer shared by ten images moves once per target repository), and one
//! record of where each blob already is in the target (so later repositories mount it).

pub mod blob;
pub mod copy;
pub mod ledger;
pub mod pipeline;
pub mod warm;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::{BoxFuture, Shared};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::digest::{Digest, Mismatch};
use crate::manifest::PlatformFilter;
use crate::registry::RegistryError;

/// Referrers are followed this deep (a signature of an SBOM of an image is depth 2), by the copy
/// and by the deep check that they arrived.
pub const REFERRER_DEPTH: u32 = 3;

/// What to do with a multi-arch index when only some of its platforms are wanted.
///
/// The default is `preserve`: the copy is byte-identical, so `image@sha256:…` pins in workload
/// manifests keep working, and every registry accepts it. It costs the bytes of the platforms
/// nobody runs; `sparse` avoids that where the target accepts an index whose children are not
/// all present, and `rewrite` everywhere at the price of a new digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IndexPolicy {
    /// Copy every child; the index digest is unchanged. Accepted by every registry.
    #[default]
    Preserve,
    /// Copy only the chosen platforms and push the original index unchanged (some registries refuse).
    Sparse,
    /// Push a new index of the chosen platforms: a new digest, reported as such.
    Rewrite,
}

impl std::fmt::Display for IndexPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IndexPolicy::Preserve => "preserve",
            IndexPolicy::Sparse => "sparse",
            IndexPolicy::Rewrite => "rewrite",
        })
    }
}

/// Options for one image.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Platforms to carry; empty means all.
    pub platforms: Vec<PlatformFilter>,
    pub index_policy: IndexPolicy,
    /// Copy OCI referrers (signatures, SBOMs) of every copied manifest.
    pub referrers: bool,
    /// The caller has just seen that the target tag is missing, outdated or partial (the plan
    /// looked): do not ask the target again whether it has the image, walk the graph.
    pub assume_stale: bool,
    /// The plan saw the target repository without any tag: none of the image's children or blobs
    /// can be there (but for what this run put there), so they are not asked for one by one.
    pub fresh_target: bool,
    /// Blob bytes this image streamed (a blob shared by images counts for the one that moved it).
    pub bytes: Arc<AtomicU64>,
}

/// Why moving an image failed. Each variant names the image or blob concerned.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    #[error("{0}")]
    Registry(Arc<RegistryError>),
    #[error("blob {digest}: {mismatch} — the source served bytes that do not match the digest; nothing was committed")]
    BlobMismatch { digest: Digest, mismatch: Mismatch },
    #[error(
        "target {target} refused the original index with only the chosen platforms present ({detail}). \
         Use --index-policy rewrite (a new index of the chosen platforms, new digest) or preserve (copy every platform)"
    )]
    SparseRefused { target: String, detail: String },
    #[error("{target}: {message}")]
    Refused { target: String, message: String },
    #[error("warming {target}: {message}")]
    Warm { target: String, message: String },
    #[error(
        "{target}: the target refused the push ({detail}). This repository is behind a cache rule, which \
         takes no pushes: use `mode: warm` for this mapping (if no cache rule covers it, check that the \
         repository is not locked with writeEnabled=false)"
    )]
    CacheRule { target: String, detail: String },
}

/// Whether a registry error is a push refused the way a pull-through cache refuses it: ACR under a
/// cache rule (aks-acr-facts.md §7: `DENIED`/`UNSUPPORTED`, 403 or 405) or distribution in proxy
/// mode (405 `UNSUPPORTED`), answering a blob upload `POST`/`PATCH`/`PUT` or a manifest `PUT`.
pub fn is_cache_rule_refusal(e: &RegistryError) -> bool {
    let RegistryError::Status(e) = e else { return false };
    let (method, url) = (e.method.as_str(), e.url.as_str());
    let push = (method == "POST" || method == "PATCH" || method == "PUT") && url.contains("/blobs/uploads")
        || method == "PUT" && url.contains("/manifests/");
    let refused =
        e.status == 405 || e.status == 403 && matches!(e.code.as_deref(), Some("DENIED") | Some("UNSUPPORTED"));
    push && refused
}

impl TransferError {
    /// Turns a push refused under a cache rule into [`TransferError::CacheRule`] naming `target`.
    pub fn explain_cache_rule(self, target: &str) -> TransferError {
        match &self {
            TransferError::Registry(e) if is_cache_rule_refusal(e) => {
                TransferError::CacheRule { target: target.to_string(), detail: e.to_string() }
            }
            _ => self,
        }
    }
}

impl From<RegistryError> for TransferError {
    fn from(e: RegistryError) -> Self {
        TransferError::Registry(Arc::new(e))
    }
}

impl TransferError {
    pub fn is_retryable(&self) -> bool {
        match self {
            TransferError::Registry(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Counters for a run, shared by all images.
#[derive(Debug, Default)]
pub struct Stats {
    /// Blob bytes streamed from source to target (or pulled through a cache when warming).
    pub bytes: AtomicU64,
    pub blobs_copied: AtomicU64,
    pub blobs_mounted: AtomicU64,
    pub blobs_present: AtomicU64,
    pub manifests_pushed: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            bytes: self.bytes.load(Ordering::Relaxed),
            blobs_copied: self.blobs_copied.load(Ordering::Relaxed),
            blobs_mounted: self.blobs_mounted.load(Ordering::Relaxed),
            blobs_present: self.blobs_present.load(Ordering::Relaxed),
            manifests_pushed: self.manifests_pushed.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub bytes: u64,
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub blobs_present: u64,
    pub manifests_pushed: u64,
}

impl std::ops::Sub for StatsSnapshot {
    type Output = StatsSnapshot;
    fn sub(self, o: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            bytes: self.bytes - o.bytes,
            blobs_copied: self.blobs_copied - o.blobs_copied,
            blobs_mounted: self.blobs_mounted - o.blobs_mounted,
            blobs_present: self.blobs_present - o.blobs_present,
            manifests_pushed: self.manifests_pushed - o.manifests_pushed,
        }
    }
}

/// How a blob got into the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    Present,
    Mounted,
    Copied,
}

type BlobKey = (String, String, Digest);
type InFlight = Shared<BoxFuture<'static, Result<BlobOutcome, TransferError>>>;
type DigestLocks = HashMap<(String, Digest), Arc<tokio::sync::Mutex<()>>>;

/// State shared by every image of a run.
pub struct Context {
    /// Bounds concurrent blob streams: memory stays at about this many network buffers.
    pub blob_slots: Arc<Semaphore>,
    /// Blobs larger than this are uploaded in resumable chunks of this size.
    pub chunk_size: u64,
    /// Attempts per blob for retryable failures (resumed, not restarted, for chunked uploads).
    pub retries: u32,
    pub stats: Arc<Stats>,
    /// How long warming re-checks that a cache serves every manifest itself (see [`warm`]).
    pub warm_recheck: std::time::Duration,
    in_flight: std::sync::Mutex<HashMap<BlobKey, InFlight>>,
    /// Where a blob is known to be in a target registry: (registry, digest) → repository.
    located: std::sync::Mutex<HashMap<(String, Digest), String>>,
    /// Every (registry, repository, digest) this run found or put a blob in.
    placed: std::sync::Mutex<std::collections::HashSet<BlobKey>>,
    /// Serialises uploads of one digest into one registry (see [`blob::ensure`]).
    digest_locks: std::sync::Mutex<DigestLocks>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("chunk_size", &self.chunk_size).field("retries", &self.retries).finish()
    }
}

impl Context {
    pub fn new(concurrency: usize, chunk_size: u64, retries: u32) -> Arc<Self> {
        Arc::new(Context {
            blob_slots: Arc::new(Semaphore::new(concurrency.max(1))),
            chunk_size: chunk_size.max(1),
            retries,
            stats: Arc::new(Stats::default()),
            warm_recheck: std::time::Duration::from_secs(60),
            in_flight: Default::default(),
            located: Default::default(),
            placed: Default::default(),
            digest_locks: Default::default(),
        })
    }

    pub fn from_config(cfg: &crate::config::TransferConfig) -> Arc<Self> {
        Context::with_warm_recheck(
            cfg.concurrency,
            cfg.chunk_size,
            cfg.retries,
            std::time::Duration::from_secs(cfg.warm_recheck_seconds),
        )
    }

    /// [`Context::new`] with a warm re-check bound other than the default 60 s (0: none).
    pub fn with_warm_recheck(
        concurrency: usize,
        chunk_size: u64,
        retries: u32,
        warm_recheck: std::time::Duration,
    ) -> Arc<Self> {
        let mut ctx = Context::new(concurrency, chunk_size, retries);
        if let Some(c) = Arc::get_mut(&mut ctx) {
            c.warm_recheck = warm_recheck;
        }
        ctx
    }

    /// Records that `repo` in `registry` holds `digest`, so other repositories can mount it.
    pub fn located(&self, registry: &str, digest: &Digest, repo: &str) {
        self.located.lock().expect("located lock").insert((registry.to_string(), digest.clone()), repo.to_string());
        self.placed.lock().expect("placed lock").insert((registry.to_string(), repo.to_string(), digest.clone()));
    }

    /// Whether this run already found or put `digest` in `repo` of `registry`.
    pub fn is_placed(&self, registry: &str, repo: &str, digest: &Digest) -> bool {
        self.placed.lock().expect("placed lock").contains(&(registry.to_string(), repo.to_string(), digest.clone()))
    }

    /// The lock that lets one upload of `digest` into `registry` run at a time.
    pub fn digest_lock(&self, registry: &str, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        self.digest_locks
            .lock()
            .expect("digest locks")
            .entry((registry.to_string(), digest.clone()))
            .or_default()
            .clone()
    }

    /// A repository of `registry` known to hold `digest`, other than `except`.
    pub fn mount_source(&self, registry: &str, digest: &Digest, except: &str) -> Option<String> {
        self.located
            .lock()
            .expect("located lock")
            .get(&(registry.to_string(), digest.clone()))
            .filter(|r| r.as_str() != except)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error::StatusError;

    fn status(method: &str, url: &str, status: u16, code: Option<&str>) -> RegistryError {
        RegistryError::status_error(StatusError {
            registry: "r.azurecr.io".into(),
            method: method.into(),
            url: url.into(),
            status,
            code: code.map(String::from),
            message: String::new(),
            retry_after: None,
        })
    }

    #[test]
    fn only_refused_pushes_count_as_cache_rule_refusals() {
        // Checks the signal: 405, or 403 DENIED/UNSUPPORTED, on an upload or a manifest PUT; not a
        // 403 on a pull, not a 401 (missing push permission), not a 400 on a manifest PUT.
        let up = "https://r.azurecr.io/v2/aks-managed-repository/x/blobs/uploads/";
        let put = "https://r.azurecr.io/v2/aks-managed-repository/x/manifests/1";
        assert!(is_cache_rule_refusal(&status("POST", up, 405, Some("UNSUPPORTED"))));
        assert!(is_cache_rule_refusal(&status("PUT", put, 403, Some("DENIED"))));
        assert!(!is_cache_rule_refusal(&status("GET", put, 403, Some("DENIED"))));
        assert!(!is_cache_rule_refusal(&status("PUT", put, 401, Some("UNAUTHORIZED"))));
        assert!(!is_cache_rule_refusal(&status("PUT", put, 400, Some("MANIFEST_BLOB_UNKNOWN"))));
        let e = TransferError::from(status("PUT", put, 405, None)).explain_cache_rule("r.azurecr.io/x:1");
        assert!(matches!(e, TransferError::CacheRule { .. }) && e.to_string().contains("mode: warm"), "{e}");
    }
}
