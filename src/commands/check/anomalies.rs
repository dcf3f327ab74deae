//! The warnings of `check`: data anomalies found in real databases, what
//! build-edges left, and vacuum/WAL health, each with what to do (every
//! code is explained in docs/database.md, "Anomalies `check` reports").
//!
//! Checks whose cost grows with the number of rows (whole-table scans) run
//! only under `check --deep`: each asks [`Scans::wants`] first, which
//! records it as run or as not scanned.

use rusqlite::Connection;
use serde::Serialize;

use crate::store::probe::{self, ObsShape};
use crate::store::{self, ReadOnlyDb};

/// One warning: a stable code and what it means / what to do.
#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    pub code: &'static str,
    pub message: String,
}

/// The anomaly classes that need a whole-table scan, in the order `check
/// --deep` runs them.
pub const DEEP_SCANS: &[&str] = &[
    "empty_edge_endpoint",
    "mixed_case_keys",
    "text_observer_idx",
    "zero_timestamp",
    "duplicate_dedup_keys",
    "orphan_observations",
    "null_last_packet_at",
    "pending_backfill",
];

/// Which whole-table scans run (`--deep`) and which were left out.
pub struct Scans {
    deep: bool,
    pub ran: Vec<&'static str>,
    pub not_scanned: Vec<&'static str>,
    progress: Option<indicatif::ProgressBar>,
}

impl Scans {
    pub fn new(deep: bool, progress: bool) -> Scans {
        Scans {
            deep,
            ran: Vec::new(),
            not_scanned: Vec::new(),
            progress: (deep && progress).then(|| {
                store::engine::progress_bar(DEEP_SCANS.len() as u64, "check --deep", "scans")
            }),
        }
    }

    /// Run the whole-table scan for `class`? Records the answer.
    pub fn wants(&mut self, class: &'static str) -> bool {
        debug_assert!(DEEP_SCANS.contains(&class), "{class} not in DEEP_SCANS");
        let list = if self.deep {
            &mut self.ran
        } else {
            &mut self.not_scanned
        };
        if !list.contains(&class) {
            list.push(class);
            if let Some(p) = &self.progress {
                p.set_message(class);
                p.inc(1);
            }
        }
        self.deep
    }

    /// Stop showing progress.
    pub fn finish(&mut self) {
        if let Some(p) = self.progress.take() {
            p.finish_and_clear();
        }
    }
}

/// What `build-edges` left or would trip over: the staging table of a
/// stopped `--rebuild`, old tables of earlier swaps not dropped yet, and a
/// watermark ahead of every observation (restored backup).
fn edge_build_state(conn: &Connection, w: &mut Vec<Warning>) -> anyhow::Result<()> {
    use crate::store::edge_state as be;
    if let Some(l) = be::interrupted_rebuild(conn)? {
        w.push(Warning {
            code: "interrupted_edges_rebuild",
            message: match l.resumable_after {
                Some(id) => format!(
                    "a `build-edges --rebuild` stopped part-way: its staging table {} holds {} rows, consistent up to observation {id}; readers still use the current neighbor_edges. `corescope build-edges --rebuild` resumes and finishes it (a plain `build-edges` keeps it)",
                    be::STAGING_TABLE, l.staging_rows
                ),
                None => format!(
                    "a `build-edges --rebuild` stopped part-way: its staging table {} holds {} rows and is not resumable; readers still use the current neighbor_edges. The next `corescope build-edges` (with or without --rebuild) drops it in short batches",
                    be::STAGING_TABLE, l.staging_rows
                ),
            },
        });
    }
    let old = be::old_tables(conn)?;
    if !old.is_empty() {
        w.push(Warning {
            code: "old_edge_tables",
            message: format!(
                "{} old neighbor_edges table(s) of an earlier rebuild are not dropped yet ({}); they only take space: the next `corescope build-edges` empties and drops them in short batches",
                old.len(),
                old.join(", ")
            ),
        });
    }
    edges_waiting(conn, w)?;
    if let Ok(Some((wm, ceiling))) = be::watermark_ahead(conn) {
        w.push(Warning {
            code: "edges_watermark_ahead",
            message: format!(
                "the build-edges watermark is observation {wm}, above the highest observation id there is or was ({ceiling}): the database was restored from an older backup or observations was rebuilt, and new observations up to id {wm} would never be counted. `corescope build-edges` refuses to run on it; run `corescope build-edges --rebuild` (it recounts every edge and resets the watermark)"
            ),
        });
    }
    Ok(())
}

/// Observations after the build-edges watermark that build-edges leaves
/// for later because a backfill will still change them (only on a database
/// that has the columns the rule reads).
fn edges_waiting(conn: &Connection, w: &mut Vec<Warning>) -> anyhow::Result<()> {
    use crate::store::backfill_state;
    use crate::store::edge_state as be;
    let o = store::columns(conn, "observations")?;
    let t = store::columns(conn, "transmissions")?;
    let all = |cols: &[String], names: &[&str]| names.iter().all(|n| cols.iter().any(|c| c == n));
    if !store::table_exists(conn, "neighbor_edges")?
        || !all(&o, &["transmission_id", "path_json", "raw_hex"])
        || !all(&t, &["payload_type", "from_pubkey"])
    {
        return Ok(());
    }
    let wm = be::read_watermark(conn, be::WATERMARK_KEY)
        .ok()
        .flatten()
        .unwrap_or(0);
    let found = backfill_state::edges_waiting(conn, wm)?;
    let waiting = &found.counts;
    if waiting.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = waiting
        .iter()
        .map(|(k, n)| format!("{n} for {k}"))
        .collect();
    let tasks: Vec<&str> = waiting.keys().map(String::as_str).collect();
    w.push(Warning {
        code: "edges_waiting_for_backfill",
        message: format!(
            "build-edges has counted observations up to {wm} and waits with the newer ones until the backfills have filled them ({}{}), so that none is counted with a value that is about to change; run `corescope backfill {}` (the hourly backfill timer does)",
            list.join(", "),
            if found.capped {
                format!(" among the next {} observations; more may wait", backfill_state::EDGES_WAITING_WINDOW)
            } else {
                String::new()
            },
            tasks.join(" ")
        ),
    });
    Ok(())
}

/// Data anomalies found in real databases and vacuum/WAL health, each with
/// what to do (docs/database.md lists every code).
pub fn anomalies(
    ro: &ReadOnlyDb,
    conn: &Connection,
    vacuum_on_startup: bool,
    s: &mut Scans,
) -> anyhow::Result<Vec<Warning>> {
    let mut w = Vec::new();
    data_anomalies(conn, s, &mut w)?;
    repair_anomalies(conn, s, &mut w)?;
    storage_health(ro, conn, vacuum_on_startup, &mut w)?;
    Ok(w)
}

/// The warning `warning` makes of the count when `sql` counts any rows.
fn warn_count(
    conn: &Connection,
    w: &mut Vec<Warning>,
    sql: &str,
    warning: impl FnOnce(i64) -> Warning,
) -> anyhow::Result<()> {
    let n: i64 = conn.query_row(sql, [], |r| r.get(0))?;
    if n > 0 {
        w.push(warning(n));
    }
    Ok(())
}

/// Shapes and values the ingestor or the server trip over.
fn data_anomalies(conn: &Connection, s: &mut Scans, w: &mut Vec<Warning>) -> anyhow::Result<()> {
    let shape = probe::observations_shape(conn)?;
    if shape == ObsShape::V2 {
        w.push(Warning {
            code: "observations_v2",
            message: "observations has the v2 shape of the retired Node.js backend; the CoreScope ingestor cannot run on it".into(),
        });
    }
    let ocols = store::columns(conn, "observations")?;
    let has_o = |c: &str| ocols.iter().any(|x| x == c);
    if store::table_exists(conn, "neighbor_edges")? && s.wants("empty_edge_endpoint") {
        warn_count(conn, w, "SELECT count(*) FROM neighbor_edges WHERE node_a = '' OR node_b = '' OR node_a IS NULL OR node_b IS NULL", |n| Warning { code: "empty_edge_endpoint", message: format!("{n} neighbor_edges rows have an empty endpoint (left by an older CoreScope server); they describe no real pair: `corescope build-edges --rebuild` drops them") })?;
    }
    if store::table_exists(conn, "neighbor_edges")? && s.wants("mixed_case_keys") {
        warn_count(conn, w, "SELECT count(*) FROM neighbor_edges WHERE node_a != lower(node_a) OR node_b != lower(node_b)", |n| Warning { code: "mixed_case_keys", message: format!("{n} neighbor_edges rows have upper-case endpoints; the server treats case variants as different nodes: `corescope build-edges --rebuild` rewrites them lower-case") })?;
    }
    edge_build_state(conn, w)?;
    if s.wants("mixed_case_keys") {
        warn_count(
            conn,
            w,
            "SELECT count(*) FROM nodes WHERE public_key != lower(public_key)",
            |n| {
                Warning { code: "mixed_case_keys", message: format!("{n} nodes have a public_key that is not lower-case; joins with from_pubkey and edges miss them; newer CoreScope ingestors lower-case them at start") }
            },
        )?;
    }
    if has_o("observer_idx") && s.wants("text_observer_idx") {
        let (total, matching) = probe::text_observer_idx(conn)?;
        if total > 0 {
            w.push(Warning {
                code: "text_observer_idx",
                message: format!("{total} observations hold an observer id as TEXT in observer_idx instead of observers.rowid ({matching} match an observer exactly); joins find no observer: `corescope migrate` maps the matching ones, the rest are left"),
            });
        }
    }
    if has_o("timestamp") && s.wants("zero_timestamp") {
        warn_count(
            conn,
            w,
            "SELECT count(*) FROM observations WHERE timestamp = 0",
            |n| {
                Warning { code: "zero_timestamp", message: format!("{n} observations have timestamp 0 (1970); edge times, retention and watermarks see them as old; corescope never invents times") }
            },
        )?;
    }
    Ok(())
}

/// What `corescope migrate` or another command repairs or left to finish.
fn repair_anomalies(conn: &Connection, s: &mut Scans, w: &mut Vec<Warning>) -> anyhow::Result<()> {
    let ocols = store::columns(conn, "observations")?;
    let has_o = |c: &str| ocols.iter().any(|x| x == c);
    // While the UNIQUE index exists there can be no duplicates: not scanned
    // for (an index of that name with another definition does not count).
    let dedup_holds = match crate::catalog::index(crate::catalog::DEDUP_INDEX) {
        Some(i) => !probe::index_missing(conn, i)? && !probe::index_breaks(conn, i)?,
        None => false,
    };
    if !dedup_holds && s.wants("duplicate_dedup_keys") {
        let (groups, surplus) = probe::duplicate_dedup_groups(conn)?;
        if groups > 0 {
            let sample = probe::duplicate_dedup_sample(conn, 3)?;
            w.push(Warning {
                code: "duplicate_dedup_keys",
                message: format!("{groups} groups ({surplus} surplus rows) of observations share (transmission_id, observer_idx, path_json), e.g. {}; idx_observations_dedup cannot be created and the ingestor cannot start until they are merged: `corescope migrate` merges each group the way the ingestor's UPSERT would have, keeping every removed row in {}", sample.join("; "), crate::catalog::MERGED_OBSERVATIONS),
            });
        }
    }
    if let Some(drift) = probe::nodes_drift(conn)? {
        w.push(Warning {
            code: "inactive_nodes_drift",
            message: format!(
                "inactive_nodes does not have the columns of nodes in the same order ({}); the ingestor's node retention \
                 (INSERT OR REPLACE INTO inactive_nodes SELECT * FROM nodes) fails or puts values into the wrong columns: \
                 `corescope migrate` rebuilds inactive_nodes in nodes' shape, keeping every row",
                drift.describe()
            ),
        });
    }
    for p in crate::store::shadow::pending(conn)? {
        w.push(Warning {
            code: "online_build_pending",
            message: if p.phase == "copy" {
                format!(
                    "an online index build of {} is pending (table {}, with triggers that copy every write to {} into it, which slows the ingestor's writes): `corescope migrate` finishes it, or removes it when it is no longer needed",
                    p.table, p.object, p.table
                )
            } else {
                format!(
                    "the table {} that an online index build of {} replaced is still being removed: `corescope migrate` finishes it",
                    p.object, p.table
                )
            },
        });
    }
    let stale = crate::store::edge_state::rebuild_reasons(conn)?;
    if !stale.is_empty() {
        w.push(Warning {
            code: "edges_need_rebuild",
            message: format!(
                "neighbor_edges counts observations as they were before a later change ({}; {} is set in {}): \
                 the next `corescope build-edges` rebuilds it automatically (as `corescope build-edges --rebuild`, which does it now)",
                stale.join("; "),
                crate::store::edge_state::NEEDS_REBUILD_KEY,
                store::STATE_TABLE
            ),
        });
    }
    if has_o("transmission_id") && s.wants("orphan_observations") {
        warn_count(conn, w, "SELECT count(*) FROM observations o WHERE NOT EXISTS (SELECT 1 FROM transmissions t WHERE t.id = o.transmission_id)", |n| Warning { code: "orphan_observations", message: format!("{n} observations reference a missing transmission; foreign keys are enforced by the ingestor, so these predate it; inspect with `corescope check --integrity`") })?;
    }
    let cols = store::columns(conn, "observers")?;
    if cols.iter().any(|c| c == "last_packet_at")
        && has_o("observer_idx")
        && s.wants("null_last_packet_at")
    {
        warn_count(conn, w, "SELECT count(*) FROM observers b WHERE b.last_packet_at IS NULL AND b.rowid IN (SELECT observer_idx FROM observations WHERE typeof(observer_idx) = 'integer')", |n| Warning { code: "null_last_packet_at", message: format!("{n} observers with observations have no last_packet_at; the observers_last_packet_at_v1 migration backfills it once") })?;
    }
    Ok(())
}

/// Vacuum, journal and WAL health, and indexes dropped upstream.
fn storage_health(
    ro: &ReadOnlyDb,
    conn: &Connection,
    vacuum_on_startup: bool,
    w: &mut Vec<Warning>,
) -> anyhow::Result<()> {
    let av = ro.pragma_i64("auto_vacuum")?;
    if av != 2 {
        w.push(Warning {
            code: "auto_vacuum_not_incremental",
            message: format!(
                "auto_vacuum is {} (not INCREMENTAL): deletes never shrink the file; convert once with `corescope vacuum --full` (needs about twice the file size free){}",
                match av { 0 => "NONE", 1 => "FULL", _ => "unknown" },
                if vacuum_on_startup {
                    "; note: the config sets db.vacuumOnStartup, so CoreScope will run this full VACUUM itself at its next start, without a disk-space check, blocking ingest for its duration"
                } else {
                    ""
                }
            ),
        });
    }
    let jm = ro.pragma_text("journal_mode")?;
    if !jm.eq_ignore_ascii_case("wal") {
        w.push(Warning {
            code: "journal_mode_not_wal",
            message: format!("journal_mode is {jm}, not WAL; the CoreScope ingestor switches it to WAL when it opens the file; corescope works in both and never changes it"),
        });
    }
    let path = ro.path();
    let wal = store::wal_path(path);
    if let (Ok(dbm), Ok(walm)) = (std::fs::metadata(path), std::fs::metadata(&wal)) {
        if walm.len() > dbm.len() {
            w.push(Warning {
                code: "wal_larger_than_db",
                message: format!("{} is {} bytes, larger than the database ({} bytes): checkpoints are not keeping up; run `corescope vacuum` or `prune --truncate-wal` when readers are idle", wal.display(), walm.len(), dbm.len()),
            });
        }
    }
    for (name, _) in crate::catalog::DROPPED_INDEXES {
        if store::object_exists(conn, "index", name)? {
            w.push(Warning {
                code: "obsolete_index",
                message: format!("index {name} was dropped upstream (it wastes cache); `corescope migrate` drops it"),
            });
        }
    }
    Ok(())
}
