//! Walking one selection (a table and its time column) in batches on the
//! engine, and acting on the rows that are due.
//!
//! - When the time column leads a BINARY index, rows are walked in index
//!   order over the text range `col < U`, U = the cutoff's date + 2 days.
//!   Every value that could be older than the cutoff lies there, except
//!   values that do not start with a valid `YYYY-MM-DD` date (a 9-digit
//!   epoch as text, garbage); those are found above U by an index skip-scan
//!   that jumps over whole canonical date blocks (one probe per calendar
//!   day). Without such an index the table is walked in rowid order.
//! - Every batch is one engine transaction that reads its rows and acts on
//!   them (so a value changed by the ingestor in between is never acted on
//!   stale). On a dry run the same rows are read and counted.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use crate::retention::{canonical_date_prefix, classify, prefix_successor, window_bound, Class};
use crate::store::engine::Engine;
use crate::store::state_set;

/// Set in the transaction that inactivates the first observer; cleared when
/// the metrics of every inactive observer are deleted (so an interrupted run
/// finishes that step next time, as one clean run would).
pub const OBSERVER_METRICS_PENDING: &str = "prune.observer_metrics_pending";

/// Most rows read into memory for one batch (bounds memory and the read
/// part of a transaction; the batch size itself adapts below this).
const MAX_FETCH: usize = 20_000;

/// What happens to one due row.
#[derive(Debug, Clone)]
pub enum Action {
    /// Delete the transmission and all its observations.
    Packet,
    /// `INSERT OR REPLACE INTO inactive_nodes (cols) SELECT cols FROM nodes`, then delete.
    MoveNode { cols: String },
    /// `inactive = 1` (never deleted: observations reference observers.rowid).
    InactivateObserver,
    /// Plain delete by rowid.
    Delete,
}

/// One selection with its cutoff and what to do with due rows.
pub struct Job {
    pub table: &'static str,
    pub column: &'static str,
    /// Extra SQL condition (`" AND ..."`) on the table's own columns.
    pub filter: String,
    pub action: Action,
    pub cutoff: i64,
    /// Stop acting inside a batch once it held the lock this long.
    pub budget: Duration,
}

/// What a walk saw and did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub examined: u64,
    pub deleted: u64,
    /// Observations deleted with their transmissions.
    pub secondary: u64,
    pub nulls: u64,
    pub unparseable: u64,
    /// Rowids of observers a dry run would inactivate.
    pub due_rowids: Vec<i64>,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.examined += o.examined;
        self.deleted += o.deleted;
        self.secondary += o.secondary;
        self.nulls += o.nulls;
        self.unparseable += o.unparseable;
        self.due_rowids.extend_from_slice(&o.due_rowids);
    }
}

/// An SQL identifier in double quotes (the catalog's one rule).
pub use crate::catalog::quote_ident as quote;

/// Walk one selection and act on the due rows. Returns false when stopped
/// by the deadline.
pub fn process(eng: &mut Engine, job: &Job, st: &mut Stats) -> anyhow::Result<bool> {
    let indexed = leading_index(eng.conn(), job.table, job.column)?;
    match (indexed, window_bound(job.cutoff)) {
        (true, Some(u)) => process_indexed(eng, job, st, &u),
        _ => process_scan(eng, job, st),
    }
}

fn apply(
    conn: &Connection,
    job: &Job,
    rowid: i64,
    dry: bool,
    st: &mut Stats,
) -> anyhow::Result<()> {
    match &job.action {
        Action::Packet => {
            let sql = if dry {
                "SELECT count(*) FROM observations WHERE transmission_id = ?1"
            } else {
                "DELETE FROM observations WHERE transmission_id = ?1"
            };
            let n: i64 = if dry {
                conn.prepare_cached(sql)?.query_row([rowid], |r| r.get(0))?
            } else {
                i64::try_from(conn.prepare_cached(sql)?.execute([rowid])?)?
            };
            st.secondary += u64::try_from(n)?;
            if !dry {
                conn.prepare_cached("DELETE FROM transmissions WHERE rowid = ?1")?
                    .execute([rowid])?;
            }
        }
        Action::MoveNode { cols } => {
            if !dry {
                conn.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO inactive_nodes ({cols}) SELECT {cols} FROM nodes WHERE rowid = ?1"
                ))?
                .execute([rowid])?;
                conn.prepare_cached("DELETE FROM nodes WHERE rowid = ?1")?
                    .execute([rowid])?;
            }
        }
        Action::InactivateObserver => {
            if dry {
                st.due_rowids.push(rowid);
            } else {
                let n = conn
                    .prepare_cached("UPDATE observers SET inactive = 1 WHERE rowid = ?1")?
                    .execute([rowid])?;
                if n > 0 {
                    state_set(conn, OBSERVER_METRICS_PENDING, "1")?;
                }
            }
        }
        Action::Delete => {
            if !dry {
                // `table` is one of ours, never user input.
                conn.prepare_cached(&format!(
                    "DELETE FROM {} WHERE rowid = ?1",
                    quote(job.table)
                ))?
                .execute([rowid])?;
            }
        }
    }
    st.deleted += 1;
    Ok(())
}

/// Handle one examined row: classify, act when due.
fn examine(
    conn: &Connection,
    job: &Job,
    rowid: i64,
    v: &Value,
    dry: bool,
    st: &mut Stats,
) -> anyhow::Result<()> {
    st.examined += 1;
    match classify(v, job.cutoff) {
        Class::Null => st.nulls += 1,
        Class::Unparseable => st.unparseable += 1,
        Class::Keep => {}
        Class::Due => apply(conn, job, rowid, dry, st)?,
    }
    Ok(())
}

/// Reads the next rows (rowid, stored time) of a batch, at most `limit`.
type Fetch<'a> = dyn Fn(&Connection, usize) -> anyhow::Result<Vec<(i64, Value)>> + 'a;

/// True when `column` is the first key column of a non-partial index with
/// BINARY collation on `table`.
fn leading_index(conn: &Connection, table: &str, column: &str) -> anyhow::Result<bool> {
    let mut st =
        conn.prepare("SELECT il.name FROM pragma_index_list(?1) il WHERE il.partial = 0")?;
    let names: Vec<String> = st
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    for name in names {
        let first: Option<(Option<String>, Option<String>)> = conn
            .query_row(
                "SELECT name, coll FROM pragma_index_xinfo(?1) WHERE seqno = 0",
                [&name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((Some(c), coll)) = first {
            let binary = coll.map_or(true, |c| c.eq_ignore_ascii_case("BINARY"));
            if c.eq_ignore_ascii_case(column) && binary {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Run batches on the engine until `fetch` runs dry or the deadline passes
/// (then false). Rows of a batch are examined in order until the job's
/// budget is used; `advance` is called with each examined row.
fn run_batches(
    eng: &mut Engine,
    job: &Job,
    st: &mut Stats,
    fetch: &Fetch,
    advance: &mut dyn FnMut(i64, Value),
) -> anyhow::Result<bool> {
    let dry = eng.target().is_dry_run();
    loop {
        if eng.expired() {
            return Ok(false);
        }
        let limit = eng.batch_size().min(MAX_FETCH);
        let mut local = Stats::default();
        let exhausted = eng.batch(|tx| {
            let rows = fetch(tx, limit)?;
            let fetched = rows.len();
            let start = Instant::now();
            let mut n = 0usize;
            for (rowid, v) in rows {
                examine(tx, job, rowid, &v, dry, &mut local)?;
                advance(rowid, v);
                n += 1;
                if !dry && n < fetched && start.elapsed() >= job.budget {
                    return Ok((false, n));
                }
            }
            Ok((fetched < limit, n))
        })?;
        st.add(&local);
        if exhausted {
            return Ok(true);
        }
    }
}

fn read_rows(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> anyhow::Result<Vec<(i64, Value)>> {
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map(params, |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Value>(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Batches over the rows `sql` selects in rowid order after a rowid cursor
/// (`?1` the cursor; `params` follow it, then the limit).
fn rowid_cursor(
    eng: &mut Engine,
    job: &Job,
    st: &mut Stats,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> anyhow::Result<bool> {
    let last = Cell::new(i64::MIN);
    let fetch = |conn: &Connection, limit: usize| -> anyhow::Result<Vec<(i64, Value)>> {
        let lim = i64::try_from(limit)?;
        let cursor = last.get();
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&cursor];
        all.extend_from_slice(params);
        all.push(&lim);
        read_rows(conn, sql, &all)
    };
    let mut advance = |rowid: i64, _v: Value| last.set(rowid);
    run_batches(eng, job, st, &fetch, &mut advance)
}

fn process_scan(eng: &mut Engine, job: &Job, st: &mut Stats) -> anyhow::Result<bool> {
    let (t, c, f) = (quote(job.table), quote(job.column), &job.filter);
    let sql = format!("SELECT rowid, {c} FROM {t} WHERE rowid > ?1{f} ORDER BY rowid LIMIT ?2");
    rowid_cursor(eng, job, st, &sql, &[])
}

fn process_indexed(
    eng: &mut Engine,
    job: &Job,
    st: &mut Stats,
    upper: &str,
) -> anyhow::Result<bool> {
    let (t, c, f) = (quote(job.table), quote(job.column), &job.filter);
    // NULLs are outside every range: count them once.
    let nulls: i64 = eng.conn().query_row(
        &format!("SELECT count(*) FROM {t} WHERE {c} IS NULL{f}"),
        [],
        |r| r.get(0),
    )?;
    st.nulls += u64::try_from(nulls)?;
    if !window(eng, job, st, upper)? {
        return Ok(false);
    }
    above_window(eng, job, st, upper)
}

/// Phase 1: the window `col < upper` in (col, rowid) order.
fn window(eng: &mut Engine, job: &Job, st: &mut Stats, upper: &str) -> anyhow::Result<bool> {
    let (t, c, f) = (quote(job.table), quote(job.column), &job.filter);
    let first_sql =
        format!("SELECT rowid, {c} FROM {t} WHERE {c} < ?1{f} ORDER BY {c}, rowid LIMIT ?2");
    let next_sql = format!(
        "SELECT rowid, {c} FROM {t} WHERE {c} < ?1 AND ({c}, rowid) > (?3, ?4){f} ORDER BY {c}, rowid LIMIT ?2"
    );
    let cursor: RefCell<Option<(Value, i64)>> = RefCell::new(None);
    let fetch = |conn: &Connection, limit: usize| -> anyhow::Result<Vec<(i64, Value)>> {
        let lim = i64::try_from(limit)?;
        match &*cursor.borrow() {
            None => read_rows(conn, &first_sql, &[&upper, &lim]),
            Some((v, r)) => read_rows(conn, &next_sql, &[&upper, &lim, v, r]),
        }
    };
    let mut advance = |rowid: i64, v: Value| *cursor.borrow_mut() = Some((v, rowid));
    run_batches(eng, job, st, &fetch, &mut advance)
}

/// Phase 2: skip-scan above the window for values without a canonical date
/// prefix (whole calendar days are skipped with one index probe each).
fn above_window(eng: &mut Engine, job: &Job, st: &mut Stats, upper: &str) -> anyhow::Result<bool> {
    let (t, c, f) = (quote(job.table), quote(job.column), &job.filter);
    let ge_sql = format!("SELECT {c} FROM {t} WHERE {c} >= ?1{f} ORDER BY {c} LIMIT 1");
    let gt_sql = format!("SELECT {c} FROM {t} WHERE {c} > ?1{f} ORDER BY {c} LIMIT 1");
    let count_sql = format!("SELECT count(*) FROM {t} WHERE {c} = ?1{f}");
    let rows_sql = format!(
        "SELECT rowid, {c} FROM {t} WHERE rowid > ?1 AND {c} = ?2{f} ORDER BY rowid LIMIT ?3"
    );
    let mut pos = Value::Text(upper.to_string());
    let mut inclusive = true;
    loop {
        if eng.expired() {
            return Ok(false);
        }
        let next: Option<Value> = eng
            .conn()
            .query_row(if inclusive { &ge_sql } else { &gt_sql }, [&pos], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(v) = next else { break };
        if let Value::Text(s) = &v {
            if let Some(p) = canonical_date_prefix(s) {
                pos = Value::Text(prefix_successor(p));
                inclusive = true;
                continue;
            }
        }
        match classify(&v, job.cutoff) {
            class @ (Class::Null | Class::Keep | Class::Unparseable) => {
                let n: i64 = eng.conn().query_row(&count_sql, [&v], |r| r.get(0))?;
                let n = u64::try_from(n)?;
                st.examined += n;
                if class == Class::Unparseable {
                    st.unparseable += n;
                }
            }
            Class::Due => {
                if !rowid_cursor(eng, job, st, &rows_sql, &[&v])? {
                    return Ok(false);
                }
            }
        }
        pos = v;
        inclusive = false;
    }
    Ok(true)
}
