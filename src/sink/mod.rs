//! Sinks: adapters that read the ledger for the outside world.

pub mod http;
pub mod metrics;
pub mod state;
