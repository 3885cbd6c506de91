//! Run reports in the forms their readers need: JSON for machines and archives, JUnit XML for CI
//! systems (one test case per image, so a pipeline shows which image failed), and a table for
//! the person at the terminal.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::transfer::pipeline::{ImageResult, Outcome};

pub mod metrics;

/// Everything a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `plan`, `sync` or `verify`.
    pub command: String,
    /// RFC 3339 start time (UTC).
    pub started: String,
    pub duration_ms: u64,
    pub summary: Summary,
    pub images: Vec<ImageResult>,
    /// Why the run failed as a whole, before any image result (bad config, unreachable
    /// registry, lock error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub images: usize,
    pub unchanged: usize,
    pub copied: usize,
    pub warmed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub bytes: u64,
}

impl Report {
    pub fn new(command: &str, started: std::time::SystemTime, duration_ms: u64, images: Vec<ImageResult>) -> Self {
        let mut s = Summary { images: images.len(), ..Default::default() };
        for i in &images {
            s.bytes += i.bytes;
            match i.outcome {
                Outcome::Unchanged => s.unchanged += 1,
                Outcome::Copied => s.copied += 1,
                Outcome::Warmed => s.warmed += 1,
                Outcome::Failed => s.failed += 1,
                Outcome::Skipped | Outcome::Interrupted => s.skipped += 1,
            }
        }
        Report { command: command.to_string(), started: rfc3339(started), duration_ms, summary: s, images, error: None }
    }

    /// The report of a run that failed before any image result. Minimal: the "outputs" work
    /// gives it its final shape.
    pub fn failed_run(command: &str, started: std::time::SystemTime, error: String) -> Self {
        let duration_ms = started.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0);
        Report { error: Some(error), ..Report::new(command, started, duration_ms, Vec::new()) }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("report serialises");
        v.push(b'\n');
        v
    }

    /// JUnit XML: one `<testcase>` per image; failed and skipped images say why.
    pub fn to_junit(&self) -> Vec<u8> {
        let mut out = String::new();
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let failures = self.summary.failed + usize::from(self.error.is_some());
        let tests = self.images.len() + usize::from(self.error.is_some());
        let skipped = self.summary.skipped;
        out.push_str(&format!(
            "<testsuites name=\"mirror {}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
            xml(&self.command),
            tests,
            failures,
            skipped,
            self.duration_ms as f64 / 1000.0
        ));
        out.push_str(&format!(
            "  <testsuite name=\"mirror {}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" timestamp=\"{}\" time=\"{:.3}\">\n",
            xml(&self.command),
            tests,
            failures,
            skipped,
            xml(&self.started),
            self.duration_ms as f64 / 1000.0
        ));
        for i in &self.images {
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">\n",
                xml(&format!("mirror.{:?}", i.mode).to_lowercase()),
                xml(&i.target),
                i.duration_ms as f64 / 1000.0
            ));
            match i.outcome {
                Outcome::Failed => out.push_str(&format!(
                    "      <failure message=\"{}\">source {} ({}) → target {} ({}); planned {}</failure>\n",
                    xml(i.error.as_deref().unwrap_or("failed")),
                    xml(&i.source),
                    xml(&i.source_digest.as_ref().map(|d| d.to_string()).unwrap_or_default()),
                    xml(&i.target),
                    xml(&i.target_digest.as_ref().map(|d| d.to_string()).unwrap_or_default()),
                    i.planned
                )),
                Outcome::Skipped | Outcome::Interrupted => out.push_str(&format!(
                    "      <skipped message=\"{}\"/>\n",
                    xml(i.error.as_deref().unwrap_or("skipped"))
                )),
                _ => {}
            }
            out.push_str("    </testcase>\n");
        }
        if let Some(e) = &self.error {
            out.push_str(&format!(
                "    <testcase classname=\"mirror.run\" name=\"mirror {}\">\n      <failure message=\"{}\"/>\n    </testcase>\n",
                xml(&self.command),
                xml(e)
            ));
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out.into_bytes()
    }

    /// A table for people: one row per image that is not simply unchanged, then the totals.
    pub fn table(&self, w: &mut dyn Write, all: bool) -> std::io::Result<()> {
        let rows: Vec<&ImageResult> = self.images.iter().filter(|i| all || i.outcome != Outcome::Unchanged).collect();
        if !rows.is_empty() {
            let width = rows.iter().map(|i| i.target.len()).max().unwrap_or(6).clamp(6, 90);
            writeln!(w, "{:<9} {:<8} {:<width$} {:>10} {:>8}  DETAIL", "RESULT", "PLANNED", "TARGET", "BYTES", "TIME")?;
            for i in rows {
                let detail = match (&i.error, &i.target_digest) {
                    (Some(e), _) => e.clone(),
                    (None, Some(d)) => d.to_string(),
                    _ => String::new(),
                };
                writeln!(
                    w,
                    "{:<9} {:<8} {:<width$} {:>10} {:>7.1}s  {}",
                    format!("{:?}", i.outcome).to_lowercase(),
                    i.planned.to_string(),
                    i.target,
                    human_bytes(i.bytes),
                    i.duration_ms as f64 / 1000.0,
                    detail
                )?;
            }
        }
        let s = &self.summary;
        writeln!(
            w,
            "{}: {} images — {} unchanged, {} copied, {} warmed, {} failed, {} skipped; {} moved in {:.1}s",
            self.command,
            s.images,
            s.unchanged,
            s.copied,
            s.warmed,
            s.failed,
            s.skipped,
            human_bytes(s.bytes),
            self.duration_ms as f64 / 1000.0
        )
    }
}

/// Writes a report file all at once (to a temporary name, then renamed) so that a reader never
/// sees half a report.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{}.partial", path.extension().and_then(|e| e.to_str()).unwrap_or("out")));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

/// UTC time as RFC 3339 without a date crate: civil-from-days (Howard Hinnant's algorithm).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MappingMode;
    use crate::plan::Status;

    fn result(target: &str, outcome: Outcome, error: Option<&str>) -> ImageResult {
        ImageResult {
            source: format!("src/{target}"),
            target: target.into(),
            mode: MappingMode::Copy,
            planned: Status::Missing,
            outcome,
            source_digest: None,
            target_digest: None,
            bytes: 10,
            duration_ms: 1500,
            error: error.map(String::from),
        }
    }

    #[test]
    fn junit_has_one_case_per_image_and_escapes() {
        let r = Report::new(
            "sync",
            std::time::UNIX_EPOCH,
            2000,
            vec![result("a/b:1", Outcome::Copied, None), result("a/c:<2>", Outcome::Failed, Some("boom & \"bust\""))],
        );
        let x = String::from_utf8(r.to_junit()).unwrap();
        assert_eq!(x.matches("<testcase ").count(), 2);
        assert_eq!(x.matches("<failure ").count(), 1);
        assert!(x.contains("failures=\"1\""));
        assert!(x.contains("boom &amp; &quot;bust&quot;"), "{x}");
        assert!(x.contains("a/c:&lt;2&gt;"), "{x}");
        assert!(!x.contains("boom & \""), "raw text must not leak into XML");
    }

    #[test]
    fn summary_counts_outcomes_and_bytes() {
        let r = Report::new(
            "sync",
            std::time::UNIX_EPOCH,
            0,
            vec![
                result("a", Outcome::Copied, None),
                result("b", Outcome::Unchanged, None),
                result("c", Outcome::Skipped, Some("x")),
            ],
        );
        assert_eq!((r.summary.copied, r.summary.unchanged, r.summary.skipped, r.summary.bytes), (1, 1, 1, 30));
        let mut out = Vec::new();
        r.table(&mut out, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("skipped") && !text.lines().any(|l| l.starts_with("unchanged")), "{text}");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_692_281);
        assert_eq!(rfc3339(t), "2026-11-26T11:24:41Z");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
