//! Just enough of the manifest formats to walk an image graph.
//!
//! Manifests are read into small structs of our own and never written back from them: the
//! original bytes are what gets hashed and pushed, so a digest never changes on the way
//! through (re-serialising reorders fields and drops unknown ones). The one place that builds
//! a manifest, the `rewrite` index policy, says so in its output.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// What we send as `Accept` for manifests: every format we can carry.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Registries (ACR among them) cap manifests at 4 MiB; anything larger is refused before it is read whole.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST | OCI_INDEX | DOCKER_LIST)
}

/// A platform as it stands in an index. `os.version` and `os.features` are kept: Windows
/// entries need them, and oci-spec's type drops them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

/// Shown as `os/arch[/variant] [(os.version)]`, each part as [`crate::sanitize`] makes it safe:
/// the strings come from a registry's manifest, and reach plans, reports and logs.
impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let safe = |s: &str| crate::sanitize::text(s, 64);
        write!(f, "{}/{}", safe(&self.os), safe(&self.architecture))?;
        if let Some(v) = &self.variant {
            write!(f, "/{}", safe(v))?;
        }
        if let Some(v) = &self.os_version {
            write!(f, " ({})", safe(v))?;
        }
        Ok(())
    }
}

/// A platform the user asked for: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlatformFilter {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl PlatformFilter {
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => {
                Ok(PlatformFilter { os: os.to_string(), architecture: arch.to_string(), variant: None })
            }
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => {
                Ok(PlatformFilter { os: os.to_string(), architecture: arch.to_string(), variant: Some(v.to_string()) })
            }
            _ => Err(format!("bad platform {s:?}: expected os/arch or os/arch/variant, e.g. linux/amd64")),
        }
    }

    /// Whether an index entry's platform is one of these. A filter without a variant matches
    /// every variant (`linux/arm64` takes `linux/arm64/v8`).
    pub fn matches(&self, p: &Platform) -> bool {
        self.os == p.os
            && self.architecture == p.architecture
            && self.variant.as_ref().is_none_or(|v| p.variant.as_deref() == Some(v))
    }
}

impl TryFrom<String> for PlatformFilter {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        PlatformFilter::parse(&s)
    }
}

impl From<PlatformFilter> for String {
    fn from(p: PlatformFilter) -> String {
        p.to_string()
    }
}

impl std::fmt::Display for PlatformFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Referrers are followed this deep (a signature of an SBOM of an image is depth 2), by the copy
/// and by the deep check that they arrived.
pub const REFERRER_DEPTH: u32 = 3;

/// What to do with a multi-arch index when only some of its platforms are wanted.
///
/// The default is `preserve`: the copy is byte-identical, so `image@sha256:…` pins in workload
/// manifests keep working, and every registry accepts it. It costs the bytes of the platforms
/// nobody runs; `sparse` avoids that where the target accepts an index whose children are not
/// all present, and `rewrite` everywhere at the price of a new digest.
///
/// Plain data: the config reads it (`indexPolicy`), the CLI maps its own `--index-policy` flag
/// to it, and the plan and the copy act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexPolicy {
    /// Copy every child; the index digest is unchanged. Accepted by every registry.
    #[default]
    Preserve,
    /// Copy only the chosen platforms and push the original index unchanged (some registries refuse).
    Sparse,
    /// Push a new index of the chosen platforms: a new digest, reported as such.
    Rewrite,
}

impl std::fmt::Display for IndexPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IndexPolicy::Preserve => "preserve",
            IndexPolicy::Sparse => "sparse",
            IndexPolicy::Rewrite => "rewrite",
        })
    }
}

/// The children of an index that `platforms` selects (all when it is empty), each distinct digest
/// once and in index order: an index may list one child many times, and it is fetched, pushed
/// and counted once.
pub fn select_platforms<'a>(index: &'a Manifest, platforms: &[PlatformFilter]) -> Vec<&'a Descriptor> {
    let mut seen = std::collections::HashSet::new();
    index
        .parsed
        .manifests
        .iter()
        .filter(|c| platforms.is_empty() || c.platform.as_ref().is_some_and(|p| platforms.iter().any(|f| f.matches(p))))
        .filter(|c| seen.insert(&c.digest))
        .collect()
}

/// A new index holding only the `chosen` children, for the `rewrite` policy. Built from the
/// original JSON so that every field we do not model (annotations, unknown keys) is kept; the
/// plan's expected digest and the copy's pushed index both come from here, so they cannot differ.
pub fn rewrite_index(index: &Manifest, chosen: &[&Descriptor]) -> Result<Manifest, ManifestError> {
    let keep: std::collections::HashSet<&str> = chosen.iter().map(|c| c.digest.as_str()).collect();
    let mut value: serde_json::Value = serde_json::from_slice(&index.bytes)?;
    if let Some(list) = value.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        list.retain(|entry| entry.get("digest").and_then(|d| d.as_str()).is_some_and(|d| keep.contains(d)));
    }
    let bytes = serde_json::to_vec(&value)?;
    Manifest::from_bytes(bytes::Bytes::from(bytes), Some(&index.media_type))
}

/// A content descriptor. Unknown fields are ignored on read; descriptors are re-serialised only
/// when the `rewrite` policy builds a new index, and then every known field is carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// The parts of an image manifest or index that say what else must be copied.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parsed {
    #[serde(default)]
    pub schema_version: Option<u32>,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Index entries (`manifests`).
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default)]
    pub subject: Option<Descriptor>,
    #[serde(default)]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A manifest as fetched: its exact bytes, the media type it was served with, and what it refers to.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: bytes::Bytes,
    pub media_type: String,
    pub digest: Digest,
    pub parsed: Parsed,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("schema 1 manifests are not supported (media type {0})")]
    Schema1(String),
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
}

impl Manifest {
    /// Parses `bytes`. The media type comes from the body when it names one, else from the
    /// `Content-Type` the registry sent.
    pub fn from_bytes(bytes: bytes::Bytes, content_type: Option<&str>) -> Result<Self, ManifestError> {
        let parsed: Parsed = serde_json::from_slice(&bytes)?;
        if parsed.schema_version == Some(1) {
            return Err(ManifestError::Schema1(content_type.unwrap_or("?").to_string()));
        }
        let media_type = match (&parsed.media_type, content_type) {
            (Some(m), _) => m.clone(),
            (None, Some(ct)) if is_manifest(ct.split(';').next().unwrap_or("").trim()) => {
                ct.split(';').next().unwrap_or("").trim().to_string()
            }
            // OCI allows mediaType to be absent; the shape tells which it is.
            (None, _) if !parsed.manifests.is_empty() => OCI_INDEX.to_string(),
            (None, _) => OCI_MANIFEST.to_string(),
        };
        if !is_manifest(&media_type) {
            return Err(ManifestError::MediaType(media_type));
        }
        let digest = Digest::of(&bytes);
        Ok(Manifest { bytes, media_type, digest, parsed })
    }

    pub fn is_index(&self) -> bool {
        is_index(&self.media_type)
    }

    /// Config and layers: the blobs this manifest needs present before it can be pushed.
    /// Foreign layers (those with `urls`, non-distributable) are left out, as registries do not hold them.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.parsed
            .config
            .iter()
            .chain(self.parsed.layers.iter())
            .filter(|d| d.urls.as_ref().is_none_or(|u| u.is_empty()))
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            platform: None,
            urls: None,
            annotations: None,
            artifact_type: self.parsed.artifact_type.clone().or_else(|| {
                self.parsed
                    .config
                    .as_ref()
                    .filter(|c| c.media_type != OCI_EMPTY && self.media_type == OCI_MANIFEST)
                    .map(|c| c.media_type.clone())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    /// A platform string from a hostile registry cannot put an escape sequence or a forged log
    /// line on the operator's terminal: `Platform`'s display is where every such string is shown.
    #[test]
    fn platform_strings_from_a_registry_are_made_safe() {
        let p: super::Platform =
            serde_json::from_str(r#"{"os":"linux\u001b[2J","architecture":"amd64\nINFO forged","variant":"v8"}"#)
                .unwrap();
        let shown = p.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.starts_with("linux\\u{1b}[2J/amd64\\u{a}INFO forged/v8"), "{shown}");
    }

    use super::*;

    #[test]
    fn keeps_windows_os_version() {
        let json = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
          "manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":1,
          "digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000",
          "platform":{"architecture":"amd64","os":"windows","os.version":"10.0.20348.2227"}}]}"#;
        let m = Manifest::from_bytes(bytes::Bytes::from_static(json), None).unwrap();
        assert!(m.is_index());
        let p = m.parsed.manifests[0].platform.as_ref().unwrap();
        assert_eq!(p.os_version.as_deref(), Some("10.0.20348.2227"));
        let again = serde_json::to_string(p).unwrap();
        assert!(again.contains("\"os.version\":\"10.0.20348.2227\""), "{again}");
    }

    #[test]
    fn platform_filter_matching() {
        let f = PlatformFilter::parse("linux/arm64").unwrap();
        let p = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
            ..Default::default()
        };
        assert!(f.matches(&p));
        assert!(!PlatformFilter::parse("linux/arm64/v7").unwrap().matches(&p));
        assert!(!PlatformFilter::parse("windows/arm64").unwrap().matches(&p));
        assert!(PlatformFilter::parse("linux").is_err());
        assert!(PlatformFilter::parse("linux/amd64/v3/x").is_err());
    }

    const CHILD_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const CHILD_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn index(children: &[(&str, &str)]) -> Manifest {
        let entries: Vec<serde_json::Value> = children
            .iter()
            .map(|(digest, arch)| {
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 10,
                    "platform": {"os": "linux", "architecture": arch}, "annotations": {"x": "y"}})
            })
            .collect();
        let v = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
            "annotations": {"org.opencontainers.image.created": "2024"}, "unknownKey": [1, 2]});
        Manifest::from_bytes(bytes::Bytes::from(serde_json::to_vec_pretty(&v).unwrap()), None).unwrap()
    }

    #[test]
    fn select_platforms_takes_each_child_once() {
        // Checks the one platform filter: an index listing a child many times yields it once
        // (it was fetched and pushed once per listing), and an empty filter takes every child.
        let idx = index(&[(CHILD_A, "amd64"), (CHILD_A, "amd64"), (CHILD_B, "arm64"), (CHILD_A, "amd64")]);
        let all: Vec<&str> = select_platforms(&idx, &[]).iter().map(|c| c.digest.as_str()).collect();
        assert_eq!(all, [CHILD_A, CHILD_B]);
        let arm = select_platforms(&idx, &[PlatformFilter::parse("linux/arm64").unwrap()]);
        assert_eq!(arm.len(), 1);
        assert_eq!(arm[0].digest.as_str(), CHILD_B);
    }

    #[test]
    fn rewrite_index_keeps_what_it_does_not_model() {
        // Checks the rewritten index: only the chosen children, with the index's and the entries'
        // annotations and unknown keys kept, and the same digest however often it is built (the
        // plan's expected digest and the copy's pushed index come from this one function).
        let idx = index(&[(CHILD_A, "amd64"), (CHILD_B, "arm64")]);
        let chosen = select_platforms(&idx, &[PlatformFilter::parse("linux/amd64").unwrap()]);
        let r = rewrite_index(&idx, &chosen).unwrap();
        assert_eq!(r.parsed.manifests.len(), 1);
        assert_eq!(r.parsed.manifests[0].digest.as_str(), CHILD_A);
        assert_eq!(r.media_type, OCI_INDEX);
        let v: serde_json::Value = serde_json::from_slice(&r.bytes).unwrap();
        assert_eq!(v["unknownKey"], serde_json::json!([1, 2]));
        assert_eq!(v["manifests"][0]["annotations"]["x"], "y");
        assert_eq!(rewrite_index(&idx, &chosen).unwrap().digest, r.digest);
        assert_ne!(r.digest, idx.digest);
    }

    #[test]
    fn refuses_schema1_and_unknown_types() {
        assert!(matches!(
            Manifest::from_bytes(bytes::Bytes::from_static(br#"{"schemaVersion":1}"#), None),
            Err(ManifestError::Schema1(_))
        ));
        assert!(matches!(
            Manifest::from_bytes(bytes::Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#), None),
            Err(ManifestError::MediaType(_))
        ));
    }
}
