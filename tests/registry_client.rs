//! The registry client as a library, against a real registry: the operations that the
//! end-to-end tests cannot force, such as a refused mount's 202 fallback.

mod support;

use acr_mirror::config::Config;
use acr_mirror::registry::Registries;
use acr_mirror::registry::uploads::Started;
use support::{Seeder, TestRegistry};

fn registries(url: &str) -> Registries {
    let cfg =
        Config::parse(&format!("registries:\n  - host: reg.test\n    endpoint: {url}\n"), "t.yaml".as_ref()).unwrap();
    Registries::from_config(&cfg).unwrap()
}

/// A mount from a repository that does not hold the blob is answered 202 with an upload
/// session, which is used as it is; a mount from one that does is answered 201.
#[tokio::test]
async fn refused_mounts_fall_back_to_the_upload_session() {
    let reg = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&reg.url(), 31);
    let blob = seeder.random_blob(5000);
    seeder.push_blob("has/it", &blob).await;
    let r = registries(&reg.url()).get("reg.test").unwrap();

    match r.start_upload("wants/it", Some(("has/it", &blob.digest))).await.unwrap() {
        Started::Mounted => {}
        Started::Session(_) => panic!("a mount from a repository holding the blob must succeed"),
    }
    let session = match r.start_upload("wants/too", Some(("empty/repo", &blob.digest))).await.unwrap() {
        Started::Session(s) => s,
        Started::Mounted => panic!("a mount from an empty repository cannot succeed"),
    };
    let body = reqwest::Body::from(blob.bytes.clone());
    r.put_whole(&session, &blob.digest, blob.size(), body).await.unwrap();
    assert!(support::images::blob_exists(&reg.url(), "wants/too", &blob.digest, None).await);
    assert_eq!(r.head_blob("wants/too", &blob.digest).await.unwrap(), Some(blob.size()));
    assert_eq!(r.head_blob("nobody/here", &blob.digest).await.unwrap(), None);
}

/// A session that will not be finished is deleted, and the registry forgets it.
#[tokio::test]
async fn cancelled_sessions_are_gone() {
    let reg = TestRegistry::anonymous().await;
    let r = registries(&reg.url()).get("reg.test").unwrap();
    let Started::Session(session) = r.start_upload("some/repo", None).await.unwrap() else { panic!("no mount asked") };
    r.cancel_upload(&session).await;
    let err = r.upload_status(&session).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}
