//! Peak memory of `mirror copy` on a multi-arch image with a 1 GiB layer (issue #2: under 64 MiB).
//! Not a test: it prints a table and writes it into `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench --bench copy_rss -- [--layer-mib 1024] [--no-docs]
//! ```
//!
//! The source is a `docker-registry` 2.8 holding an OCI index over linux/amd64 (one layer of
//! 1 GiB, streamed in by the seeder without ever being in memory) and linux/arm64 (one 16 MiB
//! layer), children by digest, one tag. `mirror copy` (release build) copies it into an empty
//! target with the default transfer settings (so the 1 GiB blob goes up in resumable chunks), and
//! `skopeo copy --all --preserve-digests` does the same for reference. Peak RSS of the child comes
//! from GNU `time`, requests from the registries' access logs.

#[path = "../tests/support/mod.rs"]
mod support;

#[allow(dead_code)] // the request breakdown is used by the sync bench only
mod measure;

use std::fmt::Write as _;
use std::process::Command;

use serde_json::json;

use measure::requests_served;
use support::TestRegistry;
use support::images::{Blob, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, sha256};

const REPO: &str = "oss/v2/bench/large";
const TAG: &str = "v1";

/// Pushes the index; returns its digest.
async fn push_fixture(reg: &TestRegistry, layer_bytes: u64) -> acr_mirror::digest::Digest {
    let seeder = support::Seeder::new(&reg.url(), 7);
    let (big, _) = seeder.push_large_blob(REPO, layer_bytes, 1).await;
    let (small, small_size) = seeder.push_large_blob(REPO, 16 << 20, 2).await;
    let mut entries = Vec::new();
    for (arch, variant, layer, size) in [("amd64", None, &big, layer_bytes), ("arm64", Some("v8"), &small, small_size)]
    {
        let mut platform = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        let mut config = platform.clone();
        config["rootfs"] = json!({"type": "layers", "diff_ids": [layer.as_str()]});
        let config = Blob::new(serde_json::to_vec_pretty(&config).unwrap());
        seeder.push_blob(REPO, &config).await;
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest.as_str(), "size": config.size()},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer.as_str(), "size": size}],
        }))
        .unwrap();
        let digest = sha256(&manifest);
        seeder.push_manifest(REPO, digest.as_str(), OCI_MANIFEST, &manifest).await;
        entries.push(
            json!({"mediaType": OCI_MANIFEST, "digest": digest.as_str(), "size": manifest.len(), "platform": platform}),
        );
    }
    let index =
        serde_json::to_vec_pretty(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})).unwrap();
    seeder.push_manifest(REPO, TAG, OCI_INDEX, &index).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut layer_mib: u64 = 1024;
    let mut docs = true;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => {}
            "--layer-mib" => layer_mib = it.next().and_then(|s| s.parse().ok()).expect("--layer-mib N"),
            "--no-docs" => docs = false,
            other => panic!("unknown argument {other:?}; usage: copy_rss [--layer-mib N] [--no-docs]"),
        }
    }
    let work = tempfile::Builder::new().prefix("bench-rss-").tempdir().expect("work dir");
    let src = TestRegistry::anonymous().await;
    let digest = push_fixture(&src, layer_mib << 20).await;
    let total = (layer_mib << 20) + (16 << 20);
    eprintln!("seeded {REPO}:{TAG} ({digest})");

    let mut rows = Vec::new();
    // mirror copy
    {
        let dst = TestRegistry::anonymous().await;
        let cfg = work.path().join("mirror.yaml");
        std::fs::write(
            &cfg,
            format!(
                "registries:\n  - host: mcr.microsoft.com\n    endpoint: {}\n  - host: bench.azurecr.io\n    endpoint: {}\n",
                src.url(),
                dst.url()
            ),
        )
        .unwrap();
        let mut cmd = measure::mirror_command();
        cmd.arg("-c").arg(&cfg).args([
            "copy",
            &format!("mcr.microsoft.com/{REPO}:{TAG}"),
            &format!("bench.azurecr.io/{REPO}:{TAG}"),
        ]);
        let before = requests_served(&src);
        let log = work.path().join("mirror.log");
        let m = measure::run(cmd, &log).await;
        assert!(m.success, "mirror copy failed:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        let got = support::images::manifest_digest(&dst.url(), REPO, TAG, None).await;
        assert_eq!(got.as_ref(), Some(&digest), "mirror copy result");
        rows.push(("mirror copy", m, requests_served(&src) - before + requests_served(&dst)));
    }
    // skopeo copy --all, for reference
    {
        let dst = TestRegistry::anonymous().await;
        let mut cmd = Command::new("skopeo");
        cmd.env("REGISTRY_AUTH_FILE", "/dev/null").args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-no-creds",
            "--dest-no-creds",
            &format!("docker://{}/{REPO}:{TAG}", src.host()),
            &format!("docker://{}/{REPO}:{TAG}", dst.host()),
        ]);
        let before = requests_served(&src);
        let log = work.path().join("skopeo.log");
        let m = measure::run(cmd, &log).await;
        assert!(m.success, "skopeo copy failed:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        rows.push(("skopeo copy --all", m, requests_served(&src) - before + requests_served(&dst)));
    }

    let mut md = format!(
        "Multi-arch OCI index: linux/amd64 with one {layer_mib} MiB layer, linux/arm64 with one 16 MiB layer; \
         default transfer settings (concurrency 16, chunkSize 32 MiB).\n\n\
         | tool | seconds | MiB/s | requests | peak RSS MiB |\n| --- | --- | --- | --- | --- |\n"
    );
    println!("{:<20} {:>8} {:>8} {:>9} {:>13}", "tool", "seconds", "MiB/s", "requests", "peak RSS MiB");
    for (tool, m, requests) in &rows {
        let rate = total as f64 / 1048576.0 / m.seconds;
        let rss = m.max_rss_kib as f64 / 1024.0;
        println!("{tool:<20} {:>8.1} {rate:>8.1} {requests:>9} {rss:>13.1}", m.seconds);
        writeln!(md, "| {tool} | {:.1} | {rate:.1} | {requests} | {rss:.1} |", m.seconds).unwrap();
    }
    let mirror_rss = rows[0].1.max_rss_kib as f64 / 1024.0;
    let verdict = if mirror_rss < 64.0 { "met" } else { "MISSED" };
    println!("mirror peak RSS {mirror_rss:.1} MiB: target < 64 MiB {verdict}");
    writeln!(md, "\nTarget: `mirror copy` peak RSS under 64 MiB: {verdict} ({mirror_rss:.1} MiB).").unwrap();
    if docs {
        measure::write_docs_block("copy_rss results", &md);
    }
}
