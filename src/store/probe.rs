//! Schema probes: what a database has, compared with the catalog
//! (read-only; shared by `migrate`, `check` and the handles). Everything
//! here takes a `&Connection` and only reads; the catalog itself is data.

use rusqlite::{Connection, OptionalExtension};

use super::state::STATE_TABLE;
use crate::catalog::{self, MigrationDef, Record, Target};

pub fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

pub fn object_exists(conn: &Connection, kind: &str, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = ?1 AND name = ?2",
        [kind, name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

pub fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let rows = st.query_map([table], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// The columns of `table` as `PRAGMA table_info` describes them.
pub fn live_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<catalog::LiveColumn>> {
    let mut st =
        conn.prepare("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)")?;
    let rows = st.query_map([table], |r| {
        Ok(catalog::LiveColumn {
            name: r.get(0)?,
            decl_type: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            not_null: r.get::<_, i64>(2)? != 0,
            default: r.get(3)?,
            pk: r.get::<_, i64>(4)? != 0,
        })
    })?;
    rows.collect()
}

/// `CREATE TABLE <name>` with exactly the columns of the live `nodes`
/// table, in its order: the shape `inactive_nodes` must have, because the
/// ingestor's node retention copies rows with `INSERT OR REPLACE INTO
/// inactive_nodes SELECT * FROM nodes` (columns matched by position).
pub fn node_table_like_nodes_sql(conn: &Connection, name: &str) -> rusqlite::Result<String> {
    let cols = live_columns(conn, "nodes")?;
    let parts: Vec<String> = cols
        .iter()
        .map(|c| format!("  {}", catalog::node_column_decl(c)))
        .collect();
    Ok(format!("CREATE TABLE {name} (\n{}\n)", parts.join(",\n")))
}

/// Missing required tables and columns (no indexes, views or migrations):
/// what write commands need before they touch data.
pub fn missing_structure(conn: &Connection, target: Target) -> rusqlite::Result<Vec<String>> {
    let mut missing = Vec::new();
    for t in catalog::TABLES
        .iter()
        .filter(|t| t.required && target.includes(t.since))
    {
        let cols = columns(conn, t.name)?;
        if cols.is_empty() {
            missing.push(format!("table:{}", t.name));
            for c in t
                .columns
                .iter()
                .filter(|c| c.asserted.is_some_and(|a| target.includes(a)))
            {
                missing.push(format!("{}.{}", t.name, c.name));
            }
            continue;
        }
        for c in t.columns.iter().filter(|c| target.includes(c.since)) {
            if !cols.iter().any(|x| x.eq_ignore_ascii_case(c.name)) {
                missing.push(format!("{}.{}", t.name, c.name));
            }
        }
    }
    Ok(missing)
}

/// Names recorded in `_migrations` (empty when the table does not exist).
pub fn recorded_migrations(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    names_in(conn, "_migrations", "SELECT name FROM _migrations")
}

/// Names with status `done` in `_async_migrations`.
pub fn done_async_migrations(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    names_in(
        conn,
        "_async_migrations",
        "SELECT name FROM _async_migrations WHERE status = 'done'",
    )
}

/// The text column `sql` selects from `table`; empty when the table does
/// not exist.
fn names_in(conn: &Connection, table: &str, sql: &str) -> rusqlite::Result<Vec<String>> {
    if !table_exists(conn, table)? {
        return Ok(Vec::new());
    }
    let mut st = conn.prepare(sql)?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// Counts of text `observations.observer_idx` values: (total, exactly matching one observer).
/// `observer_idx >= ''` selects exactly the TEXT values (SQLite orders
/// numbers before text, and `''` stays text against the INTEGER column), so
/// with `idx_observations_observer_idx` this is a range scan over the text
/// rows only instead of a scan of every observation (it runs in every
/// `check` and `migrate` plan).
pub fn text_observer_idx(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let cols = columns(conn, "observations")?;
    if !cols.iter().any(|c| c == "observer_idx") || !table_exists(conn, "observers")? {
        return Ok((0, 0));
    }
    conn.query_row(
        "SELECT count(*), coalesce(sum(m.n = 1), 0)
         FROM observations o
         LEFT JOIN (SELECT lower(id) AS lid, count(*) AS n FROM observers GROUP BY lower(id)) m
                ON m.lid = lower(o.observer_idx)
         WHERE o.observer_idx >= '' AND typeof(o.observer_idx) = 'text'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Is this named migration still to do?
pub fn migration_pending(
    m: &MigrationDef,
    recorded: &[String],
    done_async: &[String],
    conn: &Connection,
) -> rusqlite::Result<bool> {
    let done = match m.record {
        Record::Migrations => recorded.iter().any(|n| n == m.name),
        Record::AsyncMigrations => done_async.iter().any(|n| n == m.name),
    };
    if done {
        return Ok(false);
    }
    if m.own {
        // corescope's own repair is pending only while it has work to do, or
        // when a run started it and was interrupted before recording it (its
        // last batches may have left no work, but an uninterrupted run records
        // the name: the re-run must too).
        if own_started(conn, m.name)? {
            return Ok(true);
        }
        return match m.data {
            catalog::DataOp::ObserverIdxRowid => Ok(text_observer_idx(conn)?.1 > 0),
            _ => Ok(true),
        };
    }
    Ok(true)
}

/// `_corescope_state` key set by the first batch of corescope's own data
/// migration `name` and removed together with its record.
pub fn own_started_key(name: &str) -> String {
    format!("migrate.{name}.started")
}

fn own_started(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    if !table_exists(conn, STATE_TABLE)? {
        return Ok(false);
    }
    conn.query_row(
        "SELECT count(*) FROM _corescope_state WHERE key = ?1",
        [own_started_key(name)],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

pub fn pending_migrations(
    conn: &Connection,
    target: Target,
) -> rusqlite::Result<Vec<&'static MigrationDef>> {
    pending_migrations_with(conn, target, false)
}

/// Like [`pending_migrations`], but without a probe that would read a whole
/// table: corescope's observer_idx repair counts as pending, unlooked, while
/// `idx_observations_observer_idx` (which makes its probe a range lookup) is
/// missing; such a database is not ready anyway, for the missing index
/// (`check` without `--deep`).
pub fn pending_migrations_cheap(
    conn: &Connection,
    target: Target,
) -> rusqlite::Result<Vec<&'static MigrationDef>> {
    pending_migrations_with(conn, target, true)
}

fn pending_migrations_with(
    conn: &Connection,
    target: Target,
    cheap: bool,
) -> rusqlite::Result<Vec<&'static MigrationDef>> {
    let recorded = recorded_migrations(conn)?;
    let done_async = done_async_migrations(conn)?;
    let unindexed = cheap && !object_exists(conn, "index", "idx_observations_observer_idx")?;
    let mut out = Vec::new();
    for m in catalog::migration_order(target) {
        let unlooked = unindexed
            && m.own
            && matches!(m.data, catalog::DataOp::ObserverIdxRowid)
            && !recorded.iter().any(|n| n == m.name);
        if unlooked || migration_pending(m, &recorded, &done_async, conn)? {
            out.push(m);
        }
    }
    Ok(out)
}

/// Normalise SQL text for comparison (whitespace and case).
pub fn norm_sql(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// The stored SQL of a view/index, if it exists.
pub fn stored_sql(conn: &Connection, kind: &str, name: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = ?1 AND name = ?2",
        [kind, name],
        |r| r.get::<_, Option<String>>(0),
    )
    .optional()
    .map(std::option::Option::flatten)
}

/// Does the catalog index exist (by name)?
pub fn index_missing(conn: &Connection, i: &catalog::IndexDef) -> rusqlite::Result<bool> {
    if object_exists(conn, "index", i.name)? {
        return Ok(false);
    }
    let cols = columns(conn, i.table)?;
    if cols.is_empty() {
        return Ok(true); // table missing: index missing too
    }
    if let Some(c) = i.requires_column {
        if !cols.iter().any(|x| x == c) {
            return Ok(false); // not applicable (v2 table)
        }
    }
    Ok(true)
}

/// Everything of the catalog that is missing: tables, columns, indexes, views.
pub fn missing_objects(conn: &Connection, target: Target) -> rusqlite::Result<Vec<String>> {
    let mut missing = missing_structure(conn, target)?;
    for i in catalog::INDEXES.iter().filter(|i| target.includes(i.since)) {
        // A UNIQUE index the ingestor's UPSERT names (the dedup index) with
        // another definition stops the ingestor as surely as a missing one.
        if index_missing(conn, i)? || (i.unique_check.is_some() && index_breaks(conn, i)?) {
            missing.push(format!("index:{}", i.name));
        }
    }
    for v in catalog::VIEWS.iter().filter(|v| target.includes(v.since)) {
        match stored_sql(conn, "view", v.name)? {
            None => missing.push(format!("view:{}", v.name)),
            Some(sql) if norm_sql(&sql) != norm_sql(v.sql) => {
                missing.push(format!("view:{}", v.name));
            }
            Some(_) => {}
        }
    }
    Ok(missing)
}

/// The shape of the observations table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObsShape {
    V3,
    /// Retired Node.js backend: `observer_id`/text timestamps.
    V2,
    Missing,
}

pub fn observations_shape(conn: &Connection) -> rusqlite::Result<ObsShape> {
    let cols = columns(conn, "observations")?;
    if cols.is_empty() {
        return Ok(ObsShape::Missing);
    }
    if cols.iter().any(|c| c == "observer_idx") {
        Ok(ObsShape::V3)
    } else if cols.iter().any(|c| c == "observer_id") {
        Ok(ObsShape::V2)
    } else {
        Ok(ObsShape::V3)
    }
}

/// Groups of duplicate dedup keys: (number of groups, surplus rows).
pub fn duplicate_dedup_groups(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let cols = columns(conn, "observations")?;
    if !["transmission_id", "observer_idx", "path_json"]
        .iter()
        .all(|c| cols.iter().any(|x| x == c))
    {
        return Ok((0, 0));
    }
    let sql = catalog::index(catalog::DEDUP_INDEX)
        .and_then(|i| i.unique_check)
        .unwrap_or("SELECT 1, 1, 1, 1 WHERE 0");
    conn.query_row(
        &format!("SELECT count(*), coalesce(sum(n - 1), 0) FROM ({sql})"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Like [`duplicate_dedup_groups`], but as the groups will be once the
/// observer_idx repair has mapped every text `observer_idx` that equals
/// exactly one observer id (case-insensitively) to that observer's rowid:
/// what `migrate` will merge after running the repair.
pub fn duplicate_dedup_groups_after_repair(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let cols = columns(conn, "observations")?;
    if !["transmission_id", "observer_idx", "path_json"]
        .iter()
        .all(|c| cols.iter().any(|x| x == c))
        || !table_exists(conn, "observers")?
    {
        return duplicate_dedup_groups(conn);
    }
    conn.query_row(
        "SELECT count(*), coalesce(sum(n - 1), 0) FROM (
           SELECT count(*) AS n
             FROM observations o
             LEFT JOIN (SELECT lower(id) AS lid, min(rowid) AS r, count(*) AS c FROM observers GROUP BY lower(id)) m
                    ON typeof(o.observer_idx) = 'text' AND m.lid = lower(o.observer_idx) AND m.c = 1
            WHERE o.transmission_id IS NOT NULL AND o.observer_idx IS NOT NULL
            GROUP BY o.transmission_id, COALESCE(m.r, o.observer_idx), COALESCE(o.path_json, '')
           HAVING count(*) > 1)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Sample of duplicate dedup keys for reports.
pub fn duplicate_dedup_sample(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<String>> {
    let Some(sql) = catalog::index(catalog::DEDUP_INDEX).and_then(|i| i.unique_check) else {
        return Ok(Vec::new());
    };
    let mut st = conn.prepare(&format!("{sql} LIMIT {limit}"))?;
    let rows = st.query_map([], |r| {
        let tx: rusqlite::types::Value = r.get(0)?;
        let obs: rusqlite::types::Value = r.get(1)?;
        let path: String = r.get(2)?;
        let n: i64 = r.get(3)?;
        Ok(format!(
            "transmission_id={} observer_idx={} path_json='{}' ({} rows)",
            show(&tx),
            show(&obs),
            path,
            n
        ))
    })?;
    rows.collect()
}

fn show(v: &rusqlite::types::Value) -> String {
    use rusqlite::types::Value as V;
    match v {
        V::Null => "NULL".into(),
        V::Integer(i) => i.to_string(),
        V::Real(f) => f.to_string(),
        V::Text(s) => format!("'{s}'"),
        V::Blob(b) => format!("<{} bytes>", b.len()),
    }
}

/// How `inactive_nodes` differs from `nodes` (names compared
/// case-insensitively, in order). `None` when either table is missing or
/// both have the same columns in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodesDrift {
    pub nodes: Vec<String>,
    pub inactive: Vec<String>,
}

impl NodesDrift {
    /// One line saying what differs.
    pub fn describe(&self) -> String {
        let lower = |v: &[String]| v.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>();
        let (n, i) = (lower(&self.nodes), lower(&self.inactive));
        // The columns of `names` (lower-cased: `low`) missing from `other`.
        let only = |names: &'_ [String], low: &[String], other: &[String]| -> Vec<String> {
            names
                .iter()
                .zip(low)
                .filter(|(_, l)| !other.contains(l))
                .map(|(c, _)| c.clone())
                .collect()
        };
        let only_n = only(&self.nodes, &n, &i);
        let only_i = only(&self.inactive, &i, &n);
        let mut parts = vec![format!(
            "nodes has {} columns, inactive_nodes {}",
            self.nodes.len(),
            self.inactive.len()
        )];
        if !only_n.is_empty() {
            parts.push(format!("only in nodes: {}", only_n.join(", ")));
        }
        if !only_i.is_empty() {
            parts.push(format!("only in inactive_nodes: {}", only_i.join(", ")));
        }
        if let Some(pos) = n.iter().zip(&i).position(|(a, b)| a != b) {
            parts.push(format!(
                "first difference at column {}: nodes.{} vs inactive_nodes.{}",
                pos + 1,
                self.nodes[pos],
                self.inactive[pos]
            ));
        }
        parts.join("; ")
    }
}

pub fn nodes_drift(conn: &Connection) -> rusqlite::Result<Option<NodesDrift>> {
    let nodes = columns(conn, "nodes")?;
    let inactive = columns(conn, "inactive_nodes")?;
    Ok(drift_of(nodes, inactive))
}

pub fn drift_of(nodes: Vec<String>, inactive: Vec<String>) -> Option<NodesDrift> {
    if nodes.is_empty() || inactive.is_empty() {
        return None;
    }
    let same = nodes.len() == inactive.len()
        && nodes
            .iter()
            .zip(&inactive)
            .all(|(a, b)| a.eq_ignore_ascii_case(b));
    (!same).then_some(NodesDrift { nodes, inactive })
}

/// The catalog of `target` built in a private in-memory database, so a
/// schema comparison reads both sides through the same pragmas.
pub fn catalog_in_memory(target: crate::catalog::Target) -> anyhow::Result<Connection> {
    let conn = Connection::open_in_memory()?;
    for sql in crate::catalog::create_schema_sql(target) {
        conn.execute_batch(&sql)?;
    }
    Ok(conn)
}

/// Collapse whitespace runs to one space, drop spaces just inside
/// parentheses and before commas, and drop `IF NOT EXISTS` after
/// `CREATE [UNIQUE] TABLE|INDEX|VIEW|TRIGGER` (SQLite stores the statement
/// without it). String literals are kept as written.
pub fn normalise_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_quote: Option<char> = None;
    let mut pending_space = false;
    for ch in sql.trim().chars() {
        if let Some(q) = in_quote {
            out.push(ch);
            if ch == q {
                in_quote = None;
            }
            continue;
        }
        if ch.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() && !out.ends_with('(') && ch != ')' && ch != ',' {
            out.push(' ');
        }
        pending_space = false;
        if ch == '\'' || ch == '"' || ch == '`' {
            in_quote = Some(ch);
        } else if ch == '[' {
            in_quote = Some(']');
        }
        out.push(ch);
    }
    strip_if_not_exists(&out)
}

/// How an existing index differs from the catalog's definition of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexDiff {
    /// The same statement (whitespace, case and `IF NOT EXISTS` aside).
    Same,
    /// Different text, same behaviour for every CoreScope statement.
    Harmless,
    /// A CoreScope statement would fail or behave differently: UNIQUE
    /// added or missing, another table, a partial index without its
    /// `WHERE`, or the dedup index on other keys than the ingestor's
    /// UPSERT names in its `ON CONFLICT` target.
    Breaks,
}

/// The one rule deciding whether a stored index is the catalog's, used by
/// `check --diff`, `check`'s readiness and `migrate`'s repair.
pub fn index_diff(name: &str, want_sql: &str, have_sql: &str) -> IndexDiff {
    let (w, h) = (
        normalise_sql(want_sql).to_ascii_lowercase(),
        normalise_sql(have_sql).to_ascii_lowercase(),
    );
    if w == h {
        return IndexDiff::Same;
    }
    let unique = |s: &str| s.starts_with("create unique ");
    let where_of = |s: &str| s.find(" where ").map(|i| s[i..].replace(' ', ""));
    let end_of_keys = |s: &str| s.find(" where ").unwrap_or(s.len());
    let keys_of = |s: &str| {
        let end = end_of_keys(s);
        let start = s.find('(').unwrap_or(end).min(end);
        s[start..end].replace(' ', "")
    };
    let table_of = |s: &str| {
        let start = s.find(" on ").map_or(0, |i| i + 4);
        let end = s.find('(').unwrap_or(s.len()).max(start);
        s[start..end]
            .trim()
            .trim_matches(['"', '`', '[', ']'])
            .to_string()
    };
    if unique(&w) != unique(&h)
        || table_of(&w) != table_of(&h)
        || (where_of(&w).is_some() && where_of(&w) != where_of(&h))
        || (name == catalog::DEDUP_INDEX && keys_of(&w) != keys_of(&h))
    {
        IndexDiff::Breaks
    } else {
        IndexDiff::Harmless
    }
}

/// Does the catalog index exist under its name with a definition that
/// breaks a CoreScope statement (see [`index_diff`])?
pub fn index_breaks(conn: &Connection, i: &catalog::IndexDef) -> rusqlite::Result<bool> {
    Ok(stored_sql(conn, "index", i.name)?
        .is_some_and(|have| index_diff(i.name, i.sql, &have) == IndexDiff::Breaks))
}

fn strip_if_not_exists(sql: &str) -> String {
    for kind in ["TABLE", "UNIQUE INDEX", "INDEX", "VIEW", "TRIGGER"] {
        let prefix = format!("CREATE {kind} ");
        let upper = sql.to_ascii_uppercase();
        if upper.starts_with(&prefix) && upper[prefix.len()..].starts_with("IF NOT EXISTS ") {
            return format!("{}{}", &sql[..prefix.len()], &sql[prefix.len() + 14..]);
        }
    }
    sql.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_diff_tells_breaking_from_harmless() {
        let dedup = "CREATE UNIQUE INDEX IF NOT EXISTS idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''))";
        let d = |have: &str| index_diff(catalog::DEDUP_INDEX, dedup, have);
        assert_eq!(d("CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id,observer_idx,COALESCE(path_json,''))"), IndexDiff::Harmless);
        assert_eq!(d("CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''))"), IndexDiff::Same);
        assert_eq!(d("CREATE UNIQUE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, path_json)"), IndexDiff::Breaks);
        assert_eq!(d("CREATE INDEX idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''))"), IndexDiff::Breaks);
        assert_eq!(d("CREATE UNIQUE INDEX idx_observations_dedup ON obs2(transmission_id, observer_idx, COALESCE(path_json, ''))"), IndexDiff::Breaks);
        let partial = "CREATE INDEX IF NOT EXISTS idx_tx_channel_hash ON transmissions(channel_hash) WHERE payload_type = 5";
        let p = |have: &str| index_diff("idx_tx_channel_hash", partial, have);
        assert_eq!(p("CREATE INDEX idx_tx_channel_hash ON transmissions(channel_hash) WHERE payload_type=5"), IndexDiff::Harmless);
        assert_eq!(
            p("CREATE INDEX idx_tx_channel_hash ON transmissions(channel_hash)"),
            IndexDiff::Breaks
        );
        assert_eq!(p("CREATE INDEX idx_tx_channel_hash ON transmissions(channel_hash) WHERE payload_type = 4"), IndexDiff::Breaks);
        assert_eq!(p("CREATE INDEX idx_tx_channel_hash ON transmissions(payload_type, channel_hash) WHERE payload_type = 5"), IndexDiff::Harmless);
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn drift_names_what_differs() {
        assert_eq!(drift_of(v(&["a", "B"]), v(&["A", "b"])), None);
        assert_eq!(drift_of(v(&["a"]), v(&[])), None, "missing table: no drift");
        let d = drift_of(v(&["a", "b", "scope"]), v(&["b", "a", "note"])).unwrap();
        assert_eq!(
            d.describe(),
            "nodes has 3 columns, inactive_nodes 3; only in nodes: scope; only in inactive_nodes: note; \
             first difference at column 1: nodes.a vs inactive_nodes.b"
        );
        let d = drift_of(v(&["a", "b"]), v(&["a"])).unwrap();
        assert_eq!(
            d.describe(),
            "nodes has 2 columns, inactive_nodes 1; only in nodes: b"
        );
    }

    #[test]
    fn duplicate_groups_ignore_null_observer_idx() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE observations (id INTEGER PRIMARY KEY, transmission_id INTEGER, observer_idx INTEGER, path_json TEXT);
             INSERT INTO observations (transmission_id, observer_idx, path_json) VALUES
               (1, NULL, '[]'), (1, NULL, '[]'), (1, 2, NULL), (1, 2, ''), (1, 2, ''), (1, 3, '[]');",
        )
        .unwrap();
        assert_eq!(duplicate_dedup_groups(&c).unwrap(), (1, 2));
        // A text observer_idx naming observer rowid 2 joins that group once mapped.
        c.execute_batch(
            "CREATE TABLE observers (id TEXT PRIMARY KEY);
             INSERT INTO observers (rowid, id) VALUES (1, 'AA'), (2, 'Bb'), (3, 'cc'), (4, 'CC');
             INSERT INTO observations (transmission_id, observer_idx, path_json) VALUES
               (1, 'BB', ''), (1, 'cc', '[]'), (1, 'CC', '[]');",
        )
        .unwrap();
        assert_eq!(duplicate_dedup_groups(&c).unwrap(), (1, 2));
        // 'cc'/'CC' are ambiguous (two observers): stay text, but still
        // differ from each other; 'BB' maps to 2 and joins the (1, 2, '') group.
        assert_eq!(duplicate_dedup_groups_after_repair(&c).unwrap(), (1, 3));
    }
}
