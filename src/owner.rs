//! The task that owns the ledger: it applies events from the sources in the
//! order they arrive and answers the sinks' reads, so nothing else ever
//! touches the ledger.

use tokio::sync::{mpsc, oneshot};

use crate::ledger::{Event, Ledger, Origin, Outcome, Usec};
use crate::notify::Notifier;
use crate::sink::metrics;

/// What the ledger task is asked to do.
#[derive(Debug)]
pub enum Input {
    /// Apply an event.
    Event(Event, Origin),
    /// Render `/metrics` as of now.
    Scrape(oneshot::Sender<String>),
    /// A source finished its snapshot of `units` units: every event of it is
    /// queued before this, so once it is taken the ledger holds them.
    SnapshotDone { units: usize },
}

/// Counters about unitwatch itself.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Events applied, by [`Origin`] (`dbus`, `journal`).
    pub events: [u64; 2],
}

/// The wall clock, in systemd's unit. Read here, at the edge, never in the ledger.
pub fn now_usec() -> Usec {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Usec)
}

/// Runs until every sender is gone. Pings systemd's watchdog from this loop,
/// so a stuck ledger task gets unitwatch restarted.
pub async fn run(mut inputs: mpsc::Receiver<Input>, notifier: Notifier) {
    let mut ledger = Ledger::new();
    let mut stats = Stats::default();
    let mut ready = false;
    let period = notifier
        .watchdog_interval()
        .unwrap_or(std::time::Duration::from_secs(3600));
    let mut watchdog = tokio::time::interval(period);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let input = tokio::select! {
            input = inputs.recv() => match input {
                Some(input) => input,
                None => break,
            },
            _ = watchdog.tick() => {
                notifier.watchdog();
                continue;
            }
        };
        match input {
            Input::Event(event, origin) => {
                stats.events[origin as usize] += 1;
                tracing::trace!(source = origin.as_str(), ?event, "event");
                let unit = event.unit.clone();
                match ledger.apply(event) {
                    Outcome::Appeared => tracing::info!(unit = %unit, "watching unit"),
                    Outcome::Restarted(trigger, n) => {
                        tracing::info!(unit = %unit, trigger = trigger.as_str(), count = n, "unit restarted")
                    }
                    Outcome::Failed(result) => {
                        tracing::warn!(unit = %unit, result = %result, "unit failed")
                    }
                    Outcome::Quiet => {}
                }
            }
            Input::Scrape(reply) => {
                let _ = reply.send(metrics::render(&ledger, now_usec(), &stats));
            }
            Input::SnapshotDone { units } => {
                let status = format!("watching {units} unit{}", if units == 1 { "" } else { "s" });
                if ready {
                    notifier.status(&status);
                } else {
                    ready = true;
                    notifier.ready(&status);
                }
            }
        }
    }
}
