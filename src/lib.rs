//! unitwatch: per-unit uptime, downtime, restart and failure accounting for
//! systemd, exported as Prometheus metrics.
//!
//! Data flows one way: [`source`]s turn systemd into ledger events and send
//! them as [`message`]s to the [`owner`], the one task that holds the pure
//! [`ledger`]; it publishes a [`snapshot`] that the [`render`]ers (served by
//! [`http`]) and [`persist`]ence read. [`server::run`] wires them together.

pub mod clock;
pub mod config;
pub mod health;
pub mod http;
pub mod lane;
pub mod ledger;
pub mod message;
pub mod notify;
pub mod owner;
pub mod persist;
pub mod quiet;
pub mod render;
pub mod sample;
pub mod select;
pub mod server;
pub mod shutdown;
pub mod snapshot;
pub mod source;
pub mod status;
