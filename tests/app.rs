//! The application layer as a library user (or a service) calls it, in-process: a config and a
//! request in, a `RunOutcome` out — no printing, no exit. Against real registries on loopback,
//! with `auth: {type: anonymous}` so that no docker config of the machine is read.

mod support;

use std::time::Duration;

use acr_mirror::app::{self, ConfigFile, Ending, PlanRequest, RunRequest, SyncRequest};
use support::images::assert_image_present;
use support::{Format, Seeder, TestRegistry};
use tokio_util::sync::CancellationToken;

fn request(stop: CancellationToken) -> RunRequest {
    RunRequest { shard: None, referrers: true, stop, grace: Duration::from_secs(5), strict: false }
}

/// Checks the API's whole cycle on one image: `plan` finds drift (and says so in its ending,
/// plan and report), `sync` copies it (`Complete`, the image then in the target, checked with
/// raw HTTP), `verify` finds everything in place; and a run whose stop token is already
/// cancelled ends `Stopped` with a report naming why, having written nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_sync_verify_and_a_stopped_run_through_the_api() {
    let src = TestRegistry::anonymous().await;
    let dst = TestRegistry::anonymous().await;
    let image = Seeder::new(&src.url(), 9).push_random_image("app", "1", Format::Oci, &[2048]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.yaml");
    std::fs::write(
        &path,
        format!(
            "target: {dst}\nmappings:\n  - {{source: '*', target: mirror, mode: copy}}\nimages: ['{src}/app:1']\nregistries:\n  - {{host: {src}, endpoint: '{src_url}', auth: {{type: anonymous}}}}\n  - {{host: {dst}, endpoint: '{dst_url}', auth: {{type: anonymous}}}}\n",
            src = src.host(),
            dst = dst.host(),
            src_url = src.url(),
            dst_url = dst.url()
        ),
    )
    .unwrap();
    let file = ConfigFile::load(&path).unwrap();

    let stopped = CancellationToken::new();
    stopped.cancel();
    let sync = SyncRequest { run: request(stopped), deep: false, fail_fast: false };
    let o = app::sync(&file, &sync, &()).await.unwrap();
    assert_eq!(o.ending, Ending::Stopped);
    assert!(o.plan.is_none() && o.report.error.as_deref().unwrap_or("").contains("stopped"), "{:?}", o.report);

    let o = app::plan(&file, &PlanRequest { run: request(CancellationToken::new()), deep: false }).await.unwrap();
    assert_eq!(o.ending, Ending::Drift);
    assert_eq!(o.plan.as_ref().unwrap().images.len(), 1);
    assert_eq!(o.report.summary.planned.missing, 1, "the plan's report counts the missing image");
    assert!(o.records.is_none(), "no report: section, no records");

    let sync = SyncRequest { run: request(CancellationToken::new()), deep: false, fail_fast: false };
    let o = app::sync(&file, &sync, &()).await.unwrap();
    assert_eq!(o.ending, Ending::Complete, "{:?}", o.report);
    assert_eq!(o.report.summary.outcomes.as_ref().map(|c| c.copied), Some(1));
    assert_image_present(&dst.url(), "mirror/app", &image, None).await;

    let o = app::verify(&file, &request(CancellationToken::new())).await.unwrap();
    assert_eq!(o.ending, Ending::Complete, "{:?}", o.report);
}
