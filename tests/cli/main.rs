//! The one integration-test binary of corescope: every end-to-end test runs
//! the real `corescope` binary against real SQLite files. One binary links
//! bundled SQLite once; [`harness`] is the one set of helpers.
//!
//! Run one module with a filter, e.g. `cargo test --test cli reliability_migrate::`.

mod harness;

mod backfill;
mod backup;
mod bad_input;
mod build_edges;
mod check_jobs;
mod ci_script;
mod contrib;
mod edges_exactly_once;
mod graph;
mod help_pages;
mod json_contract;
mod logging;
mod man_pages;
mod metrics_file;
mod migrate_check;
mod migrate_index_repairs;
mod migrate_online;
mod migrate_repairs;
mod operator_output;
mod prune;
mod reliability_backfill;
mod reliability_bad_input;
mod reliability_edges;
mod reliability_migrate;
mod reliability_open;
mod reliability_prune;
mod reliability_read_only;
mod reliability_safety;
mod run_lock;
mod schema;
mod schema_diff;
mod setup;
mod snapshots;
mod synth;
mod terminal;
mod vacuum;
