//! The command line's edges, through the built binary: `--log-format json` carries every event,
//! each failed image and the fatal error as one JSON object per line; report files are written
//! also when the command fails; a missing config file's OS error is said once; no colour codes
//! when stderr is not a terminal; a closed stdout (`mirror plan | head`) ends quietly; and
//! `rewrite` says which inputs give it digests.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::{Format, Seeder, TestRegistry};

/// The binary, hermetic: no MIRROR_CONFIG, an empty DOCKER_CONFIG, info logs.
fn mirror(cwd: &Path) -> Command {
    let docker_config = cwd.join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_mirror"));
    c.current_dir(cwd)
        .env_remove("MIRROR_CONFIG")
        .env_remove("NO_COLOR")
        .env("DOCKER_CONFIG", docker_config)
        .env("MIRROR_LOG", "info")
        .stdin(Stdio::null());
    c
}

fn run(cwd: &Path, args: &[&str]) -> Output {
    mirror(cwd).args(args).output().expect("run mirror")
}

use support::output_text as text;

/// Every stderr line as JSON; panics naming the first line that is not.
fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}\n{}", text(o))))
        .collect()
}

fn message(e: &Value) -> &str {
    e["fields"]["message"].as_str().unwrap_or("")
}

/// Checks issue #13's JSON logs on a sync where one image exists and one does not: every stderr
/// line parses as JSON; the plan's finding is one event and says what it found (not "need
/// work"); the image that failed is one ERROR event naming the image, its source and both
/// registries, the kind of failure (`outcome`, `planned`) and the message; and the run exits 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_plan_and_each_failed_image() {
    let src = TestRegistry::anonymous().await;
    let dst = TestRegistry::anonymous().await;
    Seeder::new(&src.url(), 5).push_random_image("app", "1", Format::Oci, &[1024]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "target: {dst}\nmappings:\n  - {{source: '*', target: mirror, mode: copy}}\nimages:\n  - {src}/app:1\n  - {src}/gone:1\nregistries:\n  - {{host: {src}, endpoint: '{src_url}'}}\n  - {{host: {dst}, endpoint: '{dst_url}'}}\ntransfer: {{retries: 1}}\n",
        src = src.host(),
        dst = dst.host(),
        src_url = src.url(),
        dst_url = dst.url()
    );
    std::fs::write(dir.path().join("mirror.yaml"), cfg).unwrap();

    let out = run(dir.path(), &["--log-format", "json", "sync", "-c", "mirror.yaml"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let events = json_lines(&out);
    let plan: Vec<&Value> = events.iter().filter(|e| message(e).starts_with("plan: 2 images")).collect();
    assert_eq!(plan.len(), 1, "{}", text(&out));
    assert!(message(plan[0]).contains("1 present") || message(plan[0]).contains("1 missing"), "{}", message(plan[0]));
    assert!(!events.iter().any(|e| message(e).contains("need work")), "{}", text(&out));
    let gone = format!("{}/mirror/gone:1", dst.host());
    let failed: Vec<&Value> = events.iter().filter(|e| e["fields"]["image"] == gone.as_str()).collect();
    assert_eq!(failed.len(), 1, "one event per failed image: {}", text(&out));
    let f = &failed[0]["fields"];
    assert_eq!(failed[0]["level"], "ERROR");
    assert_eq!(f["source"], format!("{}/gone:1", src.host()));
    assert_eq!(f["source_registry"], src.host());
    assert_eq!(f["target_registry"], dst.host());
    assert_eq!((f["outcome"].as_str(), f["planned"].as_str()), (Some("failed"), Some("error")));
    // The source has no such tag: an HTTP error status, named as a kind a log pipeline can count.
    assert_eq!(f["error_kind"], "status", "{}", failed[0]);
    assert!(!message(failed[0]).is_empty(), "{}", failed[0]);
}

/// Checks a run that fails before any image: with `--log-format json` the fatal error is a JSON
/// event (not a plain `error:` line) saying the OS error once; in text mode it is one `error:`
/// line, again with the OS error once and no colour codes (stderr is a pipe); and the report
/// files asked for are written anyway, naming the error (JSON) as a failed test case (JUnit).
#[test]
fn a_missing_config_file_is_one_error_and_still_gets_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--log-format", "json", "plan", "-c", "nope.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let events = json_lines(&out);
    let fatal = events.last().expect("a fatal event");
    assert_eq!(fatal["level"], "ERROR");
    assert_eq!(fatal["fields"]["fatal"], true);
    assert!(message(fatal).contains("nope.yaml"), "{fatal}");
    assert_eq!(message(fatal).matches("os error 2").count(), 1, "{fatal}");

    let out = run(dir.path(), &["sync", "-c", "nope.yaml", "--report-json", "r.json", "--report-junit", "j.xml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: ") && err.lines().count() == 1, "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes on a pipe: {err:?}");
    let report: Value = serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    assert!(report["error"].as_str().unwrap().contains("nope.yaml"), "{report}");
    let junit = std::fs::read_to_string(dir.path().join("j.xml")).unwrap();
    assert!(junit.contains("<failure") && junit.contains("nope.yaml"), "{junit}");
}

/// Checks that `resolve` warnings go through the log: in JSON mode each is a WARN event.
#[test]
fn resolve_warnings_are_log_events() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        "target: myacr.azurecr.io\naks: {kubernetesVersion: '1.35', extensions: [dapr]}\n",
    )
    .unwrap();
    let out = run(dir.path(), &["--log-format", "json", "resolve", "-c", "m.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let events = json_lines(&out);
    assert!(events.iter().any(|e| e["level"] == "WARN" && message(e).contains("dapr")), "{}", text(&out));
}

/// Runs `mirror ARGS` with its stdout a pipe whose reader is already gone.
fn with_closed_stdout(cwd: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = mirror(cwd).args(args).stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
    child.wait_with_output().unwrap()
}

/// Checks `mirror resolve | head` and `mirror plan | head` with the reader gone before the
/// first write: no panic, nothing on stderr about stdout, and the command's own exit code
/// (0 for resolve; 2, drift, for the plan), since the run itself went fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_quietly() {
    let src = TestRegistry::anonymous().await;
    let dst = TestRegistry::anonymous().await;
    Seeder::new(&src.url(), 6).push_random_image("app", "1", Format::Oci, &[512]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "target: {dst}\nmappings:\n  - {{source: '*', target: mirror, mode: copy}}\nimages:\n  - {src}/app:1\nregistries:\n  - {{host: {src}, endpoint: '{src_url}'}}\n  - {{host: {dst}, endpoint: '{dst_url}'}}\n",
        src = src.host(),
        dst = dst.host(),
        src_url = src.url(),
        dst_url = dst.url()
    );
    std::fs::write(dir.path().join("mirror.yaml"), cfg).unwrap();
    for (args, code) in [(&["resolve", "-c", "mirror.yaml"][..], 0), (&["plan", "-c", "mirror.yaml"][..], 2)] {
        let out = with_closed_stdout(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
    }
}

/// Checks issue #13's `rewrite --digests` claim made true by saying what it takes: without
/// digests for a tag reference, the error names the image and the inputs that give digests (a
/// sync or verify report, or a JSON map) — not `resolve`, which has none for tags.
#[test]
fn rewrite_says_which_inputs_give_digests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("app.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - {name: web, image: 'nginx:1.27'}\n",
    )
    .unwrap();
    std::fs::write(d.join("m.yaml"), "target: myacr.azurecr.io\nworkloads: {manifests: [app.yaml]}\n").unwrap();
    let out = run(d, &["rewrite", "-c", "m.yaml", "--out", "out"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nginx:1.27") && err.contains("--report-json"), "{err}");
    assert!(!err.contains("resolve"), "{err}");
}
