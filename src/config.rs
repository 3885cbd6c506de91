//! The configuration file (`-c mirror.yaml`): where registries really are and how to sign in,
//! what the image set is made of, where each image goes, and how hard to push.
//!
//! Unknown keys are errors, not warnings: a misspelt `platfroms:` that silently did nothing
//! would copy the wrong images at 3 a.m. Secrets are never written in this file; it names the
//! environment variable or file that holds them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::manifest::IndexPolicy;
use crate::manifest::PlatformFilter;

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
    /// Explicit images: references (`oci://` for Helm charts), or a repository with a tag rule.
    /// Kept with their place in the file so that an entry that does not parse is reported at
    /// its line.
    #[serde(default)]
    pub images: Vec<serde_saphyr::Spanned<ImageItem>>,
    /// Limits for the transfer engine.
    #[serde(default)]
    pub transfer: TransferConfig,
    /// Where each run's JSON and JUnit reports are uploaded (`{azureBlob: https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX}`).
    #[serde(default)]
    pub report: Option<BlobConfig>,
    /// A blob whose lease keeps two scheduled runs from overlapping (`{azureBlob: https://…/CONTAINER/mirror.lock}`).
    #[serde(default)]
    pub lock: Option<BlobConfig>,
    /// Where completed warms are recorded in the target registry (see `crate::ledger`).
    #[serde(default)]
    pub warm_ledger: WarmLedgerConfig,
    /// The provenance gate: which signatures an image must carry before it enters the target
    /// (see docs/provenance.md).
    #[serde(default)]
    pub signatures: SignaturesConfig,
    /// The guard rails of `mirror prune`: what it keeps although the image set no longer needs it.
    #[serde(default)]
    pub prune: PruneConfig,
}

/// `signatures:`: verify Notary Project and cosign signatures of source images. Paths are
/// relative to the config file; the files themselves are read by the application layer, before
/// anything is read from a registry, so this stays plain data.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignaturesConfig {
    #[serde(default)]
    pub mode: SignatureMode,
    /// A Notary Project trust policy and trust store, as the `notation` CLI keeps them.
    #[serde(default)]
    pub notation: Option<NotationConfig>,
    /// cosign public keys, each for the source references its scope matches.
    #[serde(default)]
    pub cosign: Vec<CosignKeyConfig>,
}

/// What the gate does with what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMode {
    /// No signature is looked for (and no request is made for one).
    #[default]
    Off,
    /// Signatures are checked and reported; nothing is held back and exit codes are as without.
    Audit,
    /// A covered image without a valid signature is neither copied nor warmed (`sync` exits 3),
    /// and `verify` fails (exit 2) on a covered image whose signature is not in the target.
    Enforce,
}

impl std::fmt::Display for SignatureMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignatureMode::Off => "off",
            SignatureMode::Audit => "audit",
            SignatureMode::Enforce => "enforce",
        })
    }
}

/// `signatures.notation`: files in the `notation` CLI's own formats.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotationConfig {
    /// A Notary Project trust policy document (`trustpolicy.json`, version "1.0").
    pub trust_policy: PathBuf,
    /// A trust store folder: `x509/ca/<name>/*.pem`, `x509/tsa/<name>/*.pem`,
    /// `x509/signingAuthority/<name>/*.pem`.
    pub trust_store: PathBuf,
}

/// One entry of `signatures.cosign`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CosignKeyConfig {
    /// A glob over source references (`ghcr.io/fluxcd/*`) that this key must have signed.
    pub scope: String,
    /// A PEM public key: ECDSA P-256/P-384, Ed25519 or RSA.
    pub key: PathBuf,
}

/// `prune:`: what `mirror prune` keeps of the tags the image set no longer needs. Read as
/// written (`minAge` text, `keepRecent` signed) so that a wrong value is refused naming its key
/// rather than as a YAML type error; [`PruneConfig::rules`] gives the checked values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PruneConfig {
    /// Never delete a tag younger than this (`90m`, `36h`, `7d`, `0s`).
    #[serde(default = "default_min_age")]
    pub min_age: String,
    /// Per repository, keep this many of the most recent tags the image set does not need.
    #[serde(default = "default_keep_recent")]
    pub keep_recent: i64,
    /// Regular expressions of tags never deleted (matched against the whole tag unless anchored otherwise).
    #[serde(default)]
    pub protect: Vec<String>,
}

/// `prune:` checked: the values the planner takes.
#[derive(Debug, Clone)]
pub struct PruneRules {
    pub min_age: std::time::Duration,
    pub keep_recent: usize,
    pub protect: Vec<regex::Regex>,
}

fn default_min_age() -> String {
    "7d".into()
}
fn default_keep_recent() -> i64 {
    3
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig { min_age: default_min_age(), keep_recent: default_keep_recent(), protect: Vec::new() }
    }
}

impl PruneConfig {
    /// The checked rules, or an error naming the key (`prune.minAge`, `prune.keepRecent`,
    /// `prune.protect[i]`).
    pub fn rules(&self) -> Result<PruneRules, String> {
        let min_age = crate::time::parse_duration(&self.min_age).map_err(|e| format!("prune.minAge: {e}"))?;
        let keep_recent = usize::try_from(self.keep_recent)
            .map_err(|_| format!("prune.keepRecent: {} is negative; write 0 or more", self.keep_recent))?;
        let protect = self
            .protect
            .iter()
            .enumerate()
            .map(|(i, p)| {
                regex::Regex::new(p).map_err(|e| {
                    format!(
                        "prune.protect[{i}]: {p:?} is not a regular expression: {}",
                        e.to_string().replace('\n', " ")
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(PruneRules { min_age, keep_recent, protect })
    }
}

/// `warmLedger:`: the repository of the target registry that records completed warms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WarmLedgerConfig {
    #[serde(default = "default_warm_ledger_repository")]
    pub repository: String,
}

/// The ledger's repository when `warmLedger.repository` is not set.
pub const DEFAULT_WARM_LEDGER_REPOSITORY: &str = "acr-mirror/warm-ledger";

fn default_warm_ledger_repository() -> String {
    DEFAULT_WARM_LEDGER_REPOSITORY.to_string()
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

#[derive(Debug, Clone, Default, Deserialize)]
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
    /// Seconds to open a connection (TCP and TLS). Default 10.
    #[serde(default)]
    pub connect_timeout_seconds: Option<u64>,
    /// Seconds to wait for the response headers once the request is sent. Default 45: with
    /// one retry after a timeout, a registry that accepts connections and never answers fails
    /// the run in about a minute and a half.
    #[serde(default)]
    pub response_timeout_seconds: Option<u64>,
    /// Seconds without a byte, in either direction, before a body transfer is given up. Default 30.
    #[serde(default)]
    pub idle_timeout_seconds: Option<u64>,
    /// PEM file of certificate authorities trusted for this registry besides the system's
    /// (a private CA). Relative to the current directory.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate from this registry. Warned about on every run.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
}

/// Default of `connectTimeoutSeconds`.
pub const DEFAULT_CONNECT_TIMEOUT_SECONDS: u64 = 10;
/// Default of `responseTimeoutSeconds`.
pub const DEFAULT_RESPONSE_TIMEOUT_SECONDS: u64 = 45;
/// Default of `idleTimeoutSeconds`.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 30;

impl RegistryConfig {
    /// The endpoint as a registry root URL (ending in `/`), `None` when the host is reached
    /// directly. Refused: anything but http/https, and user info — a password in a URL would be
    /// half used and echoed in errors, so the error never repeats the endpoint when it has one.
    pub fn endpoint_url(&self) -> Result<Option<url::Url>, String> {
        let Some(text) = &self.endpoint else { return Ok(None) };
        let shown =
            if text.contains('@') { "(not shown: it holds user info)".to_string() } else { format!("{text:?}") };
        let with_slash = if text.ends_with('/') { text.clone() } else { format!("{text}/") };
        let url = url::Url::parse(&with_slash).map_err(|e| format!("bad endpoint {shown}: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "endpoint has user info (user:password@); name the credentials under auth: instead (endpoint not shown)"
                    .into(),
            );
        }
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!("endpoint {shown} must be http:// or https://"));
        }
        Ok(Some(url))
    }

    /// `connectTimeoutSeconds`, `responseTimeoutSeconds` and `idleTimeoutSeconds` with their defaults.
    pub fn timeouts(&self) -> [std::time::Duration; 3] {
        let s = |v: Option<u64>, d: u64| std::time::Duration::from_secs(v.unwrap_or(d));
        [
            s(self.connect_timeout_seconds, DEFAULT_CONNECT_TIMEOUT_SECONDS),
            s(self.response_timeout_seconds, DEFAULT_RESPONSE_TIMEOUT_SECONDS),
            s(self.idle_timeout_seconds, DEFAULT_IDLE_TIMEOUT_SECONDS),
        ]
    }
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

/// Which Entra credential signs in (`auth: {type: azure, credential: …}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// Workload identity if its token file is set, else managed identity if its endpoint is set,
    /// else the Azure CLI if `az` is on PATH, else managed identity through IMDS.
    #[default]
    Auto,
    /// AKS workload identity: `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_AUTHORITY_HOST`, as the webhook injects them.
    WorkloadIdentity,
    /// Managed identity: App Service style (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`) or IMDS.
    ManagedIdentity,
    /// Whoever is logged in to `az` (developer machines, pipelines after `az login`).
    AzureCli,
    /// A service principal with a client secret read from the environment variable `clientSecretEnv`.
    ClientSecret,
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CredentialKind::Auto => "auto",
            CredentialKind::WorkloadIdentity => "workload-identity",
            CredentialKind::ManagedIdentity => "managed-identity",
            CredentialKind::AzureCli => "azure-cli",
            CredentialKind::ClientSecret => "client-secret",
        })
    }
}

/// Everything needed to build an Entra credential. Holds no secret: the client secret is named
/// by its environment variable and read only when the credential is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignIn {
    pub credential: CredentialKind,
    /// Entra tenant. Also sent to `/oauth2/exchange` (optional there).
    pub tenant_id: Option<String>,
    /// Application (client) ID: the service principal, the workload identity's app, or a
    /// user-assigned managed identity.
    pub client_id: Option<String>,
    /// Environment variable holding the client secret (`client-secret` only).
    pub client_secret_env: Option<String>,
}

impl AuthConfig {
    /// The Entra sign-in an `azure` auth section describes; `None` for the other kinds.
    pub fn azure_sign_in(&self) -> Option<SignIn> {
        match self {
            AuthConfig::Azure { credential, tenant_id, client_id, client_secret_env } => Some(SignIn {
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
    pub os: Vec<NodeOs>,
    /// Folder of the component lists, relative to the config file. Default: `manifests-lists/aks`
    /// in the current directory when it exists, else the lists built into the binary.
    #[serde(default)]
    pub lists: Option<PathBuf>,
}

/// The node operating system family of an AKS node pool (and of a component list entry).
/// Plain data here so that the image set imports the config, never the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeOs {
    /// Ubuntu and Azure Linux nodes (and any Linux node: the common images).
    Linux,
    /// Flatcar Container Linux nodes, which take system extensions (`*-sysext`) as OCI artifacts.
    Flatcar,
    /// Windows nodes: accepted in the config only to be refused with a warning.
    Windows,
}

impl std::fmt::Display for NodeOs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeOs::Linux => "linux",
            NodeOs::Flatcar => "flatcar",
            NodeOs::Windows => "windows",
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadsConfig {
    /// Files, folders or globs of Kubernetes YAML, relative to the config file; `-` is stdin.
    #[serde(default)]
    pub manifests: Vec<String>,
    /// Container arguments and environment variables, beyond the built-in ones, whose value is
    /// an image an operator starts pods with.
    #[serde(default)]
    pub injected_images: InjectedImages,
}

/// Where operators are told, in their own container, which images they will start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InjectedImages {
    /// Command-line flags whose value is an image: `--my-sidecar-image` matches
    /// `--my-sidecar-image=IMAGE` and `--my-sidecar-image IMAGE`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Environment variable names whose value is an image; a trailing `*` makes a prefix
    /// (`RELATED_IMAGE_*`).
    #[serde(default)]
    pub env: Vec<String>,
}

/// One entry of `images:`: a reference, or a repository and a rule choosing its tags.
#[derive(Debug, Clone)]
pub enum ImageItem {
    /// `registry/repository:tag`, `…@sha256:…`, or `oci://…` for a Helm chart.
    Reference(String),
    /// A repository whose tags are chosen from the source's tag list when the plan is made.
    Tags(TagsItem),
}

/// A string is a reference and a mapping a tag rule, read directly (not as an untagged enum) so
/// that a misspelt key in a rule is reported by name, at its line.
impl<'de> Deserialize<'de> for ImageItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ImageItem;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an image reference, or {repository: …, tags: {…}}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ImageItem, E> {
                Ok(ImageItem::Reference(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ImageItem, A::Error> {
                TagsItem::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ImageItem::Tags)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `{repository: registry.k8s.io/ingress-nginx/controller, tags: {semver: ">=1.11", latest: 3}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TagsItem {
    /// `registry/repository` without a tag (`oci://` for Helm charts).
    pub repository: String,
    pub tags: TagRule,
}

/// Which tags of a repository to take. Every condition given must hold; `latest` is applied
/// last, to what the others let through.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TagRule {
    /// Every tag (minus `deny`).
    #[serde(default)]
    pub all: bool,
    /// Regular expressions; a tag must match at least one.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Regular expressions; a tag matching any is left out.
    #[serde(default)]
    pub deny: Vec<String>,
    /// A semver range (`>=1.11.0, <1.13`); tags that are not versions never match it.
    #[serde(default)]
    pub semver: Option<String>,
    /// Only the N highest versions (by semver) of what is left.
    #[serde(default)]
    pub latest: Option<usize>,
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
            r.endpoint_url().map_err(|m| format!("registry {}: {m}", r.host))?;
            let timeouts = [
                ("connectTimeoutSeconds", r.connect_timeout_seconds),
                ("responseTimeoutSeconds", r.response_timeout_seconds),
                ("idleTimeoutSeconds", r.idle_timeout_seconds),
            ];
            if let Some((key, _)) = timeouts.iter().find(|(_, v)| *v == Some(0)) {
                return Err(format!("registry {}: {key} must be at least 1", r.host));
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
        let sig = &self.signatures;
        if sig.mode != SignatureMode::Off && sig.notation.is_none() && sig.cosign.is_empty() {
            return Err(format!(
                "signatures.mode is {} but neither signatures.notation nor signatures.cosign says what to trust",
                sig.mode
            ));
        }
        if let Some(n) = sig.cosign.iter().position(|k| k.scope.trim().is_empty()) {
            return Err(format!("signatures.cosign[{n}].scope is empty"));
        }
        self.prune.rules()?;
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

    /// The transport keys parse with their defaults; a zero timeout and an endpoint with user
    /// info are refused, the latter without repeating the secret.
    #[test]
    fn transport_keys_parse_and_userinfo_is_refused() {
        let cfg = Config::parse(
            "registries:\n  - host: a.io\n    endpoint: https://a.example\n    caFile: ca.pem\n    insecureSkipTlsVerify: true\n    idleTimeoutSeconds: 5\n",
            Path::new("m.yaml"),
        )
        .unwrap();
        let r = &cfg.registries[0];
        assert!(r.insecure_skip_tls_verify && r.ca_file.is_some());
        let [c, resp, idle] = r.timeouts();
        assert_eq!((c.as_secs(), resp.as_secs(), idle.as_secs()), (10, 45, 5));
        let e = Config::parse("registries:\n  - host: a.io\n    connectTimeoutSeconds: 0\n", Path::new("m.yaml"))
            .unwrap_err();
        assert!(e.to_string().contains("connectTimeoutSeconds"), "{e}");
        for ep in ["https://bob:hunter2@a.example", "https://bob:hunter2@a.example:badport"] {
            let e = Config::parse(&format!("registries:\n  - host: a.io\n    endpoint: {ep}\n"), Path::new("m.yaml"))
                .unwrap_err()
                .to_string();
            assert!(!e.contains("hunter2") && e.contains("user info") && e.contains("a.io"), "{e}");
        }
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

    /// Checks the `signatures:` keys: the default mode, every key parsed, a bad mode and an
    /// unknown key refused with their line, and a gate with nothing to trust refused.
    #[test]
    fn signatures_parse_and_are_checked() {
        assert_eq!(Config::parse("{}", Path::new("m.yaml")).unwrap().signatures.mode, SignatureMode::Off);
        let cfg = Config::parse(
            "signatures:\n  mode: enforce\n  notation: {trustPolicy: sig/tp.json, trustStore: sig/ts}\n  cosign:\n    - {scope: \"ghcr.io/fluxcd/*\", key: sig/flux.pub}\n",
            Path::new("m.yaml"),
        )
        .unwrap();
        let s = &cfg.signatures;
        assert_eq!(s.mode, SignatureMode::Enforce);
        assert_eq!(s.notation.as_ref().unwrap().trust_store, PathBuf::from("sig/ts"));
        assert_eq!(
            (s.cosign[0].scope.as_str(), s.cosign[0].key.as_path()),
            ("ghcr.io/fluxcd/*", Path::new("sig/flux.pub"))
        );
        let e =
            Config::parse("images: []\nsignatures:\n  mode: strict\n", Path::new("m.yaml")).unwrap_err().to_string();
        assert!(e.contains("strict") && e.contains("line 3"), "{e}");
        let e = Config::parse(
            "signatures:\n  mode: audit\n  cosign:\n    - {scope: a, key: k, keys: x}\n",
            Path::new("m.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("keys") && e.contains("line 4"), "{e}");
        let e = Config::parse("signatures: {mode: audit}\n", Path::new("m.yaml")).unwrap_err().to_string();
        assert!(e.contains("neither signatures.notation nor signatures.cosign"), "{e}");
    }

    // Checks the two shapes of an `images:` entry and that a misspelt rule key is named at its line.
    #[test]
    fn image_items_are_references_or_tag_rules() {
        let cfg = Config::parse(
            "images:\n  - nginx:1\n  - repository: quay.io/a/b\n    tags: {semver: '~1.2', latest: 2}\n",
            Path::new("m.yaml"),
        )
        .unwrap();
        assert!(matches!(&cfg.images[0].value, ImageItem::Reference(r) if r == "nginx:1"));
        assert!(matches!(&cfg.images[1].value, ImageItem::Tags(t) if t.tags.latest == Some(2)));
        let e = Config::parse("images:\n  - repository: quay.io/a/b\n    tag: {all: true}\n", Path::new("m.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("unknown field `tag`"), "{e}");
    }

    /// Checks `prune:`: the defaults, a full section, and that a negative `keepRecent`, an
    /// unreadable `minAge` and an invalid regex are each refused naming their key.
    #[test]
    fn prune_rules_are_checked_naming_the_key() {
        let rules = Config::parse("{}", Path::new("m.yaml")).unwrap().prune.rules().unwrap();
        assert_eq!((rules.min_age.as_secs(), rules.keep_recent, rules.protect.len()), (7 * 86_400, 3, 0));
        let cfg = Config::parse(
            "prune:\n  minAge: 36h\n  keepRecent: 0\n  protect: [\"^v?\\\\d+\\\\.\\\\d+$\"]\n",
            Path::new("m.yaml"),
        )
        .unwrap();
        let rules = cfg.prune.rules().unwrap();
        assert_eq!((rules.min_age.as_secs(), rules.keep_recent), (36 * 3600, 0));
        assert!(rules.protect[0].is_match("v1.2") && !rules.protect[0].is_match("1.2.3"));
        for (yaml, key) in [
            ("prune: {keepRecent: -1}", "prune.keepRecent"),
            ("prune: {minAge: 7 days}", "prune.minAge"),
            ("prune: {minAge: 7}", "prune.minAge"),
            ("prune: {protect: [ok, \"(\"]}", "prune.protect[1]"),
        ] {
            let e = Config::parse(yaml, Path::new("m.yaml")).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("m.yaml"), "{yaml}: {e}");
        }
        let e = Config::parse("prune: {keepRecnt: 1}", Path::new("m.yaml")).unwrap_err().to_string();
        assert!(e.contains("keepRecnt"), "{e}");
    }
}
