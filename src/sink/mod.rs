//! Sinks: adapters that read the ledger for the outside world.

pub mod auth;
pub mod http;
pub mod metrics;
pub mod serve;
pub mod state;
