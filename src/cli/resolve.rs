//! `mirror resolve -c FILE [-o table|json]`: print the image set, where each image goes, and why
//! it is there.

use anyhow::Context as _;

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
}

pub fn run(cli: &super::Cli, args: &ResolveArgs) -> anyhow::Result<u8> {
    let resolved = resolve_config(cli)?;
    for w in &resolved.warnings {
        eprintln!("warning: {w}");
    }
    match args.output {
        Output::Table => print!("{}", imageset::render_table(&resolved)),
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(&Document { schema_version: 1, resolved: &resolved })?)
        }
    }
    Ok(crate::exit::OK)
}

/// `resolve -o json`: the image set with its schema version (`schema/resolve.v1.json`, described
/// in docs/reports.md).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    schema_version: u32,
    #[serde(flatten)]
    resolved: &'a imageset::Resolved,
}

/// Loads the `-c` config (required) and resolves it; shared with `rewrite`.
pub(crate) fn resolve_config(cli: &super::Cli) -> anyhow::Result<imageset::Resolved> {
    let path = cli.config.as_ref().context("no config file: pass -c mirror.yaml")?;
    let cfg = super::load_config(cli)?;
    let dir = path.parent().map(|p| if p.as_os_str().is_empty() { std::path::Path::new(".") } else { p });
    let dir = dir.unwrap_or(std::path::Path::new("."));
    imageset::resolve(&cfg, dir).with_context(|| format!("{}", path.display()))
}
