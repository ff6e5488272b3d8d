//! Loading the state at start: the base, then every log segment after it
//! replayed in order, then the ledger told it was restarted; and where the
//! writer is to go on from. A run's first segment is marked, so a later load
//! tells the ledger of that restart where it happened, before that run's
//! ops.
//!
//! A torn last segment (a crash mid-append) is ignored with a warning. A
//! corrupt segment with more after it is not a crash: the state up to it is
//! used and the log is kept aside as `state.log.corrupt`, and the first save
//! then writes a whole new base, since the base alone no longer holds what
//! was loaded. A log without a usable base is set aside the same way.

use super::log::{self, Tail};
use super::state::{Base, Saved, StateFile};

/// What was loaded, and where the writer goes on from.
#[derive(Debug)]
pub struct Loaded {
    /// `None` on a first start, or if the state could not be used (logged).
    pub saved: Option<Saved>,
    pub position: Position,
}

/// Where the state files stand, as far as the writer needs to know.
#[derive(Debug, Clone, Default)]
pub struct Position {
    /// The number of the last save in the files.
    pub(crate) seq: u64,
    /// The base's length; `None` if there is no base to build on.
    pub(crate) base_len: Option<u64>,
    /// The log's length up to its last good segment.
    pub(crate) log_len: u64,
    /// The log must not be appended to before a compaction (it was set
    /// aside, or cannot be read).
    pub(crate) must_compact: bool,
    /// The log holds segments the base already has (a crash between a
    /// compaction's two steps): worth a compaction, harmless meanwhile.
    pub(crate) stale: bool,
    /// A state was loaded and restarted: the next segment says so.
    pub(crate) restarted: bool,
}

impl StateFile {
    /// Loads the state: the base, and the log's segments after it, replayed
    /// on a ledger that accounts at most `max_units` units.
    pub fn load(&self, max_units: usize) -> Loaded {
        let log_path = self.dir().join(log::FILE);
        let mut saved = match self.read_base() {
            Base::Read(saved, len) => {
                let mut saved = *saved;
                saved.ledger.set_max_units(max_units);
                let position = Position {
                    seq: saved.seq,
                    base_len: Some(len),
                    ..Position::default()
                };
                (saved, position)
            }
            Base::Missing | Base::Corrupt if log_path.exists() => {
                self.set_aside(log::FILE, "a state log without a usable state file");
                return Loaded::nothing();
            }
            Base::Missing | Base::Corrupt => return Loaded::nothing(),
            // Left where it is, as before there was a log; the first save
            // replaces both.
            Base::Unreadable => return Loaded::nothing(),
        };
        let (base, position) = &mut saved;
        let base_seq = base.seq;
        let mut meta = None;
        let scanned = log::scan(&log_path, |segment| {
            if segment.seq <= base_seq && position.seq == base_seq {
                position.stale = true;
                return Ok(());
            }
            if segment.seq != position.seq + 1 {
                return Err(format!(
                    "save {} where {} was due",
                    segment.seq,
                    position.seq + 1
                ));
            }
            if segment.restarted {
                base.ledger.restarted();
            }
            for op in segment.ops {
                base.ledger.replay(op);
            }
            position.seq = segment.seq;
            meta = Some(segment.meta);
            Ok(())
        });
        let (mut base, mut position) = saved;
        match scanned {
            Ok(None) => {}
            Ok(Some(scan)) => {
                position.log_len = scan.good;
                match scan.tail {
                    Tail::Clean => {}
                    Tail::Torn { offset } => tracing::warn!(
                        path = %log_path.display(),
                        offset,
                        "the state log ends in a torn save (cut short by a crash) at byte {offset}; ignoring it"
                    ),
                    Tail::Corrupt { offset, error } => {
                        tracing::error!(
                            path = %log_path.display(),
                            offset,
                            error,
                            "the state log is corrupt at byte {offset}; using the state up to there"
                        );
                        self.set_aside(log::FILE, &format!("corrupt at byte {offset}: {error}"));
                        position.must_compact = true;
                        position.log_len = 0;
                    }
                }
            }
            Err(e) => {
                tracing::error!(path = %log_path.display(), error = %e, "cannot read the state log; using the state file alone");
                self.set_aside(log::FILE, &format!("unreadable: {e}"));
                position.must_compact = true;
            }
        }
        if let Some(meta) = meta {
            base.set_meta(meta);
        }
        base.seq = position.seq;
        base.ledger.restarted();
        position.restarted = true;
        Loaded {
            saved: Some(base),
            position,
        }
    }
}

impl Loaded {
    fn nothing() -> Loaded {
        Loaded {
            saved: None,
            position: Position::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::ledger::{ActiveState, Event, Ledger, Op, Transition, Usec};
    use crate::persist::state::{Meta, FILE};
    use crate::persist::test_dir;

    const T0: Usec = 1_700_000_000_000_000;

    fn meta(cursor: &str) -> Meta {
        Meta {
            saved_at: T0,
            boot_id: Some("b".into()),
            journal_cursor: Some(cursor.into()),
            journal_from: None,
            frame: None,
        }
    }

    fn state(unit: &str, at: Usec, state: ActiveState) -> Op {
        Op::Apply {
            event: Event::new(
                unit,
                at,
                Transition::State {
                    state,
                    sub_state: None,
                },
            ),
        }
    }

    fn seen(unit: &str) -> Op {
        Op::Apply {
            event: Event::new(
                unit,
                T0,
                Transition::Seen {
                    state: ActiveState::Active,
                    sub_state: "running".into(),
                    n_restarts: Some(0),
                },
            ),
        }
    }

    fn write_base(d: &std::path::Path, seq: u64, ledger: &Ledger, cursor: &str) {
        StateFile::new(d)
            .write_base(
                &Saved::from_meta(seq, meta(cursor), ledger),
                &std::sync::atomic::AtomicBool::new(false),
                || {},
            )
            .expect("base");
    }

    fn segment(seq: u64, ops: &[Op], cursor: &str) -> Vec<u8> {
        log::encode(seq, false, ops, &meta(cursor)).expect("encode")
    }

    /// The state as it was in memory, and the ops after `base` that lead
    /// to it, three saves' worth.
    fn history() -> (Ledger, Vec<Vec<Op>>) {
        let saves = vec![
            vec![seen("b.service")],
            vec![state("a.service", T0 + 5_000_000, ActiveState::Failed)],
            vec![
                state("a.service", T0 + 7_000_000, ActiveState::Active),
                Op::DbusLost { at: T0 + 8_000_000 },
            ],
        ];
        let mut ledger = base();
        for op in saves.iter().flatten() {
            ledger.replay(op.clone());
        }
        ledger.restarted();
        (ledger, saves)
    }

    fn base() -> Ledger {
        let mut ledger = Ledger::new();
        ledger.replay(seen("a.service"));
        ledger
    }

    fn views(l: &Ledger) -> String {
        format!("{:?}", l.view(T0 + 60_000_000).collect::<Vec<_>>())
    }

    fn load(d: &std::path::Path) -> Loaded {
        StateFile::new(d).load(crate::ledger::DEFAULT_MAX_UNITS)
    }

    #[test]
    fn a_base_alone_loads() {
        let d = test_dir("load-base");
        write_base(&d, 0, &base(), "c0");
        let loaded = load(&d);
        let saved = loaded.saved.expect("loads");
        assert_eq!(views(&saved.ledger), views(&base()));
        assert_eq!(saved.journal_cursor.as_deref(), Some("c0"));
        assert!(!loaded.position.must_compact);
    }

    #[test]
    fn base_and_log_load_as_the_state_in_memory() {
        let d = test_dir("load-log");
        write_base(&d, 4, &base(), "c4");
        let (expected, saves) = history();
        let mut bytes = Vec::new();
        for (i, ops) in saves.iter().enumerate() {
            bytes.extend(segment(5 + i as u64, ops, &format!("c{}", 5 + i)));
        }
        fs::write(d.join(log::FILE), &bytes).expect("log");
        let loaded = load(&d);
        let saved = loaded.saved.expect("loads");
        assert_eq!(views(&saved.ledger), views(&expected));
        assert_eq!(saved.journal_cursor.as_deref(), Some("c7"), "the last meta");
        assert_eq!(
            (loaded.position.seq, loaded.position.log_len),
            (7, bytes.len() as u64)
        );
    }

    #[test]
    fn a_torn_last_segment_is_ignored() {
        let d = test_dir("load-torn");
        write_base(&d, 0, &base(), "c0");
        let (_, saves) = history();
        let mut bytes = segment(1, &saves[0], "c1");
        let good = bytes.len() as u64;
        let torn = segment(2, &saves[1], "c2");
        bytes.extend_from_slice(&torn[..torn.len() - 7]);
        fs::write(d.join(log::FILE), &bytes).expect("log");
        let loaded = load(&d);
        let saved = loaded.saved.expect("loads");
        let mut expected = base();
        expected.replay(saves[0][0].clone());
        assert_eq!(views(&saved.ledger), views(&expected));
        assert_eq!(saved.journal_cursor.as_deref(), Some("c1"));
        assert_eq!(
            loaded.position.log_len, good,
            "cut off before the next append"
        );
        assert!(!loaded.position.must_compact);
        assert!(d.join(log::FILE).exists(), "the log stays");
    }

    /// What is logged while `f` runs, by any thread. One subscriber for
    /// the whole test binary: a thread-local one misses events whose
    /// callsite another test thread registered first without a subscriber.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        use std::sync::{Arc, Mutex, OnceLock};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("log buffer").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        static BUF: OnceLock<Buf> = OnceLock::new();
        let buf = BUF.get_or_init(|| {
            let buf = Buf::default();
            let out = buf.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || out.clone())
                .with_ansi(false)
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
            buf
        });
        let from = buf.0.lock().expect("log buffer").len();
        let t = f();
        let all = buf.0.lock().expect("log buffer");
        let text = String::from_utf8_lossy(&all[from.min(all.len())..]).into_owned();
        (t, text)
    }

    #[test]
    fn a_torn_last_segment_is_logged_with_the_file_and_offset() {
        let d = test_dir("load-torn-log");
        write_base(&d, 0, &base(), "c0");
        let mut bytes = segment(1, &[seen("b.service")], "c1");
        let good = bytes.len();
        bytes.extend_from_slice(b"{\"seq\":2,\"ops\":[");
        fs::write(d.join(log::FILE), &bytes).expect("log");
        let (_, text) = logged(|| load(&d));
        assert!(text.contains("torn"), "{text}");
        assert!(text.contains(&format!("offset={good}")), "{text}");
        assert!(
            text.contains(&d.join(log::FILE).display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn a_corrupt_middle_segment_stops_the_replay_and_the_log_is_kept_aside() {
        let d = test_dir("load-mid");
        write_base(&d, 0, &base(), "c0");
        let (_, saves) = history();
        let mut bytes = segment(1, &saves[0], "c1");
        bytes.extend_from_slice(b"{\"seq\":2,\"ops\":[{\"op\":\"shi\n");
        bytes.extend(segment(3, &saves[2], "c3"));
        fs::write(d.join(log::FILE), &bytes).expect("log");
        let loaded = load(&d);
        let saved = loaded.saved.expect("loads");
        let mut expected = base();
        expected.replay(saves[0][0].clone());
        assert_eq!(views(&saved.ledger), views(&expected));
        assert_eq!(saved.journal_cursor.as_deref(), Some("c1"));
        assert!(loaded.position.must_compact, "the base alone lacks save 1");
        assert!(!d.join(log::FILE).exists());
        assert_eq!(
            fs::read(d.join("state.log.corrupt")).expect("kept aside"),
            bytes
        );
    }

    #[test]
    fn a_gap_in_the_saves_is_corruption() {
        let d = test_dir("load-gap");
        write_base(&d, 0, &base(), "c0");
        let (_, saves) = history();
        let mut bytes = segment(1, &saves[0], "c1");
        bytes.extend(segment(3, &saves[2], "c3"));
        fs::write(d.join(log::FILE), &bytes).expect("log");
        let loaded = load(&d);
        assert_eq!(
            loaded.saved.expect("loads").journal_cursor.as_deref(),
            Some("c1")
        );
        assert!(d.join("state.log.corrupt").exists());
    }

    /// A crash after a compaction renamed its base over `state.json` and
    /// before it emptied the log: the log's segments are in the base and are
    /// skipped, and later ones still apply.
    #[test]
    fn segments_the_base_holds_are_skipped() {
        let d = test_dir("load-skip");
        let (expected, saves) = history();
        let mut compacted = base();
        for op in saves[0].iter().chain(&saves[1]) {
            compacted.replay(op.clone());
        }
        write_base(&d, 2, &compacted, "c2");
        let mut bytes = segment(1, &saves[0], "c1");
        bytes.extend(segment(3, &saves[2], "c3"));
        fs::write(d.join(log::FILE), &bytes).expect("log");
        let loaded = load(&d);
        let saved = loaded.saved.expect("loads");
        assert_eq!(views(&saved.ledger), views(&expected));
        assert_eq!(saved.journal_cursor.as_deref(), Some("c3"));
        assert!(loaded.position.stale);
        assert_eq!(loaded.position.seq, 3);
    }

    #[test]
    fn only_skipped_segments_leave_the_base_as_it_is() {
        let d = test_dir("load-skip-all");
        write_base(&d, 1, &base(), "c1");
        fs::write(d.join(log::FILE), segment(1, &[seen("x.service")], "c1")).expect("log");
        let saved = load(&d).saved.expect("loads");
        assert_eq!(views(&saved.ledger), views(&base()));
    }

    #[test]
    fn a_log_without_a_base_is_kept_aside() {
        let d = test_dir("load-orphan");
        fs::write(d.join(log::FILE), segment(1, &[seen("x.service")], "c1")).expect("log");
        assert!(load(&d).saved.is_none());
        assert!(d.join("state.log.corrupt").exists());
    }

    #[test]
    fn a_corrupt_base_sets_its_log_aside_too() {
        let d = test_dir("load-corrupt");
        fs::write(d.join(FILE), b"{ not json").expect("base");
        fs::write(d.join(log::FILE), segment(1, &[], "c1")).expect("log");
        assert!(load(&d).saved.is_none());
        assert!(d.join("state.json.corrupt").exists());
        assert!(d.join("state.log.corrupt").exists());
    }

    /// A state file as the first release wrote it: no clock frame, no
    /// restart times, no last failure result, no seq, no log.
    const FIRST_RELEASE: &str = r#"{"version":1,"saved_at":1700000100000000,"boot_id":"b","journal_cursor":"c","journal_from":null,"ledger":{"units":{"a.service":{"seen_at":1700000000000000,"fold_at":1700000000000000,"fold_state":"active","up_usec":0,"down_usec":0,"points":{"1700000050000000":"failed"},"sub_state":"failed","n_restarts":{"high":2,"high_at":1700000050000000,"epoch_at":0,"previous_high":null},"restarts":[2,1],"failures":{"exit-code":1},"last_failure_at":1700000050000000,"failed_invocations":["x"],"restarted_invocations":[],"loaded":true}}}}"#;

    #[test]
    fn a_state_of_the_first_release_loads() {
        let d = test_dir("load-v1");
        fs::write(d.join(FILE), FIRST_RELEASE).expect("write");
        let loaded = load(&d);
        let saved = loaded.saved.expect("loads");
        assert!(saved.frame.is_none());
        assert_eq!((saved.seq, saved.journal_cursor.as_deref()), (0, Some("c")));
        let now = 1_700_000_100_000_000;
        let v = saved.ledger.unit("a.service", now).expect("unit");
        assert_eq!((v.uptime_seconds, v.downtime_seconds), (50.0, 50.0));
        assert_eq!((v.restarts_auto, v.restarts_manual), (2, 1));
        assert_eq!(v.last_failure, None, "its result was not kept");
        assert_eq!(
            v.history.window(now - 100_000_000).availability(),
            Some(0.5)
        );
        assert_eq!(loaded.position.base_len, Some(FIRST_RELEASE.len() as u64));
    }

    #[test]
    fn nothing_saved_is_a_first_start() {
        let d = test_dir("load-none");
        let loaded = load(&d);
        assert!(loaded.saved.is_none());
        assert_eq!(loaded.position.base_len, None, "the first save is a base");
    }
}
