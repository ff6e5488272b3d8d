//! The D-Bus source against a real systemd and its bus when the signals
//! are not what it expects: sent by someone else (malformed or forged), and
//! a storm larger than its queue.

mod common;

use std::time::Duration;

use common::series::restarts;
use common::unitwatch::{temp_dir, Unitwatch};
use common::{wait_for, Sandbox};

const STABLE: &str = "[Service]\nExecStart=/bin/sleep infinity\n";
const WAIT: Duration = Duration::from_secs(15);

/// unitwatch's unique name on the sandbox's bus, from its log.
fn bus_name(uw: &Unitwatch) -> String {
    const SAID: &str = "connected to the bus as ";
    wait_for("unitwatch to log its bus name", WAIT, || {
        let log = uw.log();
        let at = log.rfind(SAID)? + SAID.len();
        let name: String = log[at..]
            .chars()
            .take_while(|c| *c == ':' || *c == '.' || c.is_ascii_digit())
            .collect();
        name.starts_with(":1.").then_some(name)
    })
}

/// Lines of unitwatch's log that say a signal was ignored.
fn ignored(uw: &Unitwatch) -> Vec<String> {
    uw.log()
        .lines()
        .filter(|l| l.contains("ignored a signal"))
        .map(str::to_owned)
        .collect()
}

/// Signals sent to unitwatch on the system bus by someone other than
/// systemd — five with the wrong signature for a member unitwatch follows,
/// one a well-formed `PropertiesChanged` claiming 50 automatic restarts, the
/// last sent by an unprivileged user — are ignored with one warning (they
/// are throttled); the session goes on (no reconnect) and a real restart
/// right after is counted.
#[test]
fn signals_not_from_systemd_are_ignored_not_a_reconnect() {
    let sb = sandbox!();
    let unit = "aitbc-stable.service";
    sb.write_unit(unit, STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", unit]);
    let uw = Unitwatch::start(&sb, "units = [\"aitbc-*.service\"]");
    uw.wait_value(&restarts(unit, "manual"), WAIT, |v| v == 0.0);
    let name = bus_name(&uw);
    let run = |args: &[&str]| {
        let out = sb.exec(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let dest = format!("--dest={name}");
    for _ in 0..5 {
        run(&[
            "dbus-send",
            "--system",
            "--type=signal",
            &dest,
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager.JobRemoved",
            "string:bogus",
        ]);
    }
    let destination = format!("--destination={name}");
    run(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "busctl",
        "--system",
        "emit",
        &destination,
        "/org/freedesktop/systemd1/unit/aitbc_2dstable_2eservice",
        "org.freedesktop.DBus.Properties",
        "PropertiesChanged",
        "sa{sv}as",
        "org.freedesktop.systemd1.Service",
        "1",
        "NRestarts",
        "u",
        "50",
        "0",
    ]);
    wait_for("the warning about the signals", WAIT, || {
        (!ignored(&uw).is_empty()).then_some(())
    });

    sb.systemctl(&["restart", unit]);
    uw.wait_value(&restarts(unit, "manual"), WAIT, |v| v == 1.0);
    assert_eq!(uw.value(&restarts(unit, "auto")), Some(0.0), "forged");
    assert_eq!(uw.value("unitwatch_dbus_reconnects_total"), Some(0.0));
    assert_eq!(uw.value("unitwatch_dbus_up"), Some(1.0));
    assert!(
        !uw.log().contains("lost systemd over D-Bus"),
        "the session ended:\n{}",
        uw.log()
    );
    let warnings = ignored(&uw);
    assert_eq!(warnings.len(), 1, "throttled to one: {warnings:#?}");
    // sender (dbus-send's unique name), path, member and why
    for said in [
        "WARN",
        ":1.",
        "/org/freedesktop/systemd1",
        "JobRemoved",
        "not sent by systemd",
    ] {
        assert!(warnings[0].contains(said), "no {said:?} in {}", warnings[0]);
    }
}

/// systemd's name on the bus (`GetNameOwner` of `org.freedesktop.systemd1`).
fn systemd_name(sb: &Sandbox) -> String {
    sb.sh("busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus GetNameOwner s org.freedesktop.systemd1")
        .trim()
        .to_owned()
}

/// `daemon-reexec` gives systemd a new name on the bus; unitwatch follows
/// it (the bus's `NameOwnerChanged`) and keeps taking systemd's signals: a
/// stop right after is seen at once. (The journal's records of it are not
/// used while D-Bus follows the unit, so only D-Bus can show it.)
#[test]
fn signals_are_taken_from_systemd_after_daemon_reexec() {
    let sb = sandbox!();
    let unit = "aitbc-stable.service";
    sb.write_unit(unit, STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", unit]);
    let uw = Unitwatch::start(&sb, "units = [\"aitbc-*.service\"]");
    let up = format!("service_up{{unit=\"{unit}\"}}");
    uw.wait_value(&up, WAIT, |v| v == 1.0);
    let before = systemd_name(&sb);
    sb.systemctl(&["daemon-reexec"]);
    let after = systemd_name(&sb);
    assert_ne!(before, after, "systemd has a new name on the bus");
    sb.systemctl(&["stop", unit]);
    uw.wait_value(&up, WAIT, |v| v == 0.0);
    sb.systemctl(&["start", unit]);
    uw.wait_value(&up, WAIT, |v| v == 1.0);
    assert!(ignored(&uw).is_empty(), "{:#?}", ignored(&uw));
    assert_eq!(uw.value("unitwatch_dbus_reconnects_total"), Some(0.0));
}

/// Resident anonymous memory of a process, KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read status")
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/PID/status")
}

/// The sum over all series of `family` whose labels contain `labels`.
fn sum(metrics: &str, family: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A storm far larger than the queue (shrunk to 16 signals): a reload, so
/// unitwatch is busy re-reading every unit, and at once all 200 units
/// restarted, twice. Signals are dropped, the overflow is counted, every
/// unit is read again, and every restart is still counted exactly once;
/// memory stays bounded.
#[test]
fn a_storm_larger_than_the_queue_loses_nothing() {
    const N: usize = 200;
    const ROUNDS: usize = 2;
    let sb = sandbox!();
    sb.write_unit("storm@.service", STABLE);
    sb.daemon_reload();
    let all = format!("storm@{{1..{N}}}.service");
    let bash = |script: &str| {
        let out = sb.exec(&["bash", "-c", script]);
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    bash(&format!("systemctl start {all}"));
    let dir = temp_dir("storm");
    let uw = Unitwatch::launch_via(
        &sb,
        "units = [\"storm@*.service\"]",
        "",
        &dir,
        &["env", "UNITWATCH_DBUS_QUEUE=16"],
    );
    let up = |m: &str| sum(m, "service_up", "storm@");
    wait_for(&format!("all {N} units up"), WAIT, || {
        (up(&uw.metrics()) == N as f64).then_some(())
    });
    let pid = uw.pid().expect("unitwatch runs");
    let before = rss_anon_kib(pid);
    let mut peak = before;
    let manual = |m: &str| sum(m, "service_restart_count_total", "trigger=\"manual\"");
    for round in 1..=ROUNDS {
        bash(&format!(
            "systemctl daemon-reload && systemctl restart {all}"
        ));
        let expected = (N * round) as f64;
        wait_for(
            &format!("{expected} manual restarts counted and every unit up"),
            Duration::from_secs(30),
            || {
                peak = peak.max(rss_anon_kib(pid));
                let m = uw.metrics();
                (manual(&m) >= expected && up(&m) == N as f64).then_some(())
            },
        );
    }
    // Nothing more arrives; then nothing may have been counted twice.
    let events = |m: &str| sum(m, "unitwatch_events_total", "");
    let mut last = events(&uw.metrics());
    let quiet = wait_for("events to stop arriving", WAIT, || {
        std::thread::sleep(Duration::from_millis(500));
        let m = uw.metrics();
        let now = events(&m);
        let still = now == last;
        last = now;
        still.then_some(m)
    });
    let overflows = common::unitwatch::value(&quiet, "unitwatch_dbus_overflows_total");
    eprintln!(
        "storm of {ROUNDS} × {N} restarts, queue 16: {overflows:?} overflows; RssAnon {before} KiB before, peak {peak} KiB, {} KiB after",
        rss_anon_kib(pid)
    );
    assert_eq!(manual(&quiet), (N * ROUNDS) as f64, "each restart once");
    assert_eq!(
        sum(&quiet, "service_restart_count_total", "trigger=\"auto\""),
        0.0
    );
    assert_eq!(sum(&quiet, "service_failures_total", ""), 0.0);
    assert!(
        overflows.is_some_and(|n| n >= 1.0),
        "the queue overflowed: {overflows:?}"
    );
    assert_eq!(
        common::unitwatch::value(&quiet, "unitwatch_dbus_reconnects_total"),
        Some(0.0),
        "an overflow is not a reconnect"
    );
    let log = uw.log();
    let logged = log.lines().filter(|l| l.contains("dropped them")).count();
    assert_eq!(
        Some(logged as f64),
        overflows,
        "one warning per overflow episode"
    );
    // The queue holds 16 signals; what a burst leaves behind is the history
    // of 400 restarts, some hundreds of KiB.
    assert!(
        peak <= before + 8 * 1024,
        "anonymous memory peaked at {peak} KiB, {before} KiB before the storm"
    );
}
