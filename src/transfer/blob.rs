//! One blob from a source repository into a target repository, every byte hashed on the way.
//!
//! 1. `HEAD` in the target: already there, nothing to do.
//! 2. Mount from a repository of the same registry that holds it (the source itself when source
//!    and target share a registry, or one this run already filled); a refused mount's 202 gives
//!    an upload session that is used as it is.
//! 3. Stream it: blobs up to the chunk size in one `PUT` whose body withholds its last bytes
//!    until the digest is checked; larger blobs in `PATCH` chunks. Nothing is buffered: each
//!    chunk's body is read straight from the source stream, and the hasher state is kept at each
//!    chunk boundary. After a failed chunk the session's `Range` says what the target holds; the
//!    hasher goes back to the boundary, the source is re-read from there with a ranged `GET`,
//!    and the upload continues from what the target holds.
//!
//! Memory per transfer is the HTTP buffers only, whatever the blob's size.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::Mutex;

use super::{BlobOutcome, Context, TransferError};
use crate::digest::{Digest, Hasher, Mismatch, Verifier, VerifyError};
use crate::manifest::Descriptor;
use crate::registry::blobs::BlobStream;
use crate::registry::uploads::{Session, Started};
use crate::registry::{Registry, RegistryError};

/// Where a blob comes from and goes to.
#[derive(Clone)]
pub struct BlobMove {
    pub src: Arc<Registry>,
    pub src_repo: String,
    pub dst: Arc<Registry>,
    pub dst_repo: String,
    pub desc: Descriptor,
    /// The image's own byte counter: gets the blob's size when this run copied the blob into
    /// the target registry, whichever image's move did it (see `Options::bytes`).
    pub counter: Arc<std::sync::atomic::AtomicU64>,
    /// The target repository had no tags when planned: skip asking for the blob (see `Options::fresh_target`).
    pub fresh_target: bool,
}

/// Makes sure the target repository holds the blob. Concurrent calls for the same blob and target
/// repository share one transfer.
pub async fn ensure(ctx: &Arc<Context>, mv: BlobMove) -> Result<BlobOutcome, TransferError> {
    let key = (mv.dst.host.clone(), mv.dst_repo.clone(), mv.desc.digest.clone());
    let (counter, size) = (mv.counter.clone(), mv.desc.size);
    let fut = {
        let mut map = ctx.in_flight.lock().expect("in-flight lock");
        match map.get(&key) {
            Some(f) => f.clone(),
            None => {
                let ctx2 = ctx.clone();
                let f = async move { ensure_uncached(&ctx2, &mv).await }.boxed().shared();
                map.insert(key.clone(), f.clone());
                f
            }
        }
    };
    let result = fut.await;
    // A finished transfer leaves the table: a later run of the same blob asks the target again
    // (after a failure it should be tried anew, after a success the HEAD is cheap).
    ctx.in_flight.lock().expect("in-flight lock").remove(&key);
    if result.is_ok() && ctx.was_copied(&key.0, &key.2) {
        counter.fetch_add(size, Ordering::Relaxed);
    }
    result
}

async fn ensure_uncached(ctx: &Arc<Context>, mv: &BlobMove) -> Result<BlobOutcome, TransferError> {
    let digest = &mv.desc.digest;
    let present = if mv.fresh_target {
        ctx.is_placed(&mv.dst.host, &mv.dst_repo, digest)
    } else {
        ctx.is_placed(&mv.dst.host, &mv.dst_repo, digest) || mv.dst.head_blob(&mv.dst_repo, digest).await?.is_some()
    };
    if present {
        ctx.located(&mv.dst.host, digest, &mv.dst_repo);
        ctx.stats.blobs_present.fetch_add(1, Ordering::Relaxed);
        return Ok(BlobOutcome::Present);
    }
    // One upload of a digest per target registry at a time: a second repository that needs the
    // same blob waits for the first, then mounts it from there instead of uploading it again.
    let _one_at_a_time = ctx.digest_lock(&mv.dst.host, digest).lock_owned().await;
    let mount_from = if mv.src.host == mv.dst.host && mv.src_repo != mv.dst_repo {
        Some(mv.src_repo.clone())
    } else {
        ctx.mount_source(&mv.dst.host, digest, &mv.dst_repo)
    };
    let _slot = ctx.blob_slots.acquire().await.expect("semaphore never closed");
    let mut session = match mv.dst.start_upload(&mv.dst_repo, mount_from.as_deref().map(|f| (f, digest))).await? {
        Started::Mounted => {
            ctx.located(&mv.dst.host, digest, &mv.dst_repo);
            ctx.stats.blobs_mounted.fetch_add(1, Ordering::Relaxed);
            return Ok(BlobOutcome::Mounted);
        }
        Started::Session(s) => s,
    };
    let mut attempt = 0u32;
    loop {
        let result = if mv.desc.size <= ctx.chunk_size {
            upload_whole(ctx, mv, &session).await
        } else {
            upload_chunked(ctx, mv, session.clone()).await
        };
        match result {
            Ok(()) => {
                ctx.located(&mv.dst.host, digest, &mv.dst_repo);
                ctx.mark_copied(&mv.dst.host, digest);
                ctx.stats.blobs_copied.fetch_add(1, Ordering::Relaxed);
                return Ok(BlobOutcome::Copied);
            }
            Err(failure) => {
                mv.dst.cancel_upload(&failure.session.unwrap_or(session)).await;
                // A mismatch is tried once more (a damaged transfer can look like one); anything
                // else retryable as often as the budget allows.
                let again = match &failure.error {
                    TransferError::BlobMismatch { .. } => attempt < 1,
                    // A token that lapsed under a streamed body: the transport has dropped it,
                    // so one more attempt fetches a new one.
                    TransferError::Registry(r) if matches!(**r, RegistryError::Unauthorized { .. }) => attempt < 1,
                    e => (e.is_retryable() || session_lost(e)) && attempt < ctx.retries,
                };
                if !again {
                    return Err(failure.error);
                }
                attempt += 1;
                let wait = match &failure.error {
                    TransferError::Registry(e) => e.retry_after(),
                    _ => None,
                }
                .unwrap_or_else(|| crate::registry::backoff(attempt));
                tracing::info!(blob = %digest, repo = %mv.dst_repo, "blob upload failed ({}), starting again in {wait:?}", failure.error);
                tokio::time::sleep(wait).await;
                session = match mv.dst.start_upload(&mv.dst_repo, None).await? {
                    Started::Session(s) => s,
                    Started::Mounted => return Ok(BlobOutcome::Mounted),
                };
            }
        }
    }
}

/// The registry no longer knows the upload session (distribution 2.8 invalidates one whose
/// chunk was cut mid-way): the upload starts again in a new session.
fn session_lost(e: &TransferError) -> bool {
    matches!(e, TransferError::Registry(r) if matches!(r.code(), Some("BLOB_UPLOAD_INVALID" | "BLOB_UPLOAD_UNKNOWN")))
}

/// An upload that failed, with the session to abandon.
struct Failure {
    error: TransferError,
    session: Option<Session>,
}

impl<E: Into<TransferError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { error: e.into(), session: None }
    }
}

/// The whole blob in one streamed `PUT`, through a [`Verifier`] that withholds the last bytes of
/// content whose digest is wrong, so the target never receives a complete wrong body.
async fn upload_whole(ctx: &Arc<Context>, mv: &BlobMove, session: &Session) -> Result<(), Failure> {
    let digest = mv.desc.digest.clone();
    let source = mv.src.get_blob(&mv.src_repo, &digest, 0).await?;
    let mismatch: Arc<std::sync::Mutex<Option<Mismatch>>> = Default::default();
    let seen = mismatch.clone();
    let stats = ctx.stats.clone();
    let body = Verifier::new(source, digest.clone(), mv.desc.size, Hasher::new())
        .inspect_ok(move |b| {
            stats.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        })
        .inspect_err(move |e| {
            if let VerifyError::Mismatch(m) = e {
                *seen.lock().expect("mismatch lock") = Some(m.clone());
            }
        });
    let result = mv.dst.put_whole(session, &digest, mv.desc.size, reqwest::Body::wrap_stream(body)).await;
    if let Some(m) = mismatch.lock().expect("mismatch lock").take() {
        return Err(Failure { error: TransferError::BlobMismatch { digest, mismatch: m }, session: None });
    }
    result.map_err(Failure::from)
}

/// Reads the source for the chunk bodies, hashing what it hands out.
struct ChunkReader {
    source: BlobStream,
    pending: Option<Bytes>,
    hasher: Hasher,
}

/// A body of exactly `len` bytes taken from the shared reader.
fn chunk_body(
    reader: Arc<Mutex<ChunkReader>>,
    len: u64,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = Result<Bytes, RegistryError>> + Send + 'static {
    futures::stream::unfold((reader, len), move |(reader, remaining)| {
        let ctx = ctx.clone();
        async move {
            if remaining == 0 {
                return None;
            }
            let mut r = reader.lock().await;
            let next = match r.pending.take() {
                Some(b) => Ok(b),
                None => match r.source.next().await {
                    Some(Ok(b)) => Ok(b),
                    Some(Err(e)) => Err(e),
                    None => Err(RegistryError::Body {
                        registry: "source".into(),
                        message: "blob ended before its descriptor's size".into(),
                    }),
                },
            };
            match next {
                Err(e) => Some((Err(e), (reader.clone(), 0))),
                Ok(mut b) => {
                    if b.len() as u64 > remaining {
                        r.pending = Some(b.split_off(remaining as usize));
                    }
                    r.hasher.update(&b);
                    ctx.stats.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                    let n = b.len() as u64;
                    drop(r);
                    Some((Ok(b), (reader, remaining - n)))
                }
            }
        }
    })
}

async fn upload_chunked(ctx: &Arc<Context>, mv: &BlobMove, mut session: Session) -> Result<(), Failure> {
    let digest = &mv.desc.digest;
    let size = mv.desc.size;
    let source = mv.src.get_blob(&mv.src_repo, digest, 0).await?;
    let reader = Arc::new(Mutex::new(ChunkReader { source, pending: None, hasher: Hasher::new() }));
    let mut offset = 0u64;
    let mut resumes = 0u32;
    while offset < size {
        let len = ctx.chunk_size.min(size - offset);
        let checkpoint = reader.lock().await.hasher.clone();
        let body = chunk_body(reader.clone(), len, ctx.clone());
        match mv.dst.patch_chunk(&session, offset, len, reqwest::Body::wrap_stream(body)).await {
            Ok(next) => {
                session = next;
                offset += len;
            }
            Err(e) if e.is_retryable() && resumes < ctx.retries => {
                resumes += 1;
                tokio::time::sleep(e.retry_after().unwrap_or_else(|| crate::registry::backoff(resumes))).await;
                let (held, next) = match mv.dst.upload_status(&session).await {
                    Ok(s) => s,
                    Err(status_err) => return Err(Failure { error: status_err.into(), session: Some(session) }),
                };
                session = next;
                if held < offset || held > offset + len {
                    return Err(Failure {
                        error: TransferError::Refused {
                            target: format!("{}/{}", mv.dst.host, mv.dst_repo),
                            message: format!("upload session holds {held} bytes, expected {offset}..={}", offset + len),
                        },
                        session: Some(session),
                    });
                }
                tracing::info!(blob = %digest, "chunk at {offset} failed ({e}); resuming from byte {held}");
                // Back to the chunk's boundary, then hash (without sending) what the target already holds.
                let mut source = mv.src.get_blob(&mv.src_repo, digest, offset).await?;
                let mut hasher = checkpoint;
                let mut skip = held - offset;
                let mut pending = None;
                while skip > 0 {
                    let mut b = match source.next().await {
                        Some(b) => b?,
                        None => {
                            return Err(Failure::from(RegistryError::Body {
                                registry: mv.src.host.clone(),
                                message: "blob ended early while resuming".into(),
                            }));
                        }
                    };
                    if b.len() as u64 > skip {
                        pending = Some(b.split_off(skip as usize));
                    }
                    hasher.update(&b);
                    skip -= b.len() as u64;
                }
                *reader.lock().await = ChunkReader { source, pending, hasher };
                offset = held;
            }
            Err(e) => return Err(Failure { error: e.into(), session: Some(session) }),
        }
    }
    let actual = reader.lock().await.hasher.clone().finish();
    if &actual != digest {
        return Err(Failure {
            error: TransferError::BlobMismatch {
                digest: digest.clone(),
                mismatch: Mismatch::Digest { expected: digest.clone(), actual },
            },
            session: Some(session),
        });
    }
    mv.dst.complete_upload(&session, digest).await.map_err(|e| Failure { error: e.into(), session: Some(session) })
}

/// Reads a blob through `registry` and checks it against its descriptor, keeping nothing: how a
/// pull-through cache is made to fetch and store it.
pub async fn pull_verify(
    ctx: &Arc<Context>,
    registry: &Registry,
    repo: &str,
    desc: &Descriptor,
    counter: &std::sync::atomic::AtomicU64,
) -> Result<u64, TransferError> {
    let _slot = ctx.blob_slots.acquire().await.expect("semaphore never closed");
    let mut attempt = 0u32;
    loop {
        match pull_verify_once(ctx, registry, repo, desc, counter).await {
            Ok(n) => return Ok(n),
            Err(e) if e.is_retryable() && attempt < ctx.retries => {
                attempt += 1;
                tokio::time::sleep(crate::registry::backoff(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn pull_verify_once(
    ctx: &Context,
    registry: &Registry,
    repo: &str,
    desc: &Descriptor,
    counter: &std::sync::atomic::AtomicU64,
) -> Result<u64, TransferError> {
    let stream = registry.get_blob(repo, &desc.digest, 0).await?;
    let mut v = Verifier::new(stream, desc.digest.clone(), desc.size, Hasher::new());
    let mut n = 0u64;
    while let Some(chunk) = v.next().await {
        match chunk {
            Ok(b) => {
                n += b.len() as u64;
                ctx.stats.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            Err(VerifyError::Inner(e)) => return Err(e.into()),
            Err(VerifyError::Mismatch(m)) => {
                return Err(TransferError::BlobMismatch { digest: desc.digest.clone(), mismatch: m });
            }
        }
    }
    Ok(n)
}

/// Digest of a blob as text, for reports.
pub fn short(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}
