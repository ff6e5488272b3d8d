//! The per-unit families that move with the time of the read (an interval
//! still open: uptime, downtime), kept between scrapes as their lines
//! without the value: each unit's lines are rendered once per version of
//! its account, with its totals ([`Totals`]), and a scrape writes only the
//! numbers. At thousands of units, reading every account again and
//! rendering its labels was most of a scrape's time, though only the
//! numbers had moved; and an event renders again the lines of the units it
//! changed, not every unit's.

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
    /// as of `now`), taking from `before` the lines of the units whose
    /// accounts did not change since: those are not read.
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
            families: families
                .iter()
                .map(|(f, value)| (metrics::unit_header(f, format), *value))
                .collect(),
            units,
        }
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
