//! Reads of a unit's kept history over a window ending at `now`:
//! availability, MTBF and MTTR, the timeline of states, restarts.
//!
//! A window is `[now - length, now]`, cut to the part the history covers (it
//! begins where accounting began or where older points were folded away), so
//! every number is exact for the time it reports on:
//! - *availability*: up time / (up + down time) in the window;
//! - *MTBF*: up time / the number of times the unit went down in the window
//!   (up → down: a stop, a crash, a restart), none if it never did;
//! - *MTTR*: down time / the number of times it came back up in the window,
//!   none if it never did.

use std::collections::{BTreeMap, VecDeque};

use super::{ActiveState, Trigger, Usec};

/// One unit's history as of `now`, borrowed from the ledger.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct History<'a> {
    /// Where the history begins, and the state then.
    pub(super) from: Usec,
    pub(super) state_at_from: ActiveState,
    /// State changes after `from`.
    pub(super) points: &'a BTreeMap<Usec, ActiveState>,
    /// When restarts were counted.
    pub(super) restarts: &'a VecDeque<(Usec, Trigger)>,
    pub(super) now: Usec,
}

/// Up and down time in a window, and the changes between them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Window {
    /// Where the window begins after cutting it to the history.
    pub from: Usec,
    pub up_usec: u64,
    pub down_usec: u64,
    /// Times the unit went down (up → down) in the window.
    pub downs: u32,
    /// Times it came up (down → up) in the window.
    pub ups: u32,
}

impl Window {
    /// Up time over all time accounted in the window; none if there is none.
    pub fn availability(&self) -> Option<f64> {
        let total = self.up_usec + self.down_usec;
        (total > 0).then(|| self.up_usec as f64 / total as f64)
    }

    /// Mean time between failures, seconds.
    pub fn mtbf_seconds(&self) -> Option<f64> {
        (self.downs > 0).then(|| self.up_usec as f64 / 1e6 / f64::from(self.downs))
    }

    /// Mean time to recovery, seconds.
    pub fn mttr_seconds(&self) -> Option<f64> {
        (self.ups > 0).then(|| self.down_usec as f64 / 1e6 / f64::from(self.ups))
    }
}

/// A stretch of time in one state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub from: Usec,
    pub to: Usec,
    pub state: ActiveState,
}

impl<'a> History<'a> {
    /// The time reads are made at.
    pub fn now(&self) -> Usec {
        self.now
    }

    /// Where the kept history begins.
    pub fn begins(&self) -> Usec {
        self.from
    }

    /// The kept state changes, oldest first.
    pub fn transitions(&self) -> impl Iterator<Item = (Usec, ActiveState)> + 'a {
        self.points.iter().map(|(t, s)| (*t, *s))
    }

    /// The states from `from` (cut to the history) to now, merged where a
    /// state repeats.
    pub fn timeline(&self, from: Usec) -> Vec<Segment> {
        let start = from.max(self.from).min(self.now);
        let mut segments: Vec<Segment> = Vec::new();
        let mut state = self.state_at_from;
        let mut since = self.from;
        let ends = self
            .points
            .iter()
            .map(|(t, s)| (*t, Some(*s)))
            .chain(std::iter::once((self.now, None)));
        for (t, next) in ends {
            let (a, b) = (since.max(start), t.min(self.now));
            if b > a {
                match segments.last_mut() {
                    Some(last) if last.state == state && last.to == a => last.to = b,
                    _ => segments.push(Segment {
                        from: a,
                        to: b,
                        state,
                    }),
                }
            }
            since = since.max(t);
            if let Some(s) = next {
                state = s;
            }
        }
        segments
    }

    /// Up and down time from `from` (cut to the history) to now.
    pub fn window(&self, from: Usec) -> Window {
        let start = from.max(self.from).min(self.now);
        let mut w = Window {
            from: start,
            ..Window::default()
        };
        let mut previous: Option<bool> = None;
        for segment in self.timeline(start) {
            let span = segment.to - segment.from;
            let up = segment.state.is_up();
            if up {
                w.up_usec += span;
            } else {
                w.down_usec += span;
            }
            match previous {
                Some(true) if !up => w.downs += 1,
                Some(false) if up => w.ups += 1,
                _ => {}
            }
            previous = Some(up);
        }
        w
    }

    /// Restarts counted from `from` on, by trigger (`[auto, manual]`).
    pub fn restarts_since(&self, from: Usec) -> [u64; 2] {
        let mut n = [0, 0];
        for (t, trigger) in self.restarts.iter().rev() {
            if *t < from {
                break;
            }
            n[*trigger as usize] += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Event, Ledger, Transition};
    use super::ActiveState::*;
    use super::*;

    const S: Usec = 1_000_000;
    const H: Usec = 3600 * S;
    const T0: Usec = 1_700_000_000 * S;

    fn at(l: &mut Ledger, t: Usec, state: ActiveState) {
        l.apply(Event::new(
            "u.service",
            t,
            Transition::State {
                state,
                sub_state: None,
            },
        ));
    }

    /// Seen up at T0; down 10:00–10:30 (closed), up again, down from 11:45 (open).
    fn ledger() -> Ledger {
        let mut l = Ledger::new();
        l.apply(Event::new(
            "u.service",
            T0,
            Transition::Seen {
                state: Active,
                sub_state: "running".into(),
                n_restarts: Some(0),
            },
        ));
        at(&mut l, T0 + 10 * H, Deactivating);
        at(&mut l, T0 + 10 * H + 60 * S, Inactive);
        at(&mut l, T0 + 10 * H + 1800 * S - 60 * S, Activating);
        at(&mut l, T0 + 10 * H + 1800 * S, Active);
        at(&mut l, T0 + 11 * H + 2700 * S, Failed);
        l
    }

    #[test]
    fn windows_cut_through_open_and_closed_intervals() {
        let l = ledger();
        let now = T0 + 12 * H;
        let v = l.unit("u.service", now).expect("unit");
        // The last hour: up 11:00–11:45, down (open) 11:45–12:00.
        let w = v.history.window(now - H);
        assert_eq!((w.up_usec, w.down_usec), (2700 * S, 900 * S));
        assert_eq!(w.availability(), Some(0.75));
        assert_eq!((w.downs, w.ups), (1, 0));
        assert_eq!((w.mtbf_seconds(), w.mttr_seconds()), (Some(2700.0), None));
        // Two hours: from 10:00, the closed 30-minute outage and the open one.
        let w = v.history.window(now - 2 * H);
        assert_eq!((w.up_usec, w.down_usec), (4500 * S, 2700 * S));
        assert_eq!((w.downs, w.ups), (1, 1));
        assert_eq!(w.mtbf_seconds(), Some(4500.0));
        assert_eq!(w.mttr_seconds(), Some(2700.0));
        // A window that cuts the closed outage in half (10:15–12:00).
        let w = v.history.window(now - H - 2700 * S);
        assert_eq!((w.up_usec, w.down_usec), (4500 * S, 1800 * S));
        assert_eq!(
            (w.downs, w.ups),
            (1, 1),
            "the outage's end is in the window, its start not"
        );
        // 24 hours reach before accounting began: cut to T0.
        let w = v.history.window(now.saturating_sub(24 * H));
        assert_eq!(w.from, T0);
        assert_eq!(w.up_usec + w.down_usec, 12 * H);
        assert_eq!(w.down_usec, 2700 * S);
        assert_eq!((w.downs, w.ups), (2, 1));
        assert_eq!(w.mtbf_seconds(), Some((12 * 3600 - 2700) as f64 / 2.0));
        assert_eq!(w.mttr_seconds(), Some(2700.0));
    }

    #[test]
    fn a_window_without_changes_has_no_mtbf_or_mttr() {
        let l = ledger();
        let now = T0 + 5 * H;
        let w = l
            .unit("u.service", now)
            .expect("unit")
            .history
            .window(now - H);
        assert_eq!(w.availability(), Some(1.0));
        assert_eq!((w.mtbf_seconds(), w.mttr_seconds()), (None, None));
        // Nothing accounted at all: no availability either.
        let w = l
            .unit("u.service", T0)
            .expect("unit")
            .history
            .window(T0 - H);
        assert_eq!(w.availability(), None);
    }

    #[test]
    fn timeline_merges_and_cuts() {
        let l = ledger();
        let now = T0 + 12 * H;
        let t = l
            .unit("u.service", now)
            .expect("unit")
            .history
            .timeline(now - 2 * H);
        let states: Vec<_> = t
            .iter()
            .map(|s| (s.from - T0, s.to - T0, s.state))
            .collect();
        assert_eq!(
            states,
            [
                (10 * H, 10 * H + 60 * S, Deactivating),
                (10 * H + 60 * S, 10 * H + 1740 * S, Inactive),
                (10 * H + 1740 * S, 10 * H + 1800 * S, Activating),
                (10 * H + 1800 * S, 11 * H + 2700 * S, Active),
                (11 * H + 2700 * S, 12 * H, Failed),
            ]
        );
    }

    #[test]
    fn restarts_are_counted_by_time() {
        let mut l = ledger();
        for (i, n) in [1u32, 2, 5].iter().enumerate() {
            l.apply(Event::new(
                "u.service",
                T0 + (i as u64 + 1) * H,
                Transition::NRestarts(*n),
            ));
        }
        let v = l.unit("u.service", T0 + 4 * H).expect("unit");
        assert_eq!(v.history.restarts_since(T0), [5, 0]);
        assert_eq!(v.history.restarts_since(T0 + 2 * H), [4, 0]);
        assert_eq!(v.history.restarts_since(T0 + 3 * H + 1), [0, 0]);
    }

    #[test]
    fn thirty_days_of_hourly_flapping_are_kept() {
        let mut l = ledger();
        let base = T0 + 13 * H;
        for h in 0..(31 * 24) {
            let t = base + h * H;
            at(&mut l, t, Active);
            at(&mut l, t + 50 * 60 * S, Inactive);
        }
        let now = base + 31 * 24 * H;
        let v = l.unit("u.service", now).expect("unit");
        let w = v.history.window(now - 30 * 24 * H);
        assert_eq!(w.from, now - 30 * 24 * H, "30 days are covered");
        assert_eq!(w.up_usec, 30 * 24 * 50 * 60 * S);
        assert_eq!(w.downs, 720);
        assert!(v.history.transitions().count() <= super::super::MAX_POINTS);
        // The totals still hold everything.
        assert_eq!(
            v.uptime_seconds + v.downtime_seconds,
            (now - T0) as f64 / 1e6
        );
    }
}
