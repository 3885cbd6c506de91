//! `plan` and `verify`: the image set against the target, read-only. They are one run with two
//! settings: `verify` is a plan that always checks deeply.

use super::{
    AppError, ConfigFile, Ending, PlanRequest, RunOutcome, RunRequest, Started, records, stopped_before_plan,
    unless_stopped, wanted,
};
use crate::config::SignatureMode;
use crate::plan::{self, GateFor, PlanOptions, Status};
use crate::report::Report;

/// What `sync` would do, without writing.
pub async fn plan(file: &ConfigFile, req: &PlanRequest) -> Result<RunOutcome, AppError> {
    check(file, "plan", req.deep, &req.run).await
}

/// Every needed manifest and blob (and referrer, with `referrers`) is in the target.
pub async fn verify(file: &ConfigFile, req: &RunRequest) -> Result<RunOutcome, AppError> {
    check(file, "verify", true, req).await
}

async fn check(file: &ConfigFile, command: &str, deep: bool, req: &RunRequest) -> Result<RunOutcome, AppError> {
    let started = Started::now();
    let result = examine(file, command, deep, req, started).await;
    records::upload(&file.config, req.shard, command, started, result).await
}

async fn examine(
    file: &ConfigFile,
    command: &str,
    deep: bool,
    req: &RunRequest,
    started: Started,
) -> Result<RunOutcome, AppError> {
    let gate = super::gate(file, if command == "verify" { GateFor::Verify } else { GateFor::Plan })?;
    let wanted = wanted(file, req).await?;
    let registries = super::registries(&file.config)?;
    let opts = PlanOptions {
        index_policy: file.config.index_policy.unwrap_or_default(),
        deep,
        referrers: req.referrers,
        skip_bytes: false,
        // `verify` reads every manifest and blob of warm images itself; `plan` asks the ledger
        // whether a listed warm image was completely warmed.
        warm_ledger: (command != "verify").then(|| file.config.warm_ledger.repository.clone()),
        defer_unlisted_warm: false,
        signatures: gate.clone(),
    };
    let Some(p) = unless_stopped(&req.stop, plan::plan(&registries, &wanted, &opts)).await else {
        return Ok(stopped_before_plan(command, started));
    };
    let p = p?;
    let report = super::signed(Report::from_plan(command, started.at, started.elapsed_ms(), &p), &gate);
    // `verify` under `enforce`: a covered image in the target without a valid signature is
    // drift, like a missing blob (`plan` reports the outcomes; `sync` acts on them).
    let unsigned = command == "verify"
        && gate.as_ref().is_some_and(|g| g.mode == SignatureMode::Enforce)
        && p.images.iter().any(|i| i.signature.as_ref().is_some_and(|s| s.rejection().is_some()));
    let ending = if req.stop.is_cancelled() {
        Ending::Stopped
    } else if p.count(Status::Error) > 0 {
        Ending::Unexamined
    } else if p.in_sync() && !unsigned {
        Ending::Complete
    } else {
        Ending::Drift
    };
    Ok(RunOutcome { ending, report, plan: Some(p), records: None })
}
