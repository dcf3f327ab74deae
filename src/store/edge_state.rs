//! What `build-edges` keeps in the database besides `neighbor_edges`: its
//! state keys, the staging table of a `--rebuild`, the old tables of earlier
//! swaps, and probes of them (shared by `build-edges`, `check` and
//! `migrate`, read-only).

use rusqlite::Connection;

use super::probe::table_exists;
use super::state::state_get;
use crate::error::Failure;

/// State key of the incremental watermark (last observation id counted).
pub const WATERMARK_KEY: &str = "build_edges.watermark";
/// State key of the staging table's watermark (set only while consistent).
pub const REBUILD_KEY: &str = "build_edges.rebuild_watermark";
/// State key naming the run that owns the staging table.
pub const OWNER_KEY: &str = "build_edges.rebuild_owner";
/// State key set (by `migrate`'s duplicate-observation merge) when
/// `neighbor_edges` counts observations that no longer exist: the graph is
/// stale until `build-edges --rebuild` swaps a recomputed table in, which
/// deletes the key in the same transaction.
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
