//! Entra ID → ACR → a real registry, end to end on loopback.
//!
//! A real `docker-registry` in `auth: token` mode sends clients to our ACR stand-in's
//! `/oauth2/token`; the stand-in mints its access tokens with the signer of `TokenService`, whose
//! certificate the registry trusts. `mirror` signs in through azure_identity's real Azure CLI
//! credential (a stand-in `az` on PATH prints an Entra token the stand-in Entra signed), exchanges
//! it at `/oauth2/exchange`, and asks `/oauth2/token` for access tokens. The copies are checked
//! with skopeo and oci-client, not with our own client.
//!
//! Also here: access-token renewal when `expires_in` runs out, one renewal after a 401 in the
//! middle of a run, repository-scoped Basic tokens, and the refresh-token form `docker login`
//! stores (user `00000000-0000-0000-0000-000000000000`).

mod support;
mod support_azure;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use acr_mirror::config::Config;
use acr_mirror::registry::Registries;
use support::images::{SkopeoAuth, oci_pull_manifest, skopeo_inspect_digest};
use support::{Format, Seeder, TestRegistry, TokenService, Users};
use support_azure::acr_standin::{AcrStandIn, MintAccess, Scope};
use support_azure::entra::{ACR_AUDIENCE, FakeEntra};

/// The logical name of the target registry in configs (its endpoint is the loopback registry).
const ACR: &str = "mirrortest.azurecr.io";
const MCR: &str = "mcr.microsoft.com";

/// A stand-in `az` that prints an Entra token for ACR's audience, in a folder of its own. Every
/// fake Entra signs with the same test key, so a token printed once is good for every test.
fn az_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let entra = FakeEntra::new();
        let token = entra.mint(ACR_AUDIENCE, "cli-user", "cli");
        let script = format!(
            "#!/bin/sh\nif [ \"$1 $2\" != 'account get-access-token' ]; then echo \"unexpected: $*\" >&2; exit 2; fi\n\
             cat <<'JSON'\n{{\"accessToken\": \"{token}\", \"expiresOn\": \"2099-01-01 00:00:00.000000\", \
             \"expires_on\": 4070908800, \"subscription\": \"00000000-0000-0000-0000-00000000cafe\", \
             \"tenant\": \"{}\", \"tokenType\": \"Bearer\"}}\nJSON\n",
            entra.tenant
        );
        let az = dir.path().join("az");
        std::fs::write(&az, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    })
    .path()
}

fn path_with_az() -> String {
    format!("{}:{}", az_dir().display(), std::env::var("PATH").unwrap_or_default())
}

/// For the tests that sign in inside this process: puts the stand-in `az` first on this process's
/// PATH, once. Nothing else in this test binary reads PATH.
fn az_on_process_path() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = path_with_az();
        // SAFETY: done once, before any credential runs `az`; no test here reads PATH otherwise.
        unsafe { std::env::set_var("PATH", path) };
    });
}

/// The ACR stand-in signing with `tokens`, and a real registry sending clients to it.
struct World {
    tokens: TokenService,
    acr: AcrStandIn,
    target: TestRegistry,
    source: TestRegistry,
}

async fn world() -> World {
    let tokens = TokenService::start(Users::new().anonymous(false)).await;
    let signer = tokens.clone();
    let mint: MintAccess = Arc::new(move |sub: &str, scopes: &[Scope]| {
        let access: Vec<_> = scopes.iter().map(|s| (s.kind.clone(), s.name.clone(), s.actions.clone())).collect();
        signer.sign(sub, &access)
    });
    // The stand-in's service must be the name the registry checks as `aud`.
    let acr = AcrStandIn::start(tokens.service(), FakeEntra::new(), mint).await;
    let target = TestRegistry::with_token_realm(&tokens, acr.realm().as_str()).await;
    let source = TestRegistry::anonymous().await;
    World { tokens, acr, target, source }
}

impl World {
    fn config(&self, auth: &str) -> String {
        format!(
            "registries:\n  - host: {MCR}\n    endpoint: {}\n    auth: {{type: anonymous}}\n  - host: {ACR}\n    endpoint: {}\n    auth: {auth}\n",
            self.source.url(),
            self.target.url()
        )
    }

    fn registries(&self, auth: &str) -> Registries {
        let cfg = Config::parse(&self.config(auth), Path::new("mirror.yaml")).unwrap();
        Registries::from_config(&cfg).unwrap().with_entra(Arc::new(acr_mirror::azure::EntraSignIn))
    }

    /// Runs `mirror -c CONFIG ARGS…` with the stand-in `az` on the child's PATH only.
    async fn mirror(&self, auth: &str, args: &[&str]) -> Output {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("mirror.yaml");
        std::fs::write(&cfg, self.config(auth)).unwrap();
        // tokio's Command: a blocking wait would stall the stand-ins served on this runtime.
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .env("PATH", path_with_az())
            .env("MIRROR_LOG", "info")
            .env("DOCKER_CONFIG", support::empty_docker_config())
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .env_remove("IDENTITY_ENDPOINT")
            .env_remove("MSI_ENDPOINT")
            .output()
            .await
            .unwrap()
    }

    fn grants(&self) -> Vec<(String, Vec<Scope>)> {
        self.acr.state.access_grants.lock().unwrap().clone()
    }
}

use support::output_text as text;

fn secret_file(dir: &Path, value: &str) -> PathBuf {
    let p = dir.join("secret");
    std::fs::write(&p, value).unwrap();
    p
}

#[tokio::test]
async fn mirror_copy_signs_in_with_the_azure_cli_and_pushes_through_the_acr_token_service() {
    // Checks the whole Entra path through the binary: azure_identity runs the stand-in `az`, the
    // Entra token is exchanged once for an ACR refresh token, the refresh token buys access tokens
    // with pull,push on the target repository, the real registry accepts them, and the copy is
    // byte-identical as skopeo and oci-client see it. Fails if any hop is skipped or malformed.
    let w = world().await;
    let image = Seeder::new(&w.source.url(), 1).push_multiarch("oss/pause", "3.9", Format::Oci).await;
    let out = w
        .mirror(
            "{type: azure, credential: azure-cli}",
            &["copy", &format!("{MCR}/oss/pause:3.9"), &format!("{ACR}/mirror/pause:3.9")],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.acr.state.exchanges.load(Ordering::SeqCst), 1, "one exchange for the whole run");
    let grants = w.grants();
    assert!(
        grants.iter().any(|(sub, s)| sub == "cli-user"
            && s.iter().any(|s| s.name == "mirror/pause" && s.actions.contains(&"push".to_string()))),
        "no push grant for the CLI user: {grants:?}"
    );
    // skopeo signs in as the registry's admin user, with the docker token protocol at the stand-in.
    w.acr.state.basic_users.lock().unwrap().push(("admin".into(), "admin-pw".into(), None));
    let reference = format!("{}/mirror/pause:3.9", w.target.host());
    let admin = SkopeoAuth::Creds("admin".into(), "admin-pw".into());
    assert_eq!(skopeo_inspect_digest(&reference, &admin).await, image.digest);
    let pull = w.tokens.mint(&[("mirror/pause", "pull")]);
    let (_, digest) = oci_pull_manifest(&w.target.host(), "mirror/pause", "3.9", Some(&pull)).await;
    assert_eq!(digest, image.digest.to_string());
    support::images::assert_image_present(&w.target.url(), "mirror/pause", &image, Some(&pull)).await;
}

#[tokio::test]
async fn access_tokens_are_renewed_when_expires_in_runs_out() {
    // Checks the client-side token cache: with `expires_in: 2` the access token is asked for
    // again after it ran out (the registry would still accept it for 60 s, so only the client's
    // own bookkeeping can cause the renewal), from the same refresh token (no second exchange);
    // with no `expires_in` (60 s assumed) a second request reuses the cached token.
    az_on_process_path();
    let w = world().await;
    let regs = w.registries("{type: azure, credential: azure-cli}");
    let acr = regs.get(ACR).unwrap();
    *w.acr.state.access_expires_in.lock().unwrap() = Some(2);
    acr.list_tags("renew/a").await.unwrap();
    let first = w.grants().len();
    // The one wait left in the Azure tests: the registry client keeps every access token for at
    // least 1 s (src/registry/auth.rs), so only the clock can expire it. Goes once that floor does.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    acr.list_tags("renew/a").await.unwrap();
    assert_eq!(w.grants().len(), first + 1, "the expired access token was not renewed");

    *w.acr.state.access_expires_in.lock().unwrap() = None;
    acr.list_tags("renew/b").await.unwrap();
    let before = w.grants().len();
    acr.list_tags("renew/b").await.unwrap();
    assert_eq!(w.grants().len(), before, "a token valid for 30 s more was not reused");
    assert_eq!(w.acr.state.exchanges.load(Ordering::SeqCst), 1, "access renewals need no new exchange");
}

#[tokio::test]
async fn a_401_in_the_middle_of_a_run_renews_the_sign_in_once_and_retries() {
    // Checks that when the registry refuses an access token mid-run, the client drops it, signs in
    // again (a new exchange) and retries once with a fresh token; and that a registry that keeps
    // refusing gets exactly one renewal, then a clear credentials error (no loop).
    az_on_process_path();
    let w = world().await;
    let regs = w.registries("{type: azure, credential: azure-cli}");
    let acr = regs.get(ACR).unwrap();
    acr.list_tags("midrun/a").await.unwrap();
    assert_eq!(w.acr.state.exchanges.load(Ordering::SeqCst), 1);

    w.acr.state.bad_access_tokens.store(1, Ordering::SeqCst);
    acr.list_tags("midrun/b").await.expect("the retry with a renewed token succeeds");
    assert_eq!(w.acr.state.exchanges.load(Ordering::SeqCst), 2, "the 401 renewed the refresh token once");

    w.acr.state.bad_access_tokens.store(100, Ordering::SeqCst);
    let e = acr.list_tags("midrun/c").await.unwrap_err().to_string();
    assert!(e.contains("401"), "{e}");
    assert_eq!(w.acr.state.exchanges.load(Ordering::SeqCst), 3, "exactly one renewal per refused request");
    w.acr.state.bad_access_tokens.store(0, Ordering::SeqCst);
}

#[tokio::test]
async fn repository_scoped_basic_tokens_reach_only_their_repositories() {
    // Checks ACR's token/admin-user form: Basic credentials at `GET /oauth2/token`. A token scoped
    // to `team/app` copies there, and the same token is refused (exit 1, a 401 named) for another
    // repository, as ACR's repository-scoped tokens are.
    let w = world().await;
    w.acr.state.basic_users.lock().unwrap().push(("ci-token".into(), "s3cret".into(), Some(vec!["team/app".into()])));
    Seeder::new(&w.source.url(), 2).push_random_image("app", "1", Format::Oci, &[1024]).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = secret_file(dir.path(), "s3cret");
    let auth = format!("{{type: basic, username: ci-token, passwordFile: {}}}", pw.display());
    let ok = w.mirror(&auth, &["copy", &format!("{MCR}/app:1"), &format!("{ACR}/team/app:1")]).await;
    assert!(ok.status.success(), "{}", text(&ok));
    let pull = w.tokens.mint(&[("team/app", "pull")]);
    assert!(oci_pull_manifest(&w.target.host(), "team/app", "1", Some(&pull)).await.1.starts_with("sha256:"));

    let refused = w.mirror(&auth, &["copy", &format!("{MCR}/app:1"), &format!("{ACR}/other/app:1")]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("401") && !err.contains("s3cret"), "{err}");
}

#[tokio::test]
async fn the_docker_login_refresh_token_form_is_exchanged_with_grant_type_refresh_token() {
    // Checks `docker login -u 00000000-0000-0000-0000-000000000000 -p <ACR refresh token>`, as
    // `az acr login --expose-token` hands it out: the password is used as a refresh token at
    // `POST /oauth2/token` (the stand-in refuses anything else for that token), not as Basic.
    let w = world().await;
    let entra = FakeEntra::new();
    let refresh = acr_mirror::azure::exchange_for_refresh_token(
        &support_azure::http(),
        &url::Url::parse(&format!("{}/oauth2/exchange", w.acr.url)).unwrap(),
        w.tokens.service(),
        None,
        &entra.mint(ACR_AUDIENCE, "login-user", "cli"),
    )
    .await
    .unwrap();
    Seeder::new(&w.source.url(), 3).push_random_image("tool", "2", Format::Docker, &[2048]).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = secret_file(dir.path(), &refresh.token);
    let auth =
        format!("{{type: basic, username: 00000000-0000-0000-0000-000000000000, passwordFile: {}}}", pw.display());
    let out = w.mirror(&auth, &["copy", &format!("{MCR}/tool:2"), &format!("{ACR}/tools/tool:2")]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        w.grants().iter().any(|(sub, _)| sub == "login-user"),
        "no grant_type=refresh_token grant: {:?}",
        w.grants()
    );
    assert_eq!(w.acr.state.exchanges.load(Ordering::SeqCst), 1, "only the test's own exchange");
}
