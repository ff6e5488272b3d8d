//! Which service manager to follow and how to reach it: the bus (system,
//! session, an address) or a user manager's private socket, the connection
//! every D-Bus reader of unitwatch opens, when systemd was last heard on it,
//! and why a session with it ends.

use std::time::Duration;

use zbus::Connection;

use crate::clock;
use crate::ledger::Usec;
use crate::source::{private, signal_queue, users};

/// Which service manager to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bus {
    /// The system manager on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` is honoured).
    System,
    /// The calling user's manager on the session bus.
    User,
    /// The system manager on the bus at this D-Bus address (a manager in a
    /// container, or tests).
    Address(String),
    /// The manager of user `uid`, named `user` in labels, over its private
    /// socket (a direct connection: no bus; [`users`]).
    UserManager { uid: u32, user: String },
}

impl Bus {
    /// The user whose manager this is; `None` for the system manager's.
    pub fn user(&self) -> Option<&str> {
        match self {
            Bus::UserManager { user, .. } => Some(user),
            _ => None,
        }
    }
}

/// Connects to `bus`; with a `timeout`, a method call without a reply in
/// time fails rather than waiting for ever.
pub(crate) async fn connect(bus: &Bus, timeout: Option<Duration>) -> zbus::Result<Connection> {
    let mut builder = match bus {
        Bus::System => zbus::connection::Builder::system()?,
        Bus::User => zbus::connection::Builder::session()?,
        Bus::Address(address) => zbus::connection::Builder::address(address.as_str())?,
        Bus::UserManager { uid, .. } => {
            let stream = private::connect(&users::socket(*uid))
                .await
                .map_err(|e| zbus::Error::InputOutput(e.into()))?;
            zbus::connection::Builder::unix_stream(stream).p2p()
        }
    };
    if let Some(t) = timeout {
        builder = builder.method_timeout(t);
    }
    builder.max_queued(signal_queue::ZBUS_QUEUED).build().await
}

/// Why a session with the bus ended.
#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("the ledger task is gone")]
    LedgerGone,
    #[error("the bus connection closed")]
    Closed,
    #[error("unitwatch is stopping")]
    Stopped,
}

/// When systemd was last heard on a connection (unitwatch's clock; 0:
/// never): the time a lost connection stopped telling, which is when it
/// stopped being trusted alone. Changes after it went unsignalled, and only
/// the journal can tell them, whenever its records are read. (When the loss
/// is noticed is later, by how long the socket's end took to be read.)
/// Only what systemd sent counts, not the bus's own messages: the bus
/// announces systemd's leaving (`NameOwnerChanged`) after systemd has gone
/// silent, at a poweroff as soon as the bus itself begins to stop.
#[derive(Clone, Debug, Default)]
pub struct Heard(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Heard {
    /// Heard now.
    pub fn now(&self) {
        self.0
            .store(clock::now(), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn at(&self) -> Option<Usec> {
        Some(self.0.load(std::sync::atomic::Ordering::Relaxed)).filter(|t| *t > 0)
    }
}
