//! Proves the test support code works against the real `docker-registry` 2.8.2, so that
//! failures in other integration tests point at the tool, not at the harness.

mod support;

use support::images::{self, Format, SkopeoAuth};
use support::token::Credential;
use support::{BadBlobServer, DelayProxy, FaultProxy, ReferrersProxy, Seeder, TestRegistry, TokenService, Users};

/// Anonymous registry: an image and a multi-arch index pushed by the seeder come back
/// byte-identical through raw HTTP, skopeo (which also verifies every blob on copy) and oci-client.
#[tokio::test]
async fn anonymous_round_trip_verified_by_skopeo() {
    let reg = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&reg.url(), 1);
    let image = seeder.push_random_image("app/web", "v1", Format::Docker, &[1000, 3000]).await;
    let index = seeder.push_multiarch("app/multi", "v1", Format::Oci).await;

    images::assert_image_present(&reg.url(), "app/web", &image, None).await;
    images::assert_image_present(&reg.url(), "app/multi", &index, None).await;
    assert_eq!(index.children.len(), 3);

    let digest = images::skopeo_inspect_digest(&image.reference(&reg.host()), &SkopeoAuth::None).await;
    assert_eq!(digest, image.digest, "skopeo sees the manifest bytes the seeder pushed");
    let digest = images::skopeo_inspect_digest(&index.reference(&reg.host()), &SkopeoAuth::None).await;
    assert_eq!(digest, index.digest);

    let dir = tempfile::tempdir().unwrap();
    images::skopeo_copy_to_dir(&index.reference(&reg.host()), dir.path(), &SkopeoAuth::None, true).await;
    for (blob, _) in &index.blobs {
        assert!(dir.path().join(blob.hex()).exists(), "skopeo copied blob {blob}");
    }

    let (bytes, digest) = images::oci_pull_manifest(&reg.host(), "app/multi", "v1", None).await;
    assert_eq!(bytes, index.bytes.to_vec());
    assert_eq!(digest, index.digest.as_str());
}

/// Token-auth registry: an anonymous push is refused with a Bearer challenge naming our
/// realm; a minted token lets the seeder push; skopeo with a password runs the token dance
/// against the service; a token with `pull` on the source repository too allows a
/// cross-repo mount (201) while a destination-only token does not.
#[tokio::test]
async fn token_auth_refuses_anonymous_and_mounts_with_multi_scope_token() {
    let tokens = TokenService::start(Users::new().user("alice", "secret")).await;
    let reg = TestRegistry::with_token_auth(&tokens).await;
    let http = support::http_client();

    let resp = http.post(format!("{}/v2/team/base/blobs/uploads/", reg.url())).send().await.unwrap();
    assert_eq!(resp.status(), 401, "anonymous push must be refused");
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(challenge.contains(&tokens.realm()), "challenge {challenge} names the realm");

    let mut seeder = Seeder::new(&reg.url(), 2).with_token_service(&tokens);
    let base = seeder.random_blob(4096);
    let image = seeder.push_image("team/base", "v1", Format::Oci, std::slice::from_ref(&base)).await;
    let pull = tokens.mint(&[("team/base", "pull")]);
    images::assert_image_present(&reg.url(), "team/base", &image, Some(&pull)).await;

    let creds = SkopeoAuth::Creds("alice".into(), "secret".into());
    assert_eq!(images::skopeo_inspect_digest(&image.reference(&reg.host()), &creds).await, image.digest);
    assert!(tokens.requests().iter().any(|r| r.credential == Credential::Basic("alice".into()) && r.status == 200));

    let mount = format!("{}/v2/team/app/blobs/uploads/?mount={}&from=team/base", reg.url(), base.digest);
    let dst_only = tokens.mint(&[("team/app", "pull,push")]);
    let resp = http.post(&mount).bearer_auth(&dst_only).send().await.unwrap();
    assert_eq!(resp.status(), 401, "a mount needs pull on the source repository");
    let both = tokens.mint(&[("team/app", "pull,push"), ("team/base", "pull")]);
    let resp = http.post(&mount).bearer_auth(&both).send().await.unwrap();
    assert_eq!(resp.status(), 201, "multi-scope token mounts the blob");
    assert!(images::blob_exists(&reg.url(), "team/app", &base.digest, Some(&both)).await);
}

/// Token service protocol: GET with multiple scopes grants exactly what a password user asked
/// for, anonymous callers get pull only, wrong passwords get 401, and the OAuth2 POST form
/// supports password (with an offline refresh token) and refresh_token grants; a service that
/// refuses anonymous callers answers them 401.
#[tokio::test]
async fn token_service_grants_and_records() {
    let tokens = TokenService::start(Users::new().user("bob", "pw").refresh_token("rt-1", "bob")).await;
    let http = support::http_client();
    let claims = |token: &str| -> serde_json::Value {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    let get = |query: &'static str| http.get(format!("{}?service=test-registry&{query}", tokens.realm()));

    let resp = get("scope=repository:a:pull,push&scope=repository:b:pull").basic_auth("bob", Some("pw")).send().await;
    let body: serde_json::Value = resp.unwrap().json().await.unwrap();
    let c = claims(body["token"].as_str().unwrap());
    assert_eq!(c["aud"], "test-registry", "aud must be a JSON string");
    assert_eq!(c["access"][0]["actions"], serde_json::json!(["pull", "push"]));
    assert_eq!(c["access"][1]["name"], "b");

    let body: serde_json::Value = get("scope=repository:a:pull,push").send().await.unwrap().json().await.unwrap();
    assert_eq!(claims(body["access_token"].as_str().unwrap())["access"][0]["actions"], serde_json::json!(["pull"]));

    let resp = get("scope=repository:a:pull").basic_auth("bob", Some("wrong")).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    let form = [("grant_type", "password"), ("username", "bob"), ("password", "pw"), ("service", "test-registry")];
    let resp = http
        .post(tokens.realm())
        .form(&[&form[..], &[("access_type", "offline"), ("scope", "repository:a:push repository:c:pull")]].concat())
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(claims(body["access_token"].as_str().unwrap())["access"][1]["name"], "c");
    let refresh = body["refresh_token"].as_str().expect("offline access returns a refresh token").to_string();

    for rt in [refresh.as_str(), "rt-1"] {
        let form = [("grant_type", "refresh_token"), ("refresh_token", rt), ("scope", "repository:a:pull")];
        let resp = http.post(tokens.realm()).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), 200, "refresh token {rt}");
    }
    let form = [("grant_type", "refresh_token"), ("refresh_token", "bogus"), ("scope", "repository:a:pull")];
    assert_eq!(http.post(tokens.realm()).form(&form).send().await.unwrap().status(), 401);

    let resp = get("scope=repository:a:pull").basic_auth("00000000-0000-0000-0000-000000000000", Some("rt-1")).send();
    assert_eq!(resp.await.unwrap().status(), 200, "a refresh token works as a Basic password");

    let reqs = tokens.requests();
    assert_eq!(tokens.count(), 8);
    assert_eq!(reqs[0].scopes, vec!["repository:a:pull,push", "repository:b:pull"]);
    assert_eq!(reqs[1].credential, Credential::Anonymous);
    assert_eq!(reqs[3].scopes, vec!["repository:a:push", "repository:c:pull"], "space-separated scopes split");
    assert_eq!(reqs[5].credential, Credential::RefreshToken("rt-1".into()));
    assert_eq!(reqs[6].status, 401);

    tokens.set_users(Users::new().anonymous(false));
    assert_eq!(get("scope=repository:a:pull").send().await.unwrap().status(), 401);
}

/// Artifacts and streaming: the SBOM artifact (empty config `{}`), the Helm-shaped artifact
/// and a streamed 8 MiB layer (hashed in one pass, uploaded in a second) are all stored with
/// the digests the seeder computed; oci-client reads the artifact back byte for byte.
#[tokio::test]
async fn artifacts_and_streamed_layer_round_trip() {
    let reg = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&reg.url(), 3);
    let sbom = seeder.push_sbom_artifact("art/sbom", "v1").await;
    let helm = seeder.push_helm_artifact("art/chart", "1.0.0").await;
    let large = seeder.push_large_image("art/large", "v1", 8 << 20, 42).await;
    for image in [&sbom, &helm, &large] {
        images::assert_image_present(&reg.url(), &image.repository, image, None).await;
    }
    let m: serde_json::Value = serde_json::from_slice(&sbom.bytes).unwrap();
    assert_eq!(m["artifactType"], images::SBOM_ARTIFACT);
    assert_eq!(m["config"]["size"], 2, "empty descriptor is the 2-byte {{}}");
    let (bytes, _) = images::oci_pull_manifest(&reg.host(), "art/chart", "1.0.0", None).await;
    assert_eq!(bytes, helm.bytes.to_vec());
    // The same seed regenerates the same content, so a second push yields the same digest.
    let (again, _) = seeder.push_large_blob("art/other", 8 << 20, 42).await;
    assert_eq!(again, large.blobs[1].0);
}

/// Pull-through cache (ACR cache rule stand-in): an index pulled through the cache is stored
/// there, and after the upstream is stopped the cache still serves it by tag (the tag falls
/// back to the local copy when the remote fails) with every child and blob.
#[tokio::test]
async fn proxy_cache_serves_after_upstream_stops() {
    let mut upstream = TestRegistry::anonymous().await;
    let index = Seeder::new(&upstream.url(), 4).push_multiarch("mcr/dotnet", "8.0", Format::Docker).await;
    let cache = TestRegistry::proxy_cache(&upstream.url()).await;

    images::assert_image_present(&cache.url(), "mcr/dotnet", &index, None).await;
    cache.wait_for_blobs_on_disk(&index.blobs.iter().map(|(d, _)| d).collect::<Vec<_>>()).await;
    let push = support::http_client().post(format!("{}/v2/mcr/dotnet/blobs/uploads/", cache.url())).send().await;
    assert_eq!(push.unwrap().status(), 405, "a proxy-mode registry refuses pushes");

    upstream.stop().await;
    assert!(support::http_client().get(format!("{}/v2/", upstream.url())).send().await.is_err(), "upstream is down");
    images::assert_image_present(&cache.url(), "mcr/dotnet", &index, None).await;
    let digest = images::skopeo_inspect_digest(&index.reference(&cache.host()), &SkopeoAuth::None).await;
    assert_eq!(digest, index.digest);
}

/// Fault proxy: injected 429s carry Retry-After: 1 and are not forwarded, then requests pass;
/// an injected 503 likewise; upload Locations are rewritten to the proxy; the 2nd PATCH is cut
/// after 100000 bytes (the client gets no response, the upstream stores the first chunk plus
/// the partial one); requests are counted by method and path.
#[tokio::test]
async fn fault_proxy_injects_429_and_cuts_patch() {
    let reg = TestRegistry::anonymous().await;
    let image = Seeder::new(&reg.url(), 5).push_random_image("f/img", "v1", Format::Oci, &[100]).await;
    let proxy = FaultProxy::start(&reg.url()).await;
    let http = support::http_client();

    proxy.fail_429("GET", "/manifests/", 2);
    for _ in 0..2 {
        let resp = http.get(format!("{}/v2/f/img/manifests/v1", proxy.url())).send().await.unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "1");
    }
    assert_eq!(images::manifest_digest(&proxy.url(), "f/img", "v1", None).await, Some(image.digest.clone()));
    assert_eq!(proxy.count("GET", "/manifests/"), 3);
    let head = http.head(format!("{}/v2/f/img/blobs/{}", proxy.url(), image.blobs[1].0)).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "100", "HEAD keeps Content-Length through the proxy");

    proxy.fail_503("POST", "/blobs/uploads/", 1);
    let url = format!("{}/v2/f/up/blobs/uploads/", proxy.url());
    assert_eq!(http.post(&url).send().await.unwrap().status(), 503);
    let resp = http.post(&url).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&proxy.url()), "Location {location} rewritten to the proxy");

    proxy.cut_patch(2, 100_000);
    let chunk = vec![1u8; 300_000];
    let resp = http.patch(&location).body(chunk.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 202, "first PATCH passes");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let cut = http.patch(&location).body(chunk.clone()).send().await;
    assert!(cut.is_err(), "second PATCH must fail without a response, got {cut:?}");
    assert_eq!(proxy.count("PATCH", "/blobs/uploads/"), 2);

    let uuid = location.split('?').next().unwrap().rsplit('/').next().unwrap();
    assert_eq!(reg.upload_bytes_on_disk("f/up", uuid), Some(300_000 + 100_000), "upstream holds the partial chunk");
    let upstream_location = location.replace(&proxy.url(), &reg.url());
    // Observed on 2.8.2: the session is now dead. Its stored offset (300000, in `_state`) no
    // longer matches the data (400000 bytes): "upload resumed at wrong offset", so a status
    // GET, a resumed PATCH or the final PUT via the last Location all get 404
    // BLOB_UPLOAD_INVALID, and a client must start a new upload.
    let status = http.get(&upstream_location).send().await.unwrap();
    assert_eq!(status.status(), 404);
    assert!(status.text().await.unwrap().contains("BLOB_UPLOAD_INVALID"));
    let retry = http.patch(&location).body(chunk.clone()).send().await.unwrap();
    assert_eq!(retry.status(), 404, "a resumed PATCH through the proxy is refused too");

    // A streamed (chunked, no Content-Length) PATCH is cut the same way.
    let resp = http.post(&url).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    proxy.cut_patch(1, 50_000);
    let body = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![2u8; 50_000])));
    let cut = http.patch(&location).body(reqwest::Body::wrap_stream(body)).send().await;
    assert!(cut.is_err(), "streamed PATCH must fail without a response, got {cut:?}");
    let uuid = location.split('?').next().unwrap().rsplit('/').next().unwrap();
    assert_eq!(reg.upload_bytes_on_disk("f/up", uuid), Some(50_000));
    assert_eq!(proxy.count("PATCH", "/blobs/uploads/"), 4, "two before, the refused retry, the streamed one");
}

/// Referrers proxy: a signature pushed through it is recorded and listed by
/// GET /v2/<name>/referrers/<digest> as an OCI index (filterable by artifactType), the PUT is
/// answered with OCI-Subject, and the seeder's tag-schema fallback index exists as well.
#[tokio::test]
async fn referrers_proxy_answers_the_api() {
    let reg = TestRegistry::anonymous().await;
    let proxy = ReferrersProxy::start(&reg.url()).await;
    let mut seeder = Seeder::new(&proxy.url(), 6);
    let image = seeder.push_random_image("r/img", "v1", Format::Oci, &[256]).await;
    let sig = seeder.push_signature("r/img", &image).await;
    let http = support::http_client();

    let url = format!("{}/v2/r/img/referrers/{}", proxy.url(), image.digest);
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], images::OCI_INDEX);
    let index: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["digest"], sig.digest.as_str());
    assert_eq!(index["manifests"][0]["artifactType"], images::NOTARY_SIGNATURE);
    let filtered: serde_json::Value =
        http.get(format!("{url}?artifactType=application/x-other")).send().await.unwrap().json().await.unwrap();
    assert!(filtered["manifests"].as_array().unwrap().is_empty());

    let put = http
        .put(format!("{}/v2/r/img/manifests/{}", proxy.url(), sig.digest))
        .header("content-type", images::OCI_MANIFEST)
        .body(sig.bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.headers()["oci-subject"], image.digest.as_str());

    let tag = format!("sha256-{}", image.digest.hex());
    let (bytes, _, _) = images::get_manifest(&reg.url(), "r/img", &tag, None).await.expect("tag-schema index");
    let fallback: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(fallback["manifests"][0]["digest"], sig.digest.as_str());
}

/// Bad blob server: the manifest and config are right, the layer has the promised size but
/// not the promised digest, and the `huge` manifest is over 4 MiB.
#[tokio::test]
async fn bad_blob_server_serves_a_mismatch() {
    let bad = BadBlobServer::start().await;
    let (repo, url) = (BadBlobServer::REPO, bad.url());
    assert_eq!(images::manifest_digest(&url, repo, BadBlobServer::TAG, None).await, Some(bad.manifest_digest.clone()));
    assert_eq!(images::blob_digest(&url, repo, &bad.config.0, None).await, bad.config.clone());
    let (digest, len) = images::blob_digest(&url, repo, &bad.layer.0, None).await;
    assert_eq!(len, bad.layer.1);
    assert_ne!(digest, bad.layer.0, "layer bytes must not match their digest");
    let (bytes, _, _) = images::get_manifest(&url, repo, BadBlobServer::HUGE_TAG, None).await.unwrap();
    assert!(bytes.len() > 4 << 20);
    assert!(images::blob_exists(&url, repo, &bad.layer.0, None).await);
}

/// Delay proxy: forwards pulls unchanged (the delay itself is not asserted: no timing tests).
#[tokio::test]
async fn delay_proxy_forwards() {
    let reg = TestRegistry::anonymous().await;
    let image = Seeder::new(&reg.url(), 7).push_random_image("d/img", "v1", Format::Docker, &[300]).await;
    let proxy = DelayProxy::start(&reg.url(), std::time::Duration::from_millis(20)).await;
    images::assert_image_present(&proxy.url(), "d/img", &image, None).await;
    assert_eq!(proxy.count("GET", "/blobs/"), 2);
}
