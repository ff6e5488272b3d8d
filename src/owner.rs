//! The task that owns the ledger: it applies events from the sources in the
//! order they arrive, answers the sinks' reads, and saves the state, so
//! nothing else ever touches the ledger.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::health::Health;
use crate::ledger::{Event, Ledger, Op, Outcome, Usec};
use crate::message::{Input, Logged, Reader};
use crate::notify::Notifier;
use crate::persist::state::{Frame, Saved, StateFile};
use crate::render::metrics;
use crate::snapshot::Stats;

/// How often the state is written when something changed.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);

/// `event` with its time in the current frame, if it was taken in another
/// one (the wall clock was set while it was on its way).
fn in_frame(mut event: Event, frame: Option<i64>) -> Event {
    if let Some(from) = frame {
        event.at = clock::reframe(event.at, from, clock::frame());
    }
    event
}

/// The ledger task's belongings.
pub struct Owner {
    pub ledger: Ledger,
    pub state: StateFile,
    pub journal_cursor: Option<String>,
    /// Where journal reading began, kept while there is no cursor yet.
    pub journal_from: Option<Usec>,
    pub boot_id: Option<String>,
    /// The kernel's boot, which unitwatch's clock frame belongs to.
    pub kernel_boot: Option<String>,
    pub notifier: Notifier,
    /// Where `/healthz` learns about the journal.
    pub health: Health,
    /// The address HTTP is served on, for the start line.
    pub listen: std::net::SocketAddr,
    /// Changes made to the ledger since it was last saved, oldest first.
    pub ops: Vec<Op>,
}

impl Owner {
    /// Every change to the ledger goes through here, so the ops since the
    /// last save are known.
    fn change(&mut self, op: Op) -> Outcome {
        self.ops.push(op.clone());
        self.ledger.replay(op)
    }

    fn apply(&mut self, event: Event, stats: &mut Stats) {
        stats.events[event.origin as usize] += 1;
        tracing::trace!(source = event.origin.as_str(), ?event, "event");
        let unit = event.unit.clone();
        match self.change(Op::Apply { event }) {
            Outcome::Appeared => tracing::info!(unit = %unit, "watching unit"),
            Outcome::Restarted(trigger, n) => {
                tracing::info!(unit = %unit, trigger = trigger.as_str(), count = n, "unit restarted")
            }
            Outcome::Failed(result) => {
                tracing::warn!(unit = %unit, result = %result, "unit failed")
            }
            Outcome::Dropped => {
                if self.ledger.dropped() == 1 {
                    tracing::warn!(unit = %unit, "more units match than watch.max_units allows; not exporting this one or any further (see unitwatch_units_dropped)");
                }
            }
            Outcome::Quiet => {}
        }
    }

    fn host_down(&mut self, at: Usec) {
        tracing::info!(at_usec = at, "the host rebooted since the last record; units up then count as down until they started again");
        self.change(Op::HostDown { at });
    }

    /// If the wall clock was set, moves the frame and the history with it;
    /// true if it did.
    fn follow_clock(&mut self) -> bool {
        let Some(delta) = clock::resync() else {
            return false;
        };
        tracing::warn!(
            step_seconds = delta as f64 / 1e6,
            "the wall clock was set by {:+.3} s; recorded times move with it, durations stay as measured",
            delta as f64 / 1e6
        );
        self.change(Op::Shift { delta });
        true
    }

    /// The state file's contents now; `None` (logged) if it cannot be encoded.
    fn snapshot(&self) -> Option<Vec<u8>> {
        let saved = Saved {
            journal_from: self.journal_from,
            frame: self.kernel_boot.clone().map(|boot_id| Frame {
                boot_id,
                offset_usec: clock::frame(),
            }),
            ..Saved::new(
                &self.ledger,
                clock::now(),
                self.boot_id.clone(),
                self.journal_cursor.clone(),
            )
        };
        match serde_json::to_vec(&saved) {
            Ok(mut bytes) => {
                bytes.shrink_to_fit();
                Some(bytes)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the state; not saving it");
                None
            }
        }
    }

    /// Runs until told to shut down (or every sender is gone). Pings
    /// systemd's watchdog from this loop, so a stuck ledger task gets
    /// unitwatch restarted.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<Input>) {
        let mut stats = Stats::default();
        let mut ready = false;
        let mut dirty = false;
        let period = self
            .notifier
            .watchdog_interval()
            .unwrap_or(Duration::from_secs(3600));
        let mut watchdog = tokio::time::interval(period);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save = tokio::time::interval(SAVE_EVERY);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (writes, written) = watch::channel(Arc::new(Vec::new()));
        let writer = tokio::spawn(write_state(self.state.clone(), written));
        let mut shutdown_reply = None;
        loop {
            let input = tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => input,
                    None => break,
                },
                _ = watchdog.tick() => {
                    self.notifier.watchdog();
                    continue;
                }
                _ = save.tick() => {
                    dirty |= self.follow_clock();
                    if dirty {
                        dirty = false;
                        if let Some(bytes) = self.snapshot() {
                            writes.send_replace(Arc::new(bytes));
                        }
                    }
                    continue;
                }
            };
            dirty |= self.follow_clock();
            match input {
                Input::Event { event, frame } => {
                    dirty = true;
                    self.apply(in_frame(event, frame), &mut stats);
                }
                Input::Journal {
                    items,
                    cursor,
                    boot_id,
                } => {
                    dirty = true;
                    for item in items {
                        match item {
                            Logged::Event { event, frame } => {
                                self.apply(in_frame(event, frame), &mut stats)
                            }
                            Logged::HostDown { at } => self.host_down(at),
                        }
                    }
                    self.journal_cursor = Some(cursor);
                    if boot_id.is_some() {
                        self.boot_id = boot_id;
                    }
                }
                Input::Read(Reader(read)) => read(&self.ledger, clock::now()),
                Input::Scrape(reply) => {
                    let _ = reply.send(metrics::render(&self.ledger, clock::now(), &stats));
                }
                Input::SnapshotDone { units } => {
                    if ready && !stats.dbus_up {
                        stats.dbus_reconnects += 1;
                        tracing::info!(units, "reconnected to systemd over D-Bus");
                    }
                    stats.dbus_up = true;
                    let status =
                        format!("watching {units} unit{}", if units == 1 { "" } else { "s" });
                    if ready {
                        self.notifier.status(&status);
                    } else {
                        ready = true;
                        tracing::info!(
                            version = env!("CARGO_PKG_VERSION"),
                            listen = %self.listen,
                            units,
                            "unitwatch {} ready on {}, watching {units} unit{}",
                            env!("CARGO_PKG_VERSION"),
                            self.listen,
                            if units == 1 { "" } else { "s" }
                        );
                        self.notifier.ready(&status);
                    }
                }
                Input::DbusLost { at } => {
                    stats.dbus_up = false;
                    self.change(Op::DbusLost { at });
                }
                // Signals were lost as if the connection had been: the
                // journal is trusted for that span, until units are seen again.
                Input::DbusOverflow { at } => {
                    stats.dbus_overflows += 1;
                    self.change(Op::DbusLost { at });
                }
                Input::JournalStatus(status) => {
                    stats.journal_up = status.is_ok();
                    self.health.set_journal(status);
                }
                Input::JournalGap => stats.journal_gaps += 1,
                Input::HostDown { at } => {
                    dirty = true;
                    self.host_down(at);
                }
                Input::Shutdown(reply) => {
                    shutdown_reply = Some(reply);
                    break;
                }
            }
        }
        writer.abort();
        // The last state, written here and now.
        if let Some(bytes) = self.snapshot() {
            let state = self.state.clone();
            let written = tokio::task::spawn_blocking(move || state.write(&bytes)).await;
            match written {
                Ok(Ok(())) => tracing::info!(path = %self.state.path().display(), "state saved"),
                Ok(Err(e)) => tracing::error!(error = %e, "cannot save the state at shutdown"),
                Err(e) => tracing::error!(error = %e, "cannot save the state at shutdown"),
            }
        }
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }
}

/// Writes each new state as it comes. A failed write (disk full,
/// read-only) is logged and retried every [`SAVE_EVERY`] with the newest
/// state until it succeeds.
async fn write_state(state: StateFile, mut written: watch::Receiver<Arc<Vec<u8>>>) {
    let mut failing = false;
    loop {
        if failing {
            tokio::select! {
                changed = written.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(SAVE_EVERY) => {}
            }
        } else if written.changed().await.is_err() {
            return;
        }
        // Shared, not copied: the state can be megabytes.
        let bytes = Arc::clone(&written.borrow_and_update());
        let file = state.clone();
        match tokio::task::spawn_blocking(move || file.write(&bytes)).await {
            Ok(Ok(())) => {
                if failing {
                    failing = false;
                    tracing::info!(path = %state.path().display(), "state saved again");
                }
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(error = %e, retry_every_s = SAVE_EVERY.as_secs(), "cannot save the state; keeping it in memory and retrying");
                }
                failing = true;
            }
            Err(e) => tracing::warn!(error = %e, "state writer failed"),
        }
    }
}
