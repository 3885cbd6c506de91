//! Moving one image graph: verified streaming copy into a target ([`copy`]), or warming a
//! pull-through cache by reading everything through it ([`warm`]).
//!
//! The order is what keeps a target consistent at every instant: blobs before the manifests
//! that reference them, children before the index, referrers before the tag, and the tag
//! last. A failure at any point leaves no tag pointing at content that is not all there.
//!
//! A [`Context`] is shared by every image of a run: one bound on blob transfers, one table of
//! blobs in flight (a layer shared by ten images moves once per target repository; each transfer
//! runs as a task of its own, so it ends and wakes everyone waiting on it even when the image
//! that started it has failed), one record of where each blob already is in the target (so
//! later repositories mount it), and the run's stop: after [`Context::stop`] no blob transfer
//! starts, after [`Context::abort`] the running ones are abandoned and their sessions cancelled.

pub mod blob;
pub mod copy;
pub mod pipeline;
pub mod warm;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::{BoxFuture, Shared};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::digest::{Digest, Mismatch};
use crate::manifest::{IndexPolicy, PlatformFilter};
use crate::registry::RegistryError;

/// Options for one image.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Platforms to carry; empty means all.
    pub platforms: Vec<PlatformFilter>,
    pub index_policy: IndexPolicy,
    /// Copy OCI referrers (signatures, SBOMs) of every copied manifest.
    pub referrers: bool,
    /// What the caller already knows of the target (see [`TargetState`]).
    pub target_state: TargetState,
    /// Bytes of this image's blobs that this run put into the target: a blob copied by this run
    /// counts its size for every image that needs it, whichever image's move copied it, so the
    /// count of an image does not depend on the order images ran in; a blob that was there
    /// before, or mounted from a repository the run did not fill, counts nothing. When warming,
    /// the bytes read through the cache.
    pub bytes: Arc<AtomicU64>,
}

/// What the caller knows of the image in the target before the copy, which decides what the
/// copy must ask the target first. Blobs are asked for in every state (see [`blob::ensure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetState {
    /// Nothing: the copy asks whether the tag already points at the image, and stops if so.
    #[default]
    Unknown,
    /// The plan saw the tag missing or outdated: the copy walks the graph, skipping child
    /// manifests the target has.
    Stale,
    /// The plan saw the repository without any tag: no child manifest can be there (but for what
    /// this or a killed run put there, which is pushed again at no cost in blob bytes), so none
    /// is asked for.
    Empty,
    /// A deep check found content missing behind the tag: the copy walks every child and blob,
    /// present or not, so what is missing under a present child manifest is found and put back.
    Partial,
}

/// Why moving an image failed. Each variant names the image or blob concerned.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    #[error("{0}")]
    Registry(Arc<RegistryError>),
    #[error("blob {digest}: {mismatch} — the source served bytes that do not match the digest; nothing was committed")]
    BlobMismatch { digest: Digest, mismatch: Mismatch },
    /// The fix depends on where the user set the policy: see [`TransferError::remedy`].
    #[error("target {target} refused the original index with only the chosen platforms present ({detail})")]
    SparseRefused { target: String, detail: String },
    /// The source's body ended, or broke off, before the descriptor's size: the source's fault,
    /// whatever the target then said about the broken upload.
    #[error("short body: got {got} of {expected} bytes from {registry}{cause}")]
    ShortBody { registry: String, got: u64, expected: u64, cause: String },
    #[error("not completed: the run was stopped before this transfer was done")]
    Interrupted,
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

impl TransferError {
    /// A stable, machine-readable name of what went wrong (see [`RegistryError::kind`]).
    pub fn kind(&self) -> &'static str {
        match self {
            TransferError::Registry(e) => e.kind(),
            TransferError::BlobMismatch { .. } => "digest_mismatch",
            TransferError::SparseRefused { .. } => "sparse_refused",
            TransferError::ShortBody { .. } => "short_body",
            TransferError::Interrupted => "interrupted",
            TransferError::Refused { .. } => "refused",
            TransferError::Warm { .. } => "warm",
            TransferError::CacheRule { .. } => "cache_rule",
        }
    }
}

/// Whether a registry error is a push refused the way a pull-through cache refuses it: ACR under a
/// cache rule (`DENIED`/`UNSUPPORTED`, 403 or 405; <https://github.com/Azure/acr/issues/686>) or distribution in proxy
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
    /// Worth another attempt: a transient registry answer, or a source body that broke off.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransferError::Registry(e) => e.is_retryable(),
            TransferError::ShortBody { .. } => true,
            _ => false,
        }
    }

    /// What the user can change to get past this error, worded for where they choose the index
    /// policy: `setting` is e.g. ``--index-policy`` for `copy`, or ``the config key `indexPolicy` ``
    /// for `sync`. `None` for errors whose fix is not a setting of ours.
    pub fn remedy(&self, setting: &str) -> Option<String> {
        match self {
            TransferError::SparseRefused { .. } => Some(format!(
                "set {setting} to rewrite (a new index of the chosen platforms, new digest) or preserve (copy every platform)"
            )),
            _ => None,
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
    /// Every (registry, digest) whose bytes this run copied into that registry.
    copied: std::sync::Mutex<std::collections::HashSet<(String, Digest)>>,
    /// Serialises uploads of one digest into one registry (see [`blob::ensure`]).
    digest_locks: std::sync::Mutex<DigestLocks>,
    /// Blobs read through a cache this run, per (cache, repository, digest) (see
    /// [`warm`]'s `read_once`): set once a read was verified; readers that meet a read under
    /// way wait for it, and take over if it fails.
    warm_reads: std::sync::Mutex<HashMap<BlobKey, Arc<tokio::sync::OnceCell<()>>>>,
    /// Cancelled when the run is asked to stop: no blob transfer starts after it.
    stopping: CancellationToken,
    /// Cancelled when the grace period after a stop is over: transfers still running are
    /// abandoned and their upload sessions cancelled.
    aborting: CancellationToken,
    /// How long cancelling an abandoned upload session may take.
    cancel_within: std::time::Duration,
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
            copied: Default::default(),
            digest_locks: Default::default(),
            warm_reads: Default::default(),
            stopping: CancellationToken::new(),
            aborting: CancellationToken::new(),
            cancel_within: std::time::Duration::from_secs(2),
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

    /// From now on no blob transfer starts; those running go on (see [`Context::abort`]).
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    /// Abandons the blob transfers still running: each cancels its upload session and fails with
    /// [`TransferError::Interrupted`]. Implies [`Context::stop`].
    pub fn abort(&self) {
        self.stopping.cancel();
        self.aborting.cancel();
    }

    /// Waits until no blob transfer is running, or `deadline`.
    pub(crate) async fn settle_until(&self, deadline: tokio::time::Instant) {
        while !self.in_flight.lock().expect("in-flight lock").is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
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

    /// Records that this run copied `digest`'s bytes into `registry`.
    pub fn mark_copied(&self, registry: &str, digest: &Digest) {
        self.copied.lock().expect("copied lock").insert((registry.to_string(), digest.clone()));
    }

    /// Whether this run copied `digest`'s bytes into `registry` (into any of its repositories).
    pub fn was_copied(&self, registry: &str, digest: &Digest) -> bool {
        self.copied.lock().expect("copied lock").contains(&(registry.to_string(), digest.clone()))
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

    /// The once-per-run read of `digest` through `repo` of the cache `registry`.
    pub(crate) fn warm_read(&self, registry: &str, repo: &str, digest: &Digest) -> Arc<tokio::sync::OnceCell<()>> {
        self.warm_reads
            .lock()
            .expect("warm reads")
            .entry((registry.to_string(), repo.to_string(), digest.clone()))
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
