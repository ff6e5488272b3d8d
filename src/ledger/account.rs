//! The account of one unit: every rule of how a transition changes its
//! totals, restarts and failures (the module doc of [`super`] states them).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::chunked::Chunked;
use super::history::{Changes, Fold, Point};
use super::restarts::{PendingJob, Recent, RestartCounter, RestartLog, Restarts, Unmatched};
use super::runs::{Runs, Timer};
use super::{
    moved, seconds, ActiveState, History, Kind, Origin, Outcome, Transition, Trigger, UnitView,
    Usec,
};

/// Accounting of one unit.
#[derive(Debug, Clone)]
pub(super) struct Account {
    /// When accounting began; nothing before it counts.
    pub seen_at: Usec,
    /// The state changes since, with their running totals.
    pub changes: Changes,
    pub sub_state: String,
    /// systemd's `NRestarts` as D-Bus reported it.
    pub n_restarts: Option<RestartCounter>,
    /// Automatic restarts one source counted and the other has not reported.
    pub unmatched: Unmatched,
    /// The journal's restart records counted, by the run they ended.
    pub auto_invocations: Recent,
    pub restarts: Restarts,
    pub failures: BTreeMap<String, u64>,
    pub last_failure_at: Usec,
    /// `Result` of the last counted failure.
    pub last_failure_result: Option<String>,
    /// When restarts were counted.
    pub restart_log: RestartLog,
    /// `InvocationID`s of the last runs counted as failed.
    pub failed_invocations: Recent,
    /// `InvocationID`s of the last runs ended by a counted manual restart.
    pub restarted_invocations: Recent,
    /// Jobs between `JobNew` and `JobRemoved`. Saved, so that a saved
    /// ledger and the ops after it replay to the same ledger; forgotten at a
    /// restart ([`super::Ledger::restarted`]).
    pub jobs: HashMap<u32, PendingJob>,
    pub loaded: bool,
    /// Spans D-Bus followed the unit: from `Seen` until the connection was
    /// lost. Saved and forgotten like `jobs`.
    pub followed: Vec<(Usec, Option<Usec>)>,
    /// What the unit is, once D-Bus (or `[watch]`) said; a service until then.
    pub kind: Option<Kind>,
    /// Its runs: a job's, or those of a unit not yet known to be a service.
    pub runs: Runs,
    /// The timer that triggers it.
    pub timer: Option<Timer>,
    /// Names this account's content, as [`super::Ledger::version`] names a
    /// ledger's: the ledger gives it a fresh one whenever it changes it, so
    /// a renderer can tell a unit it rendered before from a changed one.
    pub version: u64,
}

impl Account {
    pub fn new(at: Usec, state: ActiveState, sub_state: String, n_restarts: Option<u32>) -> Self {
        let mut unmatched = Unmatched::default();
        if let Some(n) = n_restarts {
            unmatched.baseline(n);
        }
        Account {
            seen_at: at,
            changes: Changes::new(at, state),
            sub_state,
            n_restarts: n_restarts.map(|n| RestartCounter::new(at, n)),
            unmatched,
            auto_invocations: Recent::default(),
            restarts: Restarts::default(),
            failures: BTreeMap::new(),
            last_failure_at: 0,
            last_failure_result: None,
            restart_log: RestartLog::default(),
            failed_invocations: Recent::default(),
            restarted_invocations: Recent::default(),
            jobs: HashMap::new(),
            loaded: true,
            followed: Vec::new(),
            kind: None,
            runs: Runs::default(),
            timer: None,
            version: super::fresh_version(),
        }
    }
}

impl Account {
    /// Whether D-Bus was following the unit at `at`.
    fn followed_at(&self, at: Usec) -> bool {
        self.followed
            .iter()
            .any(|(from, to)| at >= *from && to.is_none_or(|to| at < to))
    }

    pub fn follow(&mut self, at: Usec) {
        if !self.followed.iter().any(|(_, to)| to.is_none()) {
            if self.followed.len() >= 8 {
                self.followed.remove(0);
            }
            self.followed.push((at, None));
        }
    }

    pub fn unfollow(&mut self, at: Usec) {
        for span in self.followed.iter_mut() {
            if span.1.is_none() {
                span.1 = Some(at.max(span.0));
            }
        }
    }

    pub fn shift(&mut self, delta: i64) {
        self.seen_at = moved(self.seen_at, delta);
        self.changes.shift(delta);
        if let Some(c) = &mut self.n_restarts {
            c.high_at = moved(c.high_at, delta);
            c.epoch_at = moved(c.epoch_at, delta);
        }
        self.last_failure_at = moved(self.last_failure_at, delta);
        self.unmatched.shift(delta);
        self.restart_log.shift(delta);
        for (from, to) in &mut self.followed {
            *from = moved(*from, delta);
            *to = to.map(|t| moved(t, delta));
        }
        self.runs.shift(delta);
        if let Some(t) = &mut self.timer {
            t.shift(delta);
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

    /// One of the journal's *restart scheduled* records: one automatic
    /// restart, unless it is a record already counted (the same run) or
    /// D-Bus counted it first.
    fn count_scheduled_restart(
        &mut self,
        at: Usec,
        invocation: Option<String>,
        n_restarts: Option<u32>,
    ) -> Outcome {
        let n = n_restarts.unwrap_or(0);
        if let Some(id) = invocation.filter(|id| !id.is_empty()) {
            if !self.auto_invocations.insert(&format!("{id}/{n}")) {
                return Outcome::Quiet;
            }
        }
        if !self.unmatched.journal(n, at) {
            return Outcome::Quiet;
        }
        self.count_restarts(at, Trigger::Auto, 1)
    }

    pub fn state(&self) -> ActiveState {
        self.changes.state()
    }

    pub fn last_change(&self) -> Usec {
        self.changes.last_change()
    }

    pub fn record_state(&mut self, at: Usec, state: ActiveState) {
        self.changes.record(at, state);
    }

    fn count_restarts(&mut self, at: Usec, trigger: Trigger, n: u64) -> Outcome {
        if n == 0 {
            return Outcome::Quiet;
        }
        self.restarts.add(trigger, n);
        self.restart_log.record(at, trigger, n);
        Outcome::Restarted(trigger, n)
    }

    /// Whether `transition` could change the account: not the runs of a
    /// known service, which are its restarts and failures, already counted
    /// (keeping them would only cost memory and time).
    pub fn keeps(&self, transition: &Transition) -> bool {
        let run = matches!(
            transition,
            Transition::RunStarted { .. } | Transition::RunEnded { .. }
        );
        !(run && self.kind == Some(Kind::Service))
    }

    pub fn apply(&mut self, at: Usec, transition: Transition, origin: Origin) -> Outcome {
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
                    job.observe(state, sub_state.as_deref());
                }
                let newest = at >= self.last_change();
                self.record_state(at, state);
                if let (true, Some(sub)) = (newest, sub_state) {
                    self.sub_state = sub;
                }
                Outcome::Quiet
            }
            Transition::NRestarts(n) if origin == Origin::Dbus => match &mut self.n_restarts {
                None => {
                    self.n_restarts = Some(RestartCounter::new(at, n));
                    self.unmatched.baseline(n);
                    Outcome::Quiet
                }
                Some(counter) => {
                    let values = counter.report(at, n);
                    let new = self.unmatched.dbus(values, at);
                    self.count_restarts(at, Trigger::Auto, new)
                }
            },
            // Saved by releases that read the journal's restart records as
            // values of NRestarts: replayed as they counted then.
            Transition::NRestarts(n) => match &mut self.n_restarts {
                None if at >= self.seen_at => {
                    self.n_restarts = Some(RestartCounter::new(at, n));
                    self.count_restarts(at, Trigger::Auto, 1)
                }
                None => {
                    self.n_restarts = Some(RestartCounter::new(at, n));
                    Outcome::Quiet
                }
                Some(counter) => {
                    let new = counter.report(at, n).len() as u64;
                    self.count_restarts(at, Trigger::Auto, new)
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
                    found_down: false,
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
                ..
            } if at >= self.seen_at => self.count_manual_restart(at, invocation.as_deref()),
            Transition::Restart {
                trigger: Trigger::Auto,
                invocation,
                n_restarts,
            } if at >= self.seen_at => self.count_scheduled_restart(at, invocation, n_restarts),
            Transition::Restart { .. } => Outcome::Quiet,
            _ if !self.keeps(&transition) => Outcome::Quiet,
            Transition::RunStarted { invocation } => {
                if origin == Origin::Journal && self.followed_at(at) {
                    return Outcome::Quiet;
                }
                self.runs.started(at, invocation.as_deref());
                Outcome::Quiet
            }
            Transition::RunEnded { result, invocation } => {
                let counted = at >= self.seen_at;
                self.runs.ended(at, &result, invocation.as_deref(), counted);
                Outcome::Quiet
            }
            Transition::Kind { kind } => {
                self.kind = Some(kind);
                if kind == Kind::Service {
                    self.runs = Runs::default();
                }
                Outcome::Quiet
            }
            Transition::Timer {
                timer,
                last_trigger,
                next_elapse,
            } => {
                self.timer = (!timer.is_empty()).then_some(Timer {
                    name: timer,
                    last_trigger,
                    next_elapse,
                });
                Outcome::Quiet
            }
        }
    }
}

impl Account {
    pub fn view<'a>(&'a self, name: &'a str, now: Usec) -> UnitView<'a> {
        let totals = self.changes.open();
        let (up, down) = totals.at(now);
        UnitView {
            unit: name,
            state: self.state(),
            sub_state: &self.sub_state,
            loaded: self.loaded,
            uptime_seconds: seconds(up),
            downtime_seconds: seconds(down),
            totals,
            state_change_seconds: seconds(self.last_change()),
            restarts_auto: self.restarts.auto,
            restarts_manual: self.restarts.manual,
            failures: &self.failures,
            last_failure: self
                .last_failure_result
                .as_deref()
                .filter(|_| self.last_failure_at > 0)
                .map(|r| (seconds(self.last_failure_at), r)),
            history: History {
                changes: &self.changes,
                restarts: &self.restart_log,
                now,
            },
            kind: self.kind.unwrap_or_default(),
            runs: &self.runs,
            timer: self.timer.as_ref(),
        }
    }
}

/// The saved form of an account, as every release has written it: the fold
/// and its totals, then the changes after it as a map of time to state.
#[derive(Serialize)]
struct Out<'a> {
    seen_at: Usec,
    fold_at: Usec,
    fold_state: ActiveState,
    up_usec: u64,
    down_usec: u64,
    fold_downs: u32,
    points: PointsOut<'a>,
    sub_state: &'a str,
    n_restarts: &'a Option<RestartCounter>,
    #[serde(skip_serializing_if = "Unmatched::is_empty")]
    unmatched: &'a Unmatched,
    auto_invocations: &'a Recent,
    restarts: Restarts,
    failures: &'a BTreeMap<String, u64>,
    last_failure_at: Usec,
    last_failure_result: &'a Option<String>,
    restart_log: &'a RestartLog,
    failed_invocations: &'a Recent,
    restarted_invocations: &'a Recent,
    jobs: &'a HashMap<u32, PendingJob>,
    loaded: bool,
    followed: &'a [(Usec, Option<Usec>)],
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<Kind>,
    #[serde(skip_serializing_if = "is_default")]
    runs: &'a Runs,
    #[serde(skip_serializing_if = "Option::is_none")]
    timer: &'a Option<Timer>,
}

fn is_default(runs: &&Runs) -> bool {
    **runs == Runs::default()
}

struct PointsOut<'a>(&'a Chunked<Point>);

impl Serialize for PointsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|p| (p.at, p.state)))
    }
}

impl Serialize for Account {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fold = &self.changes.fold;
        Out {
            seen_at: self.seen_at,
            fold_at: fold.at,
            fold_state: fold.state,
            up_usec: fold.up,
            down_usec: fold.down,
            fold_downs: fold.downs,
            points: PointsOut(&self.changes.points),
            sub_state: &self.sub_state,
            n_restarts: &self.n_restarts,
            unmatched: &self.unmatched,
            auto_invocations: &self.auto_invocations,
            restarts: self.restarts,
            failures: &self.failures,
            last_failure_at: self.last_failure_at,
            last_failure_result: &self.last_failure_result,
            restart_log: &self.restart_log,
            failed_invocations: &self.failed_invocations,
            restarted_invocations: &self.restarted_invocations,
            jobs: &self.jobs,
            loaded: self.loaded,
            followed: &self.followed,
            kind: self.kind,
            runs: &self.runs,
            timer: &self.timer,
        }
        .serialize(s)
    }
}

#[derive(Deserialize)]
struct In {
    seen_at: Usec,
    fold_at: Usec,
    fold_state: ActiveState,
    up_usec: u64,
    down_usec: u64,
    #[serde(default)]
    fold_downs: u32,
    points: BTreeMap<Usec, ActiveState>,
    sub_state: String,
    n_restarts: Option<RestartCounter>,
    #[serde(default)]
    unmatched: Unmatched,
    #[serde(default)]
    auto_invocations: Recent,
    restarts: Restarts,
    failures: BTreeMap<String, u64>,
    last_failure_at: Usec,
    #[serde(default)]
    last_failure_result: Option<String>,
    #[serde(default)]
    restart_log: RestartLog,
    failed_invocations: Recent,
    restarted_invocations: Recent,
    #[serde(default)]
    jobs: HashMap<u32, PendingJob>,
    loaded: bool,
    #[serde(default)]
    followed: Vec<(Usec, Option<Usec>)>,
    #[serde(default)]
    kind: Option<Kind>,
    #[serde(default)]
    runs: Runs,
    #[serde(default)]
    timer: Option<Timer>,
}

impl<'de> Deserialize<'de> for Account {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let a = In::deserialize(d)?;
        let fold = Fold {
            at: a.fold_at,
            state: a.fold_state,
            up: a.up_usec,
            down: a.down_usec,
            downs: a.fold_downs,
        };
        Ok(Account {
            seen_at: a.seen_at,
            changes: Changes::from_saved(fold, a.points),
            sub_state: a.sub_state,
            n_restarts: a.n_restarts,
            unmatched: a.unmatched,
            auto_invocations: a.auto_invocations,
            restarts: a.restarts,
            failures: a.failures,
            last_failure_at: a.last_failure_at,
            last_failure_result: a.last_failure_result,
            restart_log: a.restart_log,
            failed_invocations: a.failed_invocations,
            restarted_invocations: a.restarted_invocations,
            jobs: a.jobs,
            loaded: a.loaded,
            followed: a.followed,
            kind: a.kind,
            runs: a.runs,
            timer: a.timer,
            version: super::fresh_version(),
        })
    }
}
