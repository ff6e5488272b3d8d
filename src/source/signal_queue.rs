//! The queue between zbus and the D-Bus source: systemd's signals, taken off
//! zbus's stream as they come and kept in a bounded queue until the source
//! handles them; what does not fit is dropped and counted, and the source is
//! told where, so it can re-read what it missed.
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

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc::{self, error::TrySendError};
use zbus::Message;

use crate::clock;
use crate::ledger::Usec;

/// How many signals wait at most. A signal is some 1–2 KiB (a unit's
/// `PropertiesChanged` carries all of its change-emitting properties), so a
/// full queue is some 10–20 MiB; a burst of 1000 units restarting at once
/// stays well below it.
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
    },
}

/// Starts draining `signals` into a queue of `capacity`; the task ends when
/// the stream does (the connection closed) or the receiver is dropped.
pub fn spawn<S>(
    signals: S,
    capacity: usize,
) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<Queued>)
where
    S: Stream<Item = zbus::Result<Message>> + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (tokio::spawn(drain(signals, tx)), rx)
}

/// Signals dropped since the queue was last full.
struct Lost {
    since: Usec,
    dropped: u64,
}

async fn drain<S>(mut signals: S, tx: mpsc::Sender<Queued>)
where
    S: Stream<Item = zbus::Result<Message>> + Unpin,
{
    // Half the queue free before taking signals again.
    let resume = (tx.max_capacity() / 2).max(1);
    let mut lost: Option<Lost> = None;
    loop {
        tokio::select! {
            biased;
            room = tx.reserve_many(resume), if lost.is_some() => {
                let Ok(mut permits) = room else { return };
                if let (Some(Lost { since, dropped }), Some(permit)) = (lost.take(), permits.next()) {
                    permit.send(Queued::Overflow { since, dropped });
                }
            }
            msg = signals.next() => {
                // An error is the connection's, and the last item.
                let Some(Ok(msg)) = msg else { return };
                if let Some(lost) = &mut lost {
                    lost.dropped += 1;
                    continue;
                }
                match tx.try_send(Queued::Signal(msg)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        lost = Some(Lost {
                            since: clock::now(),
                            dropped: 1,
                        })
                    }
                    Err(TrySendError::Closed(_)) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream fed by hand, and its feeder.
    fn feed() -> (
        mpsc::UnboundedSender<zbus::Result<Message>>,
        impl Stream<Item = zbus::Result<Message>> + Unpin + Send + 'static,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        (tx, Box::pin(stream))
    }

    fn job_new(id: u32) -> Message {
        Message::signal(
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "JobNew",
        )
        .and_then(|b| b.sender(":1.0"))
        .and_then(|b| {
            b.build(&(
                id,
                zbus::zvariant::ObjectPath::try_from("/org/freedesktop/systemd1/job/1")
                    .expect("path"),
                "a.service",
            ))
        })
        .expect("a signal")
    }

    fn id(item: &Queued) -> Option<u32> {
        match item {
            Queued::Signal(msg) => msg
                .body()
                .deserialize::<(u32, zbus::zvariant::OwnedObjectPath, String)>()
                .ok()
                .map(|b| b.0),
            Queued::Overflow { .. } => None,
        }
    }

    /// Waits until the drain task has taken everything fed so far.
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn signals_that_fit_pass_in_order() {
        let (feeder, stream) = feed();
        let (_task, mut rx) = spawn(stream, 4);
        for n in 1..=3 {
            feeder.send(Ok(job_new(n))).expect("feed");
        }
        for n in 1..=3 {
            assert_eq!(id(&rx.recv().await.expect("an item")), Some(n));
        }
    }

    #[tokio::test]
    async fn overflow_drops_counts_and_marks_the_gap_once_half_is_free() {
        let (feeder, stream) = feed();
        let (_task, mut rx) = spawn(stream, 4);
        for n in 1..=10 {
            feeder.send(Ok(job_new(n))).expect("feed");
        }
        settle().await;
        // Room for one: not enough to resume; what comes meanwhile is dropped.
        assert_eq!(id(&rx.recv().await.expect("an item")), Some(1));
        feeder.send(Ok(job_new(11))).expect("feed");
        settle().await;
        assert_eq!(id(&rx.recv().await.expect("an item")), Some(2));
        settle().await;
        for n in 3..=4 {
            assert_eq!(id(&rx.recv().await.expect("an item")), Some(n));
        }
        match rx.recv().await {
            Some(Queued::Overflow { dropped, since }) => {
                assert_eq!(dropped, 7, "5..=11");
                assert!(since > 0);
            }
            other => panic!("not the overflow: {other:?}"),
        }
        // Taking signals again.
        feeder.send(Ok(job_new(12))).expect("feed");
        assert_eq!(id(&rx.recv().await.expect("an item")), Some(12));
    }

    #[tokio::test]
    async fn the_queue_ends_with_the_connection() {
        let (feeder, stream) = feed();
        let (task, mut rx) = spawn(stream, 4);
        feeder.send(Ok(job_new(1))).expect("feed");
        feeder
            .send(Err(zbus::Error::InputOutput(std::sync::Arc::new(
                std::io::Error::from(std::io::ErrorKind::BrokenPipe),
            ))))
            .expect("feed");
        assert_eq!(id(&rx.recv().await.expect("an item")), Some(1));
        assert!(rx.recv().await.is_none());
        task.await.expect("the task ends");
    }
}
