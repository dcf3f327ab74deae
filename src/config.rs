//! CoreScope's `config.json`: only the keys maintenance needs.
//! Unknown keys are ignored: the same file configures the ingestor and server.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Failure;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Config {
    pub db_path: Option<String>,
    pub retention: Retention,
    pub neighbor_edges_max_age_days: Option<i64>,
    pub db: DbCfg,
    pub observer_blacklist: Vec<String>,
    /// corescope's own keys (CoreScope ignores them).
    pub corescope: CorescopeCfg,
    /// Directory of the config file (relative `dbPath` values resolve against
    /// the working directory, like the ingestor; kept for messages).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Retention {
    pub node_days: Option<i64>,
    pub observer_days: Option<i64>,
    pub metrics_days: Option<i64>,
    pub packet_days: Option<i64>,
    pub client_rx_days: Option<i64>,
}

/// The `corescope` section: keys only corescope reads.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CorescopeCfg {
    /// `corescope.checkAllow`: warning codes `check --strict` accepts
    /// (like `--allow CODE`).
    pub check_allow: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DbCfg {
    pub incremental_vacuum_pages: Option<i64>,
    pub vacuum_on_startup: Option<bool>,
}

impl Config {
    /// Load a config file. A missing, unreadable or malformed file is an
    /// error naming the file (and line/column for JSON errors).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::Fatal(format!(
                "cannot read config file {}: {e} (check --config / CORESCOPE_CONFIG)",
                path.display()
            ))
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Config> {
        // serde would read a JSON array into a struct field by field (so `[]`
        // would pass as an empty config): the top level and the sections
        // must be objects.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            let not_object = |what: &str, v: &serde_json::Value| {
                Failure::Fatal(format!(
                    "invalid config file {}: {what} must be a JSON object {{ ... }}, not {} (fix the file or point --config elsewhere)",
                    path.display(),
                    json_kind(v)
                ))
            };
            let Some(obj) = v.as_object() else {
                return Err(not_object("the top level", &v).into());
            };
            for key in ["retention", "db", "corescope"] {
                match obj.get(key) {
                    Some(s) if !s.is_object() => {
                        return Err(not_object(&format!("\"{key}\""), s).into())
                    }
                    _ => {}
                }
            }
        }
        let mut cfg: Config = serde_json::from_str(text).map_err(|e| {
            Failure::Fatal(format!(
                "invalid config file {} at line {}, column {}: {} (fix the JSON or point --config elsewhere)",
                path.display(),
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            ))
        })?;
        cfg.source = Some(path.to_path_buf());
        cfg.observer_blacklist = cfg
            .observer_blacklist
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(cfg)
    }

    /// `retention.nodeDays`: ≤ 0 or absent → 7.
    pub fn node_days(&self) -> i64 {
        positive_or(self.retention.node_days, 7)
    }
    /// `retention.observerDays`: 0/absent → 14; ≤ −1 → None (keep forever).
    pub fn observer_days(&self) -> Option<i64> {
        match self.retention.observer_days {
            Some(d) if d <= -1 => None,
            Some(d) if d > 0 => Some(d),
            _ => Some(14),
        }
    }
    /// `retention.metricsDays` (also dropped packets): ≤ 0 → 30.
    pub fn metrics_days(&self) -> i64 {
        positive_or(self.retention.metrics_days, 30)
    }
    /// `retention.packetDays`: ≤ 0 → disabled (None).
    pub fn packet_days(&self) -> Option<i64> {
        self.retention.packet_days.filter(|d| *d > 0)
    }
    /// `retention.clientRxDays`: ≤ 0 → disabled (None).
    pub fn client_rx_days(&self) -> Option<i64> {
        self.retention.client_rx_days.filter(|d| *d > 0)
    }
    /// `neighborEdgesMaxAgeDays`: ≤ 0 → 5.
    pub fn edge_days(&self) -> i64 {
        positive_or(self.neighbor_edges_max_age_days, 5)
    }
    /// `db.incrementalVacuumPages`: ≤ 0 → 1024.
    pub fn vacuum_pages(&self) -> i64 {
        positive_or(self.db.incremental_vacuum_pages, 1024)
    }
}

fn positive_or(v: Option<i64>, default: i64) -> i64 {
    match v {
        Some(d) if d > 0 => d,
        _ => default,
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> anyhow::Result<Config> {
        Config::parse(s, Path::new("/etc/corescope/config.json"))
    }

    #[test]
    fn defaults_and_special_values() {
        let c = p("{}").unwrap();
        assert_eq!(c.node_days(), 7);
        assert_eq!(c.observer_days(), Some(14));
        assert_eq!(c.metrics_days(), 30);
        assert_eq!(c.packet_days(), None);
        assert_eq!(c.edge_days(), 5);
        assert_eq!(c.vacuum_pages(), 1024);
        let c = p(
            r#"{"retention":{"observerDays":-1,"nodeDays":0,"packetDays":30,"metricsDays":-5},
                     "neighborEdgesMaxAgeDays":0,"db":{"incrementalVacuumPages":-1}}"#,
        )
        .unwrap();
        assert_eq!(c.observer_days(), None);
        assert_eq!(c.node_days(), 7);
        assert_eq!(c.packet_days(), Some(30));
        assert_eq!(c.metrics_days(), 30);
        assert_eq!(c.edge_days(), 5);
        assert_eq!(c.vacuum_pages(), 1024);
    }

    #[test]
    fn unknown_keys_ignored_and_blacklist_trimmed() {
        let c = p(
            r#"{"mqtt":{"broker":"x"},"dbPath":"data/m.db","observerBlacklist":[" AB ","", "cd"]}"#,
        )
        .unwrap();
        assert_eq!(c.db_path.as_deref(), Some("data/m.db"));
        assert_eq!(
            c.observer_blacklist,
            vec!["AB".to_string(), "cd".to_string()]
        );
    }

    #[test]
    fn errors_name_file_line_column() {
        let e = p("{\n  \"dbPath\": 5\n}").unwrap_err().to_string();
        assert!(e.contains("/etc/corescope/config.json"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = p("{\n \"retention\": {\"nodeDays\": \"x\"}}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("column"), "{e}");
        let e = p("{ not json").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn non_object_top_level_and_sections_refused() {
        for (text, what) in [
            (
                "[]",
                "the top level must be a JSON object { ... }, not an array",
            ),
            ("null", "not null"),
            ("5", "not a number"),
            ("\"x\"", "not a string"),
            (r#"{"retention":[]}"#, "\"retention\" must be a JSON object"),
            (r#"{"db":[1024]}"#, "\"db\" must be a JSON object"),
        ] {
            let e = p(text).unwrap_err().to_string();
            assert!(
                e.contains("/etc/corescope/config.json") && e.contains(what),
                "{text}: {e}"
            );
        }
        assert!(p(r#"{"retention":{}, "db":{}}"#).is_ok());
    }
}
