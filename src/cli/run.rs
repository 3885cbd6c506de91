//! `mirror plan`, `mirror sync` and `mirror verify`: the image set against the target.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::azure::{BlobLocation, RunLock, StorageError, upload_run_records};
use crate::exit;
use crate::plan::{self, Plan, PlanOptions, Status};
use crate::registry::Registries;
use crate::report::{self, Report};
use crate::shard::Shard;

use super::ops::{image_set, write_metrics};
use crate::transfer::pipeline::{self, ImageResult, Outcome, RunOptions};
use crate::transfer::{self, IndexPolicy};

#[derive(Debug, Clone, Copy, clap::ValueEnum, Default)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Write a JSON report of every image (digests, status, bytes, duration, error).
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Write a JUnit XML report, one test case per image, for CI systems.
    #[arg(long, value_name = "FILE")]
    pub report_junit: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Also check every selected child manifest and blob behind tags that look present, and the
    /// source's referrers (signatures, SBOMs) of copied images.
    #[arg(long)]
    pub deep: bool,
    /// With --deep, do not check referrers (for targets synced with --no-referrers).
    #[arg(long)]
    pub no_referrers: bool,
    /// Only the images of shard I of N (by a stable hash of the target repository), e.g. 0/4.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    #[command(flatten)]
    pub reports: ReportArgs,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Check every child manifest and blob behind present tags, and the source's referrers of
    /// copied images, and repair partial images.
    #[arg(long)]
    pub deep: bool,
    /// Stop at the first image that fails (the others are reported as skipped).
    #[arg(long)]
    pub fail_fast: bool,
    /// Do not copy referrers (signatures, SBOMs).
    #[arg(long)]
    pub no_referrers: bool,
    /// Only the images of shard I of N (by a stable hash of the target repository), e.g. 0/4.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Write Prometheus text-format metrics of the run (images by status, bytes, times) to FILE.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub reports: ReportArgs,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Do not check that the source's referrers (signatures, SBOMs) of copied images are in the
    /// target (for targets synced with --no-referrers).
    #[arg(long)]
    pub no_referrers: bool,
    /// Only the images of shard I of N (by a stable hash of the target repository), e.g. 0/4.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Write Prometheus text-format metrics of the run (images by status, times) to FILE.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub reports: ReportArgs,
}

fn index_policy(cfg: &crate::config::Config) -> IndexPolicy {
    cfg.index_policy.unwrap_or_default()
}

pub async fn plan(cli: &super::Cli, args: &PlanArgs) -> anyhow::Result<u8> {
    let (cfg, wanted) = image_set(cli, args.shard)?;
    let started = (SystemTime::now(), Instant::now());
    let registries = Registries::from_config(&cfg)?;
    let p = plan::plan(
        &registries,
        &wanted,
        &PlanOptions {
            index_policy: index_policy(&cfg),
            deep: args.deep,
            referrers: !args.no_referrers,
            skip_bytes: false,
            warm_ledger: Some(cfg.warm_ledger.repository.clone()),
        },
    )
    .await?;
    let (code, report) = finish_plan("plan", &p, started, args.output, &args.reports)?;
    Ok(upload_records(&cfg, args.shard, started.0, &report, code).await)
}

pub async fn verify(cli: &super::Cli, args: &VerifyArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let mut report = None;
    let result = verify_run(cli, args, &mut report).await;
    write_metrics(args.metrics_file.as_deref(), "verify", args.shard, started, report.as_ref(), result)
}

async fn verify_run(cli: &super::Cli, args: &VerifyArgs, out: &mut Option<Report>) -> anyhow::Result<u8> {
    let (cfg, wanted) = image_set(cli, args.shard)?;
    let started = (SystemTime::now(), Instant::now());
    let registries = Registries::from_config(&cfg)?;
    let p = plan::plan(
        &registries,
        &wanted,
        // No warm ledger: verify checks every manifest and blob of warm images itself.
        &PlanOptions {
            index_policy: index_policy(&cfg),
            deep: true,
            referrers: !args.no_referrers,
            skip_bytes: false,
            warm_ledger: None,
        },
    )
    .await?;
    let (code, report) = finish_plan("verify", &p, started, args.output, &args.reports)?;
    let code = upload_records(&cfg, args.shard, started.0, &report, code).await;
    *out = Some(report);
    Ok(code)
}

/// Uploads the run's JSON and JUnit reports when the config has `report: {azureBlob: …}`.
/// A failed upload is logged, and turns the exit code into 1 only when the run otherwise
/// succeeded: drift (2) or failed images (3) say more about the run than a lost record does.
async fn upload_records(
    cfg: &crate::config::Config,
    shard: Option<Shard>,
    started: SystemTime,
    report: &Report,
    code: u8,
) -> u8 {
    let Some(section) = &cfg.report else { return code };
    let result = async {
        let location = BlobLocation::from_config(&per_shard(section, shard, "/"))?;
        upload_run_records(&location, started, report.to_json().into(), report.to_junit().into()).await
    }
    .await;
    match result {
        Ok(r) => {
            tracing::info!("run records uploaded: {} and {}", r.json, r.junit);
            code
        }
        Err(e) => {
            tracing::error!("cannot upload the run records: {e}");
            if code == exit::OK { exit::ERROR } else { code }
        }
    }
}

/// The blob location of one shard: shards of one run go in parallel, so each has its own lock
/// (`mirror.lock.shard-0-of-4`) and its own report folder (`PREFIX/shard-0-of-4/<start>/…`).
/// Without `--shard` (or with `0/1`) the location is the configured one.
fn per_shard(section: &crate::config::BlobConfig, shard: Option<Shard>, sep: &str) -> crate::config::BlobConfig {
    let mut s = section.clone();
    if let Some(sh) = shard.filter(|sh| sh.count > 1) {
        s.azure_blob = format!("{}{sep}shard-{}-of-{}", s.azure_blob.trim_end_matches('/'), sh.index, sh.count);
    }
    s
}

/// Who holds the lock, as another run will report it: host, process id and command.
fn lock_holder(command: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host} pid {} (mirror {command})", std::process::id())
}

/// Takes the run lock when the config has `lock: {azureBlob: …}`. `Err(code)` when another run
/// holds it: the message naming the holder is printed, and the caller exits with that code.
async fn take_lock(
    cfg: &crate::config::Config,
    shard: Option<Shard>,
    command: &str,
) -> anyhow::Result<Result<Option<RunLock>, u8>> {
    let Some(section) = &cfg.lock else { return Ok(Ok(None)) };
    let location = BlobLocation::from_config(&per_shard(section, shard, "."))?;
    match RunLock::acquire(&location, &lock_holder(command)).await {
        Ok(lock) => {
            tracing::info!(blob = %lock.blob(), "run lock taken");
            Ok(Ok(Some(lock)))
        }
        Err(StorageError::LockHeld(held)) => {
            eprintln!("{held}");
            Ok(Err(exit::LOCKED))
        }
        Err(e) => Err(anyhow::anyhow!("cannot take the run lock: {e}")),
    }
}

/// Prints a plan, writes its reports, and maps it to an exit code: 0 in sync, 2 drift, 1 when an
/// image could not be examined at all.
fn finish_plan(
    command: &str,
    p: &Plan,
    started: (SystemTime, Instant),
    output: Output,
    reports: &ReportArgs,
) -> anyhow::Result<(u8, Report)> {
    let results: Vec<ImageResult> = p
        .images
        .iter()
        .map(|i| {
            let error = match i.status {
                Status::Present => None,
                Status::Missing => Some("missing in the target".into()),
                Status::Outdated => Some(format!(
                    "outdated: target has {}, source now {}",
                    i.target_digest.as_ref().map(|d| d.to_string()).unwrap_or_default(),
                    i.expected_digest.as_ref().map(|d| d.to_string()).unwrap_or_default()
                )),
                Status::Partial => Some(format!("partial: missing {}", i.missing.join(", "))),
                Status::Error => i.error.clone(),
            };
            let outcome = if i.status == Status::Present { Outcome::Unchanged } else { Outcome::Failed };
            let mut r = ImageResult::from_plan(i, outcome, error);
            r.bytes = i.bytes_to_move;
            r
        })
        .collect();
    let report = Report::new(command, started.0, started.1.elapsed().as_millis() as u64, results);
    write_reports(&report, reports)?;
    match output {
        Output::Json => {
            let mut out = std::io::stdout().lock();
            std::io::Write::write_all(&mut out, &serde_json::to_vec_pretty(p)?)?;
            println!();
        }
        Output::Table => print_plan(p),
    }
    let code = if p.count(Status::Error) > 0 {
        exit::ERROR
    } else if p.in_sync() {
        exit::OK
    } else {
        exit::DRIFT
    };
    Ok((code, report))
}

fn print_plan(p: &Plan) {
    let width = p.images.iter().map(|i| i.target.len()).max().unwrap_or(6).clamp(6, 90);
    println!("{:<8} {:<5} {:<width$} {:>10}  DETAIL", "STATUS", "MODE", "TARGET", "TO MOVE");
    for i in &p.images {
        let detail = match i.status {
            Status::Outdated => format!(
                "target {} → source {}",
                i.target_digest.as_ref().map(short).unwrap_or_default(),
                i.expected_digest.as_ref().map(short).unwrap_or_default()
            ),
            Status::Partial => format!("missing {}", i.missing.join(", ")),
            Status::Error => i.error.clone().unwrap_or_default(),
            _ => i.source.clone(),
        };
        println!(
            "{:<8} {:<5} {:<width$} {:>10}  {}",
            i.status.to_string(),
            format!("{:?}", i.mode).to_lowercase(),
            i.target,
            report::human_bytes(i.bytes_to_move),
            detail
        );
    }
    println!(
        "{} images: {} present, {} missing, {} outdated, {} partial, {} errors; {} to move",
        p.images.len(),
        p.count(Status::Present),
        p.count(Status::Missing),
        p.count(Status::Outdated),
        p.count(Status::Partial),
        p.count(Status::Error),
        report::human_bytes(p.bytes_to_move)
    );
}

fn short(d: &crate::digest::Digest) -> String {
    format!("{}:{}", d.algorithm(), &d.hex()[..12.min(d.hex().len())])
}

fn write_reports(report: &Report, args: &ReportArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.report_json {
        report::write_file(path, &report.to_json())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.report_junit {
        report::write_file(path, &report.to_junit())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// `mirror sync`: under the run lock when the config has one (taken before planning, released
/// at the end, also after an error), with the run records uploaded when the config asks.
pub async fn sync(cli: &super::Cli, args: &SyncArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let mut report = None;
    let result = sync_run(cli, args, &mut report).await;
    write_metrics(args.metrics_file.as_deref(), "sync", args.shard, started, report.as_ref(), result)
}

async fn sync_run(cli: &super::Cli, args: &SyncArgs, out: &mut Option<Report>) -> anyhow::Result<u8> {
    let (cfg, wanted) = image_set(cli, args.shard)?;
    let started = (SystemTime::now(), Instant::now());
    let lock = match take_lock(&cfg, args.shard, "sync").await? {
        Ok(lock) => lock,
        Err(code) => return Ok(code),
    };
    let result = sync_locked(cfg, wanted, started, args, out).await;
    if let Some(lock) = lock {
        if lock.is_lost() {
            tracing::warn!(blob = %lock.blob(), "the run lock's lease could not be renewed; another run may have overlapped this one");
        }
        if let Err(e) = lock.release().await {
            tracing::warn!("releasing the run lock failed (its lease lapses within 60 s): {e}");
        }
    }
    result
}

async fn sync_locked(
    cfg: crate::config::Config,
    wanted: Vec<plan::Wanted>,
    started: (SystemTime, Instant),
    args: &SyncArgs,
    out: &mut Option<Report>,
) -> anyhow::Result<u8> {
    let registries = Registries::from_config(&cfg)?;
    let policy = index_policy(&cfg);
    let p = plan::plan(
        &registries,
        &wanted,
        &PlanOptions {
            index_policy: policy,
            deep: args.deep,
            referrers: !args.no_referrers,
            skip_bytes: true,
            warm_ledger: Some(cfg.warm_ledger.repository.clone()),
        },
    )
    .await?;
    let ctx = transfer::Context::from_config(&cfg.transfer);
    let opts = RunOptions {
        index_policy: policy,
        referrers: !args.no_referrers,
        images_in_flight: cfg.transfer.images,
        fail_fast: args.fail_fast,
        // Signals are wired in by the application layer (issue #10); until then nothing cancels.
        stop: tokio_util::sync::CancellationToken::new(),
        grace: std::time::Duration::from_secs(20),
    };
    let todo = p.images.iter().filter(|i| i.status.needs_work()).count();
    tracing::info!("{} images: {} need work", p.images.len(), todo);
    let progress = super::progress::Progress::start(ctx.clone(), todo as u64, std::io::stderr().is_terminal());
    let results = pipeline::run(&registries, &ctx, &p, &opts, &progress).await;
    progress.finish();
    let report = Report::new("sync", started.0, started.1.elapsed().as_millis() as u64, results);
    write_reports(&report, &args.reports)?;
    report.table(&mut std::io::stdout().lock(), false)?;
    for (host, n) in registries.request_counts() {
        tracing::debug!(registry = %host, requests = n, "requests made");
    }
    let code = if report.summary.failed > 0 || report.summary.skipped > 0 { exit::PARTIAL } else { exit::OK };
    let code = upload_records(&cfg, args.shard, started.0, &report, code).await;
    *out = Some(report);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_get_their_own_lock_and_report_folder() {
        // Checks that parallel shards of one run do not lock each other out or overwrite each
        // other's records, and that an unsharded run uses the configured blob as it is.
        let section = crate::config::BlobConfig {
            azure_blob: "https://a.blob.core.windows.net/runs/mirror.lock".into(),
            sas_token_env: Some("SAS".into()),
            credential: None,
            tenant_id: None,
            client_id: None,
            client_secret_env: None,
        };
        let shard = Some(Shard { index: 1, count: 4 });
        assert_eq!(
            per_shard(&section, shard, ".").azure_blob,
            "https://a.blob.core.windows.net/runs/mirror.lock.shard-1-of-4"
        );
        assert_eq!(per_shard(&section, None, ".").azure_blob, section.azure_blob);
        assert_eq!(per_shard(&section, Some(Shard::ALL), ".").azure_blob, section.azure_blob);
        let mut prefix = section.clone();
        prefix.azure_blob = "https://a.blob.core.windows.net/runs/nightly/".into();
        assert_eq!(
            per_shard(&prefix, shard, "/").azure_blob,
            "https://a.blob.core.windows.net/runs/nightly/shard-1-of-4"
        );
    }
}
