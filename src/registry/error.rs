//! Registry errors that keep what a caller needs to decide: the status, the OCI error code,
//! `Retry-After`, and which registry and path. URLs in messages never carry a query string:
//! blob redirects carry SAS signatures and upload URLs carry session state.

use std::time::Duration;

use crate::digest::Mismatch;
use crate::manifest::ManifestError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry} at {url}: {message}")]
    Connect { registry: String, url: String, message: String },

    /// The registry stayed silent (no answer, or stopped taking a request body) past the
    /// configured timeout, on the attempt and its retry.
    #[error("registry {registry} did not answer {request} in time: {message}")]
    Timeout { registry: String, request: String, message: String },

    #[error("{0}")]
    Status(Box<StatusError>),

    #[error("registry {registry} refused the credentials for {scope}: {message}")]
    Unauthorized { registry: String, scope: String, message: String },

    #[error("token service {realm} for {registry}: {message}")]
    Token { registry: String, realm: String, message: String },

    #[error("manifest {reference} is {size} bytes, over the {limit}-byte limit registries enforce")]
    ManifestTooLarge { reference: String, size: u64, limit: u64 },

    #[error("{what}: {mismatch}")]
    Mismatch { what: String, mismatch: Mismatch },

    #[error("manifest {reference}: {source}")]
    Manifest { reference: String, source: ManifestError },

    #[error("registry {registry}: {message}")]
    Protocol { registry: String, message: String },

    #[error("registry {registry}: reading the response body failed: {message}")]
    Body { registry: String, message: String },

    #[error("credentials for {registry}: {message}")]
    Credentials { registry: String, message: String },
}

impl RegistryError {
    /// A stable, machine-readable name of what went wrong (`errorKind` in reports and JSON
    /// logs), so that a log pipeline can count and alert on kinds without parsing messages.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::Connect { .. } => "connect",
            RegistryError::Timeout { .. } => "timeout",
            RegistryError::Status(_) => "status",
            RegistryError::Unauthorized { .. } => "unauthorized",
            RegistryError::Token { .. } => "token",
            RegistryError::ManifestTooLarge { .. } => "too_large",
            RegistryError::Mismatch { .. } => "digest_mismatch",
            RegistryError::Manifest { .. } => "bad_manifest",
            RegistryError::Protocol { .. } => "protocol",
            RegistryError::Body { .. } => "body",
            RegistryError::Credentials { .. } => "credentials",
        }
    }
}

/// A response with a status the operation did not expect.
#[derive(Debug, thiserror::Error)]
#[error("{method} {url} on {registry}: HTTP {status}{}{}", code.as_ref().map(|c| format!(" {c}")).unwrap_or_default(), if message.is_empty() { String::new() } else { format!(": {message}") })]
/// `code` and `message` are registry text, cut and stripped of control characters by whoever
/// builds this (see [`parse_error_body`]).
pub struct StatusError {
    pub registry: String,
    pub method: String,
    pub url: String,
    pub status: u16,
    /// The first OCI error code in the body (`MANIFEST_BLOB_UNKNOWN`, `DENIED`, …).
    pub code: Option<String>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl RegistryError {
    pub fn status_error(e: StatusError) -> Self {
        RegistryError::Status(Box::new(e))
    }

    /// The source has nothing under `reference` (a `HEAD` answered 404): said of the source, so
    /// that a run never blames the target or a cache in front of it for an image that is not there.
    pub fn no_such_image(registry: &str, reference: &str) -> Self {
        RegistryError::status_error(StatusError {
            registry: registry.to_string(),
            method: "HEAD".into(),
            url: reference.to_string(),
            status: 404,
            code: Some("MANIFEST_UNKNOWN".into()),
            message: "the source has no such image".into(),
            retry_after: None,
        })
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status(e) => Some(e.status),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            RegistryError::Status(e) => e.code.as_deref(),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether trying the same operation again may succeed: throttling, server errors, broken
    /// connections, and content that arrived damaged (a mismatch can be a truncated transfer).
    /// Not a [`RegistryError::Timeout`]: the transport already waited for the registry twice, and
    /// trying again would keep a run hanging on a silent registry.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Connect { .. } | RegistryError::Body { .. } => true,
            RegistryError::Status(e) => matches!(e.status, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Status(e) => e.retry_after,
            _ => None,
        }
    }
}

/// A URL for messages: scheme, host and path, no query (which may hold signatures or state).
pub fn display_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// Reads the first error of an OCI error body: `{"errors":[{"code":"…","message":"…"}]}`.
/// Both are registry text on their way to output, so they come back cut and without control
/// characters; a body that is not such JSON is shown as its first 200 characters.
pub fn parse_error_body(body: &[u8]) -> (Option<String>, String) {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) if !b.errors.is_empty() => {
            let e = &b.errors[0];
            (
                e.code.as_deref().map(|c| crate::sanitize::text(c, 64)),
                crate::sanitize::short(e.message.as_deref().unwrap_or("")),
            )
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            (None, crate::sanitize::text(text.trim(), 200))
        }
    }
}

/// A reqwest error as a message without its URL (which may carry signatures), with its causes.
pub fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else if e.is_request() {
        "request failed"
    } else {
        "HTTP error"
    };
    let mut msg = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
