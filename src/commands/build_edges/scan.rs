//! Reading observations into edge candidates (plain reads, outside any
//! write lock). Reading ([`read`]) and extracting ([`RowBatch::extract`])
//! are separate steps so that a rebuild can run them on two threads: the
//! reader copies the columns of each row into a [`RowBatch`] (one buffer
//! per chunk of rows, no allocation per row), the extractor turns a batch
//! into candidates.

use anyhow::Context;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::agg::Agg;
use crate::edges::{self, ObsInput, PrefixIndex};
use crate::packet;
use crate::store::backfill_state;
use crate::store::values::{epoch, int, text};

/// The scan: every observation after ?1 (at most ?2), with what it may
/// wait for (column 7) and its transmission id (column 8).
///
/// Column 7 is `backfill_state::edges_wait_sql_deferred`: the wait rule
/// with an ADVERT's `decoded_json` key test left out (`EDGES_WAIT_CHECK_KEY`).
/// That test parses the JSON in SQLite; it is a function of the
/// transmission alone, so [`read`] evaluates it once per transmission
/// ([`KeyUsable`]) instead of once per observation (most of the scan's
/// SQLite time otherwise, with ADVERT keys still NULL), and without SQLite
/// where the answer is certain (`edges::decoded_key_certainly_usable`).
fn scan_sql() -> String {
    format!(
        "SELECT o.id, o.timestamp, o.path_json, t.payload_type,
       CASE WHEN t.payload_type = 4 THEN t.from_pubkey END,
       CASE WHEN t.payload_type = 4 AND (t.from_pubkey IS NULL OR t.from_pubkey = '')
            THEN t.decoded_json END,
       ob.id,
       {},
       o.transmission_id
  FROM observations o
  LEFT JOIN transmissions t ON t.id = o.transmission_id
  LEFT JOIN observers ob ON ob.rowid = o.observer_idx
 WHERE o.id > ?1
 ORDER BY o.id
 LIMIT ?2",
        backfill_state::edges_wait_sql_deferred()
    )
}

/// `decoded_key_usable` of one transmission's `decoded_json` (bound as
/// ?1: the value column 5 of [`scan_sql`] returns for such a row, which is
/// `t.decoded_json` itself), memoized per transmission id for one read
/// (one statement, one snapshot: a transmission's row cannot change within
/// it).
struct KeyUsable {
    memo: crate::edges::FnvMap<i64, bool>,
}

/// Transmissions [`KeyUsable`] remembers before it starts over.
const KEY_MEMO_MAX: usize = 4096;

impl KeyUsable {
    fn usable(
        &mut self,
        conn: &Connection,
        tx_id: Option<i64>,
        decoded_json: ValueRef<'_>,
    ) -> anyhow::Result<bool> {
        if let Some(&u) = tx_id.and_then(|id| self.memo.get(&id)) {
            return Ok(u);
        }
        // Most documents are decided without SQLite (see the function).
        let certain = match decoded_json {
            ValueRef::Text(b) => {
                std::str::from_utf8(b).is_ok_and(edges::decoded_key_certainly_usable)
            }
            _ => false,
        };
        let u = certain || backfill_state::decoded_key_usable_in_sqlite(conn, decoded_json)?;
        if let Some(id) = tx_id {
            if self.memo.len() >= KEY_MEMO_MAX {
                self.memo.clear();
            }
            self.memo.insert(id, u);
        }
        Ok(u)
    }
}

/// What one scan batch saw.
#[derive(Debug, Default)]
pub struct Scanned {
    pub rows: u64,
    pub candidates: u64,
    pub trace_skipped: u64,
    pub last_id: i64,
    /// The scan stopped before this observation: a backfill (the task
    /// named) will still change what build-edges reads from it.
    pub waiting: Option<(&'static str, i64)>,
}

/// What a run did, summed over its batches.
#[derive(Debug, Default)]
pub struct Totals {
    pub scanned: u64,
    pub candidates: u64,
    pub trace_skipped: u64,
    pub upserted: u64,
    pub new: u64,
    pub batches: u64,
    pub discarded: u64,
    pub transactions: u64,
    /// Where the run stopped to wait for a backfill (task, observation id).
    pub waiting: Option<(&'static str, i64)>,
}

impl Totals {
    pub fn add_scan(&mut self, s: &Scanned) {
        self.scanned += s.rows;
        self.candidates += s.candidates;
        self.trace_skipped += s.trace_skipped;
        self.batches += 1;
        self.waiting = s.waiting;
    }

    pub fn add_written(&mut self, (upserted, new): (u64, u64)) {
        self.upserted += upserted;
        self.new += new;
    }
}

/// Rows per [`RowBatch`] handed on by [`read`].
pub const CHUNK_ROWS: usize = 2048;
/// Bytes of column text per [`RowBatch`] beyond which it is handed on early
/// (keeps a chunk of long `decoded_json` values small).
const CHUNK_BYTES: usize = 1 << 20;

/// A column's bytes inside [`RowBatch::bytes`]: only TEXT values (any
/// other storage class is no value, as `values::text` reads it).
type Span = Option<(usize, usize)>;

/// The columns of one observation that extraction reads.
#[derive(Debug, Clone, Copy)]
struct RawRow {
    payload_type: Option<i64>,
    ts: Option<i64>,
    from_pubkey: Span,
    decoded_json: Span,
    observer_id: Span,
    path_json: Span,
}

/// Observations as read, their text columns copied into one buffer.
#[derive(Debug, Default)]
pub struct RowBatch {
    bytes: Vec<u8>,
    rows: Vec<RawRow>,
}

impl RowBatch {
    fn span(&mut self, v: ValueRef<'_>) -> Span {
        match v {
            ValueRef::Text(t) => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(t);
                Some((start, self.bytes.len()))
            }
            _ => None,
        }
    }

    /// TEXT as `&str`; invalid UTF-8 is no value (as `values::text`).
    fn text(&self, s: Span) -> Option<&str> {
        s.and_then(|(a, b)| std::str::from_utf8(&self.bytes[a..b]).ok())
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    /// Worth keeping for another chunk: not grown far past a chunk's size
    /// by one huge value.
    pub fn reusable(&self) -> bool {
        self.bytes.capacity() <= 2 * CHUNK_BYTES
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.rows.clear();
    }

    /// Adds the candidates of every row to `agg`; returns how many.
    pub fn extract(&self, idx: &PrefixIndex, agg: &mut Agg) -> u64 {
        let mut n = 0u64;
        for r in &self.rows {
            let obs = ObsInput {
                payload_type: r.payload_type,
                from_pubkey: self.text(r.from_pubkey),
                decoded_json: self.text(r.decoded_json),
                observer_id: self.text(r.observer_id),
                path_json: self.text(r.path_json),
            };
            edges::extract_each(&obs, idx, |x, y| {
                n += 1;
                agg.add(x, y, r.ts);
            });
        }
        n
    }
}

/// Reads up to `limit` observations after `after`, stopping before the
/// first one a backfill will still change (never counted before the
/// backfill has visited it). Hands the rows to `sink` in batches of at most
/// [`CHUNK_ROWS`] (TRACE rows are counted, not handed on); `sink` takes
/// what it keeps and leaves an empty batch in its place. `candidates` of
/// the result is 0: the sink extracts.
pub fn read(
    conn: &Connection,
    after: i64,
    limit: usize,
    mut sink: impl FnMut(&mut RowBatch) -> anyhow::Result<()>,
) -> anyhow::Result<Scanned> {
    let (pj, fp) = backfill_state::edges_wait_cursors(conn)?;
    let mut st = conn.prepare_cached(&scan_sql())?;
    let mut rows = st.query(rusqlite::params![after, limit as i64, pj, fp])?;
    let mut b = Scanned {
        last_id: after,
        ..Default::default()
    };
    let mut batch = RowBatch::default();
    let mut keys = KeyUsable {
        memo: crate::edges::FnvMap::default(),
    };
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let mut wait: i64 = r.get(7)?;
        if wait == backfill_state::EDGES_WAIT_CHECK_KEY {
            wait = if keys.usable(conn, int(r.get_ref(8)?), r.get_ref(5)?)? {
                0
            } else {
                backfill_state::EDGES_WAIT_FROM_PUBKEY
            };
        }
        if let Some(task) = backfill_state::edges_wait_task(wait) {
            b.waiting = Some((task, id));
            break;
        }
        b.rows += 1;
        b.last_id = id;
        let payload_type = int(r.get_ref(3)?);
        if packet::stored_payload_type(payload_type) == Some(packet::PAYLOAD_TRACE) {
            b.trace_skipped += 1;
            continue;
        }
        let row = RawRow {
            payload_type,
            ts: epoch(r.get_ref(1)?),
            from_pubkey: batch.span(r.get_ref(4)?),
            decoded_json: batch.span(r.get_ref(5)?),
            observer_id: batch.span(r.get_ref(6)?),
            path_json: batch.span(r.get_ref(2)?),
        };
        batch.rows.push(row);
        if batch.len() >= CHUNK_ROWS || batch.bytes.len() >= CHUNK_BYTES {
            sink(&mut batch)?;
            batch.clear();
        }
    }
    if batch.len() > 0 {
        sink(&mut batch)?;
    }
    Ok(b)
}

/// [`read`] and extract on this thread, into `agg` (the incremental pass).
pub fn scan(
    conn: &Connection,
    idx: &PrefixIndex,
    after: i64,
    limit: usize,
    agg: &mut Agg,
) -> anyhow::Result<Scanned> {
    let mut candidates = 0u64;
    let mut b = read(conn, after, limit, |batch| {
        candidates += batch.extract(idx, agg);
        Ok(())
    })?;
    b.candidates = candidates;
    Ok(b)
}

/// The prefix index of every node's public key.
pub fn load_index(conn: &Connection) -> anyhow::Result<PrefixIndex> {
    load_keys(conn).context("loading the node prefix index")
}

fn load_keys(conn: &Connection) -> anyhow::Result<PrefixIndex> {
    let mut st = conn.prepare("SELECT public_key FROM nodes")?;
    let mut rows = st.query([])?;
    let mut keys = Vec::new();
    while let Some(r) = rows.next()? {
        if let Some(k) = text(r.get_ref(0)?) {
            keys.push(k.to_string());
        }
    }
    Ok(PrefixIndex::new(keys))
}

/// The highest observation id (0 without observations).
pub fn max_observation_id(conn: &Connection) -> anyhow::Result<i64> {
    Ok(
        conn.query_row("SELECT COALESCE(MAX(id), 0) FROM observations", [], |r| {
            r.get(0)
        })?,
    )
}

#[cfg(test)]
mod tests {
    use crate::edges::decoded_key_certainly_usable;
    use crate::store::backfill_state::decoded_key_usable_in_sqlite;
    use crate::store::values::{epoch, text};
    use rusqlite::types::ValueRef;

    /// The Rust shortcut never says "usable" where SQLite's rule does not,
    /// and it decides the usual ADVERT documents itself.
    #[test]
    fn key_shortcut_agrees_with_the_sql_rule() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let k = "0123456789abcdefABCDEF".repeat(3)[..64].to_string();
        let usual = [
            format!(
                r#"{{"type":"ADVERT","pubKey":"{k}","name":"Node 7","lat":37.5,"lon":-122.1}}"#
            ),
            format!(r#" {{ "pubKey" : "{k}" }} "#),
            format!(
                r#"{{"a":[1,{{"b":null}}],"pubKey":"{}"}}"#,
                k.to_lowercase()
            ),
            format!(r#"{{"pubKey":"{k}","name":"Zürich ☃"}}"#),
        ];
        for doc in &usual {
            assert!(decoded_key_certainly_usable(doc), "{doc}");
            assert!(decoded_key_usable_in_sqlite(&c, ValueRef::Text(doc.as_bytes())).unwrap());
        }
        // Left to SQLite: escapes, a repeated key, or the text "pubKey"
        // twice; and every document the rule rejects.
        let short = &k[..63];
        let others = [
            format!(r#"{{"pub\u004bey":"{k}"}}"#),
            format!(r#"{{"pubKey":"{k}","name":"a\"b"}}"#),
            format!(r#"{{"pubKey":"{}","pubKey":"{k}"}}"#, "z".repeat(64)),
            format!(r#"{{"pubKey":"{k}","pubKey":"{}"}}"#, "z".repeat(64)),
            format!(r#"{{"pubKey":"{k}","name":"pubKey"}}"#),
            format!(r#"{{"inner":{{"pubKey":"{k}"}}}}"#),
            format!(r#"{{"pubKey":"{short}"}}"#),
            format!(r#"{{"pubKey":"{k}0"}}"#),
            format!(r#"{{"pubKey":" {short}"}}"#),
            format!(r#"{{"pubKey":"{}g"}}"#, short),
            r#"{"pubKey":12}"#.to_string(),
            r#"{"pubKey":null}"#.to_string(),
            format!(r#"["pubKey","{k}"]"#),
            format!(r#"{{"pubKey":"{k}"}} x"#),
            format!(r#"{{"pubKey":"{k}","#),
            format!("{{\"pubKey\":\"{k}\",\"n\":\"\t\"}}"),
            format!(r"{{'pubKey':'{k}'}}"),
            format!(r#"{{pubKey:"{k}"}}"#),
            String::new(),
        ];
        for doc in &others {
            assert!(!decoded_key_certainly_usable(doc), "{doc}");
        }
        let sql: Vec<bool> = others
            .iter()
            .map(|d| decoded_key_usable_in_sqlite(&c, ValueRef::Text(d.as_bytes())).unwrap())
            .collect();
        // SQLite: the escaped key and the escaped name are fine, and of a
        // repeated key the first counts; JSON5 documents are not valid JSON.
        assert_eq!(
            sql,
            [
                true, true, false, true, true, false, false, false, false, false, false, false,
                false, false, false, false, false, false, false
            ]
        );
        assert!(decoded_key_usable_in_sqlite(&c, ValueRef::Null).is_ok_and(|u| !u));
    }

    #[test]
    fn epoch_tolerates_storage_classes() {
        assert_eq!(epoch(ValueRef::Integer(5)), Some(5));
        assert_eq!(epoch(ValueRef::Real(5.9)), Some(5));
        assert_eq!(epoch(ValueRef::Text(b"1970-01-01T00:00:10Z")), Some(10));
        assert_eq!(epoch(ValueRef::Text(b"junk")), None);
        assert_eq!(epoch(ValueRef::Null), None);
        assert_eq!(text(ValueRef::Blob(b"x")), None);
        assert_eq!(text(ValueRef::Text(b"x")), Some("x"));
        assert_eq!(text(ValueRef::Text(&[0xff, 0xfe])), None);
    }
}
