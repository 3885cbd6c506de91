//! The nightly job's run lock and run records, through the `mirror` binary against Azurite:
//! two overlapping `mirror sync` runs (the second, and a `prune --apply`, exit with code 4 naming
//! the holder), the reports of the run (and of a prune) landing as blobs, the lock released at the end, and a failed upload
//! turning only an otherwise successful run into exit code 1.

mod support;
mod support_azure;

use std::path::Path;
use std::process::Stdio;

use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;
use tokio::sync::watch;

use support::{Format, Seeder, TestRegistry};
use support_azure::azurite::Azurite;

const ACR: &str = "mirrortest.azurecr.io";
const MCR: &str = "mcr.microsoft.com";

fn config(source: &str, target: &str, azurite: &Azurite, container: &str) -> String {
    format!(
        "target: {ACR}\n\
         mappings:\n  - {{source: '*', target: mirror, mode: copy}}\n\
         images: ['{MCR}/app:1']\n\
         registries:\n  - host: {MCR}\n    endpoint: {source}\n  - host: {ACR}\n    endpoint: {target}\n\
         report: {{azureBlob: '{acct}/{container}/nightly', sasTokenEnv: MIRROR_TEST_SAS}}\n\
         lock: {{azureBlob: '{acct}/runs/mirror.lock', sasTokenEnv: MIRROR_TEST_SAS}}\n",
        acct = azurite.account_url
    )
}

/// The binary as a tokio process: a blocking wait would stall the proxies served on this runtime.
fn mirror(cfg: &Path, azurite: &Azurite, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mirror"));
    c.arg("-c")
        .arg(cfg)
        .args(args)
        .env("MIRROR_TEST_SAS", azurite.account_sas())
        .env("MIRROR_LOG", "info")
        .env("DOCKER_CONFIG", support::empty_docker_config());
    c
}

use support::output_text as text;

/// The lock blob's `x-ms-lease-state` (`leased`, `available`, …), or `None` if it does not exist.
async fn lease_state(azurite: &Azurite) -> Option<String> {
    let r = support_azure::http()
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

/// A TCP gate in front of `upstream` (`host:port`): connections are accepted at once but carried
/// through only once the returned sender says `true`, so a run that uses the upstream is held
/// mid-way for exactly as long as the test needs, with no timing involved.
async fn gate(upstream: String) -> (String, watch::Sender<bool>) {
    let (listener, addr) = support::bind_loopback().await;
    let (open, opened) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let (mut opened, upstream) = (opened.clone(), upstream.clone());
            tokio::spawn(async move {
                if opened.wait_for(|o| *o).await.is_ok()
                    && let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (format!("http://{addr}"), open)
}

#[tokio::test]
async fn a_second_sync_while_the_first_holds_the_lock_exits_4_and_the_first_uploads_its_records() {
    // Checks the nightly job's guarantees through the binary: while one `mirror sync` runs (held
    // by a gate in front of the source until the test opens it) it holds a lease on the lock
    // blob; a second sync started then exits with code 4 and a message naming the first run's
    // process, doing nothing; the first finishes with 0, releases the lease, and its JSON and
    // JUnit reports land under the report prefix in a folder named by its start time (only one
    // run's records).
    let azurite = Azurite::start().await;
    azurite.create_container("runs").await;
    let source = TestRegistry::anonymous().await;
    Seeder::new(&source.url(), 21).push_random_image("app", "1", Format::Oci, &[4096]).await;
    let (gated, open) = gate(source.host()).await;
    let target = TestRegistry::anonymous().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mirror.yaml");
    std::fs::write(&cfg, config(&gated, &target.url(), &azurite, "runs")).unwrap();

    let mut first = mirror(&cfg, &azurite, &["sync"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let first_pid = first.id().unwrap();
    // The first run's log, read as it comes; `locked` fires on its "run lock acquired" line.
    let (locked, mut lock_seen) = watch::channel(false);
    let mut lines = tokio::io::BufReader::new(first.stderr.take().unwrap()).lines();
    let first_log = tokio::spawn(async move {
        let mut log = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("run lock acquired") {
                locked.send_replace(true);
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let seen = tokio::time::timeout(Duration::from_secs(60), lock_seen.wait_for(|l| *l)).await;
    assert!(matches!(seen, Ok(Ok(_))), "the first sync never said it took the lock");
    assert_eq!(lease_state(&azurite).await.as_deref(), Some("leased"));
    let second = mirror(&cfg, &azurite, &["sync"]).output().await.unwrap();
    // `prune --apply` takes the same lock, and is refused the same way.
    let prune = mirror(&cfg, &azurite, &["prune", "--apply"]).output().await.unwrap();
    open.send_replace(true);
    let mut first_out = first.wait_with_output().await.unwrap();
    first_out.stderr = first_log.await.unwrap().into_bytes();
    assert_eq!(second.status.code(), Some(4), "{}", text(&second));
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("another run holds the lock"), "{msg}");
    assert!(msg.contains(&format!("pid {first_pid} (mirror sync)")), "the holder is not named: {msg}");
    assert_eq!(first_out.status.code(), Some(0), "{}", text(&first_out));
    assert_eq!(prune.status.code(), Some(4), "{}", text(&prune));
    assert!(String::from_utf8_lossy(&prune.stderr).contains("another run holds the lock"), "{}", text(&prune));

    assert_eq!(lease_state(&azurite).await.as_deref(), Some("available"), "the lock was not released");
    let names = azurite.blob_names("runs", "nightly/").await;
    assert_eq!(names.len(), 2, "one run's report.json and junit.xml: {names:?}");
    let json_name = names.iter().find(|n| n.ends_with("/report.json")).expect("report.json uploaded");
    assert!(names.iter().any(|n| n.ends_with("/junit.xml")), "{names:?}");
    let (status, body) = azurite.get(&format!("runs/{json_name}")).await;
    assert_eq!(status, 200);
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["command"], "sync");
    assert_eq!(report["summary"]["outcomes"]["copied"], 1, "{report}");

    // Once the lock is free, `prune --apply` runs (nothing to prune: exit 0), releases it, and
    // its own report lands as the run's records (another container, so the folders named by
    // start time to the second can never collide with the sync's).
    azurite.create_container("prunes").await;
    std::fs::write(&cfg, config(&gated, &target.url(), &azurite, "prunes")).unwrap();
    let prune = mirror(&cfg, &azurite, &["prune", "--apply"]).output().await.unwrap();
    assert_eq!(prune.status.code(), Some(0), "{}", text(&prune));
    assert_eq!(lease_state(&azurite).await.as_deref(), Some("available"), "prune did not release the lock");
    let names = azurite.blob_names("prunes", "nightly/").await;
    let json_name = names.iter().find(|n| n.ends_with("/report.json")).expect("prune's report.json uploaded");
    assert!(names.iter().any(|n| n.ends_with("/junit.xml")), "{names:?}");
    let (_, body) = azurite.get(&format!("prunes/{json_name}")).await;
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((report["command"].as_str(), report["apply"].as_bool()), (Some("prune"), Some(true)), "{report}");
}

#[tokio::test]
async fn a_failed_record_upload_fails_only_an_otherwise_successful_run() {
    // Checks the exit-code rule for a report that cannot be uploaded (its container does not
    // exist): `plan` with drift still exits 2; a `sync` that did its work exits 1 and says why
    // (not 0, which would hide the lost record); the error names the blob, not the SAS.
    let azurite = Azurite::start().await;
    azurite.create_container("runs").await;
    let source = TestRegistry::anonymous().await;
    Seeder::new(&source.url(), 22).push_random_image("app", "1", Format::Oci, &[1024]).await;
    let target = TestRegistry::anonymous().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mirror.yaml");
    std::fs::write(&cfg, config(&source.url(), &target.url(), &azurite, "no-such-container")).unwrap();

    let plan = mirror(&cfg, &azurite, &["plan"]).output().await.unwrap();
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let sync = mirror(&cfg, &azurite, &["sync"]).output().await.unwrap();
    assert_eq!(sync.status.code(), Some(1), "{}", text(&sync));
    let err = String::from_utf8_lossy(&sync.stderr);
    assert!(err.contains("cannot upload the run records") && err.contains("no-such-container"), "{err}");
    assert!(!err.contains(azurite.account_sas().split("sig=").nth(1).unwrap()), "SAS signature leaked: {err}");
}
