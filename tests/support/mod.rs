//! Shared support for the integration tests: real `docker-registry` processes, a token
//! service, an image seeder and small fault-injecting proxies.
//!
//! Everything here talks to the registry with raw HTTP (reqwest), `skopeo` or `oci-client`,
//! never through the crate's own registry client, so that the tests can catch that client's
//! bugs instead of sharing them. Helpers panic with a message on failure: they are test code.
//!
//! Each test binary declares `mod support;` and uses a subset, hence the `dead_code` allowance.
//!
//! A typical test:
//!
//! ```text
//! let mcr = TestRegistry::anonymous().await;                       // source
//! let image = Seeder::new(&mcr.url(), 1).push_multiarch("dotnet/runtime", "8.0", Format::Oci).await;
//! let tokens = TokenService::start(Users::new().user("ci", "pw")).await;
//! let acr = TestRegistry::with_token_auth(&tokens).await;          // target
//! // ... run the tool from mcr.host() to acr.host() ...
//! let pull = tokens.mint(&[("dotnet/runtime", "pull")]);
//! images::assert_image_present(&acr.url(), "dotnet/runtime", &image, Some(&pull)).await;
//! ```
//!
//! - [`registry`]: `TestRegistry::{anonymous, with_token_auth, proxy_cache}`, `url`, `host`, `stop`.
//! - [`token`]: `TokenService::start(Users)`, `realm`, `mint`, `requests`, `count`.
//! - [`images`]: `Seeder` (images, indexes, artifacts, signatures, streamed blobs) and the
//!   independent checks (`get_manifest`, `manifest_digest`, `blob_exists`, `blob_digest`,
//!   `assert_image_present`, `skopeo_*`, `oci_pull_manifest`).
//! - [`proxy`]: `FaultProxy` (429/503/500 once or every n-th, cut PATCH, changed answers: reset,
//!   truncated, corrupt, altered, wrong digest, stalled or slow bodies; counts), `DelayProxy`, `ReferrersProxy`, `BadBlobServer`.
#![allow(dead_code, unused_imports)]

pub mod hostile;
pub mod images;
pub mod proxy;
pub mod registry;
pub mod token;

pub use images::{Blob, Format, PushedImage, PushedManifest, Seeder};
pub use proxy::{BadBlobServer, DelayProxy, FaultProxy, ReferrersProxy};
pub use registry::TestRegistry;
pub use token::{TokenService, Users};

use std::net::{SocketAddr, TcpListener};

/// A loopback port that was free a moment ago. There is a window in which someone else can
/// take it; callers that spawn a process on it retry with a new port when that happens.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Binds a tokio listener on a free loopback port (no race: the listener is kept).
pub async fn bind_loopback() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = l.local_addr().expect("local_addr");
    (l, addr)
}

/// A reqwest client for talking to test registries: no redirects followed (so tests see what
/// the server said), no proxy from the environment (everything is loopback).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("build reqwest client")
}

/// An empty folder to give a `mirror` child process as `DOCKER_CONFIG`
/// (`cmd.env("DOCKER_CONFIG", support::empty_docker_config())`), so that a test never reads the
/// developer's `~/.docker/config.json` nor runs the credential helper it names. Nothing writes
/// there: tests that need Docker config credentials write their own config in a temp folder.
/// In-process `Registries` cannot be pointed elsewhere without racing other tests on a process
/// variable; give their configs `auth: {type: anonymous}` (or another `auth:`) instead.
pub fn empty_docker_config() -> std::path::PathBuf {
    // Cargo gives integration tests a scratch folder in target/; examples that share this module
    // get none, and use the system's.
    let scratch = option_env!("CARGO_TARGET_TMPDIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = scratch.join("acr-mirror-empty-docker-config");
    std::fs::create_dir_all(&dir).expect("create the empty DOCKER_CONFIG folder");
    dir
}

/// A finished command as a test failure message shows it: exit status, stdout, stderr.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `mirror -c DIR/mirror.yaml ARGS` in `DIR` (relative report paths land there), hermetic
/// (`DOCKER_CONFIG` is `DIR`, which holds no `config.json`; no `MIRROR_CONFIG`), and prints what
/// it said, so a failing test shows the run.
pub async fn mirror_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    // `option_env!`: examples/seed.rs shares this module and has no `mirror` binary beside it.
    let Some(mirror) = option_env!("CARGO_BIN_EXE_mirror") else { panic!("run from an integration test") };
    let out = tokio::process::Command::new(mirror)
        .current_dir(dir)
        .arg("-c")
        .arg(dir.join("mirror.yaml"))
        .args(args)
        .env_remove("MIRROR_CONFIG")
        .env("MIRROR_LOG", "warn")
        .env("DOCKER_CONFIG", dir)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    eprintln!(
        "mirror {}: {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
