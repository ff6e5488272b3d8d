//! One rule for the reports of both sources: journal records as systemd
//! 252 writes them, through the mapper, and D-Bus's events of the same runs,
//! in either order, count each restart and failure once (issue 12).

use super::*;

/// Journal records as systemd 252 writes them, through the mapper (of the
/// system manager, or of user `uid`'s), into `l`.
mod records {
    use super::super::*;
    use crate::select::Selector;
    use crate::source::journal_record::{Fields, Mapper};

    pub struct Journal {
        mapper: Mapper,
        user: bool,
    }

    impl Journal {
        pub fn system() -> Journal {
            Journal {
                mapper: Mapper::new(selector()),
                user: false,
            }
        }

        pub fn user(uid: u32) -> Journal {
            Journal {
                mapper: Mapper::user(selector(), uid),
                user: true,
            }
        }

        /// Feeds one record of `u.service` at `ms` milliseconds after T0:
        /// MESSAGE_ID, the run's invocation, and `extra` fields.
        pub fn feed(
            &mut self,
            l: &mut Ledger,
            ms: u64,
            message_id: &str,
            invocation: &str,
            extra: &[(&str, &str)],
        ) {
            let (unit, inv) = if self.user {
                ("USER_UNIT", "USER_INVOCATION_ID")
            } else {
                ("UNIT", "INVOCATION_ID")
            };
            let mut f = Fields::new();
            f.insert("MESSAGE_ID".into(), message_id.into());
            f.insert(unit.into(), "u.service".into());
            f.insert(inv.into(), invocation.into());
            for (k, v) in extra {
                f.insert((*k).into(), (*v).into());
            }
            for e in self.mapper.events(&f, T0 + ms * 1000) {
                l.apply(e);
            }
        }
    }

    fn selector() -> Selector {
        let mut s = Selector::default();
        s.include("u.service").expect("pattern");
        s
    }
}

use crate::source::journal_record::{
    FAILURE_RESULT, RESTART_SCHEDULED, STARTED, STOPPED, STOPPING, SUCCESS,
};
use records::Journal;

const MS: Usec = 1_000;

fn at_ms(ms: u64, tr: Transition) -> Event {
    Event::new("u.service", T0 + ms * MS, tr)
}

/// A crash into `auto-restart` (run "aa"), then `systemctl restart` before
/// systemd's own restart: systemd logs no "Stopping…" for it (the stop has
/// nothing to stop) and a "Stopped" with `JOB_TYPE=restart` all the same.
fn restart_while_waiting_records(j: &mut Journal, l: &mut Ledger) {
    j.feed(
        l,
        0,
        STARTED,
        "aa",
        &[("JOB_ID", "1"), ("JOB_TYPE", "start")],
    );
    j.feed(
        l,
        1000,
        FAILURE_RESULT,
        "aa",
        &[("UNIT_RESULT", "exit-code")],
    );
    j.feed(
        l,
        1300,
        STOPPED,
        "aa",
        &[("JOB_ID", "2"), ("JOB_TYPE", "restart")],
    );
    j.feed(
        l,
        1310,
        STARTED,
        "bb",
        &[("JOB_ID", "2"), ("JOB_TYPE", "start")],
    );
}

/// The same over D-Bus: the job is queued while the unit waits in `auto-restart`.
fn restart_while_waiting_dbus(l: &mut Ledger) {
    l.apply(at_ms(1000, failed_run("exit-code", "aa")));
    l.apply(at_ms(1000, sub(Activating, "auto-restart")));
    l.apply(at_ms(
        1290,
        Transition::JobQueued {
            id: 2,
            job_type: String::new(),
            invocation: Some("aa".into()),
        },
    ));
    l.apply(at_ms(1300, st(Inactive)));
    l.apply(at_ms(1310, sub(Active, "running")));
    l.apply(at_ms(1320, done(2)));
}

#[test]
fn a_restart_while_waiting_in_auto_restart_is_a_start_in_the_journal() {
    let (mut j, mut l) = (Journal::system(), Ledger::new());
    restart_while_waiting_records(&mut j, &mut l);
    // and a restart of the running unit (run "bb") for contrast
    j.feed(
        &mut l,
        2000,
        STOPPING,
        "bb",
        &[("JOB_ID", "3"), ("JOB_TYPE", "stop")],
    );
    j.feed(&mut l, 2001, SUCCESS, "bb", &[]);
    j.feed(
        &mut l,
        2002,
        STOPPED,
        "bb",
        &[("JOB_ID", "3"), ("JOB_TYPE", "restart")],
    );
    j.feed(
        &mut l,
        2010,
        STARTED,
        "cc",
        &[("JOB_ID", "3"), ("JOB_TYPE", "start")],
    );
    let v = l.unit("u.service", T0 + 3 * S).expect("unit");
    assert_eq!((v.restarts_auto, v.restarts_manual), (0, 1));
}

#[test]
fn a_restart_while_waiting_in_auto_restart_is_a_start_over_dbus() {
    let mut l = Ledger::new();
    l.apply(live(0, seen(Active, "running", 0)));
    restart_while_waiting_dbus(&mut l);
    let v = l.unit("u.service", T0 + 3 * S).expect("unit");
    assert_eq!(
        (v.restarts_manual, v.failures.get("exit-code")),
        (0, Some(&1))
    );
}

#[test]
fn a_restart_while_waiting_in_auto_restart_is_a_start_from_both_sources() {
    for journal_first in [true, false] {
        let (mut j, mut l) = (Journal::system(), Ledger::new());
        l.apply(live(0, seen(Active, "running", 0)));
        if journal_first {
            restart_while_waiting_records(&mut j, &mut l);
            restart_while_waiting_dbus(&mut l);
        } else {
            restart_while_waiting_dbus(&mut l);
            restart_while_waiting_records(&mut j, &mut l);
        }
        let v = l.unit("u.service", T0 + 3 * S).expect("unit");
        assert_eq!(
            (v.restarts_manual, v.failures.get("exit-code")),
            (0, Some(&1)),
            "journal first: {journal_first}"
        );
    }
}

/// A restart job queued while the unit was up, which crashed before the job
/// ran: systemd logs no "Stopping…" either, and D-Bus sees the crash.
#[test]
fn a_restart_job_that_finds_the_unit_crashed_is_a_start() {
    let mut l = Ledger::new();
    l.apply(live(0, seen(Active, "running", 0)));
    l.apply(at_ms(
        900,
        Transition::JobQueued {
            id: 2,
            job_type: String::new(),
            invocation: Some("aa".into()),
        },
    ));
    l.apply(at_ms(1000, failed_run("signal", "aa")));
    l.apply(at_ms(1000, sub(Activating, "auto-restart")));
    l.apply(at_ms(1001, st(Inactive)));
    l.apply(at_ms(1010, sub(Active, "running")));
    l.apply(at_ms(1020, done(2)));
    let v = l.unit("u.service", T0 + 3 * S).expect("unit");
    assert_eq!(v.restarts_manual, 0);
}

/// While unitwatch was away the counter went 1, 2, was reset by a start by
/// hand, went 1, was reset again and went 1: four restarts, each a record.
#[test]
fn every_restart_record_counts_across_resets_missed_while_away() {
    let mut l = Ledger::new();
    l.apply(live(0, seen(Active, "running", 0)));
    l.apply(logged(1, scheduled(1, "r1")));
    l.apply(live(1, Transition::NRestarts(1)));
    l.restarted();
    for (t, n, run) in [(10, 1, "r2"), (12, 2, "r3"), (20, 1, "r4"), (30, 1, "r5")] {
        l.apply(logged(t, scheduled(n, run)));
        l.apply(logged(t + 1, st(Active)));
    }
    // D-Bus, live again, reads NRestarts 1
    l.apply(live(40, seen(Active, "running", 1)));
    let v = l.unit("u.service", T0 + 41 * S).expect("unit");
    assert_eq!(v.restarts_auto, 5);
}

/// The bus was away while the unit restarted once more (4), was reset and
/// restarted twice (1, 2); D-Bus back reads 2. In whichever order the
/// journal's records and the new reading come, each restart counts once.
#[test]
fn a_reset_dbus_missed_counts_each_record_once() {
    for journal_first in [true, false] {
        let mut l = Ledger::new();
        l.apply(live(0, seen(Active, "running", 0)));
        for n in 1..=3u32 {
            l.apply(live(u64::from(n), Transition::NRestarts(n)));
            l.apply(logged(u64::from(n), scheduled(n, &format!("x{n}"))));
        }
        l.dbus_lost(T0 + 4 * S);
        let records = [(5, 4, "x4"), (20, 1, "y1"), (22, 2, "y2")];
        let reading = live(30, Transition::NRestarts(2));
        if !journal_first {
            l.apply(reading.clone());
        }
        for (t, n, run) in records {
            l.apply(logged(t, scheduled(n, run)));
        }
        if journal_first {
            l.apply(reading);
        }
        let v = l.unit("u.service", T0 + 31 * S).expect("unit");
        assert_eq!(v.restarts_auto, 6, "journal first: {journal_first}");
    }
}

/// A user manager's records carry `USER_UNIT` and `USER_INVOCATION_ID`: a
/// crash and a `systemctl --user restart`, reported by both, count once.
#[test]
fn a_user_managers_records_match_dbus_reports_of_the_same_run() {
    let (mut j, mut l) = (Journal::user(4242), Ledger::new());
    l.apply(live(0, seen(Active, "running", 0)));
    // crash of run "aa", restarted by systemd as run "bb"
    l.apply(at_ms(1000, failed_run("exit-code", "aa")));
    l.apply(at_ms(1000, sub(Activating, "auto-restart")));
    j.feed(
        &mut l,
        1000,
        FAILURE_RESULT,
        "aa",
        &[("UNIT_RESULT", "exit-code")],
    );
    j.feed(
        &mut l,
        1100,
        RESTART_SCHEDULED,
        "aa",
        &[("N_RESTARTS", "1")],
    );
    l.apply(at_ms(1100, Transition::NRestarts(1)));
    l.apply(at_ms(1110, sub(Active, "running")));
    j.feed(
        &mut l,
        1110,
        STARTED,
        "bb",
        &[("JOB_ID", "7"), ("JOB_TYPE", "start")],
    );
    // a restart by hand of run "bb"
    l.apply(at_ms(
        2000,
        Transition::JobQueued {
            id: 8,
            job_type: String::new(),
            invocation: Some("bb".into()),
        },
    ));
    l.apply(at_ms(2000, st(Deactivating)));
    l.apply(at_ms(2001, st(Inactive)));
    l.apply(at_ms(2010, sub(Active, "running")));
    l.apply(at_ms(2011, done(8)));
    j.feed(
        &mut l,
        2000,
        STOPPING,
        "bb",
        &[("JOB_ID", "8"), ("JOB_TYPE", "stop")],
    );
    j.feed(
        &mut l,
        2001,
        STOPPED,
        "bb",
        &[("JOB_ID", "8"), ("JOB_TYPE", "restart")],
    );
    j.feed(
        &mut l,
        2010,
        STARTED,
        "cc",
        &[("JOB_ID", "8"), ("JOB_TYPE", "start")],
    );
    let v = l.unit("u.service", T0 + 3 * S).expect("unit");
    assert_eq!(
        (
            v.restarts_auto,
            v.restarts_manual,
            v.failures.get("exit-code")
        ),
        (1, 1, Some(&1))
    );
}

/// unitwatch starts with a backfill (no saved state): the journal's records
/// start the account, then D-Bus's first read stamps its time, a restart
/// happens, and it reads `NRestarts` with that restart in it. The record of
/// that restart, read after, is a restart of the account: it counts.
#[test]
fn a_restart_inside_dbus_first_reading_counts_from_its_record() {
    let mut l = Ledger::new();
    l.apply(logged(1, st(Active)));
    l.apply(logged(2, scheduled(1, "r1")));
    l.apply(logged(3, st(Active)));
    l.apply(at_ms(4000, seen(Activating, "auto-restart", 2)));
    l.apply(Event::logged(
        "u.service",
        T0 + 4030 * MS,
        scheduled(2, "r2"),
    ));
    l.apply(at_ms(4100, Transition::NRestarts(2)));
    let v = l.unit("u.service", T0 + 5 * S).expect("unit");
    assert_eq!(v.restarts_auto, 2);
}
