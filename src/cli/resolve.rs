//! `mirror resolve -c FILE [-o table|json]`: print the image set, where each image goes, and why
//! it is there.

use anyhow::Context as _;

use crate::config::Config;
use crate::imageset;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub strict: StrictArg,
}

/// `--strict`, shared by `resolve`, `plan` and `sync`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct StrictArg {
    /// Fail (exit 1) when a tag rule in `images:` chooses no tag, instead of warning.
    #[arg(long)]
    pub strict: bool,
}

pub async fn run(cli: &super::Cli, args: &ResolveArgs) -> anyhow::Result<u8> {
    let (_, resolved) = resolve_with_tags(cli, args.strict.strict).await?;
    for w in &resolved.warnings {
        eprintln!("warning: {w}");
    }
    match args.output {
        Output::Table => print!("{}", imageset::render_table(&resolved)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&resolved)?),
    }
    Ok(crate::exit::OK)
}

/// Loads the `-c` config (required) and resolves it, tag rules still pending; shared with
/// `rewrite`, which needs only the workload files.
pub(crate) fn resolve_config(cli: &super::Cli) -> anyhow::Result<(Config, imageset::Resolved)> {
    let path = cli.config.as_ref().context("no config file: pass -c mirror.yaml")?;
    let cfg = super::load_config(cli)?;
    let dir = path.parent().map(|p| if p.as_os_str().is_empty() { std::path::Path::new(".") } else { p });
    let dir = dir.unwrap_or(std::path::Path::new("."));
    let resolved = imageset::resolve(&cfg, dir).with_context(|| format!("{}", path.display()))?;
    Ok((cfg, resolved))
}

/// [`resolve_config`], then the tags of every tag rule chosen from its source's tag list.
pub(crate) async fn resolve_with_tags(cli: &super::Cli, strict: bool) -> anyhow::Result<(Config, imageset::Resolved)> {
    let (cfg, mut resolved) = resolve_config(cli)?;
    if !resolved.pending.is_empty() {
        let registries = crate::registry::Registries::from_config(&cfg)?;
        imageset::select_tags(&mut resolved, &registries, strict).await?;
    }
    Ok((cfg, resolved))
}
