//! `mirror plan`, `mirror sync` and `mirror verify`: arguments, signals, printing, report files
//! and exit codes around the application layer's runs ([`crate::app`]).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::app::{self, AppError, Ending, PlanRequest, RunOutcome, RunRequest, SyncRequest};
use crate::exit;
use crate::plan::{Plan, Status};
use crate::report::{self, Report, metrics};
use crate::shard::Shard;
use crate::transfer::pipeline::Outcome;

use super::signals::Stop;
use super::{Cli, Stdout};

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
    pub strict: super::resolve::StrictArg,
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
    /// After SIGTERM or SIGINT, how long images in flight may go on before they are abandoned
    /// (below Kubernetes' default 30 s terminationGracePeriodSeconds, so the reports still get
    /// written before the pod is killed).
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub grace: u64,
    /// Write Prometheus text-format metrics of the run (images by status, bytes, times) to FILE.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub strict: super::resolve::StrictArg,
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

/// What the end of every run needs: which command, since when, and which files to write.
struct Ends<'a> {
    command: &'static str,
    started: (SystemTime, Instant),
    shard: Option<Shard>,
    reports: &'a ReportArgs,
    metrics: Option<&'a Path>,
}

impl Ends<'_> {
    fn new<'a>(
        command: &'static str,
        shard: Option<Shard>,
        reports: &'a ReportArgs,
        metrics: Option<&'a Path>,
    ) -> Ends<'a> {
        Ends { command, started: (SystemTime::now(), Instant::now()), shard, reports, metrics }
    }
}

fn request(shard: Option<Shard>, no_referrers: bool, stop: &Stop, grace: Duration, strict: bool) -> RunRequest {
    RunRequest { shard, referrers: !no_referrers, stop: stop.token.clone(), grace, strict }
}

pub async fn plan(cli: &Cli, args: &PlanArgs) -> anyhow::Result<u8> {
    let ends = Ends::new("plan", args.shard, &args.reports, None);
    let stop = Stop::install()?;
    let result = async {
        let file = super::config_file(cli)?;
        let run = request(args.shard, args.no_referrers, &stop, Duration::ZERO, args.strict.strict);
        Ok(app::plan(&file, &PlanRequest { run, deep: args.deep }).await?)
    }
    .await;
    finish(cli, &ends, &stop, result, |o| show_plan(o, args.output))
}

pub async fn verify(cli: &Cli, args: &VerifyArgs) -> anyhow::Result<u8> {
    let ends = Ends::new("verify", args.shard, &args.reports, args.metrics_file.as_deref());
    let stop = Stop::install()?;
    let result = async {
        let file = super::config_file(cli)?;
        Ok(app::verify(&file, &request(args.shard, args.no_referrers, &stop, Duration::ZERO, false)).await?)
    }
    .await;
    finish(cli, &ends, &stop, result, |o| show_plan(o, args.output))
}

pub async fn sync(cli: &Cli, args: &SyncArgs) -> anyhow::Result<u8> {
    let ends = Ends::new("sync", args.shard, &args.reports, args.metrics_file.as_deref());
    let stop = Stop::install()?;
    let result = async {
        let file = super::config_file(cli)?;
        let run = request(args.shard, args.no_referrers, &stop, Duration::from_secs(args.grace), args.strict.strict);
        let req = SyncRequest { run, deep: args.deep, fail_fast: args.fail_fast };
        let progress = super::progress::Progress::new(std::io::stderr().is_terminal());
        Ok(app::sync(&file, &req, &progress).await?)
    }
    .await;
    finish(cli, &ends, &stop, result, |o| o.report.table(&mut Stdout, false))
}

/// Ends a run: shows it, logs each image that did not end well, writes the report and metrics
/// files (on every exit, a failed run included), and picks the exit code.
fn finish(
    cli: &Cli,
    ends: &Ends,
    stop: &Stop,
    result: anyhow::Result<RunOutcome>,
    show: impl FnOnce(&RunOutcome) -> std::io::Result<()>,
) -> anyhow::Result<u8> {
    let (started, clock) = ends.started;
    let (code, report, failure) = match result {
        Ok(outcome) => {
            show(&outcome)?;
            log_images(&outcome.report);
            (exit_code(&outcome, stop), outcome.report, None)
        }
        Err(e) => {
            let code = match e.downcast_ref::<AppError>() {
                Some(AppError::Locked(_)) => exit::LOCKED,
                _ => exit::ERROR,
            };
            (code, Report::failed_run(ends.command, started, super::output::error_text(&e)), Some(e))
        }
    };
    let mut code = code;
    for (path, bytes) in [
        (ends.reports.report_json.as_deref(), report.to_json()),
        (ends.reports.report_junit.as_deref(), report.to_junit()),
    ] {
        if let Some(path) = path {
            code = written(code, path, report::write_file(path, &bytes));
        }
    }
    if let Some(path) = ends.metrics {
        let m = metrics::RunMetrics {
            command: ends.command,
            shard: ends.shard.unwrap_or(Shard::ALL).to_string(),
            report: failure.is_none().then_some(&report),
            exit_code: code,
            finished: SystemTime::now(),
            duration_seconds: clock.elapsed().as_secs_f64(),
        };
        code = written(code, path, metrics::write_file(path, &m));
    }
    match failure {
        Some(e) if code == exit::LOCKED => {
            super::output::fatal(cli.log_format, &e);
            Ok(code)
        }
        Some(e) => Err(e),
        None => Ok(code),
    }
}

/// A file the user asked for that could not be written fails an otherwise good run; otherwise
/// it is logged and the run's own code, which says more, is kept.
fn written(code: u8, path: &Path, result: std::io::Result<()>) -> u8 {
    let Err(e) = result else { return code };
    tracing::error!("cannot write {}: {e}", path.display());
    if code == exit::OK { exit::ERROR } else { code }
}

/// The exit code of a run that got to its end.
fn exit_code(o: &RunOutcome, stop: &Stop) -> u8 {
    let code = match o.ending {
        Ending::Complete => exit::OK,
        Ending::Drift => exit::DRIFT,
        Ending::Unexamined => exit::ERROR,
        Ending::ImagesFailed => exit::PARTIAL,
        Ending::Stopped => stop.exit_code(),
    };
    // A lost run record turns only an otherwise good run into a failure: drift or failed images
    // say more about the run than a lost record does.
    if code == exit::OK && matches!(o.records, Some(Err(_))) { exit::ERROR } else { code }
}

/// One log event for each image that did not end as it should — the image, its registries, what
/// kind of failure (the run's `outcome` and the plan's `planned` status) and the message — so
/// that a log collector sees every failure without reading the report.
fn log_images(report: &Report) {
    for i in report.images.iter().filter(|i| {
        !matches!(i.outcome, Some(Outcome::Unchanged | Outcome::Copied | Outcome::Warmed)) && i.error.is_some()
    }) {
        let (outcome, planned) = (outcome_name(i), i.planned.to_string());
        let error_kind = i.error_kind.as_deref().unwrap_or("");
        // Registry text ends up in these messages: made safe for a terminal or a log line.
        let message = crate::sanitize::short(i.error.as_deref().unwrap_or(""));
        let (source_registry, target_registry) = (registry_of(&i.source), registry_of(&i.target));
        // An image that failed in a sync, or could not be examined, is an error. Drift found by
        // plan or verify (which their exit code reports), and images skipped or interrupted
        // (because of another failure or a stop, said elsewhere) are warnings.
        let failed = matches!(i.outcome, Some(Outcome::Failed | Outcome::Rejected)) || i.planned == Status::Error;
        if !failed {
            tracing::warn!(image = %i.target, source = %i.source, source_registry, target_registry, outcome, planned, error_kind, "{message}");
        } else {
            tracing::error!(image = %i.target, source = %i.source, source_registry, target_registry, outcome, planned, error_kind, "{message}");
        }
    }
}

fn outcome_name(i: &report::ImageReport) -> String {
    serde_json::to_value(i.outcome).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// The registry host of a reference as written in a report (`host/repo:tag`).
fn registry_of(reference: &str) -> &str {
    reference.split_once('/').map_or("", |(host, _)| host)
}

/// Prints a plan (as found, also when the run was stopped before it was complete).
fn show_plan(o: &RunOutcome, output: Output) -> std::io::Result<()> {
    let Some(p) = &o.plan else {
        return writeln!(Stdout, "{}: {}", o.report.command, o.report.error.as_deref().unwrap_or("no plan"));
    };
    match output {
        // The same document as --report-json (schema/report.v1.json).
        Output::Json => Stdout.write_all(&o.report.to_json()),
        Output::Table => print_plan(p, &o.report),
    }
}

/// The plan as a table; with the provenance gate on (`report` has its summary), a SIGNATURE
/// column says what each image's signatures proved, and the detail who signed or why not.
fn print_plan(p: &Plan, report: &Report) -> std::io::Result<()> {
    let mut out = Stdout;
    let width = p.images.iter().map(|i| i.target.len()).max().unwrap_or(6).clamp(6, 90);
    let gate = report.summary.signatures.as_ref();
    let signature_header = if gate.is_some() { format!("{:<12}", "SIGNATURE") } else { String::new() };
    writeln!(out, "{:<8} {:<5} {signature_header}{:<width$} {:>10}  DETAIL", "STATUS", "MODE", "TARGET", "TO MOVE")?;
    for i in &p.images {
        let (signature, signed) = match (&i.signature, gate) {
            (_, None) => (String::new(), String::new()),
            (None, Some(_)) => (format!("{:<12}", "-"), String::new()),
            (Some(c), Some(_)) => (
                format!("{:<12}", c.outcome.as_str()),
                match &c.outcome {
                    crate::provenance::Outcome::Verified { signer } => format!("; signed by {signer}"),
                    crate::provenance::Outcome::Invalid { reason } => format!("; signature invalid: {reason}"),
                    _ => String::new(),
                },
            ),
        };
        let detail = match i.status {
            Status::Outdated => format!(
                "target {} → source {}",
                i.target_digest.as_ref().map(short).unwrap_or_default(),
                i.expected_digest.as_ref().map(short).unwrap_or_default()
            ),
            Status::Partial => format!("missing {}", i.missing.join(", ")),
            Status::Error | Status::Skipped => i.error.clone().unwrap_or_default(),
            _ => i.source.clone(),
        };
        writeln!(
            out,
            "{:<8} {:<5} {signature}{:<width$} {:>10}  {detail}{signed}",
            i.status.to_string(),
            format!("{:?}", i.mode).to_lowercase(),
            i.target,
            indicatif::HumanBytes(i.bytes_to_move).to_string(),
        )?;
    }
    writeln!(out, "{}; {} to move", p.counts(), indicatif::HumanBytes(p.bytes_to_move))?;
    if let Some(g) = gate {
        writeln!(
            out,
            "signatures ({}): {} verified, {} unsigned, {} invalid, {} not covered",
            g.mode, g.verified, g.unsigned, g.invalid, g.not_covered
        )?;
        for note in &g.notes {
            writeln!(out, "note: {note}")?;
        }
    }
    Ok(())
}

fn short(d: &crate::digest::Digest) -> String {
    format!("{}:{}", d.algorithm(), &d.hex()[..12.min(d.hex().len())])
}
