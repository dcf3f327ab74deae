//! What `build-edges` keeps in the database besides `neighbor_edges`: its
//! state keys, the staging table of a `--rebuild`, the old tables of earlier
//! swaps, and probes of them (shared by `build-edges`, `check` and
//! `migrate`, read-only).

use rusqlite::Connection;

use super::probe::table_exists;
use super::state::{state_delete, state_get, state_set, state_table_sql};
use crate::error::Failure;

/// State key of the incremental watermark (last observation id counted).
pub const WATERMARK_KEY: &str = "build_edges.watermark";
/// State key of the staging table's watermark (set only while consistent).
pub const REBUILD_KEY: &str = "build_edges.rebuild_watermark";
/// State key naming the run that owns the staging table.
pub const OWNER_KEY: &str = "build_edges.rebuild_owner";
/// State key set (through [`rows_rewritten`]) when a rewrite changed or
/// removed observations `neighbor_edges` had already counted: the graph is
/// stale until a rebuild swaps a recomputed table in, which deletes the key
/// in the same transaction. The next `build-edges` rebuilds on its own. The
/// value lists the reasons, one per line.
pub const NEEDS_REBUILD_KEY: &str = "build_edges.needs_rebuild";
/// The rebuild's staging table.
pub const STAGING_TABLE: &str = "_corescope_edges_rebuild";
/// Prefix of the tables a swap renames the old `neighbor_edges` to; they are
/// emptied in short batches and dropped afterwards (a `DROP TABLE` of a big
/// table would hold the write lock for as long as it takes to free every page).
pub const OLD_TABLE_PREFIX: &str = "_corescope_edges_old_";

/// The stored watermark under `key` (None when unset); a value that is not
/// an observation id is corrupt state (exit 1, says to rebuild).
pub fn read_watermark(conn: &Connection, key: &str) -> anyhow::Result<Option<i64>> {
    match state_get(conn, key)? {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            Failure::Fatal(format!(
                "corrupt state: {key} = {v:?} is not an observation id; run `corescope build-edges --rebuild`"
            ))
            .into()
        }),
    }
}

/// The highest observation id the database has or had: `MAX(id)`, or the
/// AUTOINCREMENT counter in `sqlite_sequence` (ids are never reused, so an
/// id above it cannot exist yet).
pub fn observation_ceiling(conn: &Connection) -> anyhow::Result<i64> {
    let max_id: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM observations", [], |r| {
        r.get(0)
    })?;
    let seq: i64 = if table_exists(conn, "sqlite_sequence")? {
        conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'observations'",
            [],
            |r| r.get(0),
        )?
    } else {
        0
    };
    Ok(max_id.max(seq))
}

/// `Some((watermark, ceiling))` when the stored watermark is above every
/// observation id there is or was. It can only get there when the database
/// was restored from an older backup or `observations` was rebuilt; new
/// observations then get ids the watermark already covers and would never be
/// counted.
pub fn watermark_ahead(conn: &Connection) -> anyhow::Result<Option<(i64, i64)>> {
    let Some(w) = read_watermark(conn, WATERMARK_KEY)? else {
        return Ok(None);
    };
    let ceiling = observation_ceiling(conn)?;
    Ok((w > ceiling).then_some((w, ceiling)))
}

/// What a stopped `--rebuild` left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Rows in the staging table.
    pub staging_rows: i64,
    /// The staging table is consistent up to this observation id (a
    /// `--rebuild` resumes after it); None: it is not, a rebuild starts over.
    pub resumable_after: Option<i64>,
}

/// The staging table of an interrupted `--rebuild`, if there is one.
pub fn interrupted_rebuild(conn: &Connection) -> anyhow::Result<Option<Leftover>> {
    if !table_exists(conn, STAGING_TABLE)? {
        return Ok(None);
    }
    let staging_rows: i64 =
        conn.query_row(&format!("SELECT count(*) FROM {STAGING_TABLE}"), [], |r| {
            r.get(0)
        })?;
    let ceiling = observation_ceiling(conn)?;
    // A corrupt or too-high staging watermark (restored backup) is not consistent.
    let resumable_after = read_watermark(conn, REBUILD_KEY)
        .ok()
        .flatten()
        .filter(|w| *w >= 0 && *w <= ceiling);
    Ok(Some(Leftover {
        staging_rows,
        resumable_after,
    }))
}

/// Names of the tables earlier swaps renamed the old `neighbor_edges` to,
/// not dropped yet.
pub fn old_tables(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut st = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, length(?1)) = ?1 ORDER BY name",
    )?;
    let rows = st.query_map([OLD_TABLE_PREFIX], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The reasons recorded with [`NEEDS_REBUILD_KEY`] (empty: the graph is not
/// marked stale).
pub fn rebuild_reasons(conn: &Connection) -> anyhow::Result<Vec<String>> {
    Ok(state_get(conn, NEEDS_REBUILD_KEY)?
        .map(|v| {
            v.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

/// What [`rows_rewritten`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// The graph was marked stale (the watermark had counted a rewritten row).
    pub marked: bool,
    /// An unfinished `--rebuild` lost its staging table.
    pub staging_reset: bool,
}

/// Has the build-edges watermark (stored text) counted observation `id`?
/// An unparseable watermark counts everything (build-edges itself asks for
/// a rebuild then).
pub fn watermark_covers(wm: Option<&str>, id: i64) -> bool {
    match wm {
        None => false,
        Some(v) => v.trim().parse::<i64>().map_or(true, |w| id <= w),
    }
}

/// The one rule for every rewrite of a column build-edges counts
/// (`path_json`, `observer_idx`, a removed row), called in the rewriting
/// transaction with the lowest observation id it changed: when the
/// watermark has counted that row, mark the graph stale with `reason`
/// (added to the reasons already there); with `reset_staging`, an
/// unfinished `--rebuild` (which may hold the old value in its staging
/// table or in memory) also loses its staging table and stops, so no swap
/// brings an old count back.
pub fn rows_rewritten(
    tx: &Connection,
    min_id: i64,
    reason: &str,
    reset_staging: bool,
) -> anyhow::Result<Rewritten> {
    tx.execute_batch(&state_table_sql())?;
    let mut done = Rewritten::default();
    if watermark_covers(state_get(tx, WATERMARK_KEY)?.as_deref(), min_id) {
        let mut reasons = rebuild_reasons(tx)?;
        if !reasons.iter().any(|r| r == reason) {
            reasons.push(reason.to_string());
        }
        state_set(tx, NEEDS_REBUILD_KEY, &reasons.join("\n"))?;
        done.marked = true;
    }
    if reset_staging
        && (state_get(tx, OWNER_KEY)?.is_some() || state_get(tx, REBUILD_KEY)?.is_some())
    {
        state_delete(tx, OWNER_KEY)?;
        state_delete(tx, REBUILD_KEY)?;
        done.staging_reset = true;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(&state_table_sql()).unwrap();
        c
    }

    #[test]
    fn watermark_coverage() {
        assert!(!watermark_covers(None, 1));
        assert!(watermark_covers(Some("10"), 10));
        assert!(!watermark_covers(Some(" 10 "), 11));
        assert!(
            watermark_covers(Some("garbage"), 11),
            "unparseable: assume counted"
        );
    }

    #[test]
    fn a_rewrite_above_the_watermark_marks_nothing() {
        let c = db();
        state_set(&c, WATERMARK_KEY, "10").unwrap();
        assert_eq!(
            rows_rewritten(&c, 11, "r", false).unwrap(),
            Rewritten::default()
        );
        assert!(rebuild_reasons(&c).unwrap().is_empty());
    }

    #[test]
    fn reasons_accumulate_once_each() {
        let c = db();
        state_set(&c, WATERMARK_KEY, "10").unwrap();
        assert!(rows_rewritten(&c, 3, "first", false).unwrap().marked);
        assert!(rows_rewritten(&c, 10, "second", false).unwrap().marked);
        assert!(rows_rewritten(&c, 5, "first", false).unwrap().marked);
        assert_eq!(rebuild_reasons(&c).unwrap(), vec!["first", "second"]);
    }

    #[test]
    fn a_rewrite_takes_the_staging_table_away_only_when_asked() {
        let c = db();
        state_set(&c, OWNER_KEY, "run").unwrap();
        state_set(&c, REBUILD_KEY, "4").unwrap();
        assert!(!rows_rewritten(&c, 1, "r", false).unwrap().staging_reset);
        let r = rows_rewritten(&c, 1, "r", true).unwrap();
        assert!(
            r.staging_reset && !r.marked,
            "no watermark: nothing counted"
        );
        assert_eq!(state_get(&c, OWNER_KEY).unwrap(), None);
        assert_eq!(state_get(&c, REBUILD_KEY).unwrap(), None);
    }
}
