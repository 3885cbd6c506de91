//! Graceful stop through the `mirror` binary: SIGTERM in the middle of a sync (the source slowed
//! by a delay proxy so the run is mid-way) ends with exit 143, every report written with the
//! images not done marked `interrupted`, the run records uploaded and the run lock released
//! (Azurite), no tag in the target pointing at incomplete content (checked with raw HTTP), and a
//! rerun that completes; SIGINT during a plan ends it at once with exit 130 and its reports; a
//! second signal ends a run that is waiting out its grace period at once.

mod support;
mod support_azure;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use support::images::{assert_image_present, list_tags};
use support::{DelayProxy, Format, PushedImage, Seeder, TestRegistry};
use support_azure::azurite::Azurite;

const ACR: &str = "mirrortest.azurecr.io";
const MCR: &str = "mcr.microsoft.com";
const REPOS: [&str; 4] = ["app0", "app1", "app2", "app3"];

/// A config copying the four images one at a time (so that a stop finds some not started),
/// with the run lock and records in Azurite when `azurite` is given.
fn config(source: &str, target: &str, azurite: Option<&Azurite>) -> String {
    let images: String = REPOS.iter().map(|r| format!("  - {MCR}/{r}:1\n")).collect();
    let mut cfg = format!(
        "target: {ACR}\n\
         mappings:\n  - {{source: '*', target: mirror, mode: copy}}\n\
         images:\n{images}\
         registries:\n  - host: {MCR}\n    endpoint: {source}\n  - host: {ACR}\n    endpoint: {target}\n\
         transfer: {{images: 1, retries: 1}}\n"
    );
    if let Some(a) = azurite {
        cfg.push_str(&format!(
            "report: {{azureBlob: '{acct}/runs/nightly', sasTokenEnv: MIRROR_TEST_SAS}}\n\
             lock: {{azureBlob: '{acct}/runs/mirror.lock', sasTokenEnv: MIRROR_TEST_SAS}}\n",
            acct = a.account_url
        ));
    }
    cfg
}

/// The binary as a tokio process, hermetic (an empty DOCKER_CONFIG), logging JSON lines so that
/// the test can wait for an event instead of sleeping.
fn mirror(dir: &Path, sas: &str, args: &[&str]) -> Command {
    let docker_config = dir.join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_mirror"));
    c.arg("-c")
        .arg(dir.join("mirror.yaml"))
        .arg("--log-format")
        .arg("json")
        .args(args)
        .current_dir(dir)
        .env("DOCKER_CONFIG", &docker_config)
        .env("MIRROR_TEST_SAS", sas)
        .env("MIRROR_LOG", "info")
        .env_remove("MIRROR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

use support::output_text as text;

/// Reads the child's JSON log lines until one satisfies `until`; returns the lines read. The
/// rest of stderr is collected by [`finish`].
async fn wait_for_log(child: &mut Child, until: impl Fn(&Value) -> bool) -> Vec<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("no log line for 60 s")
            .expect("read stderr")
            .unwrap_or_else(|| panic!("the run ended before the awaited event:\n{}", seen.join("\n")));
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        seen.push(line);
        if until(&event) {
            // Keep draining stderr so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return seen;
        }
    }
}

fn message(event: &Value) -> &str {
    event["fields"]["message"].as_str().unwrap_or("")
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("child running").to_string();
    let status = std::process::Command::new("kill").args([&format!("-{name}"), &pid]).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

async fn finish(child: Child) -> Output {
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the run did not end within 120 s of the signal")
        .unwrap()
}

async fn seed(source: &TestRegistry) -> Vec<PushedImage> {
    let mut seeder = Seeder::new(&source.url(), 41);
    let mut images = Vec::new();
    for r in REPOS {
        images.push(seeder.push_random_image(r, "1", Format::Oci, &[64 * 1024, 32 * 1024, 16 * 1024]).await);
    }
    images
}

/// Every tag the target has for the seeded images points at the whole image (manifest and every
/// blob); returns how many tags there were.
async fn tags_are_complete(target: &TestRegistry, images: &[PushedImage]) -> usize {
    let mut present = 0;
    for (repo, image) in REPOS.iter().zip(images) {
        let repo = format!("mirror/{repo}");
        if list_tags(&target.url(), &repo, None).await.contains(&image.tag) {
            assert_image_present(&target.url(), &repo, image, None).await;
            present += 1;
        }
    }
    present
}

async fn lease_state(azurite: &Azurite) -> Option<String> {
    let r = reqwest::Client::new()
        .head(format!("{}/runs/mirror.lock?{}", azurite.account_url, azurite.account_sas()))
        .header("x-ms-version", "2021-08-06")
        .send()
        .await
        .unwrap();
    if r.status() == 404 {
        return None;
    }
    r.headers().get("x-ms-lease-state").and_then(|v| v.to_str().ok()).map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_sync_reports_releases_the_lock_and_a_rerun_completes() {
    // Checks issue #10's graceful stop end to end: SIGTERM once the first image has started
    // gives exit 143; the JSON report lists every image with the not-done ones `interrupted`;
    // the JUnit file is written; the run records are in Blob Storage and the lock's lease is
    // released (a held lease would make the next run exit 4); no target tag points at a missing
    // blob; and the rerun finishes with exit 0 and every image complete.
    let azurite = Azurite::start().await;
    azurite.create_container("runs").await;
    let source = TestRegistry::anonymous().await;
    let images = seed(&source).await;
    let slow = DelayProxy::start(&source.url(), Duration::from_millis(200)).await;
    let target = TestRegistry::anonymous().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mirror.yaml"), config(&slow.url(), &target.url(), Some(&azurite))).unwrap();
    let sas = azurite.account_sas();

    let args = ["sync", "--grace", "1", "--report-json", "r.json", "--report-junit", "j.xml"];
    let mut run = mirror(dir.path(), &sas, &args).spawn().unwrap();
    // The pipeline logs each image as it starts it: wait for the first.
    wait_for_log(&mut run, |e| e["fields"]["target_image"].is_string()).await;
    signal(&run, "TERM");
    let out = finish(run).await;
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));

    let report: Value = serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    let outcomes: Vec<&str> =
        report["images"].as_array().unwrap().iter().map(|i| i["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.len(), REPOS.len(), "{report}");
    assert!(outcomes.contains(&"interrupted"), "no image marked interrupted: {outcomes:?}");
    let junit = std::fs::read_to_string(dir.path().join("j.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), REPOS.len(), "{junit}");

    assert_eq!(lease_state(&azurite).await.as_deref(), Some("available"), "the lock was not released");
    let records = azurite.blob_names("runs", "nightly/").await;
    assert!(records.iter().any(|n| n.ends_with("/report.json")), "no run record uploaded: {records:?}");

    let done = tags_are_complete(&target, &images).await;
    assert!(done < REPOS.len(), "every image was done: the signal came too late to test anything");

    let rerun = mirror(dir.path(), &sas, &["sync"]).output().await.unwrap();
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert_eq!(tags_are_complete(&target, &images).await, REPOS.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_plan_stops_it_at_once_with_130_and_its_reports() {
    // Checks that a read-only run stops promptly: SIGINT while the plan is still asking the
    // (very slow) source gives exit 130 without waiting for the plan, and the JSON and JUnit
    // reports are written, saying the run was stopped before the plan was complete.
    let source = TestRegistry::anonymous().await;
    seed(&source).await;
    let slow = DelayProxy::start(&source.url(), Duration::from_secs(600)).await;
    let target = TestRegistry::anonymous().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mirror.yaml"), config(&slow.url(), &target.url(), None)).unwrap();

    let mut run =
        mirror(dir.path(), "", &["plan", "--report-json", "r.json", "--report-junit", "j.xml"]).spawn().unwrap();
    // The plan has asked the source once the proxy has seen a request.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while slow.requests().is_empty() {
        assert!(run.try_wait().unwrap().is_none(), "the plan ended before asking the source");
        assert!(tokio::time::Instant::now() < deadline, "the plan did not ask the source within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&run, "INT");
    let out = finish(run).await;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let report: Value = serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    assert!(report["error"].as_str().unwrap_or("").contains("stopped before the plan was complete"), "{report}");
    let junit = std::fs::read_to_string(dir.path().join("j.xml")).unwrap();
    assert!(junit.contains("<failure"), "{junit}");
}

/// A read-only proxy in front of a registry that answers everything but blob downloads, which
/// it never answers: a sync gets past its plan and then hangs in its first image.
async fn stalling_blob_proxy(upstream: String) -> String {
    use axum::extract::Request;
    use axum::response::{IntoResponse, Response};
    async fn handle(upstream: String, req: Request) -> Response {
        let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
        if path.contains("/blobs/sha256:") && req.method() == axum::http::Method::GET {
            return std::future::pending().await;
        }
        let mut fwd = support::http_client().request(req.method().clone(), format!("{upstream}{path}"));
        for (name, value) in req.headers() {
            if name != "host" {
                fwd = fwd.header(name, value);
            }
        }
        let resp = fwd.send().await.unwrap();
        let mut out = Response::builder().status(resp.status());
        for (name, value) in resp.headers() {
            if !matches!(name.as_str(), "transfer-encoding" | "connection") {
                out = out.header(name, value);
            }
        }
        out.body(axum::body::Body::from(resp.bytes().await.unwrap())).unwrap().into_response()
    }
    let (listener, addr) = support::bind_loopback().await;
    let app = axum::Router::new().fallback(move |req: Request| handle(upstream.clone(), req));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_a_run_waiting_out_its_grace_at_once() {
    // Checks the escape hatch: with a grace period far longer than the test allows and a source
    // that never sends a blob, a first SIGTERM starts the graceful stop (logged), and a second
    // ends the process at once with 143 instead of waiting out the grace.
    let source = TestRegistry::anonymous().await;
    seed(&source).await;
    let stalling = stalling_blob_proxy(source.url()).await;
    let target = TestRegistry::anonymous().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mirror.yaml"), config(&stalling, &target.url(), None)).unwrap();

    let mut run = mirror(dir.path(), "", &["sync", "--grace", "3600"]).spawn().unwrap();
    let stderr = run.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut next_event = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("no log line for 60 s")
            .unwrap()
            .expect("the run ended early");
        serde_json::from_str(&line).unwrap()
    };
    // Each line comes within 60 s; a run that keeps logging other lines is bounded here.
    tokio::time::timeout(Duration::from_secs(120), async {
        while !next_event().await["fields"]["target_image"].is_string() {}
        signal(&run, "TERM");
        while !message(&next_event().await).starts_with("stopping") {}
    })
    .await
    .expect("no image started, or no graceful stop logged, within 120 s");
    signal(&run, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(60), run.wait())
        .await
        .expect("the second signal did not end the run")
        .unwrap();
    assert_eq!(status.code(), Some(143));
}
