//! The image set: every image a network isolated AKS cluster and its workloads will pull, why
//! each is needed, and where in the private registry it must be.
//!
//! Three inputs make the set, each keeping its provenance so that `mirror resolve` can answer
//! "why is this here":
//! - the AKS component lists ([`lists`], generated from AgentBaker by [`agentbaker`]), chosen
//!   for the cluster's Kubernetes version, architectures, GPU pools and node OS;
//! - the images in the workload manifests ([`workloads`]);
//! - the explicit `images:` of the config: references, `oci://` Helm charts, and repositories
//!   with a tag rule ([`tags`]), whose tags are chosen from the source's tag list by
//!   [`select_tags`] when the plan is made.
//!
//! Every source reference is then mapped to its target and mode ([`mapping`]). The result is
//! de-duplicated by source reference (an image asked for twice has one entry and two
//! provenances) and sorted, so the same inputs always give the same set, byte for byte.

pub mod agentbaker;
pub mod lists;
pub mod mapping;
pub mod rewrite;
mod rules;
pub mod tags;
pub mod workloads;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{AksConfig, Config, ImageItem, MappingMode, WorkloadsConfig};
use crate::manifest::PlatformFilter;
use crate::reference::{Reference, ReferenceError};

use lists::{ClusterChoice, KubeVersion, ListError, ListSet};
pub use lists::{ImageKind, NodeOs};
use mapping::{AKS_MANAGED_PREFIX, Mapper, MappingError};
use tags::{TagMatcher, TagRuleError};
use workloads::{FoundImage, Injected, Input, WorkloadError};

/// Why an image is in the set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "from", rename_all = "camelCase")]
pub enum Provenance {
    /// An AKS component list entry.
    #[serde(rename_all = "camelCase")]
    AksList {
        /// The list file (or built-in copy) it was chosen from.
        list: String,
        kubernetes_minor: String,
        /// Where in the AgentBaker input the list entry came from.
        entry: Vec<String>,
    },
    /// A container (or image field) in a workload manifest.
    #[serde(rename_all = "camelCase")]
    Workload {
        file: String,
        document: usize,
        line: usize,
        kind: String,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        container: Option<String>,
        field: String,
        /// The operator flag or variable that carried the image, or `image volume`.
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// The config's own `images:` list.
    #[serde(rename_all = "camelCase")]
    Config {
        index: usize,
        line: u64,
        /// For a tag rule: why this tag was chosen.
        #[serde(skip_serializing_if = "Option::is_none")]
        tag_rule: Option<String>,
    },
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::AksList { list, entry, .. } => {
                write!(f, "AKS list {list}")?;
                if let Some(first) = entry.first() {
                    write!(f, " ({first})")?;
                }
                Ok(())
            }
            Provenance::Workload { file, document, line, kind, name, namespace, container, via, .. } => {
                write!(f, "{file}:{line} (document {document}) {kind} ")?;
                if let Some(ns) = namespace {
                    write!(f, "{ns}/")?;
                }
                write!(f, "{name}")?;
                if let Some(c) = container {
                    write!(f, " container {c}")?;
                }
                if let Some(v) = via {
                    write!(f, " {v}")?;
                }
                Ok(())
            }
            Provenance::Config { index, line, tag_rule } => {
                write!(f, "config images[{index}] (line {line})")?;
                if let Some(r) = tag_rule {
                    write!(f, " tags {r}")?;
                }
                Ok(())
            }
        }
    }
}

/// The platforms to carry for one image: every platform it has, or a list that is never empty.
/// An empty list cannot be built, so no image widens to "every platform" by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platforms(Option<Vec<PlatformFilter>>);

impl Platforms {
    /// Every platform the image has.
    pub const ALL: Platforms = Platforms(None);

    /// Exactly these platforms; `None` when the list is empty.
    pub fn only(mut list: Vec<PlatformFilter>) -> Option<Platforms> {
        list.sort();
        list.dedup();
        (!list.is_empty()).then_some(Platforms(Some(list)))
    }

    /// The list, or `None` for every platform.
    pub fn list(&self) -> Option<&[PlatformFilter]> {
        self.0.as_deref()
    }

    /// As the transfer engine takes them: empty means every platform.
    pub fn filters(&self) -> Vec<PlatformFilter> {
        self.0.clone().unwrap_or_default()
    }

    fn union(&mut self, other: &Platforms) {
        match (&mut self.0, &other.0) {
            (Some(a), Some(b)) => {
                a.extend(b.iter().cloned());
                a.sort();
                a.dedup();
            }
            _ => self.0 = None,
        }
    }
}

impl fmt::Display for Platforms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("all"),
            Some(l) => f.write_str(&l.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")),
        }
    }
}

/// `"all"`, or the list of `os/arch[/variant]` strings.
impl Serialize for Platforms {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            None => s.serialize_str("all"),
            Some(l) => l.serialize(s),
        }
    }
}

/// One image of the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageEntry {
    #[serde(serialize_with = "as_string")]
    pub source: Reference,
    #[serde(serialize_with = "as_string")]
    pub target: Reference,
    pub mode: MappingMode,
    /// Platforms to carry.
    pub platforms: Platforms,
    pub kind: ImageKind,
    /// The digest the source reference pins, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<crate::digest::Digest>,
    /// Every place that asks for it is outside a pod spec (an operator's variable, flag,
    /// ConfigMap or OLM bundle): with no manifest for any configured platform it is skipped,
    /// not failed (operators name helpers for platforms the cluster does not run).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub injected: bool,
    pub provenance: Vec<Provenance>,
}

fn as_string<S: serde::Serializer>(r: &Reference, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&r.to_string())
}

/// A workload file as read, kept for `rewrite`.
#[derive(Debug, Clone)]
pub struct WorkloadFile {
    /// As named in messages: the path, or `<stdin>`.
    pub name: String,
    pub path: Option<PathBuf>,
    pub text: String,
    pub images: Vec<FoundImage>,
    /// The injected-image flags and variables the images were found with, to check a rewrite.
    pub injected: Injected,
}

/// An `images:` entry with a tag rule, waiting for the source's tag list ([`select_tags`]).
#[derive(Debug, Clone)]
pub struct PendingTags {
    pub index: usize,
    pub line: u64,
    /// The repository, with no tag.
    pub repository: Reference,
    pub kind: ImageKind,
    pub platforms: Platforms,
    pub matcher: TagMatcher,
}

/// The resolved set and what the user should know about it.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub images: Vec<ImageEntry>,
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub workloads: Vec<WorkloadFile>,
    #[serde(skip)]
    pub mapper: Option<Mapper>,
    /// Tag rules not yet resolved against their source; [`select_tags`] empties it.
    #[serde(skip)]
    pub pending: Vec<PendingTags>,
}

/// Why the set could not be built. Each names the input at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImageSetError {
    #[error(transparent)]
    Lists(#[from] ListError),
    #[error(transparent)]
    Workloads(#[from] WorkloadError),
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error("images[{index}] (line {line}, column {column}): {error}")]
    ConfigImage { index: usize, line: u64, column: u64, error: ReferenceError },
    #[error(transparent)]
    TagRule(#[from] TagRuleError),
    #[error(
        "aks.architectures names {architecture}, but `platforms` ({platforms}) has no linux/{architecture}: nodes of that architecture would get no images. Add linux/{architecture} to `platforms`, or take {architecture} out of aks.architectures"
    )]
    PlatformOverlap { architecture: String, platforms: String },
    #[error("images[{index}] (line {line}): cannot list the tags of {repository}: {error}")]
    TagList { index: usize, line: u64, repository: String, error: String },
    #[error("--strict: {0}")]
    Strict(String),
}

/// Extensions network isolated mode does not support
/// (<https://learn.microsoft.com/azure/aks/concepts-network-isolated>, Limitations): a
/// lower-case fragment of the name as users write it, and the name to show.
const UNSUPPORTED_EXTENSIONS: &[(&str, &str)] = &[
    ("dapr", "Dapr"),
    ("appconfig", "Azure App Configuration"),
    ("azureml", "Azure Machine Learning"),
    ("machinelearning", "Azure Machine Learning"),
    ("flux", "Flux (GitOps)"),
    ("gitops", "Flux (GitOps)"),
    ("backup", "Azure Backup for AKS"),
    ("dataprotection", "Azure Backup for AKS"),
];

/// Options the command line may set; tests use them to feed stdin.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Text to use for `-` in `workloads.manifests` instead of reading the process's stdin.
    pub stdin: Option<String>,
}

/// Builds the image set for a config whose relative paths are relative to `config_dir`.
pub fn resolve(cfg: &Config, config_dir: &Path) -> Result<Resolved, ImageSetError> {
    resolve_with(cfg, config_dir, &ResolveOptions::default())
}

/// [`resolve`] with options: the AKS components, then the workloads, then the explicit images,
/// each mapped to its target and merged into one sorted set.
pub fn resolve_with(cfg: &Config, config_dir: &Path, opts: &ResolveOptions) -> Result<Resolved, ImageSetError> {
    let mut set = SetBuilder::new(Mapper::new(cfg.target.as_deref(), &cfg.mappings)?);
    if let Some(aks) = &cfg.aks {
        add_aks(&mut set, aks, &cfg.platforms, config_dir)?;
    }
    let platforms = other_platforms(cfg);
    let files = match &cfg.workloads {
        Some(w) => add_workloads(&mut set, w, config_dir, opts, &platforms)?,
        None => Vec::new(),
    };
    let pending = add_config_images(&mut set, &cfg.images, &platforms)?;
    Ok(Resolved {
        images: set.images.into_values().collect(),
        warnings: set.warnings,
        workloads: files,
        mapper: Some(set.mapper),
        pending,
    })
}

/// The set as it is built: entries by source reference, and warnings.
#[derive(Debug)]
struct SetBuilder {
    mapper: Mapper,
    images: BTreeMap<String, ImageEntry>,
    /// Every (source, provenance) added, so that a provenance is recorded once per image without
    /// searching the image's list: an image named by 80,000 documents (a sidecar in every
    /// Deployment of a large file) would make that search quadratic.
    seen: std::collections::HashSet<(String, Provenance)>,
    warnings: Vec<String>,
}

impl SetBuilder {
    fn new(mapper: Mapper) -> SetBuilder {
        SetBuilder { mapper, images: BTreeMap::new(), seen: Default::default(), warnings: Vec::new() }
    }

    /// Maps `source` and adds it, or adds `prov` and `platforms` to the entry it already has.
    /// An image stays `injected` only while every place that asks for it is.
    fn add(
        &mut self,
        source: Reference,
        platforms: Platforms,
        kind: ImageKind,
        prov: Provenance,
        injected: bool,
    ) -> Result<(), MappingError> {
        let key = source.to_string();
        if let Some(e) = self.images.get_mut(&key) {
            e.platforms.union(&platforms);
            e.injected &= injected;
            if self.seen.insert((key, prov.clone())) {
                e.provenance.push(prov);
            }
            return Ok(());
        }
        self.seen.insert((key.clone(), prov.clone()));
        let (target, mode, _) = self.mapper.map(&source)?;
        let digest = source.digest.clone();
        let entry = ImageEntry { source, target, mode, platforms, kind, digest, injected, provenance: vec![prov] };
        self.images.insert(key, entry);
        Ok(())
    }
}

/// The architectures of the cluster: aks.architectures, else the linux platforms asked for,
/// else amd64.
fn cluster_architectures(aks: &AksConfig, platforms: &[PlatformFilter]) -> Vec<String> {
    if !aks.architectures.is_empty() {
        return aks.architectures.clone();
    }
    let from_platforms: Vec<String> =
        platforms.iter().filter(|p| p.os == "linux").map(|p| p.architecture.clone()).collect();
    if from_platforms.is_empty() { vec!["amd64".to_string()] } else { from_platforms }
}

/// The AKS component images for the cluster, with the warnings its choice gives.
fn add_aks(
    set: &mut SetBuilder,
    aks: &AksConfig,
    platforms: &[PlatformFilter],
    config_dir: &Path,
) -> Result<(), ImageSetError> {
    let version = KubeVersion::parse(&aks.kubernetes_version)?;
    let architectures = cluster_architectures(aks, platforms);
    if !platforms.is_empty()
        && let Some(a) =
            architectures.iter().find(|a| !platforms.iter().any(|p| p.os == "linux" && p.architecture == **a))
    {
        let shown: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
        return Err(ImageSetError::PlatformOverlap { architecture: a.clone(), platforms: shown.join(", ") });
    }
    // Every AKS cluster has a Linux system node pool, so Linux is always in.
    let mut os = vec![NodeOs::Linux];
    os.extend(aks.os.iter().copied().filter(|o| *o != NodeOs::Linux));
    let lists_dir = aks.lists.as_ref().map(|p| config_dir.join(p));
    let set_of_lists = ListSet::locate(lists_dir.as_deref())?;
    let choice = ClusterChoice { version, architectures, gpu: aks.gpu, os: os.clone() };
    let sel = lists::select(&set_of_lists, &choice)?;
    set.warnings.extend(sel.warnings);
    let omitted = set_of_lists.lists.get(&(version.major, version.minor)).map(|(_, l)| l.windows_omitted).unwrap_or(0);
    set.warnings.push(format!(
        "Windows node pools are not supported in network isolated mode: {omitted} Windows-only images of the AKS component list are left out{}",
        if os.contains(&NodeOs::Windows) { " (aks.os names windows)" } else { "" }
    ));
    set.warnings.extend(aks.extensions.iter().map(|e| extension_warning(e)));
    let mut misplaced = 0usize;
    for c in sel.chosen {
        let source = Reference::parse(&c.entry.image).map_err(|e| ListError::Parse {
            path: c.list_file.clone(),
            message: format!("entry {}: {e}", c.entry.image),
        })?;
        let (target, _, _) = set.mapper.map(&source)?;
        if source.registry == "mcr.microsoft.com"
            && target.repository != format!("{AKS_MANAGED_PREFIX}/{}", source.repository)
        {
            misplaced += 1;
        }
        // `select` keeps only entries with a platform of the cluster, and every cluster
        // architecture is in `platforms` (checked above), so this list is never empty.
        let Some(entry_platforms) = Platforms::only(c.platforms) else { continue };
        let prov = Provenance::AksList {
            list: c.list_file.clone(),
            kubernetes_minor: version.minor_string(),
            entry: c.entry.from.clone(),
        };
        set.add(source, entry_platforms, c.entry.kind, prov, false)?;
    }
    if misplaced > 0 {
        set.warnings.push(format!(
            "{misplaced} AKS component images are mapped outside {}/{AKS_MANAGED_PREFIX}/: nodes ask for mcr.microsoft.com images only there (the aks-managed-mcr cache rule path)",
            set.mapper.target_host()
        ));
    }
    Ok(())
}

fn extension_warning(ext: &str) -> String {
    let norm: String = ext.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_lowercase();
    match UNSUPPORTED_EXTENSIONS.iter().find(|(k, _)| norm.contains(k)) {
        Some((_, what)) => {
            format!("extension {ext:?} ({what}) is not supported in network isolated mode; its images are not added")
        }
        None => format!("extension {ext:?}: no component list covers it; add its images under `images:`"),
    }
}

/// Platforms for images that are not AKS components: the config's, else the cluster's, else all.
fn other_platforms(cfg: &Config) -> Platforms {
    let list = match &cfg.aks {
        _ if !cfg.platforms.is_empty() => cfg.platforms.clone(),
        Some(aks) => cluster_architectures(aks, &[])
            .into_iter()
            .map(|a| PlatformFilter { os: "linux".into(), architecture: a, variant: None })
            .collect(),
        None => Vec::new(),
    };
    Platforms::only(list).unwrap_or(Platforms::ALL)
}

/// The images of every workload manifest, and the files as read (for `rewrite`).
fn add_workloads(
    set: &mut SetBuilder,
    w: &WorkloadsConfig,
    config_dir: &Path,
    opts: &ResolveOptions,
    platforms: &Platforms,
) -> Result<Vec<WorkloadFile>, ImageSetError> {
    let injected = Injected::new(&w.injected_images);
    let mut files = Vec::new();
    for input in workloads::expand(&w.manifests, config_dir)? {
        let (name, text) = match (&input, &opts.stdin) {
            (Input::Stdin, Some(s)) => ("<stdin>".to_string(), s.clone()),
            _ => workloads::read_input(&input)?,
        };
        let found = workloads::extract(&text, &name, &injected)?;
        set.warnings.extend(found.warnings);
        for f in &found.images {
            let prov = Provenance::Workload {
                file: f.file.clone(),
                document: f.document,
                line: f.line,
                kind: f.kind.clone(),
                name: f.name.clone(),
                namespace: f.namespace.clone(),
                container: f.container.clone(),
                field: f.field.clone(),
                via: f.via.clone(),
            };
            set.add(f.reference.clone(), platforms.clone(), ImageKind::ContainerImage, prov, f.injected)?;
        }
        let path = match input {
            Input::File(p) => Some(p),
            Input::Stdin => None,
        };
        files.push(WorkloadFile { name, path, text, images: found.images, injected: injected.clone() });
    }
    Ok(files)
}

/// The explicit `images:`: references are added; tag rules are returned, to be resolved
/// against their source's tag list. `oci://` names a Helm chart, which has no platforms.
fn add_config_images(
    set: &mut SetBuilder,
    items: &[serde_saphyr::Spanned<ImageItem>],
    platforms: &Platforms,
) -> Result<Vec<PendingTags>, ImageSetError> {
    let mut pending = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let line = item.referenced.line();
        let bad = |error| ImageSetError::ConfigImage { index, line, column: item.referenced.column(), error };
        let (text, tags) = match &item.value {
            ImageItem::Reference(r) => (r.as_str(), None),
            ImageItem::Tags(t) => (t.repository.as_str(), Some(&t.tags)),
        };
        let (text, kind, platforms) = match text.strip_prefix("oci://") {
            Some(chart) => (chart, ImageKind::HelmChart, Platforms::ALL),
            None => (text, ImageKind::ContainerImage, platforms.clone()),
        };
        let source = Reference::parse(text).map_err(bad)?;
        let Some(rule) = tags else {
            set.add(source, platforms, kind, Provenance::Config { index, line, tag_rule: None }, false)?;
            continue;
        };
        if text != crate::reference::without_tag_or_digest(text) {
            return Err(TagRuleError {
                index,
                line,
                message: format!("repository {text:?} has a tag or digest: a tag rule chooses the tags"),
            }
            .into());
        }
        let matcher = TagMatcher::new(rule).map_err(|message| TagRuleError { index, line, message })?;
        set.mapper.map(&source)?;
        pending.push(PendingTags {
            index,
            line,
            repository: Reference { tag: None, ..source },
            kind,
            platforms,
            matcher,
        });
    }
    Ok(pending)
}

/// Resolves every pending tag rule against its source's tag list (one listing per rule) and
/// adds the chosen tags, each with why. A rule that matches nothing is a warning, or with
/// `strict` an error.
pub async fn select_tags(
    resolved: &mut Resolved,
    registries: &crate::registry::Registries,
    strict: bool,
) -> Result<(), ImageSetError> {
    let Some(mapper) = resolved.mapper.clone() else { return Ok(()) };
    let mut set = SetBuilder::new(mapper);
    set.images = resolved.images.drain(..).map(|e| (e.source.to_string(), e)).collect();
    for p in std::mem::take(&mut resolved.pending) {
        let repo = p.repository.name();
        let listing = async { registries.get(&p.repository.registry)?.list_tags(&p.repository.repository).await };
        let tags = listing.await.map_err(|e: crate::registry::RegistryError| ImageSetError::TagList {
            index: p.index,
            line: p.line,
            repository: repo.clone(),
            error: crate::sanitize::text(&e.to_string(), 500),
        })?;
        let chosen = p.matcher.select(&tags);
        if chosen.is_empty() {
            let msg = format!(
                "images[{}] (line {}): tags {} chose none of the {} tags of {repo}",
                p.index,
                p.line,
                p.matcher.describe(),
                tags.len()
            );
            if strict {
                return Err(ImageSetError::Strict(msg));
            }
            set.warnings.push(msg);
        }
        for (tag, why) in chosen {
            let source = Reference { tag: Some(tag), ..p.repository.clone() };
            let prov = Provenance::Config { index: p.index, line: p.line, tag_rule: Some(why) };
            set.add(source, p.platforms.clone(), p.kind, prov, false)?;
        }
    }
    resolved.images = set.images.into_values().collect();
    resolved.warnings.extend(set.warnings);
    Ok(())
}

/// The set as a table for people: one line per image, provenance indented below it.
pub fn render_table(r: &Resolved) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let w = r.images.iter().map(|e| e.source.to_string().len()).max().unwrap_or(6).max(6);
    let _ = writeln!(o, "{:<w$}  {:<5}  {:<15}  {:<25}  TARGET", "SOURCE", "MODE", "KIND", "PLATFORMS");
    for e in &r.images {
        let mode = match e.mode {
            MappingMode::Warm => "warm",
            MappingMode::Copy => "copy",
        };
        let _ = writeln!(
            o,
            "{:<w$}  {mode:<5}  {:<15}  {:<25}  {}",
            e.source.to_string(),
            e.kind.to_string(),
            e.platforms.to_string(),
            e.target
        );
        for pr in &e.provenance {
            let _ = writeln!(o, "    <- {pr}");
        }
    }
    let _ = writeln!(o, "{} images", r.images.len());
    o
}
