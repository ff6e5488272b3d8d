//! Sinks: adapters that read the ledger for the outside world.

pub mod api;
pub mod auth;
pub mod http;
pub mod human;
pub mod metrics;
pub mod page;
pub mod serve;
pub mod state;
