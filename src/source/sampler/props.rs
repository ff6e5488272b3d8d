//! What the sampler reads over D-Bus: a unit's `ControlGroup`,
//! `*Accounting=` and `WatchdogUSec` (what rarely changes), a socket's
//! connections, every loaded unit by `ActiveState`, and the pieces they are
//! read with. A property systemd does not give is `None`, never a default.

use std::collections::BTreeMap;
use std::time::Instant;

use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::Connection;

use super::super::cgroup::Want;
use super::super::read::{call, ListedUnit, MANAGER_PATH};
use super::super::signal::{MANAGER, PROPERTIES, SERVICE};
use crate::sample::Socket;

pub(super) const SOCKET: &str = "org.freedesktop.systemd1.Socket";

/// What rarely changes about a unit.
#[derive(Debug, Clone)]
pub(super) struct Static {
    pub(super) path: OwnedObjectPath,
    pub(super) cgroup: Option<String>,
    pub(super) accounting: Want,
    pub(super) watchdog_usec: u64,
    pub(super) read_at: Instant,
    /// A daemon-reload since it was read.
    pub(super) stale: bool,
    /// Its cgroup could not be read at the last round.
    pub(super) gone: bool,
    /// CPU time at the last round, and when it was read.
    pub(super) cpu: Option<(u64, Instant)>,
}

/// The interface of a unit's type that has its `ControlGroup`.
pub(super) fn cgroup_interface(unit: &str) -> Option<&'static str> {
    let (_, suffix) = unit.rsplit_once('.')?;
    Some(match suffix {
        "service" => SERVICE,
        "socket" => SOCKET,
        "scope" => "org.freedesktop.systemd1.Scope",
        "slice" => "org.freedesktop.systemd1.Slice",
        "mount" => "org.freedesktop.systemd1.Mount",
        "swap" => "org.freedesktop.systemd1.Swap",
        _ => return None,
    })
}

/// One property, or `None` if systemd does not have it.
pub(super) async fn get(
    conn: &Connection,
    path: &str,
    interface: &str,
    name: &str,
) -> Option<OwnedValue> {
    let reply = call(conn, path, PROPERTIES, "Get", &(interface, name))
        .await
        .ok()?;
    reply.body().deserialize().ok()
}

pub(super) fn as_u64(v: Option<OwnedValue>) -> Option<u64> {
    match v.as_deref()? {
        zbus::zvariant::Value::U64(n) => Some(*n),
        zbus::zvariant::Value::U32(n) => Some(u64::from(*n)),
        _ => None,
    }
}

pub(super) fn as_bool(v: Option<OwnedValue>) -> Option<bool> {
    match v.as_deref()? {
        zbus::zvariant::Value::Bool(b) => Some(*b),
        _ => None,
    }
}

pub(super) fn as_str(v: Option<OwnedValue>) -> Option<String> {
    match v.as_deref()? {
        zbus::zvariant::Value::Str(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// systemd's "no value" for a timestamp or a limit.
pub(super) fn set(n: Option<u64>) -> Option<u64> {
    n.filter(|&n| n != 0 && n != u64::MAX)
}

/// The units systemd has loaded (`ListUnits`); `None` if it did not answer.
pub(super) async fn list_units(conn: &Connection) -> Option<Vec<ListedUnit>> {
    let reply = call(conn, MANAGER_PATH, MANAGER, "ListUnits", &())
        .await
        .ok()?;
    reply.body().deserialize().ok()
}

/// Loaded units by `ActiveState`.
pub(super) fn unit_counts(listed: &[ListedUnit]) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = crate::sample::ACTIVE_STATES
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    for u in listed {
        *counts.entry(u.3.clone()).or_default() += 1;
    }
    counts
}

/// A unit's `ControlGroup`, `*Accounting=` and `WatchdogUSec`; `None` if it
/// is not loaded.
pub(super) async fn read_static(conn: &Connection, unit: &str) -> Option<Static> {
    let interface = cgroup_interface(unit)?;
    let path = OwnedObjectPath::try_from(unit_path(unit)).ok()?;
    let p = path.as_str();
    let (cgroup, cpu, memory, tasks, io) = tokio::join!(
        get(conn, p, interface, "ControlGroup"),
        get(conn, p, interface, "CPUAccounting"),
        get(conn, p, interface, "MemoryAccounting"),
        get(conn, p, interface, "TasksAccounting"),
        get(conn, p, interface, "IOAccounting"),
    );
    let watchdog_usec = if interface == SERVICE {
        set(as_u64(get(conn, p, SERVICE, "WatchdogUSec").await)).unwrap_or(0)
    } else {
        0
    };
    // A property systemd did not give (an error, a timeout) is read again
    // next round rather than taken for "off".
    let (Some(cgroup), Some(cpu), Some(memory), Some(tasks), Some(io)) = (
        as_str(cgroup),
        as_bool(cpu),
        as_bool(memory),
        as_bool(tasks),
        as_bool(io),
    ) else {
        tracing::debug!(
            unit,
            "cannot read the unit's cgroup settings; again next round"
        );
        return None;
    };
    Some(Static {
        cgroup: Some(cgroup).filter(|c| !c.is_empty()),
        accounting: Want {
            cpu,
            memory,
            tasks,
            io,
        },
        watchdog_usec,
        path,
        read_at: Instant::now(),
        stale: false,
        gone: false,
        cpu: None,
    })
}

/// The object path systemd gives `unit`: every byte but ASCII letters and
/// digits escaped as `_` and two hex digits (its `bus_label_escape`), so no
/// `GetUnit` round trip is needed.
pub(super) fn unit_path(unit: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    for b in unit.bytes() {
        if b.is_ascii_alphanumeric() {
            path.push(b as char);
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

/// A socket unit's connections; `None` if they cannot be read.
pub(super) async fn read_socket(conn: &Connection, path: &OwnedObjectPath) -> Option<Socket> {
    let p = path.as_str();
    let (accepted, connections, refused) = tokio::join!(
        get(conn, p, SOCKET, "NAccepted"),
        get(conn, p, SOCKET, "NConnections"),
        get(conn, p, SOCKET, "NRefused"),
    );
    Some(Socket {
        accepted: as_u64(accepted)?,
        connections: as_u64(connections)?,
        refused: as_u64(refused),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_with_a_cgroup_are_the_kinds_that_have_processes() {
        assert_eq!(cgroup_interface("a.service"), Some(SERVICE));
        assert_eq!(cgroup_interface("a.socket"), Some(SOCKET));
        assert_eq!(cgroup_interface("a.timer"), None);
        assert_eq!(cgroup_interface("a.target"), None);
        assert_eq!(cgroup_interface("noext"), None);
        // A user manager's unit: its cgroup is the user manager's to tell.
        let key = crate::ledger::key::user_unit("a.service", "alice").expect("key");
        assert_eq!(cgroup_interface(&key), None);
    }

    #[test]
    fn unit_paths_are_escaped_as_systemd_escapes_them() {
        assert_eq!(
            unit_path("aitbc-worker@gpu\\x2d0.service"),
            "/org/freedesktop/systemd1/unit/aitbc_2dworker_40gpu_5cx2d0_2eservice"
        );
    }

    #[test]
    fn no_limit_and_no_time_are_no_value() {
        assert_eq!(set(Some(u64::MAX)), None);
        assert_eq!(set(Some(0)), None);
        assert_eq!(set(Some(5)), Some(5));
    }
}
