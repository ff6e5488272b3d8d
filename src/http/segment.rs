//! A scrape body's pieces and how they go on the wire: a [`Segment`] is
//! rendered text kept between scrapes, with its deflated form once a scrape
//! asked for gzip; [`Chunks`] sends kept segments as they are.
//!
//! gzip is one gzip member, as every client reads it (curl does not read
//! concatenated members): each segment is deflated on its own, ending in a
//! full flush, which resets the dictionary and aligns to a byte, so segments
//! deflated at different times splice into one deflate stream; the stream
//! is closed with an empty final block and the trailer's CRC-32 combined
//! from the segments' (the way pigz compresses blocks independently).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use http_body::{Frame, SizeHint};

/// gzip's level for scrapes (see BENCHMARKS.md for what each costs). A low
/// level: metric text is repetitive enough that it compresses over ten
/// times even so, and the scrape's CPU is what we save on.
const GZIP_LEVEL: u32 = 3;

/// One rendered part, and its deflated form once a scrape asked for gzip.
pub struct Segment {
    text: String,
    deflated: OnceLock<Option<Deflated>>,
}

impl Segment {
    pub fn new(mut text: String) -> Arc<Segment> {
        // Kept until the next snapshot: without the room it was built in.
        text.shrink_to_fit();
        Arc::new(Segment {
            text,
            deflated: OnceLock::new(),
        })
    }

    /// Text rendered for one scrape alone: dropped with it, so kept with
    /// the room it was built in rather than copied to shed it.
    pub fn once(text: String) -> Arc<Segment> {
        Arc::new(Segment {
            text,
            deflated: OnceLock::new(),
        })
    }

    /// Whether it holds no text (a family without samples in a piece).
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
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
    pub fn to_vec(&self) -> Vec<u8> {
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

/// The segments as they are, in chunks.
pub fn plain(segments: Vec<Arc<Segment>>) -> Chunks {
    Chunks::new(
        segments
            .into_iter()
            .map(|s| Bytes::from_owner(Text(s)))
            .collect(),
    )
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
pub fn gzipped(segments: &[Arc<Segment>]) -> Option<Chunks> {
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
    Some(Chunks::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_segment_deflates_to_a_valid_member() {
        let s = Segment::new(String::new());
        let body = gzipped(&[s]).expect("gzip").to_vec();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
            .expect("one valid gzip member");
        assert_eq!(text, "");
    }
}
