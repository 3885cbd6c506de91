//! The `wire` profile (issue #22): `mirror sync` on the protocol users run — both registries
//! serving TLS (distribution's `http.tls`, certificates from a throwaway CA this bench makes,
//! HTTP/2 negotiated by ALPN), each behind a link that delays every byte by `--delay-ms` each way
//! — against skopeo and against a through-source ceiling over the same links. Not a test: it
//! prints a table (markdown) for docs/benchmarks.md.
//!
//! ```text
//! cargo bench --bench wire -- [--scale 0.125] [--delay-ms 25] [--layer-mib 1024] [--no-skopeo] [--cases LIST] [--rounds N] [--layer-rounds N]
//! ```
//!
//! `--rounds N` adds N paired rounds of `ceiling-h1` then `mirror` (fresh targets each) and prints
//! each round's ratio and their median: on a machine shared with other work the two cases of a
//! round see the same load, so their ratio is steadier than either time. `--layer-rounds N` does
//! the same for `layer-put` then `layer-mirror`.
//!
//! Cases (each into a fresh, empty target):
//! - `ceiling-h1`: 16 parallel streamed `GET` → `POST` + `PUT` copies of the fixture's distinct
//!   linux blobs over HTTP/1.1 (one TLS connection per copy and registry): what the links and
//!   registries carry;
//! - `ceiling-h2`: the same copies multiplexed on one HTTP/2 connection per registry (reqwest's
//!   default with ALPN), which is what proves or refutes the shared-window hypothesis: every
//!   upload on one connection shares the server's connection-level receive window;
//! - `mirror`: `mirror sync` of the AKS fixture (every platform, indexes as they are), with the
//!   protocol it spoke counted from the target's access log;
//! - `skopeo`: `skopeo sync --all --preserve-digests`, one run per repository, as in the sync bench;
//! - `layer-put` and `layer-mirror`: one image with a single `--layer-mib` layer, as one streamed
//!   `GET` → `PUT` over HTTP/1.1, and as `mirror sync` of that image.
//!
//! The link is a TCP proxy in this process (lighter than netem, and netem on loopback would
//! slow every other process on the machine): each chunk read from one side is written to the
//! other `--delay-ms` later, in order, with up to 16 MiB buffered per direction. Because the
//! proxy acknowledges TCP segments at once, TCP's own window is not limited by the delay here;
//! an HTTP/2 window is, since `WINDOW_UPDATE` frames cross the link like data.

#[path = "../tests/support/mod.rs"]
mod support;

#[allow(dead_code)] // shared with examples/seed.rs
mod fixture;
#[allow(dead_code)]
mod measure;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use acr_mirror::digest::Digest;
use fixture::{Fixture, SOURCE_HOST};
use support::{Seeder, TestRegistry};

const TARGET_HOST: &str = "bench.azurecr.io";
const CEILING_CONCURRENCY: usize = 16;
const LAYER_REPO: &str = "gpu/driver-layer";

struct Args {
    scale: f64,
    delay: Duration,
    layer_mib: u64,
    skopeo: bool,
    cases: Vec<String>,
    /// Paired rounds of `ceiling-h1` then `mirror` after the cases, for the ratio on a noisy machine.
    rounds: usize,
    /// Paired rounds of `layer-put` then `layer-mirror`, likewise.
    layer_rounds: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        scale: 0.125,
        delay: Duration::from_millis(25),
        layer_mib: 1024,
        skopeo: true,
        cases: ["ceiling-h1", "ceiling-h2", "mirror", "skopeo", "layer-put", "layer-mirror"].map(String::from).to_vec(),
        rounds: 0,
        layer_rounds: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scale" => a.scale = it.next().and_then(|v| v.parse().ok()).expect("--scale X"),
            "--delay-ms" => {
                a.delay = Duration::from_millis(it.next().and_then(|v| v.parse().ok()).expect("--delay-ms N"))
            }
            "--layer-mib" => a.layer_mib = it.next().and_then(|v| v.parse().ok()).expect("--layer-mib N"),
            "--no-skopeo" => a.skopeo = false,
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--layer-rounds" => a.layer_rounds = it.next().and_then(|v| v.parse().ok()).expect("--layer-rounds N"),
            "--cases" => a.cases = it.next().expect("--cases a,b").split(',').map(String::from).collect(),
            "--bench" => {}
            other => panic!(
                "unknown argument {other:?}; usage: wire [--scale X] [--delay-ms N] [--layer-mib N] [--no-skopeo] [--cases LIST] [--rounds N] [--layer-rounds N]"
            ),
        }
    }
    if !a.skopeo {
        a.cases.retain(|c| c != "skopeo");
    }
    a
}

/// The throwaway CA and the registries' certificate (for 127.0.0.1), as PEM files in `dir`;
/// `dir/certs/ca.crt` is the CA for skopeo's `--*-cert-dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    cert_dir: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "acr-mirror wire bench CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let cert_dir = dir.join("certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    let pki = Pki { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key"), cert_dir };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(pki.cert_dir.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(&pki.cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// A link: a TCP proxy on a loopback port that delays every byte by `delay` each way.
struct Link {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Link {
    async fn start(upstream_port: u16, delay: Duration) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, delay), pump(sr, cw, delay));
                });
            }
        });
        Link { port, task }
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read, in order.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
    // 256 chunks of at most 64 KiB: 16 MiB in flight per direction at most.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(256);
    let reader = async move {
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send((tokio::time::Instant::now() + delay, buf)).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, buf)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// A registry on the wire: plain-http `plain` (for seeding and checks), the same storage over
/// TLS, and the link in front of that.
struct Wired {
    plain: TestRegistry,
    tls: TestRegistry,
    link: Link,
}

impl Wired {
    async fn start(plain: TestRegistry, pki: &Pki, delay: Duration) -> Wired {
        let tls = TestRegistry::tls_view(&plain, &pki.cert, &pki.key).await;
        let link = Link::start(tls.port(), delay).await;
        Wired { plain, tls, link }
    }
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.link.port)
    }
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.link.port)
    }
    /// CPU seconds the TLS registry process has used so far.
    fn cpu(&self) -> f64 {
        measure::registry_cpu_seconds(&self.tls)
    }
    /// Requests in the TLS process's access log by protocol, e.g. `HTTP/2.0 812`.
    fn protocols(&self) -> String {
        let log = self.tls.log();
        let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
        for l in log.lines() {
            for p in ["HTTP/1.1\"", "HTTP/2.0\""] {
                if l.contains(p) {
                    *by.entry(p.trim_end_matches('"')).or_default() += 1;
                }
            }
        }
        by.iter().map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", ")
    }
}

fn client(pki: &Pki, http1: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let b = reqwest::Client::builder().tls_certs_only([ca]).no_proxy().pool_max_idle_per_host(64);
    let b = if http1 { b.http1_only() } else { b };
    b.build().unwrap()
}

fn mirror_config(dir: &Path, name: &str, src: &Wired, dst: &Wired, pki: &Pki, images: &[String]) -> PathBuf {
    let mut y = String::new();
    writeln!(y, "registries:").unwrap();
    for (host, w) in [(SOURCE_HOST, src), (TARGET_HOST, dst)] {
        writeln!(y, "  - host: {host}\n    endpoint: {}\n    caFile: {}", w.url(), pki.ca.display()).unwrap();
    }
    writeln!(y, "target: {TARGET_HOST}").unwrap();
    writeln!(y, "mappings:\n  - source: \"*\"\n    target: \"\"\n    mode: copy").unwrap();
    if let Ok(t) = std::env::var("BENCH_MIRROR_TRANSFER") {
        writeln!(y, "transfer: {t}").unwrap();
    }
    writeln!(y, "images:").unwrap();
    for i in images {
        writeln!(y, "  - {i}").unwrap();
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, y).unwrap();
    path
}

/// `mirror sync` of `images` from `src` into `dst`, measured (its log in `dir/NAME.log`).
async fn run_mirror_sync(
    dir: &Path,
    name: &str,
    src: &Wired,
    dst: &Wired,
    pki: &Pki,
    images: &[String],
) -> measure::Measured {
    let cfg = mirror_config(dir, name, src, dst, pki, images);
    let mut cmd = measure::mirror_command();
    let level = std::env::var("MIRROR_LOG").unwrap_or_else(|_| "info".into());
    cmd.arg("-c").arg(&cfg).arg("sync").env("MIRROR_LOG", level);
    let log = dir.join(format!("{name}.log"));
    let m = measure::run(cmd, &log).await;
    assert!(m.success, "mirror sync failed: {}", std::fs::read_to_string(&log).unwrap_or_default());
    m
}

struct Row {
    case: String,
    tool: String,
    seconds: f64,
    bytes: u64,
    rss_kib: Option<u64>,
    protocol: String,
    /// CPU seconds of both registries during the case, and of the tool's process when it is one.
    cpu: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let work = tempfile::Builder::new().prefix("bench-wire-").tempdir().unwrap();
    let pki = make_pki(work.path());
    let fixture = Fixture::aks(args.scale, false);
    let want = |c: &str| args.cases.iter().any(|x| x == c);

    eprintln!("seeding the source (scale {}, a {} MiB layer)…", args.scale, args.layer_mib);
    let src_plain = TestRegistry::anonymous().await;
    let seeded = fixture::seed(&fixture, &src_plain.url()).await;
    let mut seeder = Seeder::new(&src_plain.url(), 5);
    let layer_size = args.layer_mib << 20;
    let big = seeder.push_large_image(LAYER_REPO, "1", layer_size, 22).await;
    let src = Wired::start(src_plain, &pki, args.delay).await;
    let linux: Vec<(String, Digest, u64)> =
        seeded.blobs.iter().filter(|b| b.linux).map(|b| (b.repository.clone(), b.digest.clone(), b.size)).collect();
    let linux_bytes: u64 = linux.iter().map(|b| b.2).sum();
    let references: Vec<String> = fixture.images.iter().map(|i| i.reference()).collect();
    let mut rows: Vec<Row> = Vec::new();
    let fresh = || async { Wired::start(TestRegistry::anonymous().await, &pki, args.delay).await };

    for (case, http1) in [("ceiling-h1", true), ("ceiling-h2", false)] {
        if !want(case) {
            continue;
        }
        let dst = fresh().await;
        let http = client(&pki, http1);
        let before = src.cpu() + dst.cpu();
        let (seconds, protocol) =
            measure::through_source(&http, &src.url(), &dst.url(), &linux, CEILING_CONCURRENCY).await;
        let cpu = format!("registries {:.1}", src.cpu() + dst.cpu() - before);
        eprintln!("{case}: {seconds:.1} s ({protocol}; CPU s: {cpu})");
        rows.push(Row {
            case: "AKS fixture".into(),
            tool: format!("ceiling, {CEILING_CONCURRENCY} streamed copies ({case})"),
            seconds,
            bytes: linux_bytes,
            rss_kib: None,
            protocol,
            cpu,
        });
    }
    if want("mirror") {
        let dst = fresh().await;
        let before = src.cpu() + dst.cpu();
        let m = run_mirror_sync(work.path(), "mirror", &src, &dst, &pki, &references).await;
        let cpu = format!("registries {:.1} + mirror {:.1}", src.cpu() + dst.cpu() - before, m.cpu_seconds);
        for (repo, tag, digest) in &seeded.images {
            let got = support::images::manifest_digest(&dst.plain.url(), repo, tag, None).await;
            assert_eq!(got.as_ref(), Some(digest), "mirror: {repo}:{tag}");
        }
        eprintln!("mirror: {:.1} s ({})", m.seconds, dst.protocols());
        rows.push(Row {
            case: "AKS fixture".into(),
            tool: "mirror sync".into(),
            seconds: m.seconds,
            bytes: linux_bytes,
            rss_kib: Some(m.max_rss_kib),
            protocol: dst.protocols(),
            cpu,
        });
    }
    if want("skopeo") {
        let dst = fresh().await;
        let before = src.cpu() + dst.cpu();
        let (mut seconds, mut rss, mut tool_cpu) = (0.0, 0, 0.0);
        for repo in fixture.repositories() {
            let dest = match repo.rsplit_once('/') {
                Some((parent, _)) => format!("{}/{parent}", dst.host()),
                None => dst.host(),
            };
            let mut cmd = Command::new("skopeo");
            cmd.env("REGISTRY_AUTH_FILE", "/dev/null")
                .args(["sync", "--src", "docker", "--dest", "docker", "--all", "--preserve-digests"])
                .arg("--src-cert-dir")
                .arg(&pki.cert_dir)
                .arg("--dest-cert-dir")
                .arg(&pki.cert_dir)
                .args(["--src-no-creds", "--dest-no-creds"])
                .arg(format!("{}/{repo}", src.host()))
                .arg(dest);
            let m = measure::run(cmd, &work.path().join("skopeo.log")).await;
            assert!(m.success, "skopeo failed: {}", std::fs::read_to_string(work.path().join("skopeo.log")).unwrap());
            seconds += m.seconds;
            rss = rss.max(m.max_rss_kib);
            tool_cpu += m.cpu_seconds;
        }
        eprintln!("skopeo: {seconds:.1} s ({})", dst.protocols());
        rows.push(Row {
            case: "AKS fixture".into(),
            tool: "skopeo sync".into(),
            seconds,
            bytes: linux_bytes,
            rss_kib: Some(rss),
            protocol: dst.protocols(),
            cpu: format!("registries {:.1} + skopeo {tool_cpu:.1}", src.cpu() + dst.cpu() - before),
        });
    }
    let layer = big.blobs.iter().find(|b| b.1 == layer_size).expect("the large layer").clone();
    if want("layer-put") {
        let dst = fresh().await;
        let http = client(&pki, true);
        let one = [(LAYER_REPO.to_string(), layer.0.clone(), layer.1)];
        let (seconds, protocol) = measure::through_source(&http, &src.url(), &dst.url(), &one, 1).await;
        eprintln!("layer-put: {seconds:.1} s ({protocol})");
        rows.push(Row {
            case: format!("one {} MiB layer", args.layer_mib),
            tool: "one streamed GET → PUT (HTTP/1.1)".into(),
            seconds,
            bytes: layer_size,
            rss_kib: None,
            protocol,
            cpu: "-".into(),
        });
    }
    if want("layer-mirror") {
        let dst = fresh().await;
        let m =
            run_mirror_sync(work.path(), "layer", &src, &dst, &pki, &[format!("{SOURCE_HOST}/{LAYER_REPO}:1")]).await;
        let got = support::images::manifest_digest(&dst.plain.url(), LAYER_REPO, "1", None).await;
        assert_eq!(got.as_ref(), Some(&big.digest));
        eprintln!("layer-mirror: {:.1} s ({})", m.seconds, dst.protocols());
        rows.push(Row {
            case: format!("one {} MiB layer", args.layer_mib),
            tool: "mirror sync".into(),
            seconds: m.seconds,
            bytes: layer_size,
            rss_kib: Some(m.max_rss_kib),
            protocol: dst.protocols(),
            cpu: format!("mirror {:.1}", m.cpu_seconds),
        });
    }

    let mut ratios: Vec<(f64, f64)> = Vec::new();
    for round in 1..=args.rounds {
        let dst = fresh().await;
        let (ceiling, _) =
            measure::through_source(&client(&pki, true), &src.url(), &dst.url(), &linux, CEILING_CONCURRENCY).await;
        drop(dst);
        let dst = fresh().await;
        let m = run_mirror_sync(work.path(), &format!("round{round}"), &src, &dst, &pki, &references).await;
        eprintln!("round {round}: ceiling {ceiling:.1} s, mirror {:.1} s ({:.2}×)", m.seconds, m.seconds / ceiling);
        ratios.push((ceiling, m.seconds));
    }

    let mut layer_ratios: Vec<(f64, f64)> = Vec::new();
    for round in 1..=args.layer_rounds {
        let dst = fresh().await;
        let one = [(LAYER_REPO.to_string(), layer.0.clone(), layer.1)];
        let (put, _) = measure::through_source(&client(&pki, true), &src.url(), &dst.url(), &one, 1).await;
        drop(dst);
        let dst = fresh().await;
        let images = [format!("{SOURCE_HOST}/{LAYER_REPO}:1")];
        let m = run_mirror_sync(work.path(), &format!("layer-round{round}"), &src, &dst, &pki, &images).await;
        eprintln!("layer round {round}: one PUT {put:.1} s, mirror {:.1} s ({:.2}×)", m.seconds, m.seconds / put);
        layer_ratios.push((put, m.seconds));
    }

    let mut out = String::new();
    writeln!(
        out,
        "TLS on both registries, {} ms each way on both links; AKS fixture at scale {} ({:.0} MiB of distinct linux blobs).\n",
        args.delay.as_millis(),
        args.scale,
        linux_bytes as f64 / 1048576.0
    )
    .unwrap();
    writeln!(out, "| case | tool | seconds | MiB/s | peak RSS MiB | protocol (requests) | CPU s |").unwrap();
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |").unwrap();
    for r in &rows {
        writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {} | {} | {} |",
            r.case,
            r.tool,
            r.seconds,
            r.bytes as f64 / 1048576.0 / r.seconds,
            r.rss_kib.map(|k| format!("{:.1}", k as f64 / 1024.0)).unwrap_or_else(|| "-".into()),
            r.protocol,
            r.cpu
        )
        .unwrap();
    }
    for (what, pairs) in [
        ("ceiling (HTTP/1.1) / mirror sync", &ratios),
        ("one streamed PUT of the layer / mirror sync of its image", &layer_ratios),
    ] {
        if pairs.is_empty() {
            continue;
        }
        let mut r: Vec<f64> = pairs.iter().map(|(c, m)| m / c).collect();
        r.sort_by(|a, b| a.total_cmp(b));
        let listed: Vec<String> = pairs.iter().map(|(c, m)| format!("{c:.1} s / {m:.1} s ({:.2})", m / c)).collect();
        writeln!(out, "\nPaired rounds, {what}: {}; median ratio {:.2}.", listed.join("; "), r[r.len() / 2]).unwrap();
    }
    println!("{out}");
    if std::env::var_os("BENCH_KEEP").is_some() {
        eprintln!("work folder kept: {}", work.keep().display());
    }
}
