//! What a scheduled run leaves in Azure Blob Storage: its records (`report: {azureBlob: …}`) and,
//! while it runs, the lock that keeps the next one out (`lock: {azureBlob: …}`). Shards of one
//! run go in parallel, so each has its own lock and its own record folder.

use super::{AppError, RunOutcome, Started};
use crate::azure::storage::UploadedRecords;
use crate::azure::{BlobLocation, RunLock, StorageError, upload_run_records};
use crate::config::{BlobConfig, Config};
use crate::report::Report;
use crate::report::prune::PruneReport;
use crate::shard::Shard;

/// Uploads the records of a run that ended with `result` when the config asks for them: the
/// run's report, or for a run that failed, a report naming the error. A run refused by the lock
/// uploads nothing (it did nothing, and its folder would sit among the holder's).
pub(super) async fn upload(
    cfg: &Config,
    shard: Option<Shard>,
    command: &str,
    started: Started,
    result: Result<RunOutcome, AppError>,
) -> Result<RunOutcome, AppError> {
    let Some(section) = &cfg.report else { return result };
    match result {
        Ok(mut outcome) => {
            let report = &outcome.report;
            outcome.records = Some(put(section, shard, started, report.to_json(), report.to_junit()).await);
            Ok(outcome)
        }
        Err(AppError::Locked(held)) => Err(AppError::Locked(held)),
        Err(e) => {
            let report = Report::failed_run(command, started.at, e.to_string());
            let _ = put(section, shard, started, report.to_json(), report.to_junit()).await;
            Err(e)
        }
    }
}

/// Uploads the records of a `prune` run (its own report document) when the config asks for them.
pub(super) async fn upload_prune(
    cfg: &Config,
    started: Started,
    report: &PruneReport,
) -> Option<Result<UploadedRecords, StorageError>> {
    let section = cfg.report.as_ref()?;
    Some(put(section, None, started, report.to_json(), report.to_junit()).await)
}

/// Uploads one report; the result is logged either way.
async fn put(
    section: &BlobConfig,
    shard: Option<Shard>,
    started: Started,
    json: Vec<u8>,
    junit: Vec<u8>,
) -> Result<UploadedRecords, StorageError> {
    let result = async {
        let location = BlobLocation::from_config(&per_shard(section, shard, "/"))?;
        upload_run_records(&location, started.at, json.into(), junit.into()).await
    }
    .await;
    match &result {
        Ok(r) => tracing::info!("run records uploaded: {} and {}", r.json, r.junit),
        Err(e) => tracing::error!("cannot upload the run records: {e}"),
    }
    result
}

/// Takes the run lock when the config has `lock: {azureBlob: …}`.
pub(super) async fn lock(cfg: &Config, shard: Option<Shard>, command: &str) -> Result<Option<RunLock>, AppError> {
    let Some(section) = &cfg.lock else { return Ok(None) };
    let location = BlobLocation::from_config(&per_shard(section, shard, ".")).map_err(AppError::Lock)?;
    match RunLock::acquire(&location, &lock_holder(command)).await {
        Ok(lock) => {
            tracing::info!(blob = %lock.blob(), "run lock taken");
            Ok(Some(lock))
        }
        Err(StorageError::LockHeld(held)) => Err(AppError::Locked(held)),
        Err(e) => Err(AppError::Lock(e)),
    }
}

/// Releases the run lock, saying so when its lease could not be kept or given back.
pub(super) async fn release(lock: Option<RunLock>) {
    let Some(lock) = lock else { return };
    if lock.is_lost() {
        tracing::warn!(blob = %lock.blob(), "the run lock's lease could not be renewed; another run may have overlapped this one");
    }
    if let Err(e) = lock.release().await {
        tracing::warn!("releasing the run lock failed (its lease lapses within 60 s): {e}");
    }
}

/// The blob location of one shard: `mirror.lock.shard-0-of-4` for the lock (`sep` `.`),
/// `PREFIX/shard-0-of-4/<start>/…` for the records (`sep` `/`). Without a shard (or with `0/1`)
/// the location is the configured one.
fn per_shard(section: &BlobConfig, shard: Option<Shard>, sep: &str) -> BlobConfig {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_get_their_own_lock_and_report_folder() {
        // Checks that parallel shards of one run do not lock each other out or overwrite each
        // other's records, and that an unsharded run uses the configured blob as it is.
        let section = BlobConfig {
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
