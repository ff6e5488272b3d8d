//! Tests of the writer: what it writes when, failures and their retries,
//! and the last save arriving in the middle of a slow one (the shutdown
//! that used to corrupt the state file). Also the cost measurement, an
//! ignored test to run by hand in release.

use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::ledger::{ActiveState, Event, Transition, Usec};
use crate::persist::{test_dir, StateFile};

const T0: Usec = 1_700_000_000_000_000;
const WAIT: Duration = Duration::from_secs(10);

/// The owner's side, as `Owner` does it: a ledger, every change to it kept
/// as an op until the next save.
struct Sim {
    ledger: Ledger,
    ops: Vec<Op>,
    cursor: u64,
    /// A cheap generator of varied changes, seeded per test round.
    seed: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            ledger: Ledger::new(),
            ops: Vec::new(),
            cursor: 0,
            seed,
        }
    }

    fn change(&mut self, op: Op) {
        self.ops.push(op.clone());
        self.ledger.replay(op);
    }

    fn next(&mut self) -> u64 {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.seed >> 33
    }

    /// `n` changes to `units` units: first sight, state changes, failures.
    fn work(&mut self, units: u64, n: usize) {
        for _ in 0..n {
            let unit = format!("u{}.service", self.next() % units);
            let at = T0 + self.cursor * 1_000_000;
            self.cursor += 1;
            let transition = match self.next() % 5 {
                0 => Transition::Seen {
                    state: ActiveState::Active,
                    sub_state: "running".into(),
                    n_restarts: Some(0),
                },
                1 => Transition::RunFailed {
                    result: "exit-code".into(),
                    invocation: Some(format!("i{at}")),
                },
                2 => Transition::NRestarts((self.next() % 4) as u32 + 1),
                3 => Transition::State {
                    state: ActiveState::Inactive,
                    sub_state: None,
                },
                _ => Transition::State {
                    state: ActiveState::Active,
                    sub_state: Some("running".into()),
                },
            };
            self.change(Op::Apply {
                event: Event::logged(unit, at, transition),
            });
        }
    }

    fn meta(&self) -> Meta {
        Meta {
            saved_at: T0 + self.cursor * 1_000_000,
            boot_id: Some("b".into()),
            journal_cursor: Some(format!("c{}", self.cursor)),
            journal_from: None,
            frame: None,
        }
    }

    fn save(&mut self, writer: &Writer) {
        let ops = std::mem::take(&mut self.ops);
        writer.save(ops, self.meta(), Arc::new(self.ledger.clone()));
    }

    fn finish(
        &mut self,
        writer: Writer,
    ) -> impl std::future::Future<Output = Result<(), StateError>> {
        let ops = std::mem::take(&mut self.ops);
        writer.finish(ops, self.meta(), Arc::new(self.ledger.clone()))
    }

    /// Asserts that what is on disk loads as the ledger in memory.
    fn assert_loads(&self, dir: &Path) {
        let saved = StateFile::new(dir)
            .load(crate::ledger::DEFAULT_MAX_UNITS)
            .saved
            .expect("a state loads");
        let now = T0 + (self.cursor + 60) * 1_000_000;
        let loaded: Vec<_> = saved.ledger.view(now).collect();
        let memory: Vec<_> = self.ledger.view(now).collect();
        assert_eq!(loaded, memory, "the loaded ledger is the one in memory");
        assert_eq!(saved.journal_cursor, self.meta().journal_cursor);
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The files in `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A writer whose every write stops in the middle until the test lets it
/// go on, saying which kind of write it is in.
struct Paused {
    at: Receiver<Stage>,
    go: Sender<()>,
}

impl Paused {
    fn options(compact_at: u64) -> (Options, Paused) {
        let (stage, at) = channel();
        let (go, gate) = channel::<()>();
        let gate = Mutex::new(gate);
        let pause = move |s: Stage| {
            let _ = stage.send(s);
            if let Ok(gate) = gate.lock() {
                // Bounded: a failing test does not hang the writer.
                let _ = gate.recv_timeout(WAIT);
            }
        };
        let options = Options {
            compact_at,
            pause: Some(Arc::new(pause)),
            ..Options::default()
        };
        (options, Paused { at, go })
    }

    /// Waits until a write is in the middle, and says which kind.
    fn wait(&self) -> Stage {
        self.at.recv_timeout(WAIT).expect("a write in progress")
    }

    fn release(&self) {
        self.go.send(()).expect("the writer waits");
    }
}

/// What is slow when the last save is asked for.
#[derive(Clone, Copy, Debug)]
enum Slow {
    /// The first base, which must be written: waited for.
    FirstBase,
    /// An append: waited for.
    Append,
    /// A compaction of a log that outgrew its base: gives way.
    Compaction,
}

/// The regression for the shutdown that corrupted the state: the last save
/// is asked for while a periodic one is in the middle of its write. It never
/// runs beside it; what loads is then exactly the ledger in memory at
/// shutdown, and no temporary file is left.
#[test]
fn the_last_save_during_a_slow_one_loads_as_the_state_in_memory() {
    let started = Instant::now();
    for round in 0..100u64 {
        let slow = [Slow::FirstBase, Slow::Append, Slow::Compaction][round as usize % 3];
        let d = test_dir("writer-shutdown");
        let compact_at = if matches!(slow, Slow::Compaction) {
            0
        } else {
            COMPACT_AT
        };
        let (options, paused) = Paused::options(compact_at);
        let writer =
            Writer::start_with(StateFile::new(&d), Position::default(), options).expect("writer");
        let mut sim = Sim::new(round);
        sim.work(8, 40);
        // The first save is a base: there is none.
        sim.save(&writer);
        assert_eq!(paused.wait(), Stage::Compact);
        if !matches!(slow, Slow::FirstBase) {
            // Let the base be written; append until the slow write begins.
            let wanted = match slow {
                Slow::Compaction => Stage::Compact,
                _ => Stage::Append,
            };
            let mut saves = 0;
            loop {
                sim.work(8, 100);
                sim.save(&writer);
                paused.release();
                if paused.wait() == wanted {
                    break;
                }
                saves += 1;
                assert!(saves < 20, "round {round}: no {wanted:?}");
            }
        }
        // Mid-write: more changes, one more periodic save, and the last.
        sim.work(8, 40);
        sim.save(&writer);
        sim.work(8, 40);
        let done = sim.finish(writer);
        paused.release();
        let mut after = vec![paused.wait()];
        paused.release();
        if matches!(slow, Slow::Compaction) {
            // The stopped compaction's ops, appended instead.
            after.push(paused.wait());
            paused.release();
        }
        block_on(done).expect("the last save is durable");
        // Both queued saves go into one append after the slow write.
        assert!(
            after.iter().all(|s| *s == Stage::Append),
            "round {round} ({slow:?}): {after:?}"
        );
        sim.assert_loads(&d);
        assert_eq!(files(&d), ["state.json", "state.log"], "round {round}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_first_save_is_a_base_and_later_ones_append() {
    let d = test_dir("writer-first");
    let (options, paused) = Paused::options(COMPACT_AT);
    let writer =
        Writer::start_with(StateFile::new(&d), Position::default(), options).expect("writer");
    let mut sim = Sim::new(1);
    let mut stages = Vec::new();
    for _ in 0..2 {
        sim.work(4, 20);
        sim.save(&writer);
        stages.push(paused.wait());
        paused.release();
    }
    sim.work(4, 20);
    let done = sim.finish(writer);
    stages.push(paused.wait());
    paused.release();
    block_on(done).expect("saved");
    assert_eq!(stages, [Stage::Compact, Stage::Append, Stage::Append]);
    sim.assert_loads(&d);
    let base = std::fs::read_to_string(d.join(crate::persist::state::FILE)).expect("base");
    assert!(base.contains("\"seq\":1"), "{base}");
}

/// What a second run saves was done on the ledger after its restart, and
/// loads so again.
#[test]
fn a_second_run_s_saves_replay_after_its_restart() {
    let d = test_dir("writer-rerun");
    let mut sim = Sim::new(9);
    let writer = Writer::start(StateFile::new(&d), Position::default()).expect("writer");
    sim.work(4, 60);
    block_on(sim.finish(writer)).expect("saved");
    for run in 0..3 {
        let loaded = StateFile::new(&d).load(crate::ledger::DEFAULT_MAX_UNITS);
        let cursor = sim.cursor;
        sim = Sim {
            ledger: loaded.saved.expect("loads").ledger,
            ..Sim::new(10 + run)
        };
        sim.cursor = cursor;
        let writer = Writer::start(StateFile::new(&d), loaded.position).expect("writer");
        sim.work(4, 60);
        sim.save(&writer);
        sim.work(4, 60);
        block_on(sim.finish(writer)).expect("saved");
        sim.assert_loads(&d);
    }
}

/// Once the log outgrows the base (and `compact_at`), a save is a new base
/// and the log starts empty.
#[test]
fn a_log_grown_past_the_base_is_compacted() {
    let d = test_dir("writer-compact");
    let (options, paused) = Paused::options(0);
    let writer =
        Writer::start_with(StateFile::new(&d), Position::default(), options).expect("writer");
    let mut sim = Sim::new(2);
    sim.work(2, 2);
    sim.save(&writer);
    assert_eq!(paused.wait(), Stage::Compact, "the first base");
    paused.release();
    // Each save appends more than the two-unit base holds... until the
    // log is larger than the base.
    let mut stages = Vec::new();
    for _ in 0..3 {
        sim.work(2, 200);
        sim.save(&writer);
        stages.push(paused.wait());
        paused.release();
    }
    assert_eq!(stages, [Stage::Append, Stage::Compact, Stage::Append]);
    let done = sim.finish(writer);
    assert_eq!(paused.wait(), Stage::Append);
    paused.release();
    block_on(done).expect("saved");
    sim.assert_loads(&d);
}

/// A state directory that cannot be written: the save fails, its ops are
/// kept, and the next save writes them all.
#[test]
fn a_failed_save_keeps_its_ops_for_the_next() {
    let d = test_dir("writer-fail");
    let state = d.join("state");
    std::fs::write(&state, b"not a directory").expect("blocker");
    let (options, paused) = Paused::options(COMPACT_AT);
    let writer =
        Writer::start_with(StateFile::new(&state), Position::default(), options).expect("writer");
    let mut sim = Sim::new(3);
    sim.work(4, 30);
    sim.save(&writer);
    assert_eq!(paused.wait(), Stage::Failed);
    std::fs::remove_file(&state).expect("unblock");
    std::fs::create_dir(&state).expect("state dir");
    paused.release();
    sim.work(4, 30);
    let done = sim.finish(writer);
    // No base was ever written: the last save is one, with every op.
    assert_eq!(paused.wait(), Stage::Compact);
    paused.release();
    block_on(done).expect("saved at last");
    sim.assert_loads(&state);
}

/// A failed save is retried on its own, with nothing new to save.
#[test]
fn a_failed_save_is_retried_without_a_new_one() {
    let d = test_dir("writer-retry");
    let state = d.join("state");
    std::fs::write(&state, b"not a directory").expect("blocker");
    let (options, paused) = Paused::options(COMPACT_AT);
    let options = Options {
        retry_every: Duration::from_millis(20),
        ..options
    };
    let writer =
        Writer::start_with(StateFile::new(&state), Position::default(), options).expect("writer");
    let mut sim = Sim::new(4);
    sim.work(4, 30);
    sim.save(&writer);
    assert_eq!(paused.wait(), Stage::Failed);
    std::fs::remove_file(&state).expect("unblock");
    std::fs::create_dir(&state).expect("state dir");
    paused.release();
    // Nothing asked: the retry timer writes the pending save, as a base.
    assert_eq!(paused.wait(), Stage::Compact);
    paused.release();
    let done = sim.finish(writer);
    assert_eq!(paused.wait(), Stage::Append);
    paused.release();
    block_on(done).expect("saved");
    sim.assert_loads(&state);
}

/// A torn append left by a crashed run is cut off before this run's first
/// append, so the log stays readable to its end.
#[test]
fn a_torn_tail_from_a_crash_is_cut_before_the_next_append() {
    let d = test_dir("writer-torn");
    let mut sim = Sim::new(5);
    let writer = Writer::start(StateFile::new(&d), Position::default()).expect("writer");
    sim.work(4, 30);
    sim.save(&writer);
    sim.work(4, 30);
    block_on(sim.finish(writer)).expect("saved");
    // The crash: half a segment appended.
    let line = log::encode(9, false, &[Op::Shift { delta: 1 }], &sim.meta()).expect("encode");
    let mut bytes = std::fs::read(d.join(log::FILE)).expect("log");
    bytes.extend_from_slice(&line[..line.len() / 2]);
    std::fs::write(d.join(log::FILE), &bytes).expect("tear");

    let loaded = StateFile::new(&d).load(crate::ledger::DEFAULT_MAX_UNITS);
    let mut sim2 = Sim {
        ledger: loaded.saved.expect("loads").ledger,
        ..Sim::new(6)
    };
    sim2.cursor = sim.cursor;
    let writer = Writer::start(StateFile::new(&d), loaded.position).expect("writer");
    sim2.work(4, 30);
    block_on(sim2.finish(writer)).expect("saved");
    sim2.assert_loads(&d);
    let scan = log::scan(&d.join(log::FILE), |_| Ok(()))
        .expect("read")
        .expect("log");
    assert_eq!(scan.tail, log::Tail::Clean);
}

/// After a corrupt log was set aside the base alone lacks what was loaded:
/// the next save is a whole new base.
#[test]
fn after_a_corrupt_log_the_next_save_is_a_base() {
    let d = test_dir("writer-corrupt");
    let mut sim = Sim::new(7);
    let writer = Writer::start(StateFile::new(&d), Position::default()).expect("writer");
    sim.work(4, 30);
    sim.save(&writer);
    sim.work(4, 30);
    sim.save(&writer);
    sim.work(4, 30);
    block_on(sim.finish(writer)).expect("saved");
    let mut bytes = std::fs::read(d.join(log::FILE)).expect("log");
    bytes.extend_from_slice(b"garbage\n");
    bytes.extend(log::encode(99, false, &[], &sim.meta()).expect("encode"));
    std::fs::write(d.join(log::FILE), &bytes).expect("corrupt");

    let loaded = StateFile::new(&d).load(crate::ledger::DEFAULT_MAX_UNITS);
    assert!(loaded.position.must_compact);
    let (options, paused) = Paused::options(COMPACT_AT);
    let writer = Writer::start_with(StateFile::new(&d), loaded.position, options).expect("writer");
    let mut sim2 = Sim {
        ledger: loaded.saved.expect("loads").ledger,
        ..Sim::new(8)
    };
    sim2.cursor = sim.cursor;
    sim2.work(4, 30);
    let done = sim2.finish(writer);
    assert_eq!(paused.wait(), Stage::Compact, "even the last save");
    paused.release();
    block_on(done).expect("saved");
    sim2.assert_loads(&d);
}
