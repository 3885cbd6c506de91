//! A stand-in for Microsoft Entra ID, enough for azure_identity's real credentials to get a token:
//! - App Service style managed identity: `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…`
//!   with header `x-identity-header: {IDENTITY_HEADER}` (plain http, as the real endpoint is);
//! - the authority's `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials` and
//!   either `client_secret` or a `client_assertion` (workload identity's federated token) — over
//!   https, because azure_identity refuses any other authority host.
//!
//! Tokens are HS256 JWTs under a key the ACR stand-in shares, so the stand-in can check that an
//! exchanged token really came from here, for the ACR audience.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

use super::tls::TestTls;

pub const ACR_AUDIENCE: &str = "https://containerregistry.azure.net";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntraClaims {
    pub aud: String,
    pub tid: String,
    pub oid: String,
    pub exp: u64,
    pub iat: u64,
    /// How the token was obtained: `msi`, `client_secret`, `workload_identity`, `cli`.
    pub via: String,
}

#[derive(Debug)]
pub struct FakeEntra {
    key: Vec<u8>,
    pub tenant: String,
    pub client_id: String,
    pub identity_header: String,
    pub client_secret: String,
    pub federated_token: String,
    /// Tokens issued, by route.
    pub issued: AtomicUsize,
    /// One line per refused request, to make a failing test say why.
    pub refusals: Mutex<Vec<String>>,
    /// Base URLs once started.
    pub http_url: Mutex<String>,
    pub https_url: Mutex<String>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

impl FakeEntra {
    pub fn new() -> Arc<FakeEntra> {
        Arc::new(FakeEntra {
            key: b"fake-entra-signing-key-for-tests-only".to_vec(),
            tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            identity_header: "identity-header-secret".into(),
            client_secret: "client-secret-value".into(),
            federated_token: "federated.service-account.token".into(),
            issued: AtomicUsize::new(0),
            refusals: Mutex::new(Vec::new()),
            http_url: Mutex::new(String::new()),
            https_url: Mutex::new(String::new()),
        })
    }

    /// Mints an Entra access token for `aud` (what a real credential would get).
    pub fn mint(&self, aud: &str, oid: &str, via: &str) -> String {
        let claims = EntraClaims {
            aud: aud.to_string(),
            tid: self.tenant.clone(),
            oid: oid.to_string(),
            exp: now() + 3600,
            iat: now(),
            via: via.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&self.key)).unwrap()
    }

    /// The claims of a token this fake issued for the ACR audience, or why not.
    pub fn verify_acr_token(&self, token: &str) -> Result<EntraClaims, String> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[ACR_AUDIENCE]);
        v.leeway = 0;
        jsonwebtoken::decode::<EntraClaims>(token, &DecodingKey::from_secret(&self.key), &v)
            .map(|d| d.claims)
            .map_err(|e| format!("not an Entra token for {ACR_AUDIENCE}: {e}"))
    }

    fn refuse(&self, why: String) {
        self.refusals.lock().unwrap().push(why);
    }

    /// Starts the managed identity endpoint (http) and the authority (https) on loopback.
    pub async fn start(self: &Arc<Self>, tls: &TestTls) {
        let router = axum::Router::new()
            .route("/msi/token", get(msi_token))
            .route("/{tenant}/oauth2/v2.0/token", post(authority_token))
            .with_state(self.clone());
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *self.http_url.lock().unwrap() = format!("http://{}", tcp.local_addr().unwrap());
        let r = router.clone();
        tokio::spawn(async move { axum::serve(tcp, r).await.unwrap() });
        *self.https_url.lock().unwrap() = tls.serve(router).await;
    }

    pub fn msi_endpoint(&self) -> String {
        format!("{}/msi/token", self.http_url.lock().unwrap())
    }

    pub fn authority(&self) -> String {
        self.https_url.lock().unwrap().clone()
    }
}

fn entra_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": error, "error_description": description, "error_codes": [70011]})))
        .into_response()
}

/// App Service managed identity protocol (api-version 2019-08-01).
async fn msi_token(
    State(entra): State<Arc<FakeEntra>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("x-identity-header").and_then(|v| v.to_str().ok()) != Some(entra.identity_header.as_str()) {
        entra.refuse("msi: missing or wrong x-identity-header".into());
        return (StatusCode::UNAUTHORIZED, "missing identity header").into_response();
    }
    if q.get("api-version").map(String::as_str) != Some("2019-08-01") {
        entra.refuse(format!("msi: api-version {:?}", q.get("api-version")));
        return (StatusCode::BAD_REQUEST, "bad api-version").into_response();
    }
    let Some(resource) = q.get("resource") else {
        entra.refuse("msi: no resource".into());
        return (StatusCode::BAD_REQUEST, "no resource").into_response();
    };
    let oid = q.get("client_id").cloned().unwrap_or_else(|| "system-assigned".into());
    entra.issued.fetch_add(1, Ordering::SeqCst);
    let token = entra.mint(resource, &oid, "msi");
    axum::Json(json!({
        "access_token": token,
        "expires_on": (now() + 3600).to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": oid,
    }))
    .into_response()
}

/// The authority's v2 token endpoint, client credentials flow only.
async fn authority_token(
    State(entra): State<Arc<FakeEntra>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let f = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if tenant != entra.tenant {
        entra.refuse(format!("authority: tenant {tenant}"));
        return entra_error(StatusCode::BAD_REQUEST, "invalid_request", "AADSTS90002: Tenant not found.");
    }
    if f("grant_type") != "client_credentials" || f("client_id") != entra.client_id {
        entra.refuse(format!("authority: grant_type {} client_id {}", f("grant_type"), f("client_id")));
        return entra_error(StatusCode::BAD_REQUEST, "invalid_request", "AADSTS700016: Application not found.");
    }
    let via = if !f("client_secret").is_empty() {
        if f("client_secret") != entra.client_secret {
            entra.refuse("authority: wrong client secret".into());
            return entra_error(StatusCode::UNAUTHORIZED, "invalid_client", "AADSTS7000215: Invalid client secret.");
        }
        "client_secret"
    } else {
        if f("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            || f("client_assertion") != entra.federated_token
        {
            entra.refuse("authority: wrong client assertion".into());
            return entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS700211: No matching federated identity.",
            );
        }
        "workload_identity"
    };
    let Some(resource) = f("scope").strip_suffix("/.default") else {
        entra.refuse(format!("authority: scope {}", f("scope")));
        return entra_error(StatusCode::BAD_REQUEST, "invalid_scope", "AADSTS70011: invalid scope.");
    };
    entra.issued.fetch_add(1, Ordering::SeqCst);
    let token = entra.mint(resource, &entra.client_id, via);
    axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
        .into_response()
}
