//! The run as a Prometheus text-format file (`--metrics-file`), for an alert on "the mirror is
//! stale" and a dashboard of what each run did.
//!
//! The file is meant for node_exporter's textfile collector (a file that stays between runs) or
//! for a push to a Pushgateway after the run (`curl --data-binary @FILE`). Neither keeps a
//! counter going across runs (each run writes the whole file anew), so every series is a gauge
//! about the last run, named by Prometheus convention (`acr_mirror_last_run_…`, unit suffixes
//! `_seconds` and `_bytes`, no `_total`), with the run's finish time beside it. The most useful
//! line is `acr_mirror_last_success_timestamp_seconds`: a failed run keeps the value the
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
}

/// The name of the series [`read_carried`] looks for.
const LAST_SUCCESS: &str = "acr_mirror_last_success_timestamp_seconds";

/// Renders the metrics file. `carried` comes from the previous file ([`read_carried`]).
pub fn render(m: &RunMetrics, carried: Carried) -> String {
    let labels = format!("command=\"{}\",shard=\"{}\"", escape(m.command), escape(&m.shard));
    let now = unix_seconds(m.finished);
    let mut o = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        for (extra, value) in samples {
            let _ = writeln!(o, "{name}{{{labels}{extra}}} {value}");
        }
    };
    let one = |v: String| [(String::new(), v)];

    gauge(
        "acr_mirror_last_run_success",
        "1 when the last run succeeded (exit code 0), else 0.",
        &one(if m.success() { "1" } else { "0" }.into()),
    );
    gauge(
        "acr_mirror_last_run_exit_code",
        "Exit code of the last run (0 ok, 1 error, 2 drift, 3 some images failed, 4 lock held, 130/143 stopped by a signal).",
        &one(m.exit_code.to_string()),
    );
    gauge("acr_mirror_last_run_timestamp_seconds", "Unix time the last run finished.", &one(fmt_f64(now)));
    let last_success = if m.success() { Some(now) } else { carried.last_success };
    if let Some(t) = last_success {
        gauge(LAST_SUCCESS, "Unix time the last successful run finished (kept across failed runs).", &one(fmt_f64(t)));
    }
    gauge("acr_mirror_last_run_duration_seconds", "Wall time of the last run.", &one(fmt_f64(m.duration_seconds)));
    let bytes = m.report.map(|r| r.summary.bytes).unwrap_or(0);
    gauge(
        "acr_mirror_last_run_image_bytes",
        "Blob bytes the images of the last run needed moved (sync: that it put into the target), a blob shared by several images counted for each.",
        &one(bytes.to_string()),
    );
    let Some(r) = m.report else { return o };
    let by = |label: &str, counts: &[(&str, usize)]| -> Vec<(String, String)> {
        counts.iter().map(|(name, n)| (format!(",{label}=\"{name}\""), n.to_string())).collect()
    };
    if let Some(c) = &r.summary.outcomes {
        let counts = [
            ("unchanged", c.unchanged),
            ("copied", c.copied),
            ("warmed", c.warmed),
            ("failed", c.failed),
            ("skipped", c.skipped),
            ("interrupted", c.interrupted),
            ("rejected", c.rejected),
        ];
        gauge("acr_mirror_last_run_images", "Images of the last run by what it did to them.", &by("outcome", &counts));
    }
    let p = &r.summary.planned;
    let counts = [
        ("present", p.present),
        ("missing", p.missing),
        ("outdated", p.outdated),
        ("partial", p.partial),
        ("error", p.error),
        ("skipped", p.skipped),
    ];
    gauge(
        "acr_mirror_last_run_images_planned",
        "Images of the last run by what the plan found in the target before it.",
        &by("status", &counts),
    );
    if let Some(g) = &r.summary.signatures {
        let counts = [
            ("verified", g.verified),
            ("unsigned", g.unsigned),
            ("invalid", g.invalid),
            ("not covered", g.not_covered),
        ];
        gauge(
            "acr_mirror_last_run_images_signature",
            "Images of the last run whose signatures the provenance gate checked, by what they proved.",
            &by("signature", &counts),
        );
    }
    o
}

/// Reads what a previous metrics file carries over; anything unreadable counts as absent.
pub fn read_carried(text: &str) -> Carried {
    let last_success = text
        .lines()
        .filter(|l| l.strip_prefix(LAST_SUCCESS).is_some_and(|rest| rest.starts_with('{')))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
        .rfind(|v| v.is_finite());
    Carried { last_success }
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
    use crate::plan::Status;
    use crate::transfer::pipeline::{ImageResult, Outcome};
    use prometheus_parse::{LineInfo, Scrape, Value};
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
            error_kind: None,
            signature: None,
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

    /// The file as a real exposition-format parser reads it; every line must be understood (the
    /// parser skips lines it cannot read, so that is checked line by line first).
    fn parse(text: &str) -> Scrape {
        for line in text.lines() {
            assert!(!matches!(LineInfo::parse(line), LineInfo::Ignored | LineInfo::Empty), "unparsed line {line:?}");
        }
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
    }

    /// The gauge `name` whose labels include every pair of `labels`.
    fn gauge(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = s
            .samples
            .iter()
            .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
            .map(|x| match x.value {
                Value::Gauge(v) => v,
                ref other => panic!("{name} is {other:?}, not a gauge"),
            })
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} appears {} times", found.len());
        found.first().copied()
    }

    #[test]
    fn a_successful_sync_renders_gauges_by_convention() {
        // Checks, through a real parser, the series an alert and a dashboard need with their
        // labels and values, and Prometheus naming: every series a documented gauge, units as
        // suffixes, no `_total` (nothing here is a counter). Fails on a renamed or mistyped series.
        let r = report();
        let m = RunMetrics {
            command: "sync",
            shard: "1/3".into(),
            report: Some(&r),
            exit_code: 0,
            finished: at(1_795_700_000),
            duration_seconds: 12.5,
        };
        let s = parse(&render(&m, Carried { last_success: Some(1.0) }));
        let l = [("command", "sync"), ("shard", "1/3")];
        assert_eq!(gauge(&s, "acr_mirror_last_run_success", &l), Some(1.0));
        assert_eq!(gauge(&s, "acr_mirror_last_success_timestamp_seconds", &l), Some(1_795_700_000.0));
        assert_eq!(gauge(&s, "acr_mirror_last_run_timestamp_seconds", &l), Some(1_795_700_000.0));
        assert_eq!(gauge(&s, "acr_mirror_last_run_duration_seconds", &l), Some(12.5));
        assert_eq!(gauge(&s, "acr_mirror_last_run_image_bytes", &l), Some(125.0));
        let by = |k, v| [l[0], l[1], (k, v)];
        assert_eq!(gauge(&s, "acr_mirror_last_run_images", &by("outcome", "copied")), Some(2.0));
        assert_eq!(gauge(&s, "acr_mirror_last_run_images", &by("outcome", "failed")), Some(1.0));
        assert_eq!(gauge(&s, "acr_mirror_last_run_images", &by("outcome", "interrupted")), Some(0.0));
        assert_eq!(gauge(&s, "acr_mirror_last_run_images_planned", &by("status", "missing")), Some(2.0));
        for x in &s.samples {
            assert!(x.metric.starts_with("acr_mirror_") && !x.metric.ends_with("_total"), "{}", x.metric);
            assert!(s.docs.contains_key(&x.metric), "{} has no HELP", x.metric);
            assert!(matches!(x.value, Value::Gauge(_)), "{} is not a gauge", x.metric);
        }
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_from_the_previous_file() {
        // Checks the staleness contract: a failed run reports success 0 and its own exit code,
        // keeps the previous success time, and writes no success time when there was none.
        let r = report();
        let ok = RunMetrics {
            command: "sync",
            shard: "0/1".into(),
            report: Some(&r),
            exit_code: 0,
            finished: at(1000),
            duration_seconds: 1.0,
        };
        let carried = read_carried(&render(&ok, Carried::default()));
        assert_eq!(carried, Carried { last_success: Some(1000.0) });

        let failed = RunMetrics { report: None, exit_code: 1, finished: at(5000), ..ok.clone() };
        let second = render(&failed, carried);
        let s = parse(&second);
        let l = [("command", "sync"), ("shard", "0/1")];
        assert_eq!(gauge(&s, "acr_mirror_last_run_success", &l), Some(0.0));
        assert_eq!(gauge(&s, "acr_mirror_last_run_exit_code", &l), Some(1.0));
        assert_eq!(gauge(&s, "acr_mirror_last_success_timestamp_seconds", &l), Some(1000.0));
        assert_eq!(gauge(&s, "acr_mirror_last_run_timestamp_seconds", &l), Some(5000.0));
        assert!(!second.contains("acr_mirror_last_run_images{"), "no image counts without a report:\n{second}");

        let fresh = render(&failed, Carried::default());
        assert!(!fresh.contains(LAST_SUCCESS), "{fresh}");
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
        let s = parse(&std::fs::read_to_string(&path).unwrap());
        let l = [("command", "verify"), ("shard", "0/1")];
        assert_eq!(gauge(&s, LAST_SUCCESS, &l), Some(2000.0));
        assert_eq!(gauge(&s, "acr_mirror_last_run_success", &l), Some(0.0));
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, vec!["acr-mirror.prom".to_string()]);
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
