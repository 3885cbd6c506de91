//! The process's own streams: standard output that a closed pipe silences instead of panicking
//! (`mirror plan | head`), log set-up with colours only where they can be seen, and the text of
//! a fatal error.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use super::LogFormat;

/// Set once standard output's reader has gone: everything after is discarded.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Standard output for the command's results. When the reader closes the pipe, the rest of the
/// output is dropped and the command carries on to its end (reports, records, the lock), so a
/// `| head` never turns into a panic or a half-finished run.
pub(crate) struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        quiet_when_closed(buf.len(), io::stdout().lock().write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        quiet_when_closed((), io::stdout().lock().flush())
    }
}

fn quiet_when_closed<T>(done: T, result: io::Result<T>) -> io::Result<T> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(done);
    }
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(done)
        }
        r => r,
    }
}

/// Whether to colour a stream: only a terminal shows colours (a log file would get escape
/// codes), and `NO_COLOR` set to anything non-empty turns them off (<https://no-color.org>).
pub(crate) fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logs go to standard error, as text or one JSON object per line.
pub(crate) fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MIRROR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colour(io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Reports the error a command ends with: `error: …` for people, a log event for collectors.
pub(crate) fn fatal(format: LogFormat, e: &anyhow::Error) {
    let text = error_text(e);
    match format {
        LogFormat::Text => {
            let _ = writeln!(io::stderr(), "error: {text}");
        }
        LogFormat::Json => tracing::error!(fatal = true, "{text}"),
    }
}

/// An error and its causes on one line, each said once: many errors already include their
/// cause's text (`cannot read config file x: No such file…`), which the chain would repeat.
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        // Checks the NO_COLOR convention: set and non-empty turns colours off, empty does not,
        // and a stream that is not a terminal never gets them.
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        // Checks the missing-config-file case: the OS error appears once, and a cause the
        // message does not carry is still shown.
        let os = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e = anyhow::Error::new(crate::config::ConfigError::Read { path: "m.yaml".into(), source: os });
        assert_eq!(error_text(&e), "cannot read config file m.yaml: No such file or directory (os error 2)");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }
}
