//! Authentication as a layer of the transport: challenges, credentials, and tokens per scope set.
//!
//! A registry says how it wants to be addressed in the `WWW-Authenticate` header of a 401:
//! `Basic realm=…` (send the password on every request) or `Bearer realm=…,service=…,scope=…`
//! (fetch a token for the scopes at the realm). Tokens are cached per *set* of scopes, because
//! one request can need several (a cross-repository mount needs `pull` on the source and
//! `pull,push` on the target), and reused until shortly before they expire; an answer without a
//! usable `expires_in` lives the protocol's default 60 s.
//!
//! Credentials are bound to the registry: `Registry::send` asks this layer only for requests to
//! the registry's own origin. A realm named by the registry's challenge gets a password or
//! refresh token over https (any host, as docker and containerd send them) or over plain http on
//! the registry's own host only; an Entra-derived refresh token goes only to the registry's own
//! host, where ACR serves `/oauth2/exchange` and `/oauth2/token`. Token fetches go through the
//! same retries, timeouts and 1 MiB answer limit as every other request.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::Mutex;

use super::error::{RegistryError, display_url};
use super::transport::origin::Origin;
use super::transport::{Attempt, Transport, limits};

/// The user name `docker login` stores when the password is really an identity (refresh) token,
/// as ACR's `az acr login` does.
pub const TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";

/// Renew a token this long before it expires, so a request never carries one that lapses in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// One `resource:name:actions` scope, e.g. `repository:oss/pause:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(pub String);

impl Scope {
    pub fn pull(repo: &str) -> Scope {
        Scope(format!("repository:{repo}:pull"))
    }
    pub fn push(repo: &str) -> Scope {
        Scope(format!("repository:{repo}:pull,push"))
    }
    pub fn delete(repo: &str) -> Scope {
        Scope(format!("repository:{repo}:delete"))
    }
    pub fn catalog() -> Scope {
        Scope("registry:catalog:*".to_string())
    }
    pub fn metadata_read(repo: &str) -> Scope {
        Scope(format!("repository:{repo}:metadata_read"))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A source of OAuth2 refresh tokens that may change during a run (an ACR refresh token from an
/// Entra ID exchange lasts about three hours). The token layer asks it for the current token each
/// time it needs a new access token, and tells it when the registry rejected one.
pub trait RefreshTokenSource: Send + Sync + fmt::Debug {
    /// The current refresh token for the registry whose challenge named `realm` and `service`.
    fn refresh_token<'a>(
        &'a self,
        realm: &'a str,
        service: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, Result<Secret, RegistryError>>;
    /// The registry refused a token made from the current refresh token: get a new one next time.
    fn invalidate(&self);
}

/// Builds the renewable refresh-token source of an `auth: {type: azure}` registry (Entra ID
/// sign-in, exchanged for ACR refresh tokens). Defined here and implemented by `crate::azure`,
/// so the registry client does not depend on Azure.
pub trait EntraSignIn: Send + Sync + fmt::Debug {
    /// A source for the registry at `endpoint`, signing in as `sign_in` says, exchanging over
    /// `http` (the registry's own client: its TLS trust and connect timeout).
    fn token_source(
        &self,
        sign_in: &crate::config::SignIn,
        endpoint: &url::Url,
        http: reqwest::Client,
    ) -> Result<Arc<dyn RefreshTokenSource>, String>;
}

/// What we present to a registry.
#[derive(Debug, Clone)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token, exchanged at the realm with `grant_type=refresh_token`.
    RefreshToken(Secret),
    /// A refresh token that is renewed during the run (Entra ID → ACR).
    Dynamic(Arc<dyn RefreshTokenSource>),
}

impl Credential {
    /// Docker's convention: the all-zero user name means the password is a refresh token.
    pub fn from_user_password(username: String, password: Secret) -> Credential {
        if username == TOKEN_USER {
            Credential::RefreshToken(password)
        } else {
            Credential::Basic { username, password }
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Credential::Anonymous => "anonymous",
            Credential::Basic { .. } => "basic",
            Credential::RefreshToken(_) => "refresh token",
            Credential::Dynamic(_) => "renewed refresh token",
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`. Quoted values may
/// contain commas (a scope list does), so this is a small tokenizer, not a split.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let realm = params.get("realm")?.clone();
            Some(Challenge::Bearer {
                realm,
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            })
        }
        _ => None,
    }
}

fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[key_start..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = String::new();
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                // Push whole UTF-8 characters.
                let ch = s[i..].chars().next().unwrap_or('\0');
                v.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
            v
        } else {
            let start = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            s[start..i].trim().to_string()
        };
        if !key.is_empty() {
            out.insert(key, value);
        }
    }
    out
}

#[derive(Debug, Clone)]
struct CachedToken {
    token: Secret,
    expires: Instant,
}

/// How one registry wants to be addressed, learnt from its first challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scheme {
    Unknown,
    None,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

/// Per-registry authentication state: the credential, the scheme the registry asked for, and
/// tokens cached per scope set.
#[derive(Debug)]
pub struct Authenticator {
    registry: String,
    credential: Credential,
    scheme: Mutex<Scheme>,
    tokens: Mutex<HashMap<BTreeSet<Scope>, CachedToken>>,
    /// One lock per scope set, so that a burst of requests for one scope set fetches one token
    /// while fetches for other scope sets (other repositories) go ahead at the same time: one
    /// lock for all of them made a plan of 30 repositories wait for 30 token round trips in a row.
    fetch_locks: std::sync::Mutex<HashMap<BTreeSet<Scope>, std::sync::Arc<Mutex<()>>>>,
    /// Repositories this run will push to (see [`Authenticator::will_push`]).
    pushes: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Authenticator {
    pub fn new(registry: &str, credential: Credential) -> Self {
        Authenticator {
            registry: registry.to_string(),
            credential,
            scheme: Mutex::new(Scheme::Unknown),
            tokens: Mutex::new(HashMap::new()),
            fetch_locks: std::sync::Mutex::new(HashMap::new()),
            pushes: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Says that this run will push to `repo`, so the first token asked for it — the plan's
    /// listing, a `pull` or ACR's `metadata_read` — is asked with `pull,push` added and serves
    /// every later request to the repository: one token fetch per target repository instead of
    /// one per scope set (`pull`, `metadata_read`, `pull,push`). A token service grants what the
    /// credential allows, so a pull-only credential still gets its `pull`.
    pub fn will_push(&self, repo: &str) {
        self.pushes.lock().expect("push intents").insert(repo.to_string());
    }

    /// `key` with `pull,push` added to a lone repository scope this run will push to. A scope set
    /// of several (a mount's) already names the push; its mount source is asked `pull` only.
    fn intended(&self, key: &BTreeSet<Scope>) -> BTreeSet<Scope> {
        let (Some(one), 1) = (key.first(), key.len()) else { return key.clone() };
        let Some((repo, actions)) = one.0.strip_prefix("repository:").and_then(|r| r.rsplit_once(':')) else {
            return key.clone();
        };
        if !self.pushes.lock().expect("push intents").contains(repo) {
            return key.clone();
        }
        let mut all = vec!["pull", "push"];
        all.extend(actions.split(',').filter(|a| !a.is_empty() && *a != "pull" && *a != "push"));
        BTreeSet::from([Scope(format!("repository:{repo}:{}", all.join(",")))])
    }

    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// Whether the scheme is still unknown (the transport then pings `/v2/` first, so that a
    /// streamed body is never sent into a 401 it cannot be replayed after).
    pub async fn needs_ping(&self) -> bool {
        *self.scheme.lock().await == Scheme::Unknown
    }

    /// Records what `/v2/` (or any 401) told us.
    pub async fn learn(&self, challenge: Option<&str>) {
        let scheme = match challenge.and_then(parse_challenge) {
            Some(Challenge::Basic) => Scheme::Basic,
            Some(Challenge::Bearer { realm, service, .. }) => Scheme::Bearer { realm, service },
            None => Scheme::None,
        };
        *self.scheme.lock().await = scheme;
    }

    /// Drops cached tokens for these scopes (after a 401: every token that could have been
    /// presented for them), and tells a dynamic source.
    pub async fn invalidate(&self, scopes: &[Scope]) {
        let key: BTreeSet<Scope> = scopes.iter().cloned().collect();
        self.tokens.lock().await.retain(|have, _| !covers(have, &key));
        if let Credential::Dynamic(src) = &self.credential {
            src.invalidate();
        }
    }

    /// The `Authorization` header value for a request needing `scopes`, fetching a token if needed.
    pub async fn authorization(
        &self,
        transport: &Transport,
        scopes: &[Scope],
    ) -> Result<Option<String>, RegistryError> {
        let scheme = self.scheme.lock().await.clone();
        match scheme {
            Scheme::Unknown | Scheme::None => Ok(None),
            Scheme::Basic => match &self.credential {
                Credential::Basic { username, password } => Ok(Some(basic_header(username, password))),
                _ => Ok(None),
            },
            Scheme::Bearer { realm, service } => {
                let key: BTreeSet<Scope> = scopes.iter().cloned().collect();
                if let Some(t) = self.cached(&key).await {
                    return Ok(Some(format!("Bearer {}", t.expose())));
                }
                let key = self.intended(&key);
                let lock = self.fetch_locks.lock().expect("token fetch locks").entry(key.clone()).or_default().clone();
                let _guard = lock.lock().await;
                if let Some(t) = self.cached(&key).await {
                    return Ok(Some(format!("Bearer {}", t.expose())));
                }
                let wide = self.widened(&key).await;
                let (token, ttl) = self.fetch_token(transport, &realm, service.as_deref(), &wide).await?;
                let expires = Instant::now() + ttl.saturating_sub(EXPIRY_MARGIN).max(Duration::from_secs(1));
                let mut tokens = self.tokens.lock().await;
                // A wider token makes the narrower ones it covers redundant.
                tokens.retain(|have, _| !covers(&wide, have));
                tokens.insert(wide, CachedToken { token: token.clone(), expires });
                Ok(Some(format!("Bearer {}", token.expose())))
            }
        }
    }

    /// A valid token whose scopes cover `key`: a `pull,push` token serves a `pull` request, and
    /// one with a mount source in it serves the plain pushes to its repository.
    async fn cached(&self, key: &BTreeSet<Scope>) -> Option<Secret> {
        let tokens = self.tokens.lock().await;
        let now = Instant::now();
        tokens.iter().find(|(have, t)| t.expires > now && covers(have, key)).map(|(_, t)| t.token.clone())
    }

    /// The scopes to ask for when `key` has no token: for a push to a repository, also every
    /// scope of the tokens held for pushes to it (the mount sources met so far), so each
    /// repository a run writes to has one token that serves all its requests, not one per
    /// scope set (`pull`, `pull,push`, and one more per mount source).
    async fn widened(&self, key: &BTreeSet<Scope>) -> BTreeSet<Scope> {
        let pushed: Vec<&Scope> = key.iter().filter(|s| s.0.starts_with("repository:") && s.0.ends_with(":pull,push")).collect();
        let mut wide = key.clone();
        if pushed.is_empty() {
            return wide;
        }
        for have in self.tokens.lock().await.keys() {
            if have.iter().any(|s| pushed.contains(&s)) {
                wide.extend(have.iter().cloned());
            }
        }
        wide
    }

    /// Whether the credential may be presented at `realm` (see [`Origin`]'s rules); an
    /// anonymous fetch may go anywhere the registry's challenge points.
    fn check_realm(&self, origin: &Origin, realm: &url::Url) -> Result<(), String> {
        let allowed = match &self.credential {
            Credential::Anonymous => true,
            Credential::Basic { .. } | Credential::RefreshToken(_) => origin.may_send_secret_to_realm(realm),
            Credential::Dynamic(_) => origin.may_exchange_entra_token_at(realm),
        };
        if allowed {
            return Ok(());
        }
        Err(match &self.credential {
            Credential::Dynamic(_) => {
                "the realm is not on the registry's own host, and an Entra ID token is exchanged only there; not sent"
                    .into()
            }
            c => format!("the realm is on another host over plain http; {} credentials not sent", c.describe()),
        })
    }

    async fn fetch_token(
        &self,
        transport: &Transport,
        realm: &str,
        service: Option<&str>,
        scopes: &BTreeSet<Scope>,
    ) -> Result<(Secret, Duration), RegistryError> {
        let realm_url = url::Url::parse(realm).map_err(|e| RegistryError::Token {
            registry: self.registry.clone(),
            realm: crate::sanitize::short(realm),
            message: format!("bad realm URL: {e}"),
        })?;
        let token_err = |message: String| RegistryError::Token {
            registry: self.registry.clone(),
            realm: display_url(&realm_url),
            message,
        };
        self.check_realm(&transport.origin, &realm_url).map_err(token_err)?;
        let refresh = match &self.credential {
            Credential::RefreshToken(t) => Some(t.clone()),
            Credential::Dynamic(src) => Some(src.refresh_token(realm, service).await?),
            _ => None,
        };
        let mut make = |http: &reqwest::Client| -> Attempt {
            let request = if let Some(refresh) = &refresh {
                // OAuth2 form (distribution's oauth.md, ACR's /oauth2/token): POST with a refresh token.
                let mut form: Vec<(&str, String)> = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", refresh.expose().to_string()),
                    ("client_id", "acr-mirror".to_string()),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_string()));
                }
                for s in scopes {
                    form.push(("scope", s.0.clone()));
                }
                http.post(realm_url.clone()).form(&form)
            } else {
                // Docker's token protocol: GET with the scopes, Basic credentials when we have them.
                let mut q: Vec<(&str, String)> = Vec::new();
                if let Some(s) = service {
                    q.push(("service", s.to_string()));
                }
                for s in scopes {
                    q.push(("scope", s.0.clone()));
                }
                let mut req = http.get(realm_url.clone()).query(&q);
                if let Credential::Basic { username, password } = &self.credential {
                    req = req.header(reqwest::header::AUTHORIZATION, basic_header(username, password));
                }
                req
            };
            (request, None)
        };
        let method = if refresh.is_some() { reqwest::Method::POST } else { reqwest::Method::GET };
        // No in-flight slot (see `Hold`): the request that needs this token may be waiting for one.
        let resp = transport.round_trip(&method, &realm_url, true, super::transport::Hold::Nothing, &mut make).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = limits::read_capped(resp, limits::SMALL_BODY, transport.timeouts.response).await;
            let (_, message) = super::error::parse_error_body(&body.bytes);
            let message = format!("{message}{}", body.note());
            if status.as_u16() == 401 || status.as_u16() == 403 {
                let scope = scopes.iter().map(|s| s.0.as_str()).collect::<Vec<_>>().join(" ");
                return Err(RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    scope,
                    message: format!(
                        "token service answered {status} for {} credentials{}",
                        self.credential.describe(),
                        if message.is_empty() { String::new() } else { format!(": {message}") }
                    ),
                });
            }
            return Err(token_err(format!("HTTP {status}: {message}")));
        }
        let body = match limits::read_within(resp, limits::SMALL_BODY, transport.timeouts.response).await {
            Ok(body) => body,
            Err(limits::ReadError::TooLarge(_)) => {
                return Err(token_err("the answer is over 1 MiB; cut there and refused".into()));
            }
            Err(e) => return Err(token_err(format!("reading the answer failed: {e}"))),
        };
        parse_token(&body).map_err(token_err)
    }
}

/// Whether a token for `have` grants everything `want` asks: each wanted scope is on the same
/// resource as one held, with its actions among that one's (`*` grants every action).
fn covers(have: &BTreeSet<Scope>, want: &BTreeSet<Scope>) -> bool {
    fn split(s: &Scope) -> Option<(&str, &str)> {
        let (resource, actions) = s.0.rsplit_once(':')?;
        Some((resource, actions))
    }
    want.iter().all(|w| {
        have.contains(w)
            || split(w).is_some_and(|(resource, actions)| {
                have.iter().filter_map(split).any(|(r, held)| {
                    r == resource && (held == "*" || actions.split(',').all(|a| held.split(',').any(|h| h == a)))
                })
            })
    })
}

/// The lifetime a JWT's `exp` claim gives, from now. Read only for that: the token is the
/// registry's to check, and nothing else in it is trusted or used. `None` for a token that is
/// not a JWT, has no usable `exp`, or has expired.
fn jwt_lifetime(token: &str) -> Option<Duration> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 64 * 1024 {
        return None;
    }
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
    (exp.is_finite() && exp - now >= 1.0).then(|| Duration::from_secs_f64((exp - now).min(86_400.0 * 365.0)))
}

/// The protocol's default token lifetime, used when `expires_in` is missing, zero or negative
/// (docker's client does the same): an odd answer is no reason to fail a run.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Reads a token answer: `access_token` or `token`, and `expires_in` in seconds.
fn parse_token(body: &[u8]) -> Result<(Secret, Duration), String> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<serde_json::Value>,
    }
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| format!("answer is not a token response: {}", crate::sanitize::short(&e.to_string())))?;
    let token = parsed.access_token.or(parsed.token).filter(|t| !t.is_empty()).ok_or("answer has no token")?;
    let seconds = parsed.expires_in.as_ref().and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()));
    // ACR's `/oauth2/token` answers without `expires_in`: its tokens then live as long as their
    // `exp` says (about an hour), not the protocol's 60 s, which refetched every scope set of a
    // long run every 30 s.
    let ttl = match seconds {
        Some(s) if s >= 1.0 && s.is_finite() => Duration::from_secs_f64(s.min(86_400.0 * 365.0)),
        _ => jwt_lifetime(&token).unwrap_or(DEFAULT_TOKEN_LIFETIME),
    };
    Ok((Secret::new(token), ttl))
}

fn basic_header(username: &str, password: &Secret) -> String {
    let raw = format!("{username}:{}", password.expose());
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges_with_commas_in_quotes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None, "a bearer challenge without realm is unusable");
    }

    /// Missing, zero, negative or junk `expires_in` means 60 s; a real one is kept.
    #[test]
    fn odd_lifetimes_mean_the_default() {
        for body in [
            r#"{"token":"t"}"#,
            r#"{"token":"t","expires_in":0}"#,
            r#"{"token":"t","expires_in":-5}"#,
            r#"{"token":"t","expires_in":"soon"}"#,
            r#"{"token":"t","expires_in":null}"#,
        ] {
            assert_eq!(parse_token(body.as_bytes()).unwrap().1, DEFAULT_TOKEN_LIFETIME, "{body}");
        }
        assert_eq!(parse_token(br#"{"access_token":"a","expires_in":300}"#).unwrap().1, Duration::from_secs(300));
        assert_eq!(parse_token(br#"{"access_token":"a","expires_in":"120"}"#).unwrap().1, Duration::from_secs(120));
        assert!(parse_token(br#"{"expires_in":300}"#).is_err());
    }

    /// Without `expires_in`, a JWT's `exp` gives the lifetime; an expired, odd or non-JWT token
    /// falls back to the default.
    #[test]
    fn a_jwt_exp_gives_the_lifetime_when_expires_in_is_missing() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let jwt = |claims: serde_json::Value| {
            format!("{}.{}.sig", URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#), URL_SAFE_NO_PAD.encode(claims.to_string()))
        };
        let hour = jwt(serde_json::json!({"exp": now + 3600, "access": []}));
        let ttl = parse_token(format!(r#"{{"access_token":"{hour}"}}"#).as_bytes()).unwrap().1;
        assert!(ttl > Duration::from_secs(3590) && ttl <= Duration::from_secs(3600), "{ttl:?}");
        let given = parse_token(format!(r#"{{"access_token":"{hour}","expires_in":300}}"#).as_bytes()).unwrap().1;
        assert_eq!(given, Duration::from_secs(300), "expires_in wins when present");
        for token in [jwt(serde_json::json!({"exp": now - 10})), jwt(serde_json::json!({"sub": "x"})), "opaque".into()] {
            let ttl = parse_token(format!(r#"{{"token":"{token}"}}"#).as_bytes()).unwrap().1;
            assert_eq!(ttl, DEFAULT_TOKEN_LIFETIME, "{token}");
        }
    }

    /// A token covers the scopes its own grant: `pull,push` serves `pull`, a set with a mount
    /// source serves the push alone; another repository or more actions are not covered.
    #[test]
    fn wider_tokens_cover_narrower_scope_sets() {
        let set = |s: &[Scope]| s.iter().cloned().collect::<BTreeSet<_>>();
        let push_with_mount = set(&[Scope::push("t/a"), Scope::pull("s/b")]);
        assert!(covers(&push_with_mount, &set(&[Scope::pull("t/a")])));
        assert!(covers(&push_with_mount, &set(&[Scope::push("t/a")])));
        assert!(covers(&push_with_mount, &set(&[Scope::pull("s/b"), Scope::pull("t/a")])));
        assert!(!covers(&push_with_mount, &set(&[Scope::push("s/b")])));
        assert!(!covers(&set(&[Scope::pull("t/a")]), &set(&[Scope::push("t/a")])));
        assert!(!covers(&set(&[Scope::pull("t/ab")]), &set(&[Scope::pull("t/a")])));
        assert!(covers(&set(&[Scope::catalog()]), &set(&[Scope::catalog()])));
    }

    /// Passwords reach https realms anywhere but plain-http realms only on the registry's host;
    /// an anonymous fetch may go where the challenge points.
    #[test]
    fn realms_are_checked_per_credential() {
        let origin = Origin::of(&url::Url::parse("http://127.0.0.1:5000/").unwrap());
        let other = url::Url::parse("http://127.0.0.2:5001/token").unwrap();
        let basic = Authenticator::new("r", Credential::Basic { username: "u".into(), password: Secret::new("p") });
        let e = basic.check_realm(&origin, &other).unwrap_err();
        assert!(e.contains("not sent"), "{e}");
        assert!(basic.check_realm(&origin, &url::Url::parse("http://127.0.0.1:5001/token").unwrap()).is_ok());
        assert!(Authenticator::new("r", Credential::Anonymous).check_realm(&origin, &other).is_ok());
        let refresh = Authenticator::new("r", Credential::RefreshToken(Secret::new("rt")));
        assert!(refresh.check_realm(&origin, &other).is_err());
    }

    /// A source that fails the test if asked: the Entra exchange must not even start.
    #[derive(Debug)]
    struct NeverAsked;
    impl RefreshTokenSource for NeverAsked {
        fn refresh_token<'a>(
            &'a self,
            _: &'a str,
            _: Option<&'a str>,
        ) -> futures::future::BoxFuture<'a, Result<Secret, RegistryError>> {
            panic!("the Entra token source was asked for a foreign realm")
        }
        fn invalidate(&self) {}
    }

    /// An Entra-derived token is exchanged only at the registry's own host, whatever the challenge says.
    #[test]
    fn entra_tokens_stay_on_the_registry_host() {
        let acr = Origin::of(&url::Url::parse("https://r.azurecr.io/").unwrap());
        let a = Authenticator::new("r.azurecr.io", Credential::Dynamic(Arc::new(NeverAsked)));
        let e = a.check_realm(&acr, &url::Url::parse("https://evil.example/oauth2/token").unwrap()).unwrap_err();
        assert!(e.contains("Entra"), "{e}");
        assert!(a.check_realm(&acr, &url::Url::parse("https://r.azurecr.io/oauth2/token").unwrap()).is_ok());
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Credential::Basic { username: "u".into(), password: Secret::new("hunter2") };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
