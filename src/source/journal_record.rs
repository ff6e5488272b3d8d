//! What the service manager's own journal records about a unit mean, as
//! ledger events. Pure: fed the fields of one record at a time.
//!
//! The records are the catalog's unit lifecycle messages, written by PID 1
//! (or the user manager) with `UNIT=` (`USER_UNIT=`), `INVOCATION_ID=`,
//! `JOB_TYPE=`, `JOB_RESULT=`, `UNIT_RESULT=` and `N_RESTARTS=`:
//!
//! | MESSAGE_ID | record | event |
//! |---|---|---|
//! | `7d4958e8…` | Starting… | `activating` |
//! | `39f53479…` | Started / Finished | `active` (not after a oneshot's "Deactivated successfully") |
//! | `de5b426a…` | Stopping… | `deactivating` |
//! | `9d1aaa27…` | Stopped | `inactive`; with `JOB_TYPE=restart` a manual restart, unless right after "Scheduled restart job" (systemd's own restart logs the same) |
//! | `d34d037f…` / `7b05ebc6…` | Reloading… / Reloaded | `reloading` / `active` |
//! | `5eb03494…` | Scheduled restart job | `NRestarts` = `N_RESTARTS`, `activating` |
//! | `d9b373ed…` | Failed with result … | a failure by `UNIT_RESULT`, `failed` |
//! | `7ad2d189…` | Deactivated successfully | `inactive` |

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
pub const FIELDS: [&str; 7] = [
    "MESSAGE_ID",
    "UNIT",
    "USER_UNIT",
    "INVOCATION_ID",
    "JOB_TYPE",
    "N_RESTARTS",
    "UNIT_RESULT",
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

/// Turns records into events, remembering per unit the last record seen.
#[derive(Debug)]
pub struct Mapper {
    selector: Selector,
    /// Unit → (MESSAGE_ID, INVOCATION_ID) of its last record.
    last: HashMap<String, (String, Option<String>)>,
}

impl Mapper {
    pub fn new(selector: Selector) -> Mapper {
        Mapper {
            selector,
            last: HashMap::new(),
        }
    }

    /// The events of one record written at `at`; none for records of
    /// unwatched units or of no interest.
    pub fn events(&mut self, fields: &BTreeMap<String, String>, at: Usec) -> Vec<Event> {
        let Some(unit) = fields.get("UNIT").or_else(|| fields.get("USER_UNIT")) else {
            return Vec::new();
        };
        if !self.selector.matches(unit) {
            return Vec::new();
        }
        let Some(id) = fields.get("MESSAGE_ID") else {
            return Vec::new();
        };
        let invocation = fields.get("INVOCATION_ID").cloned();
        let previous = self
            .last
            .insert(unit.clone(), (id.clone(), invocation.clone()));
        let previous_id = previous.as_ref().map(|(id, _)| id.as_str());
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
        match id.as_str() {
            STARTING => vec![state(ActiveState::Activating)],
            STARTED => {
                // A oneshot logs "Deactivated successfully" before "Finished".
                let finished_oneshot = matches!(&previous,
                    Some((prev, inv)) if prev == SUCCESS && *inv == invocation);
                if finished_oneshot {
                    Vec::new()
                } else {
                    vec![state(ActiveState::Active)]
                }
            }
            STOPPING => vec![state(ActiveState::Deactivating)],
            STOPPED => {
                let mut events = vec![state(ActiveState::Inactive)];
                let restart_job = fields.get("JOB_TYPE").map(String::as_str) == Some("restart");
                if restart_job && previous_id != Some(RESTART_SCHEDULED) {
                    events.push(Event::logged(
                        unit,
                        at,
                        Transition::Restart {
                            trigger: Trigger::Manual,
                            invocation,
                        },
                    ));
                }
                events
            }
            RELOADING => vec![state(ActiveState::Reloading)],
            RELOADED => vec![state(ActiveState::Active)],
            RESTART_SCHEDULED => {
                let mut events = Vec::new();
                if let Some(n) = fields.get("N_RESTARTS").and_then(|n| n.parse().ok()) {
                    events.push(Event::logged(unit, at, Transition::NRestarts(n)));
                }
                events.push(state(ActiveState::Activating));
                events
            }
            FAILURE_RESULT => {
                let result = fields
                    .get("UNIT_RESULT")
                    .cloned()
                    .unwrap_or_else(|| "unknown".into());
                vec![
                    Event::logged(unit, at, Transition::RunFailed { result, invocation }),
                    state(ActiveState::Failed),
                ]
            }
            SUCCESS => vec![state(ActiveState::Inactive)],
            _ => Vec::new(),
        }
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
                    Transition::Restart { trigger, .. } => format!("restart={}", trigger.as_str()),
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
                "nrestarts=1",
                "activating",
                "inactive",
                "active",
                "failed=exit-code",
                "failed",
                "nrestarts=2",
                "activating",
                "inactive",
                "active",
                "deactivating",
                "inactive",
                "inactive",
            ]
        );
        assert_eq!(
            of("aitbc-stable.service"),
            [
                "active",
                "deactivating",
                "inactive",
                "inactive",
                "restart=manual",
                "active",
                "reloading",
                "active",
                "deactivating",
                "inactive",
                "inactive",
            ]
        );
        assert_eq!(of("aitbc-oneshot.service"), ["activating", "inactive"]);
        assert_eq!(
            of("aitbc-segv.service"),
            ["active", "failed=exit-code", "failed"]
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
}
