//! The state log `state.log`: what changed since the base, one segment per
//! save, appended and fsynced.
//!
//! A segment is one line: a JSON object `{seq, ops, meta}` and a newline.
//! JSON never holds a raw newline, so a line is a record; a save is one
//! `write` of the whole line, so a crash mid-append leaves at most one torn
//! line, the last, without its newline or not parsing. Such a tail is
//! ignored (and cut off before the next append); a bad line with segments
//! after it is corruption, not a crash, and reading stops there.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::state::{replace_with, sync_dir, Meta, StateError};
use crate::ledger::Op;

/// The log's name inside `state.dir`.
pub const FILE: &str = "state.log";

/// One save: the ops since the one before, and the position after them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Segment<O = Vec<Op>, M = Meta> {
    /// Saves are numbered one up from the base's `seq`.
    pub seq: u64,
    /// The first save of a run that loaded the state: its ops were made on
    /// the ledger after [`crate::ledger::Ledger::restarted`], so they are
    /// replayed after it too.
    #[serde(default, skip_serializing_if = "is_false")]
    pub restarted: bool,
    pub ops: O,
    pub meta: M,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The segment's line, newline included.
pub(crate) fn encode(
    seq: u64,
    restarted: bool,
    ops: &[Op],
    meta: &Meta,
) -> Result<Vec<u8>, StateError> {
    let segment = Segment {
        seq,
        restarted,
        ops,
        meta,
    };
    let mut line = serde_json::to_vec(&segment).map_err(StateError::Encode)?;
    line.push(b'\n');
    Ok(line)
}

/// Appends `line` to the log of `dir`, which is `expected` bytes long as far
/// as this writer knows: longer means an append cut short (a crash, or a
/// full disk here), which is cut off first. `mid` runs between the write and
/// the fsync (a hook for tests). Returns the new length; on failure the log
/// is put back to `expected` bytes as far as possible.
pub(crate) fn append(
    dir: &Path,
    expected: u64,
    line: &[u8],
    mid: impl FnOnce(),
) -> Result<u64, StateError> {
    let path = dir.join(FILE);
    let err = StateError::write(&path);
    fs::create_dir_all(dir).map_err(StateError::write(&path))?;
    let (mut file, created) = match OpenOptions::new().append(true).open(&path) {
        Ok(f) => (f, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (
            OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&path)
                .map_err(StateError::write(&path))?,
            true,
        ),
        Err(e) => return Err(err(e)),
    };
    let len = file.metadata().map_err(StateError::write(&path))?.len();
    if len < expected {
        return Err(StateError::Shrunk {
            path: path.display().to_string(),
            len,
            expected,
        });
    }
    let result = (|| {
        if len > expected {
            file.set_len(expected)?;
        }
        file.write_all(line)?;
        mid();
        file.sync_data()?;
        if created {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = file.set_len(expected);
    }
    result.map_err(err)?;
    Ok(expected + line.len() as u64)
}

/// Replaces the log of `dir` with an empty one, atomically (an empty
/// temporary file, fsynced, renamed over it, the directory fsynced).
pub(crate) fn reset(dir: &Path) -> Result<(), StateError> {
    let path = dir.join(FILE);
    replace_with(dir, &path, FILE, &AtomicBool::new(false), |_| Ok(()))
        .map(|_| ())
        .map_err(StateError::write(&path))
}

/// How the log ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Tail {
    /// After its last complete segment.
    Clean,
    /// In a torn segment at `offset`: an append cut short.
    Torn { offset: u64 },
    /// At a corrupt or unexpected segment at `offset`, with more after it.
    Corrupt { offset: u64, error: String },
}

/// What reading a log found.
#[derive(Debug)]
pub struct Scan {
    /// The bytes up to the end of the last good segment.
    pub good: u64,
    pub tail: Tail,
}

/// Reads the log at `path`, handing each segment to `each` in order; `each`
/// refuses one (a sequence number out of order) with a reason, which ends
/// the reading as corruption. `None` if there is no log.
pub fn scan(
    path: &Path,
    mut each: impl FnMut(Segment) -> Result<(), String>,
) -> io::Result<Option<Scan>> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut good = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(Some(Scan {
                good,
                tail: Tail::Clean,
            }));
        }
        let whole = line.last() == Some(&b'\n');
        let parsed = if whole {
            serde_json::from_slice::<Segment>(&line).map_err(|e| e.to_string())
        } else {
            Err("no newline at its end".to_owned())
        };
        let refused = match parsed {
            Ok(segment) => match each(segment) {
                Ok(()) => {
                    good += n as u64;
                    continue;
                }
                // A segment that parses is whole: not a torn append.
                Err(why) => Some(why),
            },
            Err(_) if rest_is_blank(&mut reader)? => {
                return Ok(Some(Scan {
                    good,
                    tail: Tail::Torn { offset: good },
                }))
            }
            Err(why) => Some(why),
        };
        return Ok(Some(Scan {
            good,
            tail: Tail::Corrupt {
                offset: good,
                error: refused.unwrap_or_default(),
            },
        }));
    }
}

/// Whether nothing but zeros and white space follows: what a crash leaves
/// after a torn append (file systems may show unwritten blocks as zeros).
fn rest_is_blank(reader: &mut impl Read) -> io::Result<bool> {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n]
            .iter()
            .any(|b| !matches!(b, 0 | b' ' | b'\n' | b'\r' | b'\t'))
        {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::test_dir;

    fn meta(at: u64) -> Meta {
        Meta {
            saved_at: at,
            boot_id: None,
            journal_cursor: Some(format!("c{at}")),
            journal_from: None,
            frame: None,
        }
    }

    fn seqs(path: &Path) -> (Vec<u64>, Scan) {
        let mut seen = Vec::new();
        let scan = scan(path, |s| {
            seen.push(s.seq);
            Ok(())
        })
        .expect("read")
        .expect("a log");
        (seen, scan)
    }

    #[test]
    fn appended_segments_read_back_in_order() {
        let d = test_dir("log-rt");
        let mut len = 0;
        for seq in 1..=3 {
            let line = encode(seq, false, &[Op::Shift { delta: 1 }], &meta(seq)).expect("encode");
            len = append(&d, len, &line, || {}).expect("append");
        }
        let (seen, scan) = seqs(&d.join(FILE));
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!((scan.good, scan.tail), (len, Tail::Clean));
    }

    #[test]
    fn no_log_reads_as_none() {
        let d = test_dir("log-none");
        assert!(scan(&d.join(FILE), |_| Ok(())).expect("read").is_none());
    }

    #[test]
    fn a_torn_append_is_cut_off_before_the_next() {
        let d = test_dir("log-cut");
        let first = encode(1, false, &[], &meta(1)).expect("encode");
        let len = append(&d, 0, &first, || {}).expect("append");
        let second = encode(2, false, &[], &meta(2)).expect("encode");
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join(FILE))
            .expect("open");
        f.write_all(&second[..second.len() / 2]).expect("tear");
        let (_, scan) = seqs(&d.join(FILE));
        assert_eq!(scan.tail, Tail::Torn { offset: len });
        append(&d, scan.good, &second, || {}).expect("append");
        let (seen, scan) = seqs(&d.join(FILE));
        assert_eq!((seen, scan.tail), (vec![1, 2], Tail::Clean));
    }

    #[test]
    fn a_log_shorter_than_written_is_not_appended_to() {
        let d = test_dir("log-short");
        let line = encode(1, false, &[], &meta(1)).expect("encode");
        let len = append(&d, 0, &line, || {}).expect("append");
        let e = append(&d, len + 10, &line, || {}).expect_err("shrunk");
        assert!(matches!(e, StateError::Shrunk { .. }), "{e}");
        assert_eq!(fs::metadata(d.join(FILE)).expect("log").len(), len);
    }

    #[test]
    fn zeros_after_a_torn_append_are_a_torn_tail() {
        let d = test_dir("log-zeros");
        let line = encode(1, false, &[], &meta(1)).expect("encode");
        let mut bytes = line.clone();
        bytes.extend_from_slice(&[0u8; 100]);
        bytes.push(b'\n');
        bytes.extend_from_slice(&[0u8; 5000]);
        fs::write(d.join(FILE), &bytes).expect("write");
        let (seen, scan) = seqs(&d.join(FILE));
        assert_eq!(seen, [1]);
        assert_eq!(
            scan.tail,
            Tail::Torn {
                offset: line.len() as u64
            }
        );
    }

    #[test]
    fn a_bad_line_with_segments_after_it_is_corruption() {
        let d = test_dir("log-mid");
        let one = encode(1, false, &[], &meta(1)).expect("encode");
        let three = encode(3, false, &[], &meta(3)).expect("encode");
        let mut bytes = one.clone();
        bytes.extend_from_slice(b"{\"seq\":2,\"op\n");
        bytes.extend_from_slice(&three);
        fs::write(d.join(FILE), &bytes).expect("write");
        let (seen, scan) = seqs(&d.join(FILE));
        assert_eq!(seen, [1]);
        assert!(
            matches!(scan.tail, Tail::Corrupt { offset, .. } if offset == one.len() as u64),
            "{:?}",
            scan.tail
        );
    }

    #[test]
    fn reset_leaves_an_empty_log_and_no_temporary_file() {
        let d = test_dir("log-reset");
        let line = encode(1, false, &[], &meta(1)).expect("encode");
        append(&d, 0, &line, || {}).expect("append");
        reset(&d).expect("reset");
        assert_eq!(fs::read(d.join(FILE)).expect("log"), b"");
        assert_eq!(fs::read_dir(&d).expect("dir").count(), 1);
    }
}
