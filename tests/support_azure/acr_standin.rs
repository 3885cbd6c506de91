//! Our stand-in for ACR's token service (<https://github.com/Azure/acr/blob/main/docs/AAD-OAuth.md>):
//! - `POST /oauth2/exchange`, form `grant_type=access_token&service&tenant?&access_token`:
//!   the access token must be an Entra token the test's [`FakeEntra`] issued for ACR's audience;
//!   answers `{"refresh_token": "<JWT, exp = now + refresh lifetime (3 h by default)>"}`.
//! - `POST /oauth2/token`, form `grant_type=refresh_token&service&scope…&refresh_token`: the
//!   refresh token must be one of ours and unexpired; answers `{"access_token": …}` minted by a
//!   pluggable closure, so the registry tests can plug in a signer `docker-registry` accepts.
//!
//! Errors use the registry error shape `{"errors":[{"code","message"}]}` with 400 for malformed
//! requests and 401 for tokens that are not accepted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::entra::FakeEntra;

/// One requested scope, `type:name:actions` (`repository:team/app:pull,push`, `registry:catalog:*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        Some(Scope {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect(),
        })
    }
}

/// Mints an access token for `sub` with `scopes`.
pub type MintAccess = Arc<dyn Fn(&str, &[Scope]) -> String + Send + Sync>;

/// A stand-in access token: an unsigned-looking JWT whose payload lists the scopes (enough for
/// tests that only look at what was granted).
pub fn default_mint() -> MintAccess {
    Arc::new(|sub: &str, scopes: &[Scope]| {
        let access: Vec<_> =
            scopes.iter().map(|s| json!({"type": s.kind, "name": s.name, "actions": s.actions})).collect();
        let claims = json!({"sub": sub, "access": access, "exp": now() + 300});
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"access")).unwrap()
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct RefreshClaims {
    jti: String,
    sub: String,
    aud: String,
    iss: String,
    exp: u64,
    iat: u64,
    nbf: u64,
    grant_type: String,
    tenant: String,
}

/// (user, password, the repositories it may use or `None` for all).
pub type BasicUser = (String, String, Option<Vec<String>>);

pub struct Stand {
    pub service: String,
    entra: Arc<FakeEntra>,
    key: Vec<u8>,
    mint: MintAccess,
    /// Lifetime in seconds of the refresh tokens handed out from now on; negative hands out
    /// tokens whose `exp` has already passed, so expiry is tested without waiting for the clock.
    pub refresh_lifetime: Mutex<i64>,
    /// Successful exchanges.
    pub exchanges: AtomicUsize,
    /// The form of the last exchange request (fields → values), to check its shape.
    pub last_exchange: Mutex<HashMap<String, String>>,
    /// (sub, scopes) of each access token issued.
    pub access_grants: Mutex<Vec<(String, Vec<Scope>)>>,
    /// `expires_in` put in `/oauth2/token` answers (ACR's own answers carry none; clients then
    /// assume 60 s).
    pub access_expires_in: Mutex<Option<u64>>,
    /// Hand out this many unusable access tokens next (a registry answers them with 401), to
    /// make a token go bad in the middle of a run.
    pub bad_access_tokens: AtomicUsize,
    /// Basic users for `GET /oauth2/token`: (user, password, repositories it may use, `None` for
    /// all), as the admin user (all) and repository-scoped tokens (some) are.
    pub basic_users: Mutex<Vec<BasicUser>>,
}

pub struct AcrStandIn {
    pub url: String,
    pub state: Arc<Stand>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn acr_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"errors": [{"code": code, "message": message}]}))).into_response()
}

impl AcrStandIn {
    pub async fn start(service: &str, entra: Arc<FakeEntra>, mint: MintAccess) -> AcrStandIn {
        let state = Arc::new(Stand {
            service: service.to_string(),
            entra,
            key: b"acr-standin-refresh-token-key".to_vec(),
            mint,
            refresh_lifetime: Mutex::new(3 * 3600),
            exchanges: AtomicUsize::new(0),
            last_exchange: Mutex::new(HashMap::new()),
            access_grants: Mutex::new(Vec::new()),
            access_expires_in: Mutex::new(None),
            bad_access_tokens: AtomicUsize::new(0),
            basic_users: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .route("/oauth2/exchange", post(exchange))
            .route("/oauth2/token", post(token).get(basic_token))
            .with_state(state.clone());
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", tcp.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(tcp, router).await.unwrap() });
        AcrStandIn { url, state }
    }

    /// The realm a registry in front of this stand-in would put in its challenge.
    pub fn realm(&self) -> url::Url {
        url::Url::parse(&format!("{}/oauth2/token", self.url)).unwrap()
    }
}

fn form_map(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

async fn exchange(State(s): State<Arc<Stand>>, body: String) -> Response {
    let pairs = form_map(&body);
    let form: HashMap<String, String> = pairs.into_iter().collect();
    *s.last_exchange.lock().unwrap() = form.clone();
    let f = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if f("grant_type") != "access_token" {
        return acr_error(StatusCode::BAD_REQUEST, "UNSUPPORTED_GRANT_TYPE", "grant_type must be access_token");
    }
    if f("service") != s.service {
        return acr_error(StatusCode::BAD_REQUEST, "INVALID_SERVICE", "service does not name this registry");
    }
    let claims = match s.entra.verify_acr_token(f("access_token")) {
        Ok(c) => c,
        Err(_) => return acr_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid Entra access token"),
    };
    if !f("tenant").is_empty() && f("tenant") != claims.tid {
        return acr_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "token is not from that tenant");
    }
    let lifetime = *s.refresh_lifetime.lock().unwrap();
    let n = s.exchanges.fetch_add(1, Ordering::SeqCst);
    let claims = RefreshClaims {
        jti: format!("refresh-{n}"),
        sub: claims.oid,
        aud: s.service.clone(),
        iss: "Azure Container Registry".into(),
        exp: now().saturating_add_signed(lifetime),
        iat: now(),
        nbf: now(),
        grant_type: "refresh_token".into(),
        tenant: claims.tid,
    };
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&s.key)).unwrap();
    axum::Json(json!({"refresh_token": token})).into_response()
}

async fn token(State(s): State<Arc<Stand>>, body: String) -> Response {
    let pairs = form_map(&body);
    let one = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    if one("grant_type") != "refresh_token" {
        return acr_error(StatusCode::BAD_REQUEST, "UNSUPPORTED_GRANT_TYPE", "grant_type must be refresh_token");
    }
    if one("service") != s.service {
        return acr_error(StatusCode::BAD_REQUEST, "INVALID_SERVICE", "service does not name this registry");
    }
    let mut v = Validation::new(Algorithm::HS256);
    v.set_audience(&[&s.service]);
    v.leeway = 0;
    let claims =
        match jsonwebtoken::decode::<RefreshClaims>(one("refresh_token"), &DecodingKey::from_secret(&s.key), &v) {
            Ok(d) => d.claims,
            Err(_) => return acr_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid or expired refresh token"),
        };
    let mut scopes = Vec::new();
    for (_, value) in pairs.iter().filter(|(n, _)| n == "scope") {
        for one_scope in value.split(' ').filter(|x| !x.is_empty()) {
            match Scope::parse(one_scope) {
                Some(sc) => scopes.push(sc),
                None => return acr_error(StatusCode::BAD_REQUEST, "INVALID_SCOPE", "scope is not type:name:actions"),
            }
        }
    }
    access_answer(&s, claims.sub, scopes)
}

/// `{"access_token"}` (plus `expires_in` when set), minted for `sub` and `scopes`, or an unusable
/// token while `bad_access_tokens` lasts.
fn access_answer(s: &Stand, sub: String, scopes: Vec<Scope>) -> Response {
    let bad = s.bad_access_tokens.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let token = if bad { "unusable.access.token".to_string() } else { (s.mint)(&sub, &scopes) };
    s.access_grants.lock().unwrap().push((sub, scopes));
    let mut body = json!({"access_token": token});
    if let Some(secs) = *s.access_expires_in.lock().unwrap() {
        body["expires_in"] = json!(secs);
    }
    axum::Json(body).into_response()
}

/// `GET /oauth2/token?service&scope…` with Basic credentials: the admin user, or a
/// repository-scoped token, which is granted actions only on its repositories (others get an
/// empty action list, which the registry then refuses).
async fn basic_token(
    State(s): State<Arc<Stand>>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    use base64::Engine;
    let pairs = form_map(&q.unwrap_or_default());
    let one = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    if one("service") != s.service {
        return acr_error(StatusCode::BAD_REQUEST, "INVALID_SERVICE", "service does not name this registry");
    }
    let creds = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|c| c.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let Some((user, password)) = creds else {
        return acr_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required");
    };
    let allowed =
        s.basic_users.lock().unwrap().iter().find(|(u, p, _)| *u == user && *p == password).map(|x| x.2.clone());
    let Some(repos) = allowed else {
        return acr_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "wrong user name or password");
    };
    let mut scopes = Vec::new();
    for (_, value) in pairs.iter().filter(|(n, _)| n == "scope") {
        for one_scope in value.split(' ').filter(|x| !x.is_empty()) {
            let Some(mut sc) = Scope::parse(one_scope) else {
                return acr_error(StatusCode::BAD_REQUEST, "INVALID_SCOPE", "scope is not type:name:actions");
            };
            if repos.as_ref().is_some_and(|r| sc.kind != "repository" || !r.contains(&sc.name)) {
                sc.actions.clear();
            }
            scopes.push(sc);
        }
    }
    access_answer(&s, user, scopes)
}
