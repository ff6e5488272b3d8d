//! Where unitwatch once disagreed with systemd's own record, against a real
//! systemd: a `systemctl restart` of a unit waiting in `auto-restart` (a
//! start, not a restart), automatic restarts scheduled while unitwatch was
//! down across resets of `NRestarts` (each record one restart), and a user
//! manager's records (`USER_UNIT`, `USER_INVOCATION_ID`) matched to what
//! `unitwatch --user` hears over its session bus. Each compares unitwatch's
//! counters with what systemd's journal recorded.

mod common;

use std::time::Duration;

use common::series::{auto, exit_code, manual, series};
use common::unitwatch::{signal, temp_dir, Place, Unitwatch};
use common::{wait_for, Boot, Sandbox};

const WAIT: Duration = Duration::from_secs(30);
const WATCH: &str = "units = [\"aitbc-*.service\"]";
const STABLE: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

/// A unit that runs for `run` and fails, restarted by systemd after `wait`.
fn crashing(run: &str, wait: &str) -> String {
    format!(
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestart=on-failure\nRestartSec={wait}\n\
         ExecStart=/bin/sh -c 'sleep {run}; exit 1'\n"
    )
}

/// A unit whose runs fail when told to ([`crash`]), restarted by systemd
/// after `wait`.
fn crashes_on_demand(wait: &str) -> String {
    format!(
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestart=on-failure\nRestartSec={wait}\n\
         ExecStart=/bin/sh -c 'while [ ! -e /run/%n.crash ]; do sleep 0.02; done; \
         rm -f /run/%n.crash; exit 1'\n"
    )
}

/// Makes the running `unit` fail now.
fn crash(sb: &Sandbox, unit: &str) {
    assert_eq!(sb.show(unit, "SubState"), "running", "{unit} runs to crash");
    sb.sh(&format!("touch /run/{unit}.crash"));
    let file = sb.path(&format!("/run/{unit}.crash"));
    wait_for(&format!("{unit} to crash"), WAIT, || {
        (!file.exists()).then_some(())
    });
}

/// How many of `unit`'s records carry `text`, as `journalctl` shows them.
fn count(sb: &Sandbox, unit: &str, text: &str) -> f64 {
    sb.journal_count(unit, text)
}

/// Restart-job "Stopped" records of `unit` (JOB_TYPE=restart): restarts by
/// hand and systemd's own alike.
fn restart_job_stops(sb: &Sandbox, unit: &str) -> usize {
    sb.sh(&format!(
        "journalctl -u {unit} -o export MESSAGE_ID=9d1aaa27d60140bd96365438aad20286 \
         | grep -c '^JOB_TYPE=restart$' || true"
    ))
    .trim()
    .parse()
    .expect("a count")
}

fn wait_sub_state(sb: &Sandbox, unit: &str, sub: &str) {
    wait_for(&format!("{unit} to be {sub}"), WAIT, || {
        (sb.show(unit, "SubState") == sub).then_some(())
    });
}

/// Waits until the journal holds `n` "Scheduled restart job" records of
/// `unit` and the run after the last is up.
fn wait_restarts_then_running(sb: &Sandbox, unit: &str, n: f64) {
    wait_for(&format!("{unit}: restart {n} and running"), WAIT, || {
        (count(sb, unit, "Scheduled restart job") == n && sb.show(unit, "SubState") == "running")
            .then_some(())
    });
}

fn journal_events(uw: &Unitwatch) -> f64 {
    uw.value("unitwatch_events_total{source=\"journal\"}")
        .unwrap_or(0.0)
}

/// Issue 12, 1: `systemctl restart` (and `try-restart`) while a unit waits
/// out `RestartSec` is a start — systemd logs no "Stopping…" for it — read
/// live from both sources and, with unitwatch killed meanwhile, from the
/// journal alone; a restart of a running unit still counts, either way.
#[test]
fn a_restart_while_waiting_in_auto_restart_is_no_manual_restart() {
    let sb = sandbox!();
    let (crasher, stable) = ("aitbc-crash.service", "aitbc-stable.service");
    // It waits in auto-restart until restarted by hand.
    sb.write_unit(crasher, &crashes_on_demand("1h"));
    sb.write_unit(stable, STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", stable]);
    let dir = temp_dir("exact-waiting");
    let mut uw = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &dir);
    uw.wait_value(&series("service_up", stable, ""), WAIT, |v| v == 1.0);
    wait_for("a saved state", WAIT, || {
        uw.state_file().exists().then_some(())
    });
    sb.systemctl(&["start", crasher]);
    let crash_and_restart = |verb: &str| {
        wait_sub_state(&sb, crasher, "running");
        crash(&sb, crasher);
        wait_sub_state(&sb, crasher, "auto-restart");
        sb.systemctl(&[verb, crasher]);
    };
    crash_and_restart("restart");
    crash_and_restart("try-restart");
    sb.systemctl(&["restart", stable]);
    uw.wait_value(&manual(stable), WAIT, |v| v == 1.0);
    uw.wait_value(&exit_code(crasher), WAIT, |v| v == 2.0);
    assert_eq!(uw.value(&manual(crasher)), Some(0.0), "live, both sources");
    // What follows is read from the journal after the state saved last.
    uw.kill9();
    crash_and_restart("restart");
    crash_and_restart("try-restart");
    sb.systemctl(&["restart", stable]);
    wait_sub_state(&sb, crasher, "running");
    crash(&sb, crasher);
    wait_sub_state(&sb, crasher, "auto-restart");
    sb.systemctl(&["stop", crasher]);

    let uw = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &dir);
    uw.wait_value(&manual(stable), WAIT, |v| v == 2.0);
    let failures = count(&sb, crasher, "Failed with result 'exit-code'");
    assert_eq!(failures, 5.0, "four restarts by hand and the last run");
    uw.wait_value(&exit_code(crasher), WAIT, |v| v == failures);
    assert_eq!(
        restart_job_stops(&sb, crasher),
        4,
        "systemd's record of the four restart jobs"
    );
    assert_eq!(uw.value(&manual(crasher)), Some(0.0), "{}", uw.log());
    assert_eq!(uw.value(&auto(crasher)), Some(0.0));
    assert!(journal_events(&uw) > 0.0, "the journal was read");
}

/// Issue 12, 2: while unitwatch is down (kill -9) a unit is restarted by
/// systemd with `N_RESTARTS` 1 and 2, restarted by hand (which resets the
/// counter), restarted by systemd (1), by hand again, by systemd (1): four
/// automatic restarts, each a record of its own.
#[test]
fn restarts_scheduled_while_away_across_resets_each_count() {
    let sb = sandbox!();
    let unit = "aitbc-loop.service";
    sb.write_unit(unit, &crashes_on_demand("100ms"));
    sb.daemon_reload();
    let dir = temp_dir("exact-resets");
    let mut uw = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &dir);
    uw.wait_value(&series("service_up", unit, ""), WAIT, |v| v == 0.0);
    wait_for("a saved state", WAIT, || {
        uw.state_file().exists().then_some(())
    });
    uw.kill9();

    sb.systemctl(&["start", unit]);
    wait_sub_state(&sb, unit, "running");
    for (n, by_hand_after) in [(1, false), (2, true), (3, true), (4, false)] {
        crash(&sb, unit);
        wait_restarts_then_running(&sb, unit, f64::from(n));
        let expected = if n <= 2 { n } else { 1 };
        assert_eq!(sb.show(unit, "NRestarts"), expected.to_string());
        if by_hand_after {
            sb.systemctl(&["restart", unit]);
        }
    }
    sb.systemctl(&["stop", unit]);

    let uw = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &dir);
    uw.wait_value(&manual(unit), WAIT, |v| v == 2.0);
    uw.wait_value(&exit_code(unit), WAIT, |v| v == 4.0);
    assert_eq!(uw.value(&auto(unit)), Some(4.0), "{}", uw.log());
}

const UID: u32 = 4242;

/// How many of user unit `unit`'s records (of user [`UID`]'s manager) carry `text`.
fn user_count(sb: &Sandbox, unit: &str, text: &str) -> f64 {
    sb.sh(&format!(
        "journalctl _UID={UID} USER_UNIT={unit} -o cat | grep -c \"{text}\" || true"
    ))
    .trim()
    .parse()
    .expect("a count")
}

/// Issue 12, 3: `unitwatch --user`, run by a user against its own manager
/// (its session bus and its journal, persistent as on a real host): a crash
/// loop's failures and restarts and a `systemctl --user restart` count once,
/// though the journal names them `USER_UNIT` and `USER_INVOCATION_ID`.
#[test]
fn a_user_managers_failures_and_restarts_count_once() {
    require_root!("to boot systemd in namespaces with a user manager");
    let (dir, journal) = (temp_dir("exact-user"), temp_dir("exact-user-journal"));
    let sb = Sandbox::boot(&Boot {
        binds: vec![dir.clone()],
        journal: Some(journal),
        new_boot_id: false,
    });
    sb.start_user(UID);
    let (crash, stable) = ("aitbc-ucrash.service", "aitbc-ustable.service");
    sb.write_user_unit(UID, crash, &crashing("0.3", "300ms"));
    sb.write_user_unit(UID, stable, STABLE);
    sb.user_systemctl(UID, &["daemon-reload"]);
    let uw = Unitwatch::launch_at(
        &sb,
        WATCH,
        "backfill = \"0\"",
        &dir,
        Place::Inside { user: Some(UID) },
    );
    sb.user_systemctl(UID, &["start", stable, crash]);
    uw.wait_value(&series("service_up", stable, ""), WAIT, |v| v == 1.0);
    sb.user_systemctl(UID, &["restart", stable]);
    wait_for("three restarts of the user's crashing unit", WAIT, || {
        (user_count(&sb, crash, "Scheduled restart job") >= 3.0).then_some(())
    });
    sb.user_systemctl(UID, &["stop", crash]);
    let failures = user_count(&sb, crash, "Failed with result 'exit-code'");
    let restarts = user_count(&sb, crash, "Scheduled restart job");
    uw.wait_value(&exit_code(crash), WAIT, |v| v == failures);
    uw.wait_value(&auto(crash), WAIT, |v| v == restarts);
    uw.wait_value(&manual(stable), WAIT, |v| v == 1.0);
    assert_eq!(uw.value("unitwatch_journal_up"), Some(1.0));
    assert!(journal_events(&uw) > 0.0, "the user's journal was read");
    // Settled: nothing arriving late changes the counts.
    sb.user_systemctl(UID, &["restart", stable]);
    uw.wait_value(&manual(stable), WAIT, |v| v == 2.0);
    assert_eq!(uw.value(&exit_code(crash)), Some(failures), "{}", uw.log());
    assert_eq!(uw.value(&auto(crash)), Some(restarts));
    assert_eq!(uw.value(&manual(crash)), Some(0.0));
}

/// `__REALTIME_TIMESTAMP`s, in seconds, of `unit`'s records with `message_id`
/// since `since` (seconds since the epoch), oldest first.
fn record_times(sb: &Sandbox, unit: &str, message_id: &str, since: f64) -> Vec<f64> {
    sb.sh(&format!(
        "journalctl -u {unit} MESSAGE_ID={message_id} -S @{since:.6} -o json"
    ))
    .lines()
    .map(|line| {
        let fields: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        fields["__REALTIME_TIMESTAMP"]
            .as_str()
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no timestamp in {line}"))
            / 1e6
    })
    .collect()
}

const STABLE_UNIT: &str = "aitbc-stable.service";

fn downtime(unit: &str) -> String {
    series("service_downtime_seconds_total", unit, "")
}

/// [`STABLE_UNIT`] started, and unitwatch (its state in `dir`) seeing it up.
fn watching_it_up(sb: &Sandbox, dir: &std::path::Path) -> Unitwatch {
    sb.write_unit(STABLE_UNIT, STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", STABLE_UNIT]);
    let uw = Unitwatch::launch(sb, WATCH, "backfill = \"0\"", dir);
    uw.wait_value(&series("service_up", STABLE_UNIT, ""), WAIT, |v| v == 1.0);
    uw
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A unit stopped and started twice while unitwatch was stopped: systemd
/// keeps the timestamps of the last cycle only, the journal has both, and
/// both are downtime (the D-Bus connection that followed the unit ended
/// with the process that had it).
#[test]
fn every_stop_while_unitwatch_was_stopped_is_downtime() {
    let sb = sandbox!();
    let (unit, down, dir) = (STABLE_UNIT, downtime(STABLE_UNIT), temp_dir("exact-away"));
    let mut uw = watching_it_up(&sb, &dir);
    let down_before = uw.value(&down).unwrap_or(0.0);
    let away = now();
    assert!(
        uw.stop().is_some_and(|s| s.success()),
        "unitwatch stops cleanly"
    );
    for _ in 0..2 {
        sb.systemctl(&["stop", unit]);
        // A span of downtime to measure; nothing is waited for.
        std::thread::sleep(Duration::from_millis(800));
        sb.systemctl(&["start", unit]);
    }
    let stops = record_times(&sb, unit, "de5b426a63be47a7b6ac3eaac82e2f6f", away);
    let starts = record_times(&sb, unit, "39f53479d3a045ac8e11786248231fbf", away);
    assert_eq!((stops.len(), starts.len()), (2, 2), "two cycles recorded");
    let gaps: f64 = stops.iter().zip(&starts).map(|(s, t)| t - s).sum();

    let uw = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &dir);
    uw.wait_value(&series("service_up", unit, ""), WAIT, |v| v == 1.0);
    let want = down_before + gaps;
    let got = uw.wait_value(&down, WAIT, |v| v > 0.0);
    assert!(
        (got - want).abs() < 0.3,
        "down {got:.3} s; the journal says {want:.3} s (two stops of {gaps:.3} s in all)\n{}",
        uw.log()
    );
}

/// A unit stopped at the moment unitwatch is told to stop: the stop is
/// downtime from its "Stopping" record. Whichever of its signals and its
/// journal records unitwatch reads before it ends, the stop is applied
/// before it ends or read again at the next start.
#[test]
fn a_stop_as_unitwatch_stops_is_downtime() {
    let sb = sandbox!();
    let (unit, down, dir) = (
        STABLE_UNIT,
        downtime(STABLE_UNIT),
        temp_dir("exact-stopping"),
    );
    let mut uw = watching_it_up(&sb, &dir);
    let down_before = uw.value(&down).unwrap_or(0.0);
    let away = now();
    let pid = uw.pid().expect("unitwatch runs");
    // Held still while the unit stops, then told to stop as it wakes: its
    // socket holds the stop's signals and its journal the records, and
    // neither has been read.
    signal(pid, libc::SIGSTOP);
    sb.systemctl(&["stop", unit]);
    wait_for("the stop in the journal", WAIT, || {
        (!record_times(&sb, unit, "de5b426a63be47a7b6ac3eaac82e2f6f", away).is_empty())
            .then_some(())
    });
    signal(pid, libc::SIGTERM);
    signal(pid, libc::SIGCONT);
    assert!(
        uw.wait_exit(WAIT).is_some_and(|s| s.success()),
        "unitwatch stops cleanly"
    );
    // A span of downtime to measure; nothing is waited for.
    std::thread::sleep(Duration::from_millis(500));
    sb.systemctl(&["start", unit]);
    let stops = record_times(&sb, unit, "de5b426a63be47a7b6ac3eaac82e2f6f", away);
    let starts = record_times(&sb, unit, "39f53479d3a045ac8e11786248231fbf", away);
    assert_eq!((stops.len(), starts.len()), (1, 1), "one stop, one start");

    let uw = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &dir);
    uw.wait_value(&series("service_up", unit, ""), WAIT, |v| v == 1.0);
    let want = down_before + (starts[0] - stops[0]);
    let got = uw.wait_value(&down, WAIT, |v| v > 0.0);
    assert!(
        (got - want).abs() < 0.2,
        "down {got:.3} s; the journal says {want:.3} s\n{}",
        uw.log()
    );
}
