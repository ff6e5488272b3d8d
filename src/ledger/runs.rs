//! A job's runs: when each began and ended and with what `Result`, totals
//! by result, a histogram of durations, and the runs of the last 30 days.
//!
//! A run is one invocation of the unit (one `InvocationID`): from the
//! moment systemd started it (`InactiveExitTimestamp`, the journal's
//! "Starting…") to the moment it ended, successfully (`inactive`, the
//! journal's "Deactivated successfully") or not (`failed`, or waiting in
//! `auto-restart`: each attempt under `Restart=` is a run of its own, as
//! systemd gives each its own invocation). Both sources report every run;
//! a run is counted by whichever reports its end first, matched by its
//! `InvocationID` (by its end time where systemd gives none).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::chunked::Chunked;
use super::{moved, Usec, RETAIN};

/// Upper bounds of the duration histogram's buckets, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// How many finished runs a job keeps at most (30 days of a job every 5
/// minutes take 8640; a job that runs more often keeps its last 8192).
pub const MAX_RUNS: usize = 8192;

/// The results systemd gives a service's run (`Result`), stored as their
/// index; [`OTHER`] for any other.
const RESULTS: [&str; 11] = [
    "success",
    "resources",
    "protocol",
    "timeout",
    "exit-code",
    "signal",
    "core-dump",
    "watchdog",
    "start-limit-hit",
    "oom-kill",
    "exec-condition",
];
const OTHER: u8 = u8::MAX;

/// One finished run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// When it began, if known (0 otherwise).
    pub start: Usec,
    pub end: Usec,
    result: u8,
}

impl Run {
    pub fn succeeded(&self) -> bool {
        self.result == 0
    }

    /// systemd's `Result` of the run ("other" for one unitwatch does not know).
    pub fn result(&self) -> &'static str {
        RESULTS
            .get(self.result as usize)
            .copied()
            .unwrap_or("other")
    }

    /// How long it ran, in µs, if its start is known.
    pub fn duration(&self) -> Option<u64> {
        (self.start != 0 && self.start <= self.end).then(|| self.end - self.start)
    }
}

/// The run in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub invocation: Option<Arc<str>>,
    pub start: Usec,
}

/// Run durations in [`BUCKETS`], as Prometheus' histogram counts them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Durations {
    /// Runs at or below each bound (not cumulative: one bucket each).
    pub buckets: [u64; BUCKETS.len()],
    pub count: u64,
    pub sum_usec: u64,
}

impl Durations {
    fn observe(&mut self, usec: u64) {
        let seconds = usec as f64 / 1e6;
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_usec = self.sum_usec.saturating_add(usec);
    }

    /// Runs at or below each bound, cumulative, as exposition wants them.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        BUCKETS
            .iter()
            .zip(self.buckets.iter())
            .scan(0, |sum, (b, n)| {
                *sum += n;
                Some((*b, *sum))
            })
    }
}

/// Everything a unit's runs add up to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Runs {
    #[serde(default)]
    pub running: Option<Running>,
    /// Start of the newest run reported.
    #[serde(default)]
    pub last_start: Usec,
    /// The newest finished run, counted or not.
    #[serde(default)]
    pub last: Option<Run>,
    /// End of the newest successful run.
    #[serde(default)]
    pub last_success: Usec,
    /// Counted runs by result.
    #[serde(default)]
    pub results: BTreeMap<String, u64>,
    #[serde(default)]
    pub durations: Durations,
    /// Counted runs, by end time, within [`RETAIN`] and [`MAX_RUNS`].
    #[serde(default, with = "log")]
    pub log: Chunked<Run>,
    /// `InvocationID`s of the runs whose end was taken in (as [`id`]s).
    #[serde(default)]
    ended: VecDeque<u128>,
}

/// How many ended `InvocationID`s are remembered: reports of one run's end
/// arrive within moments of each other, from two sources.
const ENDED: usize = 8;

/// An `InvocationID` (128 bits in hex) as a number; any other text by its
/// hash, which is as good for telling runs apart.
fn id(invocation: &str) -> u128 {
    u128::from_str_radix(invocation, 16).unwrap_or_else(|_| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        invocation.hash(&mut h);
        u128::from(h.finish())
    })
}

impl Runs {
    /// A run `invocation` began at `at`.
    pub fn started(&mut self, at: Usec, invocation: Option<&str>) {
        if let Some(id) = invocation {
            if self.has_ended(id) {
                return;
            }
            if let Some(r) = &self.running {
                if r.invocation.as_deref() == Some(id) {
                    return;
                }
            }
        }
        if self.running.as_ref().is_none_or(|r| at >= r.start) {
            self.running = Some(Running {
                invocation: invocation.map(Arc::from),
                start: at,
            });
        }
        self.last_start = self.last_start.max(at);
    }

    fn has_ended(&self, invocation: &str) -> bool {
        self.ended.contains(&id(invocation))
    }

    /// A run ended at `at` with `result`; counted (in totals, histogram and
    /// log) only if `count`, as runs from before accounting began are not.
    /// Returns whether it was news.
    pub fn ended(&mut self, at: Usec, result: &str, invocation: Option<&str>, count: bool) -> bool {
        match invocation {
            Some(invocation) => {
                if self.has_ended(invocation) {
                    return false;
                }
                if self.ended.len() >= ENDED {
                    self.ended.pop_front();
                }
                self.ended.push_back(id(invocation));
            }
            None if self.last.is_some_and(|l| at <= l.end) => return false,
            None => {}
        }
        let start = match &self.running {
            Some(r)
                if r.start <= at
                    && (invocation.is_none() || r.invocation.as_deref() == invocation) =>
            {
                let start = r.start;
                self.running = None;
                start
            }
            _ => 0,
        };
        let run = Run {
            start,
            end: at,
            result: RESULTS
                .iter()
                .position(|r| *r == result)
                .map_or(OTHER, |i| i as u8),
        };
        if self.last.is_none_or(|l| at >= l.end) {
            self.last = Some(run);
        }
        if run.succeeded() {
            self.last_success = self.last_success.max(at);
        }
        if count {
            *self.results.entry(result.to_owned()).or_insert(0) += 1;
            if let Some(d) = run.duration() {
                self.durations.observe(d);
            }
            let i = self.log.partition_point(|r| r.end <= at);
            self.log.insert(i, run);
            let horizon = self.log.back().map_or(0, |r| r.end.saturating_sub(RETAIN));
            while self.log.len() > MAX_RUNS || self.log.front().is_some_and(|r| r.end < horizon) {
                self.log.pop_front();
            }
        }
        true
    }

    /// The host went down: a run in progress then never ends.
    pub fn lost(&mut self) {
        self.running = None;
    }

    pub fn shift(&mut self, delta: i64) {
        if let Some(r) = &mut self.running {
            r.start = moved(r.start, delta);
        }
        self.last_start = moved(self.last_start, delta);
        self.last_success = moved(self.last_success, delta);
        let shift = |r: &Run| Run {
            start: moved(r.start, delta),
            end: moved(r.end, delta),
            ..*r
        };
        self.last = self.last.as_ref().map(shift);
        self.log = self.log.iter().map(shift).collect();
    }

    /// Counted runs that ended in `[from, to)`: all, and successful.
    pub fn between(&self, from: Usec, to: Usec) -> (u64, u64) {
        let a = self.log.partition_point(|r| r.end < from);
        let b = self.log.partition_point(|r| r.end < to);
        let ok = self
            .log
            .iter_from(a)
            .take(b - a)
            .filter(|r| r.succeeded())
            .count();
        ((b - a) as u64, ok as u64)
    }

    /// Counted runs that ended in `[from, to)`, oldest first.
    pub fn in_window(&self, from: Usec, to: Usec) -> impl Iterator<Item = &Run> + '_ {
        let a = self.log.partition_point(|r| r.end < from);
        self.log.iter_from(a).take_while(move |r| r.end < to)
    }
}

/// The run log saved as a list, oldest first.
mod log {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Chunked, Run};

    pub fn serialize<S: Serializer>(log: &Chunked<Run>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(log.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Chunked<Run>, D::Error> {
        Ok(Vec::<Run>::deserialize(d)?.into_iter().collect())
    }
}

/// The timer that triggers a job, as D-Bus last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub name: String,
    /// `LastTriggerUSec`; 0 if it never triggered.
    pub last_trigger: Usec,
    /// The next elapse, realtime; 0 if none is due.
    pub next_elapse: Usec,
}

impl Timer {
    pub fn shift(&mut self, delta: i64) {
        self.last_trigger = moved(self.last_trigger, delta);
        self.next_elapse = moved(self.next_elapse, delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reported_twice_counts_once() {
        let mut r = Runs::default();
        r.started(10, Some("a"));
        assert!(r.ended(15, "success", Some("a"), true));
        r.started(11, Some("a"));
        assert!(!r.ended(16, "success", Some("a"), true));
        assert_eq!(r.results.get("success"), Some(&1));
        assert_eq!(r.durations.count, 1);
        assert_eq!(r.durations.sum_usec, 5);
        assert!(r.running.is_none());
    }

    #[test]
    fn a_late_report_of_an_older_run_keeps_the_newest_as_last() {
        let mut r = Runs::default();
        r.ended(30, "success", Some("b"), true);
        r.ended(20, "exit-code", Some("a"), true);
        assert_eq!(r.last.map(|l| l.end), Some(30));
        assert_eq!(r.last_success, 30);
        assert_eq!(r.log.iter().map(|l| l.end).collect::<Vec<_>>(), [20, 30]);
        assert_eq!(r.between(0, 31), (2, 1));
    }

    #[test]
    fn a_run_before_accounting_sets_the_last_run_but_counts_nothing() {
        let mut r = Runs::default();
        r.started(1_000_000, Some("a"));
        r.ended(3_000_000, "timeout", Some("a"), false);
        assert!(r.results.is_empty());
        assert_eq!(r.log.len(), 0);
        let last = r.last.expect("last run");
        assert_eq!(
            (last.result(), last.duration()),
            ("timeout", Some(2_000_000))
        );
    }

    #[test]
    fn durations_fall_into_the_bucket_of_their_upper_bound() {
        let mut d = Durations::default();
        d.observe(100_000);
        d.observe(100_001);
        d.observe(7_200_000_000);
        let c: Vec<_> = d.cumulative().take(2).collect();
        assert_eq!(c, [(0.1, 1), (0.25, 2)]);
        assert_eq!(d.cumulative().last(), Some((3600.0, 2)));
        assert_eq!(d.count, 3);
    }

    #[test]
    fn an_unknown_result_is_kept_by_name_in_totals() {
        let mut r = Runs::default();
        r.ended(5, "brand-new", None, true);
        assert_eq!(r.results.get("brand-new"), Some(&1));
        assert_eq!(r.last.map(|l| l.result()), Some("other"));
    }

    #[test]
    fn the_log_keeps_at_most_max_runs() {
        let mut r = Runs::default();
        for i in 0..(MAX_RUNS as u64 + 10) {
            r.ended(i + 1, "success", None, true);
        }
        assert_eq!(r.log.len(), MAX_RUNS);
        assert_eq!(r.results.get("success"), Some(&(MAX_RUNS as u64 + 10)));
    }
}
