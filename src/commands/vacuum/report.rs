//! The report of `corescope vacuum`: its `--json` keys and its human table.

use serde::Serialize;

use super::full::TempDir;
use crate::report::{table, Report};
use crate::store::maintenance::{CheckpointResult, FileSizes, VacuumResult};

#[derive(Debug, Serialize)]
pub struct VacuumReport {
    pub full: bool,
    pub auto_vacuum_before: &'static str,
    #[serde(flatten)]
    pub sizes: FileSizes,
    /// `--full` only: free bytes on the database's filesystem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// `--full` only: twice the database (file + WAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_free_bytes: Option<u64>,
    /// `--full` only: SQLite's temporary directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<TempDir>,
    pub auto_vacuum: &'static str,
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
            "file bytes".to_string(),
            self.sizes.file_bytes_before.to_string(),
            self.sizes.file_bytes_after.to_string(),
        ]);
        t.add_row(vec![
            "WAL bytes".to_string(),
            self.sizes.wal_bytes_before.to_string(),
            self.sizes.wal_bytes_after.to_string(),
        ]);
        let mut h = format!("{t}\n");
        if !self.full {
            h.push_str(&format!(
                "incremental vacuum: {} pages freed ({} bytes)\n",
                self.vacuumed_pages, self.freed_bytes
            ));
        }
        h.push_str(&self.checkpoint.summary());
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
