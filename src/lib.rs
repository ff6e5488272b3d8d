//! unitwatch: per-unit uptime, downtime, restart and failure accounting for
//! systemd, exported as Prometheus metrics.
//!
//! The [`ledger`] is the pure core; [`source`]s turn systemd into ledger
//! events, [`sink`]s read the ledger; [`server::run`] wires them together.

pub mod ledger;
pub mod config;
pub mod select;
