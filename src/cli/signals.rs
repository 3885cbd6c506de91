//! SIGTERM (what Kubernetes sends a pod before killing it) and SIGINT (Ctrl-C) stop a run
//! gracefully: the first cancels the run's stop token, so the run starts nothing new, lets
//! images in flight finish within `--grace`, writes its reports and records and releases the
//! lock; the process then exits 143 or 130. A second signal ends the process at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::exit;

/// The stop token of this process's run, and which signal cancelled it.
#[derive(Clone)]
pub(crate) struct Stop {
    pub token: CancellationToken,
    /// The exit code of the first signal received; 0 while none was.
    code: Arc<AtomicU8>,
}

impl Stop {
    /// Starts listening for SIGTERM and SIGINT (from then on they no longer kill the process
    /// outright). Needs the tokio runtime.
    pub(crate) fn install() -> std::io::Result<Stop> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = Stop { token: CancellationToken::new(), code: Arc::new(AtomicU8::new(0)) };
        let s = stop.clone();
        tokio::spawn(async move {
            loop {
                let (name, code) = tokio::select! {
                    _ = term.recv() => ("SIGTERM", exit::TERMINATED),
                    _ = int.recv() => ("SIGINT", exit::INTERRUPTED),
                };
                if s.token.is_cancelled() {
                    tracing::warn!(signal = name, "second signal: ending at once");
                    std::process::exit(i32::from(code));
                }
                s.code.store(code, Ordering::SeqCst);
                s.token.cancel();
                tracing::warn!(
                    signal = name,
                    "stopping: nothing new starts, images in flight get the grace period, reports follow; a second signal ends at once"
                );
            }
        });
        Ok(stop)
    }

    /// The exit code of a run that was stopped: 130 after SIGINT, 143 after SIGTERM.
    pub(crate) fn exit_code(&self) -> u8 {
        match self.code.load(Ordering::SeqCst) {
            0 => exit::TERMINATED,
            c => c,
        }
    }
}
