//! What the owner task publishes for readers: an immutable copy of the
//! ledger and unitwatch's own numbers, swapped in whole after every burst of
//! events. Readers (`/metrics`, the API, the page, persistence) take the
//! latest one and render it wherever they run; the owner never waits for
//! them, and a reader never sees half of a burst.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::ledger::{Ledger, Origin};
use crate::sample::Sample;

/// Events applied to the ledger, by where they came from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    pub dbus: u64,
    pub journal: u64,
}

impl Events {
    pub fn count(&mut self, origin: Origin) {
        match origin {
            Origin::Dbus => self.dbus += 1,
            Origin::Journal => self.journal += 1,
        }
    }
}

/// Numbers about unitwatch itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub events: Events,
    /// Whether the journal is being read.
    pub journal_up: bool,
    /// Whether the D-Bus connection is up.
    pub dbus_up: bool,
    /// Times the D-Bus connection came back after it was lost.
    pub dbus_reconnects: u64,
    /// Times systemd's signals overflowed the D-Bus source's queue.
    pub dbus_overflows: u64,
    /// Times the journal had lost records unitwatch had not read yet.
    pub journal_gaps: u64,
    /// The user managers followed since unitwatch started (`[watch]
    /// user_managers`), by user: whether connected now.
    pub user_managers: BTreeMap<String, bool>,
}

/// The state of everything as of the last burst of events.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Shares its accounts with the owner's ledger (copy-on-write).
    pub ledger: Ledger,
    pub stats: Stats,
    /// The clock frame the ledger's times are in ([`crate::clock`]).
    pub frame: i64,
    /// The sampler's last round: resources, sockets, watchdogs, the host.
    pub sample: Arc<Sample>,
}

impl Snapshot {
    /// Now, in the snapshot's clock frame: after a wall-clock step, a read
    /// of a snapshot taken before the owner moved the ledger still measures
    /// open intervals on the ledger's own scale, so no counter goes back.
    pub fn now(&self) -> crate::ledger::Usec {
        crate::clock::to_frame(crate::clock::monotonic(), self.frame)
    }
}

/// The owner's end: publishes snapshots.
#[derive(Debug)]
pub struct Publisher(watch::Sender<Arc<Snapshot>>);

/// A reader's end: a cheap, clonable handle to the latest snapshot.
#[derive(Debug, Clone)]
pub struct Snapshots(watch::Receiver<Arc<Snapshot>>);

/// A connected pair, starting with `first`.
pub fn channel(first: Snapshot) -> (Publisher, Snapshots) {
    let (tx, rx) = watch::channel(Arc::new(first));
    (Publisher(tx), Snapshots(rx))
}

impl Publisher {
    /// Makes `snapshot` the one readers get from now on.
    pub fn publish(&self, snapshot: Snapshot) {
        self.0.send_replace(Arc::new(snapshot));
    }
}

impl Snapshots {
    /// The latest snapshot. Holds a lock only for the copy of an `Arc`.
    pub fn latest(&self) -> Arc<Snapshot> {
        Arc::clone(&self.0.borrow())
    }

    /// Waits for a snapshot newer than the last one seen through this
    /// handle; an error once the owner is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.0.changed().await
    }
}
