//! Small HTTP servers in front of (or instead of) a real registry, each on its own loopback
//! port: a forwarding proxy with injectable faults, a delay proxy, a proxy that adds the OCI
//! 1.1 referrers API that distribution 2.8 lacks, and a tiny registry serving corrupt content.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use acr_mirror::digest::Digest;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::bind_loopback;
use super::images::{OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, sha256};

/// Headers that belong to one hop and must not be forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Referrer descriptors by (repository, subject digest).
type ReferrerMap = HashMap<(String, String), Vec<Value>>;

#[derive(Clone, Debug)]
enum Fault {
    /// Answer the next `remaining` requests matching method and path substring with `status`.
    Status { method: Method, path: String, remaining: usize, status: u16, retry_after: Option<u64> },
    /// Answer every `every`-th request matching method and path substring with `status`
    /// (the others are forwarded): a fixed share of failures, deterministic.
    Every { method: Method, path: String, every: usize, seen: usize, status: u16, retry_after: Option<u64> },
    /// Cut the `nth` (1-based, counted from when the fault was set) PATCH to `/blobs/uploads/`
    /// after forwarding `after` bytes of its body.
    CutPatch { nth: usize, seen: usize, after: usize },
    /// Drop the connection of the next `remaining` requests, whatever they are, without
    /// forwarding them: a registry that went down (and comes back once they are spent).
    Down { remaining: usize },
    /// Forward the next `remaining` matching requests, then change the upstream's answer.
    Answer { method: Method, path: String, remaining: usize, change: Change },
}

/// How a forwarded answer is changed on its way back to the client.
#[derive(Clone, Debug)]
pub enum Change {
    /// The body breaks off after this many bytes (the connection is dropped; `Content-Length`
    /// still announces the whole body).
    Reset(usize),
    /// The body ends cleanly after this many bytes, with a `Content-Length` that says so: a
    /// source whose blob is shorter than its descriptor.
    Truncate(usize),
    /// The byte at this offset is flipped.
    Corrupt(usize),
    /// A space is appended to the body (a manifest whose bytes no longer match its digest);
    /// `Docker-Content-Digest` is left as the upstream sent it.
    AppendSpace,
    /// `Docker-Content-Digest` is replaced by the digest of other content.
    WrongDigest,
    /// Headers, then a body that never comes.
    Stall,
    /// Each body chunk is held back this long.
    Slow(Duration),
}

struct ProxyState {
    upstream: String,
    own: String,
    http: reqwest::Client,
    faults: Mutex<Vec<Fault>>,
    log: Mutex<Vec<(Method, String)>>,
    /// The requests a fault was applied to: (method, path with query).
    faulted: Mutex<Vec<(Method, String)>>,
    /// Requests the upstream did not answer (refused or dropped connection): answered 502.
    upstream_failures: AtomicUsize,
    delay: Duration,
    /// Forward blob upload `POST`s without their `mount`/`from` query, so the registry opens a
    /// plain session: a refused mount's 202 answer, as ACR gives one it cannot honour.
    refuse_mounts: AtomicBool,
    /// Referrers recorded from manifest PUTs, by (repository, subject digest); `None` when
    /// the referrers API is not emulated.
    referrers: Option<Mutex<ReferrerMap>>,
    /// See [`FaultProxy::hold_until_other`].
    rendezvous: Mutex<Option<Rendezvous>>,
}

/// One request held until another arrives (see [`FaultProxy::hold_until_other`]).
struct Rendezvous {
    method: Method,
    a: String,
    b: String,
    /// Matching requests still to let through before the one that is held.
    skip: usize,
    bound: Duration,
    /// The held request's pattern's other one, once a request is held.
    holding: Option<String>,
    arrived: Arc<tokio::sync::Notify>,
    /// `Some(true)` when the other request arrived while the held one waited, `Some(false)` when
    /// the bound ran out first.
    met: Arc<Mutex<Option<bool>>>,
}

/// A forwarding proxy in front of a registry. Bodies stream both ways; `Location` headers that
/// point at the upstream are rewritten to point at the proxy so a client keeps going through it.
pub struct FaultProxy {
    state: Arc<ProxyState>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream_url` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream_url: &str) -> Self {
        Self::start_with(upstream_url, Duration::ZERO, false).await
    }

    async fn start_with(upstream_url: &str, delay: Duration, referrers: bool) -> Self {
        let (listener, addr) = bind_loopback().await;
        let state = Arc::new(ProxyState {
            upstream: upstream_url.trim_end_matches('/').to_string(),
            own: format!("http://{addr}"),
            http: super::http_client(),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            faulted: Mutex::new(Vec::new()),
            upstream_failures: AtomicUsize::new(0),
            delay,
            refuse_mounts: AtomicBool::new(false),
            referrers: referrers.then(|| Mutex::new(HashMap::new())),
            rendezvous: Mutex::new(None),
        });
        let app = Router::new().fallback(forward).with_state(state.clone());
        let task = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<Conn>();
            axum::serve(AbortableListener(listener), service).await.expect("proxy server");
        });
        FaultProxy { state, addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Answers the next `n` requests whose method is `method` and whose path contains `path`
    /// with 429 and `Retry-After: 1`, without forwarding them.
    pub fn fail_429(&self, method: &str, path: &str, n: usize) {
        self.fail_with(method, path, n, 429, Some(1));
    }

    /// Answers the next `n` matching requests with 503, without forwarding them.
    pub fn fail_503(&self, method: &str, path: &str, n: usize) {
        self.fail_with(method, path, n, 503, None);
    }

    pub fn fail_with(&self, method: &str, path: &str, n: usize, status: u16, retry_after: Option<u64>) {
        let method = Method::from_bytes(method.as_bytes()).expect("HTTP method");
        self.state.faults.lock().unwrap().push(Fault::Status {
            method,
            path: path.into(),
            remaining: n,
            status,
            retry_after,
        });
    }

    /// Answers every `every`-th request whose method is `method` and whose path contains `path`
    /// with `status` (and `Retry-After` when given), forwarding the others.
    pub fn fail_every(&self, method: &str, path: &str, every: usize, status: u16, retry_after: Option<u64>) {
        let method = Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let path = path.into();
        self.state.faults.lock().unwrap().push(Fault::Every { method, path, every, seen: 0, status, retry_after });
    }

    /// Drops the connection of the next `n` requests without forwarding them: the upstream
    /// looks killed until they are spent, then restarted.
    pub fn go_down(&self, n: usize) {
        self.state.faults.lock().unwrap().push(Fault::Down { remaining: n });
    }

    /// Forwards the next `n` requests whose method is `method` and whose path contains `path`,
    /// changing each answer as `change` says.
    pub fn change_answers(&self, method: &str, path: &str, n: usize, change: Change) {
        let method = Method::from_bytes(method.as_bytes()).expect("HTTP method");
        self.state.faults.lock().unwrap().push(Fault::Answer { method, path: path.into(), remaining: n, change });
    }

    /// Cuts the `nth` PATCH to `/blobs/uploads/` from now on (1 = the next one): its first
    /// `after_bytes` bytes reach the upstream, then both connections are dropped, so the
    /// upstream holds a partial chunk and the client sees the connection fail with no response.
    pub fn cut_patch(&self, nth: usize, after_bytes: usize) {
        assert!(nth >= 1, "nth is 1-based");
        self.state.faults.lock().unwrap().push(Fault::CutPatch { nth, seen: 0, after: after_bytes });
    }

    /// From now on every cross-repository mount is refused: the upload `POST` reaches the
    /// registry without `mount`/`from`, which answers 202 with a session, so the blob is streamed.
    /// Counted requests keep the query the client sent.
    pub fn refuse_mounts(&self) {
        self.state.refuse_mounts.store(true, Ordering::SeqCst);
    }

    /// Holds one request until another arrives, to show that a client sends two requests
    /// together rather than one after the other's answer: of the requests with `method` whose
    /// path contains `a` or `b`, the first after `skip` of them is held (not forwarded) until a
    /// request matching the other pattern arrives (any other matching one when `a == b`), or
    /// for `bound` at most; then it is forwarded. [`FaultProxy::rendezvous_met`] says which.
    /// A client that waits for the held answer before sending the other request cannot meet it.
    pub fn hold_until_other(&self, method: &str, a: &str, b: &str, skip: usize, bound: Duration) {
        *self.state.rendezvous.lock().unwrap() = Some(Rendezvous {
            method: Method::from_bytes(method.as_bytes()).expect("HTTP method"),
            a: a.into(),
            b: b.into(),
            skip,
            bound,
            holding: None,
            arrived: Arc::new(tokio::sync::Notify::new()),
            met: Arc::new(Mutex::new(None)),
        });
    }

    /// `None` until a request was held and released; then whether the other one arrived while
    /// it was held.
    pub fn rendezvous_met(&self) -> Option<bool> {
        self.state.rendezvous.lock().unwrap().as_ref().and_then(|r| *r.met.lock().unwrap())
    }

    /// Removes every fault not yet spent.
    pub fn clear_faults(&self) {
        self.state.faults.lock().unwrap().clear();
    }

    /// How many requests with this method had a path (with query) containing `path`.
    /// Faulted requests count too.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.state.log.lock().unwrap().iter().filter(|(m, p)| m.as_str() == method && p.contains(path)).count()
    }

    /// How many requests with this method and a path (with query) containing `path` a fault was
    /// applied to: what a fault test asserts to show its fault fired. Counts survive
    /// [`FaultProxy::clear_faults`].
    pub fn faulted(&self, method: &str, path: &str) -> usize {
        self.state.faulted.lock().unwrap().iter().filter(|(m, p)| m.as_str() == method && p.contains(path)).count()
    }

    /// How many requests, of any method, a fault was applied to.
    pub fn faulted_all(&self) -> usize {
        self.state.faulted.lock().unwrap().len()
    }

    /// Every request a fault was applied to, in order: (method, path with query).
    pub fn faulted_requests(&self) -> Vec<(String, String)> {
        self.state.faulted.lock().unwrap().iter().map(|(m, p)| (m.to_string(), p.clone())).collect()
    }

    /// How many requests the upstream did not answer (its port refused or the connection
    /// dropped before an answer), each answered 502: a registry that was down meanwhile.
    pub fn upstream_failures(&self) -> usize {
        self.state.upstream_failures.load(Ordering::SeqCst)
    }

    /// Every request seen: (method, path with query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.log.lock().unwrap().iter().map(|(m, p)| (m.to_string(), p.clone())).collect()
    }
}

/// A proxy that adds a fixed delay each way (before forwarding the request, and before
/// returning the response), for a high-latency benchmark profile.
pub struct DelayProxy(FaultProxy);

impl DelayProxy {
    pub async fn start(upstream_url: &str, delay_each_way: Duration) -> Self {
        DelayProxy(FaultProxy::start_with(upstream_url, delay_each_way, false).await)
    }
}

impl Deref for DelayProxy {
    type Target = FaultProxy;
    fn deref(&self) -> &FaultProxy {
        &self.0
    }
}

/// A proxy that implements the OCI 1.1 referrers API on top of a registry without one:
/// manifests with a `subject` PUT through it are recorded (and answered with `OCI-Subject`),
/// and `GET /v2/<name>/referrers/<digest>[?artifactType=]` returns them as an OCI index.
/// Manifests pushed to the upstream directly are not seen.
pub struct ReferrersProxy(FaultProxy);

impl ReferrersProxy {
    pub async fn start(upstream_url: &str) -> Self {
        ReferrersProxy(FaultProxy::start_with(upstream_url, Duration::ZERO, true).await)
    }

    /// The descriptors recorded for `subject` in `repo`.
    pub fn referrers(&self, repo: &str, subject: &Digest) -> Vec<Value> {
        let map = self.0.state.referrers.as_ref().unwrap().lock().unwrap();
        map.get(&(repo.to_string(), subject.to_string())).cloned().unwrap_or_default()
    }
}

impl Deref for ReferrersProxy {
    type Target = FaultProxy;
    fn deref(&self) -> &FaultProxy {
        &self.0
    }
}

// ---- connections that a handler can cut ----

/// Per-connection info handed to handlers: setting `abort` makes every further read or write
/// on the connection fail, so the server drops it without sending a response.
#[derive(Clone, Debug)]
struct Conn {
    abort: Arc<AtomicBool>,
}

struct AbortableListener(TcpListener);

struct AbortableStream {
    inner: TcpStream,
    abort: Arc<AtomicBool>,
}

impl axum::serve::Listener for AbortableListener {
    type Io = AbortableStream;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((inner, _)) = self.0.accept().await {
                let abort = Arc::new(AtomicBool::new(false));
                return (AbortableStream { inner, abort: abort.clone() }, Conn { abort });
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Conn { abort: Arc::new(AtomicBool::new(false)) })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, AbortableListener>> for Conn {
    fn connect_info(stream: axum::serve::IncomingStream<'_, AbortableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

fn cut() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection cut by FaultProxy")
}

impl AsyncRead for AbortableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.abort.load(Ordering::SeqCst) {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AbortableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.abort.load(Ordering::SeqCst) {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---- forwarding ----

enum Action {
    Forward,
    Answer(u16, Option<u64>),
    Cut(usize),
    Change(Change),
    Drop,
}

fn decide(state: &ProxyState, method: &Method, path: &str) -> Action {
    let mut faults = state.faults.lock().unwrap();
    let is_upload_patch = *method == Method::PATCH && path.contains("/blobs/uploads/");
    let mut action = Action::Forward;
    for fault in faults.iter_mut() {
        match fault {
            Fault::Status { method: m, path: p, remaining, status, retry_after }
                if *remaining > 0 && m == method && path.contains(p.as_str()) =>
            {
                *remaining -= 1;
                action = Action::Answer(*status, *retry_after);
                break;
            }
            Fault::Every { method: m, path: p, every, seen, status, retry_after }
                if m == method && path.contains(p.as_str()) =>
            {
                *seen += 1;
                if *seen % *every == 0 {
                    action = Action::Answer(*status, *retry_after);
                    break;
                }
            }
            Fault::Answer { method: m, path: p, remaining, change }
                if *remaining > 0 && m == method && path.contains(p.as_str()) =>
            {
                *remaining -= 1;
                action = Action::Change(change.clone());
                break;
            }
            Fault::Down { remaining } if *remaining > 0 => {
                *remaining -= 1;
                action = Action::Drop;
                break;
            }
            Fault::CutPatch { nth, seen, after } if is_upload_patch && *seen < *nth => {
                *seen += 1;
                if seen == nth {
                    action = Action::Cut(*after);
                    break;
                }
            }
            _ => {}
        }
    }
    action
}

/// For [`FaultProxy::hold_until_other`]: wakes a held request when this one is its other, or
/// says to hold this one (what to wait on, for how long, where to record it).
#[allow(clippy::type_complexity)]
fn rendezvous(
    state: &ProxyState,
    method: &Method,
    path: &str,
) -> Option<(Arc<tokio::sync::Notify>, Duration, Arc<Mutex<Option<bool>>>)> {
    let mut guard = state.rendezvous.lock().unwrap();
    let r = guard.as_mut()?;
    if *method != r.method {
        return None;
    }
    if let Some(other) = &r.holding {
        if path.contains(other.as_str()) && r.met.lock().unwrap().is_none() {
            r.arrived.notify_one();
        }
        return None;
    }
    let other = if path.contains(r.a.as_str()) {
        r.b.clone()
    } else if path.contains(r.b.as_str()) {
        r.a.clone()
    } else {
        return None;
    };
    if r.skip > 0 {
        r.skip -= 1;
        return None;
    }
    r.holding = Some(other);
    Some((r.arrived.clone(), r.bound, r.met.clone()))
}

async fn forward(State(state): State<Arc<ProxyState>>, ConnectInfo(conn): ConnectInfo<Conn>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
    state.log.lock().unwrap().push((method.clone(), path.clone()));
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    if let Some((arrived, bound, met)) = rendezvous(&state, &method, &path) {
        let came = tokio::time::timeout(bound, arrived.notified()).await.is_ok();
        *met.lock().unwrap() = Some(came);
    }

    if state.referrers.is_some()
        && method == Method::GET
        && let Some((repo, subject)) = split_path(req.uri().path(), "/referrers/")
    {
        return referrers_index(&state, &repo, &subject, req.uri().query());
    }

    let mut change = None;
    let action = decide(&state, &method, &path);
    if !matches!(action, Action::Forward) {
        state.faulted.lock().unwrap().push((method.clone(), path.clone()));
    }
    let cut_after = match action {
        Action::Answer(status, retry_after) => {
            let code = if status == 429 { "TOOMANYREQUESTS" } else { "UNAVAILABLE" };
            let mut resp = (
                StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({"errors": [{"code": code, "message": "injected by FaultProxy"}]})),
            )
                .into_response();
            if let Some(secs) = retry_after {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return resp;
        }
        Action::Cut(after) => Some(after),
        Action::Drop => {
            conn.abort.store(true, Ordering::SeqCst);
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Action::Change(c) => {
            change = Some(c);
            None
        }
        Action::Forward => None,
    };

    if let Some(after) = cut_after {
        let (parts, body) = req.into_parts();
        send_truncated(&state.upstream, &method, &path, &parts.headers, body, after).await;
        // The upstream has seen `after` bytes and the end of the stream; now drop the client.
        conn.abort.store(true, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }

    let forwarded = match path.split_once('?') {
        Some((p, q))
            if method == Method::POST && q.contains("mount=") && state.refuse_mounts.load(Ordering::SeqCst) =>
        {
            p.to_string()
        }
        _ => path.clone(),
    };
    let mut builder = state.http.request(method.clone(), format!("{}{}", state.upstream, forwarded));
    for (name, value) in req.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            builder = builder.header(name, value);
        }
    }
    let record_manifest = state.referrers.is_some() && method == Method::PUT;
    let manifest_target = if record_manifest { split_path(req.uri().path(), "/manifests/") } else { None };

    let mut manifest_bytes = None;
    let body = req.into_body();
    let builder = if manifest_target.is_some() {
        let bytes = axum::body::to_bytes(body, 16 << 20).await.expect("manifest body");
        manifest_bytes = Some(bytes.clone());
        builder.body(bytes)
    } else if axum::body::HttpBody::size_hint(&body).exact() == Some(0) {
        // No body at all (GET, HEAD, DELETE, an empty POST): do not turn it into a chunked one.
        builder
    } else {
        builder.body(reqwest::Body::wrap_stream(body.into_data_stream().map_err(io::Error::other)))
    };

    let upstream = match builder.send().await {
        Ok(r) => r,
        Err(e) => {
            state.upstream_failures.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response();
        }
    };
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }

    let status = upstream.status();
    let mut headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if name == header::LOCATION
            && let Ok(loc) = value.to_str()
            && let Some(rest) = loc.strip_prefix(&state.upstream)
        {
            headers.append(name, HeaderValue::from_str(&format!("{}{rest}", state.own)).unwrap());
            continue;
        }
        headers.append(name, value.clone());
    }
    if let (Some((repo, _)), Some(bytes)) = (&manifest_target, &manifest_bytes)
        && status == StatusCode::CREATED
        && let Some(subject) = record_referrer(&state, repo, bytes)
    {
        headers.insert("oci-subject", HeaderValue::from_str(&subject).unwrap());
    }
    let body = upstream.bytes_stream().map_err(io::Error::other).boxed();
    let body = match change {
        Some(c) => changed(c, &mut headers, body),
        None => body,
    };
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

type BodyStream = futures::stream::BoxStream<'static, Result<Bytes, io::Error>>;

/// Applies `change` to an answer's headers and body.
fn changed(change: Change, headers: &mut HeaderMap, body: BodyStream) -> BodyStream {
    match change {
        Change::Reset(after) => {
            let mut sent = 0usize;
            body.map(move |chunk| {
                let b = chunk?;
                if sent >= after {
                    return Err(io::Error::new(io::ErrorKind::ConnectionReset, "body cut by FaultProxy"));
                }
                let b = b.slice(..b.len().min(after - sent));
                sent += b.len();
                Ok(b)
            })
            .boxed()
        }
        Change::Truncate(after) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(after));
            let mut sent = 0usize;
            body.map_ok(move |b| {
                let b = b.slice(..b.len().min(after - sent));
                sent += b.len();
                b
            })
            .try_filter(|b| futures::future::ready(!b.is_empty()))
            .boxed()
        }
        Change::Corrupt(at) => {
            let mut offset = 0usize;
            body.map_ok(move |b| {
                let start = offset;
                offset += b.len();
                if (start..offset).contains(&at) {
                    let mut v = b.to_vec();
                    v[at - start] ^= 0xff;
                    return Bytes::from(v);
                }
                b
            })
            .boxed()
        }
        Change::AppendSpace => {
            if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len + 1));
            }
            body.chain(futures::stream::once(async { Ok(Bytes::from_static(b" ")) })).boxed()
        }
        Change::WrongDigest => {
            let other = sha256(b"not what was pushed");
            headers.insert("docker-content-digest", HeaderValue::from_str(other.as_str()).unwrap());
            body
        }
        Change::Stall => futures::stream::pending().boxed(),
        Change::Slow(pause) => body
            .then(move |chunk| async move {
                tokio::time::sleep(pause).await;
                chunk
            })
            .boxed(),
    }
}

/// Sends the request to the upstream over a raw connection with only the first `limit` bytes
/// of its body, half-closes, and waits until the upstream answers or closes. A raw socket is
/// used because an HTTP client may drop buffered body bytes when the body fails; this way the
/// upstream deterministically receives exactly `limit` bytes before the end of the stream.
async fn send_truncated(upstream: &str, method: &Method, path: &str, headers: &HeaderMap, body: Body, limit: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut prefix = Vec::with_capacity(limit);
    let mut stream = body.into_data_stream();
    while prefix.len() < limit {
        match stream.next().await {
            Some(Ok(chunk)) => prefix.extend_from_slice(&chunk[..chunk.len().min(limit - prefix.len())]),
            _ => break,
        }
    }
    let host = upstream.trim_start_matches("http://");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    let chunked = !headers.contains_key(header::CONTENT_LENGTH);
    for (name, value) in headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("")));
        }
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if chunked {
        out.extend_from_slice(format!("{:x}\r\n", prefix.len()).as_bytes());
        out.extend_from_slice(&prefix);
        out.extend_from_slice(b"\r\n"); // no terminating 0-chunk: the body ends early
    } else {
        out.extend_from_slice(&prefix);
    }
    let mut conn = TcpStream::connect(host).await.expect("connect upstream");
    conn.write_all(&out).await.expect("write truncated request");
    conn.shutdown().await.expect("half-close upstream");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut sink)).await;
}

/// Splits `/v2/<name><marker><rest>` into `(name, rest)`.
fn split_path(path: &str, marker: &str) -> Option<(String, String)> {
    let path = path.strip_prefix("/v2/")?;
    let (name, rest) = path.rsplit_once(marker)?;
    (!name.is_empty() && !rest.is_empty() && !rest.contains('/')).then(|| (name.to_string(), rest.to_string()))
}

/// Records a PUT manifest that has a `subject`; returns the subject digest.
fn record_referrer(state: &ProxyState, repo: &str, bytes: &Bytes) -> Option<String> {
    let m: Value = serde_json::from_slice(bytes).ok()?;
    let subject = m["subject"]["digest"].as_str()?.to_string();
    let artifact_type = m["artifactType"]
        .as_str()
        .or_else(|| m["config"]["mediaType"].as_str().filter(|t| *t != OCI_EMPTY))
        .map(str::to_string);
    let mut entry = json!({
        "mediaType": m["mediaType"].as_str().unwrap_or(OCI_MANIFEST),
        "digest": sha256(bytes).as_str(),
        "size": bytes.len(),
    });
    if let Some(at) = artifact_type {
        entry["artifactType"] = json!(at);
    }
    if m["annotations"].is_object() {
        entry["annotations"] = m["annotations"].clone();
    }
    let mut map = state.referrers.as_ref()?.lock().unwrap();
    let list = map.entry((repo.to_string(), subject.clone())).or_default();
    if !list.iter().any(|e| e["digest"] == entry["digest"]) {
        list.push(entry);
    }
    Some(subject)
}

fn referrers_index(state: &ProxyState, repo: &str, subject: &str, query: Option<&str>) -> Response {
    let filter = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "artifactType").map(|(_, v)| v.into_owned())
    });
    let map = state.referrers.as_ref().unwrap().lock().unwrap();
    let all = map.get(&(repo.to_string(), subject.to_string())).cloned().unwrap_or_default();
    let manifests: Vec<Value> =
        all.into_iter().filter(|e| filter.as_ref().is_none_or(|f| e["artifactType"].as_str() == Some(f))).collect();
    let body =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})).unwrap();
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if filter.is_some() {
        resp.headers_mut().insert("oci-filters-applied", HeaderValue::from_static("artifactType"));
    }
    resp
}

// ---- a registry serving bad content ----

/// A tiny anonymous registry of our own serving, in repository [`BadBlobServer::REPO`]:
/// tag `v1`, an OCI image whose one layer is served with the right size and the wrong bytes
/// (manifest and config are correct), and tag `huge`, a manifest over 4 MiB.
pub struct BadBlobServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    pub manifest_digest: Digest,
    pub config: (Digest, u64),
    /// The digest the manifest promises for the layer, and its size.
    pub layer: (Digest, u64),
    pub huge_digest: Digest,
    pub huge_size: u64,
}

impl Drop for BadBlobServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct BadContent {
    manifests: HashMap<String, Bytes>,
    blobs: HashMap<String, Bytes>,
}

impl BadBlobServer {
    pub const REPO: &str = "bad/image";
    pub const TAG: &str = "v1";
    pub const HUGE_TAG: &str = "huge";

    pub async fn start() -> Self {
        let config =
            Bytes::from_static(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
        let good_layer = Bytes::from(vec![7u8; 10_000]);
        let bad_layer = Bytes::from(vec![8u8; 10_000]);
        let (config_d, layer_d) = (sha256(&config), sha256(&good_layer));
        let manifest = |annotations: Value| {
            Bytes::from(
                serde_json::to_vec(&json!({
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": config_d.as_str(), "size": config.len()},
                    "layers": [{"mediaType": OCI_LAYER, "digest": layer_d.as_str(), "size": good_layer.len()}],
                    "annotations": annotations,
                }))
                .unwrap(),
            )
        };
        let small = manifest(json!({"org.example": "bad layer"}));
        let huge = manifest(json!({"org.example.padding": "x".repeat(4 * 1024 * 1024 + 100)}));
        let (small_d, huge_d) = (sha256(&small), sha256(&huge));
        let mut manifests = HashMap::new();
        manifests.insert(Self::TAG.to_string(), small.clone());
        manifests.insert(small_d.to_string(), small.clone());
        manifests.insert(Self::HUGE_TAG.to_string(), huge.clone());
        manifests.insert(huge_d.to_string(), huge.clone());
        let mut blobs = HashMap::new();
        blobs.insert(config_d.to_string(), config.clone());
        blobs.insert(layer_d.to_string(), bad_layer);
        let content = Arc::new(BadContent { manifests, blobs });

        let (listener, addr) = bind_loopback().await;
        let app = Router::new().fallback(serve_bad).with_state(content);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("bad blob server");
        });
        BadBlobServer {
            addr,
            task,
            manifest_digest: small_d,
            config: (config_d, config.len() as u64),
            layer: (layer_d, good_layer.len() as u64),
            huge_digest: huge_d,
            huge_size: huge.len() as u64,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

async fn serve_bad(State(content): State<Arc<BadContent>>, method: Method, uri: axum::http::Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let path = uri.path();
    if path == "/v2/" || path == "/v2" {
        return axum::Json(json!({})).into_response();
    }
    let found = if let Some((repo, reference)) = split_path(path, "/manifests/") {
        (repo == BadBlobServer::REPO)
            .then(|| content.manifests.get(&reference))
            .flatten()
            .map(|b| (b.clone(), OCI_MANIFEST, sha256(b).to_string()))
    } else if let Some((repo, digest)) = split_path(path, "/blobs/") {
        (repo == BadBlobServer::REPO)
            .then(|| content.blobs.get(&digest))
            .flatten()
            // The registry claims the requested digest, whatever the bytes are.
            .map(|b| (b.clone(), "application/octet-stream", digest.clone()))
    } else {
        None
    };
    let Some((bytes, content_type, digest)) = found else {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"errors": [{"code": "NOT_FOUND", "message": path}]})))
            .into_response();
    };
    let len = bytes.len();
    let mut resp = if method == Method::HEAD { Response::new(Body::empty()) } else { Response::new(Body::from(bytes)) };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert("docker-content-digest", HeaderValue::from_str(&digest).unwrap());
    resp
}
