//! A fast path for the body of `PropertiesChanged` (`sa{sv}as`): read off
//! the message's bytes for the few properties unitwatch follows, every other
//! value walked past by its signature; and for the header fields of every
//! signal ([`header`]).
//!
//! Why not zvariant alone? It decodes each variant by parsing its signature
//! into an owned `Signature` (a parser, allocations) and walks past a value
//! through serde's machinery; systemd sends some forty properties in each
//! `PropertiesChanged` of a service and as many of its `Unit`, so in a flap
//! storm that was a fifth of unitwatch's CPU (perf, 20 units restarting
//! every 100 ms), more than reading the messages off the socket. The D-Bus
//! wire format of these few types is small and fixed by the specification
//! ("Marshaling"): every value aligned to its type's size from the start of
//! the message, strings and arrays prefixed by their byte length.
//!
//! Anything this reader does not expect (a truncated body, a type code it
//! does not know, nesting past [`MAX_DEPTH`]) makes it give up, and the
//! caller decodes the body with zvariant as before ([`super::signal`]): the
//! fast path never decides that a message is malformed, only zvariant does.

use super::changed::{known, Changed};
use super::properties::Value;

pub mod header;
mod raw;

pub use raw::{Position, Raw};

/// A `PropertiesChanged` body's signature, as its header gives it.
pub const BODY: &str = "sa{sv}as";

/// How deep values may nest (variants in structures in arrays ...) before
/// the reader gives up; the specification allows 64 in all.
const MAX_DEPTH: u8 = 64;

/// Reads `bytes`, a `sa{sv}as` body that starts `position` bytes into its
/// message (alignment counts from there), big-endian if `big`.
fn read(bytes: &[u8], position: usize, big: bool) -> Option<(&str, Changed)> {
    let mut r = Reader {
        bytes,
        at: 0,
        base: position,
        big,
    };
    let interface = r.str()?;
    let len = r.u32()? as usize;
    r.align(8)?;
    let end = r.at.checked_add(len)?;
    let mut kept = Vec::new();
    while r.at < end {
        r.align(8)?;
        // A key unitwatch reads is UTF-8 as its name is; any other is
        // checked only as cheaply as it can be: ASCII, as systemd's are.
        let key = r.str_bytes()?;
        if !key.is_ascii() {
            std::str::from_utf8(key).ok()?;
        }
        let signature = r.single()?;
        match known(key) {
            Some(name) => {
                if let Some(value) = r.value(signature, 0)? {
                    kept.push((name, value));
                }
            }
            None => r.skip(signature, 0)?,
        }
    }
    (r.at == end).then_some(())?;
    Some((interface, Changed::from_kept(kept)))
}

/// A cursor over a message's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Where `bytes` start in the message.
    base: usize,
    big: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn align(&mut self, to: usize) -> Option<()> {
        let off = (self.base + self.at) % to;
        if off != 0 {
            self.take(to - off)?;
        }
        Some(())
    }

    /// A fixed-size value's `N` bytes, aligned to its size.
    fn fixed<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.align(N)?;
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.fixed()?;
        Some(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.fixed()?;
        Some(if self.big {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }

    /// A string or object path's bytes, without its closing NUL.
    fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        let s = self.take(len)?;
        (self.take(1)? == [0]).then_some(s)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.str_bytes()?).ok()
    }

    fn signature(&mut self) -> Option<&'a [u8]> {
        let len = *self.take(1)?.first()? as usize;
        let s = self.take(len)?;
        (self.take(1)? == [0]).then_some(s)
    }

    /// A signature of one single complete type: a variant's.
    fn single(&mut self) -> Option<&'a [u8]> {
        let s = self.signature()?;
        (complete(s)? == s.len()).then_some(s)
    }

    /// Reads a value of the single complete type `t` as unitwatch keeps it:
    /// `Some(None)` for a type it does not read (walked past), `None` if
    /// the bytes cannot be read.
    fn value(&mut self, t: &[u8], depth: u8) -> Option<Option<Value>> {
        if depth > MAX_DEPTH {
            return None;
        }
        Some(Some(match t {
            b"s" => Value::Str(self.str()?.to_owned()),
            b"t" => Value::U64(self.u64()?),
            b"u" => Value::U32(self.u32()?),
            b"b" => Value::Bool(match self.u32()? {
                0 => false,
                1 => true,
                _ => return None,
            }),
            b"ay" => {
                let len = self.u32()? as usize;
                Value::Bytes(self.take(len)?.to_vec())
            }
            b"as" => {
                let len = self.u32()? as usize;
                let end = self.at.checked_add(len)?;
                let mut strs = Vec::new();
                while self.at < end {
                    strs.push(self.str()?.to_owned());
                }
                (self.at == end).then_some(())?;
                Value::Strs(strs)
            }
            b"v" => {
                let inner = self.single()?;
                return self.value(inner, depth + 1);
            }
            _ => {
                self.skip(t, depth)?;
                return Some(None);
            }
        }))
    }

    /// Walks past a value of the single complete type `t`.
    fn skip(&mut self, t: &[u8], depth: u8) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *t.first()? {
            b'y' => {
                self.fixed::<1>()?;
            }
            b'n' | b'q' => {
                self.fixed::<2>()?;
            }
            b'b' | b'i' | b'u' | b'h' => {
                self.fixed::<4>()?;
            }
            b'x' | b't' | b'd' => {
                self.fixed::<8>()?;
            }
            b's' | b'o' => {
                self.str_bytes()?;
            }
            b'g' => {
                self.signature()?;
            }
            b'v' => {
                let inner = self.single()?;
                self.skip(inner, depth + 1)?;
            }
            b'a' => {
                let len = self.u32()? as usize;
                self.align(alignment(*t.get(1)?)?)?;
                self.take(len)?;
            }
            b'(' | b'{' => {
                self.align(8)?;
                let mut i = 1;
                while !matches!(*t.get(i)?, b')' | b'}') {
                    let field = t.get(i..i + complete(t.get(i..)?)?)?;
                    self.skip(field, depth + 1)?;
                    i += field.len();
                }
            }
            _ => return None,
        }
        Some(())
    }
}

/// The length of the first single complete type in signature `s`.
fn complete(s: &[u8]) -> Option<usize> {
    complete_at(s, 0)
}

fn complete_at(s: &[u8], depth: u8) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    match *s.first()? {
        b'y' | b'b' | b'n' | b'q' | b'i' | b'u' | b'x' | b't' | b'd' | b'h' | b's' | b'o'
        | b'g' | b'v' => Some(1),
        b'a' => Some(1 + complete_at(s.get(1..)?, depth + 1)?),
        open @ (b'(' | b'{') => {
            let close = if open == b'(' { b')' } else { b'}' };
            let mut i = 1;
            while *s.get(i)? != close {
                i += complete_at(s.get(i..)?, depth + 1)?;
            }
            Some(i + 1)
        }
        _ => None,
    }
}

/// The alignment of values of the type that starts with `code`.
fn alignment(code: u8) -> Option<usize> {
    Some(match code {
        b'y' | b'g' | b'v' => 1,
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b'h' | b's' | b'o' | b'a' => 4,
        b'x' | b't' | b'd' | b'(' | b'{' => 8,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use zbus::zvariant::{Endian, Value as ZValue};
    use zbus::Message;

    use super::super::changed::Invalidated;
    use super::*;

    /// A `PropertiesChanged` of `dict`, as systemd sends it.
    fn message(dict: &HashMap<&str, ZValue<'_>>, endian: Endian) -> Message {
        Message::signal(
            "/org/freedesktop/systemd1/unit/a_2eservice",
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
        )
        .map(|b| b.endian(endian))
        .and_then(|b| b.sender(":1.0"))
        .and_then(|b| {
            b.build(&(
                "org.freedesktop.systemd1.Service",
                dict,
                vec!["ExecStart".to_owned()],
            ))
        })
        .expect("a signal")
    }

    /// What this reader makes of `msg`'s body, read off its bytes.
    fn fast(msg: &Message) -> Option<(String, Changed)> {
        let raw = Raw::of(msg).expect("a header");
        raw.properties_changed().map(|(i, c)| (i.to_owned(), c))
    }

    /// What zvariant makes of the same body.
    fn slow(msg: &Message) -> (String, Changed) {
        let body = msg.body();
        let (i, c, _): (&str, Changed, Invalidated) =
            body.deserialize().expect("zvariant decodes it");
        (i.to_owned(), c)
    }

    /// A service's dictionary with every shape systemd sends: strings,
    /// counters, booleans, byte and string arrays, ExecStart's array of
    /// structures, nested variants, signed and 16-bit integers, doubles,
    /// object paths, an empty array.
    fn service() -> HashMap<&'static str, ZValue<'static>> {
        type Exec = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);
        let exec: Vec<Exec> = vec![
            (
                "/bin/false".into(),
                vec!["false".into()],
                false,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
            ),
            ("/bin/true".into(), vec![], true, 8, 9, 10, 11, 12, -13, 14),
        ];
        let mut dict = HashMap::new();
        dict.insert("ExecStart", ZValue::from(exec));
        dict.insert("NRestarts", ZValue::from(7u32));
        dict.insert("Result", ZValue::from("exit-code"));
        dict.insert("ActiveState", ZValue::from("failed"));
        dict.insert("InvocationID", ZValue::from(vec![0xabu8; 16]));
        dict.insert("TriggeredBy", ZValue::from(vec!["a.timer", "b.timer"]));
        dict.insert("RemainAfterExit", ZValue::from(true));
        dict.insert(
            "StateChangeTimestamp",
            ZValue::from(1_700_000_000_123_456u64),
        );
        dict.insert("Nested", ZValue::Value(Box::new(ZValue::from(5u64))));
        dict.insert(
            "SubState",
            ZValue::Value(Box::new(ZValue::from("auto-restart"))),
        );
        dict.insert("StatusErrno", ZValue::from(-1i32));
        dict.insert("OOMScoreAdjust", ZValue::from(3i16));
        dict.insert("CPUWeight", ZValue::from(0.5f64));
        dict.insert(
            "Slice",
            ZValue::from(
                zbus::zvariant::ObjectPath::try_from("/org/freedesktop/systemd1/unit/x")
                    .expect("path"),
            ),
        );
        dict.insert("Environment", ZValue::from(Vec::<String>::new()));
        dict.insert("ByteTag", ZValue::from(9u8));
        dict
    }

    #[test]
    fn reads_what_zvariant_reads() {
        for endian in [Endian::Little, Endian::Big] {
            let msg = message(&service(), endian);
            let (interface, fast) = fast(&msg).expect("the fast path reads it");
            let (slow_interface, slow) = slow(&msg);
            assert_eq!(interface, slow_interface);
            // zvariant keeps the dictionary's order, as this reader does.
            assert_eq!(fast, slow, "{endian:?}");
            assert!(fast.iter().count() >= 8, "the followed properties are kept");
        }
    }

    #[test]
    fn each_followed_property_alone_reads_the_same() {
        for (key, value) in service() {
            let dict = HashMap::from([(key, value)]);
            let msg = message(&dict, Endian::Little);
            let fast = fast(&msg).map(|(_, c)| c);
            assert_eq!(fast, Some(slow(&msg).1), "{key}");
        }
    }

    #[test]
    fn a_truncated_body_is_left_to_zvariant_never_misread() {
        let msg = message(&service(), Endian::Little);
        let body = msg.body();
        let data = body.data();
        let position = data.context().position();
        let whole: &[u8] = data;
        for cut in 0..whole.len() {
            // The dictionary's length says where it ends: a cut inside it
            // is never read as a shorter dictionary.
            let got = read(&whole[..cut], position, false);
            if let Some((_, changed)) = got {
                assert_eq!(changed, slow(&msg).1, "cut at {cut}");
            }
        }
    }

    #[test]
    fn unknown_type_codes_and_deep_nesting_give_up() {
        assert_eq!(complete(b"z"), None);
        assert_eq!(complete(b"(ii"), None);
        assert_eq!(complete(b"a{sv}x"), Some(5));
        assert_eq!(complete(b"a(sasbttttuii)"), Some(14));
        let deep = [b'a'; 100];
        assert_eq!(complete(&deep), None);
    }

    #[test]
    fn a_key_not_ascii_is_checked_as_utf8() {
        // Valid UTF-8, walked past as any other key...
        let dict = HashMap::from([
            ("Überall", ZValue::from(1u32)),
            ("NRestarts", ZValue::from(2u32)),
        ]);
        let msg = message(&dict, Endian::Little);
        let fast = fast(&msg).map(|(_, c)| c);
        assert_eq!(fast, Some(slow(&msg).1));
        // ... but bytes that are not UTF-8 are left to zvariant to reject.
        let body = msg.body();
        let data = body.data();
        let position = data.context().position();
        let mut bytes = data.to_vec();
        let at = bytes
            .windows(2)
            .position(|w| w == "Ü".as_bytes())
            .expect("the key is in the body");
        bytes[at] = 0xff;
        assert_eq!(read(&bytes, position, false), None);
    }

    #[test]
    fn another_signature_is_not_read() {
        let msg = Message::signal("/a", "org.freedesktop.DBus.Properties", "PropertiesChanged")
            .and_then(|b| b.build(&("x", 1u32)))
            .expect("a signal");
        assert!(fast(&msg).is_none());
    }
}
