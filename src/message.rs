//! The messages sources and readers send to the owner task: the only way
//! into the ledger. Kept apart from the owner so that sources depend on
//! these types, not on the task that consumes them.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::ledger::{Event, Usec};
use crate::sample::Sample;

/// What the ledger task is asked to do.
#[derive(Debug)]
pub enum Input {
    /// Apply an event. `frame`: the clock frame its time is in when it was
    /// derived from the monotonic clock (see [`crate::clock`]).
    Event { event: Event, frame: Option<i64> },
    /// A source finished its snapshot of `units` units: every event of it is
    /// queued before this, so once it is taken the ledger holds them.
    SnapshotDone { units: usize },
    /// The D-Bus connection was lost at `at`.
    DbusLost { at: Usec },
    /// systemd's signals overflowed the D-Bus source's queue from `at` on;
    /// it reads every unit again, as after a reconnect.
    DbusOverflow { at: Usec },
    /// Whether the journal can be read.
    JournalStatus(Result<(), String>),
    /// What a run of journal records said (maybe nothing), applied together
    /// with the cursor of the last of them, so the saved cursor always
    /// matches the ledger.
    Journal {
        items: Vec<Logged>,
        cursor: String,
        boot_id: Option<String>,
    },
    /// The host went down at `at` (the last record of a previous boot).
    HostDown { at: Usec },
    /// Journal records between the saved position and what the journal
    /// still holds were rotated away unread.
    JournalGap,
    /// The sampler's latest round, published with the next snapshot.
    Sampled(Arc<Sample>),
    /// News of `user`'s manager, from the source following it (`[watch]
    /// user_managers`); the system manager's comes as the variants above.
    UserManager { user: String, news: Manager },
    /// The D-Bus source is stopping: from here on the journal's news is
    /// left for the next start, not applied and its position not kept.
    /// While D-Bus follows a unit its journal records are passed over, each
    /// trusted to have its signal; once the source stops taking signals in,
    /// the next record's may never come, and only a record read again after
    /// the restart (when nothing is followed) still counts.
    Stopping,
    /// Save the state and stop.
    Shutdown(oneshot::Sender<()>),
}

/// What the source following a user's manager says about the manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manager {
    /// Its snapshot of `units` units is in (as [`Input::SnapshotDone`]).
    Up { units: usize },
    /// The connection to it was lost at `at`.
    Lost { at: Usec },
    /// Its signals overflowed the queue from `at` on (as
    /// [`Input::DbusOverflow`]); its units are read again.
    Overflow { at: Usec },
    /// It went away at `at` (its `user@UID.service` stopped); it is not
    /// followed any more, until it starts again.
    Gone { at: Usec },
}

/// One thing a journal record said.
#[derive(Debug)]
pub enum Logged {
    /// An event; `frame` as in [`Input::Event`].
    Event { event: Event, frame: Option<i64> },
    /// The host went down at `at` (the record is the first of a new boot).
    HostDown { at: Usec },
}
