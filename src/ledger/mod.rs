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
//!   Each point carries the running totals up to it ([`history`]), so totals
//!   and window reads never walk the history.
//!   Points older than [`RETAIN`] before a unit's newest one are folded into
//!   its totals, and so are the oldest once it has more than [`MAX_POINTS`];
//!   reports older than the fold are ignored as stale. What is kept is the
//!   unit's history ([`window`]): availability, MTBF/MTTR and timelines over
//!   any window within it.
//! - An automatic restart is one of the journal's *restart scheduled*
//!   records, or one rise of systemd's `NRestarts` over D-Bus
//!   ([`RestartCounter`]: every rise counts; a drop reported after the
//!   high-water mark was reached means systemd reset the counter (a start by
//!   hand), which begins a new epoch whose value counts; a lower value
//!   reported from before that is late news and changes nothing). Two
//!   records with the same `N_RESTARTS` are two restarts (the counter was
//!   reset between them).
//! - A manual restart is a restart job (`systemctl restart`, `try-restart`,
//!   `reload-or-restart` that restarts) that finished with result `done`,
//!   queued while the unit was up and not by systemd itself (while the unit
//!   waited in `auto-restart`), during which the unit went down and came back
//!   up without crashing first. A job of unknown type (the D-Bus signals do
//!   not carry it) counts by that behaviour alone: only a restart job takes a
//!   unit down and back up. In the journal it is the restart job's "Stopped"
//!   after its own "Stopping…" while the unit was up: systemd logs no
//!   "Stopping…" when the stop has nothing to stop. A stop followed later by
//!   a start is two jobs and no restart; a restart of a unit that was down
//!   (inactive, failed, or waiting in `auto-restart`) is a start.
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
//!   from both are matched: an automatic restart is counted by whichever
//!   reports it first and the other's report of the same `NRestarts` value
//!   counts nothing ([`restarts::Unmatched`]); failures and manual restarts
//!   are matched by the `InvocationID` of the run they ended (a user
//!   manager's journal calls it `USER_INVOCATION_ID`).
//! - A job ([`Kind::Job`]: a oneshot without `RemainAfterExit=yes`, or a
//!   unit a timer triggers) is also accounted by its runs ([`runs`]): one
//!   per `InvocationID`, from its start to its end, with systemd's
//!   `Result`. Runs that ended before accounting began set the last run but
//!   are not counted; a run both sources report is counted once.
//! - A reboot: for units up at the last journal record of a boot, the time
//!   until the next boot's records is downtime ([`Ledger::host_down`]).
//! - A unit of a user's manager is kept under a key of its own ([`key`]).
//!   Each manager is followed over a connection of its own, lost and seen
//!   again on its own; when a manager goes away, its units still up then
//!   are down from that moment until it returns ([`Ledger::user_down`]).

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

mod account;
mod chunked;
mod event;
mod history;
pub mod key;
mod restarts;
pub mod runs;
mod view;
pub mod window;

use account::Account;
pub use event::{ActiveState, Event, Kind, Op, Origin, Outcome, Transition, Trigger};
pub use history::Totals;
pub use restarts::Restarts;
pub use view::UnitView;
pub use window::History;

/// Microseconds since the Unix epoch (`CLOCK_REALTIME`), as systemd records them.
pub type Usec = u64;

/// How many state-change points a unit keeps at most (30 days of a unit
/// that flaps hourly take some 2900).
pub const MAX_POINTS: usize = 4096;

/// How far back a unit's history reaches from its newest state change: 30
/// days, and a day to spare for reads some time after it.
pub const RETAIN: Usec = 31 * 24 * 3600 * 1_000_000;
/// The default of [`Ledger::set_max_units`].
pub const DEFAULT_MAX_UNITS: usize = 2000;

/// The accounts of all units unitwatch has seen.
///
/// Cloning is O(1): the accounts are shared with the clone and copied, one
/// at a time, only when the original changes them afterwards. That is what
/// lets the owner publish a snapshot for readers after every burst of
/// events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ledger {
    units: OrdMap<Arc<str>, Arc<Account>>,
    /// At most this many units are accounted (label cardinality).
    #[serde(skip, default = "default_max_units")]
    max_units: usize,
    /// Units not accounted because of `max_units`.
    #[serde(skip)]
    dropped: OrdSet<String>,
    /// Names this ledger's content: a fresh one on every change, kept by a
    /// clone, so readers can tell "the same accounts" without holding on to
    /// an old copy ([`Ledger::same_units`]).
    #[serde(skip, default = "fresh_version")]
    version: u64,
}

/// A version no ledger (or account) had before.
pub(crate) fn fresh_version() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn default_max_units() -> usize {
    DEFAULT_MAX_UNITS
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            units: OrdMap::new(),
            max_units: DEFAULT_MAX_UNITS,
            dropped: Default::default(),
            version: fresh_version(),
        }
    }
}

/// `t` moved by `delta`; 0 (never) stays 0.
pub(crate) fn moved(t: Usec, delta: i64) -> Usec {
    if t == 0 {
        0
    } else {
        (t as i64).saturating_add(delta).max(1) as Usec
    }
}

pub(crate) fn seconds(usec: u64) -> f64 {
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
        self.version = fresh_version();
        let Event {
            unit,
            at,
            transition,
            origin,
        } = event;
        if let Some(account) = self.units.get_mut(unit.as_str()) {
            let account = Arc::make_mut(account);
            account.version = fresh_version();
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
            return if self.dropped.insert(unit).is_none() {
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
        self.units.insert(Arc::from(unit), Arc::new(account));
        Outcome::Appeared
    }

    /// Whether applying `event` could change anything: not the runs of a
    /// unit known to be a service, which are not kept (so the owner need
    /// not record them as ops).
    pub fn keeps(&self, event: &Event) -> bool {
        self.units
            .get(event.unit.as_str())
            .is_none_or(|a| a.keeps(&event.transition))
    }

    /// Makes the change `op` describes.
    pub fn replay(&mut self, op: Op) -> Outcome {
        self.version = fresh_version();
        match op {
            Op::Apply { event } => return self.apply(event),
            Op::HostDown { at } => self.host_down(at),
            Op::DbusLost { at } => self.dbus_lost(at),
            Op::Shift { delta } => self.shift(delta),
            Op::UserLost { user, at } => self.user_lost(&user, at),
            Op::UserDown { user, at } => self.user_down(&user, at),
        }
        Outcome::Quiet
    }

    /// unitwatch starts again with this ledger (loaded from its state): jobs
    /// seen pending are forgotten and no unit is followed over D-Bus until it
    /// is seen again.
    pub fn restarted(&mut self) {
        self.version = fresh_version();
        self.each_mut(
            |_, _| true,
            |account| {
                account.jobs.clear();
                account.followed.clear();
            },
        );
    }

    /// The D-Bus connection to the system manager was lost at `at`: no
    /// system unit is followed from then until it is seen again (the units
    /// of user managers are followed over connections of their own).
    pub fn dbus_lost(&mut self, at: Usec) {
        self.version = fresh_version();
        self.lost(|key| key::user_of(key).is_none(), at);
    }

    /// The connection to `user`'s manager was lost at `at`: none of its
    /// units is followed from then until it is seen again.
    pub fn user_lost(&mut self, user: &str, at: Usec) {
        self.version = fresh_version();
        self.lost(|key| key::user_of(key) == Some(user), at);
    }

    fn lost(&mut self, only: impl Fn(&str) -> bool, at: Usec) {
        // Jobs whose end was not heard can never be matched now.
        self.each_mut(
            |key, _| only(key),
            |account| {
                account.unfollow(at);
                account.jobs.clear();
            },
        );
    }

    /// `user`'s manager was gone at `at`: its units still up then (their
    /// stop went unheard) are down from `at` on, as units are at a reboot,
    /// until the manager's return shows them starting.
    pub fn user_down(&mut self, user: &str, at: Usec) {
        self.version = fresh_version();
        self.down(|key| key::user_of(key) == Some(user), at);
    }

    /// The host went down at `at` (the last journal record of a boot): units
    /// up then are down from `at` on, until records of the next boot say
    /// otherwise.
    pub fn host_down(&mut self, at: Usec) {
        self.version = fresh_version();
        self.down(|_| true, at);
    }

    /// Units for which `only` holds of their key, up at `at`, are down from then.
    fn down(&mut self, only: impl Fn(&str) -> bool, at: Usec) {
        self.each_mut(
            |key, a| only(key) && a.state().is_up() && at > a.last_change(),
            |account| {
                account.unfollow(at);
                account.jobs.clear();
                account.record_state(at, ActiveState::Inactive);
                account.sub_state = "dead".into();
                account.runs.lost();
            },
        );
    }

    /// The wall clock was set by `delta` µs: moves every recorded time by
    /// the same amount, so durations stay as measured and timestamps read
    /// in the new wall clock.
    pub fn shift(&mut self, delta: i64) {
        self.version = fresh_version();
        self.each_mut(|_, _| true, |account| account.shift(delta));
    }

    /// Runs `f` on every account for which `only` holds of its key and it
    /// (copying those a snapshot still shares; the others stay shared).
    fn each_mut(&mut self, only: impl Fn(&str, &Account) -> bool, mut f: impl FnMut(&mut Account)) {
        let names: Vec<Arc<str>> = self
            .units
            .iter()
            .filter(|(name, a)| only(name, a))
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            if let Some(account) = self.units.get_mut(&name) {
                let account = Arc::make_mut(account);
                account.version = fresh_version();
                f(account);
            }
        }
    }

    /// Accounts at most `max` units; later ones are dropped and counted.
    pub fn set_max_units(&mut self, max: usize) {
        self.version = fresh_version();
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

    /// All units, by name: each account's version, and its view as of
    /// `now`, made only when asked for: a renderer that kept what it
    /// rendered of an account reads no more of it than the version.
    pub fn lazy_view<'a>(
        &'a self,
        now: Usec,
    ) -> impl Iterator<Item = (u64, impl FnOnce() -> UnitView<'a>)> + 'a {
        self.units
            .iter()
            .map(move |(name, a)| (a.version, move || a.view(name, now)))
    }

    /// Each unit's account version, in the order of [`Ledger::view`]: the
    /// same for as long as nothing changed the account, so a renderer can
    /// keep what it rendered of the units whose versions it has seen.
    pub fn versions(&self) -> impl Iterator<Item = u64> + '_ {
        self.units.values().map(|a| a.version)
    }

    /// Names its content: a copy of this ledger that nothing changed since
    /// has the same version, and no other ledger ever has it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// One unit as of `now`.
    pub fn unit(&self, unit: &str, now: Usec) -> Option<UnitView<'_>> {
        self.units
            .get_key_value(unit)
            .map(|(name, a)| a.view(name, now))
    }
}

#[cfg(test)]
mod tests;
