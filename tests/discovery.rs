//! Image discovery by rule on real operator release manifests (Strimzi, Longhorn, Rook, Knative
//! eventing and serving, NVIDIA's GPU operator OLM bundle; provenance in tests/data/README.md).
//! Each expected list was written by hand from reading the manifest, not from the tool's
//! output; the comments say which images the built-in table of before missed. Then `rewrite`
//! on the same files: every ConfigMap value, variable and flag points at the private registry,
//! keeping the digest.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use acr_mirror::config::Config;
use acr_mirror::digest::Digest;
use acr_mirror::imageset::{self, Provenance, Resolved, rewrite};
use serde_json::{Value, json};
use support::images::{OCI_INDEX, manifest_digest};
use support::{Format, Seeder, TestRegistry};

fn resolve(files: &[&str]) -> Resolved {
    let list: Vec<String> = files.iter().map(|f| format!("operators/{f}")).collect();
    let yaml = format!("target: acr.example.io\nworkloads: {{manifests: [{}]}}\n", list.join(", "));
    let cfg = Config::parse(&yaml, Path::new("mirror.yaml")).unwrap();
    imageset::resolve(&cfg, &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")).unwrap()
}

/// Checks `doc` against `schema/NAME`, failing with every violation listed.
fn validate(name: &str, doc: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema").join(name);
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "not valid against schema/{name}:\n{}", errors.join("\n"));
}

fn sources(r: &Resolved) -> Vec<String> {
    r.images.iter().map(|e| e.source.to_string()).collect()
}

/// Each provenance of `image` as `line via` (`-` for a pod-spec image).
fn places(r: &Resolved, image: &str) -> Vec<String> {
    let e = r.images.iter().find(|e| e.source.to_string() == image).unwrap_or_else(|| panic!("{image} not found"));
    e.provenance
        .iter()
        .map(|p| match p {
            Provenance::Workload { line, via, .. } => format!("{line} {}", via.as_deref().unwrap_or("-")),
            p => panic!("{p:?}"),
        })
        .collect()
}

fn injected(r: &Resolved, image: &str) -> bool {
    r.images.iter().find(|e| e.source.to_string() == image).unwrap().injected
}

// Checks Strimzi's cluster operator: the operand images in STRIMZI_DEFAULT_*_IMAGE variables,
// the Kafka versions in the STRIMZI_KAFKA*_IMAGES lists (`version=image` lines; 4.2.0, 4.2.1 and
// 4.3.0 were missed before, as was the Maven builder, whose variable does not say image).
#[test]
fn strimzi_cluster_operator() {
    let r = resolve(&["strimzi-060-Deployment-strimzi-cluster-operator.yaml"]);
    assert_eq!(
        sources(&r),
        [
            "quay.io/strimzi/buildah:1.2.0",
            "quay.io/strimzi/kafka-bridge:1.1.0",
            "quay.io/strimzi/kafka:1.2.0-kafka-4.2.0",
            "quay.io/strimzi/kafka:1.2.0-kafka-4.2.1",
            "quay.io/strimzi/kafka:1.2.0-kafka-4.3.0",
            "quay.io/strimzi/kafka:1.2.0-kafka-4.3.1",
            "quay.io/strimzi/kaniko-executor:1.2.0",
            "quay.io/strimzi/maven-builder:1.2.0",
            "quay.io/strimzi/operator:1.2.0",
        ]
    );
    assert_eq!(
        places(&r, "quay.io/strimzi/kafka:1.2.0-kafka-4.2.0"),
        [
            "77 variable STRIMZI_KAFKA_IMAGES (list)",
            "83 variable STRIMZI_KAFKA_CONNECT_IMAGES (list)",
            "89 variable STRIMZI_KAFKA_MIRROR_MAKER_2_IMAGES (list)"
        ]
    );
    assert_eq!(places(&r, "quay.io/strimzi/maven-builder:1.2.0"), ["106 variable STRIMZI_DEFAULT_MAVEN_BUILDER"]);
    assert!(!injected(&r, "quay.io/strimzi/operator:1.2.0"), "the operator's own pod-spec image");
    assert!(injected(&r, "quay.io/strimzi/kafka:1.2.0-kafka-4.3.1"));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

// Checks Longhorn v1.12.1: the manager's `--x-image VALUE` flags, and the CSI sidecars the
// driver deployer starts from CSI_*_IMAGE variables (all six missed before).
#[test]
fn longhorn() {
    let r = resolve(&["longhorn-workloads.yaml"]);
    assert_eq!(
        sources(&r),
        [
            "docker.io/longhornio/backing-image-manager:v1.12.1",
            "docker.io/longhornio/csi-attacher:v4.12.0",
            "docker.io/longhornio/csi-node-driver-registrar:v2.17.0",
            "docker.io/longhornio/csi-provisioner:v5.3.0",
            "docker.io/longhornio/csi-resizer:v2.2.1",
            "docker.io/longhornio/csi-snapshotter:v8.6.0",
            "docker.io/longhornio/livenessprobe:v2.19.0",
            "docker.io/longhornio/longhorn-engine:v1.12.1",
            "docker.io/longhornio/longhorn-instance-manager:v1.12.1",
            "docker.io/longhornio/longhorn-manager:v1.12.1",
            "docker.io/longhornio/longhorn-share-manager:v1.12.1",
            "docker.io/longhornio/longhorn-ui:v1.12.1",
            "docker.io/longhornio/support-bundle-kit:v0.0.92",
        ]
    );
    assert_eq!(places(&r, "docker.io/longhornio/csi-attacher:v4.12.0"), ["183 variable CSI_ATTACHER_IMAGE"]);
    assert_eq!(places(&r, "docker.io/longhornio/longhorn-engine:v1.12.1"), ["37 flag --engine-image"]);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

// Checks Rook's operator.yaml: the operator image and the seven CSI images of the ConfigMap
// named for images (`provisioner: registry.k8s.io/…`, plain keys: all missed before).
#[test]
fn rook_ceph_operator() {
    let r = resolve(&["rook-operator.yaml"]);
    assert_eq!(
        sources(&r),
        [
            "docker.io/rook/ceph:master",
            "quay.io/cephcsi/cephcsi:v3.17.0",
            "quay.io/csiaddons/k8s-sidecar:v0.14.0",
            "registry.k8s.io/sig-storage/csi-attacher:v4.12.0",
            "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.17.0",
            "registry.k8s.io/sig-storage/csi-provisioner:v6.2.0",
            "registry.k8s.io/sig-storage/csi-resizer:v2.1.0",
            "registry.k8s.io/sig-storage/csi-snapshotter:v8.5.0",
        ]
    );
    assert_eq!(places(&r, "registry.k8s.io/sig-storage/csi-provisioner:v6.2.0"), ["110 ConfigMap named for images"]);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

// Checks Knative eventing 1.23.0: four deployments, two literal variables, and the ConfigMaps
// named for images, read by the controller through configMapKeyRef or at run time (the
// thirteen images outside pod specs were all missed before).
#[test]
fn knative_eventing() {
    let r = resolve(&["knative-eventing-core.yaml"]);
    let k = "gcr.io/knative-releases";
    let want: Vec<String> = [
        "aws-ddb-streams-source@sha256:a39dbc38c68c102864ac4cb928d26d0404ccd11fcc4438a2d90d857fefdece6d",
        "aws-eventbridge-sink@sha256:2c6ef87d3626f350007f69205353d13e843514fb2fd29f149622804226d9709e",
        "aws-s3-sink@sha256:d708b2e9f39eb499493d8d826a9c234512389f9c94bde5e04b5d22ffd8085e9b",
        "aws-s3-source@sha256:33c9493835b27b75e86b29ca863d205577d7940b0f42b3597c60a8fecf43e1fa",
        "aws-sns-sink@sha256:9ed7021806261d40bf2cf4ee7aaf28a613c7f5dff3b3e8fe340c5fd1dae2874a",
        "aws-sqs-sink@sha256:108dd5bbbab656c91b27fd6bcc21b9b9020e20d09a3dfe93030d7342e4ac5d98",
        "aws-sqs-source@sha256:853297af896258e3ac6a88a9a753343d0348fa1aa2a8c7092ff189c5b26e3550",
        "jsonata-transformer@sha256:4a228c239abcffac4e21080eb7c792732fad8baa2ceaf54ed4de38b1121db43e",
        "knative.dev/eventing/cmd/apiserver_receive_adapter@sha256:2ddc326c4d780c27db5f9ebb0eff2e09eea1800eae9fb93d234c0e50ecc3be38",
        "knative.dev/eventing/cmd/auth_proxy@sha256:7013b93c4edf29019b588191c3a666058e514d4c2acda3720e1cbf01050ab73f",
        "knative.dev/eventing/cmd/controller@sha256:dd385d5632b8ce1a49c45421a3a11db91837c8fb12ea56c7ebde4f9aad2e825c",
        "knative.dev/eventing/cmd/jobsink@sha256:bb9777c85adbf4238e60f9e99f236cc9224b92baaa68a115867e88d086eede1f",
        "knative.dev/eventing/cmd/mtping@sha256:2fc8713fb4807df0f5d8f9506d03c16c168eed61f19c04e04092266248bd0353",
        "knative.dev/eventing/cmd/webhook@sha256:3f6dfc52cfaf0b5a8e0c098f83f60eb237d3b8bfbbd4d0faea7c08fad98a1215",
        "log-sink@sha256:cb037ddb2cc71d369983e223cdeef3b30f1045e827200fc33bcccac4f3cf993b",
        "timer-source@sha256:45af6d4df89c379656ef482f048d559cd8d8d4e286b3e440ef9a6c94fcc8d920",
        "transform-jsonata@sha256:39c98808cb212b6b2fa61e0f449cac9b21bf7319fb81efe9ce4ba5926f2cafa0",
    ]
    .iter()
    .map(|i| format!("{k}/{i}"))
    .collect();
    assert_eq!(sources(&r), want);
    assert_eq!(
        places(
            &r,
            &format!("{k}/timer-source@sha256:45af6d4df89c379656ef482f048d559cd8d8d4e286b3e440ef9a6c94fcc8d920")
        ),
        [
            "11 ConfigMap named for images",
            "11 read by Deployment eventing-controller container eventing-controller variable INTEGRATION_SOURCE_TIMER_IMAGE (configMapKeyRef)"
        ]
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

// Checks Knative serving 1.23.0: the queue-proxy sidecar is named by the ConfigMap key
// `queue-sidecar-image` as well as by the image-cache custom resource (before, only the cache
// resource found it), and the `_example` block's `…-image: "disabled"` is not taken.
#[test]
fn knative_serving() {
    let r = resolve(&["knative-serving-core.yaml"]);
    let s = "gcr.io/knative-releases/knative.dev/serving/cmd";
    assert_eq!(
        sources(&r),
        [
            format!("{s}/activator@sha256:e5ab46f3b73fa2e3898fe47f6a3a0c2bd765596f4fb36ceb4c28c35d0a74b2e5"),
            format!("{s}/autoscaler@sha256:879da127b23db65d862cafa6b23fb987381d0e44150f0027d44e1f5aee83bde2"),
            format!("{s}/controller@sha256:ca5062ece0329d002a81940cf4268d7898866434d70049bb93f27d3a786d3292"),
            format!("{s}/queue@sha256:a3cc71ce80dbc6df8781f15eac2cf3531a4c9815271799afd8776bef9e6aeaf2"),
            format!("{s}/webhook@sha256:3846e9a416665c5b9ec2e4de246cfcb5c4ab0d01ba19348aa008caf30144b650"),
        ]
    );
    assert_eq!(
        places(&r, &format!("{s}/queue@sha256:a3cc71ce80dbc6df8781f15eac2cf3531a4c9815271799afd8776bef9e6aeaf2")),
        ["29 -", "60 ConfigMap key queue-sidecar-image"]
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

// Checks NVIDIA's GPU operator bundle: relatedImages, the deployment the CSV embeds, and its
// *_IMAGE variables, including `DRIVER_IMAGE-580` (IMAGE as a word, not at the end). Before,
// the variables were missed and the set was right only because relatedImages repeats them.
#[test]
fn nvidia_gpu_operator_bundle() {
    let r = resolve(&["nvidia-gpu-operator-certified.clusterserviceversion.yaml"]);
    let n = "nvcr.io/nvidia";
    assert_eq!(
        sources(&r),
        [
            "ghcr.io/nvidia/gpu-operator:main-latest".to_string(),
            format!(
                "{n}/cloud-native/dcgm:4.6.0-1-ubi10@sha256:92080d86d04c265f7fc0b8e1cd95dff94d3ab57de6a6474c3c483e4c2ada5dea"
            ),
            format!("{n}/cloud-native/gdrdrv@sha256:eef1b6663d78555f0e5c49c156196b67e8a3008bc22aaa02b03dad53887ee0f1"),
            format!(
                "{n}/cloud-native/k8s-cc-manager:v0.4.3@sha256:61fe0f5c45f240094667d2e63e770710450fd2fd768745ab899531284d197a65"
            ),
            format!(
                "{n}/cloud-native/k8s-driver-manager:v0.12.0@sha256:7d98d08a751cc528d1c8c8bdc2f9d9fcd59714b158a3985a5a0262f1620098e4"
            ),
            format!(
                "{n}/cloud-native/k8s-mig-manager:v0.15.0@sha256:cab2cf9deafc9602da69d0832a82958a7687f22f4a2f19674099dc9a5c4ea8e2"
            ),
            format!(
                "{n}/cloud-native/nvidia-sandbox-device-plugin:v0.0.5@sha256:5b59e2e534c804381eb0055f7e2511eea812bae33f1ea67e306dab64870454bb"
            ),
            format!(
                "{n}/cloud-native/vgpu-device-manager:v0.5.0@sha256:9fb8872029840d5bd5bcbf4cec63cb0c233d38fe73f7077affa6546d313c2fe6"
            ),
            format!(
                "{n}/dra-driver-nvidia-gpu:v0.5.0@sha256:9b46984c0eb18def60e2b9817b874275f4b5b08d12d491de4f1a7b91b51d706c"
            ),
            format!("{n}/driver@sha256:a35d05d5b984ad18713af957f87380ccbefd8f0bb5e6771fc7856e6a9e1d201f"),
            format!("{n}/driver@sha256:e243d778bd83de47668e7629d78f673317a130fedc99941be12aad7fc6bdfa85"),
            format!("{n}/driver@sha256:fbbd829db234885d6f0026ca6fb6369f6875b0b91fc5e98d7752f31aeab5e470"),
            format!(
                "{n}/k8s-device-plugin:v0.20.0@sha256:a61ba9fd8efb82f3a79f877f7580e02c1e8e7593f62473644bc9c79e315c3312"
            ),
            format!(
                "{n}/k8s/container-toolkit:v1.20.0@sha256:f8c647d581f7c8b178efdb7e6c94f5fb6eb12ebc05e2157fa314d327560fcb7a"
            ),
            format!(
                "{n}/k8s/dcgm-exporter:4.6.0-4.8.3-distroless@sha256:613ab03c11d442fd960ff515f547e9921537454a712d08160bc8f677f89f1c35"
            ),
            format!(
                "{n}/kubevirt-gpu-device-plugin:v1.6.0@sha256:367c597799aa6925f5bd2bc4bcdc45c26f018d13cdc2ce9aaf1ca07c492c6d9e"
            ),
        ]
    );
    assert_eq!(
        places(&r, &format!("{n}/driver@sha256:fbbd829db234885d6f0026ca6fb6369f6875b0b91fc5e98d7752f31aeab5e470")),
        ["262 OLM relatedImages driver-image-580", "1133 variable DRIVER_IMAGE-580"]
    );
    assert_eq!(
        places(&r, "ghcr.io/nvidia/gpu-operator:main-latest"),
        [
            "250 OLM relatedImages gpu-operator-image",
            "272 OLM relatedImages gpu-operator-validator-image",
            "1083 -",
            "1117 variable VALIDATOR_IMAGE"
        ]
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

// Checks that `rewrite` points every image found by rule at the private registry on its own
// line — ConfigMap values (named for images, by key, read through configMapKeyRef), literal
// variables, list items, flags in both forms, relatedImages — keeping a digest the source
// pinned, and that the rewritten files give the same set again (the rewrite's own check);
// and that a kustomize block leaves those values out, saying how many (kustomize's image
// override changes container `image` fields only).
#[test]
fn rewrite_reaches_every_rule() {
    let r = resolve(&[
        "strimzi-060-Deployment-strimzi-cluster-operator.yaml",
        "longhorn-workloads.yaml",
        "rook-operator.yaml",
        "knative-eventing-core.yaml",
        "knative-serving-core.yaml",
        "nvidia-gpu-operator-certified.clusterserviceversion.yaml",
    ]);
    let pin = Digest::parse(&format!("sha256:{}", "d".repeat(64))).unwrap();
    let digests: BTreeMap<String, Digest> = r.images.iter().map(|e| (e.source.to_string(), pin.clone())).collect();
    let out = rewrite::rewrite_files(&r.workloads, r.mapper.as_ref().unwrap(), &digests).unwrap();
    let m = "acr.example.io/mirror";
    let expect = [
        (0, format!("                4.2.0={m}/quay.io/strimzi/kafka:1.2.0-kafka-4.2.0@{pin}\n")),
        (0, format!("              value: {m}/quay.io/strimzi/maven-builder:1.2.0@{pin}\n")),
        (1, format!("            value: \"{m}/docker.io/longhornio/csi-attacher:v4.12.0@{pin}\"\n")),
        (1, format!("        - \"{m}/docker.io/longhornio/longhorn-engine:v1.12.1@{pin}\"\n")),
        (2, format!("  provisioner: \"{m}/registry.k8s.io/sig-storage/csi-provisioner:v6.2.0@{pin}\"\n")),
        (
            3,
            format!(
                "  timer-source: {m}/gcr.io/knative-releases/timer-source@sha256:45af6d4df89c379656ef482f048d559cd8d8d4e286b3e440ef9a6c94fcc8d920\n"
            ),
        ),
        (
            4,
            format!(
                "  queue-sidecar-image: {m}/gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:a3cc71ce80dbc6df8781f15eac2cf3531a4c9815271799afd8776bef9e6aeaf2\n"
            ),
        ),
        (
            5,
            format!(
                "                    value: \"{m}/nvcr.io/nvidia/driver@sha256:fbbd829db234885d6f0026ca6fb6369f6875b0b91fc5e98d7752f31aeab5e470\"\n"
            ),
        ),
        (5, format!("      image: {m}/ghcr.io/nvidia/gpu-operator:main-latest@{pin}\n")),
    ];
    for (file, line) in &expect {
        assert!(out[*file].contains(line.as_str()), "file {file} lacks {line:?}");
    }
    for (text, before) in out.iter().zip(&r.workloads) {
        assert_eq!(text.lines().count(), before.text.lines().count(), "{}: only image strings change", before.name);
    }
    // Kustomize's image override cannot reach these values, so its block has pod specs only:
    // the four Kafka tags (one name, four digests) would otherwise be refused as a conflict.
    let k = rewrite::kustomize_images(&r.workloads[..1], r.mapper.as_ref().unwrap(), &digests).unwrap();
    assert!(k.contains("# Not here: 9 images handed to operators"), "{k}");
    assert_eq!(k.matches("  - name: ").count(), 1, "only the operator's own image: {k}");
    let kafka = format!("{m}/quay.io/strimzi/kafka:1.2.0-kafka-4.3.1@{pin}");
    assert_eq!(out[0].matches(&kafka).count(), 5, "two variables and three list items");
    assert!(!out[0].contains("=quay.io") && !out[0].contains("value: quay.io"), "{}", out[0]);
}

/// Pushes to `repo:tag` an index whose only manifest is the Windows one of a fresh multi-arch
/// image (a helper an operator ships for Windows nodes).
async fn push_windows_only(seeder: &mut Seeder, repo: &str, tag: &str) -> Digest {
    let all = seeder.push_multiarch(repo, "all-platforms", Format::Oci).await;
    let win = all.children.iter().find(|c| c.platform.as_ref().is_some_and(|p| p.os == "windows")).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": win.media_type, "digest": win.digest.as_str(), "size": win.size,
            "platform": {"os": "windows", "architecture": "amd64"}}],
    });
    seeder.push_manifest(repo, tag, OCI_INDEX, &serde_json::to_vec_pretty(&index).unwrap()).await
}

// Checks rule 6 against real registries with `sync`: an image named only by an operator's
// variable that has no manifest for the configured platform (linux/amd64) is reported
// `skipped` with that reason, is not copied, and does not fail the run (under either index
// policy); the same state for an image a pod spec names stays a failure (under `rewrite`, the
// policy that narrows indexes to the platforms; `preserve` copies indexes whole, as before).
// The target is checked with raw HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_only_injected_images_are_skipped_not_failed() {
    let (src, dst) = (TestRegistry::anonymous().await, TestRegistry::anonymous().await);
    let mut seeder = Seeder::new(&src.url(), 20);
    seeder.push_multiarch("acme/operator", "1", Format::Oci).await;
    push_windows_only(&mut seeder, "acme/win-helper", "1").await;
    push_windows_only(&mut seeder, "acme/win-app", "1").await;
    let dir = tempfile::tempdir().unwrap();
    let config = |manifests: &str, policy: &str| {
        format!(
            "target: acr.example.io\nplatforms: [linux/amd64]\nindexPolicy: {policy}\nregistries:\n  - {{host: src.example.io, endpoint: {}, auth: {{type: anonymous}}}}\n  - {{host: acr.example.io, endpoint: {}, auth: {{type: anonymous}}}}\nworkloads: {{manifests: [{manifests}]}}\n",
            src.url(),
            dst.url()
        )
    };
    std::fs::write(
        dir.path().join("operator.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: op}\nspec:\n  template:\n    spec:\n      containers:\n      - name: manager\n        image: src.example.io/acme/operator:1\n        env:\n        - {name: WINDOWS_HELPER_IMAGE, value: src.example.io/acme/win-helper:1}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  template:\n    spec:\n      containers:\n      - {name: app, image: src.example.io/acme/win-app:1}\n",
    )
    .unwrap();
    let report =
        |name: &str| -> Value { serde_json::from_slice(&std::fs::read(dir.path().join(name)).unwrap()).unwrap() };
    let image = |r: &Value, repo: &str| -> Value {
        r["images"].as_array().unwrap().iter().find(|i| i["source"].as_str().unwrap().contains(repo)).unwrap().clone()
    };

    std::fs::write(dir.path().join("mirror.yaml"), config("operator.yaml", "preserve")).unwrap();
    let out = support::mirror_in(dir.path(), &["sync", "--report-json", "one.json"]).await;
    assert!(out.status.success(), "a skipped helper is no failure: {}", support::output_text(&out));
    let r = report("one.json");
    validate("report.v1.json", &r);
    let helper = image(&r, "win-helper");
    assert_eq!(
        (helper["planned"].as_str(), helper["outcome"].as_str()),
        (Some("skipped"), Some("skipped")),
        "{helper}"
    );
    let why = helper["error"].as_str().unwrap();
    assert!(why.contains("no manifest for linux/amd64") && why.contains("windows/amd64"), "{why}");
    assert_eq!(image(&r, "acme/operator")["outcome"], "copied");
    assert_eq!(r["summary"]["planned"]["skipped"], 1);
    let target = |repo: &str| format!("mirror/src.example.io/acme/{repo}");
    assert!(manifest_digest(&dst.url(), &target("operator"), "1", None).await.is_some());
    assert!(manifest_digest(&dst.url(), &target("win-helper"), "1", None).await.is_none(), "not copied");
    let out = support::mirror_in(dir.path(), &["plan", "-o", "json"]).await;
    assert!(out.status.success(), "in sync: the skipped helper is no drift");
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(image(&plan, "win-helper")["planned"], "skipped");
    assert_eq!(image(&plan, "acme/operator")["planned"], "present");

    std::fs::write(dir.path().join("mirror.yaml"), config("operator.yaml, app.yaml", "rewrite")).unwrap();
    let out = support::mirror_in(dir.path(), &["sync", "--report-json", "two.json"]).await;
    assert!(!out.status.success(), "a pod-spec image with no platform fails the run");
    let app = image(&report("two.json"), "win-app");
    assert_eq!(app["outcome"], "failed", "{app}");
    assert!(app["error"].as_str().unwrap().contains("no platform"), "{app}");
    assert!(manifest_digest(&dst.url(), &target("win-app"), "1", None).await.is_none());
}

// Checks `resolve -o json` on every operator manifest against schema/resolve.v1.json: the
// rules' `via` texts and `injected: true` are part of the documented shape.
#[test]
fn resolve_json_of_the_rules_follows_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/operators");
    std::fs::write(
        dir.path().join("mirror.yaml"),
        format!("target: acr.example.io\nworkloads: {{manifests: [{}]}}\n", data.display()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
        .args(["resolve", "-c", "mirror.yaml", "-o", "json"])
        .current_dir(dir.path())
        .env_remove("MIRROR_CONFIG")
        .env("DOCKER_CONFIG", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    validate("resolve.v1.json", &doc);
    let images = doc["images"].as_array().unwrap();
    assert_eq!(images.len(), 68, "the six lists above, without overlaps");
    assert!(images.iter().any(|i| i["injected"] == true) && images.iter().any(|i| i.get("injected").is_none()));
}

// Checks a `kind: List` of 5,000 Deployments that all hand the operator the same images (a flag
// and a variable) and run the same one: every value gets its own line, the last one the last
// line. No timing assertion: matching each use against every line of its image again (as a
// first version did) shows as a test that takes minutes.
#[test]
fn one_image_handed_to_thousands_of_containers() {
    let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..5_000 {
        text.push_str(&format!(
            "- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {{name: d{i}}}\n  spec:\n    template:\n      spec:\n        containers:\n        - name: c\n          image: quay.io/a/app:1\n          args: [--x-image=quay.io/a/helper:1]\n          env:\n          - {{name: SIDECAR_IMAGE, value: quay.io/a/side:1}}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("list.yaml"), &text).unwrap();
    let cfg = Config::parse("target: a.io\nworkloads: {manifests: [list.yaml]}\n", Path::new("m.yaml")).unwrap();
    let r = imageset::resolve(&cfg, dir.path()).unwrap();
    let images = &r.workloads[0].images;
    assert_eq!(images.len(), 15_000);
    let lines = |name: &str| -> Vec<usize> {
        images.iter().filter(|f| f.reference.to_string().contains(name)).map(|f| f.line).collect()
    };
    let expect = |first: usize| -> Vec<usize> { (0..5_000).map(|i| first + 12 * i).collect() };
    assert_eq!(lines("app:1"), expect(12));
    assert_eq!(lines("helper:1"), expect(13));
    assert_eq!(lines("side:1"), expect(15));
    assert_eq!(*lines("side:1").last().unwrap(), text.lines().count());
}
