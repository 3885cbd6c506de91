//! `mirror plan`, `sync` and `verify` end to end against real registries: statuses, bytes to
//! move, idempotence, outdated and partial images, shared-layer mounting, request counts of a
//! no-op run, reports and exit codes.

mod support;

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;
use support::images;
use support::{FaultProxy, Format, PushedImage, Seeder, TestRegistry};

const MCR: &str = "mcr.microsoft.com";
const ACR: &str = "myacr.azurecr.io";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(mcr_url: &str, acr_url: &str, images: &[String], extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let list: String = images.iter().map(|i| format!("  - {i}\n")).collect();
        let cfg = format!(
            "registries:\n  - host: {MCR}\n    endpoint: {mcr_url}\n  - host: {ACR}\n    endpoint: {acr_url}\n\
             target: {ACR}\nmappings:\n  - source: \"*\"\n    target: mirror\n    mode: copy\nimages:\n{list}{extra}"
        );
        std::fs::write(dir.path().join("mirror.yaml"), cfg).unwrap();
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file in the scratch folder, as an argument.
    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    async fn mirror(&self, args: &[&str]) -> Output {
        support::mirror_in(self.dir.path(), args).await
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.path(name)).unwrap()).unwrap()
    }
}

fn plan_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("plan -o json prints JSON")
}

fn statuses(plan: &Value) -> Vec<(String, String)> {
    plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["target"].as_str().unwrap().to_string(), i["planned"].as_str().unwrap().to_string()))
        .collect()
}

/// Three images (a multi-arch index and two images sharing a base layer) into an empty target:
/// plan says missing with the bytes counted once per blob (exit 2), verify fails each image in
/// JUnit (exit 2), sync copies them mounting the shared layer (exit 0), and then plan, verify and
/// a second sync find nothing to do — the no-op costs one HEAD per tag on the source and one
/// listing (plus a HEAD per present tag, as distribution lists no digests) per target repository.
#[tokio::test]
async fn plan_sync_verify_and_a_free_no_op() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let src = FaultProxy::start(&mcr.url()).await;
    let dst = FaultProxy::start(&acr.url()).await;
    let mut seeder = Seeder::new(&mcr.url(), 21);
    let base = seeder.random_blob(60_000);
    let index = seeder.push_multiarch("oss/kubernetes/pause", "3.10", Format::Oci).await;
    let (top_a, top_b) = (seeder.random_blob(3000), seeder.random_blob(4000));
    let a = seeder.push_image("oss/app-a", "1", Format::Docker, &[base.clone(), top_a]).await;
    let b = seeder.push_image("oss/app-b", "1", Format::Oci, &[base.clone(), top_b]).await;
    let all = [&index, &a, &b];
    let refs: Vec<String> = all.iter().map(|i| i.reference(MCR)).collect();
    let env = Env::new(&src.url(), &dst.url(), &refs, "");

    let out = env.mirror(&["plan", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(2), "drift");
    let plan = plan_json(&out);
    assert!(statuses(&plan).iter().all(|(_, s)| s == "missing"), "{plan}");
    let mut unique = std::collections::HashMap::new();
    for img in all {
        for (d, size) in &img.blobs {
            unique.insert(d.clone(), *size);
        }
    }
    assert_eq!(plan["summary"]["bytes"].as_u64(), Some(unique.values().sum::<u64>()), "each blob counted once");

    let out = env.mirror(&["verify", "--report-junit", &env.p("verify.xml")]).await;
    assert_eq!(out.status.code(), Some(2));
    let junit = std::fs::read_to_string(env.path("verify.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 3);
    assert_eq!(junit.matches("<failure ").count(), 3, "{junit}");

    let out = env.mirror(&["sync", "--report-json", &env.p("sync.json"), "--report-junit", &env.p("sync.xml")]).await;
    assert_eq!(out.status.code(), Some(0));
    let report = env.json("sync.json");
    assert_eq!(report["summary"]["outcomes"]["copied"], 3, "{report}");
    for img in all {
        images::assert_image_present(&acr.url(), &format!("mirror/{}", img.repository), img, None).await;
    }
    let encoded = base.digest.as_str().replace(':', "%3A");
    let base_uploads = dst.requests().iter().filter(|(m, p)| m == "PUT" && p.contains(&encoded)).count();
    assert_eq!(base_uploads, 1, "the shared base layer was uploaded once");
    assert!(
        dst.count("POST", &format!("mount={}", base.digest.as_str().replace(':', "%3A"))) >= 1,
        "and mounted for the other image"
    );
    assert_eq!(std::fs::read_to_string(env.path("sync.xml")).unwrap().matches("<failure ").count(), 0);

    // Now nothing to do.
    let (src_before, dst_before) = (src.requests().len(), dst.requests().len());
    let out = env.mirror(&["plan", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "in sync");
    assert!(statuses(&plan_json(&out)).iter().all(|(_, s)| s == "present"));
    let src_reqs: Vec<_> = src.requests()[src_before..].to_vec();
    let dst_reqs: Vec<_> = dst.requests()[dst_before..].to_vec();
    let tags = all.len();
    assert_eq!(src_reqs.iter().filter(|(m, p)| m == "HEAD" && p.contains("/manifests/")).count(), tags, "{src_reqs:?}");
    assert!(src_reqs.len() <= tags + 1, "source: one HEAD per tag (+ the /v2/ ping): {src_reqs:?}");
    let listings = dst_reqs.iter().filter(|(_, p)| p.contains("/tags/list")).count();
    assert_eq!(listings, 3, "one listing per target repository: {dst_reqs:?}");
    assert!(
        dst_reqs.len() <= 1 + 3 + 3 + tags,
        "target: ping, ACR probe, listing per repo, HEAD per tag: {dst_reqs:?}"
    );

    let out = env.mirror(&["verify"]).await;
    assert_eq!(out.status.code(), Some(0));
    let before = dst.requests().len();
    let out = env.mirror(&["sync", "--report-json", &env.p("again.json")]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(env.json("again.json")["summary"]["outcomes"]["unchanged"], 3);
    let writes = dst.requests()[before..].iter().filter(|(m, _)| m != "GET" && m != "HEAD").count();
    assert_eq!(writes, 0, "a second sync writes nothing");
}

/// A source tag that moved is `outdated` with both digests; a target missing a child manifest
/// behind a right tag is `partial` under --deep (and for verify), and `sync --deep` repairs it.
#[tokio::test]
async fn outdated_and_partial_images_are_found_and_fixed() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&mcr.url(), 22);
    let old = seeder.push_random_image("oss/moving", "stable", Format::Oci, &[2000]).await;
    let idx = seeder.push_multiarch("oss/multi", "1", Format::Oci).await;
    let env = Env::new(&mcr.url(), &acr.url(), &[old.reference(MCR), idx.reference(MCR)], "");
    assert_eq!(env.mirror(&["sync"]).await.status.code(), Some(0));

    let new = seeder.push_random_image("oss/moving", "stable", Format::Oci, &[2100]).await;
    let out = env.mirror(&["plan", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(2));
    let plan = plan_json(&out);
    let moving =
        plan["images"].as_array().unwrap().iter().find(|i| i["target"].as_str().unwrap().contains("moving")).unwrap();
    assert_eq!(moving["planned"], "outdated");
    assert_eq!(moving["targetDigest"].as_str(), Some(old.digest.as_str()));
    assert_eq!(moving["sourceDigest"].as_str(), Some(new.digest.as_str()));

    // Remove one child manifest of the index from the target.
    let child = &idx.children[1];
    let url = format!("{}/v2/mirror/oss/multi/manifests/{}", acr.url(), child.digest);
    assert_eq!(support::http_client().delete(url).send().await.unwrap().status().as_u16(), 202);
    let out = env.mirror(&["plan", "-o", "json", "--deep"]).await;
    let plan = plan_json(&out);
    let multi =
        plan["images"].as_array().unwrap().iter().find(|i| i["target"].as_str().unwrap().contains("multi")).unwrap();
    assert_eq!(multi["planned"], "partial", "{plan}");
    assert!(multi["missing"].to_string().contains(child.digest.as_str()));
    assert_eq!(env.mirror(&["verify"]).await.status.code(), Some(2));

    assert_eq!(env.mirror(&["sync", "--deep"]).await.status.code(), Some(0));
    assert_eq!(env.mirror(&["verify"]).await.status.code(), Some(0));
    images::assert_image_present(&acr.url(), "mirror/oss/multi", &idx, None).await;
    images::assert_image_present(&acr.url(), "mirror/oss/moving", &new, None).await;
}

/// Signatures are part of a deep check: a target that lost a Notary-style referrer and a cosign
/// signature tag of a copied image has it `partial`, naming both; `verify` fails (exit 2) unless
/// told `--no-referrers`, and `sync --deep` puts them back.
#[tokio::test]
async fn missing_signatures_make_an_image_partial() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&mcr.url(), 23);
    let image = seeder.push_random_image("oss/signed", "1", Format::Oci, &[2500]).await;
    let notary = seeder.push_signature("oss/signed", &image).await;
    let cosign = seeder.push_cosign_signature("oss/signed", &image).await;
    let env = Env::new(&mcr.url(), &acr.url(), &[image.reference(MCR)], "");
    assert_eq!(env.mirror(&["sync"]).await.status.code(), Some(0));
    assert_eq!(env.mirror(&["verify"]).await.status.code(), Some(0), "everything arrived");

    for sig in [&notary, &cosign] {
        let url = format!("{}/v2/mirror/oss/signed/manifests/{}", acr.url(), sig.digest);
        assert_eq!(support::http_client().delete(url).send().await.unwrap().status().as_u16(), 202);
    }
    let out = env.mirror(&["plan", "-o", "json"]).await;
    assert_eq!(statuses(&plan_json(&out))[0].1, "present", "a shallow plan looks at the tag only");
    let out = env.mirror(&["plan", "-o", "json", "--deep"]).await;
    let plan = plan_json(&out);
    let img = &plan["images"][0];
    assert_eq!(img["planned"], "partial", "{plan}");
    let missing = img["missing"].to_string();
    assert!(missing.contains(&format!("referrer {}", notary.digest)), "{missing}");
    assert!(missing.contains(&format!("cosign tag sha256-{}.sig", image.digest.hex())), "{missing}");
    assert_eq!(env.mirror(&["verify"]).await.status.code(), Some(2));
    assert_eq!(env.mirror(&["verify", "--no-referrers"]).await.status.code(), Some(0));

    assert_eq!(env.mirror(&["sync", "--deep"]).await.status.code(), Some(0));
    assert_eq!(env.mirror(&["verify"]).await.status.code(), Some(0));
    let cosign_tag = format!("sha256-{}.sig", image.digest.hex());
    assert_eq!(images::manifest_digest(&acr.url(), "mirror/oss/signed", &cosign_tag, None).await, Some(cosign.digest));
    assert_eq!(
        images::manifest_digest(&acr.url(), "mirror/oss/signed", notary.digest.as_str(), None).await,
        Some(notary.digest.clone())
    );
}

/// A failing image does not stop the others (exit 3, JSON and JUnit name it); with --fail-fast
/// and one image at a time, the run stops and the rest are reported as skipped.
#[tokio::test]
async fn failures_give_exit_3_and_fail_fast_skips_the_rest() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&mcr.url(), 23);
    let good: Vec<PushedImage> = vec![
        seeder.push_random_image("oss/good-1", "1", Format::Oci, &[1000]).await,
        seeder.push_random_image("oss/good-2", "1", Format::Oci, &[1000]).await,
    ];
    let mut refs = vec![format!("{MCR}/aaa/does-not-exist:1")];
    refs.extend(good.iter().map(|g| g.reference(MCR)));
    let env = Env::new(&mcr.url(), &acr.url(), &refs, "transfer:\n  images: 1\n");

    let out = env
        .mirror(&["sync", "--fail-fast", "--report-json", &env.p("ff.json"), "--report-junit", &env.p("ff.xml")])
        .await;
    assert_eq!(out.status.code(), Some(3));
    let report = env.json("ff.json");
    assert_eq!(report["summary"]["outcomes"]["failed"], 1, "{report}");
    assert_eq!(report["summary"]["outcomes"]["skipped"], 2, "{report}");
    assert!(std::fs::read_to_string(env.path("ff.xml")).unwrap().contains("<skipped>"));
    for g in &good {
        assert_eq!(images::manifest_digest(&acr.url(), &format!("mirror/{}", g.repository), "1", None).await, None);
    }

    let out = env.mirror(&["sync", "--report-json", &env.p("all.json"), "--report-junit", &env.p("all.xml")]).await;
    assert_eq!(out.status.code(), Some(3), "some images failed, the rest done");
    let report = env.json("all.json");
    assert_eq!(report["summary"]["outcomes"]["copied"], 2);
    let failed = report["images"].as_array().unwrap().iter().find(|i| i["outcome"] == "failed").unwrap();
    assert!(failed["source"].as_str().unwrap().contains("does-not-exist"));
    assert!(failed["error"].as_str().unwrap().contains("no such image"), "{failed}");
    let junit = std::fs::read_to_string(env.path("all.xml")).unwrap();
    assert_eq!(junit.matches("<failure ").count(), 1);
    for g in &good {
        images::assert_image_present(&acr.url(), &format!("mirror/{}", g.repository), g, None).await;
    }
}

/// Warm-mode images are planned, warmed and verified through a pull-through cache.
#[tokio::test]
async fn warm_mappings_sync_through_the_cache() {
    let mcr = TestRegistry::anonymous().await;
    let idx = Seeder::new(&mcr.url(), 24).push_multiarch("oss/kubernetes/coredns", "v1.12", Format::Docker).await;
    let cache = TestRegistry::proxy_cache(&mcr.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "registries:\n  - host: {MCR}\n    endpoint: {}\n  - host: {ACR}\n    endpoint: {}\n\
         target: {ACR}\nplatforms: [linux/amd64]\nmappings:\n  - source: {MCR}\n    target: \"\"\n    mode: warm\n\
         images:\n  - {}\n",
        mcr.url(),
        cache.url(),
        idx.reference(MCR)
    );
    std::fs::write(dir.path().join("m.yaml"), cfg).unwrap();
    let run = |args: &'static [&'static str]| {
        let path = dir.path().join("m.yaml");
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
                .arg("-c")
                .arg(path)
                .args(args)
                .env("DOCKER_CONFIG", support::empty_docker_config())
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(&["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 warmed"), "{}", String::from_utf8_lossy(&out.stdout));
    let amd64 = idx.children.iter().find(|c| c.platform.as_ref().unwrap().architecture == "amd64").unwrap();
    let blobs: Vec<_> = amd64.blobs.iter().map(|(d, _)| d).collect();
    cache.wait_for_blobs_on_disk(&blobs).await;
    for d in blobs {
        assert!(cache.has_blob_on_disk(d), "blob {d} held by the cache");
    }
    let out = run(&["verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// `sync --deep` repairs an image missing a layer under a present child manifest: the plan finds
/// it `partial`, `verify` exits 2, the deep sync uploads exactly that blob (the copy walks past
/// the present child), and `verify` exits 0 after. (It used to report "copied 0 B" and leave the
/// image broken.)
#[tokio::test]
async fn sync_deep_puts_back_a_missing_layer() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let idx = Seeder::new(&mcr.url(), 24).push_multiarch("oss/multi", "1", Format::Oci).await;
    let env = Env::new(&mcr.url(), &acr.url(), &[idx.reference(MCR)], "");
    assert_eq!(env.mirror(&["sync"]).await.status.code(), Some(0));

    let (layer, size) = idx.children[0].blobs[1].clone();
    let url = format!("{}/v2/mirror/oss/multi/blobs/{layer}", acr.url());
    assert_eq!(support::http_client().delete(url).send().await.unwrap().status().as_u16(), 202);
    assert!(!images::blob_exists(&acr.url(), "mirror/oss/multi", &layer, None).await);
    assert_eq!(env.mirror(&["verify"]).await.status.code(), Some(2));

    let out = env.mirror(&["sync", "--deep", "--report-json", &env.p("repair.json")]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(env.json("repair.json")["summary"]["bytes"].as_u64(), Some(size), "exactly the missing layer");
    assert_eq!(env.mirror(&["verify"]).await.status.code(), Some(0));
    images::assert_image_present(&acr.url(), "mirror/oss/multi", &idx, None).await;
}

/// Under `indexPolicy: rewrite` the plan's expected digest is the digest of the index the copy
/// pushes (one function builds both): after a sync the plan finds the image present, not
/// outdated, and the report's target digest equals the plan's expectation.
#[tokio::test]
async fn rewrite_plan_expects_what_sync_pushes() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let idx = Seeder::new(&mcr.url(), 25).push_multiarch("oss/multi", "1", Format::Oci).await;
    let extra = "platforms: [linux/amd64]\nindexPolicy: rewrite\n";
    let env = Env::new(&mcr.url(), &acr.url(), &[idx.reference(MCR)], extra);
    let planned = plan_json(&env.mirror(&["plan", "-o", "json"]).await);
    let expected = planned["images"][0]["expectedDigest"].as_str().unwrap().to_string();
    assert_ne!(expected, idx.digest.as_str(), "a rewritten index has a digest of its own");

    assert_eq!(env.mirror(&["sync", "--report-json", &env.p("sync.json")]).await.status.code(), Some(0));
    assert_eq!(env.json("sync.json")["images"][0]["targetDigest"].as_str(), Some(expected.as_str()));
    let tagged = images::manifest_digest(&acr.url(), "mirror/oss/multi", "1", None).await.unwrap();
    assert_eq!(tagged.as_str(), expected);
    let out = env.mirror(&["plan", "-o", "json"]).await;
    assert_eq!(statuses(&plan_json(&out))[0].1, "present");
}

/// A target refusing a sparse index fails the image with a fix `sync` users can apply: the
/// config key `indexPolicy`, not a flag `sync` does not have.
#[tokio::test]
async fn a_refused_sparse_index_names_the_config_key() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let idx = Seeder::new(&mcr.url(), 26).push_multiarch("oss/multi", "1", Format::Oci).await;
    let extra = "platforms: [linux/amd64]\nindexPolicy: sparse\n";
    let env = Env::new(&mcr.url(), &acr.url(), &[idx.reference(MCR)], extra);
    let out = env.mirror(&["sync", "--report-json", &env.p("sync.json")]).await;
    assert_eq!(out.status.code(), Some(3));
    let error = env.json("sync.json")["images"][0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("the config key `indexPolicy` to rewrite") && !error.contains("--index-policy"), "{error}");
}
