//! What readers see of one unit: its state and totals as of a `now`, and
//! its history for window reads.

use std::collections::BTreeMap;

use super::runs::{Runs, Timer};
use super::{ActiveState, History, Kind, Totals};

/// A read-only view of one unit's accounting at some `now`.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitView<'a> {
    pub unit: &'a str,
    pub state: ActiveState,
    pub sub_state: &'a str,
    pub loaded: bool,
    pub uptime_seconds: f64,
    pub downtime_seconds: f64,
    /// The totals those two are read from, as they go on growing: what a
    /// scrape keeps of the unit to write them at its own time.
    pub totals: Totals,
    /// Unix time of the last state change, in seconds.
    pub state_change_seconds: f64,
    pub restarts_auto: u64,
    pub restarts_manual: u64,
    pub failures: &'a BTreeMap<String, u64>,
    /// The last counted failure: Unix time in seconds, and its `Result`.
    pub last_failure: Option<(f64, &'a str)>,
    /// The unit's kept history, for reads over windows.
    pub history: History<'a>,
    pub kind: Kind,
    /// Its runs (a job's; a service's totals only).
    pub runs: &'a Runs,
    /// The timer that triggers it, if any.
    pub timer: Option<&'a Timer>,
}

impl UnitView<'_> {
    pub fn up(&self) -> bool {
        self.state.is_up()
    }

    pub fn is_job(&self) -> bool {
        self.kind == Kind::Job
    }

    /// A job's run is in progress: it is neither inactive nor failed.
    pub fn running(&self) -> bool {
        !matches!(self.state, ActiveState::Inactive | ActiveState::Failed)
    }
}
