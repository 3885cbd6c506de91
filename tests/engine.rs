//! The copy engine end to end: `mirror copy` and `mirror copy --warm` run as a process against
//! real distribution registries, and what they wrote checked with independent clients
//! (raw HTTP, skopeo, oci-client).

mod support;

use std::path::PathBuf;
use std::process::Output;

use support::images::{self, SkopeoAuth};
use support::{BadBlobServer, FaultProxy, Format, ReferrersProxy, Seeder, TestRegistry, TokenService, Users};

const MCR: &str = "mcr.microsoft.com";
const ACR: &str = "myacr.azurecr.io";

/// A config naming logical registries and where they really are, plus a scratch folder.
struct Run {
    dir: tempfile::TempDir,
    registries: Vec<String>,
    extra: String,
    env: Vec<(String, String)>,
}

impl Run {
    fn new() -> Self {
        Run { dir: tempfile::tempdir().unwrap(), registries: Vec::new(), extra: String::new(), env: Vec::new() }
    }

    fn registry(mut self, host: &str, url: &str, auth: Option<&str>) -> Self {
        let mut r = format!("  - host: {host}\n    endpoint: {url}\n");
        if let Some(a) = auth {
            r.push_str(&format!("    auth: {a}\n"));
        }
        self.registries.push(r);
        self
    }

    fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self
    }

    fn config(&self) -> PathBuf {
        let path = self.dir.path().join("mirror.yaml");
        let text = format!("registries:\n{}{}", self.registries.concat(), self.extra);
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn mirror(&self, args: &[&str]) -> Output {
        let cfg = self.config();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirror"));
        cmd.arg("-c").arg(&cfg).args(args).env("MIRROR_LOG", "warn").env("DOCKER_CONFIG", self.dir.path());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.kill_on_drop(true).output())
            .await
            .expect("mirror finished within 120 s")
            .expect("run mirror");
        eprintln!(
            "mirror {}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A multi-arch index (OCI and Docker forms) with a Windows child carrying `os.version` is copied
/// into a token-auth target with every byte the same: skopeo and oci-client read back the same
/// digests, every child and blob is there, and Basic credentials came from the environment.
#[tokio::test]
async fn copies_multiarch_indexes_byte_for_byte_into_a_token_auth_target() {
    let mcr = TestRegistry::anonymous().await;
    let tokens = TokenService::start(Users::new().user("mirror", "s3cret").anonymous(false)).await;
    let acr = TestRegistry::with_token_auth(&tokens).await;
    let mut seeder = Seeder::new(&mcr.url(), 1);
    let oci = seeder.push_multiarch("oss/kubernetes/pause", "3.10", Format::Oci).await;
    let docker = seeder.push_multiarch("oss/kubernetes/coredns", "v1.11", Format::Docker).await;
    let run = Run::new()
        .registry(MCR, &mcr.url(), None)
        .registry(ACR, &acr.url(), Some("{type: basic, username: mirror, passwordEnv: ACR_PASSWORD}"))
        .env("ACR_PASSWORD", "s3cret");

    for image in [&oci, &docker] {
        let out = run
            .mirror(&["copy", &image.reference(MCR), &format!("{ACR}/mirror/{}:{}", image.repository, image.tag)])
            .await;
        assert!(out.status.success(), "{}", text(&out));
        assert!(!text(&out).contains("s3cret"), "the password must never be printed");
        let repo = format!("mirror/{}", image.repository);
        let pull = tokens.mint(&[(&repo, "pull")]);
        images::assert_image_present(&acr.url(), &repo, image, Some(&pull)).await;
        let seen = images::skopeo_inspect_digest(
            &format!("{}/{repo}:{}", acr.host(), image.tag),
            &SkopeoAuth::Token(pull.clone()),
        )
        .await;
        assert_eq!(seen, image.digest, "skopeo sees the source digest");
        let (bytes, digest) = images::oci_pull_manifest(&acr.host(), &repo, &image.tag, Some(&pull)).await;
        assert_eq!(digest, image.digest.to_string());
        assert_eq!(bytes, image.bytes.to_vec(), "index bytes unchanged, os.version included");
        assert!(String::from_utf8_lossy(&bytes).contains("10.0.20348.2227"));
    }
    // Copying again writes nothing.
    let out = run.mirror(&["copy", &oci.reference(MCR), &format!("{ACR}/mirror/{}:{}", oci.repository, oci.tag)]).await;
    assert!(out.status.success());
    assert!(text(&out).contains("nothing to do"), "{}", text(&out));
}

/// The three index policies with a platform filter: `sparse` is refused by distribution 2.8
/// (MANIFEST_BLOB_UNKNOWN) with the fix named and no tag left behind; `rewrite` pushes a new
/// index of the chosen platforms (new digest, reported); `preserve` copies every platform.
#[tokio::test]
async fn index_policies_are_applied_and_reported() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let image = Seeder::new(&mcr.url(), 2).push_multiarch("oss/app", "1.0", Format::Oci).await;
    let run = Run::new().registry(MCR, &mcr.url(), None).registry(ACR, &acr.url(), None);
    let src = image.reference(MCR);

    let out = run
        .mirror(&[
            "copy",
            &src,
            &format!("{ACR}/sparse/app:1.0"),
            "--platform",
            "linux/amd64",
            "--index-policy",
            "sparse",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("refused") && t.contains("set --index-policy to rewrite"), "{t}");
    assert_eq!(images::manifest_digest(&acr.url(), "sparse/app", "1.0", None).await, None, "no tag after a refusal");

    let out = run
        .mirror(&[
            "copy",
            &src,
            &format!("{ACR}/rewrite/app:1.0"),
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64",
            "--index-policy",
            "rewrite",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("new index"), "{}", text(&out));
    let (bytes, _, _) = images::get_manifest(&acr.url(), "rewrite/app", "1.0", None).await.unwrap();
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["os"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(platforms, ["linux", "linux"], "windows left out");
    assert_ne!(images::sha256(&bytes), image.digest, "a rewritten index has a new digest");
    for child in image.children.iter().filter(|c| c.platform.as_ref().unwrap().os == "linux") {
        assert!(images::manifest_digest(&acr.url(), "rewrite/app", child.digest.as_str(), None).await.is_some());
    }
    let windows = image.children.iter().find(|c| c.platform.as_ref().unwrap().os == "windows").unwrap();
    assert_eq!(images::manifest_digest(&acr.url(), "rewrite/app", windows.digest.as_str(), None).await, None);

    let out = run.mirror(&["copy", &src, &format!("{ACR}/preserve/app:1.0"), "--platform", "linux/amd64"]).await;
    assert!(out.status.success());
    images::assert_image_present(&acr.url(), "preserve/app", &image, None).await;
}

/// OCI artifacts (an SBOM with `artifactType` and an empty config, a Helm-shaped artifact with a
/// custom config type) keep their digests, a Notary-style signature referrer found through
/// the tag schema fallback is copied with its `sha256-<hex>` index, and a cosign signature at
/// its `sha256-<hex>.sig` tag comes along, which skopeo then reads from the target.
#[tokio::test]
async fn copies_artifacts_and_referrers_through_the_tag_schema() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&mcr.url(), 3);
    let sbom = seeder.push_sbom_artifact("art/sbom", "v1").await;
    let helm = seeder.push_helm_artifact("art/chart", "0.1.0").await;
    let image = seeder.push_random_image("signed/app", "2.0", Format::Oci, &[3000, 1000]).await;
    let sig = seeder.push_signature("signed/app", &image).await;
    let cosign = seeder.push_cosign_signature("signed/app", &image).await;
    let run = Run::new().registry(MCR, &mcr.url(), None).registry(ACR, &acr.url(), None);

    for a in [&sbom, &helm] {
        let out = run.mirror(&["copy", &a.reference(MCR), &format!("{ACR}/{}:{}", a.repository, a.tag)]).await;
        assert!(out.status.success(), "{}", text(&out));
        images::assert_image_present(&acr.url(), &a.repository, a, None).await;
    }
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/signed/app:2.0")]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 referrers"), "{}", text(&out));
    assert_eq!(
        images::manifest_digest(&acr.url(), "signed/app", sig.digest.as_str(), None).await,
        Some(sig.digest.clone())
    );
    let tag = format!("sha256-{}", image.digest.hex());
    let cosign_ref = format!("{}/signed/app:{tag}.sig", acr.host());
    assert_eq!(images::skopeo_inspect_digest(&cosign_ref, &SkopeoAuth::None).await, cosign.digest);
    for (blob, size) in &cosign.blobs {
        assert_eq!(images::blob_digest(&acr.url(), "signed/app", blob, None).await, (blob.clone(), *size));
    }
    let (bytes, _, _) = images::get_manifest(&acr.url(), "signed/app", &tag, None).await.expect("fallback tag");
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let listed: Vec<&str> =
        index["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert_eq!(listed, [sig.digest.as_str()]);
    assert_eq!(index["manifests"][0]["artifactType"], "application/vnd.cncf.notary.signature");
}

/// Referrers are found through the referrers API where the source has it, and a target that
/// answers `OCI-Subject` (so indexes referrers itself) gets no tag schema index; a cosign
/// signature tag, which no referrers API lists, is copied all the same.
#[tokio::test]
async fn copies_referrers_through_the_referrers_api() {
    let mcr_backend = TestRegistry::anonymous().await;
    let mcr = ReferrersProxy::start(&mcr_backend.url()).await;
    let acr_backend = TestRegistry::anonymous().await;
    let acr = ReferrersProxy::start(&acr_backend.url()).await;
    let mut seeder = Seeder::new(&mcr.url(), 4);
    let image = seeder.push_random_image("signed/api", "1", Format::Oci, &[1000]).await;
    let sig = seeder.push_signature("signed/api", &image).await;
    let cosign = seeder.push_cosign_signature("signed/api", &image).await;
    assert!(mcr.referrers("signed/api", &image.digest).iter().any(|r| r["digest"] == sig.digest.as_str()));
    // Delete the seeder's tag-schema index on the source, so only the API can find the signature.
    let tag = format!("sha256-{}", image.digest.hex());
    let (_, _, fallback) = images::get_manifest(&mcr_backend.url(), "signed/api", &tag, None).await.unwrap();
    let url = format!("{}/v2/signed/api/manifests/{fallback}", mcr_backend.url());
    assert_eq!(support::http_client().delete(url).send().await.unwrap().status().as_u16(), 202);
    let run = Run::new().registry(MCR, &mcr.url(), None).registry(ACR, &acr.url(), None);
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/signed/api:1")]).await;
    assert!(out.status.success(), "{}", text(&out));
    let found = acr.referrers("signed/api", &image.digest);
    assert!(
        found.iter().any(|r| r["digest"] == sig.digest.as_str()),
        "target's referrers API lists the signature: {found:?}"
    );
    assert!(
        images::get_manifest(&acr_backend.url(), "signed/api", &tag, None).await.is_none(),
        "no tag schema index where the target has the API"
    );
    assert_eq!(
        images::manifest_digest(&acr_backend.url(), "signed/api", &format!("{tag}.sig"), None).await,
        Some(cosign.digest),
        "cosign's tag is found by listing tags even where the source has the referrers API"
    );
}

/// Warm mode reads the index, the chosen children and their blobs through a pull-through cache
/// and writes nothing; after the upstream stops, the cache still serves those platforms.
#[tokio::test]
async fn warming_fills_a_pull_through_cache_without_writing() {
    let mut mcr = TestRegistry::anonymous().await;
    let image = Seeder::new(&mcr.url(), 5).push_multiarch("oss/kubernetes/kube-proxy", "v1.34.1", Format::Docker).await;
    let cache = TestRegistry::proxy_cache(&mcr.url()).await;
    let counting = FaultProxy::start(&cache.url()).await;
    let run = Run::new().registry(MCR, &mcr.url(), None).registry(ACR, &counting.url(), None);
    let target = format!("{ACR}/oss/kubernetes/kube-proxy:v1.34.1");
    let out = run
        .mirror(&[
            "copy",
            "--warm",
            &image.reference(MCR),
            &target,
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        assert_eq!(counting.count(method, "/v2/"), 0, "warming must not write ({method})");
    }
    let linux: Vec<_> = image.children.iter().filter(|c| c.platform.as_ref().unwrap().os == "linux").collect();
    let blobs: Vec<_> = linux.iter().flat_map(|c| c.blobs.iter().map(|(d, _)| d)).collect();
    cache.wait_for_blobs_on_disk(&blobs).await;
    mcr.stop().await;
    for c in linux {
        let arch = &c.platform.as_ref().unwrap().architecture;
        let dir = tempfile::tempdir().unwrap();
        let reference = format!("{}/oss/kubernetes/kube-proxy@{}", cache.host(), c.digest);
        images::skopeo_copy_to_dir(&reference, dir.path(), &SkopeoAuth::None, false).await;
        assert!(dir.path().join("manifest.json").exists(), "{arch} pulled from the cache alone");
    }
}

/// A source with the referrers API that refuses to list tags (403): the image and its referrers
/// are copied, its cosign tags cannot be looked for, which one warning says, and the listing is
/// asked for once however many manifests (index and children) the copy looks at.
#[tokio::test]
async fn a_source_refusing_tag_listing_still_copies_with_one_warning() {
    let mcr_backend = TestRegistry::anonymous().await;
    let mcr = ReferrersProxy::start(&mcr_backend.url()).await;
    let acr = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&mcr.url(), 19);
    let image = seeder.push_multiarch("signed/unlisted", "1", Format::Oci).await;
    let sig = seeder.push_signature("signed/unlisted", &image).await;
    mcr.fail_with("GET", "/tags/list", 100, 403, None);
    let run = Run::new().registry(MCR, &mcr.url(), None).registry(ACR, &acr.url(), None);
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/signed/unlisted:1")]).await;
    assert!(out.status.success(), "{}", text(&out));
    images::assert_image_present(&acr.url(), "signed/unlisted", &image, None).await;
    assert_eq!(
        images::manifest_digest(&acr.url(), "signed/unlisted", sig.digest.as_str(), None).await,
        Some(sig.digest.clone())
    );
    assert_eq!(text(&out).matches("cosign signature tags are not looked for").count(), 1, "{}", text(&out));
    assert_eq!(mcr.count("GET", "/tags/list"), 1);
}

/// Bad input fails with exit 1, a message naming what was wrong, and nothing written: a
/// malformed reference, an unreachable registry, wrong credentials, a manifest over 4 MiB, and
/// a source blob whose bytes do not match its digest.
#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error_and_nothing_written() {
    let acr_tokens = TokenService::start(Users::new().user("mirror", "right-pw").anonymous(false)).await;
    let acr = TestRegistry::with_token_auth(&acr_tokens).await;
    let bad = BadBlobServer::start().await;
    let closed = support::free_port();
    let run = Run::new()
        .registry(MCR, &bad.url(), None)
        .registry("gone.example.io", &format!("http://127.0.0.1:{closed}"), None)
        .registry(ACR, &acr.url(), Some("{type: basic, username: mirror, passwordEnv: ACR_PASSWORD}"))
        .env("ACR_PASSWORD", "right-pw");

    let out = run.mirror(&["copy", "mcr.microsoft.com/Bad/Name:1", &format!("{ACR}/x:1")]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("lowercase"), "{}", text(&out));

    let out = run.mirror(&["copy", "gone.example.io/a:1", &format!("{ACR}/x:1")]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("cannot reach registry gone.example.io"), "{}", text(&out));

    let out = run
        .mirror(&["copy", &format!("{MCR}/{}:{}", BadBlobServer::REPO, BadBlobServer::HUGE_TAG), &format!("{ACR}/x:1")])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("over the 4194304-byte limit"), "{}", text(&out));

    let out = run
        .mirror(&[
            "copy",
            &format!("{MCR}/{}:{}", BadBlobServer::REPO, BadBlobServer::TAG),
            &format!("{ACR}/bad/copy:v1"),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("digest mismatch") && t.contains(bad.layer.0.as_str()), "{t}");
    let pull = acr_tokens.mint(&[("bad/copy", "pull")]);
    assert!(!images::blob_exists(&acr.url(), "bad/copy", &bad.layer.0, Some(&pull)).await, "bad blob never committed");
    assert_eq!(images::manifest_digest(&acr.url(), "bad/copy", "v1", Some(&pull)).await, None, "no tag");

    let wrong = Run::new()
        .registry(MCR, &bad.url(), None)
        .registry(ACR, &acr.url(), Some("{type: basic, username: mirror, passwordEnv: ACR_PASSWORD}"))
        .env("ACR_PASSWORD", "n0t-the-pw");
    let out = wrong
        .mirror(&["copy", &format!("{MCR}/{}@{}", BadBlobServer::REPO, bad.manifest_digest), &format!("{ACR}/x:1")])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("refused the credentials") && !t.contains("n0t-the-pw"), "{t}");
}

/// 429 with Retry-After and 503 answers on manifest PUTs and upload POSTs are retried, and the
/// copy completes with the right content.
#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let proxy = FaultProxy::start(&acr.url()).await;
    let image = Seeder::new(&mcr.url(), 6).push_multiarch("oss/retry", "1", Format::Oci).await;
    proxy.fail_429("PUT", "/manifests/", 2);
    proxy.fail_503("POST", "/blobs/uploads/", 2);
    let run = Run::new().registry(MCR, &mcr.url(), None).registry(ACR, &proxy.url(), None);
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/oss/retry:1")]).await;
    assert!(out.status.success(), "{}", text(&out));
    images::assert_image_present(&acr.url(), "oss/retry", &image, None).await;
    assert!(proxy.count("PUT", "/manifests/") >= image.children.len() + 1 + 2, "the refused PUTs were sent again");
}

/// Blobs larger than the chunk size go up in one PATCH streaming the whole blob (not a PATCH per
/// chunk). A PATCH that fails before any byte reaches the target is resumed from the session's
/// Range (one upload session, no restart); one cut in the middle (distribution 2.8 then
/// invalidates the session) is restarted in a new session. Either way the blob arrives whole and
/// verified, with one PATCH per attempt.
#[tokio::test]
async fn chunked_uploads_resume_or_restart_after_a_failed_chunk() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let proxy = FaultProxy::start(&acr.url()).await;
    let mut seeder = Seeder::new(&mcr.url(), 7);
    let image = seeder.push_large_image("big/one", "1", 5 * 1024 * 1024 + 123, 42).await;
    let run = Run::new()
        .registry(MCR, &mcr.url(), None)
        .registry(ACR, &proxy.url(), None)
        .extra("transfer:\n  chunkSize: 1048576\n");

    proxy.cut_patch(1, 0);
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/big/resumed:1")]).await;
    assert!(out.status.success(), "{}", text(&out));
    images::assert_image_present(&acr.url(), "big/resumed", &image, None).await;
    assert_eq!(
        proxy.count("POST", "/big/resumed/blobs/uploads/"),
        image.blobs.len(),
        "one session per blob: resumed, not restarted"
    );
    assert!(proxy.count("GET", "/big/resumed/blobs/uploads/") >= 1, "the session's Range was asked for");
    assert_eq!(proxy.count("PATCH", "/big/resumed/"), 2, "the cut PATCH, then one for the whole rest");

    proxy.cut_patch(1, 300_000);
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/big/restarted:1")]).await;
    assert!(out.status.success(), "{}", text(&out));
    images::assert_image_present(&acr.url(), "big/restarted", &image, None).await;
    assert!(proxy.count("POST", "/big/restarted/blobs/uploads/") > image.blobs.len(), "a dead session is replaced");
    assert_eq!(proxy.count("PATCH", "/big/restarted/"), 2, "one PATCH per session: the blob streamed whole");
}

/// Credentials from the Docker config file (`auths`), and a refresh token (`grant_type=refresh_token`
/// at the realm) from the config, both reach a token-auth target.
#[tokio::test]
async fn docker_config_and_refresh_token_credentials() {
    let mcr = TestRegistry::anonymous().await;
    let tokens =
        TokenService::start(Users::new().user("dc-user", "dc-pass").refresh_token("rt-123", "robot").anonymous(false))
            .await;
    let acr = TestRegistry::with_token_auth(&tokens).await;
    let image = Seeder::new(&mcr.url(), 8).push_random_image("lib/app", "1", Format::Docker, &[1000]).await;

    let run = Run::new().registry(MCR, &mcr.url(), None).registry(ACR, &acr.url(), None);
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("dc-user:dc-pass");
    std::fs::write(run.dir.path().join("config.json"), format!(r#"{{"auths":{{"{ACR}":{{"auth":"{auth}"}}}}}}"#))
        .unwrap();
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/from/dockerconfig:1")]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(tokens.requests().iter().any(|r| r.credential == support::token::Credential::Basic("dc-user".into())));

    tokens.clear_requests();
    let run = Run::new()
        .registry(MCR, &mcr.url(), None)
        .registry(ACR, &acr.url(), Some("{type: refreshToken, tokenEnv: ACR_REFRESH}"))
        .env("ACR_REFRESH", "rt-123");
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/from/refresh:1")]).await;
    assert!(out.status.success(), "{}", text(&out));
    let reqs = tokens.requests();
    assert!(reqs.iter().all(|r| r.grant_type.as_deref() == Some("refresh_token")), "{reqs:?}");
    let push =
        reqs.iter().find(|r| r.scopes.iter().any(|s| s.contains("from/refresh:pull,push"))).expect("a push token");
    assert_eq!(push.status, 200);
    let pull = tokens.mint(&[("from/refresh", "pull")]);
    images::assert_image_present(&acr.url(), "from/refresh", &image, Some(&pull)).await;
}

/// Docker credential helpers, run as docker runs them: the target's own helper (`credHelpers`)
/// is asked with the server name on stdin and its user and secret reach the token service, the
/// config-wide store (`credsStore`) is asked for the anonymous source and its "not found" means
/// anonymous; a helper that is not installed is a clear error naming it, and no secret is printed.
#[tokio::test]
async fn docker_credential_helpers() {
    let mcr = TestRegistry::anonymous().await;
    let tokens = TokenService::start(Users::new().user("helper-user", "helper-s3cret").anonymous(false)).await;
    let acr = TestRegistry::with_token_auth(&tokens).await;
    let image = Seeder::new(&mcr.url(), 18).push_random_image("lib/helped", "1", Format::Oci, &[1500]).await;
    let run = Run::new().registry(MCR, &mcr.url(), None).registry(ACR, &acr.url(), None);
    let bin = run.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // Each helper appends the server it was asked for to a file of its own, then answers.
    let helper = |name: &str, body: &str| {
        let path = bin.join(format!("docker-credential-{name}"));
        let asked = run.dir.path().join(format!("{name}.asked"));
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread -r server\necho \"$server\" >> '{}'\n{body}\n",
            asked.display()
        );
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        asked
    };
    let acr_asked =
        helper("testacr", r#"printf '{"ServerURL":"%s","Username":"helper-user","Secret":"helper-s3cret"}' "$server""#);
    let store_asked = helper("teststore", "echo 'credentials not found in native keychain'; exit 1");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run = run.env("PATH", &path);
    let config = |helpers: &str| {
        std::fs::write(
            run.dir.path().join("config.json"),
            format!(r#"{{"auths":{{"{MCR}":{{}}}},"credsStore":"teststore","credHelpers":{{{helpers}}}}}"#),
        )
        .unwrap()
    };

    config(&format!(r#""{ACR}":"testacr""#));
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/from/helper:1")]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("helper-s3cret"), "the helper's secret must never be printed");
    assert_eq!(std::fs::read_to_string(&acr_asked).unwrap(), format!("{ACR}\n"), "asked once, for the target");
    assert_eq!(std::fs::read_to_string(&store_asked).unwrap(), format!("{MCR}\n"), "the store, for the source");
    assert!(tokens.requests().iter().any(|r| r.credential == support::token::Credential::Basic("helper-user".into())));
    let pull = tokens.mint(&[("from/helper", "pull")]);
    images::assert_image_present(&acr.url(), "from/helper", &image, Some(&pull)).await;

    config(&format!(r#""{ACR}":"not-installed""#));
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/from/missing:1")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for part in ["docker-credential-not-installed", "credHelpers", "config.json", ACR] {
        assert!(text(&out).contains(part), "the error names {part}: {}", text(&out));
    }
    assert!(
        images::list_tags(&acr.url(), "from/missing", Some(&tokens.mint(&[("from/missing", "pull")]))).await.is_empty()
    );
}

/// Mounting across repositories of a token-auth target needs one token with `pull` on the source
/// repository and `pull,push` on the target: the second copy of a shared layer is mounted.
#[tokio::test]
async fn cross_repository_mounts_use_multi_scope_tokens() {
    let tokens = TokenService::start(Users::new().user("mirror", "pw").anonymous(false)).await;
    let acr = TestRegistry::with_token_auth(&tokens).await;
    let mut seeder = Seeder::new(&acr.url(), 9).with_token_service(&tokens);
    let image = seeder.push_random_image("team/a", "1", Format::Oci, &[4000, 2000]).await;
    let run = Run::new()
        .registry(ACR, &acr.url(), Some("{type: basic, username: mirror, passwordEnv: ACR_PASSWORD}"))
        .env("ACR_PASSWORD", "pw");
    let out = run.mirror(&["copy", &image.reference(ACR), &format!("{ACR}/team/b:1")]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("{} mounted", image.blobs.len())), "{}", text(&out));
    assert!(
        tokens.requests().iter().any(|r| r.scopes.iter().any(|s| s == "repository:team/a:pull")
            && r.scopes.iter().any(|s| s == "repository:team/b:pull,push")),
        "one token carried both scopes"
    );
    let pull = tokens.mint(&[("team/b", "pull")]);
    images::assert_image_present(&acr.url(), "team/b", &image, Some(&pull)).await;
}

/// A source registry that sends blobs from a storage host (as MCR and ACR do): blob GETs are
/// answered with a 307 to another port. The registry itself demands Basic credentials; the
/// storage host must never see them.
#[tokio::test]
async fn blob_redirects_to_storage_hosts_do_not_carry_credentials() {
    use axum::extract::{Request, State};
    use axum::response::{IntoResponse, Response};
    use std::sync::{Arc, Mutex};

    let upstream = TestRegistry::anonymous().await;
    let image =
        Seeder::new(&upstream.url(), 10).push_random_image("redirected/app", "1", Format::Oci, &[5000, 70_000]).await;

    // Storage: serves blob bytes from the upstream, recording whether Authorization arrived.
    #[derive(Clone)]
    struct Storage {
        upstream: String,
        seen: Arc<Mutex<Vec<bool>>>,
    }
    let storage = Storage { upstream: upstream.url(), seen: Default::default() };
    let (listener, storage_addr) = support::bind_loopback().await;
    let app = axum::Router::new().fallback(|State(s): State<Storage>, req: Request| async move {
        s.seen.lock().unwrap().push(req.headers().contains_key("authorization"));
        let digest = req.uri().path().trim_start_matches("/blob/").to_string();
        let body = support::http_client()
            .get(format!("{}/v2/redirected/app/blobs/{digest}", s.upstream))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        body.into_response()
    });
    let served = storage.clone();
    let storage_task = tokio::spawn(async move { axum::serve(listener, app.with_state(served)).await.unwrap() });

    // Front registry: Basic auth, manifests forwarded, blobs redirected with a signed-looking URL.
    #[derive(Clone)]
    struct Front {
        upstream: String,
        storage: String,
    }
    let front = Front { upstream: upstream.url(), storage: format!("http://{storage_addr}") };
    let (listener, front_addr) = support::bind_loopback().await;
    let app = axum::Router::new().fallback(|State(f): State<Front>, req: Request| async move {
        let authorized = req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some("Basic dXNlcjpwYXNz"); // user:pass
        if !authorized {
            return Response::builder()
                .status(401)
                .header("www-authenticate", "Basic realm=\"front\"")
                .body(axum::body::Body::empty())
                .unwrap();
        }
        let path = req.uri().path().to_string();
        if let Some(i) = path.find("/blobs/sha256:") {
            let digest = &path[i + "/blobs/".len()..];
            return Response::builder()
                .status(307)
                .header("location", format!("{}/blob/{digest}?sig=SECRET-SIGNATURE", f.storage))
                .body(axum::body::Body::empty())
                .unwrap();
        }
        let resp = support::http_client()
            .request(req.method().clone(), format!("{}{path}", f.upstream))
            .header(
                "accept",
                req.headers().get("accept").cloned().unwrap_or(reqwest::header::HeaderValue::from_static("*/*")),
            )
            .send()
            .await
            .unwrap();
        let mut out = Response::builder().status(resp.status().as_u16());
        for (k, v) in resp.headers() {
            out = out.header(k.as_str(), v.as_bytes());
        }
        out.body(axum::body::Body::from(resp.bytes().await.unwrap())).unwrap()
    });
    let front_task = tokio::spawn(async move { axum::serve(listener, app.with_state(front)).await.unwrap() });

    let acr = TestRegistry::anonymous().await;
    let run = Run::new()
        .registry(
            MCR,
            &format!("http://{front_addr}"),
            Some("{type: basic, username: user, passwordEnv: SRC_PASSWORD}"),
        )
        .registry(ACR, &acr.url(), None)
        .env("SRC_PASSWORD", "pass");
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/redirected/app:1")]).await;
    assert!(out.status.success(), "{}", text(&out));
    images::assert_image_present(&acr.url(), "redirected/app", &image, None).await;
    let seen = storage.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), image.blobs.len(), "every blob came from the storage host");
    assert!(seen.iter().all(|had_auth| !had_auth), "Authorization leaked to the storage host");
    assert!(!text(&out).contains("SECRET-SIGNATURE"));
    storage_task.abort();
    front_task.abort();
}

/// A 401 in the middle of a run (a token the registry stopped accepting) makes the tool fetch a
/// new token once and send the request again; the copy completes.
#[tokio::test]
async fn a_401_mid_run_renews_the_token_once() {
    let mcr = TestRegistry::anonymous().await;
    let tokens = TokenService::start(Users::new().user("mirror", "pw").anonymous(false)).await;
    let acr = TestRegistry::with_token_auth(&tokens).await;
    let proxy = FaultProxy::start(&acr.url()).await;
    let image = Seeder::new(&mcr.url(), 11).push_random_image("oss/renew", "1", Format::Oci, &[1000]).await;
    proxy.fail_with("PUT", "/manifests/", 1, 401, None);
    let run = Run::new()
        .registry(MCR, &mcr.url(), None)
        .registry(ACR, &proxy.url(), Some("{type: basic, username: mirror, passwordEnv: ACR_PASSWORD}"))
        .env("ACR_PASSWORD", "pw");
    let out = run.mirror(&["copy", &image.reference(MCR), &format!("{ACR}/oss/renew:1")]).await;
    assert!(out.status.success(), "{}", text(&out));
    let push_tokens =
        tokens.requests().iter().filter(|r| r.scopes == ["repository:oss/renew:pull,push"] && r.status == 200).count();
    assert_eq!(push_tokens, 2, "one token, then one renewal after the 401");
    let pull = tokens.mint(&[("oss/renew", "pull")]);
    images::assert_image_present(&acr.url(), "oss/renew", &image, Some(&pull)).await;
}

/// An index listing one child many times: the child manifest is fetched from the source and
/// pushed to the target once, its blobs moved once, and the index itself copied byte for byte.
/// (An index listing one child 10,000 times used to make 10,000 GETs and 10,001 PUTs.)
#[tokio::test]
async fn duplicate_index_children_are_carried_once() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&mcr.url(), 31);
    let child = seeder.push_random_image("oss/dup", "child", Format::Oci, &[4000]).await;
    let mut entry = child.descriptor();
    entry["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": images::OCI_INDEX,
        "manifests": vec![entry; 200],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = seeder.push_manifest("oss/dup", "1", images::OCI_INDEX, &bytes).await;
    let src = FaultProxy::start(&mcr.url()).await;
    let dst = FaultProxy::start(&acr.url()).await;
    let run = Run::new().registry(MCR, &src.url(), None).registry(ACR, &dst.url(), None);

    let out = run.mirror(&["copy", &format!("{MCR}/oss/dup:1"), &format!("{ACR}/mirror/dup:1")]).await;
    assert_eq!(out.status.code(), Some(0));
    let child_path = format!("/manifests/{}", child.digest);
    assert_eq!(src.count("GET", &child_path), 1, "child fetched once");
    assert_eq!(dst.count("PUT", &child_path), 1, "child pushed once");
    assert_eq!(dst.count("PUT", "/manifests/"), 2, "the child and the index");
    assert_eq!(images::manifest_digest(&acr.url(), "mirror/dup", "1", None).await, Some(digest));
    let (layer, size) = &child.blobs[1];
    assert_eq!(images::blob_digest(&acr.url(), "mirror/dup", layer, None).await, (layer.clone(), *size));
}
