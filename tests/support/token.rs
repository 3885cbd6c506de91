//! A token service for registries in `auth: token` mode, implementing both the Docker token
//! protocol (`GET /token`, optional Basic credentials) and the OAuth2 form
//! (`POST /token` with `grant_type=password|refresh_token`, distribution docs/spec/auth/oauth.md).
//!
//! Tokens are ES256 JWTs signed by a fresh P-256 key whose self-signed certificate is the
//! registry's `rootcertbundle`; the header carries `kid` = the libtrust key id, which is how
//! registry 2.8 finds the key (distribution v2.8.2, `registry/auth/token/token.go`). `aud` is the
//! service as a JSON string: 2.8 refuses an array.
//!
//! Every request is recorded so tests can assert how often and with what a client asked.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::bind_loopback;

pub const SERVICE: &str = "test-registry";
pub const ISSUER: &str = "test-token-issuer";

/// Who may get tokens. Password users and refresh-token holders get every action they ask
/// for; anonymous callers (when allowed) get only `pull`. A refresh token is accepted as a
/// `POST grant_type=refresh_token`, and also as the password of `GET` with Basic auth (any
/// user name), the way ACR accepts it from `docker login`.
///
/// ```text
/// let tokens = TokenService::start(Users::new().user("alice", "pw").anonymous(false)).await;
/// ```
#[derive(Clone, Debug)]
pub struct Users {
    pub passwords: Vec<(String, String)>,
    /// Valid refresh tokens and the subject each stands for.
    pub refresh_tokens: Vec<(String, String)>,
    pub anonymous: bool,
    /// Token lifetime (`expires_in` and the JWT `exp`). The registry allows 60 s leeway on `exp`.
    pub lifetime: Duration,
}

impl Default for Users {
    fn default() -> Self {
        Users { passwords: Vec::new(), refresh_tokens: Vec::new(), anonymous: true, lifetime: Duration::from_secs(300) }
    }
}

impl Users {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.passwords.push((name.into(), password.into()));
        self
    }
    pub fn refresh_token(mut self, token: &str, subject: &str) -> Self {
        self.refresh_tokens.push((token.into(), subject.into()));
        self
    }
    pub fn anonymous(mut self, allowed: bool) -> Self {
        self.anonymous = allowed;
        self
    }
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }
}

/// Which credential a token request carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    /// `GET` with `Authorization: Basic` for this user.
    Basic(String),
    /// `POST grant_type=password` for this user.
    Password(String),
    /// `POST grant_type=refresh_token` with this token.
    RefreshToken(String),
}

/// One request to the token service, as recorded.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    pub grant_type: Option<String>,
    pub service: Option<String>,
    /// Scopes as sent (`repository:name:actions`), repeated and space-separated ones split.
    pub scopes: Vec<String>,
    pub credential: Credential,
    /// The status the service answered with.
    pub status: u16,
}

struct Inner {
    users: Mutex<Users>,
    key: jsonwebtoken::EncodingKey,
    kid: String,
    cert_path: PathBuf,
    _dir: tempfile::TempDir,
    port: u16,
    requests: Mutex<Vec<TokenRequest>>,
    serial: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The running service. Cheap to clone; stops when the last clone is dropped.
#[derive(Clone)]
pub struct TokenService(Arc<Inner>);

impl TokenService {
    pub async fn start(users: Users) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate P-256 key");
        let cert = rcgen::CertificateParams::new(vec!["test-token-service".to_string()])
            .expect("certificate params")
            .self_signed(&key)
            .expect("self-sign certificate");
        let dir = tempfile::Builder::new().prefix("token-service-").tempdir().expect("temp dir");
        let cert_path = dir.path().join("token-cert.pem");
        std::fs::write(&cert_path, cert.pem()).expect("write certificate");
        use rcgen::PublicKeyData as _;
        let kid = libtrust_key_id(&key.subject_public_key_info());
        let encoding = jsonwebtoken::EncodingKey::from_ec_der(key.serialized_der());

        let (listener, addr) = bind_loopback().await;
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let app = Router::new().route("/token", get(get_token).post(post_token)).with_state(weak.clone());
            let task = tokio::spawn(async move {
                axum::serve(listener, app).await.expect("token service");
            });
            Inner {
                users: Mutex::new(users),
                key: encoding,
                kid,
                cert_path,
                _dir: dir,
                port: addr.port(),
                requests: Mutex::new(Vec::new()),
                serial: AtomicU64::new(0),
                task,
            }
        });
        TokenService(inner)
    }

    /// `http://127.0.0.1:PORT/token`, the realm registries announce.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.0.port)
    }
    pub fn service(&self) -> &str {
        SERVICE
    }
    pub fn issuer(&self) -> &str {
        ISSUER
    }
    /// The PEM certificate to configure as the registry's `rootcertbundle`.
    pub fn cert_path(&self) -> &Path {
        &self.0.cert_path
    }
    /// The libtrust key id put in every token's `kid` header.
    pub fn key_id(&self) -> &str {
        &self.0.kid
    }

    /// Changes who may get tokens (e.g. revoke a refresh token, shorten the lifetime).
    pub fn set_users(&self, users: Users) {
        *self.0.users.lock().unwrap() = users;
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.0.requests.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.0.requests.lock().unwrap().len()
    }
    pub fn clear_requests(&self) {
        self.0.requests.lock().unwrap().clear();
    }

    /// A token for `scopes` (repository, comma-separated actions) without a request, for
    /// seeding an auth'd registry directly. Not recorded.
    pub fn mint(&self, scopes: &[(&str, &str)]) -> String {
        let access: Vec<Access> = scopes
            .iter()
            .map(|(repo, actions)| Access {
                kind: "repository".into(),
                name: repo.to_string(),
                actions: actions.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect(),
            })
            .collect();
        let lifetime = self.0.users.lock().unwrap().lifetime;
        self.0.sign("seeder", access, lifetime)
    }
}

impl TokenService {
    /// A token for `subject` granting `access` as (type, name, actions), valid for the service's
    /// lifetime: the signer another token service (our ACR stand-in) can use, so that this
    /// service's registry accepts its tokens. Not recorded.
    pub fn sign(&self, subject: &str, access: &[(String, String, Vec<String>)]) -> String {
        let access = access
            .iter()
            .map(|(kind, name, actions)| Access { kind: kind.clone(), name: name.clone(), actions: actions.clone() })
            .collect();
        let lifetime = self.0.users.lock().unwrap().lifetime;
        self.0.sign(subject, access, lifetime)
    }
}

impl Inner {
    fn sign(&self, subject: &str, access: Vec<Access>, lifetime: Duration) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: subject.into(),
            aud: SERVICE.into(),
            exp: now + lifetime.as_secs().max(1),
            nbf: now.saturating_sub(1),
            iat: now,
            jti: format!("jti-{}", self.serial.fetch_add(1, Ordering::Relaxed)),
            access,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign token")
    }

    fn record(&self, r: TokenRequest) {
        self.requests.lock().unwrap().push(r);
    }
}

#[derive(serde::Serialize)]
struct Claims {
    iss: String,
    sub: String,
    /// A string, not an array: registry 2.8 cannot read an array here.
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Access>,
}

#[derive(serde::Serialize, Clone, Debug)]
struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

/// libtrust's key id: base32 (standard alphabet, no padding) of the first 30 bytes of
/// SHA-256 over the SPKI DER, as 12 groups of 4 characters joined by `:`.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki_der);
    let mut out = String::new();
    // 30 bytes = 240 bits = 48 five-bit groups exactly, so no padding is ever needed.
    for chunk in hash[..30].chunks(5) {
        let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
        for i in (0..8).rev() {
            out.push(ALPHABET[((n >> (i * 5)) & 31) as usize] as char);
        }
    }
    out.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":")
}

/// Parses `type:name:actions` scopes into grants. Anonymous callers get only `pull`.
fn grants(scopes: &[String], anonymous: bool) -> Vec<Access> {
    scopes
        .iter()
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<String> = actions
                .split(',')
                .filter(|a| !a.is_empty() && (!anonymous || *a == "pull"))
                .map(str::to_string)
                .collect();
            Some(Access { kind: kind.into(), name: name.into(), actions })
        })
        .collect()
}

fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

fn values(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
}

fn first(pairs: &[(String, String)], key: &str) -> Option<String> {
    values(pairs, key).into_iter().next()
}

/// Repeated `scope` parameters and space-separated ones are equivalent.
fn scopes_of(pairs: &[(String, String)]) -> Vec<String> {
    values(pairs, "scope").iter().flat_map(|s| s.split_whitespace().map(str::to_string)).collect()
}

fn now_rfc3339() -> String {
    // Second precision is enough; only the format matters to clients.
    acr_mirror::time::rfc3339(SystemTime::now())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": message}], "error": code, "error_description": message});
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, "Basic realm=\"test-token-service\"".parse().unwrap());
    }
    resp
}

type St = State<std::sync::Weak<Inner>>;

/// Docker token protocol: `GET /token?service=&scope=...`, optional Basic credentials.
async fn get_token(State(weak): St, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let Some(inner) = weak.upgrade() else { return StatusCode::SERVICE_UNAVAILABLE.into_response() };
    let pairs = form_pairs(query.unwrap_or_default().as_bytes());
    let scopes = scopes_of(&pairs);
    let service = first(&pairs, "service");
    let users = inner.users.lock().unwrap().clone();

    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let refresh_subject =
        |p: &str| users.refresh_tokens.iter().find(|(t, _)| t == p).map(|(_, subject)| subject.clone());
    let (credential, subject, verdict) = match &basic {
        Some((u, p)) if users.passwords.iter().any(|(uu, pp)| uu == u && pp == p) => {
            (Credential::Basic(u.clone()), u.clone(), Ok(false))
        }
        // As ACR accepts for `docker login` with a refresh token: any user name, the token as password.
        Some((u, p)) if refresh_subject(p).is_some() => {
            (Credential::Basic(u.clone()), refresh_subject(p).unwrap(), Ok(false))
        }
        Some((u, _)) => (Credential::Basic(u.clone()), u.clone(), Err("wrong username or password")),
        None if users.anonymous => (Credential::Anonymous, String::new(), Ok(true)),
        None => (Credential::Anonymous, String::new(), Err("anonymous access is not allowed")),
    };
    let mut rec = TokenRequest {
        method: Method::GET.to_string(),
        grant_type: None,
        service: service.clone(),
        scopes: scopes.clone(),
        credential,
        status: 200,
    };
    let resp = match verdict {
        Err(why) => error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", why),
        Ok(_) if service.as_deref().is_some_and(|s| s != SERVICE) => {
            error(StatusCode::BAD_REQUEST, "invalid_request", "unknown service")
        }
        Ok(anonymous) => {
            let token = inner.sign(&subject, grants(&scopes, anonymous), users.lifetime);
            let mut body = json!({
                "token": token, "access_token": token,
                "expires_in": users.lifetime.as_secs(), "issued_at": now_rfc3339(),
            });
            if !anonymous && first(&pairs, "offline_token").as_deref() == Some("true") {
                body["refresh_token"] = json!(new_refresh_token(&inner, &subject));
            }
            axum::Json(body).into_response()
        }
    };
    rec.status = resp.status().as_u16();
    inner.record(rec);
    resp
}

/// OAuth2 form: `POST /token` with `grant_type=password` or `grant_type=refresh_token`.
async fn post_token(State(weak): St, body: Bytes) -> Response {
    let Some(inner) = weak.upgrade() else { return StatusCode::SERVICE_UNAVAILABLE.into_response() };
    let pairs = form_pairs(&body);
    let scopes = scopes_of(&pairs);
    let grant_type = first(&pairs, "grant_type");
    let service = first(&pairs, "service");
    let users = inner.users.lock().unwrap().clone();

    let (credential, outcome) = match grant_type.as_deref() {
        Some("password") => {
            let u = first(&pairs, "username").unwrap_or_default();
            let p = first(&pairs, "password").unwrap_or_default();
            let ok = users.passwords.iter().any(|(uu, pp)| *uu == u && *pp == p);
            (Credential::Password(u.clone()), if ok { Ok(u) } else { Err("wrong username or password") })
        }
        Some("refresh_token") => {
            let t = first(&pairs, "refresh_token").unwrap_or_default();
            let subject = users.refresh_tokens.iter().find(|(tt, _)| *tt == t).map(|(_, s)| s.clone());
            (Credential::RefreshToken(t), subject.ok_or("unknown or revoked refresh token"))
        }
        _ => (Credential::Anonymous, Err("unsupported grant_type")),
    };
    let mut rec = TokenRequest {
        method: Method::POST.to_string(),
        grant_type: grant_type.clone(),
        service: service.clone(),
        scopes: scopes.clone(),
        credential,
        status: 200,
    };
    let resp = match outcome {
        Err(why) if grant_type.as_deref().is_some_and(|g| g == "password" || g == "refresh_token") => {
            error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", why)
        }
        Err(why) => error(StatusCode::BAD_REQUEST, "unsupported_grant_type", why),
        Ok(_) if service.as_deref().is_some_and(|s| s != SERVICE) => {
            error(StatusCode::BAD_REQUEST, "invalid_request", "unknown service")
        }
        Ok(subject) => {
            let token = inner.sign(&subject, grants(&scopes, false), users.lifetime);
            let mut body = json!({
                "access_token": token, "expires_in": users.lifetime.as_secs(),
                "issued_at": now_rfc3339(), "scope": scopes.join(" "),
            });
            if grant_type.as_deref() == Some("password") && first(&pairs, "access_type").as_deref() == Some("offline") {
                body["refresh_token"] = json!(new_refresh_token(&inner, &subject));
            }
            axum::Json(body).into_response()
        }
    };
    rec.status = resp.status().as_u16();
    inner.record(rec);
    resp
}

fn new_refresh_token(inner: &Inner, subject: &str) -> String {
    let token = format!("refresh-{}-{}", subject, inner.serial.fetch_add(1, Ordering::Relaxed));
    inner.users.lock().unwrap().refresh_tokens.push((token.clone(), subject.to_string()));
    token
}
