//! Reads of a unit's kept history over a window ending at `now`:
//! availability, MTBF and MTTR, the timeline of states, restarts. Every
//! read is a range query on the running totals ([`super::history`]): its
//! cost grows with the log of the history, not with its length, except
//! [`History::timeline`], which lists the changes in its window.
//!
//! A window is `[now - length, now]`, cut to the part the history covers (it
//! begins where accounting began or where older points were folded away), so
//! every number is exact for the time it reports on:
//! - *availability*: up time / (up + down time) in the window;
//! - *MTBF*: up time / the number of times the unit went down in the window
//!   (up → down: a stop, a crash, a restart), none if it never did;
//! - *MTTR*: down time / the number of times it came back up in the window,
//!   none if it never did.

use super::history::Changes;
use super::restarts::{RestartLog, Restarts};
use super::{ActiveState, Usec};

/// One unit's history as of `now`, borrowed from the ledger.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct History<'a> {
    pub(super) changes: &'a Changes,
    pub(super) restarts: &'a RestartLog,
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

/// A stretch of a timeline drawn at a resolution: one state throughout, or
/// (`state` none) changes too close together to draw one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub from: Usec,
    pub to: Usec,
    pub state: Option<ActiveState>,
    /// State changes inside the span.
    pub changes: u32,
    /// Up time in the span.
    pub up_usec: u64,
}

/// A bar being drawn: the spans so far, where the next begins, the state
/// then and the up total there.
struct Bar {
    spans: Vec<Span>,
    t: Usec,
    state: ActiveState,
    up_t: u64,
}

impl Bar {
    fn push(&mut self, span: Span) {
        match self.spans.last_mut() {
            Some(last) if last.state.is_none() && span.state.is_none() => {
                last.to = span.to;
                last.changes += span.changes;
                last.up_usec += span.up_usec;
            }
            _ => self.spans.push(span),
        }
    }

    /// The current state lasts until `to`, where the up total is `up_to`.
    fn run_to(&mut self, to: Usec, up_to: u64) {
        if to > self.t {
            self.push(Span {
                from: self.t,
                to,
                state: Some(self.state),
                changes: 0,
                up_usec: up_to - self.up_t,
            });
        }
        self.t = to;
        self.up_t = up_to;
    }

    /// `changes` changes until `to`, after which the state is `state`.
    fn busy_to(&mut self, to: Usec, changes: u32, up_to: u64, state: ActiveState) {
        self.push(Span {
            from: self.t,
            to,
            state: None,
            changes,
            up_usec: up_to - self.up_t,
        });
        self.t = to;
        self.up_t = up_to;
        self.state = state;
    }
}

fn up_for(state: ActiveState, span: u64) -> u64 {
    if state.is_up() {
        span
    } else {
        0
    }
}

impl<'a> History<'a> {
    /// The time reads are made at.
    pub fn now(&self) -> Usec {
        self.now
    }

    /// Where the kept history begins.
    pub fn begins(&self) -> Usec {
        self.changes.fold.at
    }

    /// The state at the beginning of the kept history.
    pub fn first_state(&self) -> ActiveState {
        self.changes.fold.state
    }

    /// The kept state changes, oldest first.
    pub fn transitions(&self) -> impl Iterator<Item = (Usec, ActiveState)> + 'a {
        self.changes.points.iter().map(|p| (p.at, p.state))
    }

    /// `from` cut to the history and to now.
    fn start(&self, from: Usec) -> Usec {
        from.max(self.begins()).min(self.now)
    }

    /// The states from `from` (cut to the history) to now, merged where a
    /// state repeats. Lists every change in the window.
    pub fn timeline(&self, from: Usec) -> Vec<Segment> {
        let start = self.start(from);
        let mut segments: Vec<Segment> = Vec::new();
        let (mut state, _) = self.changes.at(start);
        let mut since = start;
        let first = self.changes.after(start);
        let ends = self
            .changes
            .points
            .iter_from(first)
            .take_while(|p| p.at < self.now)
            .map(|p| (p.at, Some(p.state)))
            .chain(std::iter::once((self.now, None)));
        for (t, next) in ends {
            if t > since {
                match segments.last_mut() {
                    Some(last) if last.state == state && last.to == since => last.to = t,
                    _ => segments.push(Segment {
                        from: since,
                        to: t,
                        state,
                    }),
                }
                since = t;
            }
            if let Some(s) = next {
                state = s;
            }
        }
        segments
    }

    /// Up and down time from `from` (cut to the history) to now. A change
    /// exactly at either end of the window is not inside it.
    pub fn window(&self, from: Usec) -> Window {
        let start = self.start(from);
        let c = self.changes;
        let lo = c.after(start);
        let up_usec = c.up_at(self.now) - c.up_after(lo, start);
        let hi = c.before(self.now).max(lo);
        let (state_lo, downs_lo) = c.through(lo);
        let (state_hi, downs_hi) = c.through(hi);
        let downs = downs_hi - downs_lo;
        let ups = (i64::from(downs) + i64::from(state_hi.is_up()) - i64::from(state_lo.is_up()))
            .max(0) as u32;
        Window {
            from: start,
            up_usec,
            down_usec: (self.now - start) - up_usec,
            downs,
            ups,
        }
    }

    /// The timeline from `from` (cut to the history) to now drawn in
    /// `columns` columns: runs of one state at least a column wide are kept,
    /// anything busier is merged into spans of changes. At most about
    /// 2 × `columns` spans, whatever the number of changes; the cost is that
    /// of the fewer of the changes in the window and the columns.
    pub fn bar(&self, from: Usec, columns: u32) -> Vec<Span> {
        let (lo, hi) = (
            self.changes.after(self.start(from)),
            self.changes.before(self.now),
        );
        self.bar_by(from, columns, hi.saturating_sub(lo) <= 8 * columns as usize)
    }

    /// [`History::bar`], walking the changes or querying a column at a time.
    fn bar_by(&self, from: Usec, columns: u32, walk: bool) -> Vec<Span> {
        let start = self.start(from);
        let width = ((self.now - start) / u64::from(columns.max(1))).max(1);
        let c = self.changes;
        let (lo, hi) = (c.after(start), c.before(self.now));
        let mut bar = Bar {
            spans: Vec::new(),
            t: start,
            state: c.through(lo).0,
            up_t: c.up_at(start),
        };
        if walk {
            // Few changes: walk them.
            let mut points = c
                .points
                .iter_from(lo)
                .take(hi.saturating_sub(lo))
                .copied()
                .peekable();
            while let Some(p) = points.next() {
                if p.at - bar.t >= width {
                    bar.run_to(p.at, p.up);
                    bar.state = p.state;
                    continue;
                }
                // Changes closer than a column: merged up to the column's end.
                let end = (bar.t + width).min(self.now);
                let mut last = p;
                let mut changes = 1;
                while let Some(q) = points.next_if(|q| q.at < end) {
                    last = q;
                    changes += 1;
                }
                bar.busy_to(
                    end,
                    changes,
                    last.up + up_for(last.state, end - last.at),
                    last.state,
                );
            }
        } else {
            // Many: a column at a time, each a few range queries.
            let mut i = lo;
            while let Some(p) = c.points.get(i).filter(|_| i < hi) {
                if p.at - bar.t >= width {
                    bar.run_to(p.at, p.up);
                    bar.state = p.state;
                    i += 1;
                    continue;
                }
                let end = (bar.t + width).min(self.now);
                let j = c.before(end).max(i + 1);
                bar.busy_to(end, (j - i) as u32, c.up_at(end), c.through(j).0);
                i = j;
            }
        }
        let up_now = c.up_at(self.now);
        bar.run_to(self.now, up_now);
        bar.spans
    }

    /// Restarts counted from `from` on.
    pub fn restarts_since(&self, from: Usec) -> Restarts {
        self.restarts.since(from)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Event, Ledger, Restarts, Transition};
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
        assert_eq!(
            v.history.restarts_since(T0),
            Restarts { auto: 5, manual: 0 }
        );
        assert_eq!(
            v.history.restarts_since(T0 + 2 * H),
            Restarts { auto: 4, manual: 0 }
        );
        assert_eq!(
            v.history.restarts_since(T0 + 3 * H + 1),
            Restarts::default()
        );
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

    #[test]
    fn a_bar_keeps_long_runs_and_merges_busy_stretches() {
        let mut l = ledger();
        // 200 changes a second apart from 11:50 on: far closer than a column.
        let base = T0 + 11 * H + 3000 * S;
        for i in 0..200u64 {
            at(
                &mut l,
                base + i * S,
                if i % 2 == 0 { Active } else { Failed },
            );
        }
        let now = T0 + 12 * H;
        let v = l.unit("u.service", now).expect("unit");
        let bar = v.history.bar(now - 2 * H, 100);
        assert!(bar.len() <= 10, "{bar:?}");
        // The change at 11:50 begins the busy stretch; the 199 after it are in it.
        let busy: Vec<_> = bar.iter().filter(|s| s.from >= base).collect();
        assert_eq!(busy.len(), 2, "{bar:?}");
        assert_eq!((busy[0].state, busy[0].changes), (None, 199));
        assert_eq!(busy[1].state, Some(Failed));
        // Spans tile the window.
        for pair in bar.windows(2) {
            assert_eq!(pair[0].to, pair[1].from);
        }
        assert_eq!(bar.last().map(|s| s.to), Some(now));
        let up: u64 = bar.iter().map(|s| s.up_usec).sum();
        assert_eq!(up, v.history.window(now - 2 * H).up_usec);
    }

    #[test]
    fn a_bar_walked_and_a_bar_queried_are_the_same() {
        let mut l = ledger();
        // Bursts of changes and quiet stretches, in the last two hours.
        let base = T0 + 10 * H + 2000 * S;
        for i in 0..1000u64 {
            let t = base + (i / 50) * 300 * S + (i % 50) * S;
            at(&mut l, t, if i % 2 == 0 { Active } else { Failed });
        }
        let now = T0 + 12 * H;
        let v = l.unit("u.service", now).expect("unit");
        for columns in [10, 100, 1000] {
            let walked = v.history.bar_by(now - 2 * H, columns, true);
            let queried = v.history.bar_by(now - 2 * H, columns, false);
            assert_eq!(walked, queried, "{columns} columns");
            for pair in walked.windows(2) {
                assert_eq!(pair[0].to, pair[1].from);
            }
            let up: u64 = walked.iter().map(|s| s.up_usec).sum();
            assert_eq!(up, v.history.window(now - 2 * H).up_usec);
        }
    }

    #[test]
    fn a_bar_of_a_quiet_unit_is_its_segments() {
        let l = ledger();
        let now = T0 + 12 * H;
        let v = l.unit("u.service", now).expect("unit");
        let bar = v.history.bar(now - 2 * H, 100);
        let states: Vec<_> = bar.iter().map(|s| s.state).collect();
        // The one-minute stop and start are narrower than a column (72 s).
        assert_eq!(
            states,
            [None, Some(Inactive), None, Some(Active), Some(Failed)]
        );
    }
}
