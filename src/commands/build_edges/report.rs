//! The report of `build-edges`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::guard::Seeded;
use super::staging::LeftStaging;
use crate::report::Report;

/// The report of `build-edges`: its fields are the keys of `--json` (and
/// of the metrics file).
#[derive(Debug, Default, Serialize)]
pub struct BuildEdgesReport {
    pub mode: &'static str,
    pub observations_scanned: u64,
    pub candidates: u64,
    pub edges_upserted: u64,
    pub edges_new: u64,
    pub watermark: Option<i64>,
    pub complete: bool,
    pub max_lock_hold_ms: f64,
    pub batches: u64,
    pub batches_discarded: u64,
    pub transactions: u64,
    pub trace_rows_skipped: u64,
    pub old_table_rows_deleted: u64,
    /// Counted after a swap only (a full index scan).
    pub edges_total: Option<i64>,
    /// The first run on edges built by CoreScope: where counting starts.
    pub seeded: Option<Seeded>,
    /// Incremental runs only (null when there was none): the staging table
    /// a stopped rebuild left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted_rebuild: Option<Option<LeftStaging>>,
    /// `--rebuild` runs only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildReport>,
    /// Observations after the watermark that the run left for later, per
    /// backfill task that will still change them (empty: none).
    pub waiting_for_backfill: BTreeMap<String, i64>,
    /// The first of them: the watermark stops before it.
    pub waiting_at_id: Option<i64>,
    /// Why the graph was marked stale when the run started (a run rebuilds
    /// then, with or without --rebuild; empty: it was not).
    pub stale_reasons: Vec<String>,
    /// The run rebuilt because the graph was marked stale, not for --rebuild.
    pub automatic_rebuild: bool,
}

#[derive(Debug, Serialize)]
pub struct RebuildReport {
    pub resumed_after_id: Option<i64>,
    pub swapped: bool,
    pub staging_watermark: Option<i64>,
}

impl BuildEdgesReport {
    /// The notes after the summary line, each starting with "; ".
    fn notes(&self) -> String {
        let mut notes = String::new();
        if let Some(s) = &self.seeded {
            notes.push_str(&format!(
                "; first run on edges built by CoreScope: counting starts after observation {} (last with timestamp <= {})",
                s.start_after_id,
                s.max_last_seen.as_deref().unwrap_or("unknown")
            ));
        }
        if !self.stale_reasons.is_empty() {
            notes.push_str(&format!(
                "; {} because the graph was marked stale: {}",
                if self.automatic_rebuild {
                    "rebuilt automatically"
                } else {
                    "rebuilt"
                },
                self.stale_reasons.join("; ")
            ));
        }
        if !self.waiting_for_backfill.is_empty() {
            let list: Vec<String> = self
                .waiting_for_backfill
                .iter()
                .map(|(task, n)| format!("{n} for {task}"))
                .collect();
            let tasks: Vec<&str> = self
                .waiting_for_backfill
                .keys()
                .map(String::as_str)
                .collect();
            notes.push_str(&format!(
                "; waiting for backfills: observations from {} on are counted once `corescope backfill {}` has filled them ({})",
                self.waiting_at_id.map_or("?".to_string(), |i| i.to_string()),
                tasks.join(" "),
                list.join(", ")
            ));
        }
        let rebuild = self.rebuild.as_ref();
        if let Some(r) = rebuild.and_then(|r| r.resumed_after_id) {
            notes.push_str(&format!(
                "; resumed an interrupted rebuild after observation {r}"
            ));
        }
        if rebuild.is_some_and(|r| r.swapped) {
            notes.push_str(&format!(
                "; {} edges swapped in",
                self.edges_total.unwrap_or(0)
            ));
        }
        if let Some(Some(l)) = &self.interrupted_rebuild {
            match l.resumable_after_id {
                Some(w) if l.action == "kept" => notes.push_str(&format!(
                    "; note: a stopped `build-edges --rebuild` left its staging table ({} rows, consistent up to observation {w}): `corescope build-edges --rebuild` resumes and finishes it",
                    l.staging_rows
                )),
                _ => notes.push_str(&format!(
                    "; note: dropped the unfinished staging table of a stopped `build-edges --rebuild` ({} rows, not resumable)",
                    l.staging_rows
                )),
            }
        }
        notes
    }
}

impl Report for BuildEdgesReport {
    fn human(&self) -> String {
        format!(
            "build-edges{}: scanned {} observations, {} candidates, {} edges upserted ({} new), watermark {}, {}{}\n",
            if self.rebuild.is_some() { " --rebuild" } else { "" },
            self.observations_scanned,
            self.candidates,
            self.edges_upserted,
            self.edges_new,
            self.watermark.map_or("none".to_string(), |w| w.to_string()),
            if self.complete { "complete" } else { "incomplete (stopped by --max-seconds; run again to continue)" },
            self.notes(),
        )
    }
}
