//! Pointing workload manifests at the private registry.
//!
//! Only `mcr.microsoft.com` is redirected on network isolated nodes (the containerd `hosts.toml`
//! AgentBaker writes), so every other image must be referenced at the ACR itself, and pinned by
//! digest so that what runs is what was copied. Two outputs:
//! - the manifests written back with each image string replaced on the line it stood, so
//!   comments and formatting survive; every replacement is checked by extracting the images
//!   again from the result;
//! - a kustomize `images:` block (`name`/`newName`/`digest`) to add to a kustomization.
//!
//! Digests come from a [`DigestSource`]: the digest in the source reference when it has one,
//! else the source's digest as the registry engine (or a `--digests` file) reports it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::digest::Digest;
use crate::reference::Reference;

use super::WorkloadFile;
use super::mapping::{Mapper, MappingError};
use super::workloads;

/// Where digests of source images come from.
pub trait DigestSource {
    /// The manifest digest of `source` (the index digest for a multi-arch image), if known.
    fn digest_of(&self, source: &Reference) -> Option<Digest>;
}

impl DigestSource for HashMap<String, Digest> {
    fn digest_of(&self, source: &Reference) -> Option<Digest> {
        self.get(&source.to_string()).cloned()
    }
}

impl DigestSource for BTreeMap<String, Digest> {
    fn digest_of(&self, source: &Reference) -> Option<Digest> {
        self.get(&source.to_string()).cloned()
    }
}

/// Why a rewrite could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("no digest known for {}: run the copy first, or pass --digests with them", .0.join(", "))]
    MissingDigests(Vec<String>),
    #[error("digests file: {0}")]
    DigestsFile(String),
    #[error(
        "kustomize images: {name} is used with different digests ({a} and {b}); a kustomize image override cannot tell them apart, write the manifests with --out instead"
    )]
    KustomizeConflict { name: String, a: String, b: String },
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error("{file}:{line}: could not rewrite {image}: {reason}")]
    Check { file: String, line: usize, image: String, reason: String },
}

/// Reads a `--digests` file: a JSON object `{"<source ref>": "sha256:…"}`, the output of
/// `mirror resolve -o json` (its `images[].source` and `images[].digest`), or a `sync`/`verify`
/// JSON report (`images[].source` and `images[].targetDigest`). Keys are normalised,
/// so `nginx:1` and `docker.io/library/nginx:1` are the same image.
pub fn parse_digests(text: &str) -> Result<BTreeMap<String, Digest>, RewriteError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| RewriteError::DigestsFile(e.to_string()))?;
    let mut out = BTreeMap::new();
    let mut put = |k: &str, d: &str| -> Result<(), RewriteError> {
        let r = Reference::parse(k).map_err(|e| RewriteError::DigestsFile(e.to_string()))?;
        let d = Digest::parse(d).map_err(|e| RewriteError::DigestsFile(format!("{k}: {e}")))?;
        out.insert(r.to_string(), d);
        Ok(())
    };
    if let Some(images) = v.get("images").and_then(|x| x.as_array()) {
        for i in images {
            // `resolve -o json` says `digest`; a sync or verify report says `targetDigest` (what
            // the target holds: under the rewrite index policy it differs from the source's).
            let digest =
                ["digest", "targetDigest", "sourceDigest"].iter().find_map(|k| i.get(*k).and_then(|x| x.as_str()));
            if let (Some(s), Some(d)) = (i.get("source").and_then(|x| x.as_str()), digest) {
                put(s, d)?;
            }
        }
    } else if let Some(m) = v.as_object() {
        for (k, d) in m {
            let d = d.as_str().ok_or_else(|| RewriteError::DigestsFile(format!("{k}: digest is not a string")))?;
            put(k, d)?;
        }
    } else {
        return Err(RewriteError::DigestsFile("expected a JSON object".into()));
    }
    Ok(out)
}

/// The reference a manifest should use for `source`: its target, pinned by digest (the tag is
/// kept for people reading the manifest).
pub fn pinned(
    source: &Reference,
    mapper: &Mapper,
    digests: &dyn DigestSource,
) -> Result<Option<Reference>, MappingError> {
    let (target, _, _) = mapper.map(source)?;
    let d = source.digest.clone().or_else(|| digests.digest_of(source));
    Ok(d.map(|d| target.with_digest(d)))
}

/// Every source in the files whose digest is unknown, sorted and de-duplicated (`pod_specs`:
/// only images that stand in pod specs).
fn missing(files: &[WorkloadFile], digests: &dyn DigestSource, pod_specs: bool) -> Vec<String> {
    let mut m: Vec<String> = files
        .iter()
        .flat_map(|f| &f.images)
        .filter(|i| !(pod_specs && i.injected))
        .filter(|i| i.reference.digest.is_none() && digests.digest_of(&i.reference).is_none())
        .map(|i| i.reference.to_string())
        .collect();
    m.sort();
    m.dedup();
    m
}

/// Rewrites every file; fails as a whole, naming every image without a digest, rather than
/// writing a half-pinned set.
pub fn rewrite_files(
    files: &[WorkloadFile],
    mapper: &Mapper,
    digests: &dyn DigestSource,
) -> Result<Vec<String>, RewriteError> {
    let m = missing(files, digests, false);
    if !m.is_empty() {
        return Err(RewriteError::MissingDigests(m));
    }
    files.iter().map(|f| rewrite_file(f, mapper, digests)).collect()
}

/// One file with its images replaced on their lines.
pub fn rewrite_file(file: &WorkloadFile, mapper: &Mapper, digests: &dyn DigestSource) -> Result<String, RewriteError> {
    let mut lines: Vec<String> = file.text.split_inclusive('\n').map(str::to_string).collect();
    let mut expected = Vec::new();
    for img in &file.images {
        let new = pinned(&img.reference, mapper, digests)?
            .ok_or_else(|| RewriteError::MissingDigests(vec![img.reference.to_string()]))?;
        let idx = img.line - 1;
        let Some(line) = lines.get_mut(idx) else {
            return Err(RewriteError::Check {
                file: file.name.clone(),
                line: img.line,
                image: img.written.clone(),
                reason: "line out of range".into(),
            });
        };
        if line.contains(&img.written) {
            *line = replace_word(line, &img.written, &new.to_string());
        }
        expected.push(new.to_string());
    }
    let out: String = lines.concat();
    // Check: the rewritten text names exactly the expected images, in the same order.
    let again = workloads::extract(&out, &file.name, &file.injected).map_err(|e| RewriteError::Check {
        file: file.name.clone(),
        line: 0,
        image: String::new(),
        reason: e.to_string(),
    })?;
    let again = again.images;
    for (got, (want, img)) in again.iter().zip(expected.iter().zip(&file.images)) {
        if got.reference.to_string() != *want {
            return Err(RewriteError::Check {
                file: file.name.clone(),
                line: img.line,
                image: img.written.clone(),
                reason: format!("the image is not on its own line; found {} after rewriting", got.reference),
            });
        }
    }
    if again.len() != expected.len() {
        return Err(RewriteError::Check {
            file: file.name.clone(),
            line: 0,
            image: String::new(),
            reason: "rewriting changed the number of images".into(),
        });
    }
    Ok(out)
}

/// Replaces `old` where it is the value of an `image` key on `line` (so `{name: nginx, image:
/// nginx}` keeps its name); where no occurrence is, every whole-word occurrence.
fn replace_word(line: &str, old: &str, new: &str) -> String {
    let all: Vec<usize> = workloads::word_matches(line, old).collect();
    let keyed: Vec<usize> = all.iter().copied().filter(|&i| workloads::is_image_key_prefix(&line[..i])).collect();
    let chosen = if keyed.is_empty() { all } else { keyed };
    let mut out = String::with_capacity(line.len() + new.len());
    let mut last = 0;
    for i in chosen {
        out.push_str(&line[last..i]);
        out.push_str(new);
        last = i + old.len();
    }
    out.push_str(&line[last..]);
    out
}

/// A kustomize `images:` block for every image in the pod specs of the files: `name` is the
/// image name as the manifests write it (kustomize matches on that), `newName` the target,
/// `digest` the pin. Kustomize's image override changes container `image` fields only, so
/// images handed to operators (variables, flags, ConfigMaps) are left out, and a comment in the
/// block says how many and that `--out` rewrites them.
pub fn kustomize_images(
    files: &[WorkloadFile],
    mapper: &Mapper,
    digests: &dyn DigestSource,
) -> Result<String, RewriteError> {
    let m = missing(files, digests, true);
    if !m.is_empty() {
        return Err(RewriteError::MissingDigests(m));
    }
    let mut by_name: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut handed: std::collections::BTreeSet<String> = Default::default();
    for img in files.iter().flat_map(|f| &f.images) {
        if img.injected {
            handed.insert(img.reference.to_string());
            continue;
        }
        let new = pinned(&img.reference, mapper, digests)?
            .ok_or_else(|| RewriteError::MissingDigests(vec![img.reference.to_string()]))?;
        let name = written_name(&img.written);
        let digest = new.digest.as_ref().map(|d| d.to_string()).unwrap_or_default();
        let entry = (new.name(), digest);
        match by_name.get(&name) {
            Some(prev) if *prev != entry => {
                return Err(RewriteError::KustomizeConflict { name, a: prev.1.clone(), b: entry.1 });
            }
            _ => {
                by_name.insert(name, entry);
            }
        }
    }
    let mut o = String::from("# Generated by `mirror rewrite --kustomize`: add to your kustomization.yaml.\n");
    if !handed.is_empty() {
        let _ = writeln!(
            o,
            "# Not here: {} images handed to operators in variables, flags or ConfigMaps, which kustomize's\n# image override does not change; `mirror rewrite --out DIR` rewrites those.",
            handed.len()
        );
    }
    o.push_str("images:\n");
    for (name, (new_name, digest)) in by_name {
        let _ = writeln!(o, "  - name: {name}\n    newName: {new_name}\n    digest: {digest}");
    }
    Ok(o)
}

/// The image name as written, without tag or digest.
fn written_name(w: &str) -> String {
    crate::reference::without_tag_or_digest(w).to_string()
}

#[cfg(test)]
mod tests {

    // Checks that a sync report pins each source to the digest the target holds.
    #[test]
    fn digests_come_from_sync_reports() {
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let report = format!(
            r#"{{"command":"sync","images":[{{"source":"nginx:1","targetDigest":"{d1}","sourceDigest":"{d2}"}},
            {{"source":"quay.io/a/b:2","targetDigest":null,"sourceDigest":"{d2}"}}]}}"#
        );
        let m = parse_digests(&report).unwrap();
        assert_eq!(m["docker.io/library/nginx:1"].as_str(), d1);
        assert_eq!(m["quay.io/a/b:2"].as_str(), d2, "source digest when the target has none yet");
    }
    use super::*;

    fn file(text: &str) -> WorkloadFile {
        WorkloadFile {
            name: "w.yaml".into(),
            path: None,
            text: text.into(),
            images: workloads::extract(text, "w.yaml", &workloads::Injected::default()).unwrap().images,
            injected: workloads::Injected::default(),
        }
    }

    const POD: &str = "\
# a comment that stays
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: a
    image: nginx:1.27   # pinned below
  - name: b
    image: nginx:1.27-alpine
";

    fn digests() -> BTreeMap<String, Digest> {
        let mut m = BTreeMap::new();
        m.insert("docker.io/library/nginx:1.27".into(), Digest::parse(&format!("sha256:{}", "1".repeat(64))).unwrap());
        m.insert(
            "docker.io/library/nginx:1.27-alpine".into(),
            Digest::parse(&format!("sha256:{}", "2".repeat(64))).unwrap(),
        );
        m
    }

    // Checks in-place rewriting: comments kept, whole words only, pinned by digest.
    #[test]
    fn rewrites_in_place() {
        let mapper = Mapper::new(Some("myacr.azurecr.io"), &[]).unwrap();
        let out = rewrite_files(&[file(POD)], &mapper, &digests()).unwrap().remove(0);
        assert!(out.starts_with("# a comment that stays\n"));
        assert!(out.contains(&format!(
            "    image: myacr.azurecr.io/mirror/docker.io/library/nginx:1.27@sha256:{}   # pinned below\n",
            "1".repeat(64)
        )));
        assert!(out.contains(&format!(
            "    image: myacr.azurecr.io/mirror/docker.io/library/nginx:1.27-alpine@sha256:{}\n",
            "2".repeat(64)
        )));
    }

    // Checks that flow style keeps a container name equal to the image string.
    #[test]
    fn flow_style_keeps_names() {
        let mapper = Mapper::new(Some("a.io"), &[]).unwrap();
        let text =
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: nginx, image: nginx}]}\n";
        let mut d = BTreeMap::new();
        d.insert(
            "docker.io/library/nginx:latest".to_string(),
            Digest::parse(&format!("sha256:{}", "5".repeat(64))).unwrap(),
        );
        let out = rewrite_file(&file(text), &mapper, &d).unwrap();
        assert!(
            out.contains(&format!(
                "{{name: nginx, image: a.io/mirror/docker.io/library/nginx:latest@sha256:{}}}",
                "5".repeat(64)
            )),
            "{out}"
        );
    }

    // Checks that a missing digest is an error naming the image, and nothing is half-written.
    #[test]
    fn missing_digests_are_named() {
        let mapper = Mapper::new(Some("myacr.azurecr.io"), &[]).unwrap();
        let mut d = digests();
        d.remove("docker.io/library/nginx:1.27-alpine");
        let e = rewrite_files(&[file(POD)], &mapper, &d).unwrap_err().to_string();
        assert!(e.contains("docker.io/library/nginx:1.27-alpine"), "{e}");
    }

    // Checks the kustomize block and the digests-file formats.
    #[test]
    fn kustomize_block_and_digest_files() {
        let mapper = Mapper::new(Some("myacr.azurecr.io"), &[]).unwrap();
        let e = kustomize_images(&[file(POD)], &mapper, &digests()).unwrap_err();
        assert!(matches!(e, RewriteError::KustomizeConflict { .. }), "two tags of nginx cannot share a name");
        let one =
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: nginx:1.27}]}\n";
        let out = kustomize_images(&[file(one)], &mapper, &digests()).unwrap();
        assert!(out.contains(&format!(
            "  - name: nginx\n    newName: myacr.azurecr.io/mirror/docker.io/library/nginx\n    digest: sha256:{}\n",
            "1".repeat(64)
        )));
        let m = parse_digests(&format!("{{\"nginx:1\": \"sha256:{}\"}}", "3".repeat(64))).unwrap();
        assert!(m.contains_key("docker.io/library/nginx:1"));
        let m = parse_digests(&format!(
            "{{\"images\": [{{\"source\": \"a.io/b:c\", \"digest\": \"sha256:{}\"}}]}}",
            "4".repeat(64)
        ))
        .unwrap();
        assert!(m.contains_key("a.io/b:c"));
        assert!(parse_digests("[1]").is_err());
    }

    // Checks that rewrite reaches values found by rule, each on its own line: YAML and JSON
    // held in a ConfigMap value, a ConfigMap value read through configMapKeyRef, a variable, a
    // flag; a pinned digest is kept; and the result extracts to the same images again.
    #[test]
    fn rewrites_values_handed_to_operators() {
        let text = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data:
  config.yaml: |
    executor:
      image: quay.io/argoproj/argoexec:v3.6.7
  sidecars.json: '{\"images\": [\"ghcr.io/a/one:1\"]}'
  timer: gcr.io/k/timer@sha256:45af6d4df89c379656ef482f048d559cd8d8d4e286b3e440ef9a6c94fcc8d920
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: op}
spec:
  template:
    spec:
      containers:
      - name: op
        image: ghcr.io/a/op:1
        args: [--helper-image=ghcr.io/a/helper:1]
        env:
        - {name: AGENT_IMAGE, value: ghcr.io/a/agent:1}
        - name: TIMER_IMAGE
          valueFrom: {configMapKeyRef: {name: settings, key: timer}}
";
        let mapper = Mapper::new(Some("acr.io"), &[]).unwrap();
        let f = file(text);
        assert_eq!(f.images.len(), 6);
        let d = Digest::parse(&format!("sha256:{}", "7".repeat(64))).unwrap();
        let digests: BTreeMap<String, Digest> = f.images.iter().map(|i| (i.reference.to_string(), d.clone())).collect();
        let out = rewrite_file(&f, &mapper, &digests).unwrap();
        for line in [
            format!("      image: acr.io/mirror/quay.io/argoproj/argoexec:v3.6.7@{d}\n"),
            format!("  sidecars.json: '{{\"images\": [\"acr.io/mirror/ghcr.io/a/one:1@{d}\"]}}'\n"),
            "  timer: acr.io/mirror/gcr.io/k/timer@sha256:45af6d4df89c379656ef482f048d559cd8d8d4e286b3e440ef9a6c94fcc8d920\n".to_string(),
            format!("        args: [--helper-image=acr.io/mirror/ghcr.io/a/helper:1@{d}]\n"),
            format!("        - {{name: AGENT_IMAGE, value: acr.io/mirror/ghcr.io/a/agent:1@{d}}}\n"),
        ] {
            assert!(out.contains(&line), "{line:?} not in\n{out}");
        }
    }
}
