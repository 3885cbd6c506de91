//! Scale-out and monitoring through the built binary against real registries: `--shard I/N`
//! splits plan/sync/verify by target repository, and `--metrics-file` records each run.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::{Format, Seeder, TestRegistry};

fn mirror(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirror"))
        .args(args)
        .current_dir(cwd)
        .env_remove("MIRROR_CONFIG")
        // Hermetic: the scratch folder has no config.json, so no developer's Docker credentials.
        .env("DOCKER_CONFIG", cwd)
        .env("MIRROR_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run mirror")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Target references of a `plan -o json` output.
fn planned_targets(out: &Output) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plan -o json: {e}\n{}\n{}", text(&out.stdout), text(&out.stderr)));
    v["images"].as_array().unwrap().iter().map(|i| i["target"].as_str().unwrap().to_string()).collect()
}

fn repository_of(target: &str) -> String {
    // 127.0.0.1:PORT/mirror/app3:v1 -> mirror/app3
    let path = target.split_once('/').unwrap().1;
    path.rsplit_once(':').unwrap().0.to_string()
}

fn metric(text: &str, series: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(str::to_string))
}

// Checks the whole scale-out story on 8 images in 6 repositories (two repositories with two
// tags, all images sharing one base layer): the shards' plans are disjoint, never split a
// repository, and together are the whole plan; syncing each shard separately leaves the target
// complete (verify exits 0); each run's metrics file says what it did; a bad --shard is exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_partition_the_plan_and_together_sync_everything() {
    let src = TestRegistry::anonymous().await;
    let dst = TestRegistry::anonymous().await;
    let mut seeder = Seeder::new(&src.url(), 7);
    let base = seeder.random_blob(4096);
    let mut images = Vec::new();
    for (repo, tag) in
        [("app0", "v1"), ("app1", "v1"), ("app2", "v1"), ("app2", "v2"), ("app3", "v1"), ("app4", "v1"), ("app5", "v1")]
            .into_iter()
            .chain([("app5", "v2")])
    {
        let own = seeder.random_blob(1024);
        seeder.push_image(repo, tag, Format::Oci, &[base.clone(), own]).await;
        images.push(format!("{}/{repo}:{tag}", src.host()));
    }

    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "target: {dst}\nmappings:\n  - source: \"*\"\n    target: mirror\n    mode: copy\nimages:\n{images}\nregistries:\n  - host: {src}\n    endpoint: {src_url}\n  - host: {dst}\n    endpoint: {dst_url}\ntransfer: {{retries: 1}}\n",
        dst = dst.host(),
        src = src.host(),
        src_url = src.url(),
        dst_url = dst.url(),
        images = images.iter().map(|i| format!("  - {i}\n")).collect::<String>(),
    );
    std::fs::write(dir.path().join("mirror.yaml"), cfg).unwrap();
    let cwd = dir.path();

    let whole = mirror(&["plan", "-c", "mirror.yaml", "-o", "json"], cwd);
    assert_eq!(whole.status.code(), Some(2), "{}", text(&whole.stderr));
    let whole: BTreeSet<String> = planned_targets(&whole).into_iter().collect();
    assert_eq!(whole.len(), 8);

    for n in [2u32, 3] {
        let mut union = BTreeSet::new();
        let mut repo_owner = std::collections::HashMap::new();
        for i in 0..n {
            let shard = format!("{i}/{n}");
            let out = mirror(&["plan", "-c", "mirror.yaml", "-o", "json", "--shard", &shard], cwd);
            assert!(matches!(out.status.code(), Some(0 | 2)), "{shard}: {}", text(&out.stderr));
            for t in planned_targets(&out) {
                assert!(union.insert(t.clone()), "{t} planned by two shards of {n}");
                let owner = repo_owner.entry(repository_of(&t)).or_insert(i);
                assert_eq!(*owner, i, "repository of {t} split over shards of {n}");
            }
        }
        assert_eq!(union, whole, "the shards of {n} together are not the whole plan");
    }

    // Sync shard by shard, each with its metrics file, as the pods of an Indexed Job would.
    let mut copied_total = 0;
    for i in 0..2 {
        let shard = format!("{i}/2");
        let prom = format!("shard{i}.prom");
        let out = mirror(&["sync", "-c", "mirror.yaml", "--shard", &shard, "--metrics-file", &prom], cwd);
        assert_eq!(out.status.code(), Some(0), "sync {shard}: {}", text(&out.stderr));
        let m = std::fs::read_to_string(cwd.join(&prom)).unwrap();
        let l = format!("command=\"sync\",shard=\"{shard}\"");
        assert_eq!(metric(&m, &format!("acr_mirror_last_run_success{{{l}}}")).as_deref(), Some("1"), "{m}");
        assert_eq!(
            metric(&m, &format!("acr_mirror_last_run_images{{{l},outcome=\"failed\"}}")).as_deref(),
            Some("0"),
            "{m}"
        );
        let copied: usize =
            metric(&m, &format!("acr_mirror_last_run_images{{{l},outcome=\"copied\"}}")).unwrap().parse().unwrap();
        copied_total += copied;
        assert!(metric(&m, &format!("acr_mirror_last_success_timestamp_seconds{{{l}}}")).is_some(), "{m}");
    }
    assert_eq!(copied_total, 8, "each image copied by exactly one shard");

    let out = mirror(&["verify", "-c", "mirror.yaml", "--metrics-file", "verify.prom"], cwd);
    assert_eq!(out.status.code(), Some(0), "verify after all shards: {}{}", text(&out.stdout), text(&out.stderr));
    let m = std::fs::read_to_string(cwd.join("verify.prom")).unwrap();
    let l = "command=\"verify\",shard=\"0/1\"";
    assert_eq!(
        metric(&m, &format!("acr_mirror_last_run_images_planned{{{l},status=\"present\"}}")).as_deref(),
        Some("8"),
        "{m}"
    );
    let success = metric(&m, &format!("acr_mirror_last_success_timestamp_seconds{{{l}}}")).unwrap();

    // A failed run (the target gone) keeps the last success time and says up 0, exit code 1.
    let mut dst = dst;
    dst.stop().await;
    let out = mirror(&["verify", "-c", "mirror.yaml", "--metrics-file", "verify.prom"], cwd);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let m = std::fs::read_to_string(cwd.join("verify.prom")).unwrap();
    assert_eq!(metric(&m, &format!("acr_mirror_last_run_success{{{l}}}")).as_deref(), Some("0"), "{m}");
    assert_eq!(metric(&m, &format!("acr_mirror_last_run_exit_code{{{l}}}")).as_deref(), Some("1"), "{m}");
    assert_eq!(metric(&m, &format!("acr_mirror_last_success_timestamp_seconds{{{l}}}")), Some(success), "{m}");

    let out = mirror(&["sync", "-c", "mirror.yaml", "--shard", "2/2"], cwd);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("shard index 2 is not below the number of shards 2"), "{}", text(&out.stderr));
}
