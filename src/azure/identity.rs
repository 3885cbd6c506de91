//! Entra ID sign-in to ACR: pick a credential, get an Entra token for ACR, exchange it at
//! `POST /oauth2/exchange` for an ACR refresh token (<https://github.com/Azure/acr/blob/main/docs/AAD-OAuth.md>),
//! and keep that refresh
//! token fresh for runs longer than its ~3 h life.
//!
//! azure_identity 1.x has no `DefaultAzureCredential` on purpose (a silent chain makes failures
//! hard to explain), so `auto` here is our own, short, logged decision: see [`resolve_auto`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use base64::Engine;
use serde::Deserialize;
use url::Url;

use crate::registry::transport::limits::{ReadError, SMALL_BODY, read_within};
use crate::registry::transport::retry::{Cause, Retry, retry_after, retryable_status};

/// How long one exchange (request and answer) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of an exchange that met throttling, a server error or a broken connection.
const EXCHANGE_RETRIES: u32 = 4;

/// The Entra scope for ACR's data plane. ARM-scoped tokens also work unless the registry disabled
/// authentication-as-arm, so the narrower ACR audience is the one that always works.
pub const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";

/// How long before the refresh token's expiry it is renewed. Five minutes covers clock skew and
/// the longest single request (a large blob upload) that might start just before expiry.
pub const DEFAULT_RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Used when an ACR refresh token carries no readable `exp`: renew well before the documented 3 h.
const FALLBACK_LIFETIME: Duration = Duration::from_secs(60 * 60);

pub use crate::config::{CredentialKind, SignIn};

/// A sign-in or exchange that failed. Messages say what was tried and never contain a token or
/// secret.
#[derive(Debug, thiserror::Error)]
pub enum AzureAuthError {
    #[error("azure sign-in ({credential}): {message}")]
    Config { credential: CredentialKind, message: String },
    #[error("azure sign-in ({credential}): could not get an Entra token for {scope}: {message}")]
    Entra { credential: CredentialKind, scope: String, message: String },
    #[error("ACR token exchange at {url} failed: HTTP {status}{detail}")]
    ExchangeRefused { url: Url, status: u16, detail: String },
    #[error("ACR token exchange at {url}: {message}")]
    Exchange { url: Url, message: String },
    #[error("registry realm {realm} does not end in /oauth2/token, so it is not ACR's token service")]
    NotAcrRealm { realm: Url },
    #[error("registry realm {realm} is not on the registry's host {registry}: the Entra token is exchanged only there")]
    ForeignRealm { realm: Url, registry: String },
}

/// The Entra credential chosen for a registry (or for Blob Storage), and which kind it is.
#[derive(Clone)]
pub struct EntraCredential {
    kind: CredentialKind,
    inner: Arc<dyn TokenCredential>,
}

impl fmt::Debug for EntraCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraCredential").field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// An Entra access token; its value is only shown through [`EntraToken::secret`].
#[derive(Clone)]
pub struct EntraToken {
    token: String,
    pub expires_at: SystemTime,
}

impl EntraToken {
    pub fn secret(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for EntraToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraToken").field("token", &"<redacted>").field("expires_at", &self.expires_at).finish()
    }
}

impl EntraCredential {
    /// Wraps any `TokenCredential` (one built elsewhere, or a test's own). `kind` is what logs and
    /// errors will call it.
    #[cfg(any(test, feature = "internals"))]
    pub fn from_token_credential(kind: CredentialKind, credential: Arc<dyn TokenCredential>) -> Self {
        EntraCredential { kind, inner: credential }
    }

    /// The kind actually used (never `Auto`).
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// For azure SDK clients (Blob Storage) that take a `TokenCredential`.
    pub fn token_credential(&self) -> Arc<dyn TokenCredential> {
        self.inner.clone()
    }

    /// Gets an Entra token for one scope (normally [`ACR_SCOPE`]).
    pub async fn token(&self, scope: &str) -> Result<EntraToken, AzureAuthError> {
        let t = self.inner.get_token(&[scope], None).await.map_err(|e| AzureAuthError::Entra {
            credential: self.kind,
            scope: scope.to_string(),
            message: e.to_string(),
        })?;
        let unix = t.expires_on.unix_timestamp().max(0) as u64;
        Ok(EntraToken { token: t.token.secret().to_string(), expires_at: UNIX_EPOCH + Duration::from_secs(unix) })
    }
}

/// Decides what `auto` means from the environment (a lookup function, so it can be tested
/// without touching the process environment) and whether `az` is on PATH.
///
/// Order and why: the workload identity token file and the managed identity endpoint are set
/// only where those identities really exist, so their presence is a reliable signal. With
/// neither, a machine with `az` is a developer's or a pipeline's; without `az` we assume an Azure
/// VM or node and use managed identity through IMDS (169.254.169.254), which has no environment
/// variable to detect. Probing IMDS instead would cost a network timeout on every laptop.
pub fn resolve_auto(env: impl Fn(&str) -> Option<String>, az_on_path: bool) -> (CredentialKind, &'static str) {
    let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
    if set("AZURE_FEDERATED_TOKEN_FILE") {
        (CredentialKind::WorkloadIdentity, "AZURE_FEDERATED_TOKEN_FILE is set")
    } else if set("IDENTITY_ENDPOINT") || set("MSI_ENDPOINT") {
        (CredentialKind::ManagedIdentity, "IDENTITY_ENDPOINT is set")
    } else if az_on_path {
        (CredentialKind::AzureCli, "az is on PATH")
    } else {
        (CredentialKind::ManagedIdentity, "nothing else found; trying IMDS")
    }
}

fn az_on_path() -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join("az").is_file()))
}

/// Builds the credential `sign_in` asks for. `http`, when given, is the HTTP client the Entra
/// calls go through (tests pass one that trusts their CA); otherwise azure_core's own is used.
/// Logs which credential was chosen and why, at info level.
pub fn build_credential(sign_in: &SignIn, http: Option<reqwest::Client>) -> Result<EntraCredential, AzureAuthError> {
    let (kind, why) = match sign_in.credential {
        CredentialKind::Auto => resolve_auto(|k| std::env::var(k).ok(), az_on_path()),
        k => (k, "configured"),
    };
    tracing::info!(credential = %kind, reason = why, "azure sign-in: using {kind} credential");
    let client_options = || {
        let mut o = ClientOptions::default();
        if let Some(c) = &http {
            o.transport = Some(Transport::new(Arc::new(c.clone())));
        }
        o
    };
    let cfg_err = |message: String| AzureAuthError::Config { credential: kind, message };
    let sdk_err = |e: azure_core::Error| AzureAuthError::Config { credential: kind, message: e.to_string() };
    let inner: Arc<dyn TokenCredential> = match kind {
        CredentialKind::WorkloadIdentity => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions { client_options: client_options() },
            client_id: sign_in.client_id.clone(),
            tenant_id: sign_in.tenant_id.clone(),
            token_file_path: None,
        }))
        .map_err(sdk_err)?,
        CredentialKind::ManagedIdentity => ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: sign_in.client_id.clone().map(UserAssignedId::ClientId),
            client_options: client_options(),
        }))
        .map_err(sdk_err)?,
        CredentialKind::AzureCli => AzureCliCredential::new(Some(AzureCliCredentialOptions {
            tenant_id: sign_in.tenant_id.clone(),
            ..Default::default()
        }))
        .map_err(sdk_err)?,
        CredentialKind::ClientSecret => {
            let tenant = sign_in.tenant_id.as_deref().ok_or_else(|| cfg_err("tenantId is required".into()))?;
            let client = sign_in.client_id.clone().ok_or_else(|| cfg_err("clientId is required".into()))?;
            let var =
                sign_in.client_secret_env.as_deref().ok_or_else(|| cfg_err("clientSecretEnv is required".into()))?;
            let secret = std::env::var(var)
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| cfg_err(format!("environment variable {var} (clientSecretEnv) is not set")))?;
            ClientSecretCredential::new(
                tenant,
                client,
                Secret::new(secret),
                Some(ClientSecretCredentialOptions { client_options: client_options() }),
            )
            .map_err(sdk_err)?
        }
        CredentialKind::Auto => unreachable!("resolve_auto never returns Auto"),
    };
    Ok(EntraCredential { kind, inner })
}

/// An ACR refresh token and when it expires (from its JWT `exp`).
#[derive(Clone)]
pub struct AcrRefreshToken {
    pub token: String,
    pub expires_at: SystemTime,
}

impl fmt::Debug for AcrRefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcrRefreshToken").field("token", &"<redacted>").field("expires_at", &self.expires_at).finish()
    }
}

/// Derives ACR's exchange endpoint from the registry's challenge realm
/// (`https://r.azurecr.io/oauth2/token` → `https://r.azurecr.io/oauth2/exchange`), so the same
/// code works against a loopback stand-in.
pub fn exchange_url_from_realm(realm: &Url) -> Result<Url, AzureAuthError> {
    let path = realm.path();
    let Some(base) = path.strip_suffix("/oauth2/token") else {
        return Err(AzureAuthError::NotAcrRealm { realm: realm.clone() });
    };
    let mut url = realm.clone();
    url.set_path(&format!("{base}/oauth2/exchange"));
    url.set_query(None);
    Ok(url)
}

/// Reads `exp` from a JWT's payload without checking the signature: we only need to know when to
/// renew, and the registry, not us, decides whether the token is valid.
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp > 0.0).then(|| UNIX_EPOCH + Duration::from_secs(exp as u64))
}

#[derive(Deserialize)]
struct ExchangeResponse {
    refresh_token: Option<String>,
}

/// Exchanges an Entra token for an ACR refresh token: `POST {exchange_url}` with the form
/// `grant_type=access_token&service&tenant&access_token` (`tenant` optional), as ACR's
/// docs/AAD-OAuth.md describes: <https://github.com/Azure/acr/blob/main/docs/AAD-OAuth.md>.
pub async fn exchange_for_refresh_token(
    http: &reqwest::Client,
    exchange_url: &Url,
    service: &str,
    tenant: Option<&str>,
    entra_token: &str,
) -> Result<AcrRefreshToken, AzureAuthError> {
    let mut form: Vec<(&str, &str)> = vec![("grant_type", "access_token"), ("service", service)];
    if let Some(t) = tenant {
        form.push(("tenant", t));
    }
    form.push(("access_token", entra_token));
    let err = |message: String| AzureAuthError::Exchange { url: exchange_url.clone(), message };
    let mut retry = Retry::new(EXCHANGE_RETRIES);
    let (status, body) = loop {
        let attempt = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            let resp = http.post(exchange_url.clone()).form(&form).send().await?;
            let status = resp.status();
            let wait = retry_after(resp.headers());
            Ok::<_, reqwest::Error>((status, wait, read_within(resp, SMALL_BODY, EXCHANGE_TIMEOUT).await))
        })
        .await;
        let cause = match attempt {
            Ok(Ok((status, wait, _))) if retryable_status(status.as_u16()) => Cause::Status(status.as_u16(), wait),
            Ok(Ok((status, _, Ok(body)))) => break (status, body),
            Ok(Ok((_, _, Err(ReadError::TooLarge(_))))) => {
                return Err(err("the answer is over 1 MiB; cut there and refused".into()));
            }
            Ok(Ok((_, _, Err(_)))) | Ok(Err(_)) => Cause::Connection,
            Err(_) => Cause::Timeout,
        };
        match retry.next(cause) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => {
                return Err(match cause {
                    Cause::Status(status, _) => {
                        AzureAuthError::ExchangeRefused { url: exchange_url.clone(), status, detail: String::new() }
                    }
                    Cause::Timeout => err(format!("no complete answer within {} s", EXCHANGE_TIMEOUT.as_secs())),
                    Cause::Connection => err("request failed: the connection failed or broke".into()),
                });
            }
        }
    };
    if !status.is_success() {
        return Err(AzureAuthError::ExchangeRefused {
            url: exchange_url.clone(),
            status: status.as_u16(),
            detail: acr_error_detail(&body),
        });
    }
    let parsed: ExchangeResponse =
        serde_json::from_slice(&body).map_err(|e| err(format!("response is not the expected JSON: {e}")))?;
    let token =
        parsed.refresh_token.filter(|t| !t.is_empty()).ok_or_else(|| err("response has no refresh_token".into()))?;
    let expires_at = jwt_expiry(&token).unwrap_or_else(|| {
        tracing::debug!("ACR refresh token has no readable exp; assuming {FALLBACK_LIFETIME:?}");
        SystemTime::now() + FALLBACK_LIFETIME
    });
    Ok(AcrRefreshToken { token, expires_at })
}

/// Turns ACR's error body (`{"errors":[{"code","message"}]}`, or OAuth's `{"error","error_description"}`)
/// into `": CODE: message"`; other bodies are not echoed, as they could hold anything.
fn acr_error_detail(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return String::new() };
    let s = |v: Option<&serde_json::Value>| crate::sanitize::short(v.and_then(|x| x.as_str()).unwrap_or(""));
    if let Some(e) = v.get("errors").and_then(|e| e.as_array()).and_then(|a| a.first()) {
        return format!(": {}: {}", s(e.get("code")), s(e.get("message")));
    }
    if v.get("error").is_some() {
        return format!(": {}: {}", s(v.get("error")), s(v.get("error_description")));
    }
    String::new()
}

/// Supplies the ACR refresh token for one registry for the whole run: signs in on first use,
/// caches the refresh token, and renews it (a new Entra token and a new exchange) when less than
/// the renew margin remains, so a run longer than the token's ~3 h never presents an expired one.
pub struct AzureTokenSource {
    credential: EntraCredential,
    http: reqwest::Client,
    /// Where to exchange and for which `service`; replaceable by [`AzureTokenSource::use_realm`]
    /// once the registry's challenge is known.
    target: std::sync::RwLock<ExchangeTarget>,
    tenant: Option<String>,
    /// The registry's host: the only place the Entra token is exchanged.
    home: String,
    renew_margin: Duration,
    cached: tokio::sync::Mutex<Option<AcrRefreshToken>>,
    invalidated: AtomicBool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ExchangeTarget {
    url: Url,
    service: String,
}

impl fmt::Debug for AzureTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureTokenSource")
            .field("credential", &self.credential)
            .field("target", &self.target())
            .finish_non_exhaustive()
    }
}

impl AzureTokenSource {
    pub fn new(
        credential: EntraCredential,
        http: reqwest::Client,
        exchange_url: Url,
        service: impl Into<String>,
        tenant: Option<String>,
    ) -> Self {
        AzureTokenSource {
            credential,
            http,
            home: exchange_url.host_str().unwrap_or_default().to_ascii_lowercase(),
            target: std::sync::RwLock::new(ExchangeTarget { url: exchange_url, service: service.into() }),
            tenant,
            renew_margin: DEFAULT_RENEW_MARGIN,
            cached: tokio::sync::Mutex::new(None),
            invalidated: AtomicBool::new(false),
        }
    }

    /// Like [`AzureTokenSource::new`], with the exchange URL derived from the challenge realm.
    pub fn from_realm(
        credential: EntraCredential,
        http: reqwest::Client,
        realm: &Url,
        service: impl Into<String>,
        tenant: Option<String>,
    ) -> Result<Self, AzureAuthError> {
        Ok(Self::new(credential, http, exchange_url_from_realm(realm)?, service, tenant))
    }

    /// For a registry whose challenge has not been seen yet: ACR's realm is always
    /// `https://<login server>/oauth2/token`, so the exchange is `<registry_url>/oauth2/exchange`
    /// and the service is the login server's host. [`use_realm`](Self::use_realm) corrects both
    /// if the challenge says otherwise (a stand-in token service on another port, in tests).
    pub fn for_registry(
        credential: EntraCredential,
        http: reqwest::Client,
        registry_url: &Url,
        tenant: Option<String>,
    ) -> Result<Self, AzureAuthError> {
        let mut realm = registry_url.clone();
        realm.set_path("/oauth2/token");
        let service = registry_url.host_str().unwrap_or_default().to_string();
        Self::from_realm(credential, http, &realm, service, tenant)
    }

    /// Points the exchange at the realm and service of a challenge the registry sent. A change
    /// drops the cached refresh token (it was issued for another service). A realm on another
    /// host is refused: the Entra token would be handed to whoever the challenge named.
    pub fn use_realm(&self, realm: &Url, service: &str) -> Result<(), AzureAuthError> {
        if !realm.host_str().is_some_and(|h| h.eq_ignore_ascii_case(&self.home)) {
            return Err(AzureAuthError::ForeignRealm { realm: realm.clone(), registry: self.home.clone() });
        }
        let new = ExchangeTarget { url: exchange_url_from_realm(realm)?, service: service.to_string() };
        let mut target = self.target.write().unwrap_or_else(|p| p.into_inner());
        if *target != new {
            *target = new;
            self.invalidate();
        }
        Ok(())
    }

    fn target(&self) -> ExchangeTarget {
        self.target.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Renew when less than this remains (default five minutes). Tests shorten it.
    #[cfg(any(test, feature = "internals"))]
    pub fn with_renew_margin(mut self, margin: Duration) -> Self {
        self.renew_margin = margin;
        self
    }

    pub fn credential_kind(&self) -> CredentialKind {
        self.credential.kind()
    }

    /// A refresh token valid for at least the renew margin. Concurrent callers wait for one
    /// renewal instead of each starting their own.
    pub async fn refresh_token(&self) -> Result<String, AzureAuthError> {
        let mut cached = self.cached.lock().await;
        let invalidated = self.invalidated.swap(false, Ordering::SeqCst);
        if !invalidated
            && let Some(t) = cached.as_ref()
            && t.expires_at > SystemTime::now() + self.renew_margin
        {
            return Ok(t.token.clone());
        }
        let entra = self.credential.token(ACR_SCOPE).await?;
        let target = self.target();
        let fresh = exchange_for_refresh_token(
            &self.http,
            &target.url,
            &target.service,
            self.tenant.as_deref(),
            entra.secret(),
        )
        .await?;
        tracing::debug!(service = %target.service, expires_at = ?fresh.expires_at, "ACR refresh token obtained");
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets the cached refresh token so the next [`refresh_token`](Self::refresh_token)
    /// signs in again; call after the registry answered 401 to an access token made from it.
    pub fn invalidate(&self) {
        self.invalidated.store(true, Ordering::SeqCst);
    }
}

/// Entra ID sign-in for `auth: {type: azure}` registries, plugged into
/// [`crate::registry::Registries::with_entra`]: the registry defines the trait, so the
/// dependency points from here to the registry and not back.
#[derive(Debug, Default)]
pub struct EntraSignIn;

impl crate::registry::auth::EntraSignIn for EntraSignIn {
    fn token_source(
        &self,
        sign_in: &SignIn,
        endpoint: &Url,
        http: reqwest::Client,
    ) -> Result<Arc<dyn crate::registry::auth::RefreshTokenSource>, String> {
        let entra = build_credential(sign_in, None).map_err(|e| e.to_string())?;
        let source = AzureTokenSource::for_registry(entra, http, endpoint, sign_in.tenant_id.clone())
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(source))
    }
}

/// The registry's token layer asks this for the refresh token whenever it needs an access token;
/// the challenge's realm and service say where to exchange.
impl crate::registry::auth::RefreshTokenSource for AzureTokenSource {
    fn refresh_token<'a>(
        &'a self,
        realm: &'a str,
        service: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, Result<crate::registry::Secret, crate::registry::RegistryError>> {
        Box::pin(async move {
            let err = |e: AzureAuthError| crate::registry::RegistryError::Credentials {
                registry: service.unwrap_or(realm).to_string(),
                message: format!("Entra ID sign-in ({}): {e}", self.credential_kind()),
            };
            if let (Ok(url), Some(service)) = (Url::parse(realm), service) {
                self.use_realm(&url, service).map_err(err)?;
            }
            AzureTokenSource::refresh_token(self).await.map(crate::registry::Secret::new).map_err(err)
        })
    }

    fn invalidate(&self) {
        AzureTokenSource::invalidate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", e(r#"{"alg":"RS256"}"#), e(payload))
    }

    #[test]
    fn expiry_is_read_from_the_jwt_payload() {
        // Checks that exp is decoded without a signature check, and that junk yields None.
        assert_eq!(jwt_expiry(&jwt(r#"{"exp":2000000000}"#)), Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000)));
        assert_eq!(jwt_expiry(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(jwt_expiry("not-a-jwt"), None);
    }

    #[test]
    fn exchange_url_comes_from_the_realm() {
        // Checks the realm → exchange mapping, and that a non-ACR realm is refused by name.
        let u = exchange_url_from_realm(&Url::parse("https://r.azurecr.io/oauth2/token?x=1").unwrap()).unwrap();
        assert_eq!(u.as_str(), "https://r.azurecr.io/oauth2/exchange");
        let e = exchange_url_from_realm(&Url::parse("https://auth.docker.io/token").unwrap()).unwrap_err();
        assert!(e.to_string().contains("auth.docker.io/token"), "{e}");
    }

    #[test]
    fn auto_prefers_workload_then_managed_then_cli_then_imds() {
        // Checks the documented order of `auto`.
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let both = env(&[("AZURE_FEDERATED_TOKEN_FILE", "/t"), ("IDENTITY_ENDPOINT", "http://x")]);
        assert_eq!(resolve_auto(both, true).0, CredentialKind::WorkloadIdentity);
        assert_eq!(resolve_auto(env(&[("IDENTITY_ENDPOINT", "http://x")]), true).0, CredentialKind::ManagedIdentity);
        assert_eq!(resolve_auto(env(&[("AZURE_FEDERATED_TOKEN_FILE", "")]), true).0, CredentialKind::AzureCli);
        assert_eq!(resolve_auto(env(&[]), false).0, CredentialKind::ManagedIdentity);
    }

    #[test]
    fn a_source_for_a_registry_assumes_acr_realm_until_told_otherwise() {
        // Checks for_registry's default exchange target and that use_realm replaces it.
        let cred =
            EntraCredential::from_token_credential(CredentialKind::AzureCli, AzureCliCredential::new(None).unwrap());
        let reg = Url::parse("https://myacr.azurecr.io").unwrap();
        let src = AzureTokenSource::for_registry(cred, reqwest::Client::new(), &reg, None).unwrap();
        let ExchangeTarget { url, service, .. } = src.target();
        assert_eq!((url.as_str(), service.as_str()), ("https://myacr.azurecr.io/oauth2/exchange", "myacr.azurecr.io"));
        src.use_realm(&Url::parse("https://myacr.azurecr.io:8443/oauth2/token").unwrap(), "test-registry").unwrap();
        let ExchangeTarget { url, service, .. } = src.target();
        assert_eq!(
            (url.as_str(), service.as_str()),
            ("https://myacr.azurecr.io:8443/oauth2/exchange", "test-registry")
        );
        assert!(src.use_realm(&Url::parse("https://myacr.azurecr.io/token").unwrap(), "x").is_err());
        let e = src.use_realm(&Url::parse("https://evil.example/oauth2/token").unwrap(), "x").unwrap_err();
        assert!(matches!(e, AzureAuthError::ForeignRealm { .. }), "another host is refused: {e}");
    }

    #[test]
    fn debug_output_hides_tokens() {
        // Checks that the Debug impls never print token values.
        let t = AcrRefreshToken { token: "SECRET-REFRESH".into(), expires_at: UNIX_EPOCH };
        assert!(!format!("{t:?}").contains("SECRET"));
        let e = EntraToken { token: "SECRET-ENTRA".into(), expires_at: UNIX_EPOCH };
        assert!(!format!("{e:?}").contains("SECRET"));
    }

    #[test]
    fn acr_error_bodies_are_summarised() {
        // Checks both error shapes ACR's token endpoints use, and that other bodies are not echoed.
        assert_eq!(
            acr_error_detail(br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad token"}]}"#),
            ": UNAUTHORIZED: bad token"
        );
        assert_eq!(acr_error_detail(br#"{"error":"invalid_grant","error_description":"x"}"#), ": invalid_grant: x");
        assert_eq!(acr_error_detail(b"<html>secret</html>"), "");
    }
}
