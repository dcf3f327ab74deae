//! Repairs of data CoreScope's ingestor needs before its indexes: text
//! `observer_idx` mapped to observer rowids, duplicate observations merged
//! as the ingestor's UPSERT would have (before the unique dedup index), and
//! `inactive_nodes` rebuilt in the shape of `nodes`.

use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{params, OptionalExtension, Transaction};

use crate::catalog;
use crate::store::edge_state::{rows_rewritten, watermark_covers, WATERMARK_KEY};
use crate::store::engine::Engine;
use crate::store::probe;
use crate::store::walk::update_keyed;
use crate::store::{self};

use super::data::{complete, to_i64};
use super::steps::once;

/// Map text observer_idx to observers.rowid where the text equals exactly
/// one observer id case-insensitively; leave the rest.
pub(super) fn observer_idx_rowid(e: &mut Engine<'_>) -> anyhow::Result<i64> {
    let mut map: HashMap<String, Option<i64>> = HashMap::new();
    {
        let mut st = e.conn().prepare("SELECT rowid, id FROM observers")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        for r in rows {
            let (rowid, id) = r?;
            if let Some(id) = id {
                map.entry(id.to_lowercase())
                    .and_modify(|v| *v = None) // ambiguous: two observers differ only in case
                    .or_insert(Some(rowid));
            }
        }
    }
    let walk = e.walk_cursor(i64::MIN, |tx, cursor, n| {
        let mut sel = tx.prepare(
            "SELECT id, observer_idx FROM observations WHERE id > ?1 AND typeof(observer_idx) = 'text' ORDER BY id LIMIT ?2",
        )?;
        let rows: Vec<(i64, String)> = sel
            .query_map(params![cursor, to_i64(n)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        store::state_set(
            tx,
            &probe::own_started_key(catalog::OBSERVER_IDX_MIGRATION),
            "1",
        )?;
        let mapped = |text: &String| map.get(&text.to_lowercase()).copied().flatten();
        let b = update_keyed(
            tx,
            "UPDATE OR IGNORE observations SET observer_idx = ?1 WHERE id = ?2 AND typeof(observer_idx) = 'text'",
            &rows,
            mapped,
        )?;
        // build-edges reads the observer through observer_idx: a mapped row
        // it had counted (as heard by no observer) makes the graph stale.
        if b.changed > 0 {
            if let Some(first) = rows.iter().find(|(_, t)| mapped(t).is_some()) {
                rows_rewritten(tx, first.0, OBSERVER_IDX_REASON, true)?;
            }
        }
        Ok(b)
    })?;
    complete(walk)
}

/// What the duplicate merge did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct MergeStats {
    pub groups: i64,
    pub rows: i64,
    /// The build-edges marker was set: removed rows had been counted.
    pub needs_rebuild: bool,
    /// An unfinished `build-edges --rebuild` staging table was discarded.
    pub staging_reset: bool,
}

impl MergeStats {
    pub fn add(&mut self, m: &MergeStats) {
        self.groups += m.groups;
        self.rows += m.rows;
        self.needs_rebuild |= m.needs_rebuild;
        self.staging_reset |= m.staging_reset;
    }
}

/// Merge every group of observations that share the dedup key
/// (`transmission_id`, `observer_idx`, `COALESCE(path_json, '')`, both ids
/// non-NULL) exactly as the ingestor's UPSERT would have, had the index
/// existed: the lowest id survives with all its columns, and each later row,
/// in id order, overwrites [`catalog::UPSERT_MERGED_COLUMNS`] where its value
/// is not NULL (columns the table does not have yet are NULL in every row,
/// so they need no merge). Every later row is copied verbatim into the audit
/// table, then deleted. Groups are found by one read outside the lock; each
/// batch of groups is one transaction that re-reads its groups, so a killed
/// run leaves whole groups merged or untouched and the next run finishes.
pub(super) fn merge_duplicates(e: &mut Engine<'_>) -> anyhow::Result<MergeStats> {
    let keepers: Vec<i64> = {
        let mut st = e.conn().prepare(
            "SELECT min(id) FROM observations
              WHERE transmission_id IS NOT NULL AND observer_idx IS NOT NULL
              GROUP BY transmission_id, observer_idx, COALESCE(path_json, '')
             HAVING count(*) > 1 ORDER BY 1",
        )?;
        let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let (batches, all) = e.walk_keys(&keepers, |tx, chunk| {
        let b = merge_batch(tx, chunk)?;
        let seen = b.rows_seen;
        Ok((b, seen))
    })?;
    complete(crate::store::walk::Walk {
        changed: 0,
        complete: all,
    })?;
    let mut stats = MergeStats::default();
    let mut min_removed: Option<i64> = None;
    for b in &batches {
        stats.add(&MergeStats {
            groups: b.groups,
            rows: b.removed,
            needs_rebuild: b.marked,
            staging_reset: b.staging_reset,
        });
        min_removed = min_of(min_removed, b.min_removed);
    }
    // A build-edges run that read a removed row before its batch was merged
    // may have committed it since: if the watermark has passed the lowest
    // removed id by now, the graph is stale too.
    if let Some(m) = min_removed {
        let wm = store::state_get(e.conn(), WATERMARK_KEY)?;
        if watermark_covers(wm.as_deref(), m) {
            once(e, |tx| rows_rewritten(tx, m, MERGE_REASON, false))?;
            stats.needs_rebuild = true;
        }
    }
    Ok(stats)
}

fn min_of(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Reasons recorded with the build-edges marker (fixed texts: the same
/// whichever run sets them).
const MERGE_REASON: &str =
    "migrate merged away duplicate observations that neighbor_edges had already counted";
const OBSERVER_IDX_REASON: &str =
    "migrate mapped the text observer_idx of observations that neighbor_edges had already counted to observer rowids";

#[derive(Debug, Default)]
struct MergeBatch {
    groups: i64,
    removed: i64,
    rows_seen: usize,
    min_removed: Option<i64>,
    marked: bool,
    staging_reset: bool,
}

/// The statements of a merge batch, for the columns `observations` has now.
struct MergeSql {
    /// Columns the UPSERT merges that the table has.
    merge_cols: Vec<String>,
    group: String,
    copy: String,
    update: String,
}

/// The merge statements; creates the audit table (and its missing columns)
/// first, so that it can take any row verbatim.
fn merge_sql(tx: &Transaction<'_>) -> anyhow::Result<MergeSql> {
    let q = |c: &String| catalog::quote_ident(c);
    let obs_cols = store::columns(tx, "observations")?;
    let merge_cols: Vec<String> = catalog::UPSERT_MERGED_COLUMNS
        .iter()
        .filter(|c| obs_cols.iter().any(|x| x == *c))
        .map(|c| (*c).to_string())
        .collect();
    let audit = catalog::MERGED_OBSERVATIONS;
    tx.execute_batch(&catalog::merged_observations_sql())?;
    let audit_cols = store::columns(tx, audit)?;
    for c in &obs_cols {
        if !audit_cols.iter().any(|x| x.eq_ignore_ascii_case(c)) {
            tx.execute_batch(&format!("ALTER TABLE {audit} ADD COLUMN {}", q(c)))?;
        }
    }
    let col_list = obs_cols.iter().map(q).collect::<Vec<_>>().join(", ");
    let sel_cols: String = merge_cols.iter().map(|c| format!(", {}", q(c))).collect();
    let set_list = merge_cols
        .iter()
        .enumerate()
        .map(|(j, c)| format!("{} = ?{}", q(c), j + 2))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(MergeSql {
        group: format!(
            "SELECT id{sel_cols} FROM observations
              WHERE transmission_id = ?1 AND observer_idx = ?2 AND COALESCE(path_json, '') = ?3
              ORDER BY id"
        ),
        copy: format!(
            "INSERT INTO {audit} (merged_into, merged_at, {col_list})
             SELECT ?1, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), {col_list} FROM observations WHERE id = ?2"
        ),
        update: format!("UPDATE observations SET {set_list} WHERE id = ?1"),
        merge_cols,
    })
}

fn merge_batch(tx: &Transaction<'_>, keepers: &[i64]) -> anyhow::Result<MergeBatch> {
    let sql = merge_sql(tx)?;
    let mut b = MergeBatch::default();
    for &k in keepers {
        merge_group(tx, &sql, k, &mut b)?;
    }
    if let Some(m) = b.min_removed {
        after_merge(tx, m, &mut b)?;
    }
    Ok(b)
}

/// Merge the group of keeper `k` (if it still has later rows).
fn merge_group(
    tx: &Transaction<'_>,
    sql: &MergeSql,
    k: i64,
    b: &mut MergeBatch,
) -> anyhow::Result<()> {
    let key: Option<(Value, Value, Value)> = tx
        .prepare_cached(
            "SELECT transmission_id, observer_idx, COALESCE(path_json, '') FROM observations WHERE id = ?1",
        )?
        .query_row([k], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((t, o, p)) = key else {
        return Ok(()); // merged away by another run meanwhile
    };
    if matches!(t, Value::Null) || matches!(o, Value::Null) {
        return Ok(());
    }
    let n = sql.merge_cols.len();
    let rows: Vec<(i64, Vec<Value>)> = tx
        .prepare_cached(&sql.group)?
        .query_map(params![t, o, p], |r| {
            let id: i64 = r.get(0)?;
            let vals = (0..n)
                .map(|j| r.get::<_, Value>(j + 1))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((id, vals))
        })?
        .collect::<rusqlite::Result<_>>()?;
    b.rows_seen += rows.len();
    let Some(((keep, first), later)) = rows.split_first().map(|(f, l)| (f.clone(), l)) else {
        return Ok(());
    };
    if later.is_empty() {
        return Ok(());
    }
    // The UPSERT: COALESCE(excluded.c, c) for each later row, in id order.
    let mut vals = first.clone();
    for (_, v) in later {
        for (j, x) in v.iter().enumerate() {
            if !matches!(x, Value::Null) {
                vals[j] = x.clone();
            }
        }
    }
    let mut copy_st = tx.prepare_cached(&sql.copy)?;
    let mut del_st = tx.prepare_cached("DELETE FROM observations WHERE id = ?1")?;
    for (id, _) in later {
        copy_st.execute(params![keep, id])?;
        del_st.execute([id])?;
        b.removed += 1;
        b.min_removed = min_of(b.min_removed, Some(*id));
    }
    if vals != first && n > 0 {
        let mut values: Vec<Value> = vec![Value::Integer(keep)];
        values.extend(vals);
        tx.execute(&sql.update, rusqlite::params_from_iter(values))?;
    }
    b.groups += 1;
    Ok(())
}

/// After removing rows down to id `min_removed`: mark the graph for a
/// rebuild when build-edges had counted them, and stop an unfinished rebuild.
fn after_merge(tx: &Transaction<'_>, min_removed: i64, b: &mut MergeBatch) -> anyhow::Result<()> {
    // An unfinished rebuild may hold removed rows in its staging table
    // (or in memory): it loses its ownership, so it stops and the next
    // rebuild starts over from the merged observations.
    let r = rows_rewritten(tx, min_removed, MERGE_REASON, true)?;
    b.marked |= r.marked;
    b.staging_reset |= r.staging_reset;
    Ok(())
}

/// Rebuild `inactive_nodes` with exactly the columns of `nodes`, in nodes'
/// order, in one transaction: columns only `inactive_nodes` has are first
/// added to `nodes` (so no value is lost), then the rows are copied by
/// column name into a new table that replaces the old one, and its indexes
/// are re-created. Returns the rows copied; does nothing when the pair
/// already matches.
pub(super) fn sync_inactive_nodes(e: &mut Engine<'_>) -> anyhow::Result<i64> {
    once(e, |tx| {
        if probe::nodes_drift(tx)?.is_none() {
            return Ok(0);
        }
        let nodes = probe::live_columns(tx, "nodes")?;
        let inactive = probe::live_columns(tx, "inactive_nodes")?;
        for c in &inactive {
            if !nodes.iter().any(|n| n.name.eq_ignore_ascii_case(&c.name)) {
                tx.execute_batch(&catalog::add_to_nodes_sql(c))?;
            }
        }
        let nodes = probe::live_columns(tx, "nodes")?;
        let before: i64 = tx.query_row("SELECT count(*) FROM inactive_nodes", [], |r| r.get(0))?;
        let indexes: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'inactive_nodes' AND sql IS NOT NULL",
            )?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let tmp = "_corescope_inactive_nodes_new";
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {tmp}"))?;
        tx.execute_batch(&probe::node_table_like_nodes_sql(tx, tmp)?)?;
        // (name in the new table, name in the old one) of every column both have.
        let (to, from): (Vec<String>, Vec<String>) = nodes
            .iter()
            .filter_map(|n| {
                inactive
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case(&n.name))
                    .map(|c| (catalog::quote_ident(&n.name), catalog::quote_ident(&c.name)))
            })
            .unzip();
        let (to_list, from_list) = (to.join(", "), from.join(", "));
        let copied = tx.execute(
            &format!("INSERT INTO {tmp} ({to_list}) SELECT {from_list} FROM inactive_nodes"),
            [],
        )? as i64;
        if copied != before {
            anyhow::bail!(
                "rebuilding inactive_nodes copied {copied} of {before} rows; nothing was changed"
            );
        }
        // legacy_alter_table: the RENAME must not re-check views and
        // triggers elsewhere in the schema (an old view naming a column that
        // does not exist yet would fail it).
        tx.pragma_update(None, "legacy_alter_table", true)?;
        let renamed = tx.execute_batch(&format!(
            "DROP TABLE inactive_nodes; ALTER TABLE {tmp} RENAME TO inactive_nodes;"
        ));
        let _ = tx.pragma_update(None, "legacy_alter_table", false);
        renamed?;
        for sql in &indexes {
            tx.execute_batch(sql)?;
        }
        Ok(copied)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_of_two_optional_ids() {
        assert_eq!(min_of(None, None), None);
        assert_eq!(min_of(Some(3), None), Some(3));
        assert_eq!(min_of(None, Some(4)), Some(4));
        assert_eq!(min_of(Some(5), Some(2)), Some(2));
    }
}
