//! The tap's tests, over a real socket pair: signals go to the queue in the
//! order read, everything else to zbus, whatever the reads cut.

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use zbus::names::OwnedUniqueName;
use zbus::zvariant::ObjectPath;

use super::*;
use crate::source::signal_queue::tests::id;
use crate::source::signal_queue::{self, Queue, Queued, Start};

/// A tap on one end of a socket pair, for a queue whose systemd is `:1.0`;
/// the other end, to write to.
fn tapped() -> (Tap<tokio::net::unix::OwnedReadHalf>, Queue, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    let (inlet, queue) = signal_queue::new(64);
    queue.start(Start {
        owner: Some(OwnedUniqueName::try_from(":1.0").expect("a name")),
        at: Position::default(),
    });
    let (read, _write) = ours.into_split();
    (Tap::new(read, inlet), queue, theirs)
}

fn job_new(id: u32, unit: &str) -> Message {
    Message::signal(
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "JobNew",
    )
    .and_then(|b| b.sender(":1.0"))
    .and_then(|b| b.build(&(id, ObjectPath::from_static_str_unchecked("/job"), unit)))
    .expect("a signal")
}

fn reply() -> Message {
    let call = Message::method_call("/org/freedesktop/systemd1", "GetUnit")
        .and_then(|b| b.build(&("a.service",)))
        .expect("a call");
    Message::method_return(&call.header())
        .and_then(|b| b.sender(":1.0"))
        .and_then(|b| b.build(&("/org/freedesktop/systemd1/unit/a_2eservice",)))
        .expect("a reply")
}

async fn receive(
    tap: &mut Tap<tokio::net::unix::OwnedReadHalf>,
    seq: u64,
) -> zbus::Result<Message> {
    let (mut bytes, mut fds) = (Vec::new(), Vec::new());
    tap.receive_message(seq, &mut bytes, &mut fds).await
}

#[tokio::test]
async fn signals_are_queued_and_the_reply_goes_to_zbus() {
    let (mut tap, mut queue, mut theirs) = tapped();
    let mut bytes = Vec::new();
    for msg in [
        job_new(1, "a.service"),
        job_new(2, "b.service"),
        reply(),
        job_new(3, "c.service"),
    ] {
        bytes.extend_from_slice(msg.data());
    }
    theirs.write_all(&bytes).await.expect("written");
    let got = receive(&mut tap, 1).await.expect("the reply");
    assert_eq!(got.message_type(), zbus::message::Type::MethodReturn);
    let replied = Position::of(&got);
    for n in 1..=2 {
        match queue.ready() {
            Ok(Queued::Signal(raw)) => {
                assert!(raw.at() < replied, "signal {n} came before the reply");
                assert_eq!(id(Some(Queued::Signal(raw))), Some(n));
            }
            other => panic!("not signal {n}: {other:?}"),
        }
    }
    assert!(
        queue.ready().is_err(),
        "the signal after the reply is not read yet"
    );
}

#[tokio::test]
async fn a_signal_after_a_reply_comes_after_it() {
    let (mut tap, mut queue, mut theirs) = tapped();
    let mut bytes = Vec::new();
    for msg in [reply(), job_new(1, "a.service"), reply()] {
        bytes.extend_from_slice(msg.data());
    }
    theirs.write_all(&bytes).await.expect("written");
    let first = Position::of(&receive(&mut tap, 1).await.expect("a reply"));
    let second = Position::of(&receive(&mut tap, 2).await.expect("a reply"));
    match queue.ready() {
        Ok(Queued::Signal(raw)) => assert!(first < raw.at() && raw.at() < second),
        other => panic!("not the signal: {other:?}"),
    }
}

/// Messages cut anywhere between two reads, one longer than a read.
#[tokio::test]
async fn messages_are_whole_however_the_reads_cut_them() {
    let (mut tap, mut queue, mut theirs) = tapped();
    let long = "x".repeat(3 * READ);
    let mut bytes = Vec::new();
    for msg in [job_new(1, "a.service"), job_new(2, &long), reply()] {
        bytes.extend_from_slice(msg.data());
    }
    let writer = async move {
        for chunk in bytes.chunks(7001) {
            theirs.write_all(chunk).await.expect("written");
            tokio::task::yield_now().await;
        }
        theirs
    };
    let (got, _theirs) = tokio::join!(receive(&mut tap, 1), writer);
    assert_eq!(
        got.expect("the reply").message_type(),
        zbus::message::Type::MethodReturn
    );
    assert_eq!(id(queue.ready().ok()), Some(1));
    match queue.ready() {
        Ok(Queued::Signal(raw)) => {
            let (_, _, unit): (u32, zbus::zvariant::OwnedObjectPath, String) =
                raw.body("uos").expect("decoded");
            assert_eq!(unit.len(), long.len());
        }
        other => panic!("not the long signal: {other:?}"),
    }
}

#[tokio::test]
async fn the_end_of_the_socket_is_an_error() {
    let (mut tap, _queue, theirs) = tapped();
    drop(theirs);
    assert!(receive(&mut tap, 1).await.is_err());
}

#[tokio::test]
async fn bytes_that_are_no_message_are_an_error() {
    let (mut tap, _queue, mut theirs) = tapped();
    theirs.write_all(&[b'x'; 32]).await.expect("written");
    assert!(receive(&mut tap, 1).await.is_err());
}
