//! The D-Bus source's end at shutdown: the owner told to leave the
//! journal for the next start, and every signal systemd sent before one last
//! call taken in.

use std::time::Duration;

use zbus::Connection;

use super::DbusSource;
use crate::message::Input;
use crate::source::bus::DbusError;
use crate::source::read::{call, MANAGER_PATH};
use crate::source::signal_queue::{Queue, Queued};
use crate::source::wire::Position;

/// `org.freedesktop.DBus.Peer`, which sd-bus answers on every object.
const PEER: &str = "org.freedesktop.DBus.Peer";

/// How long the last call may take at shutdown...
const LAST_CALL: Duration = Duration::from_secs(1);
/// ... and it and the signals before its answer (unitwatch's stop waits
/// at most 5 s in all).
const LAST_SIGNALS: Duration = Duration::from_secs(2);

impl DbusSource {
    /// At shutdown: tells the owner to leave the journal's news for the next
    /// start ([`Input::Stopping`]), then takes in every signal systemd sent
    /// before it answers one last call, so that each journal record the
    /// ledger passed over while this source followed its unit has had its
    /// signal applied. Ends the session with [`DbusError::Stopped`].
    pub(super) async fn stopping(
        &mut self,
        following: Option<(&Connection, &mut Queue)>,
    ) -> Result<(), DbusError> {
        let told = self.events.send(Input::Stopping).await;
        let (Some((conn, queue)), Ok(())) = (following, told) else {
            return Err(DbusError::Stopped);
        };
        // Bounded: the owner's last save must not wait on a busy systemd
        // (a signal taken in may set off a snapshot).
        let last_signals = async {
            let last = call(conn, MANAGER_PATH, PEER, "Ping", &());
            if let Ok(Ok(reply)) = tokio::time::timeout(LAST_CALL, last).await {
                // Every signal read before the reply is queued by now (the
                // tap queues a signal before zbus sees what follows it).
                let answered = Position::of(&reply);
                while let Ok(item) = queue.ready() {
                    match item {
                        Queued::Signal(raw) if raw.at() < answered => {
                            self.handle(conn, &raw).await?
                        }
                        Queued::Signal(_) => break,
                        Queued::Overflow { .. } => {}
                    }
                }
            }
            Ok::<_, DbusError>(())
        };
        if let Ok(Err(e)) = tokio::time::timeout(LAST_SIGNALS, last_signals).await {
            tracing::debug!(error = %e, "cannot take in the last signals");
        }
        Err(DbusError::Stopped)
    }
}
