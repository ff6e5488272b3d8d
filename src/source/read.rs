//! Reading units over the bus: which are watched, a unit's properties as the snapshot and a
//! new unit need them, the properties of the timers that trigger jobs, and
//! the method call both use.

use std::collections::HashMap;

use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, Message};

use super::changed::{from_zvalue, Changed};
use super::dbus::DbusError;
use super::properties::{UnitProperties, Value};
use super::signal::{MANAGER, PROPERTIES, SERVICE, TIMER, UNIT};
use super::signal_queue::SYSTEMD;
use super::timers::TimerProperties;
use super::wire::Position;
use crate::clock;
use crate::select::Selector;

pub(super) const MANAGER_PATH: &str = "/org/freedesktop/systemd1";

/// One entry of `ListUnitsByPatterns`: name, description, load state,
/// active state, sub state, following, object path, job id, job type, job path.
pub(super) type ListedUnit = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

/// Whether a unit's `LoadState` rules it out: a masked unit was switched
/// off on purpose, a not-found one does not exist; neither is a service that
/// is down.
pub(super) fn switched_off(load_state: &str) -> bool {
    matches!(load_state, "masked" | "not-found")
}

/// How many units the sampler reads at once.
pub(super) const READ_AHEAD: usize = 32;

/// How many units the snapshot reads at once, each with up to 14 `Get`s in
/// flight: dbus-daemon answers a connection's calls beyond 128 pending
/// (`max_replies_per_connection`) with an error.
pub(super) const SNAPSHOT_AHEAD: usize = 8;

/// A watched unit found by [`list_watched`]: its path, whether its
/// `LoadState` is still to be checked (a unit loaded by name was not
/// listed), and, for one `ListUnitsByPatterns` gave, what the list showed.
pub(super) struct Found {
    pub path: OwnedObjectPath,
    pub check_load: bool,
    pub listed: Option<Listed>,
}

/// The states a unit had in the list, when (on the monotonic clock) the
/// list was asked for, and the timers that trigger it: a unit whose
/// `StateChangeTimestampMonotonic` is older still had that state when its
/// other properties were read, so they are not asked for again.
pub(super) struct Listed {
    pub active_state: String,
    pub sub_state: String,
    pub at: crate::ledger::Usec,
    /// The timers whose `Triggers` name the unit: its `TriggeredBy`, as far
    /// as accounting reads it ([`UnitProperties::timer`]).
    pub triggered_by: Vec<String>,
}

/// A unit's properties as read at `now`, and the receive positions of the replies.
pub(super) struct ReadUnit {
    pub now: crate::ledger::Usec,
    /// The clock frame `now` and the timestamps are in.
    pub frame: i64,
    pub props: UnitProperties,
    pub read_at: Vec<(&'static str, Position)>,
}

/// The watched units of the manager on `conn`, by name: those loaded that
/// `selector` matches and are neither masked nor missing, with the state the
/// list showed, and those with a unit file (not a template's) that match,
/// loaded so that a stopped one is accounted as down, whose `LoadState` is
/// still to be checked.
pub(super) async fn list_watched(
    conn: &Connection,
    selector: &Selector,
) -> Result<HashMap<String, Found>, DbusError> {
    let patterns = selector.include_patterns();
    // Taken before the list is asked for: systemd's state timestamps are on
    // the same clock (as [`UnitProperties::rebase`] has it too).
    let at = clock::monotonic();
    let listed = list_units(conn, &patterns).await?;
    let mut timers = timers_of(conn).await?;
    let mut found: HashMap<String, Found> = listed
        .into_iter()
        .filter(|u| selector.matches(&u.0) && !switched_off(&u.2))
        .map(|u| {
            let listed = Listed {
                active_state: u.3,
                sub_state: u.4,
                at,
                triggered_by: timers.remove(&u.0).unwrap_or_default(),
            };
            let found = Found {
                path: u.6,
                check_load: false,
                listed: Some(listed),
            };
            (u.0, found)
        })
        .collect();
    // Units with a unit file but not loaded right now (e.g. stopped and
    // garbage-collected) are loaded so they are accounted as down.
    let files: Vec<(String, String)> = call(
        conn,
        MANAGER_PATH,
        MANAGER,
        "ListUnitFilesByPatterns",
        &(Vec::<String>::new(), &patterns),
    )
    .await?
    .body()
    .deserialize()?;
    for (path, file_state) in files {
        if file_state.starts_with("masked") {
            continue;
        }
        let Some(name) = path.rsplit('/').next().map(str::to_owned) else {
            continue;
        };
        if found.contains_key(&name) || name.contains("@.") || !selector.matches(&name) {
            continue;
        }
        match call(conn, MANAGER_PATH, MANAGER, "LoadUnit", &(&name,)).await {
            Ok(reply) => {
                let object: OwnedObjectPath = reply.body().deserialize()?;
                let found_here = Found {
                    path: object,
                    check_load: true,
                    listed: None,
                };
                found.insert(name, found_here);
            }
            Err(e) => tracing::debug!(unit = %name, error = %e, "cannot load unit"),
        }
    }
    Ok(found)
}

/// The loaded units whose names match `patterns`, in any state
/// (`ListUnitsByPatterns`).
pub(super) async fn list_units<P: AsRef<str>>(
    conn: &Connection,
    patterns: &[P],
) -> Result<Vec<ListedUnit>, DbusError> {
    let patterns: Vec<&str> = patterns.iter().map(AsRef::as_ref).collect();
    let reply = call(
        conn,
        MANAGER_PATH,
        MANAGER,
        "ListUnitsByPatterns",
        &(Vec::<String>::new(), patterns),
    )
    .await?;
    Ok(reply.body().deserialize()?)
}

/// The units the loaded timers trigger, each with its timers: one `Get` of
/// `Triggers` a timer rather than one of `TriggeredBy` a unit.
async fn timers_of(conn: &Connection) -> Result<HashMap<String, Vec<String>>, DbusError> {
    let listed = list_units(conn, &["*.timer"]).await?;
    let mut timers: HashMap<String, Vec<String>> = HashMap::new();
    for timer in listed.into_iter().filter(|u| !switched_off(&u.2)) {
        for unit in read_triggers(conn, &timer.6).await? {
            timers.entry(unit).or_default().push(timer.0.clone());
        }
    }
    Ok(timers)
}

/// The `Unit` properties the snapshot reads, one `Get` each. Its `GetAll`
/// would return about a hundred, and some cost systemd dearly to compute
/// (`NeedDaemonReload` looks for drop-ins on disk): about 2 ms of systemd's
/// time a unit against some 20 µs for one `Get`. The timestamps are read on
/// the monotonic clock only: that is the one unitwatch places them by
/// ([`UnitProperties::rebase`]), and systemd takes both clocks of a
/// timestamp at once, so the wall-clock one is 0 exactly when the monotonic
/// one is. Each `Get` costs dbus-daemon some 65 µs on a 2-core machine, the
/// most of a snapshot's time.
const UNIT_READ: [&str; 9] = [
    "ActiveState",
    "SubState",
    "InvocationID",
    "TriggeredBy",
    "InactiveExitTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
    "ActiveExitTimestampMonotonic",
    "InactiveEnterTimestampMonotonic",
    "StateChangeTimestampMonotonic",
];

/// How often a unit is read again when it changed state while being read.
const TORN_RETRIES: usize = 3;

/// Reads a unit's properties; `None` if it cannot be read, is masked or does
/// not exist. `check_load`: whether its `LoadState` is still to be checked
/// (a unit listed by `ListUnitsByPatterns` was already). `listed`: the
/// state the list showed, taken unless the unit changed since.
pub(super) async fn read_unit(
    conn: &Connection,
    name: &str,
    path: &OwnedObjectPath,
    check_load: bool,
    listed: Option<Listed>,
) -> Result<Option<ReadUnit>, DbusError> {
    // Asked alone first: for a unit that does not exist (a name a pattern
    // matched as systemd loaded it for someone else's question) one call
    // says so, rather than all of them.
    if check_load {
        let load = match call(conn, path.as_str(), PROPERTIES, "Get", &(UNIT, "LoadState")).await {
            Ok(reply) => reply.body().deserialize::<OwnedValue>()?,
            Err(e) => {
                tracing::debug!(unit = %name, error = %e, "cannot read unit properties");
                return Ok(None);
            }
        };
        if let Some(Value::Str(load)) = from_zvalue(&load) {
            if switched_off(&load) {
                return Ok(None);
            }
        }
    }
    let service = name.ends_with(".service");
    if let Some(listed) = listed {
        // The state's timestamp read last: if it is older than the list,
        // nothing changed from the list to the end of the read.
        let wanted = wanted(service, &LISTED_SKIP);
        let Some((mut read, state_change)) = read_once(conn, name, path, &wanted).await? else {
            return Ok(None);
        };
        // 0 is a unit loaded anew since the list (systemd unloaded the
        // stopped unit and a `Get` loaded it again, with nothing kept): the
        // list's state is not its own.
        if state_change.iter().all(|t| *t != 0 && *t < listed.at) {
            // `RemainAfterExit` tells only a oneshot's kind
            // ([`UnitProperties::is_job`]); asked for only then.
            if read.props.service_type.as_deref() == Some("oneshot") {
                let remain = (SERVICE, "RemainAfterExit");
                let Some((more, _)) = read_once(conn, name, path, &[remain]).await? else {
                    return Ok(None);
                };
                read.props.remain_after_exit = more.props.remain_after_exit;
            }
            // Through `set`, as a `Get` would have given them (it sorts
            // `TriggeredBy`, a set in systemd).
            read.props
                .set("ActiveState", Value::Str(listed.active_state));
            read.props.set("SubState", Value::Str(listed.sub_state));
            read.props
                .set("TriggeredBy", Value::Strs(listed.triggered_by));
            read.props.rebase(read.frame);
            return Ok(Some(read));
        }
        tracing::debug!(unit = %name, "unit changed since it was listed; reading its state");
    }
    // The state's timestamp read first and again last: the `Get`s are sent
    // at once but systemd answers them one by one and may change the unit in
    // between; if that moved, the read is torn and taken again.
    let mut wanted = wanted(service, &[]);
    wanted.insert(0, (UNIT, STATE_CHANGE));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some((mut read, state_change)) = read_once(conn, name, path, &wanted).await? else {
            return Ok(None);
        };
        // After a few tries the last read stands: the signals of the
        // changes that tore it follow and are applied on top.
        if state_change.windows(2).all(|w| w[0] == w[1]) || attempt == TORN_RETRIES {
            read.props.rebase(read.frame);
            return Ok(Some(read));
        }
        tracing::debug!(unit = %name, "unit changed while read; reading it again");
    }
}

const STATE_CHANGE: &str = "StateChangeTimestampMonotonic";

/// What a listed unit's read does not ask: the list, the timers and its
/// type tell, and its state's timestamp is read last.
const LISTED_SKIP: [&str; 5] = [
    "ActiveState",
    "SubState",
    "TriggeredBy",
    "RemainAfterExit",
    STATE_CHANGE,
];

/// The `Get`s of a unit's read, but those of `skip`, with
/// `StateChangeTimestampMonotonic` last.
fn wanted(service: bool, skip: &[&str]) -> Vec<(&'static str, &'static str)> {
    let mut wanted: Vec<(&'static str, &'static str)> = UNIT_READ
        .iter()
        .filter(|p| **p != STATE_CHANGE && !skip.contains(p))
        .map(|p| (UNIT, *p))
        .collect();
    if service {
        let own = UnitProperties::SERVICE.iter().filter(|p| !skip.contains(p));
        wanted.extend(own.map(|p| (SERVICE, *p)));
    }
    wanted.push((UNIT, STATE_CHANGE));
    wanted
}

/// Sends the `Get`s of `wanted` at once and takes in the replies, not yet
/// rebased; with every `StateChangeTimestampMonotonic` read, in order.
/// `None` if one fails.
async fn read_once(
    conn: &Connection,
    name: &str,
    path: &OwnedObjectPath,
    wanted: &[(&'static str, &'static str)],
) -> Result<Option<(ReadUnit, Vec<u64>)>, DbusError> {
    let (now, frame) = clock::now_in_frame();
    let replies =
        futures_util::future::join_all(wanted.iter().map(|(interface, property)| async move {
            call(
                conn,
                path.as_str(),
                PROPERTIES,
                "Get",
                &(*interface, *property),
            )
            .await
        }))
        .await;
    let mut props = UnitProperties::default();
    let mut read_at: Vec<(&'static str, Position)> = Vec::new();
    let mut state_change = Vec::with_capacity(2);
    for ((interface, property), reply) in wanted.iter().zip(replies) {
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(unit = %name, error = %e, "cannot read unit properties");
                return Ok(None);
            }
        };
        // Signals received before the first reply of an interface are
        // older than anything read.
        if !read_at.iter().any(|(i, _)| i == interface) {
            read_at.push((interface, Position::of(&reply)));
        }
        let v: OwnedValue = reply.body().deserialize()?;
        let Some(v) = from_zvalue(&v) else { continue };
        if let (STATE_CHANGE, Value::U64(t)) = (*property, &v) {
            state_change.push(*t);
        }
        props.set(property, v);
    }
    let read = ReadUnit {
        now,
        frame,
        props,
        read_at,
    };
    Ok(Some((read, state_change)))
}

pub(super) fn merge(props: &mut UnitProperties, values: Changed, frame: i64) {
    for (name, v) in values.into_values() {
        props.set(name, v);
    }
    props.rebase(frame);
}

pub(super) async fn call<B>(
    conn: &Connection,
    path: &str,
    interface: &str,
    method: &str,
    body: &B,
) -> zbus::Result<Message>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(Some(SYSTEMD), path, Some(interface), method, body)
        .await
}

/// Reads a timer's properties; `None` if it cannot be loaded or read.
pub(super) async fn read_timer(
    conn: &Connection,
    name: &str,
) -> Result<Option<(OwnedObjectPath, TimerProperties)>, DbusError> {
    let path: OwnedObjectPath = match call(conn, MANAGER_PATH, MANAGER, "LoadUnit", &(name,)).await
    {
        Ok(reply) => reply.body().deserialize()?,
        Err(e) => {
            tracing::debug!(timer = %name, error = %e, "cannot load timer");
            return Ok(None);
        }
    };
    let all: Changed = match call(conn, path.as_str(), PROPERTIES, "GetAll", &(TIMER,)).await {
        Ok(reply) => reply.body().deserialize()?,
        Err(e) => {
            tracing::debug!(timer = %name, error = %e, "cannot read timer properties");
            return Ok(None);
        }
    };
    let mut props = TimerProperties::default();
    props.merge(&all);
    Ok(Some((path, props)))
}

/// The units a unit triggers (`Triggers`: a timer's service); none if it
/// cannot be read.
pub(super) async fn read_triggers(
    conn: &Connection,
    path: &OwnedObjectPath,
) -> Result<Vec<String>, DbusError> {
    match call(conn, path.as_str(), PROPERTIES, "Get", &(UNIT, "Triggers")).await {
        Ok(reply) => {
            let v: OwnedValue = reply.body().deserialize()?;
            Ok(match from_zvalue(&v) {
                Some(Value::Strs(units)) => units,
                _ => Vec::new(),
            })
        }
        Err(e) => {
            tracing::debug!(unit = %path.as_str(), error = %e, "cannot read what a timer triggers");
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_unit_is_not_asked_its_state_and_its_state_change_is_read_last() {
        let listed = wanted(true, &LISTED_SKIP);
        let names: Vec<&str> = listed.iter().map(|(_, p)| *p).collect();
        assert!(!names.contains(&"ActiveState") && !names.contains(&"SubState"));
        assert!(!names.contains(&"TriggeredBy"), "the timers' Triggers say");
        assert!(
            !names.contains(&"RemainAfterExit"),
            "asked of a oneshot only"
        );
        assert_eq!(names.iter().filter(|p| **p == STATE_CHANGE).count(), 1);
        assert_eq!(names.last(), Some(&STATE_CHANGE));
        assert!(names.contains(&"NRestarts"), "a service's own properties");
    }

    #[test]
    fn a_unit_read_in_full_is_asked_its_state() {
        let full = wanted(false, &[]);
        let names: Vec<&str> = full.iter().map(|(_, p)| *p).collect();
        assert!(names.contains(&"ActiveState") && names.contains(&"SubState"));
        assert!(!names.contains(&"NRestarts"), "not a service");
        assert_eq!(names.last(), Some(&STATE_CHANGE));
    }
}
