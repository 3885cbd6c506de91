//! Running a plan: every image that needs work, overlapped under one global bound on blob
//! transfers (the [`Context`]), with in-flight de-duplication and mounts across images.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Context, Options, TargetState, TransferError, copy, warm};
use crate::ledger::{Entry, Ledgers};
use crate::config::MappingMode;
use crate::digest::Digest;
use crate::manifest::IndexPolicy;
use crate::plan::{ImagePlan, Plan, SignatureCheck, Status};
use crate::registry::Registries;

/// What happened to one image in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Already in the target; nothing was done.
    Unchanged,
    /// Copied into the target.
    Copied,
    /// Read through the target's cache.
    Warmed,
    /// Failed; see the error.
    Failed,
    /// Not attempted: an earlier image failed and `--fail-fast` was given, or the plan found it
    /// not needed (planned `skipped`); `error` says which.
    Skipped,
    /// Neither copied nor warmed: the provenance gate (`signatures.mode: enforce`) found no
    /// valid signature; the error says why.
    Rejected,
    /// Not reached, or abandoned after the grace period, because the run was asked to stop
    /// (SIGTERM/SIGINT). Its tag was not written, so the target holds no partial image under it.
    Interrupted,
}

/// One image's record in a run report.
#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    pub source: String,
    pub target: String,
    pub mode: MappingMode,
    /// Status found by the plan.
    pub planned: Status,
    pub outcome: Outcome,
    pub source_digest: Option<Digest>,
    pub target_digest: Option<Digest>,
    /// Bytes of this image's blobs this run put into the target or read through the cache (see
    /// `Options::bytes`: a blob shared by several images counts for each).
    pub bytes: u64,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What kind of error `error` is ([`TransferError::kind`]); `None` for images skipped or
    /// interrupted, whose outcome says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    /// What the provenance gate found, as the plan checked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureCheck>,
}

/// Options for a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub index_policy: IndexPolicy,
    pub referrers: bool,
    /// Images in flight at once (their blobs share the context's bound).
    pub images_in_flight: usize,
    pub fail_fast: bool,
    /// Cancelled when the run must stop (a signal): no image and no blob transfer is started
    /// after it, and transfers in flight get `grace` to finish before they are abandoned and
    /// their upload sessions cancelled. A tag is never written half-way: it is the last thing an
    /// image writes, after everything under it is in.
    pub stop: CancellationToken,
    /// How long in-flight images may go on after `stop` before they are abandoned.
    pub grace: Duration,
}

/// Hooks for progress display; called from many tasks.
pub trait Observer: Send + Sync {
    fn started(&self, _image: &ImagePlan) {}
    fn finished(&self, _result: &ImageResult) {}
}

/// Executes `plan`: images needing work are copied or warmed; the others are reported as they are.
pub async fn run(
    registries: &Registries,
    ctx: &Arc<Context>,
    plan: &Plan,
    opts: &RunOptions,
    observer: &dyn Observer,
) -> Vec<ImageResult> {
    let stopped_at = std::sync::OnceLock::new();
    let stop = async {
        opts.stop.cancelled().await;
        let _ = stopped_at.set(tokio::time::Instant::now());
        ctx.stop();
        tokio::time::sleep(opts.grace).await;
        ctx.abort();
        std::future::pending::<()>().await
    };
    let results = tokio::select! {
        results = run_images(registries, ctx, plan, opts, observer) => results,
        _ = stop => unreachable!("the stop watch never ends"),
    };
    // After a stop, images can end (interrupted) while blob transfers they started still run
    // as tasks of their own: those get what is left of the grace period, then are abandoned,
    // and the run returns once they have cancelled their upload sessions (or that took too long).
    if let Some(at) = stopped_at.get() {
        ctx.settle_until(*at + opts.grace).await;
        ctx.abort();
        ctx.settle_until(tokio::time::Instant::now() + ctx.cancel_within * 2).await;
    }
    results
}

async fn run_images(
    registries: &Registries,
    ctx: &Arc<Context>,
    plan: &Plan,
    opts: &RunOptions,
    observer: &dyn Observer,
) -> Vec<ImageResult> {
    let cancel = CancellationToken::new();
    // How long an image may go on after a stop: the grace period, then the time its abandoned
    // transfers take to cancel their upload sessions.
    let wind_down = opts.grace + ctx.cancel_within * 2;
    // Unordered, then sorted back: in order, an image that finished behind a slow one would keep
    // its place among the images in flight, and the next image would wait for the slow one.
    let mut results: Vec<(usize, ImageResult)> = futures::stream::iter(plan.images.iter().enumerate())
        .map(|(n, img)| {
            let cancel = cancel.clone();
            async move {
                // The provenance gate: an image it rejects is neither copied nor warmed, and does
                // not stop the others (`--fail-fast` is about failures, not about policy).
                if let Some(reason) = img.signature.as_ref().and_then(SignatureCheck::rejection)
                    && img.status.needs_work()
                {
                    let r = ImageResult { error_kind: Some("signature"), ..ImageResult::from_plan(img, Outcome::Rejected, Some(reason)) };
                    observer.finished(&r);
                    return r;
                }
                if !img.status.needs_work() {
                    if img.status == Status::Skipped {
                        return ImageResult::from_plan(img, Outcome::Skipped, img.error.clone());
                    }
                    if img.status == Status::Error {
                        if opts.fail_fast {
                            cancel.cancel();
                        }
                        return failed(img, img.error.clone(), img.error_kind);
                    }
                    return ImageResult::from_plan(img, Outcome::Unchanged, None);
                }
                if opts.stop.is_cancelled() {
                    return interrupted(img);
                }
                if cancel.is_cancelled() {
                    return skipped(img);
                }
                observer.started(img);
                let started = Instant::now();
                let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let work = one(registries, ctx, img, opts, counter.clone(), &plan.ledgers);
                tokio::pin!(work);
                let result = tokio::select! {
                    r = &mut work => r,
                    _ = cancel.cancelled() => return skipped(img),
                    _ = opts.stop.cancelled() => {
                        // A stop: let the image finish within the grace period, else abandon it.
                        match tokio::time::timeout(wind_down, &mut work).await {
                            Ok(r) => r,
                            Err(_) => return interrupted(img),
                        }
                    }
                };
                let mut r = match result {
                    Ok((outcome, target_digest)) => {
                        let mut r = ImageResult::from_plan(img, outcome, None);
                        // A warm the plan left the source to (PlanOptions::defer_unlisted_warm)
                        // checked that the cache serves the source's digest: that is the one.
                        if r.source_digest.is_none() && img.mode == MappingMode::Warm {
                            r.source_digest = Some(target_digest.clone());
                        }
                        r.target_digest = Some(target_digest);
                        r
                    }
                    Err(TransferError::Interrupted) => return interrupted(img),
                    Err(e) => {
                        if opts.fail_fast {
                            cancel.cancel();
                        }
                        failed(img, Some(describe(&e)), Some(e.kind()))
                    }
                };
                r.bytes = counter.load(std::sync::atomic::Ordering::Relaxed);
                r.duration_ms = duration_ms(started.elapsed());
                observer.finished(&r);
                r
            }
            .map(move |r| (n, r))
        })
        .buffer_unordered(opts.images_in_flight.max(1))
        .collect()
        .await;
    results.sort_by_key(|(n, _)| *n);
    results.into_iter().map(|(_, r)| r).collect()
}

impl ImageResult {
    /// The record of an image as the plan left it: no bytes moved, no time spent yet.
    pub fn from_plan(img: &ImagePlan, outcome: Outcome, error: Option<String>) -> Self {
        ImageResult {
            source: img.source.clone(),
            target: img.target.clone(),
            mode: img.mode,
            planned: img.status,
            outcome,
            source_digest: img.source_digest.clone(),
            target_digest: img.target_digest.clone(),
            bytes: 0,
            duration_ms: 0,
            error,
            error_kind: None,
            signature: img.signature.clone(),
        }
    }
}

fn skipped(img: &ImagePlan) -> ImageResult {
    ImageResult::from_plan(
        img,
        Outcome::Skipped,
        Some("not attempted: --fail-fast stopped the run after a failure".into()),
    )
}

/// A failed image: its error and the error's kind ([`TransferError::kind`]).
fn failed(img: &ImagePlan, error: Option<String>, kind: Option<&'static str>) -> ImageResult {
    ImageResult { error_kind: kind, ..ImageResult::from_plan(img, Outcome::Failed, error) }
}

fn interrupted(img: &ImagePlan) -> ImageResult {
    ImageResult::from_plan(
        img,
        Outcome::Interrupted,
        Some("not completed: the run was stopped by a signal before this image was done".into()),
    )
}

/// An image's error as `sync` reports it: a remedy names the config key, which is where `sync`
/// takes its index policy from.
fn describe(e: &TransferError) -> String {
    match e.remedy("the config key `indexPolicy`") {
        Some(fix) => format!("{e}; {fix}"),
        None => e.to_string(),
    }
}

fn duration_ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

async fn one(
    registries: &Registries,
    ctx: &Arc<Context>,
    img: &ImagePlan,
    opts: &RunOptions,
    bytes: Arc<std::sync::atomic::AtomicU64>,
    ledgers: &Ledgers,
) -> Result<(Outcome, Digest), TransferError> {
    let w = &img.wanted;
    let src = registries.get(&w.source.registry)?;
    let dst = registries.get(&w.target.registry)?;
    // Pin the source to the digest the plan saw, so a tag moving mid-run cannot mix two versions.
    let source = match &img.source_digest {
        Some(d) => w.source.with_digest(d.clone()),
        None => w.source.clone(),
    };
    let options = Options {
        platforms: w.platforms.clone(),
        index_policy: opts.index_policy,
        referrers: opts.referrers,
        target_state: match img.status {
            Status::Partial => TargetState::Partial,
            _ if img.target_repo_empty => TargetState::Empty,
            _ => TargetState::Stale,
        },
        bytes,
    };
    match w.mode {
        MappingMode::Copy => {
            let c = copy::copy_image(ctx, src, &source, dst, &w.target, &options).await?;
            Ok((if c.unchanged { Outcome::Unchanged } else { Outcome::Copied }, c.target_digest))
        }
        MappingMode::Warm => {
            let r = warm::warm_image(ctx, Some((src, &source)), dst, &w.target, &options).await?;
            // Warm ledger: every manifest and blob was read and verified; record it.
            let entry = Entry { repository: &w.target.repository, digest: &r.digest, platforms: &w.platforms };
            ledgers.record(&w.target.registry, &entry).await;
            Ok((Outcome::Warmed, r.digest))
        }
    }
}
