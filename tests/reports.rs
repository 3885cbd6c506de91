//! The outputs CI systems, scripts and monitoring read, checked with independent tools: every
//! JSON document a command produces against the JSON Schemas in `schema/` (the `jsonschema`
//! crate), every JUnit file against the rules of the Jenkins xunit schema (a structural check
//! written from that schema, [`junit_violations`]; `xmllint --schema` against the schema itself
//! in the tests marked ignored, which need it beside the repository), the metrics file with a
//! Prometheus exposition-format parser, and the man pages' EXIT STATUS.

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

// ---- JUnit: the Jenkins xunit schema's rules, and the schema itself where it is ----

/// One element of the Jenkins xunit schema (jenkins-junit.xsd): its attributes (all typed
/// `xs:string`), the children its `xs:sequence` allows in order with how often each may occur,
/// and whether it holds text. The schema declares no `anyAttribute` and no `any`, so nothing
/// else is allowed.
struct JunitElement {
    name: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
    /// (child, minOccurs, maxOccurs; `None` for unbounded), in sequence order.
    children: &'static [(&'static str, usize, Option<usize>)],
    /// `mixed="true"` or a simple `xs:string` type; otherwise only whitespace between children.
    text: bool,
}

/// The schema's elements, as jenkins-junit.xsd declares them.
const JUNIT: &[JunitElement] = &[
    JunitElement {
        name: "testsuites",
        required: &[],
        optional: &["name", "time", "tests", "failures", "disabled", "errors"],
        children: &[("testsuite", 0, None)],
        text: false,
    },
    JunitElement {
        name: "testsuite",
        required: &["name", "tests"],
        optional: &["failures", "errors", "time", "disabled", "skipped", "timestamp", "hostname", "id", "package"],
        children: &[
            ("properties", 0, Some(1)),
            ("testcase", 0, None),
            ("system-out", 0, Some(1)),
            ("system-err", 0, Some(1)),
        ],
        text: false,
    },
    JunitElement { name: "properties", required: &[], optional: &[], children: &[("property", 1, None)], text: false },
    JunitElement { name: "property", required: &["name", "value"], optional: &[], children: &[], text: false },
    JunitElement {
        name: "testcase",
        required: &["name"],
        optional: &["assertions", "time", "classname", "status"],
        children: &[
            ("skipped", 0, Some(1)),
            ("error", 0, None),
            ("failure", 0, None),
            ("system-out", 0, None),
            ("system-err", 0, None),
        ],
        text: false,
    },
    JunitElement { name: "failure", required: &[], optional: &["type", "message"], children: &[], text: true },
    JunitElement { name: "error", required: &[], optional: &["type", "message"], children: &[], text: true },
    JunitElement { name: "skipped", required: &[], optional: &[], children: &[], text: true },
    JunitElement { name: "system-out", required: &[], optional: &[], children: &[], text: true },
    JunitElement { name: "system-err", required: &[], optional: &[], children: &[], text: true },
];

/// An element as read from a JUnit file.
struct XmlNode {
    name: String,
    attributes: Vec<String>,
    children: Vec<XmlNode>,
    /// Whether it holds text other than whitespace (entity references count as text).
    text: bool,
}

/// Reads a whole XML document into its root element, or says why it is not well formed.
fn parse_xml(doc: &str) -> Result<XmlNode, String> {
    use quick_xml::events::{BytesStart, Event};
    let open = |e: &BytesStart| -> Result<XmlNode, String> {
        let mut attributes = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| e.to_string())?;
            attributes.push(String::from_utf8_lossy(a.key.as_ref()).into_owned());
        }
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        Ok(XmlNode { name, attributes, children: Vec::new(), text: false })
    };
    let mut reader = quick_xml::Reader::from_str(doc);
    let mut stack: Vec<XmlNode> = Vec::new();
    let mut root = None;
    loop {
        let event = reader.read_event().map_err(|e| format!("not well-formed XML: {e}"))?;
        let done = match event {
            Event::Start(e) => {
                stack.push(open(&e)?);
                None
            }
            Event::Empty(e) => Some(open(&e)?),
            Event::End(_) => stack.pop(),
            Event::Text(t) => {
                if !t.iter().all(u8::is_ascii_whitespace) {
                    stack.last_mut().ok_or("text outside the root element")?.text = true;
                }
                None
            }
            Event::CData(_) | Event::GeneralRef(_) => {
                stack.last_mut().ok_or("text outside the root element")?.text = true;
                None
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => None,
        };
        if let Some(node) = done {
            match stack.last_mut() {
                Some(parent) => parent.children.push(node),
                None if root.is_none() => root = Some(node),
                None => return Err("more than one root element".into()),
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("<{}> is never closed", open.name));
    }
    root.ok_or_else(|| "no root element".into())
}

/// What a JUnit document breaks of the Jenkins xunit schema's rules ([`JUNIT`]), one line per
/// violation: an unknown element or attribute, a required attribute missing, children out of
/// the schema's order or occurring too often or too rarely, text where only elements may be. The
/// root must be `<testsuites>` or `<testsuite>`, the two Jenkins reads. This check needs no file
/// beside the repository; the ignored `*_jenkins_schema` tests confirm it agrees with
/// `xmllint --schema` on the real schema.
fn junit_violations(doc: &str) -> Vec<String> {
    let root = match parse_xml(doc) {
        Ok(root) => root,
        Err(e) => return vec![e],
    };
    let mut out = Vec::new();
    if root.name != "testsuites" && root.name != "testsuite" {
        out.push(format!("the root is <{}>, not <testsuites> or <testsuite>", root.name));
    }
    check_element(&root, &mut out);
    out
}

fn check_element(node: &XmlNode, out: &mut Vec<String>) {
    let Some(rule) = JUNIT.iter().find(|r| r.name == node.name) else {
        out.push(format!("<{}> is not an element of the schema", node.name));
        return;
    };
    let name = &node.name;
    for a in &node.attributes {
        if !rule.required.contains(&a.as_str()) && !rule.optional.contains(&a.as_str()) {
            out.push(format!("<{name}> has attribute {a:?}, which the schema does not declare"));
        }
    }
    for a in rule.required {
        if !node.attributes.iter().any(|n| n == a) {
            out.push(format!("<{name}> lacks the required attribute {a:?}"));
        }
    }
    if node.text && !rule.text {
        out.push(format!("<{name}> holds text; the schema allows only elements in it"));
    }
    // The sequence: each child must match the current particle or a later one, skipping only
    // particles whose minOccurs is met.
    let (mut at, mut seen) = (0, 0);
    for child in &node.children {
        loop {
            let Some(&(want, min, max)) = rule.children.get(at) else {
                out.push(format!("<{}> is not allowed in <{name}> there", child.name));
                break;
            };
            if child.name == want && max.is_none_or(|m| seen < m) {
                seen += 1;
                break;
            }
            if seen < min {
                out.push(format!("<{name}> needs {min} <{want}> before <{}>", child.name));
            }
            (at, seen) = (at + 1, 0);
        }
        check_element(child, out);
    }
    for &(want, min, _) in rule.children.iter().skip(at) {
        if seen < min {
            out.push(format!("<{name}> needs at least {min} <{want}>"));
        }
        seen = 0;
    }
}

/// Checks a JUnit file against the Jenkins schema's rules, failing with every violation listed.
fn check_junit(path: &Path) {
    let doc = std::fs::read_to_string(path).unwrap();
    let errors = junit_violations(&doc);
    assert!(errors.is_empty(), "{} breaks the Jenkins JUnit schema:\n{}\n{doc}", path.display(), errors.join("\n"));
}

/// The Jenkins xunit JUnit schema. Its owner asks that it not be copied into the project: it is
/// read from the `shared/data/junit/` folder beside the repository (or beside a folder above
/// it, for a git worktree), which CI has. Only the ignored tests need it; asked to run without
/// it, they fail saying so.
fn jenkins_xsd() -> PathBuf {
    root().ancestors().map(|a| a.join("shared/data/junit/jenkins-junit.xsd")).find(|p| p.is_file()).unwrap_or_else(
        || {
            panic!(
                "shared/data/junit/jenkins-junit.xsd is not beside the repository ({}) nor beside a folder above it. \
                 This test validates against the Jenkins schema, which may not be copied into the repository; \
                 run it where that folder is (CI has it), or leave out --ignored",
                root().display()
            )
        },
    )
}

/// What `xmllint --schema jenkins-junit.xsd` says of a JUnit file: `Ok` when valid, else its
/// complaint.
fn xmllint_junit(path: &Path) -> Result<(), String> {
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(jenkins_xsd())
        .arg(path)
        .output()
        .expect("xmllint is not installed: apt-get install libxml2-utils (or run scripts/setup.sh test)");
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

/// Checks a JUnit file with `xmllint --schema` against the Jenkins schema itself, and that the
/// structural check agrees.
fn validate_junit(path: &Path) {
    let doc = std::fs::read_to_string(path).unwrap();
    if let Err(why) = xmllint_junit(path) {
        panic!("{} is not valid JUnit for Jenkins:\n{why}\n{doc}", path.display());
    }
    assert_eq!(junit_violations(&doc), Vec::<String>::new(), "the structural check rejects what xmllint accepts");
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
/// schema/report.v1.json, every JUnit file against the Jenkins schema's rules, the metrics file parses
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
    check_junit(&env.path("plan.xml"));
    let junit = std::fs::read_to_string(env.path("plan.xml")).unwrap();
    assert_eq!(junit.matches("<failure type=\"missing\" message=\"missing in the target\"").count(), 3, "{junit}");

    let out = env
        .mirror(&["sync", "--report-json", "sync.json", "--report-junit", "sync.xml", "--metrics-file", "sync.prom"])
        .await;
    assert_eq!(out.status.code(), Some(0));
    let sync = env.json("sync.json");
    validate("report.v1.json", &sync);
    check_junit(&env.path("sync.xml"));
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
    check_junit(&env.path("verify.xml"));

    // A source that is gone: the image fails, the report and the JUnit file say why.
    let missing = format!("{SRC}/oss/gone:1");
    let env = Env::new(&src, &dst, &[missing, refs[0].clone()]);
    let out = env.mirror(&["sync", "--report-json", "failed.json", "--report-junit", "failed.xml"]).await;
    assert_eq!(out.status.code(), Some(3));
    let failed = env.json("failed.json");
    validate("report.v1.json", &failed);
    assert_eq!(image(&failed, "gone")["outcome"], "failed");
    assert_eq!(image(&failed, "app-a")["bytes"].as_u64(), Some(0), "already there: nothing moved");
    check_junit(&env.path("failed.xml"));
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
        signature: None,
    }
}

/// A run that failed before it had images, with markup in its error.
fn failed_report() -> Report {
    Report::failed_run("verify", SystemTime::now(), "cannot read mirror.yaml: <gone> & \"lost\"".into())
}

/// A sync stopped by a signal: one image copied, one skipped, one interrupted, one failed.
fn stopped_report() -> Report {
    Report::new(
        "sync",
        SystemTime::now(),
        10,
        vec![
            result("oss/a:1", Outcome::Copied, None),
            result("oss/b:1", Outcome::Skipped, Some("not attempted: --fail-fast stopped the run after a failure")),
            result("oss/c:1", Outcome::Interrupted, Some("not completed: the run was stopped by a signal")),
            result("oss/d:1", Outcome::Failed, None),
        ],
    )
}

/// Checks the reports no registry run here produces on demand: a run that failed before it had
/// images (status `failed`, one failed JUnit case naming the error) and a run stopped by a
/// signal with skipped and interrupted images (`<skipped>` as the Jenkins schema types it).
#[test]
fn failed_and_interrupted_runs_follow_the_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let failed = failed_report();
    let doc: Value = serde_json::from_slice(&failed.to_json()).unwrap();
    validate("report.v1.json", &doc);
    assert_eq!(
        (doc["status"].as_str(), doc["error"].as_str()),
        (Some("failed"), Some("cannot read mirror.yaml: <gone> & \"lost\""))
    );
    let path = dir.path().join("failed.xml");
    std::fs::write(&path, failed.to_junit()).unwrap();
    check_junit(&path);
    let junit = std::fs::read_to_string(&path).unwrap();
    assert!(
        junit.contains("name=\"mirror verify\"") && junit.contains("message=\"cannot read mirror.yaml: &lt;gone&gt;"),
        "{junit}"
    );

    let stopped = stopped_report();
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
    check_junit(&path);
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

/// A `<testsuites>` document with one suite holding `inner`.
fn suite(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites><testsuite name=\"s\" tests=\"1\">{inner}</testsuite></testsuites>\n"
    )
}

/// JUnit documents the Jenkins schema accepts: every element it declares, in order, with text,
/// entity references and CDATA where text may be; and a bare `<testsuite>` root.
fn good_junit() -> Vec<String> {
    vec![
        suite(
            "<properties><property name=\"k\" value=\"v\"/></properties>\
             <testcase name=\"a\" classname=\"c\" time=\"1\" status=\"x\" assertions=\"2\">\
             <skipped>why &amp; how</skipped><error type=\"t\">e</error><failure message=\"m\"><![CDATA[<f>]]></failure>\
             <system-out>o</system-out><system-out/><system-err>e</system-err></testcase>\
             <testcase name=\"b\"/><system-out>o</system-out><system-err/>",
        ),
        "<testsuite name=\"s\" tests=\"0\" failures=\"0\" errors=\"0\" skipped=\"0\" disabled=\"0\" time=\"0\" \
         timestamp=\"t\" hostname=\"h\" id=\"1\" package=\"p\"/>"
            .into(),
    ]
}

/// JUnit documents the Jenkins schema rejects, with what is wrong in each.
fn bad_junit() -> Vec<(&'static str, String)> {
    vec![
        ("a suite without a name", "<testsuites><testsuite tests=\"1\"/></testsuites>".into()),
        ("a suite without tests", "<testsuites><testsuite name=\"s\"/></testsuites>".into()),
        ("a case without a name", suite("<testcase classname=\"c\"/>")),
        ("<skipped> after <failure>", suite("<testcase name=\"a\"><failure/><skipped/></testcase>")),
        ("two <skipped>", suite("<testcase name=\"a\"><skipped/><skipped/></testcase>")),
        ("an attribute on <skipped>", suite("<testcase name=\"a\"><skipped message=\"why\"/></testcase>")),
        ("an unknown attribute", suite("<testcase name=\"a\" result=\"ok\"/>")),
        ("an element in <failure>", suite("<testcase name=\"a\"><failure><detail/></failure></testcase>")),
        ("text in a suite", suite("stray text<testcase name=\"a\"/>")),
        ("empty <properties>", suite("<properties/>")),
        (
            "<properties> after a case",
            suite("<testcase name=\"a\"/><properties><property name=\"k\" value=\"v\"/></properties>"),
        ),
        ("two <system-out> in a suite", suite("<system-out/><system-out/>")),
        ("a property without a value", suite("<properties><property name=\"k\"/></properties>")),
        ("an unknown element", suite("<testcase name=\"a\"><flaky/></testcase>")),
        ("an unknown root", "<testrun name=\"r\"/>".into()),
        ("markup that is not XML", suite("<testcase name=\"a\"></failure>")),
    ]
}

/// Checks that the structural JUnit check can fail: it accepts the documents the Jenkins schema
/// accepts and rejects each one it rejects, naming the fault (the ignored
/// `bad_and_good_junit_agree_with_the_jenkins_schema` has `xmllint` confirm both lists).
#[test]
fn the_junit_check_rejects_what_the_jenkins_schema_rejects() {
    for doc in good_junit() {
        assert_eq!(junit_violations(&doc), Vec::<String>::new(), "{doc}");
    }
    for (what, doc) in bad_junit() {
        assert!(!junit_violations(&doc).is_empty(), "{what} accepted: {doc}");
    }
    let errors = junit_violations(&suite("<testcase name=\"a\" result=\"ok\"><failure/><skipped/></testcase>"));
    assert_eq!(
        errors,
        [
            "<testcase> has attribute \"result\", which the schema does not declare",
            "<skipped> is not allowed in <testcase> there"
        ]
    );
}

/// Checks, with `xmllint --schema` on the Jenkins schema itself, that the structural check's
/// samples are what it says (the good ones valid, each bad one invalid), and that the JUnit
/// files of a failed run and of a stopped run are valid. Needs the schema beside the repository.
#[test]
#[ignore = "needs shared/data/junit/jenkins-junit.xsd beside the repository (CI has it); run with --ignored"]
fn bad_and_good_junit_agree_with_the_jenkins_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.xml");
    for doc in good_junit()
        .into_iter()
        .chain([failed_report(), stopped_report()].map(|r| String::from_utf8(r.to_junit()).unwrap()))
    {
        std::fs::write(&path, &doc).unwrap();
        validate_junit(&path);
    }
    for (what, doc) in bad_junit() {
        std::fs::write(&path, &doc).unwrap();
        assert!(xmllint_junit(&path).is_err(), "xmllint accepts {what}, which the structural check rejects: {doc}");
    }
}

/// Checks the JUnit files of real `plan`, `sync` and `verify` runs (one image missing, then
/// copied; one the source lacks: not examinable, then failed) with `xmllint --schema` against the Jenkins schema itself. Needs the schema beside the
/// repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs shared/data/junit/jenkins-junit.xsd beside the repository (CI has it); run with --ignored"]
async fn junit_files_of_real_runs_follow_the_jenkins_schema() {
    jenkins_xsd(); // without the schema, fail at once, before any registry starts
    let (src, dst) = (TestRegistry::anonymous().await, TestRegistry::anonymous().await);
    let image = Seeder::new(&src.url(), 42).push_random_image("oss/app", "1", Format::Oci, &[1000, 2000]).await;
    let env = Env::new(&src, &dst, &[image.reference(SRC), format!("{SRC}/oss/gone:1")]);
    for (command, code) in [("plan", 1), ("sync", 3), ("verify", 1)] {
        let file = format!("{command}.xml");
        let out = env.mirror(&[command, "--report-junit", &file]).await;
        assert_eq!(out.status.code(), Some(code), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        validate_junit(&env.path(&file));
    }
}

/// Checks the prune documents: a report with every outcome kind and a failed run against
/// schema/prune.v1.json, their JUnit against the Jenkins schema's rules (a failed deletion is a
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
    check_junit(&path);
    let junit = std::fs::read_to_string(&path).unwrap();
    assert!(
        junit.contains("failures=\"1\"") && junit.contains("skipped=\"1\"") && junit.contains("&lt;oops&gt;"),
        "{junit}"
    );

    let failed = PruneReport::failed_run(false, SystemTime::now(), None, "no config file: pass -c mirror.yaml".into());
    validate("prune.v1.json", &serde_json::from_slice(&failed.to_json()).unwrap());
    std::fs::write(&path, failed.to_junit()).unwrap();
    check_junit(&path);

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
