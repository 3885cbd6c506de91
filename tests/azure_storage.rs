//! Run records and the run lock against Azurite (the Azure Storage emulator), through the
//! official azure_storage_blob client with a SAS token, as the nightly job would use them.

mod support_azure;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use acr_mirror::azure::storage::{LeaseState, LockTiming, RunLock, StorageError, upload_run_records};
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

/// Waits (at most 30 s, so a broken renewer fails the test instead of hanging it) until the lock's
/// lease state satisfies `ok`.
async fn wait_for_state(lock: &RunLock, what: &str, ok: impl FnMut(&LeaseState) -> bool) {
    let mut state = lock.watch();
    let waited = tokio::time::timeout(Duration::from_secs(30), state.wait_for(ok)).await.map(|r| r.is_ok());
    match waited {
        Ok(true) => {}
        Ok(false) => panic!("the lock stopped reporting before {what}"),
        Err(_) => panic!("no {what} within 30 s; state {:?}", *lock.watch().borrow()),
    }
}

/// A 15 s lease (the shortest the service allows) renewed every 100 ms: renewals are observable
/// long before the lease could lapse, so no test waits for the lease length.
const FAST_RENEWAL: LockTiming = LockTiming { lease: Duration::from_secs(15), renew_every: Duration::from_millis(100) };

#[tokio::test]
async fn renewal_is_accepted_by_the_service_and_the_lock_stays_held() {
    // Checks the background renewal against the storage service: three renewals with the lock's
    // lease id are accepted (a wrong lease id or a renewal against the wrong blob would be
    // refused and show as Lost), and meanwhile another run is still refused. How long a renewed
    // lease lasts is the service's business; waiting out 15 s here would only test Azurite.
    let az = Azurite::start().await;
    az.create_container("locks").await;
    let loc = BlobLocation::with_sas(&format!("{}/locks/renewed.lock", az.account_url), &az.account_sas()).unwrap();
    let held = RunLock::acquire_with(&loc, "long run", FAST_RENEWAL).await.unwrap();
    wait_for_state(&held, "three renewals", |s| matches!(s, LeaseState::Held { renewals } if *renewals >= 3)).await;
    let err = RunLock::acquire_with(&loc, "next run", FAST_RENEWAL).await.unwrap_err();
    assert!(matches!(err, StorageError::LockHeld(_)), "{err}");
    assert!(!held.is_lost());
    held.release().await.unwrap();
}

#[tokio::test]
async fn a_broken_lease_is_reported_as_lost() {
    // Checks what `sync` warns about at its end: when someone breaks the lease, the next renewal
    // fails and the lock says it is lost (is_lost and the watched state), instead of the run
    // believing it still holds the lock.
    let az = Azurite::start().await;
    az.create_container("locks").await;
    let loc = BlobLocation::with_sas(&format!("{}/locks/broken.lock", az.account_url), &az.account_sas()).unwrap();
    let held = RunLock::acquire_with(&loc, "long run", FAST_RENEWAL).await.unwrap();
    az.break_lease("locks/broken.lock").await;
    wait_for_state(&held, "a lost lease", |s| *s == LeaseState::Lost).await;
    assert!(held.is_lost());
}

#[tokio::test]
async fn a_dropped_lock_is_released_for_the_next_run() {
    // Checks that dropping a RunLock without release() (an early return) frees the lock promptly
    // instead of leaving the next run to wait out the 60 s lease: the background release is
    // awaited through the watched state, then the next acquire succeeds at once.
    let az = Azurite::start().await;
    az.create_container("locks").await;
    let loc = BlobLocation::with_sas(&format!("{}/locks/dropped.lock", az.account_url), &az.account_sas()).unwrap();
    let lock = RunLock::acquire(&loc, "early return").await.unwrap();
    let mut state = lock.watch();
    drop(lock);
    tokio::time::timeout(Duration::from_secs(30), state.wait_for(|s| *s == LeaseState::Released))
        .await
        .expect("the background release did not finish within 30 s")
        .expect("the background release failed");
    RunLock::acquire(&loc, "next").await.expect("the lock is free after the drop").release().await.unwrap();
}
