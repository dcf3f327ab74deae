//! `check --diff`: the report of [`crate::store::schema_diff`].

use std::collections::BTreeMap;

use crate::catalog::Target;
pub use crate::store::schema_diff::{diff, DiffEntry, Severity};

/// The report of `check --diff`.
#[derive(serde::Serialize)]
pub struct DiffReport {
    pub target: &'static str,
    /// Entries by severity: `breaks`, `drift`, `extra`.
    pub counts: BTreeMap<&'static str, usize>,
    pub diff: Vec<DiffEntry>,
}

impl DiffReport {
    pub fn new(target: Target, diff: Vec<DiffEntry>) -> DiffReport {
        let mut counts = BTreeMap::new();
        for s in [Severity::Breaks, Severity::Drift, Severity::Extra] {
            counts.insert(s.name(), diff.iter().filter(|e| e.severity == s).count());
        }
        DiffReport {
            target: target.name(),
            counts,
            diff,
        }
    }
}

impl crate::report::Report for DiffReport {
    fn human(&self) -> String {
        if self.diff.is_empty() {
            return format!(
                "schema identical to the catalog of target {}: no differences\n",
                self.target
            );
        }
        let mut t = crate::report::table(&["severity", "object", "expected", "actual", "fix"]);
        for e in &self.diff {
            t.add_row(vec![
                e.severity.name().to_string(),
                e.object.clone(),
                e.expected.clone(),
                e.actual.clone(),
                e.fix.clone(),
            ]);
        }
        let n = |k: &str| self.counts.get(k).copied().unwrap_or(0);
        format!(
            "{t}\ntarget {}: {} breaks, {} drift, {} extra{}\n",
            self.target,
            n("breaks"),
            n("drift"),
            n("extra"),
            if n("breaks") > 0 {
                " (exit 3: a CoreScope statement would fail or behave differently)"
            } else {
                ""
            }
        )
    }

    fn exit_code(&self) -> i32 {
        if self.diff.iter().any(|e| e.severity == Severity::Breaks) {
            crate::error::EXIT_NOT_READY
        } else {
            crate::error::EXIT_OK
        }
    }
}
