//! Journal records as the reader sees them — data items `FIELD=value` split
//! by `add_field`, in any order, with out-of-order and repeated timestamps and
//! boot changes — through `Mapper::events` into a `Ledger`, as
//! `source/journal.rs` does: nothing panics (arithmetic overflow included, the
//! fuzz build checks it), and every event is about the record's watched unit
//! at the record's time. The records may start with the real ones of
//! `tests/fixtures/journal-lifecycle.jsonl`, so the fuzzed ones meet units in
//! every state systemd leaves them in.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use unitwatch::ledger::{Ledger, Origin, Usec};
use unitwatch::select::Selector;
use unitwatch::source::journal_record::{add_field, Fields, Mapper, MESSAGE_IDS};

/// libsystemd hands out realtime timestamps below 2^55 (`VALID_REALTIME`);
/// the reader uses 0 when it cannot read one.
const MAX_REALTIME: Usec = (1 << 55) - 1;
/// 2026-11-25, where relative timestamps start.
const BASE: Usec = 1_795_565_797_220_034;

/// Real records captured from systemd 252 (see `journal_record.rs`' tests).
const FIXTURE: &str = include_str!("../../tests/fixtures/journal-lifecycle.jsonl");

/// The fixture's records and their times, parsed once.
fn fixture() -> &'static [(Fields, Usec)] {
    static RECORDS: OnceLock<Vec<(Fields, Usec)>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        FIXTURE
            .lines()
            .filter_map(|line| serde_json::from_str::<Fields>(line).ok())
            .map(|fields| {
                let at = fields
                    .get("__REALTIME_TIMESTAMP")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                (fields, at)
            })
            .collect()
    })
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// How many of the fixture's records come first.
    replay: u8,
    /// A pattern watched besides `aitbc-*.service`, or excluded.
    pattern: Option<(bool, String)>,
    /// Read as a user manager's records (of UID 4242), not PID 1's.
    user: bool,
    records: Vec<Record>,
    /// When the ledger is read at the end.
    now: When,
}

#[derive(Arbitrary, Debug)]
struct Record {
    at: When,
    items: Vec<Item>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum When {
    Later(u32),
    Earlier(u32),
    Same,
    Unreadable,
    At(u64),
}

#[derive(Arbitrary, Debug)]
enum Item {
    Field(Key, Value),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Key {
    MessageId,
    Unit,
    UserUnit,
    InvocationId,
    UserInvocationId,
    JobId,
    Uid,
    JobType,
    JobResult,
    NRestarts,
    UnitResult,
    BootId,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Known(u8),
    Number(i64),
    Text(String),
    Bytes(Vec<u8>),
}

const UNITS: &[&str] = &[
    "aitbc-crash.service",
    "aitbc-stable.service",
    "aitbc-*.service",
    "ssh.service",
    "",
];
const INVOCATIONS: &[&str] = &[
    "f94a48941bce46ada2064b4dbd08f0e4",
    "efc562add39242418b518a6dd2ae4807",
    "",
];
const JOB_IDS: &[&str] = &["4", "5", "146", ""];
const UIDS: &[&str] = &["4242", "0", "1000"];
const JOB_TYPES: &[&str] = &[
    "start",
    "stop",
    "restart",
    "reload",
    "try-restart",
    "reload-or-restart",
    "verify-active",
];
const JOB_RESULTS: &[&str] = &["done", "failed", "canceled", "timeout", "dependency"];
const N_RESTARTS: &[&str] = &["0", "1", "2", "4294967295", "4294967296", "-1", " 1", "+1"];
const UNIT_RESULTS: &[&str] = &[
    "success",
    "exit-code",
    "signal",
    "core-dump",
    "timeout",
    "watchdog",
    "oom-kill",
];
const BOOTS: &[&str] = &[
    "2414d7e4c21844fc914f92cbc4ba25d5",
    "0c1f4b1e3d2a4f5e8a7b6c5d4e3f2a1b",
];

impl Key {
    fn name(&self) -> &str {
        match self {
            Key::MessageId => "MESSAGE_ID",
            Key::Unit => "UNIT",
            Key::UserUnit => "USER_UNIT",
            Key::InvocationId => "INVOCATION_ID",
            Key::UserInvocationId => "USER_INVOCATION_ID",
            Key::JobId => "JOB_ID",
            Key::Uid => "_UID",
            Key::JobType => "JOB_TYPE",
            Key::JobResult => "JOB_RESULT",
            Key::NRestarts => "N_RESTARTS",
            Key::UnitResult => "UNIT_RESULT",
            Key::BootId => "_BOOT_ID",
            Key::Other(name) => name,
        }
    }

    fn known(&self) -> &[&str] {
        match self {
            Key::MessageId => &MESSAGE_IDS,
            Key::Unit | Key::UserUnit => UNITS,
            Key::InvocationId | Key::UserInvocationId => INVOCATIONS,
            Key::JobId => JOB_IDS,
            Key::Uid => UIDS,
            Key::JobType => JOB_TYPES,
            Key::JobResult => JOB_RESULTS,
            Key::NRestarts => N_RESTARTS,
            Key::UnitResult => UNIT_RESULTS,
            Key::BootId => BOOTS,
            Key::Other(_) => &[],
        }
    }
}

impl Item {
    /// The data item as the journal stores it.
    fn data(&self) -> Vec<u8> {
        match self {
            Item::Raw(bytes) => bytes.clone(),
            Item::Field(key, value) => {
                let mut data = key.name().as_bytes().to_vec();
                data.push(b'=');
                match value {
                    Value::Known(i) => {
                        let known = key.known();
                        if !known.is_empty() {
                            data.extend_from_slice(known[usize::from(*i) % known.len()].as_bytes());
                        }
                    }
                    Value::Number(n) => data.extend_from_slice(n.to_string().as_bytes()),
                    Value::Text(s) => data.extend_from_slice(s.as_bytes()),
                    Value::Bytes(b) => data.extend_from_slice(b),
                }
                data
            }
        }
    }
}

impl When {
    fn after(self, last: Usec) -> Usec {
        match self {
            When::Later(d) => last.saturating_add(Usec::from(d)).min(MAX_REALTIME),
            When::Earlier(d) => last.saturating_sub(Usec::from(d)),
            When::Same => last,
            When::Unreadable => 0,
            When::At(t) => t % (MAX_REALTIME + 1),
        }
    }
}

fuzz_target!(|input: Input| {
    let mut selector = Selector::default();
    if selector.include("aitbc-*.service").is_err() {
        return;
    }
    if let Some((exclude, pattern)) = &input.pattern {
        let _ = if *exclude {
            selector.exclude(pattern)
        } else {
            selector.include(pattern)
        };
    }
    let (mut mapper, unit_field) = if input.user {
        (Mapper::user(selector.clone(), 4242), "USER_UNIT")
    } else {
        (Mapper::new(selector.clone()), "UNIT")
    };
    let mut ledger = Ledger::new();
    let replayed = &fixture()[..fixture().len().min(usize::from(input.replay))];
    let mut previous = replayed.iter().map(|(_, at)| *at).max().unwrap_or(BASE);
    let fuzzed = input.records.iter().map(|record| {
        let at = record.at.after(previous);
        previous = at;
        let mut fields = Fields::new();
        for item in &record.items {
            let data = item.data();
            add_field(&mut fields, &data);
            if let Some(eq) = data.iter().position(|b| *b == b'=') {
                if eq > 0 {
                    let name = String::from_utf8_lossy(&data[..eq]);
                    assert!(fields.contains_key(name.as_ref()), "{name} lost");
                }
            }
        }
        (fields, at)
    });
    let (mut last_at, mut last_boot) = (0, None::<String>);
    for (fields, at) in replayed.iter().cloned().chain(fuzzed) {
        // As the reader does: a new boot means the host went down after the
        // last record of the previous one.
        if let Some(boot) = fields.get("_BOOT_ID") {
            if last_boot.as_ref().is_some_and(|b| b != boot) && last_at > 0 {
                ledger.host_down(last_at);
            }
            last_boot = Some(boot.clone());
        }
        last_at = last_at.max(at);
        let events = mapper.events(&fields, at);
        if !events.is_empty() {
            let unit = fields.get(unit_field);
            assert!(unit.is_some_and(|u| selector.matches(u)), "{fields:?}");
        }
        for event in events {
            assert_eq!(event.origin, Origin::Journal);
            assert_eq!(event.at, at);
            assert!(selector.matches(&event.unit), "{event:?}");
            ledger.apply(event);
        }
    }
    let now = input.now.after(last_at);
    for unit in ledger.view(now) {
        for seconds in [unit.uptime_seconds, unit.downtime_seconds] {
            assert!(
                seconds.is_finite() && seconds >= 0.0,
                "{}: {seconds}",
                unit.unit
            );
        }
    }
});
