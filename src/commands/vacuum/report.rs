//! The report of `corescope vacuum`: its `--json` keys and its human table.

use serde::Serialize;

use super::full::TempDir;
use crate::report::bytes;
use crate::report::{table, Report};
use crate::store::maintenance::{CheckpointResult, FileSizes, FreeSpace, VacuumResult};

#[derive(Debug, Serialize)]
pub struct VacuumReport {
    pub full: bool,
    pub auto_vacuum_before: &'static str,
    #[serde(flatten)]
    pub sizes: FileSizes,
    /// `--full` only: free bytes on the database's filesystem (not the
    /// free pages inside the file: those are `free_space`).
    #[serde(skip_serializing_if = "Option::is_none", rename = "disk_free_bytes")]
    pub free_bytes: Option<u64>,
    /// `--full` only: twice the database (file + WAL).
    #[serde(
        skip_serializing_if = "Option::is_none",
        rename = "disk_required_bytes"
    )]
    pub required_free_bytes: Option<u64>,
    /// `--full` only: SQLite's temporary directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<TempDir>,
    pub auto_vacuum_after: &'static str,
    pub vacuumed_pages: i64,
    pub freed_bytes: i64,
    /// Without `--full` only: the incremental vacuum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vacuum: Option<VacuumResult>,
    pub checkpoint: CheckpointResult,
    pub notes: Vec<String>,
    /// `--full --backup PATH`: the copy taken before the VACUUM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::store::backup::BackupResult>,
    pub complete: bool,
    pub max_lock_hold_ms: f64,
    /// Free pages left after the run.
    pub free_space: FreeSpace,
}

impl Report for VacuumReport {
    fn human(&self) -> String {
        let mut t = table(&["", "before", "after"]);
        t.add_row(vec![
            "auto_vacuum".to_string(),
            self.auto_vacuum_before.to_string(),
            self.auto_vacuum_after.to_string(),
        ]);
        t.add_row(vec![
            "file size".to_string(),
            bytes(self.sizes.file_bytes_before),
            bytes(self.sizes.file_bytes_after),
        ]);
        t.add_row(vec![
            "WAL size (checkpoint)".to_string(),
            bytes(self.checkpoint.wal_bytes_before),
            bytes(self.checkpoint.wal_bytes_after),
        ]);
        let mut h = format!("{t}\n");
        h.push_str(&format!(
            "{}: {} pages freed, {}\n",
            if self.full {
                "full vacuum"
            } else {
                "incremental vacuum"
            },
            self.vacuumed_pages,
            crate::report::bytes_i(self.freed_bytes)
        ));
        h.push_str(&self.checkpoint.summary());
        h.push('\n');
        h.push_str(&self.free_space.summary());
        h.push('\n');
        for n in &self.notes {
            h.push_str(&format!("note: {n}\n"));
        }
        h.push_str(&format!(
            "longest write-lock hold {} ms\n",
            self.max_lock_hold_ms
        ));
        h
    }
}
