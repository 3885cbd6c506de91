//! The transport against a hostile or broken registry (issue #9), one misbehaviour per test:
//! credentials stay on their registry, every read is bounded, silent and stalled registries
//! fail in the configured (short) time, transient refusals at the start of a run are waited
//! out, and nothing reaches the target when the copy cannot be trusted.
//!
//! The registry client is driven as a library where that shows the rule directly, and through
//! the `mirror` binary where the question is what a run does. Registries are real
//! (`docker-registry`); the hostile front and the recorder on 127.0.0.2 are in
//! `support::hostile`.

mod support;

use std::path::Path;
use std::process::Output;

use acr_mirror::config::Config;
use acr_mirror::registry::{Registries, Registry, RegistryError};
use support::hostile::{Elsewhere, Flaky, Hostile, Mode, PASSWORD, Silent, USER};
use support::{FaultProxy, Format, Seeder, TestRegistry};

/// A config naming `hostile.test` at `url` with Basic credentials from a file in `dir`, and
/// `extra` lines for that registry (timeouts).
fn config(dir: &Path, url: &str, extra: &str) -> String {
    let pw = dir.join("password");
    std::fs::write(&pw, PASSWORD).unwrap();
    format!(
        "registries:\n  - host: hostile.test\n    endpoint: {url}\n    auth: {{type: basic, username: {USER}, passwordFile: {}}}\n{extra}",
        pw.display()
    )
}

fn registry(dir: &Path, url: &str, extra: &str) -> std::sync::Arc<Registry> {
    let cfg = Config::parse(&config(dir, url, extra), Path::new("mirror.yaml")).unwrap();
    Registries::from_config(&cfg).unwrap().get("hostile.test").unwrap()
}

/// Runs `mirror copy SRC DST` with a config holding an open source `src.test` and `target`.
async fn copy(dir: &Path, source_url: &str, target_url: &str, extra: &str, src: &str, dst: &str) -> Output {
    mirror(dir, source_url, target_url, extra, "", &["copy", src, dst]).await
}

/// Runs `mirror ARGS…` with a config holding an open source `src.test`, `hostile.test` at
/// `target_url` (with `extra` keys) and `rest` (top-level keys).
async fn mirror(dir: &Path, source_url: &str, target_url: &str, extra: &str, rest: &str, args: &[&str]) -> Output {
    let cfg = format!(
        "{}  - host: src.test\n    endpoint: {source_url}\n    auth: {{type: anonymous}}\n{rest}",
        config(dir, target_url, extra)
    );
    let path = dir.join("mirror.yaml");
    std::fs::write(&path, cfg).unwrap();
    let docker = dir.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
        .arg("-c")
        .arg(&path)
        .args(args)
        .env("DOCKER_CONFIG", &docker)
        .env("MIRROR_LOG", "info")
        .output()
        .await
        .unwrap()
}

use support::output_text as text;

/// Upload `Location`s on another host get the blob without the target's credentials, and the
/// copy fails without any tag in the target.
#[tokio::test]
async fn an_upload_location_on_another_host_gets_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, elsewhere) =
        (TestRegistry::anonymous().await, TestRegistry::anonymous().await, Elsewhere::start().await);
    Seeder::new(&source.url(), 1).push_random_image("app", "1", Format::Oci, &[3000]).await;
    let hostile = Hostile::start(Mode::UploadLocationElsewhere, &target.url(), &elsewhere).await;
    let out = copy(dir.path(), &source.url(), &hostile.url(), "", "src.test/app:1", "hostile.test/app:1").await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!elsewhere.seen().is_empty(), "the upload went to the other host: {}", text(&out));
    assert!(elsewhere.with_credentials().is_empty(), "{:?}", elsewhere.seen());
    assert!(support::images::manifest_digest(&target.url(), "app", "1", None).await.is_none(), "nothing committed");
}

/// A tag list's or catalog's next page on another host is asked of the registry itself (path
/// and query only); the other host sees nothing.
#[tokio::test]
async fn link_pages_stay_on_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, elsewhere) = (TestRegistry::anonymous().await, Elsewhere::start().await);
    let hostile = Hostile::start(Mode::LinkElsewhere, &upstream.url(), &elsewhere).await;
    let r = registry(dir.path(), &hostile.url(), "");
    assert_eq!(r.list_tags("app").await.unwrap(), ["page1", "page2"]);
    assert_eq!(r.list_repositories().await.unwrap(), ["page1", "page2"]);
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
    assert!(hostile.seen().iter().any(|s| s.path.contains("last=page1") && s.authorization.is_some()));
}

/// A challenge naming a plain-http realm on another host gets no password: the request fails
/// naming the rule, and the other host never sees the credentials.
#[tokio::test]
async fn a_realm_on_another_host_over_http_gets_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, elsewhere) = (TestRegistry::anonymous().await, Elsewhere::start().await);
    let hostile = Hostile::start(Mode::RealmElsewhere, &upstream.url(), &elsewhere).await;
    let r = registry(dir.path(), &hostile.url(), "");
    let e = r.list_tags("app").await.unwrap_err().to_string();
    assert!(e.contains("not sent"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
    assert!(elsewhere.with_credentials().is_empty(), "{:?}", elsewhere.seen());
}

/// An endless error body is read to 1 MiB at most, and the message is short and says it was cut.
#[tokio::test]
async fn a_huge_error_body_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, elsewhere) = (TestRegistry::anonymous().await, Elsewhere::start().await);
    let hostile = Hostile::start(Mode::HugeErrorBody, &upstream.url(), &elsewhere).await;
    let e = registry(dir.path(), &hostile.url(), "").get_manifest("app", "1").await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let e = e.to_string();
    assert!(e.len() < 2000 && e.contains("cut"), "{} chars: {}", e.len(), &e[..e.len().min(600)]);
}

/// An endless token answer is refused at 1 MiB with a message saying so.
#[tokio::test]
async fn a_huge_token_answer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, elsewhere) = (TestRegistry::anonymous().await, Elsewhere::start().await);
    let hostile = Hostile::start(Mode::HugeTokenBody, &upstream.url(), &elsewhere).await;
    let e = registry(dir.path(), &hostile.url(), "").list_tags("app").await.unwrap_err();
    assert!(matches!(e, RegistryError::Token { .. }) && e.to_string().contains("1 MiB"), "{e}");
}

/// An endless tag list is refused at the page limit instead of filling memory.
#[tokio::test]
async fn a_huge_tag_list_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, elsewhere) = (TestRegistry::anonymous().await, Elsewhere::start().await);
    let hostile = Hostile::start(Mode::HugeTagList, &upstream.url(), &elsewhere).await;
    let e = registry(dir.path(), &hostile.url(), "").list_tags("app").await.unwrap_err().to_string();
    assert!(e.contains("too large") && e.contains("MiB"), "{e}");
}

/// A source blob that never ends fails the copy (it is read only to its declared size, and
/// that does not match the digest), and nothing is committed to the target.
#[tokio::test]
async fn an_endless_blob_fails_the_copy_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, elsewhere) =
        (TestRegistry::anonymous().await, TestRegistry::anonymous().await, Elsewhere::start().await);
    Seeder::new(&source.url(), 2).push_random_image("app", "1", Format::Oci, &[5000]).await;
    let hostile_source = Hostile::start(Mode::EndlessBlob, &source.url(), &elsewhere).await;
    // Here the hostile registry is the source: swap the roles in the config.
    let cfg_dir = dir.path();
    let out = copy(cfg_dir, &target.url(), &hostile_source.url(), "", "hostile.test/app:1", "src.test/app:1").await;
    assert!(!out.status.success(), "{}", text(&out));
    let seen = hostile_source.seen();
    assert!(
        seen.iter().any(|s| s.method == "GET" && s.path.contains("/blobs/")),
        "the endless blob was read: {seen:?}"
    );
    assert!(support::images::manifest_digest(&target.url(), "app", "1", None).await.is_none(), "nothing committed");
}

/// A registry that accepts connections and never answers fails within the configured response
/// timeout (one retry), naming the registry; later requests fail at once.
#[tokio::test]
async fn a_silent_registry_fails_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let silent = Silent::start().await;
    let r = registry(dir.path(), &silent.url(), "    responseTimeoutSeconds: 1\n");
    let e = r.list_tags("app").await.unwrap_err();
    assert!(matches!(e, RegistryError::Timeout { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("hostile.test") && text.contains("responseTimeoutSeconds"), "{text}");
    let again = r.list_tags("other").await.unwrap_err().to_string();
    assert!(again.contains("given up for this run"), "{again}");
}

/// `mirror plan` against a target that never answers ends (it used to hang past 300 s) with
/// an error naming the registry and the setting to change.
#[tokio::test]
async fn plan_against_a_silent_target_ends_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = TestRegistry::anonymous().await;
    Seeder::new(&source.url(), 6).push_random_image("app", "1", Format::Oci, &[100]).await;
    let silent = Silent::start().await;
    let rest = "target: hostile.test\nmappings:\n  - source: \"*\"\n    target: mirror\n    mode: copy\nimages:\n  - src.test/app:1\n";
    let timeouts = "    responseTimeoutSeconds: 1\n    connectTimeoutSeconds: 1\n";
    let out = mirror(dir.path(), &source.url(), &silent.url(), timeouts, rest, &["plan"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hostile.test") && stderr.contains("responseTimeoutSeconds"), "{}", text(&out));
}

/// A body that drips slower than the idle timeout fails with a message naming the setting.
#[tokio::test]
async fn a_slow_drip_fails_on_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, elsewhere) = (TestRegistry::anonymous().await, Elsewhere::start().await);
    let hostile = Hostile::start(Mode::SlowDrip(std::time::Duration::from_secs(3)), &upstream.url(), &elsewhere).await;
    let r = registry(dir.path(), &hostile.url(), "    idleTimeoutSeconds: 1\n");
    let e = r.get_manifest("app", "1").await.unwrap_err();
    assert!(matches!(e, RegistryError::Body { .. }) && e.to_string().contains("idleTimeoutSeconds"), "{e}");
}

/// A body that drips just fast enough never to be idle is still bounded: a manifest (read
/// whole) must arrive within the response timeout of its headers.
#[tokio::test]
async fn a_fast_drip_fails_on_the_response_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, elsewhere) = (TestRegistry::anonymous().await, Elsewhere::start().await);
    let hostile =
        Hostile::start(Mode::SlowDrip(std::time::Duration::from_millis(200)), &upstream.url(), &elsewhere).await;
    let r = registry(dir.path(), &hostile.url(), "    idleTimeoutSeconds: 1\n    responseTimeoutSeconds: 2\n");
    let e = r.get_manifest("app", "1").await.unwrap_err();
    assert!(matches!(e, RegistryError::Body { .. }) && e.to_string().contains("responseTimeoutSeconds"), "{e}");
}

/// Escape sequences, line breaks and bidi overrides in a registry's error reach neither the
/// error text nor the output of a run.
#[tokio::test]
async fn control_characters_from_a_registry_are_made_visible() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, elsewhere) = (TestRegistry::anonymous().await, Elsewhere::start().await);
    let hostile = Hostile::start(Mode::ControlChars, &upstream.url(), &elsewhere).await;
    let e = registry(dir.path(), &hostile.url(), "").get_manifest("app", "1").await.unwrap_err().to_string();
    assert!(!e.chars().any(|c| c.is_control() || c == '\u{202e}'), "{e:?}");
    assert!(e.contains("forged log line"), "{e}");
    let out = copy(dir.path(), &upstream.url(), &hostile.url(), "", "hostile.test/app:1", "src.test/app:1").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains('\u{1b}') && !stderr.lines().any(|l| l.starts_with("INFO forged")), "{stderr:?}");
}

/// `expires_in` missing, zero, negative or not a number is the protocol's default, not a failure.
#[tokio::test]
async fn odd_token_lifetimes_are_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = TestRegistry::anonymous().await;
    Seeder::new(&upstream.url(), 3).push_random_image("app", "1", Format::Oci, &[100]).await;
    let elsewhere = Elsewhere::start().await;
    for odd in [serde_json::json!(-5), serde_json::json!(0), serde_json::json!(null), serde_json::json!("soon")] {
        let hostile = Hostile::start(Mode::OddExpiresIn(odd.clone()), &upstream.url(), &elsewhere).await;
        let tags = registry(dir.path(), &hostile.url(), "").list_tags("app").await;
        assert_eq!(tags.unwrap_or_else(|e| panic!("expires_in {odd}: {e}")), ["1"]);
        assert!(hostile.seen().iter().any(|s| s.path.starts_with("/token")), "expires_in {odd} was never served");
    }
}

/// A single 429 with `Retry-After: 2` on a run's very first request, and 503s on the first
/// requests, are waited out: the copy succeeds and the image is complete in the target.
#[tokio::test]
async fn throttling_and_unavailability_at_the_start_are_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (TestRegistry::anonymous().await, TestRegistry::anonymous().await);
    let image = Seeder::new(&source.url(), 4).push_random_image("app", "1", Format::Oci, &[2000]).await;
    let front = FaultProxy::start(&target.url()).await;
    front.fail_with("GET", "/v2/", 1, 429, Some(2));
    front.fail_503("HEAD", "/v2/", 3);
    let src_front = FaultProxy::start(&source.url()).await;
    src_front.fail_503("GET", "/v2/", 3);
    let out = copy(dir.path(), &src_front.url(), &front.url(), "", "src.test/app:1", "hostile.test/app:1").await;
    assert!(out.status.success(), "{}", text(&out));
    let met = (front.faulted("GET", "/v2/"), front.faulted("HEAD", "/v2/"), src_front.faulted("GET", "/v2/"));
    assert_eq!(met, (1, 3, 3), "every 429 and 503 was met");
    support::images::assert_image_present(&target.url(), "app", &image, None).await;
}

/// Connections reset by a registry that is restarting are retried, the first request included.
#[tokio::test]
async fn reset_connections_at_the_start_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = TestRegistry::anonymous().await;
    Seeder::new(&upstream.url(), 5).push_random_image("app", "1", Format::Oci, &[100]).await;
    let flaky = Flaky::start(upstream.host().parse().unwrap(), 2).await;
    let r = registry(dir.path(), &flaky.url(), "");
    assert_eq!(r.list_tags("app").await.unwrap(), ["1"]);
    assert_eq!(flaky.resets(), 2, "both resets were met");
}
