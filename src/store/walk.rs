//! Generic batched walks on the [`Engine`]: the loops write jobs repeat,
//! written once. Each batch is one [`Engine::batch`] transaction (lock
//! budget, fairness pause, checkpoint rule), sized by the lock budget, and
//! carries its own position (a key cursor, a rowid range, or a condition the
//! batch itself makes false), so a run killed or stopped by the deadline
//! between batches loses nothing and the next run resumes where the data
//! says.

use rusqlite::Transaction;

use super::engine::Engine;

/// How a walk ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Walk {
    /// Rows changed, as the batches counted them.
    pub changed: i64,
    /// The walk reached its end (not stopped by `--max-seconds`).
    pub complete: bool,
}

/// One batch of a cursor walk ([`Engine::walk_cursor`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CursorBatch {
    /// Key of the last row the batch saw (the cursor for the next one).
    pub last: Option<i64>,
    /// Rows the batch saw.
    pub seen: usize,
    /// Rows it changed.
    pub changed: i64,
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Run `sql` (one parameter, ?1) once for each key; returns the rows
/// changed. The body of a batch that updates a list of keys.
pub fn execute_each<K: rusqlite::ToSql>(
    tx: &Transaction<'_>,
    sql: &str,
    keys: &[K],
) -> anyhow::Result<i64> {
    let mut st = tx.prepare_cached(sql)?;
    let mut changed = 0;
    for k in keys {
        changed += to_i64(st.execute([k])?);
    }
    Ok(changed)
}

/// The body of a cursor-walk batch over `rows` (`(key, data)`, in key
/// order): each row for which `value(data)` gives a value is updated by
/// `sql` (?1 = the value, ?2 = the key).
pub fn update_keyed<R, V: rusqlite::ToSql>(
    tx: &Transaction<'_>,
    sql: &str,
    rows: &[(i64, R)],
    mut value: impl FnMut(&R) -> Option<V>,
) -> anyhow::Result<CursorBatch> {
    let mut st = tx.prepare_cached(sql)?;
    let mut changed = 0;
    for (key, data) in rows {
        if let Some(v) = value(data) {
            changed += to_i64(st.execute(rusqlite::params![v, key])?);
        }
    }
    Ok(CursorBatch {
        last: rows.last().map(|r| r.0),
        seen: rows.len(),
        changed,
    })
}

impl Engine<'_> {
    /// Walk a table by an ascending key cursor: `step(tx, after, limit)`
    /// handles up to `limit` rows with a key above `after` (starting at
    /// `start`). Ends at the first short batch or at the deadline.
    pub fn walk_cursor(
        &mut self,
        start: i64,
        mut step: impl FnMut(&Transaction<'_>, i64, usize) -> anyhow::Result<CursorBatch>,
    ) -> anyhow::Result<Walk> {
        let mut walk = Walk::default();
        let mut cursor = start;
        while !self.expired() {
            let n = self.batch_size();
            let b = self.batch(|tx| {
                let b = step(tx, cursor, n)?;
                Ok((b, b.seen))
            })?;
            walk.changed += b.changed;
            match b.last {
                Some(l) if b.seen == n => cursor = l,
                _ => {
                    walk.complete = true;
                    break;
                }
            }
        }
        Ok(walk)
    }

    /// Run `sql` (?1 = lower rowid, inclusive; ?2 = upper, exclusive) over
    /// the rowids `table` has now, in adaptive ranges. Ends after the
    /// highest rowid or at the deadline.
    pub fn walk_rowid_ranges(&mut self, table: &str, sql: &str) -> anyhow::Result<Walk> {
        let (lo, hi): (Option<i64>, Option<i64>) = self.conn().query_row(
            &format!("SELECT min(rowid), max(rowid) FROM {table}"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut walk = Walk {
            changed: 0,
            complete: true,
        };
        let (Some(mut lo), Some(hi)) = (lo, hi) else {
            return Ok(walk);
        };
        while lo <= hi {
            if self.expired() {
                walk.complete = false;
                break;
            }
            let n = self.batch_size();
            let end = lo.saturating_add(to_i64(n));
            walk.changed += self.batch(|tx| {
                let changed = tx.execute(sql, rusqlite::params![lo, end])?;
                Ok((to_i64(changed), n))
            })?;
            lo = end;
        }
        Ok(walk)
    }

    /// Repeat `step(tx, limit)` (handles up to `limit` rows that still match
    /// its condition and makes them stop matching; returns rows seen and
    /// rows changed) until a batch sees fewer than `limit`, or the deadline.
    pub fn walk_until_short(
        &mut self,
        mut step: impl FnMut(&Transaction<'_>, usize) -> anyhow::Result<(usize, i64)>,
    ) -> anyhow::Result<Walk> {
        let mut walk = Walk::default();
        while !self.expired() {
            let n = self.batch_size();
            let (seen, changed) = self.batch(|tx| {
                let r = step(tx, n)?;
                Ok((r, r.0))
            })?;
            walk.changed += changed;
            if seen < n {
                walk.complete = true;
                break;
            }
        }
        Ok(walk)
    }

    /// Hand `keys` to `step` in consecutive chunks sized by the lock budget,
    /// one transaction each; `step` returns its result and the rows it saw.
    /// Returns the results in order and whether every key was handed out
    /// (false: stopped by the deadline).
    pub fn walk_keys<K, T>(
        &mut self,
        keys: &[K],
        mut step: impl FnMut(&Transaction<'_>, &[K]) -> anyhow::Result<(T, usize)>,
    ) -> anyhow::Result<(Vec<T>, bool)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < keys.len() {
            if self.expired() {
                return Ok((out, false));
            }
            let n = self.batch_size().min(keys.len() - i);
            let chunk = &keys[i..i + n];
            out.push(self.batch(|tx| step(tx, chunk))?);
            i += n;
        }
        Ok((out, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::batch::Deadline;
    use crate::store::engine::{Settings, Target};
    use crate::store::open::tests::tmpdb;
    use crate::store::{OpenOptions, WriteDb};

    fn settings(max_seconds: Option<f64>) -> Settings {
        Settings {
            max_lock_ms: 1,
            deadline: Deadline::new(max_seconds),
        }
    }

    fn fill(db: &mut WriteDb, n: i64) {
        db.write(|tx| {
            for i in 0..n {
                tx.execute("INSERT INTO transmissions(x) VALUES (?1)", [i.to_string()])?;
            }
            Ok(())
        })
        .unwrap();
    }

    fn count(e: &Engine<'_>, sql: &str) -> i64 {
        e.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn walks_visit_every_row_once_in_several_batches() {
        let (_d, p) = tmpdb();
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        fill(&mut db, 120); // 121 rows with the one tmpdb has; first batches are 50
        let mut e = Engine::new(Target::Write(&mut db), settings(None)).unwrap();
        let all = Walk {
            changed: 121,
            complete: true,
        };
        let sql = "UPDATE transmissions SET x = 'r' WHERE rowid >= ?1 AND rowid < ?2";
        assert_eq!(e.walk_rowid_ranges("transmissions", sql).unwrap(), all);
        let w = e
            .walk_cursor(i64::MIN, |tx, after, n| {
                let rows: Vec<(i64, ())> = tx
                    .prepare(
                        "SELECT rowid FROM transmissions WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                    )?
                    .query_map(rusqlite::params![after, to_i64(n)], |r| Ok((r.get(0)?, ())))?
                    .collect::<rusqlite::Result<_>>()?;
                let sql = "UPDATE transmissions SET x = x || ?1 WHERE rowid = ?2";
                update_keyed(tx, sql, &rows, |()| Some("c"))
            })
            .unwrap();
        assert_eq!(w, all);
        let w = e
            .walk_until_short(|tx, n| {
                let c = tx.execute(
                    "UPDATE transmissions SET x = 'u' WHERE rowid IN (SELECT rowid FROM transmissions WHERE x = 'rc' LIMIT ?1)",
                    [to_i64(n)],
                )?;
                Ok((c, to_i64(c)))
            })
            .unwrap();
        assert_eq!(w, all);
        let keys: Vec<i64> = (1..=121).collect();
        let (parts, complete) = e
            .walk_keys(&keys, |tx, chunk| {
                let sql = "UPDATE transmissions SET x = 'k' WHERE rowid = ?1";
                Ok((execute_each(tx, sql, chunk)?, chunk.len()))
            })
            .unwrap();
        assert!(complete);
        assert_eq!(parts.iter().sum::<i64>(), 121);
        assert_eq!(
            count(&e, "SELECT count(*) FROM transmissions WHERE x = 'k'"),
            121
        );
        assert!(e.stats(true).transactions >= 5);
    }

    #[test]
    fn walks_stop_at_the_deadline_without_writing() {
        let (_d, p) = tmpdb();
        let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
        let mut e = Engine::new(Target::Write(&mut db), settings(Some(0.0))).unwrap();
        let sql = "UPDATE transmissions SET x = 'r' WHERE rowid >= ?1 AND rowid < ?2";
        assert_eq!(
            e.walk_rowid_ranges("transmissions", sql).unwrap(),
            Walk::default()
        );
        let (parts, complete) = e.walk_keys(&[1, 2], |_, c| Ok((c.len(), c.len()))).unwrap();
        assert!(parts.is_empty() && !complete);
        assert!(!e.walk_until_short(|_, _| Ok((0, 0))).unwrap().complete);
        assert!(
            !e.walk_cursor(0, |_, _, _| Ok(CursorBatch::default()))
                .unwrap()
                .complete
        );
        assert_eq!(e.stats(false).transactions, 0);
    }
}
