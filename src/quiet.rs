//! How often the owner says in its log that a unit restarted or failed: the
//! first time for each unit, then at most once a [`EVERY`] per unit, with
//! how many were not logged since.
//!
//! Why? A unit in a crash loop restarts and fails several times a second,
//! and a line for each was some 3 % of unitwatch's CPU in a flap storm (10 %
//! at the `info` level, which logs restarts too), and as many records in the
//! journal unitwatch itself reads. The metrics count every one; systemd's
//! own records say each in the journal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often at most a line of one kind is logged for one unit.
pub const EVERY: Duration = Duration::from_secs(60);

/// The kinds of line about a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    Restarted = 0,
    Failed = 1,
}

/// When each unit's lines were last logged, and how many were not since.
#[derive(Debug, Default)]
pub struct Quiet {
    units: HashMap<String, [Option<(Instant, u64)>; 2]>,
}

impl Quiet {
    /// Whether to log `line` about `unit` now; if so, how many such lines
    /// were not logged since the last one.
    pub fn check(&mut self, unit: &str, line: Line, now: Instant) -> Option<u64> {
        let slot = match self.units.get_mut(unit) {
            Some(lines) => &mut lines[line as usize],
            None => &mut self.units.entry(unit.to_owned()).or_default()[line as usize],
        };
        match slot {
            Some((last, skipped)) if now.saturating_duration_since(*last) < EVERY => {
                *skipped += 1;
                None
            }
            _ => {
                let skipped = slot.map_or(0, |(_, skipped)| skipped);
                *slot = Some((now, 0));
                Some(skipped)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_of_each_unit_and_kind_is_logged() {
        let mut q = Quiet::default();
        let t0 = Instant::now();
        assert_eq!(q.check("a.service", Line::Failed, t0), Some(0));
        assert_eq!(q.check("b.service", Line::Failed, t0), Some(0));
        assert_eq!(q.check("a.service", Line::Restarted, t0), Some(0));
    }

    #[test]
    fn then_one_a_period_with_how_many_were_not() {
        let mut q = Quiet::default();
        let t0 = Instant::now();
        assert_eq!(q.check("a.service", Line::Failed, t0), Some(0));
        for s in 1..=3 {
            let at = t0 + Duration::from_secs(s);
            assert_eq!(q.check("a.service", Line::Failed, at), None);
        }
        assert_eq!(q.check("a.service", Line::Failed, t0 + EVERY), Some(3));
        assert_eq!(q.check("a.service", Line::Failed, t0 + EVERY), None);
    }
}
