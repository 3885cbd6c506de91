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

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        if let Some(v) = &self.os_version {
            write!(f, " ({v})")?;
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
