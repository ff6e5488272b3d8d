//! The D-Bus source: follows systemd's manager over the bus and turns what it
//! announces into ledger events.
//!
//! On (re)connect it calls `Subscribe`, takes a snapshot of the watched units
//! (`ListUnitsByPatterns`, `ListUnitFilesByPatterns` + `LoadUnit`, then the
//! few properties accounting needs, one `Get` each: [`read_unit`]), and from
//! then on follows, in the order systemd sent them, `PropertiesChanged` of
//! the watched units and the manager's
//! `UnitNew`, `UnitRemoved`, `JobNew`, `JobRemoved` and `Reloading` signals.
//! Nothing is polled. A dropped connection is retried with backoff and the
//! snapshot retaken; the timestamps systemd kept account for the gap.
//!
//! Signals wait in a bounded queue ([`signal_queue`], which says why), which
//! takes only those systemd's connection sent; if a storm overflows it, the
//! source re-reads every watched unit as the snapshot does. A signal that
//! cannot be read is logged and skipped ([`signal`]); only the connection
//! failing ends a session.
//!
//! The same source follows a user's manager ([`Bus::UserManager`], started
//! and ended by [`users`]) over a direct connection to its private socket:
//! its events are keyed with the user ([`crate::ledger::key`]), its news
//! (snapshot in, connection lost, overflow, gone) tells the owner which
//! manager it is about, and `/healthz` is not its to set.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

use crate::clock;
use crate::health::Health;
use crate::ledger::{key, Event, Kind, Transition, Usec};
use crate::message::{Input, Manager};
use crate::select::{Kinds, Selector};
use crate::shutdown::Shutdown;
use crate::source::bus::{connect, Heard};
pub use crate::source::bus::{Bus, DbusError};
use crate::source::properties::UnitProperties;
use crate::source::read::{
    call, list_watched, merge, read_timer, read_triggers, read_unit, Found, ReadUnit, MANAGER_PATH,
    SNAPSHOT_AHEAD,
};
use crate::source::signal::{self, Signal, Throttle, MANAGER, TIMER};
use crate::source::signal_queue::{self, Queued};
use crate::source::timers::Timers;
use crate::source::users::{self, Gone};
use crate::source::wire::{Position, Raw};

mod overflow;
mod stopping;

/// The D-Bus source task.
pub struct DbusSource {
    bus: Bus,
    selector: Selector,
    kinds: Kinds,
    /// The kind last told the ledger, by unit.
    kind_of: HashMap<String, Kind>,
    /// The timers that trigger watched jobs.
    timers: Timers,
    events: mpsc::Sender<Input>,
    health: Health,
    /// Last known properties of every watched unit, by unit name; kept across
    /// reconnects so changes during a gap are recovered from the timestamps.
    units: HashMap<String, UnitProperties>,
    /// Object path → unit name of watched units.
    paths: HashMap<OwnedObjectPath, String>,
    /// Per unit and interface, the receive position of the first reply of
    /// the last read: signals received before it are older than what it
    /// said (they wait in our queue while the reply is handed over at once)
    /// and are dropped, so a snapshot is never overwritten by stale news.
    read_at: HashMap<(String, &'static str), Position>,
    /// How many signals wait at most ([`signal_queue`]).
    queue: usize,
    /// Warnings about signals that cannot be read.
    malformed: Throttle,
    /// A user manager's: when it went away ([`DbusSource::until_gone`]).
    gone: Gone,
    /// When the session's systemd was last heard: the time a lost
    /// connection is lost at ([`Heard`]).
    heard: Option<Heard>,
}

impl super::Source for DbusSource {
    fn name(&self) -> &'static str {
        "dbus"
    }

    fn run(self: Box<Self>, shutdown: Shutdown) -> super::Run {
        Box::pin((*self).run(shutdown))
    }
}

impl DbusSource {
    pub fn new(
        bus: Bus,
        selector: Selector,
        kinds: Kinds,
        events: mpsc::Sender<Input>,
        health: Health,
    ) -> Self {
        DbusSource {
            bus,
            selector,
            kinds,
            kind_of: HashMap::new(),
            timers: Timers::default(),
            events,
            health,
            units: HashMap::new(),
            paths: HashMap::new(),
            read_at: HashMap::new(),
            queue: signal_queue::capacity(),
            malformed: Throttle::new(signal::WARN_EVERY),
            gone: Gone::default(),
            heard: None,
        }
    }

    /// Follows until `gone` says the manager went away, then reads what its
    /// connection still holds, says so ([`Manager::Gone`]) and ends.
    pub fn until_gone(mut self, gone: Gone) -> Self {
        self.gone = gone;
        self
    }

    /// Runs until shutdown, reconnecting with backoff when the bus goes away.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(250);
        let mut gone = std::mem::take(&mut self.gone);
        let mut warned: Option<String> = None;
        loop {
            let result = tokio::select! {
                r = self.session(&mut shutdown) => r,
                at = gone.for_long() => return self.gone(at).await,
            };
            let reason = match result {
                Ok(()) => "the bus connection closed".to_owned(),
                Err(DbusError::LedgerGone | DbusError::Stopped) => return,
                Err(e) => e.to_string(),
            };
            let at = self.heard.take().and_then(|h| h.at());
            let lost = self.news(Manager::Lost {
                at: at.unwrap_or_else(clock::now),
            });
            if self.events.send(lost).await.is_err() {
                return;
            }
            if let Some(at) = gone.at() {
                return self.gone(at).await;
            }
            // Retried soon after a session that got going, then less often.
            if self.health.is_up() {
                backoff = Duration::from_millis(250);
                warned = None;
            }
            let news = self.health.set_down(&reason);
            if news && self.bus.user().is_none() {
                tracing::warn!(reason = %reason, retry_in_ms = backoff.as_millis() as u64, "lost systemd over D-Bus; reconnecting");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.recv() => return,
                at = gone.wait() => return self.gone(at).await,
            }
            // A user manager's connection ends when it stops: warned about
            // if it is not gone by the time to retry, once for each reason.
            if let Some(user) = self.bus.user().filter(|_| warned.as_ref() != Some(&reason)) {
                tracing::warn!(reason = %reason, "lost or cannot reach the user manager of {user} over its private socket ({reason}); retrying (it accepts root only, with CAP_DAC_OVERRIDE: README, \"User managers\")");
                warned = Some(reason);
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Says that the manager went away at `at`.
    async fn gone(&self, at: Usec) {
        let _ = self.events.send(self.news(Manager::Gone { at })).await;
    }

    /// `news` of the manager followed, as the owner takes it.
    fn news(&self, news: Manager) -> Input {
        users::input(self.bus.user(), news)
    }

    /// One connection: subscribe, snapshot, follow. Returns when the
    /// connection ends, or with [`DbusError::Stopped`] at shutdown.
    async fn session(&mut self, shutdown: &mut Shutdown) -> Result<(), DbusError> {
        let setup = async {
            let (inlet, queue) = signal_queue::new(self.queue);
            let conn = connect(&self.bus, None, Some(inlet)).await?;
            tracing::debug!(
                "connected to the bus as {}",
                conn.unique_name().map_or("-", |n| n.as_str())
            );
            // Receive positions are only comparable within one connection.
            self.read_at.clear();
            match self.bus {
                Bus::UserManager { .. } => signal_queue::open_direct(&queue),
                _ => signal_queue::open(&conn, &queue).await?,
            }
            call(&conn, MANAGER_PATH, MANAGER, "Subscribe", &()).await?;
            let n = self.snapshot(&conn).await?;
            self.health.set_up(n);
            tracing::debug!(units = n, "subscribed to systemd; following unit changes");
            self.snapshot_done(n).await?;
            Ok::<_, DbusError>((conn, queue))
        };
        let set_up = tokio::select! {
            r = setup => Some(r?),
            _ = shutdown.recv() => None,
        };
        let Some((conn, mut queue)) = set_up else {
            return self.stopping(None).await;
        };
        let heard = queue.heard();
        heard.now();
        self.heard = Some(heard);
        loop {
            // What an item sets off (a snapshot after an overflow or a
            // reload takes seconds on a large host) gives way to shutdown.
            let next = async {
                match queue.recv().await {
                    Some(item) => self.take(&conn, item).await.map(Some),
                    None => Ok(None),
                }
            };
            let taken = tokio::select! {
                r = next => Some(r),
                _ = shutdown.recv() => None,
            };
            match taken {
                Some(Ok(Some(()))) => {}
                Some(Ok(None)) => return Ok(()),
                Some(Err(e)) => return Err(e),
                None => return self.stopping(Some((&conn, &mut queue))).await,
            }
        }
    }

    /// Acts on what the signal queue held.
    async fn take(&mut self, conn: &Connection, item: Queued) -> Result<(), DbusError> {
        match item {
            Queued::Signal(raw) => self.handle(conn, &raw).await,
            Queued::Overflow {
                since,
                dropped,
                units,
            } => self.overflowed(conn, since, dropped, units).await,
        }
    }

    /// Finds every watched unit and reports its current state.
    async fn snapshot(&mut self, conn: &Connection) -> Result<usize, DbusError> {
        self.timers.snapshot_taken();
        let found = list_watched(conn, &self.selector).await?;
        tracing::debug!(units = found.len(), "listed watched units; reading them");
        let mut names: Vec<_> = found.into_iter().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        self.read_in(conn, names).await?;
        Ok(self.paths.len())
    }

    /// Reads `units` many at once (replies come back in order of the list),
    /// then takes them in one by one.
    async fn read_in(
        &mut self,
        conn: &Connection,
        units: Vec<(String, Found)>,
    ) -> Result<(), DbusError> {
        let reads: Vec<_> = futures_util::stream::iter(units)
            .map(|(name, found)| async move {
                let (path, check, listed) = (found.path, found.check_load, found.listed);
                let read = read_unit(conn, &name, &path, check, listed).await;
                (name, path, read)
            })
            .buffered(SNAPSHOT_AHEAD)
            .collect()
            .await;
        for (name, path, read) in reads {
            self.take_in(conn, name, path, read?).await?;
        }
        Ok(())
    }

    /// Reads a unit's properties and reports it as seen (or its changes, if known).
    async fn observe(
        &mut self,
        conn: &Connection,
        name: String,
        path: OwnedObjectPath,
    ) -> Result<(), DbusError> {
        let read = read_unit(conn, &name, &path, true, None).await?;
        self.take_in(conn, name, path, read).await
    }

    /// Applies what [`read_unit`] found.
    async fn take_in(
        &mut self,
        conn: &Connection,
        name: String,
        path: OwnedObjectPath,
        read: Option<ReadUnit>,
    ) -> Result<(), DbusError> {
        let Some(ReadUnit {
            now,
            frame,
            props,
            read_at,
        }) = read
        else {
            return Ok(());
        };
        for (interface, position) in read_at {
            self.read_at.insert((name.clone(), interface), position);
        }
        let events = match self.units.get(&name) {
            Some(before) if before.active_state.is_some() => {
                let changes = props.changes_since(before, &name, now);
                props
                    .seen_again(&name, now)
                    .into_iter()
                    .chain(changes)
                    .collect()
            }
            _ => props.seen(&name, now),
        };
        let mut events = events;
        events.extend(self.classify(conn, &name, &props, now, frame).await?);
        self.paths.insert(path, name.clone());
        self.units.insert(name, props);
        self.send(events, frame).await
    }

    /// The events that tell the ledger what `name` is (when that changed)
    /// and, for a job a timer triggers, about the timer, which is followed
    /// from then on.
    async fn classify(
        &mut self,
        conn: &Connection,
        name: &str,
        props: &UnitProperties,
        now: Usec,
        frame: i64,
    ) -> Result<Vec<Event>, DbusError> {
        let mut events = Vec::new();
        let kind = self.kinds.kind(name, props.is_job());
        if self.kind_of.insert(name.to_owned(), kind) != Some(kind) {
            events.push(Event::new(name, now, Transition::Kind { kind }));
        }
        let timer = props.timer().filter(|_| kind == Kind::Job);
        let before = self.timers.timer_of(name).map(str::to_owned);
        if before.as_deref() != timer {
            if let Some(old) = &before {
                self.timers.drop_job(old, name);
            }
            if timer.is_none() {
                events.push(Event::new(
                    name,
                    now,
                    Transition::Timer {
                        timer: String::new(),
                        last_trigger: 0,
                        next_elapse: 0,
                    },
                ));
            }
        }
        if let Some(timer) = timer {
            match self.timers.add_job(timer, name) {
                Some(p) => events.push(p.event(name, timer, now, frame)),
                None => {
                    if let Some((path, p)) = read_timer(conn, timer).await? {
                        events.push(p.event(name, timer, now, frame));
                        self.timers.follow(timer, path, name, p);
                    }
                }
            }
        }
        Ok(events)
    }

    async fn snapshot_done(&self, units: usize) -> Result<(), DbusError> {
        self.events
            .send(self.news(Manager::Up { units }))
            .await
            .map_err(|_| DbusError::LedgerGone)
    }

    /// Sends events whose times are in clock frame `frame`; a user
    /// manager's under its units' keys ([`crate::ledger::key`]).
    async fn send(&self, events: Vec<Event>, frame: i64) -> Result<(), DbusError> {
        for mut event in events {
            if let Some(user) = self.bus.user() {
                let Some(key) = key::user_unit(&event.unit, user) else {
                    continue;
                };
                event.unit = key;
            }
            self.events
                .send(Input::Event {
                    event,
                    frame: Some(frame),
                })
                .await
                .map_err(|_| DbusError::LedgerGone)?;
        }
        Ok(())
    }

    /// Acts on one of systemd's signals; one that cannot be read is logged
    /// and skipped.
    async fn handle(&mut self, conn: &Connection, raw: &Raw) -> Result<(), DbusError> {
        let signal = match signal::decode(raw, |path| {
            self.paths.contains_key(path) || self.timers.contains(path)
        }) {
            Ok(Some(signal)) => signal,
            Ok(None) => return Ok(()),
            Err(e) => {
                signal::warn_ignored(&mut self.malformed, std::time::Instant::now(), raw, &e);
                return Ok(());
            }
        };
        match signal {
            Signal::Properties {
                path,
                interface,
                changed,
            } => {
                if interface == TIMER {
                    let (now, frame) = clock::now_in_frame();
                    let events = self.timers.changed(&path, &changed, now, frame);
                    return self.send(events, frame).await;
                }
                let Some(name) = self.paths.get(&path).cloned() else {
                    return Ok(());
                };
                let stale = self
                    .read_at
                    .get(&(name.clone(), interface))
                    .is_some_and(|read| raw.at() < *read);
                if stale {
                    return Ok(());
                }
                let (now, frame) = clock::now_in_frame();
                let before = self.units.entry(name.clone()).or_default();
                let mut after = before.clone();
                merge(&mut after, changed, frame);
                if after == *before {
                    return Ok(());
                }
                let mut events = after.changes_since(before, &name, now);
                let kind_may_change = after.service_type != before.service_type
                    || after.remain_after_exit != before.remain_after_exit
                    || after.triggered_by != before.triggered_by;
                // A copy only for the rare update that may change the kind.
                let reclassify = kind_may_change.then(|| after.clone());
                *before = after;
                if let Some(after) = reclassify {
                    events.extend(self.classify(conn, &name, &after, now, frame).await?);
                }
                self.send(events, frame).await
            }
            Signal::UnitNew { name, path } => {
                if name.ends_with(".timer") && self.timers.first_sight(&name) {
                    // A timer loaded after the snapshot: the jobs it triggers
                    // now say so in TriggeredBy, which systemd does not signal.
                    for unit in read_triggers(conn, &path).await? {
                        let known = self.paths.iter().find(|(_, n)| **n == unit);
                        if let Some((path, unit)) = known.map(|(p, n)| (p.clone(), n.clone())) {
                            if self.timers.timer_of(&unit) != Some(name.as_str()) {
                                self.observe(conn, unit, path).await?;
                            }
                        }
                    }
                }
                if !self.selector.matches(&name) {
                    return Ok(());
                }
                if self.units.contains_key(&name) {
                    // Loaded again (e.g. after systemd garbage-collected it):
                    // its changes arrive as PropertiesChanged. Reading it here
                    // would load it again and again as systemd unloads it.
                    self.paths.insert(path, name);
                    return Ok(());
                }
                tracing::debug!(unit = %name, "new unit");
                self.observe(conn, name, path).await?;
                self.health.set_up(self.paths.len());
                Ok(())
            }
            Signal::UnitRemoved { name } => {
                if self.selector.matches(&name) {
                    let (now, frame) = clock::now_in_frame();
                    self.send(vec![Event::new(&name, now, Transition::Removed)], frame)
                        .await?;
                }
                Ok(())
            }
            Signal::JobNew { id, unit } => {
                if !self.selector.matches(&unit) {
                    return Ok(());
                }
                // The signal does not carry the job's type, and asking for it
                // races the job (a restart job is already a start job once its
                // stop is done): the ledger judges the job by what the unit did.
                let invocation = self.units.get(&unit).and_then(|p| p.invocation_id.clone());
                let (now, frame) = clock::now_in_frame();
                self.send(
                    vec![Event::new(
                        &unit,
                        now,
                        Transition::JobQueued {
                            id,
                            job_type: String::new(),
                            invocation,
                        },
                    )],
                    frame,
                )
                .await
            }
            Signal::JobRemoved { id, unit, result } => {
                if self.selector.matches(&unit) {
                    let (now, frame) = clock::now_in_frame();
                    self.send(
                        vec![Event::new(
                            &unit,
                            now,
                            Transition::JobRemoved { id, result },
                        )],
                        frame,
                    )
                    .await?;
                }
                Ok(())
            }
            Signal::Reloading { active } => {
                if !active {
                    // New unit files may match now, and systemd does not
                    // announce every change a reload makes: look again.
                    tracing::debug!("systemd reloaded; taking a new snapshot");
                    let n = self.snapshot(conn).await?;
                    self.health.set_up(n);
                    self.snapshot_done(n).await?;
                }
                Ok(())
            }
        }
    }
}
