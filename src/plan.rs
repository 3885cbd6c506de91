//! The diff between the image set and the target: what `sync` would do, without writing.
//!
//! It is built to be cheap when there is nothing to do, because a nightly job mostly finds
//! nothing to do: the target is listed once per repository (ACR's `/acr/v1/{repo}/_manifests`
//! gives the digests with the tag names, and every manifest by digest; elsewhere `/v2/…/tags/list` and a `HEAD` for each needed tag that
//! exists), and the source is asked once per tag (`HEAD`, for its digest). Only images that need
//! work have their manifests read, to count the bytes to move.
//!
//! A tag pointing at the right digest is taken as complete: registries refuse a manifest whose
//! blobs are missing. A pull-through cache breaks that rule (it keeps only what was pulled), so
//! `--deep` (and `verify`, always) also checks every selected child manifest and blob.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use crate::config::MappingMode;
use crate::digest::Digest;
use crate::manifest::{
    Descriptor, IndexPolicy, Manifest, PlatformFilter, REFERRER_DEPTH, rewrite_index, select_platforms,
};
use crate::reference::Reference;
use crate::registry::tags::TagListing;
use crate::registry::{Registries, Registry, RegistryError};
use crate::ledger::{Entry, Ledgers};

mod signatures;
pub use signatures::{Gate, GateFor, SignatureCheck};

/// Requests in flight while planning (HEADs and listings are small).
const PLAN_CONCURRENCY: usize = 32;

/// One image the set needs: where it comes from, where it goes, how.
#[derive(Debug, Clone, Serialize)]
pub struct Wanted {
    pub source: Reference,
    pub target: Reference,
    pub mode: MappingMode,
    /// Platforms to carry; empty means all.
    pub platforms: Vec<PlatformFilter>,
    /// Found only outside pod specs (an operator's variable, flag, ConfigMap or OLM bundle; see
    /// `imageset::ImageEntry::injected`): with no manifest for any of `platforms` it is skipped.
    pub injected: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The target has the image at the tag, with the source's digest.
    Present,
    /// The target has no such tag.
    Missing,
    /// The target's tag points elsewhere than the source's tag now does.
    Outdated,
    /// The tag is right but platforms, blobs or referrers are missing behind it (found by deep checks).
    Partial,
    /// The image could not be examined (source unreachable, tag gone, …).
    Error,
    /// An injected image with no manifest for any configured platform (a Windows-only helper an
    /// operator names, in a Linux-only config): not needed, so not copied and not failed.
    /// `error` says why.
    Skipped,
}

impl Status {
    pub fn needs_work(self) -> bool {
        matches!(self, Status::Missing | Status::Outdated | Status::Partial)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Present => "present",
            Status::Missing => "missing",
            Status::Outdated => "outdated",
            Status::Partial => "partial",
            Status::Error => "error",
            Status::Skipped => "skipped",
        })
    }
}

/// What the plan found for one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub source: String,
    pub target: String,
    pub mode: MappingMode,
    pub status: Status,
    pub source_digest: Option<Digest>,
    /// What the target tag points at now, if anything.
    pub target_digest: Option<Digest>,
    /// The digest the target tag should point at (differs from the source under `rewrite`).
    pub expected_digest: Option<Digest>,
    /// For `partial`: what is missing behind the tag.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Bytes this image adds to the transfer (blobs shared with an image earlier in the plan, or
    /// mountable from another repository of the target, count as zero).
    pub bytes_to_move: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What kind of error `error` is ([`RegistryError::kind`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<&'static str>,
    /// The target repository has no tags at all: no child manifest of this image can be there
    /// yet, so the copy need not ask for each one first (blobs it asks for anyway: a killed run
    /// leaves blobs that no tag shows).
    #[serde(skip)]
    pub target_repo_empty: bool,
    /// What the provenance gate found (`signatures:`); `None` when there is no gate or it did
    /// not look at this image (see [`Gate::applies`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureCheck>,
    /// The source manifest's media type and size, when the plan read them anyway: the
    /// descriptor a signature must name.
    #[serde(skip)]
    pub source_descriptor: Option<(String, u64)>,
    #[serde(skip)]
    pub wanted: Wanted,
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub images: Vec<ImagePlan>,
    pub bytes_to_move: u64,
    /// The warm ledgers the plan consulted; `sync` records its completed warms in them.
    #[serde(skip)]
    pub ledgers: Ledgers,
}

impl Plan {
    /// `N images: a present, b missing, c outdated, d partial, e could not be examined`.
    pub fn counts(&self) -> String {
        format!(
            "{} images: {} present, {} missing, {} outdated, {} partial, {} could not be examined, {} skipped",
            self.images.len(),
            self.count(Status::Present),
            self.count(Status::Missing),
            self.count(Status::Outdated),
            self.count(Status::Partial),
            self.count(Status::Error),
            self.count(Status::Skipped)
        )
    }

    pub fn count(&self, status: Status) -> usize {
        self.images.iter().filter(|i| i.status == status).count()
    }
    /// Every image is present, or skipped as not needed.
    pub fn in_sync(&self) -> bool {
        self.images.iter().all(|i| matches!(i.status, Status::Present | Status::Skipped))
    }
}

/// Options for planning.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub index_policy: IndexPolicy,
    /// Check every selected child manifest and blob behind a present tag.
    pub deep: bool,
    /// With `deep`, also check that the source's referrers of copy-mode images (OCI referrers,
    /// as deep as the copy follows them, and cosign's signature tags) are in the target: a
    /// cluster that admits only signed images needs the signatures next to them.
    pub referrers: bool,
    /// Skip counting the bytes to move. `sync` does: the copy looks at every blob anyway, and
    /// counting first would cost a read of every source manifest and a `HEAD` per blob twice.
    pub skip_bytes: bool,
    /// The warm ledger's repository (`warmLedger.repository`); `None`: no ledger consulted.
    pub warm_ledger: Option<String>,
    /// Leave the source's digest of a warm image whose target has no ACR listing to the warm
    /// itself. `sync` does: such an image is warmed whatever the plan finds, and the warm asks
    /// the source next to its first request to the cache, where the plan's `HEAD` would hold
    /// every warm back by a round trip to the source per image (70 images: three rounds of 32).
    pub defer_unlisted_warm: bool,
    /// The provenance gate, when `signatures.mode` is not `off`.
    pub signatures: Option<Arc<Gate>>,
}

/// Diffs `wanted` against the targets.
pub async fn plan(registries: &Registries, wanted: &[Wanted], opts: &PlanOptions) -> Result<Plan, RegistryError> {
    // 1. The target, once per repository.
    let mut repos: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, w) in wanted.iter().enumerate() {
        repos.entry((w.target.registry.clone(), w.target.repository.clone())).or_default().push(i);
    }
    let listings = futures::stream::iter(repos.keys().cloned())
        .map(|(host, repo)| async move {
            let r = match registries.get(&host) {
                Ok(reg) => reg.list_tag_digests(&repo).await,
                Err(e) => Err(e),
            };
            ((host, repo), r)
        })
        .buffer_unordered(PLAN_CONCURRENCY)
        .collect::<Vec<((String, String), Result<TagListing, RegistryError>)>>();
    // Meanwhile each source registry is greeted (`/v2/`, and the connection that comes with it),
    // which its first request below would otherwise wait for after the listings: two or three
    // round trips off every run on a far link. A failure is remembered and reported by that
    // first request.
    let sources: std::collections::BTreeSet<&str> = wanted.iter().map(|w| w.source.registry.as_str()).collect();
    let greet = futures::future::join_all(sources.into_iter().map(|host| async move {
        if let Ok(reg) = registries.get(host) {
            reg.greet().await;
        }
    }));
    let (listings, _) = futures::join!(listings, greet);
    let mut listing: HashMap<(String, String), TagListing> = HashMap::new();
    for (key, r) in listings {
        // A target we cannot list is a run-level error: nothing about it can be trusted.
        listing.insert(key, r?);
    }

    // 2. Each image: source digest, target digest, status.
    let mut images: Vec<ImagePlan> = futures::stream::iter(wanted.iter().cloned())
        .map(|w| {
            let l = listing.get(&(w.target.registry.clone(), w.target.repository.clone())).cloned().unwrap_or_default();
            async move { examine(registries, w, &l, opts).await }
        })
        .buffered(PLAN_CONCURRENCY)
        .collect()
        .await;
    let ledgers = consult_ledgers(registries, &listing, &mut images, opts).await?;

    if opts.skip_bytes {
        return Ok(Plan { images, bytes_to_move: 0, ledgers });
    }
    // 3. Bytes to move for images that need work, each blob counted once per target registry.
    //    Concurrent like the steps above: the source manifests of every such image are read at
    //    once, blobs are then claimed in plan order (a shared blob counts for the first image
    //    that needs it), and the claimed blobs are looked up in the target at once. Done one
    //    round trip after another, this step took 29 s of a 41 s run at 40 ms per round trip.
    let work: Vec<usize> = (0..images.len()).filter(|&n| images[n].status.needs_work()).collect();
    let fetched: Vec<Result<Vec<Manifest>, RegistryError>> = futures::stream::iter(work.iter().map(|&n| &images[n]))
        .map(|img| source_manifests(registries, img, opts))
        .buffered(PLAN_CONCURRENCY)
        .collect()
        .await;
    let mut counted: HashSet<(String, Digest)> = HashSet::new();
    let mut claims: Vec<(usize, Descriptor)> = Vec::new();
    for (&n, r) in work.iter().zip(fetched) {
        match r {
            Ok(manifests) => {
                let host = images[n].wanted.target.registry.clone();
                for b in manifests.iter().flat_map(|m| m.blobs()) {
                    if counted.insert((host.clone(), b.digest.clone())) {
                        claims.push((n, b.clone()));
                    }
                }
            }
            Err(e) => {
                images[n].status = Status::Error;
                images[n].error = Some(e.to_string());
                images[n].error_kind = Some(e.kind());
            }
        }
    }
    let sized: Vec<(usize, Result<u64, RegistryError>)> = futures::stream::iter(claims)
        .map(|(n, b)| {
            let w = &images[n].wanted;
            async move { (n, missing_bytes(registries, w, &b).await) }
        })
        .buffer_unordered(PLAN_CONCURRENCY)
        .collect()
        .await;
    for (n, r) in sized {
        match r {
            Ok(b) => images[n].bytes_to_move += b,
            Err(e) => {
                images[n].status = Status::Error;
                images[n].error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let total = images.iter().filter(|i| i.status.needs_work()).map(|i| i.bytes_to_move).sum();
    Ok(Plan { images, bytes_to_move: total, ledgers })
}

/// Warm ledger hook: a warm image that ACR lists with the expected digest is `partial` until the
/// ledger of its registry records its completed warm (see [`crate::ledger`]). Only
/// registries with ACR's listing are asked: elsewhere warm images are warmed on every run anyway.
async fn consult_ledgers(
    registries: &Registries,
    listing: &HashMap<(String, String), TagListing>,
    images: &mut [ImagePlan],
    opts: &PlanOptions,
) -> Result<Ledgers, RegistryError> {
    let Some(repository) = &opts.warm_ledger else { return Ok(Ledgers::default()) };
    let listed_warm = |i: &ImagePlan| i.mode == MappingMode::Warm && i.status == Status::Present;
    let hosts: Vec<String> = images
        .iter()
        .filter(|i| listed_warm(i))
        .map(|i| &i.wanted.target)
        .filter(|t| listing.get(&(t.registry.clone(), t.repository.clone())).is_some_and(|l| l.with_digests))
        .map(|t| t.registry.clone())
        .collect();
    let ledgers = Ledgers::open(registries, hosts.iter().map(String::as_str), repository).await?;
    for img in images.iter_mut().filter(|i| listed_warm(i)) {
        let Some(digest) = &img.expected_digest else { continue };
        let w = &img.wanted;
        let entry = Entry { repository: &w.target.repository, digest, platforms: &w.platforms };
        if let Some(missing) = ledgers.lacks(&w.target.registry, &entry) {
            img.status = Status::Partial;
            img.missing.push(missing);
        }
    }
    Ok(ledgers)
}

async fn examine(registries: &Registries, w: Wanted, listing: &TagListing, opts: &PlanOptions) -> ImagePlan {
    let mut p = ImagePlan {
        source: w.source.to_string(),
        target: w.target.to_string(),
        mode: w.mode,
        status: Status::Error,
        source_digest: None,
        target_digest: None,
        expected_digest: None,
        missing: Vec::new(),
        bytes_to_move: 0,
        error: None,
        error_kind: None,
        target_repo_empty: listing.tags.is_empty() && listing.manifests.as_ref().is_none_or(|m| m.is_empty()),
        signature: None,
        source_descriptor: None,
        wanted: w.clone(),
    };
    let mut result = examine_inner(registries, &w, listing, opts, &mut p).await;
    if let (Ok(status), Some(gate)) = (&result, &opts.signatures)
        && gate.applies(*status)
    {
        result = check_signature(registries, gate, opts.referrers, &mut p).await.map(|()| *status);
    }
    match result {
        Ok(status) => p.status = status,
        Err(e) => {
            p.status = Status::Error;
            p.error = Some(e.to_string());
            p.error_kind = Some(e.kind());
        }
    }
    p
}

/// The provenance gate for one image: the signatures of the source digest, judged. `referrers`:
/// the copy that may follow takes the image's referrers along (see [`Gate::check`]).
async fn check_signature(
    registries: &Registries,
    gate: &Gate,
    referrers: bool,
    p: &mut ImagePlan,
) -> Result<(), RegistryError> {
    let w = &p.wanted;
    let Some(digest) = p.source_digest.clone() else { return Ok(()) };
    // The source manifest, when it had to be read for its descriptor (a reference pinned by
    // digest): the copy that follows reads it by the same digest.
    let mut read = None;
    let (media_type, size) = match (gate.covers(w), p.source_descriptor.clone()) {
        (false, _) => (String::new(), 0),
        (true, Some(known)) => known,
        (true, None) => {
            let src = registries.get(&w.source.registry)?;
            let m = src.get_manifest(&w.source.repository, digest.as_str()).await?;
            let descriptor = (m.media_type.clone(), m.bytes.len() as u64);
            read = Some((src, m));
            descriptor
        }
    };
    let subject = crate::provenance::Subject { media_type, digest: digest.to_string(), size };
    let check = gate.check(registries, w, subject, referrers).await?;
    if let Some((src, m)) = read
        && gate.copy_follows(w, &check)
    {
        src.read_ahead(&w.source.repository, &m);
    }
    p.signature = Some(check);
    Ok(())
}

async fn examine_inner(
    registries: &Registries,
    w: &Wanted,
    listing: &TagListing,
    opts: &PlanOptions,
    p: &mut ImagePlan,
) -> Result<Status, RegistryError> {
    let src = registries.get(&w.source.registry)?;
    let dst = registries.get(&w.target.registry)?;
    // The source manifest when it was read for the check below (then it also gives the digest).
    let mut read: Option<Manifest> = None;
    if w.injected && !w.platforms.is_empty() {
        // An image an operator names may be for platforms the cluster does not run (its
        // Windows helper). Such an image is skipped here, the one place that decides it; an
        // image a pod spec names goes on and fails in the copy, as a cluster could not run it.
        let top = src.get_manifest(&w.source.repository, &w.source.selector()).await?;
        if top.is_index() && select_platforms(&top, &w.platforms).is_empty() {
            let has: Vec<String> =
                select_platforms(&top, &[]).iter().filter_map(|c| c.platform.as_ref()).map(|p| p.to_string()).collect();
            let want: Vec<String> = w.platforms.iter().map(|p| p.to_string()).collect();
            p.source_digest = Some(top.digest.clone());
            p.error = Some(format!(
                "skipped: no manifest for {} (the image has {}); it is named only outside pod specs (an operator's variable, flag, ConfigMap or OLM bundle)",
                want.join(", "),
                if has.is_empty() { "no platforms".to_string() } else { has.join(", ") }
            ));
            return Ok(Status::Skipped);
        }
        read = Some(top);
    }
    // See the early return below: without ACR's listing a warm image is missing whatever the
    // target answers.
    let unlisted_warm = w.mode == MappingMode::Warm && !listing.with_digests && !opts.deep;
    // A warm the gate covers needs the source's digest now: its signature is checked before
    // anything is read through the cache.
    let gated = opts.signatures.as_ref().is_some_and(|g| g.covers(w));
    if unlisted_warm && opts.defer_unlisted_warm && !gated {
        return Ok(Status::Missing);
    }
    let rewrite = w.mode == MappingMode::Copy && opts.index_policy == IndexPolicy::Rewrite && !w.platforms.is_empty();
    // A target tag listed without a digest (distribution's listing) needs a `HEAD` that does not
    // depend on the source's answer: it goes out beside the source's, one round trip per image
    // instead of two in a row.
    let listed_tag = w.target.tag.as_ref().filter(|t| !unlisted_warm && matches!(listing.tags.get(*t), Some(None)));
    let target_head = async {
        match listed_tag {
            Some(t) => dst.head_manifest(&w.target.repository, t).await.map(|h| Some(h.map(|h| h.digest))),
            None => Ok(None),
        }
    };
    // The source's digest: from the reference when pinned, else one HEAD (a GET under rewrite,
    // whose expected digest is that of the index we would build).
    let source_digest = async {
        Ok::<_, RegistryError>(match (&w.source.digest, rewrite) {
        (Some(d), false) => d.clone(),
        _ if rewrite => {
            let m = match read {
                Some(m) => m,
                None => src.get_manifest(&w.source.repository, &w.source.selector()).await?,
            };
            src.read_ahead(&w.source.repository, &m);
            p.expected_digest = Some(expected_rewrite(&m, &w.platforms).map_err(|e| RegistryError::Protocol {
                registry: src.host.clone(),
                message: format!("{}: {e}", w.source),
            })?);
            p.source_descriptor = Some((m.media_type.clone(), m.bytes.len() as u64));
            m.digest
        }
        _ => {
            // A copy whose target tag is not listed will read the source manifest anyway: read
            // it now instead of a HEAD, and hand it to the copy (the same round trip, once
            // instead of twice). A listed tag is probably right, so a HEAD is enough.
            let unlisted_copy =
                w.mode == MappingMode::Copy && w.target.tag.as_ref().is_some_and(|t| !listing.tags.contains_key(t));
            let read = match read {
                Some(m) => Some(m),
                None if unlisted_copy => {
                    Some(src.get_manifest(&w.source.repository, &w.source.selector()).await.map_err(|e| {
                        if e.is_not_found() { RegistryError::no_such_image(&src.host, &w.source.to_string()) } else { e }
                    })?)
                }
                None => None,
            };
            match read {
                Some(m) => {
                    src.read_ahead(&w.source.repository, &m);
                    p.source_descriptor = Some((m.media_type.clone(), m.bytes.len() as u64));
                    m.digest
                }
                None => match src.head_manifest(&w.source.repository, &w.source.selector()).await? {
                    Some(h) => {
                        p.source_descriptor = h.size.map(|size| (h.media_type.clone(), size));
                        h.digest
                    }
                    None => return Err(RegistryError::no_such_image(&src.host, &w.source.to_string())),
                },
            }
        },
    })
    };
    let (source_digest, target_head) = tokio::join!(source_digest, target_head);
    let (source_digest, mut target_head) = (source_digest?, target_head?);
    p.source_digest = Some(source_digest.clone());
    let expected = p.expected_digest.clone().unwrap_or_else(|| source_digest.clone());
    p.expected_digest = Some(expected.clone());

    // A pull-through cache answers tag lists and HEADs from its upstream, so a plain `/v2/`
    // answer says nothing about what it holds. Only the registry's own record (ACR's listing
    // API) does; without it, warm-mode images are warmed on every run, unless `--deep` checks
    // them one manifest and blob at a time. So no HEAD here: it would say nothing and cost a
    // round trip through the cache to its upstream.
    if unlisted_warm {
        return Ok(Status::Missing);
    }
    let target_selector = w.target.tag.clone().unwrap_or_else(|| expected.to_string());
    let target_digest = if w.target.tag.is_none() {
        // Pushed by digest only: present iff the digest exists (ACR's manifest listing says so
        // without a request).
        match listing.has_manifest(&expected) {
            Some(listed) => listed.then(|| expected.clone()),
            None => dst.head_manifest(&w.target.repository, &target_selector).await?.map(|h| h.digest),
        }
    } else {
        match listing.tags.get(&target_selector) {
            None => None,
            Some(Some(d)) => Some(d.clone()),
            Some(None) => match target_head.take() {
                Some(asked) => asked,
                None => dst.head_manifest(&w.target.repository, &target_selector).await?.map(|h| h.digest),
            },
        }
    };
    p.target_digest = target_digest.clone();
    match target_digest {
        None => Ok(Status::Missing),
        Some(d) if d != expected => Ok(Status::Outdated),
        Some(_) if opts.deep => {
            let deep = deep_missing(&dst, &w.target.repository, &target_selector, &w.platforms, listing).await?;
            p.missing = deep.missing;
            if opts.referrers && w.mode == MappingMode::Copy {
                let subjects = std::iter::once(source_digest).chain(deep.children).collect();
                p.missing.extend(missing_referrers(&src, &dst, w, subjects, listing).await?);
            }
            Ok(if p.missing.is_empty() { Status::Present } else { Status::Partial })
        }
        Some(_) => Ok(Status::Present),
    }
}

/// The digest of the index the copy pushes under `rewrite`: the same function builds both.
fn expected_rewrite(index: &Manifest, platforms: &[PlatformFilter]) -> Result<Digest, crate::manifest::ManifestError> {
    if !index.is_index() {
        return Ok(index.digest.clone());
    }
    Ok(rewrite_index(index, &select_platforms(index, platforms))?.digest)
}

/// What a deep check of one target tag found.
pub struct Deep {
    /// Selected child manifests and blobs the target lacks, described.
    pub missing: Vec<String>,
    /// The selected children of an index (what the copy also carried referrers for).
    pub children: Vec<Digest>,
}

/// What is missing behind a present tag: selected child manifests and blobs. ACR's manifest
/// listing of the repository, when there is one, says a child is missing without a request.
pub async fn deep_missing(
    dst: &Arc<Registry>,
    repo: &str,
    selector: &str,
    platforms: &[PlatformFilter],
    listing: &TagListing,
) -> Result<Deep, RegistryError> {
    let top = dst.get_manifest(repo, selector).await?;
    let mut missing = Vec::new();
    let mut images: Vec<Manifest> = Vec::new();
    let mut children = Vec::new();
    if top.is_index() {
        for c in select_platforms(&top, platforms) {
            children.push(c.digest.clone());
            if listing.has_manifest(&c.digest) == Some(false) {
                missing.push(format!(
                    "manifest {} ({})",
                    c.digest,
                    c.platform.as_ref().map(|p| p.to_string()).unwrap_or_default()
                ));
                continue;
            }
            match dst.get_manifest(repo, c.digest.as_str()).await {
                Ok(m) => images.push(m),
                Err(e) if e.is_not_found() => missing.push(format!(
                    "manifest {} ({})",
                    c.digest,
                    c.platform.as_ref().map(|p| p.to_string()).unwrap_or_default()
                )),
                Err(e) => return Err(e),
            }
        }
    } else {
        images.push(top);
    }
    let mut seen = HashSet::new();
    let blobs: Vec<Descriptor> =
        images.iter().flat_map(|m| m.blobs().cloned()).filter(|d| seen.insert(d.digest.clone())).collect();
    let heads: Vec<(Descriptor, Result<Option<u64>, RegistryError>)> = futures::stream::iter(blobs)
        .map(|d| async move {
            let r = dst.head_blob(repo, &d.digest).await;
            (d, r)
        })
        .buffer_unordered(PLAN_CONCURRENCY)
        .collect()
        .await;
    for (d, r) in heads {
        if r?.is_none() {
            missing.push(format!("blob {}", d.digest));
        }
    }
    missing.sort();
    Ok(Deep { missing, children })
}

/// The source's referrers of `subjects` that the target lacks: OCI referrers by digest (and
/// theirs in turn, as deep as the copy follows them), cosign's signature tags by the digest
/// they point at.
async fn missing_referrers(
    src: &Registry,
    dst: &Registry,
    w: &Wanted,
    subjects: Vec<Digest>,
    listing: &TagListing,
) -> Result<Vec<String>, RegistryError> {
    let (s_repo, d_repo) = (&w.source.repository, &w.target.repository);
    let mut missing = Vec::new();
    let mut queue: Vec<(Digest, u32)> = subjects.into_iter().map(|d| (d, REFERRER_DEPTH)).collect();
    while let Some((subject, depth)) = queue.pop() {
        for r in src.referrers(s_repo, &subject).await?.descriptors {
            let present = match listing.has_manifest(&r.digest) {
                Some(listed) => listed,
                None => dst.head_manifest(d_repo, r.digest.as_str()).await?.is_some(),
            };
            if !present {
                missing.push(format!("referrer {} of {subject}", r.digest));
            }
            if depth > 1 {
                queue.push((r.digest, depth - 1));
            }
        }
        for tag in src.cosign_tags(s_repo, &subject).await? {
            let want = src.head_manifest(s_repo, &tag).await?.map(|h| h.digest);
            let have = match listing.tags.get(&tag) {
                None => None,
                Some(Some(d)) => Some(d.clone()),
                Some(None) => dst.head_manifest(d_repo, &tag).await?.map(|h| h.digest),
            };
            if want.is_some() && have != want {
                missing.push(format!("cosign tag {tag}"));
            }
        }
    }
    missing.sort();
    Ok(missing)
}

/// The source manifests whose blobs an image would move: the selected children of an index
/// (every child under `preserve`), or the image manifest itself.
async fn source_manifests(
    registries: &Registries,
    img: &ImagePlan,
    opts: &PlanOptions,
) -> Result<Vec<Manifest>, RegistryError> {
    let w = &img.wanted;
    let src = registries.get(&w.source.registry)?;
    // By the digest the plan saw: a manifest the plan already read is then not asked again.
    let selector = img.source_digest.as_ref().map(|d| d.to_string()).unwrap_or_else(|| w.source.selector());
    let top = src.get_manifest(&w.source.repository, &selector).await?;
    if !top.is_index() {
        return Ok(vec![top]);
    }
    let all_platforms = w.mode == MappingMode::Copy && opts.index_policy == IndexPolicy::Preserve;
    let pick = if all_platforms { Vec::new() } else { w.platforms.clone() };
    futures::future::try_join_all(
        select_platforms(&top, &pick).into_iter().map(|c| src.get_manifest(&w.source.repository, c.digest.as_str())),
    )
    .await
}

/// The bytes of blob `b` if the image's target repository lacks it (always, when warming: the
/// cache reads it anyway).
async fn missing_bytes(registries: &Registries, w: &Wanted, b: &Descriptor) -> Result<u64, RegistryError> {
    if w.mode == MappingMode::Copy {
        let dst = registries.get(&w.target.registry)?;
        if dst.head_blob(&w.target.repository, &b.digest).await?.is_some() {
            return Ok(0);
        }
    }
    Ok(b.size)
}
