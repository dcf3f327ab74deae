//! The report of `corescope prune`: its `--json` keys and its human table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::kinds::KindReport;
use crate::cli::PruneKind;
use crate::report::{table, Report};
use crate::store::maintenance::{CheckpointResult, FileSizes, FreeSpace, VacuumResult};
use crate::timeutil::rfc3339;

/// One kind in `kinds`.
#[derive(Debug, Serialize)]
pub struct KindJson {
    /// `done`, `incomplete`, `not reached`, `not selected` or `disabled`.
    pub status: &'static str,
    /// The retention in days (null: off, or kept forever).
    pub days: Option<i64>,
    /// The cutoff instant (RFC 3339), also for kinds that did not run.
    pub cutoff: Option<String>,
    /// Rows of the kind's own table looked at.
    pub examined: u64,
    /// Rows of the kind's own table deleted (packets: transmissions),
    /// moved (nodes) or inactivated (observers); the same as `deleted.<kind>`.
    pub deleted: u64,
    /// Rows of other tables deleted with them, by table: packets →
    /// `observations`, observers → `metrics` (of the inactivated observers),
    /// clients → `client_observers`; empty for the other kinds.
    pub also_deleted: BTreeMap<&'static str, u64>,
    pub null_times: u64,
    pub unparseable: u64,
}

/// Space and WAL figures of a run (vacuum and checkpoint on real runs only).
#[allow(clippy::struct_field_names)] // `free_space` is the key in every report
#[derive(Debug, Default, Serialize)]
pub struct Space {
    pub vacuum: Option<VacuumResult>,
    pub checkpoint: Option<CheckpointResult>,
    #[serde(flatten)]
    pub sizes: FileSizes,
    pub max_lock_hold_ms: f64,
    /// Free pages after the run (measured on the same handle).
    pub free_space: FreeSpace,
}

#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub now: String,
    /// Rows gone from each kind's table (deleted, moved or inactivated),
    /// keyed by the kind's name as `--only` takes it; `metrics` includes
    /// the metrics of observers the observers kind inactivated.
    pub deleted: BTreeMap<&'static str, u64>,
    pub cutoffs: BTreeMap<&'static str, Option<String>>,
    pub unparseable: BTreeMap<&'static str, u64>,
    pub null_times: BTreeMap<&'static str, u64>,
    pub kinds: BTreeMap<&'static str, KindJson>,
    pub vacuumed_pages: i64,
    pub freed_bytes: i64,
    #[serde(flatten)]
    pub space: Space,
    pub complete: bool,
    /// The kinds in CoreScope's order, for the human table.
    #[serde(skip)]
    rows: Vec<(PruneKind, KindReport)>,
    #[serde(skip)]
    db: String,
}

impl PruneReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: String,
        dry_run: bool,
        now: i64,
        rows: Vec<(PruneKind, KindReport)>,
        complete: bool,
        space: Space,
    ) -> PruneReport {
        let mut report = PruneReport {
            dry_run,
            now: rfc3339(now),
            deleted: BTreeMap::new(),
            cutoffs: BTreeMap::new(),
            unparseable: BTreeMap::new(),
            null_times: BTreeMap::new(),
            kinds: BTreeMap::new(),
            vacuumed_pages: space.vacuum.as_ref().map_or(0, |v| v.vacuumed_pages),
            freed_bytes: space.vacuum.as_ref().map_or(0, |v| v.freed_bytes),
            space,
            complete,
            rows: Vec::new(),
            db,
        };
        for (k, r) in &rows {
            let name = k.name();
            report.unparseable.insert(name, r.unparseable());
            report.null_times.insert(name, r.null_times());
            let cutoff = r.cutoff.map(rfc3339);
            report
                .cutoffs
                .insert(name, cutoff.clone().filter(|_| r.active()));
            let also_deleted: BTreeMap<&'static str, u64> = match k {
                PruneKind::Packets => BTreeMap::from([("observations", r.stats.secondary)]),
                PruneKind::Observers => BTreeMap::from([("metrics", r.metrics_of_inactive)]),
                PruneKind::Clients => {
                    BTreeMap::from([("client_observers", r.client_observers.deleted)])
                }
                _ => BTreeMap::new(),
            };
            *report.deleted.entry(name).or_insert(0) += r.stats.deleted;
            if *k == PruneKind::Observers {
                // Their metrics are gone from the metrics kind's table too.
                *report.deleted.entry(PruneKind::Metrics.name()).or_insert(0) +=
                    r.metrics_of_inactive;
            }
            report.kinds.insert(
                name,
                KindJson {
                    status: r.status,
                    days: r.days,
                    cutoff,
                    examined: r.stats.examined,
                    deleted: r.stats.deleted,
                    also_deleted,
                    null_times: r.null_times(),
                    unparseable: r.unparseable(),
                },
            );
        }
        report.rows = rows;
        report
    }

    fn table(&self) -> String {
        let pruned = if self.dry_run {
            "would prune"
        } else {
            "pruned"
        };
        let mut t = table(&[
            "kind",
            "days",
            "cutoff",
            pruned,
            "NULL time",
            "unparseable",
            "status",
        ]);
        for (k, r) in &self.rows {
            let active = r.active();
            t.add_row(vec![
                k.name().to_string(),
                days_text(*k, r.days),
                if active {
                    r.cutoff.map(rfc3339).unwrap_or_default()
                } else {
                    String::new()
                },
                if active { what(*k, r) } else { String::new() },
                r.null_times().to_string(),
                r.unparseable().to_string(),
                r.status.to_string(),
            ]);
        }
        format!("{t}\n")
    }

    /// The lines after the table on a real run: vacuum, checkpoint, lock hold.
    fn space_lines(&self) -> String {
        let mut h = String::new();
        if let Some(v) = &self.space.vacuum {
            if v.ran {
                h.push_str(&format!(
                    "incremental vacuum: {} pages freed, {}\n",
                    v.vacuumed_pages,
                    crate::report::bytes_i(v.freed_bytes)
                ));
            }
            if let Some(n) = &v.note {
                h.push_str(&format!("note: {n}\n"));
            }
        }
        if let Some(c) = &self.space.checkpoint {
            h.push_str(&c.summary());
            h.push('\n');
        }
        h.push_str(&format!(
            "{}: longest write-lock hold {} ms{}\n",
            self.db,
            self.space.max_lock_hold_ms,
            if self.complete {
                ""
            } else {
                "; stopped by --max-seconds (incomplete, the next run continues)"
            }
        ));
        h
    }
}

/// The retention of a kind in the table: days, or what no days means.
fn days_text(k: PruneKind, days: Option<i64>) -> String {
    match (k, days) {
        (_, Some(d)) => d.to_string(),
        (PruneKind::Observers, None) => "forever".into(),
        (_, None) => "off".into(),
    }
}

/// What a kind pruned, in words.
fn what(k: PruneKind, r: &KindReport) -> String {
    match k {
        PruneKind::Packets => format!(
            "{} transmissions, {} observations",
            r.stats.deleted, r.stats.secondary
        ),
        PruneKind::Nodes => format!("{} nodes moved to inactive_nodes", r.stats.deleted),
        PruneKind::Observers => format!(
            "{} observers inactivated, {} of their metrics",
            r.stats.deleted, r.metrics_of_inactive
        ),
        PruneKind::Clients => format!(
            "{} receptions, {} client observers",
            r.stats.deleted, r.client_observers.deleted
        ),
        _ => format!("{} rows", r.stats.deleted),
    }
}

impl Report for PruneReport {
    fn human(&self) -> String {
        let mut h = self.table();
        if self.dry_run {
            h.push_str(&format!(
                "{}: dry run with now = {}: nothing was changed\n",
                self.db, self.now
            ));
        } else {
            h.push_str(&self.space_lines());
        }
        h.push_str(&self.space.free_space.summary());
        h.push('\n');
        let unp: u64 = self.unparseable.values().sum();
        if unp > 0 {
            h.push_str(&format!(
                "note: {unp} rows have a time that does not parse; they are never pruned (corescope check lists anomalies)\n"
            ));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: &'static str, deleted: u64) -> KindReport {
        let mut r = KindReport {
            days: Some(7),
            cutoff: Some(0),
            status,
            ..KindReport::default()
        };
        r.stats.deleted = deleted;
        r.stats.unparseable = 1;
        r
    }

    #[test]
    fn json_sums_metrics_and_nulls_cutoffs_of_kinds_that_did_not_run() {
        let mut ob = kind("done", 2);
        ob.metrics_of_inactive = 5;
        let rows = vec![
            (PruneKind::Observers, ob),
            (PruneKind::Metrics, kind("incomplete", 3)),
            (PruneKind::Edges, kind("not reached", 0)),
        ];
        let r = PruneReport::new("x.db".into(), true, 0, rows, false, Space::default());
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["deleted"]["metrics"], 8);
        assert_eq!(j["kinds"]["metrics"]["deleted"], 3);
        assert_eq!(j["deleted"]["observers"], 2);
        assert_eq!(j["kinds"]["observers"]["also_deleted"]["metrics"], 5);
        assert_eq!(j["deleted"].get("packets"), None);
        assert_eq!(j["cutoffs"]["metrics"], "1970-01-01T00:00:00Z");
        assert_eq!(j["cutoffs"]["edges"], serde_json::Value::Null);
        assert_eq!(j["kinds"]["edges"]["cutoff"], "1970-01-01T00:00:00Z");
        assert_eq!(j["vacuum"], serde_json::Value::Null);
        assert_eq!(j.get("wal_bytes_after"), None);
        let h = r.human();
        assert!(
            h.contains("x.db: dry run with now = 1970-01-01T00:00:00Z"),
            "{h}"
        );
        assert!(
            h.contains("note: 3 rows have a time that does not parse"),
            "{h}"
        );
    }
}
