//! The state file: the ledger, the journal position and the boot it belongs
//! to, kept in `state.dir` so counters continue across restarts.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the
//! directory). A missing file means a first start; an unreadable or corrupt
//! one is set aside as `state.json.corrupt` and logged, never silently
//! replaced. Failed writes (disk full, read-only) are logged and retried with
//! the next write; the ledger in memory is unaffected.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ledger::{Ledger, Usec};

/// The file's name inside `state.dir`.
pub const FILE: &str = "state.json";

/// The format's version.
pub const VERSION: u32 = 1;

/// What is kept between runs: read as `Saved<Ledger>`, written from a
/// borrowed ledger as `Saved<&Ledger>`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved<L = Ledger> {
    pub version: u32,
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

impl<L> Saved<L> {
    pub fn new(
        ledger: L,
        saved_at: Usec,
        boot_id: Option<String>,
        journal_cursor: Option<String>,
    ) -> Saved<L> {
        Saved {
            version: VERSION,
            saved_at,
            boot_id,
            journal_cursor,
            journal_from: None,
            frame: None,
            ledger,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The state file of `dir`.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            dir: dir.to_owned(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Loads the state: `None` when there is none (first start) or when it
    /// could not be used, in which case it is kept aside and logged.
    pub fn load(&self) -> Option<Saved> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the state file; starting from the journal");
                return None;
            }
        };
        match serde_json::from_slice::<Saved>(&bytes) {
            Ok(saved) if saved.version == VERSION => Some(saved),
            Ok(saved) => {
                self.set_aside(&format!("unknown version {}", saved.version));
                None
            }
            Err(e) => {
                self.set_aside(&e.to_string());
                None
            }
        }
    }

    fn set_aside(&self, why: &str) {
        let path = self.path();
        let aside = self.dir.join(format!("{FILE}.corrupt"));
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

    /// Writes `bytes` as the new state, atomically.
    pub fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let err = |source| StateError::Write {
            path: path.display().to_string(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(err)?;
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("unitwatch-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn round_trip_and_first_start() {
        let d = dir("rt");
        let f = StateFile::new(&d);
        assert!(f.load().is_none(), "no file: first start");
        let saved = Saved::new(Ledger::new(), 5, Some("b".into()), Some("c".into()));
        f.write(&serde_json::to_vec(&saved).expect("json"))
            .expect("write");
        let back = f.load().expect("state");
        assert_eq!(
            (
                back.saved_at,
                back.boot_id.as_deref(),
                back.journal_cursor.as_deref()
            ),
            (5, Some("b"), Some("c"))
        );
        assert!(!d.join("state.json.tmp").exists());
    }

    /// A state file as the first release wrote it: no clock frame, no
    /// restart times, no last failure result.
    const FIRST_RELEASE: &str = r#"{"version":1,"saved_at":1700000100000000,"boot_id":"b","journal_cursor":"c","journal_from":null,"ledger":{"units":{"a.service":{"seen_at":1700000000000000,"fold_at":1700000000000000,"fold_state":"active","up_usec":0,"down_usec":0,"points":{"1700000050000000":"failed"},"sub_state":"failed","n_restarts":{"high":2,"high_at":1700000050000000,"epoch_at":0,"previous_high":null},"restarts":[2,1],"failures":{"exit-code":1},"last_failure_at":1700000050000000,"failed_invocations":["x"],"restarted_invocations":[],"loaded":true}}}}"#;

    #[test]
    fn a_state_of_the_first_release_loads() {
        let d = dir("v1");
        fs::write(d.join(FILE), FIRST_RELEASE).expect("write");
        let saved = StateFile::new(&d).load().expect("loads");
        assert!(saved.frame.is_none());
        let now = 1_700_000_100_000_000;
        let v = saved.ledger.unit("a.service", now).expect("unit");
        assert_eq!((v.uptime_seconds, v.downtime_seconds), (50.0, 50.0));
        assert_eq!((v.restarts_auto, v.restarts_manual), (2, 1));
        assert_eq!(v.last_failure, None, "its result was not kept");
        assert_eq!(
            v.history.window(now - 100_000_000).availability(),
            Some(0.5)
        );
    }

    #[test]
    fn corrupt_file_is_kept_aside() {
        let d = dir("corrupt");
        fs::write(d.join(FILE), b"{ not json").expect("write");
        let f = StateFile::new(&d);
        assert!(f.load().is_none());
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
        let e = f.write(b"{}").expect_err("a file is not a directory");
        assert!(e.to_string().contains("blocker/state.json"), "{e}");
    }
}
