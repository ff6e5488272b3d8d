//! A scrape's body, assembled from the exposition's parts
//! ([`metrics::Part`]) as kept [`Segment`]s: what does not change with the
//! time of the read is rendered (and compressed) once and kept until what
//! it is read from changes (`Reads`), so a sampler's round does not render
//! the units' families again; only the open intervals (uptime, downtime)
//! are rendered on every scrape.
//!
//! The units' families are kept in pieces of [`PIECE`] units each, named by
//! the versions of the units' accounts, so an event renders again the
//! pieces of the units it changed, not every unit's samples: at thousands
//! of units a stop or a restart costs a scrape a few pieces, not megabytes.
//! Units that fit in one piece are kept as one segment a run of families,
//! as before: each segment is deflated on its own, and a few hundred bytes
//! a family would compress half as well as the run.

use std::sync::{Arc, Mutex, Weak};

use crate::ledger::Usec;
use crate::render::exposition::Format;
use crate::render::metrics::{self, Families, Labelled, Part};
use crate::sample::Sample;
use crate::snapshot::Snapshot;

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
    /// The time of the read: rendered on every scrape.
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
        Part::Unit(f) if f.reads_now => Reads::Now,
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
        let (mut kept, before) = self.kept(snapshot, format);
        let units = metrics::labelled(snapshot, now);
        let fresh: Vec<usize> = (0..self.groups.len())
            .filter(|i| kept[*i].is_none() && self.groups[*i].0 != Reads::Ledger)
            .collect();
        let parts: Vec<Part> = fresh
            .iter()
            .flat_map(|i| self.groups[*i].1.iter().copied())
            .collect();
        let mut texts = metrics::render_parts(snapshot, &units, format, &parts).into_iter();
        let rendered: Vec<Arc<Segment>> = fresh
            .iter()
            .map(|i| Segment::new(texts.by_ref().take(self.groups[*i].1.len()).collect()))
            .collect();
        for (i, segment) in fresh.iter().zip(&rendered) {
            kept[*i] = Some(Arc::clone(segment));
        }
        let pieces = self.pieces(snapshot, &units, format, &before);
        drop(units);
        self.keep(snapshot, format, &fresh, &rendered, &pieces);

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
        units: &[Labelled<'_>],
        format: Format,
        before: &Arc<Pieces>,
    ) -> Arc<Pieces> {
        let ledger = snapshot.ledger.version();
        let same_runs = before.frame == snapshot.frame && before.runs.len() == self.runs.len();
        if same_runs && before.ledger == ledger {
            return Arc::clone(before);
        }
        let chunks: Vec<&[Labelled<'_>]> = units.chunks(PIECE).collect();
        let versions: Vec<Vec<u64>> = chunks
            .iter()
            .map(|c| c.iter().map(|u| u.version).collect())
            .collect();
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
                    let chunk = chunks.first().copied().unwrap_or_default();
                    let parts: Vec<Part> = families.iter().copied().map(Part::Unit).collect();
                    let texts = metrics::render_parts(snapshot, chunk, format, &parts);
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
                        let pieces = chunks
                            .iter()
                            .enumerate()
                            .map(|(i, chunk)| match kept.and_then(|(_, p)| p.get(i)) {
                                Some(piece) if same[i] => Arc::clone(piece),
                                _ => {
                                    let mut text = String::with_capacity(chunk.len() * 80);
                                    metrics::unit_samples(f, chunk, format, &mut text);
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
    /// `snapshot` holds; and the units' families kept.
    fn kept(
        &self,
        snapshot: &Arc<Snapshot>,
        format: Format,
    ) -> (Vec<Option<Arc<Segment>>>, Arc<Pieces>) {
        let mut out = vec![None; self.groups.len()];
        let Ok(cache) = self.cache.lock() else {
            return (out, Arc::default());
        };
        let Some(c) = cache.iter().find(|c| c.format == format) else {
            return (out, Arc::default());
        };
        for (o, k) in out.iter_mut().zip(&c.groups) {
            *o = k
                .as_ref()
                .filter(|k| k.from.holds(snapshot))
                .map(|k| Arc::clone(&k.segment));
        }
        (out, Arc::clone(&c.pieces))
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
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::ledger::{ActiveState, Event, Ledger, Transition};
    use crate::snapshot::Stats;

    const S: Usec = 1_000_000;
    const T0: Usec = 1_700_000_000 * S;

    fn snapshot(units: usize) -> Arc<Snapshot> {
        let mut l = Ledger::new();
        for i in 0..units {
            l.apply(Event::new(
                format!("u{i}.service"),
                T0,
                Transition::Seen {
                    state: ActiveState::Active,
                    sub_state: "running".into(),
                    n_restarts: Some(0),
                },
            ));
        }
        Arc::new(Snapshot {
            ledger: l,
            stats: Stats::default(),
            frame: 0,
            sample: Default::default(),
        })
    }

    /// `snapshot` with one more event applied to its ledger, at `T0 + S`.
    fn after(snapshot: &Arc<Snapshot>, unit: &str, transition: Transition) -> Arc<Snapshot> {
        let mut ledger = snapshot.ledger.clone();
        ledger.apply(Event::new(unit, T0 + S, transition));
        Arc::new(Snapshot {
            ledger,
            ..(**snapshot).clone()
        })
    }

    /// Decodes one gzip member, as curl does: what follows it is not read.
    fn gunzip(body: &[u8]) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .expect("one valid gzip member");
        text
    }

    #[test]
    fn the_gzip_body_is_one_member_holding_the_whole_exposition() {
        let scrapes = Scrapes::new(&Families::default());
        let s = snapshot(300);
        let (body, gzipped) = scrapes.body(&s, T0 + 5 * S, Format::OpenMetrics, true);
        let body = body.to_vec();
        assert!(gzipped);
        let want = metrics::render(&s, T0 + 5 * S, Format::OpenMetrics, &Families::default());
        assert_eq!(gunzip(&body), want);
    }

    #[test]
    fn a_few_units_are_gzipped_as_a_run_of_families_not_family_by_family() {
        let scrapes = Scrapes::new(&Families::default());
        let s = snapshot(3);
        let (plain, _) = scrapes.body(&s, T0 + 5 * S, Format::Text, false);
        let (zipped, gzipped) = scrapes.body(&s, T0 + 5 * S, Format::Text, true);
        assert!(gzipped);
        let (plain, zipped) = (plain.to_vec().len(), zipped.to_vec().len());
        assert!(zipped * 3 < plain, "{zipped} gzipped against {plain} plain");
    }

    #[test]
    fn a_later_scrape_of_the_same_snapshot_renders_what_moves_with_time() {
        let scrapes = Scrapes::new(&Families::default());
        let s = snapshot(3);
        let _ = scrapes.body(&s, T0 + 5 * S, Format::Text, true);
        for gzip in [true, false] {
            let (body, gzipped) = scrapes.body(&s, T0 + 9 * S, Format::Text, gzip);
            let body = body.to_vec();
            let text = if gzipped {
                gunzip(&body)
            } else {
                String::from_utf8(body.to_vec()).expect("text")
            };
            assert_eq!(
                text,
                metrics::render(&s, T0 + 9 * S, Format::Text, &Families::default())
            );
            assert!(text.contains("service_uptime_seconds_total{unit=\"u0.service\"} 9.0"));
        }
    }

    #[test]
    fn a_new_snapshot_is_rendered_anew() {
        let scrapes = Scrapes::new(&Families::default());
        let _ = scrapes.body(&snapshot(1), T0 + S, Format::Text, false);
        let two = snapshot(2);
        let (body, _) = scrapes.body(&two, T0 + S, Format::Text, false);
        assert!(String::from_utf8(body.to_vec())
            .expect("text")
            .contains("u1.service"));
    }

    #[test]
    fn a_new_round_of_the_sampler_renders_only_the_sampled_parts_again() {
        let scrapes = Scrapes::new(&Families::default());
        let one = snapshot(3);
        let _ = scrapes.body(&one, T0 + S, Format::Text, false);
        let (before, pieces) = scrapes.kept(&one, Format::Text);
        // The same ledger, a new round and new own numbers.
        let two = Arc::new(Snapshot {
            sample: Arc::new(Sample::default()),
            ..(*one).clone()
        });
        let (after, _) = scrapes.kept(&two, Format::Text);
        for (i, (group, _)) in scrapes.groups.iter().enumerate() {
            let kept = matches!((&before[i], &after[i]), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
            assert!(!kept, "group {i} ({group:?}) is rendered again");
        }
        let _ = scrapes.body(&two, T0 + S, Format::Text, false);
        let (_, again) = scrapes.kept(&two, Format::Text);
        assert!(Arc::ptr_eq(&pieces, &again), "the units' families are kept");
        let (body, _) = scrapes.body(&two, T0 + S, Format::Text, false);
        assert_eq!(
            String::from_utf8(body.to_vec()).expect("text"),
            metrics::render(&two, T0 + S, Format::Text, &Families::default())
        );
    }

    #[test]
    fn an_event_renders_the_units_parts_again() {
        let scrapes = Scrapes::new(&Families::default());
        let one = snapshot(1);
        let _ = scrapes.body(&one, T0 + S, Format::Text, false);
        let two = after(
            &one,
            "u0.service",
            Transition::State {
                state: ActiveState::Failed,
                sub_state: Some("failed".into()),
            },
        );
        let (body, _) = scrapes.body(&two, T0 + 2 * S, Format::Text, false);
        let text = String::from_utf8(body.to_vec()).expect("text");
        assert!(text.contains("service_up{unit=\"u0.service\"} 0"), "{text}");
        assert_eq!(
            text,
            metrics::render(&two, T0 + 2 * S, Format::Text, &Families::default())
        );
    }

    #[test]
    fn an_event_renders_again_only_the_piece_of_the_unit_it_changed() {
        let scrapes = Scrapes::new(&Families::default());
        let one = snapshot(3 * PIECE);
        let _ = scrapes.body(&one, T0 + S, Format::Text, false);
        let (_, before) = scrapes.kept(&one, Format::Text);
        let changed = format!("u{}.service", 3 * PIECE - 1);
        let two = after(
            &one,
            &changed,
            Transition::State {
                state: ActiveState::Failed,
                sub_state: Some("failed".into()),
            },
        );
        let position = two.ledger.view(T0).position(|v| v.unit == changed);
        let (body, _) = scrapes.body(&two, T0 + 2 * S, Format::Text, false);
        assert_eq!(
            String::from_utf8(body.to_vec()).expect("text"),
            metrics::render(&two, T0 + 2 * S, Format::Text, &Families::default())
        );
        let (_, then) = scrapes.kept(&two, Format::Text);
        let piece = position.expect("the unit") / PIECE;
        let families = |p: &Pieces| -> Vec<Vec<Arc<Segment>>> {
            p.runs
                .iter()
                .flat_map(|r| match r {
                    Run::Pieces(f) => f.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
                    Run::Whole(_) => panic!("units over one piece are kept in pieces"),
                })
                .collect()
        };
        for (a, b) in families(&before).iter().zip(&families(&then)) {
            for (i, (a, b)) in a.iter().zip(b).enumerate() {
                assert_eq!(
                    Arc::ptr_eq(a, b),
                    i != piece,
                    "piece {i}; {changed} is in {piece}"
                );
            }
        }
    }

    #[test]
    fn a_unit_that_appears_is_rendered_in_its_place() {
        let scrapes = Scrapes::new(&Families::default());
        let one = snapshot(PIECE + 1);
        let _ = scrapes.body(&one, T0 + S, Format::Text, false);
        let two = after(
            &one,
            "a.service",
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: Some(0),
            },
        );
        for gzip in [false, true] {
            let (body, gzipped) = scrapes.body(&two, T0 + 2 * S, Format::Text, gzip);
            let body = body.to_vec();
            let text = if gzipped {
                gunzip(&body)
            } else {
                String::from_utf8(body).expect("text")
            };
            assert_eq!(
                text,
                metrics::render(&two, T0 + 2 * S, Format::Text, &Families::default())
            );
        }
    }
}
