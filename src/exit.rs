//! Exit codes, the same for every command, so that a scheduler or a pipeline gate can act on them.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: in sync, or everything done |
//! | 1 | any other error: bad input, unreachable registry, wrong credentials, a failed copy |
//! | 2 | drift found (`plan`, `verify`): the target lacks something (`signatures.mode: enforce`: `verify` also when a covered image lacks a valid signature there); `prune` (dry run): something would be deleted |
//! | 3 | `sync` finished but some images failed or were rejected for want of a valid signature, or `prune --apply` some deletions (the rest were done) |
//! | 4 | another run holds the run lock (`lock: {azureBlob: …}`); nothing was done |
//! | 130 | stopped by SIGINT: reports written, records uploaded, lock released |
//! | 143 | stopped by SIGTERM: the same |

use std::process::ExitCode;

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
pub const DRIFT: u8 = 2;
pub const PARTIAL: u8 = 3;
/// Another scheduled run holds the blob-lease lock: this run did nothing, and a scheduler can
/// tell "skipped, still running from before" from a failure.
pub const LOCKED: u8 = 4;
/// Stopped by SIGINT (Ctrl-C) and ended cleanly: 128 + the signal's number, as shells report a
/// process a signal ended, so the caller sees why it stopped.
pub const INTERRUPTED: u8 = 130;
/// Stopped by SIGTERM (Kubernetes stopping the pod) and ended cleanly: 128 + 15.
pub const TERMINATED: u8 = 143;

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
