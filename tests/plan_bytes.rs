//! The plan's "bytes to move" against real registries: each blob counted once per target
//! registry (for the first image in plan order that needs it), blobs the target repository
//! already holds not counted, and only the chosen platforms counted under `rewrite`.

mod support;

use std::path::Path;

use acr_mirror::config::{Config, MappingMode};
use acr_mirror::manifest::IndexPolicy;
use acr_mirror::manifest::PlatformFilter;
use acr_mirror::plan::{self, PlanOptions, Status, Wanted};
use acr_mirror::reference::Reference;
use acr_mirror::registry::Registries;
use support::{Format, Seeder, TestRegistry};

fn config(src: &TestRegistry, dst: &TestRegistry) -> Config {
    let yaml = format!(
        // Anonymous on both: the plan must never read the developer's Docker credentials.
        "registries:\n  - host: mcr.microsoft.com\n    endpoint: {}\n    auth: {{type: anonymous}}\n  - host: acr.example.io\n    endpoint: {}\n    auth: {{type: anonymous}}\n",
        src.url(),
        dst.url()
    );
    Config::parse(&yaml, Path::new("plan.yaml")).unwrap()
}

fn wanted(repo: &str, tag: &str, platforms: &[&str]) -> Wanted {
    Wanted {
        source: Reference::parse(&format!("mcr.microsoft.com/{repo}:{tag}")).unwrap(),
        target: Reference::parse(&format!("acr.example.io/{repo}:{tag}")).unwrap(),
        mode: MappingMode::Copy,
        platforms: platforms.iter().map(|p| PlatformFilter::parse(p).unwrap()).collect(),
        injected: false,
    }
}

/// Checks the byte count of three images, two sharing a base layer and one with a blob already
/// in the target: fails if a shared blob is counted twice, if a present blob is counted, or if
/// the count is lost when the work is spread over concurrent requests.
#[tokio::test]
async fn shared_blobs_count_once_and_present_blobs_not_at_all() {
    let (src, dst) = (TestRegistry::anonymous().await, TestRegistry::anonymous().await);
    let mut seeder = Seeder::new(&src.url(), 11);
    let base = seeder.random_blob(3000);
    let (app_a, app_b, app_c) = (seeder.random_blob(1000), seeder.random_blob(700), seeder.random_blob(400));
    let a = seeder.push_image("x/a", "1", Format::Oci, &[base.clone(), app_a]).await;
    let b = seeder.push_image("x/b", "1", Format::Oci, &[base.clone(), app_b]).await;
    let c = seeder.push_image("x/c", "1", Format::Oci, std::slice::from_ref(&app_c)).await;
    // The target already holds c's layer in x/c.
    Seeder::new(&dst.url(), 12).push_blob("x/c", &app_c).await;

    let registries = Registries::from_config(&config(&src, &dst)).unwrap();
    let want = vec![wanted("x/a", "1", &[]), wanted("x/b", "1", &[]), wanted("x/c", "1", &[])];
    let opts = PlanOptions {
        index_policy: IndexPolicy::Preserve,
        deep: false,
        referrers: false,
        skip_bytes: false,
        warm_ledger: None,
        defer_unlisted_warm: false,
        signatures: None,
    };
    let p = plan::plan(&registries, &want, &opts).await.unwrap();

    let sum = |blobs: &[(acr_mirror::digest::Digest, u64)]| blobs.iter().map(|(_, s)| s).sum::<u64>();
    assert!(p.images.iter().all(|i| i.status == Status::Missing), "{:?}", p.images);
    // a: config + base + app; b: config + app (base counted for a); c: config only.
    assert_eq!(p.images[0].bytes_to_move, sum(&a.blobs));
    assert_eq!(p.images[1].bytes_to_move, sum(&b.blobs) - base.size());
    assert_eq!(p.images[2].bytes_to_move, sum(&c.blobs) - app_c.size());
    assert_eq!(p.bytes_to_move, p.images.iter().map(|i| i.bytes_to_move).sum::<u64>());
}

/// Checks that under `rewrite` with a platform filter only the chosen children's blobs count:
/// fails if every child of the index is counted.
#[tokio::test]
async fn rewrite_counts_only_the_chosen_platforms() {
    let (src, dst) = (TestRegistry::anonymous().await, TestRegistry::anonymous().await);
    let image = Seeder::new(&src.url(), 21).push_multiarch("x/multi", "1", Format::Oci).await;
    let registries = Registries::from_config(&config(&src, &dst)).unwrap();
    let opts = PlanOptions {
        index_policy: IndexPolicy::Rewrite,
        deep: false,
        referrers: false,
        skip_bytes: false,
        warm_ledger: None,
        defer_unlisted_warm: false,
        signatures: None,
    };
    let p = plan::plan(&registries, &[wanted("x/multi", "1", &["linux/amd64"])], &opts).await.unwrap();
    let amd64 = &image.children[0];
    assert_eq!(amd64.platform.as_ref().unwrap().architecture, "amd64");
    assert_eq!(p.bytes_to_move, amd64.blobs.iter().map(|(_, s)| s).sum::<u64>());
}
