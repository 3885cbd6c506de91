//! Command-line edge: argument parsing, logging set-up, signals, printing, and turning results
//! into exit codes. Each command lives in its own file and calls into the application layer
//! ([`crate::app`]) or the library; `anyhow` is used only here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit;

mod copy;
mod docs;
mod lists;
mod output;
mod progress;
mod prune;
pub(crate) mod resolve;
mod rewrite;
mod run;
mod signals;

pub(crate) use output::Stdout;

#[derive(Debug, Parser)]
#[command(
    name = "mirror",
    version,
    about = "Pre-seed a private Azure Container Registry for network isolated AKS",
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    /// Configuration file (registries, image set, mappings).
    #[arg(short = 'c', long = "config", global = true, env = "MIRROR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The exit codes of [`crate::exit`], shown by `mirror --help` and in the man page.
const EXIT_CODES: &str = "Exit codes (every command):
  0  success: in sync, or everything done
  1  error: bad input, unreachable registry, wrong credentials
  2  drift: plan or verify found the target lacking something (enforce: a valid signature too); a prune dry run found tags to delete
  3  sync finished but some images failed or were rejected, or prune --apply some deletions (the rest were done)
  4  another run holds the run lock; nothing was done
  130, 143  stopped by SIGINT or SIGTERM: reports written, lock released

Environment: MIRROR_CONFIG (the -c file), MIRROR_LOG (log filter, e.g. debug).";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy one image (or warm it through a pull-through cache), verifying every byte.
    Copy(copy::CopyArgs),
    /// Show what sync would do, without writing (exit 2 when anything is missing).
    Plan(run::PlanArgs),
    /// Copy or warm everything the image set needs that the target lacks.
    Sync(run::SyncArgs),
    /// Check, read-only and deep, that every needed manifest and blob is in the target (exit 2 if not).
    Verify(run::VerifyArgs),
    /// List (or with --apply delete) the tags under copy mappings the image set no longer needs (exit 2 when a dry run finds any).
    Prune(prune::PruneArgs),
    /// Print the image set: every image, its target and mode, and why it is needed.
    Resolve(resolve::ResolveArgs),
    /// Point workload manifests at the private registry, pinned by digest.
    Rewrite(rewrite::RewriteArgs),
    /// Manage the AKS component lists (manifests-lists/aks).
    Lists(lists::ListsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the mirror(1) man page, or write every command's page into a folder.
    Man(docs::ManArgs),
}

/// Parses the command line, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are successes; every usage error is exit 1 like any other bad input.
            return if e.use_stderr() { exit::code(exit::ERROR) } else { exit::code(exit::OK) };
        }
    };
    output::init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            output::fatal(cli.log_format, &anyhow::anyhow!("cannot start the async runtime: {e}"));
            return exit::code(exit::ERROR);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Copy(args) => copy::run(&cli, args).await,
            Command::Plan(args) => run::plan(&cli, args).await,
            Command::Sync(args) => run::sync(&cli, args).await,
            Command::Verify(args) => run::verify(&cli, args).await,
            Command::Prune(args) => prune::run(&cli, args).await,
            Command::Resolve(args) => resolve::run(&cli, args).await,
            Command::Rewrite(args) => rewrite::run(&cli, args),
            Command::Lists(args) => lists::run(args),
            Command::Completions(args) => docs::completions(args),
            Command::Man(args) => docs::man(args),
        }
    });
    match result {
        Ok(code) => exit::code(code),
        Err(e) => {
            output::fatal(cli.log_format, &e);
            exit::code(exit::ERROR)
        }
    }
}

/// The config file named with `-c`, loaded once.
pub(crate) fn config_file(cli: &Cli) -> anyhow::Result<crate::app::ConfigFile> {
    let path = cli.config.as_ref().ok_or_else(|| anyhow::anyhow!("no config file: pass -c mirror.yaml"))?;
    Ok(crate::app::ConfigFile::load(path)?)
}
