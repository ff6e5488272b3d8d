//! Reading units over the bus: which are watched, a unit's properties as the snapshot and a
//! new unit need them, the properties of the timers that trigger jobs, and
//! the method call both use.

use std::collections::HashMap;

use zbus::message::Sequence;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, Message};

use super::dbus::DbusError;
use super::properties::{UnitProperties, Value};
use super::signal::{to_value, MANAGER, PROPERTIES, SERVICE, TIMER, UNIT};
use super::signal_queue::SYSTEMD;
use super::timers::TimerProperties;
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

/// How many units the snapshot reads at once.
pub(super) const READ_AHEAD: usize = 32;

/// A unit's properties as read at `now`, and the receive positions of the replies.
pub(super) struct ReadUnit {
    pub now: crate::ledger::Usec,
    /// The clock frame `now` and the timestamps are in.
    pub frame: i64,
    pub props: UnitProperties,
    pub read_at: Vec<(&'static str, Sequence)>,
}

/// The watched units of the manager on `conn`, by name: those loaded that
/// `selector` matches and are neither masked nor missing, and those with a
/// unit file (not a template's) that match, loaded so that a stopped one is
/// accounted as down.
pub(super) async fn list_watched(
    conn: &Connection,
    selector: &Selector,
) -> Result<HashMap<String, OwnedObjectPath>, DbusError> {
    let patterns = selector.include_patterns();
    let listed: Vec<ListedUnit> = call(
        conn,
        MANAGER_PATH,
        MANAGER,
        "ListUnitsByPatterns",
        &(Vec::<String>::new(), &patterns),
    )
    .await?
    .body()
    .deserialize()?;
    let mut found: HashMap<String, OwnedObjectPath> = listed
        .into_iter()
        .filter(|u| selector.matches(&u.0) && !switched_off(&u.2))
        .map(|u| (u.0, u.6))
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
                found.insert(name, object);
            }
            Err(e) => tracing::debug!(unit = %name, error = %e, "cannot load unit"),
        }
    }
    Ok(found)
}

/// Reads a unit's properties; `None` if it cannot be read, is masked or does not exist.
pub(super) async fn read_unit(
    conn: &Connection,
    name: &str,
    path: &OwnedObjectPath,
) -> Result<Option<ReadUnit>, DbusError> {
    let (now, frame) = clock::now_in_frame();
    let mut props = UnitProperties::default();
    let mut read_at = Vec::new();
    let mut interfaces = vec![UNIT];
    if name.ends_with(".service") {
        interfaces.push(SERVICE);
    }
    for interface in interfaces {
        if interface == SERVICE {
            for property in UnitProperties::SERVICE {
                match call(conn, path.as_str(), PROPERTIES, "Get", &(SERVICE, property)).await {
                    Ok(reply) => {
                        read_at.push((SERVICE, reply.recv_position()));
                        let v: OwnedValue = reply.body().deserialize()?;
                        if let Some(v) = to_value(&v) {
                            props.set(property, v);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(unit = %name, error = %e, "cannot read unit properties");
                        return Ok(None);
                    }
                }
            }
            continue;
        }
        let all: HashMap<String, OwnedValue> =
            match call(conn, path.as_str(), PROPERTIES, "GetAll", &(interface,)).await {
                Ok(reply) => {
                    read_at.push((interface, reply.recv_position()));
                    reply.body().deserialize()?
                }
                Err(e) => {
                    tracing::debug!(unit = %name, error = %e, "cannot read unit properties");
                    return Ok(None);
                }
            };
        if let Some(Value::Str(load)) = all.get("LoadState").and_then(to_value) {
            if switched_off(&load) {
                return Ok(None);
            }
        }
        merge(&mut props, &all, frame);
    }
    Ok(Some(ReadUnit {
        now,
        frame,
        props,
        read_at,
    }))
}

pub(super) fn merge(props: &mut UnitProperties, values: &HashMap<String, OwnedValue>, frame: i64) {
    for name in UnitProperties::NAMES {
        if let Some(v) = values.get(name).and_then(to_value) {
            props.set(name, v);
        }
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
    let all: HashMap<String, OwnedValue> =
        match call(conn, path.as_str(), PROPERTIES, "GetAll", &(TIMER,)).await {
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
            Ok(match to_value(&v) {
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
