//! Run records and the single-run lock for the nightly job, in Azure Blob Storage.
//!
//! - [`upload_run_records`] puts each run's JSON and JUnit reports under
//!   `PREFIX/<start time>/`, so a storage account keeps the history and a dashboard can read it.
//! - [`RunLock`] holds a blob lease for the run's duration, renewed in the background, so that two
//!   scheduled runs (a slow one and the next night's) never push into the registry at once.
//!
//! Sign-in is either the Entra credential (production; the identity needs *Storage Blob Data
//! Contributor* on the container) or a SAS token read from an environment variable (Azurite in
//! tests, or estates that hand out SAS). SAS signatures never appear in messages: see
//! [`crate::azure::redact_sas`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::TokenCredential;
use azure_core::http::{RequestContent, StatusCode};
use azure_storage_blob::BlobClient;
use azure_storage_blob::models::{
    BlobClientAcquireLeaseResultHeaders, BlobClientGetPropertiesOptions, BlobClientGetPropertiesResultHeaders,
    BlobClientSetMetadataOptions, BlockBlobClientUploadOptions,
};
use tokio::sync::watch;
use url::Url;

use crate::azure::identity::{SignIn, build_credential};
use crate::azure::redact_sas;
use crate::config::BlobConfig;

/// Lease length the lock asks for. 60 s is the longest finite lease: a crashed run blocks the
/// next one for at most a minute.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How often the lease is renewed: three chances before a 60 s lease lapses.
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(20);

/// A Blob Storage failure. Messages name the blob (with any SAS signature redacted).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob storage config: {0}")]
    Config(String),
    #[error("{action} {blob} failed: {message}")]
    Request { action: &'static str, blob: String, message: String },
    #[error(transparent)]
    LockHeld(#[from] LockHeld),
}

/// Another run holds the lock. The CLI maps this to exit code [`crate::exit::LOCKED`].
#[derive(Debug, thiserror::Error)]
pub struct LockHeld {
    pub blob: String,
    /// Who holds it (host and process id, as written by the holder), if readable.
    pub holder: Option<String>,
    /// When the holder started, if readable.
    pub since: Option<String>,
    /// The latest time the holder's current lease lasts without a further renewal.
    pub until: Option<SystemTime>,
}

impl fmt::Display for LockHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "another run holds the lock {}", self.blob)?;
        match (&self.holder, &self.since) {
            (Some(h), Some(s)) => write!(f, " (holder {h}, since {s})")?,
            (Some(h), None) => write!(f, " (holder {h})")?,
            (None, Some(s)) => write!(f, " (since {s})")?,
            (None, None) => {}
        }
        match self.until {
            Some(t) => write!(f, "; its lease lapses at {} unless that run renews it", crate::time::rfc3339(t))?,
            None => write!(f, "; its lease lapses at most 60 s after that run stops renewing it")?,
        }
        write!(f, ". This run exits without doing anything.")
    }
}

/// A container path in Blob Storage (`https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH`,
/// or Azurite's `http://127.0.0.1:PORT/ACCOUNT/CONTAINER/PATH`) and how to sign in to it.
#[derive(Clone)]
pub struct BlobLocation {
    url: Url,
    sas: Option<String>,
    credential: Option<Arc<dyn TokenCredential>>,
}

impl fmt::Debug for BlobLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobLocation")
            .field("url", &self.url.as_str())
            .field("sas", &self.sas.as_ref().map(|_| "<redacted>"))
            .field("entra", &self.credential.is_some())
            .finish()
    }
}

impl BlobLocation {
    fn parse(url: &str) -> Result<Url, StorageError> {
        let mut u =
            Url::parse(url).map_err(|e| StorageError::Config(format!("{}: not a URL: {e}", redact_sas(url))))?;
        if u.query().is_some() {
            return Err(StorageError::Config(format!(
                "{}: put the SAS token in the environment variable named by sasTokenEnv, not in the URL",
                redact_sas(url)
            )));
        }
        if u.path_segments().map(|s| s.filter(|p| !p.is_empty()).count()).unwrap_or(0) == 0 {
            return Err(StorageError::Config(format!("{url}: the URL must name a container")));
        }
        let trimmed = u.path().trim_end_matches('/').to_string();
        u.set_path(&trimmed);
        Ok(u)
    }

    /// Signs requests with a SAS token (with or without the leading `?`).
    pub fn with_sas(url: &str, sas: &str) -> Result<Self, StorageError> {
        let sas = sas.trim_start_matches('?').to_string();
        if sas.is_empty() {
            return Err(StorageError::Config(format!("{url}: the SAS token is empty")));
        }
        Ok(BlobLocation { url: Self::parse(url)?, sas: Some(sas), credential: None })
    }

    /// Signs requests with an Entra credential (needs https).
    pub fn with_credential(url: &str, credential: Arc<dyn TokenCredential>) -> Result<Self, StorageError> {
        let u = Self::parse(url)?;
        if u.scheme() != "https" {
            return Err(StorageError::Config(format!("{url}: Entra sign-in to Blob Storage needs https")));
        }
        Ok(BlobLocation { url: u, sas: None, credential: Some(credential) })
    }

    /// From a `report:`/`lock:` section: a SAS from `sasTokenEnv` when set, otherwise the Entra
    /// credential the section names (default `auto`).
    pub fn from_config(cfg: &BlobConfig) -> Result<Self, StorageError> {
        if let Some(var) = &cfg.sas_token_env {
            let sas = std::env::var(var)
                .map_err(|_| StorageError::Config(format!("environment variable {var} (sasTokenEnv) is not set")))?;
            return Self::with_sas(&cfg.azure_blob, &sas);
        }
        let sign_in = SignIn {
            credential: cfg.credential.unwrap_or_default(),
            tenant_id: cfg.tenant_id.clone(),
            client_id: cfg.client_id.clone(),
            client_secret_env: cfg.client_secret_env.clone(),
        };
        let cred = build_credential(&sign_in, None).map_err(|e| StorageError::Config(e.to_string()))?;
        Self::with_credential(&cfg.azure_blob, cred.token_credential())
    }

    /// The blob `name` below this location, or the location itself for `None`.
    fn blob_url(&self, name: Option<&str>) -> Url {
        let mut u = self.url.clone();
        if let Some(n) = name {
            u.set_path(&format!("{}/{}", self.url.path(), n.trim_start_matches('/')));
        }
        u
    }

    fn client(&self, name: Option<&str>) -> Result<(BlobClient, String), StorageError> {
        let shown = self.blob_url(name);
        let mut u = shown.clone();
        if let Some(sas) = &self.sas {
            u.set_query(Some(sas));
        }
        let client = BlobClient::new(u, self.credential.clone(), None)
            .map_err(|e| StorageError::Config(format!("{shown}: {}", redact_sas(&e.to_string()))))?;
        Ok((client, shown.to_string()))
    }
}

fn error_code(e: &azure_core::Error) -> Option<&str> {
    match e.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.as_deref(),
        _ => None,
    }
}

fn request_error(action: &'static str, blob: &str, e: &azure_core::Error) -> StorageError {
    let code = error_code(e).map(|c| format!("{c}: ")).unwrap_or_default();
    let hint = match error_code(e) {
        Some("ContainerNotFound") => " (create the container first)",
        Some("AuthorizationPermissionMismatch" | "AuthorizationFailure") => {
            " (the identity needs Storage Blob Data Contributor on the container)"
        }
        _ => "",
    };
    StorageError::Request {
        action,
        blob: blob.to_string(),
        message: format!("{code}{}{hint}", redact_sas(&e.to_string())),
    }
}

/// The run's folder name: `2026-11-26T02-00-00Z` (RFC 3339 without colons, which some tools
/// dislike in paths).
pub fn run_folder_name(started: SystemTime) -> String {
    crate::time::rfc3339(started).replace(':', "-")
}

/// Blob URLs (without SAS) of what [`upload_run_records`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedRecords {
    pub json: String,
    pub junit: String,
}

/// Uploads one run's reports as `PREFIX/<start>/report.json` and `PREFIX/<start>/junit.xml`.
/// The container must exist; an existing blob of the same name (a rerun within the same second)
/// is overwritten.
pub async fn upload_run_records(
    location: &BlobLocation,
    started: SystemTime,
    json: bytes::Bytes,
    junit: bytes::Bytes,
) -> Result<UploadedRecords, StorageError> {
    let folder = run_folder_name(started);
    let mut names = Vec::new();
    for (file, body, content_type) in
        [("report.json", json, "application/json"), ("junit.xml", junit, "application/xml")]
    {
        let (client, shown) = location.client(Some(&format!("{folder}/{file}")))?;
        let options =
            BlockBlobClientUploadOptions { blob_content_type: Some(content_type.to_string()), ..Default::default() };
        client
            .upload(RequestContent::from(body.to_vec()), Some(options))
            .await
            .map_err(|e| request_error("uploading run record", &shown, &e))?;
        tracing::info!(blob = %shown, "run record uploaded");
        names.push(shown);
    }
    let junit = names.pop().unwrap_or_default();
    let json = names.pop().unwrap_or_default();
    Ok(UploadedRecords { json, junit })
}

/// Lease length and renewal interval. The defaults suit production; tests shorten both.
#[derive(Debug, Clone, Copy)]
pub struct LockTiming {
    /// 15–60 s (the service's bounds for a finite lease).
    pub lease: Duration,
    pub renew_every: Duration,
}

impl Default for LockTiming {
    fn default() -> Self {
        LockTiming { lease: DEFAULT_LEASE, renew_every: DEFAULT_RENEW_EVERY }
    }
}

/// What the holder of a [`RunLock`] can observe about its lease, through [`RunLock::watch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Held; `renewals` counts the renewals the service has accepted so far.
    Held { renewals: u64 },
    /// The last renewal failed: the lease may lapse and another run may start.
    Lost,
    /// Released, by [`RunLock::release`] or in the background after a drop.
    Released,
}

/// The nightly job's mutex: a lease on one blob (the URL in `lock: {azureBlob: …}` names the
/// blob itself, created empty if missing). Held from [`RunLock::acquire`] until
/// [`RunLock::release`] or drop, renewed in the background. If the process dies the lease lapses
/// within one lease length, so a crash never blocks the next night.
pub struct RunLock {
    client: Arc<BlobClient>,
    blob: String,
    lease_id: String,
    renewer: Option<tokio::task::JoinHandle<()>>,
    state: Arc<watch::Sender<LeaseState>>,
}

impl fmt::Debug for RunLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunLock").field("blob", &self.blob).field("lost", &self.is_lost()).finish_non_exhaustive()
    }
}

const META_HOLDER: &str = "holder";
const META_STARTED: &str = "started";
const META_UNTIL: &str = "leaseuntil";

fn lock_metadata(holder: &str, started: &str, lease: Duration) -> HashMap<String, String> {
    HashMap::from([
        (META_HOLDER.to_string(), holder.to_string()),
        (META_STARTED.to_string(), started.to_string()),
        (
            META_UNTIL.to_string(),
            (SystemTime::now() + lease).duration_since(UNIX_EPOCH).unwrap_or_default().as_secs().to_string(),
        ),
    ])
}

impl RunLock {
    /// Takes the lock with the default 60 s lease renewed every 20 s. `holder` is written into the
    /// blob's metadata (e.g. `host pid 1234`) so a refused second run can say who holds it.
    pub async fn acquire(location: &BlobLocation, holder: &str) -> Result<RunLock, StorageError> {
        Self::acquire_with(location, holder, LockTiming::default()).await
    }

    pub async fn acquire_with(
        location: &BlobLocation,
        holder: &str,
        timing: LockTiming,
    ) -> Result<RunLock, StorageError> {
        let secs = timing.lease.as_secs();
        if !(15..=60).contains(&secs) {
            return Err(StorageError::Config(format!("lock lease must be 15–60 s, not {secs} s")));
        }
        let (client, blob) = location.client(None)?;
        let lease_id = match client.acquire_lease(secs as i32, None).await {
            Ok(r) => r.lease_id().ok().flatten(),
            Err(e) if error_code(&e) == Some("BlobNotFound") => {
                let create = BlockBlobClientUploadOptions::default().if_not_exists();
                if let Err(e) = client.upload(RequestContent::from(Vec::new()), Some(create)).await {
                    // Another run may have created it in between: that is fine, the lease decides.
                    if !matches!(e.http_status(), Some(StatusCode::Conflict | StatusCode::PreconditionFailed)) {
                        return Err(request_error("creating lock blob", &blob, &e));
                    }
                }
                match client.acquire_lease(secs as i32, None).await {
                    Ok(r) => r.lease_id().ok().flatten(),
                    Err(e) => return Err(Self::refused(&client, &blob, e).await),
                }
            }
            Err(e) => return Err(Self::refused(&client, &blob, e).await),
        };
        let lease_id = lease_id.ok_or_else(|| StorageError::Request {
            action: "acquiring lease on",
            blob: blob.clone(),
            message: "the response carried no lease id".into(),
        })?;
        let started = crate::time::rfc3339(SystemTime::now());
        let lease = timing.lease;
        let set_meta = move |client: Arc<BlobClient>, lease_id: String, holder: String, started: String| async move {
            let opts = BlobClientSetMetadataOptions { lease_id: Some(lease_id), ..Default::default() };
            client.set_metadata(&lock_metadata(&holder, &started, lease), Some(opts)).await
        };
        let client = Arc::new(client);
        // Best effort: the metadata only improves the refused run's message.
        if let Err(e) = set_meta(client.clone(), lease_id.clone(), holder.to_string(), started.clone()).await {
            tracing::warn!(blob = %blob, "could not record the lock holder: {}", redact_sas(&e.to_string()));
        }
        tracing::info!(blob = %blob, "run lock acquired");
        let state = Arc::new(watch::Sender::new(LeaseState::Held { renewals: 0 }));
        let renewer = {
            let (client, lease_id, state, blob, holder) =
                (client.clone(), lease_id.clone(), state.clone(), blob.clone(), holder.to_string());
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + timing.renew_every, timing.renew_every);
                let mut renewals = 0;
                loop {
                    tick.tick().await;
                    match client.renew_lease(lease_id.clone(), None).await {
                        Ok(_) => {
                            renewals += 1;
                            state.send_replace(LeaseState::Held { renewals });
                            let _ = set_meta(client.clone(), lease_id.clone(), holder.clone(), started.clone()).await;
                            tracing::debug!(blob = %blob, "run lock lease renewed");
                        }
                        Err(e) => {
                            state.send_replace(LeaseState::Lost);
                            tracing::warn!(blob = %blob, "could not renew the run lock lease: {}", redact_sas(&e.to_string()));
                        }
                    }
                }
            })
        };
        Ok(RunLock { client, blob, lease_id, renewer: Some(renewer), state })
    }

    /// Turns a failed acquire into [`LockHeld`] when the lease is taken, reading who holds it.
    async fn refused(client: &BlobClient, blob: &str, e: azure_core::Error) -> StorageError {
        if error_code(&e) != Some("LeaseAlreadyPresent") && e.http_status() != Some(StatusCode::Conflict) {
            return request_error("acquiring lease on", blob, &e);
        }
        let meta = client
            .get_properties(Some(BlobClientGetPropertiesOptions::default()))
            .await
            .ok()
            .and_then(|p| p.metadata().ok())
            .unwrap_or_default();
        StorageError::LockHeld(LockHeld {
            blob: blob.to_string(),
            holder: meta.get(META_HOLDER).cloned(),
            since: meta.get(META_STARTED).cloned(),
            until: meta
                .get(META_UNTIL)
                .and_then(|s| s.parse::<u64>().ok())
                .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        })
    }

    /// The blob URL (without SAS).
    pub fn blob(&self) -> &str {
        &self.blob
    }

    /// True while the last renewal failed: the lease may lapse and another run may start.
    pub fn is_lost(&self) -> bool {
        *self.state.borrow() == LeaseState::Lost
    }

    /// Follows the lease as it is renewed, lost or released, so a caller can react to a lost
    /// lease (or wait for the release that a drop starts in the background) instead of polling.
    #[cfg(any(test, feature = "internals"))]
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    /// Stops renewing and releases the lease so the next run can start at once.
    pub async fn release(mut self) -> Result<(), StorageError> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        let result = self.client.release_lease(self.lease_id.clone(), None).await;
        self.lease_id.clear();
        result.map(|_| ()).map_err(|e| request_error("releasing lease on", &self.blob, &e))?;
        self.state.send_replace(LeaseState::Released);
        tracing::info!(blob = %self.blob, "run lock released");
        Ok(())
    }
}

impl Drop for RunLock {
    /// Without an explicit release (an early return, a panic), stop renewing and release in the
    /// background if a runtime is still there; otherwise the lease lapses on its own.
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        if self.lease_id.is_empty() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (client, lease_id, state) =
                (self.client.clone(), std::mem::take(&mut self.lease_id), self.state.clone());
            handle.spawn(async move {
                if client.release_lease(lease_id, None).await.is_ok() {
                    state.send_replace(LeaseState::Released);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_folders_are_named_by_start_time() {
        // Checks the calendar arithmetic on a known instant (2026-11-26 02:00:00 UTC) and a leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_795_658_400);
        assert_eq!(run_folder_name(t), "2026-11-26T02-00-00Z");
    }

    #[test]
    fn sas_in_the_url_is_refused_and_not_echoed() {
        // Checks that a SAS pasted into the config URL is refused without printing the signature.
        let e = BlobLocation::with_sas("https://a.blob.core.windows.net/c/p?sv=1&sig=TOPSECRET", "x").unwrap_err();
        assert!(!e.to_string().contains("TOPSECRET"), "{e}");
        assert!(e.to_string().contains("sasTokenEnv"), "{e}");
    }

    #[test]
    fn blob_names_go_below_the_prefix() {
        // Checks that names join the prefix with exactly one slash, whatever the config wrote.
        let l = BlobLocation::with_sas("http://127.0.0.1:1/acct/c/nightly/", "sv=1").unwrap();
        assert_eq!(l.blob_url(Some("a/report.json")).as_str(), "http://127.0.0.1:1/acct/c/nightly/a/report.json");
        assert!(!format!("{l:?}").contains("sv=1"));
    }

    #[test]
    fn lock_held_message_names_blob_holder_and_time() {
        // Checks the refused run's message carries what an operator needs.
        let e = LockHeld {
            blob: "https://a/c/lock".into(),
            holder: Some("build-7 pid 42".into()),
            since: Some("2026-11-26T02:00:00Z".into()),
            until: Some(UNIX_EPOCH + Duration::from_secs(1_795_658_460)),
        };
        let m = e.to_string();
        assert!(
            m.contains("https://a/c/lock") && m.contains("build-7 pid 42") && m.contains("2026-11-26T02:01:00Z"),
            "{m}"
        );
        let bare = LockHeld { blob: "b".into(), holder: None, since: Some("t".into()), until: None }.to_string();
        assert!(bare.contains("(since t)") && bare.contains("at most 60 s"), "{bare}");
    }

    #[test]
    fn a_missing_sas_variable_is_named() {
        // Checks that from_config names the unset sasTokenEnv variable instead of trying Entra.
        let cfg = BlobConfig {
            azure_blob: "https://a.blob.core.windows.net/c/p".into(),
            sas_token_env: Some("MIRROR_TEST_SURELY_UNSET_SAS".into()),
            credential: None,
            tenant_id: None,
            client_id: None,
            client_secret_env: None,
        };
        let e = BlobLocation::from_config(&cfg).unwrap_err();
        assert!(e.to_string().contains("MIRROR_TEST_SURELY_UNSET_SAS"), "{e}");
    }
}
