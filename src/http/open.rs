//! The per-unit families that move with the time of the read (an interval
//! still open: uptime, downtime), kept between scrapes as their lines
//! without the value: each unit's lines are rendered once per version of
//! its account, with its totals ([`Totals`]), and a scrape writes only the
//! numbers. At thousands of units, reading every account again and
//! rendering its labels was most of a scrape's time, though only the
//! numbers had moved; and an event renders again the lines of the units it
//! changed, not every unit's. A sample's line is the same in either
//! exposition format (only a family's header differs), so both formats'
//! scrapes keep one copy of each unit's lines.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use crate::ledger::{Totals, Usec};
use crate::render::exposition::{write_value, Format};
use crate::render::metrics::{self, Labelled, UnitFamily, ValueAt};
use crate::snapshot::Snapshot;

/// A run of such families, as rendered from one version of the ledger.
pub struct Open {
    /// The ledger's version and clock frame they were rendered from.
    ledger: u64,
    frame: i64,
    /// The format of the headers; the lines are the same in either.
    format: Format,
    /// By family: its header, and its samples' value at a time.
    families: Vec<(String, ValueAt)>,
    /// By unit, in the ledger's order.
    units: Vec<Arc<Lines>>,
}

/// One unit's lines of every family, each up to its value (the space
/// before it included), and the totals they are written from.
struct Lines {
    /// Its account's version: the same lines for as long as it stays.
    version: u64,
    totals: Totals,
    text: Box<str>,
    /// By line: its family (an index into [`Open::families`]) and where in
    /// `text` it is. Boxed and narrow: one is kept per unit and format.
    lines: Box<[(u32, Range<u32>)]>,
}

impl Open {
    /// `families` (each with `reads_now`) of the units of `snapshot` (read
    /// as of `now`), taking from `before` (of either format) the lines of
    /// the units whose accounts did not change since: those are not read.
    pub fn new(
        snapshot: &Snapshot,
        now: Usec,
        format: Format,
        families: &[&'static UnitFamily],
        before: Option<&Open>,
    ) -> Open {
        let families: Vec<(&'static UnitFamily, ValueAt)> = families
            .iter()
            .filter_map(|f| f.reads_now.map(|value| (*f, value)))
            .collect();
        // Lines are in the frame's times only through their totals; in
        // another frame nothing is kept.
        let kept: HashMap<u64, &Arc<Lines>> = before
            .filter(|b| b.frame == snapshot.frame && b.families.len() == families.len())
            .map(|b| b.units.iter().map(|l| (l.version, l)).collect())
            .unwrap_or_default();
        let units = snapshot
            .ledger
            .lazy_view(now)
            .map(|(version, view)| match kept.get(&version) {
                Some(lines) => Arc::clone(lines),
                None => Arc::new(Lines::new(
                    &Labelled::new(view(), version),
                    format,
                    &families,
                )),
            })
            .collect();
        Open {
            ledger: snapshot.ledger.version(),
            frame: snapshot.frame,
            format,
            families: families
                .iter()
                .map(|(f, value)| (metrics::unit_header(f, format), *value))
                .collect(),
            units,
        }
    }

    /// The version of the ledger it was rendered from: a later ledger has
    /// a higher one.
    pub fn ledger(&self) -> u64 {
        self.ledger
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether it was rendered from what `snapshot` holds.
    pub fn holds(&self, snapshot: &Snapshot) -> bool {
        self.ledger == snapshot.ledger.version() && self.frame == snapshot.frame
    }

    /// The families as of `now`.
    pub fn render(&self, now: Usec) -> String {
        let text: usize = self.units.iter().map(|u| u.text.len()).sum();
        let lines: usize = self.units.iter().map(|u| u.lines.len()).sum();
        let headers: usize = self.families.iter().map(|(h, _)| h.len()).sum();
        // Sized up front: a number and a newline a line.
        let mut out = String::with_capacity(headers + text + lines * 24);
        for (k, (header, value)) in self.families.iter().enumerate() {
            out.push_str(header);
            for unit in &self.units {
                for (_, line) in unit.lines.iter().filter(|(f, _)| *f as usize == k) {
                    out.push_str(&unit.text[line.start as usize..line.end as usize]);
                    write_value(&mut out, value(&unit.totals, now));
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Lines {
    fn new(u: &Labelled<'_>, format: Format, families: &[(&'static UnitFamily, ValueAt)]) -> Lines {
        let mut text = String::new();
        let mut lines = Vec::new();
        let mut rendered = String::new();
        for (k, (f, _)) in families.iter().enumerate() {
            rendered.clear();
            metrics::unit_samples(f, std::slice::from_ref(u), format, &mut rendered);
            for sample in rendered.lines() {
                // The value is the last field: label values are escaped,
                // but may hold spaces.
                let Some(space) = sample.rfind(' ') else {
                    continue;
                };
                let start = text.len();
                text.push_str(&sample[..=space]);
                // A unit name is at most 256 bytes, a line a few hundred.
                let (Ok(k), Ok(start), Ok(end)) = (
                    u32::try_from(k),
                    u32::try_from(start),
                    u32::try_from(text.len()),
                ) else {
                    continue;
                };
                lines.push((k, start..end));
            }
        }
        Lines {
            version: u.version,
            totals: u.view.totals,
            text: text.into_boxed_str(),
            lines: lines.into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{ActiveState, Event, Ledger, Transition};
    use crate::render::metrics::UNIT_FAMILIES;
    use crate::snapshot::Stats;

    const S: Usec = 1_000_000;
    const T0: Usec = 1_700_000_000 * S;

    fn seen(l: &mut Ledger, unit: &str) {
        l.apply(Event::new(
            unit,
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: Some(0),
            },
        ));
    }

    fn snapshot(ledger: Ledger) -> Snapshot {
        Snapshot {
            ledger,
            stats: Stats::default(),
            frame: 0,
            sample: Default::default(),
        }
    }

    fn open_families() -> Vec<&'static UnitFamily> {
        UNIT_FAMILIES
            .iter()
            .filter(|f| f.reads_now.is_some())
            .collect()
    }

    #[test]
    fn a_unit_whose_account_did_not_change_keeps_its_lines() {
        let mut l = Ledger::new();
        seen(&mut l, "a.service");
        seen(&mut l, "b.service");
        let one = snapshot(l.clone());
        let before = Open::new(&one, T0 + S, Format::Text, &open_families(), None);
        l.apply(Event::new(
            "b.service",
            T0 + S,
            Transition::State {
                state: ActiveState::Failed,
                sub_state: None,
            },
        ));
        let two = snapshot(l);
        let after = Open::new(
            &two,
            T0 + 2 * S,
            Format::Text,
            &open_families(),
            Some(&before),
        );
        assert!(
            Arc::ptr_eq(&before.units[0], &after.units[0]),
            "a.service is as it was"
        );
        assert!(
            !Arc::ptr_eq(&before.units[1], &after.units[1]),
            "b.service changed"
        );
        assert!(after.holds(&two) && !before.holds(&two));
    }

    #[test]
    fn both_formats_keep_one_copy_of_a_units_lines() {
        let mut l = Ledger::new();
        seen(&mut l, "a.service");
        let s = snapshot(l);
        let text = Open::new(&s, T0, Format::Text, &open_families(), None);
        let om = Open::new(&s, T0, Format::OpenMetrics, &open_families(), Some(&text));
        assert!(Arc::ptr_eq(&text.units[0], &om.units[0]));
        let fresh = Open::new(&s, T0, Format::OpenMetrics, &open_families(), None);
        assert_eq!(fresh.units[0].text, om.units[0].text);
        assert_eq!(fresh.render(T0 + S), om.render(T0 + S));
    }

    #[test]
    fn the_values_are_the_totals_at_the_time_of_the_read() {
        let mut l = Ledger::new();
        seen(&mut l, "a.service");
        let s = snapshot(l);
        let open = Open::new(&s, T0, Format::Text, &open_families(), None);
        let text = open.render(T0 + 3 * S + 500_000);
        assert!(text.contains("service_uptime_seconds_total{unit=\"a.service\"} 3.5\n"));
        assert!(text.contains("service_downtime_seconds_total{unit=\"a.service\"} 0.0\n"));
    }
}
