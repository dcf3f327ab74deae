//! The report of `backfill`: per task what was visited, updated and is
//! still pending (`--json` keys `tasks.<task>.*`, `dry_run`, `complete`,
//! `max_lock_hold_ms`), and its human table.

use std::fmt::Write as _;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::cli::BackfillTask;
use crate::report::{self, Report};

/// What one task did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TaskReport {
    /// Candidate rows visited by this run.
    pub scanned: u64,
    /// Rows given a value derived from their data.
    pub updated: u64,
    /// Rows that still match the task's selection after its cursor.
    pub remaining: i64,
    /// Rows visited but given no derived value (sentinel written, left NULL,
    /// or changed by someone else meanwhile).
    pub skipped: u64,
    /// The task ran to its end (not stopped by --max-seconds).
    pub complete: bool,
    /// path-json: UPDATEs refused by `idx_observations_dedup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<u64>,
    /// path-json: observations without path_json and without raw bytes of
    /// their own (never derived, see docs/backfill.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without_raw_hex: Option<i64>,
    /// resolved-path: candidates left for a later run because build-edges
    /// has not counted them yet (null when none wait).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_edges: Option<WaitingForEdges>,
    /// observer-blacklist: ids that matched no observer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmatched: Option<Vec<String>>,
    /// The task started (not skipped by --max-seconds).
    #[serde(skip)]
    pub ran: bool,
}

/// resolved-path rows that wait for build-edges.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WaitingForEdges {
    /// Candidates above the build-edges watermark.
    pub rows: i64,
    /// The build-edges watermark (0: no neighbor graph yet).
    pub edges_upto: i64,
}

impl TaskReport {
    /// An empty report of `task` with the keys its kind has.
    pub fn new(task: BackfillTask, ran: bool) -> TaskReport {
        TaskReport {
            conflicts: (task == BackfillTask::PathJson).then_some(0),
            without_raw_hex: (task == BackfillTask::PathJson).then_some(0),
            unmatched: (task == BackfillTask::ObserverBlacklist).then(Vec::new),
            ran,
            ..TaskReport::default()
        }
    }

    fn status(&self) -> &'static str {
        if !self.ran {
            "not started (--max-seconds)"
        } else if !self.complete {
            "stopped (--max-seconds)"
        } else {
            "done"
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BackfillReport {
    /// Per task, keyed by its command-line name, in execution order.
    #[serde(serialize_with = "by_name")]
    pub tasks: Vec<(BackfillTask, TaskReport)>,
    pub dry_run: bool,
    pub complete: bool,
    pub max_lock_hold_ms: f64,
}

fn by_name<S: Serializer>(tasks: &[(BackfillTask, TaskReport)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(tasks.len()))?;
    for (t, r) in tasks {
        m.serialize_entry(t.cli_name(), r)?;
    }
    m.end()
}

impl Report for BackfillReport {
    fn human(&self) -> String {
        let mut table = report::table(&[
            "task",
            "scanned",
            "updated",
            "skipped",
            "remaining",
            "status",
        ]);
        for (t, r) in &self.tasks {
            table.add_row(vec![
                t.cli_name().to_string(),
                r.scanned.to_string(),
                r.updated.to_string(),
                r.skipped.to_string(),
                r.remaining.to_string(),
                r.status().to_string(),
            ]);
        }
        let mut human = String::new();
        if self.dry_run {
            human.push_str("dry run: nothing was written; `updated` is what a run would update\n");
        }
        let _ = writeln!(human, "{table}");
        for (_, r) in &self.tasks {
            if let Some(unmatched) = r.unmatched.as_ref().filter(|u| !u.is_empty()) {
                let _ = writeln!(
                    human,
                    "observer ids matching no observer: {}",
                    unmatched.join(", ")
                );
            }
            if let Some(w) = r.waiting_for_edges {
                let graph = if w.edges_upto == 0 {
                    "build-edges has not counted any observation yet".to_string()
                } else {
                    format!(
                        "build-edges has counted observations up to id {}",
                        w.edges_upto
                    )
                };
                let _ = writeln!(
                    human,
                    "resolved-path: {} rows wait for the neighbor graph ({graph}); it decides ambiguous hops, so run `corescope build-edges` and they are resolved by the next backfill",
                    w.rows
                );
            }
            if let Some(c) = r.conflicts.filter(|c| *c > 0) {
                let _ = writeln!(
                    human,
                    "path-json: {c} rows left NULL because their path would duplicate another observation (idx_observations_dedup)"
                );
            }
        }
        let _ = writeln!(
            human,
            "{}; longest write-lock hold {:.1} ms",
            if self.complete {
                "complete"
            } else {
                "incomplete: stopped by --max-seconds, the next run resumes"
            },
            self.max_lock_hold_ms
        );
        human
    }
}
