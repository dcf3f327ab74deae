//! The data steps of named migrations: what each would touch (dry run) and
//! running it in batches on the engine. Every batch re-checks its condition,
//! so a data step interrupted at any point is finished by the next run.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use crate::catalog::DataOp;
use crate::store::engine::Engine;
use crate::store::probe;
use crate::store::walk::{execute_each, update_keyed, Walk};
use crate::store::{self};

use super::repairs::observer_idx_rowid;

pub(super) fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The rows a walk changed. Migrations run without a deadline, so a walk
/// always completes; one that did not must not be recorded as done.
pub(super) fn complete(w: Walk) -> anyhow::Result<i64> {
    if !w.complete {
        anyhow::bail!("internal error: a migration data step stopped before its end");
    }
    Ok(w.changed)
}

/// Guarded JSON extraction (json_extract raises an error on malformed JSON).
fn jx(col: &str, path: &str) -> String {
    format!("(CASE WHEN json_valid({col}) THEN json_extract({col}, '{path}') END)")
}

fn has_column(conn: &Connection, table: &str, col: &str) -> anyhow::Result<bool> {
    Ok(store::columns(conn, table)?.iter().any(|c| c == col))
}

/// The ADVERT originator key expression (from_pubkey, else decoded_json.pubKey).
fn advert_key_expr(conn: &Connection) -> anyhow::Result<String> {
    let pk = jx("decoded_json", "$.pubKey");
    Ok(if has_column(conn, "transmissions", "from_pubkey")? {
        format!("lower(COALESCE(NULLIF(from_pubkey, ''), {pk}))")
    } else {
        format!("lower({pk})")
    })
}

pub(super) fn advert_counts(
    conn: &Connection,
    id_cond: &str,
    id: i64,
) -> anyhow::Result<HashMap<String, i64>> {
    let key = advert_key_expr(conn)?;
    let sql = format!(
        "SELECT k, count(*) FROM (SELECT {key} AS k FROM transmissions WHERE payload_type = 4 AND id {id_cond} ?1) WHERE k IS NOT NULL AND k != '' GROUP BY k"
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut map = HashMap::new();
    for r in rows {
        let (k, n) = r?;
        map.insert(k, n);
    }
    Ok(map)
}

/// Rows a data step would touch (dry-run and plan display).
pub(super) fn count_data(conn: &Connection, op: DataOp) -> anyhow::Result<Option<i64>> {
    let q = |sql: &str| -> anyhow::Result<Option<i64>> {
        Ok(Some(conn.query_row(sql, [], |r| r.get::<_, i64>(0))?))
    };
    let tables: &[&str] = match op {
        DataOp::None => return Ok(None),
        DataOp::ObserverIdxRowid | DataOp::LastPacketAtBackfill => &["observers", "observations"],
        DataOp::AdvertCount => &["nodes", "transmissions"],
        DataOp::NoiseFloorReal => &["observers"],
        DataOp::ChannelHashBackfill | DataOp::ChannelHashCasing => &["transmissions"],
        DataOp::CleanupLegacyNullHashTs | DataOp::TxLastSeenBackfill => {
            &["transmissions", "observations"]
        }
    };
    for t in tables {
        if !store::table_exists(conn, t)? {
            return Ok(Some(0)); // created empty by this migration
        }
    }
    match op {
        DataOp::None => Ok(None),
        DataOp::ObserverIdxRowid => Ok(Some(probe::text_observer_idx(conn)?.1)),
        DataOp::AdvertCount => {
            let counts = advert_counts(conn, ">", i64::MIN)?;
            let mut st = conn.prepare("SELECT lower(public_key), CASE WHEN typeof(advert_count) = 'integer' THEN advert_count END FROM nodes")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?)))?;
            let mut n = 0;
            for r in rows {
                let (k, c) = r?;
                let want = k.and_then(|k| counts.get(&k).copied()).unwrap_or(0);
                if c != Some(want) {
                    n += 1;
                }
            }
            Ok(Some(n))
        }
        DataOp::NoiseFloorReal => q("SELECT count(*) FROM observers WHERE typeof(noise_floor) = 'integer'"),
        DataOp::ChannelHashBackfill => {
            let null_cond = if has_column(conn, "transmissions", "channel_hash")? { "AND channel_hash IS NULL" } else { "" };
            q(&format!(
                "SELECT count(*) FROM transmissions WHERE payload_type = 5 {null_cond} AND {} IN ('CHAN', 'GRP_TXT')",
                jx("decoded_json", "$.type")
            ))
        }
        DataOp::LastPacketAtBackfill => {
            let null_cond = if has_column(conn, "observers", "last_packet_at")? { "AND last_packet_at IS NULL" } else { "" };
            q(&format!(
                "SELECT count(*) FROM observers WHERE last_seen IS NOT NULL {null_cond}
                 AND (rowid IN (SELECT observer_idx FROM observations WHERE typeof(observer_idx) = 'integer')
                      OR lower(id) IN (SELECT lower(observer_idx) FROM observations WHERE observer_idx >= '' AND typeof(observer_idx) = 'text'))"
            ))
        }
        DataOp::CleanupLegacyNullHashTs => q(
            "SELECT (SELECT count(*) FROM transmissions WHERE hash = '' OR first_seen = '')
                  + (SELECT count(*) FROM observations WHERE transmission_id IN (SELECT id FROM transmissions WHERE hash = '' OR first_seen = ''))",
        ),
        DataOp::ChannelHashCasing => {
            if has_column(conn, "transmissions", "channel_hash")? {
                q("SELECT count(*) FROM transmissions WHERE channel_hash = 'public' AND payload_type = 5")
            } else {
                Ok(Some(0))
            }
        }
        DataOp::TxLastSeenBackfill => {
            // Candidates (last_seen still 0); counting exact matches would
            // need a correlated scan per row before the indexes exist.
            if has_column(conn, "transmissions", "last_seen")? {
                q("SELECT count(*) FROM transmissions WHERE last_seen = 0")
            } else {
                q("SELECT count(*) FROM transmissions")
            }
        }
    }
}

pub(super) fn run_data(e: &mut Engine<'_>, op: DataOp) -> anyhow::Result<i64> {
    match op {
        DataOp::None => Ok(0),
        DataOp::ObserverIdxRowid => observer_idx_rowid(e),
        DataOp::AdvertCount => advert_count(e),
        DataOp::NoiseFloorReal => complete(e.walk_rowid_ranges(
            "observers",
            "UPDATE observers SET noise_floor = CAST(noise_floor AS REAL) WHERE rowid >= ?1 AND rowid < ?2 AND typeof(noise_floor) = 'integer'",
        )?),
        DataOp::ChannelHashBackfill => {
            let ty = jx("decoded_json", "$.type");
            let sql = format!(
                "UPDATE transmissions SET channel_hash = CASE {ty} WHEN 'CHAN' THEN {ch} WHEN 'GRP_TXT' THEN 'enc_' || {hx} END
                 WHERE rowid >= ?1 AND rowid < ?2 AND payload_type = 5 AND channel_hash IS NULL
                   AND (CASE {ty} WHEN 'CHAN' THEN {ch} WHEN 'GRP_TXT' THEN 'enc_' || {hx} END) IS NOT NULL",
                ch = jx("decoded_json", "$.channel"),
                hx = jx("decoded_json", "$.channelHashHex"),
            );
            complete(e.walk_rowid_ranges("transmissions", &sql)?)
        }
        DataOp::LastPacketAtBackfill => last_packet_at(e),
        DataOp::CleanupLegacyNullHashTs => cleanup_legacy(e),
        DataOp::ChannelHashCasing => complete(e.walk_until_short(|tx, n| {
            let changed = tx.execute(
                "UPDATE transmissions SET channel_hash = 'Public' WHERE rowid IN
                   (SELECT rowid FROM transmissions WHERE payload_type = 5 AND channel_hash = 'public' LIMIT ?1)",
                [to_i64(n)],
            )?;
            Ok((changed, to_i64(changed)))
        })?),
        DataOp::TxLastSeenBackfill => complete(e.walk_rowid_ranges(
            "transmissions",
            "UPDATE transmissions SET last_seen = (SELECT MAX(timestamp) FROM observations WHERE transmission_id = transmissions.id)
             WHERE rowid >= ?1 AND rowid < ?2 AND last_seen = 0
               AND COALESCE((SELECT MAX(timestamp) FROM observations WHERE transmission_id = transmissions.id), 0) != 0",
        )?),
    }
}

/// A node's lower-case key and its integer advert_count (if any).
type NodeCount = (Option<String>, Option<i64>);

/// advert_count_unique_v1 done right: counts from `from_pubkey`, falling back
/// to `decoded_json.pubKey` where from_pubkey is not filled yet, so counts are
/// never zeroed by an unfilled column. Counts of
/// ADVERTs up to a snapshot id are read outside the write lock; each batch
/// adds the ADVERTs inserted since, inside its transaction, so the result is
/// exact even while the ingestor inserts.
fn advert_count(e: &mut Engine<'_>) -> anyhow::Result<i64> {
    let snap: i64 =
        e.conn()
            .query_row("SELECT COALESCE(max(id), 0) FROM transmissions", [], |r| {
                r.get(0)
            })?;
    let base = advert_counts(e.conn(), "<=", snap)?;
    let walk = e.walk_cursor(i64::MIN, |tx, cursor, n| {
        let newer = advert_counts(tx, ">", snap)?;
        let mut sel = tx.prepare(
                "SELECT rowid, lower(public_key), CASE WHEN typeof(advert_count) = 'integer' THEN advert_count END
                 FROM nodes WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )?;
        let rows: Vec<(i64, NodeCount)> = sel
            .query_map(params![cursor, to_i64(n)], |r| {
                Ok((r.get(0)?, (r.get(1)?, r.get(2)?)))
            })?
            .collect::<rusqlite::Result<_>>()?;
        update_keyed(
            tx,
            "UPDATE nodes SET advert_count = ?1 WHERE rowid = ?2",
            &rows,
            |(key, current)| {
                let want = key.as_ref().map_or(0, |k| {
                    base.get(k).copied().unwrap_or(0) + newer.get(k).copied().unwrap_or(0)
                });
                (*current != Some(want)).then_some(want)
            },
        )
    })?;
    complete(walk)
}

/// CoreScope's rule: last_packet_at = last_seen for observers with observations.
/// The set of observers with observations is read outside the write lock.
fn last_packet_at(e: &mut Engine<'_>) -> anyhow::Result<i64> {
    let ids: Vec<i64> = {
        let mut st = e.conn().prepare(
            "SELECT DISTINCT observer_idx FROM observations WHERE typeof(observer_idx) = 'integer'",
        )?;
        let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let (changed, all) = e.walk_keys(&ids, |tx, chunk| {
        let sql = "UPDATE observers SET last_packet_at = last_seen WHERE rowid = ?1 AND last_packet_at IS NULL AND last_seen IS NOT NULL";
        Ok((execute_each(tx, sql, chunk)?, chunk.len()))
    })?;
    complete(Walk {
        changed: changed.iter().sum(),
        complete: all,
    })
}

/// cleanup_legacy_null_hash_ts: observations of transmissions with an
/// empty hash or first_seen, then those transmissions, batch by batch.
fn cleanup_legacy(e: &mut Engine<'_>) -> anyhow::Result<i64> {
    complete(e.walk_until_short(|tx, n| {
        let mut sel =
            tx.prepare("SELECT id FROM transmissions WHERE hash = '' OR first_seen = '' LIMIT ?1")?;
        let ids: Vec<i64> = sel
            .query_map([to_i64(n)], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let observations = execute_each(
            tx,
            "DELETE FROM observations WHERE transmission_id = ?1",
            &ids,
        )?;
        let transmissions = execute_each(tx, "DELETE FROM transmissions WHERE id = ?1", &ids)?;
        Ok((ids.len(), observations + transmissions))
    })?)
}
