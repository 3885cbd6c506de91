//! `sync`: under the run lock (taken before planning, released at the end whatever happened),
//! plan, then copy or warm every image that needs it, with the run records uploaded before the
//! lock is given back.

use std::sync::Arc;

use super::{AppError, ConfigFile, Ending, RunOutcome, Started, SyncRequest, records, stopped_before_plan};
use super::{unless_stopped, wanted};
use crate::config::SignatureMode;
use crate::plan::{self, Gate, GateFor, Plan, PlanOptions};
use crate::report::Report;
use crate::transfer::pipeline::{self, Observer, RunOptions};
use crate::transfer::{self, Context};

/// Hooks to follow a sync as it goes (progress bars, a service's status page), on top of the
/// pipeline's per-image ones. Called from many tasks.
pub trait SyncObserver: Observer {
    /// The plan is made and `todo` images need work; `ctx.stats` counts bytes as they move.
    fn planned(&self, _todo: usize, _ctx: &Arc<Context>) {}
    /// The transfer is over (done, failed or stopped).
    fn ended(&self) {}
}

/// Following nothing.
impl Observer for () {}
impl SyncObserver for () {}

/// Copies or warms what the target lacks.
pub async fn sync(file: &ConfigFile, req: &SyncRequest, observer: &dyn SyncObserver) -> Result<RunOutcome, AppError> {
    let started = Started::now();
    let shard = req.run.shard;
    let gate = super::gate(file, GateFor::Sync)?;
    if gate.as_ref().is_some_and(|g| g.mode == SignatureMode::Enforce) && !req.run.referrers {
        // The signatures stay behind, so `verify` under `enforce` will find the images unsigned.
        tracing::warn!("--no-referrers with signatures.mode enforce: signatures are not copied, and verify will fail");
    }
    let wanted = match wanted(file, &req.run).await {
        Ok(w) => w,
        Err(e) => return records::upload(&file.config, shard, "sync", started, Err(e)).await,
    };
    let lock = records::lock(&file.config, shard, "sync").await?;
    let result = transfer_all(file, wanted, req, observer, started, gate).await;
    let result = records::upload(&file.config, shard, "sync", started, result).await;
    records::release(lock).await;
    result
}

async fn transfer_all(
    file: &ConfigFile,
    wanted: Vec<plan::Wanted>,
    req: &SyncRequest,
    observer: &dyn SyncObserver,
    started: Started,
    gate: Option<Arc<Gate>>,
) -> Result<RunOutcome, AppError> {
    let cfg = &file.config;
    let registries = super::registries(cfg)?;
    // One token per target repository, asked once for the plan's listing and the copy's pushes.
    for w in wanted.iter().filter(|w| w.mode == crate::config::MappingMode::Copy) {
        registries.get(&w.target.registry)?.will_push(&w.target.repository);
    }
    let policy = cfg.index_policy.unwrap_or_default();
    let opts = PlanOptions {
        index_policy: policy,
        deep: req.deep,
        referrers: req.run.referrers,
        skip_bytes: true,
        warm_ledger: Some(cfg.warm_ledger.repository.clone()),
        defer_unlisted_warm: true,
        signatures: gate.clone(),
    };
    let Some(p) = unless_stopped(&req.run.stop, plan::plan(&registries, &wanted, &opts)).await else {
        return Ok(stopped_before_plan("sync", started));
    };
    let p = p?;
    log_plan(&p);
    let ctx = transfer::Context::from_config(&cfg.transfer);
    let opts = RunOptions {
        index_policy: policy,
        referrers: req.run.referrers,
        images_in_flight: cfg.transfer.images,
        fail_fast: req.fail_fast,
        stop: req.run.stop.clone(),
        grace: req.run.grace,
    };
    observer.planned(p.images.iter().filter(|i| i.status.needs_work()).count(), &ctx);
    let results = pipeline::run(&registries, &ctx, &p, &opts, observer).await;
    observer.ended();
    for (host, n) in registries.request_counts() {
        tracing::debug!(registry = %host, requests = n, "requests made");
    }
    let report = super::signed(Report::new("sync", started.at, started.elapsed_ms(), results), &gate);
    let ending = if req.run.stop.is_cancelled() {
        Ending::Stopped
    } else if report.summary.outcomes.as_ref().is_some_and(|o| {
        // Images the plan skipped as not needed (planned `skipped`) are no failure; images the
        // provenance gate rejected are.
        o.failed + o.skipped + o.interrupted + o.rejected > report.summary.planned.skipped
    }) {
        Ending::ImagesFailed
    } else {
        Ending::Complete
    };
    Ok(RunOutcome { ending, report, plan: Some(p), records: None })
}

/// What the plan found, before anything is done (the report says what then happened).
fn log_plan(p: &Plan) {
    tracing::info!("plan: {}", p.counts());
}
