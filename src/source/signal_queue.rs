//! The queue between zbus and the D-Bus source: systemd's signals, taken off
//! zbus's stream as they come and kept in a bounded queue until the source
//! handles them; what does not fit is dropped and counted, and the source is
//! told where, so it can re-read what it missed. Only signals that systemd
//! sent get in (see "Why check the sender?").
//!
//! Why not let zbus's own bounded queue push back? When a stream's queue is
//! full, zbus's socket reader waits for room before it reads the next
//! message, and a method call's reply is only handed over once it is read
//! (zbus 5, `connection/socket_reader.rs`: `broadcast_direct(..).await` for
//! every matching stream). The source makes method calls while it handles
//! signals — `GetAll` of a new unit, a whole snapshot after a reload — so if
//! it read zbus's stream itself, a storm filling that queue while it waited
//! for a reply would stall the reply behind the very signals it has not
//! handled yet: a deadlock. So the stream is always drained at once, by a
//! task of its own that never waits, into this queue.
//!
//! Why not an unbounded queue? A storm (thousands of units restarting, a
//! crash loop of many) then grows unitwatch's memory without limit while the
//! source works through it. Here the queue holds [`CAPACITY`] signals; when
//! it is full, arriving signals are dropped and counted until half of it is
//! free again (so a storm that goes on is one episode, not one per slot),
//! and then a [`Queued::Overflow`] takes the place of the dropped ones. The
//! source then re-reads every watched unit the way the snapshot does:
//! systemd's timestamps and counters carry what the dropped signals said,
//! and the journal fills in the states between (as after a reconnect).
//!
//! Why check the sender? The bus applies a match rule's `sender` only to
//! broadcast signals: a signal addressed to unitwatch's connection is
//! delivered whoever sent it (the system bus lets any local user send
//! signals), and zbus's own check of a rule cannot compare a well-known
//! sender name with a message's unique one, so it lets every signal through.
//! Without a check, any local user could make unitwatch count restarts and
//! failures that never happened (a forged `PropertiesChanged` with
//! `NRestarts`) or re-read every unit over and over. So the queue takes only
//! signals whose sender is the current owner of `org.freedesktop.systemd1`
//! (the bus sets the sender; it cannot be forged), following the bus's
//! `NameOwnerChanged` for it (systemd reconnects to the bus under a new name
//! on `daemon-reexec`). The bus sends those on the same socket as systemd's
//! signals, and both come through the one stream, in the order sent: an
//! owner change is seen before anything its new owner sends.
//!
//! Why ask the bus for so little? systemd sends, at each change of a unit,
//! one `PropertiesChanged` for every interface the unit has (`Unit`, and
//! `Service`, `Socket`, `Mount` ...), and its own at each failure
//! (`NFailedUnits`): each costs unitwatch a wakeup, a read and zbus's
//! parsing of its header before it can be dropped. So the bus is asked
//! (`AddMatch`) only for the manager's signals and the `PropertiesChanged`
//! of the interfaces unitwatch reads ([`rules`]), and for the changes of
//! systemd's name. zbus's own streams would add a rule of their own, and
//! one that says which interface (an `arg0`) makes zbus decode every
//! message's body to check it (and every stream's rule is checked against
//! every message, its header built anew each time); so all of it comes
//! through the connection's stream of every message it reads, which asks
//! the bus for nothing, and replies to unitwatch's calls are dropped here.
//! Measured in a flap storm (3 units restarting every 100 ms, instructions
//! counted by callgrind): 1.62 million instructions a restart before, 1.51
//! after.
//!
//! On a direct connection to systemd ([`open_direct`]: a user manager's
//! private socket) there is no bus: every message comes from the peer at
//! the other end, and there is no one else who could send one.

use std::collections::HashSet;
use std::time::Instant;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::oneshot;
use zbus::message::{Sequence, Type as MessageType};
use zbus::names::OwnedUniqueName;
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::clock;
use crate::ledger::Usec;
use crate::source::bus::Heard;
use crate::source::signal::{self, Throttle, MANAGER, PROPERTIES, SERVICE, TIMER, UNIT};
use crate::source::wire;

/// Where systemd's units are on the bus.
const UNITS_PATH: &str = "/org/freedesktop/systemd1/unit";

/// The bus itself, as the sender of its own messages; no connection can
/// have this name.
pub const BUS: &str = "org.freedesktop.DBus";

/// The name systemd owns on the bus.
pub const SYSTEMD: &str = "org.freedesktop.systemd1";

/// Capacity of zbus's message queues. Signals are drained from them into
/// this queue as they come, so they only need to cover a short delay of
/// that task; zbus allocates them in full (some 120 bytes a slot), so a large
/// one costs resident memory as a burst walks through it. When full, zbus
/// stops reading the socket until there is room: nothing is lost there.
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
    Signal(Message),
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
    /// Every signal zbus had read when [`Drain::flush`] was asked came
    /// before this.
    Flushed,
}

/// systemd's unique name on the bus as last heard, and where in the
/// connection's messages it was heard: the latest news wins, whichever way it
/// came (`GetNameOwner`'s reply or a `NameOwnerChanged`).
#[derive(Debug, Default)]
struct Owner {
    name: Option<OwnedUniqueName>,
    at: Sequence,
    /// A direct connection: every message is systemd's.
    direct: bool,
}

impl Owner {
    fn heard(&mut self, name: Option<OwnedUniqueName>, at: Sequence) {
        if at >= self.at {
            self.name = name;
            self.at = at;
        }
    }

    /// Takes in a `NameOwnerChanged` if the bus sent it and it is about systemd.
    fn changed(&mut self, msg: &Message) {
        if msg.message_type() != MessageType::Signal {
            return;
        }
        let header = msg.header();
        if header.sender().map(|s| s.as_str()) != Some(BUS)
            || header.member().map(|m| m.as_str()) != Some("NameOwnerChanged")
        {
            return;
        }
        let Ok((name, _old, new)) = msg.body().deserialize::<(String, String, String)>() else {
            return;
        };
        if name == SYSTEMD {
            tracing::debug!(owner = %new, "systemd's name on the bus changed hands");
            self.heard(OwnedUniqueName::try_from(new).ok(), msg.recv_position());
        }
    }

    /// Whether `msg` is a signal systemd sent; takes in the bus's news of
    /// who that is, notes when systemd was last `heard` (a reply of its
    /// counts: what it signalled before, it sent before), and logs
    /// (throttled) a signal sent by anyone else.
    fn sent(&mut self, msg: &Message, foreign: &mut Throttle, heard: &Heard) -> bool {
        // The stream has every message the connection reads: the replies
        // to unitwatch's own calls too.
        let signal = msg.message_type() == MessageType::Signal;
        if self.direct {
            heard.now();
            return signal;
        }
        wire::with_fields(msg, |fields| {
            if fields.sender.is_some() && fields.sender == self.name.as_ref().map(|o| o.as_str()) {
                heard.now();
                return signal;
            }
            if signal {
                self.foreign(msg, fields.sender, foreign);
            }
            false
        })
    }

    /// A signal not sent by systemd: the bus's news of its name is taken
    /// in, anyone else's logged.
    fn foreign(&mut self, msg: &Message, sender: Option<&str>, foreign: &mut Throttle) {
        if sender == Some(BUS) {
            self.changed(msg);
        } else {
            signal::warn_ignored(
                foreign,
                Instant::now(),
                msg,
                &format!(
                    "not sent by systemd (the owner of {SYSTEMD} is {})",
                    self.name.as_ref().map_or("nobody", |o| o.as_str())
                ),
            );
        }
    }
}

/// What the queue starts from once systemd's name is known.
pub struct Start {
    /// systemd's unique name, as `GetNameOwner` for [`SYSTEMD`] said
    /// (`None`: a direct connection, where every message is systemd's)...
    pub owner: Option<OwnedUniqueName>,
    /// ... in the reply received here.
    pub at: Sequence,
}

/// The task draining the queue; stopped when dropped, so no path out of a
/// session leaves it (and the connection its streams hold) behind.
pub struct Drain {
    task: tokio::task::JoinHandle<()>,
    flush: mpsc::Sender<()>,
    heard: Heard,
}

impl Drain {
    /// When systemd was last heard on the connection.
    pub fn heard(&self) -> Heard {
        self.heard.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks for a [`Queued::Flushed`] after every signal zbus has read by
    /// now. zbus hands a method call's reply over only once every message
    /// read before it went to the streams, so after a reply this queues
    /// every signal systemd sent before it answered.
    pub fn flush(&self) {
        let _ = self.flush.try_send(());
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes to systemd's signals on `conn` and starts draining them into
/// a queue of `capacity`; the queue ends when the connection does.
pub async fn open(
    conn: &Connection,
    capacity: usize,
) -> zbus::Result<(Drain, mpsc::Receiver<Queued>)> {
    // Every message the connection reads, in the order read (see "Why ask
    // the bus for so little?"), drained from now on.
    let mut unfiltered = conn.clone();
    unfiltered.set_max_queued(ZBUS_QUEUED);
    let (drain, starter, queue) = spawn(MessageStream::from(unfiltered), capacity);
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
    let owner = Some(reply.body().deserialize()?);
    let start = Start {
        owner,
        at: reply.recv_position(),
    };
    // Only fails if the task ended, and then so did the connection: the
    // queue is already closed, which ends the session.
    let _ = starter.send(start);
    for rule in rules()? {
        add_match(conn, &rule).await?;
    }
    Ok((drain, queue))
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
/// follow: every message is from the peer).
pub async fn open_direct(
    conn: &Connection,
    capacity: usize,
) -> zbus::Result<(Drain, mpsc::Receiver<Queued>)> {
    // No sender: messages on a direct connection carry none.
    let rule = MatchRule::builder().msg_type(MessageType::Signal).build();
    let signals = MessageStream::for_match_rule(rule, conn, Some(ZBUS_QUEUED)).await?;
    let (drain, starter, queue) = spawn(signals, capacity);
    let _ = starter.send(Start {
        owner: None,
        at: Sequence::default(),
    });
    Ok((drain, queue))
}

/// Starts draining `messages` at once, so they never pile up in zbus,
/// following the bus's `NameOwnerChanged` for [`SYSTEMD`] among them; once
/// [`Start`] comes, queues the signals systemd sent, in a queue of
/// `capacity`. The task ends when the stream does (the connection closed),
/// or the `Start` or the receiver is dropped.
pub fn spawn<S>(
    messages: S,
    capacity: usize,
) -> (Drain, oneshot::Sender<Start>, mpsc::Receiver<Queued>)
where
    S: Stream<Item = zbus::Result<Message>> + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (start, started) = oneshot::channel();
    let (flush, flushes) = mpsc::channel(1);
    let heard = Heard::default();
    let task = tokio::spawn(drain(messages, started, tx, flushes, heard.clone()));
    (Drain { task, flush, heard }, start, rx)
}

/// Signals dropped since the queue was last full.
struct Lost {
    since: Usec,
    dropped: u64,
    units: Option<HashSet<OwnedObjectPath>>,
}

/// How many units' dropped signals are told apart before every unit is
/// read again.
pub const MISSED_UNITS: usize = 4096;

impl Lost {
    fn new(msg: &Message) -> Lost {
        let mut lost = Lost {
            since: clock::now(),
            dropped: 0,
            units: Some(HashSet::new()),
        };
        lost.add(msg);
        lost
    }

    /// Counts `msg` and notes what it was about. A job's signals need no
    /// read: the jobs followed are forgotten at an overflow, as at a lost
    /// connection, and the journal tells restarts by hand.
    fn add(&mut self, msg: &Message) {
        self.dropped += 1;
        let header = msg.header();
        match (header.member().map(|m| m.as_str()), &mut self.units) {
            (Some("JobNew" | "JobRemoved"), _) | (_, None) => {}
            (Some("PropertiesChanged"), Some(units)) => match header.path() {
                None => {}
                // A unit already named is no more to read.
                Some(path) if units.contains(path) => {}
                Some(path) if units.len() < MISSED_UNITS => {
                    units.insert(path.clone().into());
                }
                Some(_) => self.units = None,
            },
            _ => self.units = None,
        }
    }
}

async fn drain<S>(
    mut messages: S,
    mut started: oneshot::Receiver<Start>,
    tx: mpsc::Sender<Queued>,
    mut flushes: mpsc::Receiver<()>,
    heard: Heard,
) where
    S: Stream<Item = zbus::Result<Message>> + Unpin,
{
    let mut owner = Owner::default();
    loop {
        tokio::select! {
            // The start first: what comes after it in the stream is news.
            biased;
            start = &mut started => {
                let Ok(Start { owner: name, at }) = start else { return };
                owner.direct = name.is_none();
                owner.heard(name, at);
                break;
            }
            // Nothing of systemd's is asked for before the start.
            msg = messages.next() => {
                let Some(Ok(msg)) = msg else { return };
                owner.changed(&msg);
            }
        }
    }
    // Half the queue free before taking signals again.
    let resume = (tx.max_capacity() / 2).max(1);
    let mut lost: Option<Lost> = None;
    let mut foreign = Throttle::new(signal::WARN_EVERY);
    loop {
        tokio::select! {
            biased;
            Some(()) = flushes.recv() => {
                // What zbus read is in the stream by now: all that is ready.
                while let Some(Some(Ok(msg))) = messages.next().now_or_never() {
                    if owner.sent(&msg, &mut foreign, &heard) && tx.send(Queued::Signal(msg)).await.is_err() {
                        return;
                    }
                }
                if tx.send(Queued::Flushed).await.is_err() {
                    return;
                }
            }
            room = tx.reserve_many(resume), if lost.is_some() => {
                let Ok(mut permits) = room else { return };
                if let (Some(Lost { since, dropped, units }), Some(permit)) = (lost.take(), permits.next()) {
                    permit.send(Queued::Overflow { since, dropped, units });
                }
            }
            msg = messages.next() => {
                // An error is the connection's, and the last item.
                let Some(Ok(msg)) = msg else { return };
                if !owner.sent(&msg, &mut foreign, &heard) {
                    continue;
                }
                if let Some(lost) = &mut lost {
                    lost.add(&msg);
                    continue;
                }
                match tx.try_send(Queued::Signal(msg)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(Queued::Signal(msg))) => lost = Some(Lost::new(&msg)),
                    Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Closed(_)) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
