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
    // No pages for clap's `help` subcommand: a `mirror-help(1)` would only say to use --help.
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            write_pages(cmd, dir).with_context(|| format!("cannot write man pages into {}", dir.display()))?;
        }
        None => return print(&page(clap_mangen::Man::new(cmd))?),
    }
    Ok(exit::OK)
}

/// The exit codes every command shares (see `crate::exit`), for the EXIT STATUS section.
const EXIT_STATUS: [(u8, &str); 7] = [
    (exit::OK, "Success: the target is in sync, or everything was done."),
    (
        exit::ERROR,
        "Any other error: bad input, an unreachable registry, wrong credentials, a failed copy, a registry refusing deletes.",
    ),
    (
        exit::DRIFT,
        "Drift found (plan, verify): the target lacks something (under signatures.mode enforce, verify also: a valid signature); prune (dry run): something would be deleted.",
    ),
    (
        exit::PARTIAL,
        "sync finished but some images failed or were rejected for want of a valid signature, or prune --apply some deletions (the rest were done).",
    ),
    (exit::LOCKED, "Another run holds the run lock; nothing was done."),
    (130, "The run was stopped by SIGINT; reports written."),
    (143, "The run was stopped by SIGTERM; reports written."),
];

/// One page: clap's rendering with an EXIT STATUS section after it.
fn page(man: clap_mangen::Man) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    buf.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    for (code, meaning) in EXIT_STATUS {
        buf.extend_from_slice(format!(".TP\n\\fB{code}\\fR\n{}\n", roff_text(meaning)).as_bytes());
    }
    Ok(buf)
}

/// `cmd`'s page and those of its visible subcommands, as `mirror.1`, `mirror-sync.1`, ….
fn write_pages(cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir)?;
    }
    let man = clap_mangen::Man::new(cmd);
    std::fs::write(dir.join(man.get_filename()), page(man)?)
}

/// Plain text as roff: backslashes and hyphens escaped, no line starting with a control character.
fn roff_text(s: &str) -> String {
    let t = s.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with(['.', '\'']) { format!("\\&{t}") } else { t }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn print(bytes: &[u8]) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(exit::OK),
    }
}
