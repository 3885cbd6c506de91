//! The transport's request budget against real distribution registries: how many requests of
//! each kind a copy, a no-op run and a plan cost, counted by a forwarding proxy in front of each
//! registry, and that the per-registry request limit cannot deadlock a copy. A regression that
//! adds a round trip per blob or per image fails here instead of waiting for a bench.

mod support;

use std::time::Duration;

use acr_mirror::config::Config;
use acr_mirror::reference::Reference;
use acr_mirror::registry::Registries;
use acr_mirror::transfer::{Context, Options, copy};
use support::{FaultProxy, Format, Seeder, TestRegistry};

/// Logical names over `(host, url, extra keys)`, each anonymous (no Docker config is read).
fn registries(entries: &[(&str, &str, &str)]) -> Registries {
    let mut yaml = String::from("registries:\n");
    for (host, url, extra) in entries {
        yaml.push_str(&format!("  - host: {host}\n    endpoint: {url}\n    auth: {{type: anonymous}}\n{extra}"));
    }
    Registries::from_config(&Config::parse(&yaml, "t.yaml".as_ref()).unwrap()).unwrap()
}

/// A copy inside one registry whose mounts are refused (so every blob is streamed from the
/// source repository to the target one) with fewer request slots than twice the blob transfers:
/// it completes. While a source `GET`'s body held its request slot until the end, every slot
/// could be held by downloads whose matching upload waited for a slot: the copy hung with no
/// timeout covering the wait. Bounded by a timeout, so a deadlock fails the test.
#[tokio::test]
async fn a_same_registry_copy_with_few_request_slots_does_not_deadlock() {
    let reg = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&reg.url(), 71);
    let image = seeder.push_random_image("src/app", "1", Format::Oci, &[200_000, 210_000, 220_000, 230_000]).await;
    let front = FaultProxy::start(&reg.url()).await;
    front.refuse_mounts();
    let regs = registries(&[("reg.test", &front.url(), "    maxConcurrentRequests: 2\n")]);
    let r = regs.get("reg.test").unwrap();
    let ctx = Context::new(4, 32 << 20, 0);
    let (src, dst) = (Reference::parse("reg.test/src/app:1").unwrap(), Reference::parse("reg.test/dst/app:1").unwrap());
    let copied = tokio::time::timeout(
        Duration::from_secs(30),
        copy::copy_image(&ctx, r.clone(), &src, r.clone(), &dst, &Options::default()),
    )
    .await
    .expect("the copy finished within 30 s (a permit deadlock hangs it)")
    .unwrap();
    assert_eq!(copied.target_digest, image.digest);
    assert!(front.count("POST", "mount=") >= 1, "mounts were asked for, and refused: {:?}", front.requests());
    assert_eq!(front.count("PUT", "/dst/app/blobs/uploads/"), image.blobs.len(), "every blob was streamed");
    support::images::assert_image_present(&reg.url(), "dst/app", &image, None).await;
}
