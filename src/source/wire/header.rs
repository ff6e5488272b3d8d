//! The header of a message as read off the socket: where it ends, and the
//! fields unitwatch looks at (sender, path, interface, member, the body's
//! signature), read off its bytes ("Message Format" in the D-Bus
//! specification).
//!
//! Why not zbus's? zbus parses every header into a `Message` (every field
//! checked, its signature parsed into an owned `Signature`), some 19,000
//! instructions a message measured with callgrind, a quarter of unitwatch's
//! work in a flap storm; and its `Message::header` builds every field anew
//! each time it is called. The tap ([`crate::source::tap`]) reads systemd's
//! signals without zbus, and this reader is all the header parsing they get.
//! It checks what it reads (lengths, alignment, UTF-8 of the names it
//! returns, the closing NULs); a header it cannot read is not guessed at.

use super::Reader;

/// The fixed part of every header: endianness, type, flags, version, body
/// length, serial, and the length of the array of fields.
pub const FIXED: usize = 16;

/// The largest message the specification allows (128 MiB).
pub const MAX_MESSAGE: usize = 128 * 1024 * 1024;

/// A message's type, the second byte of its header.
pub const METHOD_RETURN: u8 = 2;
pub const ERROR: u8 = 3;
pub const SIGNAL: u8 = 4;

/// The header fields of one message, as sent, and where its body starts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    pub kind: u8,
    pub path: Option<&'a str>,
    pub interface: Option<&'a str>,
    pub member: Option<&'a str>,
    pub sender: Option<&'a str>,
    /// The body's signature; `None` for an empty body.
    pub signature: Option<&'a str>,
    /// Where the body starts in the message.
    pub body: usize,
    /// Big-endian (`B`), not little-endian (`l`).
    pub big: bool,
}

/// The codes of the header fields read.
const PATH: u8 = 1;
const INTERFACE: u8 = 2;
const MEMBER: u8 = 3;
const SENDER: u8 = 7;
const SIGNATURE: u8 = 8;

/// How long the message starting at `bytes` is, once its fixed part is
/// there: `Ok(None)` until then, an error if it says it is longer than any
/// message can be or its endianness byte is neither of the two.
pub fn length(bytes: &[u8]) -> Result<Option<usize>, &'static str> {
    let Some(fixed) = bytes.get(..FIXED) else {
        return Ok(None);
    };
    let big = match fixed[0] {
        b'l' => false,
        b'B' => true,
        _ => return Err("a message of neither endianness"),
    };
    let word = |at: usize| {
        let b = [fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]];
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let (body, fields) = (word(4) as usize, word(12) as usize);
    let header = (FIXED + fields).next_multiple_of(8);
    match header.checked_add(body) {
        Some(total) if total <= MAX_MESSAGE => Ok(Some(total)),
        _ => Err("a message longer than the specification allows"),
    }
}

/// Reads the header of the message `bytes`.
pub fn read(bytes: &[u8]) -> Option<Fields<'_>> {
    let big = match bytes.first()? {
        b'l' => false,
        b'B' => true,
        _ => return None,
    };
    let mut r = Reader {
        bytes,
        at: 12,
        base: 0,
        big,
    };
    let len = r.u32()? as usize;
    r.align(8)?;
    let end = r.at.checked_add(len)?;
    let mut fields = Fields {
        kind: *bytes.get(1)?,
        big,
        ..Fields::default()
    };
    while r.at < end {
        r.align(8)?;
        let code = *r.take(1)?.first()?;
        let signature = r.single()?;
        let field = match (code, signature) {
            (PATH, b"o") => &mut fields.path,
            (INTERFACE | MEMBER | SENDER, b"s") => match code {
                INTERFACE => &mut fields.interface,
                MEMBER => &mut fields.member,
                _ => &mut fields.sender,
            },
            (SIGNATURE, b"g") => {
                let s = r.signature()?;
                fields.signature = Some(std::str::from_utf8(s).ok()?);
                continue;
            }
            (PATH | INTERFACE | MEMBER | SENDER | SIGNATURE, _) => return None,
            _ => {
                r.skip(signature, 0)?;
                continue;
            }
        };
        *field = Some(r.str()?);
    }
    (r.at == end).then_some(())?;
    fields.body = end.next_multiple_of(8);
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::Message;

    fn job_new() -> Message {
        Message::signal(
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "JobNew",
        )
        .and_then(|b| b.sender(":1.0"))
        .and_then(|b| b.destination(":1.7"))
        .and_then(|b| b.build(&(7u32, "a.service")))
        .expect("a signal")
    }

    #[test]
    fn reads_what_zbus_reads() {
        let msg = job_new();
        let header = msg.header();
        let got = read(msg.data()).expect("read");
        assert_eq!(got.kind, SIGNAL);
        assert_eq!(got.path, header.path().map(|p| p.as_str()));
        assert_eq!(got.interface, header.interface().map(|i| i.as_str()));
        assert_eq!(got.member, header.member().map(|m| m.as_str()));
        assert_eq!(got.sender, Some(":1.0"));
        assert_eq!(got.signature, Some("us"));
        assert!(!got.big);
    }

    #[test]
    fn the_body_starts_where_zbus_says() {
        let msg = job_new();
        let got = read(msg.data()).expect("read");
        let body = msg.body();
        assert_eq!(&msg.data()[got.body..], &body.data()[..]);
    }

    #[test]
    fn the_length_is_the_whole_message() {
        let msg = job_new();
        let whole: &[u8] = msg.data();
        assert_eq!(length(whole), Ok(Some(whole.len())));
        assert_eq!(length(&whole[..FIXED - 1]), Ok(None));
        let mut other = whole.to_vec();
        other[0] = b'x';
        assert!(length(&other).is_err());
    }

    #[test]
    fn a_message_longer_than_allowed_is_refused() {
        let mut bytes = job_new().data().to_vec();
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(length(&bytes).is_err());
    }

    #[test]
    fn a_message_without_a_sender_has_none() {
        let msg = Message::signal("/a", "org.example.A", "B")
            .and_then(|b| b.build(&()))
            .expect("a signal");
        let got = read(msg.data()).expect("read");
        assert_eq!(got.sender, None);
        assert_eq!(got.signature, None);
        assert_eq!(got.member, Some("B"));
    }

    #[test]
    fn a_truncated_header_is_not_read() {
        let msg = job_new();
        let whole: &[u8] = msg.data();
        let len = FIXED + u32::from_le_bytes(whole[12..16].try_into().expect("4 bytes")) as usize;
        for cut in 0..len {
            assert_eq!(read(&whole[..cut]), None, "cut at {cut}");
        }
    }
}
