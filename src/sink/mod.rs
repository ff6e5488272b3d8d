//! Sinks: adapters that read the ledger for the outside world.

pub mod api;
pub mod http;
pub mod human;
pub mod metrics;
pub mod page;
pub mod state;
