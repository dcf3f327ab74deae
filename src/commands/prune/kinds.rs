//! The retention kinds: which table and time column each walks, what it
//! does with due rows, and the observer step's metrics cleanup.

use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{params, Connection};

use super::walk::{process, quote, Action, Job, Stats, OBSERVER_METRICS_PENDING};
use crate::cli::PruneKind;
use crate::error::Failure;
use crate::retention::move_columns;
use crate::store::engine::Engine;
use crate::store::{columns, state_delete, state_get, table_exists};

/// What one kind did in a run.
#[derive(Debug, Default, Clone)]
pub struct KindReport {
    pub days: Option<i64>,
    pub cutoff: Option<i64>,
    pub status: &'static str,
    pub stats: Stats,
    /// observer_metrics rows of inactive observers (observers kind).
    pub metrics_of_inactive: u64,
    /// client_observers (clients kind).
    pub client_observers: Stats,
}

impl KindReport {
    /// The kind ran (to its end or until the deadline).
    pub fn active(&self) -> bool {
        self.status == "done" || self.status == "incomplete"
    }

    /// Rows with a NULL time, client observers included.
    pub fn null_times(&self) -> u64 {
        self.stats.nulls + self.client_observers.nulls
    }

    /// Rows with an unparseable time, client observers included.
    pub fn unparseable(&self) -> u64 {
        self.stats.unparseable + self.client_observers.unparseable
    }
}

/// Runs the kinds of one prune in order on one engine.
pub struct Runner {
    /// Stop acting inside a batch once it held the lock this long.
    pub budget: Duration,
    /// Dry run: the observers the observer step counted as inactive (or
    /// would inactivate), whose metrics the metrics step must not count again.
    pub dry_excluded_observers: Option<Vec<i64>>,
}

impl Runner {
    fn job(
        &self,
        table: &'static str,
        column: &'static str,
        filter: &str,
        action: Action,
        cutoff: i64,
    ) -> Job {
        Job {
            table,
            column,
            filter: filter.to_string(),
            action,
            cutoff,
            budget: self.budget,
        }
    }

    /// Run one kind. Returns false when stopped by the deadline.
    pub fn run(
        &mut self,
        eng: &mut Engine,
        kind: PruneKind,
        cutoff: i64,
        rep: &mut KindReport,
    ) -> anyhow::Result<bool> {
        let delete = |table, column| self.job(table, column, "", Action::Delete, cutoff);
        match kind {
            PruneKind::Packets => process(
                eng,
                &self.job("transmissions", "first_seen", "", Action::Packet, cutoff),
                &mut rep.stats,
            ),
            PruneKind::Nodes => {
                let cols = node_columns(eng.conn())?;
                process(
                    eng,
                    &self.job("nodes", "last_seen", "", Action::MoveNode { cols }, cutoff),
                    &mut rep.stats,
                )
            }
            PruneKind::Observers => self.observers(eng, cutoff, rep),
            PruneKind::Metrics => {
                let filter = self.metrics_filter();
                let job = self.job(
                    "observer_metrics",
                    "timestamp",
                    &filter,
                    Action::Delete,
                    cutoff,
                );
                process(eng, &job, &mut rep.stats)
            }
            PruneKind::Dropped => process(
                eng,
                &delete("dropped_packets", "dropped_at"),
                &mut rep.stats,
            ),
            PruneKind::Edges => {
                process(eng, &delete("neighbor_edges", "last_seen"), &mut rep.stats)
            }
            PruneKind::Clients => {
                if table_exists(eng.conn(), "client_receptions")?
                    && !process(eng, &delete("client_receptions", "rx_at"), &mut rep.stats)?
                {
                    return Ok(false);
                }
                if table_exists(eng.conn(), "client_observers")? {
                    return process(
                        eng,
                        &delete("client_observers", "last_seen"),
                        &mut rep.client_observers,
                    );
                }
                Ok(true)
            }
        }
    }

    fn observers(
        &mut self,
        eng: &mut Engine,
        cutoff: i64,
        rep: &mut KindReport,
    ) -> anyhow::Result<bool> {
        let job = self.job(
            "observers",
            "last_seen",
            " AND COALESCE(inactive, 0) != 1",
            Action::InactivateObserver,
            cutoff,
        );
        if !process(eng, &job, &mut rep.stats)? {
            return Ok(false);
        }
        let due = rep.stats.due_rowids.clone();
        let (n, complete) = observer_metrics_cleanup(eng, &due)?;
        rep.metrics_of_inactive = n;
        if eng.target().is_dry_run()
            && (n > 0
                || !due.is_empty()
                || state_get(eng.conn(), OBSERVER_METRICS_PENDING)?.is_some())
        {
            self.dry_excluded_observers = Some(due);
        }
        Ok(complete)
    }

    /// A dry run must not count rows the observer step already deleted.
    fn metrics_filter(&self) -> String {
        match &self.dry_excluded_observers {
            Some(due) => {
                let extra = rowid_list(due);
                format!(
                    " AND NOT EXISTS (SELECT 1 FROM observers o WHERE o.id = observer_metrics.observer_id AND (o.inactive = 1{}))",
                    if extra.is_empty() { String::new() } else { format!(" OR o.rowid IN ({extra})") }
                )
            }
            None => String::new(),
        }
    }
}

/// The quoted columns `nodes` and `inactive_nodes` share (a node moves by
/// column name).
fn node_columns(conn: &Connection) -> anyhow::Result<String> {
    let ncols = columns(conn, "nodes")?;
    let icols = columns(conn, "inactive_nodes")?;
    let cols = move_columns(&ncols, &icols);
    if cols.is_empty() {
        return Err(Failure::Fatal(
            "nodes and inactive_nodes share no column; cannot move nodes".into(),
        )
        .into());
    }
    Ok(cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", "))
}

/// Delete the observer_metrics of every inactive observer when the observer
/// step changed a row in this or an interrupted earlier run (CoreScope's rule).
/// A dry run counts them (with the observers it would inactivate).
fn observer_metrics_cleanup(eng: &mut Engine, due_now: &[i64]) -> anyhow::Result<(u64, bool)> {
    let pending = state_get(eng.conn(), OBSERVER_METRICS_PENDING)?.is_some();
    if eng.target().is_dry_run() {
        if !pending && due_now.is_empty() {
            return Ok((0, true));
        }
        let mut total = 0u64;
        for id in inactive_observer_ids(eng.conn(), due_now)? {
            let n: i64 = eng.conn().query_row(
                "SELECT count(*) FROM observer_metrics WHERE observer_id = ?1",
                [&id],
                |r| r.get(0),
            )?;
            total += u64::try_from(n)?;
        }
        return Ok((total, true));
    }
    if !pending {
        return Ok((0, true));
    }
    let mut total = 0u64;
    for id in inactive_observer_ids(eng.conn(), &[])? {
        loop {
            if eng.expired() {
                return Ok((total, false));
            }
            let limit = eng.batch_size();
            let n = eng.batch(|tx| {
                let n = tx
                    .prepare_cached(
                        "DELETE FROM observer_metrics WHERE rowid IN \
                         (SELECT rowid FROM observer_metrics WHERE observer_id = ?1 LIMIT ?2)",
                    )?
                    .execute(params![id, i64::try_from(limit)?])?;
                Ok((n, n))
            })?;
            total += n as u64;
            if n < limit {
                break;
            }
        }
    }
    eng.batch(|tx| state_delete(tx, OBSERVER_METRICS_PENDING).map(|()| ((), 0)))?;
    Ok((total, true))
}

/// Ids of observers with `inactive = 1`, plus (dry run) those a real run
/// would inactivate.
fn inactive_observer_ids(conn: &Connection, extra_rowids: &[i64]) -> anyhow::Result<Vec<Value>> {
    let extra = rowid_list(extra_rowids);
    let sql = format!(
        "SELECT DISTINCT id FROM observers WHERE id IS NOT NULL AND (inactive = 1{})",
        if extra.is_empty() {
            String::new()
        } else {
            format!(" OR rowid IN ({extra})")
        }
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map([], |r| r.get::<_, Value>(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn rowid_list(ids: &[i64]) -> String {
    ids.iter()
        .map(std::string::ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
