//! The run as a Prometheus text-format file (`--metrics-file`), for an alert on "the mirror is
//! stale" and a dashboard of what each run did.
//!
//! The file is meant for node_exporter's textfile collector (a file that stays between runs) or
//! for a push to a Pushgateway after the run (`curl --data-binary @FILE`). Either way the most
//! useful line is `acr_mirror_last_success_timestamp_seconds`: a failed run keeps the value the
//! previous file had, so that `time() - acr_mirror_last_success_timestamp_seconds > 26 * 3600`
//! fires after a day without a good run however many runs failed in between. When there is no
//! previous file (a fresh volume) a failed run writes no such line at all; a Pushgateway `POST`
//! then keeps the value it already had, because it replaces only the metric names pushed.
//!
//! Every series carries `command` (`sync`, `verify`) and `shard` (`0/1` unless `--shard`) labels,
//! so that the files of several commands or shards can sit side by side in one collector folder.
//! No timestamps are written on the samples: the Pushgateway refuses them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use super::Report;
use crate::plan::Status;
use crate::transfer::pipeline::Outcome;

/// What the metrics of one run are made of.
#[derive(Debug, Clone)]
pub struct RunMetrics<'a> {
    /// `sync` or `verify`.
    pub command: &'a str,
    /// `I/N`, `0/1` for an unsharded run.
    pub shard: String,
    /// The run's report; `None` when the run failed before it had one (bad config, target unreachable).
    pub report: Option<&'a Report>,
    /// The process exit code the run ends with.
    pub exit_code: u8,
    pub finished: SystemTime,
    pub duration_seconds: f64,
}

impl RunMetrics<'_> {
    /// A run succeeded when it exits 0: everything in place (`verify`) or done (`sync`).
    pub fn success(&self) -> bool {
        self.exit_code == crate::exit::OK
    }
}

/// What a previous metrics file carries over into the next one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Carried {
    pub last_success: Option<f64>,
    pub bytes_moved_total: f64,
}

const OUTCOMES: [(Outcome, &str); 6] = [
    (Outcome::Unchanged, "unchanged"),
    (Outcome::Copied, "copied"),
    (Outcome::Warmed, "warmed"),
    (Outcome::Failed, "failed"),
    (Outcome::Skipped, "skipped"),
    (Outcome::Interrupted, "interrupted"),
];

const PLANNED: [Status; 5] = [Status::Present, Status::Missing, Status::Outdated, Status::Partial, Status::Error];

/// Renders the metrics file. `carried` comes from the previous file ([`read_carried`]).
pub fn render(m: &RunMetrics, carried: Carried) -> String {
    let labels = format!("command=\"{}\",shard=\"{}\"", escape(m.command), escape(&m.shard));
    let now = unix_seconds(m.finished);
    let mut o = String::new();
    let family = |o: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, String)]| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for (extra, value) in samples {
            let _ = writeln!(o, "{name}{{{labels}{extra}}} {value}");
        }
    };

    family(
        &mut o,
        "acr_mirror_up",
        "1 when the last run succeeded (exit code 0), else 0.",
        "gauge",
        &[(String::new(), if m.success() { "1" } else { "0" }.into())],
    );
    family(
        &mut o,
        "acr_mirror_last_run_exit_code",
        "Exit code of the last run (0 ok, 1 error, 2 drift, 3 some images failed, 4 lock held).",
        "gauge",
        &[(String::new(), m.exit_code.to_string())],
    );
    family(
        &mut o,
        "acr_mirror_last_run_timestamp_seconds",
        "Unix time the last run finished.",
        "gauge",
        &[(String::new(), fmt_f64(now))],
    );
    let last_success = if m.success() { Some(now) } else { carried.last_success };
    if let Some(t) = last_success {
        family(
            &mut o,
            "acr_mirror_last_success_timestamp_seconds",
            "Unix time the last successful run finished (kept across failed runs).",
            "gauge",
            &[(String::new(), fmt_f64(t))],
        );
    }
    family(
        &mut o,
        "acr_mirror_run_duration_seconds",
        "Wall time of the last run.",
        "gauge",
        &[(String::new(), fmt_f64(m.duration_seconds))],
    );
    let bytes = m.report.map(|r| r.summary.bytes).unwrap_or(0);
    family(
        &mut o,
        "acr_mirror_last_run_bytes",
        "Blob bytes the last run moved (copied, or read through the cache).",
        "gauge",
        &[(String::new(), bytes.to_string())],
    );
    family(
        &mut o,
        "acr_mirror_bytes_moved_total",
        "Blob bytes moved by all runs that wrote this file.",
        "counter",
        &[(String::new(), fmt_f64(carried.bytes_moved_total + bytes as f64))],
    );
    if let Some(r) = m.report {
        let by_outcome: Vec<(String, String)> = OUTCOMES
            .iter()
            .map(|(o, name)| {
                (format!(",status=\"{name}\""), r.images.iter().filter(|i| i.outcome == *o).count().to_string())
            })
            .collect();
        family(&mut o, "acr_mirror_images", "Images of the last run by what happened to them.", "gauge", &by_outcome);
        let by_plan: Vec<(String, String)> = PLANNED
            .iter()
            .map(|s| (format!(",status=\"{s}\""), r.images.iter().filter(|i| i.planned == *s).count().to_string()))
            .collect();
        family(
            &mut o,
            "acr_mirror_images_planned",
            "Images of the last run by what the plan found in the target before it.",
            "gauge",
            &by_plan,
        );
    }
    o
}

/// Reads what a previous metrics file carries over; anything unreadable counts as absent.
pub fn read_carried(text: &str) -> Carried {
    let mut c = Carried::default();
    for line in text.lines() {
        let value = || line.rsplit_once(' ').and_then(|(_, v)| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite());
        if line.starts_with("acr_mirror_last_success_timestamp_seconds{") {
            c.last_success = value();
        } else if line.starts_with("acr_mirror_bytes_moved_total{") {
            c.bytes_moved_total = value().filter(|v| *v >= 0.0).unwrap_or(0.0);
        }
    }
    c
}

/// Writes the metrics file at `path` atomically (temporary name, then rename), carrying over
/// from the file already there.
pub fn write_file(path: &Path, m: &RunMetrics) -> std::io::Result<()> {
    let carried = match std::fs::read_to_string(path) {
        Ok(text) => read_carried(&text),
        Err(_) => Carried::default(),
    };
    // The textfile collector reads only `*.prom` and ignores other names, so the temporary file
    // it might see mid-write must not end in `.prom`.
    super::write_file(path, render(m, carried).as_bytes())
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Prometheus sample values: integers without a fraction, others with millisecond precision.
fn fmt_f64(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v:.3}") }
}

/// Label value escaping of the text format: backslash, double quote and newline.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MappingMode;
    use crate::transfer::pipeline::ImageResult;
    use std::time::Duration;

    fn img(outcome: Outcome, planned: Status, bytes: u64) -> ImageResult {
        ImageResult {
            source: "s".into(),
            target: "t".into(),
            mode: MappingMode::Copy,
            planned,
            outcome,
            source_digest: None,
            target_digest: None,
            bytes,
            duration_ms: 0,
            error: None,
        }
    }

    fn report() -> Report {
        Report::new(
            "sync",
            SystemTime::UNIX_EPOCH,
            1500,
            vec![
                img(Outcome::Copied, Status::Missing, 100),
                img(Outcome::Copied, Status::Outdated, 20),
                img(Outcome::Unchanged, Status::Present, 0),
                img(Outcome::Failed, Status::Missing, 5),
            ],
        )
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Every sample line of a rendering as (series, value).
    fn samples(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (s, v) = l.rsplit_once(' ').unwrap();
                (s.to_string(), v.to_string())
            })
            .collect()
    }

    fn value(text: &str, series: &str) -> Option<String> {
        samples(text).into_iter().find(|(s, _)| s == series).map(|(_, v)| v)
    }

    #[test]
    fn a_successful_sync_renders_counts_bytes_and_times() {
        // Checks the series an alert and a dashboard need, with their labels and values, and that
        // every line is either a comment or `name{labels} value` with HELP and TYPE per name.
        let r = report();
        let m = RunMetrics {
            command: "sync",
            shard: "1/3".into(),
            report: Some(&r),
            exit_code: 0,
            finished: at(1_795_700_000),
            duration_seconds: 12.5,
        };
        let text = render(&m, Carried { last_success: Some(1.0), bytes_moved_total: 1000.0 });
        let l = "command=\"sync\",shard=\"1/3\"";
        assert_eq!(value(&text, &format!("acr_mirror_up{{{l}}}")).as_deref(), Some("1"));
        assert_eq!(
            value(&text, &format!("acr_mirror_last_success_timestamp_seconds{{{l}}}")).as_deref(),
            Some("1795700000")
        );
        assert_eq!(
            value(&text, &format!("acr_mirror_last_run_timestamp_seconds{{{l}}}")).as_deref(),
            Some("1795700000")
        );
        assert_eq!(value(&text, &format!("acr_mirror_run_duration_seconds{{{l}}}")).as_deref(), Some("12.500"));
        assert_eq!(value(&text, &format!("acr_mirror_last_run_bytes{{{l}}}")).as_deref(), Some("125"));
        assert_eq!(value(&text, &format!("acr_mirror_bytes_moved_total{{{l}}}")).as_deref(), Some("1125"));
        assert_eq!(value(&text, &format!("acr_mirror_images{{{l},status=\"copied\"}}")).as_deref(), Some("2"));
        assert_eq!(value(&text, &format!("acr_mirror_images{{{l},status=\"failed\"}}")).as_deref(), Some("1"));
        assert_eq!(value(&text, &format!("acr_mirror_images{{{l},status=\"skipped\"}}")).as_deref(), Some("0"));
        assert_eq!(value(&text, &format!("acr_mirror_images_planned{{{l},status=\"missing\"}}")).as_deref(), Some("2"));
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP acr_mirror_")
                    || line.starts_with("# TYPE acr_mirror_")
                    || (line.starts_with("acr_mirror_") && line.contains("{command=\"sync\"")),
                "malformed line {line:?}"
            );
        }
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(names.len(), helps);
        assert!(names.contains(&"acr_mirror_bytes_moved_total counter"), "{names:?}");
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_from_the_previous_file() {
        // Checks the staleness contract: a failed run reports up 0 and its own exit code, keeps the
        // previous success time and byte total, and writes no success time when there was none.
        let r = report();
        let ok = RunMetrics {
            command: "sync",
            shard: "0/1".into(),
            report: Some(&r),
            exit_code: 0,
            finished: at(1000),
            duration_seconds: 1.0,
        };
        let first = render(&ok, Carried::default());
        let carried = read_carried(&first);
        assert_eq!(carried, Carried { last_success: Some(1000.0), bytes_moved_total: 125.0 });

        let failed = RunMetrics { report: None, exit_code: 1, finished: at(5000), ..ok.clone() };
        let second = render(&failed, carried);
        let l = "command=\"sync\",shard=\"0/1\"";
        assert_eq!(value(&second, &format!("acr_mirror_up{{{l}}}")).as_deref(), Some("0"));
        assert_eq!(value(&second, &format!("acr_mirror_last_run_exit_code{{{l}}}")).as_deref(), Some("1"));
        assert_eq!(
            value(&second, &format!("acr_mirror_last_success_timestamp_seconds{{{l}}}")).as_deref(),
            Some("1000")
        );
        assert_eq!(value(&second, &format!("acr_mirror_last_run_timestamp_seconds{{{l}}}")).as_deref(), Some("5000"));
        assert_eq!(value(&second, &format!("acr_mirror_bytes_moved_total{{{l}}}")).as_deref(), Some("125"));
        assert!(!second.contains("acr_mirror_images{"), "no image counts without a report:\n{second}");

        let fresh = render(&failed, Carried::default());
        assert!(!fresh.contains("acr_mirror_last_success_timestamp_seconds"), "{fresh}");
        assert!(
            read_carried("garbage\nacr_mirror_last_success_timestamp_seconds{x=\"1\"} NaN\n").last_success.is_none()
        );
    }

    #[test]
    fn write_file_is_atomic_and_reads_back_its_predecessor() {
        // Checks the file on disk: written whole under its name (no temporary left beside it), and a
        // failed run's file keeps the success time of the file it replaces.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acr-mirror.prom");
        let r = report();
        let ok = RunMetrics {
            command: "verify",
            shard: "0/1".into(),
            report: Some(&r),
            exit_code: 0,
            finished: at(2000),
            duration_seconds: 0.25,
        };
        write_file(&path, &ok).unwrap();
        write_file(&path, &RunMetrics { exit_code: 2, finished: at(9000), ..ok.clone() }).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("acr_mirror_last_success_timestamp_seconds{command=\"verify\",shard=\"0/1\"} 2000"),
            "{text}"
        );
        assert!(text.contains("acr_mirror_up{command=\"verify\",shard=\"0/1\"} 0"), "{text}");
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, vec!["acr-mirror.prom".to_string()]);
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
