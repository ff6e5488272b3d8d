//! `[watch] user_managers`: every running user manager followed beside the
//! system manager, its units under keys of their own ([`crate::ledger::key`])
//! and labelled with the user.
//!
//! Which managers run is the system manager's to say, without logind: a
//! user's manager is the unit `user@UID.service`, running while that unit is
//! active. [`UserManagers`] follows those units over a system-bus connection
//! of its own — a snapshot of `user@*.service`, then their
//! `PropertiesChanged`, `UnitNew`, `UnitRemoved` and `Reloading`; nothing is
//! polled — and starts a [`DbusSource`] for a manager when its unit becomes
//! active. That follows the manager over its private socket ([`socket`],
//! through [`super::private`]),
//! reconnecting with backoff as the system manager's does, until the unit
//! goes inactive or failed ([`Gone`]): it then reads what the connection
//! still holds (the stops of the manager's units as it shut down), tells the
//! owner that the manager went at the time systemd recorded (units whose stop
//! went unheard are down from then), and ends. A manager that starts again is
//! followed again, by a new source once the old one has ended.
//!
//! Each manager has a connection of its own, lost and retried on its own:
//! one manager going, coming back or failing changes nothing for the system
//! manager or the others. Losing the system bus here stops no source; the
//! snapshot after reconnecting settles which managers run.
//!
//! The private socket `/run/user/UID/systemd/private` is the one
//! `systemctl --user` uses as root: no user bus (dbus-daemon) is needed. The
//! manager accepts only root and its own user on it, and the socket is the
//! user's with mode 0700, so unitwatch must run as root with
//! `CAP_DAC_OVERRIDE` (README, "User managers"). Being the user's, what
//! comes over it is believed of that user's units only.
//!
//! The `user` label is the user's name in the passwd database (NSS), or the
//! UID where it has none.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;
use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

use super::bus;
use super::changed::Changed;
use super::dbus::{Bus, DbusError, DbusSource};
use super::properties::UnitProperties;
use super::read::{call, list_units, merge, MANAGER_PATH};
use super::signal::{self, Signal, Throttle, MANAGER, PROPERTIES, UNIT};
use super::signal_queue::{self, Queued};
use super::wire::Raw;
use crate::clock;
use crate::health::Health;
use crate::ledger::{ActiveState, Usec};
use crate::message::{Input, Manager};
use crate::select::{Kinds, Selector};
use crate::shutdown::Shutdown;

/// How long a source whose manager went away may take to read what its
/// connection still holds (it ends by itself when the manager's process is
/// gone) before it is stopped.
pub const GRACE: Duration = Duration::from_secs(5);

/// How many of systemd's signals wait here at most. This connection hears
/// every unit's (the bus cannot pick out the `user@` ones), but only those
/// of a few units matter, and an overflow costs one `ListUnitsByPatterns`:
/// a short queue bounds the memory a storm of other units' signals takes.
const QUEUE: usize = 512;

/// The private socket of user `uid`'s manager.
pub fn socket(uid: u32) -> String {
    format!("/run/user/{uid}/systemd/private")
}

/// The UID of the user manager unit `name` (`user@UID.service`).
pub fn manager_uid(name: &str) -> Option<u32> {
    let uid = name.strip_prefix("user@")?.strip_suffix(".service")?;
    // Digits only: `u32::from_str` takes a leading `+`.
    if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    uid.parse().ok()
}

/// The name of user `uid` in the passwd database, or the UID as text where
/// it has none. May block (NSS): not on the async workers.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `pwd`, `buf` (of the length given) and `found` are valid
        // for writes for the call; on success the strings `pwd` points to
        // are in `buf`, which outlives their use below.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return uid.to_string();
        }
        // SAFETY: on success `pw_name` is a NUL-terminated string in `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return match name.to_str() {
            Ok(name) if !name.is_empty() => name.to_owned(),
            _ => uid.to_string(),
        };
    }
}

/// The owner's input for `news` of the manager of `user` (`None`: the
/// system manager, whose news has inputs of its own).
pub fn input(user: Option<&str>, news: Manager) -> Input {
    match (user, news) {
        (Some(user), news) => Input::UserManager {
            user: user.to_owned(),
            news,
        },
        (None, Manager::Up { units }) => Input::SnapshotDone { units },
        (None, Manager::Overflow { at }) => Input::DbusOverflow { at },
        (None, Manager::Lost { at } | Manager::Gone { at }) => Input::DbusLost { at },
    }
}

/// When the manager a source follows went away, as the source learns it;
/// never, for the system manager's.
#[derive(Debug, Default)]
pub struct Gone(Option<watch::Receiver<Option<Usec>>>);

impl Gone {
    /// When it went, if it did.
    pub fn at(&self) -> Option<Usec> {
        self.0.as_ref().and_then(|rx| *rx.borrow())
    }

    /// Waits until it went; when.
    pub async fn wait(&mut self) -> Usec {
        if let Some(rx) = &mut self.0 {
            if let Ok(at) = rx.wait_for(Option::is_some).await {
                if let Some(at) = *at {
                    return at;
                }
            }
        }
        // Never: the system manager's, or no one left to say it.
        std::future::pending().await
    }

    /// Waits until it went [`GRACE`] ago; when it went.
    pub async fn for_long(&mut self) -> Usec {
        let at = self.wait().await;
        tokio::time::sleep(GRACE).await;
        at
    }
}

/// A source following one manager.
struct Follower {
    gone: watch::Sender<Option<Usec>>,
    task: JoinHandle<()>,
}

/// The task that finds the running user managers and follows each.
pub struct UserManagers {
    /// Where the system manager is.
    bus: Bus,
    selector: Selector,
    kinds: Kinds,
    events: mpsc::Sender<Input>,
    /// `user@UID.service` units by object path: their UID and properties.
    units: HashMap<OwnedObjectPath, (u32, UnitProperties)>,
    /// Sources by UID; those whose manager went away, until they end.
    followers: HashMap<u32, Follower>,
    ending: HashMap<u32, JoinHandle<()>>,
    malformed: Throttle,
}

impl super::Source for UserManagers {
    fn name(&self) -> &'static str {
        "user managers"
    }

    fn run(self: Box<Self>, shutdown: Shutdown) -> super::Run {
        Box::pin((*self).run(shutdown))
    }
}

impl UserManagers {
    /// Finds the user managers of the system manager on `bus`.
    pub fn new(bus: Bus, selector: Selector, kinds: Kinds, events: mpsc::Sender<Input>) -> Self {
        UserManagers {
            bus,
            selector,
            kinds,
            events,
            units: HashMap::new(),
            followers: HashMap::new(),
            ending: HashMap::new(),
            malformed: Throttle::new(signal::WARN_EVERY),
        }
    }

    /// Runs until shutdown (the sources with it), reconnecting with
    /// backoff when the system bus goes away.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(250);
        // The sources' own, as `shutdown` is waited on here.
        let sources = shutdown.clone();
        loop {
            let result = tokio::select! {
                r = self.session(&sources) => r,
                _ = shutdown.recv() => break,
            };
            let why = match result {
                Ok(()) => "the bus connection closed".to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(reason = %why, retry_in_ms = backoff.as_millis() as u64, "lost the system manager while following user managers; reconnecting");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.recv() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        // Every source ends with the shutdown too; wait for them.
        let tasks = self.followers.drain().map(|(_, f)| f.task);
        for task in tasks.chain(self.ending.drain().map(|(_, t)| t)) {
            let _ = task.await;
        }
    }

    /// One connection: subscribe, snapshot, follow.
    async fn session(&mut self, shutdown: &Shutdown) -> Result<(), DbusError> {
        // The system manager, wherever the system bus is.
        let bus = match &self.bus {
            Bus::Address(address) => Bus::Address(address.clone()),
            _ => Bus::System,
        };
        let (inlet, mut queue) = signal_queue::new(QUEUE);
        let conn = bus::connect(&bus, None, Some(inlet)).await?;
        signal_queue::open(&conn, &queue).await?;
        call(&conn, MANAGER_PATH, MANAGER, "Subscribe", &()).await?;
        self.snapshot(&conn, shutdown).await?;
        while let Some(item) = queue.recv().await {
            match item {
                Queued::Signal(raw) => self.handle(&conn, &raw, shutdown).await?,
                // Missed some: ask again.
                Queued::Overflow { .. } => self.snapshot(&conn, shutdown).await?,
            }
        }
        Ok(())
    }

    /// Which managers run now: those are followed, and no others.
    async fn snapshot(&mut self, conn: &Connection, shutdown: &Shutdown) -> Result<(), DbusError> {
        let listed = list_units(conn, &["user@*.service"]).await?;
        self.units.clear();
        let mut states = HashMap::new();
        for (name, _, _, active, _, _, path, ..) in listed {
            let Some(uid) = manager_uid(&name) else {
                continue;
            };
            let props = UnitProperties {
                active_state: ActiveState::parse(&active),
                ..UnitProperties::default()
            };
            states.insert(uid, props.active_state);
            self.units.insert(path, (uid, props));
        }
        let mut uids: Vec<u32> = states
            .keys()
            .chain(self.followers.keys())
            .copied()
            .collect();
        uids.sort_unstable();
        uids.dedup();
        for uid in uids {
            // Not loaded any more: inactive.
            let state = states.get(&uid).copied().flatten();
            self.settle(
                uid,
                Some(state.unwrap_or(ActiveState::Inactive)),
                0,
                shutdown,
            );
        }
        tracing::debug!(
            running = self.followers.len(),
            "following the user managers that run"
        );
        Ok(())
    }

    /// Follows `uid`'s manager if `state` says it runs; stops following it
    /// (it went at `at`, or now if unknown) if it says it ended.
    fn settle(&mut self, uid: u32, state: Option<ActiveState>, at: Usec, shutdown: &Shutdown) {
        match state {
            Some(ActiveState::Active | ActiveState::Reloading) => self.follow(uid, shutdown),
            Some(ActiveState::Inactive | ActiveState::Failed) => {
                if let Some(f) = self.followers.remove(&uid) {
                    let at = if at == 0 { clock::now() } else { at };
                    tracing::debug!(uid, "the user manager stopped; reading what is left");
                    f.gone.send_replace(Some(at));
                    self.ending.insert(uid, f.task);
                }
            }
            // Starting or stopping: as it was until it is done.
            _ => {}
        }
    }

    /// Starts a source for `uid`'s manager, unless one follows it already;
    /// after the previous one, if that is still ending.
    fn follow(&mut self, uid: u32, shutdown: &Shutdown) {
        if self.followers.contains_key(&uid) {
            return;
        }
        let (gone, rx) = watch::channel(None);
        let previous = self.ending.remove(&uid);
        let (selector, kinds) = (self.selector.clone(), self.kinds.clone());
        let (events, shutdown) = (self.events.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let user = tokio::task::spawn_blocking(move || user_name(uid))
                .await
                .unwrap_or_else(|_| uid.to_string());
            let span = tracing::info_span!("user_manager", user = %user, uid);
            let source = DbusSource::new(
                Bus::UserManager { uid, user },
                selector,
                kinds,
                events,
                // Its own: `/healthz` is about the system manager.
                Health::default(),
            )
            .until_gone(Gone(Some(rx)));
            source.run(shutdown).instrument(span).await
        });
        self.followers.insert(uid, Follower { gone, task });
        self.ending.retain(|_, t| !t.is_finished());
    }

    /// Acts on one of systemd's signals.
    async fn handle(
        &mut self,
        conn: &Connection,
        raw: &Raw,
        shutdown: &Shutdown,
    ) -> Result<(), DbusError> {
        let signal = match signal::decode(raw, |path| self.units.contains_key(path)) {
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
                interface: UNIT,
                changed,
            } => self.changed(&path, changed, shutdown),
            Signal::UnitNew { name, path } => {
                let Some(uid) = manager_uid(&name) else {
                    return Ok(());
                };
                let mut props = UnitProperties::default();
                match call(conn, path.as_str(), PROPERTIES, "GetAll", &(UNIT,)).await {
                    Ok(reply) => {
                        let all: Changed = reply.body().deserialize()?;
                        merge(&mut props, all, clock::frame());
                    }
                    Err(e) => tracing::debug!(unit = %name, error = %e, "cannot read unit"),
                }
                let (state, at) = (props.active_state, props.state_change);
                self.units.insert(path, (uid, props));
                self.settle(uid, state, at, shutdown);
            }
            Signal::UnitRemoved { name } => {
                if let Some(uid) = manager_uid(&name) {
                    self.units.retain(|_, (u, _)| *u != uid);
                    self.settle(uid, Some(ActiveState::Inactive), 0, shutdown);
                }
            }
            Signal::Reloading { active: false } => self.snapshot(conn, shutdown).await?,
            _ => {}
        }
        Ok(())
    }

    /// A `user@UID.service` unit's properties changed.
    fn changed(&mut self, path: &OwnedObjectPath, changed: Changed, shutdown: &Shutdown) {
        let Some((uid, props)) = self.units.get_mut(path) else {
            return;
        };
        merge(props, changed, clock::frame());
        let (uid, state, at) = (*uid, props.active_state, props.state_change);
        self.settle(uid, state, at, shutdown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_manager_units_and_their_uids() {
        assert_eq!(manager_uid("user@1000.service"), Some(1000));
        assert_eq!(manager_uid("user@0.service"), Some(0));
        for not in [
            "user@.service",
            "user@+1.service",
            "user@alice.service",
            "user-runtime-dir@1000.service",
            "user@1000.slice",
            "user@99999999999.service",
        ] {
            assert_eq!(manager_uid(not), None, "{not}");
        }
        assert_eq!(socket(1000), "/run/user/1000/systemd/private");
    }

    #[test]
    fn a_user_without_a_name_is_its_uid() {
        assert_eq!(user_name(0), "root");
        // No passwd entry has this UID (the overflow UID is 65534).
        assert_eq!(user_name(4_000_000_123), "4000000123");
    }

    #[test]
    fn the_news_of_a_user_manager_names_it() {
        let gone = input(Some("alice"), Manager::Gone { at: 5 });
        assert!(matches!(
            gone,
            Input::UserManager { ref user, news: Manager::Gone { at: 5 } } if user == "alice"
        ));
        // The system manager's news keeps the inputs it always had.
        assert!(matches!(
            input(None, Manager::Up { units: 3 }),
            Input::SnapshotDone { units: 3 }
        ));
        assert!(matches!(
            input(None, Manager::Lost { at: 7 }),
            Input::DbusLost { at: 7 }
        ));
    }

    #[tokio::test]
    async fn gone_is_never_for_the_system_manager_and_once_for_a_user_manager() {
        let mut never = Gone::default();
        assert_eq!(never.at(), None);
        let waited = tokio::time::timeout(Duration::from_millis(20), never.wait()).await;
        assert!(waited.is_err(), "the system manager never goes");
        let (tx, rx) = watch::channel(None);
        let mut gone = Gone(Some(rx));
        assert_eq!(gone.at(), None);
        tx.send_replace(Some(42));
        // Told, then the teller went: still known.
        drop(tx);
        assert_eq!(gone.at(), Some(42));
        assert_eq!(gone.wait().await, 42);
    }
}
