//! The report of `check`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::anomalies::Warning;
use crate::error::{EXIT_NOT_READY, EXIT_OK};
use crate::report::{self, Report};

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
    pub pending_backfills: BTreeMap<String, i64>,
    pub warnings: Vec<Warning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Integrity>,
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
        for (k, v) in &self.pending_backfills {
            t.add_row(vec![format!("pending backfill {k}"), v.to_string()]);
        }
        if let Some(i) = &self.integrity {
            t.add_row(vec![
                "integrity".to_string(),
                serde_json::to_string(i).unwrap_or_default(),
            ]);
        }
        t
    }
}

impl Report for CheckReport {
    fn human(&self) -> String {
        let mut s = format!("{}\n", self.verdict_table());
        if !self.warnings.is_empty() {
            let mut w = report::table(&["warning", "what it means / what to do"]);
            for x in &self.warnings {
                w.add_row(vec![x.code.to_string(), x.message.clone()]);
            }
            s.push_str(&format!("{w}\n"));
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
            pending_backfills: BTreeMap::from([("from_pubkey".to_string(), 3)]),
            warnings,
            integrity: Some(Integrity {
                foreign_key_violations: 0,
                quick_check: vec!["ok".into()],
            }),
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
        assert_eq!(report(false, false, vec![]).exit_code(), EXIT_NOT_READY);
        let r = report(true, false, vec![]);
        let j = serde_json::to_value(&r).unwrap();
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            vec![
                "integrity",
                "missing",
                "pending_backfills",
                "pending_migrations",
                "ready",
                "server_missing",
                "target",
                "warnings"
            ]
        );
        let h = r.human();
        assert!(
            h.contains(r#"{"foreign_key_violations":0,"quick_check":["ok"]}"#),
            "{h}"
        );
        assert!(
            h.contains("a_v1") && h.contains("pending backfill from_pubkey"),
            "{h}"
        );
        assert!(!r.integrity.as_ref().unwrap().corrupt());
    }
}
