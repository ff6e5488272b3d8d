//! The state writer: one thread that owns the state files, so there is never
//! more than one write to them at a time.
//!
//! The owner task hands it what changed (the ops, the position, and a
//! snapshot of the ledger that includes those ops) and never waits for it.
//! A save is a segment appended to the log, or, once the log has grown past
//! the base (and past [`Options::compact_at`]), a compaction: the snapshot
//! written as a new base and the log emptied. Saves queued behind a slow
//! write are taken together. A failed save keeps its ops and is retried with
//! the next save or every [`RETRY_EVERY`]; the last save, at shutdown, goes
//! through the same queue, after whatever write is in progress. A compaction
//! in progress then gives way (its temporary file removed, its ops appended
//! instead), so shutdown never waits for hundreds of MB to be written; one
//! that must be made (there is no base to append to) is waited for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::load::Position;
use super::log;
use super::state::{Meta, Saved, StateError, StateFile};
use crate::ledger::{Ledger, Op};

/// How often a failed save is retried by default when nothing new comes
/// to save.
pub const RETRY_EVERY: Duration = Duration::from_secs(10);

/// The smallest log worth a compaction, whatever the base's size: replaying
/// that much at start takes milliseconds.
pub const COMPACT_AT: u64 = 1 << 20;

/// How the writer is tuned.
#[derive(Clone)]
pub struct Options {
    /// A log longer than this and than the base is compacted.
    pub compact_at: u64,
    /// How often a failed save is retried when nothing new comes.
    pub retry_every: Duration,
    /// Runs in the middle of each write (tests make writes slow with it).
    #[cfg(test)]
    pub(crate) pause: Option<Arc<dyn Fn(Stage) + Send + Sync>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            compact_at: COMPACT_AT,
            retry_every: RETRY_EVERY,
            #[cfg(test)]
            pause: None,
        }
    }
}

/// Where a test pause is: in the middle of a write, or after a failed save.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Stage {
    Append,
    Compact,
    Failed,
}

/// What to save: the ops since the last save, the position after them, and
/// the ledger with them applied.
struct Batch {
    ops: Vec<Op>,
    meta: Meta,
    ledger: Arc<Ledger>,
}

enum Request {
    Save(Batch),
    /// The last save; the answer says whether it is durable.
    Finish(Batch, oneshot::Sender<Result<(), StateError>>),
}

/// The owner's handle on the writer thread.
pub struct Writer {
    requests: mpsc::Sender<Request>,
    file: StateFile,
    /// Set when the last save is asked for.
    hurry: Arc<AtomicBool>,
    /// The thread was found gone (said once).
    gone: AtomicBool,
}

impl Writer {
    /// Starts the writer of `file`, whose state was loaded as `position`,
    /// after removing the temporary files a crashed run left.
    pub fn start(file: StateFile, position: Position) -> std::io::Result<Writer> {
        Writer::start_with(file, position, Options::default())
    }

    pub fn start_with(
        file: StateFile,
        position: Position,
        options: Options,
    ) -> std::io::Result<Writer> {
        file.remove_temps();
        let (requests, queue) = mpsc::channel();
        let hurry = Arc::new(AtomicBool::new(false));
        let thread = Thread {
            hurry: Arc::clone(&hurry),
            file: file.clone(),
            position,
            options,
            pending: None,
            failing: false,
            compact_failing: false,
        };
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || thread.run(queue))?;
        Ok(Writer {
            requests,
            file,
            hurry,
            gone: AtomicBool::new(false),
        })
    }

    /// The base's path, for log lines.
    pub fn path(&self) -> std::path::PathBuf {
        self.file.path()
    }

    /// Hands a save to the writer; returns at once. `ledger` must be the
    /// ledger with `ops` applied.
    pub fn save(&self, ops: Vec<Op>, meta: Meta, ledger: Arc<Ledger>) {
        let sent = self
            .requests
            .send(Request::Save(Batch { ops, meta, ledger }));
        if sent.is_err() && !self.gone.swap(true, Ordering::Relaxed) {
            tracing::error!("the state writer has stopped; the state is not saved");
        }
    }

    /// The last save, queued now behind any write in progress; the future
    /// resolves once it is durable (or failed). The writer stops after it.
    pub fn finish(
        self,
        ops: Vec<Op>,
        meta: Meta,
        ledger: Arc<Ledger>,
    ) -> impl std::future::Future<Output = Result<(), StateError>> {
        self.hurry.store(true, Ordering::Relaxed);
        let (reply, done) = oneshot::channel();
        let sent = self
            .requests
            .send(Request::Finish(Batch { ops, meta, ledger }, reply))
            .is_ok();
        async move {
            if !sent {
                return Err(StateError::Stopped);
            }
            done.await.unwrap_or(Err(StateError::Stopped))
        }
    }
}

/// The writer thread's belongings.
struct Thread {
    file: StateFile,
    /// The last save is waiting: a compaction that may stop, stops.
    hurry: Arc<AtomicBool>,
    position: Position,
    options: Options,
    /// What is not saved yet: every op since the last successful save.
    pending: Option<Batch>,
    /// The last save failed (logged once until one succeeds).
    failing: bool,
    /// The last compaction failed and an append was made instead.
    compact_failing: bool,
}

impl Thread {
    fn run(mut self, queue: mpsc::Receiver<Request>) {
        loop {
            let first = if self.failing {
                match queue.recv_timeout(self.options.retry_every) {
                    Ok(request) => Some(request),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        let _ = self.write(false);
                        return;
                    }
                }
            } else {
                match queue.recv() {
                    Ok(request) => Some(request),
                    Err(_) => return,
                }
            };
            // Everything queued meanwhile goes into one write.
            let mut reply = None;
            let mut next = first;
            while let Some(request) = next.take() {
                match request {
                    Request::Save(batch) => self.take(batch),
                    Request::Finish(batch, answer) => {
                        self.take(batch);
                        reply = Some(answer);
                        break;
                    }
                }
                next = queue.try_recv().ok();
            }
            let result = self.write(reply.is_some());
            if let Some(reply) = reply {
                let _ = reply.send(result);
                return;
            }
        }
    }

    /// Adds `batch` to what is pending: its ops after the pending ones, its
    /// position and ledger instead of theirs.
    fn take(&mut self, batch: Batch) {
        match &mut self.pending {
            None => self.pending = Some(batch),
            Some(pending) => {
                pending.ops.extend(batch.ops);
                pending.meta = batch.meta;
                pending.ledger = batch.ledger;
            }
        }
    }

    /// Writes what is pending, if anything. `last`: the shutdown's save,
    /// which appends whenever it can, as that is quick.
    fn write(&mut self, last: bool) -> Result<(), StateError> {
        let Some(batch) = self.pending.take() else {
            return Ok(());
        };
        let seq = self.position.seq + 1;
        let must = self.position.base_len.is_none() || self.position.must_compact;
        let result = if must || (!last && self.compaction_due()) {
            match self.compact(seq, &batch, !must) {
                Err(StateError::GaveWay) => self.append(seq, &batch),
                Err(e) if !must => {
                    if !self.compact_failing {
                        tracing::warn!(error = %e, "cannot compact the state file; appending to its log meanwhile");
                        self.compact_failing = true;
                    }
                    self.append(seq, &batch)
                }
                done => done,
            }
        } else {
            match self.append(seq, &batch) {
                // Something else cut the log short: only a new base is safe.
                Err(StateError::Shrunk { .. }) => {
                    self.position.must_compact = true;
                    self.compact(seq, &batch, false)
                }
                done => done,
            }
        };
        match &result {
            Ok(()) => {
                self.position.seq = seq;
                if self.failing {
                    self.failing = false;
                    tracing::info!(path = %self.file.path().display(), "state saved again");
                }
            }
            Err(e) => {
                self.pause_in(Stage::Failed);
                if !self.failing {
                    tracing::warn!(error = %e, retry_every_s = self.options.retry_every.as_secs(), "cannot save the state; keeping it in memory and retrying");
                    self.failing = true;
                }
                self.pending = Some(batch);
            }
        }
        result
    }

    /// Whether the next save should be a compaction: the log has outgrown
    /// the base, holds saves the base has, or the last save failed (then
    /// what the failed write left is replaced, and the directory is back to
    /// one base and an empty log).
    fn compaction_due(&self) -> bool {
        let base = self.position.base_len.unwrap_or(0);
        self.failing
            || self.position.stale
            || self.position.log_len > base.max(self.options.compact_at)
    }

    fn append(&mut self, seq: u64, batch: &Batch) -> Result<(), StateError> {
        let restarted = self.position.restarted;
        let line = log::encode(seq, restarted, &batch.ops, &batch.meta)?;
        let len = log::append(self.file.dir(), self.position.log_len, &line, || {
            self.pause_in(Stage::Append)
        })?;
        self.position.log_len = len;
        self.position.restarted = false;
        Ok(())
    }

    /// Writes the batch's ledger as base `seq`, then empties the log. A
    /// crash between the two leaves a log of saves before `seq`, which
    /// loading skips. `may_stop`: gives way to the last save.
    fn compact(&mut self, seq: u64, batch: &Batch, may_stop: bool) -> Result<(), StateError> {
        let saved = Saved::from_meta(seq, batch.meta.clone(), &*batch.ledger);
        let never = AtomicBool::new(false);
        let stop = if may_stop { &*self.hurry } else { &never };
        let len = self
            .file
            .write_base(&saved, stop, || self.pause_in(Stage::Compact))?;
        self.position.base_len = Some(len);
        self.position.must_compact = false;
        // The base is the ledger as it is, restart included.
        self.position.restarted = false;
        self.compact_failing = false;
        match log::reset(self.file.dir()) {
            Ok(()) => {
                self.position.log_len = 0;
                self.position.stale = false;
            }
            // The save is durable in the base; the old segments are skipped
            // at load and new ones follow them, until a compaction empties
            // the log.
            Err(e) => {
                tracing::warn!(error = %e, "cannot empty the state log after writing the state file");
                self.position.stale = true;
            }
        }
        Ok(())
    }

    /// The test pause, if any; nothing outside tests.
    fn pause_in(&self, _stage: Stage) {
        #[cfg(test)]
        if let Some(pause) = &self.options.pause {
            pause(_stage);
        }
    }
}

#[cfg(test)]
mod tests;
