//! The `observer-blacklist` task: mark the observers named by `--observer`
//! and the config's `observerBlacklist` inactive, as CoreScope does.

use crate::cli::BackfillTask;
use crate::store::engine::Engine;
use crate::store::walk::execute_each;
use crate::store::{state_get, state_set};

use super::report::TaskReport;

/// Trimmed, non-empty ids, de-duplicated case-insensitively (first spelling kept).
pub(super) fn blacklist_ids(cli: &[String], config: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for id in cli.iter().chain(config) {
        let t = id.trim();
        if !t.is_empty() && seen.insert(t.to_lowercase()) {
            out.push(t.to_string());
        }
    }
    out
}

/// State key: the ids (lower case, sorted, comma-separated) that matched no
/// observer at the last run, so each is warned about once, not every hour.
pub(super) const UNMATCHED_KEY: &str = "observer_blacklist.unmatched";

/// The stored form of a set of unmatched ids.
fn unmatched_value(ids: &[String]) -> String {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_lowercase()).collect();
    v.sort();
    v.dedup();
    v.join(",")
}

/// The ids of `now` that were not unmatched at the last run (`before`, the
/// stored value): they are worth a warning; the others only an info line.
fn newly_unmatched<'a>(now: &'a [String], before: Option<&str>) -> Vec<&'a String> {
    let before: std::collections::HashSet<&str> = before
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .collect();
    now.iter()
        .filter(|id| !before.contains(id.to_lowercase().as_str()))
        .collect()
}

const MARK_INACTIVE: &str =
    "UPDATE observers SET inactive = 1 WHERE lower(id) = lower(?1) AND COALESCE(inactive, 0) <> 1";

pub(super) fn run_blacklist(e: &mut Engine<'_>, ids: &[String]) -> anyhow::Result<TaskReport> {
    let mut rep = TaskReport::new(BackfillTask::ObserverBlacklist, true);
    rep.complete = true;
    if ids.is_empty() {
        log::info!("backfill observer-blacklist: no ids (--observer or observerBlacklist)");
        return Ok(rep);
    }
    if e.expired() {
        rep.complete = false;
    }
    let mut matched: Vec<(String, i64, i64)> = Vec::new(); // id, rows, active rows
    {
        let mut st = e.conn().prepare(
            "SELECT COUNT(*), COALESCE(SUM(COALESCE(inactive, 0) <> 1), 0) \
             FROM observers WHERE lower(id) = lower(?1)",
        )?;
        for id in ids {
            let (n, active): (i64, i64) = st.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            matched.push((id.clone(), n, active));
        }
    }
    let unmatched: Vec<String> = matched
        .iter()
        .filter(|(_, n, _)| *n == 0)
        .map(|(id, _, _)| id.clone())
        .collect();
    rep.scanned = matched.iter().map(|(_, n, _)| *n as u64).sum();
    let active: i64 = matched.iter().map(|(_, _, a)| *a).sum();
    let dry_run = e.target().is_dry_run();
    if dry_run || !rep.complete {
        rep.updated = if dry_run { active as u64 } else { 0 };
        rep.remaining = active;
        rep.unmatched = Some(unmatched);
        return Ok(rep);
    }
    let before = state_get(e.conn(), UNMATCHED_KEY)?;
    let value = unmatched_value(&unmatched);
    let changed = before.as_deref().unwrap_or("") != value;
    // One transaction for all ids (a handful), with the set of unmatched ids
    // when it changed.
    let updated = e.batch(|tx| {
        let n = execute_each(tx, MARK_INACTIVE, ids)?;
        if changed {
            state_set(tx, UNMATCHED_KEY, &value)?;
        }
        Ok((n, 0))
    })?;
    rep.updated = updated as u64;
    rep.skipped = rep.scanned.saturating_sub(rep.updated);
    let new = newly_unmatched(&unmatched, before.as_deref());
    for id in &unmatched {
        if new.contains(&id) {
            log::warn!(
                "observer-blacklist: id {id} matches no observer (said once; the report lists it every run)"
            );
        } else {
            log::info!("observer-blacklist: id {id} still matches no observer");
        }
    }
    rep.unmatched = Some(unmatched);
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_new_since_the_last_run_are_warned_about() {
        let now = vec!["AB".to_string(), "cd".to_string()];
        assert_eq!(unmatched_value(&now), "ab,cd");
        assert_eq!(newly_unmatched(&now, None), [&now[0], &now[1]]);
        assert_eq!(newly_unmatched(&now, Some("ab")), [&now[1]]);
        assert!(newly_unmatched(&now, Some("ab,cd")).is_empty());
        assert_eq!(unmatched_value(&[]), "");
    }

    #[test]
    fn blacklist_ids_trim_dedup() {
        let ids = blacklist_ids(
            &[" AbC ".into(), String::new(), "x".into()],
            &["abc".into(), "  ".into(), "Y".into()],
        );
        assert_eq!(ids, vec!["AbC", "x", "Y"]);
    }
}
