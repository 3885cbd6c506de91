//! The registry client as a library, against a real registry: the operations that the
//! end-to-end tests cannot force, such as a refused mount's 202 fallback, and the transport's
//! TLS trust (`caFile`, `insecureSkipTlsVerify`) and request slots. Every registry here is
//! configured `anonymous`, so no developer's Docker config is read.

mod support;
#[path = "support_azure/tls.rs"]
#[allow(dead_code)]
mod tls;

use acr_mirror::config::Config;
use acr_mirror::registry::Registries;
use acr_mirror::registry::uploads::Started;
use support::{Seeder, TestRegistry};

/// `reg.test` at `url`, anonymous (so no Docker config is read), with `extra` keys.
fn registries_with(url: &str, extra: &str) -> Registries {
    let yaml = format!("registries:\n  - host: reg.test\n    endpoint: {url}\n    auth: {{type: anonymous}}\n{extra}");
    Registries::from_config(&Config::parse(&yaml, "t.yaml".as_ref()).unwrap()).unwrap()
}

fn registries(url: &str) -> Registries {
    registries_with(url, "")
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

/// A registry whose certificate a private CA signed is refused by default, reached with that CA
/// as `caFile`, and reached with `insecureSkipTlsVerify` (which accepts any certificate).
#[tokio::test]
async fn private_cas_are_trusted_only_when_configured() {
    use axum::routing::get;
    let tls = tls::TestTls::new();
    let router = axum::Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route("/v2/app/tags/list", get(|| async { axum::Json(serde_json::json!({"name": "app", "tags": ["1"]})) }));
    let url = tls.serve(router).await;
    let e = registries(&url).get("reg.test").unwrap().list_tags("app").await.unwrap_err();
    assert!(matches!(e, acr_mirror::registry::RegistryError::Connect { .. }), "untrusted by default: {e}");

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let r = registries_with(&url, &format!("    caFile: {}\n", ca.display())).get("reg.test").unwrap();
    assert_eq!(r.list_tags("app").await.unwrap(), ["1"]);
    let r = registries_with(&url, "    insecureSkipTlsVerify: true\n").get("reg.test").unwrap();
    assert_eq!(r.list_tags("app").await.unwrap(), ["1"]);
    let e = registries_with(&url, &format!("    caFile: {}\n", dir.path().join("missing.pem").display()))
        .get("reg.test")
        .unwrap_err();
    assert!(e.to_string().contains("caFile"), "{e}");
}

/// With one request slot, a request waiting out a `Retry-After` holds no slot: another request
/// to the same registry completes meanwhile, and both succeed.
#[tokio::test]
async fn a_retry_sleeps_without_its_request_slot() {
    let reg = TestRegistry::anonymous().await;
    Seeder::new(&reg.url(), 32).push_random_image("app", "1", support::Format::Oci, &[100]).await;
    let front = support::FaultProxy::start(&reg.url()).await;
    let r = registries_with(&front.url(), "    maxConcurrentRequests: 1\n").get("reg.test").unwrap();
    r.list_tags("app").await.unwrap(); // the ping, out of the way
    front.fail_with("GET", "/tags/list", 1, 429, Some(3));
    let throttled = r.list_tags("app");
    let other = async {
        // Starts once the throttled request has had its 429.
        while front.count("GET", "/tags/list") < 2 {
            tokio::task::yield_now().await;
        }
        let head = r.head_manifest("app", "1").await.unwrap();
        (head, front.count("GET", "/tags/list"))
    };
    let (tags, (head, lists_when_done)) = tokio::join!(throttled, other);
    assert_eq!(tags.unwrap(), ["1"]);
    assert!(head.is_some());
    assert_eq!(lists_when_done, 2, "the other request finished while the throttled one was waiting");
}

/// A token realm in front of a [`TokenService`] that holds each token request until a second
/// one is in flight (or 3 s have passed), then forwards it, and records the most requests it
/// held at once. Once two were in flight together it holds nothing any more.
struct HoldingRealm {
    url: String,
    state: std::sync::Arc<HoldState>,
}

#[derive(Default)]
struct HoldState {
    upstream: String,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    open: std::sync::atomic::AtomicBool,
}

impl HoldingRealm {
    async fn start(realm: &str) -> Self {
        use axum::extract::{RawQuery, State};
        use std::sync::atomic::Ordering::SeqCst;
        let state = std::sync::Arc::new(HoldState { upstream: realm.to_string(), ..Default::default() });
        async fn token(
            State(s): State<std::sync::Arc<HoldState>>,
            RawQuery(query): RawQuery,
            headers: axum::http::HeaderMap,
        ) -> (axum::http::StatusCode, String) {
            let now = s.in_flight.fetch_add(1, SeqCst) + 1;
            s.most.fetch_max(now, SeqCst);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while !s.open.load(SeqCst) && s.in_flight.load(SeqCst) < 2 && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            if s.in_flight.load(SeqCst) >= 2 {
                s.open.store(true, SeqCst);
            }
            let mut req = support::http_client().get(format!("{}?{}", s.upstream, query.unwrap_or_default()));
            if let Some(a) = headers.get("authorization") {
                req = req.header("authorization", a);
            }
            let resp = req.send().await.expect("the token service");
            let status = axum::http::StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let body = resp.text().await.unwrap_or_default();
            s.in_flight.fetch_sub(1, SeqCst);
            (status, body)
        }
        let (listener, addr) = support::bind_loopback().await;
        let app = axum::Router::new().route("/token", axum::routing::get(token)).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("holding realm") });
        HoldingRealm { url: format!("http://{addr}/token"), state }
    }

    fn most_in_flight(&self) -> usize {
        self.state.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Token fetches for different repositories go ahead at the same time, and a burst of requests
/// for one repository still fetches one token. With one lock for every scope set (as before),
/// the holding realm never saw two token requests at once, and a plan of 30 repositories waited
/// for 30 token round trips one after another.
#[tokio::test]
async fn token_fetches_for_different_repositories_overlap() {
    let tokens = support::TokenService::start(support::Users::new().anonymous(true)).await;
    let realm = HoldingRealm::start(&tokens.realm()).await;
    let reg = TestRegistry::with_token_realm(&tokens, &realm.url).await;
    let mut seeder = Seeder::new(&reg.url(), 33).with_token_service(&tokens);
    for repo in ["a", "b", "c"] {
        seeder.push_random_image(repo, "1", support::Format::Oci, &[100]).await;
    }
    let r = registries(&reg.url()).get("reg.test").unwrap();
    let heads = futures::future::join_all(["a", "b"].map(|repo| r.head_manifest(repo, "1"))).await;
    assert!(heads.iter().all(|h| matches!(h, Ok(Some(_)))), "{heads:?}");
    assert_eq!(realm.most_in_flight(), 2, "the two repositories' tokens were fetched one after the other");

    let before = tokens.count();
    let burst = futures::future::join_all((0..8).map(|_| r.head_manifest("c", "1"))).await;
    assert!(burst.iter().all(|h| matches!(h, Ok(Some(_)))), "{burst:?}");
    assert_eq!(tokens.count() - before, 1, "eight requests for one repository fetched more than one token");
}

/// A TLS registry that offers HTTP/2 by ALPN (distribution does, as a client with defaults
/// shows) is spoken to over HTTP/1.1, its blob bodies and manifests alike: on HTTP/2 every
/// request of a run shared one connection's flow-control window (issue #22), so the client
/// keeps a pool of HTTP/1.1 connections instead. Read from the registry's own access log.
#[tokio::test]
async fn tls_registries_are_spoken_to_over_http1_even_when_they_offer_http2() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let plain = TestRegistry::anonymous().await;
    let image = Seeder::new(&plain.url(), 34).push_random_image("app", "1", support::Format::Oci, &[1000]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let (ca_pem, cert, key_pem) = (dir.path().join("ca.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let tls = TestRegistry::tls_view(&plain, &cert, &key_pem).await;

    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let offered = trusting.get(format!("{}/v2/", tls.url())).send().await.unwrap().version();
    assert_eq!(offered, reqwest::Version::HTTP_2, "the registry offers HTTP/2");

    let r = registries_with(&tls.url(), &format!("    caFile: {}\n", ca_pem.display())).get("reg.test").unwrap();
    let m = r.get_manifest("app", "1").await.unwrap();
    assert_eq!(m.digest, image.digest);
    let (layer, size) = &image.blobs[1];
    let mut body = r.get_blob("app", layer, 0).await.unwrap();
    let mut got = 0;
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        got += chunk.unwrap().len() as u64;
    }
    assert_eq!(got, *size);
    let log = tls.log();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("/v2/app/")).collect();
    assert_eq!(ours.len(), 2, "the manifest and the blob: {log}");
    assert!(ours.iter().all(|l| l.contains("HTTP/1.1\"")), "{ours:?}");
}
