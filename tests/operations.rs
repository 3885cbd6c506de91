//! The operations files: every example config in the repository parses and resolves; the
//! Kubernetes manifests and pipelines say what docs/operations.md says they do; the Dockerfile
//! builds the locked release binary; and `--help`, the completions and the man page are complete
//! and generated from one definition.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use acr_mirror::config::{AuthConfig, Config};
use clap::CommandFactory as _;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every YAML document of a file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn doc_of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

/// The YAML files of the repository outside build output, test inputs and tool installs.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !["target", ".git", "node_modules", "data", "manifests-lists"].contains(&name.as_str()) {
                yaml_files(&path, out);
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(path);
        }
    }
}

/// Runs the binary from the repository root, with an empty Docker config so that no developer's
/// credentials or helpers are ever read.
fn mirror(args: &[&str]) -> Output {
    let docker_config = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_mirror"))
        .args(args)
        .current_dir(root())
        .env_remove("MIRROR_CONFIG")
        .env("DOCKER_CONFIG", docker_config.path())
        .stdin(Stdio::null())
        .output()
        .expect("run mirror")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

// Checks every mirror config the repository ships: files named mirror*.yaml and the `mirror.yaml`
// key of every ConfigMap under deploy/. Each must pass `Config::parse` (unknown keys are errors)
// and `imageset::resolve` (references, mappings, AKS lists, workload paths). Also checks that every
// other YAML file outside tests/data parses as YAML, and that the walk found the configs it must.
#[test]
fn every_example_config_parses_and_resolves() {
    let mut files = Vec::new();
    yaml_files(&root(), &mut files);
    let mut checked: Vec<String> = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(root()).unwrap().to_string_lossy().to_string();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let mut configs: Vec<(String, String, PathBuf)> = Vec::new();
        if name.starts_with("mirror") {
            configs.push((rel.clone(), text.clone(), path.parent().unwrap().to_path_buf()));
        }
        let docs =
            serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"));
        for d in &docs {
            if d["kind"] == "ConfigMap"
                && let Some(cfg) = d["data"]["mirror.yaml"].as_str()
            {
                let what = format!("{rel} ConfigMap {} mirror.yaml", d["metadata"]["name"].as_str().unwrap_or("?"));
                configs.push((what, cfg.to_string(), root()));
            }
        }
        for (what, cfg_text, dir) in configs {
            let cfg = Config::parse(&cfg_text, Path::new(&what)).unwrap_or_else(|e| panic!("{e}"));
            let resolved = acr_mirror::imageset::resolve(&cfg, &dir).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(!resolved.images.is_empty(), "{what}: resolves to no images");
            checked.push(what);
        }
    }
    checked.sort();
    let must = [
        "deploy/kubernetes/cronjob.yaml ConfigMap acr-mirror-config mirror.yaml",
        "deploy/kubernetes/indexed-job.yaml ConfigMap acr-mirror-sharded-config mirror.yaml",
        "examples/pipelines/mirror.yaml",
        "mirror.example.yaml",
    ];
    for m in must {
        assert!(checked.iter().any(|c| c == m), "{m} not checked; checked: {checked:#?}");
    }
}

/// The mirror config inside a manifest's ConfigMap.
fn configmap_config(docs: &[Value]) -> Config {
    let text = doc_of_kind(docs, "ConfigMap")["data"]["mirror.yaml"].as_str().unwrap().to_string();
    Config::parse(&text, Path::new("configmap")).unwrap()
}

// Checks the CronJob is what the issue asks for: concurrencyPolicy Forbid; workload identity
// (ServiceAccount annotation, pod label, the pod runs as that account, the config signs in with
// workload-identity); the config from the ConfigMap it mounts; report and lock in Blob Storage;
// --metrics-file on a writable volume; memory requests and limits; the non-root user of the image;
// the metrics pushed by a native sidecar that reads that file.
#[test]
fn the_cronjob_runs_sync_with_workload_identity_lock_report_and_metrics() {
    let docs = yaml_docs("deploy/kubernetes/cronjob.yaml");
    let sa = doc_of_kind(&docs, "ServiceAccount");
    assert!(sa["metadata"]["annotations"]["azure.workload.identity/client-id"].is_string());
    let cj = doc_of_kind(&docs, "CronJob");
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["azure.workload.identity/use"], "true");
    assert_eq!(pod["spec"]["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 65532);
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["name"], "mirror");
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[0], "sync");
    let metrics = args.iter().find_map(|a| a.strip_prefix("--metrics-file=")).expect("--metrics-file");
    let config = args.iter().find_map(|a| a.strip_prefix("--config=")).expect("--config");
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount_of = |file: &str| {
        mounts
            .iter()
            .find(|m| file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
            .cloned()
            .unwrap_or_else(|| panic!("{file} is on no volume"))
    };
    assert_ne!(mount_of(metrics)["readOnly"], true, "the metrics file must be writable");
    let config_volume = mount_of(config)["name"].as_str().unwrap().to_string();
    let volume = pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == config_volume).unwrap();
    assert_eq!(volume["configMap"]["name"], doc_of_kind(&docs, "ConfigMap")["metadata"]["name"]);
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());
    // The push-metrics sidecar reads the file mirror writes, and is a native sidecar: the kubelet
    // stops it (SIGTERM, its cue to push) only after mirror has ended.
    let pusher = &pod["spec"]["initContainers"][0];
    assert_eq!(pusher["name"], "push-metrics");
    assert_eq!(pusher["restartPolicy"], "Always", "push-metrics must be a native sidecar");
    let env = pusher["env"].as_array().unwrap();
    let file = env.iter().find(|e| e["name"] == "METRICS_FILE").expect("METRICS_FILE");
    assert_eq!(file["value"], metrics, "push-metrics does not read {metrics}");
    assert!(pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap() >= 30);

    let cfg = configmap_config(&docs);
    let auth = cfg.registries[0].auth.as_ref().unwrap().azure_sign_in().expect("azure auth");
    assert_eq!(auth.credential, acr_mirror::azure::CredentialKind::WorkloadIdentity);
    assert!(cfg.report.as_ref().unwrap().azure_blob.contains(".blob.core.windows.net/"));
    assert!(cfg.lock.as_ref().unwrap().azure_blob.ends_with(".lock"));
}

/// A one-request HTTP server on loopback standing in for the Pushgateway: returns its URL and a
/// receiver for the request line and body it got.
fn one_request_server() -> (String, std::sync::mpsc::Receiver<(String, String)>) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let (mut request, mut length) = (String::new(), 0usize);
        reader.read_line(&mut request).unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (&conn).write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
        tx.send((request.trim().to_string(), String::from_utf8(body).unwrap())).unwrap();
    });
    (url, rx)
}

/// Runs the CronJob's push-metrics script with `sh` as the kubelet would: starts it, waits for it
/// to say it is waiting, sends SIGTERM (what the kubelet sends a sidecar once `mirror` has ended),
/// and returns what the Pushgateway stand-in received and the script's exit status and stderr.
fn run_push_metrics(metrics_file: &Path) -> ((String, String), std::process::ExitStatus, String) {
    use std::io::{BufRead as _, BufReader, Read as _};
    let docs = yaml_docs("deploy/kubernetes/cronjob.yaml");
    let pusher = &doc_of_kind(&docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"][0];
    let command: Vec<&str> = pusher["command"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(command, ["/bin/sh", "-c"]);
    let (url, received) = one_request_server();
    let mut child = Command::new("sh")
        .args(["-c", pusher["args"][0].as_str().unwrap()])
        .env("PUSHGATEWAY_URL", &url)
        .env("METRICS_FILE", metrics_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "waiting for mirror to end");
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let got = received.recv_timeout(std::time::Duration::from_secs(30)).expect("nothing was pushed");
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (got, status, stderr)
}

// Checks that the CronJob's push-metrics sidecar ends and reports in every case, by running its
// script: when `mirror` wrote its metrics file, that file is POSTed to the Pushgateway unchanged;
// when `mirror` was killed before writing it (OOM, SIGKILL), `acr_mirror_up 0` with the run time
// is POSTed instead, so an alert fires; and either way the script exits 0 after the push instead
// of waiting for a file that will never come. Would catch a return of the endless `until [ -s ]`
// loop, or a sidecar that stays silent when mirror dies.
#[test]
fn the_push_metrics_sidecar_pushes_the_file_or_a_failure_once_mirror_has_ended() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acr-mirror.prom");
    let written = "# TYPE acr_mirror_up gauge\nacr_mirror_up{command=\"sync\",shard=\"0/1\"} 1\n";
    std::fs::write(&file, written).unwrap();
    let ((request, body), status, stderr) = run_push_metrics(&file);
    assert_eq!(request, "POST /metrics/job/acr-mirror/instance/nightly HTTP/1.1");
    assert_eq!(body, written);
    assert!(status.success(), "{status}: {stderr}");

    let missing = dir.path().join("never-written.prom");
    let ((request, body), status, stderr) = run_push_metrics(&missing);
    assert_eq!(request, "POST /metrics/job/acr-mirror/instance/nightly HTTP/1.1");
    assert!(body.contains("\nacr_mirror_up{command=\"sync\",shard=\"0/1\"} 0\n"), "{body}");
    let time = body
        .lines()
        .find_map(|l| l.strip_prefix("acr_mirror_last_run_timestamp_seconds{command=\"sync\",shard=\"0/1\"} "))
        .unwrap_or_else(|| panic!("no run time in {body}"));
    assert!(time.parse::<u64>().unwrap() > 1_700_000_000, "{time}");
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("without writing"), "the log must say why: {stderr}");
}

// Checks the Indexed Job splits into as many shards as it has completions and parallel pods, that
// each pod's --shard comes from its completion index, and that its config takes no run lock
// (shards of one run would lock each other out).
#[test]
fn the_indexed_job_runs_one_shard_per_index() {
    let docs = yaml_docs("deploy/kubernetes/indexed-job.yaml");
    let job = doc_of_kind(&docs, "Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    let n = job["spec"]["completions"].as_u64().unwrap();
    assert_eq!(job["spec"]["parallelism"].as_u64(), Some(n));
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[0], "sync");
    let shard = args.iter().find_map(|a| a.strip_prefix("--shard=")).expect("--shard");
    let (index, count) = shard.split_once('/').unwrap();
    assert_eq!(count.parse::<u64>().unwrap(), n, "--shard count differs from completions");
    let var = index.strip_prefix("$(").and_then(|v| v.strip_suffix(')')).expect("index from an env var");
    let env = c["env"].as_array().unwrap().iter().find(|e| e["name"] == var).expect("the index variable is declared");
    assert_eq!(
        env["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    assert_eq!(job["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"], "true");
    let cfg = configmap_config(&docs);
    assert!(cfg.lock.is_none(), "shards of one run must not share a run lock");
    assert!(matches!(cfg.registries[0].auth, Some(AuthConfig::Azure { .. })));
}

/// The shell scripts of a pipeline's steps, in order, with the stage (or job) each is in.
fn step_scripts(steps: &[(String, &Value)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (stage, s) in steps {
        for key in ["run", "inlineScript"] {
            if let Some(text) = s[key].as_str().or_else(|| s["inputs"][key].as_str()) {
                out.push((stage.clone(), text.to_string()));
            }
        }
    }
    out
}

/// Where `what` is first run: (step index, offset in that step's script), and the step's stage.
fn find_step(scripts: &[(String, String)], what: &str) -> ((usize, usize), String) {
    scripts
        .iter()
        .enumerate()
        .find_map(|(i, (stage, text))| text.find(what).map(|at| ((i, at), stage.clone())))
        .unwrap_or_else(|| panic!("no step runs `{what}`"))
}

/// Checks the documented flow of one example pipeline, given its steps in order: resolve → sync
/// (with a JSON report) → verify, whose exit code fails the stage → rewrite with the sync report's
/// digests → `az aks create` of a network isolated cluster → apply of the rewritten manifests only;
/// each stage after the one before it (`after` gives a stage's predecessor).
fn check_flow(name: &str, scripts: &[(String, String)], after: impl Fn(&str) -> String, config: &str) {
    let (resolve, _) = find_step(scripts, &format!("mirror resolve -c {config}"));
    let (sync, sync_stage) = find_step(scripts, &format!("mirror sync -c {config} "));
    let (verify, verify_stage) = find_step(scripts, &format!("mirror verify -c {config} --report-junit"));
    let (rewrite, rewrite_stage) = find_step(scripts, &format!("mirror rewrite -c {config} --digests"));
    let (create, create_stage) = find_step(scripts, "az aks create");
    let (apply, apply_stage) = find_step(scripts, "kubectl apply");
    assert!(resolve < sync && sync < verify && verify < rewrite && rewrite < create && create < apply, "{name}: order");
    assert!(scripts[sync.0].1.contains("--report-json"), "{name}: sync must write the report rewrite reads");
    assert!(scripts[verify.0].1.contains("exit $rc"), "{name}: verify's exit code must fail its stage");
    assert_eq!(rewrite_stage, verify_stage, "{name}: rewrite runs once verify passed");
    assert_eq!(after(&verify_stage), sync_stage, "{name}: verify after sync");
    assert_eq!(after(&create_stage), verify_stage, "{name}: the cluster is created after verify");
    assert_eq!(after(&apply_stage), create_stage, "{name}: deploy after the cluster");
    let create = &scripts[create.0].1;
    assert!(create.contains("--bootstrap-artifact-source Cache") && create.contains("--outbound-type none"));
    // What is applied is the rewrite's output, never the original manifests.
    let apply = &scripts[apply.0].1;
    assert!(
        !apply.contains("tests/data") && !apply.contains("ingress-nginx"),
        "{name}: applies unrewritten files: {apply}"
    );
    let all: String = scripts.iter().map(|(_, t)| t.as_str()).collect();
    assert!(!all.contains("tests/data/workloads"), "{name}: the original manifests are used somewhere");
}

// Checks both example pipelines do the documented flow end to end: resolve → sync → verify (the
// gate, before `az aks create`) → rewrite → apply of the rewritten manifests, with JUnit results
// published and the sync report handed to rewrite; and that the config they name exists and the
// GitHub example cannot run in this repository.
#[test]
fn the_pipelines_resolve_sync_verify_create_and_apply_the_rewritten_manifests() {
    let ado = &yaml_docs("examples/pipelines/azure-pipelines.yml")[0];
    let config = ado["variables"]["mirrorConfig"].as_str().unwrap();
    assert!(root().join(config).is_file(), "{config} missing");
    let stages = ado["stages"].as_array().unwrap();
    let mut steps = Vec::new();
    for stage in stages {
        let name = stage["stage"].as_str().unwrap().to_string();
        for job in stage["jobs"].as_array().unwrap() {
            let job_steps =
                job["steps"].as_array().or_else(|| job["strategy"]["runOnce"]["deploy"]["steps"].as_array());
            steps.extend(job_steps.unwrap().iter().map(|s| (name.clone(), s)));
        }
    }
    let after = |stage: &str| -> String {
        let s = stages.iter().find(|s| s["stage"] == stage).unwrap();
        s["dependsOn"].as_str().unwrap_or_else(|| panic!("{stage} has no dependsOn")).to_string()
    };
    check_flow("azure-pipelines.yml", &step_scripts(&steps), after, "$(mirrorConfig)");
    let text = serde_json::to_string(ado).unwrap();
    assert!(text.contains("PublishTestResults@2") && text.contains("\"testResultsFormat\":\"JUnit\""));
    assert!(text.contains("\"failTaskOnFailedTests\":true"));

    let gh = &yaml_docs("examples/pipelines/github-actions.yml")[0];
    let config = gh["env"]["MIRROR_CONFIG"].as_str().unwrap();
    assert!(root().join(config).is_file(), "{config} missing");
    let jobs = gh["jobs"].as_object().unwrap();
    let mut steps = Vec::new();
    for (name, job) in jobs {
        steps.extend(job["steps"].as_array().unwrap().iter().map(|s| (name.clone(), s)));
    }
    // serde_json keeps the file's order (preserve_order), so the steps are in the order they run.
    let after = |job: &str| jobs[job]["needs"].as_str().unwrap_or_else(|| panic!("{job} needs nothing")).to_string();
    check_flow("github-actions.yml", &step_scripts(&steps), after, "\"$MIRROR_CONFIG\"");
    let text = serde_json::to_string(gh).unwrap();
    assert!(text.contains("\"report_paths\":\"mirror-verify.xml\"") && text.contains("\"fail_on_failure\":true"));
    assert!(!root().join(".github/workflows/github-actions.yml").exists(), "the example must not run here");
}

// Checks that the pipelines' config and `mirror rewrite` together give manifests a network
// isolated cluster can run: every image of the rewritten workload points at the registry, pinned
// by digest. The digests are made up (a JSON map, one of the inputs `--digests` takes); what is
// checked is that each image the config's workloads name gets one and is moved to the registry.
#[test]
fn the_pipeline_config_rewrites_its_workloads_to_the_registry() {
    let config = "examples/pipelines/mirror.yaml";
    let out = mirror(&["resolve", "-c", config, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let resolved: Value = serde_json::from_slice(&out.stdout).unwrap();
    let digests: serde_json::Map<String, Value> = resolved["images"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, image)| (image["source"].as_str().unwrap().to_string(), Value::from(format!("sha256:{i:064x}"))))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let digests_file = dir.path().join("digests.json");
    std::fs::write(&digests_file, serde_json::to_string(&digests).unwrap()).unwrap();
    let manifests = dir.path().join("manifests");
    let out = mirror(&[
        "rewrite",
        "-c",
        config,
        "--digests",
        digests_file.to_str().unwrap(),
        "--out",
        manifests.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rewritten = std::fs::read_to_string(manifests.join("ingress-nginx-deploy.yaml")).unwrap();
    let images: Vec<&str> = rewritten.lines().filter_map(|l| l.trim().strip_prefix("image: ")).collect();
    assert!(!images.is_empty());
    for image in images {
        let image = image.trim_matches('"');
        assert!(image.starts_with("myacr.azurecr.io/") && image.contains("@sha256:"), "{image}");
    }
}

// Checks what the Dockerfile promises, since no engine here can build it (so this is about the
// file, not a built image): a build stage on a Rust toolchain the crate supports that runs the
// locked release build (`cargo build --release --locked`) on a musl host (a static binary), then
// strips it and keeps the symbols apart; a `binary` stage holding just those two files (what the
// release workflow publishes); a final stage on a distroless base (no shell or package manager;
// CA certificates, which rustls's platform verifier reads) that gets only the stripped binary and
// the lists, works from the folder the lists are read from, runs as uid 65532 and has the binary
// as its entry point; and a .dockerignore that keeps the host's target/ out.
#[test]
fn the_dockerfile_builds_a_stripped_static_release_binary_into_a_minimal_non_root_image() {
    let d = read("Dockerfile");
    // Instructions, with continuation lines joined.
    let joined =
        d.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n").replace("\\\n", " ");
    let lines: Vec<String> =
        joined.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|l| !l.is_empty()).collect();
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for l in &lines {
        match l.strip_prefix("FROM ") {
            Some(from) => stages.push((from.to_string(), Vec::new())),
            None => stages.last_mut().expect("an instruction before FROM").1.push(l.clone()),
        }
    }
    let stage = |alias: &str| {
        stages.iter().find(|(f, _)| f.ends_with(&format!(" AS {alias}"))).unwrap_or_else(|| panic!("no stage {alias}"))
    };

    let (from, build) = stage("build");
    let tag = from.strip_prefix("rust:").and_then(|r| r.strip_suffix(" AS build")).expect("FROM rust:X AS build");
    assert!(tag.ends_with("-alpine"), "the build stage must be musl-hosted (static binaries): {tag}");
    let minor = |v: &str| -> u32 { v.split('.').nth(1).and_then(|m| m.split('-').next()).unwrap().parse().unwrap() };
    let msrv = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = ").map(|v| v.trim_matches('"').to_string()))
        .unwrap();
    assert!(minor(tag) >= minor(&msrv), "rust:{tag} is older than the crate's rust-version {msrv}");
    let run = build.iter().find(|l| l.starts_with("RUN cargo build")).expect("RUN cargo build");
    assert!(run.starts_with("RUN cargo build --release --locked &&"), "{run}");
    assert!(run.contains("objcopy --only-keep-debug target/release/mirror /out/mirror.debug"), "{run}");
    assert!(run.contains("objcopy --strip-all") && run.ends_with("target/release/mirror /out/mirror"), "{run}");

    let (from, binary) = stage("binary");
    assert_eq!(from, "scratch AS binary");
    assert_eq!(binary, &["COPY --from=build /out/ /"]);

    let (base, runtime) = stages.last().unwrap();
    assert!(base.starts_with("gcr.io/distroless/static-debian12"), "minimal base with CA certificates: {base}");
    assert!(!runtime.iter().any(|l| l.starts_with("RUN")), "nothing runs in a distroless stage: {runtime:?}");
    let copies: Vec<&String> = runtime.iter().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(
        copies,
        [
            "COPY --from=build /out/mirror /usr/local/bin/mirror",
            "COPY manifests-lists /usr/share/acr-mirror/manifests-lists",
        ],
        "only the stripped binary and the lists"
    );
    let last = |key: &str| runtime.iter().rev().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key}"));
    assert_eq!(last("WORKDIR "), "/usr/share/acr-mirror", "the lists are found as ./manifests-lists/aks");
    assert_eq!(last("USER "), "65532:65532");
    assert_eq!(last("ENTRYPOINT "), "[\"/usr/local/bin/mirror\"]");
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/" || l.trim() == "target"), "target/ must be ignored");
}

// Checks the release workflow, which cannot run here: it parses as YAML; it runs on version tags;
// every action it uses is pinned to a major version; every repository script it runs exists and is
// executable; it tests first (`.ci/run`), then builds the Dockerfile's `binary` stage for
// linux/amd64 and linux/arm64 natively, each checked static, and the image with an SBOM, and
// publishes the multi-arch image and a release with the binaries and their SHA-256 checksums.
#[test]
fn the_release_workflow_publishes_static_binaries_checksums_and_a_multi_arch_image_with_an_sbom() {
    let wf = &yaml_docs(".github/workflows/release.yml")[0];
    assert_eq!(wf["on"]["push"]["tags"][0], "v*");
    let jobs = wf["jobs"].as_object().unwrap();
    let mut scripts = String::new();
    for (name, job) in jobs {
        for step in job["steps"].as_array().unwrap_or_else(|| panic!("{name}: no steps")) {
            if let Some(uses) = step["uses"].as_str() {
                let (action, version) = uses.split_once('@').unwrap_or_else(|| panic!("{name}: {uses} is not pinned"));
                assert!(action.contains('/') && version.starts_with('v'), "{name}: {uses}");
            }
            if let Some(run) = step["run"].as_str() {
                scripts.push_str(run);
                scripts.push('\n');
            }
        }
    }
    // Every repository path a step runs or reads exists (executables are executable).
    let mut paths = 0;
    for word in scripts.split_whitespace() {
        let word = word.trim_matches(|c| c == '"' || c == '\'');
        if word.starts_with(".ci/") || word.starts_with("scripts/") {
            let meta = std::fs::metadata(root().join(word)).unwrap_or_else(|e| panic!("the workflow runs {word}: {e}"));
            use std::os::unix::fs::PermissionsExt as _;
            assert!(meta.permissions().mode() & 0o111 != 0, "{word} is not executable");
            paths += 1;
        }
    }
    assert!(paths > 0, "the workflow runs no repository script (the tests?)");
    assert!(scripts.contains(".ci/run"), "the release must run the tests");
    assert_eq!(jobs["build"]["needs"], "test");
    assert_eq!(jobs["publish"]["needs"], "build");

    let build = &jobs["build"];
    let platforms: Vec<&str> = build["strategy"]["matrix"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let steps = build["steps"].as_array().unwrap();
    let with_target = steps.iter().find(|s| s["with"]["target"] == "binary").expect("a step builds the binary stage");
    assert!(read("Dockerfile").contains(" AS binary"), "the Dockerfile has no binary stage");
    assert!(with_target["with"]["outputs"].as_str().unwrap().starts_with("type=local,dest=out"));
    let image = steps.iter().find(|s| s["with"]["sbom"] == true).expect("the image is built with an SBOM");
    assert!(image["with"]["outputs"].as_str().unwrap().contains("push=true"));
    let checks = serde_json::to_string(steps).unwrap();
    assert!(
        checks.contains("static(-pie)? linked") && checks.contains("out/mirror.debug"),
        "binary checked static, symbols kept"
    );

    let publish = serde_json::to_string(&jobs["publish"]).unwrap();
    assert!(publish.contains("imagetools create"), "the multi-arch index");
    assert!(publish.contains("sha256sum mirror-* > SHA256SUMS") && publish.contains("gh release create"));
}

// Checks the README's commands set up their own tools: with docker-registry, curl and apt-get all
// absent, `scripts/setup.sh demo` stops (exit 1) naming the packages and the exact apt-get command
// to run; with them present it does nothing and succeeds. Runs the script with a PATH of stand-ins
// (our own, not Debian's tools), so nothing is installed on this machine.
#[test]
fn setup_says_what_to_install_or_finds_everything() {
    let bin = tempfile::tempdir().unwrap();
    for tool in ["bash", "dirname"] {
        let real = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists()).unwrap();
        std::os::unix::fs::symlink(real, bin.path().join(tool)).unwrap();
    }
    let setup = |what: &str| {
        Command::new(root().join("scripts/setup.sh"))
            .arg(what)
            .env("PATH", bin.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = setup("demo");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("missing: docker-registry curl."), "{err}");
    assert!(err.contains("sudo apt-get install -y --no-install-recommends docker-registry curl"), "{err}");

    for tool in ["docker-registry", "curl"] {
        let p = bin.path().join(tool);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = setup("demo");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "nothing to do, nothing said");
    assert_eq!(setup("bogus").status.code(), Some(1));
}

// Checks that every command, subcommand and argument has help text (clap fills in only help and
// version), walking the same definition the completions and man page are made from.
#[test]
fn every_command_and_argument_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name());
            if sub.get_name() != "help" && sub.get_about().is_none() {
                missing.push(format!("{p}: no about"));
            }
            walk(sub, &p, missing);
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}: no help"));
            }
        }
    }
    let mut cmd = acr_mirror::cli::Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    walk(&cmd, "mirror", &mut missing);
    assert!(missing.is_empty(), "{missing:#?}");
    // And the walk does see the commands (an empty walk would pass the check above).
    let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
    for n in ["copy", "plan", "sync", "verify", "prune", "resolve", "rewrite", "lists", "completions", "man"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}

// Checks the completions (bash, zsh, fish) and the man pages come out of the binary and cover the
// commands and the new flags; an unknown shell is a usage error (exit 1).
#[test]
fn completions_and_man_pages_are_generated_from_the_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = mirror(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["sync", "verify", "completions", "metrics-file", "shard"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    assert_eq!(mirror(&["completions", "tcsh"]).status.code(), Some(1));

    let out = mirror(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(page.contains(".TH mirror 1"), "{page}");
    assert!(page.contains("Exit codes"), "the exit codes belong in mirror(1)");

    let dir = tempfile::tempdir().unwrap();
    let out = mirror(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for page in ["mirror.1", "mirror-sync.1", "mirror-verify.1", "mirror-plan.1", "mirror-lists-import-agentbaker.1"] {
        assert!(dir.path().join(page).is_file(), "{page} not written");
    }
    let sync = std::fs::read_to_string(dir.path().join("mirror-sync.1")).unwrap();
    assert!(sync.contains("\\-\\-shard") && sync.contains("\\-\\-metrics\\-file"), "{sync}");
}
