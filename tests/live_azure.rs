//! Opt-in: the behaviours our Azure stand-ins assume, checked against a real ACR and Entra tenant.
//!
//! Everything else about Azure is tested on loopback against stand-ins built from our reading of
//! ACR's documentation and issues (`tests/support_azure/`). This suite runs the same checks against
//! the real services, so a user with a subscription can confirm the stand-ins in one command
//! (docs/azure.md, "Checking the stand-ins against real Azure"). Every test is marked ignored,
//! so the default run (and CI) never leaves loopback; `cargo test --test live_azure -- --ignored`
//! runs them. Each reads its variables first and, when `MIRROR_LIVE_ACR` or a variable the check
//! needs is unset, fails naming it, before any network access: asked to run, a check never
//! passes without having run.
//!
//! Variables:
//! - `MIRROR_LIVE_ACR`: the login server, `myacr.azurecr.io`.
//! - `MIRROR_LIVE_CACHE_IMAGE`: `repository:tag` under a cache rule, e.g.
//!   `aks-managed-repository/oss/kubernetes/pause:3.10` (pull rights needed).
//! - `MIRROR_LIVE_PUSH_REPO`: a repository outside every cache rule where the identity may push.
//! - `MIRROR_LIVE_CREDENTIAL` (default `azure-cli`), `MIRROR_LIVE_TENANT_ID`,
//!   `MIRROR_LIVE_CLIENT_ID`, and `MIRROR_LIVE_CLIENT_SECRET` for `client-secret`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use acr_mirror::azure::identity::jwt_expiry;
use acr_mirror::azure::{AzureTokenSource, build_credential};
use acr_mirror::config::Config;
use acr_mirror::digest::Digest;
use acr_mirror::manifest::{Descriptor, is_index};
use acr_mirror::reference::Reference;
use acr_mirror::registry::uploads::Started;
use acr_mirror::registry::{Registries, Registry};
use acr_mirror::transfer::is_cache_rule_refusal;
use acr_mirror::transfer::warm::recheck_origin;
use futures::TryStreamExt;
use rand::RngCore;

/// The variables of one run, read before anything touches the network.
struct Live {
    acr: String,
    config: Config,
}

/// A line on the real stderr: the test harness captures `eprintln!` of passing tests, and a
/// finding about the real services must be seen without `--nocapture`.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "live_azure: {line}");
}

/// The environment variable `name`, if set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The live settings; panics naming every variable of `MIRROR_LIVE_ACR` and `needs` that is unset
/// (the test was asked to run, so a missing setting is a failure, not a skip).
fn live(check: &str, needs: &[&str]) -> Live {
    let missing: Vec<&str> = ["MIRROR_LIVE_ACR"].iter().chain(needs).copied().filter(|n| var(n).is_none()).collect();
    assert!(
        missing.is_empty(),
        "{check}: {} not set; this check runs against a real ACR and needs them (docs/azure.md, \
         \"Checking the stand-ins against real Azure\")",
        missing.join(", ")
    );
    let acr = var("MIRROR_LIVE_ACR").unwrap();
    let mut auth =
        format!("{{type: azure, credential: {}", var("MIRROR_LIVE_CREDENTIAL").as_deref().unwrap_or("azure-cli"));
    for (key, name) in [("tenantId", "MIRROR_LIVE_TENANT_ID"), ("clientId", "MIRROR_LIVE_CLIENT_ID")] {
        if let Some(v) = var(name) {
            auth.push_str(&format!(", {key}: '{v}'"));
        }
    }
    if var("MIRROR_LIVE_CLIENT_SECRET").is_some() {
        auth.push_str(", clientSecretEnv: MIRROR_LIVE_CLIENT_SECRET");
    }
    let yaml = format!("registries:\n  - host: {acr}\n    auth: {auth}}}\n");
    let config =
        Config::parse(&yaml, Path::new("live_azure.yaml")).expect("the MIRROR_LIVE_* variables make a valid config");
    Live { acr, config }
}

impl Live {
    fn registry(&self) -> Arc<Registry> {
        Registries::from_config(&self.config).unwrap().get(&self.acr).unwrap()
    }

    /// `MIRROR_LIVE_CACHE_IMAGE` split into repository and tag.
    fn cache_image(&self) -> (String, String) {
        let image = var("MIRROR_LIVE_CACHE_IMAGE").unwrap();
        let (repo, tag) = image.rsplit_once(':').expect("MIRROR_LIVE_CACHE_IMAGE is repository:tag");
        (repo.to_string(), tag.to_string())
    }

    /// An ACR refresh token for the configured identity, through the crate's own sign-in.
    async fn refresh_token(&self) -> String {
        let sign_in = self.config.registries[0].auth.as_ref().and_then(|a| a.azure_sign_in()).unwrap();
        let credential = build_credential(&sign_in, None).unwrap();
        let url = url::Url::parse(&format!("https://{}", self.acr)).unwrap();
        let source = AzureTokenSource::for_registry(credential, http(), &url, sign_in.tenant_id.clone()).unwrap();
        source.refresh_token().await.unwrap()
    }
}

/// A plain client for the raw checks (not the crate's), with no redirects followed.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The manifests of an image: the top one, and for an index each child's manifest by digest.
async fn image_manifests(reg: &Registry, repo: &str, tag: &str) -> Vec<acr_mirror::manifest::Manifest> {
    let top = reg.get_manifest(repo, tag).await.unwrap();
    let mut all = Vec::new();
    if is_index(&top.media_type) {
        for child in &top.parsed.manifests {
            all.push(reg.get_manifest(repo, child.digest.as_str()).await.unwrap());
        }
    }
    all.insert(0, top);
    all
}

/// Confirms the warm re-check's model (tests/support_azure/acr_api.rs adds the header to the
/// first HEADs): a manifest the cache still serves from upstream carries
/// `X-Azure-Origin: upstream`, any other value is unknown to us, and after a full pull
/// (top manifest and every child, by digest) the header goes within two minutes.
#[tokio::test]
#[ignore = "live Azure: set MIRROR_LIVE_ACR and the check's MIRROR_LIVE_* variables, run with --ignored (docs/azure.md)"]
async fn cached_manifests_say_x_azure_origin_upstream_until_imported() {
    let live = live("X-Azure-Origin", &["MIRROR_LIVE_CACHE_IMAGE"]);
    let reg = live.registry();
    let (repo, tag) = live.cache_image();
    let before = reg.manifest_origin(&repo, &tag).await.unwrap();
    say(&format!("X-Azure-Origin before the pull: {before:?} (None: the tag was imported already)"));
    assert!(matches!(before.as_deref(), None | Some("upstream")), "an origin we do not know: {before:?}");
    let digests: Vec<Digest> = image_manifests(&reg, &repo, &tag).await.into_iter().map(|m| m.digest).collect();
    let reference = Reference::parse(&format!("{}/{repo}:{tag}", live.acr)).unwrap();
    recheck_origin(&reg, &reference, &digests, Duration::from_secs(120)).await.unwrap();
}

/// Confirms TransferError::CacheRule's trigger (is_cache_rule_refusal: 405, or 403 with DENIED
/// or UNSUPPORTED on an upload or manifest PUT): a blob push into the cache rule's repository
/// is refused at the POST or at the PUT, and the answer is one the crate recognises.
#[tokio::test]
#[ignore = "live Azure: set MIRROR_LIVE_ACR and the check's MIRROR_LIVE_* variables, run with --ignored (docs/azure.md)"]
async fn a_push_under_a_cache_rule_is_refused_the_way_the_stand_in_refuses_it() {
    let live = live("push under a cache rule", &["MIRROR_LIVE_CACHE_IMAGE"]);
    let reg = live.registry();
    let (repo, _) = live.cache_image();
    let bytes = b"acr-mirror live check: this blob must be refused".to_vec();
    let digest = Digest::of(&bytes);
    let refusal = match reg.start_upload(&repo, None).await {
        Err(e) => e,
        Ok(Started::Mounted) => panic!("a POST without a mount cannot be answered as a mount"),
        Ok(Started::Session(session)) => {
            let size = bytes.len() as u64;
            match reg.put_whole(&session, &digest, size, reqwest::Body::from(bytes)).await {
                Err(e) => e,
                Ok(()) => panic!("ACR accepted a blob push into {repo}: the cache-rule stand-in is wrong"),
            }
        }
    };
    say(&format!("push under a cache rule answered: {refusal}"));
    assert!(is_cache_rule_refusal(&refusal), "not recognised as a cache-rule refusal: {refusal}");
}

/// Confirms the plan's fallback (acr_pages: a 401/403 means "no ACR API", list with /v2/) and
/// the token stand-in (acr_standin.rs): /oauth2/token answers a refresh-token grant with an
/// access token; one scoped to `pull` only is refused by /acr/v1/{repo}/_manifests with 401
/// or 403, yet lists /v2/{repo}/tags/list. Also prints the refresh token's lifetime (the
/// stand-in gives 3 h) and whether the answer carried `expires_in` (the stand-in's does not).
#[tokio::test]
#[ignore = "live Azure: set MIRROR_LIVE_ACR and the check's MIRROR_LIVE_* variables, run with --ignored (docs/azure.md)"]
async fn a_token_without_metadata_read_is_refused_by_the_listing_api_but_lists_v2_tags() {
    let live = live("listing without metadata_read", &["MIRROR_LIVE_CACHE_IMAGE"]);
    let (repo, _) = live.cache_image();
    let refresh = live.refresh_token().await;
    let lifetime = jwt_expiry(&refresh).and_then(|t| t.duration_since(std::time::SystemTime::now()).ok());
    say(&format!("ACR refresh token valid for {lifetime:?}"));
    assert!(
        lifetime.is_some_and(|l| l > Duration::from_secs(10 * 60)),
        "renewal needs more than its margin: {lifetime:?}"
    );

    let scope = format!("repository:{repo}:pull");
    let form =
        [("grant_type", "refresh_token"), ("service", &live.acr), ("scope", &scope), ("refresh_token", &refresh)];
    let answer = http().post(format!("https://{}/oauth2/token", live.acr)).form(&form).send().await.unwrap();
    assert_eq!(answer.status(), 200, "refresh-token grant refused");
    let body: serde_json::Value = answer.json().await.unwrap();
    say(&format!("/oauth2/token answer has expires_in: {}", body.get("expires_in").is_some()));
    let access = body["access_token"].as_str().expect("access_token in the answer").to_string();

    let listing =
        http().get(format!("https://{}/acr/v1/{repo}/_manifests", live.acr)).bearer_auth(&access).send().await.unwrap();
    say(&format!("_manifests with a pull-only token: HTTP {}", listing.status()));
    assert!(matches!(listing.status().as_u16(), 401 | 403), "{}", listing.status());
    let tags =
        http().get(format!("https://{}/v2/{repo}/tags/list", live.acr)).bearer_auth(&access).send().await.unwrap();
    assert_eq!(tags.status(), 200, "the /v2/ fallback listing needs more than pull");
}

/// Reads a blob from `offset` on, through the crate's client.
async fn read_blob(reg: &Registry, repo: &str, digest: &Digest, offset: u64) -> Vec<u8> {
    let chunks: Vec<bytes::Bytes> = reg.get_blob(repo, digest, offset).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

/// Confirms resumed blob reads (get_blob with an offset, the docker-registry tests' Range):
/// ACR redirects blob GETs to its storage, and a read from the middle of the largest layer
/// returns exactly the rest of the blob whose whole read matches the digest.
#[tokio::test]
#[ignore = "live Azure: set MIRROR_LIVE_ACR and the check's MIRROR_LIVE_* variables, run with --ignored (docs/azure.md)"]
async fn blob_reads_resume_from_an_offset_through_the_storage_redirect() {
    let live = live("ranged blob read", &["MIRROR_LIVE_CACHE_IMAGE"]);
    let reg = live.registry();
    let (repo, tag) = live.cache_image();
    let manifests = image_manifests(&reg, &repo, &tag).await;
    let layer: &Descriptor =
        manifests.iter().flat_map(|m| &m.parsed.layers).max_by_key(|d| d.size).expect("the image has a layer");
    let whole = read_blob(&reg, &repo, &layer.digest, 0).await;
    assert_eq!(Digest::of(&whole), layer.digest);
    let offset = whole.len() as u64 / 2;
    let rest = read_blob(&reg, &repo, &layer.digest, offset).await;
    assert!(rest == whole[offset as usize..], "the read from {offset} is not the blob's tail");
}

/// Confirms chunked-upload resume (upload_status after a failed PATCH): after one 1 MiB PATCH
/// the session's status GET reports exactly those bytes (`Range: 0-N`), the rest goes on from
/// there and the finished blob has the right digest and size. Leaves one unreferenced 1.5 MiB
/// blob in MIRROR_LIVE_PUSH_REPO.
#[tokio::test]
#[ignore = "live Azure: set MIRROR_LIVE_ACR and the check's MIRROR_LIVE_* variables, run with --ignored (docs/azure.md)"]
async fn an_upload_resumes_from_what_the_session_says_it_holds() {
    let live = live("upload resume", &["MIRROR_LIVE_PUSH_REPO"]);
    let reg = live.registry();
    let repo = var("MIRROR_LIVE_PUSH_REPO").unwrap();
    let mut bytes = vec![0u8; 3 << 19];
    rand::rng().fill_bytes(&mut bytes);
    let digest = Digest::of(&bytes);
    let Started::Session(session) = reg.start_upload(&repo, None).await.unwrap() else { panic!("no mount asked") };
    let first = 1u64 << 20;
    let session = reg.patch_chunk(&session, 0, first, bytes[..first as usize].to_vec().into()).await.unwrap();
    let (held, session) = reg.upload_status(&session).await.unwrap();
    assert_eq!(held, first, "the session's Range after one chunk");
    let rest = bytes[held as usize..].to_vec();
    let session = reg.patch_chunk(&session, held, rest.len() as u64, rest.into()).await.unwrap();
    reg.complete_upload(&session, &digest).await.unwrap();
    assert_eq!(reg.head_blob(&repo, &digest).await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(Digest::of(&read_blob(&reg, &repo, &digest, 0).await), digest);
}
