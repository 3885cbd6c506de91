//! Images named in Kubernetes YAML: files, folders, globs, or stdin (`helm template … |`,
//! `kustomize build … |`).
//!
//! Each document is parsed on its own with serde-saphyr into a `serde_json::Value` (parse errors
//! are rendered with the document's offset, so they carry the file's own line), which keeps the
//! cost linear in the size of the file. Parser limits grow with the input; alias expansion is
//! bounded by a ratio to the input's size, so YAML bombs are still refused. The line an image
//! stands on is then found from a one-pass index of the document's text (the n-th time the walk
//! meets a string is matched to its n-th occurrence, preferring `image:` lines; a value handed
//! to an operator goes to a line where it stands after its key, `value:` or `--flag=`).
//!
//! What is an image is decided by evidence, not by the name `image` alone:
//! - a **container**: an element of a `containers`, `initContainers` or `ephemeralContainers`
//!   list, anywhere (pods, workload templates, JobSet, Knative, operator CRs), or any object with
//!   an `image` string and a field of a Kubernetes container (`command`, `args`, `env`, …: Argo
//!   `container`/`script` templates, Tekton steps);
//! - an **image volume**: a pod volume's `image.reference` (Kubernetes 1.31+ `ImageVolume`);
//! - an **injected image**, handed to an operator outside any pod spec, found by rule
//!   ([`super::rules`]): a container variable or flag whose name says `image`, a variable read
//!   from a ConfigMap of the same input (`configMapKeyRef`), a ConfigMap named for images or a
//!   key that says `image` (also inside YAML or JSON held in a value), an OLM bundle's
//!   `relatedImages`; plus the few flags and variables of the built-in table (names that do not
//!   say `image`) and `workloads.injectedImages`. Never any other argument;
//! - in **custom resources**: every `image` string of a kind known to run it (Prometheus,
//!   Alertmanager, ThanosRuler, KubeVirt VMs, Argo workflows, Tekton), a KubeVirt
//!   `containerDisk`, or an `image` that is a fully qualified reference (registry host and tag
//!   or digest). Other `image` values of custom resources, and empty ones (an operator's
//!   default), are warnings, not images. CRDs, `metadata` and `status` are skipped.
//!
//! An empty image in a core kind is an error; so is a templated one (`{{ … }}`, `${…}`) in an
//! `image` field, said to be an unrendered template. A templated value handed to an operator is
//! a warning: operators keep defaults in them.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::rules::{self, Says, Verdict};
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
    /// For an image handed to an operator: the flag or variable that carried it; for an image
    /// volume, `image volume`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Found outside a pod spec (an operator's variable, flag, ConfigMap or OLM bundle): such an
    /// image with no manifest for any configured platform is skipped, not failed.
    #[serde(skip)]
    pub injected: bool,
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

/// Flags and environment variables whose value is an image an operator starts pods with, but
/// whose name does not say `image` (names that do are found by rule: see [`super::rules`]). Each
/// is a documented option of the project named beside it.
const BUILTIN_FLAGS: &[(&str, &str)] = &[(
    "--prometheus-config-reloader",
    "prometheus-operator: config reloader sidecar of every Prometheus and Alertmanager",
)];

/// Environment variables (a `*` matches any run of characters) whose value is an image.
const BUILTIN_ENV: &[(&str, &str)] =
    &[("STRIMZI_DEFAULT_MAVEN_BUILDER", "Strimzi cluster operator: the Maven builder of KafkaConnect builds")];

/// The flags and variables that carry injected images beyond the rules: the built-in table plus
/// the config's `workloads.injectedImages`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Injected {
    flags: Vec<String>,
    env: Vec<String>,
}

impl Injected {
    /// The built-in table extended by the config's entries.
    pub fn new(extra: &crate::config::InjectedImages) -> Injected {
        let flags = BUILTIN_FLAGS.iter().map(|(f, _)| f.to_string()).chain(extra.flags.iter().cloned()).collect();
        let env = BUILTIN_ENV.iter().map(|(e, _)| e.to_string()).chain(extra.env.iter().cloned()).collect();
        Injected { flags, env }
    }

    /// The image a flag argument carries: `--flag=IMAGE`, or `IMAGE` when `prev` is `--flag`.
    fn flag_value<'a>(&self, prev: Option<&str>, arg: &'a str) -> Option<(&'a str, String)> {
        for f in &self.flags {
            if let Some(v) = arg.strip_prefix(f.as_str()).and_then(|r| r.strip_prefix('=')) {
                return Some((v, f.clone()));
            }
            if prev == Some(f.as_str()) && !arg.starts_with('-') {
                return Some((arg, f.clone()));
            }
        }
        None
    }

    fn env_matches(&self, name: &str) -> bool {
        self.env.iter().any(|p| glob_match(p, name))
    }
}

/// `pattern` with at most one `*` (any run of characters) against `name`.
fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        Some((pre, post)) => name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post),
        None => pattern == name,
    }
}

/// What one file holds: its images, and `image` values that are not taken (with the reason).
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    pub images: Vec<FoundImage>,
    pub warnings: Vec<String>,
}

/// Parser limits for manifests. Node and event counts grow with the input, so they are bounded
/// by the input's own size (a 3 MB `kind: List` of 15k Deployments is legitimate); what a small
/// input must not do is expand: alias replay is bounded to [`ALIAS_EXPANSION_RATIO`] events per
/// input byte, which a YAML bomb (a few hundred bytes expanding to billions of nodes) breaks at
/// once.
pub(crate) fn yaml_options(len: usize) -> serde_saphyr::Options {
    let room = len.saturating_mul(2).saturating_add(10_000);
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: room,
            max_nodes: room,
            max_aliases: room,
            max_anchors: room,
            max_documents: 1,
            max_total_scalar_bytes: len.saturating_add(1024).saturating_mul(ALIAS_EXPANSION_RATIO),
            enforce_alias_anchor_ratio: false,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: len.saturating_mul(ALIAS_EXPANSION_RATIO).saturating_add(10_000),
        },
    }
}

/// Alias expansion allowed, in replayed events per input byte: anchors in real manifests
/// (shared labels, resources, env lists) replay far less than their own size.
const ALIAS_EXPANSION_RATIO: usize = 4;

/// Finds every image in one file's text. Each document is parsed on its own and errors carry
/// the file's own line numbers, so the cost is linear in the size of the file. Variables read
/// from a ConfigMap (`configMapKeyRef`) are resolved once the whole input is read, through the
/// ConfigMaps of the same input and namespace.
pub fn extract(text: &str, file: &str, injected: &Injected) -> Result<Extracted, WorkloadError> {
    let mut out = Extracted::default();
    let docs = split_documents(text);
    let mut config_maps: HashMap<(Option<String>, String), ConfigMapData> = HashMap::new();
    let mut refs: Vec<PendingRef> = Vec::new();
    for (n, (start, doc)) in docs.iter().enumerate() {
        let start = *start;
        let value: Value = serde_saphyr::from_str_with_options(doc, yaml_options(doc.len())).map_err(|e| {
            let options = serde_saphyr::render_options! { line_offset: (start - 1) as u64 };
            WorkloadError::Yaml { file: file.to_string(), message: e.render_with_options(options) }
        })?;
        let mut hits: Vec<Hit> = Vec::new();
        let mut walk = Walk {
            injected,
            hits: &mut hits,
            warnings: &mut out.warnings,
            file,
            start,
            doc: n,
            config_maps: &mut config_maps,
            refs: &mut refs,
        };
        walk.node(&value, "", &Owner::default(), Context::Free);
        let lines = assign_lines(doc, &hits);
        for (h, line) in hits.iter().zip(lines) {
            let line = line.map(|l| start + l).unwrap_or(start);
            match parse_image(&h.image) {
                Ok(reference) => out.images.push(FoundImage {
                    written: h.image.clone(),
                    reference,
                    file: file.to_string(),
                    document: n + 1,
                    line,
                    kind: h.owner.kind.clone(),
                    name: h.owner.name.clone(),
                    namespace: h.owner.namespace.clone(),
                    container: h.container.clone(),
                    field: h.field.clone(),
                    via: h.via.clone(),
                    injected: h.injected,
                }),
                Err(error) if h.soft => out.warnings.push(format!(
                    "{file}:{line}: {} {} {}: {error}; not taken{}",
                    h.owner.kind,
                    h.owner.name,
                    h.field,
                    h.via.as_deref().map(|v| format!(" ({v})")).unwrap_or_default()
                )),
                Err(error) => {
                    return Err(WorkloadError::BadImage(Box::new(BadImage {
                        file: file.to_string(),
                        line,
                        kind: h.owner.kind.clone(),
                        name: h.owner.name.clone(),
                        field: h.field.clone(),
                        error,
                    })));
                }
            }
        }
    }
    for r in refs {
        resolve_ref(r, &docs, &config_maps, file, &mut out);
    }
    Ok(out)
}

/// The string values of a ConfigMap, kept so that variables elsewhere in the input can be read
/// from it (`configMapKeyRef`).
struct ConfigMapData {
    /// 0-based document index in the input.
    doc: usize,
    data: HashMap<String, String>,
}

/// A variable that says `image` whose value comes from a ConfigMap key (rule 2), resolved once
/// the whole input is read.
struct PendingRef {
    owner: Owner,
    container: Option<String>,
    variable: String,
    config_map: String,
    key: String,
    field: String,
}

/// Resolves one `configMapKeyRef` through the ConfigMaps of the input, in the variable's own
/// namespace. The image stands where the ConfigMap value does, which is what `rewrite` changes.
fn resolve_ref(
    r: PendingRef,
    docs: &[(usize, String)],
    config_maps: &HashMap<(Option<String>, String), ConfigMapData>,
    file: &str,
    out: &mut Extracted,
) {
    let ns = r.owner.namespace.clone();
    let shown_cm = match &ns {
        Some(n) => format!("{n}/{}", r.config_map),
        None => r.config_map.clone(),
    };
    let whose = format!(
        "{} {} container {} variable {}",
        r.owner.kind,
        r.owner.name,
        r.container.as_deref().unwrap_or("?"),
        r.variable
    );
    let Some((cm, value)) = config_maps
        .get(&(ns.clone(), r.config_map.clone()))
        .and_then(|cm| cm.data.get(&r.key).map(|v| (cm, v)))
    else {
        out.warnings.push(format!(
            "{file}: {whose} ({}) reads ConfigMap {shown_cm} key {}, which is not in this input: its image is not known; add it under `images:` if the cluster pulls it",
            r.field, r.key
        ));
        return;
    };
    let via = format!("read by {whose} (configMapKeyRef)");
    let field = format!("data.{}", r.key);
    match super::rules::judge(value, false) {
        Verdict::Take => {
            let written = value.trim().to_string();
            let (start, doc) = &docs[cm.doc];
            let line = value_line(doc, &r.key, &written).map(|l| start + l).unwrap_or(*start);
            let Ok(reference) = Reference::parse(&written) else { return };
            out.images.push(FoundImage {
                written,
                reference,
                file: file.to_string(),
                document: cm.doc + 1,
                line,
                kind: "ConfigMap".into(),
                name: r.config_map,
                namespace: ns,
                container: None,
                field,
                via: Some(via),
                injected: true,
            });
        }
        Verdict::Warn(why) => out.warnings.push(format!(
            "{file}: ConfigMap {shown_cm} {field}: {value:?} is not taken ({via}): {why}"
        )),
        Verdict::Ignore => {}
    }
}

/// The 0-based line of a ConfigMap value in its document: the first line where it stands as a
/// whole reference after its key, else the first where it stands at all.
fn value_line(doc: &str, key: &str, value: &str) -> Option<usize> {
    let on = |l: &str| word_matches(l, value).next().is_some();
    doc.lines()
        .position(|l| on(l) && l.split(value).next().is_some_and(|before| before.contains(key)))
        .or_else(|| doc.lines().position(on))
}

/// Parses an image string, saying so when it is a template nobody rendered.
fn parse_image(image: &str) -> Result<Reference, ReferenceError> {
    if looks_templated(image) {
        return Err(ReferenceError {
            input: image.to_string(),
            reason: "looks like an unrendered template (`{{ … }}`, `${…}` or `$(…)`): render the manifest first (helm template, envsubst, kustomize build)".into(),
        });
    }
    Reference::parse(image)
}

pub(crate) fn looks_templated(s: &str) -> bool {
    s.contains("{{") || s.contains("}}") || s.contains("${") || s.contains("$(") || s.contains("<%")
}

/// Where each image string stands in one document, built in one pass: for every token (a run of
/// the characters references are made of) that is one of the images found, the lines it is on and how strongly each line says it is
/// an image (1: `image:` written one field a line; 2: the value of an `image` key; 3: anywhere).
struct LineIndex {
    at: HashMap<String, Vec<(usize, u8)>>,
}

impl LineIndex {
    fn new(doc: &str, hits: &[Hit]) -> LineIndex {
        let wanted: std::collections::HashSet<&str> = hits.iter().map(|h| h.image.as_str()).collect();
        let mut at: HashMap<String, Vec<(usize, u8)>> = HashMap::new();
        for (n, l) in doc.lines().enumerate() {
            let mut i = 0;
            let b = l.as_bytes();
            while i < b.len() {
                if !is_ref_char(b[i] as char) {
                    i += 1;
                    continue;
                }
                let s = i;
                while i < b.len() && is_ref_char(b[i] as char) {
                    i += 1;
                }
                if !wanted.contains(&l[s..i]) {
                    continue;
                }
                let tier = if !is_image_key_prefix(&l[..s]) {
                    3
                } else {
                    let t = l.trim_start();
                    let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
                    if t.trim_start_matches(['"', '\'']).starts_with("image") { 1 } else { 2 }
                };
                let v = at.entry(l[s..i].to_string()).or_default();
                match v.last_mut() {
                    Some((line, t)) if *line == n => *t = (*t).min(tier),
                    _ => v.push((n, tier)),
                }
            }
        }
        LineIndex { at }
    }

    /// The 0-based line of the `n`-th of `total` uses of `image`, preferring lines where it is
    /// written as an `image:` value (so a `last-applied-configuration` annotation repeating the
    /// image is skipped), leaving out lines `taken` by other uses. Images with characters
    /// outside references fall back to a scan.
    fn nth_line(&self, doc: &str, image: &str, n: usize, total: usize, taken: &dyn Fn(usize) -> bool) -> Option<usize> {
        if image.is_empty() {
            let empty = |l: &&str| l.contains("image: \"\"") || l.contains("image: ''");
            return doc.lines().enumerate().filter(|(_, l)| empty(l)).nth(n).map(|(i, _)| i);
        }
        if !image.chars().all(is_ref_char) {
            return doc.lines().position(|l| l.contains(image));
        }
        self.tier_lines(image, total, taken)?.get(n).copied()
    }

    /// The lines the `total` uses of `image` are matched to, in order: those of the first tier
    /// that has enough of them, leaving out lines `taken` by other uses. `None` when no tier
    /// has enough.
    fn tier_lines(&self, image: &str, total: usize, taken: &dyn Fn(usize) -> bool) -> Option<Vec<usize>> {
        let lines = self.at.get(image)?;
        (1..=3).find_map(|tier| {
            let found: Vec<usize> =
                lines.iter().filter(|(l, t)| *t <= tier && !taken(*l)).map(|(l, _)| *l).collect();
            (found.len() >= total).then_some(found)
        })
    }
}

/// The 0-based line of every hit of one document. A value with a hint (a ConfigMap key, an env
/// `value`, a `--flag=`) goes to the n-th line where it stands after its hint; the rest (image
/// fields, values on lines of their own) share the remaining lines as [`LineIndex::nth_line`]
/// says, in the order the walk met them.
fn assign_lines(doc: &str, hits: &[Hit]) -> Vec<Option<usize>> {
    let index = LineIndex::new(doc, hits);
    let text: Vec<&str> = doc.lines().collect();
    let mut out: Vec<Option<usize>> = vec![None; hits.len()];
    let mut taken: std::collections::HashSet<(&str, usize)> = std::collections::HashSet::new();
    let after_hint = |line: usize, image: &str, hint: &str| {
        text.get(line).and_then(|l| word_matches(l, image).next().map(|i| l[..i].contains(hint))).unwrap_or(false)
    };
    let mut totals: HashMap<(&str, &str), usize> = HashMap::new();
    for h in hits {
        if let Some(hint) = &h.hint {
            *totals.entry((h.image.as_str(), hint.as_str())).or_insert(0) += 1;
        }
    }
    let mut used: HashMap<(&str, &str), usize> = HashMap::new();
    // The lines of each (image, hint), found once: an image handed to 10,000 containers of one
    // `kind: List` must not cost a scan of its lines per container.
    let mut candidates: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, h) in hits.iter().enumerate() {
        let Some(hint) = &h.hint else { continue };
        let key = (h.image.as_str(), hint.as_str());
        let lines = candidates.entry(key).or_insert_with(|| {
            index
                .at
                .get(&h.image)
                .map(|v| v.iter().map(|(l, _)| *l).filter(|&l| after_hint(l, &h.image, hint)).collect())
                .unwrap_or_default()
        });
        let n = used.entry(key).or_insert(0);
        if lines.len() >= totals[&key] {
            out[i] = lines.get(*n).copied();
            if let Some(l) = out[i] {
                taken.insert((h.image.as_str(), l));
            }
        }
        *n += 1;
    }
    let rest: Vec<usize> = (0..hits.len()).filter(|&i| out[i].is_none()).collect();
    let mut totals: HashMap<&str, usize> = HashMap::new();
    for &i in &rest {
        *totals.entry(hits[i].image.as_str()).or_insert(0) += 1;
    }
    let mut used: HashMap<&str, usize> = HashMap::new();
    // Chosen once per image, so that an image used 10,000 times costs one pass over its lines.
    let mut chosen: HashMap<&str, Option<Vec<usize>>> = HashMap::new();
    for i in rest {
        let image = hits[i].image.as_str();
        let n = used.entry(image).or_insert(0);
        let is_taken = |l: usize| taken.contains(&(image, l));
        out[i] = if !image.is_empty() && image.chars().all(is_ref_char) {
            let lines = chosen.entry(image).or_insert_with(|| index.tier_lines(image, totals[image], &is_taken));
            lines.as_ref().and_then(|v| v.get(*n).copied())
        } else {
            index.nth_line(doc, image, *n, totals[image], &is_taken)
        };
        *n += 1;
    }
    out
}

fn is_ref_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._/:@-".contains(c)
}

/// Byte offsets of `image` in `line` where it stands as a whole reference, not as part of a
/// longer one (`nginx` in `nginx-ingress`).
pub(crate) fn word_matches<'a>(line: &'a str, image: &'a str) -> impl Iterator<Item = usize> + 'a {
    line.match_indices(image).map(|(i, _)| i).filter(move |&i| {
        let before = line[..i].chars().next_back();
        let after = line[i + image.len()..].chars().next();
        before.is_none_or(|c| !is_ref_char(c)) && after.is_none_or(|c| !is_ref_char(c))
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

/// The Kubernetes object an image belongs to.
#[derive(Debug, Clone, Default)]
struct Owner {
    kind: String,
    name: String,
    namespace: Option<String>,
    /// A custom resource: its `image` fields need evidence to be taken.
    custom: bool,
    /// A custom resource kind whose every `image` string is a container image.
    known: bool,
    /// An OLM `ClusterServiceVersion`: its `spec.relatedImages` are images (rule 5).
    csv: bool,
}

/// What the walk knows about the place it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Free,
    /// An element of a `containers`, `initContainers` or `ephemeralContainers` list.
    ContainerList,
    /// An element of a pod's `volumes` list.
    Volume,
    /// A KubeVirt `containerDisk` (the VM disk is a container image).
    ContainerDisk,
}

struct Hit {
    image: String,
    owner: Owner,
    container: Option<String>,
    field: String,
    /// For images not in an `image` field: the flag or variable that carried it.
    via: Option<String>,
    /// A bad value becomes a warning rather than an error (operator args, custom resources).
    soft: bool,
    /// Outside a pod spec (see [`FoundImage::injected`]).
    injected: bool,
    /// For a value that is not an `image` field: text that stands before it on its line (the
    /// key, `value`, `--flag`), to tell its line from the lines of the same image elsewhere.
    hint: Option<String>,
}

/// Where a value handed to an operator stands, and what carried it.
struct Place {
    container: Option<String>,
    field: String,
    via: String,
    hint: Option<String>,
}

impl Place {
    fn new(container: Option<String>, field: String, via: String, hint: Option<String>) -> Place {
        Place { container, field, via, hint }
    }
}

/// Custom resource kinds whose every `image` string is a container image, by API group.
const KNOWN_KINDS: &[(&str, &[&str])] = &[
    ("monitoring.coreos.com", &["Prometheus", "Alertmanager", "ThanosRuler", "PrometheusAgent"]),
    (
        "kubevirt.io",
        &["VirtualMachine", "VirtualMachineInstance", "VirtualMachineInstanceReplicaSet", "VirtualMachinePool"],
    ),
    ("argoproj.io", &["Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow"]),
    ("tekton.dev", &["Task", "ClusterTask", "Pipeline", "TaskRun", "PipelineRun", "StepAction"]),
];

/// Fields of a Kubernetes `Container` besides `name` and `image`: an object with an `image`
/// string and one of these is a container wherever it stands (Argo's `container` and `script`
/// templates, Tekton steps, operator CRs that embed containers).
const CONTAINER_FIELDS: &[&str] = &[
    "command",
    "args",
    "env",
    "envFrom",
    "ports",
    "volumeMounts",
    "volumeDevices",
    "resources",
    "imagePullPolicy",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "workingDir",
    "lifecycle",
    "script",
    "source",
    "stdin",
    "tty",
    "terminationMessagePath",
];

struct Walk<'a> {
    injected: &'a Injected,
    hits: &'a mut Vec<Hit>,
    warnings: &'a mut Vec<String>,
    file: &'a str,
    start: usize,
    /// 0-based index of the document being walked.
    doc: usize,
    /// The ConfigMaps seen so far, by namespace and name (for `configMapKeyRef`).
    config_maps: &'a mut HashMap<(Option<String>, String), ConfigMapData>,
    refs: &'a mut Vec<PendingRef>,
}

fn at(prefix: &str, p: &str) -> String {
    if prefix.is_empty() { p.to_string() } else { format!("{prefix}.{p}") }
}

impl Walk<'_> {
    fn node(&mut self, v: &Value, path: &str, owner: &Owner, ctx: Context) {
        match v {
            Value::Object(m) => self.object(m, path, owner, ctx),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate().filter(|(_, x)| x.is_object() || x.is_array()) {
                    self.node(x, &format!("{path}[{i}]"), owner, ctx);
                }
            }
            _ => {}
        }
    }

    fn object(&mut self, m: &serde_json::Map<String, Value>, path: &str, owner: &Owner, ctx: Context) {
        let owner = &match (m.get("apiVersion").and_then(Value::as_str), m.get("kind").and_then(Value::as_str)) {
            (Some(api), Some(kind)) => {
                if kind == "CustomResourceDefinition" {
                    return;
                }
                object_owner(m, api, kind)
            }
            _ => owner.clone(),
        };
        if owner.kind == "ConfigMap" && !owner.custom && m.contains_key("kind") {
            self.config_map(m, path, owner);
        }
        let image = m.get("image");
        let container = ctx == Context::ContainerList
            || (image.is_some_and(Value::is_string) && CONTAINER_FIELDS.iter().any(|f| m.contains_key(*f)));
        if container {
            self.container(m, path, owner);
        } else if ctx == Context::Volume
            && let Some(r) = image.and_then(|i| i.get("reference")).and_then(Value::as_str)
        {
            self.push(owner, r, None, at(path, "image.reference"), Some("image volume".into()), false);
        } else if let Some(Value::String(s)) = image
            && owner.csv
            && path.starts_with("spec.relatedImages[")
        {
            let name = m.get("name").and_then(Value::as_str).unwrap_or("");
            let place = Place::new(None, at(path, "image"), format!("OLM relatedImages {name}"), None);
            self.rule_value(owner, s, place, false);
        } else if let Some(Value::String(s)) = image
            && owner.custom
        {
            self.custom_image(s, m, path, owner, ctx);
        }
        for (k, x) in m {
            let skip = !(x.is_object() || x.is_array())
                || (k == "metadata" || k == "status") && m.contains_key("kind")
                || (container && matches!(k.as_str(), "image" | "args" | "command" | "env"))
                || (k == "image" && x.is_string());
            if skip {
                continue;
            }
            let inner = match k.as_str() {
                "containers" | "initContainers" | "ephemeralContainers" => Context::ContainerList,
                "volumes" => Context::Volume,
                "containerDisk" => Context::ContainerDisk,
                _ => Context::Free,
            };
            self.node(x, &at(path, k), owner, inner);
        }
    }

    /// A container: its image, and the images its args and env hand to an operator.
    fn container(&mut self, m: &serde_json::Map<String, Value>, path: &str, owner: &Owner) {
        let name = m.get("name").and_then(Value::as_str).map(str::to_string);
        match m.get("image").and_then(Value::as_str) {
            Some("") if owner.custom => self.warn_empty(owner, &at(path, "image")),
            Some(img) => self.push(owner, img, name.clone(), at(path, "image"), None, false),
            None => {}
        }
        for list in ["command", "args"] {
            let args: Vec<&str> = m
                .get(list)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (i, arg) in args.iter().enumerate() {
                let prev = i.checked_sub(1).map(|p| args[p]);
                let field = format!("{}[{i}]", at(path, list));
                // `--flag=IMAGE` stands after its flag on the line; `--flag IMAGE` on a line of its own.
                let hint = |flag: &str| arg.starts_with(flag).then(|| flag.to_string());
                if let Some((value, flag)) = self.injected.flag_value(prev, arg) {
                    let place = Place::new(name.clone(), field, format!("flag {flag}"), hint(&flag));
                    self.push_injected(owner, value, place);
                } else if let Some((flag, Some(value))) = rules::image_flag(arg) {
                    let place = Place::new(name.clone(), field, format!("flag {flag}"), hint(flag));
                    self.rule_value(owner, value, place, false);
                } else if let Some((flag, None)) = prev.and_then(rules::image_flag)
                    && !arg.starts_with('-')
                {
                    self.rule_value(owner, arg, Place::new(name.clone(), field, format!("flag {flag}"), None), false);
                }
            }
        }
        for (i, e) in m.get("env").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]).iter().enumerate() {
            let Some(var) = e.get("name").and_then(Value::as_str) else { continue };
            let field = format!("{}[{i}]", at(path, "env"));
            let says = rules::variable_says(var);
            if let Some(value) = e.get("value").and_then(Value::as_str) {
                let field = format!("{field}.value");
                let place = |via: String, hint: Option<String>| Place::new(name.clone(), field.clone(), via, hint);
                if self.injected.env_matches(var) {
                    if !value.is_empty() {
                        self.push_injected(owner, value, place(format!("variable {var}"), Some("value".into())));
                    }
                } else if says == Some(Says::Image) {
                    self.rule_value(owner, value, place(format!("variable {var}"), Some("value".into())), false);
                } else if says == Some(Says::Images) {
                    for (key, item) in rules::list_items(value) {
                        let hint = key.map(|k| format!("{k}="));
                        self.rule_value(owner, item, place(format!("variable {var} (list)"), hint), false);
                    }
                }
            } else if let Some(r) = e.get("valueFrom").and_then(|v| v.get("configMapKeyRef"))
                && (says == Some(Says::Image) || self.injected.env_matches(var))
                && let (Some(cm), Some(key)) =
                    (r.get("name").and_then(Value::as_str), r.get("key").and_then(Value::as_str))
            {
                self.refs.push(PendingRef {
                    owner: owner.clone(),
                    container: name.clone(),
                    variable: var.to_string(),
                    config_map: cm.to_string(),
                    key: key.to_string(),
                    field: format!("{field}.valueFrom.configMapKeyRef"),
                });
            }
        }
    }

    /// A ConfigMap (rule 3): values of a ConfigMap named for images that name a registry host,
    /// and values under keys that say `image` (also inside YAML or JSON held in a value). Its
    /// values are kept for `configMapKeyRef` (rule 2). Keys starting with `_` are Knative's
    /// `_example` blocks: documentation, checksummed by Knative's webhook, never read.
    fn config_map(&mut self, m: &serde_json::Map<String, Value>, path: &str, owner: &Owner) {
        let Some(data) = m.get("data").and_then(Value::as_object) else { return };
        let named = rules::says_image(&owner.name);
        let mut kept = HashMap::new();
        for (k, v) in data {
            let Some(s) = v.as_str() else { continue };
            kept.insert(k.clone(), s.to_string());
            if k.starts_with('_') {
                continue;
            }
            let field = format!("{}.{k}", at(path, "data"));
            let keyed = rules::says_image(k);
            if let Some(inner) = rules::structured(s) {
                self.nested(owner, &inner, &field, "", named, keyed);
            } else if keyed {
                self.rule_value(owner, s, Place::new(None, field, format!("ConfigMap key {k}"), Some(k.clone())), false);
            } else if named {
                let place = Place::new(None, field, "ConfigMap named for images".into(), Some(k.clone()));
                self.rule_value(owner, s, place, true);
            }
        }
        self.config_maps.insert((owner.namespace.clone(), owner.name.clone()), ConfigMapData { doc: self.doc, data: kept });
    }

    /// YAML or JSON inside a ConfigMap value: a string under a key that says `image` (here or
    /// above), or any string of a ConfigMap named for images that names a registry host.
    fn nested(&mut self, owner: &Owner, v: &Value, field: &str, inner: &str, named: bool, keyed: bool) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    self.nested(owner, x, field, &at(inner, k), named, keyed || rules::says_image(k));
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    self.nested(owner, x, field, &format!("{inner}[{i}]"), named, keyed);
                }
            }
            Value::String(s) if keyed || named => {
                let via = if keyed { "ConfigMap key names an image" } else { "ConfigMap named for images" };
                // The key the value stands after on its line (none for a list item).
                let hint = (!inner.ends_with(']')).then(|| inner.rsplit('.').next().unwrap_or(inner).to_string());
                self.rule_value(owner, s, Place::new(None, format!("{field} > {inner}"), via.into(), hint), !keyed);
            }
            _ => {}
        }
    }

    /// A value found by rule outside a pod spec: taken if the guard ([`rules::judge`]) lets it
    /// through, else a warning or nothing.
    fn rule_value(&mut self, owner: &Owner, value: &str, place: Place, need_host: bool) {
        match rules::judge(value, need_host) {
            Verdict::Take => self.push_injected(owner, value.trim(), place),
            Verdict::Warn(why) => self.warnings.push(format!(
                "{} (document at line {}): {} {} {}: {value:?} is not taken ({}): {why}",
                self.file, self.start, owner.kind, owner.name, place.field, place.via
            )),
            Verdict::Ignore => {}
        }
    }

    /// A value handed to an operator. One of a flag or variable of the built-in table or the
    /// config is taken whatever it is (the user said so); one that does not parse is a warning.
    fn push_injected(&mut self, owner: &Owner, value: &str, place: Place) {
        self.hits.push(Hit {
            image: value.to_string(),
            owner: owner.clone(),
            container: place.container,
            field: place.field,
            via: Some(place.via),
            soft: true,
            injected: true,
            hint: place.hint,
        });
    }

    /// An `image` string in a custom resource outside any container: taken on evidence (a kind
    /// known to run it, a KubeVirt container disk, or a value that names a registry host and a
    /// tag or digest), else reported.
    fn custom_image(&mut self, s: &str, m: &serde_json::Map<String, Value>, path: &str, owner: &Owner, ctx: Context) {
        let field = at(path, "image");
        if s.is_empty() {
            return self.warn_empty(owner, &field);
        }
        let explicit_host =
            s.split_once('/').is_some_and(|(h, _)| h.contains('.') || h.contains(':') || h == "localhost");
        let qualified = explicit_host && crate::reference::without_tag_or_digest(s) != s && Reference::parse(s).is_ok();
        if owner.known || ctx == Context::ContainerDisk || qualified {
            let name = m.get("name").and_then(Value::as_str).map(str::to_string);
            self.push(owner, s, name, field, None, !owner.known);
        } else if !looks_templated(s) {
            self.warnings.push(format!(
                "{}: {} {} {field}: {s:?} is not taken as a container image (a custom resource's `image` that is neither in a container nor a fully qualified reference); add it under `images:` if the cluster pulls it",
                self.file, owner.kind, owner.name
            ));
        } else {
            self.push(owner, s, None, field, None, false);
        }
    }

    fn warn_empty(&mut self, owner: &Owner, field: &str) {
        self.warnings.push(format!(
            "{} (document at line {}): {} {} {field} is empty (the operator's default image); add that image under `images:` if the cluster pulls it",
            self.file, self.start, owner.kind, owner.name
        ));
    }

    fn push(
        &mut self,
        owner: &Owner,
        image: &str,
        container: Option<String>,
        field: String,
        via: Option<String>,
        soft: bool,
    ) {
        let hit = Hit { image: image.to_string(), owner: owner.clone(), container, field, via, soft, injected: false, hint: None };
        self.hits.push(hit);
    }
}

fn object_owner(m: &serde_json::Map<String, Value>, api: &str, kind: &str) -> Owner {
    let meta = m.get("metadata");
    let group = api.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let custom = group.contains('.') && !group.ends_with(".k8s.io") && !group.ends_with(".kubernetes.io");
    Owner {
        kind: kind.to_string(),
        name: meta.and_then(|x| x.get("name")).and_then(Value::as_str).unwrap_or("").to_string(),
        namespace: meta.and_then(|x| x.get("namespace")).and_then(Value::as_str).map(str::to_string),
        custom,
        known: KNOWN_KINDS.iter().any(|(g, kinds)| *g == group && kinds.contains(&kind)),
        csv: group == "operators.coreos.com" && kind == "ClusterServiceVersion",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<FoundImage> {
        extract(text, "t.yaml", &Injected::default()).unwrap().images
    }

    fn images(text: &str) -> Vec<(String, usize, String)> {
        found(text).into_iter().map(|f| (f.reference.to_string(), f.line, f.field)).collect()
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
        let got = extract(text, "t.yaml", &Injected::default()).unwrap().images;
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
        let got = extract(text, "t.yaml", &Injected::default()).unwrap().images;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].line, 13);
        let json = "{\n\t\"apiVersion\": \"v1\",\n\t\"kind\": \"List\",\n\t\"items\": [{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\"},\n\t\t\"spec\": {\"containers\": [{\"name\": \"a\",\n\t\t\"image\": \"quay.io/a/b:1\"}]}}]\n}\n";
        let got = extract(json, "t.json", &Injected::default()).unwrap().images;
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
        let e = extract(text, "w.yaml", &Injected::default()).unwrap_err().to_string();
        assert!(e.contains("w.yaml:9") && e.contains("Pod p") && e.contains("lowercase"), "{e}");
        let text = "kind: ConfigMap\n---\nkind: Pod\nspec: [a, b\n  c: d\n";
        let e = extract(text, "w.yaml", &Injected::default()).unwrap_err().to_string();
        assert!(e.contains("w.yaml") && e.contains("line 5"), "{e}");
    }

    /// Every image of a written input with its provenance text, and the warnings.
    fn by_rule(text: &str) -> (Vec<String>, Vec<String>) {
        let got = extract(text, "r.yaml", &Injected::default()).unwrap();
        let images = got
            .images
            .iter()
            .map(|f| format!("{} {} {} @{} {}", f.reference, f.kind, f.field, f.line, f.via.as_deref().unwrap_or("-")))
            .collect();
        (images, got.warnings)
    }

    // Checks rule 1: any container variable whose name says image, literal values; and its
    // guards: switches, versions and pull policies under such names are never taken, nor a
    // repository under a name that says so (`_REPOSITORY`), a tagged name without host or path
    // is a warning, a template a warning (not an error).
    #[test]
    fn rule_1_variables() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: op}
spec:
  template:
    spec:
      containers:
      - name: manager
        image: ghcr.io/acme/op:1
        env:
        - {name: AGENT_IMAGE, value: ghcr.io/acme/agent:1}
        - {name: DRIVER_IMAGE-580, value: \"nvcr.io/nvidia/driver@sha256:fbbd829db234885d6f0026ca6fb6369f6875b0b91fc5e98d7752f31aeab5e470\"}
        - {name: SKIP_IMAGE_PULL, value: \"true\"}
        - {name: FALLBACK_IMAGE, value: v1.2.3}
        - {name: OP_IMAGE_REPOSITORY, value: quay.io/acme/op}
        - {name: IMAGE_PULL_POLICY, value: IfNotPresent}
        - {name: HELPER_IMAGE, value: busybox:1.36}
        - {name: DEFAULT_IMAGE, value: \"${REGISTRY}/acme/x:1\"}
        - {name: WATCH_NAMESPACE, value: ghcr.io/not/an-image:1}
";
        let (images, warnings) = by_rule(text);
        assert_eq!(
            images,
            [
                "ghcr.io/acme/op:1 Deployment spec.template.spec.containers[0].image @9 -",
                "ghcr.io/acme/agent:1 Deployment spec.template.spec.containers[0].env[0].value @11 variable AGENT_IMAGE",
                "nvcr.io/nvidia/driver@sha256:fbbd829db234885d6f0026ca6fb6369f6875b0b91fc5e98d7752f31aeab5e470 Deployment spec.template.spec.containers[0].env[1].value @12 variable DRIVER_IMAGE-580",
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("env[6].value: \"busybox:1.36\"") && warnings[0].contains("names no registry host or path"));
        assert!(warnings[1].contains("${REGISTRY}") && warnings[1].contains("template"), "{}", warnings[1]);
    }

    // Checks rule 2: a variable read from a ConfigMap key is resolved through the ConfigMaps of
    // the same input and namespace, standing where the ConfigMap value does (so `rewrite`
    // changes that); one that cannot be resolved (other namespace, missing key) is a warning
    // naming container, variable, ConfigMap and key.
    #[test]
    fn rule_2_config_map_key_refs() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: ctl, namespace: ev}
spec:
  template:
    spec:
      containers:
      - name: controller
        image: gcr.io/k/ctl:1
        env:
        - name: TIMER_IMAGE
          valueFrom: {configMapKeyRef: {name: settings, key: timer}}
        - name: LOG_IMAGE
          valueFrom: {configMapKeyRef: {name: settings, key: log}}
        - name: OTHER_IMAGE
          valueFrom: {configMapKeyRef: {name: elsewhere, key: x}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: ev}
data:
  timer: gcr.io/k/timer:2
  unrelated: gcr.io/k/unrelated:3
---
apiVersion: v1
kind: ConfigMap
metadata: {name: elsewhere, namespace: other}
data: {x: gcr.io/k/x:4}
";
        let (images, warnings) = by_rule(text);
        assert_eq!(
            images,
            [
                "gcr.io/k/ctl:1 Deployment spec.template.spec.containers[0].image @9 -",
                "gcr.io/k/timer:2 ConfigMap data.timer @22 read by Deployment ctl container controller variable TIMER_IMAGE (configMapKeyRef)",
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        for (w, var, cm, key) in [(&warnings[0], "LOG_IMAGE", "ev/settings", "log"), (&warnings[1], "OTHER_IMAGE", "ev/elsewhere", "x")] {
            assert!(
                w.contains("container controller") && w.contains(&format!("variable {var}")) && w.contains(&format!("ConfigMap {cm} key {key}")),
                "{w}"
            );
        }
    }

    // Checks rule 3: every value of a ConfigMap named for images that names a registry host,
    // values under keys that say image in any ConfigMap, and images inside YAML or JSON held in
    // a value; and its guards: a path without a host in an image ConfigMap, switches under image
    // keys, Knative's `_example` blocks, other keys of other ConfigMaps are never taken; a
    // template is a warning.
    #[test]
    fn rule_3_config_maps() {
        let text = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: csi-image-set}
data:
  provisioner: \"registry.k8s.io/sig-storage/csi-provisioner:v6.2.0\"
  format: text/plain
  replicas: \"2\"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: config-deployment}
data:
  queue-sidecar-image: gcr.io/k/queue@sha256:a3cc71ce80dbc6df8781f15eac2cf3531a4c9815271799afd8776bef9e6aeaf2
  volumes-image: disabled
  default-image: \"{{ .Values.image }}\"
  registry: quay.io/acme/thing:1
  _example: |
    queue-sidecar-image: gcr.io/k/old:0
  config.yaml: |
    executor:
      image: quay.io/argoproj/argoexec:v3.6.7
      resources: {}
  sidecars.json: '{\"images\": [\"ghcr.io/a/one:1\", \"ghcr.io/a/two:2\"], \"replicas\": 2}'
";
        let (images, warnings) = by_rule(text);
        assert_eq!(
            images,
            [
                "registry.k8s.io/sig-storage/csi-provisioner:v6.2.0 ConfigMap data.provisioner @5 ConfigMap named for images",
                "gcr.io/k/queue@sha256:a3cc71ce80dbc6df8781f15eac2cf3531a4c9815271799afd8776bef9e6aeaf2 ConfigMap data.queue-sidecar-image @13 ConfigMap key queue-sidecar-image",
                "quay.io/argoproj/argoexec:v3.6.7 ConfigMap data.config.yaml > executor.image @21 ConfigMap key names an image",
                "ghcr.io/a/one:1 ConfigMap data.sidecars.json > images[0] @23 ConfigMap key names an image",
                "ghcr.io/a/two:2 ConfigMap data.sidecars.json > images[1] @23 ConfigMap key names an image",
            ]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("data.default-image") && warnings[0].contains("template"), "{}", warnings[0]);
    }

    // Checks rule 4: the four flag forms for any flag whose name ends in image, in `args` and
    // `command`; and its guard: other flags' values and non-references are never taken.
    #[test]
    fn rule_4_flags() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: tekton-pipelines-controller}
spec:
  template:
    spec:
      containers:
      - name: controller
        image: ghcr.io/t/controller:1
        command: [/ko-app/controller, --nop-image=ghcr.io/t/nop:1]
        args:
        - -entrypoint-image
        - ghcr.io/t/entrypoint:1
        - -shell-image=cgr.dev/chainguard/busybox@sha256:19f02276bf8dbdd62f069b922f10c65262cc34b710eea26ff928129a736be791
        - --workingdirinit-image
        - ghcr.io/t/workingdirinit:1
        - --image-pull-policy
        - ghcr.io/not/an-image:1
        - --pull-image=true
        - --other
        - ghcr.io/not/this:1
";
        let (images, warnings) = by_rule(text);
        assert_eq!(
            images,
            [
                "ghcr.io/t/controller:1 Deployment spec.template.spec.containers[0].image @9 -",
                "ghcr.io/t/nop:1 Deployment spec.template.spec.containers[0].command[1] @10 flag --nop-image",
                "ghcr.io/t/entrypoint:1 Deployment spec.template.spec.containers[0].args[1] @13 flag -entrypoint-image",
                "cgr.dev/chainguard/busybox@sha256:19f02276bf8dbdd62f069b922f10c65262cc34b710eea26ff928129a736be791 Deployment spec.template.spec.containers[0].args[2] @14 flag -shell-image",
                "ghcr.io/t/workingdirinit:1 Deployment spec.template.spec.containers[0].args[4] @16 flag --workingdirinit-image",
            ]
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    // Checks rule 5: a ClusterServiceVersion's relatedImages and the pod spec of the deployment
    // it embeds, with the OLM variables of that deployment; and its guard: a relatedImages entry
    // that is no reference is a warning, an empty one nothing.
    #[test]
    fn rule_5_olm_bundles() {
        let text = "\
apiVersion: operators.coreos.com/v1alpha1
kind: ClusterServiceVersion
metadata:
  name: op.v1.0.0
  annotations: {containerImage: quay.io/acme/op:1}
spec:
  relatedImages:
  - {name: op, image: quay.io/acme/op:1}
  - {name: agent, image: quay.io/acme/agent:1}
  - {name: broken, image: quay.io/acme/Agent:1}
  - {name: none, image: \"\"}
  install:
    strategy: deployment
    spec:
      deployments:
      - name: op
        spec:
          template:
            spec:
              containers:
              - name: manager
                image: quay.io/acme/op:1
                env:
                - {name: RELATED_IMAGE_AGENT, value: quay.io/acme/agent:1}
";
        let (images, warnings) = by_rule(text);
        assert_eq!(
            images,
            [
                "quay.io/acme/op:1 ClusterServiceVersion spec.relatedImages[0].image @8 OLM relatedImages op",
                "quay.io/acme/agent:1 ClusterServiceVersion spec.relatedImages[1].image @9 OLM relatedImages agent",
                "quay.io/acme/op:1 ClusterServiceVersion spec.install.spec.deployments[0].spec.template.spec.containers[0].image @22 -",
                "quay.io/acme/agent:1 ClusterServiceVersion spec.install.spec.deployments[0].spec.template.spec.containers[0].env[0].value @24 variable RELATED_IMAGE_AGENT",
            ]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("relatedImages[2]") && warnings[0].contains("lowercase"), "{}", warnings[0]);
        let got = extract(text, "r.yaml", &Injected::default()).unwrap().images;
        assert_eq!(got.iter().map(|f| f.injected).collect::<Vec<_>>(), [true, true, false, true], "pod specs are not injected");
    }
}
