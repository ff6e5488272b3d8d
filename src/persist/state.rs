//! The base state file `state.json`: its format (the ledger, the journal
//! position and the boot it belongs to), where the state files live, and how
//! a base is read and replaced.
//!
//! A base is replaced atomically: streamed into a temporary file that is
//! created exclusively under a name no other writer uses, fsynced, renamed
//! over `state.json`, and the directory fsynced. A corrupt base is set aside
//! as `state.json.corrupt`, never silently replaced. What changed since the
//! base was written is in the log ([`super::log`]); [`super::load`] puts the
//! two together.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::ledger::{Ledger, Usec};

/// The base's name inside `state.dir`.
pub const FILE: &str = "state.json";

/// The format's version.
pub const VERSION: u32 = 1;

/// What is kept between runs: read as `Saved<Ledger>`, written from a
/// borrowed ledger as `Saved<&Ledger>`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved<L = Ledger> {
    pub version: u32,
    /// The last save this base contains: log segments up to it are already
    /// in `ledger`. 0 in files written before there was a log.
    #[serde(default)]
    pub seq: u64,
    /// When it was written (unitwatch's clock).
    pub saved_at: Usec,
    /// The boot it was written in.
    pub boot_id: Option<String>,
    /// The journal cursor of the last record applied to the ledger.
    pub journal_cursor: Option<String>,
    /// Without a cursor: the time journal reading began, to resume from.
    #[serde(default)]
    pub journal_from: Option<Usec>,
    /// The clock frame the ledger's times are in (see [`crate::clock`]).
    #[serde(default)]
    pub frame: Option<Frame>,
    pub ledger: L,
}

/// A clock frame and the kernel boot it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub boot_id: String,
    /// Wall clock minus monotonic clock, µs.
    pub offset_usec: i64,
}

/// Everything a save records besides the ledger: the base's fields of the
/// same names, and what each log segment carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub saved_at: Usec,
    pub boot_id: Option<String>,
    pub journal_cursor: Option<String>,
    #[serde(default)]
    pub journal_from: Option<Usec>,
    #[serde(default)]
    pub frame: Option<Frame>,
}

impl<L> Saved<L> {
    pub fn new(
        ledger: L,
        saved_at: Usec,
        boot_id: Option<String>,
        journal_cursor: Option<String>,
    ) -> Saved<L> {
        Saved::from_meta(
            0,
            Meta {
                saved_at,
                boot_id,
                journal_cursor,
                journal_from: None,
                frame: None,
            },
            ledger,
        )
    }

    /// The base of save `seq`.
    pub fn from_meta(seq: u64, meta: Meta, ledger: L) -> Saved<L> {
        Saved {
            version: VERSION,
            seq,
            saved_at: meta.saved_at,
            boot_id: meta.boot_id,
            journal_cursor: meta.journal_cursor,
            journal_from: meta.journal_from,
            frame: meta.frame,
            ledger,
        }
    }

    /// Takes the position and times of a later save.
    pub fn set_meta(&mut self, meta: Meta) {
        self.saved_at = meta.saved_at;
        self.boot_id = meta.boot_id;
        self.journal_cursor = meta.journal_cursor;
        self.journal_from = meta.journal_from;
        self.frame = meta.frame;
    }

    pub fn meta(&self) -> Meta {
        Meta {
            saved_at: self.saved_at,
            boot_id: self.boot_id.clone(),
            journal_cursor: self.journal_cursor.clone(),
            journal_from: self.journal_from,
            frame: self.frame.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode the state: {0}")]
    Encode(#[source] serde_json::Error),
    /// The log is shorter than what was appended to it: something else
    /// changed it, so it cannot be appended to.
    #[error("{path} has {len} bytes, fewer than the {expected} written to it")]
    Shrunk {
        path: String,
        len: u64,
        expected: u64,
    },
    #[error("the state writer has stopped")]
    Stopped,
    /// A compaction was stopped for the last save (see [`replace_with`]).
    #[error("a compaction gave way to the last save")]
    GaveWay,
}

/// The marker of a write stopped on request.
#[derive(Debug, thiserror::Error)]
#[error("stopped for the last save")]
struct Stop;

/// A file that stops taking bytes once `stop` is set: a compaction of
/// hundreds of MB must not hold up the shutdown's save.
struct Stoppable<'a> {
    file: File,
    stop: &'a AtomicBool,
}

impl Stoppable<'_> {
    fn check(&self) -> io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            // Not `Interrupted`: `write_all` would retry that.
            return Err(io::Error::other(Stop));
        }
        Ok(())
    }
}

impl Write for Stoppable<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl StateError {
    pub(crate) fn write(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
        move |source| StateError::Write {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The state files of `dir`.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

/// Distinguishes the temporary files of one process.
static TEMP: AtomicU64 = AtomicU64::new(0);

/// How many names [`create_temp`] tries before giving up.
const TEMP_TRIES: usize = 8;

/// Creates `<name>.tmp.<pid>.<n>` in `dir`, exclusively: an existing file of
/// that name (another writer's, or a crashed run's) is never opened, so two
/// writers can never write into one file.
pub(crate) fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..TEMP_TRIES {
        let n = TEMP.fetch_add(1, Ordering::Relaxed);
        match create_temp_named(dir, name, n) {
            Ok(created) => return Ok(created),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary file name left")))
}

/// The temporary file number `n` of `name`; fails if it exists.
pub(crate) fn create_temp_named(dir: &Path, name: &str, n: u64) -> io::Result<(PathBuf, File)> {
    let path = dir.join(format!("{name}.tmp.{}.{n}", std::process::id()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

/// Makes renames and creations in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Fills an exclusively created temporary file with `fill`, makes it
/// durable and renames it to `to`; the temporary file is removed if any of
/// that fails, or if `stop` is set before it is made durable. Returns its
/// length.
pub(crate) fn replace_with(
    dir: &Path,
    to: &Path,
    name: &str,
    stop: &AtomicBool,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<u64> {
    let (tmp, file) = create_temp(dir, name)?;
    let result = (|| {
        // Large writes: the base of thousands of units is hundreds of MB.
        let mut out = BufWriter::with_capacity(1 << 20, Stoppable { file, stop });
        fill(&mut out)?;
        let out = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        // The fsync of a large file takes longest: not begun if stopped.
        out.check()?;
        let file = out.file;
        file.sync_all()?;
        let len = file.metadata()?.len();
        fs::rename(&tmp, to)?;
        sync_dir(dir)?;
        Ok(len)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// What reading the base found.
pub(crate) enum Base {
    /// No base: a first start.
    Missing,
    /// It could not be read (logged); it stays where it is.
    Unreadable,
    /// It is corrupt or of an unknown version (logged, set aside).
    Corrupt,
    /// The base, and its length in bytes.
    Read(Box<Saved>, u64),
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            dir: dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The base's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    pub(crate) fn read_base(&self) -> Base {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Base::Missing,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the state file; starting from the journal");
                return Base::Unreadable;
            }
        };
        match serde_json::from_slice::<Saved>(&bytes) {
            Ok(saved) if saved.version == VERSION => {
                Base::Read(Box::new(saved), bytes.len() as u64)
            }
            Ok(saved) => {
                self.set_aside(FILE, &format!("unknown version {}", saved.version));
                Base::Corrupt
            }
            Err(e) => {
                self.set_aside(FILE, &e.to_string());
                Base::Corrupt
            }
        }
    }

    /// Keeps the state file `name` as `<name>.corrupt`, and says so.
    pub(crate) fn set_aside(&self, name: &str, why: &str) {
        let path = self.dir.join(name);
        let aside = self.dir.join(format!("{name}.corrupt"));
        match fs::rename(&path, &aside) {
            Ok(()) => tracing::error!(
                path = %path.display(),
                kept_as = %aside.display(),
                error = why,
                "the state file is corrupt; kept it aside and rebuilding from the journal"
            ),
            Err(e) => tracing::error!(
                path = %path.display(),
                error = why,
                rename_error = %e,
                "the state file is corrupt and could not be kept aside; rebuilding from the journal"
            ),
        }
    }

    /// Replaces the base with `saved`, streamed (never held in memory
    /// whole); gives up, leaving the base as it was, once `stop` is set.
    /// `mid` runs once the bytes are written, before they are made durable
    /// (a hook for tests; a no-op otherwise). Returns the length.
    pub(crate) fn write_base(
        &self,
        saved: &Saved<&Ledger>,
        stop: &AtomicBool,
        mid: impl FnOnce(),
    ) -> Result<u64, StateError> {
        let path = self.path();
        fs::create_dir_all(&self.dir).map_err(StateError::write(&path))?;
        replace_with(&self.dir, &path, FILE, stop, |out| {
            serde_json::to_writer(&mut *out, saved).map_err(|e| {
                if e.is_io() {
                    io::Error::from(e)
                } else {
                    io::Error::new(io::ErrorKind::InvalidData, e)
                }
            })?;
            out.flush()?;
            mid();
            Ok(())
        })
        .map_err(|e| {
            if e.get_ref().is_some_and(|inner| inner.is::<Stop>()) {
                StateError::GaveWay
            } else {
                StateError::write(&path)(e)
            }
        })
    }

    /// Removes the temporary files a crashed or killed run left behind.
    pub(crate) fn remove_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = [FILE, super::log::FILE]
                .iter()
                .any(|f| name.starts_with(&format!("{f}.tmp")));
            if !ours {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "removed a temporary file an interrupted save left")
                }
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a temporary file an interrupted save left")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::test_dir as dir;

    #[test]
    fn a_base_round_trips_and_leaves_no_temporary_file() {
        let d = dir("rt");
        let f = StateFile::new(&d);
        assert!(
            matches!(f.read_base(), Base::Missing),
            "no file: first start"
        );
        let ledger = Ledger::new();
        let saved = Saved::new(&ledger, 5, Some("b".into()), Some("c".into()));
        let len = f
            .write_base(&saved, &AtomicBool::new(false), || {})
            .expect("write");
        let Base::Read(back, read_len) = f.read_base() else {
            panic!("the base reads back");
        };
        assert_eq!(read_len, len);
        assert_eq!(
            (
                back.saved_at,
                back.boot_id.as_deref(),
                back.journal_cursor.as_deref()
            ),
            (5, Some("b"), Some("c"))
        );
        let names: Vec<_> = fs::read_dir(&d)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE)]);
    }

    #[test]
    fn corrupt_file_is_kept_aside() {
        let d = dir("corrupt");
        fs::write(d.join(FILE), b"{ not json").expect("write");
        let f = StateFile::new(&d);
        assert!(matches!(f.read_base(), Base::Corrupt));
        assert!(!d.join(FILE).exists());
        assert_eq!(
            fs::read(d.join("state.json.corrupt")).expect("kept"),
            b"{ not json"
        );
    }

    #[test]
    fn write_errors_name_the_file() {
        let d = dir("ro");
        fs::write(d.join("blocker"), b"").expect("write");
        let f = StateFile::new(&d.join("blocker"));
        let ledger = Ledger::new();
        let e = f
            .write_base(
                &Saved::new(&ledger, 0, None, None),
                &AtomicBool::new(false),
                || {},
            )
            .expect_err("a file is not a directory");
        assert!(e.to_string().contains("blocker/state.json"), "{e}");
    }

    #[test]
    fn an_existing_temporary_name_is_not_clobbered() {
        let d = dir("excl");
        let (path, _) = create_temp_named(&d, FILE, 7).expect("first");
        fs::write(&path, b"someone else's").expect("write");
        let e = create_temp_named(&d, FILE, 7).expect_err("the name is taken");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).expect("read"), b"someone else's");
    }

    #[test]
    fn temporary_files_left_by_a_crash_are_removed_and_nothing_else() {
        let d = dir("stale");
        for name in [
            "state.json.tmp",
            "state.json.tmp.1.0",
            "state.log.tmp.1.3",
            "state.json",
            "state.json.corrupt",
            "other",
        ] {
            fs::write(d.join(name), b"x").expect("write");
        }
        StateFile::new(&d).remove_temps();
        let mut names: Vec<_> = fs::read_dir(&d)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["other", "state.json", "state.json.corrupt"]);
    }

    /// Two writers replacing one base at once (say, two unitwatch processes
    /// on one state directory): each writes its own temporary file, so the
    /// base is always one of theirs whole, never an interleaving.
    #[test]
    fn concurrent_writers_never_interleave() {
        use crate::ledger::{ActiveState, Event, Transition};
        let d = dir("two");
        let ledger = |n: usize| {
            let mut l = Ledger::new();
            for i in 0..n {
                l.apply(Event::new(
                    format!("u{i}.service"),
                    1_700_000_000_000_000,
                    Transition::Seen {
                        state: ActiveState::Active,
                        sub_state: "running".into(),
                        n_restarts: Some(0),
                    },
                ));
            }
            l
        };
        let (a, b) = (ledger(50), ledger(200));
        std::thread::scope(|s| {
            for l in [&a, &b] {
                let f = StateFile::new(&d);
                s.spawn(move || {
                    for _ in 0..30 {
                        f.write_base(
                            &Saved::new(l, 0, None, None),
                            &AtomicBool::new(false),
                            || {},
                        )
                        .expect("write");
                    }
                });
            }
        });
        let Base::Read(saved, _) = StateFile::new(&d).read_base() else {
            panic!("the base is whole");
        };
        assert!([50, 200].contains(&saved.ledger.len()));
    }
}
