//! HTTP serving: the listener with its limits, TLS and basic auth
//! ([`serve`], [`auth`], [`web_config`]) and the routes ([`routes`]) that
//! hand the published snapshot to the renderers; a scrape's body assembled
//! from parts kept per snapshot ([`scrape`]). Nothing here renders.

pub mod auth;
mod open;
pub mod routes;
pub mod scrape;
mod segment;
pub mod serve;
pub mod web_config;
