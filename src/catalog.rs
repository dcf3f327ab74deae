//! The declarative schema catalog: the single source of truth for the target
//! schema. `migrate` applies it, `check` asserts it, `synth` and
//! `migrate --create` build fresh databases from it.

/// A schema target: what the CoreScope server of the seed commit asserts, or
/// everything newer CoreScope versions use (default); see docs/database.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Seed,
    Latest,
}

impl Target {
    pub fn includes(self, since: Target) -> bool {
        since <= self
    }
    pub fn name(self) -> &'static str {
        match self {
            Target::Seed => "seed",
            Target::Latest => "latest",
        }
    }
}

use Target::{Latest, Seed};

/// One column. `decl` is the type/default/constraint text used both in a
/// fresh CREATE TABLE and (when `alter` is true) in `ALTER TABLE … ADD COLUMN`.
#[derive(Debug)]
pub struct ColumnDef {
    pub name: &'static str,
    pub decl: &'static str,
    pub since: Target,
    /// Checked by the CoreScope server's AssertReady, from that target on.
    pub asserted: Option<Target>,
    /// Can be added to an existing table with ALTER TABLE ADD COLUMN.
    pub alter: bool,
}

#[derive(Debug)]
pub struct TableDef {
    pub name: &'static str,
    pub since: Target,
    pub columns: &'static [ColumnDef],
    /// Table constraints after the column list.
    pub constraints: &'static [&'static str],
    /// Checked by AssertReady as a table (only `neighbor_edges`).
    pub asserted: bool,
    /// Required for readiness. corescope's own state table is not: a database
    /// migrated by CoreScope itself is ready for corescope.
    pub required: bool,
}

#[derive(Debug)]
pub struct IndexDef {
    pub name: &'static str,
    pub table: &'static str,
    /// Full `CREATE … INDEX IF NOT EXISTS` statement.
    pub sql: &'static str,
    pub since: Target,
    /// Only created when this column exists (`idx_observations_observer_idx`).
    pub requires_column: Option<&'static str>,
    /// UNIQUE index whose creation fails on duplicate keys (dedup index).
    pub unique_check: Option<&'static str>,
}

#[derive(Debug)]
pub struct ViewDef {
    pub name: &'static str,
    pub sql: &'static str,
    pub since: Target,
}

/// Where a named migration records completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A row in `_migrations`.
    Migrations,
    /// A `done` row in `_async_migrations` (later background migrations).
    AsyncMigrations,
}

/// What a named migration does besides adding catalog objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOp {
    None,
    /// corescope's exact repair of text `observations.observer_idx`.
    ObserverIdxRowid,
    AdvertCount,
    NoiseFloorReal,
    ChannelHashBackfill,
    LastPacketAtBackfill,
    CleanupLegacyNullHashTs,
    ChannelHashCasing,
    TxLastSeenBackfill,
}

/// A named one-shot migration and the catalog objects it adds.
#[derive(Debug)]
pub struct MigrationDef {
    pub name: &'static str,
    pub since: Target,
    pub record: Record,
    /// Columns `table.column` this migration adds (with their catalog decl).
    pub columns: &'static [&'static str],
    /// Indexes it creates.
    pub indexes: &'static [&'static str],
    pub data: DataOp,
    /// corescope's own migration (not CoreScope's): pending only when its
    /// probe finds work, so a database migrated by CoreScope stays ready.
    pub own: bool,
    pub summary: &'static str,
}

macro_rules! col {
    ($n:expr, $d:expr) => {
        ColumnDef {
            name: $n,
            decl: $d,
            since: Seed,
            asserted: None,
            alter: false,
        }
    };
    ($n:expr, $d:expr, alter) => {
        ColumnDef {
            name: $n,
            decl: $d,
            since: Seed,
            asserted: None,
            alter: true,
        }
    };
    ($n:expr, $d:expr, $since:expr, $asserted:expr) => {
        ColumnDef {
            name: $n,
            decl: $d,
            since: $since,
            asserted: $asserted,
            alter: true,
        }
    };
}

const NODE_COLUMNS: &[ColumnDef] = &[
    col!("public_key", "TEXT PRIMARY KEY"),
    col!("name", "TEXT"),
    col!("role", "TEXT"),
    col!("lat", "REAL"),
    col!("lon", "REAL"),
    col!("last_seen", "TEXT", alter),
    col!("first_seen", "TEXT", alter),
    col!("advert_count", "INTEGER DEFAULT 0", alter),
    col!("battery_mv", "INTEGER", alter),
    col!("temperature_c", "REAL", alter),
    col!("foreign_advert", "INTEGER DEFAULT 0", Seed, Some(Seed)),
    col!("default_scope", "TEXT DEFAULT NULL", Latest, Some(Latest)),
    col!(
        "multibyte_sup",
        "INTEGER NOT NULL DEFAULT 0",
        Latest,
        Some(Latest)
    ),
    col!("multibyte_evidence", "TEXT", Latest, Some(Latest)),
];

pub static TABLES: &[TableDef] = &[
    TableDef {
        name: "nodes",
        since: Seed,
        columns: NODE_COLUMNS,
        constraints: &[],
        asserted: false,
        required: true,
    },
    TableDef {
        name: "inactive_nodes",
        since: Seed,
        columns: NODE_COLUMNS,
        constraints: &[],
        asserted: false,
        required: true,
    },
    TableDef {
        name: "observers",
        since: Seed,
        columns: &[
            col!("id", "TEXT PRIMARY KEY"),
            col!("name", "TEXT"),
            col!("iata", "TEXT", Seed, Some(Seed)),
            col!("last_seen", "TEXT", alter),
            col!("first_seen", "TEXT", alter),
            col!("packet_count", "INTEGER DEFAULT 0", alter),
            col!("model", "TEXT", alter),
            col!("firmware", "TEXT", alter),
            col!("client_version", "TEXT", alter),
            col!("radio", "TEXT", alter),
            col!("battery_mv", "INTEGER", alter),
            col!("uptime_secs", "INTEGER", alter),
            col!("noise_floor", "REAL", alter),
            col!("inactive", "INTEGER DEFAULT 0", Seed, Some(Seed)),
            col!("last_packet_at", "TEXT DEFAULT NULL", Seed, Some(Seed)),
            col!(
                "clock_skew_seconds",
                "INTEGER DEFAULT NULL",
                Latest,
                Some(Latest)
            ),
            col!(
                "clock_skew_count_24h",
                "INTEGER DEFAULT 0",
                Latest,
                Some(Latest)
            ),
            col!(
                "clock_last_naive_at",
                "TEXT DEFAULT NULL",
                Latest,
                Some(Latest)
            ),
            col!("can_relay", "INTEGER DEFAULT 1", Latest, Some(Latest)),
            col!("can_relay_seen", "INTEGER DEFAULT 0", Latest, Some(Latest)),
        ],
        constraints: &[],
        asserted: false,
        required: true,
    },
    TableDef {
        name: "transmissions",
        since: Seed,
        columns: &[
            col!("id", "INTEGER PRIMARY KEY AUTOINCREMENT"),
            col!("raw_hex", "TEXT NOT NULL"),
            col!("hash", "TEXT NOT NULL UNIQUE"),
            col!("first_seen", "TEXT NOT NULL"),
            col!("route_type", "INTEGER", alter),
            col!("payload_type", "INTEGER", alter),
            col!("payload_version", "INTEGER", alter),
            col!("decoded_json", "TEXT", alter),
            col!("from_pubkey", "TEXT", Seed, Some(Seed)),
            col!(
                "last_seen",
                "INTEGER NOT NULL DEFAULT 0",
                Latest,
                Some(Latest)
            ),
            col!("created_at", "TEXT DEFAULT (datetime('now'))"),
            col!("channel_hash", "TEXT DEFAULT NULL", Seed, None),
            col!("scope_name", "TEXT DEFAULT NULL", Latest, Some(Latest)),
        ],
        constraints: &[],
        asserted: false,
        required: true,
    },
    TableDef {
        name: "observations",
        since: Seed,
        columns: &[
            col!("id", "INTEGER PRIMARY KEY AUTOINCREMENT"),
            col!(
                "transmission_id",
                "INTEGER NOT NULL REFERENCES transmissions(id)"
            ),
            col!("observer_idx", "INTEGER"),
            col!("direction", "TEXT", alter),
            col!("snr", "REAL", alter),
            col!("rssi", "REAL", alter),
            col!("score", "INTEGER", alter),
            col!("path_json", "TEXT", alter),
            col!("timestamp", "INTEGER NOT NULL"),
            col!("resolved_path", "TEXT", Seed, Some(Seed)),
            col!("raw_hex", "TEXT", Seed, Some(Latest)),
        ],
        constraints: &[],
        asserted: false,
        required: true,
    },
    TableDef {
        name: "neighbor_edges",
        since: Seed,
        columns: &[
            col!("node_a", "TEXT NOT NULL"),
            col!("node_b", "TEXT NOT NULL"),
            col!("count", "INTEGER DEFAULT 1"),
            col!("last_seen", "TEXT"),
        ],
        constraints: &["PRIMARY KEY (node_a, node_b)"],
        asserted: true,
        required: true,
    },
    TableDef {
        name: "observer_metrics",
        since: Seed,
        columns: &[
            col!("observer_id", "TEXT NOT NULL"),
            col!("timestamp", "TEXT NOT NULL"),
            col!("noise_floor", "REAL"),
            col!("tx_air_secs", "INTEGER"),
            col!("rx_air_secs", "INTEGER"),
            col!("recv_errors", "INTEGER"),
            col!("battery_mv", "INTEGER"),
            col!("packets_sent", "INTEGER", alter),
            col!("packets_recv", "INTEGER", alter),
        ],
        constraints: &["PRIMARY KEY (observer_id, timestamp)"],
        asserted: false,
        required: true,
    },
    TableDef {
        name: "dropped_packets",
        since: Seed,
        columns: &[
            col!("id", "INTEGER PRIMARY KEY AUTOINCREMENT"),
            col!("hash", "TEXT"),
            col!("raw_hex", "TEXT"),
            col!("reason", "TEXT NOT NULL"),
            col!("observer_id", "TEXT"),
            col!("observer_name", "TEXT"),
            col!("node_pubkey", "TEXT"),
            col!("node_name", "TEXT"),
            col!("dropped_at", "DATETIME DEFAULT CURRENT_TIMESTAMP"),
        ],
        constraints: &[],
        asserted: false,
        required: true,
    },
    TableDef {
        name: "_migrations",
        since: Seed,
        columns: &[col!("name", "TEXT PRIMARY KEY")],
        constraints: &[],
        asserted: false,
        required: true,
    },
    TableDef {
        name: "_async_migrations",
        since: Latest,
        columns: &[
            col!("name", "TEXT PRIMARY KEY"),
            col!("status", "TEXT NOT NULL"),
            col!("started_at", "TEXT NOT NULL DEFAULT (datetime('now'))"),
            col!("ended_at", "TEXT"),
            col!("error", "TEXT"),
        ],
        constraints: &[],
        asserted: false,
        required: true,
    },
    TableDef {
        name: "client_receptions",
        since: Latest,
        columns: &[
            col!("id", "INTEGER PRIMARY KEY AUTOINCREMENT"),
            col!("rx_pubkey", "TEXT NOT NULL"),
            col!("heard_key", "TEXT NOT NULL"),
            col!("heard_keylen", "INTEGER NOT NULL"),
            col!("rssi", "INTEGER"),
            col!("snr", "REAL"),
            col!("lat", "REAL NOT NULL"),
            col!("lon", "REAL NOT NULL"),
            col!("pos_acc_m", "REAL"),
            col!("rx_at", "TEXT NOT NULL"),
            col!("ingested_at", "TEXT NOT NULL"),
            col!("src", "TEXT NOT NULL"),
        ],
        constraints: &["UNIQUE (rx_pubkey, heard_key, rx_at)"],
        asserted: false,
        required: true,
    },
    TableDef {
        name: "client_observers",
        since: Latest,
        columns: &[
            col!("pubkey", "TEXT PRIMARY KEY"),
            col!("name", "TEXT"),
            col!("last_seen", "TEXT"),
        ],
        constraints: &[],
        asserted: false,
        required: true,
    },
    TableDef {
        name: "_corescope_state",
        since: Seed,
        columns: &[
            col!("key", "TEXT PRIMARY KEY"),
            col!("value", "TEXT NOT NULL"),
            col!("updated_at", "TEXT NOT NULL"),
        ],
        constraints: &[],
        asserted: false,
        required: false,
    },
];

pub const DEDUP_INDEX: &str = "idx_observations_dedup";

pub static INDEXES: &[IndexDef] = &[
    idx("idx_nodes_last_seen", "nodes", "CREATE INDEX IF NOT EXISTS idx_nodes_last_seen ON nodes(last_seen)", Seed),
    idx("idx_observers_last_seen", "observers", "CREATE INDEX IF NOT EXISTS idx_observers_last_seen ON observers(last_seen)", Seed),
    idx("idx_inactive_nodes_last_seen", "inactive_nodes", "CREATE INDEX IF NOT EXISTS idx_inactive_nodes_last_seen ON inactive_nodes(last_seen)", Seed),
    idx("idx_transmissions_hash", "transmissions", "CREATE INDEX IF NOT EXISTS idx_transmissions_hash ON transmissions(hash)", Seed),
    idx("idx_transmissions_first_seen", "transmissions", "CREATE INDEX IF NOT EXISTS idx_transmissions_first_seen ON transmissions(first_seen)", Seed),
    idx("idx_transmissions_payload_type", "transmissions", "CREATE INDEX IF NOT EXISTS idx_transmissions_payload_type ON transmissions(payload_type)", Seed),
    idx("idx_transmissions_from_pubkey", "transmissions", "CREATE INDEX IF NOT EXISTS idx_transmissions_from_pubkey ON transmissions(from_pubkey)", Seed),
    idx("idx_tx_channel_hash", "transmissions", "CREATE INDEX IF NOT EXISTS idx_tx_channel_hash ON transmissions(channel_hash) WHERE payload_type = 5", Seed),
    idx("idx_nodes_foreign_advert", "nodes", "CREATE INDEX IF NOT EXISTS idx_nodes_foreign_advert ON nodes(foreign_advert) WHERE foreign_advert = 1", Seed),
    idx("idx_observations_transmission_id", "observations", "CREATE INDEX IF NOT EXISTS idx_observations_transmission_id ON observations(transmission_id)", Seed),
    IndexDef {
        name: "idx_observations_observer_idx",
        table: "observations",
        sql: "CREATE INDEX IF NOT EXISTS idx_observations_observer_idx ON observations(observer_idx)",
        since: Seed,
        requires_column: Some("observer_idx"),
        unique_check: None,
    },
    idx("idx_observations_timestamp", "observations", "CREATE INDEX IF NOT EXISTS idx_observations_timestamp ON observations(timestamp)", Seed),
    IndexDef {
        name: DEDUP_INDEX,
        table: "observations",
        sql: "CREATE UNIQUE INDEX IF NOT EXISTS idx_observations_dedup ON observations(transmission_id, observer_idx, COALESCE(path_json, ''))",
        since: Seed,
        requires_column: None,
        unique_check: Some(
            // NULLs are distinct in a UNIQUE index: rows with a NULL
            // transmission_id or observer_idx never conflict.
            "SELECT transmission_id, observer_idx, COALESCE(path_json, '') AS k, count(*) AS n FROM observations WHERE transmission_id IS NOT NULL AND observer_idx IS NOT NULL GROUP BY transmission_id, observer_idx, k HAVING count(*) > 1",
        ),
    },
    idx("idx_observer_metrics_timestamp", "observer_metrics", "CREATE INDEX IF NOT EXISTS idx_observer_metrics_timestamp ON observer_metrics(timestamp)", Seed),
    idx("idx_dropped_observer", "dropped_packets", "CREATE INDEX IF NOT EXISTS idx_dropped_observer ON dropped_packets(observer_id)", Seed),
    idx("idx_dropped_node", "dropped_packets", "CREATE INDEX IF NOT EXISTS idx_dropped_node ON dropped_packets(node_pubkey)", Seed),
    idx("idx_observations_tx_ts", "observations", "CREATE INDEX IF NOT EXISTS idx_observations_tx_ts ON observations(transmission_id, timestamp)", Latest),
    idx("idx_observations_observer_idx_timestamp", "observations", "CREATE INDEX IF NOT EXISTS idx_observations_observer_idx_timestamp ON observations(observer_idx, timestamp)", Latest),
    idx("idx_tx_scope_name", "transmissions", "CREATE INDEX IF NOT EXISTS idx_tx_scope_name ON transmissions(scope_name) WHERE scope_name IS NOT NULL", Latest),
    idx("idx_tx_last_seen_zero", "transmissions", "CREATE INDEX IF NOT EXISTS idx_tx_last_seen_zero ON transmissions(id) WHERE last_seen=0", Latest),
    idx("idx_client_recept_heard_geo", "client_receptions", "CREATE INDEX IF NOT EXISTS idx_client_recept_heard_geo ON client_receptions(heard_key, heard_keylen, lat, lon)", Latest),
    idx("idx_client_recept_latlon", "client_receptions", "CREATE INDEX IF NOT EXISTS idx_client_recept_latlon ON client_receptions(lat, lon)", Latest),
    idx("idx_client_recept_rxat", "client_receptions", "CREATE INDEX IF NOT EXISTS idx_client_recept_rxat ON client_receptions(rx_at)", Latest),
];

const fn idx(
    name: &'static str,
    table: &'static str,
    sql: &'static str,
    since: Target,
) -> IndexDef {
    IndexDef {
        name,
        table,
        sql,
        since,
        requires_column: None,
        unique_check: None,
    }
}

/// Indexes the latest target removes (dropped upstream: a full index on
/// `transmissions.last_seen` wasted cache; a partial index replaced it).
pub static DROPPED_INDEXES: &[(&str, Target)] = &[("idx_tx_last_seen", Latest)];

pub static VIEWS: &[ViewDef] = &[ViewDef {
    name: "packets_v",
    since: Seed,
    sql: "CREATE VIEW packets_v AS
  SELECT o.id, COALESCE(o.raw_hex, t.raw_hex) AS raw_hex,
         datetime(o.timestamp, 'unixepoch') AS timestamp,
         obs.id AS observer_id, obs.name AS observer_name,
         o.direction, o.snr, o.rssi, o.score, t.hash, t.route_type,
         t.payload_type, t.payload_version, o.path_json, t.decoded_json,
         t.created_at
  FROM observations o
  JOIN transmissions t ON t.id = o.transmission_id
  LEFT JOIN observers obs ON obs.rowid = o.observer_idx
       AND (obs.inactive IS NULL OR obs.inactive = 0)",
}];

/// corescope's audit table for observations removed by the duplicate merge
/// (created by `migrate` the first time it merges a group, never otherwise).
pub const MERGED_OBSERVATIONS: &str = "_corescope_merged_observations";

/// The columns the ingestor's observation UPSERT overwrites on a dedup-key
/// conflict, each with `COALESCE(excluded.c, c)`: a later copy's non-NULL
/// value wins. Every other column keeps the first row's value.
pub const UPSERT_MERGED_COLUMNS: [&str; 5] = ["snr", "rssi", "score", "raw_hex", "resolved_path"];

/// `CREATE TABLE IF NOT EXISTS` of the audit table: `merged_into` (the id of
/// the surviving observation), `merged_at` (UTC, RFC 3339), then every
/// catalog column of `observations` **without a declared type**, so SQLite
/// applies no affinity and each value is kept byte-for-byte with its
/// storage class. `id` is a plain column (not a rowid alias). Columns an
/// observations table has beyond the catalog are added (untyped) when met.
pub fn merged_observations_sql() -> String {
    let mut cols = vec![
        "  merged_into INTEGER NOT NULL".to_string(),
        "  merged_at TEXT NOT NULL".to_string(),
    ];
    if let Some(t) = table("observations") {
        cols.extend(t.columns.iter().map(|c| format!("  {}", c.name)));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {MERGED_OBSERVATIONS} (\n{}\n)",
        cols.join(",\n")
    )
}

/// A column as `PRAGMA table_info` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveColumn {
    pub name: String,
    pub decl_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    pub pk: bool,
}

/// Double-quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The declaration of a live `nodes` column in a copy of that table: the
/// catalog declaration for a catalog column, else its declared type, NOT
/// NULL and default as `PRAGMA table_info` reports them.
pub fn node_column_decl(c: &LiveColumn) -> String {
    if let Some(def) = NODE_COLUMNS
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(&c.name))
    {
        return format!("{} {}", quote_ident(&c.name), def.decl);
    }
    live_decl(c, true)
}

/// A live column's declaration as `PRAGMA table_info` reports it: name,
/// declared type, (with `constraints`) PRIMARY KEY and NOT NULL, default.
fn live_decl(c: &LiveColumn, constraints: bool) -> String {
    let mut s = quote_ident(&c.name);
    if !c.decl_type.is_empty() {
        s.push(' ');
        s.push_str(&c.decl_type);
    }
    if constraints && c.pk {
        s.push_str(" PRIMARY KEY");
    }
    if constraints && c.not_null {
        s.push_str(" NOT NULL");
    }
    if let Some(d) = &c.default {
        s.push_str(" DEFAULT ");
        s.push_str(d);
    }
    s
}

/// `ALTER TABLE nodes ADD COLUMN` for a column only `inactive_nodes` has, so
/// that a rebuild of `inactive_nodes` in nodes' shape loses no value: its
/// declared type and default, never NOT NULL (ALTER TABLE cannot add a NOT
/// NULL column without a default to a table with rows).
pub fn add_to_nodes_sql(c: &LiveColumn) -> String {
    format!("ALTER TABLE nodes ADD COLUMN {}", live_decl(c, false))
}

/// corescope's own named migration for text observer_idx.
pub const OBSERVER_IDX_MIGRATION: &str = "corescope_observer_idx_rowid_v1";

/// Named one-shot migrations, in the order CoreScope applies them (listed in
/// docs/database.md, "Named migrations"), then the later ones. `migrate`
/// runs them in this order except for the documented deviations in
/// `migration_order`.
pub static MIGRATIONS: &[MigrationDef] = &[
    mig(
        "advert_count_unique_v1",
        Seed,
        &[],
        &[],
        DataOp::AdvertCount,
        "recount nodes.advert_count from unique ADVERT transmissions",
    ),
    mig(
        "noise_floor_real_v1",
        Seed,
        &[],
        &[],
        DataOp::NoiseFloorReal,
        "store integer observers.noise_floor values as REAL",
    ),
    mig(
        "node_telemetry_v1",
        Seed,
        &[
            "nodes.battery_mv",
            "nodes.temperature_c",
            "inactive_nodes.battery_mv",
            "inactive_nodes.temperature_c",
        ],
        &[],
        DataOp::None,
        "node battery/temperature columns",
    ),
    mig(
        "obs_timestamp_index_v1",
        Seed,
        &[],
        &["idx_observations_timestamp"],
        DataOp::None,
        "index observations(timestamp)",
    ),
    mig(
        "observer_metrics_v1",
        Seed,
        &[],
        &[],
        DataOp::None,
        "observer_metrics table",
    ),
    mig(
        "observer_metrics_ts_idx",
        Seed,
        &[],
        &["idx_observer_metrics_timestamp"],
        DataOp::None,
        "index observer_metrics(timestamp)",
    ),
    mig(
        "observers_inactive_v1",
        Seed,
        &["observers.inactive"],
        &[],
        DataOp::None,
        "observers.inactive",
    ),
    mig(
        "observer_metrics_packets_v1",
        Seed,
        &[
            "observer_metrics.packets_sent",
            "observer_metrics.packets_recv",
        ],
        &[],
        DataOp::None,
        "observer_metrics packet counters",
    ),
    mig(
        "channel_hash_v1",
        Seed,
        &["transmissions.channel_hash"],
        &["idx_tx_channel_hash"],
        DataOp::ChannelHashBackfill,
        "transmissions.channel_hash and its backfill",
    ),
    mig(
        "dropped_packets_v1",
        Seed,
        &[],
        &["idx_dropped_observer", "idx_dropped_node"],
        DataOp::None,
        "dropped_packets table and indexes",
    ),
    mig(
        "observations_raw_hex_v1",
        Seed,
        &["observations.raw_hex"],
        &[],
        DataOp::None,
        "observations.raw_hex",
    ),
    mig(
        "observers_last_packet_at_v1",
        Seed,
        &["observers.last_packet_at"],
        &[],
        DataOp::LastPacketAtBackfill,
        "observers.last_packet_at and its backfill",
    ),
    mig(
        "cleanup_legacy_null_hash_ts",
        Seed,
        &[],
        &[],
        DataOp::CleanupLegacyNullHashTs,
        "delete legacy transmissions with empty hash/first_seen and their observations",
    ),
    mig(
        "foreign_advert_v1",
        Seed,
        &["nodes.foreign_advert", "inactive_nodes.foreign_advert"],
        &["idx_nodes_foreign_advert"],
        DataOp::None,
        "nodes.foreign_advert",
    ),
    mig(
        "from_pubkey_v1",
        Seed,
        &["transmissions.from_pubkey"],
        &["idx_transmissions_from_pubkey"],
        DataOp::None,
        "transmissions.from_pubkey and its index",
    ),
    mig(
        "scope_name_v1",
        Latest,
        &["transmissions.scope_name"],
        &["idx_tx_scope_name"],
        DataOp::None,
        "transmissions.scope_name",
    ),
    mig(
        "nodes_default_scope_v1",
        Latest,
        &["nodes.default_scope", "inactive_nodes.default_scope"],
        &[],
        DataOp::None,
        "nodes.default_scope",
    ),
    mig(
        "channel_hash_casing_v1",
        Latest,
        &[],
        &[],
        DataOp::ChannelHashCasing,
        "rename channel_hash 'public' to 'Public'",
    ),
    mig(
        "observers_clock_naive_v1",
        Latest,
        &[
            "observers.clock_skew_seconds",
            "observers.clock_skew_count_24h",
            "observers.clock_last_naive_at",
        ],
        &[],
        DataOp::None,
        "observer clock columns",
    ),
    mig(
        "obs_observer_ts_idx_v1",
        Latest,
        &[],
        &["idx_observations_observer_idx_timestamp"],
        DataOp::None,
        "index observations(observer_idx, timestamp)",
    ),
    MigrationDef {
        name: "tx_last_seen_backfill_v1",
        since: Latest,
        record: Record::AsyncMigrations,
        columns: &["transmissions.last_seen"],
        indexes: &[],
        data: DataOp::TxLastSeenBackfill,
        own: false,
        summary: "transmissions.last_seen from the latest observation (batched)",
    },
    MigrationDef {
        name: OBSERVER_IDX_MIGRATION,
        since: Seed,
        record: Record::Migrations,
        columns: &[],
        indexes: &[],
        data: DataOp::ObserverIdxRowid,
        own: true,
        summary: "map text observations.observer_idx to observers.rowid (exact, case-insensitive)",
    },
];

const fn mig(
    name: &'static str,
    since: Target,
    columns: &'static [&'static str],
    indexes: &'static [&'static str],
    data: DataOp,
    summary: &'static str,
) -> MigrationDef {
    MigrationDef {
        name,
        since,
        record: Record::Migrations,
        columns,
        indexes,
        data,
        own: false,
        summary,
    }
}

/// The order in which `migrate` runs the named migrations. Deviations from
/// CoreScope (README "Differences from CoreScope"):
/// - the observer_idx repair first, so `last_packet_at` can be backfilled;
/// - `from_pubkey_v1` before `advert_count_unique_v1`, so counts are never
///   computed against a missing or unfilled column.
pub fn migration_order(target: Target) -> Vec<&'static MigrationDef> {
    let mut order: Vec<&'static MigrationDef> = Vec::new();
    let by = |n: &str| MIGRATIONS.iter().find(|m| m.name == n);
    for first in [OBSERVER_IDX_MIGRATION, "from_pubkey_v1"] {
        if let Some(m) = by(first) {
            order.push(m);
        }
    }
    for m in MIGRATIONS {
        if !order.iter().any(|o| o.name == m.name) {
            order.push(m);
        }
    }
    order.retain(|m| target.includes(m.since));
    order
}

pub fn table(name: &str) -> Option<&'static TableDef> {
    TABLES.iter().find(|t| t.name == name)
}

pub fn column(table_name: &str, col: &str) -> Option<&'static ColumnDef> {
    table(table_name).and_then(|t| t.columns.iter().find(|c| c.name == col))
}

pub fn index(name: &str) -> Option<&'static IndexDef> {
    INDEXES.iter().find(|i| i.name == name)
}

/// `CREATE TABLE IF NOT EXISTS` for a table at a target.
pub fn create_table_sql(t: &TableDef, target: Target) -> String {
    let mut parts: Vec<String> = t
        .columns
        .iter()
        .filter(|c| target.includes(c.since))
        .map(|c| format!("  {} {}", c.name, c.decl))
        .collect();
    parts.extend(t.constraints.iter().map(|c| format!("  {c}")));
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n{}\n)",
        t.name,
        parts.join(",\n")
    )
}

pub fn add_column_sql(table_name: &str, c: &ColumnDef) -> String {
    format!("ALTER TABLE {table_name} ADD COLUMN {} {}", c.name, c.decl)
}

/// The DDL of a fresh database at `target`: tables, indexes, view, and the
/// `_migrations` rows that mark every named migration done. (The caller sets
/// `auto_vacuum` and WAL before running it.)
pub fn create_schema_sql(target: Target) -> Vec<String> {
    let mut out = Vec::new();
    for t in TABLES.iter().filter(|t| target.includes(t.since)) {
        out.push(create_table_sql(t, target));
    }
    for i in INDEXES.iter().filter(|i| target.includes(i.since)) {
        out.push(i.sql.to_string());
    }
    for v in VIEWS.iter().filter(|v| target.includes(v.since)) {
        out.push(v.sql.to_string());
    }
    for m in migration_order(target) {
        if m.own {
            continue;
        }
        match m.record {
            Record::Migrations => out.push(format!(
                "INSERT OR IGNORE INTO _migrations (name) VALUES ('{}')",
                m.name
            )),
            Record::AsyncMigrations => out.push(format!(
                "INSERT OR IGNORE INTO _async_migrations (name, status, ended_at) VALUES ('{}', 'done', datetime('now'))",
                m.name
            )),
        }
    }
    out
}

/// The AssertReady list of a target: tables as `table:NAME`,
/// columns as `TABLE.COLUMN`.
pub fn assert_ready_items(target: Target) -> Vec<String> {
    let mut out = Vec::new();
    for t in TABLES {
        if t.asserted {
            out.push(format!("table:{}", t.name));
        }
        for c in t.columns {
            if c.asserted.is_some_and(|a| target.includes(a)) {
                out.push(format!("{}.{}", t.name, c.name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::probe::{live_columns, missing_structure, node_table_like_nodes_sql};
    use rusqlite::Connection;

    fn has(items: &[String], s: &str) -> bool {
        items.iter().any(|i| i == s)
    }

    #[test]
    fn assert_ready_seed_is_one_table_and_seven_columns() {
        let items = assert_ready_items(Seed);
        let expected = [
            "table:neighbor_edges",
            "observations.resolved_path",
            "observers.inactive",
            "observers.last_packet_at",
            "observers.iata",
            "nodes.foreign_advert",
            "inactive_nodes.foreign_advert",
            "transmissions.from_pubkey",
        ];
        for e in expected {
            assert!(has(&items, e), "missing {e}");
        }
        assert_eq!(items.len(), 8, "{items:?}");
    }

    #[test]
    fn assert_ready_latest_is_one_table_and_21_columns() {
        let items = assert_ready_items(Latest);
        let later = [
            "transmissions.last_seen",
            "transmissions.scope_name",
            "nodes.default_scope",
            "inactive_nodes.default_scope",
            "observations.raw_hex",
            "nodes.multibyte_sup",
            "nodes.multibyte_evidence",
            "inactive_nodes.multibyte_sup",
            "inactive_nodes.multibyte_evidence",
            "observers.clock_skew_seconds",
            "observers.clock_skew_count_24h",
            "observers.clock_last_naive_at",
            "observers.can_relay",
            "observers.can_relay_seen",
        ];
        for e in later {
            assert!(has(&items, e), "missing {e}");
        }
        assert_eq!(items.iter().filter(|i| i.starts_with("table:")).count(), 1);
        assert_eq!(items.len(), 1 + 21, "{items:?}");
        // Every asserted column is a catalog column of the target.
        for i in &items {
            if let Some((t, c)) = i.split_once('.') {
                let def = column(t, c).expect("asserted column in catalog");
                assert!(Latest.includes(def.since));
            }
        }
    }

    #[test]
    fn named_migrations_in_spec_order() {
        let seed_order = [
            "advert_count_unique_v1",
            "noise_floor_real_v1",
            "node_telemetry_v1",
            "obs_timestamp_index_v1",
            "observer_metrics_v1",
            "observer_metrics_ts_idx",
            "observers_inactive_v1",
            "observer_metrics_packets_v1",
            "channel_hash_v1",
            "dropped_packets_v1",
            "observations_raw_hex_v1",
            "observers_last_packet_at_v1",
            "cleanup_legacy_null_hash_ts",
            "foreign_advert_v1",
            "from_pubkey_v1",
        ];
        let names: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(&names[..15], &seed_order[..]);
        for later in [
            "scope_name_v1",
            "nodes_default_scope_v1",
            "channel_hash_casing_v1",
            "observers_clock_naive_v1",
            "obs_observer_ts_idx_v1",
            "tx_last_seen_backfill_v1",
        ] {
            let m = MIGRATIONS.iter().find(|m| m.name == later).expect(later);
            assert_eq!(m.since, Latest);
        }
        // Seed target runs only seed migrations.
        assert!(migration_order(Seed).iter().all(|m| m.since == Seed));
        // Documented deviation: from_pubkey before advert_count.
        let order: Vec<&str> = migration_order(Latest).iter().map(|m| m.name).collect();
        let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
        assert!(pos("from_pubkey_v1") < pos("advert_count_unique_v1"));
        assert!(pos(OBSERVER_IDX_MIGRATION) < pos("observers_last_packet_at_v1"));
    }

    #[test]
    fn migration_objects_exist_in_catalog() {
        for m in MIGRATIONS {
            for c in m.columns {
                let (t, col) = c.split_once('.').unwrap();
                let def = column(t, col).unwrap_or_else(|| panic!("{c}"));
                assert!(def.alter, "{c} must be addable by ALTER");
            }
            for i in m.indexes {
                assert!(index(i).is_some(), "{i}");
            }
        }
    }

    #[test]
    fn fresh_schema_is_valid_sql_and_complete() {
        for target in [Seed, Latest] {
            let conn = Connection::open_in_memory().unwrap();
            for sql in create_schema_sql(target) {
                conn.execute_batch(&sql)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            assert!(missing_structure(&conn, target).unwrap().is_empty());
            let n: i64 = conn
                .query_row("SELECT count(*) FROM _migrations", [], |r| r.get(0))
                .unwrap();
            assert!(n >= 15);
        }
    }

    #[test]
    fn audit_table_has_every_observation_column_untyped() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&merged_observations_sql()).unwrap();
        let cols = live_columns(&conn, MERGED_OBSERVATIONS).unwrap();
        let obs = table("observations").unwrap();
        assert_eq!(cols.len(), obs.columns.len() + 2);
        assert_eq!(cols[0].name, "merged_into");
        for (c, o) in cols[2..].iter().zip(obs.columns) {
            assert_eq!(c.name, o.name);
            assert_eq!(c.decl_type, "", "no affinity for {}", c.name);
            assert!(!c.pk);
        }
    }

    #[test]
    fn inactive_nodes_copies_the_live_shape_of_nodes() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE nodes (public_key TEXT PRIMARY KEY, name TEXT, \"odd col\" VARCHAR(3) NOT NULL DEFAULT 'x', last_seen TEXT);",
        )
        .unwrap();
        let sql = node_table_like_nodes_sql(&conn, "inactive_nodes").unwrap();
        conn.execute_batch(&sql).unwrap();
        assert_eq!(
            live_columns(&conn, "inactive_nodes").unwrap(),
            live_columns(&conn, "nodes").unwrap()
        );
        conn.execute_batch(
            "INSERT INTO nodes (public_key, name, last_seen) VALUES ('ab', 'n', 't');
             INSERT OR REPLACE INTO inactive_nodes SELECT * FROM nodes;",
        )
        .unwrap();
        let odd: String = conn
            .query_row("SELECT \"odd col\" FROM inactive_nodes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(odd, "x");
    }

    #[test]
    fn fresh_column_order_matches_spec() {
        let t = table("transmissions").unwrap();
        let sql = create_table_sql(t, Latest);
        let pos = |s: &str| sql.find(&format!("  {s} ")).unwrap();
        assert!(pos("from_pubkey") < pos("last_seen"));
        assert!(pos("last_seen") < pos("created_at"));
        assert!(pos("channel_hash") < pos("scope_name"));
        assert!(!create_table_sql(t, Seed).contains("scope_name"));
    }
}
