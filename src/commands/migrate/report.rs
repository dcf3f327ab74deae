//! The reports of `migrate` (a run and a dry run): their fields are the
//! `--json` keys, `human()` the text without `--json`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::error::{EXIT_NOT_READY, EXIT_OK};
use crate::report::{self, Report};
use crate::store::schema_diff::DiffEntry;

/// The database path as every report shows it (absolute).
fn shown(path: &str) -> String {
    report::display_path(std::path::Path::new(path))
}

/// A step that was applied.
#[derive(Debug, Serialize)]
pub struct StepDone {
    pub name: String,
    pub rows: i64,
    pub ms: f64,
    /// What the step did (human table only).
    #[serde(skip)]
    pub what: String,
    /// The step changes rows, so its row count is shown (human table only).
    #[serde(skip)]
    pub shows_rows: bool,
}

/// A step that could not be applied, and why.
#[derive(Debug, Serialize)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

/// What the duplicate-observation merge did.
#[derive(Debug, Serialize)]
pub struct Merged {
    pub groups: i64,
    pub rows: i64,
    pub audit_table: &'static str,
}

/// The keys of both reports (a run and a dry run).
#[derive(Debug, Serialize)]
pub struct Common {
    pub target: &'static str,
    /// Steps applied (none on a dry run).
    pub applied: Vec<String>,
    /// Named migrations of the target already recorded before the run.
    pub already: i64,
    pub complete: bool,
    pub max_lock_hold_ms: f64,
    /// Differences that break CoreScope statements and that `migrate`
    /// does not repair (a column of the wrong type), each with its manual
    /// procedure; also in `check --diff`.
    pub not_repaired: Vec<DiffEntry>,
    /// The database path as shown to humans.
    #[serde(skip)]
    pub path: String,
}

/// What is still missing after a run.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub missing: Vec<String>,
    pub pending_migrations: Vec<String>,
    pub ready: bool,
}

impl Verdict {
    /// Ready when nothing is missing and no migration is pending.
    pub fn new(missing: Vec<String>, pending_migrations: Vec<String>) -> Verdict {
        Verdict {
            ready: missing.is_empty() && pending_migrations.is_empty(),
            missing,
            pending_migrations,
        }
    }
}

/// What the steps of a run did.
#[derive(Debug, Default, Serialize)]
pub struct Done {
    pub steps: Vec<StepDone>,
    pub skipped: Vec<Skipped>,
    pub notes: Vec<String>,
}

/// The report of a run.
#[derive(Debug, Serialize)]
pub struct MigrateReport {
    #[serde(flatten)]
    pub common: Common,
    #[serde(flatten)]
    pub done: Done,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub merged_observations: Merged,
    pub build_edges_rebuild_needed: bool,
    pub created: bool,
    /// Index builds that ran online (absent when none did).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub online_builds: Vec<super::online::OnlineBuild>,
    /// Stopped by `--max-seconds` (exit 0, `complete: false`).
    #[serde(skip)]
    pub stopped: bool,
}

impl Report for MigrateReport {
    fn human(&self) -> String {
        let mut h = String::new();
        if self.common.applied.is_empty() && self.done.skipped.is_empty() {
            let _ = writeln!(
                h,
                "{}: schema is up to date for target {} ({} named migrations already applied); nothing to do",
                shown(&self.common.path), self.common.target, self.common.already
            );
        } else {
            let mut t = report::table(&["step", "what", "rows changed"]);
            for s in &self.done.steps {
                let rows = if s.shows_rows {
                    s.rows.to_string()
                } else {
                    String::new()
                };
                t.add_row(vec![s.name.clone(), s.what.clone(), rows]);
            }
            let _ = writeln!(h, "{t}");
            let _ = writeln!(
                h,
                "{}: applied {} steps for target {} ({} named migrations were already applied); longest write-lock hold {} ms",
                shown(&self.common.path),
                self.common.applied.len(),
                self.common.target,
                self.common.already,
                self.common.max_lock_hold_ms
            );
        }
        for s in &self.done.skipped {
            let _ = writeln!(h, "skipped {}: {}", s.name, s.reason);
        }
        for n in &self.done.notes {
            let _ = writeln!(h, "note: {n}");
        }
        not_repaired_lines(&mut h, &self.common.not_repaired);
        if !self.verdict.ready {
            let missing = if self.verdict.missing.is_empty() {
                "nothing".to_string()
            } else {
                self.verdict.missing.join(", ")
            };
            let pending = if self.verdict.pending_migrations.is_empty() {
                String::new()
            } else {
                format!(
                    "; pending migrations {}",
                    self.verdict.pending_migrations.join(", ")
                )
            };
            let _ = writeln!(h, "NOT READY: still missing {missing}{pending}");
        }
        h
    }

    fn exit_code(&self) -> i32 {
        if self.verdict.ready || self.stopped {
            EXIT_OK
        } else {
            EXIT_NOT_READY
        }
    }
}

/// The human lines of the differences migrate leaves to the operator.
fn not_repaired_lines(h: &mut String, entries: &[DiffEntry]) {
    for e in entries {
        let _ = writeln!(
            h,
            "NOT REPAIRED {}: the database has {}, the catalog wants {}; {}",
            e.object, e.actual, e.expected, e.fix
        );
    }
}

/// A planned step of a dry run.
#[derive(Debug, Serialize)]
pub struct Planned {
    pub name: String,
    pub what: String,
    /// Rows a data step would touch (null for schema steps): an estimate,
    /// counted on the data as it is before the run, so a step whose rows an
    /// earlier step creates or changes is counted low.
    #[serde(rename = "rows_estimated")]
    pub rows: Option<i64>,
    /// Duplicate groups (the merge step only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<i64>,
    /// The step builds its indexes online (`rows`: the table's rows).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub online: bool,
}

/// The report of a dry run.
#[derive(Debug, Serialize)]
pub struct DryRunReport {
    #[serde(flatten)]
    pub common: Common,
    pub planned: Vec<Planned>,
    pub dry_run: bool,
}

impl Report for DryRunReport {
    fn human(&self) -> String {
        if self.planned.is_empty() {
            let mut h = format!(
                "{}: nothing to do for target {} (dry run)\n",
                shown(&self.common.path),
                self.common.target
            );
            not_repaired_lines(&mut h, &self.common.not_repaired);
            return h;
        }
        let mut t = report::table(&["step", "what", "rows (estimate)"]);
        for s in &self.planned {
            t.add_row(vec![
                s.name.clone(),
                s.what.clone(),
                s.rows.map(|r| r.to_string()).unwrap_or_default(),
            ]);
        }
        let mut h = format!(
            "{t}\n{}: {} steps planned for target {} (dry run: nothing was changed; row counts are estimates made on the data as it is now, before earlier steps change it)\n",
            shown(&self.common.path),
            self.planned.len(),
            self.common.target
        );
        not_repaired_lines(&mut h, &self.common.not_repaired);
        h
    }
}
