//! The warm ledger: a record, in the target registry itself, of the warms that completed.
//!
//! ACR lists a cache rule's tag as soon as the index manifest went through the cache. A node that
//! pulled one platform, or a warm run stopped after the index, leaves a listed tag whose children
//! and blobs never went through the cache, and a tag listing cannot tell that apart from a
//! complete warm. So `sync` records each completed warm — the target repository, the index
//! digest and the platform set, written only after every selected manifest and blob was read
//! through the cache and verified — and the plan counts a listed warm image as present only when
//! it finds that record; otherwise the image is `partial` and is warmed again.
//!
//! **Shape.** Each entry is its own small OCI artifact (an image manifest with `artifactType`
//! [`ARTIFACT_TYPE`], the 2-byte empty config and layer, and the entry in its annotations) in one
//! repository of its own (`warmLedger.repository`, default [`crate::config::DEFAULT_WARM_LEDGER_REPOSITORY`]), tagged
//! `warm-<sha256 of the entry>`. One tag per entry, rather than one document listing them all,
//! because nothing is ever read, changed and written back: two runs, or the shards of one run,
//! each `PUT` their own tags, and no run can lose another's entries. The manifest's bytes follow
//! from the entry alone (no time stamp), so writing an entry twice writes the same digest. The
//! plan reads the whole ledger with one tag listing of that repository.
//!
//! The repository is part of the entry because a cache keeps what was pulled per repository;
//! the platform set is the configured filter (sorted), so adding a platform makes every image a
//! new entry and it is warmed for that platform.
//!
//! **Rights.** The ledger needs push on its repository. The plan checks that first by opening an
//! upload session there and cancelling it (nothing is written). An identity that may not push
//! (401/403, or a repository under a cache rule: 405) gets one warning, and the run behaves as
//! without a ledger: a listed tag with the expected digest counts as present.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use serde_json::json;

use crate::digest::Digest;
use crate::manifest::{Manifest, OCI_MANIFEST, PlatformFilter};
use crate::registry::uploads::Started;
use crate::registry::{Registries, Registry, RegistryError};
use crate::sanitize;

/// The `artifactType` of an entry.
pub const ARTIFACT_TYPE: &str = "application/vnd.acr-mirror.warm.v1";
/// Entry tags are this followed by the hex SHA-256 of the entry.
const TAG_PREFIX: &str = "warm-";
/// OCI's empty descriptor (image-spec 1.1, "Guidance for an empty descriptor"): the content `{}`.
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";

/// One completed warm: every selected manifest and blob of `digest` in `repository` was read
/// through the cache and verified.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub repository: &'a str,
    pub digest: &'a Digest,
    /// The configured platform filter; empty means every platform.
    pub platforms: &'a [PlatformFilter],
}

impl Entry<'_> {
    /// The platform set, sorted and without duplicates; `all` when no filter was given.
    fn platform_set(&self) -> String {
        if self.platforms.is_empty() {
            return "all".into();
        }
        let mut p: Vec<String> = self.platforms.iter().map(|f| f.to_string()).collect();
        p.sort();
        p.dedup();
        p.join(",")
    }

    /// The entry's tag: derived from the entry alone, so every run names it the same.
    pub fn tag(&self) -> String {
        let key = format!("{}\n{}\n{}", self.repository, self.digest, self.platform_set());
        format!("{TAG_PREFIX}{}", Digest::of(key.as_bytes()).hex())
    }

    /// The entry's manifest: same entry, same bytes.
    fn manifest(&self) -> Manifest {
        let empty = json!({"mediaType": EMPTY_TYPE, "digest": Digest::of(EMPTY).as_str(), "size": EMPTY.len()});
        let value = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": empty,
            "layers": [empty],
            "annotations": {
                "io.github.acr-mirror.warm.repository": self.repository,
                "io.github.acr-mirror.warm.digest": self.digest.as_str(),
                "io.github.acr-mirror.warm.platforms": self.platform_set(),
            },
        });
        let bytes = Bytes::from(serde_json::to_vec(&value).expect("a JSON value serialises"));
        Manifest::from_bytes(bytes, Some(OCI_MANIFEST)).expect("the entry manifest parses")
    }
}

/// The ledger of one target registry.
#[derive(Debug)]
pub struct Ledger {
    registry: Arc<Registry>,
    repository: String,
    /// Entry tags known to exist: listed when the ledger was opened, or written by this run.
    tags: std::sync::Mutex<HashSet<String>>,
    /// Set once a write was refused: said once, and not tried again.
    refused: AtomicBool,
    /// Whether the empty blob is known to be in the repository (entries reference it).
    empty_blob: tokio::sync::OnceCell<()>,
}

impl Ledger {
    /// Opens the ledger in `registry`: checks that this identity may push to `repository` (an
    /// upload session opened and cancelled), then lists the entries. `None`, with one warning,
    /// when it may not push.
    pub async fn open(registry: Arc<Registry>, repository: &str) -> Result<Option<Ledger>, RegistryError> {
        let probe = match registry.start_upload(repository, None).await {
            Ok(Started::Session(s)) => {
                registry.cancel_upload(&s).await;
                Ok(())
            }
            Ok(Started::Mounted) => Ok(()),
            Err(e) => Err(e),
        };
        let tags = match probe {
            Ok(()) => registry.list_tags(repository).await,
            Err(e) => Err(e),
        };
        match tags {
            Ok(tags) => Ok(Some(Ledger {
                registry,
                repository: repository.to_string(),
                tags: std::sync::Mutex::new(tags.into_iter().filter(|t| t.starts_with(TAG_PREFIX)).collect()),
                refused: AtomicBool::new(false),
                empty_blob: tokio::sync::OnceCell::new(),
            })),
            Err(e) if is_refusal(&e) => {
                tracing::warn!(
                    "the warm ledger is not used: this identity may not push to {}/{repository} ({}). \
                     Warm images ACR lists with the expected digest count as present, even if a warm \
                     was interrupted; grant push on that repository (or set warmLedger.repository) \
                     to have incomplete warms found",
                    registry.host,
                    sanitize::short(&e.to_string())
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn has(&self, entry: &Entry<'_>) -> bool {
        self.tags.lock().expect("ledger tags").contains(&entry.tag())
    }

    /// Writes `entry`. Failures are logged, not returned: the warm itself succeeded, and a
    /// missing entry only means the image is warmed again next time.
    pub async fn record(&self, entry: &Entry<'_>) {
        if self.refused.load(Ordering::Relaxed) || self.has(entry) {
            return;
        }
        match self.write(entry).await {
            Ok(()) => {
                self.tags.lock().expect("ledger tags").insert(entry.tag());
            }
            Err(e) if is_refusal(&e) => {
                if !self.refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the warm ledger {}/{} refused an entry ({}); no more entries are written in this run, \
                         so the next run warms these images again",
                        self.registry.host,
                        self.repository,
                        sanitize::short(&e.to_string())
                    );
                }
            }
            Err(e) => tracing::warn!(
                image = %format!("{}/{}@{}", self.registry.host, entry.repository, entry.digest),
                "the warm ledger entry was not written ({}); the next run warms this image again",
                sanitize::short(&e.to_string())
            ),
        }
    }

    async fn write(&self, entry: &Entry<'_>) -> Result<(), RegistryError> {
        self.empty_blob.get_or_try_init(|| self.put_empty_blob()).await?;
        self.registry.put_manifest(&self.repository, &entry.tag(), &entry.manifest()).await?;
        Ok(())
    }

    /// The 2-byte empty blob every entry references, uploaded unless the repository has it.
    async fn put_empty_blob(&self) -> Result<(), RegistryError> {
        let digest = Digest::of(EMPTY);
        if self.registry.head_blob(&self.repository, &digest).await?.is_some() {
            return Ok(());
        }
        match self.registry.start_upload(&self.repository, None).await? {
            Started::Mounted => Ok(()),
            Started::Session(s) => {
                self.registry.put_whole(&s, &digest, EMPTY.len() as u64, reqwest::Body::from(EMPTY)).await
            }
        }
    }
}

/// The ledgers of a run, by target registry host.
#[derive(Debug, Clone, Default)]
pub struct Ledgers(BTreeMap<String, Arc<Ledger>>);

impl Ledgers {
    /// Opens the ledger (`repository`) of each of `hosts`; a host whose identity may not push
    /// there gets none (see [`Ledger::open`]).
    pub async fn open<'a>(
        registries: &Registries,
        hosts: impl IntoIterator<Item = &'a str>,
        repository: &str,
    ) -> Result<Ledgers, RegistryError> {
        let mut out = BTreeMap::new();
        for host in hosts.into_iter().collect::<std::collections::BTreeSet<_>>() {
            if let Some(l) = Ledger::open(registries.get(host)?, repository).await? {
                out.insert(host.to_string(), Arc::new(l));
            }
        }
        Ok(Ledgers(out))
    }

    /// What is missing when the ledger of `host` does not record `entry` (for the plan's report);
    /// `None` when it does, or when `host` has no ledger in use.
    pub fn lacks(&self, host: &str, entry: &Entry<'_>) -> Option<String> {
        let ledger = self.0.get(host)?;
        (!ledger.has(entry)).then(|| {
            format!("no entry in the warm ledger {host}/{}: not known to be completely warmed", ledger.repository)
        })
    }

    /// Records a completed warm in the ledger of `host`, if it has one.
    pub async fn record(&self, host: &str, entry: &Entry<'_>) {
        if let Some(ledger) = self.0.get(host) {
            ledger.record(entry).await;
        }
    }
}

/// Whether the registry refused a write to the ledger for lack of rights: 401/403, or 405 (a
/// repository under a cache rule, or a registry that takes no pushes at all).
fn is_refusal(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Unauthorized { .. }) || matches!(e.status(), Some(401 | 403 | 405))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platforms(p: &[&str]) -> Vec<PlatformFilter> {
        p.iter().map(|s| PlatformFilter::parse(s).unwrap()).collect()
    }

    #[test]
    fn an_entry_is_named_and_written_the_same_by_every_run() {
        // Checks that the tag and bytes follow from the entry alone (order of the platform filter
        // included), and that repository, digest and platform set each change the tag: concurrent
        // runs then write identical entries, and a new platform is a new entry.
        let d = Digest::of(b"index");
        let (a, b) = (platforms(&["linux/amd64", "linux/arm64"]), platforms(&["linux/arm64", "linux/amd64"]));
        let e1 = Entry { repository: "aks-managed-repository/pause", digest: &d, platforms: &a };
        let e2 = Entry { repository: "aks-managed-repository/pause", digest: &d, platforms: &b };
        assert_eq!(e1.tag(), e2.tag());
        assert_eq!(e1.manifest().digest, e2.manifest().digest);
        assert!(e1.tag().starts_with(TAG_PREFIX) && e1.tag().len() <= 128, "{}", e1.tag());
        let amd = platforms(&["linux/amd64"]);
        let other = Digest::of(b"other");
        for e in [
            Entry { repository: "aks-managed-repository/coredns", ..e1 },
            Entry { digest: &other, ..e1 },
            Entry { platforms: &amd, ..e1 },
            Entry { platforms: &[], ..e1 },
        ] {
            assert_ne!(e.tag(), e1.tag());
        }
        let m = e1.manifest();
        assert_eq!(m.media_type, OCI_MANIFEST);
        let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
        assert_eq!(v["artifactType"], ARTIFACT_TYPE);
        assert_eq!(v["annotations"]["io.github.acr-mirror.warm.platforms"], "linux/amd64,linux/arm64");
    }
}
