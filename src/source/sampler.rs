//! The sampler: reads, every `[resources] interval`, what systemd keeps but
//! does not signal — each watched unit's resources from its cgroup, a
//! socket's connections, a watchdog's last ping, and the manager's
//! `SystemState`, `Version` and units by `ActiveState` — and sends the round
//! to the owner whole ([`Input::Sampled`]).
//!
//! It has a connection of its own, so a slow round never holds up the D-Bus
//! source. What rarely changes (a unit's `ControlGroup`, its `*Accounting=`,
//! `WatchdogUSec`) is read once, and again after a daemon-reload, every
//! [`STATIC_TTL`], or [`GONE_RETRY`] after its cgroup could not be read; the
//! numbers are read every round. `SystemState` changes
//! with jobs and failures, which systemd does signal: after a `JobRemoved`
//! or a change of what the watched units show, it is read again at once
//! (at most every [`HOST_AT_MOST`]), not only every round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, MatchRule, MessageStream};

use super::bus::{connect, Bus};
use super::cgroup::{Cgroups, Want};
use super::read::{ListedUnit, MANAGER_PATH, READ_AHEAD};
use super::signal::{MANAGER, SERVICE};
use super::signal_queue::SYSTEMD;
use crate::clock;
use crate::lane::Lane;
use crate::ledger::ActiveState;
use crate::message::Input;
use crate::render::metrics::Families;
use crate::sample::{Host, Resources, Sample, Socket, UnitSample, Watchdog};
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshots;

mod props;

use self::props::{
    as_str, as_u64, cgroup_interface, get, list_units, read_socket, read_static, set, unit_counts,
    Static,
};

/// How long what rarely changes is trusted without a `daemon-reload`
/// (after one, it is read again at the next round).
pub const STATIC_TTL: Duration = Duration::from_secs(600);

/// How soon what rarely changes is read again after the unit's cgroup could
/// not be read. Not every round: a unit keeps its cgroup's path across
/// restarts (only a daemon-reload moves it, and that is heard), and where
/// cgroups cannot be read at all (a `cgroup_root` that is not the
/// manager's) reading five properties of every unit each round cost more
/// than the rest of the round.
pub const GONE_RETRY: Duration = Duration::from_secs(60);

/// How long a read waits for systemd's reply: a manager that does not
/// answer ends the round, and the next connects again.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The host's state is read at most this often between rounds.
pub const HOST_AT_MOST: Duration = Duration::from_millis(200);

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

/// The sampler task.
pub struct Sampler {
    pub bus: Bus,
    pub snapshots: Snapshots,
    pub inputs: mpsc::Sender<Input>,
    pub interval: Duration,
    pub cgroups: Option<Cgroups>,
    pub reads: Reads,
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
        // The cgroup reads: at thousands of units a round is tens of
        // milliseconds of the kernel's work (flushing each cgroup's CPU
        // statistics), which at the same priority delayed events and
        // scrapes that shared the cores with it.
        let lane = Lane::start("unitwatch-sampler");
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            let conn = match connect(&self.bus, Some(CALL_TIMEOUT), None).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "the sampler cannot connect; retrying next round");
                    continue;
                }
            };
            let follow = async {
                self.session(&conn, &mut statics, &mut tick, lane.as_ref())
                    .await;
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
        lane: Option<&Lane>,
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
            // Read even when not exported: the one reply that tells
            // whether the connection still works.
            match as_str(get(conn, MANAGER_PATH, MANAGER, "SystemState").await) {
                Some(state) => host.system_state = state,
                // The connection is gone, or systemd does not answer:
                // connect again at the next round.
                None => return,
            }
            let sample = if full {
                if reloaded.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    for s in statics.values_mut() {
                        s.stale = true;
                    }
                }
                // One listing a round, for the counts and the round's units.
                let listed = if self.reads.units {
                    let listed = list_units(conn).await;
                    host.units = listed.as_deref().map(unit_counts);
                    listed
                } else {
                    None
                };
                let mut s = self.round(conn, statics, listed, lane).await;
                s.host = (self.reads.host || self.reads.units).then(|| host.clone());
                Some(s)
            } else if self.reads.host
                && last.host.as_ref().map(|h| &h.system_state) != Some(&host.system_state)
            {
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
    /// `listed`: the units systemd has loaded, if this round listed them
    /// already.
    async fn round(
        &self,
        conn: &Connection,
        statics: &mut HashMap<String, Static>,
        listed: Option<Vec<ListedUnit>>,
        lane: Option<&Lane>,
    ) -> Sample {
        let reads = self.reads;
        if !(reads.resources.any() || reads.sockets || reads.watchdog) {
            return Sample::default();
        }
        let snapshot = self.snapshots.latest();
        // Not while the D-Bus source takes its snapshot: its reads come
        // first, and the units it has not reported yet would be missed.
        if !snapshot.stats.dbus_up {
            return Sample::default();
        }
        let now = snapshot.now();
        // Only units with processes: not stopped, failed or waiting in
        // `auto-restart` between runs, which have no cgroup (a crash loop
        // spends most of its time there, and was read, six properties and
        // a listing, every round).
        let units: Vec<String> = snapshot
            .ledger
            .view(now)
            .filter(|v| !matches!(v.state, ActiveState::Inactive | ActiveState::Failed))
            .filter(|v| v.sub_state != "auto-restart")
            .filter(|v| cgroup_interface(v.unit).is_some())
            .map(|v| v.unit.to_owned())
            .collect();
        // What is read of a unit between its runs is kept, not read again
        // when it runs next: its cgroup's path does not change (a
        // daemon-reload, which may move it, is heard). Only a unit the
        // ledger no longer has is forgotten. It has no CPU rate across the
        // gap: its next run's cgroup counts from zero.
        let running: HashSet<&str> = units.iter().map(String::as_str).collect();
        statics.retain(|unit, s| {
            if !running.contains(unit.as_str()) {
                s.cpu = None;
            }
            snapshot.ledger.contains(unit)
        });
        let stale: Vec<String> = units
            .iter()
            .filter(|u| {
                statics
                    .get(*u)
                    // Without a cgroup yet (read while it was starting),
                    // read again: it has one while it runs.
                    .is_none_or(|s| {
                        let age = s.read_at.elapsed();
                        s.stale
                            || s.cgroup.is_none()
                            || (s.gone && age >= GONE_RETRY)
                            || age >= STATIC_TTL
                    })
            })
            .cloned()
            .collect();
        // Only those systemd has loaded: a property of a unit it does not
        // have (one the state file still holds) loads it for the question,
        // and the load and the unload are signalled to every follower, for
        // every such unit, every round.
        // Listed only when there is something to read.
        let listed = match (stale.is_empty(), listed) {
            (true, _) => None,
            (false, Some(listed)) => Some(listed),
            (false, None) => list_units(conn).await,
        };
        let stale = match listed {
            Some(listed) => {
                let loaded: HashSet<&str> = listed.iter().map(|u| u.0.as_str()).collect();
                stale
                    .into_iter()
                    .filter(|u| loaded.contains(u.as_str()))
                    .collect()
            }
            None => stale,
        };
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
        // The numbers: cgroup files off the runtime's threads, at a lower
        // priority.
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
                let read = move || {
                    cgroups
                        .into_iter()
                        .map(|(u, path, w)| {
                            let r = cg.read(&path, w);
                            (u, r)
                        })
                        .collect()
                };
                match lane {
                    Some(lane) => lane.run(read).await.unwrap_or_default(),
                    None => tokio::task::spawn_blocking(read).await.unwrap_or_default(),
                }
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
                    if let Some(s) = statics.get_mut(&unit) {
                        s.gone = false;
                    }
                    let e = out.entry(unit).or_default();
                    e.resources = r;
                    e.cpu_millicores = millicores;
                }
                Some(_) => {}
                // The cgroup is gone (the unit is between runs) or moved: no
                // sample, and no CPU rate across the gap.
                None => {
                    if let Some(s) = statics.get_mut(&unit) {
                        s.gone = true;
                        s.cpu = None;
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn off(keys: &[&str]) -> Families {
        let mut f = Families::default();
        for k in keys {
            f.set(k, false).expect("a family");
        }
        f
    }

    #[test]
    fn by_default_everything_is_read() {
        let r = reads(&Families::default());
        assert!(r.resources.cpu && r.resources.memory && r.resources.tasks && r.resources.io);
        assert!(r.sockets && r.watchdog && r.host && r.units);
    }

    #[test]
    fn a_group_of_files_is_read_while_one_of_its_families_is_on() {
        let r = reads(&off(&["memory", "memory_peak", "memory_max"]));
        assert!(
            r.resources.memory,
            "oom_kills is still on: memory.events is read"
        );
        let r = reads(&off(&["memory", "memory_peak", "memory_max", "oom_kills"]));
        assert!(!r.resources.memory);
        assert!(!reads(&off(&["tasks", "tasks_max"])).resources.tasks);
        assert!(!reads(&off(&["io_read", "io_write"])).resources.io);
    }

    #[test]
    fn with_every_sampled_family_off_nothing_is_read() {
        let all: Vec<&str> = Families::keys()
            .filter(|k| !["state", "state_change_timestamp", "job_duration"].contains(k))
            .collect();
        assert!(!reads(&off(&all)).any());
        // The host's state alone: only the manager is asked.
        let but_state: Vec<&str> = all
            .iter()
            .copied()
            .filter(|k| *k != "systemd_system_state")
            .collect();
        let r = reads(&off(&but_state));
        assert!(r.host && !r.units && !r.resources.any() && !r.sockets && !r.watchdog);
    }
}
