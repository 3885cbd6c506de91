//! `mirror prune` against real registries: the CNCF distribution registry (deletes enabled, behind
//! token auth), the same refusing deletes, the same behind ACR's token service stand-in granting
//! no `delete`, and the ACR API stand-in (`_tags` with `lastUpdateTime`, the untag `DELETE`) in
//! front of one. Results are checked with skopeo and raw HTTP, never with
//! the crate's own client.

mod support;
mod support_azure;

use std::path::Path;
use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use acr_mirror::digest::Digest;
use serde_json::{Value, json};
use support::images::{self, SkopeoAuth, manifest_digest, skopeo_list_tags};
use support::{Blob, PushedImage, Seeder, TestRegistry, TokenService, Users};
use support_azure::acr_api::AcrApiStandIn;
use support_azure::acr_standin::{AcrStandIn, MintAccess, Scope};
use support_azure::entra::FakeEntra;

const SRC: &str = "src.example";
const ACR: &str = "myacr.azurecr.io";
const APP: &str = "mirror/src.example/app";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A small linux/amd64 image whose config says it was built at `created` (RFC 3339): the age
/// `prune` reads where the registry keeps no tag times.
async fn push_dated(s: &Seeder, repo: &str, tag: &str, created: &str) -> PushedImage {
    let layer = Blob::new(format!("layer of {repo}:{tag} {created}").into_bytes());
    let config = Blob::new(
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "created": created,
            "rootfs": {"type": "layers", "diff_ids": [layer.digest.as_str()]},
        }))
        .unwrap(),
    );
    s.push_blob(repo, &layer).await;
    s.push_blob(repo, &config).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.as_str(), "size": config.size()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.digest.as_str(), "size": layer.size()}],
    }))
    .unwrap();
    let digest = s.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
    PushedImage {
        repository: repo.into(),
        tag: tag.into(),
        digest,
        media_type: OCI_MANIFEST.into(),
        size: manifest.len() as u64,
        bytes: manifest.into(),
        children: Vec::new(),
        blobs: vec![(config.digest.clone(), config.size()), (layer.digest.clone(), layer.size())],
    }
}

/// A folder holding `mirror.yaml`: the source and target registries, `images`, and `extra` YAML.
fn write_config(dir: &Path, source: Option<&str>, target: &str, target_auth: &str, images: &[&str], extra: &str) {
    let source = source
        .map(|u| format!("  - host: {SRC}\n    endpoint: {u}\n    auth: {{type: anonymous}}\n"))
        .unwrap_or_default();
    let list: String = images.iter().map(|i| format!("  - {SRC}/{i}\n")).collect();
    std::fs::write(
        dir.join("mirror.yaml"),
        format!(
            "registries:\n{source}  - host: {ACR}\n    endpoint: {target}\n    auth: {target_auth}\ntarget: {ACR}\n\
             mappings:\n  - {{source: other.example, target: cache, mode: warm}}\n  - {{source: \"*\", target: \"mirror/{{registry}}\", mode: copy}}\n\
             images:\n{list}transfer: {{retries: 0}}\n{extra}"
        ),
    )
    .unwrap();
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", support::output_text(o)))
}

/// `(tag, action, reasonCode, outcome)` of every tag of `repo` in a prune report.
fn decisions(report: &Value, repo: &str) -> Vec<(String, String, String, Option<String>)> {
    let r = report["repositories"].as_array().unwrap().iter().find(|r| r["repository"] == repo).expect(repo);
    r["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tag"].as_str().unwrap().to_string(),
                t["action"].as_str().unwrap().to_string(),
                t["reasonCode"].as_str().unwrap().to_string(),
                t["outcome"].as_str().map(String::from),
            )
        })
        .collect()
}

/// Checks a prune report against `schema/prune.v1.json`.
fn validate(doc: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/prune.v1.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "not valid against schema/prune.v1.json:\n{}\n{doc:#}", errors.join("\n"));
}

/// The image set shrinks after a sync, on distribution behind token auth: the dry run lists
/// exactly the dropped tags (and the signature of one) and deletes nothing (exit 2); `--apply`
/// deletes exactly those (exit 0), keeps the tag sharing a kept tag's digest, the protected tag
/// and the most recent one, and leaves the repositories outside the copy mappings alone;
/// `verify` then passes. Tags are read with skopeo; the deletes asked for the `delete` scope.
#[tokio::test]
async fn the_image_set_shrinks_and_exactly_the_dropped_tags_go() {
    let source = TestRegistry::anonymous().await;
    let tokens = TokenService::start(Users::new().user("ci", "pw").anonymous(false)).await;
    let target = TestRegistry::with_token_auth(&tokens).await;
    let src = Seeder::new(&source.url(), 1);
    let dated = [
        ("0.9", "2020-05-01T00:00:00Z"),
        ("1.0", "2020-01-01T00:00:00Z"),
        ("1.1", "2020-02-01T00:00:00Z"),
        ("1.2", "2020-03-01T00:00:00Z"),
        ("2.0", "2020-04-01T00:00:00Z"),
        ("v3.0", "2019-01-01T00:00:00Z"),
    ];
    let mut pushed = Vec::new();
    for (tag, created) in dated {
        pushed.push(push_dated(&src, "app", tag, created).await);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let auth = format!("{{type: basic, username: ci, passwordFile: {}}}", dir.path().join("pw").display());
    let prune = "prune: {minAge: 0s, keepRecent: 1, protect: [\"^v\\\\d+\\\\.\\\\d+$\"]}\n";
    let all: Vec<String> = dated.iter().map(|(t, _)| format!("app:{t}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    write_config(dir.path(), Some(&source.url()), &target.url(), &auth, &all, prune);
    let o = support::mirror_in(dir.path(), &["sync"]).await;
    assert_eq!(code(&o), Some(0), "{}", support::output_text(&o));

    // What the target holds besides the synced tags: an alias of 1.2, a cosign signature of
    // 1.0, a cache-rule repository and one outside every mapping.
    let mut dst = Seeder::new(&target.url(), 2).with_token_service(&tokens);
    let v12 = &pushed[3];
    dst.push_manifest(APP, "alias", OCI_MANIFEST, &v12.bytes).await;
    let sig = dst.push_cosign_signature(APP, &pushed[1]).await;
    push_dated(&dst, "cache/x", "old", "2020-01-01T00:00:00Z").await;
    push_dated(&dst, "other/app", "old", "2020-01-01T00:00:00Z").await;
    let sig_tag = format!("sha256-{}.sig", pushed[1].digest.hex());

    // The image set shrinks to 1.2 and 2.0.
    write_config(dir.path(), Some(&source.url()), &target.url(), &auth, &["app:1.2", "app:2.0"], prune);
    let creds = SkopeoAuth::Creds("ci".into(), "pw".into());
    let tags_of = |repo: &str| format!("{}/{repo}", target.host());
    let before = skopeo_list_tags(&tags_of(APP), &creds).await;
    assert_eq!(before.len(), 8, "{before:?}");

    let o = support::mirror_in(dir.path(), &["prune", "-o", "json"]).await;
    assert_eq!(code(&o), Some(2), "a dry run that finds tags to delete exits 2");
    let dry = stdout_json(&o);
    validate(&dry);
    assert_eq!(dry["repositories"].as_array().unwrap().len(), 1, "only the copy mapping's repository: {dry:#}");
    let mut d = decisions(&dry, APP);
    d.sort();
    let want = |tag: &str, action: &str, reason: &str| (tag.to_string(), action.to_string(), reason.to_string(), None);
    let mut expected = vec![
        want("0.9", "keep", "recent"),
        want("1.0", "delete", "unneeded"),
        want("1.1", "delete", "unneeded"),
        want("1.2", "keep", "needed"),
        want("2.0", "keep", "needed"),
        want("alias", "keep", "sharesDigest"),
        want(&sig_tag, "delete", "referrer"),
        want("v3.0", "keep", "protected"),
    ];
    expected.sort();
    assert_eq!(d, expected);
    assert!(dry["summary"]["bytesToFree"].as_u64().unwrap() > 0);
    assert_eq!(skopeo_list_tags(&tags_of(APP), &creds).await, before, "the dry run deleted nothing");

    let o = support::mirror_in(
        dir.path(),
        &["prune", "--apply", "--report-json", "prune.json", "--metrics-file", "prune.prom"],
    )
    .await;
    assert_eq!(code(&o), Some(0), "{}", support::output_text(&o));
    let report: Value = serde_json::from_slice(&std::fs::read(dir.path().join("prune.json")).unwrap()).unwrap();
    validate(&report);
    assert_eq!(report["summary"]["deleted"], 3, "{report:#}");
    assert_eq!(
        skopeo_list_tags(&tags_of(APP), &creds).await,
        ["0.9", "1.2", "2.0", "alias", "v3.0"].map(String::from).to_vec()
    );
    for repo in ["cache/x", "other/app"] {
        assert_eq!(skopeo_list_tags(&tags_of(repo), &creds).await, vec!["old".to_string()], "{repo} untouched");
    }
    let pull = tokens.mint(&[(APP, "pull")]);
    for (gone, digest) in [("1.0", &pushed[1].digest), ("1.1", &pushed[2].digest), ("signature", &sig.digest)] {
        assert_eq!(manifest_digest(&target.url(), APP, digest.as_str(), Some(&pull)).await, None, "{gone}");
    }
    assert_eq!(manifest_digest(&target.url(), APP, "alias", Some(&pull)).await, Some(v12.digest.clone()));
    let metrics = std::fs::read_to_string(dir.path().join("prune.prom")).unwrap();
    assert!(
        metrics.contains("acr_mirror_last_run_prune_tags{command=\"prune\",shard=\"0/1\",action=\"deleted\"} 3"),
        "{metrics}"
    );
    let scopes: Vec<String> = tokens.requests().into_iter().flat_map(|r| r.scopes).collect();
    assert!(scopes.iter().any(|s| s.starts_with(&format!("repository:{APP}:")) && s.contains("delete")), "{scopes:?}");

    let o = support::mirror_in(dir.path(), &["verify"]).await;
    assert_eq!(code(&o), Some(0), "verify passes after the prune");
    let o = support::mirror_in(dir.path(), &["prune"]).await;
    assert_eq!(code(&o), Some(0), "nothing left to prune");
}

/// On the ACR stand-in (tag ages from `_tags`' `lastUpdateTime`, untag by `DELETE
/// /acr/v1/{repo}/_tags/{tag}`): old unneeded tags are untagged and their manifests deleted; a
/// tag sharing the needed tag's digest is untagged while the manifest stays; a young tag stays;
/// and a tag moved between the listing and the deletion (by the stand-in, right after serving
/// the listing) is left alone, pointing where it was moved.
#[tokio::test]
async fn on_acr_old_tags_are_untagged_and_a_tag_moved_after_the_listing_is_left_alone() {
    let registry = TestRegistry::anonymous().await;
    let acr = AcrApiStandIn::start(&registry.url()).await;
    acr.untag_in(&registry.storage_dir());
    let s = Seeder::new(&registry.url(), 3);
    let keep = push_dated(&s, APP, "keep", "2020-01-01T00:00:00Z").await;
    s.push_manifest(APP, "shared", OCI_MANIFEST, &keep.bytes).await;
    let a = push_dated(&s, APP, "a", "2020-01-02T00:00:00Z").await;
    let b = push_dated(&s, APP, "b", "2020-01-03T00:00:00Z").await;
    let moved = push_dated(&s, APP, "moved", "2020-01-04T00:00:00Z").await;
    let fresh = push_dated(&s, APP, "fresh", "2020-01-05T00:00:00Z").await;
    for tag in ["keep", "shared", "a", "b", "moved"] {
        acr.set_tag_time(APP, tag, "2020-06-01T00:00:00.0000000Z");
    }
    let hour_ago = acr_mirror::time::rfc3339(SystemTime::now() - Duration::from_secs(3600));
    acr.set_tag_time(APP, "fresh", &hour_ago);
    acr.move_after_listing(APP, "moved", fresh.digest.as_str());

    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        None,
        &acr.url,
        "{type: anonymous}",
        &["app:keep"],
        "prune: {minAge: 7d, keepRecent: 0}\n",
    );
    let o = support::mirror_in(dir.path(), &["prune", "--apply", "-o", "json"]).await;
    assert_eq!(code(&o), Some(0), "{}", support::output_text(&o));
    assert!(acr.state.moved.load(Ordering::SeqCst), "the stand-in moved the tag after the listing");
    let report = stdout_json(&o);
    validate(&report);
    let mut d: Vec<(String, String, String, Option<String>)> = decisions(&report, APP);
    d.sort();
    let row =
        |t: &str, a: &str, r: &str, o: Option<&str>| (t.to_string(), a.to_string(), r.to_string(), o.map(String::from));
    assert_eq!(
        d,
        vec![
            row("a", "delete", "unneeded", Some("deleted")),
            row("b", "delete", "unneeded", Some("deleted")),
            row("fresh", "keep", "young", None),
            row("keep", "keep", "needed", None),
            row("moved", "delete", "unneeded", Some("moved")),
            row("shared", "delete", "unneeded", Some("deleted")),
        ]
    );
    assert_eq!(acr.count("DELETE", "/_tags/"), 3, "untagged: a, b, shared");
    assert_eq!(acr.count("DELETE", "/manifests/"), 2, "deleted by digest: a's and b's manifests only");
    let tags = skopeo_list_tags(&format!("{}/{APP}", registry.host()), &SkopeoAuth::None).await;
    assert_eq!(tags, ["fresh", "keep", "moved"].map(String::from).to_vec());
    let url = registry.url();
    assert_eq!(manifest_digest(&url, APP, "moved", None).await, Some(fresh.digest.clone()), "left where it was moved");
    assert_eq!(manifest_digest(&url, APP, moved.digest.as_str(), None).await, Some(moved.digest.clone()));
    assert_eq!(manifest_digest(&url, APP, keep.digest.as_str(), None).await, Some(keep.digest.clone()));
    for gone in [&a.digest, &b.digest] {
        assert_eq!(manifest_digest(&url, APP, gone.as_str(), None).await, None::<Digest>);
    }
    images::assert_image_present(&url, APP, &keep, None).await;
}

/// A registry that refuses deletes (distribution's default: 405 `UNSUPPORTED`) ends the run
/// with exit 1 and an error naming the registry, after one refused delete; every tag stays.
#[tokio::test]
async fn a_registry_that_refuses_deletes_fails_cleanly() {
    let target = TestRegistry::refusing_deletes().await;
    let s = Seeder::new(&target.url(), 4);
    for tag in ["old1", "old2", "old3"] {
        push_dated(&s, APP, tag, "2020-01-01T00:00:00Z").await;
    }
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        None,
        &target.url(),
        "{type: anonymous}",
        &["app:new"],
        "prune: {minAge: 0s, keepRecent: 0}\n",
    );
    let o = support::mirror_in(dir.path(), &["prune", "--apply", "--report-json", "prune.json"]).await;
    assert_eq!(code(&o), Some(1), "{}", support::output_text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(&format!("registry {ACR} refuses deletes")) && stderr.contains("UNSUPPORTED"), "{stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(dir.path().join("prune.json")).unwrap()).unwrap();
    validate(&report);
    assert_eq!((report["status"].as_str(), report["summary"]["deleted"].as_u64()), (Some("failed"), Some(0)));
    assert_eq!(report["summary"]["skipped"], 3, "every tag reported as not attempted: {report:#}");
    let tags = skopeo_list_tags(&format!("{}/{APP}", target.host()), &SkopeoAuth::None).await;
    assert_eq!(tags, ["old1", "old2", "old3"].map(String::from).to_vec());
}

/// An identity that may pull and push but not delete (AcrPush without AcrDelete: ACR's token
/// service stand-in grants every action asked for but `delete`), in front of distribution
/// behind token auth: the first delete is refused with 401 although the token was asked for the
/// `delete` scope, the run ends with exit 1 naming the registry, and every tag stays.
#[tokio::test]
async fn an_identity_without_delete_rights_is_refused_cleanly() {
    let tokens = TokenService::start(Users::new().anonymous(false)).await;
    let signer = tokens.clone();
    let mint: MintAccess = std::sync::Arc::new(move |sub: &str, scopes: &[Scope]| {
        let access: Vec<_> = scopes
            .iter()
            .map(|s| {
                let actions =
                    s.actions.iter().filter(|a| s.kind != "repository" || !matches!(a.as_str(), "delete" | "*"));
                (s.kind.clone(), s.name.clone(), actions.cloned().collect())
            })
            .collect();
        signer.sign(sub, &access)
    });
    let acr = AcrStandIn::start(tokens.service(), FakeEntra::new(), mint).await;
    acr.state.basic_users.lock().unwrap().push(("admin".into(), "pw".into(), None));
    let target = TestRegistry::with_token_realm(&tokens, acr.realm().as_str()).await;
    let s = Seeder::new(&target.url(), 5).with_token_service(&tokens);
    for tag in ["old1", "old2"] {
        push_dated(&s, APP, tag, "2020-01-01T00:00:00Z").await;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let auth = format!("{{type: basic, username: admin, passwordFile: {}}}", dir.path().join("pw").display());
    write_config(dir.path(), None, &target.url(), &auth, &["app:new"], "prune: {minAge: 0s, keepRecent: 0}\n");
    let o = support::mirror_in(dir.path(), &["prune", "--apply"]).await;
    assert_eq!(code(&o), Some(1), "{}", support::output_text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(&format!("registry {ACR} refuses deletes")) && stderr.contains("401"), "{stderr}");
    let asked: Vec<Scope> = acr.state.access_grants.lock().unwrap().iter().flat_map(|g| g.1.clone()).collect();
    assert!(asked.iter().any(|s| s.name == APP && s.actions.iter().any(|a| a == "delete")), "{asked:?}");
    let pull = SkopeoAuth::Token(tokens.mint(&[(APP, "pull")]));
    let tags = skopeo_list_tags(&format!("{}/{APP}", target.host()), &pull).await;
    assert_eq!(tags, ["old1", "old2"].map(String::from).to_vec());
}

/// Bad `prune:` values end the run with exit 1 naming the key, before any registry is asked:
/// the target's endpoint is a closed port, which any request would have reported instead.
#[tokio::test]
async fn bad_prune_settings_are_refused_naming_the_key() {
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    for (yaml, key) in [
        ("prune: {keepRecent: -2}\n", "prune.keepRecent"),
        ("prune: {minAge: soon}\n", "prune.minAge"),
        ("prune: {protect: [\"[v\"]}\n", "prune.protect[0]"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), None, &closed, "{type: anonymous}", &["app:1"], yaml);
        let o = support::mirror_in(dir.path(), &["prune", "--apply"]).await;
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(code(&o), Some(1), "{yaml}");
        assert!(stderr.contains(key) && stderr.contains("mirror.yaml") && !stderr.contains("cannot reach"), "{stderr}");
    }
}
