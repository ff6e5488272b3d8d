//! Persistence: the state kept in `state.dir` between runs, loaded at start
//! and written from snapshots, apart from the task that applies events.

pub mod state;
