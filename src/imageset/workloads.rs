//! Images named in Kubernetes YAML: files, folders, globs, or stdin (`helm template … |`,
//! `kustomize build … |`).
//!
//! Each document is parsed on its own with serde-saphyr into a `serde_json::Value`, after
//! padding it with as many blank lines as precede it in the file, so that parse errors carry the
//! file's own line and column. The line an image stands on is then found by scanning the
//! document's text for the image string (the n-th time the walk meets a string is matched to
//! its n-th occurrence in the document), which is exact for every manifest written one field a
//! line and falls back to the document's first line otherwise.
//!
//! Pod-bearing kinds are walked through their pod spec (containers, initContainers,
//! ephemeralContainers); `List` kinds through `items`; custom resources (an API group with a
//! dot that is not a `*.k8s.io` group) through every string field called `image` under
//! `spec`, which covers the Prometheus operator's `Prometheus`/`Alertmanager` `spec.image` and
//! the `containers` lists such resources embed. Other built-in kinds name no image.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::reference::{Reference, ReferenceError};

/// A workload input could not be read. Names the file (and line for YAML and references).
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("workloads.manifests: {pattern:?} matched no files")]
    GlobNoMatch { pattern: String },
    #[error("workloads.manifests: bad glob {pattern:?}: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error("workloads.manifests: folder {path} holds no .yaml, .yml or .json files")]
    EmptyFolder { path: PathBuf },
    #[error("workloads.manifests: cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{file}: malformed YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("{0}")]
    BadImage(Box<BadImage>),
}

/// An image string in a manifest that is not a valid reference, with where it stood.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {kind} {name} {field}: {error}")]
pub struct BadImage {
    pub file: String,
    pub line: usize,
    pub kind: String,
    pub name: String,
    pub field: String,
    pub error: ReferenceError,
}

/// One place a manifest input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

/// Expands `workloads.manifests` entries (relative to `base`, the config file's folder) into
/// inputs: `-` is stdin; an entry with `*`, `?` or `[` is a glob that must match something; a
/// folder is every `.yaml`/`.yml`/`.json` below it, sorted; anything else is a file.
pub fn expand(patterns: &[String], base: &Path) -> Result<Vec<Input>, WorkloadError> {
    let mut out = Vec::new();
    for p in patterns {
        if p == "-" {
            out.push(Input::Stdin);
            continue;
        }
        let full = if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };
        if p.contains(['*', '?', '[']) {
            let pat = full.to_string_lossy().to_string();
            let paths =
                glob::glob(&pat).map_err(|e| WorkloadError::BadGlob { pattern: p.clone(), reason: e.to_string() })?;
            let mut found: Vec<PathBuf> = Vec::new();
            for entry in paths {
                let path = entry.map_err(|e| WorkloadError::Read { path: e.path().to_path_buf(), error: e.into() })?;
                if path.is_dir() {
                    found.extend(yaml_files(&path)?);
                } else {
                    found.push(path);
                }
            }
            if found.is_empty() {
                return Err(WorkloadError::GlobNoMatch { pattern: p.clone() });
            }
            found.sort();
            out.extend(found.into_iter().map(Input::File));
        } else if full.is_dir() {
            let files = yaml_files(&full)?;
            if files.is_empty() {
                return Err(WorkloadError::EmptyFolder { path: full });
            }
            out.extend(files.into_iter().map(Input::File));
        } else {
            if !full.exists() {
                return Err(WorkloadError::Read {
                    path: full,
                    error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
                });
            }
            out.push(Input::File(full));
        }
    }
    Ok(out)
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, WorkloadError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|error| WorkloadError::Read { path: dir.to_path_buf(), error })?;
    for e in rd {
        let e = e.map_err(|error| WorkloadError::Read { path: dir.to_path_buf(), error })?;
        let p = e.path();
        if p.is_dir() {
            out.extend(yaml_files(&p)?);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Reads one input's text; `name` is what messages and provenance call it.
pub fn read_input(input: &Input) -> Result<(String, String), WorkloadError> {
    match input {
        Input::Stdin => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|error| WorkloadError::Read { path: PathBuf::from("<stdin>"), error })?;
            Ok(("<stdin>".into(), s))
        }
        Input::File(p) => {
            let s = std::fs::read_to_string(p).map_err(|error| WorkloadError::Read { path: p.clone(), error })?;
            Ok((p.display().to_string(), s))
        }
    }
}

/// One image found in a manifest, with everything needed to say why it is in the set and to
/// rewrite it in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FoundImage {
    /// The string as written in the manifest.
    pub written: String,
    #[serde(skip)]
    pub reference: Reference,
    pub file: String,
    /// 1-based document number in the file.
    pub document: usize,
    /// 1-based line the image string stands on.
    pub line: usize,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Container name, where the image belongs to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Path of the field inside the document, e.g. `spec.template.spec.initContainers[0].image`.
    pub field: String,
}

/// Splits a YAML stream into documents: (first line, 1-based; text of the document).
/// A document starts at a `---` line (which it keeps, so `--- !tag` or `--- {a: 1}` still
/// parse); `...` end markers end one.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs: Vec<(usize, String)> = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start {
            docs.push((start, std::mem::take(&mut cur)));
            start = i + 1;
            cur.push_str(line);
        } else if is_end {
            cur.push('\n');
            docs.push((start, std::mem::take(&mut cur)));
            start = i + 2;
        } else {
            cur.push_str(line);
        }
    }
    docs.push((start, cur));
    docs.into_iter().filter(|(_, d)| has_content(d)).collect()
}

fn has_content(doc: &str) -> bool {
    doc.lines().any(|l| {
        let t = l.trim();
        !(t.is_empty() || t.starts_with('#') || t == "---" || t.starts_with("%"))
    })
}

/// Finds every image in one file's text.
pub fn extract(text: &str, file: &str) -> Result<Vec<FoundImage>, WorkloadError> {
    let mut out = Vec::new();
    for (n, (start, doc)) in split_documents(text).into_iter().enumerate() {
        let padded = format!("{}{}", "\n".repeat(start - 1), doc);
        let value: Value = serde_saphyr::from_str(&padded)
            .map_err(|e| WorkloadError::Yaml { file: file.to_string(), message: e.to_string() })?;
        let mut found: Vec<Hit> = Vec::new();
        walk_object(&value, "", &mut found);
        let doc_lines: Vec<&str> = doc.lines().collect();
        let mut used: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut totals: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for h in &found {
            *totals.entry(h.image.clone()).or_insert(0) += 1;
        }
        for h in found {
            let k = used.entry(h.image.clone()).or_insert(0);
            let line = nth_line(&doc_lines, &h.image, *k, totals[&h.image]).map(|l| start + l).unwrap_or(start);
            *k += 1;
            let reference = Reference::parse(&h.image).map_err(|error| {
                WorkloadError::BadImage(Box::new(BadImage {
                    file: file.to_string(),
                    line,
                    kind: h.kind.clone(),
                    name: h.name.clone(),
                    field: h.field.clone(),
                    error,
                }))
            })?;
            out.push(FoundImage {
                written: h.image,
                reference,
                file: file.to_string(),
                document: n + 1,
                line,
                kind: h.kind,
                name: h.name,
                namespace: h.namespace,
                container: h.container,
                field: h.field,
            });
        }
    }
    Ok(out)
}

/// A test on a line and the byte offset of an image in it.
type LineTest<'a> = &'a dyn Fn(&str, usize) -> bool;

/// The 0-based index (within `lines`) of the line holding the `n`-th of `total` uses of
/// `image`. Lines where the image is the value of an `image` key written one field a line are
/// preferred (so a `last-applied-configuration` annotation repeating the image is skipped),
/// then any `image:` value, then any whole-word occurrence.
fn nth_line(lines: &[&str], image: &str, n: usize, total: usize) -> Option<usize> {
    let tiers: [LineTest; 3] = [
        &|l: &str, i: usize| {
            let t = l.trim_start();
            let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
            let t = t.trim_start_matches(['"', '\'']);
            t.starts_with("image") && is_image_key_prefix(&l[..i])
        },
        &|l: &str, i: usize| is_image_key_prefix(&l[..i]),
        &|_: &str, _: usize| true,
    ];
    for tier in tiers {
        let found: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| word_matches(l, image).any(|i| tier(l, i)))
            .map(|(i, _)| i)
            .collect();
        if found.len() >= total {
            return found.get(n).copied();
        }
    }
    None
}

/// Byte offsets of `image` in `line` where it stands as a whole reference, not as part of a
/// longer one (`nginx` in `nginx-ingress`).
pub(crate) fn word_matches<'a>(line: &'a str, image: &'a str) -> impl Iterator<Item = usize> + 'a {
    let word = |c: char| c.is_ascii_alphanumeric() || "._/:@-".contains(c);
    line.match_indices(image).map(|(i, _)| i).filter(move |&i| {
        let before = line[..i].chars().next_back();
        let after = line[i + image.len()..].chars().next();
        before.is_none_or(|c| !word(c)) && after.is_none_or(|c| !word(c))
    })
}

/// Whether the text before a value ends in an `image` key: `image: `, `"image": "`, `image: '`.
pub(crate) fn is_image_key_prefix(prefix: &str) -> bool {
    let p = prefix.trim_end();
    let p = p.strip_suffix(['"', '\'']).unwrap_or(p).trim_end();
    let Some(p) = p.strip_suffix(':') else { return false };
    let p = p.trim_end();
    let p = p.strip_suffix(['"', '\'']).unwrap_or(p);
    let Some(before) = p.strip_suffix("image") else { return false };
    before.chars().next_back().is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_' && c != '-' && c != '.')
}

struct Hit {
    image: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    container: Option<String>,
    field: String,
}

const POD_TEMPLATE_KINDS: &[&str] =
    &["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"];

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn walk_object(v: &Value, prefix: &str, out: &mut Vec<Hit>) {
    let Some(obj) = v.as_object() else { return };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let api = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let name = get(v, &["metadata", "name"]).and_then(Value::as_str).unwrap_or("").to_string();
    let namespace = get(v, &["metadata", "namespace"]).and_then(Value::as_str).map(str::to_string);
    let at = |p: &str| if prefix.is_empty() { p.to_string() } else { format!("{prefix}.{p}") };

    if let Some(items) = obj.get("items").and_then(Value::as_array)
        && (kind == "List" || kind.ends_with("List"))
    {
        for (i, it) in items.iter().enumerate() {
            walk_object(it, &at(&format!("items[{i}]")), out);
        }
        return;
    }
    let pod_spec: Option<(&Value, String)> = match kind.as_str() {
        "Pod" => obj.get("spec").map(|s| (s, at("spec"))),
        k if POD_TEMPLATE_KINDS.contains(&k) => {
            get(v, &["spec", "template", "spec"]).map(|s| (s, at("spec.template.spec")))
        }
        "CronJob" => get(v, &["spec", "jobTemplate", "spec", "template", "spec"])
            .map(|s| (s, at("spec.jobTemplate.spec.template.spec"))),
        "PodTemplate" => get(v, &["template", "spec"]).map(|s| (s, at("template.spec"))),
        _ => None,
    };
    let mk = |image: &str, container: Option<String>, field: String| Hit {
        image: image.to_string(),
        kind: kind.clone(),
        name: name.clone(),
        namespace: namespace.clone(),
        container,
        field,
    };
    if let Some((spec, path)) = pod_spec {
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for (i, c) in spec.get(list).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]).iter().enumerate()
            {
                if let Some(img) = c.get("image").and_then(Value::as_str) {
                    let cname = c.get("name").and_then(Value::as_str).map(str::to_string);
                    out.push(mk(img, cname, format!("{path}.{list}[{i}].image")));
                }
            }
        }
        return;
    }
    if is_custom_resource(api, &kind)
        && let Some(spec) = obj.get("spec")
    {
        let mut hits = Vec::new();
        find_image_fields(spec, &at("spec"), None, &mut hits);
        for (img, container, field) in hits {
            out.push(mk(&img, container, field));
        }
    }
}

/// A custom resource: its API group has a dot and is not one of Kubernetes' own `*.k8s.io`
/// groups. CRD definitions themselves are skipped (their schemas mention `image` as a word).
fn is_custom_resource(api: &str, kind: &str) -> bool {
    let Some((group, _)) = api.rsplit_once('/') else { return false };
    group.contains('.')
        && !group.ends_with(".k8s.io")
        && !group.ends_with(".kubernetes.io")
        && kind != "CustomResourceDefinition"
}

fn find_image_fields(v: &Value, path: &str, container: Option<&str>, out: &mut Vec<(String, Option<String>, String)>) {
    match v {
        Value::Object(m) => {
            let here = m.get("name").and_then(Value::as_str).or(container);
            for (k, x) in m {
                let p = format!("{path}.{k}");
                match x {
                    Value::String(s) if k == "image" => out.push((s.clone(), here.map(str::to_string), p)),
                    _ => find_image_fields(x, &p, if m.contains_key("image") { here } else { container }, out),
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                find_image_fields(x, &format!("{path}[{i}]"), container, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(text: &str) -> Vec<(String, usize, String)> {
        extract(text, "t.yaml").unwrap().into_iter().map(|f| (f.reference.to_string(), f.line, f.field)).collect()
    }

    // Checks every pod-bearing kind, all three container lists, List items, and lines.
    #[test]
    fn every_pod_bearing_kind() {
        let text = "\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  initContainers:
  - name: init
    image: busybox:1
  containers:
  - name: main
    image: nginx
  ephemeralContainers:
  - name: debug
    image: \"alpine:3\"
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: c}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: x, image: ghcr.io/a/cron:2}]
---
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: DaemonSet
  metadata: {name: d}
  spec: {template: {spec: {containers: [{name: d, image: quay.io/d/d:3}]}}}
- apiVersion: v1
  kind: PodTemplate
  metadata: {name: t}
  template: {spec: {containers: [{name: t, image: quay.io/t/t:4}]}}
- apiVersion: v1
  kind: ReplicationController
  metadata: {name: r}
  spec: {template: {spec: {containers: [{name: r, image: quay.io/r/r:5}]}}}
";
        let got = images(text);
        let want = [
            ("docker.io/library/busybox:1", 7),
            ("docker.io/library/nginx:latest", 10),
            ("docker.io/library/alpine:3", 13),
            ("ghcr.io/a/cron:2", 23),
            ("quay.io/d/d:3", 31),
            ("quay.io/t/t:4", 35),
            ("quay.io/r/r:5", 39),
        ];
        assert_eq!(got.iter().map(|(r, l, _)| (r.as_str(), *l)).collect::<Vec<_>>(), want);
        assert_eq!(got[2].2, "spec.ephemeralContainers[0].image");
        assert_eq!(got[4].2, "items[0].spec.template.spec.containers[0].image");
    }

    // Checks custom resources with spec.image (Prometheus operator), and that CRDs and
    // built-in kinds with `image` words are ignored.
    #[test]
    fn custom_resources_with_image_fields() {
        let text = "\
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {name: k8s, namespace: monitoring}
spec:
  image: quay.io/prometheus/prometheus:v2.54.1
  containers:
  - name: config-reloader
    image: quay.io/prometheus-operator/prometheus-config-reloader:v0.76.0
---
apiVersion: monitoring.coreos.com/v1
kind: Alertmanager
metadata: {name: main}
spec: {image: quay.io/prometheus/alertmanager:v0.27.0, replicas: 3}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: x}
spec: {versions: [{schema: {image: notanimage}}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {image: nginx}
";
        let got = extract(text, "t.yaml").unwrap();
        let refs: Vec<String> = got.iter().map(|f| f.reference.to_string()).collect();
        assert_eq!(
            refs,
            [
                "quay.io/prometheus/prometheus:v2.54.1",
                "quay.io/prometheus-operator/prometheus-config-reloader:v0.76.0",
                "quay.io/prometheus/alertmanager:v0.27.0"
            ]
        );
        assert_eq!(got[1].container.as_deref(), Some("config-reloader"));
        assert_eq!(got[0].namespace.as_deref(), Some("monitoring"));
        assert_eq!(got[2].line, 13);
    }

    // Checks that an annotation repeating the image (kubectl's last-applied-configuration) does
    // not take the image's line, and that JSON input (kubectl get -o json) works.
    #[test]
    fn annotations_and_json() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"image\":\"nginx:1\",\"name\":\"nginx\"}]}}}}
spec:
  template:
    spec:
      containers:
      - name: nginx
        image: nginx:1
";
        let got = extract(text, "t.yaml").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].line, 13);
        let json = "{\n\t\"apiVersion\": \"v1\",\n\t\"kind\": \"List\",\n\t\"items\": [{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\"},\n\t\t\"spec\": {\"containers\": [{\"name\": \"a\",\n\t\t\"image\": \"quay.io/a/b:1\"}]}}]\n}\n";
        let got = extract(json, "t.json").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].reference.to_string().as_str(), got[0].line), ("quay.io/a/b:1", 6));
    }

    // Checks the image-key test used to find and rewrite image values.
    #[test]
    fn image_key_prefixes() {
        assert!(is_image_key_prefix("    image: "));
        assert!(is_image_key_prefix("  - image: \""));
        assert!(is_image_key_prefix("{\"image\": \""));
        assert!(is_image_key_prefix("{name: x, image: "));
        assert!(!is_image_key_prefix("    name: "));
        assert!(!is_image_key_prefix("    baseimage: "));
        assert!(!is_image_key_prefix("    image-pull: "));
    }

    // Checks that a bad reference names file, line, kind and field; and malformed YAML its line.
    #[test]
    fn bad_input_is_located() {
        let text = "kind: ConfigMap\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: Nginx:1\n";
        let e = extract(text, "w.yaml").unwrap_err().to_string();
        assert!(e.contains("w.yaml:9") && e.contains("Pod p") && e.contains("lowercase"), "{e}");
        let text = "kind: ConfigMap\n---\nkind: Pod\nspec: [a, b\n  c: d\n";
        let e = extract(text, "w.yaml").unwrap_err().to_string();
        assert!(e.contains("w.yaml") && e.contains("line 5"), "{e}");
    }
}
