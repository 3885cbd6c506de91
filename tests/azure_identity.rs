//! Entra ID sign-in to ACR, end to end on loopback: azure_identity's real credentials get a token
//! from a stand-in Entra (through a stand-in `az` on PATH, an App Service managed identity
//! endpoint, or an https authority for workload identity and client secrets), our code exchanges
//! it at the ACR stand-in's `/oauth2/exchange`, and [`AzureTokenSource`] renews the refresh token.
//!
//! The credentials read process environment variables (PATH, IDENTITY_ENDPOINT, AZURE_*), which is
//! global state: every test that touches them holds `ENV_LOCK` and restores what it changed.

mod support_azure;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use acr_mirror::azure::identity::{EntraCredential, jwt_expiry};
use acr_mirror::azure::{
    ACR_SCOPE, AzureAuthError, AzureTokenSource, CredentialKind, SignIn, build_credential, exchange_for_refresh_token,
};
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use support_azure::acr_standin::{AcrStandIn, Scope, default_mint};
use support_azure::entra::{ACR_AUDIENCE, FakeEntra};
use support_azure::tls::TestTls;

const SERVICE: &str = "mirrortest.azurecr.io";

static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Sets environment variables for the life of the guard and puts the old values back after.
struct EnvGuard {
    saved: Vec<(String, Option<std::ffi::OsString>)>,
    _lock: MutexGuard<'static, ()>,
}

/// Every variable any credential or `auto` looks at; each test starts with all of them unset.
const CREDENTIAL_VARS: &[&str] = &[
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
];

fn env(vars: &[(&str, String)]) -> EnvGuard {
    let lock = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut saved = Vec::new();
    let names = CREDENTIAL_VARS.iter().copied().chain(vars.iter().map(|(k, _)| *k)).chain(["PATH"]);
    for k in names {
        if !saved.iter().any(|(n, _): &(String, _)| n == k) {
            saved.push((k.to_string(), std::env::var_os(k)));
        }
    }
    // SAFETY: every test in this binary that reads or writes the environment holds ENV_LOCK.
    unsafe {
        for k in CREDENTIAL_VARS {
            std::env::remove_var(k);
        }
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
    }
    EnvGuard { saved, _lock: lock }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        // SAFETY: still under ENV_LOCK (the lock guard is dropped after this body).
        unsafe {
            for (k, v) in &self.saved {
                match v {
                    Some(v) => std::env::set_var(k, v),
                    None => std::env::remove_var(k),
                }
            }
        }
    }
}

struct World {
    entra: Arc<FakeEntra>,
    acr: AcrStandIn,
    tls: TestTls,
}

async fn world() -> World {
    let tls = TestTls::new();
    let entra = FakeEntra::new();
    entra.start(&tls).await;
    let acr = AcrStandIn::start(SERVICE, entra.clone(), default_mint()).await;
    World { entra, acr, tls }
}

impl World {
    fn source(&self, cred: EntraCredential, tenant: Option<String>) -> AzureTokenSource {
        AzureTokenSource::from_realm(cred, support_azure::http(), &self.acr.realm(), SERVICE, tenant).unwrap()
    }

    /// The Entra token the last exchange carried, decoded by the fake Entra.
    fn last_exchanged_entra(&self) -> support_azure::entra::EntraClaims {
        let form = self.acr.state.last_exchange.lock().unwrap().clone();
        self.entra.verify_acr_token(&form["access_token"]).unwrap()
    }
}

fn refresh_sub(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    v["sub"].as_str().unwrap().to_string()
}

/// Writes a stand-in `az` that records its arguments and prints what `az account get-access-token
/// --output json` prints (accessToken, expiresOn, expires_on, subscription, tenant, tokenType).
fn fake_az(dir: &std::path::Path, token: &str, tenant: &str) -> std::path::PathBuf {
    let args_file = dir.join("az-args");
    let expires_on = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{args}'\n\
         if [ \"$1 $2\" != 'account get-access-token' ]; then echo \"unexpected: $*\" >&2; exit 2; fi\n\
         cat <<'JSON'\n{{\"accessToken\": \"{token}\", \"expiresOn\": \"2030-01-01 00:00:00.000000\", \
         \"expires_on\": {expires_on}, \"subscription\": \"00000000-0000-0000-0000-00000000cafe\", \
         \"tenant\": \"{tenant}\", \"tokenType\": \"Bearer\"}}\nJSON\n",
        args = args_file.display()
    );
    let az = dir.join("az");
    std::fs::write(&az, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    args_file
}

fn path_with(dir: &std::path::Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

#[tokio::test]
async fn azure_cli_token_is_exchanged_for_an_acr_refresh_token() {
    // Checks the azure-cli path end to end: azure_identity runs our stand-in `az` from PATH with
    // the ACR scope and the tenant, and the exchange sends grant_type/service/tenant/access_token
    // and yields a refresh token for the CLI user with a ~3 h expiry read from its JWT.
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let args_file = fake_az(dir.path(), &w.entra.mint(ACR_AUDIENCE, "cli-user", "cli"), &w.entra.tenant);
    let _env = env(&[("PATH", path_with(dir.path()))]);

    let sign_in =
        SignIn { credential: CredentialKind::AzureCli, tenant_id: Some(w.entra.tenant.clone()), ..Default::default() };
    let cred = build_credential(&sign_in, None).unwrap();
    let source = w.source(cred, Some(w.entra.tenant.clone()));
    let refresh = source.refresh_token().await.unwrap();

    let args = std::fs::read_to_string(&args_file).unwrap();
    assert!(args.contains(&format!("--scope {ACR_SCOPE}")), "az was called with: {args}");
    assert!(args.contains(&format!("--tenant {}", w.entra.tenant)), "az was called with: {args}");
    let form = w.acr.state.last_exchange.lock().unwrap().clone();
    assert_eq!(form["grant_type"], "access_token");
    assert_eq!(form["service"], SERVICE);
    assert_eq!(form["tenant"], w.entra.tenant);
    assert_eq!(refresh_sub(&refresh), "cli-user");
    let left = jwt_expiry(&refresh).unwrap().duration_since(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(2 * 3600) && left <= Duration::from_secs(3 * 3600), "{left:?}");
}

#[tokio::test]
async fn auto_uses_the_cli_when_only_az_is_there_and_reports_cli_failures() {
    // Checks that `auto` picks azure-cli when no identity variables are set and `az` is on PATH,
    // and that a logged-out `az` fails with its own message and the credential named.
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    fake_az(dir.path(), &w.entra.mint(ACR_AUDIENCE, "auto-user", "cli"), &w.entra.tenant);
    let _env = env(&[("PATH", path_with(dir.path()))]);
    let cred = build_credential(&SignIn::default(), None).unwrap();
    assert_eq!(cred.kind(), CredentialKind::AzureCli);
    assert_eq!(refresh_sub(&w.source(cred, None).refresh_token().await.unwrap()), "auto-user");

    std::fs::write(dir.path().join("az"), "#!/bin/sh\necho \"Please run 'az login' to setup account.\" >&2\nexit 1\n")
        .unwrap();
    let cred = build_credential(&SignIn::default(), None).unwrap();
    let err = w.source(cred, None).refresh_token().await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AzureAuthError::Entra { credential: CredentialKind::AzureCli, .. }), "{msg}");
    assert!(msg.contains("az login"), "{msg}");
}

#[tokio::test]
async fn managed_identity_via_identity_endpoint_is_exchanged() {
    // Checks the managed-identity path: with IDENTITY_ENDPOINT/IDENTITY_HEADER set (App Service
    // protocol), `auto` picks managed identity, azure_identity asks our endpoint for the ACR
    // resource with the user-assigned client id, and the exchange accepts the result.
    let w = world().await;
    let _env =
        env(&[("IDENTITY_ENDPOINT", w.entra.msi_endpoint()), ("IDENTITY_HEADER", w.entra.identity_header.clone())]);
    let sign_in = SignIn { client_id: Some("user-assigned-mi".into()), ..Default::default() };
    let cred = build_credential(&sign_in, None).unwrap();
    assert_eq!(cred.kind(), CredentialKind::ManagedIdentity);
    let refresh = w.source(cred, None).refresh_token().await.unwrap();
    assert_eq!(refresh_sub(&refresh), "user-assigned-mi");
    assert_eq!(w.last_exchanged_entra().via, "msi");
    assert!(w.entra.refusals.lock().unwrap().is_empty());
}

#[tokio::test]
async fn managed_identity_with_a_wrong_header_fails_without_leaking_it() {
    // Checks that a refused managed identity request surfaces as an Entra error naming the
    // credential, and that the identity header value is not in the message.
    let w = world().await;
    let _env = env(&[("IDENTITY_ENDPOINT", w.entra.msi_endpoint()), ("IDENTITY_HEADER", "wrong-header-value".into())]);
    let sign_in = SignIn { credential: CredentialKind::ManagedIdentity, ..Default::default() };
    let cred = build_credential(&sign_in, None).unwrap();
    let err = w.source(cred, None).refresh_token().await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AzureAuthError::Entra { credential: CredentialKind::ManagedIdentity, .. }), "{msg}");
    assert!(!msg.contains("wrong-header-value"), "{msg}");
    assert_eq!(w.acr.state.exchanges.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn workload_identity_federated_token_is_exchanged() {
    // Checks the workload-identity path: the AKS webhook's variables (token file, client id,
    // tenant, authority host) lead azure_identity to post the file's token as a client assertion
    // to our https authority; `auto` picks it first; the exchange accepts the resulting token.
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, &w.entra.federated_token).unwrap();
    let _env = env(&[
        ("AZURE_FEDERATED_TOKEN_FILE", token_file.display().to_string()),
        ("AZURE_CLIENT_ID", w.entra.client_id.clone()),
        ("AZURE_TENANT_ID", w.entra.tenant.clone()),
        ("AZURE_AUTHORITY_HOST", w.entra.authority()),
        // Also set, to show workload identity wins over managed identity in `auto`.
        ("IDENTITY_ENDPOINT", w.entra.msi_endpoint()),
        ("IDENTITY_HEADER", w.entra.identity_header.clone()),
    ]);
    let cred = build_credential(&SignIn::default(), Some(w.tls.client())).unwrap();
    assert_eq!(cred.kind(), CredentialKind::WorkloadIdentity);
    let refresh = w.source(cred, Some(w.entra.tenant.clone())).refresh_token().await.unwrap();
    assert_eq!(refresh_sub(&refresh), w.entra.client_id);
    assert_eq!(w.last_exchanged_entra().via, "workload_identity");

    // A token file the authority does not accept fails as an Entra error, without its content.
    std::fs::write(&token_file, "unfederated-token-content").unwrap();
    let cred = build_credential(&SignIn::default(), Some(w.tls.client())).unwrap();
    let msg = w.source(cred, None).refresh_token().await.unwrap_err().to_string();
    assert!(msg.contains("workload-identity") && !msg.contains("unfederated-token-content"), "{msg}");
}

#[tokio::test]
async fn client_secret_credential_is_exchanged_and_a_wrong_secret_is_refused() {
    // Checks the client-secret path against the https authority: the secret comes from the named
    // environment variable, and a wrong one fails without appearing in the error.
    let w = world().await;
    let _env = env(&[
        ("AZURE_AUTHORITY_HOST", w.entra.authority()),
        ("MIRROR_TEST_CLIENT_SECRET", w.entra.client_secret.clone()),
        ("MIRROR_TEST_WRONG_SECRET", "not-the-right-secret".into()),
    ]);
    let sign_in = SignIn {
        credential: CredentialKind::ClientSecret,
        tenant_id: Some(w.entra.tenant.clone()),
        client_id: Some(w.entra.client_id.clone()),
        client_secret_env: Some("MIRROR_TEST_CLIENT_SECRET".into()),
    };
    let cred = build_credential(&sign_in, Some(w.tls.client())).unwrap();
    let refresh = w.source(cred, Some(w.entra.tenant.clone())).refresh_token().await.unwrap();
    assert_eq!(refresh_sub(&refresh), w.entra.client_id);
    assert_eq!(w.last_exchanged_entra().via, "client_secret");

    let wrong = SignIn { client_secret_env: Some("MIRROR_TEST_WRONG_SECRET".into()), ..sign_in.clone() };
    let cred = build_credential(&wrong, Some(w.tls.client())).unwrap();
    let msg = w.source(cred, None).refresh_token().await.unwrap_err().to_string();
    assert!(msg.contains("client-secret") && !msg.contains("not-the-right-secret"), "{msg}");

    let unset = SignIn { client_secret_env: Some("MIRROR_TEST_UNSET_SECRET".into()), ..sign_in };
    let msg = build_credential(&unset, None).unwrap_err().to_string();
    assert!(msg.contains("MIRROR_TEST_UNSET_SECRET"), "{msg}");
}

/// A credential that asks the fake Entra directly and counts the calls, for the renewal tests
/// (they test our cache, not azure_identity, and need no process environment).
#[derive(Debug)]
struct CountingCredential {
    entra: Arc<FakeEntra>,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl TokenCredential for CountingCredential {
    async fn get_token(&self, scopes: &[&str], _: Option<TokenRequestOptions<'_>>) -> azure_core::Result<AccessToken> {
        assert_eq!(scopes, [ACR_SCOPE]);
        self.calls.fetch_add(1, Ordering::SeqCst);
        let t = self.entra.mint(ACR_AUDIENCE, "renewing-identity", "test");
        Ok(AccessToken::new(
            Secret::new(t),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn refresh_token_is_cached_renewed_near_expiry_and_after_invalidate() {
    // Checks AzureTokenSource: a 3 h refresh token is reused; invalidate() forces a new Entra
    // token and exchange; a token with less than the renew margin left is renewed before use, so
    // the source never hands out one the stand-in would refuse.
    let w = world().await;
    let counting = Arc::new(CountingCredential { entra: w.entra.clone(), calls: AtomicUsize::new(0) });
    let cred = EntraCredential::from_token_credential(CredentialKind::ManagedIdentity, counting.clone());
    let source = w.source(cred, None);
    let exchanges = || w.acr.state.exchanges.load(Ordering::SeqCst);

    let first = source.refresh_token().await.unwrap();
    let again = source.refresh_token().await.unwrap();
    assert_eq!(first, again);
    assert_eq!((exchanges(), counting.calls.load(Ordering::SeqCst)), (1, 1));

    source.invalidate();
    let after_401 = source.refresh_token().await.unwrap();
    assert_ne!(after_401, first);
    assert_eq!((exchanges(), counting.calls.load(Ordering::SeqCst)), (2, 2));

    // Refresh tokens that live less than the 5-minute margin are renewed on every use.
    *w.acr.state.refresh_lifetime.lock().unwrap() = 120;
    source.invalidate();
    let short = source.refresh_token().await.unwrap();
    let renewed = source.refresh_token().await.unwrap();
    assert_ne!(short, renewed);
    assert_eq!(exchanges(), 4);

    // With a smaller margin the same short token is kept.
    let source = w
        .source(EntraCredential::from_token_credential(CredentialKind::ManagedIdentity, counting.clone()), None)
        .with_renew_margin(Duration::from_secs(30));
    let a = source.refresh_token().await.unwrap();
    assert_eq!(a, source.refresh_token().await.unwrap());
}

#[tokio::test]
async fn access_tokens_for_several_scopes_come_from_the_refresh_token() {
    // Checks the stand-in's /oauth2/token the way the registry token layer will call it: one
    // request with repeated scope fields gets one access token covering all of them, and a
    // refresh token that has expired is refused with 401.
    let w = world().await;
    let counting = Arc::new(CountingCredential { entra: w.entra.clone(), calls: AtomicUsize::new(0) });
    let source = w.source(EntraCredential::from_token_credential(CredentialKind::ManagedIdentity, counting), None);
    let refresh = source.refresh_token().await.unwrap();
    let http = support_azure::http();
    let scopes = [
        "repository:aks/pause:pull,push",
        "repository:oss/kubernetes/pause:pull",
        "registry:catalog:*",
        "repository:aks/pause:metadata_read",
    ];
    let mut form = vec![("grant_type", "refresh_token"), ("service", SERVICE), ("refresh_token", refresh.as_str())];
    form.extend(scopes.iter().map(|s| ("scope", *s)));
    let r = http.post(w.acr.realm()).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    let grants = w.acr.state.access_grants.lock().unwrap().clone();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].0, "renewing-identity");
    let want: Vec<Scope> = scopes.iter().map(|s| Scope::parse(s).unwrap()).collect();
    assert_eq!(grants[0].1, want);

    *w.acr.state.refresh_lifetime.lock().unwrap() = -10; // exp already passed
    let form_exp = {
        let entra_token = w.entra.mint(ACR_AUDIENCE, "expiring", "test");
        let url = acr_mirror::azure::exchange_url_from_realm(&w.acr.realm()).unwrap();
        exchange_for_refresh_token(&http, &url, SERVICE, None, &entra_token).await.unwrap()
    };
    let r = http
        .post(w.acr.realm())
        .form(&[
            ("grant_type", "refresh_token"),
            ("service", SERVICE),
            ("scope", scopes[0]),
            ("refresh_token", &form_exp.token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn exchange_refusals_name_the_status_and_acr_code_but_not_the_token() {
    // Checks exchange_for_refresh_token's errors: a token Entra did not issue is a 401
    // UNAUTHORIZED, a wrong service a 400; neither message contains the token sent.
    let w = world().await;
    let http = support_azure::http();
    let url = acr_mirror::azure::exchange_url_from_realm(&w.acr.realm()).unwrap();
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJ4In0.forged-signature";
    let err = exchange_for_refresh_token(&http, &url, SERVICE, None, forged).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AzureAuthError::ExchangeRefused { status: 401, .. }), "{msg}");
    assert!(msg.contains("UNAUTHORIZED") && !msg.contains("forged-signature"), "{msg}");

    let good = w.entra.mint(ACR_AUDIENCE, "someone", "test");
    let err = exchange_for_refresh_token(&http, &url, "other.azurecr.io", None, &good).await.unwrap_err();
    assert!(matches!(err, AzureAuthError::ExchangeRefused { status: 400, .. }), "{err}");
    assert!(!err.to_string().contains(&good));
}
