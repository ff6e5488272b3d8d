//! The sampler: reads, every `[resources] interval`, what systemd keeps but
//! does not signal — each watched unit's resources from its cgroup, a
//! socket's connections, a watchdog's last ping, and the manager's
//! `SystemState`, `Version` and units by `ActiveState` — and sends the round
//! to the owner whole ([`Input::Sampled`]).
//!
//! It has a connection of its own, so a slow round never holds up the D-Bus
//! source. What rarely changes (a unit's `ControlGroup`, its `*Accounting=`,
//! `WatchdogUSec`) is read once, and again after a daemon-reload, every
//! [`STATIC_TTL`] or when its cgroup is gone; the numbers are read every
//! round. `SystemState` changes
//! with jobs and failures, which systemd does signal: after a `JobRemoved`
//! or a change of what the watched units show, it is read again at once
//! (at most every [`HOST_AT_MOST`]), not only every round.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, MatchRule, MessageStream};

use super::cgroup::{Cgroups, Want};
use super::dbus::{connect, Bus};
use super::read::{call, MANAGER_PATH, READ_AHEAD};
use super::signal::{MANAGER, PROPERTIES, SERVICE};
use super::signal_queue::SYSTEMD;
use crate::clock;
use crate::ledger::ActiveState;
use crate::message::Input;
use crate::render::metrics::Families;
use crate::sample::{Host, Resources, Sample, Socket, UnitSample, Watchdog};
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshots;

/// How long what rarely changes is trusted without a `daemon-reload`
/// (after one, it is read again at the next round).
pub const STATIC_TTL: Duration = Duration::from_secs(600);

/// How long a read waits for systemd's reply: a manager that does not
/// answer ends the round, and the next connects again.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The host's state is read at most this often between rounds.
pub const HOST_AT_MOST: Duration = Duration::from_millis(200);

const SOCKET: &str = "org.freedesktop.systemd1.Socket";

/// What the sampler reads: what `[metrics]` leaves on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    pub resources: Want,
    pub sockets: bool,
    pub watchdog: bool,
    pub host: bool,
    pub units: bool,
}

/// What `families` leaves on to read.
pub fn reads(families: &Families) -> Reads {
    let on = |key: &str| families.on(key);
    Reads {
        resources: Want {
            cpu: on("cpu"),
            memory: on("memory") || on("memory_peak") || on("memory_max") || on("oom_kills"),
            tasks: on("tasks") || on("tasks_max"),
            io: on("io_read") || on("io_write"),
        },
        sockets: on("socket_connections_accepted")
            || on("socket_connections")
            || on("socket_connections_refused"),
        watchdog: on("watchdog") || on("watchdog_last_ping_timestamp"),
        host: on("systemd_system_state") || on("systemd_version"),
        units: on("systemd_units"),
    }
}

impl Reads {
    pub fn any(&self) -> bool {
        self.resources.any() || self.sockets || self.watchdog || self.host || self.units
    }
}

/// What rarely changes about a unit.
#[derive(Debug, Clone)]
struct Static {
    path: OwnedObjectPath,
    cgroup: Option<String>,
    accounting: Want,
    watchdog_usec: u64,
    read_at: Instant,
    /// A daemon-reload since it was read.
    stale: bool,
    /// CPU time at the last round, and when it was read.
    cpu: Option<(u64, Instant)>,
}

/// The sampler task.
pub struct Sampler {
    pub bus: Bus,
    pub snapshots: Snapshots,
    pub inputs: mpsc::Sender<Input>,
    pub interval: Duration,
    pub cgroups: Option<Cgroups>,
    pub reads: Reads,
}

/// The interface of a unit's type that has its `ControlGroup`.
fn cgroup_interface(unit: &str) -> Option<&'static str> {
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
async fn get(conn: &Connection, path: &str, interface: &str, name: &str) -> Option<OwnedValue> {
    let reply = call(conn, path, PROPERTIES, "Get", &(interface, name))
        .await
        .ok()?;
    reply.body().deserialize().ok()
}

fn as_u64(v: Option<OwnedValue>) -> Option<u64> {
    match v.as_deref()? {
        zbus::zvariant::Value::U64(n) => Some(*n),
        zbus::zvariant::Value::U32(n) => Some(u64::from(*n)),
        _ => None,
    }
}

fn as_bool(v: Option<OwnedValue>) -> Option<bool> {
    match v.as_deref()? {
        zbus::zvariant::Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn as_str(v: Option<OwnedValue>) -> Option<String> {
    match v.as_deref()? {
        zbus::zvariant::Value::Str(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// systemd's "no value" for a timestamp or a limit.
fn set(n: Option<u64>) -> Option<u64> {
    n.filter(|&n| n != 0 && n != u64::MAX)
}

impl super::Source for Sampler {
    fn name(&self) -> &'static str {
        "sampler"
    }

    fn run(self: Box<Self>, shutdown: Shutdown) -> super::Run {
        Box::pin((*self).run(shutdown))
    }
}

impl Sampler {
    /// Runs until shutdown; a lost connection is retried every round.
    pub async fn run(self, mut shutdown: Shutdown) {
        if !self.reads.any() {
            return;
        }
        let mut statics: HashMap<String, Static> = HashMap::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            let conn = match connect(&self.bus, Some(CALL_TIMEOUT)).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "the sampler cannot connect; retrying next round");
                    continue;
                }
            };
            let follow = async {
                self.session(&conn, &mut statics, &mut tick).await;
            };
            tokio::select! {
                _ = follow => {}
                _ = shutdown.recv() => return,
            }
        }
    }

    /// Rounds on one connection, until it fails or the owner is gone.
    async fn session(
        &self,
        conn: &Connection,
        statics: &mut HashMap<String, Static>,
        tick: &mut tokio::time::Interval,
    ) {
        // Drained by tasks of their own: a stream left full would stop zbus
        // reading the socket, replies included. After a `JobRemoved`
        // `SystemState` may have changed; after a `Reloading` (a
        // daemon-reload) a unit's cgroup or accounting may have.
        let jobs = Arc::new(tokio::sync::Notify::new());
        let reloaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut drains = Vec::new();
        match manager_signals(conn, "JobRemoved").await {
            Ok(mut stream) => {
                let jobs = Arc::clone(&jobs);
                drains.push(AbortOnDrop(tokio::spawn(async move {
                    while stream.next().await.is_some() {
                        jobs.notify_one();
                    }
                })));
            }
            Err(e) => {
                tracing::debug!(error = %e, "the sampler cannot follow jobs; host state read every round only");
            }
        }
        match manager_signals(conn, "Reloading").await {
            Ok(mut stream) => {
                let reloaded = Arc::clone(&reloaded);
                drains.push(AbortOnDrop(tokio::spawn(async move {
                    while stream.next().await.is_some() {
                        reloaded.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                })));
            }
            // Then what rarely changes is read again every STATIC_TTL only.
            Err(e) => tracing::debug!(error = %e, "the sampler cannot follow reloads"),
        }
        let mut snapshots = self.snapshots.clone();
        let mut host = Host {
            version: as_str(get(conn, MANAGER_PATH, MANAGER, "Version").await).unwrap_or_default(),
            ..Host::default()
        };
        let mut last = Arc::new(Sample::default());
        let mut full = true;
        loop {
            if self.reads.host {
                match as_str(get(conn, MANAGER_PATH, MANAGER, "SystemState").await) {
                    Some(state) => host.system_state = state,
                    // The connection is gone.
                    None => return,
                }
            }
            let sample = if full {
                if reloaded.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    for s in statics.values_mut() {
                        s.stale = true;
                    }
                }
                if self.reads.units {
                    host.units = list_units(conn).await;
                }
                let mut s = self.round(conn, statics).await;
                s.host = self.reads.host.then(|| host.clone());
                Some(s)
            } else if last.host.as_ref().map(|h| &h.system_state) != Some(&host.system_state) {
                let mut s = (*last).clone();
                s.host = Some(host.clone());
                Some(s)
            } else {
                None
            };
            if let Some(mut sample) = sample {
                sample.taken_at = clock::wall();
                last = Arc::new(sample);
                if self
                    .inputs
                    .send(Input::Sampled(Arc::clone(&last)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            full = tokio::select! {
                _ = tick.tick() => true,
                _ = jobs.notified() => false,
                r = snapshots.changed() => {
                    if r.is_err() {
                        return;
                    }
                    false
                }
            };
            if !full {
                // Let a burst of jobs and changes settle, then read once.
                tokio::time::sleep(HOST_AT_MOST).await;
            }
        }
    }

    /// Reads every watched unit that may have a cgroup.
    async fn round(&self, conn: &Connection, statics: &mut HashMap<String, Static>) -> Sample {
        let reads = self.reads;
        if !(reads.resources.any() || reads.sockets || reads.watchdog) {
            return Sample::default();
        }
        let snapshot = self.snapshots.latest();
        let now = snapshot.now();
        let units: Vec<String> = snapshot
            .ledger
            .view(now)
            .filter(|v| !matches!(v.state, ActiveState::Inactive | ActiveState::Failed))
            .filter(|v| cgroup_interface(v.unit).is_some())
            .map(|v| v.unit.to_owned())
            .collect();
        let present: std::collections::HashSet<&String> = units.iter().collect();
        statics.retain(|unit, _| present.contains(unit));
        let stale: Vec<String> = units
            .iter()
            .filter(|u| {
                statics
                    .get(*u)
                    // Without a cgroup yet (read while it was starting),
                    // read again: it has one while it runs.
                    .is_none_or(|s| {
                        s.stale || s.cgroup.is_none() || s.read_at.elapsed() >= STATIC_TTL
                    })
            })
            .cloned()
            .collect();
        let read: Vec<(String, Option<Static>)> = futures_util::stream::iter(stale)
            .map(|unit| async move {
                let s = read_static(conn, &unit).await;
                (unit, s)
            })
            .buffer_unordered(READ_AHEAD)
            .collect()
            .await;
        for (unit, s) in read {
            match s {
                Some(mut s) => {
                    // Same cgroup: the CPU time read before still counts.
                    if let Some(old) = statics.get(&unit).filter(|o| o.cgroup == s.cgroup) {
                        s.cpu = old.cpu;
                    }
                    statics.insert(unit, s);
                }
                None => {
                    statics.remove(&unit);
                }
            }
        }
        // The numbers: cgroup files off the runtime's threads.
        let want = self.reads.resources;
        let cgroups: Vec<(String, String, Want)> = units
            .iter()
            .filter_map(|u| {
                let s = statics.get(u)?;
                Some((u.clone(), s.cgroup.clone()?, s.accounting.and(want)))
            })
            .filter(|(_, _, w)| w.any())
            .collect();
        let resources: Vec<(String, Option<Resources>)> = match (&self.cgroups, cgroups.is_empty())
        {
            (Some(cg), false) => {
                let cg = cg.clone();
                tokio::task::spawn_blocking(move || {
                    cgroups
                        .into_iter()
                        .map(|(u, path, w)| {
                            let r = cg.read(&path, w);
                            (u, r)
                        })
                        .collect()
                })
                .await
                .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let mut out: BTreeMap<String, UnitSample> = BTreeMap::new();
        for (unit, r) in resources {
            match r {
                Some(r) if !r.is_empty() => {
                    let used = r.cpu_user_usec.zip(r.cpu_system_usec).map(|(u, s)| u + s);
                    let millicores = statics.get_mut(&unit).and_then(|s| {
                        let now = Instant::now();
                        let rate = match (s.cpu, used) {
                            (Some((before, at)), Some(used)) => {
                                let span = now.duration_since(at).as_micros() as u64;
                                (span > 0).then(|| used.saturating_sub(before) * 1000 / span)
                            }
                            _ => None,
                        };
                        s.cpu = used.map(|u| (u, now));
                        rate
                    });
                    let e = out.entry(unit).or_default();
                    e.resources = r;
                    e.cpu_millicores = millicores;
                }
                Some(_) => {}
                // The cgroup is gone or moved: read where it is next round.
                None => {
                    statics.remove(&unit);
                }
            }
        }
        // Sockets and watchdogs: few units, a property or three each.
        let extra: Vec<(String, OwnedObjectPath, u64)> = units
            .iter()
            .filter_map(|u| {
                let s = statics.get(u)?;
                let socket = self.reads.sockets && u.ends_with(".socket");
                let watchdog = self.reads.watchdog && s.watchdog_usec > 0;
                (socket || watchdog).then(|| (u.clone(), s.path.clone(), s.watchdog_usec))
            })
            .collect();
        let extra: Vec<(String, Option<Socket>, Option<Watchdog>)> =
            futures_util::stream::iter(extra)
                .map(|(unit, path, watchdog_usec)| async move {
                    if unit.ends_with(".socket") {
                        (unit, read_socket(conn, &path).await, None)
                    } else {
                        let last_ping = set(as_u64(
                            get(conn, path.as_str(), SERVICE, "WatchdogTimestamp").await,
                        ));
                        let w = Watchdog {
                            interval_usec: watchdog_usec,
                            last_ping,
                        };
                        (unit, None, Some(w))
                    }
                })
                .buffer_unordered(READ_AHEAD)
                .collect()
                .await;
        for (unit, socket, watchdog) in extra {
            let e = out.entry(unit).or_default();
            e.socket = socket;
            e.watchdog = watchdog;
        }
        Sample {
            taken_at: 0,
            units: out,
            host: None,
        }
    }
}

/// Aborts the task when dropped, so it ends with the session.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The manager's `member` signals.
async fn manager_signals(conn: &Connection, member: &'static str) -> zbus::Result<MessageStream> {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(SYSTEMD)?
        .interface(MANAGER)?
        .member(member)?
        .build();
    MessageStream::for_match_rule(rule, conn, Some(64)).await
}

/// Loaded units by `ActiveState`; `None` if they cannot be listed.
async fn list_units(conn: &Connection) -> Option<BTreeMap<String, u64>> {
    type Listed = (
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
    let reply = call(conn, MANAGER_PATH, MANAGER, "ListUnits", &())
        .await
        .ok()?;
    let listed: Vec<Listed> = reply.body().deserialize().ok()?;
    let mut counts: BTreeMap<String, u64> = crate::sample::ACTIVE_STATES
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    for u in listed {
        *counts.entry(u.3).or_default() += 1;
    }
    Some(counts)
}

/// A unit's `ControlGroup`, `*Accounting=` and `WatchdogUSec`; `None` if it
/// is not loaded.
async fn read_static(conn: &Connection, unit: &str) -> Option<Static> {
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
        cpu: None,
    })
}

/// The object path systemd gives `unit`: every byte but ASCII letters and
/// digits escaped as `_` and two hex digits (its `bus_label_escape`), so no
/// `GetUnit` round trip is needed.
fn unit_path(unit: &str) -> String {
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
async fn read_socket(conn: &Connection, path: &OwnedObjectPath) -> Option<Socket> {
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
