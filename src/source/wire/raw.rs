//! A message as read off the socket, kept as its bytes: what the signal
//! queue holds of systemd's signals in place of zbus's `Message`, and where
//! on the connection it came in ([`Position`]).

use serde::de::DeserializeOwned;
use zbus::message::Sequence;
use zbus::zvariant::serialized::{Context, Data};
use zbus::zvariant::{Endian, Type};
use zbus::Message;

use super::header::{self, Fields};
use crate::source::changed::Changed;

/// Where a message came in on its connection, in the order read: comparable
/// with the position of every message zbus reads (`Message::recv_position`,
/// [`Position::of`]). A message the tap keeps from zbus comes after the last
/// one zbus was handed (`after`) and is the `nth` since.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    after: Sequence,
    nth: u32,
}

impl Position {
    /// Where zbus read `msg`.
    pub fn of(msg: &Message) -> Position {
        Position {
            after: msg.recv_position(),
            nth: 0,
        }
    }

    /// The `nth` (from 1) message read after the one zbus read at `after`.
    pub fn after(after: Sequence, nth: u32) -> Position {
        Position { after, nth }
    }
}

/// One whole message's bytes, whose header [`header::read`] could read,
/// and where in them its header fields are: read once, as the tap takes the
/// message, not again by each reader of it (the sender check, the decoder).
#[derive(Debug, Clone)]
pub struct Raw {
    bytes: Vec<u8>,
    at: Position,
    spans: Spans,
}

/// Where a string of the header is in the message's bytes.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Debug, Clone, Copy)]
struct Spans {
    kind: u8,
    path: Option<Span>,
    interface: Option<Span>,
    member: Option<Span>,
    sender: Option<Span>,
    signature: Option<Span>,
    body: usize,
    big: bool,
}

/// A body whose signature is not the one asked for.
#[derive(Debug, thiserror::Error)]
#[error("a body of signature {got:?}, not {want:?}")]
pub struct OtherSignature {
    got: String,
    want: &'static str,
}

impl Spans {
    /// Where the strings of `fields`, read off `bytes`, are in them.
    fn of(bytes: &[u8], fields: &Fields<'_>) -> Spans {
        let base = bytes.as_ptr() as usize;
        let span = |s: Option<&str>| {
            let s = s?;
            let start = (s.as_ptr() as usize).checked_sub(base)?;
            Some(Span {
                start: u32::try_from(start).ok()?,
                len: u32::try_from(s.len()).ok()?,
            })
        };
        Spans {
            kind: fields.kind,
            path: span(fields.path),
            interface: span(fields.interface),
            member: span(fields.member),
            sender: span(fields.sender),
            signature: span(fields.signature),
            body: fields.body,
            big: fields.big,
        }
    }
}

impl Raw {
    /// `bytes`, a whole message read at `at`; `None` if its header cannot
    /// be read.
    pub fn new(bytes: Vec<u8>, at: Position) -> Option<Raw> {
        let fields = header::read(&bytes)?;
        let spans = Spans::of(&bytes, &fields);
        Some(Raw { bytes, at, spans })
    }

    /// A copy of `bytes`, a whole message whose header reads as `fields`.
    pub fn copied(bytes: &[u8], fields: &Fields<'_>, at: Position) -> Raw {
        Raw {
            spans: Spans::of(bytes, fields),
            bytes: bytes.to_vec(),
            at,
        }
    }

    /// The bytes of `msg`, which zbus read at its position.
    pub fn of(msg: &Message) -> Option<Raw> {
        Raw::new(msg.data().to_vec(), Position::of(msg))
    }

    pub fn at(&self) -> Position {
        self.at
    }

    /// The header fields.
    pub fn fields(&self) -> Fields<'_> {
        let text = |span: Option<Span>| {
            let span = span?;
            let (start, len) = (span.start as usize, span.len as usize);
            // Checked as UTF-8 when read; again here, without unsafe code,
            // which costs less than the walk through the header it saves.
            std::str::from_utf8(self.bytes.get(start..start + len)?).ok()
        };
        let spans = &self.spans;
        Fields {
            kind: spans.kind,
            path: text(spans.path),
            interface: text(spans.interface),
            member: text(spans.member),
            sender: text(spans.sender),
            signature: text(spans.signature),
            body: spans.body,
            big: spans.big,
        }
    }

    /// The body, decoded by zvariant as `T`, if its signature is `want`
    /// (written as in the header: `uos`, not `(uos)`).
    pub fn body<T>(&self, want: &'static str) -> zbus::Result<T>
    where
        T: DeserializeOwned + Type,
    {
        let fields = self.fields();
        let got = fields.signature.unwrap_or("");
        if got != want {
            let other = OtherSignature {
                got: got.to_owned(),
                want,
            };
            return Err(zbus::Error::Failure(other.to_string()));
        }
        if fields.body > self.bytes.len() {
            return Err(zbus::Error::Failure("a body past the message's end".into()));
        }
        let endian = if fields.big {
            Endian::Big
        } else {
            Endian::Little
        };
        let data = Data::new(&self.bytes[..], Context::new_dbus(endian, 0));
        let (body, _) = data.slice(fields.body..).deserialize::<T>()?;
        Ok(body)
    }

    /// A `PropertiesChanged` body read off the bytes ([`super::read`]);
    /// `None` if that reader cannot (then [`Raw::body`] can say why).
    pub fn properties_changed(&self) -> Option<(&str, Changed)> {
        let fields = self.fields();
        if fields.signature != Some(super::BODY) {
            return None;
        }
        let body = self.bytes.get(fields.body..)?;
        super::read(body, fields.body, fields.big)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_removed() -> Message {
        Message::signal(
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "JobRemoved",
        )
        .and_then(|b| b.sender(":1.0"))
        .and_then(|b| {
            b.build(&(
                7u32,
                zbus::zvariant::ObjectPath::from_static_str_unchecked("/job/7"),
                "a.service",
                "done",
            ))
        })
        .expect("a signal")
    }

    #[test]
    fn a_body_decodes_as_zbus_decodes_it() {
        let msg = job_removed();
        let raw = Raw::of(&msg).expect("a header");
        let mine: (u32, zbus::zvariant::OwnedObjectPath, String, String) =
            raw.body("uoss").expect("decoded");
        let zbus: (u32, zbus::zvariant::OwnedObjectPath, String, String) =
            msg.body().deserialize().expect("decoded");
        assert_eq!(mine, zbus);
    }

    #[test]
    fn a_body_of_another_signature_is_refused() {
        let raw = Raw::of(&job_removed()).expect("a header");
        let err = raw.body::<(u32, String)>("us").expect_err("refused");
        assert!(err.to_string().contains("uoss"), "{err}");
    }

    #[test]
    fn bytes_that_are_no_message_are_refused() {
        assert!(Raw::new(b"not a message".to_vec(), Position::default()).is_none());
    }

    #[test]
    fn a_message_the_tap_kept_comes_between_those_zbus_read() {
        let first = Message::signal("/a", "org.example.A", "B")
            .and_then(|b| b.build(&()))
            .expect("a signal");
        // Built, not read: zbus places it at the start.
        let zbus_read = Position::of(&first);
        let kept = Position::after(first.recv_position(), 1);
        assert!(zbus_read < kept);
        assert!(kept < Position::after(first.recv_position(), 2));
    }
}
