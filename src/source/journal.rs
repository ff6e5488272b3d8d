//! The journal source: reads the service manager's unit lifecycle records
//! from the journal (filtered by `MESSAGE_ID` so nothing else is parsed) and
//! turns them into ledger events — history from before unitwatch started or
//! while it was down, then live records as they are written.
//!
//! It runs on a thread of its own (libsystemd's API blocks) and waits for new
//! records with `sd_journal_wait`; rotation and vacuuming are handled by
//! libsystemd. If the journal cannot be opened unitwatch carries on with
//! D-Bus alone and says so on `/healthz` and in `unitwatch_journal_up`.
//!
//! Reading on from a saved position, the mapper is first shown the records
//! just before it (their events were applied before the save), so that what
//! a record means in context — the "Stopped" of a restart job after its
//! "Stopping…" — comes out the same as if it had been read in one go.

use std::path::PathBuf;
use std::time::Duration;

use systemd::journal::{self, Journal, JournalSeek};
use tokio::sync::{mpsc, oneshot};

use crate::clock;
use crate::ledger::Usec;
use crate::message::{Input, Logged};
use crate::select::Selector;
use crate::source::journal_maps::Release;
use crate::source::journal_record::{add_field, Fields, Mapper, FIELDS, MESSAGE_IDS};

/// Where to start reading.
#[derive(Debug, Clone)]
pub enum Start {
    /// Right after this cursor (the state file's).
    After(String),
    /// From this time on (the backfill window of a first start).
    Since(Usec),
    /// Only records written from now on.
    Now,
}

/// The journal source.
pub struct JournalSource {
    pub directory: Option<PathBuf>,
    pub user: bool,
    pub selector: Selector,
    pub start: Start,
    /// The boot and time of the last record the ledger holds, if known.
    pub last_boot: Option<String>,
    pub last_at: Usec,
    pub inputs: mpsc::Sender<Input>,
}

/// How many records at most between two reports of the position.
const POSITION_EVERY: usize = 256;

/// How many events at most go to the ledger task in one report.
const BATCH: usize = 256;

/// How many records before a saved position the mapper is shown again.
const CONTEXT: usize = 256;

/// Records read and not yet reported, and what they said.
#[derive(Default)]
struct Batch {
    records: usize,
    items: Vec<Logged>,
}

impl JournalSource {
    /// Runs on its own thread; `caught_up` fires once everything up to now
    /// has been read (or the journal turned out unreadable).
    pub fn spawn(
        self,
        caught_up: oneshot::Sender<()>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || self.run(caught_up))
    }

    fn open(&self) -> systemd::Result<Journal> {
        let mut j = self.open_all()?;
        for id in MESSAGE_IDS {
            j.match_add("MESSAGE_ID", id)?;
        }
        Ok(j)
    }

    /// The journal, every record of it.
    fn open_all(&self) -> systemd::Result<Journal> {
        match &self.directory {
            Some(dir) => journal::OpenDirectoryOptions::default()
                .open_directory(dir.to_string_lossy().as_ref()),
            None => journal::OpenOptions::default()
                .system(!self.user)
                .current_user(self.user)
                .local_only(true)
                .open(),
        }
    }

    /// When the host went down after boot `boot`: at its last record of any
    /// kind (the lifecycle records read stop earlier), or at `last_at`, the
    /// last record read or the last save, if that is later.
    fn went_down(&self, boot: &str) -> Usec {
        let last_record = (|| -> systemd::Result<Option<Usec>> {
            let mut j = self.open_all()?;
            j.match_add("_BOOT_ID", boot)?;
            j.seek_tail()?;
            if j.previous()? == 0 {
                return Ok(None);
            }
            j.timestamp_usec().map(Some)
        })();
        match last_record {
            Ok(Some(at)) => self.last_at.max(at),
            Ok(None) => self.last_at,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the last record of the previous boot");
                self.last_at
            }
        }
    }

    fn mapper(&self) -> Mapper {
        if self.user {
            // SAFETY: getuid cannot fail and touches no memory.
            let uid = unsafe { libc::getuid() };
            Mapper::user(self.selector.clone(), uid)
        } else {
            Mapper::new(self.selector.clone())
        }
    }

    /// Shows `mapper` the last [`CONTEXT`] records up to `cursor`, through a
    /// journal of its own; their events are dropped (the ledger has them).
    /// Nothing is shown if the position is gone.
    fn context(&self, mapper: &mut Mapper, cursor: &str) {
        let shown = (|| -> systemd::Result<usize> {
            let mut j = self.open()?;
            j.seek_cursor(cursor)?;
            // The first step back lands on the record at the cursor.
            let mut back = 0;
            while back < CONTEXT && j.previous()? > 0 {
                back += 1;
            }
            let mut shown = 0;
            for step in 0..back {
                if step > 0 && j.next()? == 0 {
                    break;
                }
                let fields = read_fields(&mut j)?;
                mapper.events(&fields, 0);
                shown += 1;
                if j.test_cursor(cursor)? {
                    return Ok(shown);
                }
            }
            // The saved record is gone: what was shown is not its context.
            Ok(0)
        })();
        match shown {
            Ok(0) => *mapper = self.mapper(),
            Ok(n) => tracing::debug!(
                records = n,
                "read the records before the saved position again"
            ),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the records before the saved position");
                *mapper = self.mapper();
            }
        }
    }

    fn send(&self, input: Input) -> bool {
        self.inputs.blocking_send(input).is_ok()
    }

    fn run(mut self, caught_up: oneshot::Sender<()>) {
        let mut journal = match self.open() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot open the journal; counting from D-Bus alone");
                self.send(Input::JournalStatus(Err(format!(
                    "cannot open the journal: {e}"
                ))));
                self.caught_up();
                let _ = caught_up.send(());
                return;
            }
        };
        let mut skip_cursor = None;
        let seeked = match &self.start {
            Start::After(cursor) => {
                skip_cursor = Some(cursor.clone());
                journal.seek_cursor(cursor.as_str())
            }
            Start::Since(at) => journal.seek(JournalSeek::ClockRealtime { usec: *at }),
            Start::Now => journal
                .seek_tail()
                .and_then(|_| journal.previous().map(|_| ())),
        };
        if let Err(e) = seeked {
            tracing::warn!(error = %e, "cannot seek in the journal; reading from its start");
        }
        self.send(Input::JournalStatus(Ok(())));

        let mut mapper = self.mapper();
        if let Start::After(cursor) = &self.start {
            self.context(&mut mapper, cursor);
        }
        let mut caught_up = Some(caught_up);
        // Records read since the last report, and the events of those
        // records, all in one clock frame.
        let mut batch = Batch::default();
        let mut cursor: Option<String> = None;
        let mut failures = 0u32;
        // For the log line once the history is read.
        let began = std::time::Instant::now();
        let (mut records, mut events_read) = (0u64, 0u64);
        let mut release = Release::new();
        loop {
            let next = journal.next().and_then(|n| match n {
                0 => Ok(None),
                _ => read_fields(&mut journal).map(Some),
            });
            match next {
                Ok(Some(fields)) => {
                    failures = 0;
                    // This boot's records on the monotonic clock (see
                    // crate::clock), earlier boots' on the wall clock.
                    let (at, frame) = match journal.monotonic_timestamp_current_boot() {
                        Ok(mono) => {
                            let frame = clock::frame();
                            (clock::to_frame(mono, frame), Some(frame))
                        }
                        Err(_) => (journal.timestamp_usec().unwrap_or(0), None),
                    };
                    // Cursors are made only where needed: they cost more
                    // than reading the few fields the mapper wants.
                    let here = skip_cursor.as_ref().and_then(|_| journal.cursor().ok());
                    if let (Some(skip), Some(here)) = (&skip_cursor, &here) {
                        if skip == here {
                            skip_cursor = None;
                            continue;
                        }
                    }
                    if skip_cursor.take().is_some() {
                        tracing::warn!("the journal no longer holds the saved position (rotated or vacuumed); continuing from the next record it has");
                        if !self.send(Input::JournalGap) {
                            return;
                        }
                    }
                    if let Some(boot) = fields.get("_BOOT_ID") {
                        let rebooted =
                            self.last_boot.as_ref().is_some_and(|b| b != boot) && self.last_at > 0;
                        if let (true, Some(old)) = (rebooted, &self.last_boot) {
                            let at = self.went_down(old);
                            batch.items.push(Logged::HostDown { at });
                        }
                        self.last_boot = Some(boot.clone());
                    }
                    self.last_at = self.last_at.max(at);
                    let events = mapper.events(&fields, at);
                    records += 1;
                    events_read += events.len() as u64;
                    batch.items.extend(
                        events
                            .into_iter()
                            .map(|event| Logged::Event { event, frame }),
                    );
                    batch.records += 1;
                    if batch.items.len() >= BATCH || batch.records >= POSITION_EVERY {
                        if !self.flush(&mut batch, &mut journal, &mut cursor) {
                            return;
                        }
                        // Reading a long history maps it all.
                        release.now();
                    }
                }
                Ok(None) => {
                    // At the end the journal still points at the last record read.
                    if !self.flush(&mut batch, &mut journal, &mut cursor) {
                        return;
                    }
                    if let Some(tx) = caught_up.take() {
                        let seconds = began.elapsed().as_secs_f64();
                        tracing::info!(
                            records,
                            events = events_read,
                            seconds,
                            "read the journal's history: {records} records, {events_read} events in {seconds:.3} s"
                        );
                        self.caught_up();
                        let _ = tx.send(());
                    }
                    release.now();
                    if let Err(e) = journal.wait(None) {
                        tracing::warn!(error = %e, "waiting for the journal failed");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, "cannot read the journal; retrying");
                    }
                    std::thread::sleep(Duration::from_millis(200 * u64::from(failures.min(25))));
                    if failures % 10 == 0 {
                        match self.open() {
                            Ok(j) => {
                                journal = j;
                                // Read again from the last position reported.
                                batch = Batch::default();
                                if let Some(c) = &cursor {
                                    let _ = journal.seek_cursor(c.as_str());
                                    skip_cursor = Some(c.clone());
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot reopen the journal"),
                        }
                    }
                }
            }
        }
    }

    /// Sends what `batch` holds with the cursor of the record just read
    /// (the last of the batch), so the saved cursor is always that of the
    /// last record applied; false once the ledger task is gone.
    fn flush(&self, batch: &mut Batch, journal: &mut Journal, cursor: &mut Option<String>) -> bool {
        if batch.records == 0 {
            return true;
        }
        *cursor = journal.cursor().ok().or(cursor.take());
        let items = std::mem::take(&mut batch.items);
        batch.records = 0;
        match cursor {
            Some(c) => self.send(Input::Journal {
                items,
                cursor: c.clone(),
                boot_id: self.last_boot.clone(),
            }),
            None => items.into_iter().all(|item| {
                self.send(match item {
                    Logged::Event { event, frame } => Input::Event { event, frame },
                    Logged::HostDown { at } => Input::HostDown { at },
                })
            }),
        }
    }

    /// At the end of the history: if the host booted since the last record
    /// read, units up then went down with it.
    fn caught_up(&mut self) {
        let current = current_boot_id();
        if let (Some(last), Some(now)) = (&self.last_boot, &current) {
            if last != now && self.last_at > 0 {
                let at = self.went_down(last);
                self.send(Input::HostDown { at });
            }
        }
        if current.is_some() {
            self.last_boot = current;
        }
    }
}

/// The fields of the current record that [`Mapper`] reads, and no others:
/// most records carry a dozen more, and reading them all costs more than
/// everything else done per record. (The `systemd` crate's `next_entry`
/// also panics on a data item without `=`; [`add_field`] skips it.)
fn read_fields(journal: &mut Journal) -> systemd::Result<Fields> {
    let mut fields = Fields::new();
    journal.restart_data();
    while let Some(data) = journal.enumerate_data()? {
        let data = data.data();
        let name = data.split(|b| *b == b'=').next().unwrap_or_default();
        if FIELDS.iter().any(|f| f.as_bytes() == name) {
            add_field(&mut fields, data);
        }
    }
    Ok(fields)
}

/// This boot's ID as the journal writes it (32 hex digits, no dashes).
pub fn current_boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().replace('-', ""))
        .filter(|s| s.len() == 32)
}
