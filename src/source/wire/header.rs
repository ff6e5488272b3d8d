//! The header fields unitwatch looks at in every signal (sender, path,
//! interface, member), read off the message's bytes.
//!
//! Why not zbus's `Message::header`? It builds every field anew each time it
//! is called, checking each name as it goes (some 2700 instructions, measured
//! with callgrind); the signal queue calls it for the sender and the D-Bus
//! source again for the rest, a tenth of unitwatch's work in a flap storm.
//! zbus checked these bytes when it read the message (it rejects a message
//! whose header does not parse), so they are taken as they are here. Should
//! this reader not find what it expects, the caller asks zbus.

use zbus::Message;

use super::Reader;

/// The header fields of one message, as sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    pub path: Option<&'a str>,
    pub interface: Option<&'a str>,
    pub member: Option<&'a str>,
    pub sender: Option<&'a str>,
}

/// The codes of the header fields read ("Message Format" in the D-Bus
/// specification).
const PATH: u8 = 1;
const INTERFACE: u8 = 2;
const MEMBER: u8 = 3;
const SENDER: u8 = 7;

/// `msg`'s header fields; `None` if they cannot be read here.
pub fn fields(msg: &Message) -> Option<Fields<'_>> {
    read(msg.data())
}

/// Calls `f` with `msg`'s header fields, read here or else by zbus.
pub fn with_fields<R>(msg: &Message, f: impl FnOnce(Fields<'_>) -> R) -> R {
    if let Some(fields) = fields(msg) {
        return f(fields);
    }
    let header = msg.header();
    f(Fields {
        path: header.path().map(|p| p.as_str()),
        interface: header.interface().map(|i| i.as_str()),
        member: header.member().map(|m| m.as_str()),
        sender: header.sender().map(|s| s.as_str()),
    })
}

/// Reads the header fields of the message `bytes`.
fn read(bytes: &[u8]) -> Option<Fields<'_>> {
    let big = match bytes.first()? {
        b'l' => false,
        b'B' => true,
        _ => return None,
    };
    // The fixed part: endianness, type, flags, version, body length,
    // serial; then the fields, an array of (code, variant).
    let mut r = Reader {
        bytes,
        at: 12,
        base: 0,
        big,
    };
    let len = r.u32()? as usize;
    r.align(8)?;
    let end = r.at.checked_add(len)?;
    let mut fields = Fields::default();
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
            (PATH | INTERFACE | MEMBER | SENDER, _) => return None,
            _ => {
                r.skip(signature, 0)?;
                continue;
            }
        };
        *field = Some(r.str()?);
    }
    (r.at == end).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            fields(&msg),
            Some(Fields {
                path: header.path().map(|p| p.as_str()),
                interface: header.interface().map(|i| i.as_str()),
                member: header.member().map(|m| m.as_str()),
                sender: header.sender().map(|s| s.as_str()),
            })
        );
        assert_eq!(fields(&msg).and_then(|f| f.sender), Some(":1.0"));
    }

    #[test]
    fn a_message_without_a_sender_has_none() {
        let msg = Message::signal("/a", "org.example.A", "B")
            .and_then(|b| b.build(&()))
            .expect("a signal");
        let got = fields(&msg).expect("read");
        assert_eq!(got.sender, None);
        assert_eq!(got.member, Some("B"));
    }

    #[test]
    fn a_truncated_header_is_not_read() {
        let msg = job_new();
        let whole: &[u8] = msg.data();
        let len = 16 + u32::from_le_bytes(whole[12..16].try_into().expect("4 bytes")) as usize;
        for cut in 0..len {
            assert_eq!(read(&whole[..cut]), None, "cut at {cut}");
        }
    }
}
