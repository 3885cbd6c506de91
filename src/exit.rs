//! Exit codes, the same for every command, so that a scheduler or a pipeline gate can act on them.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: in sync, or everything done |
//! | 1 | any other error: bad input, unreachable registry, wrong credentials, a failed copy |
//! | 2 | drift found (`plan`, `verify`): the target lacks something |
//! | 3 | `sync` finished but some images failed (the rest were done) |

use std::process::ExitCode;

pub const OK: u8 = 0;
pub const ERROR: u8 = 1;
pub const DRIFT: u8 = 2;
pub const PARTIAL: u8 = 3;

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
