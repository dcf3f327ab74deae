//! Online table rebuilds: a table gets new indexes without one long
//! statement, beside a live writer.
//!
//! The shadow-table design (as gh-ost / pt-online-schema-change and SQLite's
//! own 12-step ALTER procedure): a new table `_corescope_online_<t>` with the
//! live table's exact declaration and every index it should end up with;
//! triggers on the live table mirror each INSERT, UPDATE and DELETE into it;
//! the existing rows are copied in rowid batches (each keeps its rowid);
//! then ONE short transaction swaps the tables; the old table, renamed
//! `_corescope_online_old_<t>`, is emptied in rowid batches and dropped.
//! Every phase is one or more transactions on the batch engine, so no write
//! transaction is longer than the lock budget, and every instant between
//! them is a database the ingestor and the server work with.
//!
//! Why it converges (see docs/migrate.md): after every commit, for every
//! rowid `r`, the shadow row `r` is absent or equal to the live row `r`,
//! and for `r` at or below the copy cursor it is present exactly when the
//! live row is. A trigger sets shadow `r` to live `r` on every write of
//! `r`; a copy batch inserts the live rows of its rowid range that the
//! shadow does not hold yet. When the cursor has passed the largest live
//! rowid, both tables hold the same rows.
//!
//! What is in flight is kept in the database: the shadow table and its
//! triggers are created in one transaction, the copy cursor is stored in
//! `_corescope_state` in the transaction of each batch, the old table's
//! existence marks a removal still to finish. A kill at any instant leaves
//! one of these states, and the next call resumes it.

use rusqlite::{Connection, OptionalExtension};

use super::batch::Deadline;
use super::engine::Engine;
use super::state::{state_get, state_set, state_table_sql};
use super::table_exists;
use crate::catalog::quote_ident;

/// Prefix of a shadow table, its indexes and its triggers.
pub const PREFIX: &str = "_corescope_online_";
/// Prefix of a live table after the swap, while it is being removed.
pub const OLD_PREFIX: &str = "_corescope_online_old_";

pub fn shadow_name(table: &str) -> String {
    format!("{PREFIX}{table}")
}

pub fn old_name(table: &str) -> String {
    format!("{OLD_PREFIX}{table}")
}

fn cursor_key(table: &str) -> String {
    format!("online_build.{table}.cursor")
}

/// The live table's declaration when the build started: the swap refuses a
/// table whose declaration changed meanwhile (e.g. a column added by the
/// ingestor), because its triggers would not mirror the new column.
fn sql_key(table: &str) -> String {
    format!("online_build.{table}.sql")
}

fn trigger_names(table: &str) -> [String; 3] {
    [
        format!("{PREFIX}{table}_ins"),
        format!("{PREFIX}{table}_upd"),
        format!("{PREFIX}{table}_del"),
    ]
}

/// A build or a removal left in the database by an earlier run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The live table it belongs to.
    pub table: String,
    /// `copy` (shadow table and triggers in place: every write to the
    /// table is mirrored) or `remove` (the old table still to be emptied).
    pub phase: &'static str,
    /// Rows of the shadow (copy) or of the old table (remove), when counted.
    pub object: String,
}

/// Every online build or removal pending in the database (reads only
/// `sqlite_master`).
pub fn pending(conn: &Connection) -> anyhow::Result<Vec<Pending>> {
    let mut st = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, length(?1)) = ?1 ORDER BY name",
    )?;
    let names: Vec<String> = st
        .query_map([PREFIX], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names
        .into_iter()
        .map(|n| {
            if let Some(t) = n.strip_prefix(OLD_PREFIX) {
                Pending {
                    table: t.to_string(),
                    phase: "remove",
                    object: n.clone(),
                }
            } else {
                Pending {
                    table: n[PREFIX.len()..].to_string(),
                    phase: "copy",
                    object: n.clone(),
                }
            }
        })
        .collect())
}

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Done,
    /// `--max-seconds` passed at a batch boundary; the next run goes on.
    Stopped,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rebuilt {
    /// Rows the copy batches of this run inserted into the shadow table.
    pub copied: i64,
    /// Rows removed from the old table by this run.
    pub removed: i64,
    /// A pending build whose indexes or declaration no longer matched was
    /// removed and started over.
    pub restarted: bool,
    pub complete: bool,
}

/// A named index: its name and its `CREATE INDEX` statement as SQLite
/// stores it (no `IF NOT EXISTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedIndex {
    pub name: String,
    pub sql: String,
}

impl NamedIndex {
    /// From a catalog statement (`CREATE INDEX IF NOT EXISTS name ON ...`).
    pub fn from_catalog(name: &str, sql: &str) -> NamedIndex {
        NamedIndex {
            name: name.to_string(),
            sql: strip_if_not_exists(sql),
        }
    }
}

/// `CREATE [UNIQUE] INDEX IF NOT EXISTS x ...` as SQLite stores it:
/// `CREATE [UNIQUE] INDEX x ...` (SQLite keeps the text from the name on).
fn strip_if_not_exists(sql: &str) -> String {
    let upper = sql.to_ascii_uppercase();
    if let Some(p) = upper.find("IF NOT EXISTS") {
        let head = &sql[..p];
        let tail = sql[p + "IF NOT EXISTS".len()..].trim_start();
        return format!("{head}{tail}");
    }
    sql.to_string()
}

/// Position of the `ON` keyword of a `CREATE INDEX` statement (the first
/// `ON` standing alone as a word).
fn on_keyword(sql: &str) -> Option<usize> {
    let b = sql.as_bytes();
    let sep = |c: u8| c.is_ascii_whitespace() || c == b'"' || c == b'`' || c == b']';
    (1..b.len().saturating_sub(2)).find(|&i| {
        b[i].eq_ignore_ascii_case(&b'o')
            && b[i + 1].eq_ignore_ascii_case(&b'n')
            && sep(b[i - 1])
            && (b[i + 2].is_ascii_whitespace() || b[i + 2] == b'"' || b[i + 2] == b'`')
    })
}

/// `sql` (a stored `CREATE [UNIQUE] INDEX`) for index `name` on `table`,
/// with the same key, collation and `WHERE` clause.
pub fn index_sql_for(sql: &str, name: &str, table: &str) -> anyhow::Result<String> {
    let unique = sql
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("CREATE UNIQUE");
    let on = on_keyword(sql).ok_or_else(|| anyhow::anyhow!("cannot read index statement {sql}"))?;
    let paren = sql[on..]
        .find('(')
        .map(|p| on + p)
        .ok_or_else(|| anyhow::anyhow!("cannot read index statement {sql}"))?;
    Ok(format!(
        "CREATE {}INDEX {} ON {}{}",
        if unique { "UNIQUE " } else { "" },
        quote_ident(name),
        quote_ident(table),
        &sql[paren..]
    ))
}

/// `CREATE TABLE <name> <declaration of sql>` (everything from the first
/// parenthesis on, so any quoting of the old name does not matter).
fn table_sql_for(sql: &str, name: &str) -> anyhow::Result<String> {
    let paren = sql
        .find('(')
        .ok_or_else(|| anyhow::anyhow!("cannot read table statement {sql}"))?;
    Ok(format!(
        "CREATE TABLE {} {}",
        quote_ident(name),
        &sql[paren..]
    ))
}

/// Named indexes of `table` (automatic indexes of UNIQUE/PRIMARY KEY
/// constraints come with the declaration and are left out).
pub fn named_indexes(conn: &Connection, table: &str) -> anyhow::Result<Vec<NamedIndex>> {
    let mut st = conn.prepare(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL ORDER BY name",
    )?;
    let v = st
        .query_map([table], |r| {
            Ok(NamedIndex {
                name: r.get(0)?,
                sql: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(v)
}

/// Column list of the copy and the triggers: every column, and `rowid`
/// first unless a column is the rowid (an INTEGER PRIMARY KEY), so every
/// row keeps its rowid (observers' rowid is what observations reference).
fn copy_columns(conn: &Connection, table: &str) -> anyhow::Result<Vec<String>> {
    let mut st = conn.prepare("SELECT name, type, pk FROM pragma_table_info(?1)")?;
    let cols: Vec<(String, String, i64)> = st
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let pks = cols.iter().filter(|c| c.2 > 0).count();
    let alias = pks == 1
        && cols
            .iter()
            .any(|c| c.2 == 1 && c.1.eq_ignore_ascii_case("INTEGER"));
    let mut out: Vec<String> = Vec::new();
    if !alias {
        out.push("rowid".into());
    }
    out.extend(cols.into_iter().map(|c| quote_ident(&c.0)));
    Ok(out)
}

fn without_rowid(sql: &str) -> bool {
    let tail = sql.rsplit(')').next().unwrap_or("");
    tail.to_ascii_uppercase().contains("WITHOUT")
}

/// The shadow's unique indexes are all the live table's: then a write the
/// live table accepts never conflicts in the shadow except on a row the
/// live table replaced, and the triggers mirror with `INSERT OR REPLACE`
/// (the live table's own REPLACE deletes fire no delete trigger). When the
/// shadow gets a UNIQUE index the live table lacks, they insert plainly: a
/// write that would duplicate its key fails, as it will once the index is
/// in place, instead of silently replacing a row the live table keeps.
fn triggers_sql(table: &str, shadow: &str, cols: &[String], replace: bool) -> String {
    let [ins, upd, del] = trigger_names(table);
    let list = cols.join(", ");
    let new = cols
        .iter()
        .map(|c| format!("NEW.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (t, s) = (quote_ident(table), quote_ident(shadow));
    let verb = if replace {
        "INSERT OR REPLACE INTO"
    } else {
        "INSERT INTO"
    };
    format!(
        "CREATE TRIGGER {ins} AFTER INSERT ON {t} BEGIN
           DELETE FROM {s} WHERE rowid = NEW.rowid;
           {verb} {s} ({list}) VALUES ({new});
         END;
         CREATE TRIGGER {upd} AFTER UPDATE ON {t} BEGIN
           DELETE FROM {s} WHERE rowid = OLD.rowid;
           {verb} {s} ({list}) VALUES ({new});
         END;
         CREATE TRIGGER {del} AFTER DELETE ON {t} BEGIN
           DELETE FROM {s} WHERE rowid = OLD.rowid;
         END;",
        ins = quote_ident(&ins),
        upd = quote_ident(&upd),
        del = quote_ident(&del),
    )
}

/// The shadow's final index set: the live table's named indexes, then the
/// new ones; a new index with the name of a live one replaces its
/// definition (a repair of a wrong index).
fn wanted(conn: &Connection, table: &str, new: &[NamedIndex]) -> anyhow::Result<Vec<NamedIndex>> {
    let mut v: Vec<NamedIndex> = named_indexes(conn, table)?
        .into_iter()
        .filter(|l| !new.iter().any(|n| n.name == l.name))
        .collect();
    v.extend(new.iter().cloned());
    Ok(v)
}

/// The same key, uniqueness and `WHERE` (names aside).
fn same_definition(a: &str, b: &str) -> bool {
    match (index_sql_for(a, "i", "t"), index_sql_for(b, "i", "t")) {
        (Ok(x), Ok(y)) => x.split_whitespace().eq(y.split_whitespace()),
        _ => false,
    }
}

/// Final names of the indexes the shadow of `table` carries.
fn shadow_index_names(conn: &Connection, table: &str) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = named_indexes(conn, &shadow_name(table))?
        .into_iter()
        .filter_map(|i| i.name.strip_prefix(PREFIX).map(str::to_string))
        .collect();
    v.sort();
    Ok(v)
}

/// Run `f` with the write connection's `foreign_keys` OFF and
/// `legacy_alter_table` ON (the copy must not check references row by
/// row, and a rename must not rewrite the references other tables, views
/// or triggers hold to the renamed name); both are restored afterwards,
/// also when `f` fails. Both are settings of this connection only.
fn with_plain_renames<T>(
    e: &mut Engine<'_>,
    f: impl FnOnce(&mut Engine<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let on: bool = e
        .conn()
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    e.conn()
        .execute_batch("PRAGMA foreign_keys = OFF; PRAGMA legacy_alter_table = ON;")?;
    let out = f(e);
    let restore = e.conn().execute_batch(if on {
        "PRAGMA legacy_alter_table = OFF; PRAGMA foreign_keys = ON;"
    } else {
        "PRAGMA legacy_alter_table = OFF;"
    });
    let v = out?;
    restore?;
    Ok(v)
}

/// Give `table` the indexes `new` (those it lacks) online: resume or start
/// the build, copy, swap, remove the old table. Stops at a batch boundary
/// once `deadline` has passed (`complete: false`).
pub fn rebuild(
    e: &mut Engine<'_>,
    table: &str,
    new: &[NamedIndex],
    budget: Budget,
) -> anyhow::Result<Rebuilt> {
    with_plain_renames(e, |e| rebuild_inner(e, table, new, budget))
}

/// The lock budget (batch sizing restarts under it at each phase) and the
/// deadline of a run.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_lock_ms: u64,
    pub deadline: Deadline,
}

impl Budget {
    /// The budget the batches are sized for: half of `--max-lock-ms`, so
    /// that a batch aims at a quarter of it. Copy and removal batches
    /// maintain every index of the table at random places, and their cost
    /// per row jumps when the cache turns over (measured at 1 M
    /// observations: single batches at 1.1× the budget when sized for the
    /// full budget); this keeps such a jump inside it.
    pub fn sizing_ms(&self) -> u64 {
        (self.max_lock_ms / 2).max(10)
    }
}

fn rebuild_inner(
    e: &mut Engine<'_>,
    table: &str,
    new: &[NamedIndex],
    budget: Budget,
) -> anyhow::Result<Rebuilt> {
    let mut out = Rebuilt::default();
    let deadline = &budget.deadline;
    e.restart_batching(budget.sizing_ms());
    if remove_old(e, table, deadline, &mut out.removed)? == Phase::Stopped {
        return Ok(out);
    }
    let shadow = shadow_name(table);
    if table_exists(e.conn(), &shadow)? {
        let mut want: Vec<String> = wanted(e.conn(), table, new)?
            .into_iter()
            .map(|i| i.name)
            .collect();
        want.sort();
        let same_sql = state_get(e.conn(), &sql_key(table))?
            == super::probe::stored_sql(e.conn(), "table", table)?;
        if want != shadow_index_names(e.conn(), table)? || !same_sql {
            log::info!("online build of {table}: pending build does not match, starting over");
            out.restarted = true;
            if abandon(e, table, deadline)? == Phase::Stopped {
                return Ok(out);
            }
        }
    }
    if !table_exists(e.conn(), &shadow)? {
        start(e, table, new)?;
    }
    e.restart_batching(budget.sizing_ms());
    if copy(e, table, deadline, &mut out.copied)? == Phase::Stopped {
        return Ok(out);
    }
    if !swap(e, table)? {
        // Declaration or indexes changed under the build: start over next run.
        e.restart_batching(budget.sizing_ms());
        abandon(e, table, deadline)?;
        anyhow::bail!(
            "the declaration or the indexes of {table} changed while its online build ran (another program altered it); \
             the build was removed: run `corescope migrate` again"
        );
    }
    e.restart_batching(budget.sizing_ms());
    if remove_old(e, table, deadline, &mut out.removed)? == Phase::Stopped {
        return Ok(out);
    }
    out.complete = true;
    Ok(out)
}

/// One transaction: the shadow table with every index, and the triggers.
fn start(e: &mut Engine<'_>, table: &str, new: &[NamedIndex]) -> anyhow::Result<()> {
    let table = table.to_string();
    let new = new.to_vec();
    e.batch(|tx| {
        let shadow = shadow_name(&table);
        if table_exists(tx, &shadow)? {
            return Ok(((), 0));
        }
        let sql = super::probe::stored_sql(tx, "table", &table)?
            .ok_or_else(|| anyhow::anyhow!("table {table} does not exist"))?;
        if without_rowid(&sql) {
            anyhow::bail!(
                "{table} is a WITHOUT ROWID table; it cannot be rebuilt online (use --offline)"
            );
        }
        tx.execute_batch(&table_sql_for(&sql, &shadow)?)?;
        // A UNIQUE index of the shadow that the live table lacks (or has
        // with another definition) makes the triggers insert plainly.
        let live = named_indexes(tx, &table)?;
        let mut uniques_new = false;
        for i in wanted(tx, &table, &new)? {
            let s = index_sql_for(&i.sql, &format!("{PREFIX}{}", i.name), &shadow)?;
            if s.starts_with("CREATE UNIQUE")
                && !live
                    .iter()
                    .any(|l| l.name == i.name && same_definition(&l.sql, &i.sql))
            {
                uniques_new = true;
            }
            tx.execute_batch(&s)?;
        }
        let cols = copy_columns(tx, &table)?;
        tx.execute_batch(&triggers_sql(&table, &shadow, &cols, !uniques_new))?;
        tx.execute_batch(&state_table_sql())?;
        state_set(tx, &sql_key(&table), &sql)?;
        state_set(tx, &cursor_key(&table), &i64::MIN.to_string())?;
        for n in &new {
            state_set(
                tx,
                &format!("online_build.{table}.index.{}", n.name),
                &n.sql,
            )?;
        }
        log::info!("online build of {table}: shadow table {shadow} and its triggers created");
        Ok(((), 0))
    })
}

/// Copy the live rows in rowid batches, from the stored cursor on.
fn copy(
    e: &mut Engine<'_>,
    table: &str,
    deadline: &Deadline,
    copied: &mut i64,
) -> anyhow::Result<Phase> {
    let shadow = shadow_name(table);
    let cols = copy_columns(e.conn(), table)?.join(", ");
    let (t, s) = (quote_ident(table), quote_ident(&shadow));
    let insert = format!(
        "INSERT INTO {s} ({cols}) SELECT {cols} FROM {t} AS l
         WHERE l.rowid > ?1 AND l.rowid <= ?2
           AND NOT EXISTS (SELECT 1 FROM {s} AS x WHERE x.rowid = l.rowid)"
    );
    let max_sql = format!("SELECT max(rowid) FROM {t}");
    let first_sql = format!("SELECT min(rowid) FROM {t} WHERE rowid > ?1");
    loop {
        if deadline.expired() {
            return Ok(Phase::Stopped);
        }
        let span = i64::try_from(e.batch_size()).unwrap_or(i64::MAX);
        let (done, n) = e.batch(|tx| {
            if !table_exists(tx, &shadow)? {
                // Swapped meanwhile by an overlapping run (without the run lock).
                return Ok(((true, 0), 0));
            }
            let cursor: i64 = state_get(tx, &cursor_key(table))?
                .and_then(|v| v.parse().ok())
                .unwrap_or(i64::MIN);
            let max: Option<i64> = tx.query_row(&max_sql, [], |r| r.get(0))?;
            let Some(max) = max.filter(|m| *m > cursor) else {
                if cursor != i64::MAX {
                    state_set(tx, &cursor_key(table), &i64::MAX.to_string())?;
                }
                return Ok(((true, 0), 0));
            };
            // From the first live rowid past the cursor (ids need not
            // start at 1, and a gap is skipped in one step).
            let first: i64 = tx
                .query_row(&first_sql, [cursor], |r| r.get::<_, Option<i64>>(0))?
                .unwrap_or(max);
            let hi = first.saturating_add(span - 1).min(max);
            let n = tx.execute(&insert, [cursor, hi])?;
            // At the end the cursor becomes i64::MAX: every live row
            // above it was inserted later, through the triggers.
            let end = hi >= max;
            let next = if end { i64::MAX } else { hi };
            state_set(tx, &cursor_key(table), &next.to_string())?;
            let rows = usize::try_from(hi - first + 1).unwrap_or(usize::MAX);
            Ok(((end, i64::try_from(n).unwrap_or(0)), rows))
        })?;
        *copied += n;
        if done {
            return Ok(Phase::Done);
        }
    }
}

/// The swap, in one transaction. False when the live table's declaration
/// or its index set changed since the build started (nothing is changed).
fn swap(e: &mut Engine<'_>, table: &str) -> anyhow::Result<bool> {
    let table = table.to_string();
    e.batch(|tx| {
        let shadow = shadow_name(&table);
        let old = old_name(&table);
        if !table_exists(tx, &shadow)? {
            // Swapped meanwhile by an overlapping run (without the run lock).
            return Ok((true, 0));
        }
        let sql = super::probe::stored_sql(tx, "table", &table)?
            .ok_or_else(|| anyhow::anyhow!("table {table} does not exist"))?;
        if state_get(tx, &sql_key(&table))?.as_deref() != Some(sql.as_str()) {
            return Ok((false, 0));
        }
        let live = named_indexes(tx, &table)?;
        let have = shadow_index_names(tx, &table)?;
        if live.iter().any(|i| !have.contains(&i.name)) {
            return Ok((false, 0));
        }
        // A final name must be free once the live table's indexes move away.
        for name in &have {
            let taken: i64 = tx.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = ?1 AND NOT (type = 'index' AND tbl_name = ?2)",
                rusqlite::params![name, table],
                |r| r.get(0),
            )?;
            if taken > 0 {
                return Ok((false, 0));
            }
        }
        // Every live row is in the shadow (the copy reached the end).
        if state_get(tx, &cursor_key(&table))?.as_deref() != Some(i64::MAX.to_string().as_str()) {
            anyhow::bail!("internal error: swap of {table} before its copy ended");
        }
        // The final statement of each shadow index: the live table's own
        // text for an index it has, the catalog's for a new one.
        let shadow_idx = named_indexes(tx, &shadow)?;
        for t in trigger_names(&table) {
            tx.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", quote_ident(&t)))?;
        }
        // Views and other triggers are dropped and re-created from their
        // stored text, so no rename rewrites what they reference.
        let mut st = tx.prepare(
            "SELECT type, name, sql FROM sqlite_master WHERE type IN ('view', 'trigger') AND sql IS NOT NULL ORDER BY rowid",
        )?;
        let deps: Vec<(String, String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        drop(st);
        for (kind, name, _) in deps.iter().rev() {
            tx.execute_batch(&format!("DROP {} {}", kind.to_ascii_uppercase(), quote_ident(name)))?;
        }
        let has_seq = table_exists(tx, "sqlite_sequence")?;
        let seq: Option<i64> = if has_seq {
            tx.query_row("SELECT seq FROM sqlite_sequence WHERE name = ?1", [&table], |r| r.get(0))
                .optional()?
        } else {
            None
        };
        tx.execute_batch(&format!(
            "ALTER TABLE {} RENAME TO {}; ALTER TABLE {} RENAME TO {};",
            quote_ident(&table),
            quote_ident(&old),
            quote_ident(&shadow),
            quote_ident(&table)
        ))?;
        if let Some(seq) = seq {
            let n = tx.execute("UPDATE sqlite_sequence SET seq = ?1 WHERE name = ?2", rusqlite::params![seq, table])?;
            if n == 0 {
                tx.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)", rusqlite::params![table, seq])?;
            }
        }
        // Index names cannot be renamed by a statement: the names move in
        // sqlite_master (SQLite's documented schema-edit procedure: one
        // transaction, then schema_version + 1). The old table's indexes
        // take the old prefix, the new table's theirs.
        let version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        tx.execute_batch("PRAGMA writable_schema = ON")?;
        for i in &live {
            let to = format!("{OLD_PREFIX}{}", i.name);
            let cur = super::probe::stored_sql(tx, "index", &i.name)?.unwrap_or_default();
            tx.execute(
                "UPDATE sqlite_master SET name = ?1, sql = ?2 WHERE type = 'index' AND name = ?3",
                rusqlite::params![to, index_sql_for(&cur, &to, &old)?, i.name],
            )?;
        }
        for si in &shadow_idx {
            let Some(name) = si.name.strip_prefix(PREFIX) else {
                continue;
            };
            // A new (or repaired) index: the statement stored at the start;
            // one the live table had: its own text.
            let final_sql = match state_get(tx, &format!("online_build.{table}.index.{name}"))? {
                Some(s) => s,
                None => match live.iter().find(|l| l.name == name) {
                    Some(l) => l.sql.clone(),
                    None => index_sql_for(&si.sql, name, &table)?,
                },
            };
            tx.execute(
                "UPDATE sqlite_master SET name = ?1, sql = ?2 WHERE type = 'index' AND name = ?3",
                rusqlite::params![name, final_sql, si.name],
            )?;
        }
        tx.execute(
            "UPDATE sqlite_master SET sql = ?1 WHERE type = 'table' AND name = ?2",
            rusqlite::params![sql, table],
        )?;
        tx.execute_batch(&format!(
            "PRAGMA schema_version = {}; PRAGMA writable_schema = OFF;",
            version + 1
        ))?;
        for (_, _, sql) in &deps {
            tx.execute_batch(sql)?;
        }
        clear_state(tx, &table)?;
        log::info!("online build of {table}: swapped; {old} is removed in batches");
        Ok((true, 0))
    })
}

/// Remove every state key of the build of `table`.
fn clear_state(tx: &Connection, table: &str) -> anyhow::Result<()> {
    if table_exists(tx, super::STATE_TABLE)? {
        let prefix = format!("online_build.{table}.");
        tx.execute(
            "DELETE FROM _corescope_state WHERE substr(key, 1, length(?1)) = ?1",
            [prefix],
        )?;
    }
    Ok(())
}

/// Empty `table` in rowid batches, then drop it (empty, so the drop frees
/// only a few pages). Used for the old table and for an abandoned shadow.
fn drain_and_drop(
    e: &mut Engine<'_>,
    table: &str,
    deadline: &Deadline,
    removed: &mut i64,
) -> anyhow::Result<Phase> {
    let t = quote_ident(table);
    let del =
        format!("DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} ORDER BY rowid LIMIT ?1)");
    loop {
        if !table_exists(e.conn(), table)? {
            return Ok(Phase::Done);
        }
        if deadline.expired() {
            return Ok(Phase::Stopped);
        }
        let n = e.batch_size();
        let gone = e.batch(|tx| {
            if !table_exists(tx, table)? {
                return Ok((0, 0));
            }
            let gone = tx.execute(&del, [i64::try_from(n).unwrap_or(i64::MAX)])?;
            if gone < n {
                tx.execute_batch(&format!("DROP TABLE {t}"))?;
            }
            Ok((gone, gone))
        })?;
        *removed += i64::try_from(gone).unwrap_or(0);
    }
}

/// Finish removing the old table of an earlier swap, if any.
pub fn remove_old(
    e: &mut Engine<'_>,
    table: &str,
    deadline: &Deadline,
    removed: &mut i64,
) -> anyhow::Result<Phase> {
    drain_and_drop(e, &old_name(table), deadline, removed)
}

/// Remove a pending build: its triggers at once (one transaction), then
/// the shadow table in batches.
pub fn abandon(e: &mut Engine<'_>, table: &str, deadline: &Deadline) -> anyhow::Result<Phase> {
    let table_s = table.to_string();
    e.batch(|tx| {
        for t in trigger_names(&table_s) {
            tx.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", quote_ident(&t)))?;
        }
        clear_state(tx, &table_s)?;
        Ok(((), 0))
    })?;
    let mut removed = 0;
    drain_and_drop(e, &shadow_name(table), deadline, &mut removed)
}

/// Finish or remove everything pending: old tables are removed; a shadow
/// whose table no build of this run wanted is abandoned.
pub fn clean_up(e: &mut Engine<'_>, budget: Budget) -> anyhow::Result<Phase> {
    with_plain_renames(e, |e| clean_up_inner(e, budget))
}

fn clean_up_inner(e: &mut Engine<'_>, budget: Budget) -> anyhow::Result<Phase> {
    let deadline = &budget.deadline;
    for p in pending(e.conn())? {
        e.restart_batching(budget.sizing_ms());
        let mut n = 0;
        let phase = if p.phase == "remove" {
            remove_old(e, &p.table, deadline, &mut n)?
        } else {
            abandon(e, &p.table, deadline)?
        };
        if phase == Phase::Stopped {
            return Ok(Phase::Stopped);
        }
    }
    Ok(Phase::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_statements() {
        assert_eq!(
            index_sql_for(
                "CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''))",
                "_x",
                "t"
            )
            .unwrap(),
            "CREATE UNIQUE INDEX \"_x\" ON \"t\"(transmission_id, observer_idx, COALESCE(path_json, ''))"
        );
        assert_eq!(
            index_sql_for("CREATE INDEX i ON \"a b\" (c) WHERE d = 1", "j", "k").unwrap(),
            "CREATE INDEX \"j\" ON \"k\"(c) WHERE d = 1"
        );
        assert_eq!(
            strip_if_not_exists("CREATE INDEX IF NOT EXISTS idx_a ON t(a)"),
            "CREATE INDEX idx_a ON t(a)"
        );
        assert_eq!(
            table_sql_for("CREATE TABLE \"x\"(a, b)", "y").unwrap(),
            "CREATE TABLE \"y\" (a, b)"
        );
        assert!(without_rowid(
            "CREATE TABLE t (a PRIMARY KEY) WITHOUT ROWID"
        ));
        assert!(!without_rowid("CREATE TABLE t (a INTEGER PRIMARY KEY)"));
    }
}
