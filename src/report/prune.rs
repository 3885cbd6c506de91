//! What `mirror prune` decided and did: the JSON document (`schema/prune.v1.json`, described in
//! docs/reports.md) that `-o json` prints and `--report-json` writes, the table for the person
//! at the terminal, JUnit for the run records, and the metrics file.
//!
//! Tag and repository names are the registry's text: they are checked against the distribution
//! grammar before a prune looks at them (`crate::app`), and sanitised again here, so a report
//! never carries what a terminal would act on.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use indicatif::HumanBytes;
use serde::Serialize;

use super::{Case, RunStatus, Verdict, metrics};
use crate::config::PruneConfig;
use crate::digest::Digest;
use crate::prune::{Decision, PrunePlan};

/// The version of the prune document (see [`super::SCHEMA_VERSION`] for the rule).
pub const PRUNE_SCHEMA_VERSION: u32 = 1;

/// What became of one deletion in an `--apply` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Done {
    /// The registry accepted the delete.
    Deleted,
    /// The tag points elsewhere than when it was listed: left alone.
    Moved,
    /// It was already gone (someone else deleted it).
    Gone,
    /// The delete failed; `error` says why.
    Failed,
    /// Not attempted: one of its tags moved, a deletion it waits for failed, or the run was stopped.
    Skipped,
}

/// The outcomes of an `--apply` run, by repository and tag or digest.
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    pub tags: HashMap<(String, String), (Done, Option<String>)>,
    pub manifests: HashMap<(String, Digest), (Done, Option<String>)>,
}

/// The whole prune document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub schema_version: u32,
    /// Always `prune`.
    pub command: String,
    /// Whether deletions were made (`--apply`) or only listed (a dry run).
    pub apply: bool,
    pub started: String,
    pub duration_ms: u64,
    pub status: RunStatus,
    /// Why the run failed, when `status` is `failed` (a registry refusing deletes included).
    pub error: Option<String>,
    /// The target registry.
    pub registry: Option<String>,
    /// The `prune:` section used; `None` when the run failed before the config was read.
    pub rules: Option<Rules>,
    pub summary: PruneSummary,
    pub repositories: Vec<RepoReport>,
}

/// The `prune:` section the run used.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    pub min_age: String,
    pub keep_recent: i64,
    pub protect: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneSummary {
    /// Repositories in scope (under a `copy` mapping's target).
    pub repositories: usize,
    pub tags: usize,
    pub tags_kept: usize,
    pub tags_to_delete: usize,
    pub manifests_to_delete: usize,
    /// Estimated bytes the registry's garbage collection frees afterwards.
    pub bytes_to_free: u64,
    /// `--apply`: tags by what happened to them (see [`Done`]); all zero in a dry run.
    pub deleted: usize,
    pub moved: usize,
    pub gone: usize,
    pub failed: usize,
    pub skipped: usize,
    /// `--apply`: manifests deleted (or found already gone), and manifests whose delete failed.
    pub manifests_deleted: usize,
    pub manifests_failed: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoReport {
    pub repository: String,
    pub bytes_to_free: u64,
    /// Every tag of the repository, kept or deleted, with the reason.
    pub tags: Vec<TagReport>,
    /// The manifests deleted by digest, in order.
    pub manifests: Vec<ManifestReport>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagReport {
    pub tag: String,
    pub digest: Digest,
    /// When the tag last changed (ACR) or its image was built (elsewhere); `None`: unknown.
    pub updated: Option<String>,
    /// `keep` or `delete`.
    pub action: &'static str,
    /// A stable name of the reason (`needed`, `protected`, `recent`, `young`, `ageUnknown`,
    /// `referrer`, `sharesDigest`, `partOfKept`, `unneeded`).
    pub reason_code: &'static str,
    pub reason: String,
    /// `--apply`, deleted tags only.
    pub outcome: Option<Done>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestReport {
    pub digest: Digest,
    /// `tagged` (its last tag is deleted), `child` (of a deleted index), `referrer` (a
    /// signature or SBOM of a deleted manifest).
    pub role: &'static str,
    pub tags: Vec<String>,
    pub outcome: Option<Done>,
    pub error: Option<String>,
}

impl PruneReport {
    /// The report of a run that got as far as a plan (and, with `--apply`, its outcomes).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        apply: bool,
        started: SystemTime,
        duration_ms: u64,
        registry: &str,
        rules: &PruneConfig,
        plan: &PrunePlan,
        outcomes: &Outcomes,
        stopped: bool,
        error: Option<String>,
    ) -> Self {
        let clean = |s: &str| crate::sanitize::short(s);
        let mut summary = PruneSummary { repositories: plan.repositories.len(), ..Default::default() };
        let count = |summary: &mut PruneSummary, o: Option<Done>| match o {
            Some(Done::Deleted) => summary.deleted += 1,
            Some(Done::Moved) => summary.moved += 1,
            Some(Done::Gone) => summary.gone += 1,
            Some(Done::Failed) => summary.failed += 1,
            Some(Done::Skipped) => summary.skipped += 1,
            None => {}
        };
        let mut repositories = Vec::new();
        for r in &plan.repositories {
            let mut tags = Vec::new();
            for t in &r.tags {
                let (action, reason_code, reason) = match &t.decision {
                    Decision::Keep(k) => ("keep", k.code(), clean(&k.to_string())),
                    Decision::Delete(d) => ("delete", d.code(), d.to_string()),
                };
                let done = outcomes.tags.get(&(r.repository.clone(), t.tag.name.clone()));
                count(&mut summary, done.map(|d| d.0));
                tags.push(TagReport {
                    tag: clean(&t.tag.name),
                    digest: t.tag.digest.clone(),
                    updated: t.tag.updated.map(crate::time::rfc3339),
                    action,
                    reason_code,
                    reason,
                    outcome: done.map(|d| d.0),
                    error: done.and_then(|d| d.1.clone()),
                });
            }
            let mut manifests = Vec::new();
            for m in &r.manifests {
                let done = outcomes.manifests.get(&(r.repository.clone(), m.digest.clone()));
                match done.map(|d| d.0) {
                    Some(Done::Deleted | Done::Gone) => summary.manifests_deleted += 1,
                    Some(Done::Failed) => summary.manifests_failed += 1,
                    _ => {}
                }
                manifests.push(ManifestReport {
                    digest: m.digest.clone(),
                    role: m.role.code(),
                    tags: m.tags.iter().map(|t| clean(t)).collect(),
                    outcome: done.map(|d| d.0),
                    error: done.and_then(|d| d.1.clone()),
                });
            }
            repositories.push(RepoReport {
                repository: clean(&r.repository),
                bytes_to_free: r.bytes_to_free,
                tags,
                manifests,
            });
        }
        summary.tags = repositories.iter().map(|r| r.tags.len()).sum();
        summary.tags_to_delete = plan.tags_to_delete();
        summary.tags_kept = summary.tags - summary.tags_to_delete;
        summary.manifests_to_delete = plan.manifests_to_delete();
        summary.bytes_to_free = plan.bytes_to_free();
        let status = match (&error, stopped) {
            (Some(_), _) => RunStatus::Failed,
            (None, true) => RunStatus::Interrupted,
            (None, false) => RunStatus::Completed,
        };
        PruneReport {
            schema_version: PRUNE_SCHEMA_VERSION,
            command: "prune".into(),
            apply,
            started: crate::time::rfc3339(started),
            duration_ms,
            status,
            error: error.map(|e| crate::sanitize::text(&e, 4 * crate::sanitize::MAX_TEXT)),
            registry: Some(clean(registry)),
            rules: Some(Rules::of(rules)),
            summary,
            repositories,
        }
    }

    /// The report of a run that failed before it had a plan.
    pub fn failed_run(apply: bool, started: SystemTime, rules: Option<&PruneConfig>, error: String) -> Self {
        let duration_ms = SystemTime::now().duration_since(started).map(|d| d.as_millis() as u64).unwrap_or(0);
        PruneReport {
            schema_version: PRUNE_SCHEMA_VERSION,
            command: "prune".into(),
            apply,
            started: crate::time::rfc3339(started),
            duration_ms,
            status: RunStatus::Failed,
            error: Some(crate::sanitize::text(&error, 4 * crate::sanitize::MAX_TEXT)),
            registry: None,
            rules: rules.map(Rules::of),
            summary: PruneSummary::default(),
            repositories: Vec::new(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("prune report serialises");
        v.push(b'\n');
        v
    }

    /// JUnit for the run records: one test case per tag deleted or to delete, failed when its
    /// deletion failed, skipped when it was left alone; a failed run is one failed case.
    pub fn to_junit(&self) -> Vec<u8> {
        let cases: Vec<Case> = match &self.error {
            Some(e) => vec![Case::failed_run("mirror prune", self.duration_ms, e)],
            None => self
                .repositories
                .iter()
                .flat_map(|r| r.tags.iter().filter(|t| t.action == "delete").map(move |t| (r, t)))
                .map(|(r, t)| Case {
                    classname: "mirror.prune".into(),
                    name: format!("{}:{}", r.repository, t.tag),
                    time_ms: 0,
                    verdict: match t.outcome {
                        Some(Done::Failed) => Verdict::Failure {
                            kind: "failed".into(),
                            message: t.error.clone().unwrap_or_default(),
                            detail: t.reason.clone(),
                        },
                        Some(Done::Moved) => Verdict::Skipped("left alone: the tag moved since the listing".into()),
                        Some(Done::Skipped) => {
                            Verdict::Skipped(t.error.clone().unwrap_or_else(|| "not attempted".into()))
                        }
                        _ => Verdict::Passed,
                    },
                })
                .collect(),
        };
        super::junit_document("mirror prune", &self.started, self.duration_ms, &cases)
    }

    /// A table for people: every tag deleted (or to delete) and every tag kept only because of
    /// its manifest, with the reason; then the totals.
    pub fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let rows: Vec<(&RepoReport, &TagReport)> = self
            .repositories
            .iter()
            .flat_map(|r| {
                r.tags
                    .iter()
                    .filter(|t| t.action == "delete" || matches!(t.reason_code, "sharesDigest" | "partOfKept"))
                    .map(move |t| (r, t))
            })
            .collect();
        if !rows.is_empty() {
            let width =
                rows.iter().map(|(r, t)| r.repository.len() + t.tag.len() + 1).max().unwrap_or(10).clamp(10, 90);
            writeln!(w, "{:<7} {:<width$} {:<19} {:<20}  REASON", "ACTION", "TAG", "DIGEST", "UPDATED")?;
            for (r, t) in rows {
                let action = match t.outcome {
                    Some(o) => {
                        serde_json::to_value(o).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
                    }
                    None => t.action.to_string(),
                };
                let digest = &t.digest.hex()[..12.min(t.digest.hex().len())];
                let mut reason = t.reason.clone();
                if let Some(e) = &t.error {
                    let _ = write!(reason, " ({e})");
                }
                writeln!(
                    w,
                    "{action:<7} {:<width$} sha256:{digest} {:<20}  {reason}",
                    format!("{}:{}", r.repository, t.tag),
                    t.updated.as_deref().unwrap_or("unknown"),
                )?;
            }
        }
        let s = &self.summary;
        write!(
            w,
            "{} repositories, {} tags: {} kept, {} to delete; {} manifests to delete; about {} to free (the registry's garbage collection frees it)",
            s.repositories,
            s.tags,
            s.tags_kept,
            s.tags_to_delete,
            s.manifests_to_delete,
            HumanBytes(s.bytes_to_free)
        )?;
        if self.apply {
            write!(
                w,
                "; tags: {} deleted, {} moved (left alone), {} already gone, {} failed, {} skipped; manifests: {} deleted, {} failed",
                s.deleted, s.moved, s.gone, s.failed, s.skipped, s.manifests_deleted, s.manifests_failed
            )?;
        }
        writeln!(w)
    }
}

impl Rules {
    fn of(c: &PruneConfig) -> Rules {
        Rules { min_age: c.min_age.clone(), keep_recent: c.keep_recent, protect: c.protect.clone() }
    }
}

/// Writes the metrics file of a prune: the run gauges every command writes, and what it
/// pruned (`acr_mirror_last_run_prune_tags{action=…}`, `…_prune_bytes_to_free`).
pub fn write_metrics(path: &Path, m: &metrics::RunMetrics, report: Option<&PruneReport>) -> std::io::Result<()> {
    let carried = std::fs::read_to_string(path).map(|t| metrics::read_carried(&t)).unwrap_or_default();
    let mut text = metrics::render(m, carried);
    if let Some(r) = report {
        let labels = format!("command=\"prune\",shard=\"{}\"", m.shard);
        let s = &r.summary;
        let _ =
            writeln!(text, "# HELP acr_mirror_last_run_prune_tags Tags of the last prune by what it decided or did.");
        let _ = writeln!(text, "# TYPE acr_mirror_last_run_prune_tags gauge");
        for (action, n) in [
            ("kept", s.tags_kept),
            ("to_delete", s.tags_to_delete),
            ("deleted", s.deleted),
            ("moved", s.moved),
            ("failed", s.failed),
        ] {
            let _ = writeln!(text, "acr_mirror_last_run_prune_tags{{{labels},action=\"{action}\"}} {n}");
        }
        let _ = writeln!(
            text,
            "# HELP acr_mirror_last_run_prune_bytes_to_free Estimated bytes the last prune's deletions let the registry's garbage collection free."
        );
        let _ = writeln!(text, "# TYPE acr_mirror_last_run_prune_bytes_to_free gauge");
        let _ = writeln!(text, "acr_mirror_last_run_prune_bytes_to_free{{{labels}}} {}", s.bytes_to_free);
    }
    super::write_file(path, text.as_bytes())
}
