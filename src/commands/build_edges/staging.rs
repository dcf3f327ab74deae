//! The staging table of `--rebuild` and the tables a swap leaves: who owns
//! it, creating or resuming it, setting it aside, swapping it in, and
//! dropping old tables in short batches.

use rusqlite::Transaction;
use serde::Serialize;

use super::EDGES_TABLE;
use crate::error::Failure;
use crate::store::edge_state::{
    interrupted_rebuild, old_tables, read_watermark, rebuild_reasons, NEEDS_REBUILD_KEY,
    OLD_TABLE_PREFIX, OWNER_KEY, REBUILD_KEY, STAGING_TABLE, WATERMARK_KEY,
};
use crate::store::engine::Engine;
use crate::store::{self};

/// One transaction through the engine that is no batch of rows (it does
/// not size the next batch).
pub fn once<T>(
    engine: &mut Engine<'_>,
    f: impl FnOnce(&Transaction<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    engine.batch(|tx| Ok((f(tx)?, 0)))
}

/// `CREATE TABLE` of the staging table: the catalog's `neighbor_edges`
/// under the staging name (the swap renames it to `neighbor_edges`).
pub fn staging_ddl() -> anyhow::Result<String> {
    let t = crate::catalog::table(EDGES_TABLE)
        .ok_or_else(|| anyhow::anyhow!("internal error: the catalog has no {EDGES_TABLE}"))?;
    let sql = crate::catalog::create_table_sql(t, crate::catalog::Target::Latest);
    Ok(sql.replacen(
        &format!("CREATE TABLE IF NOT EXISTS {EDGES_TABLE} "),
        &format!("CREATE TABLE {STAGING_TABLE} "),
        1,
    ))
}

/// Fails with exit 75 unless this run (`token`) still owns the staging table.
pub fn check_owner(tx: &Transaction<'_>, token: &str) -> anyhow::Result<()> {
    if store::state_get(tx, OWNER_KEY)?.as_deref() != Some(token)
        || !store::table_exists(tx, STAGING_TABLE)?
    {
        return Err(Failure::Busy(
            "another `build-edges --rebuild` took over the staging table; this run stops (nothing half-done)".into(),
        )
        .into());
    }
    Ok(())
}

/// Takes ownership of the staging table: resumes a consistent one, else
/// creates it empty. Returns the id the staging pass resumes after, and
/// whether it was a resume.
pub fn prepare_staging(engine: &mut Engine<'_>, token: &str) -> anyhow::Result<(i64, bool)> {
    once(engine, |tx| {
        let left = interrupted_rebuild(tx)?;
        store::state_set(tx, OWNER_KEY, token)?;
        if let Some(w) = left.as_ref().and_then(|l| l.resumable_after) {
            return Ok((w, true));
        }
        if left.is_some() {
            // Not consistent: set aside (a cheap rename) and emptied in short
            // batches with the old tables, never one long DROP under the lock.
            retire_staging(tx, token)?;
        }
        tx.execute_batch(&staging_ddl()?)?;
        store::state_set(tx, REBUILD_KEY, "0")?;
        Ok((0, false))
    })
}

/// `token` as a table-name suffix.
fn name_suffix(token: &str) -> String {
    token
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Renames tables with `sql` under `legacy_alter_table`: a rename must not
/// rewrite or re-check views and triggers that mention the table (one broken
/// view would make it fail).
fn rename(tx: &Transaction<'_>, sql: &str) -> anyhow::Result<()> {
    tx.pragma_update(None, "legacy_alter_table", true)?;
    let r = tx.execute_batch(sql);
    let _ = tx.pragma_update(None, "legacy_alter_table", false);
    Ok(r?)
}

/// Renames the staging table of an interrupted rebuild to an old table
/// ([`drop_old_tables`] empties and drops it) and forgets its state.
fn retire_staging(tx: &Transaction<'_>, token: &str) -> anyhow::Result<()> {
    rename(
        tx,
        &format!(
            "ALTER TABLE {STAGING_TABLE} RENAME TO {OLD_TABLE_PREFIX}staging_{}",
            name_suffix(token)
        ),
    )?;
    store::state_delete(tx, REBUILD_KEY)?;
    Ok(())
}

/// The staging table a stopped rebuild left, as an incremental run found it.
#[derive(Debug, Serialize)]
pub struct LeftStaging {
    pub staging_rows: i64,
    pub resumable_after_id: Option<i64>,
    /// `kept` (consistent: `--rebuild` resumes it) or `dropped`.
    pub action: &'static str,
}

/// An incremental run that finds the staging table of a stopped rebuild:
/// a consistent one is kept for `--rebuild` to resume (it may stand for a
/// long scan) and reported; one that is not consistent is set aside to be
/// dropped. Returns the report entry.
pub fn handle_leftover_staging(
    engine: &mut Engine<'_>,
    token: &str,
) -> anyhow::Result<Option<LeftStaging>> {
    let Some(left) = interrupted_rebuild(engine.conn())? else {
        return Ok(None);
    };
    if let Some(w) = left.resumable_after {
        return Ok(Some(LeftStaging {
            staging_rows: left.staging_rows,
            resumable_after_id: Some(w),
            action: "kept",
        }));
    }
    let retired = once(engine, |tx| {
        // Re-check under the lock: a rebuild may have taken it over meanwhile.
        match interrupted_rebuild(tx)? {
            Some(l) if l.resumable_after.is_none() => {
                retire_staging(tx, token)?;
                store::state_delete(tx, OWNER_KEY)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    })?;
    Ok(retired.then_some(LeftStaging {
        staging_rows: left.staging_rows,
        resumable_after_id: None,
        action: "dropped",
    }))
}

/// Swaps the staging table in; sets the watermark to the staging watermark.
/// The old table is renamed (cheap), not dropped, inside the transaction.
/// The stale marker is cleared only when it still holds the reasons `stale`
/// the run started with: one added meanwhile (a rewrite this rebuild may
/// have read before) makes the next run rebuild again.
pub fn swap_in(engine: &mut Engine<'_>, token: &str, stale: &[String]) -> anyhow::Result<i64> {
    let old: String = format!("{OLD_TABLE_PREFIX}{}", name_suffix(token));
    once(engine, |tx| {
        check_owner(tx, token)?;
        let Some(w) = read_watermark(tx, REBUILD_KEY)? else {
            return Err(Failure::Fatal(
                "internal error: staging table is not consistent at swap time".into(),
            )
            .into());
        };
        rename(
            tx,
            &format!(
                "ALTER TABLE {EDGES_TABLE} RENAME TO {old};
                 ALTER TABLE {STAGING_TABLE} RENAME TO {EDGES_TABLE};"
            ),
        )?;
        store::state_set(tx, WATERMARK_KEY, &w.to_string())?;
        store::state_delete(tx, REBUILD_KEY)?;
        store::state_delete(tx, OWNER_KEY)?;
        if rebuild_reasons(tx)? == stale {
            store::state_delete(tx, NEEDS_REBUILD_KEY)?;
        }
        Ok(w)
    })
}

/// Empties and drops the old tables left by swaps, in transactions sized to
/// a quarter of the lock budget (bulk work: margin over throughput). Stops
/// at the deadline (after at least one batch); a later run continues.
/// Returns the rows deleted.
pub fn drop_old_tables(engine: &mut Engine<'_>, max_lock_ms: u64) -> anyhow::Result<u64> {
    let names = old_tables(engine.conn())?;
    engine.restart_batching((max_lock_ms / 2).max(1));
    let mut deleted = 0u64;
    for name in names {
        loop {
            let n = engine.batch_size();
            let gone = engine.batch(|tx| {
                if !store::table_exists(tx, &name)? {
                    return Ok((0, 0));
                }
                let gone = tx.execute(
                    &format!("DELETE FROM \"{name}\" WHERE rowid IN (SELECT rowid FROM \"{name}\" ORDER BY rowid LIMIT ?1)"),
                    [n as i64],
                )?;
                if gone == 0 {
                    tx.execute_batch(&format!("DROP TABLE IF EXISTS \"{name}\""))?;
                }
                Ok((gone, gone))
            })?;
            deleted += gone as u64;
            if gone == 0 {
                break;
            }
            if engine.expired() {
                return Ok(deleted);
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_table_is_the_catalogs_neighbor_edges() {
        assert_eq!(
            staging_ddl().unwrap(),
            "CREATE TABLE _corescope_edges_rebuild (\n  node_a TEXT NOT NULL,\n  node_b TEXT NOT NULL,\n  count INTEGER DEFAULT 1,\n  last_seen TEXT,\n  PRIMARY KEY (node_a, node_b)\n)"
        );
    }

    #[test]
    fn table_name_suffixes_are_plain() {
        assert_eq!(name_suffix("123-00ab"), "123_00ab");
    }
}
