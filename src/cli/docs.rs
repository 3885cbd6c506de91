//! `mirror completions <shell>` and `mirror man`: shell completions and manual pages generated
//! from the same clap definitions as `--help`, so that the three never disagree. Nothing is
//! checked in: packagers run these at build or install time (see docs/operations.md).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::exit;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write one page per command (mirror.1, mirror-sync.1, …) into DIR instead of printing mirror(1).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<u8> {
    let mut cmd = super::Cli::command();
    // Rendered into memory first: clap_complete panics when its writer fails (`| head`).
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "mirror", &mut buf);
    print(&buf)
}

/// Prints mirror(1) on stdout, or writes every page into `--dir`.
pub fn man(args: &ManArgs) -> anyhow::Result<u8> {
    let cmd = super::Cli::command();
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf)?;
            return print(&buf);
        }
    }
    Ok(exit::OK)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn print(bytes: &[u8]) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(exit::OK),
    }
}
