//! The timers that trigger watched jobs: which timer starts which jobs,
//! what D-Bus last said of each (`LastTriggerUSec`, the next elapse), and
//! the [`Transition::Timer`] events that carries to its jobs. A timer is
//! followed like a unit (its `PropertiesChanged`), whether or not it is
//! watched itself.

use std::collections::{BTreeSet, HashMap};

use zbus::zvariant::{ObjectPath, OwnedObjectPath};

use super::changed::Changed;
use super::properties::Value;
use crate::ledger::{Event, Transition, Usec};

/// The properties of a timer that unitwatch reads.
pub const PROPERTIES: [&str; 3] = [
    "LastTriggerUSec",
    "NextElapseUSecRealtime",
    "NextElapseUSecMonotonic",
];

/// A timer's properties as D-Bus reported them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimerProperties {
    pub last_trigger: Usec,
    pub next_realtime: Usec,
    pub next_monotonic: Usec,
}

impl TimerProperties {
    pub fn set(&mut self, name: &str, value: Value) {
        match (name, value) {
            ("LastTriggerUSec", Value::U64(t)) => self.last_trigger = t,
            ("NextElapseUSecRealtime", Value::U64(t)) => self.next_realtime = t,
            ("NextElapseUSecMonotonic", Value::U64(t)) => self.next_monotonic = t,
            _ => {}
        }
    }

    pub fn merge(&mut self, values: &Changed) {
        for (name, v) in values.iter() {
            self.set(name, v.clone());
        }
    }

    /// When the timer elapses next, on the wall clock: a calendar timer
    /// says so (`NextElapseUSecRealtime`), a monotonic one (`OnUnitActiveSec=`
    /// and friends) on the monotonic clock, placed in `frame`; the earlier
    /// of the two if it has both, 0 if neither is due.
    pub fn next_elapse(&self, frame: i64) -> Usec {
        let mono = (self.next_monotonic != 0 && self.next_monotonic != u64::MAX)
            .then(|| crate::clock::to_frame(self.next_monotonic, frame));
        let real = (self.next_realtime != 0 && self.next_realtime != u64::MAX)
            .then_some(self.next_realtime);
        match (real, mono) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(0),
        }
    }

    /// The event telling `job` about timer `name` at `now`.
    pub fn event(&self, job: &str, name: &str, now: Usec, frame: i64) -> Event {
        Event::new(
            job,
            now,
            Transition::Timer {
                timer: name.to_owned(),
                last_trigger: self.last_trigger,
                next_elapse: self.next_elapse(frame),
            },
        )
    }
}

/// One followed timer.
#[derive(Debug)]
struct Followed {
    name: String,
    jobs: BTreeSet<String>,
    props: TimerProperties,
}

/// The timers followed, by object path and by name.
#[derive(Debug, Default)]
pub struct Timers {
    by_path: HashMap<OwnedObjectPath, Followed>,
    paths: HashMap<String, OwnedObjectPath>,
    /// The timer of each job.
    of: HashMap<String, String>,
    /// Timers whose `Triggers` were read since the last snapshot.
    checked: std::collections::HashSet<String>,
}

impl Timers {
    /// Whether the timer `name`, just loaded, is news: not followed, and
    /// what it triggers not read since the last snapshot. (Reading a
    /// stopped timer loads it again once systemd unloaded it, which would
    /// announce it again.)
    pub fn first_sight(&mut self, name: &str) -> bool {
        !self.paths.contains_key(name) && self.checked.insert(name.to_owned())
    }

    /// A snapshot reads every unit again: timers may be read again too.
    pub fn snapshot_taken(&mut self) {
        self.checked.clear();
    }

    /// The timer of `job`, if it has one followed.
    pub fn timer_of(&self, job: &str) -> Option<&str> {
        self.of.get(job).map(String::as_str)
    }

    /// Whether `path` is a followed timer's.
    pub fn contains(&self, path: &ObjectPath<'_>) -> bool {
        self.by_path.contains_key(path)
    }

    /// The known properties of timer `name`, after adding `job` to those it
    /// triggers; `None` if the timer is not followed yet.
    pub fn add_job(&mut self, name: &str, job: &str) -> Option<&TimerProperties> {
        self.of.insert(job.to_owned(), name.to_owned());
        let path = self.paths.get(name)?;
        let followed = self.by_path.get_mut(path)?;
        followed.jobs.insert(job.to_owned());
        Some(&followed.props)
    }

    /// Follows timer `name` at `path`, which triggers `job`.
    pub fn follow(&mut self, name: &str, path: OwnedObjectPath, job: &str, props: TimerProperties) {
        self.of.insert(job.to_owned(), name.to_owned());
        self.paths.insert(name.to_owned(), path.clone());
        self.by_path.insert(
            path,
            Followed {
                name: name.to_owned(),
                jobs: BTreeSet::from([job.to_owned()]),
                props,
            },
        );
    }

    /// `job` is no longer triggered by timer `name`.
    pub fn drop_job(&mut self, name: &str, job: &str) {
        self.of.remove(job);
        if let Some(f) = self.paths.get(name).and_then(|p| self.by_path.get_mut(p)) {
            f.jobs.remove(job);
        }
    }

    /// Takes in a `PropertiesChanged` of a followed timer: the events for
    /// its jobs if anything they are told changed.
    pub fn changed(
        &mut self,
        path: &OwnedObjectPath,
        values: &Changed,
        now: Usec,
        frame: i64,
    ) -> Vec<Event> {
        let Some(f) = self.by_path.get_mut(path) else {
            return Vec::new();
        };
        let before = f.props.clone();
        f.props.merge(values);
        if f.props.last_trigger == before.last_trigger
            && f.props.next_elapse(frame) == before.next_elapse(frame)
        {
            return Vec::new();
        }
        f.jobs
            .iter()
            .map(|job| f.props.event(job, &f.name, now, frame))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monotonic_timer_elapses_at_its_monotonic_time_placed_in_the_frame() {
        let p = TimerProperties {
            last_trigger: 5,
            next_realtime: 0,
            next_monotonic: 20,
        };
        assert_eq!(p.next_elapse(1000), 1020);
    }

    #[test]
    fn a_timer_with_both_clocks_elapses_at_the_earlier() {
        let p = TimerProperties {
            last_trigger: 0,
            next_realtime: 1010,
            next_monotonic: 20,
        };
        assert_eq!(p.next_elapse(1000), 1010);
    }

    #[test]
    fn a_timer_with_nothing_due_has_no_next_elapse() {
        let p = TimerProperties {
            last_trigger: 0,
            next_realtime: u64::MAX,
            next_monotonic: 0,
        };
        assert_eq!(p.next_elapse(1000), 0);
    }
}
