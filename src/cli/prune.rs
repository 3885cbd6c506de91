//! `mirror prune`: arguments, signals, printing, the report and metrics files and the exit code
//! around [`crate::app::prune`].

use std::io::Write;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::app::{self, AppError, PruneEnding, PruneRequest};
use crate::exit;
use crate::report::prune::{PruneReport, write_metrics};
use crate::report::{self, metrics};

use super::run::Output;
use super::signals::Stop;
use super::{Cli, Stdout};

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Output format: the table, or the same JSON document as --report-json.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Delete what the dry run lists (under the run lock; a tag that moved since the listing is left alone).
    #[arg(long)]
    pub apply: bool,
    /// Write the JSON report: every tag of every repository in scope, kept or deleted, and why.
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Write Prometheus text-format metrics of the run (tags kept, deleted, failed; bytes to free) to FILE.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

pub async fn run(cli: &Cli, args: &PruneArgs) -> anyhow::Result<u8> {
    let (started, clock) = (SystemTime::now(), Instant::now());
    let stop = Stop::install()?;
    let result: anyhow::Result<app::PruneOutcome> = async {
        let file = super::config_file(cli)?;
        Ok(app::prune(&file, &PruneRequest { apply: args.apply, stop: stop.token.clone() }).await?)
    }
    .await;
    let (mut code, report, failure) = match result {
        Ok(outcome) => {
            match args.output {
                Output::Json => Stdout.write_all(&outcome.report.to_json())?,
                Output::Table => outcome.report.table(&mut Stdout)?,
            }
            let code = match outcome.ending {
                PruneEnding::Complete => exit::OK,
                PruneEnding::WouldPrune => exit::DRIFT,
                PruneEnding::SomeFailed => exit::PARTIAL,
                PruneEnding::Refused => exit::ERROR,
                PruneEnding::Stopped => stop.exit_code(),
            };
            // A lost run record turns only an otherwise good run into a failure.
            let code = if code == exit::OK && matches!(outcome.records, Some(Err(_))) { exit::ERROR } else { code };
            let failure = outcome.report.error.clone().map(|e| anyhow::anyhow!(e));
            (code, outcome.report, failure)
        }
        Err(e) => {
            let code = match e.downcast_ref::<AppError>() {
                Some(AppError::Locked(_)) => exit::LOCKED,
                _ => exit::ERROR,
            };
            (code, PruneReport::failed_run(args.apply, started, None, super::output::error_text(&e)), Some(e))
        }
    };
    if let Some(path) = &args.report_json
        && let Err(e) = report::write_file(path, &report.to_json())
    {
        tracing::error!("cannot write {}: {e}", path.display());
        if code == exit::OK {
            code = exit::ERROR;
        }
    }
    if let Some(path) = &args.metrics_file {
        let m = metrics::RunMetrics {
            command: "prune",
            shard: "0/1".into(),
            report: None,
            exit_code: code,
            finished: SystemTime::now(),
            duration_seconds: clock.elapsed().as_secs_f64(),
        };
        let written = write_metrics(path, &m, report.error.is_none().then_some(&report));
        if let Err(e) = written {
            tracing::error!("cannot write {}: {e}", path.display());
            if code == exit::OK {
                code = exit::ERROR;
            }
        }
    }
    if let Some(e) = failure {
        super::output::fatal(cli.log_format, &e);
    }
    Ok(code)
}
