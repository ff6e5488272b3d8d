//! What saving costs at 2000 units with full histories (4096 state changes
//! each): the owner's part of a save, an append of N ops, a compaction, and
//! a load. Ignored; run by hand in release:
//! `cargo test --release --lib persist::measure -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::Instant;

use super::state::{Meta, Saved, StateFile};
use super::{log, test_dir, Position, Writer};
use crate::ledger::{ActiveState, Event, Ledger, Op, Transition, Usec, MAX_POINTS};

const UNITS: usize = 2000;
const T0: Usec = 1_700_000_000_000_000;

fn change(unit: &str, i: usize) -> Op {
    let state = if i % 2 == 0 {
        ActiveState::Inactive
    } else {
        ActiveState::Active
    };
    Op::Apply {
        event: Event::new(
            unit,
            T0 + (i as Usec + 1) * 60_000_000,
            Transition::State {
                state,
                sub_state: Some("running".into()),
            },
        ),
    }
}

fn meta() -> Meta {
    Meta {
        saved_at: T0,
        boot_id: Some("b".into()),
        journal_cursor: Some("s=0123456789abcdef;i=1;b=0123;m=1;t=1;x=1".into()),
        journal_from: None,
        frame: None,
    }
}

/// The peak resident memory since the last reset, and the current, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[test]
#[ignore = "a measurement, run by hand in release"]
fn costs_at_2000_units_with_full_histories() {
    let mut ledger = Ledger::new();
    for u in 0..UNITS {
        let unit = format!("unit-{u:04}.service");
        ledger.apply(Event::new(
            unit.as_str(),
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: Some(0),
            },
        ));
        for i in 0..MAX_POINTS {
            ledger.replay(change(&unit, i));
        }
    }
    eprintln!("ledger: {UNITS} units x {MAX_POINTS} state changes");

    // The owner's part of a save: the snapshot (today's deep clone, which
    // is being made cheap), then moving the ops out and the hand-over.
    let mut clones = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let snapshot = Arc::new(ledger.clone());
        clones.push(t.elapsed());
        drop(snapshot);
    }
    eprintln!("owner: Arc::new(ledger.clone()) {clones:?}");
    let d = test_dir("measure");
    let writer = Writer::start(StateFile::new(&d), Position::default()).expect("writer");
    let snapshot = Arc::new(ledger.clone());
    for n in [1_000, 10_000, 100_000] {
        let mut handed = Vec::new();
        for _ in 0..5 {
            let mut ops: Vec<Op> = (0..n).map(|i| change("unit-0000.service", i)).collect();
            let t = Instant::now();
            let taken = std::mem::take(&mut ops);
            writer.save(taken, meta(), Arc::clone(&snapshot));
            handed.push(t.elapsed());
        }
        eprintln!("owner: mem::take + send of {n} ops {handed:?}");
    }
    let t = Instant::now();
    let done = writer.finish(Vec::new(), meta(), Arc::clone(&snapshot));
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(done)
        .expect("saved");
    eprintln!(
        "writer: the first base and everything queued behind it, done {:?} after the last save was asked for",
        t.elapsed()
    );
    drop(snapshot);

    // The writer's part: an append of N ops (encode, write, fdatasync).
    let d = test_dir("measure-append");
    let mut len = 0;
    for (seq, n) in [10usize, 1_000, 10_000, 100_000].into_iter().enumerate() {
        let ops: Vec<Op> = (0..n).map(|i| change("unit-0001.service", i)).collect();
        let t = Instant::now();
        let line = log::encode(seq as u64 + 1, false, &ops, &meta()).expect("encode");
        let encode = t.elapsed();
        let t = Instant::now();
        len = log::append(&d, len, &line, || {}).expect("append");
        let append = t.elapsed();
        eprintln!(
            "writer, append of {n} ops: {} KiB, encode {encode:?}, write + fdatasync {append:?}",
            line.len() / 1024
        );
    }

    // A compaction: the base streamed, fsynced, renamed; the log emptied.
    let d = test_dir("measure-compact");
    let file = StateFile::new(&d);
    for round in 0..3 {
        reset_peak();
        let (_, before) = memory();
        let t = Instant::now();
        let bytes = file
            .write_base(
                &Saved::from_meta(1, meta(), &ledger),
                &std::sync::atomic::AtomicBool::new(false),
                || {},
            )
            .expect("base");
        log::reset(&d).expect("reset");
        let took = t.elapsed();
        let (peak, _) = memory();
        eprintln!(
            "writer, compaction {round}: {:.0} MiB written in {took:?}, peak RSS +{:.1} MiB",
            bytes as f64 / (1 << 20) as f64,
            peak - before
        );
    }
    let t = Instant::now();
    let mut sink = std::io::BufWriter::with_capacity(1 << 20, std::io::sink());
    serde_json::to_writer(&mut sink, &Saved::from_meta(1, meta(), &ledger)).expect("encode");
    eprintln!(
        "writer, compaction's encoding alone (to a sink): {:?}",
        t.elapsed()
    );
    // For comparison, what the owner did every save before: to_vec.
    reset_peak();
    let (_, before) = memory();
    let t = Instant::now();
    let bytes = serde_json::to_vec(&Saved::from_meta(1, meta(), &ledger)).expect("encode");
    let took = t.elapsed();
    let (peak, _) = memory();
    eprintln!(
        "before: serde_json::to_vec of the state {took:?}, {} MiB, peak RSS +{:.0} MiB",
        bytes.len() >> 20,
        peak - before
    );
    drop(bytes);

    // Loading it back: the base, then a log of 100 000 ops.
    let ops: Vec<Op> = (0..100_000)
        .map(|i| change("unit-0002.service", i))
        .collect();
    let line = log::encode(2, false, &ops, &meta()).expect("encode");
    log::append(&d, 0, &line, || {}).expect("append");
    let t = Instant::now();
    let loaded = file.load(crate::ledger::DEFAULT_MAX_UNITS);
    eprintln!(
        "load of base + 100 000 ops: {:?} ({} units)",
        t.elapsed(),
        loaded.saved.map(|s| s.ledger.len()).unwrap_or(0)
    );
}
