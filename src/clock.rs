//! unitwatch's clock: wall-clock time as this boot's `CLOCK_MONOTONIC` plus
//! one offset, the *frame*.
//!
//! systemd records every transition on both clocks (`ActiveEnterTimestamp`
//! and `ActiveEnterTimestampMonotonic`, a journal record's realtime and
//! monotonic time). Within a boot unitwatch takes the monotonic one and adds
//! the frame, so durations are differences of monotonic times and setting the
//! system clock (`date -s`, an NTP step) changes none of them. When the wall
//! clock moves away from the frame by more than [`STEP`], the ledger task
//! calls [`resync`] and moves its recorded history by the same amount, so
//! exported timestamps follow the new wall clock while every duration stays
//! as measured. Records of earlier boots only have their wall-clock time.
//!
//! The frame is process-wide; only the ledger task moves it.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::ledger::Usec;

/// Steps of the wall clock smaller than this are not followed (NTP slews and
/// the jitter of reading two clocks one after the other stay well below).
pub const STEP: i64 = 1_000_000;

/// The frame: wall clock minus monotonic clock, in µs; unset until first read.
static FRAME: AtomicI64 = AtomicI64::new(i64::MIN);

fn read(clock: libc::clockid_t) -> Usec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000) + (ts.tv_nsec as u64) / 1_000
}

/// This boot's `CLOCK_MONOTONIC`, the clock of systemd's `*Monotonic` timestamps.
pub fn monotonic() -> Usec {
    read(libc::CLOCK_MONOTONIC)
}

/// The wall clock as the system has it right now.
pub fn wall() -> Usec {
    read(libc::CLOCK_REALTIME)
}

/// What the wall clock's offset from the monotonic clock is right now.
pub fn wall_offset() -> i64 {
    wall() as i64 - monotonic() as i64
}

/// The frame in use (set from the wall clock on first use).
pub fn frame() -> i64 {
    let f = FRAME.load(Ordering::Acquire);
    if f != i64::MIN {
        return f;
    }
    let now = wall_offset();
    match FRAME.compare_exchange(i64::MIN, now, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => now,
        Err(current) => current,
    }
}

/// Sets the frame (to a saved one of this boot, at startup).
pub fn set_frame(offset: i64) {
    FRAME.store(offset, Ordering::Release);
}

/// unitwatch's time now.
pub fn now() -> Usec {
    now_in_frame().0
}

/// unitwatch's time now and the frame it is in, read together.
pub fn now_in_frame() -> (Usec, i64) {
    let frame = frame();
    (to_frame(monotonic(), frame), frame)
}

/// `mono` in `frame`; pure, for the conversions the sources do.
pub fn to_frame(mono: Usec, frame: i64) -> Usec {
    (mono as i64).saturating_add(frame).max(0) as Usec
}

/// `at`, a time in frame `from`, in frame `to`.
pub fn reframe(at: Usec, from: i64, to: i64) -> Usec {
    if from == to {
        return at;
    }
    to_frame((at as i64).saturating_sub(from).max(0) as Usec, to)
}

/// If the wall clock was set since the frame was taken, moves the frame onto
/// it and returns by how much (µs, positive when the clock went forward).
pub fn resync() -> Option<i64> {
    let delta = step(frame(), wall_offset())?;
    FRAME.fetch_add(delta, Ordering::AcqRel);
    Some(delta)
}

/// The step from frame `from` to the wall clock's offset `to`, if it is one.
pub fn step(from: i64, to: i64) -> Option<i64> {
    let delta = to.saturating_sub(from);
    (delta.abs() > STEP).then_some(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_conversion_and_steps() {
        assert_eq!(
            to_frame(5_000_000, 1_700_000_000_000_000),
            1_700_000_005_000_000
        );
        assert_eq!(to_frame(5, -10), 0);
        assert_eq!(reframe(1_000, 100, 100), 1_000);
        assert_eq!(reframe(1_000, 100, -200), 700);
        assert_eq!(step(100, 100 + STEP), None);
        assert_eq!(step(100, 100 + STEP + 1), Some(STEP + 1));
        assert_eq!(step(0, -3_600_000_000), Some(-3_600_000_000));
    }

    #[test]
    fn now_is_close_to_the_wall_clock() {
        // Both clocks are read here; with no step in between they agree to
        // well within the step threshold.
        let diff = now() as i64 - wall() as i64;
        assert!(
            diff.abs() < STEP,
            "unitwatch's clock is {diff} µs off the wall clock"
        );
    }
}
