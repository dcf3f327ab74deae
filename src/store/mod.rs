//! The storage layer: everything that touches the SQLite file, used by the
//! commands and importing none of them (nor any command-line type).
//!
//! - [`open`]: the read-only and read-write handles ([`ReadOnlyDb`], [`WriteDb`])
//!   and what a CoreScope database is ([`CORE_SCHEMA`]).
//! - [`precheck`]: file checks before SQLite opens a path.
//! - [`error`]: the one classification of SQLite errors into messages.
//! - [`state`]: the `_corescope_state` table.
//! - [`probe`]: schema probes against the catalog.
//! - [`schema_diff`]: every difference between a schema and the catalog.
//! - [`engine`]: the batch engine of write commands (transaction under the
//!   lock budget, fairness pause, dry run, deadline, checkpoints, progress).
//! - [`batch`]: batch sizing under the lock budget and the deadline.
//! - [`values`]: readers of stored values of any storage class.
//! - [`walk`]: generic batched walks on the engine (key cursor, rowid ranges,
//!   repeat-until-short, key chunks).
//! - [`runlock`]: the per-command run lock of write commands.
//! - [`shadow`]: online table rebuilds (new indexes beside a live writer).
//! - [`edge_state`], [`backfill_state`]: what `build-edges` and `backfill`
//!   keep in the database, and probes of it (also read by `check`).
//! - [`maintenance`]: incremental vacuum and WAL checkpoints.
//! - [`outfile`]: output files (reports, metrics, lock files) and their rules.
//! - [`backup`]: a consistent online copy of a database (online backup API).

pub mod backfill_state;
pub mod backup;
pub mod batch;
pub mod edge_state;
pub mod engine;
pub mod error;
pub mod maintenance;
pub mod open;
pub mod outfile;
pub mod precheck;
pub mod probe;
pub mod runlock;
pub mod schema_diff;
pub mod shadow;
pub mod state;
pub mod values;
pub mod walk;

pub use batch::{Batcher, Deadline};
pub use error::classify_final;
pub use open::{file_len, sidecar, wal_path, OpenOptions, ReadOnlyDb, WriteDb, CORE_SCHEMA};
pub use precheck::{free_bytes, SQLITE_MAX_PATH};
pub use probe::{columns, object_exists, table_exists};
pub use state::{state_delete, state_get, state_set, state_table_sql, STATE_TABLE};
