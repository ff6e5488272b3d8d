//! The accounting rules, one table of cases and one test per rule.

use super::ActiveState::*;
use super::*;

const S: Usec = 1_000_000;
const T0: Usec = 1_700_000_000 * S;

fn seen(state: ActiveState, sub: &str, n: u32) -> Transition {
    Transition::Seen {
        state,
        sub_state: sub.into(),
        n_restarts: Some(n),
    }
}

fn st(state: ActiveState) -> Transition {
    Transition::State {
        state,
        sub_state: None,
    }
}

fn sub(state: ActiveState, sub: &str) -> Transition {
    Transition::State {
        state,
        sub_state: Some(sub.into()),
    }
}

fn job(id: u32, t: &str) -> Transition {
    Transition::JobQueued {
        id,
        job_type: t.into(),
        invocation: None,
    }
}

fn done(id: u32) -> Transition {
    Transition::JobRemoved {
        id,
        result: "done".into(),
    }
}

fn failed(r: &str) -> Transition {
    Transition::RunFailed {
        result: r.into(),
        invocation: None,
    }
}

/// The journal's *restart scheduled* record of the run `invocation`.
fn scheduled(n: u32, invocation: &str) -> Transition {
    Transition::Restart {
        trigger: Trigger::Auto,
        invocation: Some(invocation.into()),
        n_restarts: Some(n),
    }
}

fn failed_run(r: &str, invocation: &str) -> Transition {
    Transition::RunFailed {
        result: r.into(),
        invocation: Some(invocation.into()),
    }
}

#[test]
fn events_for_unseen_units_are_ignored() {
    let mut l = Ledger::new();
    assert_eq!(
        l.apply(Event::new("x.service", T0, st(Active))),
        Outcome::Quiet
    );
    assert!(l.is_empty());
}

#[test]
fn folding_keeps_totals_exact() {
    let mut l = Ledger::new();
    l.apply(Event::new("u.service", T0, seen(Inactive, "dead", 0)));
    // 3000 cycles: 1 s down then 2 s up
    for i in 0..3000u64 {
        let base = T0 + i * 3 * S;
        l.apply(Event::new("u.service", base + S, st(Active)));
        l.apply(Event::new("u.service", base + 3 * S, st(Inactive)));
    }
    let v = l.unit("u.service", T0 + 9000 * S).expect("unit");
    assert_eq!(v.uptime_seconds, 6000.0);
    assert_eq!(v.downtime_seconds, 3000.0);
    assert_eq!(v.history.transitions().count(), MAX_POINTS);
    // a report older than the fold is stale and changes nothing
    l.apply(Event::new("u.service", T0 + 5 * S, st(Inactive)));
    let v = l.unit("u.service", T0 + 9000 * S).expect("unit");
    assert_eq!(v.uptime_seconds, 6000.0);
}

#[test]
fn seen_again_after_removal_keeps_counters() {
    let mut l = Ledger::new();
    l.apply(Event::new("u.service", T0, seen(Active, "running", 3)));
    l.apply(Event::new("u.service", T0 + S, Transition::NRestarts(5)));
    l.apply(Event::new("u.service", T0 + 2 * S, sub(Inactive, "dead")));
    l.apply(Event::new("u.service", T0 + 3 * S, Transition::Removed));
    assert!(!l.unit("u.service", T0 + 3 * S).expect("unit").loaded);
    let out = l.apply(Event::new(
        "u.service",
        T0 + 4 * S,
        seen(Active, "running", 0),
    ));
    assert_eq!(out, Outcome::Quiet);
    let v = l.unit("u.service", T0 + 6 * S).expect("unit");
    assert!(v.loaded);
    assert_eq!(v.restarts_auto, 2);
    assert_eq!((v.uptime_seconds, v.downtime_seconds), (4.0, 2.0));
}

fn logged(t: u64, tr: Transition) -> Event {
    Event::logged("u.service", T0 + t * S, tr)
}

fn live(t: u64, tr: Transition) -> Event {
    Event::new("u.service", T0 + t * S, tr)
}

#[test]
fn journal_history_starts_the_account_and_counts_the_first_restart() {
    let mut l = Ledger::new();
    l.apply(logged(1, st(Activating)));
    l.apply(logged(2, st(Active)));
    l.apply(logged(5, failed_run("exit-code", "aa")));
    l.apply(logged(5, st(Failed)));
    l.apply(logged(6, scheduled(1, "aa")));
    l.apply(logged(6, st(Activating)));
    l.apply(logged(7, st(Active)));
    let v = l.unit("u.service", T0 + 10 * S).expect("unit");
    assert_eq!((v.uptime_seconds, v.downtime_seconds), (6.0, 3.0));
    assert_eq!(
        (v.restarts_auto, v.failures.get("exit-code")),
        (1, Some(&1))
    );

    // first met through a restart record: that restart counts
    let mut l = Ledger::new();
    l.apply(logged(1, scheduled(4, "aa")));
    assert_eq!(
        l.unit("u.service", T0 + 2 * S).expect("unit").restarts_auto,
        1
    );
}

#[test]
fn journal_and_dbus_reporting_the_same_run_count_once() {
    let mut l = Ledger::new();
    l.apply(live(0, seen(Active, "running", 0)));
    // D-Bus first, then the journal's records of the same crash
    l.apply(live(4, failed_run("exit-code", "aa")));
    l.apply(live(4, sub(Failed, "failed")));
    l.apply(live(5, Transition::NRestarts(1)));
    l.apply(live(5, sub(Active, "running")));
    l.apply(logged(4, failed_run("exit-code", "aa")));
    l.apply(logged(4, st(Failed)));
    l.apply(logged(5, scheduled(1, "aa")));
    // the journal first, then D-Bus
    l.apply(logged(7, failed_run("signal", "bb")));
    l.apply(logged(8, scheduled(2, "bb")));
    l.apply(live(7, failed_run("signal", "bb")));
    l.apply(live(8, Transition::NRestarts(2)));
    // a manual restart: journal record and D-Bus job of the same run
    l.apply(logged(
        9,
        Transition::Restart {
            trigger: Trigger::Manual,
            invocation: Some("cc".into()),
            n_restarts: None,
        },
    ));
    l.apply(live(
        9,
        Transition::JobQueued {
            id: 5,
            job_type: String::new(),
            invocation: Some("cc".into()),
        },
    ));
    l.apply(live(9, st(Deactivating)));
    l.apply(live(9, sub(Active, "running")));
    l.apply(live(9, done(5)));
    // journal state records while D-Bus follows change nothing
    l.apply(logged(9, st(Inactive)));
    let v = l.unit("u.service", T0 + 10 * S).expect("unit");
    assert_eq!((v.restarts_auto, v.restarts_manual), (2, 1));
    assert_eq!(v.failures.get("exit-code"), Some(&1));
    assert_eq!(v.failures.get("signal"), Some(&1));
    assert_eq!((v.uptime_seconds, v.downtime_seconds), (9.0, 1.0));
}

#[test]
fn journal_fills_a_dbus_gap() {
    let mut l = Ledger::new();
    l.apply(live(0, seen(Active, "running", 0)));
    l.dbus_lost(T0 + 2 * S);
    l.apply(logged(3, st(Inactive)));
    l.apply(logged(5, st(Active)));
    l.apply(live(6, seen(Active, "running", 0)));
    l.apply(logged(7, st(Inactive)));
    let v = l.unit("u.service", T0 + 10 * S).expect("unit");
    assert_eq!((v.uptime_seconds, v.downtime_seconds), (8.0, 2.0));
}

#[test]
fn reboot_counts_as_downtime_for_units_that_were_up() {
    let mut l = Ledger::new();
    l.apply(logged(0, st(Active)));
    l.host_down(T0 + 4 * S);
    l.apply(logged(10, st(Activating)));
    l.apply(logged(11, st(Active)));
    let v = l.unit("u.service", T0 + 12 * S).expect("unit");
    assert_eq!((v.uptime_seconds, v.downtime_seconds), (5.0, 7.0));
}

/// `unit` of `user`'s manager, its key.
fn of(unit: &str, user: &str) -> String {
    key::user_unit(unit, user).expect("a unit name")
}

#[test]
fn a_user_managers_end_takes_down_its_units_and_no_others() {
    let mut l = Ledger::new();
    let (alice, bob) = (of("u.service", "alice"), of("u.service", "bob"));
    for unit in ["u.service", alice.as_str(), bob.as_str()] {
        l.apply(Event::new(unit, T0, seen(Active, "running", 0)));
    }
    l.replay(Op::UserDown {
        user: "alice".into(),
        at: T0 + 4 * S,
    });
    let now = T0 + 10 * S;
    let a = l.unit(&alice, now).expect("alice's unit");
    assert_eq!(
        (a.state, a.uptime_seconds, a.downtime_seconds),
        (Inactive, 4.0, 6.0)
    );
    for unit in ["u.service", bob.as_str()] {
        let v = l.unit(unit, now).expect("unit");
        assert_eq!((v.state, v.uptime_seconds), (Active, 10.0), "{unit}");
    }
    // Back: its snapshot sees the unit running again.
    l.apply(Event::new(&alice, T0 + 12 * S, seen(Active, "running", 0)));
    l.apply(Event::new(&alice, T0 + 12 * S, st(Active)));
    let a = l.unit(&alice, T0 + 14 * S).expect("alice's unit");
    assert_eq!((a.uptime_seconds, a.downtime_seconds), (6.0, 8.0));
}

#[test]
fn a_lost_connection_unfollows_only_the_units_of_its_manager() {
    let mut l = Ledger::new();
    let alice = of("u.service", "alice");
    for unit in ["u.service", alice.as_str()] {
        l.apply(Event::new(unit, T0, seen(Active, "running", 0)));
    }
    // The system bus went away: the journal fills in for system units
    // only; alice's manager is still followed over its own connection.
    l.dbus_lost(T0 + 2 * S);
    for unit in ["u.service", alice.as_str()] {
        l.apply(Event::logged(unit, T0 + 3 * S, st(Inactive)));
    }
    let now = T0 + 10 * S;
    assert_eq!(l.unit("u.service", now).map(|v| v.state), Some(Inactive));
    assert_eq!(l.unit(&alice, now).map(|v| v.state), Some(Active));
    // And the other way round.
    l.replay(Op::UserLost {
        user: "alice".into(),
        at: T0 + 4 * S,
    });
    l.apply(Event::logged(&alice, T0 + 5 * S, st(Inactive)));
    assert_eq!(l.unit(&alice, now).map(|v| v.state), Some(Inactive));
}

#[test]
fn survives_a_round_trip_through_json() {
    let mut l = Ledger::new();
    l.apply(live(0, seen(Active, "running", 0)));
    l.apply(live(4, failed_run("exit-code", "aa")));
    l.apply(live(4, sub(Failed, "failed")));
    l.apply(live(5, Transition::NRestarts(1)));
    l.apply(live(5, sub(Active, "running")));
    let json = serde_json::to_string(&l).expect("serialize");
    let mut back: Ledger = serde_json::from_str(&json).expect("deserialize");
    back.apply(logged(4, failed_run("exit-code", "aa")));
    back.apply(logged(5, scheduled(1, "aa")));
    let (a, b) = (
        l.unit("u.service", T0 + 9 * S).expect("unit"),
        back.unit("u.service", T0 + 9 * S).expect("unit"),
    );
    assert_eq!(a, b);
}

#[test]
fn late_journal_restarts_around_a_reset_count_once() {
    const MS: Usec = 1_000;
    let mut l = Ledger::new();
    l.apply(live(0, seen(Active, "running", 0)));
    for n in 1..=7u32 {
        l.apply(logged(u64::from(n), scheduled(n, &format!("run{n}"))));
        l.apply(Event::new(
            "u.service",
            T0 + u64::from(n) * S + 90 * MS,
            Transition::NRestarts(n),
        ));
    }
    // restart 8 is scheduled, then a stop resets NRestarts: D-Bus only
    // sees the 0, before the journal's record of 8 arrives.
    l.apply(Event::new(
        "u.service",
        T0 + 8 * S + 5 * MS,
        Transition::NRestarts(0),
    ));
    l.apply(Event::logged(
        "u.service",
        T0 + 8 * S + MS,
        scheduled(8, "run8"),
    ));
    // the same record read again changes nothing
    l.apply(logged(6, scheduled(6, "run6")));
    assert_eq!(
        l.unit("u.service", T0 + 9 * S).expect("unit").restarts_auto,
        8
    );
    // the next epoch counts from zero
    l.apply(logged(10, scheduled(1, "run10")));
    l.apply(live(10, Transition::NRestarts(1)));
    assert_eq!(
        l.unit("u.service", T0 + 11 * S)
            .expect("unit")
            .restarts_auto,
        9
    );
}

/// Releases before one restart per record saved the journal's restart
/// records as `NRestarts` values; their state logs replay as they counted.
#[test]
fn journal_nrestarts_of_earlier_releases_replay_as_they_counted() {
    let mut l = Ledger::new();
    l.apply(live(0, seen(Active, "running", 0)));
    for n in 1..=3u32 {
        l.apply(logged(u64::from(n), Transition::NRestarts(n)));
        l.apply(live(u64::from(n), Transition::NRestarts(n)));
    }
    l.apply(logged(3, Transition::NRestarts(2)));
    assert_eq!(
        l.unit("u.service", T0 + 4 * S).expect("unit").restarts_auto,
        3
    );
}

#[test]
fn units_beyond_the_limit_are_dropped_and_counted() {
    let mut l = Ledger::new();
    l.set_max_units(2);
    for (i, name) in ["a.service", "b.service", "c.service", "d.service"]
        .iter()
        .enumerate()
    {
        let out = l.apply(Event::new(*name, T0 + i as u64, seen(Active, "running", 0)));
        assert_eq!(out == Outcome::Dropped, i >= 2, "{name}");
    }
    assert_eq!(
        l.apply(Event::new("c.service", T0 + 9, st(Inactive))),
        Outcome::Quiet
    );
    assert_eq!(
        l.apply(Event::new("c.service", T0 + 9, seen(Active, "running", 0))),
        Outcome::Quiet
    );
    assert_eq!((l.len(), l.dropped()), (2, 2));
}

#[test]
fn a_wall_clock_step_moves_history_and_keeps_durations() {
    const H: Usec = 3600 * S;
    for back in [true, false] {
        let mut l = Ledger::new();
        l.apply(Event::new("u.service", T0, seen(Active, "running", 0)));
        l.apply(Event::new("u.service", T0 + 10 * S, st(Inactive)));
        // The clock is set an hour back (or forward) at T0 + 15.
        let delta = if back { -(H as i64) } else { H as i64 };
        l.shift(delta);
        let t = |x: Usec| (x as i64 + delta) as Usec;
        l.apply(Event::new("u.service", t(T0 + 20 * S), st(Active)));
        l.apply(Event::new(
            "u.service",
            t(T0 + 25 * S),
            Transition::NRestarts(1),
        ));
        let v = l.unit("u.service", t(T0 + 30 * S)).expect("unit");
        assert_eq!(
            (v.uptime_seconds, v.downtime_seconds, v.restarts_auto),
            (20.0, 10.0, 1),
            "clock set {}",
            if back { "back" } else { "forward" }
        );
        assert_eq!(v.state_change_seconds, seconds(t(T0 + 20 * S)));
    }
}

/// The same events reported by both sources, as each reports them.
mod jobs;
mod sources;
mod table;
