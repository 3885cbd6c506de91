//! Warming a pull-through cache: read the whole image through the target path so the cache
//! fetches and keeps it, and write nothing.
//!
//! ACR refuses pushes into a cache rule's repositories (<https://github.com/Azure/acr/issues/686>), and a cache holds
//! only what was pulled through it — one platform's blobs if a node pulled one platform. So
//! warming pulls the manifest, every selected child manifest and every blob of each, and checks
//! each against the source's digest: the cache must serve the same bytes the source has.
//! Then it re-checks, within `transfer.warmRecheckSeconds`, that ACR serves every one of those
//! manifests from the registry itself and no longer from upstream ([`recheck_origin`]) — those
//! whose `GET` said `X-Azure-Origin: upstream`; the others the cache already serves itself, and
//! asking again would cost a request per manifest for nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use serde::Serialize;

use super::{Context, Options, TransferError, blob};
use crate::digest::Digest;
use crate::manifest::{Descriptor, Manifest, select_platforms};
use crate::reference::Reference;
use crate::registry::{Registry, RegistryError};

/// The `X-Azure-Origin` value of a manifest a cache rule still serves from its upstream.
const UPSTREAM: &str = "upstream";

#[derive(Debug, Clone, Serialize)]
pub struct Warmed {
    pub source: String,
    pub target: String,
    pub digest: Digest,
    pub platforms: Vec<String>,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// Pulls `target_ref` through the cache. When `src` is given, the digest the cache serves must
/// equal the source's.
pub async fn warm_image(
    ctx: &Arc<Context>,
    src: Option<(Arc<Registry>, &Reference)>,
    cache: Arc<Registry>,
    target_ref: &Reference,
    opts: &Options,
) -> Result<Warmed, TransferError> {
    let repo = &target_ref.repository;
    // The source's digest and the cache's manifest at once: neither waits for the other.
    let expected = async {
        Ok::<_, TransferError>(match &src {
            Some((registry, r)) => match &r.digest {
                Some(d) => Some(d.clone()),
                None => match registry.head_manifest(&r.repository, &r.selector()).await? {
                    Some(h) => Some(h.digest),
                    None => return Err(RegistryError::no_such_image(&registry.host, &r.to_string()).into()),
                },
            },
            None => target_ref.digest.clone(),
        })
    };
    let top = async { Ok::<_, TransferError>(cache.get_manifest_and_origin(repo, &target_ref.selector()).await?) };
    let (expected, (top, top_origin)) = futures::future::try_join(expected, top).await?;
    if let Some(expected) = &expected
        && &top.digest != expected
    {
        return Err(TransferError::Warm {
            target: target_ref.to_string(),
            message: format!(
                "the cache serves {} but the source has {expected}; the cached tag is stale (caches refresh tags late)",
                top.digest
            ),
        });
    }
    let mut warmed = Warmed {
        source: src.as_ref().map(|(_, r)| r.to_string()).unwrap_or_default(),
        target: target_ref.to_string(),
        digest: top.digest.clone(),
        platforms: Vec::new(),
        manifests: 1,
        blobs: 0,
        bytes: 0,
    };
    // Manifests the cache said it still serves from upstream: only these are re-checked.
    let mut from_upstream: Vec<Digest> = Vec::new();
    if top_origin.as_deref() == Some(UPSTREAM) {
        from_upstream.push(top.digest.clone());
    }
    let images: Vec<Manifest> = if top.is_index() {
        let chosen = select_platforms(&top, &opts.platforms);
        if chosen.is_empty() {
            return Err(TransferError::Warm {
                target: target_ref.to_string(),
                message: "no platform of the index matches the platforms asked for".into(),
            });
        }
        warmed.platforms =
            chosen.iter().map(|c| c.platform.as_ref().map(|p| p.to_string()).unwrap_or_default()).collect();
        let fetched =
            try_join_all(chosen.iter().map(|c| cache.get_manifest_and_origin(repo, c.digest.as_str()))).await?;
        warmed.manifests += fetched.len();
        fetched
            .into_iter()
            .map(|(m, origin)| {
                if origin.as_deref() == Some(UPSTREAM) {
                    from_upstream.push(m.digest.clone());
                }
                m
            })
            .collect()
    } else {
        vec![top]
    };
    let blobs: Vec<&Descriptor> = {
        let mut seen = std::collections::HashSet::new();
        images.iter().flat_map(|m| m.blobs()).filter(|d| seen.insert(d.digest.clone())).collect()
    };
    warmed.blobs = blobs.len();
    let sizes = try_join_all(blobs.iter().map(|d| read_once(ctx, &cache, repo, d, &opts.bytes))).await?;
    warmed.bytes = sizes.iter().sum();
    if !ctx.warm_recheck.is_zero() && !from_upstream.is_empty() {
        recheck_origin(&cache, target_ref, &from_upstream, ctx.warm_recheck).await?;
    }
    Ok(warmed)
}

/// Reads one blob through the cache, unless this run already did for the same repository: tags of
/// a repository share layers, and a second read (or, worse, a concurrent one, which a cache may
/// fetch from upstream twice) moves the same bytes again for nothing. A cache keeps blobs per
/// repository, so a read through another repository still goes ahead. A read that fails leaves
/// the blob unread: the next image waiting on it reads it itself. Returns the bytes read.
async fn read_once(
    ctx: &Arc<Context>,
    cache: &Registry,
    repo: &str,
    d: &Descriptor,
    counter: &std::sync::atomic::AtomicU64,
) -> Result<u64, TransferError> {
    let mut read = 0;
    ctx.warm_read(&cache.host, repo, &d.digest)
        .get_or_try_init(|| async {
            read = blob::pull_verify(ctx, cache, repo, d, counter).await?;
            Ok::<_, TransferError>(())
        })
        .await?;
    Ok(read)
}

/// After warming through an ACR cache rule: `HEAD`s each manifest until none is still served from
/// upstream (ACR's `X-Azure-Origin: upstream`, <https://github.com/Azure/acr/issues/862>), waiting with backoff at most
/// `within`. The manifests still served from upstream then are named in the error: a node pulling
/// them during an upstream outage would fail. Registries that never send the header pass at once.
pub async fn recheck_origin(
    cache: &Registry,
    target_ref: &Reference,
    digests: &[Digest],
    within: Duration,
) -> Result<(), TransferError> {
    let deadline = Instant::now() + within;
    let mut pending: Vec<Digest> = digests.to_vec();
    let mut wait = Duration::from_millis(500);
    loop {
        let origins =
            try_join_all(pending.iter().map(|d| cache.manifest_origin(&target_ref.repository, d.as_str()))).await?;
        pending =
            pending.into_iter().zip(origins).filter(|(_, o)| o.as_deref() == Some(UPSTREAM)).map(|(d, _)| d).collect();
        if pending.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(TransferError::Warm {
                target: target_ref.to_string(),
                message: format!(
                    "after {}s the cache still serves {} from upstream (X-Azure-Origin: upstream): {}. \
                     Run sync again later, or raise transfer.warmRecheckSeconds",
                    within.as_secs(),
                    if pending.len() == 1 { "this manifest" } else { "these manifests" },
                    pending.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        tracing::debug!(target = %target_ref, pending = pending.len(), "manifests still served from upstream; re-checking in {wait:?}");
        tokio::time::sleep(wait.min(deadline - now)).await;
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}
