//! Generated images pushed with raw HTTP (monolithic `POST` + `PUT` uploads, manifests `PUT`
//! as exact bytes with their `Content-Type`), and independent checks of what a registry holds
//! via raw HTTP, `skopeo` and `oci-client`.
//!
//! Content is pseudo-random from a seeded RNG, so runs are reproducible. Layers are not real
//! tarballs: registries never look inside. Manifests are written pretty-printed, so a client
//! that re-serialises instead of copying bytes changes the digest and is caught.

use std::io;

use acr_mirror::digest::Digest;
use acr_mirror::manifest::Platform;
use bytes::Bytes;
use futures::Stream;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::http_client;
use super::token::TokenService;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const SBOM_ARTIFACT: &str = "application/vnd.example.sbom.v1+json";
pub const SBOM_LAYER: &str = "application/vnd.example.sbom.layer.v1+json";
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
pub const NOTARY_SIGNATURE: &str = "application/vnd.cncf.notary.signature";
pub const JOSE_LAYER: &str = "application/jose+json";
pub const COSIGN_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// Every manifest type, for `Accept`.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// The platforms of [`Seeder::push_multiarch`], in index order.
pub fn multiarch_platforms() -> Vec<Platform> {
    let p = |os: &str, arch: &str, variant: Option<&str>, os_version: Option<&str>| Platform {
        os: os.into(),
        architecture: arch.into(),
        variant: variant.map(Into::into),
        os_version: os_version.map(Into::into),
        ..Default::default()
    };
    vec![
        p("linux", "amd64", None, None),
        p("linux", "arm64", Some("v8"), None),
        p("windows", "amd64", None, Some("10.0.20348.2227")),
    ]
}

/// Manifest flavour: OCI (image manifest / image index) or Docker (schema2 / manifest list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

impl Format {
    pub fn manifest_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_MANIFEST,
            Format::Docker => DOCKER_MANIFEST,
        }
    }
    pub fn index_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_INDEX,
            Format::Docker => DOCKER_LIST,
        }
    }
    fn config_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_CONFIG,
            Format::Docker => DOCKER_CONFIG,
        }
    }
    fn layer_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_LAYER,
            Format::Docker => DOCKER_LAYER,
        }
    }
}

/// Blob content held in memory with its digest.
#[derive(Clone, Debug)]
pub struct Blob {
    pub bytes: Bytes,
    pub digest: Digest,
}

impl Blob {
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Blob { digest: sha256(&bytes), bytes }
    }
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// One manifest that was pushed (an image manifest, or an index child).
#[derive(Clone, Debug)]
pub struct PushedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub bytes: Bytes,
    /// Set for index children.
    pub platform: Option<Platform>,
    /// Config first, then layers: `(digest, size)`.
    pub blobs: Vec<(Digest, u64)>,
}

/// What a push produced. For a single manifest `children` is empty; for an index it lists
/// the children in index order. `blobs` is every blob the whole graph needs (deduplicated).
#[derive(Clone, Debug)]
pub struct PushedImage {
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub bytes: Bytes,
    pub children: Vec<PushedManifest>,
    pub blobs: Vec<(Digest, u64)>,
}

impl PushedImage {
    /// `host/repository:tag`.
    pub fn reference(&self, host: &str) -> String {
        format!("{host}/{}:{}", self.repository, self.tag)
    }
    /// `host/repository@digest`.
    pub fn by_digest(&self, host: &str) -> String {
        format!("{host}/{}@{}", self.repository, self.digest)
    }
    /// The descriptor of the top manifest, as a `subject` or index entry would hold it.
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest.as_str(), "size": self.size})
    }
    fn single(repository: &str, tag: &str, m: PushedManifest) -> Self {
        PushedImage {
            repository: repository.into(),
            tag: tag.into(),
            digest: m.digest,
            media_type: m.media_type,
            size: m.size,
            bytes: m.bytes,
            children: Vec::new(),
            blobs: m.blobs,
        }
    }
}

enum SeedAuth {
    None,
    Bearer(String),
    Mint(TokenService),
}

/// Pushes generated content into one registry.
pub struct Seeder {
    http: reqwest::Client,
    base: String,
    auth: SeedAuth,
    rng: StdRng,
}

impl Seeder {
    /// A seeder for the registry at `registry_url` (`http://127.0.0.1:PORT`), with content from `seed`.
    pub fn new(registry_url: &str, seed: u64) -> Self {
        Seeder {
            http: http_client(),
            base: registry_url.trim_end_matches('/').to_string(),
            auth: SeedAuth::None,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Sends this bearer token with every request.
    pub fn with_bearer(mut self, token: &str) -> Self {
        self.auth = SeedAuth::Bearer(token.to_string());
        self
    }

    /// Mints a `pull,push` token for each repository it touches (a token-auth registry).
    pub fn with_token_service(mut self, tokens: &TokenService) -> Self {
        self.auth = SeedAuth::Mint(tokens.clone());
        self
    }

    fn bearer(&self, repo: &str) -> Option<String> {
        match &self.auth {
            SeedAuth::None => None,
            SeedAuth::Bearer(t) => Some(t.clone()),
            SeedAuth::Mint(ts) => Some(ts.mint(&[(repo, "pull,push")])),
        }
    }

    fn req(&self, method: reqwest::Method, url: &str, repo: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match self.bearer(repo) {
            Some(t) => r.header(AUTHORIZATION, format!("Bearer {t}")),
            None => r,
        }
    }

    /// `size` pseudo-random bytes from this seeder's RNG.
    pub fn random_blob(&mut self, size: usize) -> Blob {
        let mut buf = vec![0u8; size];
        self.rng.fill_bytes(&mut buf);
        Blob::new(buf)
    }

    /// Uploads a blob monolithically: `POST` to open a session, one `PUT ?digest=` with the body.
    pub async fn push_blob(&self, repo: &str, blob: &Blob) {
        let location = self.open_upload(repo).await;
        let url = with_digest(&location, &blob.digest);
        let resp = self
            .req(reqwest::Method::PUT, &url, repo)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, blob.bytes.len())
            .body(blob.bytes.clone())
            .send()
            .await
            .expect("PUT blob");
        expect_status(resp, StatusCode::CREATED, &format!("PUT blob {} to {repo}", blob.digest)).await;
    }

    async fn open_upload(&self, repo: &str) -> String {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let resp = self.req(reqwest::Method::POST, &url, repo).send().await.expect("POST upload");
        let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let resp = expect_status(resp, StatusCode::ACCEPTED, &format!("POST {url}")).await;
        drop(resp);
        let location = location.expect("upload Location header");
        resolve(&self.base, &location)
    }

    /// Puts `bytes` as a manifest at `reference` (a tag or digest), exactly as given.
    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Digest {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let resp = self
            .req(reqwest::Method::PUT, &url, repo)
            .header(CONTENT_TYPE, media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("PUT manifest");
        let header = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        expect_status(resp, StatusCode::CREATED, &format!("PUT manifest {repo}:{reference}")).await;
        let digest = sha256(bytes);
        assert_eq!(header.as_deref(), Some(digest.as_str()), "registry digest for {repo}:{reference}");
        digest
    }

    /// Pushes config + `layers` and an image manifest at `tag`, or by digest only when `tag` is `None`.
    async fn push_manifest_of(
        &mut self,
        repo: &str,
        tag: Option<&str>,
        format: Format,
        platform: &Platform,
        layers: &[Blob],
    ) -> PushedManifest {
        let mut config = platform_json(platform);
        config["config"] = json!({"Env": ["PATH=/usr/bin"], "Labels": {"seed": self.rng.next_u32().to_string()}});
        config["rootfs"] =
            json!({"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.as_str()).collect::<Vec<_>>()});
        let config = Blob::new(serde_json::to_vec_pretty(&config).unwrap());
        for blob in std::iter::once(&config).chain(layers) {
            self.push_blob(repo, blob).await;
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": format.manifest_type(),
            "config": {"mediaType": format.config_type(), "digest": config.digest.as_str(), "size": config.size()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": format.layer_type(), "digest": l.digest.as_str(), "size": l.size(),
            })).collect::<Vec<_>>(),
        });
        let bytes = Bytes::from(serde_json::to_vec_pretty(&manifest).unwrap());
        let reference = tag.map(str::to_string).unwrap_or_else(|| sha256(&bytes).to_string());
        let digest = self.push_manifest(repo, &reference, format.manifest_type(), &bytes).await;
        let mut blobs = vec![(config.digest.clone(), config.size())];
        blobs.extend(layers.iter().map(|l| (l.digest.clone(), l.size())));
        PushedManifest {
            digest,
            media_type: format.manifest_type().into(),
            size: bytes.len() as u64,
            bytes,
            platform: None,
            blobs,
        }
    }

    /// A linux/amd64 image made of the given layers (share a [`Blob`] across repositories
    /// to get mountable base layers).
    pub async fn push_image(&mut self, repo: &str, tag: &str, format: Format, layers: &[Blob]) -> PushedImage {
        let platform = multiarch_platforms().remove(0);
        let m = self.push_manifest_of(repo, Some(tag), format, &platform, layers).await;
        PushedImage::single(repo, tag, m)
    }

    /// A linux/amd64 image with fresh random layers of the given sizes.
    pub async fn push_random_image(&mut self, repo: &str, tag: &str, format: Format, sizes: &[usize]) -> PushedImage {
        let layers: Vec<Blob> = sizes.iter().map(|s| self.random_blob(*s)).collect();
        self.push_image(repo, tag, format, &layers).await
    }

    /// A multi-arch index (OCI index or Docker manifest list) at `tag` over linux/amd64,
    /// linux/arm64/v8 and windows/amd64 (os.version 10.0.20348.2227). Each child has two
    /// small random layers and is pushed by digest only.
    pub async fn push_multiarch(&mut self, repo: &str, tag: &str, format: Format) -> PushedImage {
        let mut children = Vec::new();
        for platform in multiarch_platforms() {
            let layers = vec![self.random_blob(2048), self.random_blob(512)];
            let mut m = self.push_manifest_of(repo, None, format, &platform, &layers).await;
            m.platform = Some(platform);
            children.push(m);
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": format.index_type(),
            "manifests": children.iter().map(|c| json!({
                "mediaType": c.media_type, "digest": c.digest.as_str(), "size": c.size,
                "platform": platform_json(c.platform.as_ref().unwrap()),
            })).collect::<Vec<_>>(),
        });
        let bytes = Bytes::from(serde_json::to_vec_pretty(&index).unwrap());
        let digest = self.push_manifest(repo, tag, format.index_type(), &bytes).await;
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        for b in children.iter().flat_map(|c| c.blobs.iter()) {
            if !blobs.contains(b) {
                blobs.push(b.clone());
            }
        }
        PushedImage {
            repository: repo.into(),
            tag: tag.into(),
            digest,
            media_type: format.index_type().into(),
            size: bytes.len() as u64,
            bytes,
            children,
            blobs,
        }
    }

    /// An OCI artifact: `artifactType` SBOM, empty config (`{}`), one layer of a custom type.
    pub async fn push_sbom_artifact(&mut self, repo: &str, tag: &str) -> PushedImage {
        let payload = Blob::new(format!("{{\"sbom\": \"generated\", \"n\": {}}}", self.rng.next_u32()).into_bytes());
        let m = self
            .push_oci_artifact(repo, tag, Some(SBOM_ARTIFACT), empty_config(), &[(SBOM_LAYER, payload)], None)
            .await;
        PushedImage::single(repo, tag, m)
    }

    /// An OCI artifact with a custom config media type (a Helm chart's shape).
    pub async fn push_helm_artifact(&mut self, repo: &str, tag: &str) -> PushedImage {
        let config = (
            HELM_CONFIG,
            Blob::new(
                format!("{{\"name\": \"chart\", \"version\": \"0.{}.0\"}}", self.rng.next_u32() % 100).into_bytes(),
            ),
        );
        let chart = self.random_blob(1500);
        let m = self.push_oci_artifact(repo, tag, None, config, &[(HELM_LAYER, chart)], None).await;
        PushedImage::single(repo, tag, m)
    }

    /// A Notary-style signature referring to `subject` (pushed by digest), plus the OCI 1.1
    /// referrers tag-schema fallback: the index at tag `sha256-<hex>` gets its descriptor
    /// (merged with what is there). Distribution 2.8 has no referrers API, so clients find
    /// it through that tag.
    pub async fn push_signature(&mut self, repo: &str, subject: &PushedImage) -> PushedManifest {
        let sig = format!("{{\"payload\": \"signature-{}\"}}", self.rng.next_u32()).into_bytes();
        self.push_notary_signature(repo, subject, JOSE_LAYER, sig).await
    }

    /// A cosign signature as cosign 2 stores it by default: an OCI image manifest (config, one
    /// simple-signing payload layer) at the plain tag `sha256-<hex>.sig` beside `subject`, with
    /// no `subject` field and no referrers entry.
    pub async fn push_cosign_signature(&mut self, repo: &str, subject: &PushedImage) -> PushedManifest {
        let payload = Blob::new(
            json!({"critical": {"identity": {"docker-reference": repo}, "image": {"docker-manifest-digest": subject.digest.as_str()},
                   "type": "cosign container image signature"}, "optional": {"nonce": self.rng.next_u32()}})
            .to_string()
            .into_bytes(),
        );
        let config = Blob::new(
            json!({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": [payload.digest.as_str()]}})
                .to_string()
                .into_bytes(),
        );
        let tag = format!("sha256-{}.sig", subject.digest.hex());
        self.push_oci_artifact(repo, &tag, None, (OCI_CONFIG, config), &[(COSIGN_LAYER, payload)], None).await
    }

    /// A Notary Project signature of `subject` with a real envelope (`application/cose` or
    /// `application/jose+json`), as `notation sign` stores it: an OCI manifest with artifactType
    /// `application/vnd.cncf.notary.signature`, the empty config, the envelope as its one layer and
    /// `subject`; listed in the referrers tag-schema index (distribution 2.8 has no referrers API).
    pub async fn push_notary_signature(
        &mut self,
        repo: &str,
        subject: &PushedImage,
        envelope_type: &str,
        envelope: Vec<u8>,
    ) -> PushedManifest {
        let annotations = json!({"io.cncf.notary.x509chain.thumbprint#S256": "[\"test\"]"});
        let mut m = self
            .push_oci_artifact(
                repo,
                "",
                Some(NOTARY_SIGNATURE),
                empty_config(),
                &[(envelope_type, Blob::new(envelope))],
                Some((subject.descriptor(), annotations.clone())),
            )
            .await;
        let entry = json!({
            "mediaType": OCI_MANIFEST, "digest": m.digest.as_str(), "size": m.size,
            "artifactType": NOTARY_SIGNATURE, "annotations": annotations,
        });
        self.add_to_referrers_tag(repo, &subject.digest, entry).await;
        m.platform = None;
        m
    }

    /// A cosign signature of `subject` as cosign 2 stores it by default: the simple-signing
    /// `payload` as the one layer, its base64 signature in the layer annotation
    /// `dev.cosignproject.cosign/signature`, at the tag `sha256-<hex>.sig`.
    pub async fn push_cosign_signed(
        &mut self,
        repo: &str,
        subject: &PushedImage,
        payload: Vec<u8>,
        signature_b64: &str,
    ) -> Digest {
        let payload = Blob::new(payload);
        let config = Blob::new(
            json!({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": [payload.digest.as_str()]}})
                .to_string()
                .into_bytes(),
        );
        self.push_blob(repo, &config).await;
        self.push_blob(repo, &payload).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest.as_str(), "size": config.size()},
            "layers": [{"mediaType": COSIGN_LAYER, "digest": payload.digest.as_str(), "size": payload.size(),
                        "annotations": {"dev.cosignproject.cosign/signature": signature_b64}}],
        });
        let tag = format!("sha256-{}.sig", subject.digest.hex());
        self.push_manifest(repo, &tag, OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap()).await
    }

    /// A cosign signature of `subject` in cosign's OCI 1.1 referrer form
    /// (`--registry-referrers-mode=oci-1-1`): artifactType
    /// `application/vnd.dev.cosign.artifact.sig.v1+json`, the empty config, the simple-signing
    /// `payload` as the one layer with its signature annotation, and `subject`; listed in the
    /// referrers tag-schema index.
    pub async fn push_cosign_referrer(
        &mut self,
        repo: &str,
        subject: &PushedImage,
        payload: Vec<u8>,
        signature_b64: &str,
    ) -> Digest {
        const COSIGN_SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
        let payload = Blob::new(payload);
        let (config_type, config) = empty_config();
        self.push_blob(repo, &config).await;
        self.push_blob(repo, &payload).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": COSIGN_SIG_ARTIFACT,
            "config": {"mediaType": config_type, "digest": config.digest.as_str(), "size": config.size()},
            "layers": [{"mediaType": COSIGN_LAYER, "digest": payload.digest.as_str(), "size": payload.size(),
                        "annotations": {"dev.cosignproject.cosign/signature": signature_b64}}],
            "subject": subject.descriptor(),
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let digest = sha256(&bytes);
        self.push_manifest(repo, digest.as_str(), OCI_MANIFEST, &bytes).await;
        let entry = json!({"mediaType": OCI_MANIFEST, "digest": digest.as_str(), "size": bytes.len(), "artifactType": COSIGN_SIG_ARTIFACT});
        self.add_to_referrers_tag(repo, &subject.digest, entry).await;
        digest
    }

    /// Merges `entry` into the tag-schema referrers index of `subject`.
    pub async fn add_to_referrers_tag(&self, repo: &str, subject: &Digest, entry: Value) {
        let tag = format!("sha256-{}", subject.hex());
        let mut manifests = match get_manifest(&self.base, repo, &tag, self.bearer(repo).as_deref()).await {
            Some((bytes, _, _)) => {
                serde_json::from_slice::<Value>(&bytes).unwrap()["manifests"].as_array().cloned().unwrap_or_default()
            }
            None => Vec::new(),
        };
        if !manifests.iter().any(|d| d["digest"] == entry["digest"]) {
            manifests.push(entry);
        }
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        self.push_manifest(repo, &tag, OCI_INDEX, &serde_json::to_vec_pretty(&index).unwrap()).await;
    }

    /// Pushes an OCI manifest with the given config and layers; at `tag`, or by digest when `tag` is empty.
    async fn push_oci_artifact(
        &mut self,
        repo: &str,
        tag: &str,
        artifact_type: Option<&str>,
        config: (&str, Blob),
        layers: &[(&str, Blob)],
        subject: Option<(Value, Value)>,
    ) -> PushedManifest {
        for (_, blob) in std::iter::once(&config).chain(layers) {
            self.push_blob(repo, blob).await;
        }
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config.0, "digest": config.1.digest.as_str(), "size": config.1.size()},
            "layers": layers.iter().map(|(mt, b)| json!({"mediaType": mt, "digest": b.digest.as_str(), "size": b.size()}))
                .collect::<Vec<_>>(),
        });
        if let Some(at) = artifact_type {
            manifest["artifactType"] = json!(at);
        }
        if let Some((subject, annotations)) = subject {
            manifest["subject"] = subject;
            manifest["annotations"] = annotations;
        }
        let bytes = Bytes::from(serde_json::to_vec_pretty(&manifest).unwrap());
        let digest = sha256(&bytes);
        let reference = if tag.is_empty() { digest.to_string() } else { tag.to_string() };
        self.push_manifest(repo, &reference, OCI_MANIFEST, &bytes).await;
        let mut blobs = vec![(config.1.digest.clone(), config.1.size())];
        blobs.extend(layers.iter().map(|(_, b)| (b.digest.clone(), b.size())));
        PushedManifest {
            digest,
            media_type: OCI_MANIFEST.into(),
            size: bytes.len() as u64,
            bytes,
            platform: None,
            blobs,
        }
    }

    /// Uploads a `size`-byte blob generated from `seed` without ever holding it in memory:
    /// one pass hashes the generated bytes, a second regenerates them as the upload body.
    pub async fn push_large_blob(&self, repo: &str, size: u64, seed: u64) -> (Digest, u64) {
        let digest = tokio::task::spawn_blocking(move || {
            let mut sha = Sha256::new();
            for chunk in StreamedBlob::new(seed, size) {
                sha.update(&chunk);
            }
            Digest::parse(&format!("sha256:{}", hex::encode(sha.finalize()))).unwrap()
        })
        .await
        .unwrap();
        let location = self.open_upload(repo).await;
        let resp = self
            .req(reqwest::Method::PUT, &with_digest(&location, &digest), repo)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(large_blob_stream(seed, size)))
            .send()
            .await
            .expect("PUT large blob");
        expect_status(resp, StatusCode::CREATED, &format!("PUT large blob {digest} to {repo}")).await;
        (digest, size)
    }

    /// An OCI image whose single layer is a streamed `size`-byte blob from `seed` (the benchmark image).
    pub async fn push_large_image(&mut self, repo: &str, tag: &str, size: u64, seed: u64) -> PushedImage {
        let (layer, _) = self.push_large_blob(repo, size, seed).await;
        let config = Blob::new(
            serde_json::to_vec_pretty(&json!({
                "architecture": "amd64", "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [layer.as_str()]},
            }))
            .unwrap(),
        );
        self.push_blob(repo, &config).await;
        let manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest.as_str(), "size": config.size()},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer.as_str(), "size": size}],
        });
        let bytes = Bytes::from(serde_json::to_vec_pretty(&manifest).unwrap());
        let digest = self.push_manifest(repo, tag, OCI_MANIFEST, &bytes).await;
        let blobs = vec![(config.digest.clone(), config.size()), (layer, size)];
        PushedImage::single(
            repo,
            tag,
            PushedManifest {
                digest,
                media_type: OCI_MANIFEST.into(),
                size: bytes.len() as u64,
                bytes,
                platform: None,
                blobs,
            },
        )
    }
}

/// The pseudo-random content of a streamed blob, in 1 MiB chunks.
///
/// Test code is built without optimisation, and a RNG instantiated here runs at under
/// 100 MB/s, too slow for a 1 GiB benchmark. So one random 1 MiB block is drawn per seed and
/// each chunk is that block rotated by a per-chunk offset, with the chunk number in its first
/// 8 bytes: memcpy speed, no two chunks alike, and the same bytes for the same seed.
pub struct StreamedBlob {
    base: Vec<u8>,
    seed: u64,
    index: u64,
    left: u64,
}

const STREAM_CHUNK: usize = 1 << 20;

impl StreamedBlob {
    pub fn new(seed: u64, size: u64) -> Self {
        let mut base = vec![0u8; STREAM_CHUNK];
        StdRng::seed_from_u64(seed).fill_bytes(&mut base);
        StreamedBlob { base, seed, index: 0, left: size }
    }
}

impl Iterator for StreamedBlob {
    type Item = Bytes;
    fn next(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        let n = self.left.min(STREAM_CHUNK as u64) as usize;
        // splitmix64 of (seed, index) picks the rotation.
        let mut z = self.seed ^ self.index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let rot = ((z ^ (z >> 31)) % STREAM_CHUNK as u64) as usize;
        let mut buf = Vec::with_capacity(STREAM_CHUNK);
        buf.extend_from_slice(&self.base[rot..]);
        buf.extend_from_slice(&self.base[..rot]);
        buf.truncate(n);
        let stamp = self.index.to_le_bytes();
        let k = stamp.len().min(n);
        buf[..k].copy_from_slice(&stamp[..k]);
        self.index += 1;
        self.left -= n as u64;
        Some(Bytes::from(buf))
    }
}

/// [`StreamedBlob`] as a body stream.
pub fn large_blob_stream(seed: u64, size: u64) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    futures::stream::iter(StreamedBlob::new(seed, size).map(Ok))
}

fn empty_config() -> (&'static str, Blob) {
    (OCI_EMPTY, Blob::new(&b"{}"[..]))
}

/// A platform as an index entry or config holds it: the crate's type already serialises with the
/// registry field names (`os.version` included), in this order.
fn platform_json(p: &Platform) -> Value {
    serde_json::to_value(p).expect("a platform serialises")
}

pub fn sha256(data: &[u8]) -> Digest {
    Digest::parse(&format!("sha256:{}", hex::encode(Sha256::digest(data)))).unwrap()
}

/// Resolves a `Location` header against the registry base URL.
fn resolve(base: &str, location: &str) -> String {
    url::Url::parse(base).unwrap().join(location).expect("valid Location").to_string()
}

fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={}", digest.as_str().replace(':', "%3A"))
}

async fn expect_status(resp: reqwest::Response, want: StatusCode, what: &str) -> reqwest::Response {
    if resp.status() != want {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        panic!("{what}: expected {want}, got {status}: {body}");
    }
    resp
}

fn with_bearer(r: reqwest::RequestBuilder, bearer: Option<&str>) -> reqwest::RequestBuilder {
    match bearer {
        Some(t) => r.header(AUTHORIZATION, format!("Bearer {t}")),
        None => r,
    }
}

// ---- independent checks: raw HTTP ----

/// `GET` a manifest with every manifest type accepted: `(bytes, Content-Type, sha256 of the bytes)`,
/// or `None` on 404. Panics on any other status.
pub async fn get_manifest(
    registry_url: &str,
    repo: &str,
    reference: &str,
    bearer: Option<&str>,
) -> Option<(Bytes, String, Digest)> {
    let url = format!("{}/v2/{repo}/manifests/{reference}", registry_url.trim_end_matches('/'));
    let resp =
        with_bearer(http_client().get(&url).header(ACCEPT, ACCEPT_ALL), bearer).send().await.expect("GET manifest");
    if resp.status() == StatusCode::NOT_FOUND {
        return None;
    }
    let resp = expect_status(resp, StatusCode::OK, &format!("GET {url}")).await;
    let ct = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = resp.bytes().await.expect("manifest body");
    let digest = sha256(&bytes);
    Some((bytes, ct, digest))
}

/// The digest of the manifest at `reference`, computed from its bytes (not the registry's header).
pub async fn manifest_digest(registry_url: &str, repo: &str, reference: &str, bearer: Option<&str>) -> Option<Digest> {
    get_manifest(registry_url, repo, reference, bearer).await.map(|(_, _, d)| d)
}

/// Whether `HEAD /v2/<repo>/blobs/<digest>` answers 200 (404 → false; anything else panics).
pub async fn blob_exists(registry_url: &str, repo: &str, digest: &Digest, bearer: Option<&str>) -> bool {
    let url = format!("{}/v2/{repo}/blobs/{digest}", registry_url.trim_end_matches('/'));
    let resp = with_bearer(http_client().head(&url), bearer).send().await.expect("HEAD blob");
    match resp.status() {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        s => panic!("HEAD {url}: unexpected {s}"),
    }
}

/// Downloads a blob and returns the sha256 of what arrived and its length.
pub async fn blob_digest(registry_url: &str, repo: &str, digest: &Digest, bearer: Option<&str>) -> (Digest, u64) {
    use futures::StreamExt;
    let url = format!("{}/v2/{repo}/blobs/{digest}", registry_url.trim_end_matches('/'));
    let resp = with_bearer(http_client().get(&url), bearer).send().await.expect("GET blob");
    let resp = expect_status(resp, StatusCode::OK, &format!("GET {url}")).await;
    let mut sha = Sha256::new();
    let mut len = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("blob body");
        len += chunk.len() as u64;
        sha.update(&chunk);
    }
    (Digest::parse(&format!("sha256:{}", hex::encode(sha.finalize()))).unwrap(), len)
}

/// The tags of a repository (`GET /v2/<repo>/tags/list`), empty on 404.
pub async fn list_tags(registry_url: &str, repo: &str, bearer: Option<&str>) -> Vec<String> {
    let url = format!("{}/v2/{repo}/tags/list", registry_url.trim_end_matches('/'));
    let resp = with_bearer(http_client().get(&url), bearer).send().await.expect("GET tags");
    if resp.status() == StatusCode::NOT_FOUND {
        return Vec::new();
    }
    let resp = expect_status(resp, StatusCode::OK, &format!("GET {url}")).await;
    let v: Value = resp.json().await.expect("tags JSON");
    v["tags"].as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// Checks that every blob and child manifest of `image` is in `repo` of the registry, and
/// that the tag resolves to the same digest. Panics naming the first thing missing.
pub async fn assert_image_present(registry_url: &str, repo: &str, image: &PushedImage, bearer: Option<&str>) {
    let got = manifest_digest(registry_url, repo, &image.tag, bearer).await;
    assert_eq!(got.as_ref(), Some(&image.digest), "{repo}:{} in {registry_url}", image.tag);
    for child in &image.children {
        let got = manifest_digest(registry_url, repo, child.digest.as_str(), bearer).await;
        assert_eq!(got.as_ref(), Some(&child.digest), "child {} of {repo}:{}", child.digest, image.tag);
    }
    for (digest, size) in &image.blobs {
        let (got, len) = blob_digest(registry_url, repo, digest, bearer).await;
        assert_eq!((&got, len), (digest, *size), "blob {digest} of {repo}:{}", image.tag);
    }
}

// ---- independent checks: skopeo ----

/// Credentials for skopeo.
#[derive(Clone, Debug)]
pub enum SkopeoAuth {
    None,
    /// `--creds user:password` (skopeo runs the token dance itself).
    Creds(String, String),
    /// `--registry-token TOKEN`.
    Token(String),
}

impl SkopeoAuth {
    fn args(&self, prefix: &str) -> Vec<String> {
        match self {
            SkopeoAuth::None => vec![format!("--{prefix}no-creds")],
            SkopeoAuth::Creds(u, p) => vec![format!("--{prefix}creds"), format!("{u}:{p}")],
            SkopeoAuth::Token(t) => vec![format!("--{prefix}registry-token"), t.clone()],
        }
    }
}

async fn skopeo(args: &[String]) -> Vec<u8> {
    // An empty auth file, so no credentials of the machine's are used (skopeo cannot parse /dev/null).
    let auth = tempfile::NamedTempFile::new().expect("auth file");
    std::fs::write(auth.path(), b"{}").expect("write auth file");
    let out = tokio::process::Command::new("skopeo")
        .args(args)
        .env("REGISTRY_AUTH_FILE", auth.path())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {} failed: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The raw manifest at `reference` (`host/repo:tag` or `host/repo@digest`) as skopeo sees it.
pub async fn skopeo_inspect_raw(reference: &str, auth: &SkopeoAuth) -> Vec<u8> {
    let mut args = vec!["inspect".to_string(), "--raw".into(), "--tls-verify=false".into()];
    args.extend(auth.args(""));
    args.push(format!("docker://{reference}"));
    skopeo(&args).await
}

/// Every tag of `repository` (`host/repo`) as `skopeo list-tags` sees it, sorted.
pub async fn skopeo_list_tags(repository: &str, auth: &SkopeoAuth) -> Vec<String> {
    let mut args = vec!["list-tags".to_string(), "--tls-verify=false".into()];
    args.extend(auth.args(""));
    args.push(format!("docker://{repository}"));
    let v: Value = serde_json::from_slice(&skopeo(&args).await).expect("skopeo list-tags JSON");
    let mut tags: Vec<String> =
        v["Tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
    tags.sort();
    tags
}

/// The digest of the manifest at `reference`, hashed from the bytes skopeo fetched.
pub async fn skopeo_inspect_digest(reference: &str, auth: &SkopeoAuth) -> Digest {
    sha256(&skopeo_inspect_raw(reference, auth).await)
}

/// `skopeo copy` into a `dir:` layout (skopeo verifies every blob's digest on the way).
/// With `all`, every child of an index is copied too.
pub async fn skopeo_copy_to_dir(reference: &str, dir: &std::path::Path, auth: &SkopeoAuth, all: bool) {
    let mut args = vec!["copy".to_string(), "--src-tls-verify=false".into()];
    args.extend(auth.args("src-"));
    if all {
        args.push("--all".into());
    }
    args.push(format!("docker://{reference}"));
    args.push(format!("dir:{}", dir.display()));
    skopeo(&args).await;
}

// ---- independent checks: oci-client ----

/// Pulls the manifest at `repo:reference` (tag or digest) from `registry_host` (`127.0.0.1:PORT`,
/// plain HTTP) with oci-client: `(bytes, digest)`; oci-client verifies the digest.
pub async fn oci_pull_manifest(
    registry_host: &str,
    repo: &str,
    reference: &str,
    bearer: Option<&str>,
) -> (Vec<u8>, String) {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    let client = oci_client::Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() });
    let reference: oci_client::Reference = if reference.contains(':') {
        oci_client::Reference::with_digest(registry_host.into(), repo.into(), reference.into())
    } else {
        oci_client::Reference::with_tag(registry_host.into(), repo.into(), reference.into())
    };
    let auth = match bearer {
        Some(t) => RegistryAuth::Bearer(t.to_string()),
        None => RegistryAuth::Anonymous,
    };
    let accepted = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
    let (bytes, digest) = client
        .pull_manifest_raw(&reference, &auth, &accepted)
        .await
        .unwrap_or_else(|e| panic!("oci-client pull of {reference}: {e}"));
    (bytes.to_vec(), digest)
}
