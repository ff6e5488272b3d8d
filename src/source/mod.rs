//! Sources: adapters that turn the outside world into ledger events, sent
//! to the owner as [`Input`](crate::message::Input)s.
//!
//! The journal is the history source: it runs first, up to now, so that the
//! past is applied before the present ([`journal`]). Every live source
//! implements [`Source`] and is started by [`spawn`]: a new one is a new
//! file here and one line in `server::run`.

pub mod bus;
pub mod cgroup;
pub mod changed;
pub mod dbus;
pub mod journal;
mod journal_maps;
pub mod journal_record;
mod private;
pub mod properties;
mod read;
pub mod sampler;
pub mod signal;
pub mod signal_queue;
mod tap;
pub mod timers;
pub mod users;
mod wire;

use std::future::Future;
use std::pin::Pin;

use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;

/// A running source's work, to be spawned.
pub type Run = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A live source, made with the sender of the owner's inputs it sends
/// what it learns to.
pub trait Source: Send + 'static {
    /// Its name, for logs.
    fn name(&self) -> &'static str;
    /// Its work; it must return soon after `shutdown` fires.
    fn run(self: Box<Self>, shutdown: Shutdown) -> Run;
}

/// Starts `source` on the runtime.
pub fn spawn(source: Box<dyn Source>, shutdown: Shutdown) -> JoinHandle<()> {
    tracing::debug!(source = source.name(), "starting source");
    tokio::spawn(source.run(shutdown))
}
