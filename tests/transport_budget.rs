//! The transport's request budget against real distribution registries: how many requests of
//! each kind a copy, a no-op run and a plan cost, counted by a forwarding proxy in front of each
//! registry, and that the per-registry request limit cannot deadlock a copy. A regression that
//! adds a round trip per blob or per image fails here instead of waiting for a bench.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use acr_mirror::config::Config;
use acr_mirror::reference::Reference;
use acr_mirror::registry::Registries;
use acr_mirror::transfer::{Context, Options, copy};
use support::{FaultProxy, Format, Seeder, TestRegistry};

/// Logical names over `(host, url, extra keys)`, each anonymous (no Docker config is read).
fn registries(entries: &[(&str, &str, &str)]) -> Registries {
    let mut yaml = String::from("registries:\n");
    for (host, url, extra) in entries {
        yaml.push_str(&format!("  - host: {host}\n    endpoint: {url}\n    auth: {{type: anonymous}}\n{extra}"));
    }
    Registries::from_config(&Config::parse(&yaml, "t.yaml".as_ref()).unwrap()).unwrap()
}

/// A copy inside one registry whose mounts are refused (so every blob is streamed from the
/// source repository to the target one) with fewer request slots than twice the blob transfers:
/// it completes. While a source `GET`'s body held its request slot until the end, every slot
/// could be held by downloads whose matching upload waited for a slot: the copy hung with no
/// timeout covering the wait. Bounded by a timeout, so a deadlock fails the test.
#[tokio::test]
async fn a_same_registry_copy_with_few_request_slots_does_not_deadlock() {
    let reg = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&reg.url(), 71);
    let image = seeder.push_random_image("src/app", "1", Format::Oci, &[200_000, 210_000, 220_000, 230_000]).await;
    let front = FaultProxy::start(&reg.url()).await;
    front.refuse_mounts();
    let regs = registries(&[("reg.test", &front.url(), "    maxConcurrentRequests: 2\n")]);
    let r = regs.get("reg.test").unwrap();
    let ctx = Context::new(4, 32 << 20, 0);
    let (src, dst) = (Reference::parse("reg.test/src/app:1").unwrap(), Reference::parse("reg.test/dst/app:1").unwrap());
    let copied = tokio::time::timeout(
        Duration::from_secs(30),
        copy::copy_image(&ctx, r.clone(), &src, r.clone(), &dst, &Options::default()),
    )
    .await
    .expect("the copy finished within 30 s (a permit deadlock hangs it)")
    .unwrap();
    assert_eq!(copied.target_digest, image.digest);
    assert!(front.count("POST", "mount=") >= 1, "mounts were asked for, and refused: {:?}", front.requests());
    assert_eq!(front.count("PUT", "/dst/app/blobs/uploads/"), image.blobs.len(), "every blob was streamed");
    support::images::assert_image_present(&reg.url(), "dst/app", &image, None).await;
}

/// A request's kind, from its method and path: what a budget is counted in.
fn kind(method: &str, path: &str) -> &'static str {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    match method {
        "GET" if path == "/v2/" => "ping",
        "GET" if path.starts_with("/acr/") => "acr listing",
        "GET" if path.ends_with("/tags/list") => "tag listing",
        "GET" if path.contains("/referrers/") => "referrers GET",
        "HEAD" if path.contains("/manifests/") => "manifest HEAD",
        "GET" if path.contains("/manifests/") => "manifest GET",
        "PUT" if path.contains("/manifests/") => "manifest PUT",
        "HEAD" if path.contains("/blobs/uploads/") => "upload HEAD",
        "HEAD" if path.contains("/blobs/") => "blob HEAD",
        "GET" if path.contains("/blobs/uploads/") => "upload status GET",
        "GET" if path.contains("/blobs/") => "blob GET",
        "POST" if query.contains("mount=") && mounts_from_itself(path, query) => "self-mount POST",
        "POST" if query.contains("mount=") => "mount POST",
        "POST" if path.ends_with("/blobs/uploads/") => "upload POST",
        "PATCH" => "upload PATCH",
        "PUT" if path.contains("/blobs/uploads/") => "upload PUT",
        "DELETE" => "DELETE",
        _ => "other",
    }
}

/// Whether a mount `POST` names its own repository as the source (the upload's "is it there
/// already" question, asked in the request that opens the session).
fn mounts_from_itself(path: &str, query: &str) -> bool {
    let repo = path.trim_start_matches("/v2/").trim_end_matches("/blobs/uploads/");
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "from" && v == repo)
}

/// Requests seen by a proxy since `from`, counted by kind.
fn by_kind(proxy: &FaultProxy, from: usize) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for (m, p) in &proxy.requests()[from..] {
        *out.entry(kind(m, p)).or_default() += 1;
    }
    out
}

fn budget(entries: &[(&'static str, usize)]) -> BTreeMap<&'static str, usize> {
    entries.iter().filter(|(_, n)| *n > 0).cloned().collect()
}

const MCR: &str = "mcr.microsoft.com";
const ACR: &str = "myacr.azurecr.io";

/// A scratch folder with a `mirror.yaml` copying `images` from MCR into ACR under `mirror/`, with a
/// 1 MiB `chunkSize` so that a small fixture has a blob above it.
fn sync_config(mcr_url: &str, acr_url: &str, images: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let list: String = images.iter().map(|i| format!("  - {i}\n")).collect();
    let cfg = format!(
        "registries:\n  - host: {MCR}\n    endpoint: {mcr_url}\n  - host: {ACR}\n    endpoint: {acr_url}\n\
         target: {ACR}\nmappings:\n  - source: \"*\"\n    target: mirror\n    mode: copy\n\
         transfer:\n  chunkSize: 1048576\nimages:\n{list}"
    );
    std::fs::write(dir.path().join("mirror.yaml"), cfg).unwrap();
    dir
}

/// The request budget of `sync` on a known fixture — a three-platform index and two images
/// sharing a base layer, with OCI referrers looked for (distribution 2.8 has no referrers API,
/// so the tag schema is asked) — counted by kind at each registry, for a fresh copy into an
/// empty target, then for a `plan` and a `sync` that find everything present:
///
/// - fresh copy, source: one `GET` per manifest (each read once: the plan's look at a tag is
///   handed to the copy) and per blob uploaded; the referrers API asked once (404), then one tag
///   listing per repository for the fallback and cosign tags;
/// - fresh copy, target: per blob uploaded a `POST` that mounts it from its own repository
///   (answered 201 if a killed run left it there: no `HEAD` first) and a `PUT` (and for the one
///   over the chunk size one `PATCH` streaming all of it, no status `GET`); per blob mounted
///   from another repository one `POST`; per manifest one `PUT`; one listing per repository;
/// - no-op `plan` and `sync`: one request per source tag and, on a registry without digests in
///   its listing, one listing and one `HEAD` per tag per target repository; nothing else.
#[tokio::test]
async fn sync_and_plan_stay_within_their_request_budget() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let src = FaultProxy::start(&mcr.url()).await;
    let dst = FaultProxy::start(&acr.url()).await;
    let mut seeder = Seeder::new(&mcr.url(), 72);
    let base = seeder.random_blob(60_000);
    let index = seeder.push_multiarch("oss/kubernetes/pause", "3.10", Format::Oci).await;
    // app-a's own layer is over the chunk size (1 MiB here): it goes up in one PATCH.
    let (top_a, top_b) = (seeder.random_blob(2_600_000), seeder.random_blob(4000));
    let a = seeder.push_image("oss/app-a", "1", Format::Docker, &[base.clone(), top_a]).await;
    let b = seeder.push_image("oss/app-b", "1", Format::Oci, &[base.clone(), top_b]).await;
    let all = [&index, &a, &b];
    let refs: Vec<String> = all.iter().map(|i| i.reference(MCR)).collect();
    let dir = sync_config(&src.url(), &dst.url(), &refs);

    let manifests: usize = all.iter().map(|i| 1 + i.children.len()).sum();
    let blobs: usize = all.iter().map(|i| i.blobs.len()).sum();
    let (mounted, uploaded) = (1, blobs - 1); // the base layer goes up once, and is mounted once
    let (tags, repos) = (all.len(), all.len());

    let out = support::mirror_in(dir.path(), &["sync"]).await;
    assert_eq!(out.status.code(), Some(0));
    let (s, d) = (by_kind(&src, 0), by_kind(&dst, 0));
    eprintln!("fresh sync\n source {s:?}\n target {d:?}");
    for img in all {
        support::images::assert_image_present(&acr.url(), &format!("mirror/{}", img.repository), img, None).await;
    }
    assert_eq!(
        s,
        budget(&[
            ("ping", 1),
            ("manifest GET", manifests),
            ("blob GET", uploaded),
            ("referrers GET", 1),
            ("tag listing", repos),
        ]),
        "source, fresh sync: {:?}",
        src.requests()
    );
    assert_eq!(
        d,
        budget(&[
            ("ping", 1),
            ("acr listing", 1),
            ("tag listing", repos),
            ("self-mount POST", uploaded),
            ("upload PUT", uploaded),
            ("upload PATCH", 1),
            ("mount POST", mounted),
            ("manifest PUT", manifests),
        ]),
        "target, fresh sync: {:?}",
        dst.requests()
    );

    for args in [&["plan"][..], &["sync"][..]] {
        let (s0, d0) = (src.requests().len(), dst.requests().len());
        let out = support::mirror_in(dir.path(), args).await;
        assert_eq!(out.status.code(), Some(0), "nothing to do");
        let (s, d) = (by_kind(&src, s0), by_kind(&dst, d0));
        eprintln!("{args:?}, nothing to do\n source {s:?}\n target {d:?}");
        assert_eq!(s, budget(&[("ping", 1), ("manifest HEAD", tags)]), "source, no-op {args:?}: {:?}", src.requests());
        assert_eq!(
            d,
            budget(&[("ping", 1), ("acr listing", 1), ("tag listing", repos), ("manifest HEAD", tags)]),
            "target, no-op {args:?}: {:?}",
            dst.requests()
        );
    }
}

/// Token fetches of a fresh `sync` into a token-auth target: each scope set is fetched once
/// while its token is valid, and a token serves every request its scopes cover. A run asks one
/// `pull,push` set per target repository, at its first request there (the plan's listing, or the
/// probe for ACR's listing API, which adds `metadata_read` and which distribution answers 401 too:
/// once per registry), and that token serves the listing, the `HEAD`s and the pushes; a
/// repository that mounts asks once more, with the mount source in the set. No `pull`-only set for
/// a target repository.
#[tokio::test]
async fn tokens_are_fetched_once_per_scope_set_and_reused_where_they_cover() {
    let mcr = TestRegistry::anonymous().await;
    let tokens = support::TokenService::start(support::Users::new().user("mirror", "s3cret").anonymous(false)).await;
    let acr = TestRegistry::with_token_auth(&tokens).await;
    let mut seeder = Seeder::new(&mcr.url(), 73);
    let base = seeder.random_blob(50_000);
    let index = seeder.push_multiarch("oss/kubernetes/pause", "3.10", Format::Oci).await;
    let (top_a, top_b) = (seeder.random_blob(3000), seeder.random_blob(4000));
    let a = seeder.push_image("oss/app-a", "1", Format::Docker, &[base.clone(), top_a]).await;
    let b = seeder.push_image("oss/app-b", "1", Format::Oci, &[base.clone(), top_b]).await;
    let refs: Vec<String> = [&index, &a, &b].iter().map(|i| i.reference(MCR)).collect();
    let dir = sync_config(&mcr.url(), &acr.url(), &refs);
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret").unwrap();
    let cfg = std::fs::read_to_string(dir.path().join("mirror.yaml")).unwrap().replace(
        &format!("    endpoint: {}\n", acr.url()),
        &format!(
            "    endpoint: {}\n    auth: {{type: basic, username: mirror, passwordFile: {}}}\n",
            acr.url(),
            password.display()
        ),
    );
    std::fs::write(dir.path().join("mirror.yaml"), cfg).unwrap();

    let out = support::mirror_in(dir.path(), &["sync"]).await;
    assert_eq!(out.status.code(), Some(0));
    let mut fetched: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for r in tokens.requests() {
        assert_eq!(r.status, 200, "{r:?}");
        let mut scopes = r.scopes.clone();
        scopes.sort();
        *fetched.entry(scopes).or_default() += 1;
    }
    eprintln!("token fetches by scope set: {fetched:?}");
    assert!(fetched.values().all(|n| *n == 1), "a scope set was fetched twice while its token was valid: {fetched:?}");
    // Which of the two images sharing the base layer mounts it depends on which ran first.
    let mount_set = |into: &str, from: &str| {
        let mut v = vec![format!("repository:{from}:pull"), format!("repository:{into}:pull,push")];
        v.sort();
        v
    };
    let (app_a, app_b) = ("mirror/oss/app-a", "mirror/oss/app-b");
    let (into, from) = if fetched.contains_key(&mount_set(app_b, app_a)) { (app_b, app_a) } else { (app_a, app_b) };
    let mut per_repo = BTreeMap::new();
    for img in [&index, &a, &b] {
        let repo = format!("mirror/{}", img.repository);
        let sets: Vec<_> = fetched
            .keys()
            .filter(|k| k.len() == 1 && k[0].starts_with(&format!("repository:{repo}:")))
            .cloned()
            .collect();
        per_repo.insert(repo, sets);
    }
    for (repo, sets) in &per_repo {
        assert_eq!(sets.len(), 1, "one scope set per target repository, {repo}: {fetched:?}");
        let set = &sets[0][0];
        assert!(
            *set == format!("repository:{repo}:pull,push")
                || *set == format!("repository:{repo}:pull,push,metadata_read"),
            "{repo} asked {set}, not pull,push: {fetched:?}"
        );
    }
    let probes = fetched.keys().filter(|k| k.iter().any(|s| s.contains("metadata_read"))).count();
    assert_eq!(
        probes, 1,
        "the ACR listing API is probed once per registry, under the repository's one set: {fetched:?}"
    );
    assert!(fetched.contains_key(&mount_set(into, from)), "the mount's set: {fetched:?}");
    assert_eq!(fetched.len(), 3 + 1, "three repositories' sets and one mount's: {fetched:?}");
}

/// A registry that refuses the upload's self-mount (a mount from the repository itself, which
/// replaced the `HEAD` before each upload) with a client error is asked once, then with plain
/// `POST`s: every image is complete and every blob went up. One blob at a time, so the count is
/// exact: one refused self-mount, then a plain `POST` for every blob uploaded (the refused one
/// included).
#[tokio::test]
async fn a_registry_refusing_the_self_mount_gets_plain_uploads() {
    let mcr = TestRegistry::anonymous().await;
    let acr = TestRegistry::anonymous().await;
    let dst = FaultProxy::start(&acr.url()).await;
    dst.fail_with("POST", "mount=", 1000, 400, None);
    let mut seeder = Seeder::new(&mcr.url(), 74);
    let a = seeder.push_random_image("oss/app-a", "1", Format::Oci, &[30_000, 40_000]).await;
    let b = seeder.push_random_image("oss/app-b", "1", Format::Docker, &[50_000]).await;
    let dir = sync_config(&mcr.url(), &dst.url(), &[a.reference(MCR), b.reference(MCR)]);
    let path = dir.path().join("mirror.yaml");
    let cfg = std::fs::read_to_string(&path)
        .unwrap()
        .replace("  chunkSize: 1048576\n", "  chunkSize: 1048576\n  concurrency: 1\n");
    std::fs::write(&path, cfg).unwrap();

    let out = support::mirror_in(dir.path(), &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    for img in [&a, &b] {
        support::images::assert_image_present(&acr.url(), &format!("mirror/{}", img.repository), img, None).await;
    }
    let uploaded = a.blobs.len() + b.blobs.len();
    let d = by_kind(&dst, 0);
    assert_eq!(dst.faulted_all(), 1, "the self-mount was refused once: {:?}", dst.requests());
    assert_eq!(d.get("self-mount POST"), Some(&1), "asked once per registry: {d:?}");
    assert_eq!(d.get("upload POST"), Some(&uploaded), "then plain POSTs, one per blob: {d:?}");
    assert_eq!(d.get("upload PUT"), Some(&uploaded), "{d:?}");
}

/// A no-op `plan` against a registry whose tag listing has no digests asks the source's tag and
/// the target's together, not the target's after the source's answer: one round trip per image
/// where there were two. One registry holds both repositories behind one proxy, which holds the
/// first of the two `HEAD`s until the other arrives (10 s at most); a plan that waited for the
/// first answer before sending the second could not meet it.
#[tokio::test]
async fn the_plan_asks_the_source_and_target_tags_together() {
    let reg = TestRegistry::anonymous().await;
    let front = FaultProxy::start(&reg.url()).await;
    let mut seeder = Seeder::new(&reg.url(), 75);
    let image = seeder.push_random_image("oss/app-a", "1", Format::Oci, &[20_000]).await;
    let dir = sync_config(&front.url(), &front.url(), &[image.reference(MCR)]);
    assert_eq!(support::mirror_in(dir.path(), &["sync"]).await.status.code(), Some(0));

    front.hold_until_other(
        "HEAD",
        "/v2/oss/app-a/manifests/",
        "/v2/mirror/oss/app-a/manifests/",
        0,
        Duration::from_secs(10),
    );
    let out = support::mirror_in(dir.path(), &["plan"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", support::output_text(&out));
    assert!(support::output_text(&out).contains("present"), "{}", support::output_text(&out));
    assert_eq!(
        front.rendezvous_met(),
        Some(true),
        "the second HEAD waited for the first one's answer: {:?}",
        front.requests()
    );
}
