//! CoreScope's `config.json`: only the keys maintenance needs.
//! Unknown top-level keys are ignored (the same file configures the ingestor
//! and server); an unknown key inside the sections corescope reads
//! (`retention`, `db`, `corescope`), or a top-level key one typo away from a
//! known one, is reported in [`Config::warnings`] (logged once per run).

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
    /// The config file this was read from (for messages, and the directory
    /// a relative `dbPath` is resolved against).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Unknown keys, one message each ("did you mean ...").
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Keys corescope reads, per section (`""` is the top level).
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "dbPath",
            "retention",
            "neighborEdgesMaxAgeDays",
            "db",
            "observerBlacklist",
            "corescope",
        ],
    ),
    (
        "retention",
        &[
            "nodeDays",
            "observerDays",
            "metricsDays",
            "packetDays",
            "clientRxDays",
        ],
    ),
    ("db", &["incrementalVacuumPages", "vacuumOnStartup"]),
    ("corescope", &["checkAllow"]),
];

/// The known key closest to `key`: the same letters in another case, or a
/// case-insensitive edit distance of at most 2 and under a third of the
/// key's length (so short keys such as `db` only match their own spelling).
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_lowercase();
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_lowercase()), *k))
        .filter(|(d, k)| *d <= 2 && *d * 3 < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Messages for unknown keys of the sections corescope reads; at the top
/// level (which configures the whole of CoreScope) only for near misses.
fn unknown_keys(obj: &serde_json::Map<String, serde_json::Value>, path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (section, known) in KNOWN_KEYS {
        let map = if section.is_empty() {
            Some(obj)
        } else {
            obj.get(*section).and_then(|v| v.as_object())
        };
        let Some(map) = map else { continue };
        for key in map.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let full = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            match closest(key, known) {
                Some(k) => out.push(format!(
                    "unknown key {full} in {}; did you mean {k}? (the key is ignored)",
                    path.display()
                )),
                None if !section.is_empty() => out.push(format!(
                    "unknown key {full} in {}; corescope reads only {} in \"{section}\" (the key is ignored)",
                    path.display(),
                    known.join(", ")
                )),
                None => {}
            }
        }
    }
    out
}

/// Where the config file path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFrom {
    /// `--config PATH`: a missing file is an error (a typo on the command line).
    Flag,
    /// `CORESCOPE_CONFIG`: a missing file means all defaults, as CoreScope
    /// treats a missing config.json (the shipped env file names one that
    /// may not exist).
    Env,
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
    /// Load the config file named by `--config` or `CORESCOPE_CONFIG`. A file
    /// that does not exist is all defaults when it came from the environment,
    /// an error when it came from the flag.
    pub fn load_from(path: &Path, from: ConfigFrom) -> anyhow::Result<Config> {
        let name = match from {
            ConfigFrom::Flag => "--config",
            ConfigFrom::Env => "CORESCOPE_CONFIG",
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e)
                if from == ConfigFrom::Env
                    && e.kind() == std::io::ErrorKind::NotFound
                    && std::fs::symlink_metadata(path).is_err() =>
            {
                log::info!(
                    "config file {} (from CORESCOPE_CONFIG) does not exist: using CoreScope's defaults",
                    path.display()
                );
                return Ok(Config::default());
            }
            Err(e) => {
                return Err(Failure::Fatal(format!(
                    "cannot read config file {} (from {name}): {e}{}",
                    path.display(),
                    match from {
                        ConfigFrom::Flag => " (fix the path given with --config)",
                        ConfigFrom::Env =>
                            " (fix CORESCOPE_CONFIG, e.g. in /etc/corescope/corescope.env)",
                    }
                ))
                .into())
            }
        };
        Self::parse(&text, path)
    }

    /// `dbPath` as a path: a relative one is resolved against the directory
    /// of the config file (CoreScope resolves it against its working
    /// directory, which is where its config.json lives in CoreScope's
    /// layout; corescope's own working directory under systemd is `/`).
    pub fn db_path_resolved(&self) -> Option<PathBuf> {
        let p = self.db_path.as_deref().filter(|p| !p.trim().is_empty())?;
        let p = PathBuf::from(p);
        if p.is_absolute() {
            return Some(p);
        }
        match self.source.as_deref().and_then(Path::parent) {
            Some(dir) if !dir.as_os_str().is_empty() => Some(dir.join(p)),
            _ => Some(p),
        }
    }

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
        let mut warnings = Vec::new();
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
            warnings = unknown_keys(obj, path);
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
        cfg.warnings = warnings;
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
    fn unknown_keys_of_read_sections_are_reported_with_a_suggestion() {
        let c = p(r#"{"retention":{"nodDays":3,"zzz":1},"db":{"incrementalVacuumPages":5},
                     "mqtt":{},"DB":{},"dbpath":"x","port":80,"ui":1,"corescope":{"checkallow":[]}}"#)
        .unwrap();
        let w = c.warnings.join("\n");
        assert!(w.contains("unknown key retention.nodDays in /etc/corescope/config.json; did you mean nodeDays?"), "{w}");
        assert!(
            w.contains("unknown key retention.zzz") && w.contains("reads only nodeDays"),
            "{w}"
        );
        assert!(
            w.contains("unknown key dbpath in") && w.contains("did you mean dbPath?"),
            "{w}"
        );
        assert!(
            w.contains("unknown key DB in") && w.contains("did you mean db?"),
            "{w}"
        );
        assert!(
            w.contains("corescope.checkallow") && w.contains("did you mean checkAllow?"),
            "{w}"
        );
        assert!(
            !w.contains("mqtt") && !w.contains("port") && !w.contains("ui "),
            "{w}"
        );
        assert_eq!(c.warnings.len(), 5, "{w}");
        assert!(p(r#"{"retention":{"nodeDays":3},"mqtt":{}}"#)
            .unwrap()
            .warnings
            .is_empty());
    }

    #[test]
    fn relative_db_path_resolves_against_the_config_directory() {
        let c = p(r#"{"dbPath":"data/m.db"}"#).unwrap();
        assert_eq!(
            c.db_path_resolved(),
            Some(PathBuf::from("/etc/corescope/data/m.db"))
        );
        let c = p(r#"{"dbPath":"/var/lib/m.db"}"#).unwrap();
        assert_eq!(c.db_path_resolved(), Some(PathBuf::from("/var/lib/m.db")));
        let c = Config::parse(r#"{"dbPath":"m.db"}"#, Path::new("config.json")).unwrap();
        assert_eq!(c.db_path_resolved(), Some(PathBuf::from("m.db")));
        assert_eq!(p(r#"{"dbPath":"  "}"#).unwrap().db_path_resolved(), None);
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
