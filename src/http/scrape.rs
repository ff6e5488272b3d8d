//! A scrape's body, assembled from the exposition's parts
//! ([`metrics::Part`]): a part that does not change with the time of the
//! read is rendered (and compressed) once per snapshot and kept until a
//! new snapshot is published; only the others (open intervals: uptime,
//! downtime) are rendered on every scrape. Between events — most of the
//! time on most hosts — a scrape costs those few parts.
//!
//! gzip is one gzip member, as every client reads it (curl does not read
//! concatenated members): each part is deflated on its own, ending in a
//! full flush, which resets the dictionary and aligns to a byte, so parts
//! deflated at different times splice into one deflate stream; the stream
//! is closed with an empty final block and the trailer's CRC-32 combined
//! from the parts' (the way pigz compresses blocks independently).

use std::sync::{Arc, Mutex, OnceLock, Weak};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

use crate::ledger::Usec;
use crate::render::exposition::Format;
use crate::render::metrics::{self, Families, Part};
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

/// A part deflated on its own, ending with a full flush.
struct Deflated {
    bytes: Vec<u8>,
    crc: Crc,
}

/// The parts of the last snapshot scraped in one format.
struct Entry {
    /// Which snapshot: a weak reference keeps its address from being
    /// reused (so it names that snapshot alone) without keeping its ledger.
    snapshot: Weak<Snapshot>,
    format: Format,
    /// By group of parts; `None` for a group rendered on every scrape.
    segments: Vec<Option<Arc<Segment>>>,
}

/// Scrape bodies and what they are assembled from.
pub struct Scrapes {
    /// The parts in order, in runs of those that read the time or not
    /// (each run one segment: fewer, longer segments compress better).
    groups: Vec<Vec<Part>>,
    /// One entry per format at most (a scraper asks for one).
    cache: Mutex<Vec<Entry>>,
}

impl Scrapes {
    pub fn new(families: &Families) -> Scrapes {
        let mut groups: Vec<Vec<Part>> = Vec::new();
        for part in metrics::parts(families) {
            match groups.last_mut() {
                Some(g) if g[0].reads_now() == part.reads_now() => g.push(part),
                _ => groups.push(vec![part]),
            }
        }
        Scrapes {
            groups,
            cache: Mutex::new(Vec::new()),
        }
    }

    /// Renders `groups`, one segment each.
    fn render(
        snapshot: &Snapshot,
        now: Usec,
        format: Format,
        groups: &[&Vec<Part>],
    ) -> Vec<Arc<Segment>> {
        let parts: Vec<Part> = groups.iter().flat_map(|g| g.iter().copied()).collect();
        let mut texts = metrics::render_parts(snapshot, now, format, &parts).into_iter();
        groups
            .iter()
            .map(|g| Segment::new(texts.by_ref().take(g.len()).collect()))
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
    ) -> (Vec<u8>, bool) {
        let kept = self.kept(snapshot, format);
        let segments = match kept {
            Some(kept) => {
                let fresh: Vec<&Vec<Part>> = self
                    .groups
                    .iter()
                    .zip(&kept)
                    .filter(|(_, k)| k.is_none())
                    .map(|(g, _)| g)
                    .collect();
                let mut rendered = Scrapes::render(snapshot, now, format, &fresh).into_iter();
                kept.into_iter()
                    .map(|k| k.or_else(|| rendered.next()))
                    .collect::<Option<Vec<_>>>()
                    .unwrap_or_default()
            }
            None => {
                // The parts of an older snapshot go first, so that their
                // memory serves the new ones.
                self.forget(format);
                let all: Vec<&Vec<Part>> = self.groups.iter().collect();
                let all = Scrapes::render(snapshot, now, format, &all);
                self.keep(snapshot, format, &all);
                all
            }
        };
        if gzip {
            if let Some(body) = gzipped(&segments) {
                return (body, true);
            }
            tracing::warn!("cannot gzip a scrape; sending it plain");
        }
        let mut body = String::with_capacity(segments.iter().map(|s| s.text.len()).sum());
        for s in &segments {
            body.push_str(&s.text);
        }
        (body.into_bytes(), false)
    }

    /// The kept segments of `snapshot` in `format`, if it is the one kept.
    fn kept(&self, snapshot: &Arc<Snapshot>, format: Format) -> Option<Vec<Option<Arc<Segment>>>> {
        let cache = self.cache.lock().ok()?;
        cache
            .iter()
            .find(|e| {
                e.format == format && std::ptr::eq(e.snapshot.as_ptr(), Arc::as_ptr(snapshot))
            })
            .map(|e| e.segments.clone())
    }

    fn forget(&self, format: Format) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|e| e.format != format);
        }
    }

    fn keep(&self, snapshot: &Arc<Snapshot>, format: Format, segments: &[Arc<Segment>]) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        cache.retain(|e| e.format != format);
        cache.push(Entry {
            snapshot: Arc::downgrade(snapshot),
            format,
            segments: self
                .groups
                .iter()
                .zip(segments)
                .map(|(g, s)| (!g[0].reads_now()).then(|| Arc::clone(s)))
                .collect(),
        });
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

/// The segments as one gzip member; `None` if one could not be deflated.
fn gzipped(segments: &[Arc<Segment>]) -> Option<Vec<u8>> {
    // ID, deflate, no flags, no mtime, no extra flags, OS unknown.
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    // An empty final block with fixed codes: the end of the deflate stream.
    const FINAL: [u8; 2] = [0x03, 0x00];
    let deflated: Vec<&Deflated> = segments
        .iter()
        .map(|s| s.deflated())
        .collect::<Option<_>>()?;
    let mut body = Vec::with_capacity(
        HEADER.len() + deflated.iter().map(|d| d.bytes.len()).sum::<usize>() + 10,
    );
    body.extend_from_slice(&HEADER);
    let mut crc = Crc::new();
    for d in deflated {
        body.extend_from_slice(&d.bytes);
        crc.combine(&d.crc);
    }
    body.extend_from_slice(&FINAL);
    body.extend_from_slice(&crc.sum().to_le_bytes());
    body.extend_from_slice(&crc.amount().to_le_bytes());
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
            let text = if gzipped {
                gunzip(&body)
            } else {
                String::from_utf8(body).expect("text")
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
        assert!(String::from_utf8(body)
            .expect("text")
            .contains("u1.service"));
    }

    #[test]
    fn an_empty_part_deflates_to_a_valid_segment() {
        let d = deflate("").expect("deflated");
        let s = Segment::new(String::new());
        let _ = s.deflated.set(Some(d));
        assert_eq!(gunzip(&gzipped(&[s]).expect("gzip")), "");
    }
}
