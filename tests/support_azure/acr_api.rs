//! Our stand-in for ACR's own REST API (`Azure.ContainerRegistry` data plane, stable 2021-07-01,
//! <https://learn.microsoft.com/rest/api/containerregistry/>) in front of a real
//! `docker-registry`: an axum reverse proxy that
//!
//! - answers `GET /acr/v1/_catalog`, `/acr/v1/{name}/_tags` and `/acr/v1/{name}/_manifests` by
//!   listing and reading the real registry behind it, in the spec's JSON shapes
//!   (`Repositories`, `TagList`, `AcrManifests` with `ManifestAttributesBase` items and
//!   `references` for indexes), paged with `n`/`last` and a `Link: <…>; rel="next"` header, and a
//!   404 `NAME_UNKNOWN` JSON error for a repository that does not exist;
//! - gives each tag in `_tags` a `lastUpdateTime` (a fixed old time unless a test sets one with
//!   [`AcrApiStandIn::set_tag_time`]);
//! - answers ACR's untag, `DELETE /acr/v1/{name}/_tags/{reference}` (202; 404 `TAG_UNKNOWN`),
//!   by removing the tag from the registry's storage (`repositories/{name}/_manifests/tags/{tag}`),
//!   which leaves the manifest as ACR does: distribution has no untag API of its own;
//! - can move a tag right after serving a `_tags` listing ([`AcrApiStandIn::move_after_listing`]),
//!   so a test can put a change between a client's listing and its next request;
//! - forwards everything else (`/v2/…`) untouched, rewriting `Location` headers to itself;
//! - can add `X-Azure-Origin: upstream` to the first N answers (`GET` or `HEAD`) for each
//!   manifest, as ACR does on both while a cache rule still serves a manifest from upstream
//!   (Azure/acr#862: "the response headers of a HEAD/GET request");
//! - counts requests by kind, so tests can assert what a client asked.
//!
//! `_manifests` lists the manifests reachable from tags (each tagged manifest and the children of
//! tagged indexes): distribution has no API to list untagged manifests, which real ACR includes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
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
const CREATED: &str = "2026-01-01T00:00:00.0000000Z";

pub struct ApiState {
    upstream: String,
    own: Mutex<String>,
    http: reqwest::Client,
    /// Whether `/acr/v1/…` is answered; off, it is forwarded (and the registry answers 404).
    pub acr_api: std::sync::atomic::AtomicBool,
    /// Items per page of the `/acr/v1/…` listings (ACR caps `n` on its side, too).
    pub page_size: AtomicUsize,
    /// Add `X-Azure-Origin: upstream` to the first this-many answers (`GET` or `HEAD`) for each
    /// manifest, counted by its digest.
    pub upstream_answers: AtomicUsize,
    answers_seen: Mutex<HashMap<String, usize>>,
    /// Every request: (method, path and query).
    log: Mutex<Vec<(String, String)>>,
    /// `lastUpdateTime` per (repository, tag), where a test set one.
    tag_times: Mutex<HashMap<(String, String), String>>,
    /// The storage root of the registry behind, for untagging.
    storage: Mutex<Option<std::path::PathBuf>>,
    /// After the next `_tags` listing of this repository: point this tag at this digest.
    move_tag: Mutex<Option<(String, String, String)>>,
    /// Set once `move_tag` was carried out.
    pub moved: std::sync::atomic::AtomicBool,
}

pub struct AcrApiStandIn {
    pub url: String,
    pub state: Arc<ApiState>,
}

impl AcrApiStandIn {
    /// Starts the stand-in in front of the registry at `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> AcrApiStandIn {
        let state = Arc::new(ApiState {
            upstream: upstream.trim_end_matches('/').to_string(),
            own: Mutex::new(String::new()),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap(),
            acr_api: true.into(),
            page_size: AtomicUsize::new(100),
            upstream_answers: AtomicUsize::new(0),
            answers_seen: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            tag_times: Mutex::new(HashMap::new()),
            storage: Mutex::new(None),
            move_tag: Mutex::new(None),
            moved: false.into(),
        });
        let router = axum::Router::new().fallback(handle).with_state(state.clone());
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", tcp.local_addr().unwrap());
        *state.own.lock().unwrap() = url.clone();
        tokio::spawn(async move { axum::serve(tcp, router).await.unwrap() });
        AcrApiStandIn { url, state }
    }

    pub fn host(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// Every request so far: (method, path and query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.state.log.lock().unwrap().clear();
    }

    /// Makes ACR's untag available: `storage` is the registry's storage root
    /// (`TestRegistry::storage_dir`).
    pub fn untag_in(&self, storage: &std::path::Path) {
        *self.state.storage.lock().unwrap() = Some(storage.to_path_buf());
    }

    /// The `lastUpdateTime` `_tags` gives `repo:tag` (RFC 3339).
    pub fn set_tag_time(&self, repo: &str, tag: &str, time: &str) {
        self.state.tag_times.lock().unwrap().insert((repo.into(), tag.into()), time.into());
    }

    /// Right after the next `_tags` listing of `repo` is built, points `tag` at the manifest
    /// `digest` (already in the repository), as a push landing between a client's listing and
    /// its next request would. `state.moved` says when it happened.
    pub fn move_after_listing(&self, repo: &str, tag: &str, digest: &str) {
        *self.state.move_tag.lock().unwrap() = Some((repo.into(), tag.into(), digest.into()));
    }

    /// Requests whose method is `method` and whose path contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.requests().iter().filter(|(m, p)| m == method && p.contains(part)).count()
    }
}

fn acr_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"errors": [{"code": code, "message": message}]}))).into_response()
}

async fn handle(State(s): State<Arc<ApiState>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    s.log.lock().unwrap().push((method.to_string(), req.uri().path_and_query().map(|p| p.to_string()).unwrap()));
    if s.acr_api.load(Ordering::SeqCst)
        && method == Method::DELETE
        && let Some((repo, tag)) = path.strip_prefix("/acr/v1/").and_then(|r| r.rsplit_once("/_tags/"))
    {
        return untag(&s, repo, tag);
    }
    if s.acr_api.load(Ordering::SeqCst) && method == Method::GET {
        if path == "/acr/v1/_catalog" {
            return catalog(&s, &query).await;
        }
        if let Some(rest) = path.strip_prefix("/acr/v1/") {
            if let Some(repo) = rest.strip_suffix("/_tags") {
                return tags(&s, repo, &query).await;
            }
            if let Some(repo) = rest.strip_suffix("/_manifests") {
                return manifests(&s, repo, &query).await;
            }
        }
    }
    forward(&s, req).await
}

/// Pages `items` (sorted by `key`) after `last`, `n` at a time (capped at the page size), and
/// builds the `Link` to the next page when more remain.
fn page<T: Clone>(
    s: &ApiState,
    path: &str,
    items: &[T],
    key: impl Fn(&T) -> String,
    q: &HashMap<String, String>,
) -> (Vec<T>, Option<String>) {
    let cap = s.page_size.load(Ordering::SeqCst).max(1);
    let n = q.get("n").and_then(|n| n.parse::<usize>().ok()).unwrap_or(cap).clamp(1, cap);
    let start = match q.get("last") {
        Some(last) => items.iter().position(|i| key(i) > *last).unwrap_or(items.len()),
        None => 0,
    };
    let chunk: Vec<T> = items[start..].iter().take(n).cloned().collect();
    let next = (start + chunk.len() < items.len()).then(|| {
        let last: String = url::form_urlencoded::byte_serialize(key(chunk.last().unwrap()).as_bytes()).collect();
        format!("<{path}?last={last}&n={n}&orderby=>; rel=\"next\"")
    });
    (chunk, next)
}

fn with_link(body: Value, link: Option<String>) -> Response {
    let mut resp = axum::Json(body).into_response();
    if let Some(l) = link {
        resp.headers_mut().insert(header::LINK, HeaderValue::from_str(&l).unwrap());
    }
    resp
}

async fn upstream_json(s: &ApiState, path: &str) -> Option<Value> {
    let r = s.http.get(format!("{}{path}", s.upstream)).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

async fn all_repositories(s: &ApiState) -> Vec<String> {
    let v = upstream_json(s, "/v2/_catalog?n=1000").await.unwrap_or_default();
    let mut repos: Vec<String> =
        v["repositories"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(String::from)).collect();
    repos.sort();
    repos
}

async fn all_tags(s: &ApiState, repo: &str) -> Option<Vec<String>> {
    let v = upstream_json(s, &format!("/v2/{repo}/tags/list?n=1000")).await?;
    let mut tags: Vec<String> =
        v["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(String::from)).collect();
    tags.sort();
    Some(tags)
}

/// `GET /v2/{repo}/manifests/{reference}` from the registry: (digest, media type, bytes).
async fn manifest(s: &ApiState, repo: &str, reference: &str) -> Option<(String, String, Vec<u8>)> {
    let r = s
        .http
        .get(format!("{}/v2/{repo}/manifests/{reference}", s.upstream))
        .header(header::ACCEPT, ACCEPT_ALL)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let digest = r.headers().get("docker-content-digest")?.to_str().ok()?.to_string();
    let media_type = r.headers().get(header::CONTENT_TYPE)?.to_str().ok()?.to_string();
    Some((digest, media_type, r.bytes().await.ok()?.to_vec()))
}

fn changeable() -> Value {
    json!({"deleteEnabled": true, "writeEnabled": true, "readEnabled": true, "listEnabled": true})
}

async fn catalog(s: &ApiState, q: &HashMap<String, String>) -> Response {
    let repos = all_repositories(s).await;
    let (chunk, link) = page(s, "/acr/v1/_catalog", &repos, |r| r.clone(), q);
    with_link(json!({"repositories": chunk}), link)
}

async fn tags(s: &ApiState, repo: &str, q: &HashMap<String, String>) -> Response {
    let Some(names) = all_tags(s, repo).await else {
        return acr_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository name not known to registry");
    };
    let (chunk, link) = page(s, &format!("/acr/v1/{repo}/_tags"), &names, |t| t.clone(), q);
    let mut out = Vec::new();
    for t in chunk {
        let Some((digest, _, _)) = manifest(s, repo, &t).await else { continue };
        let updated = s.tag_times.lock().unwrap().get(&(repo.to_string(), t.clone())).cloned();
        out.push(json!({
            "name": t, "digest": digest, "createdTime": CREATED, "lastUpdateTime": updated.as_deref().unwrap_or(CREATED),
            "signed": false, "changeableAttributes": changeable(),
        }));
    }
    let pending = s.move_tag.lock().unwrap().take_if(|(r, _, _)| r == repo);
    if let Some((_, tag, digest)) = pending {
        let (_, media_type, bytes) = manifest(s, repo, &digest).await.expect("the manifest to move the tag to");
        let put = s
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", s.upstream))
            .header(header::CONTENT_TYPE, media_type)
            .body(bytes)
            .send()
            .await
            .expect("PUT the moved tag");
        assert_eq!(put.status(), StatusCode::CREATED, "moving {repo}:{tag}");
        s.moved.store(true, Ordering::SeqCst);
    }
    with_link(
        json!({"registry": s.own.lock().unwrap().trim_start_matches("http://"), "imageName": repo, "tags": out}),
        link,
    )
}

/// `DELETE /acr/v1/{repo}/_tags/{tag}`: the tag's folder goes from the registry's storage, the
/// manifest stays (ACR's untag).
fn untag(s: &ApiState, repo: &str, tag: &str) -> Response {
    let Some(storage) = s.storage.lock().unwrap().clone() else {
        return acr_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "untag is not set up in this stand-in");
    };
    let dir = storage.join("docker/registry/v2/repositories").join(repo).join("_manifests/tags").join(tag);
    if tag.is_empty() || tag.starts_with('.') || tag.contains('/') || !dir.is_dir() {
        return acr_error(StatusCode::NOT_FOUND, "TAG_UNKNOWN", "the specified tag does not exist");
    }
    std::fs::remove_dir_all(&dir).expect("remove the tag from storage");
    StatusCode::ACCEPTED.into_response()
}

async fn manifests(s: &ApiState, repo: &str, q: &HashMap<String, String>) -> Response {
    let Some(names) = all_tags(s, repo).await else {
        return acr_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository name not known to registry");
    };
    // digest → attributes, built from every tag and the children of tagged indexes.
    let mut all: BTreeMap<String, Value> = BTreeMap::new();
    for t in &names {
        let Some((digest, media_type, bytes)) = manifest(s, repo, t).await else { continue };
        if let Some(entry) = all.get_mut(&digest) {
            entry["tags"].as_array_mut().unwrap().push(json!(t));
            continue;
        }
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let mut attrs = json!({
            "digest": digest, "imageSize": bytes.len(), "createdTime": CREATED, "lastUpdateTime": CREATED,
            "mediaType": media_type, "tags": [t], "changeableAttributes": changeable(),
        });
        if let Some(children) = parsed["manifests"].as_array() {
            let refs: Vec<Value> = children
                .iter()
                .map(|c| json!({"digest": c["digest"], "architecture": c["platform"]["architecture"], "os": c["platform"]["os"]}))
                .collect();
            attrs["references"] = json!(refs);
            for c in children {
                let d = c["digest"].as_str().unwrap_or_default().to_string();
                if all.contains_key(&d) {
                    continue;
                }
                // A child is listed only when the registry really has it.
                if let Some((cd, cm, cb)) = manifest(s, repo, &d).await {
                    all.insert(
                        cd.clone(),
                        json!({
                            "digest": cd, "imageSize": cb.len(), "createdTime": CREATED, "lastUpdateTime": CREATED,
                            "mediaType": cm, "architecture": c["platform"]["architecture"], "os": c["platform"]["os"],
                            "tags": [], "changeableAttributes": changeable(),
                        }),
                    );
                }
            }
        } else {
            attrs["configMediaType"] = parsed["config"]["mediaType"].clone();
        }
        all.insert(digest, attrs);
    }
    let items: Vec<Value> = all.into_values().collect();
    let (chunk, link) =
        page(s, &format!("/acr/v1/{repo}/_manifests"), &items, |m| m["digest"].as_str().unwrap_or("").to_string(), q);
    with_link(
        json!({"registry": s.own.lock().unwrap().trim_start_matches("http://"), "imageName": repo, "manifests": chunk}),
        link,
    )
}

async fn forward(s: &ApiState, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
    let is_manifest_read =
        (method == Method::HEAD || method == Method::GET) && req.uri().path().contains("/manifests/");
    let mut builder = s.http.request(method.clone(), format!("{}{path}", s.upstream));
    for (name, value) in req.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            builder = builder.header(name, value);
        }
    }
    let body = axum::body::to_bytes(req.into_body(), 256 << 20).await.unwrap_or_default();
    if !body.is_empty() {
        builder = builder.body(body);
    }
    let upstream = match builder.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response(),
    };
    let status = upstream.status();
    let own = s.own.lock().unwrap().clone();
    let mut headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if name == header::LOCATION
            && let Ok(loc) = value.to_str()
            && let Some(rest) = loc.strip_prefix(&s.upstream)
        {
            headers.append(name, HeaderValue::from_str(&format!("{own}{rest}")).unwrap());
            continue;
        }
        headers.append(name, value.clone());
    }
    if is_manifest_read && status.is_success() {
        let key = headers.get("docker-content-digest").and_then(|v| v.to_str().ok()).unwrap_or(&path).to_string();
        let mut seen = s.answers_seen.lock().unwrap();
        let n = seen.entry(key).or_default();
        *n += 1;
        if *n <= s.upstream_answers.load(Ordering::SeqCst) {
            headers.insert("x-azure-origin", HeaderValue::from_static("upstream"));
        }
    }
    let mut resp = Response::new(Body::from_stream(upstream.bytes_stream()));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}
