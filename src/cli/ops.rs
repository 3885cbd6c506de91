//! What `--shard` and `--metrics-file` add around `plan`, `sync` and `verify` (run.rs), kept here
//! so that run.rs stays about the runs themselves.

use std::path::Path;
use std::time::{Instant, SystemTime};

use crate::exit;
use crate::plan;
use crate::report::{Report, metrics};
use crate::shard::Shard;

/// The image set, narrowed to one shard when `--shard` is given; `strict` makes a tag rule
/// that chooses nothing an error.
pub(crate) async fn image_set(
    cli: &super::Cli,
    shard: Option<Shard>,
    strict: bool,
) -> anyhow::Result<(crate::config::Config, Vec<plan::Wanted>)> {
    let (cfg, wanted) = super::image_set(cli, strict).await?;
    let Some(shard) = shard else { return Ok((cfg, wanted)) };
    let total = wanted.len();
    let wanted = shard.select(wanted, |w| &w.target);
    tracing::info!("shard {shard}: {} of {total} images", wanted.len());
    Ok((cfg, wanted))
}

/// Writes `--metrics-file` for a run that ended with `result` (also when it failed early), and
/// passes the result on. A metrics file that cannot be written fails an otherwise good run.
pub(crate) fn write_metrics(
    path: Option<&Path>,
    command: &str,
    shard: Option<Shard>,
    started: Instant,
    report: Option<&Report>,
    result: anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    let Some(path) = path else { return result };
    let m = metrics::RunMetrics {
        command,
        shard: shard.unwrap_or(Shard::ALL).to_string(),
        report,
        exit_code: *result.as_ref().unwrap_or(&exit::ERROR),
        finished: SystemTime::now(),
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    match (metrics::write_file(path, &m), result) {
        (Ok(()), result) => result,
        (Err(e), Ok(exit::OK)) => Err(anyhow::anyhow!("cannot write metrics file {}: {e}", path.display())),
        (Err(e), result) => {
            tracing::error!("cannot write metrics file {}: {e}", path.display());
            result
        }
    }
}
