//! `/metrics`: a snapshot in either exposition format ([`exposition`]).
//!
//! Every family is declared once, as a row of [`UNIT_FAMILIES`] (one sample
//! or more per unit, read from its [`UnitView`]) or of [`SELF_FAMILIES`]
//! (unitwatch's own numbers). A family from data the ledger already has is
//! one row here and one row in README's metrics table; a test checks the two
//! agree. A per-unit family marked `optional` can be turned off in
//! `[metrics]` by its name without `service_` ([`Families`]). Every
//! per-unit sample is labelled `unit`, and `user` after it for a unit of a
//! user's manager ([`key::split`] of the ledger's key).

use std::collections::BTreeSet;

use super::exposition::{escape_label, Kind, Value, SUFFIX};
use crate::ledger::runs::BUCKETS;
use crate::ledger::{seconds, ActiveState, Totals, Trigger, UnitView, Usec};
use crate::snapshot::Snapshot;
pub use parts::{labelled, parts, render, render_parts, unit_header, unit_samples, Labelled, Part};
pub use sampled::{HostFamily, SampleFamily, HOST_FAMILIES, SAMPLE_FAMILIES};

mod parts;
mod sampled;

/// Takes one sample: its labels besides `unit` (and `user`, for a unit of
/// a user's manager), and its value.
pub type Emit<'e> = dyn FnMut(&[(&str, &str)], Value) + 'e;

/// The value of a sample at the time of the read, from its unit's totals.
pub type ValueAt = fn(&Totals, Usec) -> Value;

/// A per-unit family: its descriptor and how to read its samples from a unit.
pub struct UnitFamily {
    pub name: &'static str,
    pub help: &'static str,
    /// The unit its name ends with (`seconds`).
    pub unit: Option<&'static str>,
    pub kind: Kind,
    /// Whether `[metrics]` may turn it off.
    pub optional: bool,
    /// For a family whose samples change with the time of the read alone
    /// (an interval still open), not only when the snapshot does: their
    /// value at that time, from the unit's totals, as `samples` gives it.
    /// Such a family is written on every scrape, from its lines' labels kept
    /// (`http::open`); the others are rendered once per snapshot.
    pub reads_now: Option<ValueAt>,
    pub samples: fn(&UnitView<'_>, &mut Emit<'_>),
}

/// A family about unitwatch itself.
pub struct SelfFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: fn(&Snapshot, &mut Emit<'_>),
}

impl UnitFamily {
    /// Its key in `[metrics]`: the name without `service_`.
    pub fn key(&self) -> &'static str {
        self.name.strip_prefix("service_").unwrap_or(self.name)
    }
}

/// Which optional families are exposed: all, unless `[metrics]` turns some
/// off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Families {
    off: BTreeSet<&'static str>,
}

impl Families {
    /// The keys `[metrics]` takes.
    pub fn keys() -> impl Iterator<Item = &'static str> {
        UNIT_FAMILIES
            .iter()
            .filter(|f| f.optional)
            .map(UnitFamily::key)
            .chain(SAMPLE_FAMILIES.iter().map(SampleFamily::key))
            .chain(HOST_FAMILIES.iter().map(|f| f.name))
    }

    /// Whether the family with `key` is on.
    pub fn on(&self, key: &str) -> bool {
        !self.off.contains(key)
    }

    /// Turns the family `key` on or off; the error lists the keys there are.
    pub fn set(&mut self, key: &str, on: bool) -> Result<(), String> {
        let Some(k) = Families::keys().find(|k| *k == key) else {
            let known: Vec<_> = Families::keys().collect();
            return Err(format!(
                "no optional family `{key}`; the optional families are {}",
                known.join(", ")
            ));
        };
        if on {
            self.off.remove(k);
        } else {
            self.off.insert(k);
        }
        Ok(())
    }

    fn exposes(&self, f: &UnitFamily) -> bool {
        !(f.optional && self.off.contains(f.key()))
    }
}

fn flag(b: bool) -> Value {
    Value::Int(u64::from(b))
}

/// [`BUCKETS`] as `le` label values, in OpenMetrics' canonical form.
const BUCKET_LABELS: [&str; BUCKETS.len()] = [
    "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "120.0", "300.0", "600.0",
    "1800.0", "3600.0",
];

/// Every per-unit family, in the order they are exposed.
pub const UNIT_FAMILIES: &[UnitFamily] = &[
    UnitFamily {
        name: "service_up",
        help: "1 while the unit's ActiveState is active or reloading, 0 otherwise.",
        unit: None,
        kind: Kind::Gauge,
        optional: false,
        reads_now: None,
        samples: |v, emit| {
            if !v.is_job() {
                emit(&[], flag(v.up()))
            }
        },
    },
    UnitFamily {
        name: "service_uptime",
        help: "Seconds the unit was up (active or reloading) since unitwatch began accounting it.",
        unit: Some("seconds"),
        kind: Kind::Counter,
        optional: false,
        reads_now: Some(|t, now| Value::Float(seconds(t.at(now).0))),
        samples: |v, emit| {
            if !v.is_job() {
                emit(&[], Value::Float(v.uptime_seconds))
            }
        },
    },
    UnitFamily {
        name: "service_downtime",
        help: "Seconds the unit was down (any other ActiveState) since unitwatch began accounting it.",
        unit: Some("seconds"),
        kind: Kind::Counter,
        optional: false,
        reads_now: Some(|t, now| Value::Float(seconds(t.at(now).1))),
        samples: |v, emit| {
            if !v.is_job() {
                emit(&[], Value::Float(v.downtime_seconds))
            }
        },
    },
    UnitFamily {
        name: "service_restart_count",
        help: "Restarts of the unit: trigger=auto for systemd's own (Restart=), trigger=manual for restart jobs.",
        unit: None,
        kind: Kind::Counter,
        optional: false,
        reads_now: None,
        samples: |v, emit| {
            for trigger in Trigger::ALL {
                let n = match trigger {
                    Trigger::Auto => v.restarts_auto,
                    Trigger::Manual => v.restarts_manual,
                };
                emit(&[("trigger", trigger.as_str())], Value::Int(n));
            }
        },
    },
    UnitFamily {
        name: "service_failures",
        help: "Runs of the unit that ended unsuccessfully, by systemd's Result; a result's series appears with its first failure.",
        unit: None,
        kind: Kind::Counter,
        optional: false,
        reads_now: None,
        samples: |v, emit| {
            for (result, n) in v.failures {
                emit(&[("result", &escape_label(result))], Value::Int(*n));
            }
        },
    },
    UnitFamily {
        name: "service_state",
        help: "1 for the unit's current ActiveState, 0 for the other five.",
        unit: None,
        kind: Kind::Gauge,
        optional: true,
        reads_now: None,
        samples: |v, emit| {
            for state in ActiveState::ALL {
                emit(&[("state", state.as_str())], flag(v.state == state));
            }
        },
    },
    UnitFamily {
        name: "service_state_change_timestamp",
        help: "Unix time of the unit's last ActiveState change, as systemd recorded it.",
        unit: Some("seconds"),
        kind: Kind::Gauge,
        optional: true,
        reads_now: None,
        samples: |v, emit| emit(&[], Value::Float(v.state_change_seconds)),
    },
    UnitFamily {
        name: "service_job_runs",
        help: "Finished runs of a job, by result: success, or systemd's Result of a failure.",
        unit: None,
        kind: Kind::Counter,
        optional: false,
        reads_now: None,
        samples: |v, emit| {
            if !v.is_job() {
                return;
            }
            let runs = &v.runs.results;
            if !runs.contains_key("success") {
                emit(&[("result", "success")], Value::Int(0));
            }
            for (result, n) in runs {
                emit(&[("result", &escape_label(result))], Value::Int(*n));
            }
        },
    },
    UnitFamily {
        name: "service_job_running",
        help: "1 while a run of the job is in progress (neither inactive nor failed).",
        unit: None,
        kind: Kind::Gauge,
        optional: false,
        reads_now: None,
        samples: |v, emit| {
            if v.is_job() {
                emit(&[], flag(v.running()))
            }
        },
    },
    UnitFamily {
        name: "service_job_last_run_success",
        help: "1 if the job's last finished run succeeded, 0 if it failed.",
        unit: None,
        kind: Kind::Gauge,
        optional: false,
        reads_now: None,
        samples: |v, emit| {
            if let (true, Some(last)) = (v.is_job(), &v.runs.last) {
                emit(&[], flag(last.succeeded()))
            }
        },
    },
    UnitFamily {
        name: "service_job_last_start_timestamp",
        help: "Unix time the job's last run began, as systemd recorded it.",
        unit: Some("seconds"),
        kind: Kind::Gauge,
        optional: false,
        reads_now: None,
        samples: |v, emit| {
            if v.is_job() && v.runs.last_start != 0 {
                emit(&[], Value::Float(seconds(v.runs.last_start)))
            }
        },
    },
    UnitFamily {
        name: "service_job_last_duration",
        help: "Seconds the job's last finished run took, from systemd's timestamps.",
        unit: Some("seconds"),
        kind: Kind::Gauge,
        optional: false,
        reads_now: None,
        samples: |v, emit| {
            if let (true, Some(d)) = (v.is_job(), v.runs.last.and_then(|r| r.duration())) {
                emit(&[], Value::Float(seconds(d)))
            }
        },
    },
    UnitFamily {
        name: "service_job_last_success_timestamp",
        help: "Unix time the job's last successful run ended.",
        unit: Some("seconds"),
        kind: Kind::Gauge,
        optional: false,
        reads_now: None,
        samples: |v, emit| {
            if v.is_job() && v.runs.last_success != 0 {
                emit(&[], Value::Float(seconds(v.runs.last_success)))
            }
        },
    },
    UnitFamily {
        name: "service_job_duration",
        help: "Durations of the job's finished runs.",
        unit: Some("seconds"),
        kind: Kind::Histogram,
        optional: true,
        reads_now: None,
        samples: |v, emit| {
            if !v.is_job() {
                return;
            }
            let d = &v.runs.durations;
            for ((_, n), le) in d.cumulative().zip(BUCKET_LABELS) {
                emit(&[(SUFFIX, "_bucket"), ("le", le)], Value::Int(n));
            }
            emit(&[(SUFFIX, "_bucket"), ("le", "+Inf")], Value::Int(d.count));
            emit(&[(SUFFIX, "_sum")], Value::Float(seconds(d.sum_usec)));
            emit(&[(SUFFIX, "_count")], Value::Int(d.count));
        },
    },
    UnitFamily {
        name: "service_job_last_trigger_timestamp",
        help: "Unix time the timer that triggers the job last elapsed (LastTriggerUSec).",
        unit: Some("seconds"),
        kind: Kind::Gauge,
        optional: false,
        reads_now: None,
        samples: |v, emit| {
            if let Some(t) = v.timer.filter(|t| v.is_job() && t.last_trigger != 0) {
                emit(&[], Value::Float(seconds(t.last_trigger)))
            }
        },
    },
    UnitFamily {
        name: "service_job_next_run_timestamp",
        help: "Unix time the timer that triggers the job elapses next.",
        unit: Some("seconds"),
        kind: Kind::Gauge,
        optional: false,
        reads_now: None,
        samples: |v, emit| {
            if let Some(t) = v.timer.filter(|t| v.is_job() && t.next_elapse != 0) {
                emit(&[], Value::Float(seconds(t.next_elapse)))
            }
        },
    },
];

/// Every family about unitwatch itself, after the per-unit ones.
pub const SELF_FAMILIES: &[SelfFamily] = &[
    SelfFamily {
        name: "unitwatch_build",
        help: "unitwatch's version.",
        kind: Kind::Info,
        samples: |_, emit| emit(&[("version", env!("CARGO_PKG_VERSION"))], Value::Int(1)),
    },
    SelfFamily {
        name: "unitwatch_units_watched",
        help: "Units unitwatch accounts.",
        kind: Kind::Gauge,
        samples: |s, emit| emit(&[], Value::Int(s.ledger.len() as u64)),
    },
    SelfFamily {
        name: "unitwatch_units_dropped",
        help: "Units matching [watch] that are not exported because of watch.max_units.",
        kind: Kind::Gauge,
        samples: |s, emit| emit(&[], Value::Int(s.ledger.dropped() as u64)),
    },
    SelfFamily {
        name: "unitwatch_journal_up",
        help: "1 while the journal is being read, 0 when unitwatch counts from D-Bus alone.",
        kind: Kind::Gauge,
        samples: |s, emit| emit(&[], flag(s.stats.journal_up)),
    },
    SelfFamily {
        name: "unitwatch_journal_gaps",
        help: "Times journal records were rotated away before unitwatch read them.",
        kind: Kind::Counter,
        samples: |s, emit| emit(&[], Value::Int(s.stats.journal_gaps)),
    },
    SelfFamily {
        name: "unitwatch_dbus_up",
        help: "1 while unitwatch is connected to the service manager over D-Bus.",
        kind: Kind::Gauge,
        samples: |s, emit| emit(&[], flag(s.stats.dbus_up)),
    },
    SelfFamily {
        name: "unitwatch_dbus_reconnects",
        help: "Times the D-Bus connection came back after it was lost.",
        kind: Kind::Counter,
        samples: |s, emit| emit(&[], Value::Int(s.stats.dbus_reconnects)),
    },
    SelfFamily {
        name: "unitwatch_dbus_overflows",
        help: "Times systemd's signals overflowed unitwatch's queue; every watched unit was read again.",
        kind: Kind::Counter,
        samples: |s, emit| emit(&[], Value::Int(s.stats.dbus_overflows)),
    },
    SelfFamily {
        name: "unitwatch_sample_timestamp_seconds",
        help: "Unix time of the last round of reading resources, sockets, watchdogs and the host ([resources] interval).",
        kind: Kind::Gauge,
        samples: |s, emit| {
            if s.sample.taken_at > 0 {
                emit(&[], Value::Float(s.sample.taken_at as f64 / 1e6))
            }
        },
    },
    SelfFamily {
        name: "unitwatch_user_manager_up",
        help: "1 while unitwatch follows the user's manager ([watch] user_managers), 0 since it stopped or its connection was lost.",
        kind: Kind::Gauge,
        samples: |s, emit| {
            for (user, up) in &s.stats.user_managers {
                emit(&[("user", &escape_label(user))], flag(*up));
            }
        },
    },
    SelfFamily {
        name: "unitwatch_events",
        help: "Events applied to the ledger, by source.",
        kind: Kind::Counter,
        samples: |s, emit| {
            emit(&[("source", "dbus")], Value::Int(s.stats.events.dbus));
            emit(&[("source", "journal")], Value::Int(s.stats.events.journal));
        },
    },
];

#[cfg(test)]
mod tests;
