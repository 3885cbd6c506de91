//! Copying one image graph into a target repository.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::future::try_join_all;
use serde::Serialize;

use super::blob::{self, BlobMove};
use super::{Context, Options, TargetState, TransferError};
use crate::digest::Digest;
use crate::manifest::{Descriptor, IndexPolicy, Manifest, OCI_INDEX, REFERRER_DEPTH, rewrite_index, select_platforms};
use crate::reference::Reference;
use crate::registry::Registry;

/// What a copy did.
#[derive(Debug, Clone, Serialize)]
pub struct Copied {
    pub source: String,
    pub target: String,
    pub source_digest: Digest,
    /// Equal to the source digest except under the `rewrite` policy.
    pub target_digest: Digest,
    pub media_type: String,
    /// The index policy applied, when the image is an index.
    pub index_policy: Option<IndexPolicy>,
    /// Platforms whose manifests are in the target.
    pub platforms: Vec<String>,
    /// Platforms of the source index left out.
    pub skipped_platforms: Vec<String>,
    /// The target already had this digest at the tag: nothing was written.
    pub unchanged: bool,
    pub referrers: usize,
}

/// One side of a copy: a registry and a repository in it.
#[derive(Clone)]
pub struct Endpoint {
    pub registry: Arc<Registry>,
    pub repo: String,
}

/// Copies `src_ref` to `dst_ref`: blobs, then children, then referrers, then the tag. A push the
/// target refuses as a pull-through cache does comes back as [`TransferError::CacheRule`].
pub async fn copy_image(
    ctx: &Arc<Context>,
    src: Arc<Registry>,
    src_ref: &Reference,
    dst: Arc<Registry>,
    dst_ref: &Reference,
    opts: &Options,
) -> Result<Copied, TransferError> {
    copy_graph(ctx, src, src_ref, dst, dst_ref, opts).await.map_err(|e| e.explain_cache_rule(&dst_ref.to_string()))
}

async fn copy_graph(
    ctx: &Arc<Context>,
    src: Arc<Registry>,
    src_ref: &Reference,
    dst: Arc<Registry>,
    dst_ref: &Reference,
    opts: &Options,
) -> Result<Copied, TransferError> {
    let s = Endpoint { registry: src, repo: src_ref.repository.clone() };
    let d = Endpoint { registry: dst, repo: dst_ref.repository.clone() };
    let top = s.registry.get_manifest(&s.repo, &src_ref.selector()).await?;
    // Where the top manifest goes: the target's tag, else its digest.
    let target_tag = dst_ref.tag.clone();

    let mut copied = Copied {
        source: src_ref.to_string(),
        target: dst_ref.to_string(),
        source_digest: top.digest.clone(),
        target_digest: top.digest.clone(),
        media_type: top.media_type.clone(),
        index_policy: None,
        platforms: Vec::new(),
        skipped_platforms: Vec::new(),
        unchanged: false,
        referrers: 0,
    };

    // The manifests whose referrers go along: the chosen children of an index, and the top;
    // and what was found for each (nothing when referrers are not copied).
    let mut subjects: Vec<Digest> = Vec::new();
    let discovered: Vec<Found>;
    let to_push = if top.is_index() {
        let policy = if opts.platforms.is_empty() { IndexPolicy::Preserve } else { opts.index_policy };
        copied.index_policy = Some(policy);
        let chosen = select_platforms(&top, if policy == IndexPolicy::Preserve { &[] } else { &opts.platforms });
        let kept: HashSet<&Digest> = chosen.iter().map(|c| &c.digest).collect();
        let skipped: Vec<&Descriptor> =
            select_platforms(&top, &[]).into_iter().filter(|c| !kept.contains(&c.digest)).collect();
        if chosen.is_empty() {
            return Err(TransferError::Refused {
                target: dst_ref.to_string(),
                message: format!(
                    "no platform of {} matches {}",
                    src_ref,
                    opts.platforms.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        copied.platforms = chosen.iter().map(|c| platform_name(c)).collect();
        copied.skipped_platforms = skipped.iter().map(|c| platform_name(c)).collect();
        let index = match policy {
            IndexPolicy::Rewrite => rewrite_index(&top, &chosen)
                .map_err(|e| TransferError::Refused { target: top.digest.to_string(), message: e.to_string() })?,
            _ => top.clone(),
        };
        copied.target_digest = index.digest.clone();
        if opts.target_state == TargetState::Unknown && already_there(&d, target_tag.as_deref(), &index).await? {
            copied.unchanged = true;
            return Ok(copied);
        }
        subjects.extend(chosen.iter().map(|c| c.digest.clone()));
        subjects.push(top.digest.clone());
        let (found, _) = futures::future::try_join(
            discover_all(&s, &subjects, opts),
            try_join_all(chosen.iter().map(|c| copy_child(ctx, &s, &d, c, opts))),
        )
        .await?;
        discovered = found;
        index
    } else {
        if opts.target_state == TargetState::Unknown && already_there(&d, target_tag.as_deref(), &top).await? {
            copied.unchanged = true;
            return Ok(copied);
        }
        subjects.push(top.digest.clone());
        let (found, ()) = futures::future::try_join(discover_all(&s, &subjects, opts), copy_blobs(ctx, &s, &d, &top, opts)).await?;
        discovered = found;
        top.clone()
    };
    // Every subject's referrers at once (one after another cost a round trip per child), found
    // while the blobs moved: looking them up after the blobs put those round trips between the
    // last byte and the tag.
    let found = try_join_all(
        subjects.iter().zip(discovered).map(|(subject, found)| copy_found(ctx, &s, &d, subject, found, REFERRER_DEPTH, opts)),
    )
    .await?;
    copied.referrers += found.iter().sum::<usize>();
    let reference = target_tag.unwrap_or_else(|| to_push.digest.to_string());
    match d.registry.put_manifest(&d.repo, &reference, &to_push).await {
        Ok(_) => {}
        Err(e) if copied.index_policy == Some(IndexPolicy::Sparse) && e.status() == Some(400) => {
            return Err(TransferError::SparseRefused { target: dst_ref.to_string(), detail: e.to_string() });
        }
        Err(e) => return Err(e.into()),
    }
    ctx.stats.manifests_pushed.fetch_add(1, Ordering::Relaxed);
    Ok(copied)
}

/// Whether the target already has exactly this manifest at the tag (or by digest).
async fn already_there(d: &Endpoint, tag: Option<&str>, m: &Manifest) -> Result<bool, TransferError> {
    let reference = tag.map(String::from).unwrap_or_else(|| m.digest.to_string());
    Ok(d.registry.head_manifest(&d.repo, &reference).await?.is_some_and(|h| h.digest == m.digest))
}

fn platform_name(c: &Descriptor) -> String {
    c.platform.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "unknown".into())
}

/// Copies one child manifest of an index (by digest), unless the target has it already (asked
/// only where the [`TargetState`] says it may, and is not known to lack something under it).
async fn copy_child(
    ctx: &Arc<Context>,
    s: &Endpoint,
    d: &Endpoint,
    child: &Descriptor,
    opts: &Options,
) -> Result<(), TransferError> {
    let digest = child.digest.to_string();
    let ask = matches!(opts.target_state, TargetState::Unknown | TargetState::Stale);
    if ask {
        // ACR's listing of the repository, which the plan read, has every manifest in it: it
        // answers without a `HEAD` per child.
        let there = match d.registry.listed_manifest(&d.repo, &child.digest) {
            Some(listed) => listed,
            None => d.registry.head_manifest(&d.repo, &digest).await?.is_some_and(|h| h.digest == child.digest),
        };
        if there {
            return Ok(());
        }
    }
    let m = s.registry.get_manifest(&s.repo, &digest).await?;
    if m.is_index() {
        // Nested indexes are rare but legal: copy them whole.
        try_join_all(select_platforms(&m, &[]).into_iter().map(|c| Box::pin(copy_child(ctx, s, d, c, opts)))).await?;
    } else {
        copy_blobs(ctx, s, d, &m, opts).await?;
    }
    d.registry.put_manifest(&d.repo, &digest, &m).await?;
    ctx.stats.manifests_pushed.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Every blob of an image manifest, concurrently under the context's bound.
pub async fn copy_blobs(
    ctx: &Arc<Context>,
    s: &Endpoint,
    d: &Endpoint,
    m: &Manifest,
    opts: &Options,
) -> Result<(), TransferError> {
    try_join_all(m.blobs().map(|desc| {
        blob::ensure(
            ctx,
            BlobMove {
                src: s.registry.clone(),
                src_repo: s.repo.clone(),
                dst: d.registry.clone(),
                dst_repo: d.repo.clone(),
                desc: desc.clone(),
                counter: opts.bytes.clone(),
            },
        )
    }))
    .await?;
    Ok(())
}

/// What the source holds that refers to one subject: OCI referrers, and cosign's tags for it.
#[derive(Default)]
struct Found {
    referrers: Vec<Descriptor>,
    cosign_tags: Vec<String>,
}

/// Looks up the referrers and cosign tags of one subject (in this order: a registry without the
/// referrers API is then asked for its tag list once, by the first).
async fn discover(s: &Endpoint, subject: &Digest) -> Result<Found, TransferError> {
    let referrers = s.registry.referrers(&s.repo, subject).await?.descriptors;
    let cosign_tags = s.registry.cosign_tags(&s.repo, subject).await?;
    Ok(Found { referrers, cosign_tags })
}

/// [`discover`] for every subject at once, or nothing found for each when referrers are not copied.
async fn discover_all(s: &Endpoint, subjects: &[Digest], opts: &Options) -> Result<Vec<Found>, TransferError> {
    if !opts.referrers {
        return Ok(subjects.iter().map(|_| Found::default()).collect());
    }
    try_join_all(subjects.iter().map(|subject| discover(s, subject))).await
}

/// Copies the referrers of `subject` (signatures, SBOMs) and, where the target has no referrers
/// API, records them in the tag schema index `sha256-<hex>`; cosign's signature tags of `subject`
/// go along. Returns how many were copied.
async fn copy_referrers(
    ctx: &Arc<Context>,
    s: &Endpoint,
    d: &Endpoint,
    subject: &Digest,
    depth: u32,
    opts: &Options,
) -> Result<usize, TransferError> {
    if depth == 0 {
        return Ok(0);
    }
    let found = discover(s, subject).await?;
    copy_found(ctx, s, d, subject, found, depth, opts).await
}

/// The copying half of [`copy_referrers`], for what [`discover`] found.
async fn copy_found(
    ctx: &Arc<Context>,
    s: &Endpoint,
    d: &Endpoint,
    subject: &Digest,
    found: Found,
    depth: u32,
    opts: &Options,
) -> Result<usize, TransferError> {
    if depth == 0 {
        return Ok(0);
    }
    let mut n = copy_cosign_tags(ctx, s, d, &found.cosign_tags, opts).await?;
    if found.referrers.is_empty() {
        return Ok(n);
    }
    let mut by_tag: Vec<Descriptor> = Vec::new();
    for r in &found.referrers {
        let m = s.registry.get_manifest(&s.repo, r.digest.as_str()).await?;
        if m.is_index() {
            try_join_all(select_platforms(&m, &[]).into_iter().map(|c| copy_child(ctx, s, d, c, opts))).await?;
        } else {
            copy_blobs(ctx, s, d, &m, opts).await?;
        }
        n += Box::pin(copy_referrers(ctx, s, d, &m.digest, depth - 1, opts)).await?;
        let pushed = d.registry.put_manifest(&d.repo, r.digest.as_str(), &m).await?;
        ctx.stats.manifests_pushed.fetch_add(1, Ordering::Relaxed);
        if pushed.oci_subject.is_none() {
            by_tag.push(r.clone());
        }
        n += 1;
    }
    if !by_tag.is_empty() {
        update_referrers_tag(ctx, d, subject, by_tag).await?;
    }
    Ok(n)
}

/// Copies cosign's `sha256-<hex>.sig`, `.att` and `.sbom` tags of `subject` where the target's tag
/// differs (cosign adds a signature by replacing the tag's manifest, so a changed one is copied
/// again). They are plain tags, not referrers: the manifest goes to the same tag in the target.
async fn copy_cosign_tags(
    ctx: &Arc<Context>,
    s: &Endpoint,
    d: &Endpoint,
    tags: &[String],
    opts: &Options,
) -> Result<usize, TransferError> {
    let mut n = 0;
    for tag in tags {
        let m = s.registry.get_manifest(&s.repo, tag).await?;
        if opts.target_state != TargetState::Empty && already_there(d, Some(tag), &m).await? {
            continue;
        }
        if m.is_index() {
            try_join_all(select_platforms(&m, &[]).into_iter().map(|c| copy_child(ctx, s, d, c, opts))).await?;
        } else {
            copy_blobs(ctx, s, d, &m, opts).await?;
        }
        d.registry.put_manifest(&d.repo, tag, &m).await?;
        ctx.stats.manifests_pushed.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    Ok(n)
}

/// Merges descriptors into the target's tag schema index for `subject`.
async fn update_referrers_tag(
    ctx: &Arc<Context>,
    d: &Endpoint,
    subject: &Digest,
    add: Vec<Descriptor>,
) -> Result<(), TransferError> {
    let existing = d.registry.referrers_by_tag(&d.repo, subject).await?;
    let mut entries: Vec<serde_json::Value> = match &existing {
        Some(m) => serde_json::from_slice::<serde_json::Value>(&m.bytes)
            .ok()
            .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let have: BTreeSet<String> =
        entries.iter().filter_map(|e| e.get("digest").and_then(|d| d.as_str()).map(String::from)).collect();
    let before = entries.len();
    for desc in add {
        if !have.contains(desc.digest.as_str()) {
            entries.push(serde_json::to_value(&desc).expect("descriptor serialises"));
        }
    }
    if entries.len() == before {
        return Ok(());
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    let m = Manifest::from_bytes(Bytes::from(serde_json::to_vec(&index).expect("JSON serialises")), Some(OCI_INDEX))
        .map_err(|e| TransferError::Refused { target: d.repo.clone(), message: e.to_string() })?;
    d.registry.put_manifest(&d.repo, &subject.referrers_tag(), &m).await?;
    ctx.stats.manifests_pushed.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
