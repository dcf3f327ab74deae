use super::*;
use crate::store::precheck::{path_too_long, SQLITE_MAX_PATH};

pub(crate) fn tmpdb() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.db");
    let c = Connection::open(&p).unwrap();
    c.execute_batch(
        "CREATE TABLE transmissions(id INTEGER PRIMARY KEY, raw_hex TEXT, hash TEXT, first_seen TEXT, x TEXT);
         CREATE TABLE observations(id INTEGER PRIMARY KEY, transmission_id INTEGER, timestamp INTEGER);
         CREATE TABLE nodes(public_key TEXT PRIMARY KEY);
         CREATE TABLE observers(id TEXT PRIMARY KEY);
         INSERT INTO transmissions(x) VALUES ('a');",
    )
    .unwrap();
    (dir, p)
}

/// Rows in the test database's `transmissions`.
pub(crate) fn transmissions(conn: &Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM transmissions", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn read_only_handle_refuses_writes() {
    let (_d, p) = tmpdb();
    let db = ReadOnlyDb::open(&p, 1000).unwrap();
    let e = db
        .prepare("DELETE FROM transmissions")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("refusing a write statement"), "{e}");
    assert!(db
        .prepare("INSERT INTO transmissions(x) VALUES ('b')")
        .is_err());
    assert!(db.prepare("CREATE TABLE z(a)").is_err());
    // Even through the crate-internal reader, SQLite refuses (read-only + query_only).
    assert!(db
        .reader()
        .execute("DELETE FROM transmissions", [])
        .is_err());
    assert_eq!(transmissions(db.reader()), 1);
}

#[test]
fn write_records_hold_and_rolls_back() {
    let (_d, p) = tmpdb();
    let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
    let r: anyhow::Result<()> = db.write(|tx| {
        tx.execute("INSERT INTO transmissions(x) VALUES ('b')", [])?;
        anyhow::bail!("boom")
    });
    assert!(r.is_err());
    assert_eq!(transmissions(db.conn()), 1);
    db.write(|tx| {
        std::thread::sleep(Duration::from_millis(5));
        tx.execute("INSERT INTO transmissions(x) VALUES ('c')", [])?;
        Ok(())
    })
    .unwrap();
    assert!(db.max_lock_hold_ms() >= 5.0);
    assert_eq!(db.transactions(), 2);
}

#[test]
fn last_hold_is_the_transaction_not_the_pause_after_it() {
    let (_d, p) = tmpdb();
    let mut db = WriteDb::open(&p, &OpenOptions::default()).unwrap();
    let t0 = Instant::now();
    for _ in 0..2 {
        db.write(|tx| {
            std::thread::sleep(Duration::from_millis(30));
            tx.execute("INSERT INTO transmissions(x) VALUES ('d')", [])?;
            Ok(())
        })
        .unwrap();
    }
    let wall = t0.elapsed();
    let held = db.last_hold();
    assert!(held >= Duration::from_millis(30));
    // The second write waited, before its transaction, for one step of
    // SQLite's busy handler at the first hold (15 ms at 30 ms) plus the
    // slack; last_hold counts only the transaction.
    let pause = crate::store::engine::fairness_pause(held);
    assert!(pause >= Duration::from_millis(18), "{pause:?}");
    assert!(
        wall >= Duration::from_millis(60) + pause,
        "{wall:?} vs 2 × 30 ms + {pause:?}"
    );
}

#[test]
fn classified_open_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let e = ReadOnlyDb::open(&missing, 100).err().unwrap().to_string();
    assert!(e.contains("does not exist") && e.contains("nope.db"), "{e}");
    assert!(!missing.exists());
    let e = WriteDb::open(&missing, &OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    assert!(!missing.exists());
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let e = ReadOnlyDb::open(&empty, 100).err().unwrap().to_string();
    assert!(e.contains("empty file"), "{e}");
    let text = dir.path().join("t.txt");
    std::fs::write(&text, b"hello world, this is not sqlite at all").unwrap();
    let e = ReadOnlyDb::open(&text, 100).err().unwrap().to_string();
    assert!(e.contains("not a SQLite database"), "{e}");
    let e = ReadOnlyDb::open(dir.path(), 100).err().unwrap().to_string();
    assert!(e.contains("is a directory"), "{e}");
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE foo(a)")
        .unwrap();
    let e = ReadOnlyDb::open(&other, 100).err().unwrap().to_string();
    assert!(
        e.contains("not a CoreScope database") && e.contains("transmissions"),
        "{e}"
    );
}

/// A directory path whose full form is exactly `len` bytes with `name`.
fn path_of_len(base: &Path, len: usize) -> PathBuf {
    let mut p = std::fs::canonicalize(base).unwrap();
    loop {
        let left = len - p.as_os_str().len() - 1;
        if left <= 200 {
            return p.join("f".repeat(left));
        }
        p = p.join("d".repeat(100));
        std::fs::create_dir_all(&p).unwrap();
    }
}

#[test]
fn sqlite_path_limit_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let ok = path_of_len(dir.path(), SQLITE_MAX_PATH);
    assert_eq!(ok.as_os_str().len(), SQLITE_MAX_PATH);
    assert!(path_too_long(&ok).is_none());
    Connection::open(&ok)
        .and_then(|c| c.execute_batch("CREATE TABLE t(a)"))
        .unwrap();
    let long = path_of_len(dir.path(), SQLITE_MAX_PATH + 1);
    assert!(Connection::open(&long)
        .and_then(|c| c.execute_batch("CREATE TABLE t(a)"))
        .is_err());
    let e = path_too_long(&long).unwrap().to_string();
    assert!(e.contains("too long") && e.contains("505 bytes"), "{e}");
    // Refused before SQLite sees it: nothing is created.
    let e = WriteDb::open(
        &long,
        &OpenOptions {
            create: true,
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("too long for SQLite"), "{e}");
    assert!(!long.exists());
}

#[test]
fn core_schema_is_what_a_legacy_database_has() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/legacy-2026-03.db");
    let c = Connection::open_with_flags(&fixture, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    assert_eq!(core_missing(&c).unwrap(), (vec![], vec![]));
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(
        "CREATE TABLE transmissions(id INTEGER PRIMARY KEY);
         CREATE TABLE nodes(public_key TEXT PRIMARY KEY);",
    )
    .unwrap();
    let (tables, cols) = core_missing(&c).unwrap();
    assert_eq!(tables, ["observations", "observers"]);
    assert_eq!(
        cols,
        [
            "transmissions.raw_hex",
            "transmissions.hash",
            "transmissions.first_seen"
        ]
    );
}

#[test]
fn short_file_without_wal_is_truncated_with_a_garbage_wal_too() {
    let (d, p) = tmpdb();
    let c = Connection::open(&p).unwrap();
    c.execute_batch("CREATE TABLE pad(x); INSERT INTO pad VALUES (zeroblob(20000));")
        .unwrap();
    drop(c);
    let bytes = std::fs::read(&p).unwrap();
    let cut = d.path().join("cut.db");
    std::fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
    let e = ReadOnlyDb::open(&cut, 100).err().unwrap().to_string();
    assert!(e.contains("truncated") && e.contains("no WAL"), "{e}");
    // A -wal that is not a WAL (or an empty one) does not hold the pages.
    std::fs::write(wal_path(&cut), vec![7u8; 9000]).unwrap();
    let e = ReadOnlyDb::open(&cut, 100).err().unwrap().to_string();
    assert!(e.contains("truncated"), "{e}");
    std::fs::write(wal_path(&cut), b"").unwrap();
    let e = ReadOnlyDb::open(&cut, 100).err().unwrap().to_string();
    assert!(e.contains("truncated"), "{e}");
}
