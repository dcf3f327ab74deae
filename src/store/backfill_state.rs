//! What `backfill` keeps in and counts from the database: each row task's
//! candidate selection, its cursor in `_corescope_state`, and the rows still
//! pending (shared by `backfill` and `check`, read-only). Tasks are named as
//! on the command line (`from-pubkey`, `path-json`, `resolved-path`).

use std::collections::BTreeMap;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::probe::{columns, table_exists};
use super::state::state_get;

/// `_corescope_state` key of a task's cursor.
pub fn cursor_key(task: &str) -> String {
    format!("backfill.{task}.cursor")
}

// ---------------------------------------------------------------------------
// Candidate selections. Each takes ?1 = cursor (exclusive) and, for the
// batch/total forms, ?2 = upper id (inclusive).

pub const FROM_PUBKEY_WHERE: &str = "payload_type = 4 AND from_pubkey IS NULL";

pub const PATH_JSON_FROM: &str =
    "observations o LEFT JOIN transmissions t ON t.id = o.transmission_id";
pub const PATH_JSON_WHERE: &str = "(o.path_json IS NULL OR o.path_json = '') \
     AND o.raw_hex IS NOT NULL AND o.raw_hex <> '' \
     AND (t.payload_type IS NULL OR t.payload_type <> 9)";

pub const RESOLVED_FROM: &str = PATH_JSON_FROM;
pub const RESOLVED_WHERE: &str = "(o.resolved_path IS NULL OR o.resolved_path = '') \
     AND o.path_json IS NOT NULL AND o.path_json NOT IN ('', '[]') \
     AND (t.payload_type IS NULL OR t.payload_type <> 9)";

/// A from-pubkey candidate whose `decoded_json.pubKey` is a 64-hex key: the
/// backfill writes that key (lower-cased), which is what build-edges reads
/// from `decoded_json` while `from_pubkey` is NULL, so filling it changes
/// nothing for the graph. Only the others (the key comes from `raw_hex`, or
/// `''`) can change what build-edges counts. `col` is the `decoded_json`
/// column (qualified). The hex test is `unhex()` of the 64 characters
/// `length()` counted (the characters before a NUL, as `GLOB` sees them):
/// the same rows as `NOT GLOB '*[^0-9a-fA-F]*'`, whose per-character
/// backtracking was the largest single cost of a build-edges scan while
/// ADVERTs waited for this backfill (profile: 17 % in `patternCompare`).
pub fn decoded_key_usable(col: &str) -> String {
    format!(
        "(CASE WHEN json_valid({col}) \
     THEN typeof(json_extract({col}, '$.pubKey')) = 'text' \
      AND length(json_extract({col}, '$.pubKey')) = 64 \
      AND unhex(substr(json_extract({col}, '$.pubKey'), 1, 64)) IS NOT NULL \
     ELSE 0 END)"
    )
}

/// [`decoded_key_usable`] of one `decoded_json` value, evaluated by
/// SQLite. A NULL value (not valid JSON) gives false; a NULL result would
/// count as usable, as `NOT NULL` does not make the row wait in
/// [`edges_wait_sql`].
pub fn decoded_key_usable_in_sqlite(
    conn: &Connection,
    decoded_json: ValueRef<'_>,
) -> rusqlite::Result<bool> {
    let mut st = conn.prepare_cached(&format!("SELECT {}", decoded_key_usable("?1")))?;
    Ok(st.query_row([ToSqlOutput::Borrowed(decoded_json)], |r| {
        r.get::<_, Option<bool>>(0)
    })? != Some(false))
}

/// What `build-edges` must not count yet, as one SQL condition over an
/// observation `o` joined to its transmission `t` (the build-edges scan's
/// aliases): 1 when the path-json backfill has still to fill its
/// `path_json` (its own candidate rule, above its cursor ?3), 2 when its
/// transmission is an ADVERT the from-pubkey backfill has still to visit
/// (its own rule, transmission id above its cursor ?4) and will fill from
/// `raw_hex` or with `''` (see [`decoded_key_usable`]), else 0. Rows a
/// backfill has visited are final. Cheap when nothing is pending: the id
/// comparisons come first, and a row with a `path_json` fails at once. The
/// from-pubkey rule reads the joined `t` (the row the backfill would
/// visit; no second lookup of it per observation).
pub fn edges_wait_sql() -> String {
    edges_wait_case(&format!(
        "AND NOT {} THEN {EDGES_WAIT_FROM_PUBKEY}",
        decoded_key_usable("t.decoded_json")
    ))
}

/// A value of [`edges_wait_sql`]: the from-pubkey backfill will still
/// change the row.
pub const EDGES_WAIT_FROM_PUBKEY: i64 = 2;

/// A value of [`edges_wait_sql_deferred`]: an ADVERT the from-pubkey
/// backfill will still visit, which waits unless its `decoded_json` holds a
/// usable key ([`decoded_key_usable`], left to the caller).
pub const EDGES_WAIT_CHECK_KEY: i64 = 3;

/// [`edges_wait_sql`] without its `decoded_json` test: such rows give
/// [`EDGES_WAIT_CHECK_KEY`]. The test depends on the transmission alone,
/// so a scan over many observations of one transmission makes it once per
/// transmission instead of once per row (the build-edges scan).
pub fn edges_wait_sql_deferred() -> String {
    edges_wait_case(&format!("THEN {EDGES_WAIT_CHECK_KEY}"))
}

/// The rule both forms share; `advert` ends the from-pubkey branch.
fn edges_wait_case(advert: &str) -> String {
    format!(
        "CASE WHEN o.id > ?3 AND {PATH_JSON_WHERE} THEN 1 \
              WHEN o.transmission_id > ?4 AND t.payload_type = 4 AND t.from_pubkey IS NULL \
                   {advert} \
              ELSE 0 END"
    )
}

/// The task named by a value of [`edges_wait_sql`].
pub fn edges_wait_task(code: i64) -> Option<&'static str> {
    match code {
        1 => Some("path-json"),
        EDGES_WAIT_FROM_PUBKEY => Some("from-pubkey"),
        _ => None,
    }
}

/// The cursors [`edges_wait_sql`] takes as ?3 and ?4 (path-json on
/// observation ids, from-pubkey on transmission ids).
pub fn edges_wait_cursors(conn: &Connection) -> anyhow::Result<(i64, i64)> {
    Ok((
        read_cursor(conn, "path-json")?,
        read_cursor(conn, "from-pubkey")?,
    ))
}

/// How many observations after the watermark [`edges_waiting`] looks at:
/// counting every waiting row would read the whole rest of the table on
/// each 60 s tick (and in every plain `check`) while a large backfill is
/// pending, so the count covers this window only and says so.
pub const EDGES_WAITING_WINDOW: i64 = 100_000;

/// What build-edges waits with: per backfill task, the waiting observations
/// among the first [`EDGES_WAITING_WINDOW`] after the watermark.
#[derive(Debug, Default)]
pub struct Waiting {
    /// Task name → waiting rows in the window (only tasks with rows waiting).
    pub counts: BTreeMap<String, i64>,
    /// The window was full: more rows may wait beyond it.
    pub capped: bool,
}

/// Observations after `after` (the build-edges watermark) that build-edges
/// waits with, per backfill task. Reads at most [`EDGES_WAITING_WINDOW`]
/// rows after `after` (by rowid); the database must be migrated.
pub fn edges_waiting(conn: &Connection, after: i64) -> anyhow::Result<Waiting> {
    let (pj, fp) = edges_wait_cursors(conn)?;
    // Counted here rather than with GROUP BY over a LIMITed subquery, so the
    // plan stays one rowid-range search of `observations`.
    let mut st = conn.prepare(&format!(
        "SELECT {} AS w FROM {PATH_JSON_FROM} WHERE o.id > ?1 ORDER BY o.id LIMIT ?2",
        edges_wait_sql()
    ))?;
    let mut rows = st.query(rusqlite::params![after, EDGES_WAITING_WINDOW, pj, fp])?;
    let mut out = Waiting::default();
    let mut examined = 0i64;
    while let Some(r) = rows.next()? {
        examined += 1;
        if let Some(task) = edges_wait_task(r.get(0)?) {
            *out.counts.entry(task.to_string()).or_insert(0) += 1;
        }
    }
    out.capped = examined >= EDGES_WAITING_WINDOW;
    Ok(out)
}

/// `_corescope_state` key of the rows a task visited but could not fill,
/// summed over its batches since the last `--reset` (kept in the batch's
/// own transaction, so a killed run counts exactly what it committed; a
/// row visited again after its cursor was lowered counts again).
/// The highest observation id resolved-path may resolve now: the
/// build-edges watermark, because the neighbor graph decides ambiguous hops
/// and an observation resolved before build-edges counted it (and its
/// neighbours) is resolved against a graph that lacks it, then left behind
/// the cursor. `None` when there is no limit: build-edges never ran here but
/// `neighbor_edges` has rows (built by CoreScope itself). `Some(0)` when
/// there is no graph at all.
pub fn resolve_ceiling(conn: &Connection) -> anyhow::Result<Option<i64>> {
    if let Some(w) = super::edge_state::read_watermark(conn, super::edge_state::WATERMARK_KEY)? {
        return Ok(Some(w));
    }
    let has_edges = table_exists(conn, "neighbor_edges")?
        && conn.query_row("SELECT EXISTS (SELECT 1 FROM neighbor_edges)", [], |r| {
            r.get::<_, bool>(0)
        })?;
    Ok((!has_edges).then_some(0))
}

/// State key of a task's count of visited rows given no value.
pub fn skipped_key(task: &str) -> String {
    format!("jobs.backfill.{task}.skipped")
}

/// Rows skipped so far by `task` (0 when never recorded).
pub fn read_skipped(conn: &Connection, task: &str) -> anyhow::Result<i64> {
    Ok(state_get(conn, &skipped_key(task))?
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0))
}

/// Add the rows one batch skipped to the task's total.
pub fn add_skipped(conn: &Connection, task: &str, skipped: u64) -> anyhow::Result<()> {
    let before = read_skipped(conn, task)?;
    let total = before.saturating_add(i64::try_from(skipped).unwrap_or(i64::MAX));
    super::state::state_set(conn, &skipped_key(task), &total.to_string())
}

/// The stored cursor of a task (0 when none or unparsable).
pub fn read_cursor(conn: &Connection, task: &str) -> anyhow::Result<i64> {
    Ok(state_get(conn, &cursor_key(task))?
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0))
}

/// Rows each row task still has to visit (candidates after its cursor), for
/// `check`'s `pending_backfills` and the `remaining` of a run. Keys
/// `from_pubkey`, `path_json`, `resolved_path`. Read-only; tolerates a
/// database that is not migrated (a missing table counts 0; a missing
/// `from_pubkey`/`resolved_path` column counts the rows that will need it; a
/// missing `observations.raw_hex` means nothing for path-json).
pub fn pending_counts(conn: &Connection) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    let tx_ok = table_exists(conn, "transmissions")?;
    let obs_ok = table_exists(conn, "observations")?;
    let tx_cols = if tx_ok {
        columns(conn, "transmissions")?
    } else {
        vec![]
    };
    let obs_cols = if obs_ok {
        columns(conn, "observations")?
    } else {
        vec![]
    };
    let has = |cols: &[String], c: &str| cols.iter().any(|x| x.eq_ignore_ascii_case(c));
    // Per task: (report key, task name, candidates after the cursor ?1 as a
    // FROM ... WHERE clause, or None when the database cannot have any).
    let from_pubkey = if has(&tx_cols, "from_pubkey") {
        FROM_PUBKEY_WHERE
    } else {
        "payload_type = 4"
    };
    let resolved = if has(&obs_cols, "resolved_path") {
        RESOLVED_WHERE.to_string()
    } else {
        RESOLVED_WHERE.replace("(o.resolved_path IS NULL OR o.resolved_path = '') AND ", "")
    };
    let tasks = [
        (
            "from_pubkey",
            "from-pubkey",
            (tx_ok && has(&tx_cols, "payload_type"))
                .then(|| format!("transmissions WHERE id > ?1 AND {from_pubkey}")),
        ),
        (
            "path_json",
            "path-json",
            (tx_ok && obs_ok && has(&obs_cols, "raw_hex") && has(&obs_cols, "path_json"))
                .then(|| format!("{PATH_JSON_FROM} WHERE o.id > ?1 AND {PATH_JSON_WHERE}")),
        ),
        (
            "resolved_path",
            "resolved-path",
            (tx_ok && obs_ok && has(&obs_cols, "path_json"))
                .then(|| format!("{RESOLVED_FROM} WHERE o.id > ?1 AND {resolved}")),
        ),
    ];
    for (key, task, selection) in tasks {
        let n = match selection {
            Some(sel) => conn.query_row(
                &format!("SELECT COUNT(*) FROM {sel}"),
                [read_cursor(conn, task)?],
                |r| r.get(0),
            )?,
            None => 0,
        };
        out.insert(key.to_string(), n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule as it was written before (`NOT GLOB`), for comparison.
    const GLOB_RULE: &str = "(CASE WHEN json_valid(d) \
         THEN typeof(json_extract(d, '$.pubKey')) = 'text' \
          AND length(json_extract(d, '$.pubKey')) = 64 \
          AND json_extract(d, '$.pubKey') NOT GLOB '*[^0-9a-fA-F]*' \
         ELSE 0 END)";

    #[test]
    fn the_unhex_rule_selects_the_same_rows_as_the_glob_rule() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE v(d)").unwrap();
        let hex = "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789";
        assert_eq!(hex.len(), 64);
        let mut docs: Vec<String> = vec![
            format!(r#"{{"pubKey":"{hex}"}}"#),
            format!(r#"{{"pubKey":"{}"}}"#, &hex[..63]),
            format!(r#"{{"pubKey":"{hex}0"}}"#),
            format!(r#"{{"pubKey":"{}g"}}"#, &hex[..63]),
            format!(r#"{{"pubKey":"{}é"}}"#, &hex[..63]),
            format!(r#"{{"pubKey":"{} "}}"#, &hex[..63]),
            format!(r#"{{"pubKey":"{hex}\u0000zz"}}"#),
            format!(r#"{{"pubKey":"{}\u0000"}}"#, &hex[..63]),
            format!(r#"{{"pubKey":"{}\u0000ab"}}"#, &hex[..62]),
            r#"{"pubKey":1}"#.to_string(),
            r#"{"pubKey":null}"#.to_string(),
            r#"{"x":1}"#.to_string(),
            "{broken".to_string(),
            String::new(),
        ];
        docs.push(format!(r#"{{"pubKey":"{}"}}"#, "f".repeat(64)));
        for d in &docs {
            c.execute("INSERT INTO v(d) VALUES (?1)", [d]).unwrap();
        }
        c.execute("INSERT INTO v(d) VALUES (NULL)", []).unwrap();
        let new_rule = decoded_key_usable("d");
        let rows: Vec<(Option<i64>, Option<i64>)> = c
            .prepare(&format!("SELECT {GLOB_RULE}, {new_rule} FROM v"))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows.len(), docs.len() + 1);
        for (i, (old, new)) in rows.iter().enumerate() {
            assert_eq!(old, new, "row {i}: {:?}", docs.get(i));
        }
        // Both kinds of answer occur.
        assert!(rows.iter().any(|r| r.0 == Some(1)));
        assert!(rows.iter().any(|r| r.0 == Some(0)));
    }
}
