//! A scrape's body, assembled from the exposition's parts
//! ([`metrics::Part`]) as kept [`Segment`]s: what does not change with the
//! time of the read is rendered (and compressed) once and kept until what
//! it is read from changes (`Reads`), so a sampler's round does not render
//! the units' families again; only the open intervals (uptime, downtime)
//! are written on every scrape, from their lines kept without the values
//! ([`Open`]).
//!
//! The units' families are kept in pieces of [`PIECE`] units each, named by
//! the versions of the units' accounts, so an event renders again the
//! pieces of the units it changed, not every unit's samples: at thousands
//! of units a stop or a restart costs a scrape a few pieces, not megabytes.
//! Units that fit in one piece are kept as one segment a run of families,
//! as before: each segment is deflated on its own, and a few hundred bytes
//! a family would compress half as well as the run.

use std::cell::OnceCell;
use std::sync::{Arc, Mutex, Weak};

use crate::ledger::Usec;
use crate::render::exposition::Format;
use crate::render::metrics::{self, Families, Labelled, Part};
use crate::sample::Sample;
use crate::snapshot::Snapshot;

use super::open::Open;
pub use super::segment::Chunks;
use super::segment::{gzipped, plain, Segment};

/// How many units a piece of a family holds: large enough that a piece
/// deflated on its own compresses about as well as the whole family
/// (tens of kilobytes), small enough that one unit's change renders a
/// small part of thousands.
const PIECE: usize = 256;

/// What a run of parts is rendered from, and so when it is rendered again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reads {
    /// The time of the read: written on every scrape, from lines kept
    /// until the ledger's units change ([`Open`]).
    Now,
    /// The ledger's units (and the clock frame their times are in): each
    /// piece again once one of its units changed.
    Ledger,
    /// The sampler's round: again once per round.
    Sample,
    /// The rest of the snapshot (unitwatch's own numbers): again with every
    /// snapshot; a few lines.
    Snapshot,
}

fn reads(part: &Part) -> Reads {
    match part {
        Part::Unit(f) if f.reads_now.is_some() => Reads::Now,
        Part::Unit(_) => Reads::Ledger,
        Part::Sampled(_) | Part::Host(_) => Reads::Sample,
        Part::Own | Part::End => Reads::Snapshot,
    }
}

/// What a kept segment was rendered from. Weak references keep an address
/// from being reused (so it names that snapshot or round alone) without
/// keeping what it points to.
enum From {
    Sample(Weak<Sample>),
    Snapshot(Weak<Snapshot>),
}

impl From {
    fn of(reads: Reads, snapshot: &Arc<Snapshot>) -> Option<From> {
        Some(match reads {
            Reads::Now | Reads::Ledger => return None,
            Reads::Sample => From::Sample(Arc::downgrade(&snapshot.sample)),
            Reads::Snapshot => From::Snapshot(Arc::downgrade(snapshot)),
        })
    }

    /// Whether what it was rendered from is what `snapshot` holds.
    fn holds(&self, snapshot: &Arc<Snapshot>) -> bool {
        match self {
            From::Sample(sample) => std::ptr::eq(sample.as_ptr(), Arc::as_ptr(&snapshot.sample)),
            From::Snapshot(s) => std::ptr::eq(s.as_ptr(), Arc::as_ptr(snapshot)),
        }
    }
}

/// A segment kept, and what it was rendered from.
struct Kept {
    from: From,
    segment: Arc<Segment>,
}

/// The units' families as last rendered in one format: by piece, the
/// versions of its units' accounts (the ledger's own version and the clock
/// frame name them all at once); by run of families, what was rendered.
/// The ledger is named by versions, not by a copy of it: a copy held every
/// account a burst changed (megabytes).
#[derive(Default)]
struct Pieces {
    ledger: u64,
    frame: i64,
    units: Vec<Vec<u64>>,
    runs: Vec<Run>,
}

/// A run of the units' families, rendered.
enum Run {
    /// Units that fit in one piece: the whole run, one segment.
    Whole(Arc<Segment>),
    /// By family, its header and its pieces.
    Pieces(Vec<(Arc<Segment>, Vec<Arc<Segment>>)>),
}

/// What is kept of one format.
struct Cache {
    format: Format,
    /// By group, the segment last rendered; `None` for a group of the
    /// units' families, or rendered on every scrape.
    groups: Vec<Option<Kept>>,
    pieces: Arc<Pieces>,
    /// By group, the lines kept of a group read at the time of the read.
    open: Vec<Option<Arc<Open>>>,
}

/// Scrape bodies and what they are assembled from.
pub struct Scrapes {
    /// The parts in order, in runs of those read from the same thing (each
    /// run one segment, but for the units' families: fewer, longer segments
    /// compress better).
    groups: Vec<(Reads, Vec<Part>)>,
    /// The units' families, by `Ledger` group, in order.
    runs: Vec<Vec<&'static metrics::UnitFamily>>,
    /// By format (a scraper asks for one).
    cache: Mutex<Vec<Cache>>,
}

impl Scrapes {
    pub fn new(families: &Families) -> Scrapes {
        let mut groups: Vec<(Reads, Vec<Part>)> = Vec::new();
        for part in metrics::parts(families) {
            let r = reads(&part);
            match groups.last_mut() {
                Some((g, parts)) if *g == r => parts.push(part),
                _ => groups.push((r, vec![part])),
            }
        }
        let runs = groups
            .iter()
            .filter(|(r, _)| *r == Reads::Ledger)
            .map(|(_, parts)| {
                parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Unit(f) => Some(*f),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        Scrapes {
            groups,
            runs,
            cache: Mutex::new(Vec::new()),
        }
    }

    /// The body of a scrape of `snapshot` as of `now` in `format`, gzipped
    /// if `gzip`; returns whether it is (if compression failed, plain).
    pub fn body(
        &self,
        snapshot: &Arc<Snapshot>,
        now: Usec,
        format: Format,
        gzip: bool,
    ) -> (Chunks, bool) {
        let (mut kept, before, open) = self.kept(snapshot, format);
        let fresh: Vec<usize> = (0..self.groups.len())
            .filter(|i| {
                kept[*i].is_none() && matches!(self.groups[*i].0, Reads::Sample | Reads::Snapshot)
            })
            .collect();
        let parts: Vec<Part> = fresh
            .iter()
            .flat_map(|i| self.groups[*i].1.iter().copied())
            .collect();
        let mut texts = metrics::render_parts(snapshot, &[], format, &parts).into_iter();
        let rendered: Vec<Arc<Segment>> = fresh
            .iter()
            .map(|i| Segment::new(texts.by_ref().take(self.groups[*i].1.len()).collect()))
            .collect();
        for (i, segment) in fresh.iter().zip(&rendered) {
            kept[*i] = Some(Arc::clone(segment));
        }
        let open: Vec<Option<Arc<Open>>> = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, (reads, parts))| {
                let before = open.get(i).cloned().flatten();
                (*reads == Reads::Now).then(|| match before {
                    Some(open) if open.holds(snapshot) && open.format() == format => open,
                    before => {
                        let families: Vec<_> = parts
                            .iter()
                            .filter_map(|p| match p {
                                Part::Unit(f) => Some(*f),
                                _ => None,
                            })
                            .collect();
                        Arc::new(Open::new(
                            snapshot,
                            now,
                            format,
                            &families,
                            before.as_deref(),
                        ))
                    }
                })
            })
            .collect();
        for (kept, open) in kept.iter_mut().zip(&open) {
            if let Some(open) = open {
                *kept = Some(Segment::once(open.render(now)));
            }
        }
        let pieces = self.pieces(snapshot, now, format, &before);
        self.keep(snapshot, format, &fresh, &rendered, &pieces, open);

        let mut segments = Vec::new();
        let mut runs = pieces.runs.iter();
        for ((reads, _), kept) in self.groups.iter().zip(kept) {
            if *reads == Reads::Ledger {
                match runs.next() {
                    Some(Run::Whole(segment)) => segments.push(Arc::clone(segment)),
                    Some(Run::Pieces(families)) => {
                        for (header, pieces) in families {
                            segments.push(Arc::clone(header));
                            segments.extend(pieces.iter().filter(|p| !p.is_empty()).cloned());
                        }
                    }
                    None => {}
                }
            } else {
                segments.extend(kept);
            }
        }
        if gzip {
            if let Some(body) = gzipped(&segments) {
                return (body, true);
            }
            tracing::warn!("cannot gzip a scrape; sending it plain");
        }
        (plain(segments), false)
    }

    /// The units' families of `snapshot` in `format`: the pieces of
    /// `before` whose units are as they were, the others rendered anew.
    fn pieces(
        &self,
        snapshot: &Snapshot,
        now: Usec,
        format: Format,
        before: &Arc<Pieces>,
    ) -> Arc<Pieces> {
        let ledger = snapshot.ledger.version();
        let same_runs = before.frame == snapshot.frame && before.runs.len() == self.runs.len();
        if same_runs && before.ledger == ledger {
            return Arc::clone(before);
        }
        // Only the units of the pieces rendered anew are read: the others
        // are known by their versions.
        let all: Vec<u64> = snapshot.ledger.versions().collect();
        let versions: Vec<Vec<u64>> = all.chunks(PIECE).map(<[u64]>::to_vec).collect();
        let chunks: Vec<OnceCell<Vec<Labelled<'_>>>> =
            versions.iter().map(|_| OnceCell::new()).collect();
        let chunk = |i: usize| {
            chunks[i].get_or_init(|| {
                snapshot
                    .ledger
                    .lazy_view(now)
                    .skip(i * PIECE)
                    .take(PIECE)
                    .map(|(version, view)| Labelled::new(view(), version))
                    .collect()
            })
        };
        let same: Vec<bool> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| same_runs && before.units.get(i) == Some(v))
            .collect();
        let whole = chunks.len() <= 1;
        let unchanged = same_runs && before.units == versions;
        let runs = self
            .runs
            .iter()
            .enumerate()
            .map(|(r, families)| {
                let kept = before.runs.get(r).filter(|_| same_runs);
                if whole {
                    if let (Some(Run::Whole(segment)), true) = (kept, unchanged) {
                        return Run::Whole(Arc::clone(segment));
                    }
                    let units = if chunks.is_empty() { &[][..] } else { chunk(0) };
                    let parts: Vec<Part> = families.iter().copied().map(Part::Unit).collect();
                    let texts = metrics::render_parts(snapshot, units, format, &parts);
                    return Run::Whole(Segment::new(texts.concat()));
                }
                let kept = match kept {
                    Some(Run::Pieces(kept)) => kept.as_slice(),
                    _ => &[],
                };
                let families = families
                    .iter()
                    .enumerate()
                    .map(|(k, f)| {
                        let kept = kept.get(k);
                        let header = match kept {
                            Some((header, _)) => Arc::clone(header),
                            None => Segment::new(metrics::unit_header(f, format)),
                        };
                        let pieces = (0..chunks.len())
                            .map(|i| match kept.and_then(|(_, p)| p.get(i)) {
                                Some(piece) if same[i] => Arc::clone(piece),
                                _ => {
                                    let units = chunk(i);
                                    let mut text = String::with_capacity(units.len() * 80);
                                    metrics::unit_samples(f, units, format, &mut text);
                                    Segment::new(text)
                                }
                            })
                            .collect();
                        (header, pieces)
                    })
                    .collect();
                Run::Pieces(families)
            })
            .collect();
        Arc::new(Pieces {
            ledger,
            frame: snapshot.frame,
            units: versions,
            runs,
        })
    }

    /// By group, the segment kept in `format` if it was rendered from what
    /// `snapshot` holds; the units' families kept; and by group, the lines
    /// kept of those read at the time of the read.
    #[allow(clippy::type_complexity)]
    fn kept(
        &self,
        snapshot: &Arc<Snapshot>,
        format: Format,
    ) -> (
        Vec<Option<Arc<Segment>>>,
        Arc<Pieces>,
        Vec<Option<Arc<Open>>>,
    ) {
        let mut out = vec![None; self.groups.len()];
        let Ok(cache) = self.cache.lock() else {
            return (out, Arc::default(), vec![None; self.groups.len()]);
        };
        // The lines of open intervals are the same in either format (only
        // the headers differ): the newest kept of any format is taken from.
        let open = (0..self.groups.len())
            .map(|i| {
                cache
                    .iter()
                    .filter_map(|c| c.open.get(i).cloned().flatten())
                    .max_by_key(|o| (o.holds(snapshot) && o.format() == format, o.ledger()))
            })
            .collect();
        let Some(c) = cache.iter().find(|c| c.format == format) else {
            return (out, Arc::default(), open);
        };
        for (o, k) in out.iter_mut().zip(&c.groups) {
            *o = k
                .as_ref()
                .filter(|k| k.from.holds(snapshot))
                .map(|k| Arc::clone(&k.segment));
        }
        (out, Arc::clone(&c.pieces), open)
    }

    /// Keeps the segments just rendered of the groups `which`, and the
    /// units' families.
    fn keep(
        &self,
        snapshot: &Arc<Snapshot>,
        format: Format,
        which: &[usize],
        rendered: &[Arc<Segment>],
        pieces: &Arc<Pieces>,
        open: Vec<Option<Arc<Open>>>,
    ) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let at = match cache.iter().position(|c| c.format == format) {
            Some(at) => at,
            None => {
                cache.push(Cache {
                    format,
                    groups: (0..self.groups.len()).map(|_| None).collect(),
                    pieces: Arc::default(),
                    open: Vec::new(),
                });
                cache.len() - 1
            }
        };
        let c = &mut cache[at];
        for (i, segment) in which.iter().zip(rendered) {
            c.groups[*i] = From::of(self.groups[*i].0, snapshot).map(|from| Kept {
                from,
                segment: Arc::clone(segment),
            });
        }
        c.pieces = Arc::clone(pieces);
        c.open = open;
    }
}

#[cfg(test)]
mod tests;
