//! What the sampler reads of units and of the host between events: each
//! watched unit's resources (CPU, memory, tasks, IO, OOM kills, from its
//! cgroup), a socket's connections, a watchdog's last ping, and the
//! manager's own state. None of it is accounting: systemd signals no change
//! of these numbers, so they are read every `[resources] interval`, sent to
//! the owner whole and published with the next snapshot. Kept apart from the
//! sampler so that renderers depend on these types, not on the task.

use std::collections::BTreeMap;

use crate::ledger::Usec;

/// One round of the sampler. A value that could not be read (no cgroup,
/// accounting off, a controller not on cgroup v2) is `None`, so it has no
/// sample rather than a zero.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Wall-clock time of the round, in µs since the epoch.
    pub taken_at: Usec,
    /// By unit, for the watched units that had something to read.
    pub units: BTreeMap<String, UnitSample>,
    /// The service manager itself, once read.
    pub host: Option<Host>,
}

/// What was read of one unit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnitSample {
    pub resources: Resources,
    /// CPU used since the last round, in millicores (1000: one core busy);
    /// for people (the page, the API, `unitwatch status`): Prometheus takes
    /// its own `rate()` of the counter.
    pub cpu_millicores: Option<u64>,
    pub socket: Option<Socket>,
    pub watchdog: Option<Watchdog>,
}

impl UnitSample {
    /// CPU used since the last round, in cores (1.0: one core busy).
    pub fn cpu_cores(&self) -> Option<f64> {
        self.cpu_millicores.map(|m| m as f64 / 1000.0)
    }
}

/// A unit's cgroup counters, as systemd's `CPUUsageNSec`, `MemoryCurrent`,
/// `TasksCurrent`, `TasksMax`, `IOReadBytes`, `IOWriteBytes` give them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resources {
    /// `cpu.stat` `user_usec`, `system_usec`.
    pub cpu_user_usec: Option<u64>,
    pub cpu_system_usec: Option<u64>,
    /// `memory.current`, `memory.peak`, `memory.max` (when not `max`).
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub memory_max_bytes: Option<u64>,
    /// `pids.current`, `pids.max` (when not `max`).
    pub tasks: Option<u64>,
    pub tasks_max: Option<u64>,
    /// `io.stat` `rbytes`, `wbytes`, summed over devices.
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    /// `memory.events` `oom_kill`.
    pub oom_kills: Option<u64>,
}

impl Resources {
    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// A socket unit's connections (`NAccepted`, `NConnections`, `NRefused`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Socket {
    pub accepted: u64,
    pub connections: u64,
    /// `None` where systemd does not have `NRefused`.
    pub refused: Option<u64>,
}

/// A service's watchdog (`WatchdogUSec`, `WatchdogTimestamp`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Watchdog {
    pub interval_usec: u64,
    /// Wall-clock µs of the last ping, if it pinged in this invocation.
    pub last_ping: Option<Usec>,
}

/// The service manager's state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Host {
    /// `SystemState`: `running`, `degraded`, ...
    pub system_state: String,
    /// `Version`.
    pub version: String,
    /// Loaded units by `ActiveState`, all of them, watched or not; `None`
    /// until listed.
    pub units: Option<BTreeMap<String, u64>>,
}

/// The states `SystemState` takes, so every one has a sample.
pub const SYSTEM_STATES: [&str; 8] = [
    "initializing",
    "starting",
    "running",
    "degraded",
    "maintenance",
    "stopping",
    "offline",
    "unknown",
];

/// The `ActiveState`s `systemd_units` always has a sample for.
pub const ACTIVE_STATES: [&str; 7] = [
    "active",
    "reloading",
    "inactive",
    "failed",
    "activating",
    "deactivating",
    "maintenance",
];
