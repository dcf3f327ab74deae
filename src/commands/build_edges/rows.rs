//! Writing aggregated pairs into an edge table (`neighbor_edges` or the
//! staging table).

use rusqlite::Transaction;

use super::agg::{time_text, IdRow};

/// How rows go into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Add to existing pairs (count summed, the later `last_seen` wins,
    /// compared as instants: stored values may be `….000Z`), insert the rest.
    Upsert,
    /// Plain inserts into a table known not to hold any of the pairs (a
    /// fresh staging table).
    InsertNew,
}

/// Writes `rows` into `table`; returns (upserted, new).
pub fn write_rows(
    tx: &Transaction<'_>,
    table: &str,
    how: Write,
    names: &[String],
    rows: &[IdRow],
) -> anyhow::Result<(u64, u64)> {
    let mut upd = match how {
        Write::InsertNew => None,
        Write::Upsert => Some(tx.prepare_cached(&format!(
            "UPDATE {table} SET count = COALESCE(count, 0) + ?3,
                    last_seen = CASE WHEN ?4 IS NOT NULL
                                      AND (unixepoch(last_seen) IS NULL OR unixepoch(last_seen) < unixepoch(?4))
                                     THEN ?4 ELSE last_seen END
              WHERE node_a = ?1 AND node_b = ?2"
        ))?),
    };
    let mut ins = tx.prepare_cached(&format!(
        "INSERT INTO {table} (node_a, node_b, count, last_seen) VALUES (?1, ?2, ?3, ?4)"
    ))?;
    let mut new = 0u64;
    for &(a, b, count, t) in rows {
        let params = rusqlite::params![names[a as usize], names[b as usize], count, time_text(t)];
        let updated = match upd.as_mut() {
            Some(u) => u.execute(params)? > 0,
            None => false,
        };
        if !updated {
            ins.execute(params)?;
            new += 1;
        }
    }
    Ok((rows.len() as u64, new))
}

#[cfg(test)]
mod tests {
    use super::super::agg::NO_TIME;
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn upsert_adds_counts_and_keeps_the_later_time() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE e (node_a TEXT NOT NULL, node_b TEXT NOT NULL, count INTEGER DEFAULT 1, last_seen TEXT, PRIMARY KEY (node_a, node_b));
             INSERT INTO e VALUES ('a', 'b', 2, '1970-01-01T00:00:10.000Z');",
        )
        .unwrap();
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let tx = c.transaction().unwrap();
        let r = write_rows(
            &tx,
            "e",
            Write::Upsert,
            &names,
            &[(0, 1, 3, 5), (0, 2, 1, NO_TIME)],
        )
        .unwrap();
        assert_eq!(r, (2, 1));
        let r = write_rows(&tx, "e", Write::Upsert, &names, &[(0, 1, 1, 20)]).unwrap();
        assert_eq!(r, (1, 0));
        let rows: Vec<(String, String, i64, Option<String>)> = tx
            .prepare("SELECT * FROM e ORDER BY node_a, node_b")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    "a".into(),
                    "b".into(),
                    6,
                    Some("1970-01-01T00:00:20Z".into())
                ),
                ("a".into(), "c".into(), 1, None),
            ]
        );
        assert!(write_rows(&tx, "e", Write::InsertNew, &names, &[(0, 2, 1, NO_TIME)]).is_err());
    }
}
