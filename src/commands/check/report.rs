//! The report of `check`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::anomalies::Warning;
use super::jobs::{Jobs, RunRecord};
use crate::error::{EXIT_NOT_READY, EXIT_OK};
use crate::report::{self, Report};
use crate::store::maintenance::FreeSpace;

/// What `--integrity` found.
#[derive(Debug, Serialize)]
pub struct Integrity {
    /// Rows of `PRAGMA foreign_key_check`.
    pub foreign_key_violations: usize,
    /// The lines of `PRAGMA quick_check` (`["ok"]` when sound).
    pub quick_check: Vec<String>,
}

impl Integrity {
    /// `PRAGMA quick_check` found damage.
    pub fn corrupt(&self) -> bool {
        self.quick_check.len() != 1 || self.quick_check[0] != "ok"
    }
}

/// The report of `check`: its fields are the keys of `--json` (and of the
/// metrics file).
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The database, for the human table.
    #[serde(skip)]
    pub database: String,
    /// `--strict`: warnings make the verdict not ready.
    #[serde(skip)]
    pub strict: bool,
    pub target: &'static str,
    pub ready: bool,
    pub missing: Vec<String>,
    /// What the CoreScope server itself asserts at start: it refuses to
    /// start while any of these is missing.
    pub server_missing: Vec<String>,
    pub pending_migrations: Vec<String>,
    /// Exact rows each backfill task still has to fill (`--deep` only: it
    /// reads every row after the task's cursor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_backfills: Option<BTreeMap<String, i64>>,
    /// `--deep`: the whole-table anomaly scans ran.
    pub deep: bool,
    /// The anomaly classes scanned for (`--deep`).
    pub scans_run: Vec<&'static str>,
    /// The anomaly classes not scanned for (without `--deep`).
    pub not_scanned: Vec<&'static str>,
    /// Objects and migrations the catalog does not know (`schema_newer`).
    pub schema_newer: Vec<String>,
    /// The state of every job.
    pub jobs: Jobs,
    /// Warnings not accepted by `--allow` / `corescope.checkAllow`.
    pub warnings: Vec<Warning>,
    /// Warnings accepted by `--allow` / `corescope.checkAllow` (never make
    /// `--strict` fail).
    pub allowed_warnings: Vec<Warning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Integrity>,
    /// Free pages in the file and what returns them.
    pub free_space: FreeSpace,
}

/// "never ran", or when the last run ended and whether it was complete.
fn ran(r: &RunRecord) -> String {
    match (&r.last_run, r.last_complete) {
        (Some(at), Some(true)) => format!("last run {at}, complete"),
        (Some(at), _) => format!("last run {at}, stopped early (resumes next run)"),
        _ => "never ran".to_string(),
    }
}

/// The items joined with ", ", or "-" for none.
fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

impl CheckReport {
    fn verdict_table(&self) -> comfy_table::Table {
        let mut t = report::table(&["check", "result"]);
        t.add_row(vec!["database".to_string(), self.database.clone()]);
        t.add_row(vec!["target".to_string(), self.target.to_string()]);
        t.add_row(vec![
            "schema ready".to_string(),
            if self.ready {
                "yes".into()
            } else {
                "NO: run `corescope migrate`".to_string()
            },
        ]);
        t.add_row(vec![
            "CoreScope server would start".to_string(),
            if self.server_missing.is_empty() {
                "yes".into()
            } else {
                format!(
                    "NO: its AssertReady misses {}",
                    self.server_missing.join(", ")
                )
            },
        ]);
        t.add_row(vec!["missing".to_string(), list_or_dash(&self.missing)]);
        t.add_row(vec![
            "pending migrations".to_string(),
            list_or_dash(&self.pending_migrations),
        ]);
        for (k, v) in self.pending_backfills.iter().flatten() {
            t.add_row(vec![format!("pending backfill {k}"), v.to_string()]);
        }
        if !self.schema_newer.is_empty() {
            t.add_row(vec![
                "unknown to corescope".to_string(),
                self.schema_newer.join(", "),
            ]);
        }
        t.add_row(if self.deep {
            vec![
                "deep scans run".to_string(),
                list_or_dash(&strs(&self.scans_run)),
            ]
        } else {
            vec![
                "not scanned (--deep)".to_string(),
                list_or_dash(&strs(&self.not_scanned)),
            ]
        });
        if let Some(i) = &self.integrity {
            t.add_row(vec![
                "integrity: quick_check".to_string(),
                i.quick_check.join("; "),
            ]);
            t.add_row(vec![
                "integrity: foreign_key_violations".to_string(),
                i.foreign_key_violations.to_string(),
            ]);
        }
        t
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

impl CheckReport {
    fn jobs_table(&self) -> comfy_table::Table {
        let j = &self.jobs;
        let mut t = report::table(&["job", "state"]);
        let e = &j.build_edges;
        t.add_row(vec![
            "build-edges".to_string(),
            format!(
                "{}; up to {} observations not counted yet (watermark {}, max id {})",
                ran(&e.run),
                e.lag,
                e.watermark.map_or("none".to_string(), |w| w.to_string()),
                e.max_observation_id
            ),
        ]);
        for (task, b) in &j.backfill {
            t.add_row(vec![
                format!("backfill {task}"),
                format!(
                    "{}; up to {} rows past its cursor {} (max id {}); {} rows skipped so far",
                    ran(&b.run),
                    b.rows_past_cursor,
                    b.cursor,
                    b.max_id,
                    b.skipped
                ),
            ]);
        }
        let mut kinds = Vec::new();
        for (kind, k) in &j.prune.kinds {
            kinds.push(match (&k.oldest, k.days, &k.note) {
                (_, _, Some(note)) => format!("{kind}: {note}"),
                (None, _, _) => format!("{kind}: empty"),
                (Some(o), None, _) => format!("{kind}: oldest {o}, kept (no retention)"),
                (Some(o), Some(d), _) => format!(
                    "{kind}: oldest {o}, {}",
                    if k.due_now == Some(true) {
                        format!("older than {d} days: a prune now removes rows")
                    } else {
                        format!("within {d} days")
                    }
                ),
            });
        }
        t.add_row(vec![
            "prune".to_string(),
            format!("{}; {}", ran(&j.prune.run), kinds.join("; ")),
        ]);
        t.add_row(vec!["vacuum".to_string(), ran(&j.vacuum.run)]);
        t.add_row(vec![
            "free space".to_string(),
            self.free_space
                .summary()
                .trim_start_matches("free space: ")
                .to_string(),
        ]);
        t
    }
}

impl Report for CheckReport {
    fn human(&self) -> String {
        let mut s = format!("{}\n{}\n", self.verdict_table(), self.jobs_table());
        for (title, list) in [
            ("warning", &self.warnings),
            ("accepted warning (--allow)", &self.allowed_warnings),
        ] {
            if !list.is_empty() {
                let mut w = report::table(&[title, "what it means / what to do"]);
                for x in list {
                    w.add_row(vec![x.code.to_string(), x.message.clone()]);
                }
                s.push_str(&format!("{w}\n"));
            }
        }
        if self.strict && !self.warnings.is_empty() {
            let mut codes: Vec<&str> = self.warnings.iter().map(|w| w.code).collect();
            codes.dedup();
            s.push_str(&format!(
                "--strict: exit 3 because of {} warning(s): {}; fix them, or accept one with --allow CODE (or corescope.checkAllow in the config)\n",
                self.warnings.len(),
                codes.join(", ")
            ));
        }
        s
    }

    fn exit_code(&self) -> i32 {
        if !self.ready || (self.strict && !self.warnings.is_empty()) {
            EXIT_NOT_READY
        } else {
            EXIT_OK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ready: bool, strict: bool, warnings: Vec<Warning>) -> CheckReport {
        CheckReport {
            database: "/x.db".into(),
            strict,
            target: "latest",
            ready,
            missing: vec![],
            server_missing: vec![],
            pending_migrations: vec!["a_v1".into()],
            pending_backfills: Some(BTreeMap::from([("from-pubkey".to_string(), 3)])),
            deep: false,
            scans_run: vec![],
            not_scanned: vec!["zero_timestamp"],
            schema_newer: vec![],
            jobs: super::super::jobs::jobs(
                &rusqlite::Connection::open_in_memory().unwrap(),
                &crate::config::Config::default(),
                0,
                false,
            )
            .unwrap(),
            warnings,
            allowed_warnings: vec![],
            integrity: Some(Integrity {
                foreign_key_violations: 0,
                quick_check: vec!["ok".into()],
            }),
            free_space: FreeSpace::default(),
        }
    }

    #[test]
    fn verdict_and_json_keys() {
        let w = || {
            vec![Warning {
                code: "zero_timestamp",
                message: "m".into(),
            }]
        };
        assert_eq!(report(true, false, w()).exit_code(), EXIT_OK);
        assert_eq!(report(true, true, w()).exit_code(), EXIT_NOT_READY);
        let h = report(true, true, w()).human();
        assert!(
            h.contains("--strict: exit 3 because of 1 warning(s): zero_timestamp;"),
            "{h}"
        );
        assert!(!report(true, false, w()).human().contains("--strict"));
        let mut accepted = report(true, true, vec![]);
        accepted.allowed_warnings = w();
        assert_eq!(accepted.exit_code(), EXIT_OK);
        assert!(accepted.human().contains("accepted warning (--allow)"));
        assert_eq!(report(false, false, vec![]).exit_code(), EXIT_NOT_READY);
        let r = report(true, false, vec![]);
        let j = serde_json::to_value(&r).unwrap();
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            vec![
                "allowed_warnings",
                "deep",
                "free_space",
                "integrity",
                "jobs",
                "missing",
                "not_scanned",
                "pending_backfills",
                "pending_migrations",
                "ready",
                "scans_run",
                "schema_newer",
                "server_missing",
                "target",
                "warnings"
            ]
        );
        let h = r.human();
        assert!(
            h.contains("integrity: quick_check") && h.contains("| ok"),
            "{h}"
        );
        assert!(h.contains("integrity: foreign_key_violations | 0"), "{h}");
        assert!(
            h.contains("a_v1") && h.contains("pending backfill from-pubkey"),
            "{h}"
        );
        assert!(!r.integrity.as_ref().unwrap().corrupt());
    }
}
