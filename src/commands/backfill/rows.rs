//! The candidate rows of the row tasks: reading a batch, deriving each
//! row's value with CoreScope's rules, and writing it without clobbering.

use rusqlite::{params, Connection};

use crate::cli::BackfillTask;
use crate::derive::{self, Derived};
use crate::edges::PrefixIndex;
use crate::resolve::{self, Adjacency};
use crate::store::backfill_state::{
    FROM_PUBKEY_WHERE, PATH_JSON_FROM, PATH_JSON_WHERE, RESOLVED_FROM, RESOLVED_WHERE,
};
use crate::store::table_exists;
use crate::store::values::{text_lossy, whole_int};

impl Row {
    /// from-pubkey: the value comes from `decoded_json.pubKey` (what
    /// build-edges reads when `from_pubkey` is NULL), not from `raw_hex`.
    pub(super) fn key_was_decoded(&self) -> bool {
        self.a
            .as_deref()
            .and_then(crate::keys::normalize_key)
            .is_some()
    }
}

/// One candidate row: its id and the columns the task derives from.
pub(super) struct Row {
    pub id: i64,
    /// from-pubkey: decoded pubKey; path-json: observation raw_hex;
    /// resolved-path: path_json.
    pub a: Option<String>,
    /// from-pubkey: raw_hex (only when the decoded key is not usable);
    /// resolved-path: from_pubkey.
    b: Option<String>,
    /// resolved-path: decoded pubKey (from_pubkey NULL).
    c: Option<String>,
    /// resolved-path: transmissions.raw_hex (from_pubkey NULL or no type).
    d: Option<String>,
    /// effective payload type column.
    ptype: Option<i64>,
}

/// 64 hex characters as a GLOB pattern (decoded keys usable without raw_hex).
fn hex64_glob() -> String {
    "[0-9a-fA-F]".repeat(64)
}

pub(super) fn fetch(
    conn: &Connection,
    task: BackfillTask,
    after: i64,
    upto: i64,
    limit: usize,
) -> anyhow::Result<Vec<Row>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match task {
        BackfillTask::FromPubkey => {
            let sql = format!(
                "SELECT id, pk, CASE WHEN typeof(pk) = 'text' AND length(pk) = 64 AND pk GLOB ?4 \
                 THEN NULL ELSE raw_hex END \
                 FROM (SELECT id, raw_hex, CASE WHEN json_valid(decoded_json) \
                       THEN json_extract(decoded_json, '$.pubKey') END AS pk \
                       FROM transmissions WHERE id > ?1 AND id <= ?2 AND {FROM_PUBKEY_WHERE} \
                       ORDER BY id LIMIT ?3)"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let it = st.query_map(params![after, upto, limit, hex64_glob()], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    a: text_lossy(r, 1)?,
                    b: text_lossy(r, 2)?,
                    c: None,
                    d: None,
                    ptype: Some(4),
                })
            })?;
            it.collect::<Result<Vec<_>, _>>()?
        }
        BackfillTask::PathJson => {
            let sql = format!(
                "SELECT o.id, o.raw_hex, t.payload_type FROM {PATH_JSON_FROM} \
                 WHERE o.id > ?1 AND o.id <= ?2 AND {PATH_JSON_WHERE} ORDER BY o.id LIMIT ?3"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let it = st.query_map(params![after, upto, limit], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    a: text_lossy(r, 1)?,
                    b: None,
                    c: None,
                    d: None,
                    ptype: whole_int(r, 2)?,
                })
            })?;
            it.collect::<Result<Vec<_>, _>>()?
        }
        BackfillTask::ResolvedPath => {
            let sql = format!(
                "SELECT o.id, o.path_json, t.payload_type, t.from_pubkey, \
                 CASE WHEN t.from_pubkey IS NULL AND (t.payload_type = 4 OR t.payload_type IS NULL) \
                      AND json_valid(t.decoded_json) THEN json_extract(t.decoded_json, '$.pubKey') END, \
                 CASE WHEN t.from_pubkey IS NULL AND (t.payload_type = 4 OR t.payload_type IS NULL) \
                      OR t.payload_type IS NULL THEN t.raw_hex END \
                 FROM {RESOLVED_FROM} WHERE o.id > ?1 AND o.id <= ?2 AND {RESOLVED_WHERE} \
                 ORDER BY o.id LIMIT ?3"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let it = st.query_map(params![after, upto, limit], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    a: text_lossy(r, 1)?,
                    ptype: whole_int(r, 2)?,
                    b: text_lossy(r, 3)?,
                    c: text_lossy(r, 4)?,
                    d: text_lossy(r, 5)?,
                })
            })?;
            it.collect::<Result<Vec<_>, _>>()?
        }
        BackfillTask::ObserverBlacklist => Vec::new(),
    };
    Ok(rows)
}

/// Snapshots the resolved-path task resolves against.
pub(super) struct ResolveCtx {
    idx: PrefixIndex,
    adj: Adjacency,
}

pub(super) fn load_resolve_ctx(conn: &Connection) -> anyhow::Result<ResolveCtx> {
    let mut st = conn.prepare("SELECT public_key FROM nodes WHERE public_key IS NOT NULL")?;
    let keys = st
        .query_map([], |r| text_lossy(r, 0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten();
    let idx = PrefixIndex::new(keys);
    let adj = if table_exists(conn, "neighbor_edges")? {
        let mut st = conn.prepare("SELECT node_a, node_b FROM neighbor_edges")?;
        let pairs = st
            .query_map([], |r| Ok((text_lossy(r, 0)?, text_lossy(r, 1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        resolve::adjacency_from_edges(
            pairs
                .into_iter()
                .map(|(a, b)| (a.unwrap_or_default(), b.unwrap_or_default())),
        )
    } else {
        Adjacency::new()
    };
    log::info!(
        "resolved-path: {} node keys, {} nodes with neighbor edges",
        idx.len(),
        adj.len()
    );
    Ok(ResolveCtx { idx, adj })
}

pub(super) fn derive_row(task: BackfillTask, row: &Row, rctx: Option<&ResolveCtx>) -> Derived {
    match task {
        BackfillTask::FromPubkey => derive::from_pubkey(row.a.as_deref(), row.b.as_deref()),
        BackfillTask::PathJson => match row.a.as_deref() {
            Some(h) => derive::path_json(h),
            None => Derived::Sentinel(derive::PATH_JSON_SENTINEL),
        },
        BackfillTask::ResolvedPath => {
            let Some(rc) = rctx else {
                return Derived::Leave;
            };
            let inp = derive::ResolveInput {
                payload_type: derive::payload_type(row.ptype, row.d.as_deref()),
                from_pubkey: row.b.as_deref(),
                decoded_pubkey: row.c.as_deref(),
                tx_raw_hex: row.d.as_deref(),
                path_json: row.a.as_deref().unwrap_or(""),
            };
            derive::resolved_path(&inp, &rc.adj, &rc.idx)
        }
        BackfillTask::ObserverBlacklist => Derived::Leave,
    }
}

/// Writes one value; returns whether the row changed. Every statement
/// re-checks the candidate condition (never clobber).
pub(super) fn write_row(
    tx: &Connection,
    task: BackfillTask,
    row: &Row,
    value: &str,
) -> anyhow::Result<bool> {
    let n = match task {
        BackfillTask::FromPubkey => tx
            .prepare_cached(
                "UPDATE transmissions SET from_pubkey = ?1 WHERE id = ?2 AND from_pubkey IS NULL",
            )?
            .execute(params![value, row.id])?,
        BackfillTask::PathJson => tx
            .prepare_cached(
                "UPDATE OR IGNORE observations SET path_json = ?1 \
                 WHERE id = ?2 AND (path_json IS NULL OR path_json = '')",
            )?
            .execute(params![value, row.id])?,
        BackfillTask::ResolvedPath => tx
            .prepare_cached(
                "UPDATE observations SET resolved_path = ?1 WHERE id = ?2 \
                 AND (resolved_path IS NULL OR resolved_path = '') AND path_json = ?3",
            )?
            .execute(params![value, row.id, row.a])?,
        BackfillTask::ObserverBlacklist => 0,
    };
    Ok(n > 0)
}
