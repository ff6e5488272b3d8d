//! The reading end of unitwatch's connections to the bus: messages are read
//! off the socket in large reads, systemd's signals go from here straight
//! into the signal queue ([`Inlet`]) as bytes, and everything else (the
//! replies to unitwatch's calls, above all) to zbus as before.
//!
//! Why not let zbus read them all? zbus reads each message in two reads of
//! the socket (its fixed header, then the rest), turns it into a `Message`
//! (every header field parsed and checked, the body's signature parsed into
//! an owned `Signature`, some 19,000 instructions) and hands it to every
//! stream through a broadcast channel; in a flap storm, with some sixteen
//! signals from systemd a restart, that was over a third of unitwatch's work
//! (callgrind) and most of its system calls (strace: 46 reads of the socket a
//! restart). Here a read takes whatever has arrived, and a signal costs the
//! reading of its header ([`wire::header`]) and a copy into the queue.
//!
//! The order of the messages is kept: a signal is in the queue before zbus is
//! handed any message read after it, so a caller that has its reply finds
//! every signal sent before it already queued, and the signal's
//! [`Position`] says where it came among the messages zbus read.
//!
//! This reader never waits for the queue: zbus hands a reply over only once
//! it is read, and the D-Bus source waits for replies while it works through
//! the queue, so a reader waiting for room would deadlock with it. A full
//! queue drops and counts instead (see [`crate::source::signal_queue`]).

use std::os::fd::OwnedFd;

use zbus::connection::socket::ReadHalf;
use zbus::message::Sequence;
use zbus::Message;

use crate::source::signal_queue::Inlet;
use crate::source::wire::{header, Position, Raw};

/// How much is read at once, at least: a burst of signals from systemd
/// (each up to some 1.2 KiB) is taken in a few reads.
const READ: usize = 64 * 1024;

/// How many signals are taken in one turn before others get the thread:
/// during a storm the socket is never empty, and the runtime has one thread.
const TURN: usize = 256;

/// A socket's reading half with signals taken off it.
pub struct Tap<R> {
    inner: R,
    /// Bytes read and not yet taken: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    inlet: Inlet,
    /// Where the last message handed to zbus came in, and how many signals
    /// were taken since.
    last: Sequence,
    taken: u32,
}

impl<R> std::fmt::Debug for Tap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("buffered", &(self.end - self.start))
            .finish_non_exhaustive()
    }
}

impl<R: ReadHalf> Tap<R> {
    pub fn new(inner: R, inlet: Inlet) -> Tap<R> {
        Tap {
            inner,
            buf: vec![0; READ],
            start: 0,
            end: 0,
            inlet,
            last: Sequence::default(),
            taken: 0,
        }
    }

    /// The length of the whole message at the start of the buffer, once
    /// all of it is there.
    fn complete(&self) -> zbus::Result<Option<usize>> {
        let buffered = &self.buf[self.start..self.end];
        match header::length(buffered) {
            Ok(Some(len)) if len <= buffered.len() => Ok(Some(len)),
            Ok(_) => Ok(None),
            Err(why) => Err(zbus::Error::Failure(format!("read off the bus: {why}"))),
        }
    }

    /// Makes room for `want` bytes from the start of what is buffered:
    /// what was taken is let go of, and the buffer grows if it must.
    fn room(&mut self, want: usize) {
        if self.buf.len() - self.start >= want {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        (self.start, self.end) = (0, self.end - self.start);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
    }

    /// Reads what the socket has (waiting until it has something), making
    /// room first, enough for a message longer than the buffer.
    async fn fill(&mut self) -> zbus::Result<()> {
        let want = match header::length(&self.buf[self.start..self.end]) {
            Ok(Some(len)) => len.max(READ),
            _ => READ,
        };
        self.room(want);
        // File descriptors are closed: nothing unitwatch reads carries any.
        let (read, _fds) = self.inner.recvmsg(&mut self.buf[self.end..]).await?;
        if read == 0 {
            return Err(zbus::Error::InputOutput(
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the bus closed the connection",
                )
                .into(),
            ));
        }
        self.end += read;
        Ok(())
    }
}

#[async_trait::async_trait]
impl<R: ReadHalf> ReadHalf for Tap<R> {
    async fn receive_message(
        &mut self,
        seq: u64,
        already_received_bytes: &mut Vec<u8>,
        already_received_fds: &mut Vec<OwnedFd>,
    ) -> zbus::Result<Message> {
        // What the handshake read past its end is the start of the first
        // messages.
        if !already_received_bytes.is_empty() {
            let pending = std::mem::take(already_received_bytes);
            self.room(self.end - self.start + pending.len());
            self.buf[self.end..self.end + pending.len()].copy_from_slice(&pending);
            self.end += pending.len();
        }
        let mut turn = 0;
        loop {
            let Some(len) = self.complete()? else {
                self.fill().await?;
                continue;
            };
            let bytes = &self.buf[self.start..self.start + len];
            let fields = header::read(bytes);
            if let Some(fields) = fields.filter(|f| f.kind == header::SIGNAL) {
                self.taken = self.taken.saturating_add(1);
                let at = Position::after(self.last, self.taken);
                self.inlet.signal(Raw::copied(bytes, &fields, at));
                self.start += len;
                turn += 1;
                if turn == TURN {
                    turn = 0;
                    tokio::task::yield_now().await;
                }
                continue;
            }
            if let Some(fields) = fields {
                if matches!(fields.kind, header::METHOD_RETURN | header::ERROR) {
                    self.inlet.replied(fields.sender);
                }
            }
            // zbus takes the message from these bytes without reading the
            // socket.
            already_received_bytes.clear();
            already_received_bytes.extend_from_slice(bytes);
            self.start += len;
            let msg = self
                .inner
                .receive_message(seq, already_received_bytes, already_received_fds)
                .await?;
            (self.last, self.taken) = (msg.recv_position(), 0);
            return Ok(msg);
        }
    }

    async fn recvmsg(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
        self.inner.recvmsg(buf).await
    }

    /// As the socket can: systemd's private socket answers nothing on a
    /// connection that did not negotiate file descriptors (systemd 252),
    /// though nothing unitwatch asks for carries any.
    fn can_pass_unix_fd(&self) -> bool {
        self.inner.can_pass_unix_fd()
    }

    async fn peer_credentials(&mut self) -> std::io::Result<zbus::fdo::ConnectionCredentials> {
        self.inner.peer_credentials().await
    }

    fn auth_mechanism(&self) -> zbus::AuthMechanism {
        self.inner.auth_mechanism()
    }
}

#[cfg(test)]
mod tests;
