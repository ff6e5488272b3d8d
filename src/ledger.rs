//! The ledger: every accounting rule of unitwatch, and nothing else.
//!
//! The ledger is fed `(unit, timestamp, transition)` events by the sources and
//! read by the sinks. It does no I/O and never reads a clock: every timestamp,
//! including "now" at scrape time, is an input. Timestamps are microseconds
//! since the Unix epoch on `CLOCK_REALTIME`, the clock systemd records
//! `StateChangeTimestamp` and friends on.
//!
//! Rules:
//! - A unit is *up* while its `ActiveState` is `active` or `reloading`, *down*
//!   otherwise. Up- and downtime accumulate between the timestamps systemd
//!   recorded for each state change; the interval still open is counted up to
//!   the `now` of the read.
//! - State changes are kept as a time-ordered set of points, so duplicate
//!   reports (same timestamp) collapse and late reports fall into place.
//!   Points older than [`RETAIN`] before a unit's newest one are folded into
//!   its totals, and so are the oldest once it has more than [`MAX_POINTS`];
//!   reports older than the fold are ignored as stale. What is kept is the
//!   unit's history ([`window`]): availability, MTBF/MTTR and timelines over
//!   any window within it.
//! - An automatic restart is counted from systemd's `NRestarts`
//!   ([`RestartCounter`]): every rise counts; a drop reported after the
//!   high-water mark was reached means systemd reset the counter (a start by
//!   hand), which begins a new epoch whose value counts; a lower value
//!   reported from before that is late news and changes nothing.
//! - A manual restart is a restart job (`systemctl restart`, `try-restart`,
//!   `reload-or-restart` that restarts) that finished with result `done`,
//!   queued while the unit was up and not by systemd itself (while the unit
//!   waited in `auto-restart`), during which the unit went down and came back
//!   up. A job of unknown type (the D-Bus signals do not carry it) counts by
//!   that behaviour alone: only a restart job takes a unit down and back up. A stop followed later by a start
//!   is two jobs and no restart; a restart of a unit that was down is a start.
//! - A failure is a run that ended with a `Result` other than `success`,
//!   counted once per run: per `InvocationID` where systemd gives one (a
//!   crash with `Restart=` passes through `failed` and then `auto-restart`,
//!   both of the same invocation), else per end-of-run timestamp.
//! - Accounting for a unit starts when it is first [`Transition::Seen`] over
//!   D-Bus, or with its first record in the journal.
//! - D-Bus and the journal report the same transitions. While D-Bus follows a
//!   unit (from `Seen` until [`Ledger::dbus_lost`]) its timestamps are
//!   authoritative and the journal's state records are not used; outside
//!   those spans (history, gaps) the journal's are. Restarts and failures
//!   from both are matched: automatic restarts by systemd's `NRestarts`
//!   value, failures and manual restarts by the `InvocationID` of the run
//!   they ended.
//! - A reboot: for units up at the last journal record of a boot, the time
//!   until the next boot's records is downtime ([`Ledger::host_down`]).

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

pub mod window;

pub use window::History;

/// Microseconds since the Unix epoch (`CLOCK_REALTIME`), as systemd records them.
pub type Usec = u64;

/// How many state-change points a unit keeps at most (30 days of a unit
/// that flaps hourly take some 2900).
pub const MAX_POINTS: usize = 4096;

/// How far back a unit's history reaches from its newest state change: 30
/// days, and a day to spare for reads some time after it.
pub const RETAIN: Usec = 31 * 24 * 3600 * 1_000_000;

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
    /// A restart recorded as such (the journal's restart job records),
    /// ending the run `invocation`.
    Restart {
        trigger: Trigger,
        invocation: Option<String>,
    },
}

impl Transition {
    /// The state a unit is known to be in right after this transition, for
    /// starting the account of a unit first met in the journal.
    fn implied_state(&self) -> Option<ActiveState> {
        match self {
            Transition::Seen { state, .. } | Transition::State { state, .. } => Some(*state),
            Transition::RunFailed { .. } => Some(ActiveState::Failed),
            Transition::NRestarts(_) => Some(ActiveState::Activating),
            Transition::Restart { .. } => Some(ActiveState::Deactivating),
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

/// One change to the ledger, as the owner task makes it: applying an event
/// and the three host-wide changes. Replaying the ops applied since a saved
/// ledger onto that ledger gives the same ledger (persistence relies on it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Apply { event: Event },
    HostDown { at: Usec },
    DbusLost { at: Usec },
    Shift { delta: i64 },
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

/// A job of a unit between `JobNew` and `JobRemoved`, and what the unit did meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingJob {
    /// `Some(true)` for a restart job, `Some(false)` for any other type,
    /// `None` if the type is unknown.
    restart: Option<bool>,
    queued_by_systemd: bool,
    was_up: bool,
    went_down: bool,
    came_back: bool,
    invocation: Option<String>,
}

impl PendingJob {
    fn observe(&mut self, state: ActiveState) {
        if !state.is_up() {
            self.went_down = true;
        } else if self.went_down {
            self.came_back = true;
        }
    }

    fn is_manual_restart(&self) -> bool {
        self.restart != Some(false)
            && !self.queued_by_systemd
            && self.was_up
            && self.went_down
            && self.came_back
    }
}

/// Follows systemd's `NRestarts` of a unit as reported, possibly late and
/// out of order, by D-Bus and the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RestartCounter {
    /// The highest value of the current epoch, and when it was reported.
    high: u32,
    high_at: Usec,
    /// When the current epoch began (systemd reset the counter).
    epoch_at: Usec,
    /// The highest value of the previous epoch, for its late reports.
    previous_high: Option<u32>,
}

impl RestartCounter {
    fn new(at: Usec, n: u32) -> RestartCounter {
        RestartCounter {
            high: n,
            high_at: at,
            epoch_at: 0,
            previous_high: None,
        }
    }

    /// Takes in a report of value `n` at `at`; returns how many restarts it adds.
    fn report(&mut self, at: Usec, n: u32) -> u32 {
        if at < self.epoch_at {
            // A late report from before the last reset.
            return match self.previous_high {
                Some(p) if n > p => {
                    self.previous_high = Some(n);
                    n - p
                }
                _ => 0,
            };
        }
        if n >= self.high {
            let new = n - self.high;
            self.high = n;
            self.high_at = self.high_at.max(at);
            return new;
        }
        if at <= self.high_at {
            // Older news than the high-water mark.
            return 0;
        }
        // systemd reset the counter: a new epoch, all of `n` is new.
        self.previous_high = Some(self.high);
        self.high = n;
        self.high_at = at;
        self.epoch_at = at;
        n
    }
}

/// Remembers the last few `InvocationID`s something was counted for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Recent(VecDeque<String>);

impl Recent {
    /// Records `id`; false if it was already there.
    fn insert(&mut self, id: &str) -> bool {
        if self.0.iter().any(|x| x == id) {
            return false;
        }
        if self.0.len() >= 16 {
            self.0.pop_front();
        }
        self.0.push_back(id.to_owned());
        true
    }
}

/// Accounting of one unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Account {
    /// When accounting began; nothing before it counts.
    seen_at: Usec,
    /// Everything before `fold_at` is in `up_usec`/`down_usec`.
    fold_at: Usec,
    fold_state: ActiveState,
    up_usec: u64,
    down_usec: u64,
    /// State changes after `fold_at`.
    points: BTreeMap<Usec, ActiveState>,
    sub_state: String,
    n_restarts: Option<RestartCounter>,
    restarts: [u64; 2],
    failures: BTreeMap<String, u64>,
    last_failure_at: Usec,
    /// `Result` of the last counted failure.
    #[serde(default)]
    last_failure_result: Option<String>,
    /// When restarts were counted (one entry each), within [`RETAIN`].
    #[serde(default)]
    restart_log: VecDeque<(Usec, Trigger)>,
    /// `InvocationID`s of the last runs counted as failed.
    failed_invocations: Recent,
    /// `InvocationID`s of the last runs ended by a counted manual restart.
    restarted_invocations: Recent,
    /// Serialized so that a saved ledger and the ops after it replay to the
    /// same ledger; forgotten at a restart ([`Ledger::restarted`]).
    #[serde(default)]
    jobs: HashMap<u32, PendingJob>,
    loaded: bool,
    /// Spans D-Bus followed the unit: from `Seen` until the connection was lost.
    /// Serialized and forgotten like `jobs`.
    #[serde(default)]
    followed: Vec<(Usec, Option<Usec>)>,
}

impl Account {
    fn new(at: Usec, state: ActiveState, sub_state: String, n_restarts: Option<u32>) -> Account {
        Account {
            seen_at: at,
            fold_at: at,
            fold_state: state,
            up_usec: 0,
            down_usec: 0,
            points: BTreeMap::new(),
            sub_state,
            n_restarts: n_restarts.map(|n| RestartCounter::new(at, n)),
            restarts: [0, 0],
            failures: BTreeMap::new(),
            last_failure_at: 0,
            last_failure_result: None,
            restart_log: VecDeque::new(),
            failed_invocations: Recent::default(),
            restarted_invocations: Recent::default(),
            jobs: HashMap::new(),
            loaded: true,
            followed: Vec::new(),
        }
    }

    /// Whether D-Bus was following the unit at `at`.
    fn followed_at(&self, at: Usec) -> bool {
        self.followed
            .iter()
            .any(|(from, to)| at >= *from && to.is_none_or(|to| at < to))
    }

    fn follow(&mut self, at: Usec) {
        if !self.followed.iter().any(|(_, to)| to.is_none()) {
            if self.followed.len() >= 8 {
                self.followed.remove(0);
            }
            self.followed.push((at, None));
        }
    }

    fn unfollow(&mut self, at: Usec) {
        for span in self.followed.iter_mut() {
            if span.1.is_none() {
                span.1 = Some(at.max(span.0));
            }
        }
    }

    fn shift(&mut self, delta: i64) {
        self.seen_at = moved(self.seen_at, delta);
        self.fold_at = moved(self.fold_at, delta);
        self.points = std::mem::take(&mut self.points)
            .into_iter()
            .map(|(t, s)| (moved(t, delta), s))
            .collect();
        if let Some(c) = &mut self.n_restarts {
            c.high_at = moved(c.high_at, delta);
            c.epoch_at = moved(c.epoch_at, delta);
        }
        self.last_failure_at = moved(self.last_failure_at, delta);
        for (t, _) in &mut self.restart_log {
            *t = moved(*t, delta);
        }
        for (from, to) in &mut self.followed {
            *from = moved(*from, delta);
            *to = to.map(|t| moved(t, delta));
        }
    }

    fn count_manual_restart(&mut self, at: Usec, invocation: Option<&str>) -> Outcome {
        if let Some(id) = invocation.filter(|id| !id.is_empty()) {
            if !self.restarted_invocations.insert(id) {
                return Outcome::Quiet;
            }
        }
        self.count_restarts(at, Trigger::Manual, 1)
    }

    fn state(&self) -> ActiveState {
        self.points
            .last_key_value()
            .map_or(self.fold_state, |(_, s)| *s)
    }

    fn last_change(&self) -> Usec {
        self.points
            .last_key_value()
            .map_or(self.fold_at, |(t, _)| *t)
    }

    fn add(&mut self, state: ActiveState, usec: u64) {
        if state.is_up() {
            self.up_usec += usec;
        } else {
            self.down_usec += usec;
        }
    }

    fn record_state(&mut self, at: Usec, state: ActiveState) {
        if at <= self.fold_at {
            if at == self.fold_at {
                self.fold_state = state;
            }
            return;
        }
        self.points.insert(at, state);
        let horizon = self.last_change().saturating_sub(RETAIN);
        while self.points.len() > MAX_POINTS
            || self
                .points
                .first_key_value()
                .is_some_and(|(t, _)| *t <= horizon)
        {
            if let Some((t, s)) = self.points.pop_first() {
                self.add(self.fold_state, t - self.fold_at);
                self.fold_at = t;
                self.fold_state = s;
            }
        }
    }

    /// (up, down) in microseconds up to `now`.
    fn durations(&self, now: Usec) -> (u64, u64) {
        let mut up = self.up_usec;
        let mut down = self.down_usec;
        let mut from = self.fold_at;
        let mut state = self.fold_state;
        let ends = self
            .points
            .iter()
            .map(|(t, s)| (*t, Some(*s)))
            .chain(std::iter::once((now, None)));
        for (t, next) in ends {
            let span = t.saturating_sub(from);
            if state.is_up() {
                up += span;
            } else {
                down += span;
            }
            from = from.max(t);
            if let Some(s) = next {
                state = s;
            }
        }
        (up, down)
    }

    fn count_restarts(&mut self, at: Usec, trigger: Trigger, n: u64) -> Outcome {
        if n == 0 {
            return Outcome::Quiet;
        }
        self.restarts[trigger as usize] += n;
        for _ in 0..n.min(MAX_POINTS as u64) {
            self.restart_log.push_back((at, trigger));
        }
        let horizon = at.saturating_sub(RETAIN);
        while self.restart_log.len() > MAX_POINTS
            || self.restart_log.front().is_some_and(|(t, _)| *t < horizon)
        {
            self.restart_log.pop_front();
        }
        Outcome::Restarted(trigger, n)
    }

    fn apply(&mut self, at: Usec, transition: Transition, origin: Origin) -> Outcome {
        match transition {
            Transition::Seen {
                state,
                sub_state,
                n_restarts,
            } => {
                // Seen again after systemd unloaded it, after a reconnect or
                // after a restart of unitwatch: continue the accounting.
                self.loaded = true;
                self.follow(at);
                self.record_state(at, state);
                if at >= self.last_change() {
                    self.sub_state = sub_state;
                }
                if let Some(n) = n_restarts {
                    return self.apply(at, Transition::NRestarts(n), origin);
                }
                Outcome::Quiet
            }
            Transition::State { state, sub_state } => {
                if origin == Origin::Journal && self.followed_at(at) {
                    return Outcome::Quiet;
                }
                for job in self.jobs.values_mut() {
                    job.observe(state);
                }
                let newest = at >= self.last_change();
                self.record_state(at, state);
                if let (true, Some(sub)) = (newest, sub_state) {
                    self.sub_state = sub;
                }
                Outcome::Quiet
            }
            Transition::NRestarts(n) => match &mut self.n_restarts {
                // A journal record of NRestarts is itself one restart.
                None if origin == Origin::Journal && at >= self.seen_at => {
                    self.n_restarts = Some(RestartCounter::new(at, n));
                    self.count_restarts(at, Trigger::Auto, 1)
                }
                None => {
                    self.n_restarts = Some(RestartCounter::new(at, n));
                    Outcome::Quiet
                }
                Some(counter) => {
                    let new = counter.report(at, n);
                    self.count_restarts(at, Trigger::Auto, u64::from(new))
                }
            },
            Transition::RunFailed { result, invocation } => {
                if at < self.seen_at {
                    return Outcome::Quiet;
                }
                match invocation {
                    Some(id) if !id.is_empty() => {
                        if !self.failed_invocations.insert(&id) {
                            return Outcome::Quiet;
                        }
                    }
                    _ => {
                        if at <= self.last_failure_at {
                            return Outcome::Quiet;
                        }
                    }
                }
                if at >= self.last_failure_at {
                    self.last_failure_at = at;
                    self.last_failure_result = Some(result.clone());
                }
                *self.failures.entry(result.clone()).or_insert(0) += 1;
                Outcome::Failed(result)
            }
            Transition::JobQueued {
                id,
                job_type,
                invocation,
            } => {
                // A restart job becomes a start job once its stop is done, so
                // a "start" read late may be a restart.
                let restart = match job_type.as_str() {
                    "restart" | "try-restart" => Some(true),
                    "" | "start" => None,
                    _ => Some(false),
                };
                let job = PendingJob {
                    restart,
                    queued_by_systemd: self.sub_state == "auto-restart",
                    was_up: self.state().is_up(),
                    went_down: false,
                    came_back: false,
                    invocation,
                };
                self.jobs.entry(id).or_insert(job);
                Outcome::Quiet
            }
            Transition::JobRemoved { id, result } => match self.jobs.remove(&id) {
                Some(job) if result == "done" && job.is_manual_restart() => {
                    self.count_manual_restart(at, job.invocation.as_deref())
                }
                _ => Outcome::Quiet,
            },
            Transition::Removed => {
                self.loaded = false;
                self.jobs.clear();
                Outcome::Quiet
            }
            Transition::Restart {
                trigger: Trigger::Manual,
                invocation,
            } if at >= self.seen_at => self.count_manual_restart(at, invocation.as_deref()),
            // Automatic restarts are counted from NRestarts alone.
            Transition::Restart { .. } => Outcome::Quiet,
        }
    }
}

/// A read-only view of one unit's accounting at some `now`.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitView<'a> {
    pub unit: &'a str,
    pub state: ActiveState,
    pub sub_state: &'a str,
    pub loaded: bool,
    pub uptime_seconds: f64,
    pub downtime_seconds: f64,
    /// Unix time of the last state change, in seconds.
    pub state_change_seconds: f64,
    pub restarts_auto: u64,
    pub restarts_manual: u64,
    pub failures: &'a BTreeMap<String, u64>,
    /// The last counted failure: Unix time in seconds, and its `Result`.
    pub last_failure: Option<(f64, &'a str)>,
    /// The unit's kept history, for reads over windows.
    pub history: History<'a>,
}

impl UnitView<'_> {
    pub fn up(&self) -> bool {
        self.state.is_up()
    }
}

/// The default of [`Ledger::set_max_units`].
pub const DEFAULT_MAX_UNITS: usize = 2000;

/// The accounts of all units unitwatch has seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ledger {
    units: BTreeMap<String, Account>,
    /// At most this many units are accounted (label cardinality).
    #[serde(skip, default = "default_max_units")]
    max_units: usize,
    /// Units not accounted because of `max_units`.
    #[serde(skip)]
    dropped: std::collections::BTreeSet<String>,
}

fn default_max_units() -> usize {
    DEFAULT_MAX_UNITS
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            units: BTreeMap::new(),
            max_units: DEFAULT_MAX_UNITS,
            dropped: Default::default(),
        }
    }
}

/// `t` moved by `delta`; 0 (never) stays 0.
fn moved(t: Usec, delta: i64) -> Usec {
    if t == 0 {
        0
    } else {
        (t as i64).saturating_add(delta).max(1) as Usec
    }
}

fn seconds(usec: u64) -> f64 {
    usec as f64 / 1e6
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Applies one event. An unknown unit's accounting starts with
    /// [`Transition::Seen`] or with its first record from the journal;
    /// other events for unknown units are ignored.
    pub fn apply(&mut self, event: Event) -> Outcome {
        let Event {
            unit,
            at,
            transition,
            origin,
        } = event;
        if let Some(account) = self.units.get_mut(&unit) {
            return account.apply(at, transition, origin);
        }
        let start = match (&transition, origin) {
            (Transition::Seen { .. }, _) => transition.implied_state(),
            (_, Origin::Journal) => transition.implied_state(),
            _ => None,
        };
        let Some(state) = start else {
            return Outcome::Quiet;
        };
        if self.units.len() >= self.max_units {
            return if self.dropped.insert(unit) {
                Outcome::Dropped
            } else {
                Outcome::Quiet
            };
        }
        let (sub_state, n_restarts) = match &transition {
            Transition::Seen {
                sub_state,
                n_restarts,
                ..
            } => (sub_state.clone(), *n_restarts),
            // The restart this record reports is in the window: count it.
            Transition::NRestarts(n) => (String::new(), Some(n.saturating_sub(1))),
            _ => (String::new(), None),
        };
        let mut account = Account::new(at, state, sub_state, n_restarts);
        if matches!(transition, Transition::Seen { .. }) {
            account.follow(at);
        } else {
            account.apply(at, transition, origin);
        }
        self.units.insert(unit, account);
        Outcome::Appeared
    }

    /// Makes the change `op` describes.
    pub fn replay(&mut self, op: Op) -> Outcome {
        match op {
            Op::Apply { event } => return self.apply(event),
            Op::HostDown { at } => self.host_down(at),
            Op::DbusLost { at } => self.dbus_lost(at),
            Op::Shift { delta } => self.shift(delta),
        }
        Outcome::Quiet
    }

    /// unitwatch starts again with this ledger (loaded from its state): jobs
    /// seen pending are forgotten and no unit is followed over D-Bus until it
    /// is seen again.
    pub fn restarted(&mut self) {
        for account in self.units.values_mut() {
            account.jobs.clear();
            account.followed.clear();
        }
    }

    /// The D-Bus connection was lost at `at`: no unit is followed from then
    /// until it is seen again.
    pub fn dbus_lost(&mut self, at: Usec) {
        for account in self.units.values_mut() {
            account.unfollow(at);
        }
    }

    /// The host went down at `at` (the last journal record of a boot): units
    /// up then are down from `at` on, until records of the next boot say
    /// otherwise.
    pub fn host_down(&mut self, at: Usec) {
        for account in self.units.values_mut() {
            if account.state().is_up() && at > account.last_change() {
                account.unfollow(at);
                account.jobs.clear();
                account.record_state(at, ActiveState::Inactive);
                account.sub_state = "dead".into();
            }
        }
    }

    /// The wall clock was set by `delta` µs: moves every recorded time by
    /// the same amount, so durations stay as measured and timestamps read
    /// in the new wall clock.
    pub fn shift(&mut self, delta: i64) {
        for account in self.units.values_mut() {
            account.shift(delta);
        }
    }

    /// Accounts at most `max` units; later ones are dropped and counted.
    pub fn set_max_units(&mut self, max: usize) {
        self.max_units = max;
    }

    /// How many units were not accounted because of the limit.
    pub fn dropped(&self) -> usize {
        self.dropped.len()
    }

    /// Whether the unit is accounted.
    pub fn contains(&self, unit: &str) -> bool {
        self.units.contains_key(unit)
    }

    /// Number of accounted units.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// All units, by name, as of `now`.
    pub fn view(&self, now: Usec) -> impl Iterator<Item = UnitView<'_>> {
        self.units.iter().map(move |(name, a)| a.view(name, now))
    }

    /// One unit as of `now`.
    pub fn unit(&self, unit: &str, now: Usec) -> Option<UnitView<'_>> {
        self.units
            .get_key_value(unit)
            .map(|(name, a)| a.view(name, now))
    }
}

impl Account {
    fn view<'a>(&'a self, name: &'a str, now: Usec) -> UnitView<'a> {
        let (up, down) = self.durations(now);
        UnitView {
            unit: name,
            state: self.state(),
            sub_state: &self.sub_state,
            loaded: self.loaded,
            uptime_seconds: seconds(up),
            downtime_seconds: seconds(down),
            state_change_seconds: seconds(self.last_change()),
            restarts_auto: self.restarts[Trigger::Auto as usize],
            restarts_manual: self.restarts[Trigger::Manual as usize],
            failures: &self.failures,
            last_failure: self
                .last_failure_result
                .as_deref()
                .filter(|_| self.last_failure_at > 0)
                .map(|r| (seconds(self.last_failure_at), r)),
            history: History {
                from: self.fold_at,
                state_at_from: self.fold_state,
                points: &self.points,
                restarts: &self.restart_log,
                now,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ActiveState::*;
    use super::*;

    const S: Usec = 1_000_000;
    const T0: Usec = 1_700_000_000 * S;

    fn seen(state: ActiveState, sub: &str, n: u32) -> Transition {
        Transition::Seen {
            state,
            sub_state: sub.into(),
            n_restarts: Some(n),
        }
    }

    fn st(state: ActiveState) -> Transition {
        Transition::State {
            state,
            sub_state: None,
        }
    }

    fn sub(state: ActiveState, sub: &str) -> Transition {
        Transition::State {
            state,
            sub_state: Some(sub.into()),
        }
    }

    fn job(id: u32, t: &str) -> Transition {
        Transition::JobQueued {
            id,
            job_type: t.into(),
            invocation: None,
        }
    }

    fn done(id: u32) -> Transition {
        Transition::JobRemoved {
            id,
            result: "done".into(),
        }
    }

    fn failed(r: &str) -> Transition {
        Transition::RunFailed {
            result: r.into(),
            invocation: None,
        }
    }

    fn failed_run(r: &str, invocation: &str) -> Transition {
        Transition::RunFailed {
            result: r.into(),
            invocation: Some(invocation.into()),
        }
    }

    /// Expected view of unit "u" after feeding `events` (offsets in seconds from T0), read at `now`.
    struct Case {
        name: &'static str,
        events: Vec<(u64, Transition)>,
        now: u64,
        up: f64,
        down: f64,
        state: ActiveState,
        auto: u64,
        manual: u64,
        failures: &'static [(&'static str, u64)],
    }

    fn run(case: &Case) {
        let mut l = Ledger::new();
        for (t, tr) in &case.events {
            l.apply(Event::new("u.service", T0 + t * S, tr.clone()));
        }
        let v = l
            .unit("u.service", T0 + case.now * S)
            .unwrap_or_else(|| panic!("{}: unit not accounted", case.name));
        assert_eq!(v.uptime_seconds, case.up, "{}: uptime", case.name);
        assert_eq!(v.downtime_seconds, case.down, "{}: downtime", case.name);
        assert_eq!(v.state, case.state, "{}: state", case.name);
        assert_eq!(v.restarts_auto, case.auto, "{}: auto restarts", case.name);
        assert_eq!(
            v.restarts_manual, case.manual,
            "{}: manual restarts",
            case.name
        );
        let failures: Vec<(&str, u64)> = v.failures.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(failures, case.failures, "{}: failures", case.name);
    }

    #[test]
    fn table() {
        let cases = vec![
            Case {
                name: "start from inactive",
                events: vec![
                    (0, seen(Inactive, "dead", 0)),
                    (10, st(Activating)),
                    (11, sub(Active, "running")),
                ],
                now: 20,
                up: 9.0,
                down: 11.0,
                state: Active,
                auto: 0,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "stop",
                events: vec![
                    (0, seen(Active, "running", 0)),
                    (5, st(Deactivating)),
                    (6, sub(Inactive, "dead")),
                ],
                now: 16,
                up: 5.0,
                down: 11.0,
                state: Inactive,
                auto: 0,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "plain stop then later start is no restart",
                events: vec![
                    (0, seen(Active, "running", 0)),
                    (5, job(1, "stop")),
                    (5, st(Deactivating)),
                    (6, sub(Inactive, "dead")),
                    (6, done(1)),
                    (10, job(2, "start")),
                    (10, st(Activating)),
                    (10, sub(Active, "running")),
                    (10, done(2)),
                ],
                now: 12,
                up: 7.0,
                down: 5.0,
                state: Active,
                auto: 0,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "crash with auto-restart",
                events: vec![
                    (0, seen(Active, "running", 0)),
                    (4, Transition::NRestarts(0)),
                    (4, failed("exit-code")),
                    (4, sub(Activating, "auto-restart")),
                    (5, Transition::NRestarts(1)),
                    (5, job(7, "restart")),
                    (5, sub(Activating, "start")),
                    (6, sub(Active, "running")),
                    (6, done(7)),
                ],
                now: 10,
                up: 8.0,
                down: 2.0,
                state: Active,
                auto: 1,
                manual: 0,
                failures: &[("exit-code", 1)],
            },
            Case {
                name: "manual restart",
                events: vec![
                    (0, seen(Active, "running", 0)),
                    (3, job(9, "restart")),
                    (3, st(Deactivating)),
                    (4, st(Inactive)),
                    (4, st(Activating)),
                    (4, sub(Active, "running")),
                    (4, done(9)),
                ],
                now: 10,
                up: 9.0,
                down: 1.0,
                state: Active,
                auto: 0,
                manual: 1,
                failures: &[],
            },
            Case {
                name: "restart job of unknown type counts by behaviour",
                events: vec![
                    (0, seen(Active, "running", 0)),
                    (3, job(9, "")),
                    (3, st(Deactivating)),
                    (4, st(Inactive)),
                    (4, sub(Active, "running")),
                    (4, done(9)),
                    (5, job(10, "")),
                    (5, sub(Reloading, "reload")),
                    (5, sub(Active, "running")),
                    (5, done(10)),
                ],
                now: 10,
                up: 9.0,
                down: 1.0,
                state: Active,
                auto: 0,
                manual: 1,
                failures: &[],
            },
            Case {
                name: "start queued while stopping is no restart",
                events: vec![
                    (0, seen(Active, "running", 0)),
                    (3, job(1, "stop")),
                    (3, st(Deactivating)),
                    (4, job(2, "start")),
                    (5, st(Inactive)),
                    (5, done(1)),
                    (6, sub(Active, "running")),
                    (6, done(2)),
                ],
                now: 10,
                up: 7.0,
                down: 3.0,
                state: Active,
                auto: 0,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "restart of a stopped unit is a start",
                events: vec![
                    (0, seen(Inactive, "dead", 0)),
                    (3, job(9, "restart")),
                    (3, st(Activating)),
                    (3, sub(Active, "running")),
                    (3, done(9)),
                ],
                now: 10,
                up: 7.0,
                down: 3.0,
                state: Active,
                auto: 0,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "canceled restart job is no restart",
                events: vec![
                    (0, seen(Active, "running", 0)),
                    (3, job(9, "restart")),
                    (
                        3,
                        Transition::JobRemoved {
                            id: 9,
                            result: "canceled".into(),
                        },
                    ),
                ],
                now: 10,
                up: 10.0,
                down: 0.0,
                state: Active,
                auto: 0,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "reload stays up",
                events: vec![
                    (0, seen(Active, "running", 0)),
                    (2, job(3, "reload")),
                    (2, sub(Reloading, "reload")),
                    (3, sub(Active, "running")),
                    (3, done(3)),
                ],
                now: 10,
                up: 10.0,
                down: 0.0,
                state: Active,
                auto: 0,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "flapping faster than any scrape: NRestarts jumps by 5",
                events: vec![
                    (0, seen(Active, "running", 2)),
                    (1, Transition::NRestarts(7)),
                    (1, sub(Active, "running")),
                ],
                now: 2,
                up: 2.0,
                down: 0.0,
                state: Active,
                auto: 5,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "NRestarts reset by systemd counts the new value",
                events: vec![
                    (0, seen(Active, "running", 4)),
                    (1, Transition::NRestarts(0)),
                    (2, Transition::NRestarts(2)),
                ],
                now: 2,
                up: 2.0,
                down: 0.0,
                state: Active,
                auto: 2,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "duplicate reports count once",
                events: vec![
                    (0, seen(Active, "running", 0)),
                    (4, failed("signal")),
                    (4, failed("signal")),
                    (4, sub(Failed, "failed")),
                    (4, sub(Failed, "failed")),
                    (5, Transition::NRestarts(1)),
                    (5, Transition::NRestarts(1)),
                    (6, job(2, "restart")),
                    (6, done(2)),
                    (6, done(2)),
                ],
                now: 10,
                up: 4.0,
                down: 6.0,
                state: Failed,
                auto: 1,
                manual: 0,
                failures: &[("signal", 1)],
            },
            Case {
                name: "crash through failed into auto-restart is one failure per invocation",
                events: vec![
                    (0, seen(Active, "running", 0)),
                    (4, failed_run("exit-code", "aa")),
                    (4, sub(Failed, "failed")),
                    (5, failed_run("exit-code", "aa")),
                    (5, sub(Activating, "auto-restart")),
                    (6, Transition::NRestarts(1)),
                    (6, sub(Active, "running")),
                    (8, failed_run("exit-code", "bb")),
                    (8, sub(Failed, "failed")),
                    (9, failed_run("exit-code", "bb")),
                    (9, sub(Activating, "auto-restart")),
                ],
                now: 10,
                up: 6.0,
                down: 4.0,
                state: Activating,
                auto: 1,
                manual: 0,
                failures: &[("exit-code", 2)],
            },
            Case {
                name: "out-of-order reports fall into place",
                events: vec![
                    (0, seen(Active, "running", 0)),
                    (6, sub(Active, "running")),
                    (3, st(Deactivating)),
                    (5, st(Activating)),
                    (4, st(Inactive)),
                    // a stale NRestarts read older than the newest is ignored
                    (8, Transition::NRestarts(3)),
                    (7, Transition::NRestarts(1)),
                ],
                now: 10,
                up: 7.0,
                down: 3.0,
                state: Active,
                auto: 3,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "scrape during an open down interval",
                events: vec![(0, seen(Active, "running", 0)), (2, sub(Failed, "failed"))],
                now: 9,
                up: 2.0,
                down: 7.0,
                state: Failed,
                auto: 0,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "history before first sight is not counted",
                events: vec![
                    (10, seen(Active, "running", 3)),
                    (2, failed("exit-code")),
                    (1, st(Inactive)),
                    (5, st(Active)),
                ],
                now: 12,
                up: 2.0,
                down: 0.0,
                state: Active,
                auto: 0,
                manual: 0,
                failures: &[],
            },
            Case {
                name: "failure without restart",
                events: vec![
                    (0, seen(Activating, "start", 0)),
                    (1, failed("timeout")),
                    (1, sub(Failed, "failed")),
                ],
                now: 3,
                up: 0.0,
                down: 3.0,
                state: Failed,
                auto: 0,
                manual: 0,
                failures: &[("timeout", 1)],
            },
        ];
        for case in &cases {
            run(case);
        }
    }

    #[test]
    fn events_for_unseen_units_are_ignored() {
        let mut l = Ledger::new();
        assert_eq!(
            l.apply(Event::new("x.service", T0, st(Active))),
            Outcome::Quiet
        );
        assert!(l.is_empty());
    }

    #[test]
    fn folding_keeps_totals_exact() {
        let mut l = Ledger::new();
        l.apply(Event::new("u.service", T0, seen(Inactive, "dead", 0)));
        // 3000 cycles: 1 s down then 2 s up
        for i in 0..3000u64 {
            let base = T0 + i * 3 * S;
            l.apply(Event::new("u.service", base + S, st(Active)));
            l.apply(Event::new("u.service", base + 3 * S, st(Inactive)));
        }
        let v = l.unit("u.service", T0 + 9000 * S).expect("unit");
        assert_eq!(v.uptime_seconds, 6000.0);
        assert_eq!(v.downtime_seconds, 3000.0);
        assert_eq!(v.history.transitions().count(), MAX_POINTS);
        // a report older than the fold is stale and changes nothing
        l.apply(Event::new("u.service", T0 + 5 * S, st(Inactive)));
        let v = l.unit("u.service", T0 + 9000 * S).expect("unit");
        assert_eq!(v.uptime_seconds, 6000.0);
    }

    #[test]
    fn seen_again_after_removal_keeps_counters() {
        let mut l = Ledger::new();
        l.apply(Event::new("u.service", T0, seen(Active, "running", 3)));
        l.apply(Event::new("u.service", T0 + S, Transition::NRestarts(5)));
        l.apply(Event::new("u.service", T0 + 2 * S, sub(Inactive, "dead")));
        l.apply(Event::new("u.service", T0 + 3 * S, Transition::Removed));
        assert!(!l.unit("u.service", T0 + 3 * S).expect("unit").loaded);
        let out = l.apply(Event::new(
            "u.service",
            T0 + 4 * S,
            seen(Active, "running", 0),
        ));
        assert_eq!(out, Outcome::Quiet);
        let v = l.unit("u.service", T0 + 6 * S).expect("unit");
        assert!(v.loaded);
        assert_eq!(v.restarts_auto, 2);
        assert_eq!((v.uptime_seconds, v.downtime_seconds), (4.0, 2.0));
    }

    fn logged(t: u64, tr: Transition) -> Event {
        Event::logged("u.service", T0 + t * S, tr)
    }

    fn live(t: u64, tr: Transition) -> Event {
        Event::new("u.service", T0 + t * S, tr)
    }

    #[test]
    fn journal_history_starts_the_account_and_counts_the_first_restart() {
        let mut l = Ledger::new();
        l.apply(logged(1, st(Activating)));
        l.apply(logged(2, st(Active)));
        l.apply(logged(5, failed_run("exit-code", "aa")));
        l.apply(logged(5, st(Failed)));
        l.apply(logged(6, Transition::NRestarts(1)));
        l.apply(logged(6, st(Activating)));
        l.apply(logged(7, st(Active)));
        let v = l.unit("u.service", T0 + 10 * S).expect("unit");
        assert_eq!((v.uptime_seconds, v.downtime_seconds), (6.0, 3.0));
        assert_eq!(
            (v.restarts_auto, v.failures.get("exit-code")),
            (1, Some(&1))
        );

        // first met through a restart record: that restart counts
        let mut l = Ledger::new();
        l.apply(logged(1, Transition::NRestarts(4)));
        assert_eq!(
            l.unit("u.service", T0 + 2 * S).expect("unit").restarts_auto,
            1
        );
    }

    #[test]
    fn journal_and_dbus_reporting_the_same_run_count_once() {
        let mut l = Ledger::new();
        l.apply(live(0, seen(Active, "running", 0)));
        // D-Bus first, then the journal's records of the same crash
        l.apply(live(4, failed_run("exit-code", "aa")));
        l.apply(live(4, sub(Failed, "failed")));
        l.apply(live(5, Transition::NRestarts(1)));
        l.apply(live(5, sub(Active, "running")));
        l.apply(logged(4, failed_run("exit-code", "aa")));
        l.apply(logged(4, st(Failed)));
        l.apply(logged(5, Transition::NRestarts(1)));
        // the journal first, then D-Bus
        l.apply(logged(7, failed_run("signal", "bb")));
        l.apply(logged(8, Transition::NRestarts(2)));
        l.apply(live(7, failed_run("signal", "bb")));
        l.apply(live(8, Transition::NRestarts(2)));
        // a manual restart: journal record and D-Bus job of the same run
        l.apply(logged(
            9,
            Transition::Restart {
                trigger: Trigger::Manual,
                invocation: Some("cc".into()),
            },
        ));
        l.apply(live(
            9,
            Transition::JobQueued {
                id: 5,
                job_type: String::new(),
                invocation: Some("cc".into()),
            },
        ));
        l.apply(live(9, st(Deactivating)));
        l.apply(live(9, sub(Active, "running")));
        l.apply(live(9, done(5)));
        // journal state records while D-Bus follows change nothing
        l.apply(logged(9, st(Inactive)));
        let v = l.unit("u.service", T0 + 10 * S).expect("unit");
        assert_eq!((v.restarts_auto, v.restarts_manual), (2, 1));
        assert_eq!(v.failures.get("exit-code"), Some(&1));
        assert_eq!(v.failures.get("signal"), Some(&1));
        assert_eq!((v.uptime_seconds, v.downtime_seconds), (9.0, 1.0));
    }

    #[test]
    fn journal_fills_a_dbus_gap() {
        let mut l = Ledger::new();
        l.apply(live(0, seen(Active, "running", 0)));
        l.dbus_lost(T0 + 2 * S);
        l.apply(logged(3, st(Inactive)));
        l.apply(logged(5, st(Active)));
        l.apply(live(6, seen(Active, "running", 0)));
        l.apply(logged(7, st(Inactive)));
        let v = l.unit("u.service", T0 + 10 * S).expect("unit");
        assert_eq!((v.uptime_seconds, v.downtime_seconds), (8.0, 2.0));
    }

    #[test]
    fn reboot_counts_as_downtime_for_units_that_were_up() {
        let mut l = Ledger::new();
        l.apply(logged(0, st(Active)));
        l.host_down(T0 + 4 * S);
        l.apply(logged(10, st(Activating)));
        l.apply(logged(11, st(Active)));
        let v = l.unit("u.service", T0 + 12 * S).expect("unit");
        assert_eq!((v.uptime_seconds, v.downtime_seconds), (5.0, 7.0));
    }

    #[test]
    fn survives_a_round_trip_through_json() {
        let mut l = Ledger::new();
        l.apply(live(0, seen(Active, "running", 0)));
        l.apply(live(4, failed_run("exit-code", "aa")));
        l.apply(live(4, sub(Failed, "failed")));
        l.apply(live(5, Transition::NRestarts(1)));
        l.apply(live(5, sub(Active, "running")));
        let json = serde_json::to_string(&l).expect("serialize");
        let mut back: Ledger = serde_json::from_str(&json).expect("deserialize");
        back.apply(logged(4, failed_run("exit-code", "aa")));
        back.apply(logged(5, Transition::NRestarts(1)));
        let (a, b) = (
            l.unit("u.service", T0 + 9 * S).expect("unit"),
            back.unit("u.service", T0 + 9 * S).expect("unit"),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn late_journal_restarts_around_a_reset_count_once() {
        const MS: Usec = 1_000;
        let mut l = Ledger::new();
        l.apply(live(0, seen(Active, "running", 0)));
        for n in 1..=7u32 {
            l.apply(logged(u64::from(n), Transition::NRestarts(n)));
            l.apply(Event::new(
                "u.service",
                T0 + u64::from(n) * S + 90 * MS,
                Transition::NRestarts(n),
            ));
        }
        // restart 8 is scheduled, then a stop resets NRestarts: D-Bus only
        // sees the 0, before the journal's record of 8 arrives.
        l.apply(Event::new(
            "u.service",
            T0 + 8 * S + 5 * MS,
            Transition::NRestarts(0),
        ));
        l.apply(Event::logged(
            "u.service",
            T0 + 8 * S + MS,
            Transition::NRestarts(8),
        ));
        // a stale journal record of an old value changes nothing
        l.apply(logged(6, Transition::NRestarts(6)));
        assert_eq!(
            l.unit("u.service", T0 + 9 * S).expect("unit").restarts_auto,
            8
        );
        // the next epoch counts from zero
        l.apply(logged(10, Transition::NRestarts(1)));
        l.apply(live(10, Transition::NRestarts(1)));
        assert_eq!(
            l.unit("u.service", T0 + 11 * S)
                .expect("unit")
                .restarts_auto,
            9
        );
    }

    #[test]
    fn units_beyond_the_limit_are_dropped_and_counted() {
        let mut l = Ledger::new();
        l.set_max_units(2);
        for (i, name) in ["a.service", "b.service", "c.service", "d.service"]
            .iter()
            .enumerate()
        {
            let out = l.apply(Event::new(*name, T0 + i as u64, seen(Active, "running", 0)));
            assert_eq!(out == Outcome::Dropped, i >= 2, "{name}");
        }
        assert_eq!(
            l.apply(Event::new("c.service", T0 + 9, st(Inactive))),
            Outcome::Quiet
        );
        assert_eq!(
            l.apply(Event::new("c.service", T0 + 9, seen(Active, "running", 0))),
            Outcome::Quiet
        );
        assert_eq!((l.len(), l.dropped()), (2, 2));
    }

    #[test]
    fn a_wall_clock_step_moves_history_and_keeps_durations() {
        const H: Usec = 3600 * S;
        for back in [true, false] {
            let mut l = Ledger::new();
            l.apply(Event::new("u.service", T0, seen(Active, "running", 0)));
            l.apply(Event::new("u.service", T0 + 10 * S, st(Inactive)));
            // The clock is set an hour back (or forward) at T0 + 15.
            let delta = if back { -(H as i64) } else { H as i64 };
            l.shift(delta);
            let t = |x: Usec| (x as i64 + delta) as Usec;
            l.apply(Event::new("u.service", t(T0 + 20 * S), st(Active)));
            l.apply(Event::new(
                "u.service",
                t(T0 + 25 * S),
                Transition::NRestarts(1),
            ));
            let v = l.unit("u.service", t(T0 + 30 * S)).expect("unit");
            assert_eq!(
                (v.uptime_seconds, v.downtime_seconds, v.restarts_auto),
                (20.0, 10.0, 1),
                "clock set {}",
                if back { "back" } else { "forward" }
            );
            assert_eq!(v.state_change_seconds, seconds(t(T0 + 20 * S)));
        }
    }
}
