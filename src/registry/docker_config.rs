//! Credentials from the Docker config file, `$DOCKER_CONFIG/config.json` (else
//! `~/.docker/config.json`), the way the docker CLI reads it, so whatever `docker login`,
//! `az acr login` or `crane auth login` left there works here too.
//!
//! A host's credentials are, in this order: with its credential helper (`credHelpers`), with the
//! config-wide store (`credsStore`), or inline in `auths`. A helper is a program
//! `docker-credential-<name>` on `PATH` that takes the server on stdin for `get` and answers
//! `{"ServerURL", "Username", "Secret"}` (the docker-credential-helpers protocol); Docker Desktop,
//! `secretservice`, `pass`, `ecr-login` and `acr-env` all speak it.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::auth::{Credential, Secret};
use super::error::RegistryError;

/// The user name a credential helper answers when the secret is an identity (refresh) token.
const HELPER_TOKEN_USER: &str = "<token>";

/// A helper that has not answered by then is stuck (waiting on a desktop prompt, say).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Docker Hub's credentials are stored under its index URL, not under a host name.
const DOCKER_HUB_INDEX: &str = "https://index.docker.io/v1/";

/// Where the config file says `host`'s credentials are.
#[derive(Debug)]
pub enum Lookup {
    /// Ask the helper `docker-credential-<helper>` for `server`; `fallback` is what `auths`
    /// holds, used when the config-wide store has nothing for the host.
    Helper {
        helper: String,
        server: String,
        per_host: bool,
        fallback: Option<Credential>,
    },
    Inline(Credential),
    Missing,
}

/// The credential for `host` from the Docker config file, if it has one.
///
/// Runs a credential helper when the config names one, blocking for as long as it takes (once
/// per registry per run: [`super::Registries`] keeps the result).
pub fn docker_config_credential(host: &str) -> Result<Option<Credential>, RegistryError> {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".docker").join("config.json"),
            None => return Ok(None),
        },
    };
    let err = |message: String| RegistryError::Credentials { registry: host.to_string(), message };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot read {}: {e}", path.display()))),
    };
    match lookup(&text, host).map_err(|m| err(format!("{}: {m}", path.display())))? {
        Lookup::Inline(c) => Ok(Some(c)),
        Lookup::Missing => Ok(None),
        Lookup::Helper { helper, server, per_host, fallback } => {
            let source = if per_host { "credHelpers" } else { "credsStore" };
            match outside_the_runtime(|| run_helper(&helper, &server)) {
                Ok(Some(c)) => Ok(Some(c)),
                Ok(None) => Ok(fallback),
                Err(m) => Err(err(format!("{m} (named by {source} in {})", path.display()))),
            }
        }
    }
}

/// Runs `f`, which blocks, telling a multi-threaded tokio runtime first so that it moves this
/// worker's other tasks elsewhere meanwhile.
fn outside_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Looks `host` up in the text of a Docker config.
pub fn lookup(text: &str, host: &str) -> Result<Lookup, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct File {
        #[serde(default)]
        auths: HashMap<String, Entry>,
        #[serde(default)]
        cred_helpers: HashMap<String, String>,
        #[serde(default)]
        creds_store: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        auth: Option<String>,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        #[serde(default)]
        identitytoken: Option<String>,
    }
    let file: File = serde_json::from_str(text).map_err(|e| format!("not a Docker config: {e}"))?;
    let wanted: Vec<String> = if host == crate::reference::DOCKER_HUB {
        vec![DOCKER_HUB_INDEX.into(), "index.docker.io".into(), "docker.io".into()]
    } else {
        vec![host.to_string(), format!("https://{host}"), format!("http://{host}")]
    };
    let matches = |k: &str| wanted.iter().any(|w| w.trim_end_matches('/') == k.trim_end_matches('/'));
    // The server name a helper was given at login: the `auths` key when docker wrote one.
    let auths_key = file.auths.keys().find(|k| matches(k)).cloned();
    let server = auths_key.clone().unwrap_or_else(|| wanted[0].clone());

    let inline = match auths_key.as_ref().map(|k| &file.auths[k]) {
        None => None,
        Some(e) => {
            if let Some(t) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
                Some(Credential::RefreshToken(Secret::new(t.clone())))
            } else if let Some(a) = e.auth.as_ref().filter(|a| !a.is_empty()) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|_| format!("auths entry for {host} has an auth field that is not base64"))?;
                let raw = String::from_utf8(raw).map_err(|_| format!("auths entry for {host} is not UTF-8"))?;
                let (u, p) =
                    raw.split_once(':').ok_or_else(|| format!("auths entry for {host} is not user:password"))?;
                Some(Credential::from_user_password(u.to_string(), Secret::new(p)))
            } else if let (Some(u), Some(p)) = (&e.username, &e.password) {
                Some(Credential::from_user_password(u.clone(), Secret::new(p.clone())))
            } else {
                None
            }
        }
    };
    if let Some((_, helper)) = file.cred_helpers.iter().find(|(k, _)| matches(k)) {
        return Ok(Lookup::Helper { helper: helper.clone(), server, per_host: true, fallback: None });
    }
    if let Some(store) = file.creds_store.filter(|s| !s.is_empty()) {
        return Ok(Lookup::Helper { helper: store, server, per_host: false, fallback: inline });
    }
    Ok(inline.map(Lookup::Inline).unwrap_or(Lookup::Missing))
}

/// `docker-credential-<helper> get` for `server`: `Ok(None)` when it has no credentials for it.
/// Errors name the helper and what it said, never what it answered on success.
fn run_helper(helper: &str, server: &str) -> Result<Option<Credential>, String> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("credential helper {program} is not on PATH"),
            _ => format!("cannot run credential helper {program}: {e}"),
        })?;
    // The server name is a line; a helper that exits without reading it gets a broken pipe, which
    // its exit status then explains.
    let _ = child.stdin.take().expect("piped stdin").write_all(server.as_bytes());
    // Drained while the helper runs, so one that writes more than a pipe holds cannot stall.
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_with_timeout(&mut child, &program)?;
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    if !status.success() {
        // The protocol's "nothing stored for this server" answer, on stdout.
        if stdout.contains("credentials not found") || stderr.contains("credentials not found") {
            return Ok(None);
        }
        let said = first_line(if stderr.trim().is_empty() { &stdout } else { &stderr });
        return Err(format!("credential helper {program} failed ({status}): {said}"));
    }
    parse_helper_answer(&stdout).map_err(|m| format!("credential helper {program}: {m}"))
}

fn drain(mut from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = from.read_to_string(&mut text);
        text
    })
}

fn wait_with_timeout(child: &mut std::process::Child, program: &str) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + HELPER_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("credential helper {program} did not answer within {}s", HELPER_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(format!("credential helper {program}: {e}")),
        }
    }
}

/// A helper's answer to `get`: `<token>` as the user name means the secret is an identity token.
fn parse_helper_answer(stdout: &str) -> Result<Option<Credential>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        #[serde(default)]
        username: String,
        #[serde(default)]
        secret: String,
    }
    // Not echoing the answer: it holds the secret.
    let a: Answer =
        serde_json::from_str(stdout.trim()).map_err(|_| "its answer is not the expected JSON".to_string())?;
    if a.secret.is_empty() {
        return Ok(None);
    }
    if a.username == HELPER_TOKEN_USER {
        return Ok(Some(Credential::RefreshToken(Secret::new(a.secret))));
    }
    Ok(Some(Credential::from_user_password(a.username, Secret::new(a.secret))))
}

fn first_line(s: &str) -> String {
    let line = s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no output");
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(cfg: &str, host: &str) -> Option<Credential> {
        match lookup(cfg, host).unwrap() {
            Lookup::Inline(c) => Some(c),
            Lookup::Missing => None,
            other => panic!("expected an inline entry, got {other:?}"),
        }
    }

    #[test]
    fn auths_entries() {
        let cfg = r#"{"auths":{
            "myacr.azurecr.io":{"auth":"MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwOnJlZnJlc2g="},
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
            "quay.io":{"identitytoken":"idtok"}}}"#;
        match inline(cfg, "myacr.azurecr.io") {
            Some(Credential::RefreshToken(t)) => assert_eq!(t.expose(), "refresh"),
            other => panic!("all-zero user must mean a refresh token, got {other:?}"),
        }
        match inline(cfg, "docker.io") {
            Some(Credential::Basic { username, password }) => {
                assert_eq!(username, "user");
                assert_eq!(password.expose(), "pass");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(inline(cfg, "quay.io"), Some(Credential::RefreshToken(_))));
        assert!(inline(cfg, "ghcr.io").is_none());
        assert!(lookup("{", "ghcr.io").is_err());
    }

    /// docker's order: a host's own helper, then the config-wide store (falling back to `auths`
    /// when the store has nothing), then `auths`; the helper gets the server name docker used.
    #[test]
    fn helpers_come_before_auths() {
        let cfg = r#"{"auths":{"ghcr.io":{"auth":"dTpw"},"https://index.docker.io/v1/":{}},
                      "credHelpers":{"myacr.azurecr.io":"acr-env","https://ghcr.io":"gh"},
                      "credsStore":"desktop"}"#;
        match lookup(cfg, "myacr.azurecr.io").unwrap() {
            Lookup::Helper { helper, server, per_host: true, fallback: None } => {
                assert_eq!((helper.as_str(), server.as_str()), ("acr-env", "myacr.azurecr.io"));
            }
            other => panic!("{other:?}"),
        }
        match lookup(cfg, "ghcr.io").unwrap() {
            Lookup::Helper { helper, server, per_host: true, .. } => {
                assert_eq!((helper.as_str(), server.as_str()), ("gh", "ghcr.io"));
            }
            other => panic!("{other:?}"),
        }
        match lookup(cfg, "docker.io").unwrap() {
            Lookup::Helper { helper, server, per_host: false, fallback: None } => {
                assert_eq!((helper.as_str(), server.as_str()), ("desktop", DOCKER_HUB_INDEX));
            }
            other => panic!("{other:?}"),
        }
        let store_only = r#"{"auths":{"quay.io":{"auth":"dTpw"}},"credsStore":"pass"}"#;
        match lookup(store_only, "quay.io").unwrap() {
            Lookup::Helper { helper, per_host: false, fallback: Some(Credential::Basic { username, .. }), .. } => {
                assert_eq!((helper.as_str(), username.as_str()), ("pass", "u"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn helper_answers() {
        match parse_helper_answer(r#"{"ServerURL":"x","Username":"<token>","Secret":"idtok"}"#).unwrap() {
            Some(Credential::RefreshToken(t)) => assert_eq!(t.expose(), "idtok"),
            other => panic!("{other:?}"),
        }
        match parse_helper_answer(r#"{"ServerURL":"x","Username":"bob","Secret":"pw"}"#).unwrap() {
            Some(Credential::Basic { username, password }) => {
                assert_eq!((username.as_str(), password.expose()), ("bob", "pw"))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_helper_answer(r#"{"ServerURL":"x","Username":"","Secret":""}"#).unwrap().is_none());
        let e = parse_helper_answer("Secret=hunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
