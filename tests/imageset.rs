//! The image set on real inputs (AgentBaker components.json at two commits, the ingress-nginx
//! and argo-cd install manifests), compared with sets written by hand from reading those files,
//! and every bad-input case of the issue with its message checked.

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
