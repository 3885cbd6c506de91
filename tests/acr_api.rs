//! ACR's own APIs and cache-rule behaviour, against real registries behind our stand-ins:
//!
//! - the plan lists each target repository once through `/acr/v1/{repo}/_manifests` when the
//!   target has ACR's API, and falls back to `/v2/` listings when it does not;
//! - `_manifests`, `_tags` and `_catalog` are read across `Link` pages in the REST spec's shapes;
//! - warming re-checks `X-Azure-Origin` until the cache serves every manifest itself, and names
//!   the manifests still served from upstream when the bounded wait runs out;
//! - a push refused the way a pull-through cache refuses it is explained as a cache rule.

mod support;
mod support_azure;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use acr_mirror::config::{Config, MappingMode};
use acr_mirror::plan::{PlanOptions, Status, Wanted, plan};
use acr_mirror::reference::Reference;
use acr_mirror::registry::Registries;
use acr_mirror::transfer::{Context, Options, TransferError, copy::copy_image, warm::warm_image};
use support::{Format, PushedImage, Seeder, TestRegistry};
use support_azure::acr_api::AcrApiStandIn;

const ACR: &str = "mirrortest.azurecr.io";
const MCR: &str = "mcr.microsoft.com";

/// Both registries anonymous, said explicitly so that no Docker config of the machine is read.
fn registries(source: &str, target: &str) -> Registries {
    let yaml = format!(
        "registries:\n  - host: {MCR}\n    endpoint: {source}\n    auth: {{type: anonymous}}\n  \
         - host: {ACR}\n    endpoint: {target}\n    auth: {{type: anonymous}}\n"
    );
    Registries::from_config(&Config::parse(&yaml, Path::new("mirror.yaml")).unwrap()).unwrap()
}

fn wanted(src: &str, dst: &str) -> Wanted {
    Wanted {
        source: Reference::parse(&format!("{MCR}/{src}")).unwrap(),
        target: Reference::parse(&format!("{ACR}/{dst}")).unwrap(),
        mode: MappingMode::Copy,
        platforms: Vec::new(),
        injected: false,
    }
}

/// The same images in a source and a target registry (same seed, same bytes, same digests).
async fn seeded_pair() -> (TestRegistry, TestRegistry, Vec<PushedImage>) {
    let source = TestRegistry::anonymous().await;
    let target = TestRegistry::anonymous().await;
    let mut pushed = Vec::new();
    for url in [source.url(), target.url()] {
        let mut s = Seeder::new(&url, 7);
        let images = vec![
            s.push_multiarch("oss/pause", "3.9", Format::Oci).await,
            s.push_random_image("oss/coredns", "1.11", Format::Oci, &[512]).await,
            s.push_random_image("oss/coredns", "1.12", Format::Docker, &[256]).await,
        ];
        if pushed.is_empty() {
            pushed = images;
        } else {
            assert_eq!(
                images.iter().map(|i| &i.digest).collect::<Vec<_>>(),
                pushed.iter().map(|i| &i.digest).collect::<Vec<_>>()
            );
        }
    }
    (source, target, pushed)
}

fn wanted_all() -> Vec<Wanted> {
    vec![
        wanted("oss/pause:3.9", "oss/pause:3.9"),
        wanted("oss/coredns:1.11", "oss/coredns:1.11"),
        wanted("oss/coredns:1.12", "oss/coredns:1.12"),
    ]
}

#[tokio::test]
async fn a_no_op_plan_lists_each_target_repository_once_through_the_acr_api() {
    // Checks that with ACR's API present the plan of a target already in sync asks the target one
    // `_manifests` listing per repository and nothing per image (no manifest HEAD/GET, no /v2/
    // tag list), and still finds every image present. Fails if the plan falls back to per-tag
    // requests or lists a repository twice.
    let (source, target, _) = seeded_pair().await;
    let api = AcrApiStandIn::start(&target.url()).await;
    let regs = registries(&source.url(), &api.url);
    let p = plan(&regs, &wanted_all(), &PlanOptions::default()).await.unwrap();
    assert!(p.images.iter().all(|i| i.status == Status::Present), "{:?}", p.images);
    assert_eq!(api.count("GET", "/acr/v1/oss/pause/_manifests"), 1);
    assert_eq!(api.count("GET", "/acr/v1/oss/coredns/_manifests"), 1);
    let per_image: Vec<_> =
        api.requests().into_iter().filter(|(_, p)| p.contains("/manifests/") || p.contains("/tags/list")).collect();
    assert!(per_image.is_empty(), "per-image requests to the target: {per_image:?}");
}

/// The listings a plan starts while the first one finds out whether the registry has ACR's API
/// go ahead together once it has answered, not one after another: each used to take the probe's
/// lock and hold it through its own listing, one round trip per repository in a row (1.6–6.4 s
/// of every plan against an ACR 25–100 ms away). Three repositories behind a 20 ms delay (so the
/// second and third listings queue behind the first); the proxy holds the second listing until
/// another arrives (10 s at most), which cannot happen while it holds the lock.
#[tokio::test]
async fn acr_listings_queued_behind_the_probe_go_ahead_together() {
    let source = TestRegistry::anonymous().await;
    let target = TestRegistry::anonymous().await;
    let mut s = Seeder::new(&source.url(), 8);
    let mut wanted_all = Vec::new();
    for repo in ["oss/a", "oss/b", "oss/c"] {
        s.push_random_image(repo, "1", Format::Oci, &[256]).await;
        wanted_all.push(wanted(&format!("{repo}:1"), &format!("{repo}:1")));
    }
    let api = AcrApiStandIn::start(&target.url()).await;
    let front = support::DelayProxy::start(&api.url, Duration::from_millis(20)).await;
    front.hold_until_other("GET", "/_manifests", "/_manifests", 1, Duration::from_secs(10));
    let regs = registries(&source.url(), &front.url());
    let p = plan(&regs, &wanted_all, &PlanOptions::default()).await.unwrap();
    assert!(p.images.iter().all(|i| i.status == Status::Missing), "{:?}", p.images);
    assert_eq!(front.count("GET", "/_manifests"), 3, "{:?}", front.requests());
    assert_eq!(front.rendezvous_met(), Some(true), "the listings ran one after another: {:?}", front.requests());
}

#[tokio::test]
async fn without_the_acr_api_the_plan_falls_back_to_v2_listings_and_remembers_it() {
    // Checks the fallback: a registry that answers `/acr/v1/…` with a plain 404 is probed (once
    // per listing already under way, at most), then listed with `/v2/{repo}/tags/list` (one per repository) and a HEAD per needed tag;
    // the plan's verdict is the same.
    let (source, target, _) = seeded_pair().await;
    let api = AcrApiStandIn::start(&target.url()).await;
    api.state.acr_api.store(false, Ordering::SeqCst);
    let regs = registries(&source.url(), &api.url);
    let p = plan(&regs, &wanted_all(), &PlanOptions::default()).await.unwrap();
    assert!(p.images.iter().all(|i| i.status == Status::Present), "{:?}", p.images);
    // The two repositories are listed concurrently, so each may have probed before the answer
    // was remembered; a second plan asks no more.
    let probes = api.count("GET", "/acr/v1/");
    assert!((1..=2).contains(&probes), "{:?}", api.requests());
    assert_eq!(api.count("GET", "/tags/list"), 2);
    assert_eq!(api.count("HEAD", "/manifests/"), 3);
    plan(&regs, &wanted_all(), &PlanOptions::default()).await.unwrap();
    assert_eq!(api.count("GET", "/acr/v1/"), probes, "the missing ACR API is remembered");
}

#[tokio::test]
async fn acr_listings_follow_link_pages_in_the_rest_spec_shapes() {
    // Checks `_manifests` (tags, sizes, platforms through `references`), `_tags` (digests) and
    // `_catalog` across pages of one item each: every item arrives once, and each page is one
    // request. Fails if `Link` is ignored or a page is read twice.
    let (_source, target, pushed) = seeded_pair().await;
    let api = AcrApiStandIn::start(&target.url()).await;
    api.state.page_size.store(1, Ordering::SeqCst);
    let regs = registries(&target.url(), &api.url);
    let acr = regs.get(ACR).unwrap();

    let pause = &pushed[0];
    let manifests = acr.acr_manifests("oss/pause").await.unwrap().expect("ACR API present");
    assert_eq!(manifests.len(), 1 + pause.children.len(), "{manifests:?}");
    assert_eq!(api.count("GET", "/acr/v1/oss/pause/_manifests"), manifests.len(), "one request per page");
    let index = manifests.iter().find(|m| m.digest == pause.digest.to_string()).expect("the index is listed");
    assert_eq!(index.tags, vec!["3.9"]);
    assert_eq!(index.references.len(), pause.children.len());
    let platforms: Vec<_> = index
        .references
        .iter()
        .map(|r| format!("{}/{}", r.os.as_deref().unwrap_or("?"), r.architecture.as_deref().unwrap_or("?")))
        .collect();
    assert_eq!(platforms, vec!["linux/amd64", "linux/arm64", "windows/amd64"]);
    for c in &pause.children {
        assert!(manifests.iter().any(|m| m.digest == c.digest.to_string() && m.image_size.is_some()), "{c:?}");
    }

    let tags = acr.acr_tags("oss/coredns").await.unwrap().unwrap();
    let mut got: Vec<_> = tags.iter().map(|t| (t.name.clone(), t.digest.clone().unwrap())).collect();
    got.sort();
    assert_eq!(got, vec![("1.11".into(), pushed[1].digest.to_string()), ("1.12".into(), pushed[2].digest.to_string())]);

    let mut repos = acr.list_repositories().await.unwrap();
    repos.sort();
    assert_eq!(repos, vec!["oss/coredns", "oss/pause"]);
    assert_eq!(api.count("GET", "/acr/v1/_catalog"), 2);

    // An unknown repository is an empty listing (ACR's NAME_UNKNOWN), not a missing API.
    assert_eq!(acr.acr_manifests("no/such").await.unwrap(), Some(Vec::new()));
}

#[tokio::test]
async fn an_outdated_index_is_copied_without_a_head_per_child_the_listing_answered() {
    // Checks that copying an index whose target tag points elsewhere (outdated) takes which child
    // manifests the target already has from the plan's `_manifests` listing, with no `HEAD` per
    // child: the children are there by digest (an earlier version), the tag is not. Fails if
    // the copy asks the target for each child again.
    let (source, target, images) = seeded_pair().await;
    let mut s = Seeder::new(&target.url(), 99);
    // The earlier version keeps a tag of its own, so the stand-in's listing (manifests reachable
    // from tags; real ACR lists untagged ones too) still shows its children.
    s.push_manifest("oss/pause", "3.9-previous", &images[0].media_type, &images[0].bytes).await;
    s.push_random_image("oss/pause", "3.9", Format::Oci, &[100]).await;
    let api = AcrApiStandIn::start(&target.url()).await;
    let regs = registries(&source.url(), &api.url);
    let w = wanted("oss/pause:3.9", "oss/pause:3.9");
    let p =
        plan(&regs, std::slice::from_ref(&w), &PlanOptions { skip_bytes: true, ..Default::default() }).await.unwrap();
    assert_eq!(p.images[0].status, Status::Outdated, "{:?}", p.images[0]);
    let ctx = Context::new(4, 32 << 20, 0);
    let opts = Options { target_state: acr_mirror::transfer::TargetState::Stale, ..Default::default() };
    let src = regs.get(MCR).unwrap();
    let dst = regs.get(ACR).unwrap();
    let pinned = w.source.with_digest(images[0].digest.clone());
    copy_image(&ctx, src, &pinned, dst, &w.target, &opts).await.unwrap();
    assert_eq!(
        support::images::manifest_digest(&target.url(), "oss/pause", "3.9", None).await,
        Some(images[0].digest.clone())
    );
    let heads: Vec<_> = api.requests().into_iter().filter(|(m, p)| m == "HEAD" && p.contains("/manifests/")).collect();
    assert!(heads.is_empty(), "children asked for again: {heads:?}");
    assert_eq!(api.count("PUT", "/manifests/sha256:"), 0, "no child pushed again");
}

#[tokio::test]
async fn plan_deep_takes_missing_children_from_the_manifest_listing() {
    // Checks that `plan --deep` against ACR finds a child manifest missing behind a present tag
    // from the `_manifests` listing, without asking for that child: the target has the index
    // but only one platform of it, as a cache that served one node would.
    let source = TestRegistry::anonymous().await;
    let target = TestRegistry::anonymous().await;
    let image = Seeder::new(&source.url(), 9).push_multiarch("oss/pause", "3.9", Format::Oci).await;
    // Copy the index and only its first child into the target, by raw HTTP.
    let mut s = Seeder::new(&target.url(), 9);
    let full = s.push_multiarch("oss/pause", "3.9", Format::Oci).await;
    assert_eq!(full.digest, image.digest);
    let gone = &full.children[1];
    let http = support_azure::http();
    let del = http.delete(format!("{}/v2/oss/pause/manifests/{}", target.url(), gone.digest)).send().await.unwrap();
    assert_eq!(del.status(), 202, "deleting a child to make the image partial");
    let api = AcrApiStandIn::start(&target.url()).await;
    let regs = registries(&source.url(), &api.url);
    let p = plan(&regs, &[wanted("oss/pause:3.9", "oss/pause:3.9")], &PlanOptions { deep: true, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(p.images[0].status, Status::Partial, "{:?}", p.images[0]);
    assert!(p.images[0].missing.iter().any(|m| m.contains(gone.digest.as_str())), "{:?}", p.images[0].missing);
    assert_eq!(api.count("GET", &format!("/manifests/{}", gone.digest)), 0, "the listing already said it is missing");
}

#[tokio::test]
async fn warming_rechecks_until_the_cache_serves_every_manifest_itself() {
    // Checks the warm re-check: the cache (a real pull-through registry behind the stand-in)
    // says `X-Azure-Origin: upstream` on the first two answers for each manifest (the warm's
    // `GET`, then one `HEAD`); warming succeeds only after re-checking until the header is gone.
    // With a header that never goes away and a 1 s bound, warming fails and names the manifests
    // still served from upstream. With no header on the `GET`s, nothing is re-checked at all.
    let source = TestRegistry::anonymous().await;
    let image = Seeder::new(&source.url(), 11).push_multiarch("oss/pause", "3.9", Format::Oci).await;
    let cache = TestRegistry::proxy_cache(&source.url()).await;
    let api = AcrApiStandIn::start(&cache.url()).await;
    api.state.upstream_answers.store(2, Ordering::SeqCst);
    let regs = registries(&source.url(), &api.url);
    let src = regs.get(MCR).unwrap();
    let dst = regs.get(ACR).unwrap();
    let source_ref = Reference::parse(&format!("{MCR}/oss/pause:3.9")).unwrap();
    let target_ref = Reference::parse(&format!("{ACR}/oss/pause:3.9")).unwrap();
    let ctx = Context::with_warm_recheck(4, 1 << 20, 2, Duration::from_secs(30));
    let warmed = warm_image(&ctx, Some((src.clone(), &source_ref)), dst.clone(), &target_ref, &Options::default())
        .await
        .unwrap();
    assert_eq!(warmed.digest, image.digest);
    for digest in std::iter::once(&image.digest).chain(image.children.iter().map(|c| &c.digest)) {
        let heads = api.count("HEAD", &format!("/manifests/{digest}"));
        assert_eq!(
            heads,
            2,
            "{digest}: upstream on the GET and the first HEAD, then the registry: {:?}",
            api.requests()
        );
    }

    api.state.upstream_answers.store(1_000_000, Ordering::SeqCst);
    let ctx = Context::with_warm_recheck(4, 1 << 20, 2, Duration::from_secs(1));
    let e = warm_image(&ctx, Some((src.clone(), &source_ref)), dst.clone(), &target_ref, &Options::default())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, TransferError::Warm { .. }), "{msg}");
    assert!(msg.contains("X-Azure-Origin: upstream") && msg.contains(image.digest.as_str()), "{msg}");
    for c in &image.children {
        assert!(msg.contains(c.digest.as_str()), "child {} not named: {msg}", c.digest);
    }

    // A cache that serves every manifest itself (no header on the GETs) is not asked again.
    api.state.upstream_answers.store(0, Ordering::SeqCst);
    let heads_before = api.count("HEAD", "/manifests/");
    let ctx = Context::with_warm_recheck(4, 1 << 20, 2, Duration::from_secs(30));
    warm_image(&ctx, Some((src, &source_ref)), dst, &target_ref, &Options::default()).await.unwrap();
    assert_eq!(api.count("HEAD", "/manifests/"), heads_before, "re-checked manifests the GETs said were local");
}

#[tokio::test]
async fn a_push_refused_by_a_pull_through_cache_is_explained_as_a_cache_rule() {
    // Checks that copying into a repository served by a pull-through cache (distribution in proxy
    // mode refuses pushes with 405, as ACR refuses them under a cache rule) fails with the cache
    // rule explanation and the `mode: warm` fix, instead of a bare HTTP error.
    let source = TestRegistry::anonymous().await;
    Seeder::new(&source.url(), 12).push_random_image("app", "1", Format::Oci, &[300]).await;
    let upstream = TestRegistry::anonymous().await;
    let cache = TestRegistry::proxy_cache(&upstream.url()).await;
    let regs = registries(&source.url(), &cache.url());
    let ctx = Context::new(4, 1 << 20, 1);
    let e = copy_image(
        &ctx,
        regs.get(MCR).unwrap(),
        &Reference::parse(&format!("{MCR}/app:1")).unwrap(),
        regs.get(ACR).unwrap(),
        &Reference::parse(&format!("{ACR}/aks-managed-repository/app:1")).unwrap(),
        &Options::default(),
    )
    .await
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, TransferError::CacheRule { .. }), "{msg}");
    assert!(msg.contains("cache rule") && msg.contains("mode: warm") && msg.contains("405"), "{msg}");
    assert!(msg.contains(&format!("{ACR}/aks-managed-repository/app:1")), "{msg}");
}
