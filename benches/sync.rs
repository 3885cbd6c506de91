//! `mirror sync` against `skopeo sync` and against the target registry's own ingest ceiling, on
//! an AKS-shaped fixture (issue #4's benchmark). Not a test: it prints a table and writes it into
//! `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench --bench sync -- [--scale 0.125] [--profile local|latency|all] [--no-docs]
//! ```
//!
//! Every case starts from an empty target registry (a fresh `docker-registry` 2.8 process), reads
//! from the same seeded source registry, and runs the release `mirror` binary or `skopeo` as a
//! child process: wall time from the bench, peak RSS from GNU `time`, requests from the two registries'
//! access logs (so the count includes nothing of ours and costs the tools nothing).
//!
//! Cases, per profile:
//! - ceiling: the target ingesting the linux fixture's distinct blobs by parallel (8) monolithic
//!   `POST` + `PUT` uploads from memory, no manifests;
//! - through-source ceiling: the same blobs streamed from the source into another empty target,
//!   16 at once (`GET` → `POST` + `PUT`, the body of the `GET` piped into the `PUT`), no manifests,
//!   no verification: the least a copy does (issue #22's `local` target is 1.05× of this);
//! - full copy of the linux fixture: `mirror sync` vs `skopeo sync --all --preserve-digests`, one
//!   skopeo run per repository, sequentially (both copy every blob and manifest, identical bytes);
//! - the no-op re-run of both into the now complete target;
//! - the fixture whose indexes also carry Windows children: `mirror sync` with `platforms:
//!   [linux/amd64, linux/arm64]` and `indexPolicy: rewrite` (only the linux children and a new
//!   index; distribution 2.8 refuses a sparse index) vs `skopeo sync --all` (every child).
//!
//! The `latency` profile puts a `DelayProxy` (20 ms each way) between the tool and each registry,
//! the ceiling's uploads included.

#[path = "../tests/support/mod.rs"]
mod support;

#[allow(dead_code)] // shared with examples/seed.rs
mod fixture;
mod measure;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use acr_mirror::digest::Digest;
use fixture::{Fixture, SOURCE_HOST, Seeded};
use measure::{Measured, busy_share, machine_ticks, own_cpu_seconds, registry_cpu_seconds as reg_cpu, requests_served};
use support::{DelayProxy, TestRegistry, TokenService, Users};

const TARGET_HOST: &str = "bench.azurecr.io";
const WARM_CASE: &str = "warm through a cache";
const DELAY: Duration = Duration::from_millis(20);
const CEILING_CONCURRENCY: usize = 8;
/// The through-source ceiling's parallel copies: `mirror`'s default `transfer.concurrency`.
const THROUGH_SOURCE_CONCURRENCY: usize = 16;
const THROUGH_SOURCE: &str = "through-source ceiling (16 streamed GET → PUT)";
/// The warm ceiling's parallel GETs: as many as `mirror`'s default `transfer.concurrency`.
const WARM_CEILING_CONCURRENCY: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Profile {
    Local,
    Latency,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Local => "local",
            Profile::Latency => "latency",
        }
    }
}

struct Args {
    scale: f64,
    profiles: Vec<Profile>,
    docs: bool,
    windows: bool,
    skopeo: bool,
    /// Only the warm cases (the copy cases' recorded results are left as they are).
    warm_only: bool,
    /// Rounds of the warm cases (ceiling, then mirror, each round), reported by their medians:
    /// a round takes seconds and varies by ±15% on a 2-core machine.
    warm_rounds: usize,
    /// Other builds of `mirror` to time against each other (`--compare A,B,…`): paired rounds of
    /// the through-source ceiling and each build's full copy, nothing else, no docs.
    compare: Vec<PathBuf>,
    /// Rounds of `--compare`.
    rounds: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        scale: 0.125,
        profiles: vec![Profile::Local, Profile::Latency],
        docs: true,
        windows: true,
        skopeo: true,
        warm_only: false,
        warm_rounds: 3,
        compare: Vec::new(),
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--scale" => a.scale = it.next().and_then(|s| s.parse().ok()).expect("--scale NUMBER"),
            "--profile" => {
                a.profiles = match it.next().as_deref() {
                    Some("local") => vec![Profile::Local],
                    Some("latency") => vec![Profile::Latency],
                    Some("all") => vec![Profile::Local, Profile::Latency],
                    other => panic!("--profile local|latency|all, not {other:?}"),
                }
            }
            "--no-docs" => a.docs = false,
            "--no-windows" => a.windows = false,
            // For engine experiments: the ceiling and mirror only.
            "--no-skopeo" => a.skopeo = false,
            "--warm-only" => a.warm_only = true,
            "--warm-rounds" => {
                a.warm_rounds =
                    it.next().and_then(|s| s.parse().ok()).filter(|&n| n > 0).expect("--warm-rounds N (≥ 1)")
            }
            "--compare" => {
                a.compare = it.next().expect("--compare BINARY,BINARY,…").split(',').map(PathBuf::from).collect()
            }
            "--rounds" => {
                a.rounds = it.next().and_then(|s| s.parse().ok()).filter(|&n| n > 0).expect("--rounds N (≥ 1)")
            }
            other => panic!(
                "unknown argument {other:?}; usage: sync [--scale X] [--profile local|latency|all] [--no-docs] [--no-windows] [--no-skopeo] [--warm-only] [--warm-rounds N] [--compare BIN,BIN,… [--rounds N]]"
            ),
        }
    }
    if !a.skopeo && !a.warm_only {
        a.docs = false; // a partial table must not replace the recorded one
    }
    if a.warm_only || !a.compare.is_empty() {
        a.windows = false;
    }
    if !a.compare.is_empty() {
        a.docs = false;
    }
    a
}

/// A registry as the tool sees it: directly, or through a delay proxy.
struct Endpoint {
    url: String,
    host: String,
    _proxy: Option<DelayProxy>,
}

async fn endpoint(reg: &TestRegistry, profile: Profile) -> Endpoint {
    match profile {
        Profile::Local => Endpoint { url: reg.url(), host: reg.host(), _proxy: None },
        Profile::Latency => {
            let p = DelayProxy::start(&reg.url(), DELAY).await;
            Endpoint { url: p.url(), host: p.host(), _proxy: Some(p) }
        }
    }
}

/// One line of the result table.
#[derive(Clone)]
struct Row {
    profile: Profile,
    case: &'static str,
    tool: &'static str,
    seconds: f64,
    bytes: u64,
    requests: u64,
    rss_kib: Option<u64>,
    /// CPU seconds of the tool and both registries (the ceiling: the target registry only).
    cpu: f64,
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

/// Writes the mirror config for one run.
fn mirror_config(
    dir: &Path,
    name: &str,
    src: &Endpoint,
    dst: &Endpoint,
    f: &Fixture,
    linux_only: bool,
    mode: &str,
) -> PathBuf {
    let mut y = String::new();
    writeln!(y, "registries:").unwrap();
    writeln!(y, "  - host: {SOURCE_HOST}\n    endpoint: {}", src.url).unwrap();
    writeln!(y, "  - host: {TARGET_HOST}\n    endpoint: {}", dst.url).unwrap();
    writeln!(y, "target: {TARGET_HOST}").unwrap();
    // Repository paths stay as they are: oss/v2/kubernetes/pause -> bench.azurecr.io/oss/v2/kubernetes/pause.
    writeln!(y, "mappings:\n  - source: \"*\"\n    target: \"\"\n    mode: {mode}").unwrap();
    if linux_only {
        writeln!(y, "platforms: [linux/amd64, linux/arm64]\nindexPolicy: rewrite").unwrap();
    }
    // For trying other engine settings without editing the bench, e.g.
    // BENCH_MIRROR_TRANSFER='{concurrency: 16, images: 32}'. Unset: the defaults.
    if let Ok(t) = std::env::var("BENCH_MIRROR_TRANSFER") {
        writeln!(y, "transfer: {t}").unwrap();
    }
    writeln!(y, "images:").unwrap();
    for i in &f.images {
        writeln!(y, "  - {}", i.reference()).unwrap();
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, y).expect("write mirror config");
    path
}

async fn run_mirror(config: &Path, log: &Path) -> Measured {
    run_mirror_at(&measure::mirror_command(), config, log).await
}

async fn run_mirror_at(base: &Command, config: &Path, log: &Path) -> Measured {
    let mut cmd = Command::new(base.get_program());
    cmd.envs(base.get_envs().filter_map(|(k, v)| Some((k, v?))));
    // MIRROR_LOG from the bench's environment wins (e.g. debug, with BENCH_KEEP=1).
    let level = std::env::var("MIRROR_LOG").unwrap_or_else(|_| "info".into());
    cmd.arg("-c").arg(config).arg("sync").env("MIRROR_LOG", level);
    // For experiments, e.g. BENCH_MIRROR_SYNC_ARGS=--no-referrers. Unset: none.
    if let Ok(extra) = std::env::var("BENCH_MIRROR_SYNC_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    let m = measure::run(cmd, log).await;
    assert!(m.success, "mirror sync failed; see {}", log.display());
    m
}

/// One `skopeo sync` per repository, sequentially, keeping repository paths; returns the total
/// time and the largest peak RSS of the runs.
async fn run_skopeo(f: &Fixture, src: &Endpoint, dst: &Endpoint, log: &Path) -> Measured {
    let mut seconds = 0.0;
    let mut cpu_seconds = 0.0;
    let mut rss = 0;
    for repo in f.repositories() {
        let dest = match repo.rsplit_once('/') {
            Some((parent, _)) => format!("{}/{parent}", dst.host),
            None => dst.host.clone(),
        };
        let mut cmd = Command::new("skopeo");
        cmd.env("REGISTRY_AUTH_FILE", "/dev/null").args([
            "sync",
            "--src",
            "docker",
            "--dest",
            "docker",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-no-creds",
            "--dest-no-creds",
        ]);
        cmd.arg(format!("{}/{repo}", src.host)).arg(dest);
        let m = measure::run(cmd, log).await;
        assert!(m.success, "skopeo sync of {repo} failed; see {}", log.display());
        seconds += m.seconds;
        cpu_seconds += m.cpu_seconds;
        rss = rss.max(m.max_rss_kib);
    }
    Measured { seconds, max_rss_kib: rss, cpu_seconds, success: true }
}

/// Checks (untimed) that every fixture tag resolves in the target, to the source digest when
/// `same_digest`.
async fn check_target(dst: &TestRegistry, seeded: &Seeded, same_digest: bool, who: &str) {
    for (repo, tag, digest) in &seeded.images {
        let got = support::images::manifest_digest(&dst.url(), repo, tag, None).await;
        let got = got.unwrap_or_else(|| panic!("{who}: {repo}:{tag} missing in the target"));
        if same_digest {
            assert_eq!(&got, digest, "{who}: {repo}:{tag} digest");
        }
    }
}

/// Parallel monolithic uploads of `blobs` (already in memory) into `dst`.
async fn ceiling(blobs: &[(Digest, String, Bytes)], dst: &Endpoint) -> f64 {
    let http = support::http_client();
    let started = Instant::now();
    futures::stream::iter(blobs)
        .map(|(digest, repo, bytes)| {
            let http = &http;
            async move {
                let resp = http.post(format!("{}/v2/{repo}/blobs/uploads/", dst.url)).send().await.expect("POST");
                assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED);
                let loc = resp.headers()["location"].to_str().unwrap().to_string();
                let loc = url::Url::parse(&dst.url).unwrap().join(&loc).unwrap();
                let sep = if loc.query().is_some() { '&' } else { '?' };
                let resp = http
                    .put(format!("{loc}{sep}digest={digest}"))
                    .header("content-type", "application/octet-stream")
                    .body(bytes.clone())
                    .send()
                    .await
                    .expect("PUT");
                assert_eq!(resp.status(), reqwest::StatusCode::CREATED, "PUT {digest}");
            }
        })
        .buffer_unordered(CEILING_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    started.elapsed().as_secs_f64()
}

/// Every `(repository, blob, size)` the linux fixture's images reference: what warming must read
/// through a cache at the least (a cache keeps blobs per repository, so a base layer shared by two
/// repositories is read through each). Read from the source, untimed.
async fn warm_reads(src: &TestRegistry, seeded: &Seeded) -> Vec<(String, Digest, u64)> {
    let mut reads: Vec<(String, Digest, u64)> = Vec::new();
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).expect("manifest JSON");
    for (repo, tag, _) in &seeded.images {
        let (index, _, _) = support::images::get_manifest(&src.url(), repo, tag, None).await.expect("fixture index");
        for child in json(&index)["manifests"].as_array().expect("an index") {
            let digest = child["digest"].as_str().expect("child digest");
            let (m, _, _) = support::images::get_manifest(&src.url(), repo, digest, None).await.expect("child");
            let m = json(&m);
            for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().expect("layers")) {
                let blob = Digest::parse(d["digest"].as_str().expect("blob digest")).expect("a digest");
                if !reads.iter().any(|(r, b, _)| r == repo && *b == blob) {
                    reads.push((repo.clone(), blob, d["size"].as_u64().expect("blob size")));
                }
            }
        }
    }
    reads
}

/// Parallel GETs of `reads` through the cache at `cache_url`, each body read to its end.
async fn warm_ceiling(reads: &[(String, Digest, u64)], cache_url: &str) -> f64 {
    let http = support::http_client();
    let started = Instant::now();
    futures::stream::iter(reads)
        .map(|(repo, digest, size)| {
            let http = &http;
            async move {
                let resp = http.get(format!("{cache_url}/v2/{repo}/blobs/{digest}")).send().await.expect("GET");
                assert_eq!(resp.status(), reqwest::StatusCode::OK, "GET {repo}@{digest}");
                let body = resp.bytes().await.expect("blob body");
                assert_eq!(body.len() as u64, *size, "{repo}@{digest}");
            }
        })
        .buffer_unordered(WARM_CEILING_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    started.elapsed().as_secs_f64()
}

/// The warm cases: a fresh pull-through cache (distribution in proxy mode) of the source, reached
/// through the profile's delay, read by parallel GETs of every blob (the ceiling) or warmed by
/// `mirror sync` with a `mode: warm` mapping (every platform, so the same blobs).
/// How loaded the machine was while a case ran: the share of its cores' time that was busy
/// (every process: registries, the bench's proxies and token service, the tool), and the CPU
/// seconds of this bench process itself (its proxies, token service and clients).
#[derive(Clone, Copy)]
struct Load {
    busy: f64,
    bench_cpu: f64,
}

/// Runs `case`, measuring the [`Load`] meanwhile.
async fn loaded<T>(case: impl std::future::Future<Output = T>) -> (T, Load) {
    let (ticks, own) = (machine_ticks(), own_cpu_seconds());
    let out = case.await;
    (out, Load { busy: busy_share(ticks, machine_ticks()), bench_cpu: own_cpu_seconds() - own })
}

/// One round of the warm cases: each case's seconds and load.
struct Round {
    ceiling: f64,
    mirror: f64,
    ceiling_load: Load,
    mirror_load: Load,
}

/// The median rows, and each round.
async fn warm_rows(p: Profile, s: &Sources, work: &Path, rounds: usize) -> (Vec<Row>, Vec<Round>) {
    let bytes: u64 = s.warm_reads.iter().map(|(_, _, size)| size).sum();
    let origin = WarmOrigin::start(&s.linux, p).await;
    let origin_reg = origin.registry(&s.linux);
    let upstream = endpoint(origin_reg, p).await;
    let (mut ceilings, mut mirrors, mut each) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        {
            let cache = TestRegistry::proxy_cache(&upstream.url).await;
            let before = requests_served(origin_reg) + requests_served(&cache);
            let cpu0 = reg_cpu(origin_reg) + reg_cpu(&cache);
            let (secs, load) = loaded(warm_ceiling(&s.warm_reads, &cache.url())).await;
            each.push(Round { ceiling: secs, mirror: 0.0, ceiling_load: load, mirror_load: load });
            let requests = requests_served(origin_reg) + requests_served(&cache) - before;
            let cpu = reg_cpu(origin_reg) + reg_cpu(&cache) - cpu0;
            let tool = "ceiling (parallel GETs)";
            ceilings.push(Row {
                profile: p,
                case: WARM_CASE,
                tool,
                seconds: secs,
                bytes,
                requests,
                rss_kib: None,
                cpu,
            });
            eprintln!("[{}] round {round}/{rounds}: warm ceiling: {secs:.1} s", p.name());
        }
        {
            let cache = TestRegistry::proxy_cache(&upstream.url).await;
            let dst = Endpoint { url: cache.url(), host: cache.host(), _proxy: None };
            let src = endpoint(origin_reg, p).await;
            let name = format!("{}-warm-{round}", p.name());
            let cfg = mirror_config(work, &name, &src, &dst, &s.linux_fixture, false, "warm");
            let log_file = work.join(format!("{name}.log"));
            let run = measured(p, "mirror warm", origin_reg, &cache, run_mirror(&cfg, &log_file));
            let ((m, requests, cpu), load) = loaded(run).await;
            let r = each.last_mut().expect("the round's ceiling");
            (r.mirror, r.mirror_load) = (m.seconds, load);
            let rss_kib = Some(m.max_rss_kib);
            let tool = "mirror sync (warm)";
            mirrors.push(Row { profile: p, case: WARM_CASE, tool, seconds: m.seconds, bytes, requests, rss_kib, cpu });
            let digests: Vec<&Digest> = s.warm_reads.iter().map(|(_, d, _)| d).collect();
            cache.wait_for_blobs_on_disk(&digests).await;
        }
    }
    (vec![median(ceilings), median(mirrors)], each)
}

/// The median of each round's mirror / ceiling: the two cases of a round run back to back, so
/// their ratio is steadier than the ratio of the medians when the machine's speed drifts.
fn paired_ratio(rounds: &[Round]) -> f64 {
    let mut r: Vec<f64> = rounds.iter().map(|x| x.mirror / x.ceiling).collect();
    r.sort_by(f64::total_cmp);
    r[r.len() / 2]
}

/// The row with the median time (the upper one of an even count).
fn median(mut rows: Vec<Row>) -> Row {
    rows.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    rows.swap_remove(rows.len() / 2)
}

/// What the warm cases' cache pulls from: the seeded source served a second time behind token
/// auth with anonymous pulls (as Docker Hub, ghcr.io and quay.io serve public images), its token
/// service behind the profile's delay like the registry.
///
/// Why not the open source registry itself: distribution 2.8's proxy re-establishes auth
/// challenges with its upstream (`GET /v2/`) before every upstream request for as long as it has
/// none, holding one process-wide mutex across that round trip (`remoteAuthChallenger.
/// tryEstablishChallenges`, registry/proxy/proxyregistry.go). An upstream that never challenges
/// therefore serialises every upstream request of the cache, and the cases measured that lock
/// (two 40 ms pings per blob read, one after another) rather than the tools. An upstream that
/// answers `/v2/` with a Bearer challenge is pinged once. `BENCH_WARM_UPSTREAM=anonymous` puts
/// the open source back, for comparing with the earlier rounds.
struct WarmOrigin(Option<TokenView>);

/// The source behind token auth: the second registry process, and what it needs running.
struct TokenView {
    _tokens: TokenService,
    _realm: Option<DelayProxy>,
    view: TestRegistry,
}

impl WarmOrigin {
    async fn start(src: &TestRegistry, p: Profile) -> Self {
        if std::env::var("BENCH_WARM_UPSTREAM").is_ok_and(|v| v == "anonymous") {
            return WarmOrigin(None);
        }
        let tokens = TokenService::start(Users::new().anonymous(true)).await;
        let (realm, proxy) = match p {
            Profile::Local => (tokens.realm(), None),
            Profile::Latency => {
                let base = tokens.realm().trim_end_matches("/token").to_string();
                let proxy = DelayProxy::start(&base, DELAY).await;
                (format!("{}/token", proxy.url()), Some(proxy))
            }
        };
        let view = TestRegistry::token_view(src, &tokens, &realm).await;
        WarmOrigin(Some(TokenView { _tokens: tokens, _realm: proxy, view }))
    }

    /// The registry the cache pulls from and `mirror` reads the source at.
    fn registry<'a>(&'a self, src: &'a TestRegistry) -> &'a TestRegistry {
        self.0.as_ref().map_or(src, |t| &t.view)
    }
}

struct Sources {
    linux_fixture: Fixture,
    linux: TestRegistry,
    linux_seeded: Seeded,
    windows: Option<(Fixture, TestRegistry, Seeded)>,
    /// The linux fixture's distinct blobs, in memory, for the ceiling.
    ceiling_blobs: Vec<(Digest, String, Bytes)>,
    /// What warming the linux fixture reads through a cache: `(repository, blob, size)`.
    warm_reads: Vec<(String, Digest, u64)>,
    skopeo: bool,
}

/// `--compare`: paired rounds of the through-source ceiling and a full copy by each given build
/// of `mirror` (builds of other commits, for finding where a regression came in), each into a
/// fresh target from the same source; prints each build's median time, its median ratio to its
/// round's ceiling, and its requests.
async fn compare(p: Profile, s: &Sources, work: &Path, builds: &[PathBuf], rounds: usize) {
    let blobs: Vec<(String, Digest, u64)> =
        s.ceiling_blobs.iter().map(|(d, repo, b)| (repo.clone(), d.clone(), b.len() as u64)).collect();
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    let mut requests = vec![0u64; builds.len()];
    let mut ceilings = Vec::new();
    for round in 0..rounds {
        let dst = TestRegistry::anonymous().await;
        let (src_ep, dst_ep) = (endpoint(&s.linux, p).await, endpoint(&dst, p).await);
        let http = support::http_client();
        let (ceiling, _) =
            measure::through_source(&http, &src_ep.url, &dst_ep.url, &blobs, THROUGH_SOURCE_CONCURRENCY).await;
        ceilings.push(ceiling);
        // Every other round in reverse order, so a machine that drifts faster or slower during
        // the run does not favour the builds at one end of the list.
        let order: Vec<usize> =
            if round % 2 == 0 { (0..builds.len()).collect() } else { (0..builds.len()).rev().collect() };
        for i in order {
            let build = &builds[i];
            let dst = TestRegistry::anonymous().await;
            let dst_ep = endpoint(&dst, p).await;
            let name = format!("{}-compare-{round}-{i}", p.name());
            let cfg = mirror_config(work, &name, &src_ep, &dst_ep, &s.linux_fixture, false, "copy");
            let (base, log) = (measure::mirror_command_at(build), work.join(format!("{name}.log")));
            let run = run_mirror_at(&base, &cfg, &log);
            let (m, n, _) = measured(p, &build.display().to_string(), &s.linux, &dst, run).await;
            check_target(&dst, &s.linux_seeded, true, &build.display().to_string()).await;
            seconds[i].push(m.seconds);
            ratios[i].push(m.seconds / ceiling);
            requests[i] = n;
        }
    }
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("through-source ceiling: median {:.2} s of {ceilings:.2?}", med(&ceilings));
    for (i, build) in builds.iter().enumerate() {
        println!(
            "{:<40} median {:.2} s, median ratio to the round's ceiling {:.2} (rounds {:.2?}), {} requests",
            build.display(),
            med(&seconds[i]),
            med(&ratios[i]),
            seconds[i],
            requests[i]
        );
    }
}

async fn profile_rows(p: Profile, s: &Sources, work: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let (linux_bytes, _) = s.linux_seeded.blob_bytes();
    let log = |name: &str| work.join(format!("{}-{name}.log", p.name()));

    // Ceiling.
    {
        let dst = TestRegistry::anonymous().await;
        let ep = endpoint(&dst, p).await;
        let before = requests_served(&dst);
        let cpu0 = reg_cpu(&dst);
        let secs = ceiling(&s.ceiling_blobs, &ep).await;
        rows.push(Row {
            profile: p,
            case: "full copy",
            tool: "ceiling (parallel PUTs)",
            seconds: secs,
            bytes: linux_bytes,
            requests: requests_served(&dst) - before,
            rss_kib: None,
            cpu: reg_cpu(&dst) - cpu0,
        });
        eprintln!("[{}] ceiling: {secs:.1} s", p.name());
    }

    // Through-source ceiling: what a copy must do at the least, the source's reads included.
    {
        let dst = TestRegistry::anonymous().await;
        let (src_ep, dst_ep) = (endpoint(&s.linux, p).await, endpoint(&dst, p).await);
        let blobs: Vec<(String, Digest, u64)> =
            s.ceiling_blobs.iter().map(|(d, repo, b)| (repo.clone(), d.clone(), b.len() as u64)).collect();
        let (before, cpu0) = (requests_served(&s.linux) + requests_served(&dst), reg_cpu(&s.linux) + reg_cpu(&dst));
        let http = support::http_client();
        let (secs, _) =
            measure::through_source(&http, &src_ep.url, &dst_ep.url, &blobs, THROUGH_SOURCE_CONCURRENCY).await;
        rows.push(Row {
            profile: p,
            case: "full copy",
            tool: THROUGH_SOURCE,
            seconds: secs,
            bytes: linux_bytes,
            requests: requests_served(&s.linux) + requests_served(&dst) - before,
            rss_kib: None,
            cpu: reg_cpu(&s.linux) + reg_cpu(&dst) - cpu0,
        });
        eprintln!("[{}] through-source ceiling: {secs:.1} s", p.name());
    }

    // mirror and skopeo: full copy, then the no-op re-run, each into its own empty target.
    for tool in ["mirror", "skopeo"] {
        if tool == "skopeo" && !s.skopeo {
            continue;
        }
        let dst = TestRegistry::anonymous().await;
        let (src_ep, dst_ep) = (endpoint(&s.linux, p).await, endpoint(&dst, p).await);
        let cfg =
            mirror_config(work, &format!("{}-linux", p.name()), &src_ep, &dst_ep, &s.linux_fixture, false, "copy");
        for (case, run) in [("full copy", "full"), ("no-op re-run", "noop")] {
            let log_file = log(&format!("{tool}-{run}"));
            let label = format!("{tool} {case}");
            let (m, requests, cpu) = match tool {
                "mirror" => measured(p, &label, &s.linux, &dst, run_mirror(&cfg, &log_file)).await,
                _ => {
                    measured(p, &label, &s.linux, &dst, run_skopeo(&s.linux_fixture, &src_ep, &dst_ep, &log_file)).await
                }
            };
            let name = if tool == "mirror" { "mirror sync" } else { "skopeo sync --all" };
            let bytes = if case == "full copy" { linux_bytes } else { 0 };
            rows.push(Row {
                profile: p,
                case,
                tool: name,
                seconds: m.seconds,
                bytes,
                requests,
                rss_kib: Some(m.max_rss_kib),
                cpu,
            });
            check_target(&dst, &s.linux_seeded, true, tool).await;
        }
    }

    // With Windows children: mirror copies the linux platforms only, skopeo --all everything.
    if let Some((wf, wsrc, wseeded)) = &s.windows {
        let (wlinux, wall) = wseeded.blob_bytes();
        let case = "with Windows children";
        {
            let dst = TestRegistry::anonymous().await;
            let (src_ep, dst_ep) = (endpoint(wsrc, p).await, endpoint(&dst, p).await);
            let cfg = mirror_config(work, &format!("{}-windows", p.name()), &src_ep, &dst_ep, wf, true, "copy");
            let log_file = log("mirror-windows");
            let run = run_mirror(&cfg, &log_file);
            let (m, requests, cpu) = measured(p, "mirror linux-only", wsrc, &dst, run).await;
            let tool = "mirror sync (linux only)";
            rows.push(Row {
                profile: p,
                case,
                tool,
                seconds: m.seconds,
                bytes: wlinux,
                requests,
                rss_kib: Some(m.max_rss_kib),
                cpu,
            });
            check_target(&dst, wseeded, false, "mirror linux-only").await;
        }
        if s.skopeo {
            let dst = TestRegistry::anonymous().await;
            let (src_ep, dst_ep) = (endpoint(wsrc, p).await, endpoint(&dst, p).await);
            let log_file = log("skopeo-windows");
            let run = run_skopeo(wf, &src_ep, &dst_ep, &log_file);
            let (m, requests, cpu) = measured(p, "skopeo --all with windows", wsrc, &dst, run).await;
            let tool = "skopeo sync --all";
            rows.push(Row {
                profile: p,
                case,
                tool,
                seconds: m.seconds,
                bytes: wall,
                requests,
                rss_kib: Some(m.max_rss_kib),
                cpu,
            });
            check_target(&dst, wseeded, true, "skopeo windows").await;
        }
    }
    rows
}

/// Runs one tool case from `src` into `dst` and measures it: the child's time and peak RSS, the
/// requests both registries served meanwhile, and their CPU added to the tool's.
async fn measured(
    p: Profile,
    label: &str,
    src: &TestRegistry,
    dst: &TestRegistry,
    run: impl std::future::Future<Output = Measured>,
) -> (Measured, u64, f64) {
    let before = requests_served(src) + requests_served(dst);
    let cpu0 = reg_cpu(src) + reg_cpu(dst);
    let (sp, dp) = (measure::log_position(src), measure::log_position(dst));
    let m = run.await;
    let requests = requests_served(src) + requests_served(dst) - before;
    let cpu = m.cpu_seconds + reg_cpu(src) + reg_cpu(dst) - cpu0;
    eprintln!(
        "[{}] {label}: {:.1} s ({:.1} s CPU), {requests} requests (source {:?}, target {:?})",
        p.name(),
        m.seconds,
        m.cpu_seconds,
        measure::breakdown(src, sp),
        measure::breakdown(dst, dp)
    );
    (m, requests, cpu)
}

fn find<'a>(rows: &'a [Row], p: Profile, case: &str, tool_prefix: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.profile == p && r.case == case && r.tool.starts_with(tool_prefix))
}

/// The ratios the issue sets targets for, per profile: (what, measured, target, met).
fn verdicts(rows: &[Row], p: Profile) -> Vec<(String, f64, String, bool)> {
    let mut v = Vec::new();
    let (full_x, noop_x) = match p {
        Profile::Local => (2.0, 10.0),
        Profile::Latency => (5.0, 20.0),
    };
    if let (Some(c), Some(m), Some(s)) = (
        find(rows, p, "full copy", "ceiling"),
        find(rows, p, "full copy", "mirror"),
        find(rows, p, "full copy", "skopeo"),
    ) {
        let r = m.seconds / c.seconds;
        v.push(("mirror full copy / ceiling".into(), r, "≤ 1.3".into(), r <= 1.3));
        if let Some(t) = find(rows, p, "full copy", THROUGH_SOURCE) {
            // Issue #22's target is for the local profile; the latency figure is shown for reading.
            let r = m.seconds / t.seconds;
            let (target, met) = match p {
                Profile::Local => ("≤ 1.05".to_string(), r <= 1.05),
                Profile::Latency => ("(none)".to_string(), true),
            };
            v.push(("mirror full copy / through-source ceiling".into(), r, target, met));
        }
        let r = s.seconds / m.seconds;
        v.push(("skopeo full copy / mirror".into(), r, format!("≥ {full_x}"), r >= full_x));
    }
    if let (Some(m), Some(s)) = (find(rows, p, "no-op re-run", "mirror"), find(rows, p, "no-op re-run", "skopeo")) {
        let r = s.seconds / m.seconds;
        v.push(("skopeo no-op / mirror no-op".into(), r, format!("≥ {noop_x}"), r >= noop_x));
    }
    if let (Some(m), Some(s)) =
        (find(rows, p, "with Windows children", "mirror"), find(rows, p, "with Windows children", "skopeo"))
    {
        let r = s.seconds / m.seconds;
        v.push(("skopeo --all (with Windows) / mirror linux-only".into(), r, "≥ 3".into(), r >= 3.0));
    }
    let rss = rows.iter().filter(|r| r.profile == p && r.tool.starts_with("mirror")).filter_map(|r| r.rss_kib).max();
    if let Some(kib) = rss {
        let m = kib as f64 / 1024.0;
        v.push(("mirror peak RSS (MiB)".into(), m, "< 64".into(), m < 64.0));
    }
    v
}

fn table(rows: &[Row], markdown: bool) -> String {
    let cells = |r: &Row| {
        let rate = if r.bytes > 0 { format!("{:.1}", mib(r.bytes) / r.seconds) } else { "-".into() };
        vec![
            r.profile.name().to_string(),
            r.case.to_string(),
            r.tool.to_string(),
            format!("{:.1}", r.seconds),
            format!("{:.0}", mib(r.bytes)),
            rate,
            r.requests.to_string(),
            r.rss_kib.map(|k| format!("{:.1}", k as f64 / 1024.0)).unwrap_or_else(|| "-".into()),
            format!("{:.1}", r.cpu),
        ]
    };
    let head = ["profile", "case", "tool", "seconds", "MiB", "MiB/s", "requests", "peak RSS MiB", "CPU s"];
    measure::render_table(&head, rows.iter().map(cells).collect(), &[8, 22, 25, 8, 7, 7, 9, 13, 7], markdown)
}

fn machine() -> String {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok()))
        .map(|k| format!("{:.0} GiB", k as f64 / 1048576.0))
        .unwrap_or_default();
    format!(
        "{}, {mem} memory; docker-registry 2.8 (distribution) as source and target; {}",
        measure::cores_and_cpu(),
        measure::skopeo_version()
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    // BENCH_KEEP=1 keeps the work folder (configs, and the tools' logs with MIRROR_LOG=info and
    // timestamps) for reading after the run.
    let tmp = tempfile::Builder::new().prefix("bench-sync-").tempdir().expect("work dir");
    let (_tmp, work) = if std::env::var_os("BENCH_KEEP").is_some() {
        let kept = tmp.keep();
        eprintln!("work folder kept: {}", kept.display());
        (None, kept)
    } else {
        let path = tmp.path().to_path_buf();
        (Some(tmp), path)
    };
    let started = Instant::now();

    let linux_fixture = Fixture::aks(args.scale, false);
    let linux = TestRegistry::anonymous().await;
    let linux_seeded = fixture::seed(&linux_fixture, &linux.url()).await;
    let (lb, _) = linux_seeded.blob_bytes();
    eprintln!(
        "seeded linux fixture: {} images in {} repositories, {:.0} MiB of distinct blobs, in {:.1} s",
        linux_seeded.images.len(),
        linux_fixture.repositories().len(),
        mib(lb),
        linux_seeded.seconds
    );
    let windows = if args.windows {
        let wf = Fixture::aks(args.scale, true);
        let wsrc = TestRegistry::anonymous().await;
        let ws = fixture::seed(&wf, &wsrc.url()).await;
        let (l, a) = ws.blob_bytes();
        eprintln!(
            "seeded fixture with Windows children: {:.0} MiB ({:.0} MiB linux) in {:.1} s",
            mib(a),
            mib(l),
            ws.seconds
        );
        Some((wf, wsrc, ws))
    } else {
        None
    };
    let ceiling_blobs: Vec<(Digest, String, Bytes)> = {
        // Only the copy cases' ceiling uploads these.
        let blobs: Vec<_> = linux_seeded.blobs.iter().filter(|b| b.linux && !args.warm_only).cloned().collect();
        tokio::task::spawn_blocking(move || {
            blobs.into_iter().map(|b| (b.digest.clone(), b.repository.clone(), b.bytes())).collect()
        })
        .await
        .unwrap()
    };
    let warm_reads = warm_reads(&linux, &linux_seeded).await;
    let sources =
        Sources { linux_fixture, linux, linux_seeded, windows, ceiling_blobs, warm_reads, skopeo: args.skopeo };

    if !args.compare.is_empty() {
        for p in &args.profiles {
            compare(*p, &sources, &work, &args.compare, args.rounds).await;
        }
        return;
    }
    let (mut rows, mut warm, mut warm_pairs) = (Vec::new(), Vec::new(), Vec::new());
    for p in &args.profiles {
        if !args.warm_only {
            rows.extend(profile_rows(*p, &sources, &work).await);
        }
        let (rows, pairs) = warm_rows(*p, &sources, &work, args.warm_rounds).await;
        warm.extend(rows);
        warm_pairs.push((*p, pairs));
    }

    println!("{}", table(&rows, false));
    let f = &sources.linux_fixture;
    let header = format!(
        "Measured on: {}.\n\nFixture at scale {}: {} images in {} repositories; linux fixture {:.0} MiB of distinct blobs{}.\n\n",
        machine(),
        args.scale,
        f.images.len(),
        f.repositories().len(),
        mib(sources.linux_seeded.blob_bytes().0),
        match &sources.windows {
            Some((_, _, ws)) => format!(
                "; with Windows children {:.0} MiB, of which {:.0} MiB linux",
                mib(ws.blob_bytes().1),
                mib(ws.blob_bytes().0)
            ),
            None => String::new(),
        }
    );
    println!("targets:");
    for p in &args.profiles {
        let mine: Vec<Row> = rows.iter().filter(|r| r.profile == *p).map(Row::clone).collect();
        let mut md = header.clone();
        md.push_str(&table(&mine, true));
        writeln!(md, "\n| ratio | measured | target | met |\n| --- | --- | --- | --- |").unwrap();
        for (what, value, target, met) in verdicts(&rows, *p) {
            println!(
                "  {:<8} {what:<50} {value:>7.2}  target {target:<6} {}",
                p.name(),
                if met { "met" } else { "MISSED" }
            );
            writeln!(md, "| {what} | {value:.2} | {target} | {} |", if met { "yes" } else { "**no**" }).unwrap();
        }
        if args.docs && !args.warm_only {
            measure::write_docs_block(&format!("sync results {}", p.name()), &md);
        }
    }
    println!("{}", table(&warm, false));
    let mut md = format!(
        "Measured on: {}.\n\nFixture at scale {}: the linux fixture's {} images read through the cache, {:.0} MiB in {} (repository, blob) reads. Each row is the median of {} rounds (ceiling, then mirror, in each).\n\n",
        machine(),
        args.scale,
        f.images.len(),
        mib(sources.warm_reads.iter().map(|(_, _, size)| size).sum()),
        sources.warm_reads.len(),
        args.warm_rounds
    );
    md.push_str(&table(&warm, true));
    writeln!(md, "\n| ratio | measured | target | met |\n| --- | --- | --- | --- |").unwrap();
    for (p, pairs) in &warm_pairs {
        let r = paired_ratio(pairs);
        let met = if r <= 1.1 { "met" } else { "MISSED" };
        println!("  {:<8} {:<50} {r:>7.2}  target ≤ 1.1  {met}", p.name(), "mirror warm / ceiling (median of rounds)");
        writeln!(
            md,
            "| {} mirror warm / ceiling, median of the rounds' ratios | {r:.2} | ≤ 1.1 | {} |",
            p.name(),
            if r <= 1.1 { "yes" } else { "**no**" }
        )
        .unwrap();
    }
    for (p, rounds) in &warm_pairs {
        let each: Vec<String> = rounds
            .iter()
            .map(|r| {
                format!(
                    "{:.1} s / {:.1} s ({:.2}; cores {:.0}% / {:.0}% busy, the bench's own proxies {:.1} / {:.1} CPU s)",
                    r.ceiling,
                    r.mirror,
                    r.mirror / r.ceiling,
                    r.ceiling_load.busy * 100.0,
                    r.mirror_load.busy * 100.0,
                    r.ceiling_load.bench_cpu,
                    r.mirror_load.bench_cpu
                )
            })
            .collect();
        writeln!(md, "\n{} rounds, ceiling / mirror: {}.", p.name(), each.join("; ")).unwrap();
        eprintln!("[{}] rounds: {}", p.name(), each.join("; "));
    }
    if args.docs {
        measure::write_docs_block("sync results warm", &md);
    }
    eprintln!("total bench time {:.0} s", started.elapsed().as_secs_f64());
}
