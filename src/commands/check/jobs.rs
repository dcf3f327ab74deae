//! The state of every job corescope runs (build-edges, each backfill task,
//! prune, vacuum): when it last ran, whether that run was complete, and how
//! far behind it is. Everything comes from corescope's state table, row ids
//! (`max(id)` is a lookup at the end of the B-tree), indexes and pragmas:
//! nothing here reads a table from end to end unless `--deep` asks for it.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::Connection;
use serde::Serialize;

use super::plan;
use crate::config::Config;
use crate::retention::{self, Class, DAY};
use crate::store::{self, backfill_state, edge_state, state};

/// When a job last ran, as it recorded itself at the end of the run.
#[derive(Debug, Serialize, Default)]
pub struct RunRecord {
    /// The job has run (with a corescope that records its runs).
    pub ran: bool,
    /// UTC time the last run ended.
    pub last_run: Option<String>,
    /// The last run finished its work (false: stopped by --max-seconds).
    pub last_complete: Option<bool>,
}

fn last_run(conn: &Connection, job: &str) -> anyhow::Result<RunRecord> {
    Ok(match state::last_run(conn, job)? {
        Some((at, complete)) => RunRecord {
            ran: true,
            last_run: Some(at),
            last_complete: Some(complete),
        },
        None => RunRecord::default(),
    })
}

/// How the lags below are computed.
pub const LAG_BASIS: &str =
    "max(id) minus the cursor: an upper bound (ids of deleted rows are gaps)";

#[derive(Debug, Serialize)]
pub struct EdgesJob {
    #[serde(flatten)]
    pub run: RunRecord,
    /// Last observation id counted into neighbor_edges (None: never ran).
    pub watermark: Option<i64>,
    pub max_observation_id: i64,
    /// Observations not counted yet (upper bound, see `lag_basis`).
    pub lag: i64,
    pub lag_basis: &'static str,
}

#[derive(Debug, Serialize)]
pub struct BackfillJob {
    #[serde(flatten)]
    pub run: RunRecord,
    /// Last row id visited (0: from the start).
    pub cursor: i64,
    pub max_id: i64,
    /// Rows after the cursor (upper bound, see `lag_basis`); only the ones
    /// matching the task's selection are work (`check --deep` counts them).
    pub rows_past_cursor: i64,
    /// Visits of rows that could not be filled, summed since the last
    /// --reset (a row visited again after its cursor was lowered counts again).
    pub skipped: i64,
    pub lag_basis: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PruneKindState {
    /// `table.column` the kind compares with its cut-off.
    pub column: String,
    /// Retention in days (None: this kind keeps everything).
    pub days: Option<i64>,
    /// The oldest stored value, as stored (None: empty table, or not known).
    pub oldest: Option<String>,
    /// The oldest row is older than the cut-off: a prune now removes rows.
    pub due_now: Option<bool>,
    /// Why `oldest` is not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PruneJob {
    #[serde(flatten)]
    pub run: RunRecord,
    pub kinds: BTreeMap<&'static str, PruneKindState>,
}

/// The vacuum job: when it last ran (the free space it returns is the
/// report's top-level `free_space`).
#[derive(Debug, Serialize)]
pub struct VacuumJob {
    #[serde(flatten)]
    pub run: RunRecord,
}

#[derive(Debug, Serialize)]
pub struct Jobs {
    pub build_edges: EdgesJob,
    pub backfill: BTreeMap<&'static str, BackfillJob>,
    pub prune: PruneJob,
    pub vacuum: VacuumJob,
}

fn max_id(conn: &Connection, table: &str) -> anyhow::Result<Option<i64>> {
    if !store::table_exists(conn, table)? {
        return Ok(None);
    }
    Ok(Some(conn.query_row(
        &format!("SELECT coalesce(max(rowid), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )?))
}

/// The state of every job; `deep` also finds the oldest row of a retention
/// kind whose time column has no index (a full scan).
pub fn jobs(conn: &Connection, cfg: &Config, now: i64, deep: bool) -> anyhow::Result<Jobs> {
    let max_obs = max_id(conn, "observations")?.unwrap_or(0);
    let watermark = edge_state::read_watermark(conn, edge_state::WATERMARK_KEY).unwrap_or(None);
    let build_edges = EdgesJob {
        run: last_run(conn, "build_edges")?,
        watermark,
        max_observation_id: max_obs,
        lag: (max_obs - watermark.unwrap_or(0)).max(0),
        lag_basis: LAG_BASIS,
    };
    let mut backfill = BTreeMap::new();
    for (task, table) in [
        ("from-pubkey", "transmissions"),
        ("path-json", "observations"),
        ("resolved-path", "observations"),
    ] {
        let Some(max) = max_id(conn, table)? else {
            continue;
        };
        let cursor = backfill_state::read_cursor(conn, task)?;
        backfill.insert(
            task,
            BackfillJob {
                run: last_run(conn, &format!("backfill.{task}"))?,
                cursor,
                max_id: max,
                rows_past_cursor: (max - cursor).max(0),
                skipped: backfill_state::read_skipped(conn, task)?,
                lag_basis: LAG_BASIS,
            },
        );
    }
    let kinds = [
        ("packets", "transmissions", "first_seen", cfg.packet_days()),
        ("nodes", "nodes", "last_seen", Some(cfg.node_days())),
        ("observers", "observers", "last_seen", cfg.observer_days()),
        (
            "metrics",
            "observer_metrics",
            "timestamp",
            Some(cfg.metrics_days()),
        ),
        (
            "dropped",
            "dropped_packets",
            "dropped_at",
            Some(cfg.metrics_days()),
        ),
        (
            "edges",
            "neighbor_edges",
            "last_seen",
            Some(cfg.edge_days()),
        ),
        (
            "clients",
            "client_receptions",
            "rx_at",
            cfg.client_rx_days(),
        ),
    ];
    let mut prune = BTreeMap::new();
    for (kind, table, column, days) in kinds {
        if !store::columns(conn, table)?.iter().any(|c| c == column) {
            continue;
        }
        prune.insert(kind, oldest(conn, table, column, days, now, deep)?);
    }
    let vacuum = VacuumJob {
        run: last_run(conn, "vacuum")?,
    };
    Ok(Jobs {
        build_edges,
        backfill,
        prune: PruneJob {
            run: last_run(conn, "prune")?,
            kinds: prune,
        },
        vacuum,
    })
}

fn oldest(
    conn: &Connection,
    table: &str,
    column: &str,
    days: Option<i64>,
    now: i64,
    deep: bool,
) -> anyhow::Result<PruneKindState> {
    let sql = format!(
        "SELECT min({c}) FROM {t}",
        c = crate::catalog::quote_ident(column),
        t = crate::catalog::quote_ident(table)
    );
    let mut st = PruneKindState {
        column: format!("{table}.{column}"),
        days,
        oldest: None,
        due_now: None,
        note: None,
    };
    if !deep && !plan::is_cheap(conn, &sql)? {
        st.note = Some(format!(
            "not known without --deep ({table}.{column} has no index)"
        ));
        return Ok(st);
    }
    let v: Value = conn.query_row(&sql, [], |r| r.get(0))?;
    if matches!(v, Value::Null) {
        return Ok(st);
    }
    st.due_now = days.map(|d| retention::classify(&v, now - d * DAY) == Class::Due);
    st.oldest = Some(match v {
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(s) => s,
        Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::Null => String::new(),
    });
    Ok(st)
}
