//! Proves the test support code works against the real `docker-registry` 2.8.2, so that
//! failures in other integration tests point at the tool, not at the harness.

mod support;

use support::images::{self, Format, SkopeoAuth};
use support::token::Credential;
use support::{Seeder, TestRegistry, TokenService, Users};

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
    let image = seeder.push_image("team/base", "v1", Format::Oci, &[base.clone()]).await;
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
/// supports password (with an offline refresh token) and refresh_token grants.
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

    let reqs = tokens.requests();
    assert_eq!(tokens.count(), 7);
    assert_eq!(reqs[0].scopes, vec!["repository:a:pull,push", "repository:b:pull"]);
    assert_eq!(reqs[1].credential, Credential::Anonymous);
    assert_eq!(reqs[3].scopes, vec!["repository:a:push", "repository:c:pull"], "space-separated scopes split");
    assert_eq!(reqs[5].credential, Credential::RefreshToken("rt-1".into()));
    assert_eq!(reqs[6].status, 401);
}
