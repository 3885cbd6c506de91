//! A hostile registry: an HTTP front for a real registry that misbehaves in one way per
//! [`Mode`], and a recorder on another loopback host (127.0.0.2) that stands for whoever the
//! hostile registry tries to send a client to. Tests assert what the recorder saw.
//!
//! The front demands credentials (Basic, or Bearer from its own token endpoint in the token
//! modes), so a client that leaks them elsewhere has something to leak. It forwards to the real
//! registry without them (the upstream is open).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tokio::net::TcpListener;

use super::bind_loopback;

/// One misbehaviour.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Upload `Location`s point at the recorder.
    UploadLocationElsewhere,
    /// Tag lists and the catalog page to the recorder (`Link: <http://127.0.0.2:…>`).
    LinkElsewhere,
    /// The challenge's token realm is on the recorder (plain http, another host).
    RealmElsewhere,
    /// Manifest GETs answer 400 with an endless error body.
    HugeErrorBody,
    /// The token endpoint answers an endless body.
    HugeTokenBody,
    /// Tag lists answer an endless body.
    HugeTagList,
    /// Blob GETs answer 200 with an endless body of junk.
    EndlessBlob,
    /// Manifest GETs send headers, then one byte every `interval`, forever.
    SlowDrip(Duration),
    /// Manifest GETs answer 400 with escape sequences and a forged log line in the message.
    ControlChars,
    /// The token endpoint answers with this `expires_in`.
    OddExpiresIn(serde_json::Value),
}

/// What a server saw: method, path with query, and the `Authorization` header if any.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

struct HostileState {
    mode: Mode,
    upstream: String,
    own: String,
    elsewhere: String,
    http: reqwest::Client,
    seen: Mutex<Vec<Seen>>,
}

/// The recorder standing for another host: answers 404 to everything and remembers it.
pub struct Elsewhere {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Elsewhere {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Elsewhere {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.2:0").await.expect("bind 127.0.0.2 (loopback)");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = Router::new().fallback(move |req: Request| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(seen_of(&req));
                StatusCode::NOT_FOUND
            }
        });
        let task = tokio::spawn(async move { axum::serve(listener, app).await.expect("recorder") });
        Elsewhere { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests that carried an `Authorization` header.
    pub fn with_credentials(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.authorization.is_some()).collect()
    }
}

fn seen_of(req: &Request) -> Seen {
    Seen {
        method: req.method().to_string(),
        path: req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        authorization: req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(String::from),
    }
}

/// The hostile front.
pub struct Hostile {
    state: Arc<HostileState>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The user and password the front accepts in the Basic modes.
pub const USER: &str = "mirror";
pub const PASSWORD: &str = "s3cret-pw";
/// The access token the front's own token endpoint gives.
const TOKEN: &str = "hostile-token";

impl Hostile {
    /// A front for `upstream_url` (an open registry) misbehaving as `mode`, sending clients to
    /// `elsewhere` where the mode says so.
    pub async fn start(mode: Mode, upstream_url: &str, elsewhere: &Elsewhere) -> Self {
        let (listener, addr) = bind_loopback().await;
        let state = Arc::new(HostileState {
            mode,
            upstream: upstream_url.trim_end_matches('/').to_string(),
            own: format!("http://{addr}"),
            elsewhere: elsewhere.url(),
            http: super::http_client(),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(serve).with_state(state.clone());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.expect("hostile registry") });
        Hostile { state, addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

fn token_mode(mode: &Mode) -> bool {
    matches!(mode, Mode::RealmElsewhere | Mode::HugeTokenBody | Mode::OddExpiresIn(_))
}

/// An endless body: `chunk` over and over.
fn endless(chunk: &'static [u8]) -> Body {
    Body::from_stream(futures::stream::repeat_with(move || Ok::<_, std::io::Error>(Bytes::from_static(chunk))))
}

async fn serve(State(s): State<Arc<HostileState>>, req: Request) -> Response {
    s.seen.lock().unwrap().push(seen_of(&req));
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path == "/token" {
        return match &s.mode {
            Mode::HugeTokenBody => {
                (StatusCode::OK, endless(br#"{"token":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"#)).into_response()
            }
            Mode::OddExpiresIn(v) => axum::Json(json!({"token": TOKEN, "expires_in": v})).into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    if token_mode(&s.mode) {
        if auth != format!("Bearer {TOKEN}") {
            let realm = if matches!(s.mode, Mode::RealmElsewhere) { &s.elsewhere } else { &s.own };
            let challenge = format!(r#"Bearer realm="{realm}/token",service="hostile""#);
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)]).into_response();
        }
    } else if !auth.starts_with("Basic ") {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, r#"Basic realm="hostile""#)]).into_response();
    }
    let get = req.method() == Method::GET;
    match &s.mode {
        Mode::HugeErrorBody if get && path.contains("/manifests/") => {
            return (StatusCode::BAD_REQUEST, endless(b"error error error error ")).into_response();
        }
        Mode::ControlChars if get && path.contains("/manifests/") => {
            let message = "bad\u{1b}[2J\u{1b}]0;pwned\u{7}\r\nINFO forged log line\u{202e}";
            let body = json!({"errors": [{"code": "DENIED\u{1b}[31m", "message": message}]});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
        Mode::SlowDrip(every) if get && path.contains("/manifests/") => {
            let every = *every;
            let drip = futures::stream::unfold((), move |()| async move {
                tokio::time::sleep(every).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), ()))
            });
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/vnd.oci.image.manifest.v1+json")],
                Body::from_stream(drip),
            )
                .into_response();
        }
        Mode::EndlessBlob if get && path.contains("/blobs/sha256:") => {
            return (StatusCode::OK, endless(b"junk junk junk junk ")).into_response();
        }
        Mode::HugeTagList if get && path.ends_with("/tags/list") => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                endless(br#"{"name":"x","tags":["aaaa"#),
            )
                .into_response();
        }
        Mode::LinkElsewhere if get && (path.ends_with("/tags/list") || path == "/v2/_catalog") => {
            return link_page(&s, &path, &query);
        }
        _ => {}
    }
    let mut resp = forward(&s, req).await;
    if matches!(s.mode, Mode::UploadLocationElsewhere)
        && let Some(loc) = resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok())
        && loc.contains("/blobs/uploads/")
    {
        let rest = loc.trim_start_matches(&s.own).trim_start_matches(&s.upstream).to_string();
        let moved = format!("{}{}", s.elsewhere, rest);
        resp.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&moved).unwrap());
    }
    resp
}

/// Two pages: the first names the second on the recorder's host; the second (asked with
/// `last=page1`) ends the listing.
fn link_page(s: &HostileState, path: &str, query: &str) -> Response {
    let catalog = path == "/v2/_catalog";
    let (items, next) = if query.contains("last=page1") { (vec!["page2"], None) } else { (vec!["page1"], Some(())) };
    let body = if catalog { json!({"repositories": items}) } else { json!({"name": "x", "tags": items}) };
    let mut resp = axum::Json(body).into_response();
    if next.is_some() {
        let link = format!("<{}{path}?last=page1&n=1>; rel=\"next\"", s.elsewhere);
        resp.headers_mut().insert(header::LINK, HeaderValue::from_str(&link).unwrap());
    }
    resp
}

/// Forwards a request to the open upstream without its credentials, streaming both ways;
/// `Location`s naming the upstream are rewritten to the front.
async fn forward(s: &HostileState, req: Request) -> Response {
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
    let mut builder = s.http.request(req.method().clone(), format!("{}{path}", s.upstream));
    for (name, value) in req.headers() {
        if !matches!(name.as_str(), "authorization" | "host" | "connection" | "transfer-encoding") {
            builder = builder.header(name, value);
        }
    }
    let body = req.into_body();
    if axum::body::HttpBody::size_hint(&body).exact() != Some(0) {
        builder = builder.body(reqwest::Body::wrap_stream(body.into_data_stream().map_err(std::io::Error::other)));
    }
    let upstream = match builder.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response(),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if matches!(name.as_str(), "connection" | "transfer-encoding") {
            continue;
        }
        if name == header::LOCATION
            && let Ok(v) = value.to_str()
        {
            headers.insert(header::LOCATION, HeaderValue::from_str(&v.replace(&s.upstream, &s.own)).unwrap());
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let status = upstream.status();
    let body = Body::from_stream(upstream.bytes_stream().map(|r| r.map_err(std::io::Error::other)));
    (status, headers, body).into_response()
}

/// A TCP server that accepts connections and never answers: a registry that hangs.
pub struct Silent {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Silent {
    pub async fn start() -> Self {
        let (listener, addr) = bind_loopback().await;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        Silent { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A TCP front that resets its first `n` connections (a registry restarting), then relays
/// bytes to `upstream`.
pub struct Flaky {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    reset: Arc<AtomicUsize>,
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Flaky {
    pub async fn start(upstream: SocketAddr, n: usize) -> Self {
        let (listener, addr) = bind_loopback().await;
        let reset = Arc::new(AtomicUsize::new(0));
        let refused = reset.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                if refused.load(Ordering::SeqCst) < n {
                    refused.fetch_add(1, Ordering::SeqCst);
                    // Linger 0: closing sends RST, which the client sees as a reset. (Deprecated
                    // because a non-zero linger blocks on drop; zero does not.)
                    #[allow(deprecated)]
                    let _ = conn.set_linger(Some(Duration::ZERO));
                    drop(conn);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                    }
                });
            }
        });
        Flaky { addr, task, reset }
    }

    /// How many connections were reset so far.
    pub fn resets(&self) -> usize {
        self.reset.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
