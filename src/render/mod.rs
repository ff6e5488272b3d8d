//! Renderers: pure functions from a published snapshot to what readers get
//! (`/metrics`, the JSON API, the status page, human-readable times). They
//! never see the live ledger, so no read can hold up events.

pub mod api;
pub mod exposition;
pub mod human;
pub mod metrics;
pub mod page;
