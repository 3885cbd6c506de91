//! Real `docker-registry` (CNCF distribution 2.8.2) processes on loopback ports, each with its
//! own temporary storage and deletes enabled (except [`TestRegistry::refusing_deletes`]), in one
//! of three roles: an open registry (standing in for MCR), a
//! registry behind token auth (standing in for ACR), and a pull-through cache (standing in
//! for an ACR cache rule).
//!
//! Observed on 2.8.2 (checked by `support_selftest::proxy_cache_serves_after_upstream_stops`):
//! in proxy mode a pull by tag goes to the upstream for the tag, stores manifest, blobs and
//! the tag locally, and when the upstream is gone a pull by tag falls back to the local tag
//! and blobs come from local storage. Pushes to a proxy-mode registry are refused (405).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use super::token::TokenService;
use super::{free_port, http_client};

const BINARY: &str = "/usr/bin/docker-registry";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 4;

enum Mode {
    Anonymous,
    /// Open, serving https with this certificate and key (`http.tls`): HTTP/2 by ALPN.
    Tls {
        cert: PathBuf,
        key: PathBuf,
    },
    Token {
        realm: String,
        service: String,
        issuer: String,
        cert: PathBuf,
    },
    Proxy {
        remote: String,
    },
}

impl Mode {
    /// Token auth trusting `tokens`' signatures, sending clients to `realm`.
    fn token(tokens: &TokenService, realm: &str) -> Self {
        Mode::Token {
            realm: realm.to_string(),
            service: tokens.service().to_string(),
            issuer: tokens.issuer().to_string(),
            cert: tokens.cert_path().to_path_buf(),
        }
    }
}

/// Where a registry keeps its data: its own temporary folder, or another registry's storage
/// (a second process serving the same content under other settings).
#[derive(Clone, Copy)]
enum Storage<'a> {
    Own,
    Shared(&'a Path),
}

/// A running registry. Killed on drop.
pub struct TestRegistry {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    /// The storage root: under `dir`, or another registry's (see [`TestRegistry::token_view`]).
    data: PathBuf,
    /// Serves https (see [`TestRegistry::tls_view`]).
    tls: bool,
}

impl TestRegistry {
    /// An open registry: anyone may push and pull.
    pub async fn anonymous() -> Self {
        Self::start(Mode::Anonymous, Storage::Own).await
    }

    /// A registry in `auth: token` mode trusting `tokens` (its realm, service, issuer and certificate).
    pub async fn with_token_auth(tokens: &TokenService) -> Self {
        Self::start(Mode::token(tokens, &tokens.realm()), Storage::Own).await
    }

    /// A second registry process serving `of`'s storage in `auth: token` mode, sending clients to
    /// `realm` (a token service signing with `tokens`, or a proxy in front of one): the same
    /// content behind token auth, the way public registries (Docker Hub, ghcr.io, quay.io) serve
    /// anonymous pulls with anonymous bearer tokens. Only for reading: `of` keeps writing.
    pub async fn token_view(of: &TestRegistry, tokens: &TokenService, realm: &str) -> Self {
        Self::start(Mode::token(tokens, realm), Storage::Shared(&of.storage_dir())).await
    }

    /// A registry in `auth: token` mode trusting `tokens`' signatures, but sending clients to
    /// another realm (a token service that signs with `tokens`, such as our ACR stand-in).
    pub async fn with_token_realm(tokens: &TokenService, realm: &str) -> Self {
        Self::start(Mode::token(tokens, realm), Storage::Own).await
    }

    /// An open registry with deletes turned off, as distribution ships (`storage.delete.enabled`
    /// false): every `DELETE` is answered 405 `UNSUPPORTED`.
    pub async fn refusing_deletes() -> Self {
        let mut r = Self::anonymous().await;
        let config = r.dir.path().join("config.yml");
        let yaml = std::fs::read_to_string(&config).expect("read registry config");
        let off = yaml.replace("  delete:\n    enabled: true\n", "  delete:\n    enabled: false\n");
        assert_ne!(off, yaml, "the registry config has the delete switch");
        std::fs::write(&config, off).expect("write registry config");
        r.stop().await;
        r.start_again().await;
        r
    }

    /// A second registry process serving `of`'s storage over https with `cert` and `key` (PEM
    /// files; the certificate must name 127.0.0.1), open to anyone: the same content on the
    /// real wire's protocol, HTTP/2 negotiated by ALPN as Go's server does. Writes through it
    /// land in `of`'s storage, so `of` (plain http) checks them with the ordinary clients.
    pub async fn tls_view(of: &TestRegistry, cert: &Path, key: &Path) -> Self {
        let mode = Mode::Tls { cert: cert.to_path_buf(), key: key.to_path_buf() };
        Self::start(mode, Storage::Shared(&of.storage_dir())).await
    }

    /// A pull-through cache of `upstream_url` (an anonymous registry, e.g. another `TestRegistry`'s `url()`).
    pub async fn proxy_cache(upstream_url: &str) -> Self {
        Self::start(Mode::Proxy { remote: upstream_url.trim_end_matches('/').to_string() }, Storage::Own).await
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.tls { "https" } else { "http" }, self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The filesystem storage root (`docker/registry/v2/...` lives below it).
    pub fn storage_dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// Whether the blob's data file is in this registry's storage (a pull-through cache
    /// commits a blob only after streaming it to the client).
    pub fn has_blob_on_disk(&self, digest: &acr_mirror::digest::Digest) -> bool {
        let hex = digest.hex();
        self.storage_dir().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data").exists()
    }

    /// Waits (up to 10 s) until every blob is in storage; panics naming the first missing one.
    pub async fn wait_for_blobs_on_disk(&self, digests: &[&acr_mirror::digest::Digest]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for digest in digests {
            while !self.has_blob_on_disk(digest) {
                assert!(Instant::now() < deadline, "blob {digest} never reached {}", self.storage_dir().display());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// The bytes an upload session has written so far, read from storage
    /// (`repositories/<repo>/_uploads/<uuid>/data`), or `None` if there is no such session.
    pub fn upload_bytes_on_disk(&self, repo: &str, uuid: &str) -> Option<u64> {
        let path = self
            .storage_dir()
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_uploads")
            .join(uuid)
            .join("data");
        std::fs::metadata(path).ok().map(|m| m.len())
    }

    /// The registry process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The registry's log so far (warnings and the access log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the registry and waits for it to exit. Its storage stays until drop. Panics if it
    /// was not running (stopped already, or exited by itself): a test that stops a registry to
    /// see what a client does then would otherwise test nothing.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("stop: the registry was stopped already");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("stop: the registry had exited by itself ({status})\n{}", self.log());
        }
        child.kill().await.expect("kill the registry");
    }

    /// Starts the stopped registry again on the same port with the same storage and
    /// configuration (the same upload-state secret too), as a registry restarted by its
    /// orchestrator comes back. Panics if it is running, or if it does not come up (the port
    /// taken meanwhile).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: the registry is running");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .expect("open registry log");
        let mut child = spawn(&self.dir.path().join("config.yml"), log);
        if let Err(why) = wait_ready(&mut child, self.port, self.tls).await {
            panic!("the restarted registry did not come up: {why}\n{}", self.log());
        }
        self.child = Some(child);
    }

    async fn start(mode: Mode, storage: Storage<'_>) -> Self {
        let dir = tempfile::Builder::new().prefix("test-registry-").tempdir().expect("temp dir for registry");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let config = dir.path().join("config.yml");
            let data = match storage {
                Storage::Own => dir.path().join("data"),
                Storage::Shared(path) => path.to_path_buf(),
            };
            std::fs::write(&config, config_yaml(&data, port, &mode)).expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("create registry log");
            let mut child = spawn(&config, log);
            let tls = matches!(mode, Mode::Tls { .. });
            match wait_ready(&mut child, port, tls).await {
                Ok(()) => return TestRegistry { child: Some(child), port, dir, data, tls },
                Err(why) => {
                    let _ = child.kill().await;
                    let log = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
                    failures.push(format!("port {port}: {why}\n--- registry log ---\n{log}"));
                }
            }
        }
        panic!("docker-registry did not come up after {START_ATTEMPTS} attempts:\n{}", failures.join("\n"));
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

/// Starts `docker-registry serve CONFIG` with its output in `log`.
fn spawn(config: &Path, log: std::fs::File) -> Child {
    Command::new(BINARY)
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"))
}

/// Polls `GET /v2/` until the registry answers (401 counts: token mode is up), the process
/// exits (typically: the port was taken meanwhile) or the timeout passes.
async fn wait_ready(child: &mut Child, port: u16, tls: bool) -> Result<(), String> {
    // Readiness only: the certificate is the caller's to trust or not.
    let http = if tls {
        reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .no_proxy()
            .build()
            .expect("build reqwest client")
    } else {
        http_client()
    };
    let url = format!("{}://127.0.0.1:{port}/v2/", if tls { "https" } else { "http" });
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("registry exited with {status}"));
        }
        if let Ok(resp) = http.get(&url).timeout(Duration::from_millis(500)).send().await {
            let code = resp.status().as_u16();
            if code == 200 || code == 401 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no answer on {url} within {READY_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config_yaml(data: &Path, port: u16, mode: &Mode) -> String {
    let mut yaml = format!(
        "version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: support-test-secret
health:
  storagedriver:
    enabled: false
",
        data = data.display()
    );
    match mode {
        Mode::Anonymous => {}
        Mode::Tls { cert, key } => {
            yaml = yaml.replace(
                "  secret: support-test-secret\n",
                &format!(
                    "  secret: support-test-secret\n  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                ),
            )
        }
        Mode::Token { realm, service, issuer, cert } => yaml.push_str(&format!(
            "auth:
  token:
    realm: \"{realm}\"
    service: \"{service}\"
    issuer: \"{issuer}\"
    rootcertbundle: {cert}
",
            cert = cert.display()
        )),
        Mode::Proxy { remote } => yaml.push_str(&format!("proxy:\n  remoteurl: \"{remote}\"\n")),
    }
    yaml
}
