//! The application: `plan`, `sync`, `verify` and `prune` as calls that take a configuration and a request
//! and give back what happened, for the command line today and for a library user, a
//! long-running service or a Kubernetes operator tomorrow.
//!
//! This layer owns the run's orchestration — the image set narrowed to a shard, the run lock,
//! the plan, the transfer, the report and the run records — and nothing about the process it
//! runs in: it never prints, never exits, never reads signals or arguments. A caller stops a run
//! by cancelling [`RunRequest::stop`]; it maps a [`RunOutcome`] (or an [`AppError`]) to its own
//! output. Events go to `tracing`, like the rest of the library.
//!
//! It may import every domain module (config, imageset, plan, transfer, registry, azure,
//! report); none of them imports it.

mod check;
mod prune;
mod records;
mod sync;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::azure::storage::UploadedRecords;
use crate::azure::{LockHeld, StorageError};
use crate::config::{Config, ConfigError, SignatureMode};
use crate::imageset::{self, ImageSetError, Resolved};
use crate::plan::{Gate, GateFor, Plan, Wanted};
use crate::provenance::{ProvenanceError, Verifier};
use crate::registry::RegistryError;
use crate::report::Report;
use crate::shard::Shard;

pub use check::{plan, verify};
pub use prune::{PruneEnding, PruneOutcome, PruneRequest, prune};
pub use sync::{SyncObserver, sync};

/// A configuration file as loaded: its content, and where it is, since its relative paths
/// (`aks.lists`, `workloads.manifests`) are relative to its folder.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub config: Config,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        Ok(ConfigFile { path: path.to_path_buf(), config: Config::load(path)? })
    }

    /// The folder relative paths in the file are resolved against.
    pub fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }
}

/// What every run takes besides the configuration.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Only the images of this shard (by target repository); `None` for all.
    pub shard: Option<Shard>,
    /// Include the source's referrers (signatures, SBOMs) of copied images.
    pub referrers: bool,
    /// Cancelled when the run must stop: nothing new starts, images in flight get `grace`, and
    /// the run still ends with its report, its records and the lock released.
    pub stop: CancellationToken,
    /// How long images in flight may go on after `stop` (sync only; plan and verify write
    /// nothing, so they stop at once).
    pub grace: Duration,
    /// A tag rule in `images:` that chooses no tag is an error rather than a warning.
    pub strict: bool,
}

/// `plan`: what `sync` would do. `deep` also checks every child manifest and blob behind tags
/// that look present (`verify` always does).
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub run: RunRequest,
    pub deep: bool,
}

/// `sync`: copy or warm what the target lacks.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub run: RunRequest,
    /// Also check the content behind present tags, and repair partial images.
    pub deep: bool,
    /// Stop starting images after the first failure (the rest are reported skipped).
    pub fail_fast: bool,
}

/// How a run ended, as a scheduler needs to tell the cases apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// In sync (`plan`, `verify`), or everything done (`sync`).
    Complete,
    /// `plan`/`verify`: the target lacks something.
    Drift,
    /// `plan`/`verify`: some image could not be examined.
    Unexamined,
    /// `sync`: some images failed, or were skipped after a failure with `fail_fast`.
    ImagesFailed,
    /// The run was stopped through [`RunRequest::stop`]; images not done are `interrupted`.
    Stopped,
}

/// Everything a finished run gives back.
#[derive(Debug)]
pub struct RunOutcome {
    pub ending: Ending,
    /// Per image: what the plan found and what was done.
    pub report: Report,
    /// What the plan found; `None` when the run was stopped before the plan was complete.
    pub plan: Option<Plan>,
    /// The upload of the run records (`report: {azureBlob: …}`); `None` when none is configured.
    pub records: Option<Result<UploadedRecords, StorageError>>,
}

/// A run that could not be carried out. Each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{}: {error}", file.display())]
    ImageSet { file: PathBuf, error: ImageSetError },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Another run holds the run lock: nothing was done.
    #[error(transparent)]
    Locked(LockHeld),
    #[error("cannot take the run lock: {0}")]
    Lock(StorageError),
    /// `signatures:` names a trust policy, trust store or key that cannot be used: nothing was
    /// read from a registry or written.
    #[error("{}: signatures: {error}", file.display())]
    Signatures { file: PathBuf, error: ProvenanceError },
    /// The configuration cannot be used for this command (`prune:` rules, mappings).
    #[error("{0}")]
    Config(String),
}

/// The provenance gate of `file` for a command, `None` when `signatures.mode` is `off`. Loaded
/// before anything is read from a registry, so that a bad trust policy, trust store or key ends
/// the run before it has done anything. Paths are relative to the config file.
fn gate(file: &ConfigFile, for_command: GateFor) -> Result<Option<Arc<Gate>>, AppError> {
    let s = &file.config.signatures;
    if s.mode == SignatureMode::Off {
        return Ok(None);
    }
    let dir = file.dir();
    let notation = s.notation.as_ref().map(|n| (dir.join(&n.trust_policy), dir.join(&n.trust_store)));
    let cosign: Vec<(String, PathBuf)> = s.cosign.iter().map(|k| (k.scope.clone(), dir.join(&k.key))).collect();
    let verifier = Verifier::load(notation.as_ref().map(|(p, t)| (p.as_path(), t.as_path())), &cosign)
        .map_err(|error| AppError::Signatures { file: file.path.clone(), error })?;
    Ok(Some(Arc::new(Gate { verifier: Arc::new(verifier), mode: s.mode, for_command, now: SystemTime::now() })))
}

/// Adds the gate's summary to a run's report.
fn signed(report: Report, gate: &Option<Arc<Gate>>) -> Report {
    match gate {
        Some(g) => report.with_signatures(g.mode, g.verifier.notes()),
        None => report,
    }
}

/// The image set of `file`, as `resolve` shows it. Its warnings are logged.
pub fn resolve(file: &ConfigFile) -> Result<Resolved, AppError> {
    let resolved = imageset::resolve(&file.config, file.dir())
        .map_err(|error| AppError::ImageSet { file: file.path.clone(), error })?;
    for w in &resolved.warnings {
        tracing::warn!("{w}");
    }
    Ok(resolved)
}

/// The image set of `file` with the tags of every tag rule chosen from its source's tag list
/// (`strict`: a rule choosing nothing is an error). What each rule chose, and why, is logged,
/// so that a plan shows it as `resolve` does.
pub async fn resolve_tagged(file: &ConfigFile, strict: bool) -> Result<Resolved, AppError> {
    let mut resolved = resolve(file)?;
    if !resolved.pending.is_empty() {
        imageset::select_tags(&mut resolved, &registries(&file.config)?, strict)
            .await
            .map_err(|error| AppError::ImageSet { file: file.path.clone(), error })?;
    }
    for e in &resolved.images {
        for p in e.provenance.iter().filter(|p| matches!(p, imageset::Provenance::Config { tag_rule: Some(_), .. })) {
            tracing::info!("{}: {p}", e.source);
        }
    }
    Ok(resolved)
}

/// The registries of a config, with Entra ID sign-in plugged in for `auth: {type: azure}`
/// (the registry layer defines the sign-in trait; azure implements it).
pub fn registries(cfg: &Config) -> Result<crate::registry::Registries, RegistryError> {
    Ok(crate::registry::Registries::from_config(cfg)?.with_entra(std::sync::Arc::new(crate::azure::EntraSignIn)))
}

/// The images a run works on: the image set, narrowed to `shard`.
async fn wanted(file: &ConfigFile, req: &RunRequest) -> Result<Vec<Wanted>, AppError> {
    let wanted: Vec<Wanted> = resolve_tagged(file, req.strict)
        .await?
        .images
        .into_iter()
        .map(|e| Wanted {
            source: e.source,
            target: e.target,
            mode: e.mode,
            platforms: e.platforms.filters(),
            injected: e.injected,
        })
        .collect();
    let Some(shard) = req.shard else { return Ok(wanted) };
    let total = wanted.len();
    let wanted = shard.select(wanted, |w| &w.target);
    tracing::info!("shard {shard}: {} of {total} images", wanted.len());
    Ok(wanted)
}

/// When a run started: the wall-clock time for its report, and a monotonic one for its duration.
#[derive(Debug, Clone, Copy)]
struct Started {
    at: SystemTime,
    clock: Instant,
}

impl Started {
    fn now() -> Started {
        Started { at: SystemTime::now(), clock: Instant::now() }
    }

    fn elapsed_ms(&self) -> u64 {
        self.clock.elapsed().as_millis().min(u128::from(u64::MAX)) as u64
    }
}

/// `work` unless `stop` is cancelled first (`None` then; `work` is dropped). For read-only
/// phases (resolving, planning), which lose nothing by being abandoned.
async fn unless_stopped<T>(stop: &CancellationToken, work: impl std::future::Future<Output = T>) -> Option<T> {
    // Biased towards the stop: a run stopped before it began never starts its work.
    tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        r = work => Some(r),
    }
}

/// The outcome of a run stopped before its plan was complete: no image was examined, so the
/// report says so as a run-level error.
fn stopped_before_plan(command: &str, started: Started) -> RunOutcome {
    RunOutcome {
        ending: Ending::Stopped,
        report: Report::failed_run(
            command,
            started.at,
            "stopped before the plan was complete: no image was examined".into(),
        ),
        plan: None,
        records: None,
    }
}
