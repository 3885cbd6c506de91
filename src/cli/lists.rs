//! `mirror lists import-agentbaker FILE [--out DIR] [--source-commit SHA]`: AgentBaker's
//! `components.json` → one reviewable YAML list per Kubernetes minor.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::imageset::agentbaker;
use crate::imageset::lists::ListSource;

#[derive(Debug, clap::Args)]
pub struct ListsArgs {
    #[command(subcommand)]
    pub command: ListsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ListsCommand {
    /// Turn AgentBaker's parts/common/components.json into manifests-lists/aks/<minor>.yaml.
    ImportAgentbaker(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The components.json file.
    pub file: PathBuf,
    /// Folder to write the lists into (created if missing).
    #[arg(long, default_value = "manifests-lists/aks")]
    pub out: PathBuf,
    /// Commit of Azure/AgentBaker the file was taken at; written into every list's header.
    #[arg(long)]
    pub source_commit: Option<String>,
    /// Repository the file comes from.
    #[arg(long, default_value = "Azure/AgentBaker")]
    pub source_repository: String,
    /// Path of the file in that repository.
    #[arg(long, default_value = "parts/common/components.json")]
    pub source_path: String,
}

pub fn run(args: &ListsArgs) -> anyhow::Result<u8> {
    match &args.command {
        ListsCommand::ImportAgentbaker(a) => import(a),
    }
}

fn import(a: &ImportArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let file =
        a.file.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_else(|| a.file.display().to_string());
    let commit = match &a.source_commit {
        Some(c) => c.clone(),
        None => {
            tracing::warn!("no --source-commit given: the lists will say commit \"unknown\"");
            "unknown".to_string()
        }
    };
    let source = ListSource { file, repository: a.source_repository.clone(), path: a.source_path.clone(), commit };
    let lists = agentbaker::import(&text, &source)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    for list in lists.values() {
        let path = a.out.join(format!("{}.yaml", list.kubernetes_minor));
        std::fs::write(&path, agentbaker::render(list)).with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(super::Stdout, "{}: {} images", path.display(), list.images.len())?;
    }
    Ok(crate::exit::OK)
}
