//! Measuring a child process (wall time, and peak RSS via GNU `time`) and the requests registries
//! served (from their access logs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};

use acr_mirror::digest::Digest;

use crate::support::TestRegistry;

/// One finished child process.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub seconds: f64,
    /// Peak resident set size of the child, in KiB (GNU `time`'s `%M`).
    pub max_rss_kib: u64,
    /// CPU seconds the child used, user + system (`%U`, `%S`).
    pub cpu_seconds: f64,
    pub success: bool,
}

/// The `mirror` binary `cargo bench` built next to the benches (release profile), as a command
/// that never reads the developer's Docker config (an empty `DOCKER_CONFIG` folder): the
/// benches measure anonymous registries, and a credential helper would add its own time.
pub fn mirror_command() -> Command {
    mirror_command_at(Path::new(env!("CARGO_BIN_EXE_mirror")))
}

/// [`mirror_command`] for another build of `mirror` (the `sync` bench's `--compare`).
pub fn mirror_command_at(binary: &Path) -> Command {
    let empty = std::env::temp_dir().join("acr-mirror-bench-empty-docker-config");
    std::fs::create_dir_all(&empty).expect("empty DOCKER_CONFIG folder");
    let mut cmd = Command::new(PathBuf::from(binary));
    cmd.env("DOCKER_CONFIG", empty);
    cmd
}

/// Runs `cmd` with stdout and stderr appended to `log`, under GNU `time -f %M -o FILE`, and
/// returns wall time and the child's peak RSS. Blocking: call from `spawn_blocking`.
///
/// Not `wait4` on a child of ours: the child is spawned with `vfork` semantics, so the kernel
/// records our own RSS at its `exec` as its high-water mark (every tool then "uses" the bench's
/// memory). `time` is small, and the RSS it reports is its own forked child's.
pub fn run_measured(cmd: Command, log: &Path) -> Measured {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open child log");
    let rss_file = log.with_extension("rss");
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%M %U %S").arg("-o").arg(&rss_file).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    timed.stdin(Stdio::null()).stdout(out.try_clone().expect("clone log")).stderr(out);
    let started = Instant::now();
    let status = timed.status().unwrap_or_else(|e| panic!("cannot start /usr/bin/time {cmd:?}: {e}"));
    let seconds = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&rss_file).unwrap_or_default();
    // With a failing command, time writes "Command exited with non-zero status N" first.
    let last: Vec<&str> = text.lines().last().unwrap_or("").split_whitespace().collect();
    let max_rss_kib = last.first().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let cpu_seconds = last.iter().skip(1).filter_map(|v| v.parse::<f64>().ok()).sum();
    Measured { seconds, max_rss_kib, cpu_seconds, success: status.success() }
}

/// Async wrapper of [`run_measured`].
pub async fn run(cmd: Command, log: &Path) -> Measured {
    let log = log.to_path_buf();
    tokio::task::spawn_blocking(move || run_measured(cmd, &log)).await.expect("join measured child")
}

/// Requests in a registry's access log so far (distribution writes one combined-log line per
/// request: `… "METHOD /path HTTP/1.1" status …`).
pub fn requests_served(registry: &TestRegistry) -> u64 {
    registry
        .log()
        .lines()
        .filter(|l| {
            ["\"GET /", "\"HEAD /", "\"PUT /", "\"POST /", "\"PATCH /", "\"DELETE /"].iter().any(|m| l.contains(m))
        })
        .count() as u64
}

/// Access-log lines so far (a position for [`breakdown`]).
pub fn log_position(registry: &TestRegistry) -> usize {
    registry.log().lines().count()
}

/// Requests by method in the access-log lines after `from`, e.g. `GET 120, HEAD 300`.
pub fn breakdown(registry: &TestRegistry, from: usize) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for l in registry.log().lines().skip(from) {
        for method in ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"] {
            if l.contains(&format!("\"{method} /")) {
                *m.entry(method.to_string()).or_insert(0) += 1;
            }
        }
    }
    m
}

/// CPU seconds (user + system) the registry process has used so far, read from its
/// `/proc/PID/stat` (clock ticks taken as 100 per second, the Linux default). 0 if it cannot be
/// read.
pub fn registry_cpu_seconds(registry: &TestRegistry) -> f64 {
    let Some(pid) = registry.pid() else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU seconds this bench process has used so far (its proxies, token service and clients).
pub fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The whole machine's CPU time so far from `/proc/stat`, as (busy, all) clock ticks: the
/// difference of two readings says how busy the cores were in between (every process, the
/// bench's own proxies included).
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
    let f: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let all: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (all - idle, all)
}

/// The share of the machine's CPU time that was busy between two [`machine_ticks`] readings.
pub fn busy_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let all = after.1.saturating_sub(before.1);
    if all == 0 { 0.0 } else { after.0.saturating_sub(before.0) as f64 / all as f64 }
}

/// Streams each `(repository, digest, size)` from `src` into `dst` (`GET` → `POST` + `PUT`),
/// `parallel` at once: the through-source ceiling of a copy (no manifests, no verification);
/// returns seconds and the protocol the responses came in.
pub async fn through_source(
    http: &reqwest::Client,
    src: &str,
    dst: &str,
    blobs: &[(String, Digest, u64)],
    parallel: usize,
) -> (f64, String) {
    let started = Instant::now();
    let versions: Vec<String> = futures::stream::iter(blobs)
        .map(|(repo, digest, size)| async move {
            let get = http.get(format!("{src}/v2/{repo}/blobs/{digest}")).send().await.expect("GET");
            assert!(get.status().is_success(), "GET {digest}: {}", get.status());
            let version = format!("{:?}", get.version());
            let post = http.post(format!("{dst}/v2/{repo}/blobs/uploads/")).send().await.expect("POST");
            assert_eq!(post.status(), reqwest::StatusCode::ACCEPTED);
            let loc = post.headers()["location"].to_str().unwrap().to_string();
            let loc = url::Url::parse(dst).unwrap().join(&loc).unwrap();
            let sep = if loc.query().is_some() { '&' } else { '?' };
            let put = http
                .put(format!("{loc}{sep}digest={digest}"))
                .header("content-type", "application/octet-stream")
                .header("content-length", size.to_string())
                .body(reqwest::Body::wrap_stream(get.bytes_stream().map_err(std::io::Error::other)))
                .send()
                .await
                .expect("PUT");
            assert_eq!(put.status(), reqwest::StatusCode::CREATED, "PUT {digest}");
            version
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let mut vs = versions;
    vs.sort();
    vs.dedup();
    (started.elapsed().as_secs_f64(), vs.join(", "))
}

/// Rows as a Markdown table, or as plain columns padded to `widths` for the terminal.
pub fn render_table(head: &[&str], rows: Vec<Vec<String>>, widths: &[usize], markdown: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if markdown {
        writeln!(out, "| {} |", head.join(" | ")).unwrap();
        writeln!(out, "|{}", " --- |".repeat(head.len())).unwrap();
        for r in rows {
            writeln!(out, "| {} |", r.join(" | ")).unwrap();
        }
    } else {
        let line = |c: Vec<String>| {
            c.iter().zip(widths).map(|(s, w)| format!("{s:<w$}")).collect::<Vec<_>>().join(" ").trim_end().to_string()
        };
        writeln!(out, "{}", line(head.iter().map(|s| s.to_string()).collect())).unwrap();
        for r in rows {
            writeln!(out, "{}", line(r)).unwrap();
        }
    }
    out
}

/// "N cores (CPU model)", for the results' "Measured on" line.
pub fn cores_and_cpu() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores ({cpu})")
}

/// What `skopeo --version` prints (empty when skopeo is missing).
pub fn skopeo_version() -> String {
    Command::new("skopeo")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Replaces the block between `<!-- {marker} begin -->` and `<!-- {marker} end -->` in
/// docs/benchmarks.md with `section`; says so on stderr, or why it could not.
pub fn write_docs_block(marker: &str, section: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
    let Ok(doc) = std::fs::read_to_string(&path) else {
        eprintln!("{} not found: results not written there", path.display());
        return;
    };
    let (begin, end) = (format!("<!-- {marker} begin -->"), format!("<!-- {marker} end -->"));
    let (Some(a), Some(b)) = (doc.find(&begin), doc.find(&end)) else {
        eprintln!("{} has no {begin} … {end} markers: results not written there", path.display());
        return;
    };
    let new = format!("{}{begin}\n{section}{}", &doc[..a], &doc[b..]);
    std::fs::write(&path, new).expect("write docs/benchmarks.md");
    eprintln!("results written into {}", path.display());
}
