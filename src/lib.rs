//! unitwatch: per-unit uptime, downtime, restart and failure accounting for
//! systemd, exported as Prometheus metrics.
//!
//! The [`ledger`] is the pure core; [`source`]s turn systemd into ledger
//! events, [`sink`]s read the ledger; [`owner`] is the one task that holds
//! the ledger and [`server::run`] wires everything together.

pub mod clock;
pub mod config;
pub mod health;
pub mod ledger;
pub mod notify;
pub mod owner;
pub mod select;
pub mod server;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod status;
pub mod web_config;
