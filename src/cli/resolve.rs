//! `mirror resolve -c FILE [-o table|json]`: print the image set, where each image goes, and why
//! it is there.

use std::io::Write;

use crate::imageset;

use super::Stdout;

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
    let resolved = crate::app::resolve_tagged(&super::config_file(cli)?, args.strict.strict).await?;
    match args.output {
        Output::Table => write!(Stdout, "{}", imageset::render_table(&resolved))?,
        Output::Json => {
            writeln!(Stdout, "{}", serde_json::to_string_pretty(&Document { schema_version: 1, resolved: &resolved })?)?
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
