//! Retention settings: config values, overridden by flags, and the kinds
//! a run selects (the retention arithmetic itself is in `retention.rs`).

use crate::cli::{PruneArgs, PruneKind};
use crate::config::Config;

/// Largest accepted retention, in days (about 2700 years).
const MAX_DAYS: i64 = 1_000_000;

/// The order CoreScope runs its retention at startup.
pub const ORDER: [PruneKind; 7] = [
    PruneKind::Nodes,
    PruneKind::Observers,
    PruneKind::Metrics,
    PruneKind::Dropped,
    PruneKind::Packets,
    PruneKind::Edges,
    PruneKind::Clients,
];

/// Retention settings after config and flags (flags win).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub packet_days: Option<i64>,
    pub node_days: i64,
    pub observer_days: Option<i64>,
    pub metrics_days: i64,
    pub dropped_days: i64,
    pub edge_days: i64,
    pub client_days: Option<i64>,
    pub vacuum_pages: i64,
}

impl Settings {
    /// Days for a kind; None = disabled / keep forever.
    pub fn days(&self, k: PruneKind) -> Option<i64> {
        match k {
            PruneKind::Packets => self.packet_days,
            PruneKind::Nodes => Some(self.node_days),
            PruneKind::Observers => self.observer_days,
            PruneKind::Metrics => Some(self.metrics_days),
            PruneKind::Dropped => Some(self.dropped_days),
            PruneKind::Edges => Some(self.edge_days),
            PruneKind::Clients => self.client_days,
        }
    }
}

fn positive(flag: &str, v: i64) -> Result<i64, String> {
    if (1..=MAX_DAYS).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{flag} {v}: expected a number of days from 1 to {MAX_DAYS}"
        ))
    }
}

/// A retention that is always on: the flag's value, else the config's.
fn required(flag: &str, flag_value: Option<i64>, config: i64) -> Result<i64, String> {
    flag_value.map_or(Ok(config), |v| positive(flag, v))
}

/// A retention that 0 disables: the flag's value, else the config's.
fn zero_disables(
    flag: &str,
    flag_value: Option<i64>,
    config: Option<i64>,
) -> Result<Option<i64>, String> {
    match flag_value {
        None => Ok(config),
        Some(0) => Ok(None),
        Some(v) => positive(flag, v)
            .map(Some)
            .map_err(|e| format!("{e} (0 disables)")),
    }
}

/// Flag values override the config accessors (which carry CoreScope's
/// defaults and special values, listed in docs/database.md).
pub fn resolve_settings(cfg: &Config, a: &PruneArgs) -> Result<Settings, String> {
    let packet_days = zero_disables("--packet-days", a.packet_days, cfg.packet_days())?;
    let node_days = required("--node-days", a.node_days, cfg.node_days())?;
    let observer_days = match a.observer_days {
        None => cfg.observer_days(),
        Some(v) if v <= -1 => None,
        Some(v) => Some(
            positive("--observer-days", v)
                .map_err(|e| format!("{e} (-1 keeps observers forever)"))?,
        ),
    };
    let metrics_days = required("--metrics-days", a.metrics_days, cfg.metrics_days())?;
    let dropped_days = required("--dropped-days", a.dropped_days, metrics_days)?;
    let edge_days = required("--edge-days", a.edge_days, cfg.edge_days())?;
    let client_days = zero_disables("--client-days", a.client_days, cfg.client_rx_days())?;
    let vacuum_pages = match a.vacuum_pages {
        None => cfg.vacuum_pages(),
        Some(v) if v >= 0 => v,
        Some(v) => {
            return Err(format!(
                "--vacuum-pages {v}: expected a page count >= 0 (0 skips the incremental vacuum)"
            ))
        }
    };
    Ok(Settings {
        packet_days,
        node_days,
        observer_days,
        metrics_days,
        dropped_days,
        edge_days,
        client_days,
        vacuum_pages,
    })
}

/// Kinds to run, in CoreScope's order: `--only` (or all) minus `--skip`.
pub fn selected_kinds(only: &[PruneKind], skip: &[PruneKind]) -> Vec<PruneKind> {
    ORDER
        .iter()
        .copied()
        .filter(|k| only.is_empty() || only.contains(k))
        .filter(|k| !skip.contains(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut PruneArgs)) -> PruneArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            a: PruneArgs,
        }
        let mut a = W::parse_from(["x"]).a;
        f(&mut a);
        a
    }

    #[test]
    fn settings_defaults_config_and_flags() {
        let cfg = Config::default();
        let s = resolve_settings(&cfg, &args(|_| {})).unwrap();
        assert_eq!(
            s,
            Settings {
                packet_days: None,
                node_days: 7,
                observer_days: Some(14),
                metrics_days: 30,
                dropped_days: 30,
                edge_days: 5,
                client_days: None,
                vacuum_pages: 1024,
            }
        );
        let cfg = Config::parse(
            r#"{"retention":{"packetDays":30,"observerDays":-1,"metricsDays":10,"nodeDays":3},"neighborEdgesMaxAgeDays":9,"db":{"incrementalVacuumPages":16}}"#,
            std::path::Path::new("c.json"),
        )
        .unwrap();
        let s = resolve_settings(&cfg, &args(|_| {})).unwrap();
        assert_eq!(s.packet_days, Some(30));
        assert_eq!(s.observer_days, None);
        assert_eq!(s.metrics_days, 10);
        assert_eq!(s.dropped_days, 10);
        assert_eq!(s.node_days, 3);
        assert_eq!(s.edge_days, 9);
        assert_eq!(s.vacuum_pages, 16);
        let s = resolve_settings(
            &cfg,
            &args(|a| {
                a.packet_days = Some(0);
                a.observer_days = Some(2);
                a.metrics_days = Some(4);
                a.dropped_days = Some(1);
                a.client_days = Some(8);
                a.vacuum_pages = Some(0);
            }),
        )
        .unwrap();
        assert_eq!(s.packet_days, None);
        assert_eq!(s.observer_days, Some(2));
        assert_eq!(s.metrics_days, 4);
        assert_eq!(s.dropped_days, 1);
        assert_eq!(s.client_days, Some(8));
        assert_eq!(s.vacuum_pages, 0);
        assert!(resolve_settings(&cfg, &args(|a| a.node_days = Some(0))).is_err());
        assert!(resolve_settings(&cfg, &args(|a| a.observer_days = Some(0))).is_err());
        assert!(resolve_settings(&cfg, &args(|a| a.packet_days = Some(-3))).is_err());
        assert!(resolve_settings(&cfg, &args(|a| a.edge_days = Some(MAX_DAYS + 1))).is_err());
        let s = resolve_settings(&cfg, &args(|a| a.observer_days = Some(-1))).unwrap();
        assert_eq!(s.observer_days, None);
    }

    #[test]
    fn kind_selection_keeps_corescope_order() {
        use PruneKind::*;
        assert_eq!(selected_kinds(&[], &[]), ORDER.to_vec());
        assert_eq!(selected_kinds(&[Packets, Nodes], &[]), vec![Nodes, Packets]);
        assert_eq!(
            selected_kinds(&[], &[Packets, Clients]),
            vec![Nodes, Observers, Metrics, Dropped, Edges]
        );
        assert_eq!(selected_kinds(&[Edges], &[Edges]), vec![]);
    }
}
