//! Run reports in the forms their readers need: JSON for machines and archives, JUnit XML for CI
//! systems (one test case per image, so a pipeline shows which image failed), and a table for
//! the person at the terminal.
//!
//! `plan`, `sync` and `verify` all produce one document shape ([`Report`], `schemaVersion` 1,
//! described field by field in docs/reports.md and by `schema/report.v1.json`): `plan -o json`
//! prints the same document `--report-json` writes. A run that fails before it has images still
//! gets a report ([`Report::failed_run`]), so a CI system always finds the file it was told to
//! publish.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use indicatif::HumanBytes;
use serde::Serialize;

use crate::config::{MappingMode, SignatureMode};
use crate::digest::Digest;
use crate::plan::{ImagePlan, Plan, SignatureCheck, Status};
use crate::provenance::Outcome as Provenance;
use crate::transfer::pipeline::{ImageResult, Outcome};

pub mod metrics;
pub mod prune;

/// The version of the report document; raised when a field changes meaning or goes away (new
/// fields may appear without it).
pub const SCHEMA_VERSION: u32 = 1;

/// How the run as a whole ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every image was examined (and, for `sync`, worked on); the images say how each went.
    Completed,
    /// A signal stopped the run; images not done are `interrupted`.
    Interrupted,
    /// The run failed before it could examine the images (bad config, target unreachable, …);
    /// `error` says why and `images` is empty.
    Failed,
}

/// Everything a run did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub schema_version: u32,
    /// `plan`, `sync` or `verify`.
    pub command: String,
    /// RFC 3339 start time (UTC).
    pub started: String,
    pub duration_ms: u64,
    pub status: RunStatus,
    /// Why the run failed, when `status` is `failed`.
    pub error: Option<String>,
    pub summary: Summary,
    pub images: Vec<ImageReport>,
}

/// The images of a run, counted.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub images: usize,
    /// Images by what the plan found in the target.
    pub planned: PlannedCounts,
    /// Images by what `sync` did to them; `None` for `plan` and `verify`, which change nothing.
    pub outcomes: Option<OutcomeCounts>,
    /// The images' `bytes` added up (see [`ImageReport::bytes`]).
    pub bytes: u64,
    /// What the provenance gate found; `None` when `signatures.mode` is `off`.
    pub signatures: Option<SignatureSummary>,
}

/// The provenance gate of a run: its mode, the images by what their signatures proved, and
/// what the verification does not check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureSummary {
    pub mode: SignatureMode,
    pub verified: usize,
    pub unsigned: usize,
    pub invalid: usize,
    pub not_covered: usize,
    /// Limits a reader of the report must know about (revocation is not checked offline).
    pub notes: Vec<String>,
}

/// What the provenance gate found for one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureReport {
    /// `verified`, `unsigned`, `invalid` or `not covered`.
    pub outcome: String,
    /// Who signed (`verified`): the signing certificate's subject, or `sha256:<fingerprint>` of
    /// a cosign public key.
    pub signer: Option<String>,
    /// Why no signature verified (`invalid`).
    pub reason: Option<String>,
}

impl SignatureReport {
    fn of(c: &SignatureCheck) -> Self {
        let (signer, reason) = match &c.outcome {
            Provenance::Verified { signer } => (Some(signer.clone()), None),
            Provenance::Invalid { reason } => (None, Some(reason.clone())),
            Provenance::Unsigned | Provenance::NotCovered => (None, None),
        };
        SignatureReport { outcome: c.outcome.as_str().to_string(), signer, reason }
    }

    /// Whether the gate, enforcing, holds this image back.
    fn bad(&self) -> bool {
        self.outcome == "unsigned" || self.outcome == "invalid"
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlannedCounts {
    pub present: usize,
    pub missing: usize,
    pub outdated: usize,
    pub partial: usize,
    pub error: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub unchanged: usize,
    pub copied: usize,
    pub warmed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub interrupted: usize,
    pub rejected: usize,
}

/// One image of a run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    pub source: String,
    pub target: String,
    pub mode: MappingMode,
    /// What the plan found in the target.
    pub planned: Status,
    /// What `sync` did; `None` for `plan` and `verify`.
    pub outcome: Option<Outcome>,
    /// The digest the source tag pointed at when planned.
    pub source_digest: Option<Digest>,
    /// `plan`/`verify`: what the target tag pointed at; `sync`: what it points at after the run.
    pub target_digest: Option<Digest>,
    /// `plan`/`verify`: the digest the target tag should point at (differs from the source's
    /// under the `rewrite` index policy); `None` in `sync` reports.
    pub expected_digest: Option<Digest>,
    /// For `partial`: what deep checks found missing behind the tag.
    pub missing: Vec<String>,
    /// `sync`: bytes of this image's blobs that this run put into the target (or read through
    /// the cache), a blob needed by several images counted for each of them, so that the same
    /// image reports the same count whatever order the images ran in. `plan`/`verify`: bytes
    /// this image adds to the transfer (a blob shared with an image earlier in the list counts
    /// for that image only).
    pub bytes: u64,
    /// Time spent on the image in `sync`; `None` in `plan`/`verify` reports, which look at all
    /// images at once.
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    /// A stable name of what kind of error `error` is (`timeout`, `unauthorized`,
    /// `digest_mismatch`, `short_body`, … — listed in docs/reports.md).
    pub error_kind: Option<String>,
    /// What the provenance gate found; `None` when there is no gate or it did not look at this
    /// image (`sync` looks only at images it copies or warms).
    pub signature: Option<SignatureReport>,
}

impl Report {
    /// The report of a `sync` run from its image results.
    pub fn new(command: &str, started: SystemTime, duration_ms: u64, images: Vec<ImageResult>) -> Self {
        let images: Vec<ImageReport> = images.iter().map(ImageReport::from_result).collect();
        let interrupted = images.iter().any(|i| i.outcome == Some(Outcome::Interrupted));
        let status = if interrupted { RunStatus::Interrupted } else { RunStatus::Completed };
        let mut report = Self::assemble(command, started, duration_ms, status, None, images);
        let mut o = OutcomeCounts::default();
        for i in report.images.iter().filter_map(|i| i.outcome) {
            *match i {
                Outcome::Unchanged => &mut o.unchanged,
                Outcome::Copied => &mut o.copied,
                Outcome::Warmed => &mut o.warmed,
                Outcome::Failed => &mut o.failed,
                Outcome::Skipped => &mut o.skipped,
                Outcome::Interrupted => &mut o.interrupted,
                Outcome::Rejected => &mut o.rejected,
            } += 1;
        }
        report.summary.outcomes = Some(o);
        report
    }

    /// The report of a `plan` or `verify` run: what the plan found, nothing done.
    pub fn from_plan(command: &str, started: SystemTime, duration_ms: u64, plan: &Plan) -> Self {
        let images = plan.images.iter().map(ImageReport::from_plan).collect();
        Self::assemble(command, started, duration_ms, RunStatus::Completed, None, images)
    }

    /// Adds the provenance gate's summary: `mode`, the images counted by what their signatures
    /// proved, and `notes` (what verification does not check).
    pub fn with_signatures(mut self, mode: SignatureMode, notes: Vec<String>) -> Self {
        let mut s = SignatureSummary { mode, verified: 0, unsigned: 0, invalid: 0, not_covered: 0, notes };
        for sig in self.images.iter().filter_map(|i| i.signature.as_ref()) {
            *match sig.outcome.as_str() {
                "verified" => &mut s.verified,
                "unsigned" => &mut s.unsigned,
                "invalid" => &mut s.invalid,
                _ => &mut s.not_covered,
            } += 1;
        }
        self.summary.signatures = Some(s);
        self
    }

    /// Whether the gate enforces: a covered image without a valid signature is a failure.
    fn enforced(&self) -> bool {
        self.summary.signatures.as_ref().is_some_and(|s| s.mode == SignatureMode::Enforce)
    }

    /// The report of a run that failed before it had images to report on; in JUnit one failed
    /// test case names the error, so a CI system shows why the run failed.
    pub fn failed_run(command: &str, started: SystemTime, error: String) -> Self {
        let duration_ms = SystemTime::now().duration_since(started).map(|d| d.as_millis() as u64).unwrap_or(0);
        let error = crate::sanitize::text(&error, 4 * crate::sanitize::MAX_TEXT);
        Self::assemble(command, started, duration_ms, RunStatus::Failed, Some(error), Vec::new())
    }

    fn assemble(
        command: &str,
        started: SystemTime,
        duration_ms: u64,
        status: RunStatus,
        error: Option<String>,
        images: Vec<ImageReport>,
    ) -> Self {
        let mut s = Summary { images: images.len(), ..Default::default() };
        for i in &images {
            s.bytes += i.bytes;
            let p = &mut s.planned;
            *match i.planned {
                Status::Present => &mut p.present,
                Status::Missing => &mut p.missing,
                Status::Outdated => &mut p.outdated,
                Status::Partial => &mut p.partial,
                Status::Error => &mut p.error,
                Status::Skipped => &mut p.skipped,
            } += 1;
        }
        Report {
            schema_version: SCHEMA_VERSION,
            command: command.to_string(),
            started: crate::time::rfc3339(started),
            duration_ms,
            status,
            error,
            summary: s,
            images,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("report serialises");
        v.push(b'\n');
        v
    }

    /// JUnit XML as Jenkins' xunit schema accepts it: one `<testcase>` per image, failed when the
    /// image failed (`sync`) or is not in place (`plan`, `verify`), skipped when it was not
    /// attempted; a failed run is one failed test case naming the error.
    pub fn to_junit(&self) -> Vec<u8> {
        let command = format!("mirror {}", self.command);
        let cases: Vec<Case> = match &self.error {
            Some(e) => vec![Case::failed_run(&command, self.duration_ms, e)],
            None => self.images.iter().map(|i| Case::of(i, self.enforced())).collect(),
        };
        junit_document(&command, &self.started, self.duration_ms, &cases)
    }

    /// A table for people: one row per image that is not simply unchanged, then the totals.
    pub fn table(&self, w: &mut dyn Write, all: bool) -> std::io::Result<()> {
        let rows: Vec<&ImageReport> = self
            .images
            .iter()
            .filter(|i| all || i.outcome.map_or(i.planned != Status::Present, |o| o != Outcome::Unchanged))
            .collect();
        if !rows.is_empty() {
            let width = rows.iter().map(|i| i.target.len()).max().unwrap_or(6).clamp(6, 90);
            writeln!(
                w,
                "{:<11} {:<8} {:<width$} {:>10} {:>8}  DETAIL",
                "RESULT", "PLANNED", "TARGET", "BYTES", "TIME"
            )?;
            for i in rows {
                let detail = match (&i.error, &i.target_digest) {
                    (Some(e), _) => e.clone(),
                    (None, Some(d)) => d.to_string(),
                    _ => String::new(),
                };
                writeln!(
                    w,
                    "{:<11} {:<8} {:<width$} {:>10} {:>7.1}s  {}",
                    i.outcome.map_or_else(|| i.planned.to_string(), outcome_name),
                    i.planned.to_string(),
                    i.target,
                    HumanBytes(i.bytes).to_string(),
                    i.duration_ms.unwrap_or(0) as f64 / 1000.0,
                    detail
                )?;
            }
        }
        let s = &self.summary;
        if let Some(e) = &self.error {
            writeln!(w, "{}: failed: {e}", self.command)?;
        }
        let p = &s.planned;
        let found = counts(&[
            ("present", p.present),
            ("missing", p.missing),
            ("outdated", p.outdated),
            ("partial", p.partial),
            ("could not be examined", p.error),
        ]);
        let done = match &s.outcomes {
            Some(o) => format!(
                "; done: {}",
                counts(&[
                    ("unchanged", o.unchanged),
                    ("copied", o.copied),
                    ("warmed", o.warmed),
                    ("failed", o.failed),
                    ("skipped", o.skipped),
                    ("interrupted", o.interrupted),
                    ("rejected", o.rejected),
                ])
            ),
            None => String::new(),
        };
        let signed = match &s.signatures {
            Some(g) => format!(
                "; signatures ({}): {}",
                g.mode,
                counts(&[
                    ("verified", g.verified),
                    ("unsigned", g.unsigned),
                    ("invalid", g.invalid),
                    ("not covered", g.not_covered)
                ])
            ),
            None => String::new(),
        };
        writeln!(
            w,
            "{}: {} images; planned: {found}{done}{signed}; {} in {:.1}s",
            self.command,
            s.images,
            HumanBytes(s.bytes),
            self.duration_ms as f64 / 1000.0
        )?;
        for note in s.signatures.iter().flat_map(|g| &g.notes) {
            writeln!(w, "note: {note}")?;
        }
        Ok(())
    }
}

impl ImageReport {
    fn from_result(r: &ImageResult) -> Self {
        ImageReport {
            source: r.source.clone(),
            target: r.target.clone(),
            mode: r.mode,
            planned: r.planned,
            outcome: Some(r.outcome),
            source_digest: r.source_digest.clone(),
            target_digest: r.target_digest.clone(),
            expected_digest: None,
            missing: Vec::new(),
            bytes: r.bytes,
            duration_ms: Some(r.duration_ms),
            error: r.error.as_deref().map(crate::sanitize::short),
            error_kind: r.error_kind.map(String::from),
            signature: r.signature.as_ref().map(SignatureReport::of),
        }
    }

    fn from_plan(i: &ImagePlan) -> Self {
        ImageReport {
            source: i.source.clone(),
            target: i.target.clone(),
            mode: i.mode,
            planned: i.status,
            outcome: None,
            source_digest: i.source_digest.clone(),
            target_digest: i.target_digest.clone(),
            expected_digest: i.expected_digest.clone(),
            missing: i.missing.clone(),
            bytes: if i.status.needs_work() { i.bytes_to_move } else { 0 },
            duration_ms: None,
            error: i.error.as_deref().map(crate::sanitize::short),
            error_kind: i.error_kind.map(String::from),
            signature: i.signature.as_ref().map(SignatureReport::of),
        }
    }

    /// Why the image is not in place or not done, for a failed test case: never empty.
    fn problem(&self) -> String {
        let digest = |d: &Option<Digest>| d.as_ref().map_or_else(|| "nothing".to_string(), Digest::to_string);
        if let Some(e) = &self.error {
            return e.clone();
        }
        if self.outcome.is_some() {
            return "failed".into();
        }
        if let Some(sig) = self.signature.as_ref().filter(|s| s.bad()) {
            return match &sig.reason {
                Some(reason) => format!("signature {}: {reason}", sig.outcome),
                None => format!("signature {}: no signature found", sig.outcome),
            };
        }
        match self.planned {
            Status::Present => "failed".into(),
            Status::Missing => "missing in the target".into(),
            Status::Outdated => format!(
                "outdated: the target tag points at {}, the source's now at {}",
                digest(&self.target_digest),
                digest(&self.expected_digest.clone().or_else(|| self.source_digest.clone()))
            ),
            Status::Partial => format!("partial: missing {}", self.missing.join(", ")),
            Status::Error => "the image could not be examined".into(),
            Status::Skipped => "skipped".into(),
        }
    }

    /// Where the image comes from and goes, with the digests that are known.
    fn route(&self) -> String {
        let with = |r: &str, d: &Option<Digest>| match d {
            Some(d) => format!("{r}@{d}"),
            None => r.to_string(),
        };
        format!(
            "source {} → target {}; planned {}",
            with(&self.source, &self.source_digest),
            with(&self.target, &self.target_digest),
            self.planned
        )
    }
}

/// `3 copied, 1 failed`: the counts that are not zero, or `none`.
fn counts(c: &[(&str, usize)]) -> String {
    let parts: Vec<String> = c.iter().filter(|(_, n)| *n > 0).map(|(name, n)| format!("{n} {name}")).collect();
    if parts.is_empty() { "none".into() } else { parts.join(", ") }
}

fn outcome_name(o: Outcome) -> String {
    serde_json::to_value(o).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// One JUnit test case.
struct Case {
    classname: String,
    name: String,
    time_ms: u64,
    verdict: Verdict,
}

enum Verdict {
    Passed,
    Failure { kind: String, message: String, detail: String },
    Skipped(String),
}

/// One JUnit document as Jenkins' xunit schema accepts it: a `<testsuites>` holding one
/// `<testsuite>` named for the command, with `cases` in order (every command's report writes
/// its JUnit through this).
fn junit_document(command: &str, started: &str, duration_ms: u64, cases: &[Case]) -> Vec<u8> {
    let failures = cases.iter().filter(|c| matches!(c.verdict, Verdict::Failure { .. })).count();
    let skipped = cases.iter().filter(|c| matches!(c.verdict, Verdict::Skipped(_))).count();
    let name = xml(command);
    let time = seconds(duration_ms);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"{name}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time}\">\n",
        cases.len()
    ));
    out.push_str(&format!(
        "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" timestamp=\"{}\" time=\"{time}\">\n",
        cases.len(),
        xml(started)
    ));
    for c in cases {
        c.write(&mut out);
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out.into_bytes()
}

impl Case {
    /// The one failed case of a run that ended in an error before it had per-item results.
    fn failed_run(command: &str, duration_ms: u64, error: &str) -> Case {
        Case {
            classname: "mirror.run".into(),
            name: command.into(),
            time_ms: duration_ms,
            verdict: Verdict::Failure { kind: "error".into(), message: error.into(), detail: error.into() },
        }
    }

    /// `enforced`: the provenance gate enforces, so a present image without a valid signature
    /// fails (`verify`).
    fn of(i: &ImageReport, enforced: bool) -> Self {
        let unsigned = enforced && i.signature.as_ref().is_some_and(SignatureReport::bad);
        let verdict = match i.outcome {
            Some(Outcome::Failed) => {
                Verdict::Failure { kind: "failed".into(), message: i.problem(), detail: i.route() }
            }
            Some(Outcome::Rejected) => {
                Verdict::Failure { kind: "rejected".into(), message: i.problem(), detail: i.route() }
            }
            Some(Outcome::Skipped | Outcome::Interrupted) => {
                Verdict::Skipped(i.error.clone().unwrap_or_else(|| "not attempted".into()))
            }
            Some(_) => Verdict::Passed,
            None if i.planned == Status::Present && unsigned => {
                Verdict::Failure { kind: "signature".into(), message: i.problem(), detail: i.route() }
            }
            None if i.planned == Status::Present => Verdict::Passed,
            None if i.planned == Status::Skipped => Verdict::Skipped(i.problem()),
            None => Verdict::Failure { kind: i.planned.to_string(), message: i.problem(), detail: i.route() },
        };
        Case {
            classname: format!("mirror.{}", if i.mode == MappingMode::Copy { "copy" } else { "warm" }),
            name: i.target.clone(),
            time_ms: i.duration_ms.unwrap_or(0),
            verdict,
        }
    }

    fn write(&self, out: &mut String) {
        out.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
            xml(&self.classname),
            xml(&self.name),
            seconds(self.time_ms)
        ));
        match &self.verdict {
            Verdict::Passed => out.push_str("/>\n"),
            Verdict::Failure { kind, message, detail } => out.push_str(&format!(
                ">\n      <failure type=\"{kind}\" message=\"{}\">{}</failure>\n    </testcase>\n",
                xml(message),
                xml(detail)
            )),
            // The Jenkins schema types `<skipped>` as text without attributes: the reason is its text.
            Verdict::Skipped(why) => {
                out.push_str(&format!(">\n      <skipped>{}</skipped>\n    </testcase>\n", xml(why)))
            }
        }
    }
}

fn seconds(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// Writes a report file all at once (to a temporary name, then renamed) so that a reader never
/// sees half a report.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{}.partial", path.extension().and_then(|e| e.to_str()).unwrap_or("out")));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Text for an XML attribute or element: markup escaped, and the control characters XML 1.0
/// cannot carry at all dropped.
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

#[cfg(test)]
mod tests {
    use super::*;

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
            error_kind: error.map(|_| "status"),
            signature: None,
        }
    }

    #[test]
    fn junit_has_one_case_per_image_and_escapes() {
        // Checks the case count, the failure count and that registry text is escaped, never
        // raw, in the XML; fails if an image goes missing or markup leaks through.
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
        assert!(!x.contains("()"), "no empty parentheses where a digest is unknown: {x}");
    }

    #[test]
    fn summary_counts_outcomes_and_bytes() {
        // Checks the sync summary's outcome and plan counts and the byte total, and that the
        // table leaves unchanged images out; fails if an outcome is counted under another.
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
        let o = r.summary.outcomes.clone().unwrap();
        assert_eq!((o.copied, o.unchanged, o.skipped, r.summary.bytes), (1, 1, 1, 30));
        assert_eq!(r.summary.planned.missing, 3);
        let mut out = Vec::new();
        r.table(&mut out, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("skipped") && !text.lines().any(|l| l.starts_with("unchanged")), "{text}");
        assert!(text.contains("30 B"), "{text}");
    }

    /// Checks the provenance gate's part of a sync report: a rejected image is counted, fails in
    /// JUnit with its reason, the signature summary counts each outcome and keeps the notes, and
    /// signer and reason reach the JSON; fails if a rejection passes as a success.
    #[test]
    fn rejected_images_fail_and_signatures_are_counted() {
        use crate::plan::SignatureCheck;
        use crate::provenance::Outcome as P;
        let check = |outcome| Some(SignatureCheck { outcome, enforced: true });
        let mut ok = result("a", Outcome::Copied, None);
        ok.signature = check(P::Verified { signer: "CN=Signer".into() });
        let mut bad = result("b", Outcome::Rejected, Some("signature invalid: expired"));
        bad.signature = check(P::Invalid { reason: "expired".into() });
        let mut free = result("c", Outcome::Copied, None);
        free.signature = check(P::NotCovered);
        let r = Report::new("sync", std::time::UNIX_EPOCH, 0, vec![ok, bad, free])
            .with_signatures(SignatureMode::Enforce, vec!["revocation is not checked".into()]);
        assert_eq!(r.summary.outcomes.as_ref().unwrap().rejected, 1);
        let g = r.summary.signatures.clone().unwrap();
        assert_eq!((g.verified, g.unsigned, g.invalid, g.not_covered), (1, 0, 1, 1));
        let x = String::from_utf8(r.to_junit()).unwrap();
        assert_eq!(x.matches("<failure type=\"rejected\" message=\"signature invalid: expired\"").count(), 1, "{x}");
        let json: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(json["images"][0]["signature"]["signer"], "CN=Signer");
        assert_eq!(json["images"][1]["signature"]["reason"], "expired");
        assert_eq!(json["summary"]["signatures"]["notes"][0], "revocation is not checked");
    }

    #[test]
    fn a_failed_run_is_one_failed_case_naming_the_error() {
        // Checks the run-level failure report: status failed, the error in JSON and as the one
        // JUnit failure's message, no outcome counts; fails if the error is dropped.
        let r = Report::failed_run("sync", SystemTime::now(), "cannot read mirror.yaml: no such file".into());
        assert_eq!(r.status, RunStatus::Failed);
        assert!(r.summary.outcomes.is_none() && r.images.is_empty());
        let x = String::from_utf8(r.to_junit()).unwrap();
        assert_eq!(x.matches("<testcase ").count(), 1);
        assert!(x.contains("<failure type=\"error\" message=\"cannot read mirror.yaml: no such file\">"), "{x}");
    }
}
