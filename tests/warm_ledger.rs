//! The warm ledger (issue #10, "warm presence is not proven"), through the real binary.
//!
//! The target stands in for an ACR with a cache rule: our ACR listing stand-in in front of a
//! router that sends the ledger's repository to an ordinary `docker-registry` (pushes allowed, as
//! in an ACR's ordinary repositories) and everything else to a `docker-registry` in proxy mode
//! (a pull-through cache of the source, refusing pushes, as a cache rule does). The stand-in lists
//! the cache's tags as soon as the upstream has them — the situation the ledger exists for: a
//! listed tag says nothing about whether children and blobs went through the cache.

mod support;
mod support_azure;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use support::{Format, PushedImage, Seeder, TestRegistry};
use support_azure::acr_api::AcrApiStandIn;

const ACR: &str = "ledgertest.azurecr.io";
const MCR: &str = "mcr.microsoft.com";
const LEDGER: &str = "acr-mirror/warm-ledger";

/// Routes `/v2/<LEDGER>/…` to `ledger`, everything else to `cache`; with `deny_push`, answers
/// every write to the ledger's repository `403 DENIED`, as ACR does for an identity without push.
struct Router {
    url: String,
    cache: String,
    ledger: String,
    deny_push: AtomicBool,
    http: reqwest::Client,
}

impl Router {
    async fn start(cache: &str, ledger: &str) -> Arc<Router> {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = Arc::new(Router {
            url: format!("http://{}", tcp.local_addr().unwrap()),
            cache: cache.to_string(),
            ledger: ledger.to_string(),
            deny_push: AtomicBool::new(false),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap(),
        });
        let app = axum::Router::new().fallback(route).with_state(router.clone());
        tokio::spawn(async move { axum::serve(tcp, app).await.unwrap() });
        router
    }
}

async fn route(State(r): State<Arc<Router>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let to_ledger = path.starts_with(&format!("/v2/{LEDGER}/"));
    if to_ledger && method != Method::GET && method != Method::HEAD && r.deny_push.load(Ordering::SeqCst) {
        let body = serde_json::json!({"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let backend = if to_ledger { &r.ledger } else { &r.cache };
    let mut up = r.http.request(method, format!("{backend}{path}"));
    for (name, value) in req.headers() {
        if name != header::HOST && name != header::CONNECTION && name != header::TRANSFER_ENCODING {
            up = up.header(name, value);
        }
    }
    let body = axum::body::to_bytes(req.into_body(), 16 << 20).await.unwrap();
    let resp = up.body(body).send().await.unwrap();
    let mut out = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        match value.to_str().ok().and_then(|v| v.strip_prefix(backend.as_str())) {
            Some(rest) if name == header::LOCATION => {
                out = out.header(name, HeaderValue::from_str(&format!("{}{rest}", r.url)).unwrap())
            }
            _ => out = out.header(name, value),
        }
    }
    out.body(Body::from_stream(resp.bytes_stream())).unwrap()
}

/// The source, the cache of it, the ledger's registry, and the ACR stand-in in front of them all.
struct Setup {
    mcr: TestRegistry,
    cache: TestRegistry,
    ledger: TestRegistry,
    router: Arc<Router>,
    acr: AcrApiStandIn,
    image: PushedImage,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let mcr = TestRegistry::anonymous().await;
        let image = Seeder::new(&mcr.url(), 31).push_multiarch("oss/kubernetes/coredns", "v1.12", Format::Oci).await;
        let cache = TestRegistry::proxy_cache(&mcr.url()).await;
        let ledger = TestRegistry::anonymous().await;
        let router = Router::start(&cache.url(), &ledger.url()).await;
        let acr = AcrApiStandIn::start(&router.url).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docker")).unwrap();
        Setup { mcr, cache, ledger, router, acr, image, dir }
    }

    /// A config warming `images` for `platforms`.
    fn config(&self, name: &str, platforms: &str, images: &[&PushedImage]) -> PathBuf {
        let refs: String = images.iter().map(|i| format!("  - {}\n", i.reference(MCR))).collect();
        let yaml = format!(
            "registries:\n  - host: {MCR}\n    endpoint: {}\n  - host: {ACR}\n    endpoint: {}\n\
             target: {ACR}\nplatforms: [{platforms}]\nmappings:\n  - source: {MCR}\n    target: \"\"\n    mode: warm\n\
             transfer: {{retries: 0}}\nimages:\n{refs}",
            self.mcr.url(),
            self.acr.url,
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// Runs `mirror -c config ARGS --report-json FILE`: exit code, stderr, and the report.
    async fn mirror(&self, config: &Path, args: &[&str]) -> (i32, String, Value) {
        let report = self.dir.path().join(format!("report-{}.json", rand_suffix()));
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
            .arg("-c")
            .arg(config)
            .args(args)
            .arg("--report-json")
            .arg(&report)
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env_remove("MIRROR_LOG")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let json = std::fs::read(&report).map(|b| serde_json::from_slice(&b).unwrap()).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), stderr, json)
    }

    /// The ledger's tags, read from its registry directly (an independent client).
    async fn ledger_tags(&self) -> Vec<String> {
        support::images::list_tags(&self.ledger.url(), LEDGER, None).await
    }

    fn amd64_blobs(&self) -> Vec<&acr_mirror::digest::Digest> {
        let amd64 = self.image.children.iter().find(|c| c.platform.as_ref().unwrap().architecture == "amd64");
        amd64.unwrap().blobs.iter().map(|(d, _)| d).collect()
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn planned(report: &Value) -> Vec<String> {
    report["images"].as_array().unwrap().iter().map(|i| i["planned"].as_str().unwrap().to_string()).collect()
}

/// A warm image ACR lists with the right digest but whose warm the ledger does not record is
/// `partial` (plan exits 2, writing nothing) and `sync` warms it; the entry is then written (an
/// OCI artifact naming repository, index digest and platforms), the next plan finds the image
/// present and the next sync reads nothing through the cache; a new platform makes it partial
/// again. Would catch: listed tags taken as complete warms, entries written by `plan`, entries
/// not found again, the platform set left out of the entry.
#[tokio::test]
async fn a_listed_warm_image_is_present_only_once_the_ledger_records_its_warm() {
    let s = Setup::new().await;
    let cfg = s.config("amd64.yaml", "linux/amd64", &[&s.image]);

    let (code, err, report) = s.mirror(&cfg, &["plan"]).await;
    assert_eq!(code, 2, "{err}");
    assert_eq!(planned(&report), ["partial"]);
    assert!(s.ledger_tags().await.is_empty(), "plan wrote a ledger entry");
    assert_eq!(s.acr.count("PUT", "/manifests/"), 0, "plan wrote a manifest");

    let (code, err, report) = s.mirror(&cfg, &["sync"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["summary"]["outcomes"]["warmed"], 1, "{report}");
    s.cache.wait_for_blobs_on_disk(&s.amd64_blobs()).await;
    let tags = s.ledger_tags().await;
    assert_eq!(tags.len(), 1, "{tags:?}");
    let (entry, _, _) = support::images::get_manifest(&s.ledger.url(), LEDGER, &tags[0], None).await.unwrap();
    let entry: Value = serde_json::from_slice(&entry).unwrap();
    assert_eq!(entry["artifactType"], "application/vnd.acr-mirror.warm.v1");
    let notes = &entry["annotations"];
    assert_eq!(notes["io.github.acr-mirror.warm.repository"], "oss/kubernetes/coredns");
    assert_eq!(notes["io.github.acr-mirror.warm.digest"], s.image.digest.as_str());
    assert_eq!(notes["io.github.acr-mirror.warm.platforms"], "linux/amd64");

    let (code, err, report) = s.mirror(&cfg, &["plan"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(planned(&report), ["present"]);
    s.acr.clear();
    let (code, err, report) = s.mirror(&cfg, &["sync"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["summary"]["outcomes"]["warmed"], 0, "{report}");
    assert_eq!(s.acr.count("GET", "/blobs/"), 0, "a recorded warm was read again");

    let both = s.config("both.yaml", "linux/amd64, linux/arm64", &[&s.image]);
    let (code, err, report) = s.mirror(&both, &["plan"]).await;
    assert_eq!((code, planned(&report)), (2, vec!["partial".to_string()]), "{err}");
}

/// A warm that fails (a blob the upstream no longer has) writes no ledger entry, so the image
/// stays `partial`, although the index and the other blobs went through the cache. Would catch
/// an entry written before every blob was read and verified.
#[tokio::test]
async fn a_failed_warm_writes_no_ledger_entry() {
    let s = Setup::new().await;
    let lost = s.amd64_blobs()[1].clone();
    let blob_dir = s.mcr.storage_dir().join("docker/registry/v2/blobs/sha256").join(&lost.hex()[..2]).join(lost.hex());
    std::fs::remove_dir_all(&blob_dir).unwrap();
    let cfg = s.config("amd64.yaml", "linux/amd64", &[&s.image]);

    let (code, err, report) = s.mirror(&cfg, &["sync"]).await;
    assert_eq!(code, 3, "{err}");
    assert_eq!(report["summary"]["outcomes"]["failed"], 1, "{report}");
    assert!(s.ledger_tags().await.is_empty(), "a failed warm was recorded");
    let (code, err, report) = s.mirror(&cfg, &["plan"]).await;
    assert_eq!((code, planned(&report)), (2, vec!["partial".to_string()]), "{err}");
}

/// An identity that may not push to the ledger's repository (403 DENIED) gets one warning, and
/// the run behaves as before the ledger: a listed tag with the expected digest is present, and
/// nothing is warmed or written. Would catch: a refused ledger failing the run, the warning
/// repeated, or every listed image warmed forever because no entry can ever be written.
#[tokio::test]
async fn without_push_rights_on_the_ledger_the_plan_says_so_once_and_trusts_the_listing() {
    let s = Setup::new().await;
    s.router.deny_push.store(true, Ordering::SeqCst);
    let other = Seeder::new(&s.mcr.url(), 32).push_multiarch("oss/kubernetes/pause", "3.10", Format::Docker).await;
    let cfg = s.config("amd64.yaml", "linux/amd64", &[&s.image, &other]);

    for command in ["plan", "sync"] {
        let (code, err, report) = s.mirror(&cfg, &[command]).await;
        assert_eq!(code, 0, "{command}: {err}");
        assert_eq!(planned(&report), ["present", "present"], "{command}");
        assert_eq!(err.matches("the warm ledger is not used").count(), 1, "{command}: {err}");
        assert!(err.contains("403"), "{command}: {err}");
    }
    assert!(s.ledger_tags().await.is_empty());
}

/// Two syncs at once, each warming its own image, both keep their entry: every entry is a tag of
/// its own, so neither run overwrites the other's. Would catch a ledger kept as one document
/// rewritten by each run.
#[tokio::test]
async fn concurrent_runs_keep_each_others_entries() {
    let s = Setup::new().await;
    let other = Seeder::new(&s.mcr.url(), 33).push_multiarch("oss/kubernetes/pause", "3.10", Format::Docker).await;
    let (a, b) = (s.config("a.yaml", "linux/amd64", &[&s.image]), s.config("b.yaml", "linux/amd64", &[&other]));
    let ((ca, ea, _), (cb, eb, _)) = tokio::join!(s.mirror(&a, &["sync"]), s.mirror(&b, &["sync"]));
    assert_eq!((ca, cb), (0, 0), "{ea}\n{eb}");
    assert_eq!(s.ledger_tags().await.len(), 2);
    let (code, err, report) = s.mirror(&s.config("ab.yaml", "linux/amd64", &[&s.image, &other]), &["plan"]).await;
    assert_eq!((code, planned(&report)), (0, vec!["present".to_string(), "present".to_string()]), "{err}");
}

/// Two images of one repository sharing a layer, warmed in one run: the shared layer is read
/// through the cache once, not once per image. Would catch the duplicate reads that made warming
/// slower than reading each blob once (the warm benchmark's fixture shares a base layer between
/// the tags of a repository).
#[tokio::test]
async fn a_layer_shared_by_images_of_one_repository_is_read_once() {
    let mcr = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&mcr.url(), 34);
    let base = seeder.random_blob(64 << 10);
    let (own1, own2) = (seeder.random_blob(1000), seeder.random_blob(1001));
    let one = seeder.push_image("oss/kubernetes/pause", "3.9", Format::Oci, &[base.clone(), own1]).await;
    let two = seeder.push_image("oss/kubernetes/pause", "3.10", Format::Oci, &[base.clone(), own2]).await;
    let cache = TestRegistry::proxy_cache(&mcr.url()).await;
    let counting = support::FaultProxy::start(&cache.url()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mirror.yaml"),
        warm_only(&mcr.url(), &counting.url(), &[one.reference(MCR), two.reference(MCR)]),
    )
    .unwrap();
    let out = support::mirror_in(dir.path(), &["sync"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(counting.count("GET", &format!("/blobs/{}", base.digest)), 1, "{:?}", counting.requests());
    cache.wait_for_blobs_on_disk(&[&base.digest]).await;

    // A shared read that fails does not fail the other image waiting on it: that image reads the
    // layer itself. The cache serves a corrupted copy once (a digest mismatch, which is not
    // retried): one image fails on it, the other reads the layer again and is warmed.
    let three = seeder.push_image("oss/kubernetes/pause", "3.11", Format::Oci, std::slice::from_ref(&base)).await;
    let four = seeder.push_image("oss/kubernetes/pause", "3.12", Format::Oci, std::slice::from_ref(&base)).await;
    let fresh = TestRegistry::proxy_cache(&mcr.url()).await;
    let faulty = support::FaultProxy::start(&fresh.url()).await;
    faulty.change_answers("GET", &format!("/blobs/{}", base.digest), 1, support::proxy::Change::Corrupt(100));
    std::fs::write(
        dir.path().join("mirror.yaml"),
        warm_only(&mcr.url(), &faulty.url(), &[three.reference(MCR), four.reference(MCR)]),
    )
    .unwrap();
    let out = support::mirror_in(dir.path(), &["sync", "--report-json", "r.json"]).await;
    let report: Value = serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    let mut outcomes: Vec<&str> =
        report["images"].as_array().unwrap().iter().map(|i| i["outcome"].as_str().unwrap()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["failed", "warmed"], "{}", support::output_text(&out));
    assert_eq!(faulty.count("GET", &format!("/blobs/{}", base.digest)), 2, "{:?}", faulty.requests());
    // `sync` left the source's digest to the warm (no ACR listing here): the report has it.
    let warmed = report["images"].as_array().unwrap().iter().find(|i| i["outcome"] == "warmed").unwrap();
    let expected = [&three, &four].map(|i| i.digest.to_string());
    assert!(expected.iter().any(|d| warmed["sourceDigest"] == d.as_str()), "{warmed}");
}

/// A config warming `images` (references under MCR) of the source at `mcr` through the cache at
/// `cache`.
fn warm_only(mcr: &str, cache: &str, images: &[String]) -> String {
    let mut yaml = format!(
        "registries:\n  - host: {MCR}\n    endpoint: {mcr}\n  - host: {ACR}\n    endpoint: {cache}\n\
         target: {ACR}\nmappings:\n  - source: {MCR}\n    target: \"\"\n    mode: warm\nimages:\n"
    );
    for image in images {
        yaml.push_str(&format!("  - {image}\n"));
    }
    yaml
}

/// A warm image the source does not have fails naming the source, not the cache in front of it
/// (`sync` leaves the source's `HEAD` to the warm on a registry without ACR's listing), and the
/// other image of the run is warmed.
#[tokio::test]
async fn a_warm_image_the_source_lacks_fails_naming_the_source() {
    let mcr = TestRegistry::anonymous().await;
    let image = Seeder::new(&mcr.url(), 35).push_random_image("oss/kubernetes/pause", "3.9", Format::Oci, &[100]).await;
    let cache = TestRegistry::proxy_cache(&mcr.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("{MCR}/oss/kubernetes/pause:0.0-not-there");
    std::fs::write(
        dir.path().join("mirror.yaml"),
        warm_only(&mcr.url(), &cache.url(), &[image.reference(MCR), missing]),
    )
    .unwrap();
    let out = support::mirror_in(dir.path(), &["sync", "--report-json", "r.json"]).await;
    assert_eq!(out.status.code(), Some(3), "one image failed");
    let report: Value = serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    let images = report["images"].as_array().unwrap();
    let failed = images.iter().find(|i| i["outcome"] == "failed").expect("a failed image");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("no such image") && error.contains(MCR), "{error}");
    assert!(images.iter().any(|i| i["outcome"] == "warmed"), "{report}");
}
