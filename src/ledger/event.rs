//! The ledger's vocabulary: systemd's `ActiveState`, what set a restart
//! off, the transitions sources report, the events that carry them, the ops
//! the owner makes, and what applying one did.

use serde::{Deserialize, Serialize};

use super::Usec;

/// systemd's `ActiveState` of a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActiveState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
}

impl ActiveState {
    /// All six states, in the order systemd documents them.
    pub const ALL: [ActiveState; 6] = [
        ActiveState::Active,
        ActiveState::Reloading,
        ActiveState::Inactive,
        ActiveState::Failed,
        ActiveState::Activating,
        ActiveState::Deactivating,
    ];

    /// The name systemd uses on the bus and in `systemctl`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
        }
    }

    /// Parses systemd's name of a state; `None` for anything else.
    pub fn parse(s: &str) -> Option<ActiveState> {
        ActiveState::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Up means `active` or `reloading`.
    pub fn is_up(self) -> bool {
        matches!(self, ActiveState::Active | ActiveState::Reloading)
    }
}

/// What a unit is accounted as: a service, up or down all the time, or a
/// job, which runs now and then and between runs is not down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Service,
    Job,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Job => "job",
        }
    }
}

/// What set a restart off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// systemd restarted the unit itself (`Restart=`).
    Auto,
    /// A restart job was queued (`systemctl restart` and friends).
    Manual,
}

impl Trigger {
    pub const ALL: [Trigger; 2] = [Trigger::Auto, Trigger::Manual];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Auto => "auto",
            Trigger::Manual => "manual",
        }
    }
}

/// Where an event came from; only used for unitwatch's own statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Dbus,
    Journal,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Dbus => "dbus",
            Origin::Journal => "journal",
        }
    }
}

/// One thing that happened to a unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// unitwatch sees the unit (again): accounting starts here, in this state.
    /// `n_restarts` is systemd's `NRestarts` at that moment, the baseline for
    /// automatic restarts (not counted itself).
    Seen {
        state: ActiveState,
        sub_state: String,
        n_restarts: Option<u32>,
    },
    /// The unit entered `state` (systemd's timestamp). `sub_state` is given
    /// when the report is of the unit's current state.
    State {
        state: ActiveState,
        sub_state: Option<String>,
    },
    /// systemd's `NRestarts` read at this timestamp.
    NRestarts(u32),
    /// A run ended unsuccessfully with systemd's `Result` (`exit-code`,
    /// `signal`, ...); `invocation` is the run's `InvocationID`, if known.
    RunFailed {
        result: String,
        invocation: Option<String>,
    },
    /// A job was queued for the unit; `job_type` is systemd's `JobType`
    /// (`start`, `stop`, `restart`, ...), empty if unknown; `invocation` is
    /// the `InvocationID` of the unit's run at that moment.
    JobQueued {
        id: u32,
        job_type: String,
        invocation: Option<String>,
    },
    /// A job of the unit finished with systemd's job result (`done`, `canceled`, ...).
    JobRemoved { id: u32, result: String },
    /// systemd unloaded the unit; its counters stay.
    Removed,
    /// A restart recorded as such, ending the run `invocation`: a restart
    /// job that stopped the unit while it was up (`Manual`), or systemd's
    /// *restart scheduled* record (`Auto`, with its `N_RESTARTS`). Each
    /// record is one restart.
    Restart {
        trigger: Trigger,
        invocation: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        n_restarts: Option<u32>,
    },
    /// A run (`invocation`) began: systemd's `InactiveExitTimestamp` of it,
    /// or the journal's "Starting…".
    RunStarted { invocation: Option<String> },
    /// A run ended, with systemd's `Result` (`success`, `exit-code`, ...).
    RunEnded {
        result: String,
        invocation: Option<String>,
    },
    /// What the unit is accounted as, from its properties (`Type`,
    /// `RemainAfterExit`, `TriggeredBy`) and `[watch] jobs`/`services`.
    Kind { kind: Kind },
    /// The timer that triggers the unit, as D-Bus reports it; its
    /// `last_trigger` and `next_elapse` are 0 when there is none.
    Timer {
        timer: String,
        last_trigger: Usec,
        next_elapse: Usec,
    },
}

impl Transition {
    /// The state a unit is known to be in right after this transition, for
    /// starting the account of a unit first met in the journal.
    pub(super) fn implied_state(&self) -> Option<ActiveState> {
        match self {
            Transition::Seen { state, .. } | Transition::State { state, .. } => Some(*state),
            Transition::RunFailed { .. } => Some(ActiveState::Failed),
            Transition::NRestarts(_)
            | Transition::Restart {
                trigger: Trigger::Auto,
                ..
            } => Some(ActiveState::Activating),
            Transition::Restart { .. } => Some(ActiveState::Deactivating),
            Transition::RunStarted { .. } => Some(ActiveState::Activating),
            Transition::RunEnded { result, .. } if result == "success" => {
                Some(ActiveState::Inactive)
            }
            Transition::RunEnded { .. } => Some(ActiveState::Failed),
            _ => None,
        }
    }
}

/// An event: a transition of a unit at a timestamp, and who reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub unit: String,
    pub at: Usec,
    pub transition: Transition,
    pub origin: Origin,
}

impl Event {
    /// An event seen live over D-Bus.
    pub fn new(unit: impl Into<String>, at: Usec, transition: Transition) -> Event {
        Event {
            unit: unit.into(),
            at,
            transition,
            origin: Origin::Dbus,
        }
    }

    /// An event read from the journal.
    pub fn logged(unit: impl Into<String>, at: Usec, transition: Transition) -> Event {
        Event {
            origin: Origin::Journal,
            ..Event::new(unit, at, transition)
        }
    }
}

/// One change to the ledger, as the owner task makes it: applying an event,
/// the three host-wide changes and the two of one user's manager. Replaying the ops applied since a saved
/// ledger onto that ledger gives the same ledger (persistence relies on it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Apply {
        event: Event,
    },
    HostDown {
        at: Usec,
    },
    DbusLost {
        at: Usec,
    },
    Shift {
        delta: i64,
    },
    /// The connection to `user`'s manager was lost at `at`.
    UserLost {
        user: String,
        at: Usec,
    },
    /// `user`'s manager was gone at `at` (its `user@UID.service` stopped).
    UserDown {
        user: String,
        at: Usec,
    },
}

/// What applying an event did, for logging by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new unit is now accounted.
    Appeared,
    /// Restarts were counted.
    Restarted(Trigger, u64),
    /// A failure was counted.
    Failed(String),
    /// A new unit was not accounted: there are `max_units` already.
    Dropped,
    /// Nothing worth a log line (state change, duplicate, stale report).
    Quiet,
}
