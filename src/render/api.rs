//! The JSON API, `GET /api/v1/units` and `GET /api/v1/units/{unit}`: every
//! watched unit's kind and state; a service's availability over 1 h / 24 h /
//! 7 d / 30 d and MTBF/MTTR, a job's runs ([`job`]); restarts and failures,
//! read from the ledger. The same types are what `unitwatch status` reads
//! back. Field names are stable within `v1` (docs/API.md); times are Unix
//! seconds, durations seconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ledger::window::Window;
use crate::ledger::{key, Ledger, UnitView, Usec};
use crate::sample::Sample;

pub mod job;
pub mod resources;

pub use self::job::{Job, JobRun, JobTimer};
pub use self::resources::{Host, Resources};

/// The windows availability, MTBF and MTTR are given for, by name.
pub const WINDOWS: [(&str, Usec); 4] = [
    ("1h", 3600 * SECOND),
    ("24h", 24 * 3600 * SECOND),
    ("7d", 7 * 24 * 3600 * SECOND),
    ("30d", 30 * 24 * 3600 * SECOND),
];

const SECOND: Usec = 1_000_000;
const DAY: Usec = 24 * 3600 * SECOND;

/// A value per window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PerWindow {
    #[serde(rename = "1h")]
    pub h1: Option<f64>,
    #[serde(rename = "24h")]
    pub h24: Option<f64>,
    #[serde(rename = "7d")]
    pub d7: Option<f64>,
    #[serde(rename = "30d")]
    pub d30: Option<f64>,
}

impl PerWindow {
    fn from_windows(windows: &[Window; 4], f: impl Fn(&Window) -> Option<f64>) -> PerWindow {
        let [a, b, c, d] = windows.each_ref().map(f);
        PerWindow {
            h1: a,
            h24: b,
            d7: c,
            d30: d,
        }
    }
}

/// Restarts by trigger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restarts {
    pub auto: u64,
    pub manual: u64,
}

/// The last failure of a unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastFailure {
    /// When the failed run ended, Unix seconds.
    pub at: f64,
    /// systemd's `Result`: `exit-code`, `signal`, `core-dump`, `timeout`, ...
    pub result: String,
}

/// One unit, as `/api/v1/units` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub unit: String,
    /// The user whose manager the unit is of (`[watch] user_managers`, as
    /// the `user` label); null for the system manager's.
    #[serde(default)]
    pub user: Option<String>,
    /// What it is accounted as: `service` or `job` (a daemon from before
    /// jobs sends none: a service).
    #[serde(default = "service")]
    pub kind: String,
    /// systemd's `ActiveState` and `SubState`.
    pub state: String,
    pub sub_state: String,
    /// `state` is `active` or `reloading`.
    pub up: bool,
    /// systemd has the unit loaded.
    pub loaded: bool,
    /// When `state` was entered, Unix seconds.
    pub since: f64,
    /// How long it has been in `state`, seconds.
    pub run_seconds: f64,
    /// Totals since accounting began (as `/metrics`); null for a job,
    /// which between runs is not down.
    pub uptime_seconds: Option<f64>,
    pub downtime_seconds: Option<f64>,
    /// Up time / accounted time over each window, from 0 to 1; null where
    /// nothing was accounted yet. The whole object null for a job, as are
    /// the next two.
    pub availability: Option<PerWindow>,
    /// Up time per time it went down, over each window; null if it did not.
    pub mtbf_seconds: Option<PerWindow>,
    /// Down time per time it came back up, over each window; null if it did not.
    pub mttr_seconds: Option<PerWindow>,
    /// Restarts since accounting began, and in the last 24 hours.
    pub restarts: Restarts,
    pub restarts_24h: Restarts,
    /// Failed runs by `Result`, since accounting began.
    pub failures: BTreeMap<String, u64>,
    pub last_failure: Option<LastFailure>,
    /// Where the kept history (30 days) begins, Unix seconds.
    pub history_begins: f64,
    /// A job's runs, timer and success rates; null for a service.
    #[serde(default)]
    pub job: Option<Job>,
    /// CPU, memory, tasks, IO (a socket's connections, a watchdog) as last
    /// sampled; null while the unit has no cgroup or nothing was read.
    #[serde(default)]
    pub resources: Option<Resources>,
}

fn service() -> String {
    "service".to_owned()
}

impl Unit {
    pub fn is_job(&self) -> bool {
        self.kind == "job"
    }
}

/// One state change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub at: f64,
    pub state: String,
}

/// One unit with its history, as `/api/v1/units/{unit}` gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitDetail {
    #[serde(flatten)]
    pub unit: Unit,
    /// The state at `history_begins`, then every change since, oldest first.
    pub history: Vec<Change>,
    /// A job's counted runs that ended in the last 30 days, oldest first;
    /// null for a service.
    #[serde(default)]
    pub runs: Option<Vec<JobRun>>,
    /// A job's run durations over 24 h and 30 d (p50, p95, p99, max);
    /// null for a service.
    #[serde(default)]
    pub run_durations: Option<BTreeMap<String, job::Percentiles>>,
}

/// `/api/v1/units`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Units {
    /// When this was read, Unix seconds.
    pub now: f64,
    /// The service manager's state; null until it was read.
    #[serde(default)]
    pub host: Option<Host>,
    pub units: Vec<Unit>,
}

fn seconds(usec: Usec) -> f64 {
    usec as f64 / 1e6
}

fn unit(v: &UnitView<'_>, sample: &Sample) -> Unit {
    let h = &v.history;
    let now = h.now();
    let since = (v.state_change_seconds * 1e6) as Usec;
    let restarts_24h = h.restarts_since(now.saturating_sub(DAY));
    let is_job = v.is_job();
    // Each window read once, for all three figures; a job has none of them.
    let windows =
        (!is_job).then(|| WINDOWS.map(|(_, length)| h.window(now.saturating_sub(length))));
    let per_window =
        |f: fn(&Window) -> Option<f64>| windows.as_ref().map(|w| PerWindow::from_windows(w, f));
    let (name, user) = key::split(v.unit);
    Unit {
        unit: name.to_owned(),
        user: user.map(str::to_owned),
        kind: v.kind.as_str().to_owned(),
        state: v.state.as_str().to_owned(),
        sub_state: v.sub_state.to_owned(),
        up: v.up(),
        loaded: v.loaded,
        since: v.state_change_seconds,
        run_seconds: seconds(now.saturating_sub(since)),
        uptime_seconds: (!is_job).then_some(v.uptime_seconds),
        downtime_seconds: (!is_job).then_some(v.downtime_seconds),
        availability: per_window(Window::availability),
        mtbf_seconds: per_window(Window::mtbf_seconds),
        mttr_seconds: per_window(Window::mttr_seconds),
        restarts: Restarts {
            auto: v.restarts_auto,
            manual: v.restarts_manual,
        },
        restarts_24h: Restarts {
            auto: restarts_24h.auto,
            manual: restarts_24h.manual,
        },
        failures: v.failures.clone(),
        last_failure: v.last_failure.map(|(at, result)| LastFailure {
            at,
            result: result.to_owned(),
        }),
        history_begins: seconds(h.begins()),
        job: is_job.then(|| job::job(v, now)),
        resources: sample.units.get(v.unit).map(resources::resources),
    }
}

/// Every unit as of `now`.
pub fn units(ledger: &Ledger, sample: &Sample, now: Usec) -> Units {
    Units {
        now: seconds(now),
        host: sample.host.as_ref().map(resources::host),
        units: ledger.view(now).map(|v| unit(&v, sample)).collect(),
    }
}

/// One unit, of `user`'s manager if given (else the system manager's),
/// with its history as of `now`.
pub fn unit_detail(
    ledger: &Ledger,
    sample: &Sample,
    name: &str,
    user: Option<&str>,
    now: Usec,
) -> Option<UnitDetail> {
    let v = match user {
        Some(user) => ledger.unit(&key::user_unit(name, user)?, now)?,
        None if key::is_unit_name(name) => ledger.unit(name, now)?,
        None => return None,
    };
    let mut history = vec![Change {
        at: seconds(v.history.begins()),
        state: v.history.first_state().as_str().to_owned(),
    }];
    history.extend(v.history.transitions().map(|(at, state)| Change {
        at: seconds(at),
        state: state.as_str().to_owned(),
    }));
    Some(UnitDetail {
        unit: unit(&v, sample),
        history,
        runs: v.is_job().then(|| job::recent_runs(&v, now)),
        run_durations: v.is_job().then(|| job::durations(&v, now)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{ActiveState, Event, Transition};

    const S: Usec = 1_000_000;
    const T0: Usec = 1_700_000_000 * S;

    #[test]
    fn fields_and_windows() {
        let mut l = Ledger::new();
        l.apply(Event::new(
            "a.service",
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: Some(0),
            },
        ));
        l.apply(Event::new(
            "a.service",
            T0 + 1800 * S,
            Transition::State {
                state: ActiveState::Failed,
                sub_state: Some("failed".into()),
            },
        ));
        l.apply(Event::new(
            "a.service",
            T0 + 1800 * S,
            Transition::RunFailed {
                result: "exit-code".into(),
                invocation: Some("i1".into()),
            },
        ));
        let now = T0 + 3600 * S;
        let all = units(&l, &Default::default(), now);
        let u = &all.units[0];
        assert_eq!(
            (u.state.as_str(), u.sub_state.as_str(), u.up),
            ("failed", "failed", false)
        );
        assert_eq!((u.since, u.run_seconds), (1_700_001_800.0, 1800.0));
        let availability = u.availability.as_ref().expect("a service's availability");
        assert_eq!(availability.h1, Some(0.5));
        assert_eq!(availability.d30, Some(0.5), "cut to where accounting began");
        let (mtbf, mttr) = (u.mtbf_seconds.as_ref(), u.mttr_seconds.as_ref());
        assert_eq!(
            (mtbf.and_then(|m| m.h1), mttr.and_then(|m| m.h1)),
            (Some(1800.0), None)
        );
        assert_eq!(
            u.last_failure,
            Some(LastFailure {
                at: 1_700_001_800.0,
                result: "exit-code".into()
            })
        );
        let json = serde_json::to_value(&all).expect("json");
        assert_eq!(json["units"][0]["availability"]["24h"], 0.5);
        assert_eq!(json["units"][0]["restarts_24h"]["manual"], 0);

        let d = unit_detail(&l, &Default::default(), "a.service", None, now).expect("detail");
        let states: Vec<_> = d.history.iter().map(|c| (c.at, c.state.as_str())).collect();
        assert_eq!(
            states,
            [(1_700_000_000.0, "active"), (1_700_001_800.0, "failed")]
        );
        assert!(unit_detail(&l, &Default::default(), "b.service", None, now).is_none());
        assert!(unit_detail(&l, &Default::default(), "a.service", Some("alice"), now).is_none());
        assert_eq!(json["units"][0]["user"], serde_json::Value::Null);
    }

    #[test]
    fn a_user_managers_unit_is_named_by_unit_and_user() {
        let mut l = Ledger::new();
        let alice = key::user_unit("a.service", "alice").expect("key");
        for unit in ["a.service", alice.as_str()] {
            l.apply(Event::new(
                unit,
                T0,
                Transition::Seen {
                    state: ActiveState::Active,
                    sub_state: "running".into(),
                    n_restarts: Some(0),
                },
            ));
        }
        let now = T0 + 60 * S;
        let all = units(&l, &Default::default(), now);
        let named: Vec<_> = all
            .units
            .iter()
            .map(|u| (u.unit.as_str(), u.user.as_deref()))
            .collect();
        assert_eq!(named, [("a.service", None), ("a.service", Some("alice"))]);
        let d =
            unit_detail(&l, &Default::default(), "a.service", Some("alice"), now).expect("alice's");
        assert_eq!(d.unit.user.as_deref(), Some("alice"));
        assert!(unit_detail(&l, &Default::default(), "a.service", Some("bob"), now).is_none());
        // A key is not a unit's name.
        assert!(unit_detail(&l, &Default::default(), &alice, None, now).is_none());
        let json = serde_json::to_value(&all).expect("json");
        assert_eq!(json["units"][1]["user"], "alice");
        // What a daemon from before user managers sends still reads.
        let mut old = json["units"][0].clone();
        old.as_object_mut().map(|o| o.remove("user"));
        let back: Unit = serde_json::from_value(old).expect("an older daemon's unit");
        assert_eq!(back.user, None);
    }
}
