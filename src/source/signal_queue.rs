//! The queue between the bus and the D-Bus source: systemd's signals, as
//! the tap ([`crate::source::tap`]) takes them off the socket, kept in a
//! bounded queue until the source handles them; what does not fit is dropped
//! and counted, and the source is told where, so it can re-read what it
//! missed. Only signals that systemd sent get in (see "Why check the
//! sender?").
//!
//! Why does the tap never wait for room? zbus hands a method call's reply
//! over only once it is read, and the source makes method calls while it
//! handles signals — `GetAll` of a new unit, a whole snapshot after a reload
//! — so a reader waiting for the source to make room would stall the reply
//! behind the very signals the source has not handled yet: a deadlock. So
//! [`Inlet::signal`] never waits.
//!
//! Why not an unbounded queue? A storm (thousands of units restarting, a
//! crash loop of many) then grows unitwatch's memory without limit while the
//! source works through it. Here the queue holds [`CAPACITY`] signals; when
//! it is full, arriving signals are dropped and counted until the source has
//! taken every signal queued before them (so a storm that goes on is one
//! episode, not one per slot), and then a [`Queued::Overflow`] takes their
//! place. The source then re-reads every unit they were about the way the
//! snapshot does: systemd's timestamps and counters carry what the dropped
//! signals said, and the journal fills in the states between (as after a
//! reconnect).
//!
//! Why check the sender? The bus applies a match rule's `sender` only to
//! broadcast signals: a signal addressed to unitwatch's connection is
//! delivered whoever sent it (the system bus lets any local user send
//! signals). Without a check, any local user could make unitwatch count
//! restarts and failures that never happened (a forged `PropertiesChanged`
//! with `NRestarts`) or re-read every unit over and over. So the queue takes
//! only signals whose sender is the current owner of `org.freedesktop.systemd1`
//! (the bus sets the sender; it cannot be forged), following the bus's
//! `NameOwnerChanged` for it (systemd reconnects to the bus under a new name
//! on `daemon-reexec`). The bus sends those on the same socket as systemd's
//! signals, and the tap takes both in the order sent: an owner change is
//! seen before anything its new owner sends.
//!
//! Why ask the bus for so little? systemd sends, at each change of a unit,
//! one `PropertiesChanged` for every interface the unit has (`Unit`, and
//! `Service`, `Socket`, `Mount` ...), and its own at each failure
//! (`NFailedUnits`): each costs unitwatch a wakeup and a read before it can
//! be dropped. So the bus is asked (`AddMatch`) only for the manager's
//! signals and the `PropertiesChanged` of the interfaces unitwatch reads
//! ([`rules`]), and for the changes of systemd's name. Measured in a flap
//! storm (3 units restarting every 100 ms, instructions counted by
//! callgrind): 1.62 million instructions a restart before, 1.51 after.
//!
//! On a direct connection to systemd ([`open_direct`]: a user manager's
//! private socket) there is no bus: every message comes from the peer at
//! the other end, and there is no one else who could send one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};
use zbus::message::Type as MessageType;
use zbus::names::OwnedUniqueName;
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, MatchRule, Message};

use crate::clock;
use crate::ledger::Usec;
use crate::source::bus::Heard;
use crate::source::signal::{self, Throttle, MANAGER, PROPERTIES, SERVICE, TIMER, UNIT};
use crate::source::wire::{Position, Raw};

/// Where systemd's units are on the bus.
const UNITS_PATH: &str = "/org/freedesktop/systemd1/unit";

/// The bus itself, as the sender of its own messages; no connection can
/// have this name.
pub const BUS: &str = "org.freedesktop.DBus";

/// The name systemd owns on the bus.
pub const SYSTEMD: &str = "org.freedesktop.systemd1";

/// Capacity of zbus's message queues. On a tapped connection no stream is
/// opened (the tap takes the signals); the sampler's connection, untapped,
/// has two, drained as they come by tasks of their own, so they only need
/// to cover a short delay of those; when full, zbus stops reading the
/// socket until there is room: nothing is lost there.
pub const ZBUS_QUEUED: usize = 4096;

/// How many signals wait at most. A signal is up to some 1.2 KiB (a unit's
/// `PropertiesChanged` carries all of its change-emitting properties;
/// measured with systemd 252), so a full queue is some 10 MiB; a burst of
/// 1000 units restarting at once (some 18 signals each) fills it to about 600.
pub const CAPACITY: usize = 8192;

/// Overrides [`CAPACITY`], for tests that need a storm larger than the queue.
pub const CAPACITY_ENV: &str = "UNITWATCH_DBUS_QUEUE";

/// The queue's capacity: [`CAPACITY`], unless [`CAPACITY_ENV`] says otherwise.
pub fn capacity() -> usize {
    std::env::var(CAPACITY_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(CAPACITY)
}

/// What waits in the queue.
#[derive(Debug)]
pub enum Queued {
    Signal(Raw),
    /// `dropped` signals did not fit, the first at `since` (unitwatch's
    /// clock); they would have been here.
    Overflow {
        since: Usec,
        dropped: u64,
        /// The object paths of the units whose `PropertiesChanged` were
        /// among them; `None` when they were more than [`MISSED_UNITS`] or a
        /// manager's signal that says which units there are (`UnitNew`,
        /// `UnitRemoved`, `Reloading`) was: every unit is to be read again.
        units: Option<HashSet<OwnedObjectPath>>,
    },
}

/// systemd's unique name on the bus as last heard, and where in the
/// connection's messages it was heard: the latest news wins, whichever way it
/// came (`GetNameOwner`'s reply or a `NameOwnerChanged`).
#[derive(Debug, Default)]
struct Owner {
    name: Option<OwnedUniqueName>,
    at: Position,
    /// A direct connection: every message is systemd's.
    direct: bool,
}

impl Owner {
    fn heard(&mut self, name: Option<OwnedUniqueName>, at: Position) {
        if at >= self.at {
            self.name = name;
            self.at = at;
        }
    }

    /// Whether `sender` is systemd.
    fn is(&self, sender: Option<&str>) -> bool {
        self.direct || (sender.is_some() && sender == self.name.as_ref().map(|o| o.as_str()))
    }

    /// Takes in a `NameOwnerChanged` if the bus sent it and it is about systemd.
    fn changed(&mut self, raw: &Raw) {
        let fields = raw.fields();
        if fields.sender != Some(BUS) || fields.member != Some("NameOwnerChanged") {
            return;
        }
        let Ok((name, _old, new)) = raw.body::<(String, String, String)>("sss") else {
            return;
        };
        if name == SYSTEMD {
            tracing::debug!(owner = %new, "systemd's name on the bus changed hands");
            self.heard(OwnedUniqueName::try_from(new).ok(), raw.at());
        }
    }

    /// Whether `raw`, a signal, is one systemd sent; takes in the bus's
    /// news of who that is, and logs (throttled) a signal sent by anyone else.
    fn sent(&mut self, raw: &Raw, foreign: &mut Throttle) -> bool {
        let sender = raw.fields().sender;
        if self.is(sender) {
            return true;
        }
        if sender == Some(BUS) {
            self.changed(raw);
        } else {
            signal::warn_ignored(
                foreign,
                Instant::now(),
                raw,
                &format!(
                    "not sent by systemd (the owner of {SYSTEMD} is {})",
                    self.name.as_ref().map_or("nobody", |o| o.as_str())
                ),
            );
        }
        false
    }
}

/// What the queue starts from once systemd's name is known.
pub struct Start {
    /// systemd's unique name, as `GetNameOwner` for [`SYSTEMD`] said
    /// (`None`: a direct connection, where every message is systemd's)...
    pub owner: Option<OwnedUniqueName>,
    /// ... in the reply received here.
    pub at: Position,
}

/// What the tap and the source share of a queue.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    heard: Heard,
}

#[derive(Debug)]
struct State {
    /// `None` until the [`Start`]: nothing of systemd's is asked for
    /// before, and only the bus's news of its name is followed.
    started: bool,
    owner: Owner,
    /// Signals dropped since the queue was last full.
    lost: Option<Lost>,
    foreign: Throttle,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done that
        // matters more than going on.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where the tap puts what it reads ([`crate::source::tap`]).
#[derive(Debug)]
pub struct Inlet {
    tx: mpsc::Sender<Queued>,
    shared: Arc<Shared>,
}

impl Inlet {
    /// A signal read off the socket: queued if systemd sent it, dropped
    /// and counted if the queue is full. Never waits.
    pub fn signal(&self, raw: Raw) {
        let mut guard = self.shared.state();
        let state = &mut *guard;
        if !state.started {
            state.owner.changed(&raw);
            return;
        }
        if !state.owner.sent(&raw, &mut state.foreign) {
            return;
        }
        self.shared.heard.now();
        if let Some(lost) = &mut state.lost {
            lost.add(&raw);
            return;
        }
        match self.tx.try_send(Queued::Signal(raw)) {
            Ok(()) => {}
            Err(TrySendError::Full(Queued::Signal(raw))) => state.lost = Some(Lost::new(&raw)),
            // The source is gone; the session ends with it.
            Err(_) => {}
        }
    }

    /// A reply read off the socket: a reply of systemd's counts as hearing
    /// from it (what it signalled before, it sent before).
    pub fn replied(&self, sender: Option<&str>) {
        if self.shared.state().owner.is(sender) {
            self.shared.heard.now();
        }
    }
}

/// The queue, as the source takes from it; it ends when the connection does
/// (the tap, and the inlet with it, goes with the connection).
#[derive(Debug)]
pub struct Queue {
    rx: mpsc::Receiver<Queued>,
    shared: Arc<Shared>,
}

impl Queue {
    /// When systemd was last heard on the connection.
    pub fn heard(&self) -> Heard {
        self.shared.heard.clone()
    }

    /// Queues systemd's signals from `start` on.
    pub fn start(&self, start: Start) {
        let mut state = self.shared.state();
        state.owner.direct = start.owner.is_none();
        state.owner.heard(start.owner, start.at);
        state.started = true;
    }

    /// The next item; `None` once the connection is gone. An overflow
    /// comes once every signal queued before it was taken.
    pub async fn recv(&mut self) -> Option<Queued> {
        match self.ready() {
            Ok(item) => Some(item),
            Err(TryRecvError::Disconnected) => None,
            // Only a full queue starts an episode of loss, so while this
            // waits on an empty queue none can begin.
            Err(TryRecvError::Empty) => self.rx.recv().await,
        }
    }

    /// The next item if there is one now.
    pub fn ready(&mut self) -> Result<Queued, TryRecvError> {
        match self.rx.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => return other,
        }
        match self.shared.state().lost.take() {
            Some(Lost {
                since,
                dropped,
                units,
            }) => Ok(Queued::Overflow {
                since,
                dropped,
                units,
            }),
            None => Err(TryRecvError::Empty),
        }
    }
}

/// A queue of `capacity` for the signals of a connection, and the inlet
/// its tap fills it through.
pub fn new(capacity: usize) -> (Inlet, Queue) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            started: false,
            owner: Owner::default(),
            lost: None,
            foreign: Throttle::new(signal::WARN_EVERY),
        }),
        heard: Heard::default(),
    });
    (
        Inlet {
            tx,
            shared: shared.clone(),
        },
        Queue { rx, shared },
    )
}

/// Subscribes to systemd's signals on `conn`, whose tap fills `queue`, and
/// starts queueing them.
pub async fn open(conn: &Connection, queue: &Queue) -> zbus::Result<()> {
    // Who systemd is on the bus, and who it becomes: changes subscribed to
    // before asking, so none is missed.
    let owners = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(BUS)?
        .interface(BUS)?
        .member("NameOwnerChanged")?
        .arg(0, SYSTEMD)?
        .build();
    add_match(conn, &owners).await?;
    let reply = call_bus(conn, "GetNameOwner", &(SYSTEMD,)).await?;
    queue.start(Start {
        owner: Some(reply.body().deserialize()?),
        at: Position::of(&reply),
    });
    for rule in rules()? {
        add_match(conn, &rule).await?;
    }
    Ok(())
}

/// Asks the bus to send what `rule` matches.
async fn add_match(conn: &Connection, rule: &MatchRule<'_>) -> zbus::Result<()> {
    call_bus(conn, "AddMatch", &(rule.to_string(),))
        .await
        .map(drop)
}

/// Calls `method` of the bus itself.
async fn call_bus<B>(conn: &Connection, method: &str, body: &B) -> zbus::Result<Message>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(Some(BUS), "/org/freedesktop/DBus", Some(BUS), method, body)
        .await
}

/// What the bus is asked to send of systemd's: the manager's own signals
/// (`UnitNew`, `JobRemoved`, ...) and the `PropertiesChanged` of the
/// interfaces whose properties unitwatch reads. Not the manager's
/// `PropertiesChanged` (`NFailedUnits` at every failure) nor those of
/// sockets, mounts, slices and the like.
fn rules() -> zbus::Result<Vec<MatchRule<'static>>> {
    let mut rules = vec![MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(SYSTEMD)?
        .interface(MANAGER)?
        .build()];
    for interface in [UNIT, SERVICE, TIMER] {
        rules.push(
            MatchRule::builder()
                .msg_type(MessageType::Signal)
                .sender(SYSTEMD)?
                .interface(PROPERTIES)?
                .member("PropertiesChanged")?
                .path_namespace(UNITS_PATH)?
                .arg(0, interface)?
                .build(),
        );
    }
    Ok(rules)
}

/// Like [`open`], on a direct connection to systemd (no bus, no owner to
/// follow: every message is from the peer, and it sends its signals
/// without being asked).
pub fn open_direct(queue: &Queue) {
    queue.start(Start {
        owner: None,
        at: Position::default(),
    });
}

/// Signals dropped since the queue was last full.
#[derive(Debug)]
struct Lost {
    since: Usec,
    dropped: u64,
    units: Option<HashSet<OwnedObjectPath>>,
}

/// How many units' dropped signals are told apart before every unit is
/// read again.
pub const MISSED_UNITS: usize = 4096;

impl Lost {
    fn new(raw: &Raw) -> Lost {
        let mut lost = Lost {
            since: clock::now(),
            dropped: 0,
            units: Some(HashSet::new()),
        };
        lost.add(raw);
        lost
    }

    /// Counts `raw` and notes what it was about. A job's signals need no
    /// read: the jobs followed are forgotten at an overflow, as at a lost
    /// connection, and the journal tells restarts by hand.
    fn add(&mut self, raw: &Raw) {
        self.dropped += 1;
        let fields = raw.fields();
        match (fields.member, &mut self.units) {
            (Some("JobNew" | "JobRemoved"), _) | (_, None) => {}
            (Some("PropertiesChanged"), Some(units)) => {
                match fields.path.and_then(|p| OwnedObjectPath::try_from(p).ok()) {
                    None => {}
                    // A unit already named is no more to read.
                    Some(path) if units.contains(&path) => {}
                    Some(path) if units.len() < MISSED_UNITS => {
                        units.insert(path);
                    }
                    Some(_) => self.units = None,
                }
            }
            _ => self.units = None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
