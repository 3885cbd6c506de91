//! `mirror copy SRC DST` and `mirror copy --warm SRC TARGET_REF`.

use std::io::Write;

use anyhow::Context as _;

use crate::exit;
use crate::manifest::{IndexPolicy, PlatformFilter};
use crate::reference::Reference;
use crate::transfer::{self, Options};

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// Source image reference (e.g. mcr.microsoft.com/oss/kubernetes/pause:3.9).
    pub source: String,
    /// Target image reference (e.g. myacr.azurecr.io/mirror/pause:3.9); with --warm, the image's path behind the cache rule.
    pub target: String,
    /// Warm the target through its pull-through cache (read everything, write nothing) instead of pushing to it.
    #[arg(long)]
    pub warm: bool,
    /// Platforms to carry (repeatable), e.g. --platform linux/amd64 --platform linux/arm64. Default: the config's `platforms`, else all.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    pub platforms: Vec<String>,
    /// What to do with multi-arch indexes when --platform narrows them [default: preserve, or the config's indexPolicy].
    #[arg(long, value_enum)]
    pub index_policy: Option<IndexPolicyArg>,
    /// Do not copy referrers (signatures, SBOMs).
    #[arg(long)]
    pub no_referrers: bool,
}

/// `--index-policy`: the flag's own values, so that the domain's [`IndexPolicy`] knows nothing
/// of the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum IndexPolicyArg {
    /// Copy every child; the index digest is unchanged. Accepted by every registry.
    Preserve,
    /// Copy only the chosen platforms and push the original index unchanged (some registries refuse).
    Sparse,
    /// Push a new index of the chosen platforms: a new digest, reported as such.
    Rewrite,
}

impl From<IndexPolicyArg> for IndexPolicy {
    fn from(a: IndexPolicyArg) -> IndexPolicy {
        match a {
            IndexPolicyArg::Preserve => IndexPolicy::Preserve,
            IndexPolicyArg::Sparse => IndexPolicy::Sparse,
            IndexPolicyArg::Rewrite => IndexPolicy::Rewrite,
        }
    }
}

pub async fn run(cli: &super::Cli, args: &CopyArgs) -> anyhow::Result<u8> {
    let cfg = match &cli.config {
        Some(path) => crate::config::Config::load(path)?,
        None => crate::config::Config::default(),
    };
    let source = Reference::parse(&args.source).context("source")?;
    let target = Reference::parse(&args.target).context("target")?;
    let platforms = if args.platforms.is_empty() {
        cfg.platforms.clone()
    } else {
        args.platforms.iter().map(|p| PlatformFilter::parse(p).map_err(anyhow::Error::msg)).collect::<Result<_, _>>()?
    };
    let opts = Options {
        platforms,
        index_policy: args.index_policy.map(IndexPolicy::from).or(cfg.index_policy).unwrap_or_default(),
        referrers: !args.no_referrers,
        target_state: Default::default(),
        bytes: Default::default(),
    };
    let registries = crate::app::registries(&cfg)?;
    let ctx = transfer::Context::from_config(&cfg.transfer);
    let started = std::time::Instant::now();
    let mut out = super::Stdout;
    if args.warm {
        let src = registries.get(&source.registry)?;
        let cache = registries.get(&target.registry)?;
        let w = transfer::warm::warm_image(&ctx, Some((src, &source)), cache, &target, &opts).await?;
        writeln!(
            out,
            "warmed {} through {}: {} ({} manifests, {} blobs, {} bytes read and verified{}) in {:.1?}",
            w.source,
            w.target,
            w.digest,
            w.manifests,
            w.blobs,
            w.bytes,
            if w.platforms.is_empty() { String::new() } else { format!("; platforms {}", w.platforms.join(", ")) },
            started.elapsed()
        )?;
        return Ok(exit::OK);
    }
    if !opts.platforms.is_empty() && opts.index_policy == IndexPolicy::Preserve {
        tracing::warn!("index policy preserve copies every platform; --platform narrows only sparse and rewrite");
    }
    let src = registries.get(&source.registry)?;
    let dst = registries.get(&target.registry)?;
    let c = transfer::copy::copy_image(&ctx, src, &source, dst, &target, &opts).await.map_err(|e| {
        match e.remedy("--index-policy") {
            Some(fix) => anyhow::anyhow!("{e}; {fix}"),
            None => e.into(),
        }
    })?;
    let s = ctx.stats.snapshot();
    if c.unchanged {
        writeln!(out, "{} already at {} ({}): nothing to do", c.target, c.target_digest, c.source)?;
        return Ok(exit::OK);
    }
    writeln!(out, "copied {} -> {}: {}", c.source, c.target, c.target_digest)?;
    if let Some(policy) = c.index_policy {
        let note = match policy {
            IndexPolicy::Rewrite if c.target_digest != c.source_digest => {
                format!(" (new index; source index was {})", c.source_digest)
            }
            _ => " (index digest unchanged)".to_string(),
        };
        writeln!(out, "  index policy {policy}{note}: platforms {}", c.platforms.join(", "))?;
        if !c.skipped_platforms.is_empty() {
            writeln!(out, "  left out: {}", c.skipped_platforms.join(", "))?;
        }
    }
    writeln!(
        out,
        "  blobs: {} copied, {} mounted, {} already present; {} bytes streamed and verified; {} manifests pushed; {} referrers; {:.1?}",
        s.blobs_copied,
        s.blobs_mounted,
        s.blobs_present,
        s.bytes,
        s.manifests_pushed,
        c.referrers,
        started.elapsed()
    )?;
    Ok(exit::OK)
}
