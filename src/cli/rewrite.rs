//! `mirror rewrite -c FILE --digests FILE (--out DIR | --kustomize FILE)`: the workload
//! manifests with every image pointing at its target, pinned by digest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::imageset::rewrite;

#[derive(Debug, clap::Args)]
pub struct RewriteArgs {
    /// Write the rewritten manifests into this folder (one file per input, same file name).
    #[arg(long, conflicts_with = "kustomize", required_unless_present = "kustomize")]
    pub out: Option<PathBuf>,
    /// Write a kustomize `images:` block to this file instead.
    #[arg(long)]
    pub kustomize: Option<PathBuf>,
    /// JSON map of source reference → digest (or `mirror resolve -o json` output). Sources
    /// whose reference already carries a digest need no entry.
    #[arg(long)]
    pub digests: Option<PathBuf>,
}

pub fn run(cli: &super::Cli, args: &RewriteArgs) -> anyhow::Result<u8> {
    let (_, resolved) = super::resolve::resolve_config(cli)?;
    let mapper = resolved.mapper.as_ref().context("no mapping rules")?;
    let digests = match &args.digests {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            rewrite::parse_digests(&text).with_context(|| p.display().to_string())?
        }
        None => BTreeMap::new(),
    };
    if resolved.workloads.is_empty() {
        anyhow::bail!("the config names no workloads.manifests to rewrite");
    }
    if let Some(k) = &args.kustomize {
        let text = rewrite::kustomize_images(&resolved.workloads, mapper, &digests)?;
        std::fs::write(k, text).with_context(|| format!("cannot write {}", k.display()))?;
        eprintln!("wrote {}", k.display());
        return Ok(crate::exit::OK);
    }
    let out = args.out.as_ref().context("pass --out DIR or --kustomize FILE")?;
    let texts = rewrite::rewrite_files(&resolved.workloads, mapper, &digests)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut seen = std::collections::BTreeSet::new();
    for (f, text) in resolved.workloads.iter().zip(texts) {
        let name = match &f.path {
            Some(p) => p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "out.yaml".into()),
            None => "stdin.yaml".to_string(),
        };
        if !seen.insert(name.clone()) {
            anyhow::bail!("two inputs are both named {name}: write them with separate rewrite runs");
        }
        let path = out.join(&name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {} ({} images)", path.display(), f.images.len());
    }
    Ok(crate::exit::OK)
}
