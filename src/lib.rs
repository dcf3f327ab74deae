//! corescope: maintenance toolkit for the SQLite database of CoreScope.
//! The library holds everything; the `corescope` binary parses the command
//! line and calls [`app::run`].

pub mod app;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod derive;
pub mod edges;
pub mod error;
#[cfg(test)]
mod fuzz_tests;
pub mod graph;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod packet;
pub mod progress;
pub mod report;
pub mod resolve;
pub mod retention;
pub mod store;
pub mod synth;
pub mod timeutil;
