//! The `resolve`, `rewrite` and `lists import-agentbaker` commands, run as the built binary:
//! output shapes, exit codes, and the error messages users see.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary with an empty `DOCKER_CONFIG`, so a developer's own credentials are never read.
fn mirror(args: &[&str], cwd: &Path, stdin: Option<&str>) -> Output {
    let docker_config = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirror"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("MIRROR_CONFIG")
        .env("DOCKER_CONFIG", docker_config.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("run mirror");
    if let Some(s) = stdin {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

// Checks `resolve -o json` on the shipped example: exit 0, the documented fields, provenance,
// and the Windows note on stderr.
#[test]
fn resolve_json_on_the_example() {
    let out = mirror(&["resolve", "-c", "mirror.example.yaml", "-o", "json"], &root(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = v["images"].as_array().unwrap();
    let kp = images
        .iter()
        .find(|i| i["source"] == "mcr.microsoft.com/oss/v2/kubernetes/kube-proxy:v1.34.10-1")
        .expect("kube-proxy for 1.34");
    assert_eq!(kp["target"], "myacr.azurecr.io/aks-managed-repository/oss/v2/kubernetes/kube-proxy:v1.34.10-1");
    assert_eq!(kp["mode"], "warm");
    assert_eq!(kp["kind"], "container-image");
    assert_eq!(kp["platforms"], serde_json::json!(["linux/amd64"]));
    assert_eq!(kp["provenance"][0]["from"], "aksList");
    let ctrl = images.iter().find(|i| i["source"].as_str().unwrap().contains("ingress-nginx/controller")).unwrap();
    assert_eq!(ctrl["digest"], "sha256:594ceea76b01c592858f803f9ff4d2cb40542cae2060410b2c95f75907d659e1");
    assert_eq!(ctrl["provenance"][0]["from"], "workload");
    assert_eq!(ctrl["provenance"][0]["line"], 446);
    assert!(text(&out.stderr).contains("Windows node pools are not supported"), "{}", text(&out.stderr));
}

// Checks the table output names source, mode, target and the "why" lines.
#[test]
fn resolve_table_shows_why() {
    let out = mirror(&["resolve", "-c", "mirror.example.yaml"], &root(), None);
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out.stdout);
    assert!(t.starts_with("SOURCE"), "{t}");
    assert!(t.contains("quay.io/argoproj/argocd:latest"));
    assert!(t.contains("<- tests/data/workloads/argo-cd-install.yaml:32364 (document 46) Deployment argocd-applicationset-controller"), "{t}");
    assert!(t.contains("<- config images[0]"));
}

// Checks each bad input exits 1 with a message naming the problem.
#[test]
fn bad_inputs_exit_1_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        ("malformed.yaml", "target: a.io\naks: {kubernetesVersion: '1.34'\nimages: [\n", &["line 3", "column 1"]),
        ("unknown-key.yaml", "target: a.io\nworkload: {}\n", &["unknown field `workload`"]),
        (
            "version.yaml",
            "target: a.io\naks: {kubernetesVersion: '1.41'}\n",
            &["unknown Kubernetes version", "1.30, 1.31"],
        ),
        ("old.yaml", "target: a.io\naks: {kubernetesVersion: '1.28'}\n", &["1.30 or later"]),
        ("glob.yaml", "target: a.io\nworkloads: {manifests: ['none/*.yaml']}\n", &["matched no files"]),
        ("image.yaml", "target: a.io\nimages: ['nginx:1@sha256:12']\n", &["images[0] (line 2", "bad digest"]),
    ];
    for (name, body, wants) in cases {
        std::fs::write(dir.path().join(name), body).unwrap();
        let out = mirror(&["resolve", "-c", name], dir.path(), None);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        for w in *wants {
            assert!(err.contains(w), "{name}: expected {w:?} in {err}");
        }
    }
}

// Checks that `-` reads manifests from stdin (helm template | mirror resolve).
#[test]
fn manifests_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), "target: a.io\nworkloads: {manifests: ['-']}\n").unwrap();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: redis:7\n";
    let out = mirror(&["resolve", "-c", "m.yaml", "-o", "json"], dir.path(), Some(pod));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"][0]["source"], "docker.io/library/redis:7");
    assert_eq!(v["images"][0]["target"], "a.io/mirror/docker.io/library/redis:7");
    assert_eq!(v["images"][0]["provenance"][0]["file"], "<stdin>");
    assert_eq!(v["images"][0]["provenance"][0]["line"], 7);
}

// Checks the importer writes one file per minor with a header naming source file and commit.
#[test]
fn lists_import_agentbaker_writes_headed_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("tests/data/agentbaker/components-2026-06-16.json");
    let out = mirror(
        &["lists", "import-agentbaker", input.to_str().unwrap(), "--out", "lists", "--source-commit", "42fa7ea890be"],
        dir.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("lists"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "1.28.yaml",
            "1.29.yaml",
            "1.30.yaml",
            "1.31.yaml",
            "1.32.yaml",
            "1.33.yaml",
            "1.34.yaml",
            "1.35.yaml",
            "1.36.yaml"
        ]
    );
    let l = std::fs::read_to_string(dir.path().join("lists/1.35.yaml")).unwrap();
    assert!(l.lines().nth(1).unwrap().contains("components-2026-06-16.json"), "{l}");
    assert!(l.lines().nth(1).unwrap().contains("42fa7ea890be"));
    assert!(l.contains("kube-proxy:v1.35.4-3\""));
    // The generated lists are then usable by resolve via aks.lists.
    std::fs::write(dir.path().join("m.yaml"), "target: a.io\naks: {kubernetesVersion: '1.35', lists: lists}\n")
        .unwrap();
    let out = mirror(&["resolve", "-c", "m.yaml", "-o", "json"], dir.path(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("mcr.microsoft.com/oss/v2/kubernetes/kube-proxy:v1.35.4-3"));
    let bad = mirror(&["lists", "import-agentbaker", "missing.json"], dir.path(), None);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("missing.json"));
}

// Checks `rewrite --out` with a --digests file and `--kustomize`, and that missing digests fail.
#[test]
fn rewrite_writes_pinned_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("app.yaml"), "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27 # web\n").unwrap();
    std::fs::write(d.join("m.yaml"), "target: myacr.azurecr.io\nworkloads: {manifests: [app.yaml]}\n").unwrap();
    let digest = format!("sha256:{}", "ab".repeat(32));
    std::fs::write(d.join("digests.json"), format!("{{\"nginx:1.27\": \"{digest}\"}}")).unwrap();

    let out = mirror(&["rewrite", "-c", "m.yaml", "--out", "out"], d, None);
    assert_eq!(out.status.code(), Some(1), "no digests: must fail");
    assert!(text(&out.stderr).contains("no digest known for docker.io/library/nginx:1.27"), "{}", text(&out.stderr));

    let out = mirror(&["rewrite", "-c", "m.yaml", "--out", "out", "--digests", "digests.json"], d, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let w = std::fs::read_to_string(d.join("out/app.yaml")).unwrap();
    assert!(
        w.contains(&format!("        image: myacr.azurecr.io/mirror/docker.io/library/nginx:1.27@{digest} # web\n")),
        "{w}"
    );

    let out = mirror(&["rewrite", "-c", "m.yaml", "--kustomize", "k.yaml", "--digests", "digests.json"], d, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let k = std::fs::read_to_string(d.join("k.yaml")).unwrap();
    assert!(
        k.contains(&format!(
            "  - name: nginx\n    newName: myacr.azurecr.io/mirror/docker.io/library/nginx\n    digest: {digest}\n"
        )),
        "{k}"
    );
}

// Checks that `aks.lists` is read relative to the config file's folder, not the working
// directory: the config sits in one temporary folder with its lists, and `mirror` runs from
// another, where a relative `lists` path would not exist.
#[test]
fn aks_lists_are_relative_to_the_config_file() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let lists = cfg_dir.path().join("my-lists");
    std::fs::create_dir(&lists).unwrap();
    std::fs::copy(root().join("manifests-lists/aks/1.34.yaml"), lists.join("1.34.yaml")).unwrap();
    let cfg = cfg_dir.path().join("mirror.yaml");
    std::fs::write(&cfg, "target: a.io\naks: {kubernetesVersion: '1.34', lists: my-lists}\n").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = mirror(&["resolve", "-c", cfg.to_str().unwrap(), "-o", "json"], elsewhere.path(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v["images"][0]["provenance"][0]["list"].as_str().unwrap();
    assert!(list.starts_with(&lists.display().to_string()), "{list}");
}

// Checks `--strict` is accepted by resolve, plan and sync (a config without tag rules behaves as
// without it).
#[test]
fn strict_is_accepted() {
    let out = mirror(&["resolve", "--strict", "-c", "mirror.example.yaml"], &root(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for cmd in ["plan", "sync"] {
        let out = mirror(&[cmd, "--help"], &root(), None);
        assert!(text(&out.stdout).contains("--strict"), "{cmd}");
    }
}
