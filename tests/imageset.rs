//! The image set on real inputs (AgentBaker components.json at two commits, the ingress-nginx
//! and argo-cd install manifests), compared with sets written by hand from reading those files,
//! and every bad-input case of the issue with its message checked; more real manifests
//! (kube-prometheus, KubeVirt, JobSet, the Kubernetes image-volume example) and written ones for
//! operator conventions; tag rules against a real `docker-registry`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use acr_mirror::config::{Config, MappingMode};
use acr_mirror::digest::Digest;
use acr_mirror::imageset::lists::{ClusterChoice, KubeVersion, ListSet, ListSource, NodeOs, select};
use acr_mirror::imageset::{self, ImageKind, Provenance, ResolveOptions, agentbaker, rewrite};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
}

fn source(file: &str, commit: &str) -> ListSource {
    ListSource {
        file: file.into(),
        repository: "Azure/AgentBaker".into(),
        path: "parts/common/components.json".into(),
        commit: commit.into(),
    }
}

/// Imports a components.json into a temporary lists folder.
fn lists_from(file: &str, commit: &str) -> (tempfile::TempDir, ListSet) {
    let text = std::fs::read_to_string(data(&format!("agentbaker/{file}"))).unwrap();
    let lists = agentbaker::import(&text, &source(file, commit)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for l in lists.values() {
        std::fs::write(dir.path().join(format!("{}.yaml", l.kubernetes_minor)), agentbaker::render(l)).unwrap();
    }
    let set = ListSet::load_dir(dir.path()).unwrap();
    (dir, set)
}

fn choose(set: &ListSet, version: &str, archs: &[&str], gpu: bool) -> BTreeMap<String, Vec<String>> {
    let sel = select(
        set,
        &ClusterChoice {
            version: KubeVersion::parse(version).unwrap(),
            architectures: archs.iter().map(|a| a.to_string()).collect(),
            gpu,
            os: vec![NodeOs::Linux],
        },
    )
    .unwrap();
    sel.chosen.into_iter().map(|c| (c.entry.image, c.platforms.iter().map(|p| p.to_string()).collect())).collect()
}

const MCR: &str = "mcr.microsoft.com/";

// Checks the 1.34 choice from the current components.json against entries read by hand from the
// file: kube-proxy only at its 1.34 tag, coredns and pause whole, the kubernetes-node binaries
// for 1.34 per architecture, nothing for Windows, and GPU images only when asked for.
#[test]
fn current_components_json_for_1_34() {
    let (_d, set) = lists_from("components.json", "4767d117a7d0");
    let got = choose(&set, "1.34", &["amd64", "arm64"], false);
    let both = vec!["linux/amd64".to_string(), "linux/arm64".to_string()];
    assert_eq!(got[&format!("{MCR}oss/v2/kubernetes/kube-proxy:v1.34.10-1")], both);
    for other in ["v1.33.7-16", "v1.35.7-1", "v1.36.3-1"] {
        assert!(!got.contains_key(&format!("{MCR}oss/v2/kubernetes/kube-proxy:{other}")), "{other} is another minor's");
    }
    for t in ["v1.14.3-11", "v1.13.1-20", "v1.12.1-25", "v1.11.3-32"] {
        assert_eq!(got[&format!("{MCR}oss/v2/kubernetes/coredns:{t}")], both, "coredns {t}");
    }
    for t in ["3.10.2", "3.6"] {
        assert!(got.contains_key(&format!("{MCR}oss/v2/kubernetes/pause:{t}")), "pause {t}");
    }
    for t in ["v1.34.9", "v1.34.7"] {
        for a in ["amd64", "arm64"] {
            let r = format!("{MCR}oss/binaries/kubernetes/kubernetes-node:{t}-linux-{a}");
            assert_eq!(got[&r], vec![format!("linux/{a}")], "{r}");
        }
    }
    assert!(!got.keys().any(|k| k.contains("kubernetes-node:v1.33")));
    assert_eq!(
        got[&format!("{MCR}oss/v2/kubernetes/azure-cloud-node-manager:v1.34.13-1")],
        both,
        "cloud-node-manager follows the minor"
    );
    assert!(!got.keys().any(|k| k.contains("azure-cloud-node-manager:v1.35")));
    assert!(!got.keys().any(|k| k.contains("windows/") || k.contains("windows-hp")), "no Windows images");
    assert!(!got.keys().any(|k| k.contains("aks-gpu")), "no GPU images without gpu: true");
    assert!(!got.keys().any(|k| k.contains("sysext")), "no Flatcar artifacts for Linux nodes");

    let with_gpu = choose(&set, "1.34", &["amd64"], true);
    assert_eq!(with_gpu[&format!("{MCR}aks/aks-gpu-cuda:580.126.09-20260430040408")], vec!["linux/amd64"]);
    let arm_only = choose(&set, "1.34", &["arm64"], true);
    assert!(!arm_only.keys().any(|k| k.contains("aks-gpu")), "GPU driver images exist for amd64 only");
    assert!(!arm_only.keys().any(|k| k.ends_with("-linux-amd64")));
}

// Checks the older components.json (2026-06-16): its own kube-proxy tag for 1.34, both pause
// repositories, and its binaries versions.
#[test]
fn older_components_json_for_1_34_and_1_35() {
    let (_d, set) = lists_from("components-2026-06-16.json", "42fa7ea890be");
    assert_eq!(set.known(), "1.30, 1.31, 1.32, 1.33, 1.34, 1.35, 1.36", "1.28 and 1.29 are listed but not offered");
    assert!(set.lists.contains_key(&(1, 28)));
    let got = choose(&set, "1.34", &["amd64"], false);
    assert!(got.contains_key(&format!("{MCR}oss/v2/kubernetes/kube-proxy:v1.34.7-2")));
    assert!(got.contains_key(&format!("{MCR}oss/kubernetes/pause:3.6")));
    assert!(got.contains_key(&format!("{MCR}oss/v2/kubernetes/pause:3.6")));
    assert!(got.contains_key(&format!("{MCR}oss/v2/kubernetes/coredns:v1.13.2-9")));
    assert!(got.contains_key(&format!("{MCR}oss/binaries/kubernetes/kubernetes-node:v1.34.4-linux-amd64")));
    assert!(got.contains_key(&format!("{MCR}containernetworking/cilium/cilium:v1.17.10-260319")));
    let got = choose(&set, "1.35", &["amd64"], false);
    assert!(got.contains_key(&format!("{MCR}oss/v2/kubernetes/kube-proxy:v1.35.4-3")));
    assert!(!got.keys().any(|k| k.contains("kube-proxy:v1.34")));
}

// Checks that the committed lists are exactly what the importer makes of the committed input,
// so nobody edits them by hand or forgets to regenerate them.
#[test]
fn committed_lists_are_the_importer_output() {
    let text = std::fs::read_to_string(data("agentbaker/components.json")).unwrap();
    let lists = agentbaker::import(&text, &source("components.json", "4767d117a7d0")).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests-lists/aks");
    let mut committed: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    committed.sort();
    let mut want: Vec<String> = lists.values().map(|l| format!("{}.yaml", l.kubernetes_minor)).collect();
    want.sort();
    assert_eq!(committed, want);
    for l in lists.values() {
        let on_disk = std::fs::read_to_string(dir.join(format!("{}.yaml", l.kubernetes_minor))).unwrap();
        assert_eq!(on_disk, agentbaker::render(l), "{}.yaml differs from the importer's output", l.kubernetes_minor);
        assert!(
            on_disk.contains("components.json") && on_disk.contains("4767d117a7d0"),
            "header names file and commit"
        );
    }
}

fn config(yaml: &str) -> Config {
    Config::parse(yaml, Path::new("mirror.yaml")).unwrap()
}

fn resolve(yaml: &str) -> imageset::Resolved {
    imageset::resolve(&config(yaml), &data("")).unwrap()
}

fn resolve_err(yaml: &str) -> String {
    imageset::resolve(&config(yaml), &data("")).unwrap_err().to_string()
}

// Checks the ingress-nginx manifest against the images read by hand: two images, both pinned by
// tag and digest, the certgen one used by two Jobs, with the lines they stand on.
#[test]
fn ingress_nginx_images() {
    let r = resolve("target: myacr.azurecr.io\nworkloads: {manifests: [workloads/ingress-nginx-deploy.yaml]}\n");
    let got: Vec<String> = r.images.iter().map(|e| e.source.to_string()).collect();
    assert_eq!(
        got,
        [
            "registry.k8s.io/ingress-nginx/controller:v1.15.1@sha256:594ceea76b01c592858f803f9ff4d2cb40542cae2060410b2c95f75907d659e1",
            "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.6.9@sha256:01038e7de14b78d702d2849c3aad72fd25903c4765af63cf16aa3398f5d5f2dd",
        ]
    );
    let c = &r.images[0];
    assert_eq!(
        c.target.to_string(),
        "myacr.azurecr.io/mirror/registry.k8s.io/ingress-nginx/controller:v1.15.1@sha256:594ceea76b01c592858f803f9ff4d2cb40542cae2060410b2c95f75907d659e1"
    );
    assert_eq!(c.mode, MappingMode::Copy);
    assert_eq!(
        c.digest.as_ref().map(|d| d.to_string()).as_deref(),
        Some("sha256:594ceea76b01c592858f803f9ff4d2cb40542cae2060410b2c95f75907d659e1")
    );
    match &c.provenance[..] {
        [Provenance::Workload { line, kind, name, namespace, container, field, .. }] => {
            assert_eq!((*line, kind.as_str(), name.as_str()), (446, "Deployment", "ingress-nginx-controller"));
            assert_eq!(namespace.as_deref(), Some("ingress-nginx"));
            assert_eq!(container.as_deref(), Some("controller"));
            assert_eq!(field, "spec.template.spec.containers[0].image");
        }
        p => panic!("unexpected provenance {p:?}"),
    }
    let lines: Vec<(usize, String)> = r.images[1]
        .provenance
        .iter()
        .map(|p| match p {
            Provenance::Workload { line, kind, name, .. } => (*line, format!("{kind}/{name}")),
            _ => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(
        lines,
        [
            (549, "Job/ingress-nginx-admission-create".to_string()),
            (605, "Job/ingress-nginx-admission-patch".to_string())
        ]
    );
}

// Checks the argo-cd install manifest: 3 distinct images in 10 places (8 of them argocd:latest),
// read by hand from the file; the CRDs' `image` schema words are not images.
#[test]
fn argo_cd_images() {
    let r = resolve("target: myacr.azurecr.io\nworkloads: {manifests: [workloads/argo-cd-install.yaml]}\n");
    let got: Vec<(String, usize)> = r.images.iter().map(|e| (e.source.to_string(), e.provenance.len())).collect();
    assert_eq!(
        got,
        [
            ("ghcr.io/dexidp/dex:v2.45.1".to_string(), 1),
            ("public.ecr.aws/docker/library/redis:8.10.1-alpine".to_string(), 1),
            ("quay.io/argoproj/argocd:latest".to_string(), 8),
        ]
    );
    assert_eq!(r.workloads[0].images.len(), 10);
    assert!(r.images.iter().all(|e| e.kind == ImageKind::ContainerImage));
}

// Checks stdin input (helm template | mirror resolve), folders and globs, and de-duplication
// across inputs: the same image from a file and stdin is one entry with two provenances.
#[test]
fn stdin_folders_and_globs() {
    let cfg = config("target: a.io\nworkloads: {manifests: [\"-\", \"workloads/*.yaml\", workloads]}\n");
    let stdin = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: 'ghcr.io/dexidp/dex:v2.45.1'}]}\n";
    let r = imageset::resolve_with(&cfg, &data(""), &ResolveOptions { stdin: Some(stdin.into()) }).unwrap();
    assert_eq!(r.images.len(), 5);
    let dex = r.images.iter().find(|e| e.source.to_string() == "ghcr.io/dexidp/dex:v2.45.1").unwrap();
    // stdin once, the argo-cd file via the glob and again via the folder (same place: one provenance).
    assert_eq!(dex.provenance.len(), 2, "{:?}", dex.provenance);
    assert!(
        dex.provenance.iter().any(|p| matches!(p, Provenance::Workload { file, line: 4, .. } if file == "<stdin>"))
    );
}

// Checks a whole config: AKS lists (built in) + workloads + explicit images, mappings, platforms,
// the Windows note and the extension warnings.
#[test]
fn aks_workloads_and_images_together() {
    let r = resolve(
        "target: myacr.azurecr.io\n\
         platforms: [linux/amd64]\n\
         aks: {kubernetesVersion: '1.34.9', architectures: [amd64], gpu: false, extensions: [dapr, microsoft.flux, Microsoft.KeyVault]}\n\
         workloads: {manifests: [workloads/ingress-nginx-deploy.yaml]}\n\
         images: [nginx, 'mcr.microsoft.com/oss/v2/kubernetes/pause:3.6']\n",
    );
    let by: BTreeMap<String, &imageset::ImageEntry> = r.images.iter().map(|e| (e.source.to_string(), e)).collect();
    let kp = by["mcr.microsoft.com/oss/v2/kubernetes/kube-proxy:v1.34.10-1"];
    assert_eq!(
        kp.target.to_string(),
        "myacr.azurecr.io/aks-managed-repository/oss/v2/kubernetes/kube-proxy:v1.34.10-1"
    );
    assert_eq!(kp.mode, MappingMode::Warm);
    assert!(by.contains_key("mcr.microsoft.com/oss/binaries/kubernetes/kubernetes-node:v1.34.9-linux-amd64"));
    assert!(
        !by.contains_key("mcr.microsoft.com/oss/binaries/kubernetes/kubernetes-node:v1.34.7-linux-amd64"),
        "patch 1.34.9 asked for"
    );
    let nginx = by["docker.io/library/nginx:latest"];
    assert_eq!(nginx.target.to_string(), "myacr.azurecr.io/mirror/docker.io/library/nginx:latest");
    assert!(
        matches!(nginx.provenance[..], [Provenance::Config { index: 0, line: 5, tag_rule: None }]),
        "{:?}",
        nginx.provenance
    );
    // pause:3.6 is asked for twice: once by the AKS list, once by the config.
    assert_eq!(by["mcr.microsoft.com/oss/v2/kubernetes/pause:3.6"].provenance.len(), 2);
    assert!(r.images.iter().all(|e| e.platforms.to_string() == "linux/amd64"));
    let w = r.warnings.join("\n");
    assert!(w.contains("Windows node pools are not supported") && w.contains("30 Windows-only"), "{w}");
    assert!(w.contains("\"dapr\" (Dapr) is not supported in network isolated mode"), "{w}");
    assert!(w.contains("\"microsoft.flux\" (Flux (GitOps)) is not supported"), "{w}");
    assert!(w.contains("\"Microsoft.KeyVault\": no component list covers it"), "{w}");
    assert!(!w.contains("Flatcar"), "Flatcar gaps are not news for a Linux cluster: {w}");
}

// Checks the OS choice: Linux images are always taken (every cluster has a Linux system pool),
// Flatcar adds the sysext artifacts, Windows adds nothing and is named in the warning.
#[test]
fn node_os_choice() {
    let r = resolve("target: a.io\naks: {kubernetesVersion: '1.35', os: [windows, flatcar]}\n");
    let s: Vec<String> = r.images.iter().map(|e| e.source.to_string()).collect();
    assert!(s.contains(&"mcr.microsoft.com/oss/v2/kubernetes/kube-proxy:v1.35.7-1".to_string()));
    assert!(
        s.contains(&"mcr.microsoft.com/oss/v2/kubernetes/kubelet-sysext:v1.35.7-2-azlinux3-x86-64".to_string()),
        "{s:?}"
    );
    assert!(!s.iter().any(|x| x.contains("kubelet-sysext:v1.34")));
    assert!(!s.iter().any(|x| x.contains("windows/") || x.contains("-windows-")));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("Windows node pools are not supported") && w.contains("aks.os names windows"))
    );
}

// Checks that an AKS component mapped away from aks-managed-repository is warned about.
#[test]
fn aks_images_outside_the_cache_path_are_warned_about() {
    let r = resolve(
        "target: myacr.azurecr.io\nmappings: [{source: '*', target: 'mirror/{registry}', mode: copy}]\naks: {kubernetesVersion: '1.33'}\n",
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("mapped outside myacr.azurecr.io/aks-managed-repository/")),
        "{:?}",
        r.warnings
    );
}

// The bad inputs of the issue, each a clear error naming what was wrong and where.
#[test]
fn malformed_yaml_in_config_names_line_and_column() {
    let e =
        Config::parse("target: a.io\naks: {kubernetesVersion: '1.34'\nimages: [\n", Path::new("m.yaml")).unwrap_err();
    let m = e.to_string();
    assert!(m.contains("m.yaml") && m.contains("line") && m.contains("column"), "{m}");
}

#[test]
fn unknown_keys_in_config_sections_are_refused() {
    let e =
        Config::parse("aks: {kubernetesVersion: '1.34', gpus: true}\n", Path::new("m.yaml")).unwrap_err().to_string();
    assert!(e.contains("gpus"), "{e}");
    let e = Config::parse("workloads: {manifest: [a.yaml]}\n", Path::new("m.yaml")).unwrap_err().to_string();
    assert!(e.contains("manifest"), "{e}");
}

#[test]
fn unknown_and_too_old_kubernetes_versions_are_refused() {
    let e = resolve_err("target: a.io\naks: {kubernetesVersion: '1.40'}\n");
    assert!(e.contains("unknown Kubernetes version") && e.contains("1.30, 1.31") && e.contains("1.36"), "{e}");
    let e = resolve_err("target: a.io\naks: {kubernetesVersion: '1.29.4'}\n");
    assert!(e.contains("1.30 or later"), "{e}");
    let e = resolve_err("target: a.io\naks: {kubernetesVersion: 'latest'}\n");
    assert!(e.contains("\"latest\" is not a Kubernetes version"), "{e}");
}

#[test]
fn a_glob_that_matches_nothing_is_refused() {
    let e = resolve_err("target: a.io\nworkloads: {manifests: ['nothing-here/*.yaml']}\n");
    assert!(e.contains("\"nothing-here/*.yaml\" matched no files"), "{e}");
    let e = resolve_err("target: a.io\nworkloads: {manifests: ['missing.yaml']}\n");
    assert!(e.contains("missing.yaml"), "{e}");
}

#[test]
fn bad_image_references_name_their_place() {
    let e = resolve_err("target: a.io\nimages:\n  - nginx\n  - 'Quay.io/x/y:1'\n");
    assert!(e.contains("images[1] (line 4") && e.contains("lowercase"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("w.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers:\n      - name: a\n        image: nginx:1.27@sha256:abc\n",
    )
    .unwrap();
    let cfg = config("target: a.io\nworkloads: {manifests: [w.yaml]}\n");
    let e = imageset::resolve(&cfg, dir.path()).unwrap_err().to_string();
    assert!(e.contains("w.yaml:9") && e.contains("Deployment web") && e.contains("bad digest"), "{e}");
}

#[test]
fn malformed_manifest_yaml_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.yaml"), "kind: ConfigMap\n---\nkind: Pod\nspec: {containers: [\n  - x\n")
        .unwrap();
    let cfg = config("target: a.io\nworkloads: {manifests: [w.yaml]}\n");
    let e = imageset::resolve(&cfg, dir.path()).unwrap_err().to_string();
    assert!(e.contains("w.yaml") && e.contains("malformed YAML") && e.contains("line"), "{e}");
}

// Checks that the shipped example config parses and resolves from the repository root.
#[test]
fn example_config_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = Config::load(&root.join("mirror.example.yaml")).unwrap();
    let r = imageset::resolve(&cfg, root).unwrap();
    let sources: Vec<String> = r.images.iter().map(|e| e.source.to_string()).collect();
    assert!(sources.contains(&"mcr.microsoft.com/oss/v2/kubernetes/kube-proxy:v1.34.10-1".to_string()));
    assert!(sources.contains(&"quay.io/argoproj/argocd:latest".to_string()));
    assert!(sources.contains(&"docker.io/library/redis:7.4".to_string()));
    assert_eq!(cfg.registries[0].host, "myacr.azurecr.io");
}

// Checks rewriting the real manifests: ingress-nginx needs no digests (its references carry
// them); argo-cd takes them from a map; the output names only target references.
#[test]
fn rewrite_real_manifests() {
    let r = resolve(
        "target: myacr.azurecr.io\nworkloads: {manifests: [workloads/ingress-nginx-deploy.yaml, workloads/argo-cd-install.yaml]}\n",
    );
    let mapper = r.mapper.as_ref().unwrap();
    let mut digests = BTreeMap::new();
    for (i, s) in [
        "ghcr.io/dexidp/dex:v2.45.1",
        "public.ecr.aws/docker/library/redis:8.10.1-alpine",
        "quay.io/argoproj/argocd:latest",
    ]
    .iter()
    .enumerate()
    {
        digests.insert(s.to_string(), Digest::parse(&format!("sha256:{}", i.to_string().repeat(64))).unwrap());
    }
    let out = rewrite::rewrite_files(&r.workloads, mapper, &digests).unwrap();
    assert!(out[0].contains(
        "image: myacr.azurecr.io/mirror/registry.k8s.io/ingress-nginx/controller:v1.15.1@sha256:594ceea76b01c592858f803f9ff4d2cb40542cae2060410b2c95f75907d659e1\n"
    ));
    assert_eq!(
        out[1]
            .matches(&format!(
                "image: myacr.azurecr.io/mirror/quay.io/argoproj/argocd:latest@sha256:{}",
                "2".repeat(64)
            ))
            .count(),
        8
    );
    assert!(!out[1].contains("image: quay.io"));
    assert_eq!(out[1].lines().count(), r.workloads[1].text.lines().count(), "only image strings change");
    let k = rewrite::kustomize_images(&r.workloads, mapper, &digests).unwrap();
    assert!(
        k.contains("  - name: quay.io/argoproj/argocd\n    newName: myacr.azurecr.io/mirror/quay.io/argoproj/argocd\n"),
        "{k}"
    );
    digests.clear();
    let e = rewrite::rewrite_files(&r.workloads, mapper, &digests).unwrap_err().to_string();
    assert!(e.contains("quay.io/argoproj/argocd:latest") && !e.contains("ingress-nginx"), "{e}");
}

/// Every image with its provenance lines, from a resolve of `tests/data/workloads/more`.
fn more_manifests() -> imageset::Resolved {
    resolve(
        "target: acr.example.io\nworkloads:\n  manifests: [more-workloads]\n  injectedImages: {env: [MY_SIDECAR_IMAGE]}\n",
    )
}

// Checks the general rule on real manifests and written operator conventions: containers
// anywhere (pod specs, JobSet's nested templates, Argo container/script templates), image
// volumes, KubeVirt container disks, known custom resource kinds, fully qualified references in
// other custom resources, and images handed to operators by flag (both `--f=x` and `--f x`) or
// environment variable (by rule, and from the config). A regression that misses a place, or
// takes the Crossplane GCE image, changes this exact set.
#[test]
fn images_found_by_evidence() {
    let r = more_manifests();
    let got: Vec<String> = r.images.iter().map(|e| e.source.to_string()).collect();
    let want = [
        "docker.io/kubevirt/cirros-container-disk-demo:mybuild",
        "docker.io/library/busybox:latest",
        "docker.io/library/debian:latest",
        "docker.io/library/golang:1.23",
        "docker.io/library/python:3.12-alpine",
        "ghcr.io/example/cache:7.2.4",
        "ghcr.io/example/sidecar:2.0",
        "quay.io/argoproj/argoexec:v3.6.7",
        "quay.io/argoproj/workflow-controller:v3.6.7",
        "quay.io/brancz/kube-rbac-proxy:v0.13.1",
        "quay.io/crio/artifact:v2",
        "quay.io/example/agent:v1.2.0",
        "quay.io/example/operator:v1.2.0",
        "quay.io/jetstack/cert-manager-acmesolver:v1.16.2",
        "quay.io/jetstack/cert-manager-controller:v1.16.2",
        "quay.io/prometheus-operator/prometheus-config-reloader:v0.60.1",
        "quay.io/prometheus-operator/prometheus-operator:v0.60.1",
        "quay.io/prometheus/prometheus:v2.40.1",
    ];
    assert_eq!(got, want);
    let prov = |img: &str| -> String {
        let e = r.images.iter().find(|e| e.source.to_string() == img).unwrap();
        e.provenance.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" | ")
    };
    let reloader = prov("quay.io/prometheus-operator/prometheus-config-reloader:v0.60.1");
    assert!(
        reloader.contains("kube-prometheus-operator-deployment.yaml:32")
            && reloader.contains("container prometheus-operator flag --prometheus-config-reloader"),
        "{reloader}"
    );
    assert!(prov("quay.io/argoproj/argoexec:v3.6.7").contains("operators-injected.yaml:36"), "the `--f x` form");
    assert!(prov("quay.io/example/agent:v1.2.0").contains("container manager variable RELATED_IMAGE_AGENT"));
    assert!(prov("ghcr.io/example/sidecar:2.0").contains("variable MY_SIDECAR_IMAGE"));
    assert!(
        prov("quay.io/crio/artifact:v2").contains("k8s-image-volumes.yaml:24")
            && prov("quay.io/crio/artifact:v2").contains("image volume")
    );
    assert_eq!(
        r.images.iter().find(|e| e.source.to_string() == "docker.io/library/busybox:latest").unwrap().provenance.len(),
        2
    );
    let warnings = r.warnings.join("\n");
    assert!(warnings.contains("Instance wg-vm") && warnings.contains("debian-cloud/debian-12"), "{warnings}");
    assert!(warnings.contains("Cache default spec.image is empty"), "{warnings}");
    assert_eq!(r.warnings.len(), 2, "{warnings}");
}

// Checks that rewrite points operator flags and variables at the target too (so the operator
// starts its pods from the private registry), and that the re-extraction check accepts it.
#[test]
fn rewrite_reaches_injected_images() {
    let r = more_manifests();
    let mapper = r.mapper.as_ref().unwrap();
    let digest = Digest::parse(&format!("sha256:{}", "c".repeat(64))).unwrap();
    let digests: BTreeMap<String, Digest> = r.images.iter().map(|e| (e.source.to_string(), digest.clone())).collect();
    let files = rewrite::rewrite_files(&r.workloads, mapper, &digests).unwrap();
    let ops = files.iter().find(|f| f.contains("cert-manager-acmesolver")).unwrap();
    assert!(ops.contains(&format!(
        "--acme-http01-solver-image=acr.example.io/mirror/quay.io/jetstack/cert-manager-acmesolver:v1.16.2@{digest}"
    )));
    assert!(ops.contains(&format!("- acr.example.io/mirror/quay.io/argoproj/argoexec:v3.6.7@{digest}")));
}

// Checks that templated images in pod specs are refused as unrendered templates (not "must be
// lowercase"), with file and line, while a template handed to an operator by a flag is a
// warning naming it (operators keep defaults in them); and that an empty image in a core kind
// stays an error while a custom resource's is a warning (above).
#[test]
fn templates_and_empty_images() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [("image: ${REGISTRY}/team/app:1.0", 8), ("image: \"{{ .Values.image }}\"", 8)];
    for (i, (container, line)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("t{i}.yaml"));
        std::fs::write(
            &f,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    {container}\n"
            ),
        )
        .unwrap();
        let cfg = config(&format!("target: a.io\nworkloads: {{manifests: [{}]}}\n", f.display()));
        let e = imageset::resolve(&cfg, dir.path()).unwrap_err().to_string();
        assert!(e.contains("unrendered template") && e.contains(&format!("t{i}.yaml:{line}")), "{e}");
    }
    let f = dir.path().join("flag.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: x:1\n    args: [\"--executor-image=$(EXEC_IMAGE)\"]\n",
    )
    .unwrap();
    let cfg = config(&format!("target: a.io\nworkloads: {{manifests: [{}]}}\n", f.display()));
    let r = imageset::resolve(&cfg, dir.path()).unwrap();
    assert_eq!(r.images.len(), 1, "only the container's own image");
    let w = r.warnings.join("\n");
    assert!(w.contains("flag --executor-image") && w.contains("$(EXEC_IMAGE)") && w.contains("template"), "{w}");
    let f = dir.path().join("empty.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: \"\"}]\n",
    )
    .unwrap();
    let cfg = config(&format!("target: a.io\nworkloads: {{manifests: [{}]}}\n", f.display()));
    let e = imageset::resolve(&cfg, dir.path()).unwrap_err().to_string();
    assert!(e.contains("empty.yaml:5") && e.contains("empty reference"), "{e}");
}

// Checks that an IPv6 registry host maps under `{registry}` to a valid, unambiguous path.
#[test]
fn ipv6_registry_hosts_map() {
    let r = resolve("target: acr.example.io\nimages: ['[::1]:5000/tools/x:3', '[fd00::1]/tools/x:3']\n");
    let targets: Vec<String> = r.images.iter().map(|e| e.target.to_string()).collect();
    assert_eq!(
        targets,
        [
            "acr.example.io/mirror/ipv6-0-0-0-0-0-0-0-1_5000/tools/x:3",
            "acr.example.io/mirror/ipv6-fd00-0-0-0-0-0-0-1/tools/x:3"
        ]
    );
}

// Checks that `platforms` leaving out an architecture the cluster's nodes run is an error naming
// both settings, never entries that widen to every platform.
#[test]
fn platforms_must_cover_the_cluster() {
    for archs in ["[arm64]", "[amd64, arm64]"] {
        let e = resolve_err(&format!(
            "target: a.io\nplatforms: [linux/amd64]\naks: {{kubernetesVersion: '1.34', architectures: {archs}}}\n"
        ));
        assert!(e.contains("aks.architectures names arm64") && e.contains("`platforms` (linux/amd64)"), "{e}");
    }
    let r = resolve(
        "target: a.io\nplatforms: [linux/amd64, linux/arm64]\naks: {kubernetesVersion: '1.34', architectures: [amd64, arm64]}\n",
    );
    assert!(r.images.iter().all(|e| e.platforms.list().is_some()), "no AKS entry carries every platform");
}

// Checks patch narrowing: with 1.34.3 the CSI drivers keep every 1.34 tag the list has (their
// patch numbers are their own releases), the kubernetes-node binaries (Kubernetes itself) are
// narrowed when the patch exists, and there are no warnings about Flatcar sysexts when Flatcar
// is not chosen, nor about legacy `oss/kubernetes` paths whose `oss/v2` twin is taken.
#[test]
fn patch_narrowing_follows_kubernetes_releases_only() {
    let r = resolve("target: a.io\naks: {kubernetesVersion: '1.34.3'}\n");
    let all = resolve("target: a.io\naks: {kubernetesVersion: '1.34'}\n");
    let csi = |r: &imageset::Resolved| -> Vec<String> {
        r.images
            .iter()
            .map(|e| e.source.to_string())
            .filter(|s| s.contains("azuredisk-csi:") || s.contains("azurefile-csi:"))
            .collect()
    };
    assert!(!csi(&r).is_empty());
    assert_eq!(csi(&r), csi(&all));
    let w = r.warnings.join("\n");
    assert!(!w.contains("sysext") && !w.contains("Flatcar") && !w.contains("azuredisk"), "{w}");
    // The older components.json has legacy `oss/kubernetes/…` repositories beside `oss/v2/…`:
    // a gap in one of a pair whose twin is taken is not reported.
    let (_dir, set) = lists_from("components-2026-06-16.json", "42fa7ea890be");
    let choice = ClusterChoice {
        version: KubeVersion::parse("1.34").unwrap(),
        architectures: vec!["amd64".into()],
        gpu: false,
        os: vec![NodeOs::Linux],
    };
    let sel = select(&set, &choice).unwrap();
    let chosen: Vec<String> =
        sel.chosen.iter().map(|c| acr_mirror::reference::without_tag_or_digest(&c.entry.image).to_string()).collect();
    for w in &sel.warnings {
        for (old, new) in [("/oss/kubernetes", "/oss/v2/kubernetes"), ("/oss/v2/kubernetes", "/oss/kubernetes")] {
            assert!(!chosen.iter().any(|c| w.contains(&format!("no {} image", c.replacen(new, old, 1)))), "{w}");
        }
    }
}

// Checks `oci://` Helm charts in `images:`: an artifact of kind helm-chart, mapped like any
// image, carrying every platform (a chart has none).
#[test]
fn helm_charts_as_artifacts() {
    let r = resolve(
        "target: acr.example.io\nplatforms: [linux/amd64]\nimages: ['oci://ghcr.io/argoproj/argo-helm/argo-cd:7.7.0']\n",
    );
    let e = &r.images[0];
    assert_eq!(e.source.to_string(), "ghcr.io/argoproj/argo-helm/argo-cd:7.7.0");
    assert_eq!(e.target.to_string(), "acr.example.io/mirror/ghcr.io/argoproj/argo-helm/argo-cd:7.7.0");
    assert_eq!((e.kind, e.platforms.list()), (ImageKind::HelmChart, None));
}

/// A multi-document manifest of `n` Deployments, each with a distinct image.
fn deployments(n: usize, list: bool) -> String {
    let mut s = String::new();
    if list {
        s.push_str("apiVersion: v1\nkind: List\nitems:\n");
    }
    for i in 0..n {
        let doc = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{i}\n  labels: {{app: app-{i}, team: platform}}\nspec:\n  replicas: 2\n  template:\n    metadata:\n      labels: {{app: app-{i}}}\n    spec:\n      containers:\n      - name: app\n        image: registry.example.com/team/app-{i}:1.{i}\n        ports: [{{containerPort: 8080}}]\n        resources: {{requests: {{cpu: 10m, memory: 32Mi}}}}\n"
        );
        if list {
            s.push_str("- ");
            s.push_str(doc.replace('\n', "\n  ").trim_end());
            s.push('\n');
        } else {
            s.push_str("---\n");
            s.push_str(&doc);
        }
    }
    s
}

// Checks large inputs: a multi-document file of 10k Deployments (4 MB: 54 s before parsing was
// made linear) and a 3 MB `kind: List` of 7.5k Deployments (refused before by a fixed node
// budget) resolve, with every image at its own line. No timing assertion: a regression back to
// quadratic parsing shows as a test that takes minutes.
#[test]
fn large_inputs_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let big = deployments(10_000, false);
    assert!(big.len() > 3_800_000, "{}", big.len());
    std::fs::write(dir.path().join("big.yaml"), &big).unwrap();
    let list = deployments(7_500, true);
    assert!(list.len() > 3_000_000, "{}", list.len());
    std::fs::write(dir.path().join("list.yaml"), &list).unwrap();
    let cfg = config("target: a.io\nworkloads: {manifests: [big.yaml, list.yaml]}\n");
    let r = imageset::resolve(&cfg, dir.path()).unwrap();
    assert_eq!(r.workloads[0].images.len(), 10_000);
    assert_eq!(r.workloads[1].images.len(), 7_500);
    let last = &r.workloads[0].images[9_999];
    assert_eq!(
        (last.reference.to_string().as_str(), last.line),
        ("registry.example.com/team/app-9999:1.9999", 10_000 * 17 - 2)
    );
}

// Checks that a YAML bomb (nested aliases expanding a few hundred bytes to billions of nodes)
// is still refused, with the file named, while ordinary anchors and aliases are fine.
#[test]
fn yaml_bombs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bomb = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n  a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!("  a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"));
    }
    std::fs::write(dir.path().join("bomb.yaml"), &bomb).unwrap();
    let cfg = config("target: a.io\nworkloads: {manifests: [bomb.yaml]}\n");
    let e = imageset::resolve(&cfg, dir.path()).unwrap_err().to_string();
    assert!(e.contains("bomb.yaml"), "{e}");
    let anchors = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - &c {name: a, image: 'nginx:1', resources: {limits: {cpu: 1}}}\n  - *c\n";
    std::fs::write(dir.path().join("anchors.yaml"), anchors).unwrap();
    let cfg = config("target: a.io\nworkloads: {manifests: [anchors.yaml]}\n");
    assert_eq!(imageset::resolve(&cfg, dir.path()).unwrap().workloads[0].images.len(), 2);
}

// Checks tag rules against a real registry with seeded tags: latest N by semver within a range
// (the last three patch releases of the ingress-nginx controller), allow/deny regexes, the
// reason shown for each tag, a rule that chooses nothing (warning; error with strict), and a
// rule that does not compile (error at its line).
#[tokio::test]
async fn tag_rules_against_a_real_registry() {
    use support::{Format, Seeder, TestRegistry};
    let src = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&src.url(), 7);
    for tag in ["v1.10.6", "v1.11.1", "v1.11.2", "v1.11.3", "v1.11.4", "v1.12.0-beta.0", "v1.12.0", "latest"] {
        seeder.push_random_image("ingress-nginx/controller", tag, Format::Oci, &[64]).await;
    }
    let yaml = format!(
        "target: acr.example.io\nregistries:\n  - host: registry.k8s.io\n    endpoint: {}\n    auth: {{type: anonymous}}\n\
         images:\n  - repository: registry.k8s.io/ingress-nginx/controller\n    tags: {{semver: '~1.11', latest: 3}}\n\
         \x20 - repository: registry.k8s.io/ingress-nginx/controller\n    tags: {{allow: ['v1\\.1[02]\\..*'], deny: ['.*-beta.*']}}\n\
         \x20 - repository: registry.k8s.io/ingress-nginx/controller\n    tags: {{semver: '>=2'}}\n",
        src.url()
    );
    let cfg = config(&yaml);
    let registries = acr_mirror::registry::Registries::from_config(&cfg).unwrap();
    let mut r = imageset::resolve(&cfg, &data("")).unwrap();
    assert_eq!(r.pending.len(), 3);
    imageset::select_tags(&mut r, &registries, false).await.unwrap();
    let got: Vec<(String, Vec<String>)> = r
        .images
        .iter()
        .map(|e| (e.source.tag.clone().unwrap(), e.provenance.iter().map(|p| p.to_string()).collect()))
        .collect();
    let tags: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tags, ["v1.10.6", "v1.11.2", "v1.11.3", "v1.11.4", "v1.12.0"]);
    assert_eq!(got[3].1, ["config images[0] (line 7) tags semver ~1.11, latest 3: version 1 of the 3 newest"]);
    assert!(got[4].1[0].contains("images[1]") && got[4].1[0].contains("allow"), "{:?}", got[4]);
    assert!(
        r.warnings.iter().any(|w| w.contains("images[2]") && w.contains("chose none of the 8 tags")),
        "{:?}",
        r.warnings
    );

    let mut r = imageset::resolve(&cfg, &data("")).unwrap();
    let e = imageset::select_tags(&mut r, &registries, true).await.unwrap_err().to_string();
    assert!(e.contains("--strict") && e.contains("images[2]"), "{e}");

    let e = resolve_err("target: a.io\nimages:\n  - repository: quay.io/a/b\n    tags: {allow: ['(']}\n");
    assert!(e.contains("images[0] (line 3)") && e.contains("regular expression"), "{e}");
    let e = resolve_err("target: a.io\nimages:\n  - repository: quay.io/a/b:1\n    tags: {all: true}\n");
    assert!(e.contains("has a tag"), "{e}");
}
