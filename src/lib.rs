//! acr-mirror: pre-seed a private Azure Container Registry with every image a network
//! isolated AKS cluster will pull.
//!
//! Data flows config → image set → plan → transfer → report:
//! - [`config`]: the YAML file, registries and their endpoints;
//! - `imageset`: which images are needed and why (AKS component lists, workload manifests);
//! - `provenance`: Notary Project and cosign signature verification (trust policy, trust
//!   store, envelopes, certificate chains, timestamps), on bytes handed to it;
//! - `registry`: a thin distribution-API client (auth, retries, manifests, blobs, uploads);
//! - `transfer`: verified streaming copy and cache warming of one image graph;
//! - `azure`: Entra ID sign-in to ACR, run records and the run lock in Blob Storage;
//! - [`app`]: the application — plan, sync and verify as calls taking a config and returning
//!   what happened (run lock, records, shards, report assembly); no printing, no process exit;
//! - [`cli`]: the `mirror` command line on top of `app`: arguments, signals, output, exit codes;
//! - `shard`: splitting a run over several processes by target repository;
//! - `exit`: the exit codes every command shares;
//! - `sanitize`: registry-supplied text made safe for terminals, logs and reports.

//!
//! Public: [`app`] (with the types its calls take and return: [`config`], [`report`]) and
//! [`cli`] for the binary. Every other module is crate-private, so that rustc reports what
//! nothing uses; the `internals` feature, which only the integration tests and benches turn on,
//! makes them public for those tests.

/// Declares modules crate-private, or public under the `internals` feature.
macro_rules! internal_modules {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(feature = "internals")]
            pub mod $name;
            #[cfg(not(feature = "internals"))]
            pub(crate) mod $name;
        )*
    };
}

pub mod app;
pub mod cli;
pub mod config;
pub mod report;

internal_modules!(
    azure, digest, exit, imageset, ledger, manifest, plan, provenance, prune, reference, registry, sanitize, shard,
    time, transfer
);
