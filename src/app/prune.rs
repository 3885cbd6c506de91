//! `prune`: lists the target's repositories under the `copy` mappings, decides with
//! [`crate::prune`] what the image set no longer needs, and with `apply` deletes it under the
//! run lock: each tag's digest is read again just before it goes, and a tag that moved since
//! the listing is left alone.
//!
//! Everything is read before anything is deleted, and a registry that refuses deletes (405,
//! `UNSUPPORTED`, a missing permission) is found by the first delete, so it stops the run with
//! nothing touched. Deletions go one at a time: a prune is a nightly chore, and a registry's
//! delete path is its least tested one.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::{AppError, ConfigFile, Started, records};
use crate::azure::StorageError;
use crate::azure::storage::UploadedRecords;
use crate::config::{Config, MappingMode};
use crate::digest::Digest;
use crate::prune::{self, DeleteMode, ListedTag, Needed, PrunePlan, RepoListing};
use crate::registry::delete::{Deleted, is_refusal};
use crate::registry::{Registry, RegistryError};
use crate::report::prune::{Done, Outcomes, PruneReport};

/// `prune`: list and decide (a dry run), or also delete (`apply`).
#[derive(Debug, Clone)]
pub struct PruneRequest {
    pub apply: bool,
    /// Cancelled when the run must stop: no new deletion starts, and the run ends with its
    /// report, its records and the lock released.
    pub stop: CancellationToken,
}

/// How a prune ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneEnding {
    /// Nothing to prune (dry run), or everything pruned (`apply`; tags that moved were left alone).
    Complete,
    /// Dry run: something would be pruned.
    WouldPrune,
    /// `apply`: some deletions failed; the rest were done.
    SomeFailed,
    /// `apply`: the registry refuses deletes; nothing more was attempted (the report's `error`).
    Refused,
    /// Stopped through [`PruneRequest::stop`]; deletions not started are `skipped`.
    Stopped,
}

/// Everything a finished prune gives back.
#[derive(Debug)]
pub struct PruneOutcome {
    pub ending: PruneEnding,
    pub report: PruneReport,
    /// The upload of the run records; `None` when none is configured.
    pub records: Option<Result<UploadedRecords, StorageError>>,
}

/// Retires what the image set no longer needs (see the module documentation).
pub async fn prune(file: &ConfigFile, req: &PruneRequest) -> Result<PruneOutcome, AppError> {
    let started = Started::now();
    let cfg = &file.config;
    let prepared = async {
        // Checked when the file was loaded; a config built in code is checked here, before any read.
        let rules = cfg.prune.rules().map_err(AppError::Config)?;
        let scope = Scope::of(cfg)?;
        // A tag rule that chooses nothing is an error here: otherwise a source that lists no
        // tags for a night would make every tag it once chose look unneeded.
        let needed = needed(&super::resolve_tagged(file, true).await?, &scope.host);
        Ok((rules, scope, needed))
    }
    .await;
    let (rules, scope, needed) = match prepared {
        Ok(p) => p,
        Err(e) => return failed(cfg, req, started, e).await,
    };
    let lock = match req.apply {
        true => records::lock(cfg, None, "prune").await?,
        false => None,
    };
    let result = match run(cfg, req, &scope, &needed, &rules, started).await {
        Ok(mut outcome) => {
            outcome.records = records::upload_prune(cfg, started, &outcome.report).await;
            Ok(outcome)
        }
        Err(e) => failed(cfg, req, started, e).await,
    };
    records::release(lock).await;
    result
}

/// A run that failed before it had a plan: its records (when configured) name the error.
async fn failed(cfg: &Config, req: &PruneRequest, started: Started, e: AppError) -> Result<PruneOutcome, AppError> {
    let report = PruneReport::failed_run(req.apply, started.at, Some(&cfg.prune), e.to_string());
    let _ = records::upload_prune(cfg, started, &report).await;
    Err(e)
}

async fn run(
    cfg: &Config,
    req: &PruneRequest,
    scope: &Scope,
    needed: &Needed,
    rules: &crate::config::PruneRules,
    started: Started,
) -> Result<PruneOutcome, AppError> {
    let registries = super::registries(cfg)?;
    let registry = registries.get(&scope.host)?;
    let mut repos: Vec<String> =
        registry.list_repositories().await?.into_iter().filter(|r| scope.includes(&scope.host, r)).collect();
    repos.sort();
    repos.dedup();
    let now = SystemTime::now();
    let mut plan = PrunePlan::default();
    let mut modes = HashMap::new();
    for repo in &repos {
        if req.stop.is_cancelled() {
            break;
        }
        // Listing writes nothing, so a stop abandons it at once.
        let Some(listed) = super::unless_stopped(&req.stop, list(&registry, repo, needed)).await else { break };
        let (listing, mode) = listed?;
        plan.repositories.extend(prune::plan(&[listing], needed, rules, mode, now).repositories);
        modes.insert(repo.clone(), mode);
    }
    tracing::info!(
        "prune: {} repositories, {} tags to delete, {} manifests",
        plan.repositories.len(),
        plan.tags_to_delete(),
        plan.manifests_to_delete()
    );
    let mut outcomes = Outcomes::default();
    let mut error = None;
    if req.apply && !req.stop.is_cancelled() {
        for r in &plan.repositories {
            match apply(&registry, r, modes[&r.repository], &req.stop, &mut outcomes).await {
                Ok(()) => {}
                Err(e) => {
                    let why = match e.status() {
                        Some(405) | Some(404) => "deletes are turned off on it (distribution: storage.delete.enabled)",
                        _ => {
                            "this identity may not delete there (ACR: AcrDelete, or Repository Contributor on ABAC registries)"
                        }
                    };
                    error = Some(format!(
                        "registry {} refuses deletes ({why}), so nothing more was deleted: {e}",
                        scope.host
                    ));
                    break;
                }
            }
        }
        if error.is_some() {
            not_attempted(&plan, &mut outcomes, "not attempted: the registry refuses deletes");
        }
    }
    let stopped = req.stop.is_cancelled();
    if req.apply && stopped {
        not_attempted(&plan, &mut outcomes, "not attempted: the run was stopped");
    }
    let report = PruneReport::new(
        req.apply,
        started.at,
        started.elapsed_ms(),
        &scope.host,
        &cfg.prune,
        &plan,
        &outcomes,
        stopped,
        error.clone(),
    );
    let s = &report.summary;
    let ending = if error.is_some() {
        PruneEnding::Refused
    } else if stopped {
        PruneEnding::Stopped
    } else if !req.apply {
        if plan.tags_to_delete() + plan.manifests_to_delete() > 0 {
            PruneEnding::WouldPrune
        } else {
            PruneEnding::Complete
        }
    } else if s.failed + s.manifests_failed > 0 {
        PruneEnding::SomeFailed
    } else {
        PruneEnding::Complete
    };
    Ok(PruneOutcome { ending, report, records: None })
}

/// Marks every deletion of `plan` that has no outcome yet as skipped, saying `why`.
fn not_attempted(plan: &PrunePlan, out: &mut Outcomes, why: &str) {
    for r in &plan.repositories {
        for t in r.tags.iter().filter(|t| t.deletes()) {
            let key = (r.repository.clone(), t.tag.name.clone());
            out.tags.entry(key).or_insert_with(|| (Done::Skipped, Some(why.into())));
        }
        for m in &r.manifests {
            let key = (r.repository.clone(), m.digest.clone());
            out.manifests.entry(key).or_insert_with(|| (Done::Skipped, Some(why.into())));
        }
    }
}

/// Which repositories of the target a prune may touch: those under a `copy` mapping's target,
/// and none under a `warm` mapping's (a cache rule's) nor the warm ledger's.
struct Scope {
    host: String,
    copy: Vec<regex::Regex>,
    warm: Vec<regex::Regex>,
    ledger: String,
}

impl Scope {
    fn of(cfg: &Config) -> Result<Scope, AppError> {
        let mapping_error = |e: crate::imageset::mapping::MappingError| AppError::Config(e.to_string());
        let rules =
            if cfg.mappings.is_empty() { crate::imageset::mapping::default_mappings() } else { cfg.mappings.clone() };
        let mapper = crate::imageset::mapping::Mapper::new(cfg.target.as_deref(), &rules).map_err(mapping_error)?;
        let pattern = |m: MappingMode| rules.iter().filter(|r| r.mode == m).map(|r| under(&r.target)).collect();
        Ok(Scope {
            host: mapper.target_host().to_string(),
            copy: pattern(MappingMode::Copy),
            warm: pattern(MappingMode::Warm),
            ledger: cfg.warm_ledger.repository.clone(),
        })
    }

    fn includes(&self, host: &str, repo: &str) -> bool {
        if !valid_repository(host, repo) {
            tracing::warn!(
                "prune: repository {} has a name that is not valid; left alone",
                crate::sanitize::short(repo)
            );
            return false;
        }
        repo != self.ledger && self.copy.iter().any(|p| p.is_match(repo)) && !self.warm.iter().any(|p| p.is_match(repo))
    }
}

/// A pattern for the repositories under a mapping's `target` (`{registry}` standing for any
/// one path component, as the mapping writes a source host there).
fn under(target: &str) -> regex::Regex {
    let prefix = target.trim_matches('/');
    if prefix.is_empty() {
        return regex::Regex::new("^.+$").expect("a fixed pattern");
    }
    let parts: Vec<String> = prefix.split("{registry}").map(regex::escape).collect();
    regex::Regex::new(&format!("^{}(/.*)?$", parts.join("[^/]+"))).expect("escaped text is a valid pattern")
}

fn valid_repository(host: &str, repo: &str) -> bool {
    crate::reference::Reference::parse(&format!("{host}/{repo}:x")).is_ok_and(|r| r.repository == repo)
}

/// The distribution grammar of a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What the image set needs of the target registry `host`.
fn needed(resolved: &crate::imageset::Resolved, host: &str) -> Needed {
    let mut n = Needed::default();
    for e in resolved.images.iter().filter(|e| e.target.registry == host) {
        let repo = e.target.repository.clone();
        if let Some(t) = &e.target.tag {
            n.tags.entry(repo.clone()).or_default().insert(t.clone());
        }
        if let Some(d) = &e.target.digest {
            n.digests.entry(repo).or_default().insert(d.clone());
        }
    }
    n
}

/// A tag as a listing gives it: name, and where the listing says them, digest and last change.
type RawTag = (String, Option<Digest>, Option<SystemTime>);

/// Lists one repository: its tags with digests and ages, what each manifest refers to, and the
/// referrers of manifests the image set does not need. ACR's `_tags` gives digests and
/// `lastUpdateTime` (and means deletes can untag); elsewhere each tag is asked for its digest
/// and each image for its config's `created`.
async fn list(registry: &Registry, repo: &str, needed: &Needed) -> Result<(RepoListing, DeleteMode), AppError> {
    let mut listing = RepoListing { repository: repo.to_string(), ..Default::default() };
    let (mode, raw): (DeleteMode, Vec<RawTag>) = match registry.acr_tags(repo).await? {
        Some(tags) => (
            DeleteMode::Untag,
            tags.into_iter()
                .map(|t| {
                    let digest = t.digest.as_deref().and_then(|d| Digest::parse(d).ok());
                    let updated = t.last_update_time.as_deref().and_then(crate::time::parse_rfc3339);
                    (t.name, digest, updated)
                })
                .collect(),
        ),
        None => (DeleteMode::ByDigest, registry.list_tags(repo).await?.into_iter().map(|t| (t, None, None)).collect()),
    };
    let mut manifests: HashMap<Digest, crate::manifest::Manifest> = HashMap::new();
    let mut created: HashMap<Digest, Option<SystemTime>> = HashMap::new();
    for (name, digest, updated) in raw {
        if !valid_tag(&name) {
            tracing::warn!(repo, "prune: tag {} is not a valid tag name; left alone", crate::sanitize::short(&name));
            continue;
        }
        let digest = match digest {
            Some(d) => d,
            None => match registry.head_manifest(repo, &name).await? {
                Some(h) => h.digest,
                // Deleted since the listing: nothing to decide.
                None => continue,
            },
        };
        read_graph(registry, repo, &digest, &mut manifests, &mut listing).await?;
        let updated = match mode {
            DeleteMode::Untag => updated,
            DeleteMode::ByDigest => match created.get(&digest) {
                Some(c) => *c,
                None => {
                    let c = image_created(registry, repo, &digest, &manifests).await?;
                    created.insert(digest.clone(), c);
                    c
                }
            },
        };
        listing.tags.push(ListedTag { name, digest, updated });
    }
    // Referrers only of manifests that may go: the image set's own are never deleted.
    let needs = |t: &ListedTag| needed.tags.get(repo).is_some_and(|n| n.contains(&t.name));
    let candidates: HashSet<Digest> = listing
        .tags
        .iter()
        .filter(|t| !needs(t) && prune::referrer_subject(&t.name).is_none())
        .map(|t| t.digest.clone())
        .collect();
    for d in candidates {
        let found = registry.referrers(repo, &d).await?;
        listing.referrers.insert(d, found.descriptors.into_iter().map(|r| r.digest).collect());
    }
    Ok((listing, mode))
}

/// Reads a manifest and, for an index, its children: their children and blobs go into the listing.
async fn read_graph(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    manifests: &mut HashMap<Digest, crate::manifest::Manifest>,
    listing: &mut RepoListing,
) -> Result<(), AppError> {
    if manifests.contains_key(digest) {
        return Ok(());
    }
    let m = registry.get_manifest(repo, digest.as_str()).await?;
    if m.is_index() {
        let children: Vec<Digest> = m.parsed.manifests.iter().map(|c| c.digest.clone()).collect();
        for c in &children {
            if manifests.contains_key(c) {
                continue;
            }
            match registry.get_manifest(repo, c.as_str()).await {
                Ok(child) => {
                    listing.blobs.insert(c.clone(), child.blobs().map(|b| (b.digest.clone(), b.size)).collect());
                    manifests.insert(c.clone(), child);
                }
                // A sparse index lacks children: nothing of them to free or keep.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        listing.children.insert(digest.clone(), children);
    }
    listing.blobs.insert(digest.clone(), m.blobs().map(|b| (b.digest.clone(), b.size)).collect());
    manifests.insert(digest.clone(), m);
    Ok(())
}

/// When the image behind `digest` was built: its config's `created`, for an index its first
/// child's that is here.
async fn image_created(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    manifests: &HashMap<Digest, crate::manifest::Manifest>,
) -> Result<Option<SystemTime>, AppError> {
    let Some(m) = manifests.get(digest) else { return Ok(None) };
    let image = match m.is_index() {
        true => match m.parsed.manifests.iter().find_map(|c| manifests.get(&c.digest)) {
            Some(child) => child,
            None => return Ok(None),
        },
        false => m,
    };
    match registry.image_created(repo, image).await {
        Ok(created) => Ok(created),
        // A config the repository lacks (a partial image) leaves the age unknown: kept under minAge.
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Deletes what one repository's plan says, re-reading each tag first. `Err` only when the
/// registry refuses deletes: the caller stops there.
async fn apply(
    registry: &Registry,
    r: &prune::RepoPrune,
    mode: DeleteMode,
    stop: &CancellationToken,
    out: &mut Outcomes,
) -> Result<(), RegistryError> {
    let repo = r.repository.as_str();
    let key = |t: &str| (repo.to_string(), t.to_string());
    let set_tag = |out: &mut Outcomes, t: &str, d: Done, e: Option<String>| {
        out.tags.insert(key(t), (d, e));
    };
    // Tags still where the listing saw them (and, on ACR, untagged or found gone).
    let mut confirmed: HashSet<String> = HashSet::new();
    for t in r.tags.iter().filter(|t| t.deletes()) {
        let name = t.tag.name.as_str();
        if stop.is_cancelled() {
            set_tag(out, name, Done::Skipped, Some("the run was stopped".into()));
            continue;
        }
        match registry.head_manifest(repo, name).await {
            Ok(None) => {
                set_tag(out, name, Done::Gone, None);
                confirmed.insert(name.to_string());
                continue;
            }
            Ok(Some(h)) if h.digest != t.tag.digest => {
                tracing::info!(repo, tag = name, "prune: the tag moved since the listing; left alone");
                set_tag(out, name, Done::Moved, Some(format!("now {}", h.digest)));
                continue;
            }
            Ok(Some(_)) => {}
            Err(e) => {
                set_tag(out, name, Done::Failed, Some(e.to_string()));
                continue;
            }
        }
        if mode == DeleteMode::ByDigest {
            // Deleted with its manifest below.
            confirmed.insert(name.to_string());
            continue;
        }
        match registry.acr_untag(repo, name).await {
            Ok(Deleted::Done) => set_tag(out, name, Done::Deleted, None),
            Ok(Deleted::Absent) => set_tag(out, name, Done::Gone, None),
            Err(e) if is_refusal(&e) => return Err(e),
            Err(e) => {
                set_tag(out, name, Done::Failed, Some(e.to_string()));
                continue;
            }
        }
        confirmed.insert(name.to_string());
    }
    let mut deleted: HashSet<Digest> = HashSet::new();
    for m in &r.manifests {
        let mkey = (repo.to_string(), m.digest.clone());
        // A child or referrer goes only after what it goes with; a manifest only if none of its
        // tags moved.
        let ready =
            m.subject.as_ref().is_none_or(|s| deleted.contains(s)) && m.tags.iter().all(|t| confirmed.contains(t));
        if !ready || stop.is_cancelled() {
            let why = if stop.is_cancelled() {
                "the run was stopped"
            } else {
                "not deleted: a tag on it moved, or what it goes with was not deleted"
            };
            out.manifests.insert(mkey, (Done::Skipped, Some(why.into())));
            for t in m.tags.iter().filter(|t| confirmed.contains(*t) && mode == DeleteMode::ByDigest) {
                set_tag(out, t, Done::Skipped, Some(why.into()));
            }
            continue;
        }
        match registry.delete_manifest(repo, &m.digest).await {
            Ok(done) => {
                let done = if done == Deleted::Done { Done::Deleted } else { Done::Gone };
                out.manifests.insert(mkey, (done, None));
                deleted.insert(m.digest.clone());
                if mode == DeleteMode::ByDigest {
                    for t in &m.tags {
                        if !out.tags.contains_key(&key(t)) {
                            set_tag(out, t, Done::Deleted, None);
                        }
                    }
                }
            }
            Err(e) if is_refusal(&e) => return Err(e),
            Err(e) => {
                out.manifests.insert(mkey, (Done::Failed, Some(e.to_string())));
                if mode == DeleteMode::ByDigest {
                    for t in &m.tags {
                        set_tag(out, t, Done::Failed, Some(e.to_string()));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_is_what_copy_mappings_write_and_nothing_warm() {
        // Checks `{registry}` as one path component, a warm prefix and the ledger excluded even
        // under a copy prefix, and repositories outside every mapping left out.
        let cfg = Config::parse(
            "target: myacr.azurecr.io\nmappings:\n  - {source: mcr.microsoft.com, target: aks-managed-repository, mode: warm}\n  \
             - {source: quay.io, target: team/cache, mode: warm}\n  - {source: \"*\", target: \"team/{registry}\", mode: copy}\n\
             warmLedger: {repository: team/ledger}\n",
            std::path::Path::new("m.yaml"),
        )
        .unwrap();
        let s = Scope::of(&cfg).unwrap();
        let h = "myacr.azurecr.io";
        assert!(s.includes(h, "team/docker.io/library/nginx"));
        assert!(s.includes(h, "team/ghcr.io"));
        assert!(!s.includes(h, "team/cache/prometheus/prometheus"), "warm target");
        assert!(!s.includes(h, "team/ledger"), "warm ledger");
        assert!(!s.includes(h, "aks-managed-repository/oss/pause"));
        assert!(!s.includes(h, "other/app"));
        assert!(!s.includes(h, "teamx/docker.io/app"));
        assert!(!s.includes(h, "team/UPPER/case"), "not a repository name");
    }

    #[test]
    fn tag_names_follow_the_distribution_grammar() {
        // Checks that only names the grammar allows are ever put in a delete URL.
        assert!(valid_tag("v1.2.3-rc_1") && valid_tag("_x") && valid_tag(&"a".repeat(128)));
        assert!(
            !valid_tag("") && !valid_tag(".x") && !valid_tag("-x") && !valid_tag("a/b") && !valid_tag("a\u{1b}[2J")
        );
        assert!(!valid_tag(&"a".repeat(129)));
    }
}
