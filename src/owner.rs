//! The task that owns the ledger: it applies events from the sources in the
//! order they arrive, publishes a snapshot after every burst for readers,
//! and hands the changes to persistence, so nothing else ever touches the
//! ledger and no read ever holds it up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::clock;
use crate::health::Health;
use crate::ledger::{Event, Ledger, Op, Origin, Outcome, Usec};
use crate::message::{Input, Logged, Manager};
use crate::notify::Notifier;
use crate::persist::{Frame, Meta, Writer};
use crate::quiet::{Line, Quiet};
use crate::sample::Sample;
use crate::snapshot::{Publisher, Snapshot, Stats};

/// How often the state is written when something changed.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);

/// How many queued inputs are taken after one before a snapshot is
/// published.
const DRAIN: usize = 1024;

/// How many ops make a save before [`SAVE_EVERY`] is up. A storm makes
/// thousands of ops a second (every signal and journal record is one); kept
/// for ten seconds, they and the log line they are encoded to were most of
/// the peak memory (some 7 MiB of 20 units restarting ten times a second).
/// The log grows by the same bytes either way, in more, shorter segments.
pub const SAVE_AT_OPS: usize = 1024;

/// What the run loop keeps between inputs.
#[derive(Default)]
struct Live {
    stats: Stats,
    /// The first D-Bus snapshot is in (READY=1 was sent).
    ready: bool,
    /// Something to save changed since the last save.
    dirty: bool,
    shutdown_reply: Option<oneshot::Sender<()>>,
    /// The sampler's last round.
    sample: Arc<Sample>,
    /// [`Input::Stopping`] came: the journal's news waits for the next start.
    stopping: bool,
}

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
    /// Writes the state; the owner only hands it what to save.
    pub state: Writer,
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
    /// How often units' restarts and failures are logged.
    pub quiet: Quiet,
}

impl Owner {
    /// Every change to the ledger goes through here, so the ops since the
    /// last save are known.
    fn change(&mut self, op: Op) -> Outcome {
        self.ops.push(op.clone());
        self.ledger.replay(op)
    }

    fn apply(&mut self, event: Event, stats: &mut Stats) {
        stats.events.count(event.origin);
        tracing::trace!(source = event.origin.as_str(), ?event, "event");
        if !self.ledger.keeps(&event) {
            return;
        }
        let unit = event.unit.clone();
        match self.change(Op::Apply { event }) {
            Outcome::Appeared => tracing::info!(unit = %unit, "watching unit"),
            Outcome::Restarted(trigger, n) => {
                if let Some(skipped) = self.quiet.check(&unit, Line::Restarted, Instant::now()) {
                    tracing::info!(unit = %unit, trigger = trigger.as_str(), count = n, not_logged_since_last = skipped, "unit restarted")
                }
            }
            Outcome::Failed(result) => {
                if let Some(skipped) = self.quiet.check(&unit, Line::Failed, Instant::now()) {
                    tracing::warn!(unit = %unit, result = %result, not_logged_since_last = skipped, "unit failed")
                }
            }
            Outcome::Dropped => {
                if self.ledger.dropped() == 1 {
                    tracing::warn!(unit = %unit, "more units match than watch.max_units allows; not exporting this one or any further (see unitwatch_units_dropped)");
                }
            }
            Outcome::Quiet => {}
        }
    }

    /// Hands what changed since the last save to the writer, never waiting
    /// for it: the writer thread does the I/O.
    fn save(&mut self, live: &mut Live) {
        live.dirty = false;
        let ops = std::mem::take(&mut self.ops);
        self.state
            .save(ops, self.meta(), Arc::new(self.ledger.clone()));
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

    /// News of `user`'s manager; whether it changed the ledger. A manager
    /// that cannot be reached is retried for good: its units are unfollowed
    /// once, not at every try.
    fn user_manager(&mut self, user: String, news: Manager, stats: &mut Stats) -> bool {
        match news {
            Manager::Up { units } => {
                match stats.user_managers.insert(user.clone(), true) {
                    None => {
                        tracing::info!(user = %user, units, "following the user manager of {user}")
                    }
                    Some(false) => {
                        tracing::info!(user = %user, units, "following the user manager of {user} again")
                    }
                    Some(true) => {}
                }
                false
            }
            Manager::Lost { at } => {
                let was = stats.user_managers.insert(user.clone(), false);
                if was != Some(false) {
                    self.change(Op::UserLost { user, at });
                }
                was != Some(false)
            }
            Manager::Overflow { at } => {
                stats.dbus_overflows += 1;
                self.change(Op::UserLost { user, at });
                true
            }
            Manager::Gone { at } => {
                tracing::info!(user = %user, "the user manager of {user} stopped; no longer following it, its units count as down until it starts again");
                if stats.user_managers.insert(user.clone(), false) != Some(false) {
                    self.change(Op::UserLost {
                        user: user.clone(),
                        at,
                    });
                }
                self.change(Op::UserDown { user, at });
                true
            }
        }
    }

    /// What a save records besides the ledger, as of now.
    fn meta(&self) -> Meta {
        Meta {
            saved_at: clock::now(),
            boot_id: self.boot_id.clone(),
            journal_cursor: self.journal_cursor.clone(),
            journal_from: self.journal_from,
            frame: self.kernel_boot.clone().map(|boot_id| Frame {
                boot_id,
                offset_usec: clock::frame(),
            }),
        }
    }

    /// Makes the snapshot readers get from now on.
    fn publish(&self, publisher: &Publisher, live: &Live) {
        publisher.publish(Snapshot {
            ledger: self.ledger.clone(),
            stats: live.stats.clone(),
            frame: clock::frame(),
            sample: Arc::clone(&live.sample),
        });
    }

    /// Takes one input; true when it is time to stop.
    fn handle(&mut self, input: Input, live: &mut Live) -> bool {
        match input {
            Input::Journal { .. } | Input::HostDown { .. } if live.stopping => {}
            Input::Event { event, .. } if live.stopping && event.origin == Origin::Journal => {}
            Input::Stopping => live.stopping = true,
            Input::Event { event, frame } => {
                live.dirty = true;
                self.apply(in_frame(event, frame), &mut live.stats);
            }
            Input::Journal {
                items,
                cursor,
                boot_id,
            } => {
                live.dirty = true;
                for item in items {
                    match item {
                        Logged::Event { event, frame } => {
                            self.apply(in_frame(event, frame), &mut live.stats)
                        }
                        Logged::HostDown { at } => self.host_down(at),
                    }
                }
                self.journal_cursor = Some(cursor);
                if boot_id.is_some() {
                    self.boot_id = boot_id;
                }
            }
            Input::SnapshotDone { units } => {
                let stats = &mut live.stats;
                if live.ready && !stats.dbus_up {
                    stats.dbus_reconnects += 1;
                    tracing::info!(units, "reconnected to systemd over D-Bus");
                }
                stats.dbus_up = true;
                let status = format!("watching {units} unit{}", if units == 1 { "" } else { "s" });
                if live.ready {
                    self.notifier.status(&status);
                } else {
                    live.ready = true;
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
                live.stats.dbus_up = false;
                self.change(Op::DbusLost { at });
            }
            // Signals were lost as if the connection had been: the journal
            // is trusted for that span, until units are seen again.
            Input::DbusOverflow { at } => {
                live.stats.dbus_overflows += 1;
                self.change(Op::DbusLost { at });
            }
            Input::JournalStatus(status) => {
                live.stats.journal_up = status.is_ok();
                self.health.set_journal(status);
            }
            Input::JournalGap => live.stats.journal_gaps += 1,
            Input::Sampled(sample) => live.sample = sample,
            Input::HostDown { at } => {
                live.dirty = true;
                self.host_down(at);
            }
            Input::UserManager { user, news } => {
                live.dirty |= self.user_manager(user, news, &mut live.stats);
            }
            Input::Shutdown(reply) => {
                live.shutdown_reply = Some(reply);
                return true;
            }
        }
        false
    }

    /// Runs until told to shut down (or every sender is gone). Pings
    /// systemd's watchdog from this loop, so a stuck ledger task gets
    /// unitwatch restarted.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<Input>, publisher: Publisher) {
        let mut live = Live::default();
        let period = self
            .notifier
            .watchdog_interval()
            .unwrap_or(Duration::from_secs(3600));
        let mut watchdog = tokio::time::interval(period);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save = tokio::time::interval(SAVE_EVERY);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    if self.follow_clock() {
                        live.dirty = true;
                        // Readers must see the moved ledger with the new frame.
                        self.publish(&publisher, &live);
                    }
                    if live.dirty || !self.ops.is_empty() {
                        self.save(&mut live);
                    }
                    continue;
                }
            };
            live.dirty |= self.follow_clock();
            let mut stop = self.handle(input, &mut live);
            // Take what queued up meanwhile before publishing, so a burst is
            // published once; bounded, so the watchdog and saves stay timely.
            for _ in 0..DRAIN {
                if stop {
                    break;
                }
                match inputs.try_recv() {
                    Ok(input) => stop = self.handle(input, &mut live),
                    Err(_) => break,
                }
            }
            // Every input changes what readers see (the ledger, or
            // unitwatch's own numbers).
            self.publish(&publisher, &live);
            if self.ops.len() >= SAVE_AT_OPS {
                self.save(&mut live);
            }
            if stop {
                break;
            }
        }
        let shutdown_reply = live.shutdown_reply.take();
        // The last state, through the writer after any write in progress
        // (never two writes at once), waited for until it is durable.
        let path = self.state.path();
        let ops = std::mem::take(&mut self.ops);
        let meta = self.meta();
        let ledger = Arc::new(std::mem::take(&mut self.ledger));
        match self.state.finish(ops, meta, ledger).await {
            Ok(()) => tracing::info!(path = %path.display(), "state saved"),
            Err(e) => tracing::error!(error = %e, "cannot save the state at shutdown"),
        }
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::ledger::{ActiveState, Transition};
    use crate::message::Logged;
    use crate::persist::{test_dir, Position, StateFile};
    use crate::snapshot::{self, Snapshot};

    const T0: Usec = 1_700_000_000_000_000;

    fn owner(dir: &std::path::Path) -> Owner {
        Owner {
            ledger: Ledger::new(),
            state: Writer::start(StateFile::new(dir), Position::default()).expect("writer"),
            journal_cursor: None,
            journal_from: None,
            boot_id: None,
            kernel_boot: None,
            notifier: Notifier::from_env(),
            health: Health::default(),
            listen: ([127, 0, 0, 1], 0).into(),
            ops: Vec::new(),
            quiet: Quiet::default(),
        }
    }

    /// An owner saving to `dir`, running: its inputs and its task.
    fn running(dir: &std::path::Path) -> (mpsc::Sender<Input>, tokio::task::JoinHandle<()>) {
        let (inputs, rx) = mpsc::channel(16);
        let (publisher, _snapshots) = snapshot::channel(Snapshot::default());
        (inputs, tokio::spawn(owner(dir).run(rx, publisher)))
    }

    fn state(state: ActiveState) -> Transition {
        Transition::State {
            state,
            sub_state: None,
        }
    }

    /// After [`Input::Stopping`] the journal's records are not applied and
    /// its position stays where it was: the next start reads them again.
    #[tokio::test]
    async fn the_journal_read_after_stopping_is_left_for_the_next_start() {
        let dir = test_dir("owner-stopping");
        let (inputs, run) = running(&dir);
        let logged = |at, s| Logged::Event {
            event: Event::logged("u.service", at, state(s)),
            frame: None,
        };
        let journal = |cursor: &str, items| Input::Journal {
            items,
            cursor: cursor.into(),
            boot_id: None,
        };
        let (done, saved) = oneshot::channel();
        for input in [
            journal("a", vec![logged(T0, ActiveState::Active)]),
            Input::Stopping,
            journal("b", vec![logged(T0 + 1_000_000, ActiveState::Inactive)]),
            Input::HostDown { at: T0 + 2_000_000 },
            Input::Shutdown(done),
        ] {
            inputs.send(input).await.expect("owner takes inputs");
        }
        saved.await.expect("owner saves");
        run.await.expect("owner ends");
        let saved = StateFile::new(&dir)
            .load(crate::ledger::DEFAULT_MAX_UNITS)
            .saved
            .expect("a saved state");
        assert_eq!(saved.journal_cursor.as_deref(), Some("a"));
        let views: Vec<_> = saved.ledger.view(T0 + 3_000_000).collect();
        assert_eq!(views.len(), 1);
        assert_eq!(
            views[0].state,
            ActiveState::Active,
            "still up: the stop is read at the next start"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A storm's ops are saved as they reach [`SAVE_AT_OPS`], well before
    /// [`SAVE_EVERY`] is up, so they never pile up for ten seconds.
    #[tokio::test]
    async fn a_storm_is_saved_before_the_save_interval_is_up() {
        let dir = test_dir("owner-storm");
        let (inputs, run) = running(&dir);
        for i in 0..2 * SAVE_AT_OPS as u64 {
            let state = if i % 2 == 0 {
                ActiveState::Active
            } else {
                ActiveState::Inactive
            };
            let transition = if i == 0 {
                Transition::Seen {
                    state,
                    sub_state: "running".into(),
                    n_restarts: None,
                }
            } else {
                Transition::State {
                    state,
                    sub_state: None,
                }
            };
            let event = Event::new("u.service", T0 + i, transition);
            inputs
                .send(Input::Event { event, frame: None })
                .await
                .expect("owner takes events");
        }
        let deadline = Instant::now() + SAVE_EVERY / 2;
        // The first save has no base to append to: it writes the state file.
        let saved = || {
            StateFile::new(&dir)
                .load(crate::ledger::DEFAULT_MAX_UNITS)
                .saved
        };
        // The first tick of the save interval may take the first few; a
        // whole SAVE_AT_OPS of ops after them must follow without it.
        let last = T0 + SAVE_AT_OPS as u64 - 1;
        let has_last = |l: &Ledger| {
            l.view(last)
                .any(|v| (v.state_change_seconds * 1e6).round() as u64 >= last)
        };
        while !saved().is_some_and(|s| has_last(&s.ledger)) {
            assert!(
                Instant::now() < deadline,
                "{} ops not saved within {:?}",
                SAVE_AT_OPS,
                SAVE_EVERY / 2
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(inputs);
        run.await.expect("owner ends");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
