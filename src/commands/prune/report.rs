//! The report of `corescope prune`: its `--json` keys and its human table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::kinds::KindReport;
use crate::cli::PruneKind;
use crate::report::{table, Report};
use crate::store::maintenance::{CheckpointResult, FileSizes, VacuumResult};
use crate::timeutil::rfc3339;

/// Rows deleted (moved, inactivated) per table.
#[derive(Debug, Default, Serialize)]
pub struct Deleted {
    pub transmissions: u64,
    pub observations: u64,
    pub nodes_moved: u64,
    pub observers_inactivated: u64,
    /// Metrics by age plus the metrics of inactive observers.
    pub metrics: u64,
    pub metrics_of_inactive_observers: u64,
    pub dropped_packets: u64,
    pub neighbor_edges: u64,
    pub client_receptions: u64,
    pub client_observers: u64,
}

/// One kind in `kinds`.
#[derive(Debug, Serialize)]
pub struct KindJson {
    /// `done`, `incomplete`, `not reached`, `not selected` or `disabled`.
    pub status: &'static str,
    /// The retention in days (null: off, or kept forever).
    pub days: Option<i64>,
    /// The cutoff instant (RFC 3339), also for kinds that did not run.
    pub cutoff: Option<String>,
    /// Rows looked at (client observers included).
    pub examined: u64,
    /// Rows deleted, moved or inactivated (client observers included).
    pub deleted: u64,
    pub null_times: u64,
    pub unparseable: u64,
}

/// Space and WAL figures of a run (vacuum and checkpoint on real runs only).
#[derive(Debug, Default, Serialize)]
pub struct Space {
    pub vacuum: Option<VacuumResult>,
    pub checkpoint: Option<CheckpointResult>,
    #[serde(flatten)]
    pub sizes: FileSizes,
    pub max_lock_hold_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub now: String,
    pub deleted: Deleted,
    pub cutoffs: BTreeMap<&'static str, Option<String>>,
    pub unparseable: BTreeMap<&'static str, u64>,
    pub null_times: BTreeMap<&'static str, u64>,
    pub kinds: BTreeMap<&'static str, KindJson>,
    pub vacuumed_pages: i64,
    pub freed_bytes: i64,
    #[serde(flatten)]
    pub space: Space,
    pub vacuum_pages: i64,
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
        vacuum_pages: i64,
        rows: Vec<(PruneKind, KindReport)>,
        complete: bool,
        space: Space,
    ) -> PruneReport {
        let get = |k: PruneKind| {
            rows.iter()
                .find(|(kk, _)| *kk == k)
                .map(|(_, r)| r.clone())
                .unwrap_or_default()
        };
        let (pk, ob, cl) = (
            get(PruneKind::Packets),
            get(PruneKind::Observers),
            get(PruneKind::Clients),
        );
        let deleted = Deleted {
            transmissions: pk.stats.deleted,
            observations: pk.stats.secondary,
            nodes_moved: get(PruneKind::Nodes).stats.deleted,
            observers_inactivated: ob.stats.deleted,
            metrics: get(PruneKind::Metrics).stats.deleted + ob.metrics_of_inactive,
            metrics_of_inactive_observers: ob.metrics_of_inactive,
            dropped_packets: get(PruneKind::Dropped).stats.deleted,
            neighbor_edges: get(PruneKind::Edges).stats.deleted,
            client_receptions: cl.stats.deleted,
            client_observers: cl.client_observers.deleted,
        };
        let mut report = PruneReport {
            dry_run,
            now: rfc3339(now),
            deleted,
            cutoffs: BTreeMap::new(),
            unparseable: BTreeMap::new(),
            null_times: BTreeMap::new(),
            kinds: BTreeMap::new(),
            vacuumed_pages: space.vacuum.as_ref().map_or(0, |v| v.vacuumed_pages),
            freed_bytes: space.vacuum.as_ref().map_or(0, |v| v.freed_bytes),
            space,
            vacuum_pages,
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
            report.kinds.insert(
                name,
                KindJson {
                    status: r.status,
                    days: r.days,
                    cutoff,
                    examined: r.stats.examined + r.client_observers.examined,
                    deleted: r.stats.deleted + r.client_observers.deleted,
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
                    "incremental vacuum: {} pages freed ({} bytes)\n",
                    v.vacuumed_pages, v.freed_bytes
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
        let r = PruneReport::new("x.db".into(), true, 0, 16, rows, false, Space::default());
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["deleted"]["metrics"], 8);
        assert_eq!(j["deleted"]["metrics_of_inactive_observers"], 5);
        assert_eq!(j["deleted"]["transmissions"], 0);
        assert_eq!(j["cutoffs"]["metrics"], "1970-01-01T00:00:00Z");
        assert_eq!(j["cutoffs"]["edges"], serde_json::Value::Null);
        assert_eq!(j["kinds"]["edges"]["cutoff"], "1970-01-01T00:00:00Z");
        assert_eq!(j["vacuum"], serde_json::Value::Null);
        assert_eq!(j["wal_bytes_after"], 0);
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
