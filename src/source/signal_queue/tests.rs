//! The signal queue's tests: order, overflow and its gap, the sender check,
//! owner changes, flushes.

use super::*;

type Feeder = mpsc::UnboundedSender<zbus::Result<Message>>;

/// A stream fed by hand, and its feeder.
fn feed() -> (
    Feeder,
    impl Stream<Item = zbus::Result<Message>> + Unpin + Send + 'static,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    (tx, Box::pin(stream))
}

/// A queue of `capacity` whose systemd is `:1.0`: its feeder of messages,
/// twice (one for signals, one for owner changes: the one stream).
fn queue(capacity: usize) -> (Feeder, Feeder, Drain, mpsc::Receiver<Queued>) {
    let (messages, stream) = feed();
    let (drain, start, rx) = spawn(stream, capacity);
    begin(start, Some(":1.0"));
    (messages.clone(), messages, drain, rx)
}

/// Gives the queue its start: systemd is `owner` (`None`: a direct
/// connection).
fn begin(start: oneshot::Sender<Start>, owner: Option<&str>) {
    let start = start.send(Start {
        owner: owner.map(|o| OwnedUniqueName::try_from(o).expect("a name")),
        at: Sequence::default(),
    });
    assert!(start.is_ok(), "the queue takes its start");
}

fn job_new(sender: &str, id: u32) -> zbus::Result<Message> {
    Message::signal(
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "JobNew",
    )
    .and_then(|b| b.sender(sender))
    .and_then(|b| {
        b.build(&(
            id,
            zbus::zvariant::ObjectPath::try_from("/org/freedesktop/systemd1/job/1").expect("path"),
            "a.service",
        ))
    })
}

fn owner_changed(sender: &str, old: &str, new: &str) -> zbus::Result<Message> {
    Message::signal("/org/freedesktop/DBus", BUS, "NameOwnerChanged")
        .and_then(|b| b.sender(sender))
        .and_then(|b| b.build(&(SYSTEMD, old, new)))
}

fn id(item: Option<Queued>) -> Option<u32> {
    match item {
        Some(Queued::Signal(msg)) => msg
            .body()
            .deserialize::<(u32, zbus::zvariant::OwnedObjectPath, String)>()
            .ok()
            .map(|b| b.0),
        _ => None,
    }
}

/// A flush comes after every signal already in zbus's stream, however
/// far behind the drain task is; the last of them is when systemd was
/// last heard.
#[tokio::test]
async fn a_flush_comes_after_every_signal_read_before_it() {
    let (signals, _owners, drain, mut rx) = queue(64);
    assert_eq!(drain.heard().at(), None, "nothing heard yet");
    for n in 1..=3 {
        signals.send(job_new(":1.0", n)).expect("fed");
    }
    drain.flush();
    let mut ids = Vec::new();
    loop {
        match rx.recv().await {
            Some(Queued::Flushed) => break,
            item => ids.push(id(item).expect("a signal")),
        }
    }
    assert_eq!(ids, [1, 2, 3]);
    assert!(drain.heard().at().is_some_and(|t| t <= clock::now()));
}

/// Lets the drain task take everything fed so far.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn signals_that_fit_pass_in_order() {
    let (feeder, _owners, _drain, mut rx) = queue(4);
    for n in 1..=3 {
        feeder.send(job_new(":1.0", n)).expect("feed");
    }
    for n in 1..=3 {
        assert_eq!(id(rx.recv().await), Some(n));
    }
}

#[tokio::test]
async fn overflow_drops_counts_and_marks_the_gap_once_half_is_free() {
    let (feeder, _owners, _drain, mut rx) = queue(4);
    for n in 1..=10 {
        feeder.send(job_new(":1.0", n)).expect("feed");
    }
    settle().await;
    // Room for one: not enough to resume; what comes meanwhile is dropped.
    assert_eq!(id(rx.recv().await), Some(1));
    feeder.send(job_new(":1.0", 11)).expect("feed");
    settle().await;
    assert_eq!(id(rx.recv().await), Some(2));
    settle().await;
    for n in 3..=4 {
        assert_eq!(id(rx.recv().await), Some(n));
    }
    match rx.recv().await {
        Some(Queued::Overflow {
            dropped,
            since,
            units,
        }) => {
            assert_eq!(dropped, 7, "5..=11");
            assert!(since > 0);
            assert_eq!(units.map(|u| u.len()), Some(0), "only jobs' news lost");
        }
        other => panic!("not the overflow: {other:?}"),
    }
    // Taking signals again.
    feeder.send(job_new(":1.0", 12)).expect("feed");
    assert_eq!(id(rx.recv().await), Some(12));
}

#[tokio::test]
async fn only_systemd_gets_in_and_its_new_name_once_the_bus_says_so() {
    let (feeder, owners, _drain, mut rx) = queue(16);
    feeder.send(job_new(":1.5", 1)).expect("feed");
    // Only the bus can say who systemd is.
    owners
        .send(owner_changed(":1.5", ":1.0", ":1.5"))
        .expect("feed");
    settle().await;
    feeder.send(job_new(":1.5", 2)).expect("feed");
    feeder.send(job_new(":1.0", 3)).expect("feed");
    assert_eq!(id(rx.recv().await), Some(3));
    // daemon-reexec: systemd comes back as :1.9.
    owners.send(owner_changed(BUS, ":1.0", "")).expect("feed");
    owners.send(owner_changed(BUS, "", ":1.9")).expect("feed");
    feeder.send(job_new(":1.0", 4)).expect("feed");
    feeder.send(job_new(":1.9", 5)).expect("feed");
    assert_eq!(id(rx.recv().await), Some(5));
    settle().await;
    assert!(rx.try_recv().is_err(), "nothing else got in");
}

#[tokio::test]
async fn on_a_direct_connection_every_message_is_systemds() {
    let (signals, signal_stream) = feed();
    let (_drain, start, mut rx) = spawn(signal_stream, 4);
    begin(start, None);
    // A peer's messages carry no sender.
    let unsent = Message::signal(
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "JobNew",
    )
    .and_then(|b| {
        b.build(&(
            7u32,
            zbus::zvariant::ObjectPath::try_from("/org/freedesktop/systemd1/job/7").expect("path"),
            "a.service",
        ))
    });
    signals.send(unsent).expect("feed");
    signals.send(job_new(":1.3", 8)).expect("feed");
    assert_eq!(id(rx.recv().await), Some(7));
    assert_eq!(id(rx.recv().await), Some(8));
}

#[tokio::test]
async fn the_queue_ends_with_the_connection() {
    let (feeder, _owners, drain, mut rx) = queue(4);
    feeder.send(job_new(":1.0", 1)).expect("feed");
    feeder
        .send(Err(zbus::Error::InputOutput(std::sync::Arc::new(
            std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        ))))
        .expect("feed");
    assert_eq!(id(rx.recv().await), Some(1));
    assert!(rx.recv().await.is_none());
    settle().await;
    assert!(drain.is_finished());
}

fn unit_changed(unit: &str) -> zbus::Result<Message> {
    let path = format!("/org/freedesktop/systemd1/unit/{unit}");
    Message::signal(
        path.as_str(),
        "org.freedesktop.DBus.Properties",
        "PropertiesChanged",
    )
    .and_then(|b| b.sender(":1.0"))
    .and_then(|b| {
        let changed: std::collections::HashMap<String, zbus::zvariant::Value> = Default::default();
        b.build(&(
            "org.freedesktop.systemd1.Unit",
            changed,
            Vec::<String>::new(),
        ))
    })
}

/// Fills a queue of 2 and drops what `dropped` makes; the overflow's units.
async fn missed(dropped: Vec<zbus::Result<Message>>) -> Option<Vec<String>> {
    let (feeder, _owners, _drain, mut rx) = queue(2);
    for n in 1..=2 {
        feeder.send(job_new(":1.0", n)).expect("feed");
    }
    for msg in dropped {
        feeder.send(msg).expect("feed");
    }
    settle().await;
    for _ in 1..=2 {
        assert!(id(rx.recv().await).is_some());
    }
    match rx.recv().await {
        Some(Queued::Overflow { units, .. }) => units.map(|u| {
            let mut u: Vec<String> = u.iter().map(|p| p.as_str().to_owned()).collect();
            u.sort();
            u
        }),
        other => panic!("not the overflow: {other:?}"),
    }
}

/// An overflow names the units whose changes it dropped, so only those are
/// read again.
#[tokio::test]
async fn an_overflow_names_the_units_whose_changes_it_dropped() {
    let dropped = vec![
        unit_changed("a"),
        job_new(":1.0", 3),
        unit_changed("b"),
        unit_changed("a"),
    ];
    assert_eq!(
        missed(dropped).await,
        Some(vec![
            "/org/freedesktop/systemd1/unit/a".to_owned(),
            "/org/freedesktop/systemd1/unit/b".to_owned()
        ])
    );
}

/// A dropped `UnitNew` may be a unit never seen: every unit is read again.
#[tokio::test]
async fn an_overflow_that_dropped_a_new_unit_reads_every_unit() {
    let unit_new = Message::signal(
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "UnitNew",
    )
    .and_then(|b| b.sender(":1.0"))
    .and_then(|b| {
        b.build(&(
            "c.service",
            zbus::zvariant::ObjectPath::try_from("/org/freedesktop/systemd1/unit/c").expect("path"),
        ))
    });
    assert_eq!(missed(vec![unit_changed("a"), unit_new]).await, None);
}

/// systemd's (`:1.0`) reply to a `GetUnit` of unitwatch's.
fn reply_of_systemd() -> zbus::Result<Message> {
    let call = Message::method_call("/org/freedesktop/systemd1", "GetUnit")
        .and_then(|b| b.destination(SYSTEMD))
        .and_then(|b| b.build(&("a.service",)))?;
    Message::method_return(&call.header())
        .and_then(|b| b.sender(":1.0"))
        .and_then(|b| b.build(&("/org/freedesktop/systemd1/unit/a_2eservice",)))
}

/// The stream has every message the connection reads: a reply of systemd's
/// to one of unitwatch's calls is not a signal and is left out.
#[tokio::test]
async fn replies_among_the_signals_are_left_out() {
    let (signals, _owners, _drain, mut rx) = queue(64);
    let reply = reply_of_systemd();
    signals.send(reply).expect("fed");
    signals.send(job_new(":1.0", 1)).expect("fed");
    assert_eq!(id(rx.recv().await), Some(1), "the signal after the reply");
    settle().await;
    assert!(rx.try_recv().is_err(), "nothing else queued");
}

/// Before the start nothing is queued: systemd's name is not known yet
/// (and nothing of systemd's was asked for).
#[tokio::test]
async fn nothing_is_queued_before_the_start() {
    let (messages, stream) = feed();
    let (_drain, start, mut rx) = spawn(stream, 8);
    messages.send(job_new(":1.0", 1)).expect("fed");
    settle().await;
    begin(start, Some(":1.0"));
    messages.send(job_new(":1.0", 2)).expect("fed");
    assert_eq!(id(rx.recv().await), Some(2));
    settle().await;
    assert!(rx.try_recv().is_err(), "nothing else queued");
}

/// A full set of missed units stays as it is for a unit already in it, and
/// gives way to reading every unit only for one more.
#[tokio::test]
async fn a_full_set_of_missed_units_takes_a_unit_named_again() {
    let full = || (0..MISSED_UNITS).map(|n| unit_changed(&format!("u{n}")));
    let again: Vec<_> = full().chain([unit_changed("u0")]).collect();
    assert_eq!(missed(again).await.map(|u| u.len()), Some(MISSED_UNITS));
    let more: Vec<_> = full().chain([unit_changed("another")]).collect();
    assert_eq!(missed(more).await, None);
}

/// Only what systemd sends is systemd heard: not the bus's news that it
/// left, which comes after systemd went silent; a reply of its does count.
#[tokio::test]
async fn systemd_is_heard_by_its_own_messages_only() {
    let (messages, _owners, drain, _rx) = queue(8);
    messages.send(owner_changed(BUS, ":1.0", "")).expect("fed");
    messages.send(job_new(":1.5", 1)).expect("fed");
    settle().await;
    assert_eq!(
        drain.heard().at(),
        None,
        "the bus and others are not systemd"
    );
    let (messages, _owners, drain, mut rx) = queue(8);
    let reply = reply_of_systemd();
    messages.send(reply).expect("fed");
    settle().await;
    assert!(
        drain.heard().at().is_some(),
        "a reply of systemd's is systemd heard"
    );
    assert!(rx.try_recv().is_err(), "nothing queued");
}
