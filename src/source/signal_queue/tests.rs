//! The signal queue's tests: order, overflow and its gap, the sender check,
//! owner changes, when systemd was heard.

use std::sync::atomic::{AtomicU32, Ordering};

use zbus::message::Sequence;

use super::*;

/// Where the next message fed is read: each after the last.
fn next_position() -> Position {
    static READ: AtomicU32 = AtomicU32::new(0);
    Position::after(
        Sequence::default(),
        READ.fetch_add(1, Ordering::Relaxed) + 1,
    )
}

/// `msg` as the tap reads it.
fn read(msg: zbus::Result<Message>) -> Raw {
    let msg = msg.expect("a message");
    Raw::new(msg.data().to_vec(), next_position()).expect("a header")
}

/// A queue of `capacity` whose systemd is `:1.0`.
fn queue(capacity: usize) -> (Inlet, Queue) {
    let (inlet, queue) = new(capacity);
    begin(&queue, Some(":1.0"));
    (inlet, queue)
}

/// Gives the queue its start: systemd is `owner` (`None`: a direct
/// connection).
fn begin(queue: &Queue, owner: Option<&str>) {
    queue.start(Start {
        owner: owner.map(|o| OwnedUniqueName::try_from(o).expect("a name")),
        at: next_position(),
    });
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

/// The job ID of a queued `JobNew`, the signal these tests feed.
pub(crate) fn id(item: Option<Queued>) -> Option<u32> {
    match item {
        Some(Queued::Signal(raw)) => raw
            .body::<(u32, zbus::zvariant::OwnedObjectPath, String)>("uos")
            .ok()
            .map(|b| b.0),
        _ => None,
    }
}

/// What is ready in the queue now, without waiting.
fn ready(queue: &mut Queue) -> Option<Queued> {
    queue.ready().ok()
}

#[tokio::test]
async fn signals_that_fit_pass_in_order() {
    let (inlet, mut queue) = queue(4);
    for n in 1..=3 {
        inlet.signal(read(job_new(":1.0", n)));
    }
    for n in 1..=3 {
        assert_eq!(id(queue.recv().await), Some(n));
    }
}

#[tokio::test]
async fn overflow_drops_counts_and_marks_the_gap_once_the_queue_is_taken() {
    let (inlet, mut queue) = queue(4);
    for n in 1..=10 {
        inlet.signal(read(job_new(":1.0", n)));
    }
    // Room for one: the episode goes on; what comes meanwhile is dropped.
    assert_eq!(id(queue.recv().await), Some(1));
    inlet.signal(read(job_new(":1.0", 11)));
    for n in 2..=4 {
        assert_eq!(id(queue.recv().await), Some(n));
    }
    match queue.recv().await {
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
    inlet.signal(read(job_new(":1.0", 12)));
    assert_eq!(id(queue.recv().await), Some(12));
    assert!(ready(&mut queue).is_none(), "one overflow for the episode");
}

#[tokio::test]
async fn only_systemd_gets_in_and_its_new_name_once_the_bus_says_so() {
    let (inlet, mut queue) = queue(16);
    inlet.signal(read(job_new(":1.5", 1)));
    // Only the bus can say who systemd is.
    inlet.signal(read(owner_changed(":1.5", ":1.0", ":1.5")));
    inlet.signal(read(job_new(":1.5", 2)));
    inlet.signal(read(job_new(":1.0", 3)));
    assert_eq!(id(queue.recv().await), Some(3));
    // daemon-reexec: systemd comes back as :1.9.
    inlet.signal(read(owner_changed(BUS, ":1.0", "")));
    inlet.signal(read(owner_changed(BUS, "", ":1.9")));
    inlet.signal(read(job_new(":1.0", 4)));
    inlet.signal(read(job_new(":1.9", 5)));
    assert_eq!(id(queue.recv().await), Some(5));
    assert!(ready(&mut queue).is_none(), "nothing else got in");
}

/// The bus's news of systemd's name from before the reply that said who
/// it is does not undo that reply.
#[tokio::test]
async fn news_older_than_the_start_does_not_undo_it() {
    let (inlet, mut queue) = new(8);
    let old = read(owner_changed(BUS, "", ":1.3"));
    begin(&queue, Some(":1.0"));
    inlet.signal(old);
    inlet.signal(read(job_new(":1.0", 1)));
    assert_eq!(id(queue.recv().await), Some(1));
}

#[tokio::test]
async fn on_a_direct_connection_every_message_is_systemds() {
    let (inlet, mut queue) = new(4);
    begin(&queue, None);
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
    inlet.signal(read(unsent));
    inlet.signal(read(job_new(":1.3", 8)));
    assert_eq!(id(queue.recv().await), Some(7));
    assert_eq!(id(queue.recv().await), Some(8));
}

#[tokio::test]
async fn the_queue_ends_with_the_connection() {
    let (inlet, mut queue) = queue(4);
    inlet.signal(read(job_new(":1.0", 1)));
    // The tap, and its inlet, go with the connection.
    drop(inlet);
    assert_eq!(id(queue.recv().await), Some(1));
    assert!(queue.recv().await.is_none());
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
    let (inlet, mut queue) = queue(2);
    for n in 1..=2 {
        inlet.signal(read(job_new(":1.0", n)));
    }
    for msg in dropped {
        inlet.signal(read(msg));
    }
    for _ in 1..=2 {
        assert!(id(queue.recv().await).is_some());
    }
    match queue.recv().await {
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

/// Before the start nothing is queued: systemd's name is not known yet
/// (and nothing of systemd's was asked for).
#[tokio::test]
async fn nothing_is_queued_before_the_start() {
    let (inlet, mut queue) = new(8);
    inlet.signal(read(job_new(":1.0", 1)));
    begin(&queue, Some(":1.0"));
    inlet.signal(read(job_new(":1.0", 2)));
    assert_eq!(id(queue.recv().await), Some(2));
    assert!(ready(&mut queue).is_none(), "nothing else queued");
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
#[test]
fn systemd_is_heard_by_its_own_messages_only() {
    let (inlet, queue) = queue(8);
    inlet.signal(read(owner_changed(BUS, ":1.0", "")));
    inlet.signal(read(job_new(":1.5", 1)));
    inlet.replied(Some(BUS));
    assert_eq!(
        queue.heard().at(),
        None,
        "the bus and others are not systemd"
    );
    let (inlet, queue) = self::queue(8);
    inlet.replied(Some(":1.0"));
    assert!(
        queue.heard().at().is_some_and(|t| t <= clock::now()),
        "a reply of systemd's is systemd heard"
    );
}

/// A signal of systemd's is systemd heard.
#[test]
fn a_signal_of_systemds_is_systemd_heard() {
    let (inlet, queue) = queue(8);
    inlet.signal(read(job_new(":1.0", 1)));
    assert!(queue.heard().at().is_some());
}
