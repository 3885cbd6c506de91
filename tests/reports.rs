//! The outputs CI systems, scripts and monitoring read, checked with independent tools: every
//! JSON document a command produces against the JSON Schemas in `schema/` (the `jsonschema`
//! crate), every JUnit file against the Jenkins xunit schema (`xmllint --schema`), the metrics
//! file with a Prometheus exposition-format parser, and the man pages' EXIT STATUS.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::SystemTime;

use acr_mirror::config::MappingMode;
use acr_mirror::plan::Status;
use acr_mirror::report::Report;
use acr_mirror::transfer::pipeline::{ImageResult, Outcome};
use serde_json::Value;
use support::{Format, PushedImage, Seeder, TestRegistry};

const SRC: &str = "mcr.microsoft.com";
const DST: &str = "myacr.azurecr.io";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What `doc` breaks of `schema/NAME`, one line per violation.
fn violations(name: &str, doc: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_slice(&std::fs::read(root().join("schema").join(name)).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("schema/{name}: {e}"));
    validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

/// Checks `doc` against `schema/NAME`, failing with every violation listed.
fn validate(name: &str, doc: &Value) {
    let errors = violations(name, doc);
    assert!(errors.is_empty(), "not valid against schema/{name}:\n{}\n{doc:#}", errors.join("\n"));
}

/// The Jenkins xunit JUnit schema. Its owner asks that it not be copied into the project: it is
/// read from the `shared/data/junit/` folder beside the repository (or beside a folder above
/// it, for a git worktree), where CI and every developer machine have it.
fn jenkins_xsd() -> PathBuf {
    root()
        .ancestors()
        .map(|a| a.join("shared/data/junit/jenkins-junit.xsd"))
        .find(|p| p.is_file())
        .expect("shared/data/junit/jenkins-junit.xsd not found beside the repository or a folder above it")
}

/// Checks a JUnit file with `xmllint --schema` against the Jenkins schema.
fn validate_junit(path: &Path) {
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(jenkins_xsd())
        .arg(path)
        .output()
        .expect("xmllint is not installed: apt-get install libxml2-utils (or run .ci/run)");
    assert!(
        out.status.success(),
        "{} is not valid JUnit for Jenkins:\n{}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(src: &TestRegistry, dst: &TestRegistry, images: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let list: String = images.iter().map(|i| format!("  - {i}\n")).collect();
        let cfg = format!(
            "registries:\n  - host: {SRC}\n    endpoint: {}\n  - host: {DST}\n    endpoint: {}\n\
             target: {DST}\nmappings:\n  - source: \"*\"\n    target: mirror\n    mode: copy\nimages:\n{list}\
             transfer: {{images: 4, retries: 0}}\n",
            src.url(),
            dst.url()
        );
        std::fs::write(dir.path().join("mirror.yaml"), cfg).unwrap();
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn mirror(&self, args: &[&str]) -> Output {
        support::mirror_in(self.dir.path(), args).await
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.path(name)).unwrap()).unwrap()
    }
}

fn image<'a>(report: &'a Value, repo: &str) -> &'a Value {
    report["images"].as_array().unwrap().iter().find(|i| i["target"].as_str().unwrap().contains(repo)).unwrap()
}

fn blob_bytes(img: &PushedImage) -> u64 {
    img.blobs.iter().map(|(_, s)| s).sum()
}

/// Checks plan, sync and verify end to end on three images sharing a base layer: every JSON
/// report (file and `-o json`, which must be the same document) is valid against
/// schema/report.v1.json, every JUnit file against the Jenkins schema, the metrics file parses
/// as Prometheus text with only gauges; and each synced image reports the size of all its
/// blobs, the shared layer included, whichever image moved it (it used to count only for the
/// image that happened to move it first). A failed image's JUnit failure names the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_sync_and_verify_reports_follow_the_schemas() {
    let (src, dst) = (TestRegistry::anonymous().await, TestRegistry::anonymous().await);
    let mut seeder = Seeder::new(&src.url(), 41);
    let base = seeder.random_blob(5000);
    let mut pushed = Vec::new();
    for (repo, own) in [("app-a", 1000), ("app-b", 2000), ("app-c", 3000)] {
        let layer = seeder.random_blob(own);
        pushed.push(seeder.push_image(&format!("oss/{repo}"), "1", Format::Oci, &[base.clone(), layer]).await);
    }
    let refs: Vec<String> = pushed.iter().map(|i| i.reference(SRC)).collect();
    let env = Env::new(&src, &dst, &refs);

    let out = env.mirror(&["plan", "-o", "json", "--report-json", "plan.json", "--report-junit", "plan.xml"]).await;
    assert_eq!(out.status.code(), Some(2), "drift");
    assert_eq!(out.stdout, std::fs::read(env.path("plan.json")).unwrap(), "plan -o json is the --report-json document");
    let plan = env.json("plan.json");
    validate("report.v1.json", &plan);
    assert_eq!((plan["command"].as_str(), plan["summary"]["planned"]["missing"].as_u64()), (Some("plan"), Some(3)));
    validate_junit(&env.path("plan.xml"));
    let junit = std::fs::read_to_string(env.path("plan.xml")).unwrap();
    assert_eq!(junit.matches("<failure type=\"missing\" message=\"missing in the target\"").count(), 3, "{junit}");

    let out = env
        .mirror(&["sync", "--report-json", "sync.json", "--report-junit", "sync.xml", "--metrics-file", "sync.prom"])
        .await;
    assert_eq!(out.status.code(), Some(0));
    let sync = env.json("sync.json");
    validate("report.v1.json", &sync);
    validate_junit(&env.path("sync.xml"));
    for (img, repo) in pushed.iter().zip(["app-a", "app-b", "app-c"]) {
        let entry = image(&sync, repo);
        assert_eq!(entry["outcome"], "copied");
        assert_eq!(entry["bytes"].as_u64(), Some(blob_bytes(img)), "{repo}: every blob it needed, the shared one too");
    }
    assert_eq!(sync["summary"]["bytes"].as_u64(), Some(pushed.iter().map(blob_bytes).sum()));
    check_metrics(&std::fs::read_to_string(env.path("sync.prom")).unwrap());

    let out =
        env.mirror(&["verify", "-o", "json", "--report-json", "verify.json", "--report-junit", "verify.xml"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, std::fs::read(env.path("verify.json")).unwrap());
    let verify = env.json("verify.json");
    validate("report.v1.json", &verify);
    assert_eq!(verify["summary"]["planned"]["present"].as_u64(), Some(3));
    validate_junit(&env.path("verify.xml"));

    // A source that is gone: the image fails, the report and the JUnit file say why.
    let missing = format!("{SRC}/oss/gone:1");
    let env = Env::new(&src, &dst, &[missing, refs[0].clone()]);
    let out = env.mirror(&["sync", "--report-json", "failed.json", "--report-junit", "failed.xml"]).await;
    assert_eq!(out.status.code(), Some(3));
    let failed = env.json("failed.json");
    validate("report.v1.json", &failed);
    assert_eq!(image(&failed, "gone")["outcome"], "failed");
    assert_eq!(image(&failed, "app-a")["bytes"].as_u64(), Some(0), "already there: nothing moved");
    validate_junit(&env.path("failed.xml"));
    let junit = std::fs::read_to_string(env.path("failed.xml")).unwrap();
    assert!(junit.contains("<failure type=\"failed\" message=\"") && !junit.contains("message=\"\""), "{junit}");
    assert!(!junit.contains("()"), "no empty parentheses for unknown digests: {junit}");
}

/// A metrics file as Prometheus reads it: every line understood by the parser, every series a
/// documented gauge without `_total`, the run's timestamp and success present.
fn check_metrics(text: &str) {
    use prometheus_parse::{LineInfo, Scrape, Value};
    for line in text.lines() {
        assert!(!matches!(LineInfo::parse(line), LineInfo::Ignored | LineInfo::Empty), "unparsed line {line:?}");
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    for s in &scrape.samples {
        assert!(matches!(s.value, Value::Gauge(_)), "{} is not a gauge", s.metric);
        assert!(!s.metric.ends_with("_total") && scrape.docs.contains_key(&s.metric), "{}", s.metric);
        assert_eq!((s.labels.get("command"), s.labels.get("shard")), (Some("sync"), Some("0/1")), "{}", s.metric);
    }
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in ["acr_mirror_last_run_success", "acr_mirror_last_run_timestamp_seconds", "acr_mirror_last_run_images"] {
        assert!(names.contains(&name), "{name} missing from\n{text}");
    }
}

/// Checks `resolve -o json` on the shipped example (AKS lists, workloads, config images: every
/// kind of provenance) against schema/resolve.v1.json.
#[test]
fn resolve_json_follows_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
        .args(["resolve", "-c", "mirror.example.yaml", "-o", "json"])
        .current_dir(root())
        .env_remove("MIRROR_CONFIG")
        .env("DOCKER_CONFIG", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    validate("resolve.v1.json", &doc);
    let froms: std::collections::BTreeSet<&str> = doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["provenance"].as_array().unwrap())
        .map(|p| p["from"].as_str().unwrap())
        .collect();
    assert_eq!(froms.into_iter().collect::<Vec<_>>(), ["aksList", "config", "workload"]);
}

fn result(target: &str, outcome: Outcome, error: Option<&str>) -> ImageResult {
    ImageResult {
        source: format!("{SRC}/{target}"),
        target: format!("{DST}/{target}"),
        mode: MappingMode::Copy,
        planned: Status::Missing,
        outcome,
        source_digest: None,
        target_digest: None,
        bytes: 0,
        duration_ms: 5,
        error: error.map(String::from),
        error_kind: error.map(|_| "timeout"),
    }
}

/// Checks the reports no registry run here produces on demand: a run that failed before it had
/// images (status `failed`, one failed JUnit case naming the error) and a run stopped by a
/// signal with skipped and interrupted images (`<skipped>` as the Jenkins schema types it).
#[test]
fn failed_and_interrupted_runs_follow_the_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let failed = Report::failed_run("verify", SystemTime::now(), "cannot read mirror.yaml: <gone> & \"lost\"".into());
    let doc: Value = serde_json::from_slice(&failed.to_json()).unwrap();
    validate("report.v1.json", &doc);
    assert_eq!(
        (doc["status"].as_str(), doc["error"].as_str()),
        (Some("failed"), Some("cannot read mirror.yaml: <gone> & \"lost\""))
    );
    let path = dir.path().join("failed.xml");
    std::fs::write(&path, failed.to_junit()).unwrap();
    validate_junit(&path);
    let junit = std::fs::read_to_string(&path).unwrap();
    assert!(
        junit.contains("name=\"mirror verify\"") && junit.contains("message=\"cannot read mirror.yaml: &lt;gone&gt;"),
        "{junit}"
    );

    let stopped = Report::new(
        "sync",
        SystemTime::now(),
        10,
        vec![
            result("oss/a:1", Outcome::Copied, None),
            result("oss/b:1", Outcome::Skipped, Some("not attempted: --fail-fast stopped the run after a failure")),
            result("oss/c:1", Outcome::Interrupted, Some("not completed: the run was stopped by a signal")),
            result("oss/d:1", Outcome::Failed, None),
        ],
    );
    let doc: Value = serde_json::from_slice(&stopped.to_json()).unwrap();
    validate("report.v1.json", &doc);
    assert_eq!(doc["status"], "interrupted");
    // The schema is strict enough to catch a drifting document.
    for (pointer, value) in [
        ("/images/0/outcome", Value::from("moved")),
        ("/started", Value::from("yesterday")),
        ("/summary/outcomes", Value::Null),
        ("/images/0/sourceDigest", Value::from("sha256")),
    ] {
        let mut bad = doc.clone();
        *bad.pointer_mut(pointer).unwrap() = value;
        assert!(!violations("report.v1.json", &bad).is_empty(), "{pointer} accepted in a sync report");
    }
    let path = dir.path().join("stopped.xml");
    std::fs::write(&path, stopped.to_junit()).unwrap();
    validate_junit(&path);
    let junit = std::fs::read_to_string(&path).unwrap();
    assert_eq!(junit.matches("<skipped>").count(), 2, "{junit}");
    assert!(
        junit.contains("<failure type=\"failed\" message=\"failed\">"),
        "a failure without error text still says so: {junit}"
    );
}

/// Checks the man pages: every page (`mirror man` and each of `mirror man --dir`) has an EXIT
/// STATUS section with every exit code, 130 and 143 included, and nothing points at a
/// `mirror-help(1)` page that is never written.
#[test]
fn man_pages_list_exit_codes_and_no_help_page() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
            .args(args)
            .env("DOCKER_CONFIG", dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let check = |name: &str, page: &str| {
        let section = page.split(".SH \"EXIT STATUS\"").nth(1).unwrap_or_else(|| panic!("{name}: no EXIT STATUS"));
        for code in ["0", "1", "2", "3", "4", "130", "143"] {
            assert!(section.contains(&format!("\\fB{code}\\fR")), "{name}: exit code {code} missing");
        }
        assert!(section.contains("SIGTERM") && section.contains("reports written"), "{name}");
        assert!(!page.contains("help(1)") && !page.contains("mirror\\-help"), "{name} points at a help page");
    };
    check("mirror(1)", &run(&["man"]));
    run(&["man", "--dir", dir.path().to_str().unwrap()]);
    let mut pages: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    pages.sort();
    assert!(pages.contains(&"mirror.1".to_string()) && pages.contains(&"mirror-sync.1".to_string()), "{pages:?}");
    assert!(!pages.iter().any(|p| p.contains("help")), "{pages:?}");
    for p in &pages {
        check(p, &std::fs::read_to_string(dir.path().join(p)).unwrap());
    }
}

/// Checks the prune documents: a report with every outcome kind and a failed run against
/// schema/prune.v1.json, their JUnit against the Jenkins schema (a failed deletion is a
/// failure, a moved tag a skip), and the metrics file with the Prometheus parser (every series
/// a documented gauge labelled `command="prune"`, the prune series present).
#[test]
fn prune_reports_follow_their_schema() {
    use acr_mirror::config::PruneConfig;
    use acr_mirror::digest::Digest;
    use acr_mirror::prune::{DeleteMode, ListedTag, Needed, RepoListing, plan};
    use acr_mirror::report::prune::{Done, Outcomes, PruneReport, write_metrics};
    let dir = tempfile::tempdir().unwrap();
    let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    let tag = |name: &str, n: u8| ListedTag { name: name.into(), digest: Digest::of(&[n]), updated: Some(old) };
    let repo = "mirror/app";
    let listing = RepoListing {
        repository: repo.into(),
        tags: vec![tag("keep", 1), tag("broken", 2), tag("moved", 3), tag("done", 4)],
        ..Default::default()
    };
    let mut needed = Needed::default();
    needed.tags.insert(repo.into(), ["keep".to_string()].into_iter().collect());
    let cfg = PruneConfig { min_age: "0s".into(), keep_recent: 0, protect: vec![] };
    let p = plan(&[listing], &needed, &cfg.rules().unwrap(), DeleteMode::Untag, SystemTime::now());
    let mut o = Outcomes::default();
    let t = |n: &str| (repo.to_string(), n.to_string());
    o.tags.insert(t("broken"), (Done::Failed, Some("DELETE … HTTP 500 <oops>".into())));
    o.tags.insert(t("moved"), (Done::Moved, Some("now sha256:…".into())));
    o.tags.insert(t("done"), (Done::Deleted, None));
    o.manifests.insert((repo.into(), Digest::of(&[4])), (Done::Deleted, None));
    let report = PruneReport::new(true, SystemTime::now(), 12, "myacr.azurecr.io", &cfg, &p, &o, false, None);
    let doc: Value = serde_json::from_slice(&report.to_json()).unwrap();
    validate("prune.v1.json", &doc);
    assert_eq!((doc["summary"]["deleted"].as_u64(), doc["summary"]["failed"].as_u64()), (Some(1), Some(1)));
    let path = dir.path().join("prune.xml");
    std::fs::write(&path, report.to_junit()).unwrap();
    validate_junit(&path);
    let junit = std::fs::read_to_string(&path).unwrap();
    assert!(
        junit.contains("failures=\"1\"") && junit.contains("skipped=\"1\"") && junit.contains("&lt;oops&gt;"),
        "{junit}"
    );

    let failed = PruneReport::failed_run(false, SystemTime::now(), None, "no config file: pass -c mirror.yaml".into());
    validate("prune.v1.json", &serde_json::from_slice(&failed.to_json()).unwrap());
    std::fs::write(&path, failed.to_junit()).unwrap();
    validate_junit(&path);

    let metrics_path = dir.path().join("prune.prom");
    let m = acr_mirror::report::metrics::RunMetrics {
        command: "prune",
        shard: "0/1".into(),
        report: None,
        exit_code: 3,
        finished: SystemTime::now(),
        duration_seconds: 1.5,
    };
    write_metrics(&metrics_path, &m, Some(&report)).unwrap();
    let text = std::fs::read_to_string(&metrics_path).unwrap();
    use prometheus_parse::{Scrape, Value as Sample};
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    for s in &scrape.samples {
        assert!(matches!(s.value, Sample::Gauge(_)) && scrape.docs.contains_key(&s.metric), "{}", s.metric);
        assert_eq!(s.labels.get("command"), Some("prune"), "{}", s.metric);
    }
    assert!(
        text.contains("acr_mirror_last_run_prune_tags{command=\"prune\",shard=\"0/1\",action=\"failed\"} 1"),
        "{text}"
    );
    assert!(text.contains("acr_mirror_last_run_prune_bytes_to_free{"), "{text}");
}
