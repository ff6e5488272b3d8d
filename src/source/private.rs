//! A user manager's private socket, as zbus can take it.
//!
//! On its private socket systemd names itself `org.freedesktop.systemd1` in
//! the sender field of every message it sends (sd-bus does so on direct
//! connections, as a bus would). zbus 5 reads that field as a unique name,
//! checks it again whenever a message's header is read, and panics in its
//! socket reader, ending the connection, as a well-known name is not one
//! (zbus issue #1497, "P2P connections are broken by overzealous
//! validation", open). So zbus is not given the socket: it gets one end of a
//! socket pair, and a task relays bytes between the other end and systemd,
//! rewriting in each of systemd's messages a sender that is not a unique name
//! into one of the same length that is ([`PEER`] for systemd's), so nothing
//! else in the message moves. The authentication lines before the first
//! message pass as they are; what zbus sends passes as it is. The relay ends
//! when either side closes, and with it both sockets.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::wire::header;

/// The name systemd gives itself on its private socket.
const SYSTEMD: &[u8] = b"org.freedesktop.systemd1";

/// What zbus is shown instead: a unique name of the same length.
pub const PEER: &[u8] = b":systemd1.private-socket";

/// Connects to the private socket at `path`; returns the end zbus talks on.
pub async fn connect(path: &str) -> io::Result<UnixStream> {
    let systemd = UnixStream::connect(path).await?;
    let (zbus, ours) = UnixStream::pair()?;
    tokio::spawn(relay(systemd, ours));
    Ok(zbus)
}

/// Relays between `systemd` and `zbus` until either closes.
async fn relay(systemd: UnixStream, zbus: UnixStream) {
    let (mut from_systemd, mut to_systemd) = systemd.into_split();
    let (mut from_zbus, mut to_zbus) = zbus.into_split();
    let up = tokio::io::copy(&mut from_zbus, &mut to_systemd);
    let down = async {
        let mut pending = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = from_systemd.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            pending.extend_from_slice(&chunk[..n]);
            let ready = take_complete(&mut pending)?;
            if ready > 0 {
                to_zbus.write_all(&pending[..ready]).await?;
                pending.drain(..ready);
            }
        }
    };
    let ended = tokio::select! {
        r = up => r.map(|_| ()),
        r = down => r,
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "the relay to a user manager's private socket ended");
    }
}

/// How many bytes at the start of `buf` are whole lines of the
/// authentication exchange or whole messages, the latter rewritten
/// ([`rewrite_sender`]); an error if it is not D-Bus.
fn take_complete(buf: &mut [u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        // The server's lines begin OK, REJECTED, DATA, ERROR or
        // AGREE_UNIX_FD; a message with its byte order, `l` or `B`.
        if matches!(rest[0], b'O' | b'R' | b'D' | b'E' | b'A') {
            match rest.windows(2).position(|w| w == b"\r\n") {
                Some(end) => at += end + 2,
                None => break,
            }
            continue;
        }
        // Not an authentication line: a message (its length as the tap
        // frames it), or not D-Bus.
        let Some(len) = header::length(rest).map_err(bad)? else {
            break;
        };
        if rest.len() < len {
            break;
        }
        rewrite_sender(&mut buf[at..at + len]);
        at += len;
    }
    Ok(at)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads a `u32` at `at` in the byte order of the message `msg`.
fn u32_at(msg: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = msg.get(at..at + 4)?.try_into().ok()?;
    let n = match msg[0] {
        b'B' => u32::from_be_bytes(bytes),
        _ => u32::from_le_bytes(bytes),
    };
    usize::try_from(n).ok()
}

fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Rewrites, in the whole message `msg`, a sender field that is not a unique
/// name into one of the same length ([`PEER`] for systemd's own name).
/// A header it cannot walk is left as it is.
fn rewrite_sender(msg: &mut [u8]) {
    let Some(fields) = u32_at(msg, 12) else {
        return;
    };
    let end = (16 + fields).min(msg.len());
    let mut at = 16;
    while at < end {
        at = align(at, 8);
        let (Some(&code), Some(&sig_len)) = (msg.get(at), msg.get(at + 1)) else {
            return;
        };
        let sig_start = at + 2;
        let sig = msg
            .get(sig_start..sig_start + usize::from(sig_len))
            .map(<[u8]>::to_vec);
        at = sig_start + usize::from(sig_len) + 1;
        match sig.as_deref() {
            Some(b"s" | b"o") => {
                at = align(at, 4);
                let Some(len) = u32_at(msg, at) else { return };
                let value = at + 4..at + 4 + len;
                if code == 7 && msg.get(value.clone()).is_some_and(|v| !v.starts_with(b":")) {
                    if let Some(name) = unique_name(&msg[value.clone()]) {
                        msg[value].copy_from_slice(&name);
                    }
                }
                at += 4 + len + 1;
            }
            Some(b"g") => {
                let Some(&len) = msg.get(at) else { return };
                at += 1 + usize::from(len) + 1;
            }
            Some(b"u") => at = align(at, 4) + 4,
            _ => return,
        }
    }
}

/// A unique name as long as `name`: [`PEER`] for systemd's, else `:` and
/// `x`s and `.1`; `None` if too short to be one.
fn unique_name(name: &[u8]) -> Option<Vec<u8>> {
    if name == SYSTEMD {
        return Some(PEER.to_vec());
    }
    let fill = name.len().checked_sub(3).filter(|n| *n > 0)?;
    let mut out = Vec::with_capacity(name.len());
    out.push(b':');
    out.resize(1 + fill, b'x');
    out.extend_from_slice(b".1");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::Message;

    /// A signal as systemd sends it on its private socket, and as zbus
    /// must see it.
    fn signal_pair() -> (Vec<u8>, Vec<u8>) {
        let seen = Message::signal(
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "JobNew",
        )
        .and_then(|b| b.sender(std::str::from_utf8(PEER).expect("utf-8")))
        .and_then(|b| {
            b.build(&(
                7u32,
                zbus::zvariant::ObjectPath::try_from("/org/freedesktop/systemd1/job/7")
                    .expect("path"),
                "demo.service",
            ))
        })
        .expect("a signal");
        let want = seen.data().to_vec();
        let at = want
            .windows(PEER.len())
            .position(|w| w == PEER)
            .expect("the sender in the message");
        let mut sent = want.clone();
        sent[at..at + PEER.len()].copy_from_slice(SYSTEMD);
        (sent, want)
    }

    #[test]
    fn the_stand_in_is_a_unique_name_of_the_same_length() {
        assert_eq!(PEER.len(), SYSTEMD.len());
        for name in [&b"org.freedesktop.systemd1"[..], b"a.b.c.d", b"abcd"] {
            let new = unique_name(name).expect("long enough");
            assert_eq!(new.len(), name.len());
            let text = std::str::from_utf8(&new).expect("utf-8");
            assert!(zbus::names::UniqueName::try_from(text).is_ok(), "{text}");
        }
        assert_eq!(unique_name(b"abc"), None);
    }

    #[test]
    fn systemds_name_for_itself_is_rewritten_and_nothing_else() {
        let (mut sent, want) = signal_pair();
        assert_ne!(sent, want);
        let mut two = sent.clone();
        two.extend_from_slice(&sent);
        assert_eq!(take_complete(&mut sent).expect("D-Bus"), sent.len());
        assert_eq!(sent, want);
        // A message already right stays so.
        let mut again = want.clone();
        rewrite_sender(&mut again);
        assert_eq!(again, want);
        // Lines, then messages; a part of one waits for the rest.
        let mut stream = b"OK 0123456789abcdef\r\nAGREE_UNIX_FD\r\n".to_vec();
        let lines = stream.len();
        stream.extend_from_slice(&two);
        let whole = stream.len();
        stream.truncate(whole - 5);
        let taken = take_complete(&mut stream).expect("D-Bus");
        assert_eq!(taken, lines + want.len());
        assert_eq!(&stream[lines..taken], &want[..]);
        assert!(take_complete(&mut b"xyz...............".to_vec()).is_err());
    }

    #[tokio::test]
    async fn the_relay_passes_both_ways_and_ends_with_systemd() {
        let (systemd, theirs) = UnixStream::pair().expect("pair");
        let (mut zbus, ours) = UnixStream::pair().expect("pair");
        let relay = tokio::spawn(relay(theirs, ours));
        let mut systemd = systemd;
        zbus.write_all(b"\0AUTH EXTERNAL 30\r\n")
            .await
            .expect("write");
        let mut got = [0u8; 19];
        systemd.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"\0AUTH EXTERNAL 30\r\n");
        let (sent, want) = signal_pair();
        let mut stream = b"OK 0123456789abcdef\r\n".to_vec();
        stream.extend_from_slice(&sent);
        // In pieces, as a socket may give them.
        for piece in stream.chunks(7) {
            systemd.write_all(piece).await.expect("write");
        }
        drop(systemd);
        let mut all = Vec::new();
        zbus.read_to_end(&mut all).await.expect("read to the end");
        assert_eq!(&all[..21], b"OK 0123456789abcdef\r\n");
        assert_eq!(&all[21..], &want[..]);
        relay.await.expect("the relay ends");
    }
}
