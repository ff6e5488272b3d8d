//! What the service manager's own journal records about a unit mean, as
//! ledger events. Pure: fed the fields of one record at a time.
//!
//! The records are the catalog's unit lifecycle messages, written by PID 1
//! with `UNIT=` and `INVOCATION_ID=`, or by a user manager with `USER_UNIT=`
//! and `USER_INVOCATION_ID=` (a [`Mapper::user`] takes only those, and only
//! its user's), and with `JOB_ID=`, `JOB_TYPE=`, `UNIT_RESULT=` and
//! `N_RESTARTS=`:
//!
//! | MESSAGE_ID | record | event |
//! |---|---|---|
//! | `7d4958e8…` | Starting… | `activating`; a run (`INVOCATION_ID`) began |
//! | `39f53479…` | Started / Finished | `active` (not after a oneshot's "Deactivated successfully") |
//! | `de5b426a…` | Stopping… | `deactivating` |
//! | `9d1aaa27…` | Stopped | `inactive`; with `JOB_TYPE=restart` a manual restart if the same job (`JOB_ID`) logged "Stopping…" while the unit was up |
//! | `d34d037f…` / `7b05ebc6…` | Reloading… / Reloaded | `reloading` / `active` |
//! | `5eb03494…` | Scheduled restart job | one automatic restart (with `N_RESTARTS`), `activating` |
//! | `d9b373ed…` | Failed with result … | a failure by `UNIT_RESULT`, `failed`; the run ended so |
//! | `7ad2d189…` | Deactivated successfully | `inactive`; the run ended with `success` |
//!
//! A restart job (`systemctl restart`, `try-restart`, `reload-or-restart`
//! of a unit that cannot reload) is a stop and then a start. systemd logs
//! "Stopping…" only when the stop has something to stop: a unit that was
//! inactive, failed or waiting in `auto-restart` (as every restart systemd
//! makes itself) is only started, and its "Stopped" record, with
//! `JOB_TYPE=restart` all the same, is not a restart.

use std::collections::{BTreeMap, HashMap};

use crate::ledger::{ActiveState, Event, Transition, Trigger, Usec};
use crate::select::Selector;

pub const STARTING: &str = "7d4958e842da4a758f6c1cdc7b36dcc5";
pub const STARTED: &str = "39f53479d3a045ac8e11786248231fbf";
pub const STOPPING: &str = "de5b426a63be47a7b6ac3eaac82e2f6f";
pub const STOPPED: &str = "9d1aaa27d60140bd96365438aad20286";
pub const RELOADING: &str = "d34d037fff1847e6ae669a370e694725";
pub const RELOADED: &str = "7b05ebc668384222baa8881179cfda54";
pub const RESTART_SCHEDULED: &str = "5eb03494b6584870a536b337290809b3";
pub const FAILURE_RESULT: &str = "d9b373ed55a64feb8242e02dbe79a49c";
pub const SUCCESS: &str = "7ad2d189f7e94e70a38c781354912448";

/// The MESSAGE_IDs worth reading; the journal is filtered to these.
pub const MESSAGE_IDS: [&str; 9] = [
    STARTING,
    STARTED,
    STOPPING,
    STOPPED,
    RELOADING,
    RELOADED,
    RESTART_SCHEDULED,
    FAILURE_RESULT,
    SUCCESS,
];

/// The fields of a record that [`Mapper::events`] reads.
pub const FIELDS: [&str; 11] = [
    "MESSAGE_ID",
    "UNIT",
    "USER_UNIT",
    "INVOCATION_ID",
    "USER_INVOCATION_ID",
    "JOB_ID",
    "JOB_TYPE",
    "N_RESTARTS",
    "UNIT_RESULT",
    "_UID",
    "_BOOT_ID",
];

/// One record's fields by name.
pub type Fields = BTreeMap<String, String>;

/// Adds one data item of a record, `FIELD=value` as the journal stores it, to
/// `fields`. Bytes that are not UTF-8 are replaced; an item without `=` or
/// with an empty name (a damaged or foreign journal file) is skipped. A later
/// item of the same name replaces an earlier one.
pub fn add_field(fields: &mut Fields, data: &[u8]) {
    let Some(eq) = data.iter().position(|b| *b == b'=') else {
        return;
    };
    let (name, value) = (&data[..eq], &data[eq + 1..]);
    if name.is_empty() {
        return;
    }
    fields.insert(
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    );
}

/// What the records so far said about one unit.
#[derive(Debug, Default)]
struct Seen {
    /// MESSAGE_ID and invocation of its last record.
    last: Option<(String, Option<String>)>,
    /// Whether its last state record left it up; unknown before the first.
    up: Option<bool>,
    /// The job (`JOB_ID`) whose "Stopping…" was the last, and whether the
    /// unit was up right before it.
    stopping: Option<(Option<String>, bool)>,
}

/// Turns records into events, remembering per unit what its records said.
#[derive(Debug)]
pub struct Mapper {
    selector: Selector,
    /// `UNIT` and `INVOCATION_ID`, or a user manager's `USER_UNIT` and
    /// `USER_INVOCATION_ID`.
    unit_field: &'static str,
    invocation_field: &'static str,
    /// A user manager's records: only those written by this user (`_UID`).
    uid: Option<String>,
    units: HashMap<String, Seen>,
}

impl Mapper {
    /// Maps the system manager's records.
    pub fn new(selector: Selector) -> Mapper {
        Mapper {
            selector,
            unit_field: "UNIT",
            invocation_field: "INVOCATION_ID",
            uid: None,
            units: HashMap::new(),
        }
    }

    /// Maps the records of the user manager of user `uid`.
    pub fn user(selector: Selector, uid: u32) -> Mapper {
        Mapper {
            unit_field: "USER_UNIT",
            invocation_field: "USER_INVOCATION_ID",
            uid: Some(uid.to_string()),
            ..Mapper::new(selector)
        }
    }

    /// The events of one record written at `at`; none for records of
    /// unwatched units or of no interest.
    pub fn events(&mut self, fields: &BTreeMap<String, String>, at: Usec) -> Vec<Event> {
        let Some(unit) = fields.get(self.unit_field) else {
            return Vec::new();
        };
        if let (Some(uid), Some(writer)) = (&self.uid, fields.get("_UID")) {
            if uid != writer {
                return Vec::new();
            }
        }
        // Not a unit name, and it could pass for a user manager's key.
        if !self.selector.matches(unit) || !crate::ledger::key::is_unit_name(unit) {
            return Vec::new();
        }
        let Some(id) = fields.get("MESSAGE_ID") else {
            return Vec::new();
        };
        let invocation = fields.get(self.invocation_field).cloned();
        let job = fields.get("JOB_ID").cloned();
        let seen = self.units.entry(unit.clone()).or_default();
        let previous = seen.last.replace((id.clone(), invocation.clone()));
        let state = |state| {
            Event::logged(
                unit,
                at,
                Transition::State {
                    state,
                    sub_state: None,
                },
            )
        };
        let (events, up) = match id.as_str() {
            STARTING => (
                vec![
                    state(ActiveState::Activating),
                    Event::logged(unit, at, Transition::RunStarted { invocation }),
                ],
                false,
            ),
            STARTED => {
                // A oneshot logs "Deactivated successfully" before "Finished".
                let finished_oneshot = matches!(&previous,
                    Some((prev, inv)) if prev == SUCCESS && *inv == invocation);
                if finished_oneshot {
                    (Vec::new(), false)
                } else {
                    (vec![state(ActiveState::Active)], true)
                }
            }
            STOPPING => {
                seen.stopping = Some((job, seen.up.unwrap_or(true)));
                (vec![state(ActiveState::Deactivating)], false)
            }
            STOPPED => {
                let mut events = vec![state(ActiveState::Inactive)];
                let restart_job = fields.get("JOB_TYPE").map(String::as_str) == Some("restart");
                // This job's own "Stopping…", with the unit up before it.
                let stopped_up = seen
                    .stopping
                    .take()
                    .is_some_and(|(stopping_job, was_up)| was_up && stopping_job == job);
                if restart_job && stopped_up {
                    events.push(Event::logged(
                        unit,
                        at,
                        Transition::Restart {
                            trigger: Trigger::Manual,
                            invocation,
                            n_restarts: None,
                        },
                    ));
                }
                (events, false)
            }
            RELOADING => (vec![state(ActiveState::Reloading)], true),
            RELOADED => (vec![state(ActiveState::Active)], true),
            RESTART_SCHEDULED => {
                let n_restarts = fields.get("N_RESTARTS").and_then(|n| n.parse().ok());
                let restart = Event::logged(
                    unit,
                    at,
                    Transition::Restart {
                        trigger: Trigger::Auto,
                        invocation,
                        n_restarts,
                    },
                );
                (vec![restart, state(ActiveState::Activating)], false)
            }
            FAILURE_RESULT => {
                let result = fields
                    .get("UNIT_RESULT")
                    .cloned()
                    .unwrap_or_else(|| "unknown".into());
                (
                    vec![
                        Event::logged(
                            unit,
                            at,
                            Transition::RunFailed {
                                result: result.clone(),
                                invocation: invocation.clone(),
                            },
                        ),
                        state(ActiveState::Failed),
                        Event::logged(unit, at, Transition::RunEnded { result, invocation }),
                    ],
                    false,
                )
            }
            SUCCESS => (
                vec![
                    state(ActiveState::Inactive),
                    Event::logged(
                        unit,
                        at,
                        Transition::RunEnded {
                            result: "success".into(),
                            invocation,
                        },
                    ),
                ],
                false,
            ),
            _ => return Vec::new(),
        };
        seen.up = Some(up);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Ledger, Origin};

    /// Real records captured from systemd 252 in the sandbox: a unit crashing
    /// twice under `Restart=always`, a `systemctl restart`, a reload and stops
    /// of a stable unit, a oneshot, and a failing unit.
    const FIXTURE: &str = include_str!("../../tests/fixtures/journal-lifecycle.jsonl");

    fn records() -> Vec<(BTreeMap<String, String>, Usec)> {
        FIXTURE
            .lines()
            .map(|l| {
                let fields: BTreeMap<String, String> =
                    serde_json::from_str(l).expect("fixture line is a JSON object of strings");
                let at = fields["__REALTIME_TIMESTAMP"].parse().expect("timestamp");
                (fields, at)
            })
            .collect()
    }

    fn mapper() -> Mapper {
        let mut s = Selector::default();
        s.include("aitbc-*.service").expect("pattern");
        Mapper::new(s)
    }

    #[test]
    fn fixture_records_map_to_the_expected_events() {
        let mut m = mapper();
        let mut seen: Vec<(String, String)> = Vec::new();
        for (fields, at) in records() {
            for e in m.events(&fields, at) {
                assert_eq!(e.origin, Origin::Journal);
                assert_eq!(e.at, at);
                let what = match e.transition {
                    Transition::State { state, .. } => state.as_str().to_owned(),
                    Transition::NRestarts(n) => format!("nrestarts={n}"),
                    Transition::RunFailed { result, invocation } => {
                        assert!(invocation.is_some_and(|i| i.len() == 32));
                        format!("failed={result}")
                    }
                    Transition::Restart {
                        trigger,
                        n_restarts: Some(n),
                        ..
                    } => format!("restart={}/{n}", trigger.as_str()),
                    Transition::Restart { trigger, .. } => format!("restart={}", trigger.as_str()),
                    Transition::RunStarted { .. } => continue,
                    Transition::RunEnded { result, .. } => format!("ended={result}"),
                    other => panic!("unexpected {other:?}"),
                };
                seen.push((e.unit, what));
            }
        }
        let of = |unit: &str| -> Vec<&str> {
            seen.iter()
                .filter(|(u, _)| u == unit)
                .map(|(_, w)| w.as_str())
                .collect()
        };
        assert_eq!(
            of("aitbc-crash.service"),
            [
                "active",
                "failed=exit-code",
                "failed",
                "ended=exit-code",
                "restart=auto/1",
                "activating",
                "inactive",
                "active",
                "failed=exit-code",
                "failed",
                "ended=exit-code",
                "restart=auto/2",
                "activating",
                "inactive",
                "active",
                "deactivating",
                "inactive",
                "ended=success",
                "inactive",
            ]
        );
        assert_eq!(
            of("aitbc-stable.service"),
            [
                "active",
                "deactivating",
                "inactive",
                "ended=success",
                "inactive",
                "restart=manual",
                "active",
                "reloading",
                "active",
                "deactivating",
                "inactive",
                "ended=success",
                "inactive",
            ]
        );
        assert_eq!(
            of("aitbc-oneshot.service"),
            ["activating", "inactive", "ended=success"]
        );
        assert_eq!(
            of("aitbc-segv.service"),
            ["active", "failed=exit-code", "failed", "ended=exit-code"]
        );
    }

    #[test]
    fn fixture_replayed_into_a_ledger_counts_what_happened() {
        let mut m = mapper();
        let mut l = Ledger::new();
        let mut last = 0;
        for (fields, at) in records() {
            last = at;
            for e in m.events(&fields, at) {
                l.apply(e);
            }
        }
        let crash = l.unit("aitbc-crash.service", last).expect("crash unit");
        assert_eq!((crash.restarts_auto, crash.restarts_manual), (2, 0));
        assert_eq!(crash.failures.get("exit-code"), Some(&2));
        let stable = l.unit("aitbc-stable.service", last).expect("stable unit");
        assert_eq!((stable.restarts_auto, stable.restarts_manual), (0, 1));
        assert!(stable.failures.is_empty());
        assert!(!l.unit("aitbc-oneshot.service", last).expect("oneshot").up());
    }

    /// The journal source reads only [`FIELDS`]: they must be all the mapper needs.
    #[test]
    fn the_listed_fields_are_all_the_mapper_reads() {
        let (mut all, mut listed) = (mapper(), mapper());
        for (fields, at) in records() {
            let only: BTreeMap<String, String> = fields
                .iter()
                .filter(|(k, _)| FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(
                all.events(&fields, at),
                listed.events(&only, at),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn data_items_split_at_the_first_equals_sign() {
        let mut f = Fields::new();
        for item in [
            &b"UNIT=aitbc-x.service"[..],
            b"MESSAGE=a=b",
            b"EMPTY=",
            b"NO_EQUALS_SIGN",
            b"=no name",
            b"",
            b"BAD=\xff\xfe",
            b"UNIT=aitbc-y.service",
        ] {
            add_field(&mut f, item);
        }
        let got: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("BAD", "\u{fffd}\u{fffd}"),
                ("EMPTY", ""),
                ("MESSAGE", "a=b"),
                ("UNIT", "aitbc-y.service"),
            ]
        );
    }

    #[test]
    fn unwatched_and_foreign_records_are_ignored() {
        let mut m = mapper();
        let mut f = BTreeMap::new();
        f.insert("MESSAGE_ID".to_owned(), STARTED.to_owned());
        f.insert("UNIT".to_owned(), "ssh.service".to_owned());
        assert!(m.events(&f, 1).is_empty());
        f.insert("UNIT".to_owned(), "aitbc-x.service".to_owned());
        f.insert(
            "MESSAGE_ID".to_owned(),
            "00000000000000000000000000000000".to_owned(),
        );
        assert!(m.events(&f, 1).is_empty());
        f.remove("UNIT");
        assert!(m.events(&f, 1).is_empty());
    }

    fn record(items: &[(&str, &str)]) -> Fields {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn manual_restarts(m: &mut Mapper, records: &[Fields]) -> usize {
        records
            .iter()
            .flat_map(|f| m.events(f, 1))
            .filter(|e| {
                matches!(
                    e.transition,
                    Transition::Restart {
                        trigger: Trigger::Manual,
                        ..
                    }
                )
            })
            .count()
    }

    #[test]
    fn a_user_mapper_takes_only_its_users_records() {
        let mut m = Mapper::user(
            {
                let mut s = Selector::default();
                s.include("aitbc-*.service").expect("pattern");
                s
            },
            4242,
        );
        let failed = |unit_field: &str, uid: &str| {
            record(&[
                ("MESSAGE_ID", FAILURE_RESULT),
                (unit_field, "aitbc-x.service"),
                ("USER_INVOCATION_ID", "aa"),
                ("INVOCATION_ID", "system"),
                ("UNIT_RESULT", "signal"),
                ("_UID", uid),
            ])
        };
        // the system manager's record of a unit of the same name
        assert!(m.events(&failed("UNIT", "0"), 1).is_empty());
        // another user's manager
        assert!(m.events(&failed("USER_UNIT", "1000"), 1).is_empty());
        let events = m.events(&failed("USER_UNIT", "4242"), 1);
        assert_eq!(
            events[0].transition,
            Transition::RunFailed {
                result: "signal".into(),
                invocation: Some("aa".into()),
            }
        );
    }

    #[test]
    fn a_record_naming_no_unit_cannot_reach_a_user_managers_keys() {
        let mut m = Mapper::new({
            let mut s = Selector::default();
            s.include("*").expect("pattern");
            s
        });
        let forged = record(&[
            ("MESSAGE_ID", FAILURE_RESULT),
            ("UNIT", "demo.service/alice"),
            ("UNIT_RESULT", "signal"),
        ]);
        assert!(m.events(&forged, 1).is_empty());
    }

    /// `systemctl restart` of a unit still starting: systemd stops it
    /// ("Stopping…" of the job) but it was not up, so it is only a start.
    #[test]
    fn a_restart_job_is_a_restart_only_of_a_unit_that_was_up() {
        let starting = [
            record(&[
                ("MESSAGE_ID", STARTING),
                ("UNIT", "aitbc-x.service"),
                ("JOB_ID", "4"),
            ]),
            record(&[
                ("MESSAGE_ID", STOPPING),
                ("UNIT", "aitbc-x.service"),
                ("JOB_ID", "5"),
            ]),
            record(&[
                ("MESSAGE_ID", STOPPED),
                ("UNIT", "aitbc-x.service"),
                ("JOB_ID", "5"),
                ("JOB_TYPE", "restart"),
            ]),
        ];
        assert_eq!(manual_restarts(&mut mapper(), &starting), 0);
        let mut up = starting.clone();
        up[0].insert("MESSAGE_ID".into(), STARTED.into());
        assert_eq!(manual_restarts(&mut mapper(), &up), 1);
        // the "Stopping…" of another job (a stop the restart replaced)
        let mut other = up.clone();
        other[1].insert("JOB_ID".into(), "3".into());
        assert_eq!(manual_restarts(&mut mapper(), &other), 0);
    }
}
