//! The D-Bus source's end at shutdown: the owner told to leave the
//! journal for the next start, and every signal systemd sent before one last
//! call taken in.

use std::time::Duration;

use tokio::sync::mpsc;
use zbus::Connection;

use super::DbusSource;
use crate::message::Input;
use crate::source::bus::DbusError;
use crate::source::read::{call, MANAGER_PATH};
use crate::source::signal_queue::{self, Queued};

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
        following: Option<(
            &Connection,
            &signal_queue::Drain,
            &mut mpsc::Receiver<Queued>,
        )>,
    ) -> Result<(), DbusError> {
        let told = self.events.send(Input::Stopping).await;
        let (Some((conn, drain, queue)), Ok(())) = (following, told) else {
            return Err(DbusError::Stopped);
        };
        // Bounded: the owner's last save must not wait on a busy systemd
        // (a signal taken in may set off a snapshot).
        let last_signals = async {
            let last = call(conn, MANAGER_PATH, PEER, "Ping", &());
            if let Ok(Ok(_)) = tokio::time::timeout(LAST_CALL, last).await {
                drain.flush();
                while let Some(item) = queue.recv().await {
                    match item {
                        Queued::Signal(msg) => self.handle(conn, &msg).await?,
                        Queued::Overflow { .. } => {}
                        Queued::Flushed => break,
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
