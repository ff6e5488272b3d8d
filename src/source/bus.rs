//! Which service manager to follow and how to reach it: the bus (system,
//! session, an address) or a user manager's private socket, the connection
//! every D-Bus reader of unitwatch opens (its signals tapped, [`tap`]), when systemd was last heard on it,
//! and why a session with it ends.

use std::time::Duration;

use tokio::net::UnixStream;
use zbus::address::transport::UnixSocket;
use zbus::connection::socket::{BoxedSplit, ReadHalf, Split, WriteHalf};
use zbus::Connection;

use crate::clock;
use crate::ledger::Usec;
use crate::source::signal_queue::Inlet;
use crate::source::tap::Tap;
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
/// time fails rather than waiting for ever. With an `inlet`, systemd's
/// signals go there, read off the socket by the tap ([`tap`]); without, the
/// connection is for calls only.
pub(crate) async fn connect(
    bus: &Bus,
    timeout: Option<Duration>,
    inlet: Option<Inlet>,
) -> zbus::Result<Connection> {
    let mut builder = match (bus, inlet) {
        (Bus::UserManager { uid, .. }, inlet) => {
            let stream = private::connect(&users::socket(*uid))
                .await
                .map_err(|e| zbus::Error::InputOutput(e.into()))?;
            match inlet {
                Some(inlet) => zbus::connection::Builder::socket(tapped(stream, inlet)),
                None => zbus::connection::Builder::unix_stream(stream),
            }
            .p2p()
        }
        (bus, Some(inlet)) => {
            let address = match bus {
                Bus::User => zbus::Address::session()?,
                Bus::Address(address) => address.parse()?,
                _ => zbus::Address::system()?,
            };
            let stream = unix_stream(&address).await?;
            zbus::connection::Builder::socket(tapped(stream, inlet))
        }
        (Bus::System, None) => zbus::connection::Builder::system()?,
        (Bus::User, None) => zbus::connection::Builder::session()?,
        (Bus::Address(address), None) => zbus::connection::Builder::address(address.as_str())?,
    };
    if let Some(t) = timeout {
        builder = builder.method_timeout(t);
    }
    builder.max_queued(signal_queue::ZBUS_QUEUED).build().await
}

/// `stream`, its reading half tapped for `inlet`.
fn tapped(stream: UnixStream, inlet: Inlet) -> BoxedSplit {
    let (read, write) = stream.into_split();
    let read: Box<dyn ReadHalf> = Box::new(Tap::new(read, inlet));
    let write: Box<dyn WriteHalf> = Box::new(write);
    Split::new(read, write)
}

/// A stream connected to the bus at `address`: a socket in the file system
/// or, on Linux, an abstract one. The tap reads a unix socket; the bus is
/// reached through one on every system systemd runs.
async fn unix_stream(address: &zbus::Address) -> zbus::Result<UnixStream> {
    let io = |e: std::io::Error| zbus::Error::InputOutput(e.into());
    let zbus::address::Transport::Unix(unix) = address.transport() else {
        return Err(zbus::Error::Address(format!(
            "{address}: unitwatch reaches the bus over a unix socket only"
        )));
    };
    match unix.path() {
        UnixSocket::File(path) => UnixStream::connect(path).await.map_err(io),
        UnixSocket::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_encoded_bytes())
                .map_err(io)?;
            let std = std::os::unix::net::UnixStream::connect_addr(&addr).map_err(io)?;
            std.set_nonblocking(true).map_err(io)?;
            UnixStream::from_std(std).map_err(io)
        }
        _ => Err(zbus::Error::Address(format!(
            "{address}: not a socket unitwatch can connect to"
        ))),
    }
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
