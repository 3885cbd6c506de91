//! Moving one image graph: verified streaming copy into a target, or warming through a cache.

use serde::{Deserialize, Serialize};

/// What to do with a multi-arch index when only some of its platforms are wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IndexPolicy {
    /// Copy every child; the index digest is unchanged. Accepted by every registry.
    #[default]
    Preserve,
    /// Copy only the chosen platforms and push the original index unchanged (some registries refuse).
    Sparse,
    /// Push a new index of the chosen platforms: a new digest, reported as such.
    Rewrite,
}
