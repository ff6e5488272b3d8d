//! Persistence: the state kept in `state.dir` between runs, loaded at start
//! and written apart from the task that applies events.
//!
//! The state is a base (`state.json`, the whole ledger as of some save) and
//! a log (`state.log`, the changes of each save since). [`state`] owns the
//! format and the base, [`log`] the log, [`load`] reading both back, and
//! [`writer`] the one thread that writes them.

pub mod load;
pub mod log;
#[cfg(test)]
mod measure;
pub mod state;
pub mod writer;

pub use load::{Loaded, Position};
pub use state::{Frame, Meta, Saved, StateError, StateFile};
pub use writer::Writer;

/// A fresh, empty directory for one test.
#[cfg(test)]
pub(crate) fn test_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("unitwatch-persist-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
