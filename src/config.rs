//! The configuration file (`-c mirror.yaml`): where registries really are and how to sign in,
//! what the image set is made of, where each image goes, and how hard to push.
//!
//! Unknown keys are errors, not warnings: a misspelt `platfroms:` that silently did nothing
//! would copy the wrong images at 3 a.m. Secrets are never written in this file; it names the
//! environment variable or file that holds them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::azure::CredentialKind;
use crate::manifest::PlatformFilter;
use crate::transfer::IndexPolicy;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Logical registry hosts and where to really reach them (like containerd's hosts.toml).
    #[serde(default)]
    pub registries: Vec<RegistryConfig>,
    /// The private registry (`myacr.azurecr.io`) every image is mirrored into.
    #[serde(default)]
    pub target: Option<String>,
    /// Source → target rules, first match wins.
    #[serde(default)]
    pub mappings: Vec<Mapping>,
    /// Platforms to carry (`linux/amd64`, …). Empty: every platform.
    #[serde(default)]
    pub platforms: Vec<PlatformFilter>,
    /// What to do with multi-arch indexes when only some platforms are wanted.
    #[serde(default)]
    pub index_policy: Option<IndexPolicy>,
    /// The AKS cluster whose component images are needed.
    #[serde(default)]
    pub aks: Option<AksConfig>,
    /// Kubernetes manifests whose images are needed.
    #[serde(default)]
    pub workloads: Option<WorkloadsConfig>,
    /// Explicit image references. Kept with their place in the file so that a reference that
    /// does not parse is reported at its line.
    #[serde(default)]
    pub images: Vec<serde_saphyr::Spanned<String>>,
    /// Limits for the transfer engine.
    #[serde(default)]
    pub transfer: TransferConfig,
    /// Where each run's JSON and JUnit reports are uploaded (`{azureBlob: https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX}`).
    #[serde(default)]
    pub report: Option<BlobConfig>,
    /// A blob whose lease keeps two scheduled runs from overlapping (`{azureBlob: https://…/CONTAINER/mirror.lock}`).
    #[serde(default)]
    pub lock: Option<BlobConfig>,
    /// Where completed warms are recorded in the target registry (see `crate::transfer::ledger`).
    #[serde(default)]
    pub warm_ledger: WarmLedgerConfig,
}

/// `warmLedger:`: the repository of the target registry that records completed warms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WarmLedgerConfig {
    #[serde(default = "default_warm_ledger_repository")]
    pub repository: String,
}

fn default_warm_ledger_repository() -> String {
    crate::transfer::ledger::DEFAULT_REPOSITORY.to_string()
}

impl Default for WarmLedgerConfig {
    fn default() -> Self {
        WarmLedgerConfig { repository: default_warm_ledger_repository() }
    }
}

/// A place in Azure Blob Storage and how to sign in to it: a SAS token from `sasTokenEnv`, or else
/// an Entra credential (`credential`, default `auto`, as for `auth: {type: azure}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlobConfig {
    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER[/PATH]`, without a SAS.
    pub azure_blob: String,
    /// Environment variable holding a SAS token for the container.
    #[serde(default)]
    pub sas_token_env: Option<String>,
    #[serde(default)]
    pub credential: Option<CredentialKind>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryConfig {
    /// The name references use (`mcr.microsoft.com`).
    pub host: String,
    /// Where to connect instead (`http://127.0.0.1:5101`). Plain http only when written here.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Request budget for this registry, requests per minute (ACR tiers: aks-acr-facts §5).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// At most this many requests in flight to this registry at once.
    #[serde(default)]
    pub max_concurrent_requests: Option<usize>,
}

/// How to sign in to a registry. Secrets come from the environment or a file, never from here.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum AuthConfig {
    /// No credentials (anonymous token where the registry asks for one).
    Anonymous,
    /// User name and password (ACR admin user, repository-scoped tokens, `docker login`'s refresh-token form).
    #[serde(rename_all = "camelCase")]
    Basic {
        username: String,
        #[serde(default)]
        password_env: Option<String>,
        #[serde(default)]
        password_file: Option<PathBuf>,
    },
    /// An OAuth2 refresh token (ACR refresh token, identity token) exchanged at the realm with `grant_type=refresh_token`.
    #[serde(rename_all = "camelCase")]
    RefreshToken {
        #[serde(default)]
        token_env: Option<String>,
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    /// Entra ID sign-in: an Entra token exchanged at the registry's `/oauth2/exchange` for an ACR
    /// refresh token (see `crate::azure::identity`).
    #[serde(rename_all = "camelCase")]
    Azure {
        #[serde(default)]
        credential: CredentialKind,
        /// Entra tenant; also sent to the exchange. Required for `client-secret`.
        #[serde(default)]
        tenant_id: Option<String>,
        /// App (client) ID: service principal, workload identity app, or user-assigned managed identity.
        #[serde(default)]
        client_id: Option<String>,
        /// Environment variable holding the client secret (`client-secret` only).
        #[serde(default)]
        client_secret_env: Option<String>,
    },
}

impl AuthConfig {
    /// The Entra sign-in an `azure` auth section describes; `None` for the other kinds.
    pub fn azure_sign_in(&self) -> Option<crate::azure::SignIn> {
        match self {
            AuthConfig::Azure { credential, tenant_id, client_id, client_secret_env } => Some(crate::azure::SignIn {
                credential: *credential,
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                client_secret_env: client_secret_env.clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mapping {
    /// `mcr.microsoft.com`, `docker.io/library/*`, or `*` for anything.
    pub source: String,
    /// Repository prefix in the target registry; `{registry}` stands for the source host.
    pub target: String,
    pub mode: MappingMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MappingMode {
    /// Pull through the target's cache rule; never write.
    Warm,
    /// Stream from the source and push into the target.
    Copy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AksConfig {
    /// `1.34` or `1.34.9` (1.30 or later: network isolated mode needs it).
    pub kubernetes_version: String,
    /// Node architectures: `amd64`, `arm64`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Whether any node pool has GPUs.
    #[serde(default)]
    pub gpu: bool,
    /// Cluster extensions (warned about when network isolated mode does not support them).
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Node OS families: `linux` (Ubuntu, Azure Linux; the default), `flatcar` (adds the Flatcar
    /// system extensions), `windows` (not supported in network isolated mode: warned about).
    #[serde(default)]
    pub os: Vec<crate::imageset::NodeOs>,
    /// Folder of the component lists, relative to the config file. Default: `manifests-lists/aks`
    /// in the current directory when it exists, else the lists built into the binary.
    #[serde(default)]
    pub lists: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadsConfig {
    /// Files, folders or globs of Kubernetes YAML, relative to the config file; `-` is stdin.
    #[serde(default)]
    pub manifests: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransferConfig {
    /// Blob transfers in flight across all images.
    #[serde(default = "default_blob_concurrency")]
    pub concurrency: usize,
    /// Size of one upload chunk (bytes). Blobs larger than this go up in chunks that can be resumed.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u64,
    /// Attempts per operation for retryable failures (429, 5xx, resets, timeouts).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Images worked on at once (their blobs share `concurrency`).
    #[serde(default = "default_images")]
    pub images: usize,
    /// After warming through an ACR cache rule, how long to keep re-checking until no manifest is
    /// served from upstream any more (`X-Azure-Origin: upstream`); 0 turns the re-check off.
    #[serde(default = "default_warm_recheck_seconds")]
    pub warm_recheck_seconds: u64,
}

/// 16 rather than 8: each blob transfer spends several round trips (HEAD, POST, GET, PUT) on
/// little data, so with 40 ms round trips 8 slots left the pipe idle (sync bench, latency
/// profile: 11.8 s at 8, 9.4 s at 16, ceiling 6.2 s; no change on loopback; peak RSS +4 MiB).
fn default_blob_concurrency() -> usize {
    16
}
fn default_chunk_size() -> u64 {
    32 * 1024 * 1024
}
fn default_retries() -> u32 {
    5
}
fn default_images() -> usize {
    16
}
fn default_warm_recheck_seconds() -> u64 {
    60
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            concurrency: default_blob_concurrency(),
            chunk_size: default_chunk_size(),
            retries: default_retries(),
            images: default_images(),
            warm_recheck_seconds: default_warm_recheck_seconds(),
        }
    }
}

/// A configuration file that could not be used. The message names the file and, for YAML
/// errors, the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = serde_saphyr::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        cfg.validate().map_err(|message| ConfigError::Invalid { path: path.to_path_buf(), message })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        for r in &self.registries {
            if let Some(ep) = &r.endpoint {
                let url = url::Url::parse(ep).map_err(|e| format!("registry {}: bad endpoint {ep:?}: {e}", r.host))?;
                if url.scheme() != "http" && url.scheme() != "https" {
                    return Err(format!("registry {}: endpoint {ep:?} must be http:// or https://", r.host));
                }
            }
            if let Some(AuthConfig::Basic { password_env: None, password_file: None, .. }) = &r.auth {
                return Err(format!("registry {}: basic auth needs passwordEnv or passwordFile", r.host));
            }
            if let Some(AuthConfig::RefreshToken { token_env: None, token_file: None }) = &r.auth {
                return Err(format!("registry {}: refreshToken auth needs tokenEnv or tokenFile", r.host));
            }
        }
        for r in &self.registries {
            if let Some(AuthConfig::Azure { credential, tenant_id, client_id, client_secret_env }) = &r.auth {
                validate_client_secret(*credential, tenant_id, client_id, client_secret_env)
                    .map_err(|m| format!("registry {}: azure auth: {m}", r.host))?;
            }
        }
        for (key, b) in [("report", &self.report), ("lock", &self.lock)] {
            let Some(b) = b else { continue };
            let url = url::Url::parse(&b.azure_blob).map_err(|e| format!("{key}.azureBlob: not a URL: {e}"))?;
            if url.query().is_some() {
                return Err(format!(
                    "{key}.azureBlob: no query string; put a SAS token in the variable named by sasTokenEnv"
                ));
            }
            if b.sas_token_env.is_none() {
                validate_client_secret(
                    b.credential.unwrap_or_default(),
                    &b.tenant_id,
                    &b.client_id,
                    &b.client_secret_env,
                )
                .map_err(|m| format!("{key}: {m}"))?;
            }
        }
        let ledger = &self.warm_ledger.repository;
        match crate::reference::Reference::parse(&format!("ledger.invalid/{ledger}")) {
            Ok(r) if r.repository == *ledger && !ledger.contains([':', '@']) => {}
            _ => return Err(format!("warmLedger.repository: {ledger:?} is not a repository name")),
        }
        if self.transfer.concurrency == 0 {
            return Err("transfer.concurrency must be at least 1".into());
        }
        if self.transfer.chunk_size < 1024 * 1024 {
            return Err("transfer.chunkSize must be at least 1048576 (1 MiB)".into());
        }
        Ok(())
    }
}

fn validate_client_secret(
    kind: CredentialKind,
    tenant_id: &Option<String>,
    client_id: &Option<String>,
    client_secret_env: &Option<String>,
) -> Result<(), String> {
    if kind == CredentialKind::ClientSecret
        && (tenant_id.is_none() || client_id.is_none() || client_secret_env.is_none())
    {
        return Err("credential client-secret needs tenantId, clientId and clientSecretEnv".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors_with_a_location() {
        let e = Config::parse("registries: []\nplatfroms: [linux/amd64]\n", Path::new("m.yaml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("m.yaml"), "{msg}");
        assert!(msg.contains("platfroms"), "{msg}");
        assert!(msg.contains('2'), "line number expected: {msg}");
    }

    #[test]
    fn registries_and_auth_parse() {
        let cfg = Config::parse(
            "registries:\n  - host: myacr.azurecr.io\n    endpoint: http://127.0.0.1:5102\n    auth: {type: basic, username: mirror, passwordEnv: MIRROR_PASSWORD}\n",
            Path::new("m.yaml"),
        )
        .unwrap();
        assert!(matches!(&cfg.registries[0].auth, Some(AuthConfig::Basic { username, .. }) if username == "mirror"));
    }

    #[test]
    fn basic_auth_without_a_secret_source_is_refused() {
        let e =
            Config::parse("registries:\n  - host: a.io\n    auth: {type: basic, username: u}\n", Path::new("m.yaml"))
                .unwrap_err();
        assert!(e.to_string().contains("passwordEnv"), "{e}");
    }

    #[test]
    fn azure_auth_and_blob_sections_parse() {
        // Checks the azure auth variant (kebab-case credential names) and the report/lock sections.
        let cfg = Config::parse(
            "registries:\n  - host: myacr.azurecr.io\n    auth: {type: azure, credential: workload-identity, clientId: abc}\n\
             report: {azureBlob: https://acct.blob.core.windows.net/runs/nightly}\n\
             lock: {azureBlob: https://acct.blob.core.windows.net/runs/mirror.lock, sasTokenEnv: LOCK_SAS}\n",
            Path::new("m.yaml"),
        )
        .unwrap();
        let sign_in = cfg.registries[0].auth.as_ref().unwrap().azure_sign_in().unwrap();
        assert_eq!(sign_in.credential, CredentialKind::WorkloadIdentity);
        assert_eq!(sign_in.client_id.as_deref(), Some("abc"));
        assert_eq!(cfg.lock.unwrap().sas_token_env.as_deref(), Some("LOCK_SAS"));
        assert!(cfg.report.is_some());
    }

    #[test]
    fn the_warm_ledger_repository_has_a_default_and_is_checked() {
        // Checks the default repository, an override, and that a name with a tag is refused.
        assert_eq!(Config::parse("{}", Path::new("m.yaml")).unwrap().warm_ledger.repository, "acr-mirror/warm-ledger");
        let cfg = Config::parse("warmLedger: {repository: ops/ledger}\n", Path::new("m.yaml")).unwrap();
        assert_eq!(cfg.warm_ledger.repository, "ops/ledger");
        let e = Config::parse("warmLedger: {repository: \"Ops:1\"}\n", Path::new("m.yaml")).unwrap_err();
        assert!(e.to_string().contains("warmLedger.repository"), "{e}");
    }

    #[test]
    fn azure_auth_rejects_unknown_keys_and_incomplete_client_secret() {
        // Checks deny_unknown_fields on the new variant and the client-secret completeness rule.
        let e = Config::parse("registries:\n  - host: a.io\n    auth: {type: azure, tenant: t}\n", Path::new("m.yaml"))
            .unwrap_err();
        assert!(e.to_string().contains("tenant"), "{e}");
        let e = Config::parse(
            "registries:\n  - host: a.io\n    auth: {type: azure, credential: client-secret, tenantId: t}\n",
            Path::new("m.yaml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("clientSecretEnv"), "{e}");
        let e = Config::parse("report: {azureBlob: \"https://a/c?sig=x\"}\n", Path::new("m.yaml")).unwrap_err();
        assert!(e.to_string().contains("sasTokenEnv"), "{e}");
    }
}
