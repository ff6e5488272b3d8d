//! A scrape's body, assembled from the exposition's parts
//! ([`metrics::Part`]): a part that does not change with the time of the
//! read is rendered (and compressed) once and kept until what it is read
//! from changes — the ledger's units, the sampler's round, or the rest of
//! the snapshot (`Reads`) — so a sampler's round does not render the
//! units' families again; only the others (open intervals: uptime,
//! downtime) are rendered on every scrape. Between events — most of the
//! time on most hosts — a scrape costs those few parts.
//!
//! gzip is one gzip member, as every client reads it (curl does not read
//! concatenated members): each part is deflated on its own, ending in a
//! full flush, which resets the dictionary and aligns to a byte, so parts
//! deflated at different times splice into one deflate stream; the stream
//! is closed with an empty final block and the trailer's CRC-32 combined
//! from the parts' (the way pigz compresses blocks independently).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use http_body::{Frame, SizeHint};

use crate::ledger::Usec;
use crate::render::exposition::Format;
use crate::render::metrics::{self, Families, Part};
use crate::sample::Sample;
use crate::snapshot::Snapshot;

/// gzip's level for scrapes (see BENCHMARKS.md for what each costs). A low
/// level: metric text is repetitive enough that it compresses over ten
/// times even so, and the scrape's CPU is what we save on.
const GZIP_LEVEL: u32 = 3;

/// One rendered part, and its deflated form once a scrape asked for gzip.
struct Segment {
    text: String,
    deflated: OnceLock<Option<Deflated>>,
}

impl Segment {
    fn new(mut text: String) -> Arc<Segment> {
        // Kept until the next snapshot: without the room it was built in.
        text.shrink_to_fit();
        Arc::new(Segment {
            text,
            deflated: OnceLock::new(),
        })
    }

    fn deflated(&self) -> Option<&Deflated> {
        self.deflated.get_or_init(|| deflate(&self.text)).as_ref()
    }
}

/// A segment's text as a chunk of a body, without a copy.
struct Text(Arc<Segment>);

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.0.text.as_bytes()
    }
}

/// A segment's deflated form as a chunk of a body, without a copy (once
/// deflated; empty otherwise, which [`gzipped`] rules out).
struct Gz(Arc<Segment>);

impl AsRef<[u8]> for Gz {
    fn as_ref(&self) -> &[u8] {
        self.0
            .deflated
            .get()
            .and_then(Option::as_ref)
            .map_or(&[], |d| d.bytes.as_slice())
    }
}

/// A scrape's body: the kept segments themselves, one after the other, of a
/// length known up front (so it goes out with a `Content-Length`). Copying
/// them into one buffer cost a copy of megabytes at every scrape of
/// thousands of units, and the buffer's pages.
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: Vec<Bytes>) -> Chunks {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks {
            chunks: chunks.into(),
            remaining,
        }
    }

    /// The whole body in one buffer (tests).
    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.chunks.pop_front();
        if let Some(c) = &next {
            self.remaining -= c.len() as u64;
        }
        Poll::Ready(next.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A part deflated on its own, ending with a full flush.
struct Deflated {
    bytes: Vec<u8>,
    crc: Crc,
}

/// What a run of parts is rendered from, and so when it is rendered again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reads {
    /// The time of the read: rendered on every scrape.
    Now,
    /// The ledger's units (and the clock frame their times are in): again
    /// after every burst of events, not after a sampler's round.
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
/// keeping what it points to; the ledger is named by its version (keeping a
/// copy of it held every account a burst changed: megabytes).
enum From {
    Ledger(u64, i64),
    Sample(Weak<Sample>),
    Snapshot(Weak<Snapshot>),
}

impl From {
    fn of(reads: Reads, snapshot: &Arc<Snapshot>) -> Option<From> {
        Some(match reads {
            Reads::Now => return None,
            Reads::Ledger => From::Ledger(snapshot.ledger.version(), snapshot.frame),
            Reads::Sample => From::Sample(Arc::downgrade(&snapshot.sample)),
            Reads::Snapshot => From::Snapshot(Arc::downgrade(snapshot)),
        })
    }

    /// Whether what it was rendered from is what `snapshot` holds.
    fn holds(&self, snapshot: &Arc<Snapshot>) -> bool {
        match self {
            From::Ledger(version, frame) => {
                *frame == snapshot.frame && *version == snapshot.ledger.version()
            }
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

/// Scrape bodies and what they are assembled from.
pub struct Scrapes {
    /// The parts in order, in runs of those read from the same thing (each
    /// run one segment: fewer, longer segments compress better).
    groups: Vec<(Reads, Vec<Part>)>,
    /// By format (a scraper asks for one), the segment last rendered of
    /// each group; `None` for a group rendered on every scrape.
    cache: Mutex<Vec<(Format, Vec<Option<Kept>>)>>,
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
        Scrapes {
            groups,
            cache: Mutex::new(Vec::new()),
        }
    }

    /// Renders the groups `which` (by index), one segment each.
    fn render(
        &self,
        snapshot: &Snapshot,
        now: Usec,
        format: Format,
        which: &[usize],
    ) -> Vec<Arc<Segment>> {
        let parts: Vec<Part> = which
            .iter()
            .flat_map(|i| self.groups[*i].1.iter().copied())
            .collect();
        let mut texts = metrics::render_parts(snapshot, now, format, &parts).into_iter();
        which
            .iter()
            .map(|i| Segment::new(texts.by_ref().take(self.groups[*i].1.len()).collect()))
            .collect()
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
        let mut kept = self.kept(snapshot, format);
        let fresh: Vec<usize> = (0..self.groups.len())
            .filter(|i| kept[*i].is_none())
            .collect();
        let rendered = self.render(snapshot, now, format, &fresh);
        for (i, segment) in fresh.iter().zip(&rendered) {
            kept[*i] = Some(Arc::clone(segment));
        }
        self.keep(snapshot, format, &fresh, &rendered);
        let segments: Vec<Arc<Segment>> = kept.into_iter().flatten().collect();
        if gzip {
            if let Some(body) = gzipped(&segments) {
                return (Chunks::new(body), true);
            }
            tracing::warn!("cannot gzip a scrape; sending it plain");
        }
        let body = segments
            .into_iter()
            .map(|s| Bytes::from_owner(Text(s)))
            .collect();
        (Chunks::new(body), false)
    }

    /// By group, the segment kept in `format` if it was rendered from what
    /// `snapshot` holds.
    fn kept(&self, snapshot: &Arc<Snapshot>, format: Format) -> Vec<Option<Arc<Segment>>> {
        let mut out = vec![None; self.groups.len()];
        let Ok(cache) = self.cache.lock() else {
            return out;
        };
        if let Some((_, segments)) = cache.iter().find(|(f, _)| *f == format) {
            for (o, k) in out.iter_mut().zip(segments) {
                *o = k
                    .as_ref()
                    .filter(|k| k.from.holds(snapshot))
                    .map(|k| Arc::clone(&k.segment));
            }
        }
        out
    }

    /// Keeps the segments just rendered of the groups `which`.
    fn keep(
        &self,
        snapshot: &Arc<Snapshot>,
        format: Format,
        which: &[usize],
        rendered: &[Arc<Segment>],
    ) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let at = match cache.iter().position(|(f, _)| *f == format) {
            Some(at) => at,
            None => {
                cache.push((format, (0..self.groups.len()).map(|_| None).collect()));
                cache.len() - 1
            }
        };
        let segments = &mut cache[at].1;
        for (i, segment) in which.iter().zip(rendered) {
            segments[*i] = From::of(self.groups[*i].0, snapshot).map(|from| Kept {
                from,
                segment: Arc::clone(segment),
            });
        }
    }
}

/// `text` deflated with a full flush at the end; `None` if zlib failed.
fn deflate(text: &str) -> Option<Deflated> {
    let mut c = Compress::new(Compression::new(GZIP_LEVEL), false);
    let input = text.as_bytes();
    let mut out = Vec::with_capacity(input.len() / 8 + 64);
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = c.total_in() as usize;
        match c.compress_vec(&input[consumed..], &mut out, FlushCompress::Full) {
            Ok(Status::Ok | Status::BufError) => {}
            Ok(Status::StreamEnd) => break,
            Err(_) => return None,
        }
        // Done once all input is in and the flush left spare room (zlib
        // fills the buffer when it has more to give).
        if c.total_in() as usize == input.len() && out.len() < out.capacity() {
            break;
        }
    }
    out.shrink_to_fit();
    let mut crc = Crc::new();
    crc.update(input);
    Some(Deflated { bytes: out, crc })
}

/// The segments as one gzip member, in chunks; `None` if one could not be
/// deflated.
fn gzipped(segments: &[Arc<Segment>]) -> Option<Vec<Bytes>> {
    // ID, deflate, no flags, no mtime, no extra flags, OS unknown.
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    // An empty final block with fixed codes: the end of the deflate stream.
    const FINAL: [u8; 2] = [0x03, 0x00];
    let mut body = Vec::with_capacity(segments.len() + 2);
    body.push(Bytes::from_static(&HEADER));
    let mut crc = Crc::new();
    for s in segments {
        crc.combine(&s.deflated()?.crc);
        body.push(Bytes::from_owner(Gz(Arc::clone(s))));
    }
    let mut trailer = Vec::with_capacity(10);
    trailer.extend_from_slice(&FINAL);
    trailer.extend_from_slice(&crc.sum().to_le_bytes());
    trailer.extend_from_slice(&crc.amount().to_le_bytes());
    body.push(Bytes::from(trailer));
    Some(body)
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
        let before = scrapes.kept(&one, Format::Text);
        // The same ledger, a new round and new own numbers.
        let two = Arc::new(Snapshot {
            sample: Arc::new(Sample::default()),
            ..(*one).clone()
        });
        let after = scrapes.kept(&two, Format::Text);
        for (i, (group, _)) in scrapes.groups.iter().enumerate() {
            let same = matches!((&before[i], &after[i]), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
            assert_eq!(same, *group == Reads::Ledger, "group {i} ({group:?})");
        }
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
        let mut ledger = one.ledger.clone();
        ledger.apply(Event::new(
            "u0.service",
            T0 + S,
            Transition::State {
                state: ActiveState::Failed,
                sub_state: Some("failed".into()),
            },
        ));
        let two = Arc::new(Snapshot {
            ledger,
            ..(*one).clone()
        });
        let (body, _) = scrapes.body(&two, T0 + 2 * S, Format::Text, false);
        let text = String::from_utf8(body.to_vec()).expect("text");
        assert!(text.contains("service_up{unit=\"u0.service\"} 0"), "{text}");
        assert_eq!(
            text,
            metrics::render(&two, T0 + 2 * S, Format::Text, &Families::default())
        );
    }

    #[test]
    fn an_empty_part_deflates_to_a_valid_segment() {
        let d = deflate("").expect("deflated");
        let s = Segment::new(String::new());
        let _ = s.deflated.set(Some(d));
        let body: Vec<u8> = gzipped(&[s]).expect("gzip").concat();
        assert_eq!(gunzip(&body), "");
    }
}
