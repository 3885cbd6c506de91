//! The fault matrix: `mirror sync` through the real binary while a proxy in front of the source
//! or the target injects one fault at a time (resets, truncated and corrupted bodies, altered
//! manifests, 429/500/503 answers, slow and stalled bodies, a lying `Docker-Content-Digest`,
//! SIGKILL, two runs at once). Each test asserts the exit code, that no tag in the target points
//! at content that is not all there (checked with raw HTTP against the target registry itself,
//! not through the proxy nor the crate's client), and what a clean rerun moves (the report's
//! bytes), and that its fault fired (the proxy's count of faulted requests, the killed process's
//! signal). Timeouts are short and nothing asserts wall-clock time; every wait is bounded by
//! [`HANG`].

mod support;

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use acr_mirror::digest::Digest;
use serde_json::Value;
use support::images;
use support::proxy::Change;
use support::{FaultProxy, Format, PushedImage, Seeder, TestRegistry};
use tokio::process::Child;

const MCR: &str = "mcr.microsoft.com";
const ACR: &str = "myacr.azurecr.io";
/// Upload chunk size (the smallest the config takes): the large image goes up in three chunks,
/// the others in one PUT each.
const CHUNK: usize = 1024 * 1024;
/// The large image's one layer.
const LARGE: usize = 2 * CHUNK + CHUNK / 2;
/// A run that takes longer than this hangs: the test fails instead of waiting for ever.
const HANG: Duration = Duration::from_secs(180);

/// A source and a target registry, each behind a fault proxy, seeded with a small image, a
/// large (chunked) image and a multi-arch index.
struct Setup {
    acr: TestRegistry,
    _mcr: TestRegistry,
    src: FaultProxy,
    dst: FaultProxy,
    small: PushedImage,
    large: PushedImage,
    multi: PushedImage,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new(seed: u64) -> Self {
        Self::with_retries(seed, 3).await
    }

    /// [`Setup::new`] with another `transfer.retries` (3 keeps failing runs short).
    async fn with_retries(seed: u64, retries: u32) -> Self {
        let mcr = TestRegistry::anonymous().await;
        let acr = TestRegistry::anonymous().await;
        let mut seeder = Seeder::new(&mcr.url(), seed);
        let small = seeder.push_random_image("oss/small", "1", Format::Oci, &[3000, 5000]).await;
        let large = seeder.push_random_image("oss/large", "1", Format::Oci, &[LARGE]).await;
        let multi = seeder.push_multiarch("oss/multi", "1", Format::Oci).await;
        let src = FaultProxy::start(&mcr.url()).await;
        let dst = FaultProxy::start(&acr.url()).await;
        let dir = tempfile::tempdir().unwrap();
        let list: String = [&small, &large, &multi].iter().map(|i| format!("  - {}\n", i.reference(MCR))).collect();
        let cfg = format!(
            "registries:\n  - host: {MCR}\n    endpoint: {}\n    idleTimeoutSeconds: 3\n  - host: {ACR}\n    endpoint: {}\n\
             target: {ACR}\nmappings:\n  - source: \"*\"\n    target: mirror\n    mode: copy\n\
             transfer:\n  chunkSize: {CHUNK}\n  retries: {retries}\nimages:\n{list}",
            src.url(),
            dst.url()
        );
        std::fs::write(dir.path().join("mirror.yaml"), cfg).unwrap();
        Setup { acr, _mcr: mcr, src, dst, small, large, multi, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `mirror sync`, writing the JSON report to `report`; its output is collected by
    /// [`finish`].
    fn spawn(&self, report: &str) -> Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
            .arg("-c")
            .arg(self.path("mirror.yaml"))
            .args(["sync", "--report-json"])
            .arg(self.path(report))
            .env("MIRROR_LOG", "warn")
            .env("DOCKER_CONFIG", self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// Runs `mirror sync`, writing the JSON report to `report`.
    async fn sync(&self, report: &str) -> Output {
        finish(self.spawn(report)).await
    }

    fn report(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.path(name)).unwrap()).unwrap()
    }

    fn images(&self) -> [&PushedImage; 3] {
        [&self.small, &self.large, &self.multi]
    }

    /// Every tag in the target points at content that is all there (a missing tag is fine).
    async fn assert_consistent(&self) {
        for image in self.images() {
            let repo = format!("mirror/{}", image.repository);
            let tag = images::manifest_digest(&self.acr.url(), &repo, &image.tag, None).await;
            if tag.is_some() {
                images::assert_image_present(&self.acr.url(), &repo, image, None).await;
            }
        }
    }

    /// Clears the faults, syncs again (exit 0, every image complete) and returns the bytes that
    /// run moved.
    async fn clean_rerun(&self) -> u64 {
        self.src.clear_faults();
        self.dst.clear_faults();
        let out = self.sync("rerun.json").await;
        assert_eq!(out.status.code(), Some(0), "a clean rerun succeeds");
        for image in self.images() {
            images::assert_image_present(&self.acr.url(), &format!("mirror/{}", image.repository), image, None).await;
        }
        self.report("rerun.json")["summary"]["bytes"].as_u64().unwrap()
    }

    /// Blob bytes of the whole set.
    fn total_bytes(&self) -> u64 {
        self.images().iter().map(|i| i.blobs.iter().map(|(_, s)| s).sum::<u64>()).sum()
    }

    /// Blob bytes of the set that the target repositories do not hold, asked of the target itself.
    async fn missing_bytes(&self) -> u64 {
        let mut n = 0;
        for image in self.images() {
            let repo = format!("mirror/{}", image.repository);
            for (digest, size) in &image.blobs {
                if !images::blob_exists(&self.acr.url(), &repo, digest, None).await {
                    n += size;
                }
            }
        }
        n
    }
}

/// Waits for a run's end (at most [`HANG`]) and collects its output, printed for a failing test.
async fn finish(child: Child) -> Output {
    let out = tokio::time::timeout(HANG, child.wait_with_output()).await.expect("the run hung").unwrap();
    eprintln!(
        "mirror sync: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `ready` every 10 ms while `child` runs, until it holds: the moment to inject a fault.
/// Panics if the run ends first (the fault would never meet it) or if `ready` does not hold
/// within [`HANG`].
async fn wait_while_running(child: &mut Child, what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG;
    while !ready().await {
        assert!(tokio::time::Instant::now() < deadline, "no {what} within {HANG:?}");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            status = child.wait() => panic!("the run ended ({status:?}) before {what}: the fault was never injected"),
        }
    }
}

fn blob_path(digest: &Digest) -> String {
    format!("/blobs/{digest}")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn image_bytes(image: &PushedImage) -> u64 {
    image.blobs.iter().map(|(_, s)| s).sum()
}

/// A source connection reset in the middle of a blob is retried: the run succeeds and a rerun
/// moves nothing.
#[tokio::test]
async fn source_reset_mid_blob_is_retried() {
    let s = Setup::new(101).await;
    let layer = &s.large.blobs[1].0;
    s.src.change_answers("GET", &blob_path(layer), 1, Change::Reset(100_000));
    assert_eq!(s.sync("run.json").await.status.code(), Some(0));
    assert_eq!(s.src.faulted("GET", &blob_path(layer)), 1, "the first read was reset");
    assert_eq!(s.src.count("GET", &blob_path(layer)), 2, "the blob was read again after the reset");
    assert_eq!(s.clean_rerun().await, 0);
}

/// A target connection cut in the middle of a large blob's upload (its one PATCH) is resumed
/// or restarted: the run succeeds and a rerun moves nothing.
#[tokio::test]
async fn target_reset_mid_blob_is_resumed() {
    let s = Setup::new(102).await;
    s.dst.cut_patch(1, 1000);
    assert_eq!(s.sync("run.json").await.status.code(), Some(0));
    assert_eq!(s.dst.faulted("PATCH", "/blobs/uploads/"), 1, "the PATCH was cut");
    assert!(s.dst.count("PATCH", "/blobs/uploads/") >= 2, "the cut PATCH was followed by another");
    s.assert_consistent().await;
    assert_eq!(s.clean_rerun().await, 0);
}

/// A source blob shorter than its descriptor fails its image (exit 3) in bounded time, blaming
/// the source with what happened; the other images are complete, and the rerun moves only what
/// that image lacks.
#[tokio::test]
async fn a_short_source_body_blames_the_source() {
    let s = Setup::new(103).await;
    let (layer, size) = &s.small.blobs[2];
    s.src.change_answers("GET", &blob_path(layer), 100, Change::Truncate(1000));
    let out = s.sync("run.json").await;
    assert_eq!(out.status.code(), Some(3));
    let report = s.report("run.json");
    let err = report["images"].to_string();
    assert!(err.contains(&format!("short body: got 1000 of {size} bytes from {MCR}")), "{err}");
    let kinds: Vec<&str> =
        report["images"].as_array().unwrap().iter().filter_map(|i| i["errorKind"].as_str()).collect();
    assert_eq!(kinds, ["short_body"], "the report names the kind of failure: {err}");
    s.assert_consistent().await;
    assert!(!images::blob_exists(&s.acr.url(), "mirror/oss/small", layer, None).await);
    let moved = s.clean_rerun().await;
    assert!(moved >= *size && moved <= image_bytes(&s.small), "rerun moved {moved}");
}

/// A source body cut off with a reset every time fails its image after the retries, naming the
/// source and the bytes received; the rerun moves only that image's bytes.
#[tokio::test]
async fn a_source_that_always_resets_fails_its_image_naming_the_source() {
    let s = Setup::new(104).await;
    let layer = &s.large.blobs[1].0;
    s.src.change_answers("GET", &blob_path(layer), 100, Change::Reset(50_000));
    let out = s.sync("run.json").await;
    assert_eq!(out.status.code(), Some(3));
    let err = s.report("run.json")["images"].to_string();
    assert!(err.contains("short body: got") && err.contains(MCR), "{err}");
    s.assert_consistent().await;
    let moved = s.clean_rerun().await;
    assert!(moved <= image_bytes(&s.large), "rerun moved {moved}");
}

/// One corrupted byte in a source blob, every time it is read: the image fails with a digest
/// mismatch, the target never holds the bad blob nor a tag over it, and the rerun moves only that
/// image's bytes. (Before, a sibling's failure could leave the shared transfer unpolled: a hang.)
#[tokio::test]
async fn a_corrupted_byte_fails_its_image_and_commits_nothing() {
    let s = Setup::new(105).await;
    let layer = &s.large.blobs[1].0;
    s.src.change_answers("GET", &blob_path(layer), 100, Change::Corrupt(LARGE / 2));
    let out = s.sync("run.json").await;
    assert_eq!(out.status.code(), Some(3));
    assert!(s.report("run.json")["images"].to_string().contains("mismatch"));
    assert!(!images::blob_exists(&s.acr.url(), "mirror/oss/large", layer, None).await);
    assert!(s.dst.count("DELETE", "/blobs/uploads/") >= 2, "each failed upload session was cancelled");
    s.assert_consistent().await;
    let moved = s.clean_rerun().await;
    assert!(moved <= image_bytes(&s.large), "rerun moved {moved}");
}

/// Source manifests whose bytes do not match their digest fail the image; nothing is tagged.
#[tokio::test]
async fn altered_manifest_bytes_fail_the_image() {
    let s = Setup::new(106).await;
    s.src.change_answers("GET", "/oss/multi/manifests/", 100, Change::AppendSpace);
    let out = s.sync("run.json").await;
    assert_eq!(out.status.code(), Some(3));
    assert!(s.src.faulted("GET", "/oss/multi/manifests/") >= 1, "a manifest was altered");
    let errors: Vec<Value> =
        s.report("run.json")["images"].as_array().unwrap().iter().map(|i| i["error"].clone()).collect();
    assert!(errors.iter().filter(|e| e.is_string()).count() == 1, "only the altered image failed: {errors:?}");
    assert_eq!(images::manifest_digest(&s.acr.url(), "mirror/oss/multi", "1", None).await, None);
    s.assert_consistent().await;
    let moved = s.clean_rerun().await;
    assert!(moved <= image_bytes(&s.multi), "rerun moved {moved}");
}

/// 429 with `Retry-After` on manifest PUTs, on the upload PATCH (the one streaming the large
/// layer: only a blob above `chunkSize` is PATCHed) and on a third of upload PUTs, with the
/// default retries: waited out and retried, the run succeeds. (429 on 30% of PATCHes used to
/// hang the run.)
#[tokio::test]
async fn throttled_pushes_are_waited_out() {
    let s = Setup::with_retries(107, 5).await;
    s.dst.fail_with("PUT", "/manifests/", 2, 429, Some(1));
    s.dst.fail_with("PATCH", "/blobs/uploads/", 1, 429, Some(1));
    s.dst.fail_every("PUT", "/blobs/uploads/", 3, 429, Some(1));
    assert_eq!(s.sync("run.json").await.status.code(), Some(0));
    assert_eq!(s.dst.faulted("PUT", "/manifests/"), 2, "both throttled manifest PUTs");
    assert_eq!(s.dst.faulted("PATCH", "/blobs/uploads/"), 1, "the PATCH was throttled");
    assert!(s.dst.faulted("PUT", "/blobs/uploads/") >= 1, "an upload PUT was throttled");
    s.assert_consistent().await;
    assert_eq!(s.clean_rerun().await, 0);
}

/// 429 on the first upload PATCH, before anything reached the session: the upload resumes from
/// byte 0 (an empty session answers `Range: 0-0`), not byte 1.
#[tokio::test]
async fn a_throttled_first_chunk_resumes_from_the_start() {
    let s = Setup::new(108).await;
    s.dst.fail_with("PATCH", "/blobs/uploads/", 1, 429, Some(1));
    assert_eq!(s.sync("run.json").await.status.code(), Some(0));
    assert_eq!(s.dst.faulted("PATCH", "/blobs/uploads/"), 1, "the first PATCH was throttled");
    assert_eq!(s.dst.count("DELETE", "/blobs/uploads/"), 0, "the upload went on in its session, none was given up");
    assert_eq!(s.clean_rerun().await, 0);
}

/// 500 on every third final upload PUT (chunked and whole), with the default retries: retried,
/// the run succeeds. (500 on 40% of them used to fail an image.)
#[tokio::test]
async fn server_errors_on_the_final_put_are_retried() {
    let s = Setup::with_retries(109, 5).await;
    s.dst.fail_every("PUT", "/blobs/uploads/", 3, 500, None);
    assert_eq!(s.sync("run.json").await.status.code(), Some(0));
    assert!(s.dst.faulted("PUT", "/blobs/uploads/") >= 1, "an upload PUT met a 500");
    s.assert_consistent().await;
    assert_eq!(s.clean_rerun().await, 0);
}

/// A slow source body (every chunk held back) is not an error.
#[tokio::test]
async fn a_slow_body_is_not_an_error() {
    let s = Setup::new(110).await;
    s.src.change_answers("GET", "/blobs/", 100, Change::Slow(Duration::from_millis(5)));
    assert_eq!(s.sync("run.json").await.status.code(), Some(0));
    assert!(s.src.faulted("GET", "/blobs/") >= 1, "blob bodies were slowed");
    assert_eq!(s.clean_rerun().await, 0);
}

/// A target that answers a manifest PUT with 201 but another `Docker-Content-Digest` fails the
/// image at once (no hang); whatever tag the registry did store points at complete content.
#[tokio::test]
async fn a_lying_docker_content_digest_fails_the_image() {
    let s = Setup::new(111).await;
    s.dst.change_answers("PUT", "/oss/small/manifests/", 100, Change::WrongDigest);
    let out = s.sync("run.json").await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(s.dst.faulted("PUT", "/oss/small/manifests/") >= 1, "a manifest PUT was answered with another digest");
    s.assert_consistent().await;
    assert_eq!(s.clean_rerun().await, 0, "the blobs went in before the manifest");
}

/// The target goes down in the middle of a sync (its connections dropped, new ones too, for a
/// few requests) and comes back: the requests are retried, the uploads resumed or restarted, and
/// the run succeeds; a rerun moves nothing.
#[tokio::test]
async fn a_target_that_goes_down_and_comes_back_mid_sync() {
    let s = Setup::with_retries(118, 5).await;
    s.src.change_answers("GET", "/blobs/", 1000, Change::Slow(Duration::from_millis(5)));
    let mut child = s.spawn("run.json");
    wait_while_running(&mut child, "upload PATCH", async || s.dst.count("PATCH", "/blobs/uploads/") > 0).await;
    s.dst.go_down(4);
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(s.dst.faulted_all(), 4, "the outage met four requests of the run");
    s.assert_consistent().await;
    assert_eq!(s.clean_rerun().await, 0);
}

/// The target registry process itself is killed in the middle of a sync (uploads under way) and
/// started again on the same port and storage: requests meeting the dead port are retried, the
/// uploads resumed or started again, and the run ends with exit 0, every tag pointing at
/// complete content (an independent check), and a rerun moving nothing.
#[tokio::test]
async fn a_target_registry_restarted_mid_sync() {
    let mut s = Setup::with_retries(119, 5).await;
    s.src.change_answers("GET", "/blobs/", 1000, Change::Slow(Duration::from_millis(5)));
    let mut child = s.spawn("run.json");
    let dst = &s.dst;
    let uploading = async || dst.count("PATCH", "/blobs/uploads/") + dst.count("PUT", "/blobs/uploads/") > 0;
    wait_while_running(&mut child, "upload", uploading).await;
    s.acr.stop().await; // panics unless the registry was running
    // Down until a request of the run has met the dead port (through the proxy: a 502).
    let met = async || s.dst.upstream_failures() > 0;
    wait_while_running(&mut child, "request meeting the stopped registry", met).await;
    s.acr.start_again().await;
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", s.acr.log());
    s.assert_consistent().await;
    assert_eq!(s.clean_rerun().await, 0);
}

/// `kill -9` in the middle of a sync loses nothing committed: the rerun moves exactly the blob
/// bytes the target lacks (asked of the target itself), not the whole set again.
#[tokio::test]
async fn a_rerun_after_sigkill_moves_only_what_is_missing() {
    let s = Setup::new(112).await;
    // Slow the source so the run is still going when some blobs are in.
    s.src.change_answers("GET", "/blobs/", 1000, Change::Slow(Duration::from_millis(20)));
    let mut child = s.spawn("killed.json");
    // Kill once the target itself holds some of the blobs: asked of the registry, not counted
    // at the proxy, where a PUT is seen before the registry has committed it.
    let total = s.total_bytes();
    let some_in = async || s.dst.count("PUT", "/blobs/uploads/") > 0 && s.missing_bytes().await < total;
    wait_while_running(&mut child, "blob in the target", some_in).await;
    child.start_kill().unwrap();
    let status = finish(child).await.status;
    assert_eq!(status.signal(), Some(9), "the run was killed, it had not ended: {status}");
    s.assert_consistent().await;
    let missing = s.missing_bytes().await;
    assert!(missing < total, "some blobs were in before the kill");
    assert_eq!(s.clean_rerun().await, missing);
}

/// Two syncs at once on one target, without a lock: both succeed, the target is consistent, and
/// the second, started once the first has put the large layer in, does not move it again (its
/// upload `POST` asks the target whether each blob is there, whatever its plan saw).
#[tokio::test]
async fn two_syncs_without_a_lock_share_the_work() {
    let s = Setup::new(113).await;
    s.src.change_answers("GET", "/blobs/", 1000, Change::Slow(Duration::from_millis(10)));
    let mut first = s.spawn("first.json");
    let layer = &s.large.blobs[1].0;
    let layer_in = async || images::blob_exists(&s.acr.url(), "mirror/oss/large", layer, None).await;
    wait_while_running(&mut first, "large layer in the target", layer_in).await;
    let second = s.spawn("second.json");
    let (first, second) = tokio::join!(finish(first), finish(second));
    assert_eq!(first.status.code(), Some(0));
    assert_eq!(second.status.code(), Some(0));
    s.assert_consistent().await;
    let moved = s.report("second.json")["summary"]["bytes"].as_u64().unwrap();
    assert!(moved < LARGE as u64, "the second run moved {moved} bytes: the large layer again");
    assert_eq!(s.clean_rerun().await, 0);
}

/// 429 with `Retry-After` on the run's very first request is waited out.
#[tokio::test]
async fn a_throttled_first_request_is_waited_out() {
    let s = Setup::new(114).await;
    s.dst.fail_with("GET", "/v2/", 1, 429, Some(2));
    assert_eq!(s.sync("run.json").await.status.code(), Some(0));
    assert_eq!(s.dst.faulted_all(), 1);
    assert_eq!(s.dst.requests().first(), s.dst.faulted_requests().first(), "the first request was throttled");
    assert_eq!(s.clean_rerun().await, 0);
}

/// A burst of 503s at the start (every request of the target, about 3 s of them at the default
/// backoff) is retried through with the default `transfer.retries` (5): the run's first request,
/// the ping, meets four 503s in a row and must not give up.
#[tokio::test]
async fn a_503_burst_at_the_start_is_retried() {
    let s = Setup::with_retries(115, 5).await;
    s.dst.fail_503("GET", "/v2/", 4);
    s.dst.fail_503("POST", "/v2/", 4);
    assert_eq!(s.sync("run.json").await.status.code(), Some(0));
    assert_eq!((s.dst.faulted("GET", "/v2/"), s.dst.faulted("POST", "/v2/")), (4, 4), "every 503 was met");
    let first: Vec<(String, String)> = s.dst.requests().into_iter().take(4).collect();
    assert_eq!(first, vec![("GET".to_string(), "/v2/".to_string()); 4], "the ping met four 503s in a row");
    assert_eq!(s.clean_rerun().await, 0);
}

/// A source body that stalls after its headers is given up after the idle timeout (configured
/// short), retried, and fails its image naming the source; the other images are complete.
#[tokio::test]
async fn a_stalled_body_is_given_up_after_the_idle_timeout() {
    let s = Setup::new(116).await;
    let layer = &s.small.blobs[1].0;
    s.src.change_answers("GET", &blob_path(layer), 100, Change::Stall);
    let out = s.sync("run.json").await;
    assert_eq!(out.status.code(), Some(3));
    assert!(s.src.faulted("GET", &blob_path(layer)) >= 2, "the stalled read was retried, and stalled again");
    assert!(s.report("run.json")["images"].to_string().contains(MCR));
    s.assert_consistent().await;
    let moved = s.clean_rerun().await;
    assert!(moved <= image_bytes(&s.small), "rerun moved {moved}");
}

/// No progress display, for the library-level run below.
struct NoProgress;
impl acr_mirror::transfer::pipeline::Observer for NoProgress {}

/// The pipeline side of a graceful stop, through the library: stopped while the large layer is
/// being uploaded (from a slowed source) with a short grace period, the run returns, the large
/// image is `interrupted` with no tag in the target, its abandoned upload session is cancelled
/// (`DELETE`), every tag present points at complete content, and a clean rerun completes.
#[tokio::test]
async fn a_stop_abandons_transfers_after_the_grace_period_and_cancels_their_sessions() {
    use acr_mirror::config::{Config, MappingMode};
    use acr_mirror::plan::{PlanOptions, Wanted};
    use acr_mirror::reference::Reference;
    use acr_mirror::transfer::pipeline::{Outcome, RunOptions};

    let s = Setup::new(117).await;
    let layer = blob_path(&s.large.blobs[1].0);
    s.src.change_answers("GET", &layer, 1, Change::Slow(Duration::from_millis(200)));
    let yaml = std::fs::read_to_string(s.path("mirror.yaml")).unwrap();
    let cfg = Config::parse(&yaml, &s.path("mirror.yaml")).unwrap();
    let registries = acr_mirror::registry::Registries::from_config(&cfg).unwrap();
    let wanted: Vec<Wanted> = s
        .images()
        .iter()
        .map(|i| Wanted {
            source: Reference::parse(&i.reference(MCR)).unwrap(),
            target: Reference::parse(&format!("{ACR}/mirror/{}:{}", i.repository, i.tag)).unwrap(),
            mode: MappingMode::Copy,
            platforms: Vec::new(),
            injected: false,
        })
        .collect();
    let plan = acr_mirror::plan::plan(&registries, &wanted, &PlanOptions { skip_bytes: true, ..Default::default() })
        .await
        .unwrap();
    let ctx = acr_mirror::transfer::Context::new(4, CHUNK as u64, 3);
    let opts = RunOptions {
        index_policy: Default::default(),
        referrers: false,
        images_in_flight: 4,
        fail_fast: false,
        stop: tokio_util::sync::CancellationToken::new(),
        grace: Duration::from_millis(300),
    };
    let stop = opts.stop.clone();
    let run = acr_mirror::transfer::pipeline::run(&registries, &ctx, &plan, &opts, &NoProgress);
    let results = tokio::time::timeout(HANG, async {
        let mut run = std::pin::pin!(run);
        // Stop once the large layer's first chunk is on its way (and not if the run ends first).
        while s.dst.count("PATCH", "/mirror/oss/large/blobs/uploads/") == 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = &mut run => panic!("the run ended before the large layer's upload: nothing was stopped"),
            }
        }
        stop.cancel();
        run.await
    })
    .await
    .expect("the run hung");
    let large = results.iter().find(|r| r.target.contains("oss/large")).unwrap();
    assert_eq!(large.outcome, Outcome::Interrupted, "{large:?}");
    assert_eq!(images::manifest_digest(&s.acr.url(), "mirror/oss/large", "1", None).await, None);
    assert!(s.dst.count("DELETE", "/mirror/oss/large/blobs/uploads/") >= 1, "the abandoned session was cancelled");
    s.assert_consistent().await;
    let moved = s.clean_rerun().await;
    assert!(moved >= LARGE as u64, "the rerun moved the abandoned layer: {moved}");
}
