//! One blob from a source repository into a target repository, every byte hashed on the way.
//!
//! 1. Mount from a repository of the same registry that holds it (the source itself when source
//!    and target share a registry, or one this run already filled); otherwise mount it from the
//!    target repository itself, which says in the same request whether a killed run or a run
//!    beside this one already put it there (201), whatever the plan saw. A refused mount's 202
//!    gives an upload session that is used as it is.
//! 2. Stream it: blobs up to the chunk size in one `PUT` whose body withholds its last bytes
//!    until the digest is checked; larger blobs in one `PATCH` streaming the whole blob, then a
//!    bodiless `PUT`. Nothing is buffered: the body is read straight from the source stream, and
//!    the hasher state is kept at each multiple of the chunk size. Only after a failure is the
//!    session's `Range` asked: it says what the target holds; the hasher goes back to the last
//!    multiple at or below it, the source is re-read from there with a ranged `GET`, and one
//!    more `PATCH` sends the rest. The final bodiless `PUT` is retried in place.
//!
//! An upload that fails or is abandoned (a stop, after the grace period) has its session
//! cancelled with a `DELETE`. A source body that breaks off or ends early is reported as the
//! source's fault ([`TransferError::ShortBody`]), whatever the target then said about the broken
//! upload. Memory per transfer is the HTTP buffers only, whatever the blob's size.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::Mutex;

use super::{BlobOutcome, Context, TransferError};
use crate::digest::{Hasher, Mismatch, Verifier, VerifyError};
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
}

/// Makes sure the target repository holds the blob. Concurrent calls for the same blob and target
/// repository share one transfer.
///
/// The transfer runs as a task of its own, not inside the first caller: a caller dropped because
/// a sibling failed (`try_join_all`) must not leave the shared transfer unpolled while it holds
/// the digest lock and a blob slot — every other caller, and every repository waiting to mount
/// the blob, would wait for it forever. The task always ends, and its result (error included)
/// reaches every caller still waiting.
pub async fn ensure(ctx: &Arc<Context>, mv: BlobMove) -> Result<BlobOutcome, TransferError> {
    let key = (mv.dst.host.clone(), mv.dst_repo.clone(), mv.desc.digest.clone());
    let (counter, size) = (mv.counter.clone(), mv.desc.size);
    let fut = {
        let mut map = ctx.in_flight.lock().expect("in-flight lock");
        match map.get(&key) {
            Some(f) => f.clone(),
            None => {
                let (ctx2, key2) = (ctx.clone(), key.clone());
                // The task leaves the table itself when done (it takes the lock held here, so it
                // cannot do so before it is in): a later call asks the target anew — after a
                // failure it is tried again, after a success the check is cheap.
                let task = tokio::spawn(async move {
                    let result = ensure_uncached(&ctx2, &mv).await;
                    ctx2.in_flight.lock().expect("in-flight lock").remove(&key2);
                    result
                });
                let f = async move {
                    match task.await {
                        Ok(result) => result,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(_) => Err(TransferError::Interrupted),
                    }
                }
                .boxed()
                .shared();
                map.insert(key.clone(), f.clone());
                f
            }
        }
    };
    let result = fut.await;
    if result.is_ok() && ctx.was_copied(&key.0, &key.2) {
        counter.fetch_add(size, Ordering::Relaxed);
    }
    result
}

async fn ensure_uncached(ctx: &Arc<Context>, mv: &BlobMove) -> Result<BlobOutcome, TransferError> {
    let digest = &mv.desc.digest;
    if ctx.is_placed(&mv.dst.host, &mv.dst_repo, digest) {
        return Ok(present(ctx, mv));
    }
    if ctx.stopping.is_cancelled() {
        return Err(TransferError::Interrupted);
    }
    // One upload of a digest per target registry at a time: a second repository that needs the
    // same blob waits for the first, then mounts it from there instead of uploading it again.
    let _one_at_a_time = ctx.digest_lock(&mv.dst.host, digest).lock_owned().await;
    let mount_from = if mv.src.host == mv.dst.host && mv.src_repo != mv.dst_repo {
        Some(mv.src_repo.clone())
    } else {
        ctx.mount_source(&mv.dst.host, digest, &mv.dst_repo)
    };
    let _slot = ctx.blob_slots.clone().acquire_owned().await.expect("semaphore never closed");
    if ctx.stopping.is_cancelled() {
        return Err(TransferError::Interrupted);
    }
    // What the target holds is asked whatever the plan saw (a run killed mid-way, or another run
    // beside this one, leaves blobs in a repository whose tags say nothing of them), but in the
    // request that opens the session, not in a `HEAD` before it: a cross-repository mount is
    // answered 201 whether the blob was there or not, and without one the blob is mounted from
    // the target repository itself (201: it is there). Without a cross-repository mount the
    // source's bytes are needed unless the target has them: the source `GET` goes out beside
    // the `POST`, one round trip before the bytes flow, and is dropped unread if the blob is
    // there. (With a cross-repository mount it waits: a mounted blob needs no bytes.)
    let mut source: Option<Result<BlobStream, RegistryError>> = None;
    let started = match &mount_from {
        Some(from) => mv.dst.start_upload(&mv.dst_repo, Some((from, digest))).await,
        None => {
            let (started, body) = tokio::join!(
                mv.dst.start_upload_unless_present(&mv.dst_repo, digest),
                mv.src.get_blob(&mv.src_repo, digest, 0)
            );
            if let Ok(Started::Mounted) = started {
                return Ok(present(ctx, mv));
            }
            source = Some(body);
            started
        }
    };
    let mut session = match started? {
        Started::Mounted => {
            ctx.located(&mv.dst.host, digest, &mv.dst_repo);
            ctx.stats.blobs_mounted.fetch_add(1, Ordering::Relaxed);
            return Ok(BlobOutcome::Mounted);
        }
        Started::Session(s) => s,
    };
    let mut attempt = 0u32;
    loop {
        let body = source.take();
        let upload = async {
            if mv.desc.size <= ctx.chunk_size {
                upload_whole(ctx, mv, &session, body).await
            } else {
                upload_chunked(ctx, mv, &mut session, body).await
            }
        };
        let result = tokio::select! {
            r = upload => r,
            _ = ctx.aborting.cancelled() => Err(TransferError::Interrupted),
        };
        let error = match result {
            Ok(()) => return Ok(copied(ctx, mv)),
            Err(e) => e,
        };
        // The session will not be finished: the target discards what it holds.
        cancel(ctx, &mv.dst, &session).await;
        if !retry(&error, attempt, ctx.retries) {
            return Err(error);
        }
        attempt += 1;
        let wait = match &error {
            TransferError::Registry(e) => e.retry_after(),
            _ => None,
        }
        .unwrap_or_else(|| crate::registry::backoff(attempt));
        tracing::info!(blob = %digest, repo = %mv.dst_repo, "blob upload failed ({error}), starting again in {wait:?}");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.aborting.cancelled() => return Err(TransferError::Interrupted),
        }
        // A failed answer can come after the registry committed the blob (a 500 on the final PUT).
        if mv.dst.head_blob(&mv.dst_repo, digest).await?.is_some() {
            return Ok(copied(ctx, mv));
        }
        session = match mv.dst.start_upload(&mv.dst_repo, None).await? {
            Started::Session(s) => s,
            Started::Mounted => return Ok(BlobOutcome::Mounted),
        };
    }
}

fn present(ctx: &Context, mv: &BlobMove) -> BlobOutcome {
    ctx.located(&mv.dst.host, &mv.desc.digest, &mv.dst_repo);
    ctx.stats.blobs_present.fetch_add(1, Ordering::Relaxed);
    BlobOutcome::Present
}

fn copied(ctx: &Context, mv: &BlobMove) -> BlobOutcome {
    ctx.located(&mv.dst.host, &mv.desc.digest, &mv.dst_repo);
    ctx.mark_copied(&mv.dst.host, &mv.desc.digest);
    ctx.stats.blobs_copied.fetch_add(1, Ordering::Relaxed);
    BlobOutcome::Copied
}

/// `DELETE`s an upload session, bounded: after a stop the grace period is nearly spent.
async fn cancel(ctx: &Context, dst: &Registry, session: &Session) {
    if tokio::time::timeout(ctx.cancel_within, dst.cancel_upload(session)).await.is_err() {
        tracing::debug!(registry = %dst.host, "upload cancel timed out; the registry expires the session itself");
    }
}

/// Whether a failed upload is tried again in a new session, after `attempt` retries so far.
fn retry(error: &TransferError, attempt: u32, retries: u32) -> bool {
    match error {
        TransferError::Interrupted => false,
        // A mismatch is tried once more (a damaged transfer can look like one).
        TransferError::BlobMismatch { .. } => attempt < 1,
        // A token that lapsed under a streamed body: the transport has dropped it, so one more
        // attempt fetches a new one.
        TransferError::Registry(r) if matches!(**r, RegistryError::Unauthorized { .. }) => attempt < 1,
        e => (e.is_retryable() || session_lost(e)) && attempt < retries,
    }
}

/// The registry no longer knows the upload session (distribution 2.8 invalidates one whose
/// chunk was cut mid-way), or holds other bytes than we resumed from (416): the upload starts
/// again in a new session.
fn session_lost(e: &TransferError) -> bool {
    matches!(e, TransferError::Registry(r)
        if r.status() == Some(416) || matches!(r.code(), Some("BLOB_UPLOAD_INVALID" | "BLOB_UPLOAD_UNKNOWN")))
}

/// What went wrong on the source side of a streamed body, kept aside while the target request
/// fails for it: the error must blame the source, not the target that saw its body break off.
#[derive(Clone, Default)]
struct SourceFault(Arc<std::sync::Mutex<Option<TransferError>>>);

impl SourceFault {
    fn set(&self, e: TransferError) {
        self.0.lock().expect("source fault lock").get_or_insert(e);
    }
    fn take(&self) -> Option<TransferError> {
        self.0.lock().expect("source fault lock").take()
    }
}

/// The source's body broke off or ended after `got` of `expected` bytes.
fn short_body(src: &Registry, got: u64, expected: u64, cause: Option<&RegistryError>) -> TransferError {
    TransferError::ShortBody {
        registry: src.host.clone(),
        got,
        expected,
        cause: cause.map(|e| format!(" ({e})")).unwrap_or_default(),
    }
}

/// The whole blob in one streamed `PUT`, through a [`Verifier`] that withholds the last bytes of
/// content whose digest is wrong, so the target never receives a complete wrong body.
/// `source`: the source's body when it was already asked for (the first attempt), else `None`.
async fn upload_whole(
    ctx: &Arc<Context>,
    mv: &BlobMove,
    session: &Session,
    source: Option<Result<BlobStream, RegistryError>>,
) -> Result<(), TransferError> {
    let digest = mv.desc.digest.clone();
    let size = mv.desc.size;
    let source = match source {
        Some(body) => body?,
        None => mv.src.get_blob(&mv.src_repo, &digest, 0).await?,
    };
    let fault = SourceFault::default();
    let seen = fault.clone();
    let got = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (got2, src) = (got.clone(), mv.src.clone());
    let stats = ctx.stats.clone();
    let body = Verifier::new(source, digest.clone(), size, Hasher::new())
        .inspect_ok(move |b| {
            got2.fetch_add(b.len() as u64, Ordering::Relaxed);
            stats.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        })
        .inspect_err(move |e| {
            seen.set(match e {
                VerifyError::Mismatch(Mismatch::Size { expected, actual }) if actual < expected => {
                    short_body(&src, *actual, *expected, None)
                }
                VerifyError::Mismatch(m) => TransferError::BlobMismatch { digest: digest.clone(), mismatch: m.clone() },
                VerifyError::Inner(e) => short_body(&src, got.load(Ordering::Relaxed), size, Some(e)),
            })
        });
    let result = mv.dst.put_whole(session, &mv.desc.digest, size, reqwest::Body::wrap_stream(body)).await;
    match fault.take() {
        Some(e) => Err(e),
        None => Ok(result?),
    }
}

/// Reads the source for the upload bodies, hashing what it hands out.
struct ChunkReader {
    source: BlobStream,
    pending: Option<Bytes>,
    hasher: Hasher,
    /// Where the source broke off, if it did (see [`SourceFault`]).
    fault: Option<TransferError>,
    /// The hasher's state at every multiple of `every` bytes handed out (and at 0): a resumed
    /// upload goes back to the last one the target holds, not to the start of the request.
    checkpoints: Vec<Hasher>,
    every: u64,
}

impl ChunkReader {
    fn new(source: BlobStream, every: u64) -> Self {
        ChunkReader { source, pending: None, hasher: Hasher::new(), fault: None, checkpoints: vec![Hasher::new()], every }
    }
}

/// A body of exactly `len` bytes taken from the shared reader.
fn chunk_body(
    reader: Arc<Mutex<ChunkReader>>,
    len: u64,
    mv: &BlobMove,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = Result<Bytes, RegistryError>> + Send + 'static {
    let (src, size) = (mv.src.clone(), mv.desc.size);
    futures::stream::unfold((reader, len), move |(reader, remaining)| {
        let (ctx, src) = (ctx.clone(), src.clone());
        async move {
            if remaining == 0 {
                return None;
            }
            let mut r = reader.lock().await;
            let next = match r.pending.take() {
                Some(b) => Ok(b),
                None => match r.source.next().await {
                    Some(Ok(b)) => Ok(b),
                    Some(Err(e)) => Err(Some(e)),
                    None => Err(None),
                },
            };
            match next {
                Err(cause) => {
                    r.fault = Some(short_body(&src, r.hasher.len(), size, cause.as_ref()));
                    let e = RegistryError::Body { registry: src.host.clone(), message: "source body broke off".into() };
                    drop(r);
                    Some((Err(e), (reader, 0)))
                }
                Ok(mut b) => {
                    // Never past the body's end, nor past the next checkpoint.
                    let to_checkpoint = r.every - r.hasher.len() % r.every;
                    let take = remaining.min(to_checkpoint);
                    if b.len() as u64 > take {
                        r.pending = Some(b.split_off(take as usize));
                    }
                    r.hasher.update(&b);
                    if !b.is_empty() && r.hasher.len() % r.every == 0 {
                        let at = r.hasher.clone();
                        r.checkpoints.push(at);
                    }
                    ctx.stats.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                    let n = b.len() as u64;
                    drop(r);
                    Some((Ok(b), (reader, remaining - n)))
                }
            }
        }
    })
}

/// Uploads a large blob as one `PATCH` streaming the whole of it (one round trip and one
/// commit by the registry, where a `PATCH` per chunk cost one of each per `chunkSize`), then the
/// bodiless `PUT`. The upload's status is asked only after a failure: the session's `Range` says
/// what the target holds, the hasher goes back to the last multiple of `chunkSize` at or below
/// it, the source is re-read from there with a ranged `GET`, and one more `PATCH` streams the
/// rest. `session` always holds the latest location, so a caller that drops this future (a
/// stop) can still cancel the session.
async fn upload_chunked(
    ctx: &Arc<Context>,
    mv: &BlobMove,
    session: &mut Session,
    source: Option<Result<BlobStream, RegistryError>>,
) -> Result<(), TransferError> {
    let digest = &mv.desc.digest;
    let size = mv.desc.size;
    let source = match source {
        Some(body) => body?,
        None => mv.src.get_blob(&mv.src_repo, digest, 0).await?,
    };
    let reader = Arc::new(Mutex::new(ChunkReader::new(source, ctx.chunk_size)));
    let mut offset = 0u64;
    let mut resumes = 0u32;
    while offset < size {
        let len = size - offset;
        let body = chunk_body(reader.clone(), len, mv, ctx.clone());
        let error = match mv.dst.patch_chunk(session, offset, len, reqwest::Body::wrap_stream(body)).await {
            Ok(next) => {
                *session = next;
                offset += len;
                continue;
            }
            Err(e) => e,
        };
        let source_fault = reader.lock().await.fault.take();
        let resumable = source_fault.is_some() || error.is_retryable();
        if !resumable || resumes >= ctx.retries {
            return Err(source_fault.unwrap_or_else(|| error.into()));
        }
        resumes += 1;
        tokio::time::sleep(error.retry_after().unwrap_or_else(|| crate::registry::backoff(resumes))).await;
        // A request cut off mid-way can invalidate the session: then the source's fault, if it
        // was one, is what the user must hear about.
        let (held, next) = match mv.dst.upload_status(session).await {
            Ok(status) => status,
            Err(e) => return Err(source_fault.unwrap_or_else(|| e.into())),
        };
        *session = next;
        if held < offset || held > offset + len {
            return Err(TransferError::Refused {
                target: format!("{}/{}", mv.dst.host, mv.dst_repo),
                message: format!("upload session holds {held} bytes, expected {offset}..={}", offset + len),
            });
        }
        let why = source_fault.map(|f| f.to_string()).unwrap_or_else(|| error.to_string());
        tracing::info!(blob = %digest, "upload from byte {offset} failed ({why}); resuming from byte {held}");
        let mut r = reader.lock().await;
        let every = r.every;
        let mut checkpoints = std::mem::take(&mut r.checkpoints);
        checkpoints.truncate((held / every) as usize + 1);
        let checkpoint = checkpoints.last().cloned().expect("the checkpoint at 0 is always there");
        *r = resume_reader(mv, checkpoint.len(), held, checkpoint, checkpoints, every).await?;
        drop(r);
        offset = held;
    }
    let actual = reader.lock().await.hasher.clone().finish();
    if &actual != digest {
        return Err(TransferError::BlobMismatch {
            digest: digest.clone(),
            mismatch: Mismatch::Digest { expected: digest.clone(), actual },
        });
    }
    complete(ctx, mv, session).await
}

/// A reader positioned at `held`: the source re-read from the checkpoint at `offset` with a
/// ranged `GET`, its bytes up to `held` (which the target already holds) hashed but not sent.
async fn resume_reader(
    mv: &BlobMove,
    offset: u64,
    held: u64,
    checkpoint: Hasher,
    checkpoints: Vec<Hasher>,
    every: u64,
) -> Result<ChunkReader, TransferError> {
    let mut source = mv.src.get_blob(&mv.src_repo, &mv.desc.digest, offset).await?;
    let mut hasher = checkpoint;
    let mut skip = held - offset;
    let mut pending = None;
    while skip > 0 {
        let mut b = match source.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => return Err(short_body(&mv.src, hasher.len(), mv.desc.size, Some(&e))),
            None => return Err(short_body(&mv.src, hasher.len(), mv.desc.size, None)),
        };
        if b.len() as u64 > skip {
            pending = Some(b.split_off(skip as usize));
        }
        hasher.update(&b);
        skip -= b.len() as u64;
    }
    Ok(ChunkReader { source, pending, hasher, fault: None, checkpoints, every })
}

/// The final `PUT` of a chunked upload, retried in place: it carries no body, so it can be sent
/// again without re-sending a byte. A failed answer may follow a commit, so the blob itself is
/// asked for before each new attempt.
async fn complete(ctx: &Context, mv: &BlobMove, session: &Session) -> Result<(), TransferError> {
    let mut attempt = 0u32;
    loop {
        let error = match mv.dst.complete_upload(session, &mv.desc.digest).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if !error.is_retryable() || attempt >= ctx.retries {
            return Err(error.into());
        }
        attempt += 1;
        tokio::time::sleep(error.retry_after().unwrap_or_else(|| crate::registry::backoff(attempt))).await;
        if mv.dst.head_blob(&mv.dst_repo, &mv.desc.digest).await?.is_some() {
            return Ok(());
        }
    }
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
    if ctx.stopping.is_cancelled() {
        return Err(TransferError::Interrupted);
    }
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
            Err(VerifyError::Inner(e)) => return Err(short_body(registry, n, desc.size, Some(&e))),
            Err(VerifyError::Mismatch(Mismatch::Size { expected, actual })) if actual < expected => {
                return Err(short_body(registry, actual, expected, None));
            }
            Err(VerifyError::Mismatch(m)) => {
                return Err(TransferError::BlobMismatch { digest: desc.digest.clone(), mismatch: m });
            }
        }
    }
    Ok(n)
}
