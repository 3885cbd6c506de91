//! The benchmark fixture: an AKS-shaped image set pushed into a local registry.
//!
//! Repository names, tags and packed sizes come from two real AKS node image lists
//! (`benches/data/`, see its README): the Ubuntu 22.04 gen2 list gives each image's linux/amd64
//! size, the Azure Linux 3 arm64 list its linux/arm64 size. Every image becomes a multi-arch OCI
//! index at its (first) tag over linux/amd64 and linux/arm64 children; with `windows`, the
//! repositories that AKS ships for Windows nodes too also get three windows/amd64 children (one
//! per Windows Server release, as AKS's Windows images carry). Children are pushed by digest only,
//! so each image has exactly one tag and `skopeo sync` of a repository copies exactly the fixture.
//!
//! Sizes are multiplied by `scale`. Each platform's image is split into a base layer shared with
//! other images (one of a few distroless / Azure Linux base sizes per architecture, or a
//! nanoserver base per Windows release, as real images share them) and image-specific layers.
//! Layer content is pseudo-random from a seed derived from the layer's name, so the same layer in
//! two fixtures (with and without Windows) has the same digest, and runs are reproducible.

use std::collections::HashMap;
use std::time::Instant;

use acr_mirror::digest::Digest;
use acr_mirror::manifest::Platform;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::Seeder;
use crate::support::images::{Blob, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, StreamedBlob, sha256};

/// The logical source registry of every fixture image.
pub const SOURCE_HOST: &str = "mcr.microsoft.com";

/// Repositories with `windowsVersions` in AgentBaker's components.json (commit 4767d117a7d0)
/// that also appear in the node image lists.
pub const WINDOWS_REPOSITORIES: &[&str] = &[
    "oss/v2/kubernetes/pause",
    "containernetworking/azure-cni",
    "containernetworking/v2/azure-cni",
    "containernetworking/azure-cns",
    "containernetworking/v2/azure-cns",
    "oss/v2/kubernetes/azure-cloud-node-manager",
    "oss/v2/kubernetes-csi/azuredisk-csi",
    "oss/v2/kubernetes-csi/azurefile-csi",
    "oss/v2/kubernetes-csi/livenessprobe",
    "oss/v2/kubernetes-csi/csi-node-driver-registrar",
];

/// Windows Server releases of the windows/amd64 children (ltsc2019, ltsc2022, ltsc2025).
const WINDOWS_RELEASES: &[&str] = &["10.0.17763.8027", "10.0.20348.4052", "10.0.26100.4946"];

const MIB: u64 = 1 << 20;

/// Shared linux base layers, unscaled: (name, bytes). An image takes one that is at most 40% of
/// its size, picked by repository, so tags of one repository share their base.
const LINUX_BASES: &[(&str, u64)] = &[
    ("distroless-static", 2 * MIB),
    ("distroless-base", 9 * MIB),
    ("azurelinux-distroless", 18 * MIB),
    ("azurelinux-base", 40 * MIB),
];

/// The shared nanoserver base of each Windows release, unscaled (ltsc2022's is about 118 MB packed).
const NANOSERVER_BYTES: u64 = 118 * MIB;

const UBUNTU_LIST: &str = include_str!("data/ubuntu2204-gen2-image-list.json");
const AZURELINUX_ARM64_LIST: &str = include_str!("data/azurelinux3-gen2arm64-image-list.json");

/// One layer: `size` bytes of [`StreamedBlob`] content from `seed`.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    pub name: String,
    pub seed: u64,
    pub size: u64,
}

impl LayerSpec {
    /// The layer's bytes, generated in memory.
    pub fn bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.size as usize);
        for chunk in StreamedBlob::new(self.seed, self.size) {
            buf.extend_from_slice(&chunk);
        }
        buf.freeze()
    }
}

#[derive(Clone, Debug)]
pub struct ChildSpec {
    pub platform: Platform,
    /// Indexes into [`Fixture::layers`].
    pub layers: Vec<usize>,
}

impl ChildSpec {
    pub fn is_linux(&self) -> bool {
        self.platform.os == "linux"
    }
}

#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub repository: String,
    pub tag: String,
    pub children: Vec<ChildSpec>,
}

impl ImageSpec {
    /// `mcr.microsoft.com/<repository>:<tag>`.
    pub fn reference(&self) -> String {
        format!("{SOURCE_HOST}/{}:{}", self.repository, self.tag)
    }
}

/// The planned image set (nothing pushed yet).
#[derive(Clone, Debug)]
pub struct Fixture {
    pub scale: f64,
    pub windows: bool,
    pub images: Vec<ImageSpec>,
    pub layers: Vec<LayerSpec>,
}

fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `(repository, tag) -> packed bytes` from one node image list (first tag of each image).
fn read_list(text: &str) -> Vec<(String, String, u64)> {
    let v: Value = serde_json::from_str(text).expect("image list JSON");
    let mut out = Vec::new();
    for entry in v["imageBom"].as_array().expect("imageBom") {
        let bytes = entry["bytes"].as_u64().expect("bytes");
        let Some(tag) = entry["repoTags"].as_array().and_then(|t| t.first()).and_then(|t| t.as_str()) else {
            continue;
        };
        let rest = tag.strip_prefix(&format!("{SOURCE_HOST}/")).expect("an mcr.microsoft.com image");
        let (repo, tag) = rest.rsplit_once(':').expect("repo:tag");
        out.push((repo.to_string(), tag.to_string(), bytes));
    }
    out
}

fn platform(os: &str, arch: &str, variant: Option<&str>, os_version: Option<&str>) -> Platform {
    Platform {
        os: os.into(),
        architecture: arch.into(),
        variant: variant.map(Into::into),
        os_version: os_version.map(Into::into),
        ..Default::default()
    }
}

struct Builder {
    scale: f64,
    layers: Vec<LayerSpec>,
    by_name: HashMap<String, usize>,
}

impl Builder {
    fn layer(&mut self, name: String, unscaled: u64) -> usize {
        if let Some(&i) = self.by_name.get(&name) {
            return i;
        }
        let size = ((unscaled as f64 * self.scale) as u64).max(1024);
        self.layers.push(LayerSpec { seed: fnv1a(&name), name: name.clone(), size });
        self.by_name.insert(name, self.layers.len() - 1);
        self.layers.len() - 1
    }

    /// A linux image of `total` unscaled bytes: shared base + app + deps layers.
    fn linux_layers(&mut self, repo: &str, tag: &str, arch: &str, total: u64) -> Vec<usize> {
        let fitting: Vec<&(&str, u64)> = LINUX_BASES.iter().filter(|(_, s)| *s * 10 <= total * 4).collect();
        let mut layers = Vec::new();
        let mut rest = total;
        if !fitting.is_empty() {
            let (name, size) = fitting[(fnv1a(repo) % fitting.len() as u64) as usize];
            layers.push(self.layer(format!("base {name} {arch}"), *size));
            rest -= size;
        }
        let app = rest * 7 / 10;
        layers.push(self.layer(format!("app {repo}:{tag} {arch}"), app));
        layers.push(self.layer(format!("deps {repo}:{tag} {arch}"), rest - app));
        layers
    }
}

impl Fixture {
    /// The AKS-shaped set at `scale` (1.0 = real sizes), with Windows children where AKS has them.
    pub fn aks(scale: f64, windows: bool) -> Fixture {
        assert!(scale > 0.0, "scale must be positive");
        let amd64 = read_list(UBUNTU_LIST);
        let arm64: HashMap<(String, String), u64> =
            read_list(AZURELINUX_ARM64_LIST).into_iter().map(|(r, t, b)| ((r, t), b)).collect();
        let mut seen: Vec<(String, String, u64, u64)> = Vec::new();
        for (repo, tag, bytes) in &amd64 {
            let arm = arm64.get(&(repo.clone(), tag.clone())).copied().unwrap_or(*bytes);
            seen.push((repo.clone(), tag.clone(), *bytes, arm));
        }
        for ((repo, tag), bytes) in &arm64 {
            if !seen.iter().any(|(r, t, _, _)| r == repo && t == tag) {
                seen.push((repo.clone(), tag.clone(), *bytes, *bytes));
            }
        }
        seen.sort();
        let mut b = Builder { scale, layers: Vec::new(), by_name: HashMap::new() };
        let mut images = Vec::new();
        for (repo, tag, amd, arm) in seen {
            let mut children = vec![
                ChildSpec {
                    platform: platform("linux", "amd64", None, None),
                    layers: b.linux_layers(&repo, &tag, "amd64", amd),
                },
                ChildSpec {
                    platform: platform("linux", "arm64", Some("v8"), None),
                    layers: b.linux_layers(&repo, &tag, "arm64", arm),
                },
            ];
            if windows && WINDOWS_REPOSITORIES.contains(&repo.as_str()) {
                for release in WINDOWS_RELEASES {
                    let base = b.layer(format!("base nanoserver {release}"), NANOSERVER_BYTES);
                    let app = b.layer(format!("app {repo}:{tag} windows {release}"), amd);
                    children.push(ChildSpec {
                        platform: platform("windows", "amd64", None, Some(release)),
                        layers: vec![base, app],
                    });
                }
            }
            images.push(ImageSpec { repository: repo, tag, children });
        }
        Fixture { scale, windows, images, layers: b.layers }
    }

    /// Distinct repositories, sorted.
    pub fn repositories(&self) -> Vec<String> {
        let mut r: Vec<String> = self.images.iter().map(|i| i.repository.clone()).collect();
        r.sort();
        r.dedup();
        r
    }

    /// Layer bytes (unique layers) of the linux children, and of all children.
    pub fn layer_bytes(&self) -> (u64, u64) {
        let mut linux = vec![false; self.layers.len()];
        let mut all = vec![false; self.layers.len()];
        for c in self.images.iter().flat_map(|i| &i.children) {
            for &l in &c.layers {
                all[l] = true;
                linux[l] |= c.is_linux();
            }
        }
        let sum = |used: &[bool]| self.layers.iter().zip(used).filter(|(_, u)| **u).map(|(l, _)| l.size).sum();
        (sum(&linux), sum(&all))
    }
}

/// A blob the seeder pushed: its digest, size and where its bytes come from.
#[derive(Clone, Debug)]
pub struct SeededBlob {
    pub digest: Digest,
    pub size: u64,
    /// The first repository that holds it.
    pub repository: String,
    /// Whether a linux child uses it.
    pub linux: bool,
    pub content: Content,
}

#[derive(Clone, Debug)]
pub enum Content {
    Layer(LayerSpec),
    Config(Bytes),
}

impl SeededBlob {
    pub fn bytes(&self) -> Bytes {
        match &self.content {
            Content::Layer(l) => l.bytes(),
            Content::Config(b) => b.clone(),
        }
    }
}

/// What [`seed`] pushed.
#[derive(Clone, Debug)]
pub struct Seeded {
    /// `(repository, tag, index digest)` in fixture order.
    pub images: Vec<(String, String, Digest)>,
    /// Every distinct blob (layers and configs).
    pub blobs: Vec<SeededBlob>,
    pub seconds: f64,
}

impl Seeded {
    /// Bytes of the distinct blobs the linux children need, and of all blobs.
    pub fn blob_bytes(&self) -> (u64, u64) {
        let linux = self.blobs.iter().filter(|b| b.linux).map(|b| b.size).sum();
        (linux, self.blobs.iter().map(|b| b.size).sum())
    }
}

/// A platform as an index entry or config holds it: the crate's type already serialises with the
/// registry field names (`os.version` included), in this order.
fn platform_json(p: &Platform) -> Value {
    serde_json::to_value(p).expect("a platform serialises")
}

/// Mounts `digest` from `from` into `repo` (cross-repository mount, no bytes moved).
async fn mount(http: &reqwest::Client, base: &str, repo: &str, from: &str, digest: &Digest) {
    let url = format!("{base}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
    let resp = http.post(&url).send().await.expect("POST mount");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED, "mount {digest} from {from} into {repo}");
}

/// Pushes the fixture into the anonymous registry at `registry_url`: each distinct layer is
/// uploaded once (into the first repository that needs it) and mounted into the others, then
/// every child's config and manifest (by digest) and the index at its tag.
pub async fn seed(fixture: &Fixture, registry_url: &str) -> Seeded {
    let started = Instant::now();
    let base = registry_url.trim_end_matches('/').to_string();
    let seeder = Seeder::new(&base, 1);
    let http = crate::support::http_client();

    // Repositories that use each layer, in fixture order, and whether a linux child does.
    let mut users: Vec<Vec<String>> = vec![Vec::new(); fixture.layers.len()];
    let mut linux = vec![false; fixture.layers.len()];
    for image in &fixture.images {
        for c in &image.children {
            for &l in &c.layers {
                if !users[l].contains(&image.repository) {
                    users[l].push(image.repository.clone());
                }
                linux[l] |= c.is_linux();
            }
        }
    }

    let layer_digests: Vec<(usize, Digest)> = futures::stream::iter(fixture.layers.iter().enumerate())
        .map(|(i, spec)| {
            let (seeder, http, base, users) = (&seeder, &http, &base, &users);
            async move {
                let spec2 = spec.clone();
                let blob = tokio::task::spawn_blocking(move || {
                    let bytes = spec2.bytes();
                    Blob { digest: sha256(&bytes), bytes }
                })
                .await
                .expect("generate layer");
                let repos = &users[i];
                seeder.push_blob(&repos[0], &blob).await;
                for r in &repos[1..] {
                    mount(http, base, r, &repos[0], &blob.digest).await;
                }
                (i, blob.digest)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut digests: Vec<Option<Digest>> = vec![None; fixture.layers.len()];
    for (i, d) in layer_digests {
        digests[i] = Some(d);
    }
    let digests: Vec<Digest> = digests.into_iter().map(|d| d.expect("every layer pushed")).collect();

    let mut blobs: Vec<SeededBlob> = fixture
        .layers
        .iter()
        .enumerate()
        .map(|(i, spec)| SeededBlob {
            digest: digests[i].clone(),
            size: spec.size,
            repository: users[i][0].clone(),
            linux: linux[i],
            content: Content::Layer(spec.clone()),
        })
        .collect();

    let pushed: Vec<((String, String, Digest), Vec<SeededBlob>)> = futures::stream::iter(fixture.images.iter())
        .map(|image| {
            let (seeder, digests) = (&seeder, &digests);
            async move {
                let repo = &image.repository;
                let mut entries = Vec::new();
                let mut configs = Vec::new();
                for c in &image.children {
                    let mut config = platform_json(&c.platform);
                    config["config"] = json!({"Labels": {"image": format!("{repo}:{}", image.tag)}});
                    config["rootfs"] = json!({"type": "layers", "diff_ids": c.layers.iter().map(|&l| digests[l].as_str()).collect::<Vec<_>>()});
                    let config = Blob::new(serde_json::to_vec_pretty(&config).unwrap());
                    seeder.push_blob(repo, &config).await;
                    let manifest = json!({
                        "schemaVersion": 2,
                        "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": OCI_CONFIG, "digest": config.digest.as_str(), "size": config.size()},
                        "layers": c.layers.iter().map(|&l| json!({
                            "mediaType": OCI_LAYER, "digest": digests[l].as_str(), "size": fixture.layers[l].size,
                        })).collect::<Vec<_>>(),
                    });
                    let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
                    let digest = sha256(&bytes);
                    seeder.push_manifest(repo, digest.as_str(), OCI_MANIFEST, &bytes).await;
                    entries.push(json!({
                        "mediaType": OCI_MANIFEST, "digest": digest.as_str(), "size": bytes.len(),
                        "platform": platform_json(&c.platform),
                    }));
                    configs.push(SeededBlob {
                        digest: config.digest.clone(),
                        size: config.size(),
                        repository: repo.clone(),
                        linux: c.is_linux(),
                        content: Content::Config(config.bytes),
                    });
                }
                let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
                let bytes = serde_json::to_vec_pretty(&index).unwrap();
                let digest = seeder.push_manifest(repo, &image.tag, OCI_INDEX, &bytes).await;
                ((repo.clone(), image.tag.clone(), digest), configs)
            }
        })
        .buffered(8)
        .collect()
        .await;
    let mut images = Vec::new();
    for (image, configs) in pushed {
        images.push(image);
        blobs.extend(configs);
    }
    Seeded { images, blobs, seconds: started.elapsed().as_secs_f64() }
}
