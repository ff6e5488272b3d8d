//! Restart and failure bookkeeping: the restarts counted by trigger and when,
//! systemd's `NRestarts` followed across resets, the automatic restarts one
//! source reported and the other has not yet, the jobs pending on a unit,
//! and the `InvocationID`s already counted.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::chunked::Chunked;
use super::{moved, ActiveState, Trigger, Usec, MAX_POINTS, RETAIN};

/// Restarts by trigger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Restarts {
    /// systemd's own (`Restart=`).
    pub auto: u64,
    /// Restart jobs (`systemctl restart` and friends).
    pub manual: u64,
}

impl Restarts {
    pub fn add(&mut self, trigger: Trigger, n: u64) {
        match trigger {
            Trigger::Auto => self.auto += n,
            Trigger::Manual => self.manual += n,
        }
    }

    pub fn get(&self, trigger: Trigger) -> u64 {
        match trigger {
            Trigger::Auto => self.auto,
            Trigger::Manual => self.manual,
        }
    }
}

/// The first release saved restarts as `[auto, manual]`; later ones by name.
impl<'de> Deserialize<'de> for Restarts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Saved {
            Pair([u64; 2]),
            Named { auto: u64, manual: u64 },
        }
        Ok(match Saved::deserialize(d)? {
            Saved::Pair([auto, manual]) => Restarts { auto, manual },
            Saved::Named { auto, manual } => Restarts { auto, manual },
        })
    }
}

/// When restarts were counted, one entry each, by trigger, oldest first,
/// within [`RETAIN`] of the newest and at most [`MAX_POINTS`] per trigger.
/// Saved as one list of `[time, trigger]`, as the first releases did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RestartLog {
    auto: Chunked<Usec>,
    manual: Chunked<Usec>,
}

/// The index of the first time in `times` at or after `t`.
fn first_from(times: &Chunked<Usec>, t: Usec) -> usize {
    times.partition_point(|x| *x < t)
}

impl RestartLog {
    fn times(&mut self, trigger: Trigger) -> &mut Chunked<Usec> {
        match trigger {
            Trigger::Auto => &mut self.auto,
            Trigger::Manual => &mut self.manual,
        }
    }

    /// Records `n` restarts at `at`, in time order even when reported late.
    pub fn record(&mut self, at: Usec, trigger: Trigger, n: u64) {
        let times = self.times(trigger);
        for _ in 0..n.min(MAX_POINTS as u64) {
            let i = first_from(times, at.saturating_add(1));
            times.insert(i, at);
        }
        let horizon = times.back().map_or(0, |t| t.saturating_sub(RETAIN));
        while times.len() > MAX_POINTS || times.front().is_some_and(|t| *t < horizon) {
            times.pop_front();
        }
    }

    /// Restarts counted from `from` on.
    pub fn since(&self, from: Usec) -> Restarts {
        Restarts {
            auto: (self.auto.len() - first_from(&self.auto, from)) as u64,
            manual: (self.manual.len() - first_from(&self.manual, from)) as u64,
        }
    }

    pub fn shift(&mut self, delta: i64) {
        for times in [&mut self.auto, &mut self.manual] {
            *times = times.iter().map(|t| moved(*t, delta)).collect();
        }
    }
}

impl Serialize for RestartLog {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.auto.len() + self.manual.len()))?;
        let (mut a, mut m) = (self.auto.iter().peekable(), self.manual.iter().peekable());
        loop {
            let next = match (a.peek(), m.peek()) {
                (Some(x), Some(y)) if x <= y => a.next().map(|t| (*t, Trigger::Auto)),
                (Some(_), Some(_)) | (None, Some(_)) => m.next().map(|t| (*t, Trigger::Manual)),
                (Some(_), None) => a.next().map(|t| (*t, Trigger::Auto)),
                (None, None) => None,
            };
            match next {
                Some(entry) => seq.serialize_element(&entry)?,
                None => break,
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for RestartLog {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut log = RestartLog::default();
        for (at, trigger) in Vec::<(Usec, Trigger)>::deserialize(d)? {
            log.record(at, trigger, 1);
        }
        Ok(log)
    }
}

/// A job of a unit between `JobNew` and `JobRemoved`, and what the unit did meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PendingJob {
    /// `Some(true)` for a restart job, `Some(false)` for any other type,
    /// `None` if the type is unknown.
    pub restart: Option<bool>,
    pub queued_by_systemd: bool,
    pub was_up: bool,
    pub went_down: bool,
    pub came_back: bool,
    pub invocation: Option<String>,
    /// The unit went down on its own while the job waited (it crashed into
    /// `failed` or `auto-restart`), so the job's stop found nothing running
    /// and systemd only started it again.
    #[serde(default)]
    pub found_down: bool,
}

impl PendingJob {
    pub fn observe(&mut self, state: ActiveState, sub_state: Option<&str>) {
        let crashed = state == ActiveState::Failed || sub_state == Some("auto-restart");
        if crashed && !self.came_back {
            self.found_down = true;
        }
        if !state.is_up() {
            self.went_down = true;
        } else if self.went_down {
            self.came_back = true;
        }
    }

    /// The job restarted a unit that was up: it took it down and brought it
    /// back (systemd logs "Stopping" for it), and systemd did not queue it.
    pub fn is_manual_restart(&self) -> bool {
        self.restart != Some(false)
            && !self.queued_by_systemd
            && self.was_up
            && !self.found_down
            && self.went_down
            && self.came_back
    }
}

/// Follows systemd's `NRestarts` of a unit as reported, possibly late and
/// out of order, by D-Bus and the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RestartCounter {
    /// The highest value of the current epoch, and when it was reported.
    high: u32,
    pub high_at: Usec,
    /// When the current epoch began (systemd reset the counter).
    pub epoch_at: Usec,
    /// The highest value of the previous epoch, for its late reports.
    previous_high: Option<u32>,
}

impl RestartCounter {
    pub fn new(at: Usec, n: u32) -> RestartCounter {
        RestartCounter {
            high: n,
            high_at: at,
            epoch_at: 0,
            previous_high: None,
        }
    }

    /// Takes in a report of value `n` at `at`; returns the values it shows
    /// for the first time (as many restarts).
    pub fn report(&mut self, at: Usec, n: u32) -> Range<u32> {
        if at < self.epoch_at {
            // A late report from before the last reset.
            return match self.previous_high {
                Some(p) if n > p => {
                    self.previous_high = Some(n);
                    p + 1..n + 1
                }
                _ => 0..0,
            };
        }
        if n >= self.high {
            let new = self.high + 1..n + 1;
            self.high = n;
            self.high_at = self.high_at.max(at);
            return new;
        }
        if at <= self.high_at {
            // Older news than the high-water mark.
            return 0..0;
        }
        // systemd reset the counter: a new epoch, all of `n` is new.
        self.previous_high = Some(self.high);
        self.high = n;
        self.high_at = at;
        self.epoch_at = at;
        1..n + 1
    }
}

/// How long one source's report of an automatic restart waits for the
/// other's. The journal stamps a record when journald receives it and D-Bus
/// reports are stamped when unitwatch takes them; under load either may be
/// late by a second or two, never by this much.
pub const MATCH_WITHIN: Usec = 10_000_000;

/// How many reports wait at most, per source.
const UNMATCHED: usize = 64;

/// Automatic restarts reported by one source and not yet by the other.
///
/// Each *restart scheduled* record of the journal is one restart, with the
/// `NRestarts` value systemd gave it; D-Bus shows the same restarts as rises
/// of `NRestarts`. A restart is counted by whichever reports it first and
/// waits here, by its value, for the other's report, which then counts
/// nothing. Values repeat after systemd resets the counter (a start by hand),
/// and D-Bus may miss a reset (unitwatch was away): a report takes the
/// oldest waiting one of its value, which keeps the count right even if it
/// pairs two different restarts of equal value, as the right one then finds
/// nothing to take and counts. A report waits [`MATCH_WITHIN`] at most:
/// once the other source reports something that much later, it will not
/// come.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Unmatched {
    /// `NRestarts` values D-Bus reported (counted, or the baseline at first
    /// sight), and when.
    dbus: VecDeque<(u32, Usec)>,
    /// Values of the journal's restart records counted, and when.
    journal: VecDeque<(u32, Usec)>,
}

fn take(waiting: &mut VecDeque<(u32, Usec)>, value: u32) -> bool {
    match waiting.iter().position(|(v, _)| *v == value) {
        Some(i) => waiting.remove(i).is_some(),
        None => false,
    }
}

fn wait(waiting: &mut VecDeque<(u32, Usec)>, value: u32, at: Usec) {
    if waiting.len() >= UNMATCHED {
        waiting.pop_front();
    }
    waiting.push_back((value, at));
}

fn expire(waiting: &mut VecDeque<(u32, Usec)>, now: Usec) {
    waiting.retain(|(_, at)| at.saturating_add(MATCH_WITHIN) >= now);
}

impl Unmatched {
    /// D-Bus showed `values` of `NRestarts` for the first time at `at`;
    /// returns how many of them are restarts the journal has not counted.
    pub fn dbus(&mut self, values: Range<u32>, at: Usec) -> u64 {
        let total = values.len() as u64;
        // Only the last few can still be waiting on the other side.
        let recent = values
            .start
            .max(values.end.saturating_sub(UNMATCHED as u32))..values.end;
        let mut matched = 0;
        for value in recent {
            if take(&mut self.journal, value) {
                matched += 1;
            } else {
                wait(&mut self.dbus, value, at);
            }
        }
        // Records from well before this report that it did not take: D-Bus
        // never saw those values (it missed a reset meanwhile).
        expire(&mut self.journal, at);
        total - matched
    }

    /// D-Bus's first report of the unit showed `NRestarts` `n`, the
    /// baseline: the restarts up to it are not counted from D-Bus, so the
    /// journal's records of them, counted already, wait for nothing. A
    /// record read later is of a restart after accounting began (one
    /// between the sight's time and its read of the value is in the
    /// baseline too) and counts.
    pub fn baseline(&mut self, n: u32) {
        self.journal.retain(|(v, _)| *v > n);
    }

    /// The journal recorded a restart with `NRestarts` `n` at `at`; true if
    /// D-Bus has not already counted it.
    pub fn journal(&mut self, n: u32, at: Usec) -> bool {
        // D-Bus reports from well before this record: their records were read.
        expire(&mut self.dbus, at);
        if take(&mut self.dbus, n) {
            return false;
        }
        wait(&mut self.journal, n, at);
        true
    }

    pub fn shift(&mut self, delta: i64) {
        for (_, at) in self.dbus.iter_mut().chain(self.journal.iter_mut()) {
            *at = moved(*at, delta);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dbus.is_empty() && self.journal.is_empty()
    }
}

/// Remembers the last few `InvocationID`s something was counted for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Recent(VecDeque<Arc<str>>);

impl Recent {
    /// Records `id`; false if it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.0.iter().any(|x| &**x == id) {
            return false;
        }
        if self.0.len() >= 16 {
            self.0.pop_front();
        }
        self.0.push_back(Arc::from(id));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_of_the_first_release_load_by_position() {
        let r: Restarts = serde_json::from_str("[2,1]").expect("pair");
        assert_eq!(r, Restarts { auto: 2, manual: 1 });
        let r: Restarts = serde_json::from_str(r#"{"auto":3,"manual":4}"#).expect("named");
        assert_eq!(r, Restarts { auto: 3, manual: 4 });
    }

    #[test]
    fn the_restart_log_counts_by_time_and_keeps_late_ones_in_order() {
        let mut log = RestartLog::default();
        log.record(10, Trigger::Auto, 1);
        log.record(30, Trigger::Auto, 2);
        log.record(20, Trigger::Auto, 1);
        log.record(25, Trigger::Manual, 1);
        assert_eq!(log.since(20), Restarts { auto: 3, manual: 1 });
        assert_eq!(log.since(26), Restarts { auto: 2, manual: 0 });
        let json = serde_json::to_string(&log).expect("json");
        assert_eq!(
            json,
            r#"[[10,"auto"],[20,"auto"],[25,"manual"],[30,"auto"],[30,"auto"]]"#
        );
        let back: RestartLog = serde_json::from_str(&json).expect("back");
        assert_eq!(back, log);
    }
}
