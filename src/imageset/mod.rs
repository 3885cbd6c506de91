//! The image set: every image a network isolated AKS cluster and its workloads will pull, why
//! each is needed, and where in the private registry it must be.
//!
//! Three inputs make the set, each keeping its provenance so that `mirror resolve` can answer
//! "why is this here":
//! - the AKS component lists ([`lists`], generated from AgentBaker by [`agentbaker`]), chosen
//!   for the cluster's Kubernetes version, architectures, GPU pools and node OS;
//! - the images in the workload manifests ([`workloads`]);
//! - the explicit `images:` of the config.
//!
//! Every source reference is then mapped to its target and mode ([`mapping`]). The result is
//! de-duplicated by source reference (an image asked for twice has one entry and two
//! provenances) and sorted, so the same inputs always give the same set, byte for byte.

pub mod agentbaker;
pub mod lists;
pub mod mapping;
pub mod rewrite;
pub mod workloads;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, MappingMode};
use crate::manifest::PlatformFilter;
use crate::reference::{Reference, ReferenceError};

use lists::{ClusterChoice, KubeVersion, ListError, ListSet};
pub use lists::{ImageKind, NodeOs};
use mapping::{AKS_MANAGED_PREFIX, Mapper, MappingError};
use workloads::{FoundImage, Input, WorkloadError};

/// Why an image is in the set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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
    },
    /// The config's own `images:` list.
    #[serde(rename_all = "camelCase")]
    Config { index: usize, line: u64 },
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
            Provenance::Workload { file, document, line, kind, name, namespace, container, .. } => {
                write!(f, "{file}:{line} (document {document}) {kind} ")?;
                if let Some(ns) = namespace {
                    write!(f, "{ns}/")?;
                }
                write!(f, "{name}")?;
                if let Some(c) = container {
                    write!(f, " container {c}")?;
                }
                Ok(())
            }
            Provenance::Config { index, line } => write!(f, "config images[{index}] (line {line})"),
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
    /// Platforms to carry; empty means every platform the image has.
    pub platforms: Vec<PlatformFilter>,
    pub kind: ImageKind,
    /// The digest the source reference pins, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<crate::digest::Digest>,
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
}

/// Extensions network isolated mode does not support (aks-acr-facts §1, Limitations): a
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

/// [`resolve`] with options.
pub fn resolve_with(cfg: &Config, config_dir: &Path, opts: &ResolveOptions) -> Result<Resolved, ImageSetError> {
    let mapper = Mapper::new(cfg.target.as_deref(), &cfg.mappings)?;
    let mut warnings: Vec<String> = Vec::new();
    let mut set: BTreeMap<String, ImageEntry> = BTreeMap::new();

    // The architectures of the cluster: aks.architectures, else the linux platforms asked for,
    // else amd64.
    let cfg_archs: Vec<String> =
        cfg.platforms.iter().filter(|p| p.os == "linux").map(|p| p.architecture.clone()).collect();

    if let Some(aks) = &cfg.aks {
        let version = KubeVersion::parse(&aks.kubernetes_version)?;
        let architectures = if !aks.architectures.is_empty() {
            aks.architectures.clone()
        } else if !cfg_archs.is_empty() {
            cfg_archs.clone()
        } else {
            vec!["amd64".to_string()]
        };
        // Every AKS cluster has a Linux system node pool, so Linux is always in.
        let mut os = vec![NodeOs::Linux];
        os.extend(aks.os.iter().copied().filter(|o| *o != NodeOs::Linux));
        let lists_dir = aks.lists.as_ref().map(|p| config_dir.join(p));
        let set_of_lists = ListSet::locate(lists_dir.as_deref())?;
        let choice = ClusterChoice { version, architectures, gpu: aks.gpu, os: os.clone() };
        let sel = lists::select(&set_of_lists, &choice)?;
        warnings
            .extend(sel.warnings.iter().filter(|w| os.contains(&NodeOs::Flatcar) || !w.contains("(Flatcar)")).cloned());
        let omitted =
            set_of_lists.lists.get(&(version.major, version.minor)).map(|(_, l)| l.windows_omitted).unwrap_or(0);
        warnings.push(format!(
            "Windows node pools are not supported in network isolated mode: {omitted} Windows-only images of the AKS component list are left out{}",
            if os.contains(&NodeOs::Windows) { " (aks.os names windows)" } else { "" }
        ));
        for ext in &aks.extensions {
            let norm: String = ext.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_lowercase();
            match UNSUPPORTED_EXTENSIONS.iter().find(|(k, _)| norm.contains(k)) {
                Some((_, what)) => warnings.push(format!(
                    "extension {ext:?} ({what}) is not supported in network isolated mode; its images are not added"
                )),
                None => warnings
                    .push(format!("extension {ext:?}: no component list covers it; add its images under `images:`")),
            }
        }
        let mut misplaced = 0usize;
        for c in sel.chosen {
            let source = Reference::parse(&c.entry.image).map_err(|e| ListError::Parse {
                path: c.list_file.clone(),
                message: format!("entry {}: {e}", c.entry.image),
            })?;
            let (target, mode, _) = mapper.map(&source)?;
            if source.registry == "mcr.microsoft.com"
                && target.repository != format!("{AKS_MANAGED_PREFIX}/{}", source.repository)
            {
                misplaced += 1;
            }
            let platforms = narrow(&c.platforms, &cfg.platforms);
            let prov = Provenance::AksList {
                list: c.list_file.clone(),
                kubernetes_minor: version.minor_string(),
                entry: c.entry.from.clone(),
            };
            add(&mut set, source, target, mode, platforms, c.entry.kind, prov);
        }
        if misplaced > 0 {
            warnings.push(format!(
                "{misplaced} AKS component images are mapped outside {}/{AKS_MANAGED_PREFIX}/: nodes ask for mcr.microsoft.com images only there (the aks-managed-mcr cache rule path)",
                mapper.target_host()
            ));
        }
    }

    // Platforms for images that are not AKS components: the config's, else the cluster's.
    let workload_platforms: Vec<PlatformFilter> = if !cfg.platforms.is_empty() {
        cfg.platforms.clone()
    } else if let Some(aks) = &cfg.aks {
        let a = if aks.architectures.is_empty() { vec!["amd64".to_string()] } else { aks.architectures.clone() };
        a.into_iter().map(|a| PlatformFilter { os: "linux".into(), architecture: a, variant: None }).collect()
    } else {
        Vec::new()
    };

    let mut files = Vec::new();
    if let Some(w) = &cfg.workloads {
        for input in workloads::expand(&w.manifests, config_dir)? {
            let (name, text) = match (&input, &opts.stdin) {
                (Input::Stdin, Some(s)) => ("<stdin>".to_string(), s.clone()),
                _ => workloads::read_input(&input)?,
            };
            let images = workloads::extract(&text, &name)?;
            let path = match &input {
                Input::File(p) => Some(p.clone()),
                Input::Stdin => None,
            };
            for f in &images {
                let (target, mode, _) = mapper.map(&f.reference)?;
                let prov = Provenance::Workload {
                    file: f.file.clone(),
                    document: f.document,
                    line: f.line,
                    kind: f.kind.clone(),
                    name: f.name.clone(),
                    namespace: f.namespace.clone(),
                    container: f.container.clone(),
                    field: f.field.clone(),
                };
                add(
                    &mut set,
                    f.reference.clone(),
                    target,
                    mode,
                    workload_platforms.clone(),
                    ImageKind::ContainerImage,
                    prov,
                );
            }
            files.push(WorkloadFile { name, path, text, images });
        }
    }

    for (index, img) in cfg.images.iter().enumerate() {
        let source = Reference::parse(&img.value).map_err(|error| ImageSetError::ConfigImage {
            index,
            line: img.referenced.line(),
            column: img.referenced.column(),
            error,
        })?;
        let (target, mode, _) = mapper.map(&source)?;
        let prov = Provenance::Config { index, line: img.referenced.line() };
        add(&mut set, source, target, mode, workload_platforms.clone(), ImageKind::ContainerImage, prov);
    }

    Ok(Resolved { images: set.into_values().collect(), warnings, workloads: files, mapper: Some(mapper) })
}

/// Narrows an entry's platforms to the config's `platforms`, when it has any.
fn narrow(entry: &[PlatformFilter], cfg: &[PlatformFilter]) -> Vec<PlatformFilter> {
    if cfg.is_empty() {
        return entry.to_vec();
    }
    entry.iter().filter(|p| cfg.iter().any(|c| c.os == p.os && c.architecture == p.architecture)).cloned().collect()
}

fn add(
    set: &mut BTreeMap<String, ImageEntry>,
    source: Reference,
    target: Reference,
    mode: MappingMode,
    platforms: Vec<PlatformFilter>,
    kind: ImageKind,
    prov: Provenance,
) {
    let key = source.to_string();
    match set.get_mut(&key) {
        Some(e) => {
            // Empty means every platform: the union with it is every platform too.
            if e.platforms.is_empty() || platforms.is_empty() {
                e.platforms.clear();
            } else {
                for p in platforms {
                    if !e.platforms.contains(&p) {
                        e.platforms.push(p);
                    }
                }
                e.platforms.sort();
            }
            if !e.provenance.contains(&prov) {
                e.provenance.push(prov);
            }
        }
        None => {
            let digest = source.digest.clone();
            set.insert(key, ImageEntry { source, target, mode, platforms, kind, digest, provenance: vec![prov] });
        }
    }
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
        let p: Vec<String> = e.platforms.iter().map(|p| p.to_string()).collect();
        let p = if p.is_empty() { "all".to_string() } else { p.join(",") };
        let _ =
            writeln!(o, "{:<w$}  {mode:<5}  {:<15}  {p:<25}  {}", e.source.to_string(), e.kind.to_string(), e.target);
        for pr in &e.provenance {
            let _ = writeln!(o, "    <- {pr}");
        }
    }
    let _ = writeln!(o, "{} images", r.images.len());
    o
}
