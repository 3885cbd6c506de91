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

fn mirror(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirror"))
        .args(args)
        .current_dir(root())
        .env_remove("MIRROR_CONFIG")
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
// --metrics-file on a writable volume; memory requests and limits; the non-root user of the image.
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
    // The push-metrics container reads the file mirror writes.
    let pusher = &pod["spec"]["containers"][1];
    assert!(pusher["args"][0].as_str().unwrap().contains(metrics), "push-metrics does not read {metrics}");

    let cfg = configmap_config(&docs);
    let auth = cfg.registries[0].auth.as_ref().unwrap().azure_sign_in().expect("azure auth");
    assert_eq!(auth.credential, acr_mirror::azure::CredentialKind::WorkloadIdentity);
    assert!(cfg.report.as_ref().unwrap().azure_blob.contains(".blob.core.windows.net/"));
    assert!(cfg.lock.as_ref().unwrap().azure_blob.ends_with(".lock"));
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

// Checks both example pipelines: sync before `az aks create --bootstrap-artifact-source Cache
// --outbound-type none`, verify after it with JUnit results published, and the deployment only
// after verify; the config they name exists.
#[test]
fn the_pipelines_sync_before_the_cluster_and_gate_the_deployment_on_verify() {
    let ado = &yaml_docs("examples/pipelines/azure-pipelines.yml")[0];
    let config = ado["variables"]["mirrorConfig"].as_str().unwrap();
    assert!(root().join(config).is_file(), "{config} missing");
    let stages = ado["stages"].as_array().unwrap();
    let stage = |name: &str| stages.iter().find(|s| s["stage"] == name).unwrap_or_else(|| panic!("stage {name}"));
    let scripts = |s: &Value| serde_json::to_string(s).unwrap();
    assert!(scripts(stage("Mirror")).contains("mirror sync -c $(mirrorConfig)"));
    assert_eq!(stage("Cluster")["dependsOn"], "Mirror");
    let cluster = scripts(stage("Cluster"));
    assert!(cluster.contains("--bootstrap-artifact-source Cache") && cluster.contains("--outbound-type none"));
    assert_eq!(stage("Verify")["dependsOn"], "Cluster");
    let verify = scripts(stage("Verify"));
    assert!(verify.contains(
        "mirror verify -c $(mirrorConfig) --report-junit $(Build.ArtifactStagingDirectory)/mirror-verify.xml"
    ));
    assert!(verify.contains("PublishTestResults@2") && verify.contains("\"testResultsFormat\":\"JUnit\""));
    assert!(verify.contains("exit $rc"), "verify's exit code must fail the stage");
    assert_eq!(stage("Deploy")["dependsOn"], "Verify");

    let gh = &yaml_docs("examples/pipelines/github-actions.yml")[0];
    let config = gh["env"]["MIRROR_CONFIG"].as_str().unwrap();
    assert!(root().join(config).is_file(), "{config} missing");
    let jobs = &gh["jobs"];
    assert!(scripts(&jobs["mirror"]).contains("mirror sync -c \\\"$MIRROR_CONFIG\\\""));
    assert_eq!(jobs["cluster"]["needs"], "mirror");
    let cluster = scripts(&jobs["cluster"]);
    assert!(cluster.contains("--bootstrap-artifact-source Cache") && cluster.contains("--outbound-type none"));
    assert_eq!(jobs["verify"]["needs"], "cluster");
    let verify = scripts(&jobs["verify"]);
    assert!(verify.contains("mirror verify -c \\\"$MIRROR_CONFIG\\\" --report-junit mirror-verify.xml"));
    assert!(verify.contains("\"report_paths\":\"mirror-verify.xml\""));
    assert_eq!(jobs["deploy"]["needs"], "verify");
    assert!(!root().join(".github/workflows/github-actions.yml").exists(), "the example must not run here");
}

// Checks the Dockerfile's promises, since no engine here can build it: a rust build stage on a
// toolchain the crate supports, running `cargo build --release --locked` (the binary this
// checkout's lockfile makes), a runtime stage that is not the build image, the release binary copied
// from the build stage, CA certificates, the lists, uid 65532 and `ENTRYPOINT ["mirror"]`; and a
// .dockerignore that keeps the host's target/ out of the build.
#[test]
fn the_dockerfile_builds_the_locked_release_binary_into_a_small_non_root_image() {
    let d = read("Dockerfile");
    let lines: Vec<&str> = d.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let froms: Vec<&str> = lines.iter().filter(|l| l.starts_with("FROM ")).copied().collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    let build_tag =
        froms[0].strip_prefix("FROM rust:").and_then(|r| r.strip_suffix(" AS build")).expect("FROM rust:X AS build");
    // The build toolchain must be one the crate supports (Cargo.toml's rust-version or later).
    let minor = |v: &str| -> u32 { v.split('.').nth(1).and_then(|m| m.split('-').next()).unwrap().parse().unwrap() };
    let manifest = read("Cargo.toml");
    let msrv = manifest.lines().find_map(|l| l.strip_prefix("rust-version = ")).expect("rust-version in Cargo.toml");
    assert!(
        minor(build_tag) >= minor(msrv.trim_matches('"')),
        "Dockerfile builds with rust:{build_tag}, older than the crate's rust-version {msrv}"
    );
    assert!(!froms[1].contains("rust:"), "the runtime stage must not be the build image");
    let build_stage = &lines[..lines.iter().position(|l| *l == froms[1]).unwrap()];
    let runtime = &lines[build_stage.len()..];
    assert!(build_stage.contains(&"RUN cargo build --release --locked"), "{build_stage:?}");
    let copy = runtime.iter().find(|l| l.starts_with("COPY --from=build")).expect("binary copied from the build stage");
    assert!(copy.contains("/target/release/mirror /usr/local/bin/mirror"), "{copy}");
    assert!(runtime.iter().any(|l| l.contains("ca-certificates")));
    assert!(runtime.iter().any(|l| l.starts_with("COPY manifests-lists /usr/share/acr-mirror/manifests-lists")));
    assert!(runtime.contains(&"WORKDIR /usr/share/acr-mirror"), "the lists are found as ./manifests-lists/aks");
    assert!(runtime.contains(&"USER 65532:65532"));
    assert!(runtime.contains(&"ENTRYPOINT [\"mirror\"]"));
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/" || l.trim() == "target"), "target/ must be ignored");
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
    for n in ["copy", "plan", "sync", "verify", "resolve", "rewrite", "lists", "completions", "man"] {
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
