//! AgentBaker's `components.json` → one component list per Kubernetes minor.
//!
//! `components.json` (Azure/AgentBaker `parts/common/components.json`) is the file AKS node
//! images are built from. What is taken:
//! - `ContainerImages[]`: `downloadURL` with `*` replaced by every `latestVersion` and
//!   `previousLatestVersion` of `multiArchVersionsV2` (platforms linux/amd64 and linux/arm64)
//!   and every `amd64OnlyVersions` tag (linux/amd64). `windowsVersions` are left out (counted
//!   in `windowsOmitted`): network isolated mode has no Windows node pools.
//! - `GPUContainerImages[]`: the `gpuVersion` tags, kind `gpu-image`, linux/amd64 only (the
//!   arm64 node images of the same AgentBaker commit carry no GPU driver image).
//! - `Packages[]` whose `downloadURL` is on `mcr.microsoft.com` (the kubernetes-node and
//!   credential-provider binaries, Flatcar system extensions): kind `oci-artifact`, one tag per
//!   architecture (`${CPU_ARCH}` → amd64/arm64, `${SYSTEMD_ARCH}` → x86-64/arm64). Entries under
//!   `windows` are left out; entries under `flatcar` are marked `os: flatcar`.
//! - `OCIArtifacts[]`: the same way; at the commits seen they are Windows-only and left out.
//!
//! How minors are known: a `Packages` version with a `k8sVersion` belongs to that minor; a
//! container image in [`FOLLOWS_KUBERNETES`] belongs to the minor its tag starts with
//! (`kube-proxy:v1.34.10-1` → 1.34; `components.json` gives container images no `k8sVersion`
//! at these commits). The minors covered are the union of both; every other entry is
//! version-independent and appears in every minor's file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::Value;

use super::lists::{ComponentList, ImageKind, ListEntry, ListSource, NodeOs, version_in_tag};
use crate::manifest::PlatformFilter;
use crate::reference::Reference;

/// Container images whose tags are built per Kubernetes minor. A node of minor X pulls the X
/// tag only (AgentBaker deletes non-matching kube-proxy images at provisioning), so the others
/// are not needed. The CSI drivers are versioned in step with AKS minors.
pub const FOLLOWS_KUBERNETES: &[&str] = &[
    "mcr.microsoft.com/oss/v2/kubernetes/kube-proxy",
    "mcr.microsoft.com/oss/kubernetes/kube-proxy",
    "mcr.microsoft.com/oss/v2/kubernetes/azure-cloud-node-manager",
    "mcr.microsoft.com/oss/kubernetes/azure-cloud-node-manager",
    "mcr.microsoft.com/oss/v2/kubernetes-csi/azuredisk-csi",
    "mcr.microsoft.com/oss/kubernetes-csi/azuredisk-csi",
    "mcr.microsoft.com/oss/v2/kubernetes-csi/azurefile-csi",
    "mcr.microsoft.com/oss/kubernetes-csi/azurefile-csi",
];

/// The input could not be turned into lists. Names the place in the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: not JSON: {source}")]
    Json { file: String, source: serde_json::Error },
    #[error("{file}: {place}: {message}")]
    Shape { file: String, place: String, message: String },
    #[error("{file}: no Kubernetes minor found (no k8sVersion in Packages and no kube-proxy tags)")]
    NoMinors { file: String },
}

/// An entry before it is sorted into minors.
#[derive(Debug, Clone)]
struct Raw {
    image: String,
    kind: ImageKind,
    platforms: BTreeSet<PlatformFilter>,
    /// None: version-independent.
    minor: Option<(u32, u32)>,
    version: Option<String>,
    os: NodeOs,
    from: Vec<String>,
}

fn linux(arch: &str) -> PlatformFilter {
    PlatformFilter { os: "linux".into(), architecture: arch.into(), variant: None }
}

/// Turns `components.json` text into one list per minor covered: every section read into
/// version-tagged entries, then the entries sorted into minors.
pub fn import(text: &str, source: &ListSource) -> Result<BTreeMap<(u32, u32), ComponentList>, ImportError> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| ImportError::Json { file: source.file.clone(), source: e })?;
    let mut r = Reader { file: source.file.clone(), raws: Vec::new(), windows: BTreeSet::new() };
    r.container_images(&root)?;
    r.gpu_images(&root)?;
    r.packages(&root)?;
    r.oci_artifacts(&root)?;
    let linux_refs: BTreeSet<&String> = r.raws.iter().map(|x| &x.image).collect();
    let windows_only = r.windows.iter().filter(|w| !linux_refs.contains(w)).count();
    let minors: BTreeSet<(u32, u32)> = r.raws.iter().filter_map(|x| x.minor).collect();
    if minors.is_empty() {
        return Err(ImportError::NoMinors { file: r.file });
    }
    Ok(minors.iter().map(|m| (*m, list_for_minor(&r.raws, *m, source, windows_only))).collect())
}

/// What has been read so far: the Linux entries, and the Windows-only references (counted only).
struct Reader {
    file: String,
    raws: Vec<Raw>,
    windows: BTreeSet<String>,
}

impl Reader {
    fn shape(&self, place: &str, message: &str) -> ImportError {
        ImportError::Shape { file: self.file.clone(), place: place.to_string(), message: message.to_string() }
    }

    /// Refuses an entry that does not make a valid reference, rather than writing it into a list.
    fn checked(&self, r: &str, place: &str) -> Result<String, ImportError> {
        Reference::parse(r).map(|x| x.to_string()).map_err(|e| self.shape(place, &e.to_string()))
    }

    /// `ContainerImages[]`: multi-arch and amd64-only tags; Windows tags counted.
    fn container_images(&mut self, root: &Value) -> Result<(), ImportError> {
        for (i, ci) in arr(root, "ContainerImages").iter().enumerate() {
            let place = format!("ContainerImages[{i}]");
            let url = ci
                .get("downloadURL")
                .and_then(Value::as_str)
                .ok_or_else(|| self.shape(&place, "has no downloadURL string"))?;
            let Some(repo) = url.strip_suffix(":*") else {
                return Err(self.shape(&place, &format!("downloadURL {url:?} does not end in :*")));
            };
            let follows = FOLLOWS_KUBERNETES.contains(&repo);
            for (j, v) in arr(ci, "multiArchVersionsV2").iter().enumerate() {
                for field in ["latestVersion", "previousLatestVersion"] {
                    if let Some(tag) = v.get(field).and_then(Value::as_str) {
                        let from = format!("{place} ({repo}) multiArchVersionsV2[{j}].{field}");
                        let k8s = v.get("k8sVersion").and_then(Value::as_str);
                        let raw = self.container(repo, tag, &["amd64", "arm64"], follows, k8s, from, &place)?;
                        self.raws.push(raw);
                    }
                }
            }
            for (j, v) in arr(ci, "amd64OnlyVersions").iter().enumerate() {
                for (tag, from) in self.amd64_only_tags(v, &place, repo, j)? {
                    let raw = self.container(repo, tag, &["amd64"], follows, None, from, &place)?;
                    self.raws.push(raw);
                }
            }
            for v in arr(ci, "windowsVersions") {
                for field in ["latestVersion", "previousLatestVersion"] {
                    if let Some(tag) = v.get(field).and_then(Value::as_str) {
                        self.windows.insert(format!("{repo}:{tag}"));
                    }
                }
            }
            // An entry with no versions at all (aks-app-routing-operator, …) gives no image.
        }
        Ok(())
    }

    /// The tags of one `amd64OnlyVersions` item: the schema says strings; VersionV2 objects are
    /// accepted too.
    fn amd64_only_tags<'a>(
        &self,
        v: &'a Value,
        place: &str,
        repo: &str,
        j: usize,
    ) -> Result<Vec<(&'a str, String)>, ImportError> {
        match v {
            Value::String(s) => Ok(vec![(s.as_str(), format!("{place} ({repo}) amd64OnlyVersions[{j}]"))]),
            Value::Object(_) => Ok(["latestVersion", "previousLatestVersion"]
                .iter()
                .filter_map(|f| {
                    v.get(*f)
                        .and_then(Value::as_str)
                        .map(|t| (t, format!("{place} ({repo}) amd64OnlyVersions[{j}].{f}")))
                })
                .collect()),
            _ => Err(self.shape(place, &format!("amd64OnlyVersions[{j}] is neither a string nor an object"))),
        }
    }

    /// `GPUContainerImages[]`: the `gpuVersion` tags, for linux/amd64 only.
    fn gpu_images(&mut self, root: &Value) -> Result<(), ImportError> {
        for (i, g) in arr(root, "GPUContainerImages").iter().enumerate() {
            let place = format!("GPUContainerImages[{i}]");
            let url =
                g.get("downloadURL").and_then(Value::as_str).ok_or_else(|| self.shape(&place, "has no downloadURL"))?;
            let repo = url.strip_suffix(":*").ok_or_else(|| self.shape(&place, "downloadURL does not end in :*"))?;
            let Some(v) = g.get("gpuVersion") else { continue };
            for field in ["latestVersion", "previousLatestVersion"] {
                if let Some(tag) = v.get(field).and_then(Value::as_str) {
                    let image = self.checked(&format!("{repo}:{tag}"), &place)?;
                    self.raws.push(Raw {
                        image,
                        kind: ImageKind::GpuImage,
                        platforms: [linux("amd64")].into(),
                        minor: None,
                        version: None,
                        os: NodeOs::Linux,
                        from: vec![format!("{place} ({repo}) gpuVersion.{field}")],
                    });
                }
            }
        }
        Ok(())
    }

    /// `Packages[]` published as OCI artifacts on MCR: one entry per version and architecture.
    fn packages(&mut self, root: &Value) -> Result<(), ImportError> {
        for (i, p) in arr(root, "Packages").iter().enumerate() {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
            let Some(uris) = p.get("downloadURIs").and_then(Value::as_object) else { continue };
            for (os_key, releases) in uris {
                let Some(releases) = releases.as_object() else { continue };
                for (rel, spec) in releases {
                    let place = format!("Packages[{i}] ({name}) downloadURIs.{os_key}.{rel}");
                    let Some(url) = spec.get("downloadURL").and_then(Value::as_str) else { continue };
                    if url.starts_with("mcr.microsoft.com/") {
                        self.package_versions(spec, url, os_key, &place)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn package_versions(&mut self, spec: &Value, url: &str, os_key: &str, place: &str) -> Result<(), ImportError> {
        for (j, v) in arr(spec, "versionsV2").iter().enumerate() {
            let minor = match v.get("k8sVersion").and_then(Value::as_str) {
                Some(m) => Some(parse_minor(m).ok_or_else(|| {
                    self.shape(&format!("{place}.versionsV2[{j}]"), &format!("k8sVersion {m:?} is not a minor"))
                })?),
                None => None,
            };
            for field in ["latestVersion", "previousLatestVersion"] {
                let Some(ver) = v.get(field).and_then(Value::as_str) else { continue };
                let from = format!("{place}.versionsV2[{j}].{field}");
                for (arch, cpu, systemd) in [("amd64", "amd64", "x86-64"), ("arm64", "arm64", "arm64")] {
                    let r =
                        url.replace("${version}", ver).replace("${CPU_ARCH}", cpu).replace("${SYSTEMD_ARCH}", systemd);
                    if os_key == "windows" {
                        self.windows.insert(r);
                        continue;
                    }
                    let image = self.checked(&r, place)?;
                    self.raws.push(Raw {
                        image,
                        kind: ImageKind::OciArtifact,
                        platforms: [linux(arch)].into(),
                        minor,
                        version: minor.and_then(|_| version_in_tag(ver)).map(|v| v.to_string()),
                        os: if os_key == "flatcar" { NodeOs::Flatcar } else { NodeOs::Linux },
                        from: vec![from.clone()],
                    });
                }
            }
        }
        Ok(())
    }

    /// `OCIArtifacts[]`: Windows-only at every commit seen; any Linux versions taken the same way.
    fn oci_artifacts(&mut self, root: &Value) -> Result<(), ImportError> {
        for (i, a) in arr(root, "OCIArtifacts").iter().enumerate() {
            let place = format!("OCIArtifacts[{i}]");
            let Some(url) = a.get("registry").and_then(Value::as_str) else { continue };
            for v in arr(a, "windowsVersions") {
                if let Some(ver) = v.get("latestVersion").and_then(Value::as_str) {
                    self.windows.insert(url.replace("${version}", ver).replace("${CPU_ARCH}", "amd64"));
                }
            }
            for (j, v) in arr(a, "multiArchVersionsV2").iter().enumerate() {
                for field in ["latestVersion", "previousLatestVersion"] {
                    let Some(ver) = v.get(field).and_then(Value::as_str) else { continue };
                    for arch in ["amd64", "arm64"] {
                        let image =
                            self.checked(&url.replace("${version}", ver).replace("${CPU_ARCH}", arch), &place)?;
                        self.raws.push(Raw {
                            image,
                            kind: ImageKind::OciArtifact,
                            platforms: [linux(arch)].into(),
                            minor: None,
                            version: None,
                            os: NodeOs::Linux,
                            from: vec![format!("{place}.multiArchVersionsV2[{j}].{field}")],
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// One container image tag; its minor comes from `k8sVersion`, else (for an image whose tags
    /// follow Kubernetes) from the tag itself.
    #[allow(clippy::too_many_arguments)]
    fn container(
        &self,
        repo: &str,
        tag: &str,
        archs: &[&str],
        follows: bool,
        k8s: Option<&str>,
        from: String,
        place: &str,
    ) -> Result<Raw, ImportError> {
        let image = self.checked(&format!("{repo}:{tag}"), place)?;
        let tag_version = version_in_tag(tag);
        let minor = match (k8s, follows) {
            (Some(m), _) => {
                Some(parse_minor(m).ok_or_else(|| self.shape(place, &format!("k8sVersion {m:?} is not a minor")))?)
            }
            (None, true) => {
                let v = tag_version.ok_or_else(|| {
                    self.shape(place, &format!("tag {tag:?} of a Kubernetes-versioned image has no version"))
                })?;
                Some((v.major, v.minor))
            }
            (None, false) => None,
        };
        Ok(Raw {
            image,
            kind: ImageKind::ContainerImage,
            platforms: archs.iter().map(|a| linux(a)).collect(),
            minor,
            version: minor.and(tag_version).map(|v| v.to_string()),
            os: NodeOs::Linux,
            from: vec![from],
        })
    }
}

/// The list for one minor: its version-following entries and every version-independent one,
/// merged by reference, with the version-following repositories that have no tag for it.
fn list_for_minor(raws: &[Raw], m: (u32, u32), source: &ListSource, windows_omitted: usize) -> ComponentList {
    let minor_s = format!("{}.{}", m.0, m.1);
    let mut by_ref: BTreeMap<String, Raw> = BTreeMap::new();
    for r in raws.iter().filter(|r| r.minor.is_none() || r.minor == Some(m)) {
        match by_ref.get_mut(&r.image) {
            Some(e) => {
                e.platforms.extend(r.platforms.iter().cloned());
                for f in &r.from {
                    if !e.from.contains(f) {
                        e.from.push(f.clone());
                    }
                }
            }
            None => {
                by_ref.insert(r.image.clone(), r.clone());
            }
        }
    }
    let following: BTreeSet<(String, ImageKind, NodeOs)> =
        raws.iter().filter(|r| r.minor.is_some()).map(|r| (repo_only(&r.image), r.kind, r.os)).collect();
    let mut gaps: Vec<String> = Vec::new();
    for (repo, kind, os) in &following {
        let present = by_ref.values().any(|r| r.minor.is_some() && repo_only(&r.image) == *repo && r.kind == *kind);
        let name = if *os == NodeOs::Flatcar { format!("{repo} (Flatcar)") } else { repo.clone() };
        if !present && !gaps.contains(&name) {
            gaps.push(name);
        }
    }
    let images = by_ref
        .into_values()
        .map(|r| ListEntry {
            image: r.image,
            kind: r.kind,
            platforms: r.platforms.into_iter().collect(),
            kubernetes_minors: vec![if r.minor.is_some() { minor_s.clone() } else { "*".into() }],
            kubernetes_version: r.version,
            os: r.os,
            from: r.from,
        })
        .collect();
    ComponentList { kubernetes_minor: minor_s, source: source.clone(), gaps, windows_omitted, images }
}

fn parse_minor(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn repo_only(image: &str) -> String {
    match image.rfind(':') {
        Some(c) if image.rfind('/').is_none_or(|s| c > s) => image[..c].to_string(),
        _ => image.to_string(),
    }
}

/// Renders one list as YAML with a header comment. Hand-written rather than serialised so the
/// committed files stay stable and easy to review; every string is double-quoted.
pub fn render(list: &ComponentList) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut o = String::new();
    let src = &list.source;
    let _ = writeln!(o, "# AKS component list for Kubernetes {}.", list.kubernetes_minor);
    let _ = writeln!(
        o,
        "# Generated by `mirror lists import-agentbaker` from {} ({} {} at commit {}).",
        src.file, src.repository, src.path, src.commit
    );
    let _ = writeln!(o, "# Do not edit by hand: re-run the importer on a newer components.json and review the diff.");
    let _ = writeln!(
        o,
        "# Windows-only references left out (network isolated mode has no Windows node pools): {}.",
        list.windows_omitted
    );
    let _ = writeln!(o, "kubernetesMinor: {}", q(&list.kubernetes_minor));
    let _ = writeln!(o, "source:");
    let _ = writeln!(o, "  file: {}", q(&src.file));
    let _ = writeln!(o, "  repository: {}", q(&src.repository));
    let _ = writeln!(o, "  path: {}", q(&src.path));
    let _ = writeln!(o, "  commit: {}", q(&src.commit));
    if list.gaps.is_empty() {
        let _ = writeln!(o, "gaps: []");
    } else {
        let _ = writeln!(o, "gaps:");
        for g in &list.gaps {
            let _ = writeln!(o, "  - {}", q(g));
        }
    }
    let _ = writeln!(o, "windowsOmitted: {}", list.windows_omitted);
    let _ = writeln!(o, "images:");
    for e in &list.images {
        let _ = writeln!(o, "  - image: {}", q(&e.image));
        let _ = writeln!(o, "    kind: {}", e.kind);
        let p: Vec<String> = e.platforms.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(o, "    platforms: [{}]", p.join(", "));
        let m: Vec<String> = e.kubernetes_minors.iter().map(|m| q(m)).collect();
        let _ = writeln!(o, "    kubernetesMinors: [{}]", m.join(", "));
        if let Some(v) = &e.kubernetes_version {
            let _ = writeln!(o, "    kubernetesVersion: {}", q(v));
        }
        if e.os != NodeOs::Linux {
            let _ = writeln!(o, "    os: {}", e.os);
        }
        let _ = writeln!(o, "    from:");
        for f in &e.from {
            let _ = writeln!(o, "      - {}", q(f));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageset::lists::parse_list;

    fn src() -> ListSource {
        ListSource {
            file: "c.json".into(),
            repository: "Azure/AgentBaker".into(),
            path: "p".into(),
            commit: "abc".into(),
        }
    }

    // Checks the sorting rule on a small hand-made input: kube-proxy tags go to their minor,
    // coredns to every minor, Windows tags nowhere, binaries per architecture.
    #[test]
    fn sorts_entries_into_minors() {
        let text = r#"{
          "ContainerImages": [
            {"downloadURL": "mcr.microsoft.com/oss/v2/kubernetes/kube-proxy:*", "amd64OnlyVersions": [],
             "multiArchVersionsV2": [{"latestVersion": "v1.33.7-16"}, {"latestVersion": "v1.34.10-1"}]},
            {"downloadURL": "mcr.microsoft.com/oss/v2/kubernetes/coredns:*", "amd64OnlyVersions": ["v9"],
             "multiArchVersionsV2": [{"latestVersion": "v1.14.3-11"}],
             "windowsVersions": [{"latestVersion": "w1"}]}
          ],
          "Packages": [{"name": "kubernetes-binaries", "downloadURIs": {"default": {"current": {
             "downloadURL": "mcr.microsoft.com/oss/binaries/kubernetes/kubernetes-node:${version}-linux-${CPU_ARCH}",
             "versionsV2": [{"k8sVersion": "1.34", "latestVersion": "v1.34.9"}]}}}}]
        }"#;
        let lists = import(text, &src()).unwrap();
        assert_eq!(lists.keys().copied().collect::<Vec<_>>(), vec![(1, 33), (1, 34)]);
        let l34 = &lists[&(1, 34)];
        let imgs: Vec<&str> = l34.images.iter().map(|e| e.image.as_str()).collect();
        assert!(imgs.contains(&"mcr.microsoft.com/oss/v2/kubernetes/kube-proxy:v1.34.10-1"));
        assert!(!imgs.contains(&"mcr.microsoft.com/oss/v2/kubernetes/kube-proxy:v1.33.7-16"));
        assert!(imgs.contains(&"mcr.microsoft.com/oss/v2/kubernetes/coredns:v1.14.3-11"));
        assert!(imgs.contains(&"mcr.microsoft.com/oss/binaries/kubernetes/kubernetes-node:v1.34.9-linux-arm64"));
        assert!(!imgs.iter().any(|i| i.ends_with(":w1")), "Windows tags must be left out");
        assert_eq!(l34.windows_omitted, 1);
        let coredns9 = l34.images.iter().find(|e| e.image.ends_with("coredns:v9")).unwrap();
        assert_eq!(coredns9.platforms, vec![linux("amd64")]);
        // 1.33 has kube-proxy but no kubernetes-node binaries: that is a gap.
        assert_eq!(lists[&(1, 33)].gaps, vec!["mcr.microsoft.com/oss/binaries/kubernetes/kubernetes-node".to_string()]);
        // Rendering and parsing back gives the same list.
        let back = parse_list(&render(l34), "x").unwrap();
        assert_eq!(&back, l34);
    }

    // Checks that a malformed entry is refused with its place in the file.
    #[test]
    fn bad_entries_are_named() {
        let e = import(r#"{"ContainerImages": [{"downloadURL": "mcr.microsoft.com/x:latest"}]}"#, &src()).unwrap_err();
        assert!(e.to_string().contains("ContainerImages[0]"), "{e}");
        let e = import("{not json", &src()).unwrap_err();
        assert!(e.to_string().contains("c.json"), "{e}");
    }
}
