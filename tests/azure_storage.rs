//! Run records and the run lock against Azurite (the Azure Storage emulator), through the
//! official azure_storage_blob client with a SAS token, as the nightly job would use them.

mod support_azure;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use acr_mirror::azure::storage::{LockTiming, RunLock, StorageError, upload_run_records};
use acr_mirror::azure::{BlobLocation, LockHeld};
use support_azure::azurite::Azurite;

#[tokio::test]
async fn run_records_land_under_the_prefix_named_by_start_time() {
    // Checks that the JSON and JUnit reports are uploaded as PREFIX/<start>/report.json and
    // PREFIX/<start>/junit.xml with exactly the bytes given, read back with raw HTTP.
    let az = Azurite::start().await;
    az.create_container("runs").await;
    let loc = BlobLocation::with_sas(&format!("{}/runs/nightly", az.account_url), &az.account_sas()).unwrap();
    let started = UNIX_EPOCH + Duration::from_secs(1_795_658_400); // 2026-11-26T02:00:00Z
    let json = bytes::Bytes::from_static(br#"{"images": 3, "failed": 0}"#);
    let junit = bytes::Bytes::from_static(b"<testsuites><testsuite name=\"sync\" tests=\"3\"/></testsuites>");
    let out = upload_run_records(&loc, started, json.clone(), junit.clone()).await.unwrap();

    assert_eq!(out.json, format!("{}/runs/nightly/2026-11-26T02-00-00Z/report.json", az.account_url));
    assert!(!out.json.contains("sig="), "{}", out.json);
    assert_eq!(az.get("runs/nightly/2026-11-26T02-00-00Z/report.json").await, (200, json.to_vec()));
    assert_eq!(az.get("runs/nightly/2026-11-26T02-00-00Z/junit.xml").await, (200, junit.to_vec()));
}

#[tokio::test]
async fn a_missing_container_is_reported_with_a_hint_and_no_signature() {
    // Checks the failure message when the container does not exist: it names the blob, says what
    // to do, and does not contain the SAS signature.
    let az = Azurite::start().await;
    let loc = BlobLocation::with_sas(&format!("{}/absent/p", az.account_url), &az.account_sas()).unwrap();
    let err = upload_run_records(&loc, SystemTime::now(), "{}".into(), "<x/>".into()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("absent/p/") && msg.contains("ContainerNotFound"), "{msg}");
    let sig = az.account_sas().split("sig=").nth(1).unwrap().to_string();
    assert!(!msg.contains(&sig), "{msg}");
}

#[tokio::test]
async fn a_second_run_is_refused_while_the_lock_is_held_and_admitted_after_release() {
    // Checks the lock: the first acquire creates the lock blob and takes the lease; a second
    // acquire fails with LockHeld naming the blob and the holder; after release a new run gets it.
    let az = Azurite::start().await;
    az.create_container("locks").await;
    let loc = BlobLocation::with_sas(&format!("{}/locks/mirror.lock", az.account_url), &az.account_sas()).unwrap();

    let first = RunLock::acquire(&loc, "nightly-a pid 1").await.unwrap();
    let err = RunLock::acquire(&loc, "nightly-b pid 2").await.unwrap_err();
    let StorageError::LockHeld(LockHeld { blob, holder, until, .. }) = &err else {
        panic!("expected LockHeld, got {err}")
    };
    assert!(blob.ends_with("/locks/mirror.lock"), "{blob}");
    assert_eq!(holder.as_deref(), Some("nightly-a pid 1"));
    assert!(until.is_some());
    assert!(err.to_string().contains("another run holds the lock"), "{err}");

    first.release().await.unwrap();
    let second = RunLock::acquire(&loc, "nightly-b pid 2").await.unwrap();
    assert!(!second.is_lost());
    second.release().await.unwrap();
}

#[tokio::test]
async fn renewal_keeps_the_lock_past_the_lease_length() {
    // Checks that the background renewal keeps a 15 s lease (the shortest the service allows)
    // alive: 20 s after acquiring, past the lease's own expiry, another run is still refused.
    // Without renewal the lease would have lapsed and the second acquire would succeed.
    let az = Azurite::start().await;
    az.create_container("locks").await;
    let loc = BlobLocation::with_sas(&format!("{}/locks/renewed.lock", az.account_url), &az.account_sas()).unwrap();
    let timing = LockTiming { lease: Duration::from_secs(15), renew_every: Duration::from_secs(5) };
    let held = RunLock::acquire_with(&loc, "long run", timing).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let err = RunLock::acquire_with(&loc, "next run", timing).await.unwrap_err();
    assert!(matches!(err, StorageError::LockHeld(_)), "{err}");
    assert!(!held.is_lost());
    held.release().await.unwrap();
}

#[tokio::test]
async fn a_dropped_lock_is_released_for_the_next_run() {
    // Checks that dropping a RunLock without release() (an early return) frees the lock promptly
    // instead of leaving the next run to wait out the lease.
    let az = Azurite::start().await;
    az.create_container("locks").await;
    let loc = BlobLocation::with_sas(&format!("{}/locks/dropped.lock", az.account_url), &az.account_sas()).unwrap();
    let timing = LockTiming { lease: Duration::from_secs(60), renew_every: Duration::from_secs(20) };
    drop(RunLock::acquire_with(&loc, "early return", timing).await.unwrap());
    // The release runs on the runtime in the background; give it a bounded number of tries.
    let mut last = None;
    for _ in 0..50 {
        match RunLock::acquire_with(&loc, "next", timing).await {
            Ok(l) => {
                l.release().await.unwrap();
                return;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("lock still held after drop: {}", last.unwrap());
}
