//! A unit's state changes, each stored with the running totals up to it, so
//! that totals and window reads cost O(log n) however long the history is.
//!
//! Every point carries the up time accumulated from the start of accounting
//! to its timestamp and how many times the unit had gone down by then; the
//! down time follows, because every instant since accounting began is either
//! up or down. Points before the fold (older than [`super::RETAIN`], or past
//! [`super::MAX_POINTS`]) are dropped, and the fold keeps the totals they
//! carried, so counters never lose time.
//!
//! The points live in shared chunks ([`super::chunked`]): cloning a history
//! for a published snapshot copies a reference per chunk, and a change after
//! that copies only the chunk it touches, so the owner never pays for a
//! reader's copy.

use super::chunked::Chunked;
use super::{moved, ActiveState, Usec, MAX_POINTS, RETAIN};

/// A state change, and the totals from the start of accounting up to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Point {
    pub at: Usec,
    pub state: ActiveState,
    /// Up time from the start of accounting to `at`.
    pub up: u64,
    /// Times the unit went from up to down, this change included.
    pub downs: u32,
}

/// Where the kept points begin, the state then, and the totals to there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fold {
    pub at: Usec,
    pub state: ActiveState,
    pub up: u64,
    pub down: u64,
    pub downs: u32,
}

/// The kept state changes of one unit.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Changes {
    pub fold: Fold,
    pub points: Chunked<Point>,
}

/// The time `state` adds to the up total over `span`.
fn up_for(state: ActiveState, span: u64) -> u64 {
    if state.is_up() {
        span
    } else {
        0
    }
}

/// An account's totals from its newest change on, where they grow with
/// the time of the read alone: a renderer keeps this and reads the totals
/// at any time without the account ([`Changes::open`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// µs up and down, at `at`.
    pub up: u64,
    pub down: u64,
    /// The newest change.
    pub at: Usec,
    /// Whether the time since `at` counts up (else down).
    pub up_since: bool,
}

impl Totals {
    /// (up, down) in µs at `now`; a `now` before `at` counts up to `at`.
    pub fn at(&self, now: Usec) -> (u64, u64) {
        let open = now.saturating_sub(self.at);
        if self.up_since {
            (self.up + open, self.down)
        } else {
            (self.up, self.down + open)
        }
    }
}

impl Changes {
    /// Accounting begins at `at` in `state`.
    pub fn new(at: Usec, state: ActiveState) -> Changes {
        Changes {
            fold: Fold {
                at,
                state,
                up: 0,
                down: 0,
                downs: 0,
            },
            points: Chunked::default(),
        }
    }

    /// A history as saved: the fold and its totals, then the changes after
    /// it, oldest first.
    pub fn from_saved(fold: Fold, changes: impl IntoIterator<Item = (Usec, ActiveState)>) -> Self {
        let mut c = Changes {
            fold,
            points: Chunked::default(),
        };
        for (at, state) in changes {
            if at > c.last_change() {
                let p = c.next_point(c.points.len(), at, state);
                c.points.push_back(p);
            }
        }
        c
    }

    /// The state after the newest change.
    pub fn state(&self) -> ActiveState {
        self.points.back().map_or(self.fold.state, |p| p.state)
    }

    /// When the newest change happened.
    pub fn last_change(&self) -> Usec {
        self.points.back().map_or(self.fold.at, |p| p.at)
    }

    /// The down total at point `p`.
    pub fn down_of(&self, p: &Point) -> u64 {
        self.fold.down + (p.at - self.fold.at) - (p.up - self.fold.up)
    }

    /// The point `at` in `state` would be if it came right after the point
    /// at `index - 1` (or the fold).
    fn next_point(&self, index: usize, at: Usec, state: ActiveState) -> Point {
        let (from, before, up, downs) = match index.checked_sub(1).and_then(|i| self.points.get(i))
        {
            Some(p) => (p.at, p.state, p.up, p.downs),
            None => (self.fold.at, self.fold.state, self.fold.up, self.fold.downs),
        };
        Point {
            at,
            state,
            up: up + up_for(before, at.saturating_sub(from)),
            downs: downs + u32::from(before.is_up() && !state.is_up()),
        }
    }

    /// Recomputes the totals of every point from `index` on, after a change
    /// before them (a late report, or a new state at the fold).
    fn recompute_from(&mut self, index: usize) {
        for i in index..self.points.len() {
            if let Some(p) = self.points.get(i).copied() {
                let q = self.next_point(i, p.at, p.state);
                self.points.set(i, q);
            }
        }
    }

    /// How many points are at or before `t`: the index of the first after.
    pub fn after(&self, t: Usec) -> usize {
        self.points.partition_point(|p| p.at <= t)
    }

    /// How many points are before `t`: the index of the first at or after.
    pub fn before(&self, t: Usec) -> usize {
        self.points.partition_point(|p| p.at < t)
    }

    /// Records that the unit entered `state` at `at`. A report at or before
    /// the fold changes nothing (it is stale), except one exactly at the
    /// fold, which says what state accounting began in.
    pub fn record(&mut self, at: Usec, state: ActiveState) {
        if at <= self.fold.at {
            if at == self.fold.at && self.fold.state != state {
                self.fold.state = state;
                self.recompute_from(0);
            }
            return;
        }
        let i = self.before(at);
        match self.points.get(i) {
            None => {
                let p = self.next_point(i, at, state);
                self.points.push_back(p);
            }
            Some(p) if p.at == at => {
                if p.state != state {
                    let q = self.next_point(i, at, state);
                    self.points.set(i, q);
                    self.recompute_from(i + 1);
                }
            }
            Some(_) => {
                let p = self.next_point(i, at, state);
                self.points.insert(i, p);
                self.recompute_from(i + 1);
            }
        }
        self.fold_old();
    }

    /// Folds away the points older than [`RETAIN`] before the newest, and
    /// the oldest beyond [`MAX_POINTS`].
    fn fold_old(&mut self) {
        let horizon = self.last_change().saturating_sub(RETAIN);
        while self.points.len() > MAX_POINTS || self.points.front().is_some_and(|p| p.at <= horizon)
        {
            let Some(p) = self.points.pop_front() else {
                break;
            };
            self.fold = Fold {
                at: p.at,
                state: p.state,
                up: p.up,
                down: self.down_of(&p),
                downs: p.downs,
            };
        }
    }

    /// The totals as a function of the time of the read ([`Totals::at`]:
    /// (up, down) in µs from the start of accounting to then): what they
    /// were at the newest change, and which of them the time since adds to.
    pub fn open(&self) -> Totals {
        let (at, state, up, down) = match self.points.back() {
            Some(p) => (p.at, p.state, p.up, self.down_of(p)),
            None => (self.fold.at, self.fold.state, self.fold.up, self.fold.down),
        };
        Totals {
            up,
            down,
            at,
            up_since: state.is_up(),
        }
    }

    /// The up total at `t` (at or after the fold).
    pub fn up_at(&self, t: Usec) -> u64 {
        self.up_after(self.after(t), t)
    }

    /// The up total at `t`, where the first `n` points are at or before it.
    pub fn up_after(&self, n: usize, t: Usec) -> u64 {
        match n.checked_sub(1).and_then(|i| self.points.get(i)) {
            Some(p) => p.up + up_for(p.state, t.saturating_sub(p.at)),
            None => self.fold.up + up_for(self.fold.state, t.saturating_sub(self.fold.at)),
        }
    }

    /// The state at `t`, and how many times the unit had gone down by then.
    pub fn at(&self, t: Usec) -> (ActiveState, u32) {
        self.through(self.after(t))
    }

    /// The state after the first `n` points, and the downs to there.
    pub fn through(&self, n: usize) -> (ActiveState, u32) {
        match n.checked_sub(1).and_then(|i| self.points.get(i)) {
            Some(p) => (p.state, p.downs),
            None => (self.fold.state, self.fold.downs),
        }
    }

    /// Moves every time by `delta` (the wall clock was set); durations stay.
    pub fn shift(&mut self, delta: i64) {
        self.fold.at = moved(self.fold.at, delta);
        self.points = self
            .points
            .iter()
            .map(|p| Point {
                at: moved(p.at, delta),
                ..*p
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::ActiveState::*;
    use super::*;

    const S: Usec = 1_000_000;

    fn changes(points: &[(u64, ActiveState)]) -> Changes {
        let mut c = Changes::new(0, Inactive);
        for (t, s) in points {
            c.record(t * S, *s);
        }
        c
    }

    #[test]
    fn totals_follow_the_open_interval() {
        let c = changes(&[(2, Active), (5, Failed)]);
        assert_eq!(c.open().at(9 * S), (3 * S, 6 * S));
    }

    #[test]
    fn a_late_report_is_placed_and_later_totals_recomputed() {
        let mut c = changes(&[(2, Active), (8, Inactive)]);
        c.record(5 * S, Failed);
        assert_eq!(c.open().at(10 * S), (3 * S, 7 * S));
        assert_eq!(c.at(6 * S), (Failed, 1));
        assert_eq!(c.at(9 * S), (Inactive, 1));
    }

    #[test]
    fn the_same_report_twice_changes_nothing() {
        let mut c = changes(&[(2, Active), (4, Failed)]);
        let before = c.clone();
        c.record(4 * S, Failed);
        assert_eq!(c.points, before.points);
    }

    #[test]
    fn folding_keeps_the_totals() {
        let mut c = Changes::new(0, Inactive);
        for i in 0..(MAX_POINTS as u64 + 100) {
            c.record((i + 1) * S, if i % 2 == 0 { Active } else { Inactive });
        }
        assert_eq!(c.points.len(), MAX_POINTS);
        let now = (MAX_POINTS as u64 + 200) * S;
        let (up, down) = c.open().at(now);
        assert_eq!(up + down, now);
        assert_eq!(c.up_at(now), up);
    }

    #[test]
    fn up_at_reads_between_points() {
        let c = changes(&[(2, Active), (6, Inactive), (8, Active)]);
        assert_eq!(c.up_at(4 * S), 2 * S);
        assert_eq!(c.up_at(7 * S), 4 * S);
        assert_eq!(c.up_at(10 * S), 6 * S);
    }
}
