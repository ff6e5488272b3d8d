//! Jobs: runs counted once whichever source reports them, in either
//! order; the last run, the last success, and what is not counted.

use super::*;

const JOB: &str = "aitbc-settlement.service";

fn started(inv: &str) -> Transition {
    Transition::RunStarted {
        invocation: Some(inv.into()),
    }
}

fn ended(result: &str, inv: &str) -> Transition {
    Transition::RunEnded {
        result: result.into(),
        invocation: Some(inv.into()),
    }
}

/// A job seen inactive at `T0`, accounted as a job.
fn job_ledger() -> Ledger {
    let mut l = Ledger::new();
    l.apply(Event::new(JOB, T0, seen(Inactive, "dead", 0)));
    l.apply(Event::new(JOB, T0, Transition::Kind { kind: Kind::Job }));
    l
}

/// One run of `inv` from `from` to `to` seconds after `T0`, as D-Bus reports it.
fn dbus_run(l: &mut Ledger, inv: &str, from: u64, to: u64, result: &str) {
    l.apply(Event::new(JOB, T0 + from * S, st(Activating)));
    l.apply(Event::new(JOB, T0 + from * S, started(inv)));
    let end = if result == "success" {
        Inactive
    } else {
        Failed
    };
    l.apply(Event::new(JOB, T0 + to * S, st(end)));
    l.apply(Event::new(JOB, T0 + to * S, ended(result, inv)));
}

/// The same run as the journal reports it, a few ms later.
fn journal_run(l: &mut Ledger, inv: &str, from: u64, to: u64, result: &str) {
    let ms = 1000;
    l.apply(Event::logged(JOB, T0 + from * S + ms, st(Activating)));
    l.apply(Event::logged(JOB, T0 + from * S + ms, started(inv)));
    l.apply(Event::logged(JOB, T0 + to * S + ms, ended(result, inv)));
}

#[test]
fn a_run_counts_by_its_result_with_its_duration() {
    let mut l = job_ledger();
    dbus_run(&mut l, "a", 10, 13, "success");
    let v = l.unit(JOB, T0 + 20 * S).expect("job");
    assert!(v.is_job());
    assert_eq!(v.runs.results.get("success"), Some(&1));
    assert_eq!(v.runs.durations.sum_usec, 3 * S);
    assert_eq!(v.runs.last_start, T0 + 10 * S);
    assert_eq!(v.runs.last_success, T0 + 13 * S);
    assert!(!v.running());
}

#[test]
fn a_run_both_sources_report_counts_once_journal_first() {
    let mut l = job_ledger();
    l.dbus_lost(T0 + S);
    journal_run(&mut l, "a", 10, 13, "success");
    dbus_run(&mut l, "a", 10, 13, "success");
    let v = l.unit(JOB, T0 + 20 * S).expect("job");
    assert_eq!(v.runs.results.get("success"), Some(&1));
    assert_eq!(v.runs.durations.count, 1);
}

#[test]
fn a_run_both_sources_report_counts_once_dbus_first() {
    let mut l = job_ledger();
    dbus_run(&mut l, "a", 10, 13, "exit-code");
    journal_run(&mut l, "a", 10, 13, "exit-code");
    let v = l.unit(JOB, T0 + 20 * S).expect("job");
    assert_eq!(v.runs.results.get("exit-code"), Some(&1));
    assert_eq!(v.runs.log.len(), 1);
}

#[test]
fn a_failed_run_keeps_the_last_success() {
    let mut l = job_ledger();
    dbus_run(&mut l, "a", 10, 11, "success");
    dbus_run(&mut l, "b", 30, 31, "exit-code");
    let v = l.unit(JOB, T0 + 40 * S).expect("job");
    assert_eq!(v.runs.last_success, T0 + 11 * S);
    let last = v.runs.last.expect("last run");
    assert_eq!((last.result(), last.end), ("exit-code", T0 + 31 * S));
    assert_eq!(v.runs.between(T0, T0 + 40 * S), (2, 1));
}

#[test]
fn a_run_that_ended_before_accounting_began_is_the_last_run_but_not_counted() {
    let mut l = Ledger::new();
    // systemd's timestamps of the run before unitwatch first saw the job.
    l.apply(Event::new(JOB, T0 + 10 * S, seen(Inactive, "dead", 0)));
    l.apply(Event::new(JOB, T0 + 2 * S, started("a")));
    l.apply(Event::new(JOB, T0 + 5 * S, ended("success", "a")));
    let v = l.unit(JOB, T0 + 20 * S).expect("job");
    assert!(v.runs.results.is_empty());
    assert_eq!(v.runs.last.and_then(|r| r.duration()), Some(3 * S));
    assert_eq!(v.runs.last_success, T0 + 5 * S);
}

#[test]
fn a_run_in_progress_at_first_sight_is_counted_when_it_ends() {
    let mut l = Ledger::new();
    l.apply(Event::new(JOB, T0 + 10 * S, seen(Activating, "start", 0)));
    l.apply(Event::new(JOB, T0 + 8 * S, started("a")));
    assert!(l.unit(JOB, T0 + 11 * S).expect("job").running());
    l.apply(Event::new(JOB, T0 + 12 * S, st(Inactive)));
    l.apply(Event::new(JOB, T0 + 12 * S, ended("success", "a")));
    let v = l.unit(JOB, T0 + 20 * S).expect("job");
    assert_eq!(v.runs.results.get("success"), Some(&1));
    assert_eq!(v.runs.durations.sum_usec, 4 * S);
}

#[test]
fn each_attempt_under_restart_is_a_run_of_its_own() {
    let mut l = job_ledger();
    dbus_run(&mut l, "a", 10, 11, "exit-code");
    dbus_run(&mut l, "b", 12, 13, "exit-code");
    dbus_run(&mut l, "c", 14, 15, "success");
    let v = l.unit(JOB, T0 + 20 * S).expect("job");
    assert_eq!(v.runs.results.get("exit-code"), Some(&2));
    assert_eq!(v.runs.results.get("success"), Some(&1));
}

#[test]
fn a_known_service_keeps_no_runs() {
    let mut l = Ledger::new();
    l.apply(Event::new(JOB, T0, seen(Inactive, "dead", 0)));
    l.apply(Event::new(
        JOB,
        T0,
        Transition::Kind {
            kind: Kind::Service,
        },
    ));
    dbus_run(&mut l, "a", 10, 11, "success");
    let v = l.unit(JOB, T0 + 20 * S).expect("unit");
    assert!(!v.is_job());
    assert_eq!(*v.runs, crate::ledger::runs::Runs::default());
}

#[test]
fn the_timer_is_set_and_cleared() {
    let mut l = job_ledger();
    let timer = |name: &str, last, next| Transition::Timer {
        timer: name.into(),
        last_trigger: last,
        next_elapse: next,
    };
    l.apply(Event::new(JOB, T0 + S, timer("x.timer", T0, T0 + 20 * S)));
    let v = l.unit(JOB, T0 + 2 * S).expect("job");
    let t = v.timer.expect("timer");
    assert_eq!((t.name.as_str(), t.next_elapse), ("x.timer", T0 + 20 * S));
    l.apply(Event::new(JOB, T0 + 3 * S, timer("", 0, 0)));
    assert!(l.unit(JOB, T0 + 4 * S).expect("job").timer.is_none());
}

#[test]
fn runs_survive_a_save_and_load() {
    let mut l = job_ledger();
    dbus_run(&mut l, "a", 10, 12, "success");
    dbus_run(&mut l, "b", 30, 31, "timeout");
    let json = serde_json::to_string(&l).expect("save");
    let back: Ledger = serde_json::from_str(&json).expect("load");
    let (a, b) = (
        l.unit(JOB, T0 + 40 * S).expect("job"),
        back.unit(JOB, T0 + 40 * S).expect("job"),
    );
    assert_eq!(a.runs, b.runs);
    assert_eq!(b.kind, Kind::Job);
    // A report of a run already counted still counts nothing after loading.
    let mut back = back;
    journal_run(&mut back, "b", 30, 31, "timeout");
    let v = back.unit(JOB, T0 + 40 * S).expect("job");
    assert_eq!(v.runs.results.get("timeout"), Some(&1));
}

#[test]
fn the_runs_of_a_known_service_need_not_be_applied() {
    let mut l = Ledger::new();
    l.apply(Event::new(JOB, T0, seen(Inactive, "dead", 0)));
    let run = Event::logged(JOB, T0 + S, started("a"));
    assert!(l.keeps(&run), "a unit of unknown kind keeps its runs");
    l.apply(Event::new(
        JOB,
        T0,
        Transition::Kind {
            kind: Kind::Service,
        },
    ));
    assert!(!l.keeps(&run));
    assert!(l.keeps(&Event::logged(JOB, T0 + S, st(Activating))));
}
