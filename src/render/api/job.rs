//! A job's part of the JSON API: its last run and last success, its runs by
//! result, its success rate over each window, its timer, and (for
//! `/api/v1/units/{unit}`) its runs of the last 30 days. Times are Unix
//! seconds, durations seconds, as in the rest of the API; what a job does
//! not have yet (a run, a success, a timer, a next run) is null.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{seconds, PerWindow, DAY, WINDOWS};
use crate::ledger::runs::{Run, Runs, Timer};
use crate::ledger::{UnitView, Usec};

/// One finished run of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    /// When it began; null if unitwatch did not see it begin.
    pub start: Option<f64>,
    /// When it ended.
    pub end: f64,
    /// How long it ran; null when its start is unknown.
    pub duration_seconds: Option<f64>,
    /// systemd's `Result`: `success`, `exit-code`, `signal`, `timeout`, ...
    pub result: String,
}

impl JobRun {
    pub fn succeeded(&self) -> bool {
        self.result == "success"
    }

    fn of(run: &Run) -> JobRun {
        JobRun {
            start: (run.start != 0).then(|| seconds(run.start)),
            end: seconds(run.end),
            duration_seconds: run.duration().map(seconds),
            result: run.result().to_owned(),
        }
    }
}

/// The timer that triggers a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobTimer {
    /// The timer unit, e.g. `aitbc-settlement.timer`.
    pub name: String,
    /// When it last triggered (`LastTriggerUSec`); null if it never did.
    pub last_trigger: Option<f64>,
    /// When it elapses next (`NextElapseUSecRealtime`); null if it is not due.
    pub next_run: Option<f64>,
}

impl JobTimer {
    fn of(timer: &Timer) -> JobTimer {
        let at = |usec: Usec| (usec != 0).then(|| seconds(usec));
        JobTimer {
            name: timer.name.clone(),
            last_trigger: at(timer.last_trigger),
            next_run: at(timer.next_elapse),
        }
    }
}

/// What a job adds to its unit's object: `"job"`, null for a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// A run is in progress (the unit is neither `inactive` nor `failed`).
    pub running: bool,
    /// When the run in progress began; null when none is, or its start is unknown.
    pub running_since: Option<f64>,
    /// The newest finished run; null before the first.
    pub last_run: Option<JobRun>,
    /// When the newest successful run ended; null before the first.
    pub last_success: Option<f64>,
    /// Runs counted since accounting began, by result (as
    /// `service_job_runs_total{result}`); `success` is always there.
    pub runs: BTreeMap<String, u64>,
    /// Successful runs / runs that ended in each window, from 0 to 1; null
    /// where no run ended in it.
    pub success_rate: PerWindow,
    /// The timer that triggers it; null if none does.
    pub timer: Option<JobTimer>,
}

/// Counted runs that ended in `[from, now]` (a run ending at `now` included):
/// all, and successful.
pub fn runs_since(runs: &Runs, from: Usec, now: Usec) -> (u64, u64) {
    runs.between(from, now.saturating_add(1))
}

/// `ok` runs of `all` as a ratio; none of none.
pub fn rate(all: u64, ok: u64) -> Option<f64> {
    (all > 0).then(|| ok as f64 / all as f64)
}

/// Successful runs over runs that ended in `[from, now]`; none if none did.
pub fn success_rate(runs: &Runs, from: Usec, now: Usec) -> Option<f64> {
    let (all, ok) = runs_since(runs, from, now);
    rate(all, ok)
}

/// The job fields of `v` (a job) as of `now`.
pub fn job(v: &UnitView<'_>, now: Usec) -> Job {
    let runs = v.runs;
    let running = v.running();
    let [h1, h24, d7, d30] =
        WINDOWS.map(|(_, length)| success_rate(runs, now.saturating_sub(length), now));
    let mut by_result = runs.results.clone();
    by_result.entry("success".to_owned()).or_insert(0);
    Job {
        running,
        running_since: runs
            .running
            .as_ref()
            .filter(|r| running && r.start != 0)
            .map(|r| seconds(r.start)),
        last_run: runs.last.as_ref().map(JobRun::of),
        last_success: (runs.last_success != 0).then(|| seconds(runs.last_success)),
        runs: by_result,
        success_rate: PerWindow { h1, h24, d7, d30 },
        timer: v.timer.map(JobTimer::of),
    }
}

/// The runs of `v` (a job) that ended in the last 30 days, oldest first.
pub fn recent_runs(v: &UnitView<'_>, now: Usec) -> Vec<JobRun> {
    v.runs
        .in_window(now.saturating_sub(30 * DAY), now.saturating_add(1))
        .map(JobRun::of)
        .collect()
}

/// Percentiles of the durations of a job's runs in one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Runs with a known duration that ended in the window.
    pub runs: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Duration percentiles of the runs that ended in the last 24 h and 30 d
/// (of those kept: at most [`crate::ledger::runs::MAX_RUNS`]); a window
/// without a run of known duration is absent. Nearest rank, from the runs
/// themselves rather than the histogram's buckets.
pub fn durations(v: &UnitView<'_>, now: Usec) -> BTreeMap<String, Percentiles> {
    [("24h", DAY), ("30d", 30 * DAY)]
        .into_iter()
        .filter_map(|(name, length)| {
            let mut d: Vec<u64> = v
                .runs
                .in_window(now.saturating_sub(length), now.saturating_add(1))
                .filter_map(Run::duration)
                .collect();
            if d.is_empty() {
                return None;
            }
            d.sort_unstable();
            let rank = |p: f64| {
                let i = ((p * d.len() as f64).ceil() as usize).clamp(1, d.len()) - 1;
                seconds(d[i])
            };
            let p = Percentiles {
                runs: d.len() as u64,
                p50: rank(0.50),
                p95: rank(0.95),
                p99: rank(0.99),
                max: rank(1.0),
            };
            Some((name.to_owned(), p))
        })
        .collect()
}

/// A job and its runs fed to a ledger as D-Bus reports them, for the
/// renderers' tests.
#[cfg(test)]
pub(crate) mod fixture {
    use crate::ledger::{ActiveState, Event, Kind, Ledger, Transition, Usec};

    pub const S: Usec = 1_000_000;
    pub const HOUR: Usec = 3600 * S;
    pub const T0: Usec = 1_700_000_000 * S;
    pub const JOB: &str = "backup.service";

    fn state(state: ActiveState) -> Transition {
        Transition::State {
            state,
            sub_state: None,
        }
    }

    /// A ledger with [`JOB`], seen inactive at `T0` and accounted as a job.
    pub fn job_ledger() -> Ledger {
        let mut l = Ledger::new();
        l.apply(Event::new(
            JOB,
            T0,
            Transition::Seen {
                state: ActiveState::Inactive,
                sub_state: "dead".into(),
                n_restarts: Some(0),
            },
        ));
        l.apply(Event::new(JOB, T0, Transition::Kind { kind: Kind::Job }));
        l
    }

    /// A run of [`JOB`] that starts `from` and ends `to` µs after `T0`
    /// with `result`.
    pub fn run_job(l: &mut Ledger, from: Usec, to: Usec, result: &str) {
        let invocation = Some(format!("run-{from}"));
        l.apply(Event::new(JOB, T0 + from, state(ActiveState::Activating)));
        l.apply(Event::new(
            JOB,
            T0 + from,
            Transition::RunStarted {
                invocation: invocation.clone(),
            },
        ));
        let end = if result == "success" {
            ActiveState::Inactive
        } else {
            ActiveState::Failed
        };
        l.apply(Event::new(JOB, T0 + to, state(end)));
        l.apply(Event::new(
            JOB,
            T0 + to,
            Transition::RunEnded {
                result: result.into(),
                invocation,
            },
        ));
    }

    /// A run of [`JOB`] that starts `from` µs after `T0` and goes on.
    pub fn start_job(l: &mut Ledger, from: Usec) {
        l.apply(Event::new(JOB, T0 + from, state(ActiveState::Activating)));
        l.apply(Event::new(
            JOB,
            T0 + from,
            Transition::RunStarted {
                invocation: Some(format!("run-{from}")),
            },
        ));
    }

    /// [`JOB`]'s timer, `backup.timer`, as D-Bus reports it at `T0`.
    pub fn set_timer(l: &mut Ledger, last_trigger: Usec, next_elapse: Usec) {
        l.apply(Event::new(
            JOB,
            T0,
            Transition::Timer {
                timer: "backup.timer".into(),
                last_trigger,
                next_elapse,
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::*;
    use crate::ledger::{ActiveState, Event, Transition};
    use crate::render::api::{unit_detail, units, Unit, Units};

    fn only(l: &crate::ledger::Ledger, now: u64) -> Unit {
        units(l, &Default::default(), now).units.remove(0)
    }

    #[test]
    fn a_job_is_of_kind_job() {
        let u = only(&job_ledger(), T0 + HOUR);
        assert_eq!(u.kind, "job");
        assert!(u.is_job());
    }

    #[test]
    fn a_job_has_no_uptime_availability_mtbf_or_mttr() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 13 * S, "success");
        let json = serde_json::to_value(units(&l, &Default::default(), T0 + HOUR)).expect("json");
        let u = &json["units"][0];
        for field in [
            "uptime_seconds",
            "downtime_seconds",
            "availability",
            "mtbf_seconds",
            "mttr_seconds",
        ] {
            assert!(u[field].is_null(), "{field}: {u}");
        }
    }

    #[test]
    fn a_service_is_of_kind_service_with_no_job_fields() {
        let mut l = crate::ledger::Ledger::new();
        l.apply(Event::new(
            "web.service",
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: Some(0),
            },
        ));
        let u = only(&l, T0 + HOUR);
        assert_eq!(u.kind, "service");
        assert_eq!(u.job, None);
        assert_eq!(u.availability.and_then(|a| a.h1), Some(1.0));
        let d =
            unit_detail(&l, &Default::default(), "web.service", None, T0 + HOUR).expect("detail");
        assert_eq!(d.runs, None);
    }

    #[test]
    fn the_last_run_gives_its_start_end_duration_and_result() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 13 * S + S / 2, "exit-code");
        let job = only(&l, T0 + HOUR).job.expect("job fields");
        let last = job.last_run.expect("a last run");
        assert_eq!(last.start, Some(1_700_000_010.0));
        assert_eq!(last.end, 1_700_000_013.5);
        assert_eq!(last.duration_seconds, Some(3.5));
        assert_eq!(last.result, "exit-code");
    }

    #[test]
    fn a_job_that_never_ran_has_no_last_run_nor_success_and_zero_successes() {
        let job = only(&job_ledger(), T0 + HOUR).job.expect("job fields");
        assert_eq!((job.last_run, job.last_success), (None, None));
        assert_eq!(job.runs.get("success"), Some(&0));
        assert_eq!(job.success_rate.h24, None);
        assert!(!job.running);
    }

    #[test]
    fn the_last_success_stays_when_a_later_run_fails() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 12 * S, "success");
        run_job(&mut l, 60 * S, 61 * S, "timeout");
        let job = only(&l, T0 + HOUR).job.expect("job fields");
        assert_eq!(job.last_success, Some(1_700_000_012.0));
        assert_eq!(job.last_run.map(|r| r.result), Some("timeout".to_owned()));
    }

    #[test]
    fn runs_are_counted_by_result() {
        let mut l = job_ledger();
        for (i, result) in ["success", "exit-code", "success", "signal"]
            .into_iter()
            .enumerate()
        {
            let t = (i as u64 + 1) * 60 * S;
            run_job(&mut l, t, t + S, result);
        }
        let job = only(&l, T0 + HOUR).job.expect("job fields");
        let runs: Vec<_> = job.runs.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        assert_eq!(runs, [("exit-code", 1), ("signal", 1), ("success", 2)]);
    }

    #[test]
    fn the_success_rate_of_a_window_counts_the_runs_that_ended_in_it() {
        let mut l = job_ledger();
        // Two days ago: a success; in the last hour: a success and a failure.
        run_job(&mut l, HOUR, HOUR + S, "success");
        let now = T0 + 49 * HOUR;
        run_job(&mut l, 48 * HOUR + 60 * S, 48 * HOUR + 61 * S, "success");
        run_job(
            &mut l,
            48 * HOUR + 120 * S,
            48 * HOUR + 121 * S,
            "exit-code",
        );
        let rate = only(&l, now).job.expect("job fields").success_rate;
        assert_eq!((rate.h1, rate.h24), (Some(0.5), Some(0.5)));
        assert_eq!(rate.d30.map(|r| (r * 3.0).round()), Some(2.0));
    }

    #[test]
    fn a_window_without_runs_has_no_success_rate() {
        let mut l = job_ledger();
        run_job(&mut l, HOUR, HOUR + S, "success");
        let rate = only(&l, T0 + 3 * HOUR)
            .job
            .expect("job fields")
            .success_rate;
        assert_eq!((rate.h1, rate.h24), (None, Some(1.0)));
    }

    #[test]
    fn the_timer_gives_its_name_last_trigger_and_next_run() {
        let mut l = job_ledger();
        set_timer(&mut l, T0 - 60 * S, T0 + 240 * S);
        let t = only(&l, T0 + S).job.and_then(|j| j.timer).expect("a timer");
        assert_eq!(t.name, "backup.timer");
        assert_eq!(t.last_trigger, Some(1_699_999_940.0));
        assert_eq!(t.next_run, Some(1_700_000_240.0));
    }

    #[test]
    fn a_timer_that_never_triggered_and_is_not_due_has_null_times() {
        let mut l = job_ledger();
        set_timer(&mut l, 0, 0);
        let t = only(&l, T0 + S).job.and_then(|j| j.timer).expect("a timer");
        assert_eq!((t.last_trigger, t.next_run), (None, None));
    }

    #[test]
    fn a_job_without_a_timer_has_a_null_timer() {
        let job = only(&job_ledger(), T0 + S).job.expect("job fields");
        assert_eq!(job.timer, None);
    }

    #[test]
    fn a_run_in_progress_is_running_since_its_start() {
        let mut l = job_ledger();
        start_job(&mut l, 30 * S);
        let job = only(&l, T0 + 40 * S).job.expect("job fields");
        assert!(job.running);
        assert_eq!(job.running_since, Some(1_700_000_030.0));
    }

    #[test]
    fn one_job_lists_its_runs_of_the_last_30_days_oldest_first() {
        let mut l = job_ledger();
        let day = 24 * HOUR;
        run_job(&mut l, HOUR, HOUR + S, "success");
        run_job(&mut l, 30 * day, 30 * day + 2 * S, "exit-code");
        run_job(&mut l, 30 * day + HOUR, 30 * day + HOUR + S, "success");
        let d = unit_detail(&l, &Default::default(), JOB, None, T0 + 30 * day + 2 * HOUR)
            .expect("detail");
        let runs: Vec<_> = d
            .runs
            .expect("a job's runs")
            .into_iter()
            .map(|r| (r.end, r.result))
            .collect();
        assert_eq!(
            runs,
            [
                (1_702_592_002.0, "exit-code".to_owned()),
                (1_702_595_601.0, "success".to_owned())
            ]
        );
    }

    #[test]
    fn the_job_fields_have_their_documented_names() {
        let mut l = job_ledger();
        set_timer(&mut l, T0, T0 + HOUR);
        run_job(&mut l, 10 * S, 12 * S, "success");
        let json = serde_json::to_value(units(&l, &Default::default(), T0 + 20 * S)).expect("json");
        let job = &json["units"][0]["job"];
        assert_eq!(json["units"][0]["kind"], "job");
        assert_eq!(job["running"], false);
        assert_eq!(job["last_run"]["duration_seconds"], 2.0);
        assert_eq!(job["last_run"]["result"], "success");
        assert_eq!(job["last_success"], 1_700_000_012.0);
        assert_eq!(job["runs"]["success"], 1);
        assert_eq!(job["success_rate"]["24h"], 1.0);
        assert_eq!(job["timer"]["next_run"], 1_700_003_600.0);
        assert!(job["running_since"].is_null());
    }

    #[test]
    fn a_daemon_from_before_jobs_is_read_as_listing_services() {
        let old = r#"{"now":1.0,"units":[{"unit":"a.service","state":"active","sub_state":"running","up":true,"loaded":true,"since":0.5,"run_seconds":0.5,"uptime_seconds":0.5,"downtime_seconds":0.0,"availability":{"1h":1.0,"24h":1.0,"7d":1.0,"30d":1.0},"mtbf_seconds":{"1h":null,"24h":null,"7d":null,"30d":null},"mttr_seconds":{"1h":null,"24h":null,"7d":null,"30d":null},"restarts":{"auto":0,"manual":0},"restarts_24h":{"auto":0,"manual":0},"failures":{},"last_failure":null,"history_begins":0.5}]}"#;
        let units: Units = serde_json::from_str(old).expect("an old daemon's list");
        assert_eq!(units.units[0].kind, "service");
        assert_eq!(units.units[0].job, None);
    }

    #[test]
    fn run_durations_are_percentiles_of_the_runs_in_each_window() {
        let mut l = job_ledger();
        // One run 40 days before the end, lasting an hour: in neither window.
        run_job(&mut l, 10 * S, 10 * S + HOUR, "success");
        let base = 40 * 24 * HOUR;
        for i in 1..=100 {
            let from = base + i * 200 * S;
            run_job(&mut l, from, from + i * S, "success");
        }
        let now = T0 + base + 30_000 * S;
        let d = unit_detail(&l, &Default::default(), JOB, None, now)
            .and_then(|d| d.run_durations)
            .expect("a job's durations");
        let day = &d["24h"];
        assert_eq!(
            (day.runs, day.p50, day.p95, day.max),
            (100, 50.0, 95.0, 100.0)
        );
        assert_eq!(d["30d"].runs, 100);
    }
}
