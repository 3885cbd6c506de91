//! `mirror copy SRC DST` and `mirror copy --warm SRC TARGET_REF`.

use crate::transfer::IndexPolicy;

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// Source image reference.
    pub source: String,
    /// Target image reference.
    pub target: String,
    /// Warm the target through its pull-through cache instead of pushing to it.
    #[arg(long)]
    pub warm: bool,
    /// Platforms to carry (repeatable), e.g. linux/amd64.
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// What to do with multi-arch indexes when --platform narrows them.
    #[arg(long, value_enum)]
    pub index_policy: Option<IndexPolicy>,
}

pub async fn run(cli: &super::Cli, _args: &CopyArgs) -> anyhow::Result<u8> {
    let _cfg = super::load_config(cli)?;
    anyhow::bail!("copy is not built yet")
}
