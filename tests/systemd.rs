//! unitwatch against a real systemd booted in namespaces: `/metrics` read over
//! HTTP while units start, stop, crash and restart.

mod common;

use std::time::Duration;

use common::series::{downtime, failures, restarts, up, uptime};
use common::unitwatch::Unitwatch;
use common::{wait_for, Sandbox};

const STABLE: &str = "[Service]\nExecStart=/bin/sleep infinity\n";
const WAIT: Duration = Duration::from_secs(15);

fn n_restarts(sb: &Sandbox, unit: &str) -> f64 {
    sb.show(unit, "NRestarts")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("NRestarts of {unit} is not a number"))
}

/// A stable unit: up, uptime grows, no downtime; a manual restart counts once
/// as manual; a stop is seen within 1 s and downtime grows from then on.
#[test]
fn stable_unit_up_restart_and_stop() {
    let sb = sandbox!();
    let unit = "aitbc-stable.service";
    // Another watched unit, whose changes mark a point in systemd's signals.
    let stable = "aitbc-marker.service";
    sb.write_unit(unit, STABLE);
    sb.write_unit(stable, STABLE);
    sb.write_unit("unmatched.service", STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", unit, stable, "unmatched.service"]);

    let uw = Unitwatch::start(&sb, "units = [\"aitbc-*.service\"]");
    uw.wait_value(&up(unit), WAIT, |v| v == 1.0);
    let u1 = uw.wait_value(&uptime(unit), WAIT, |_| true);
    uw.wait_value(&uptime(unit), WAIT, |v| v > u1);
    assert_eq!(
        uw.value(&downtime(unit)),
        Some(0.0),
        "a stable unit has no downtime"
    );
    assert_eq!(uw.value(&restarts(unit, "auto")), Some(0.0));
    assert_eq!(uw.value(&restarts(unit, "manual")), Some(0.0));

    // 6. units that match no pattern are absent
    let text = uw.metrics();
    assert!(
        !text.contains("unmatched.service"),
        "unmatched unit exported:\n{text}"
    );

    // 4. systemctl restart: exactly one manual restart, no automatic one
    let before = uw.wait_value(
        &format!("service_state_change_timestamp_seconds{{unit=\"{unit}\"}}"),
        WAIT,
        |_| true,
    );
    sb.systemctl(&["restart", unit]);
    uw.wait_value(&restarts(unit, "manual"), WAIT, |v| v >= 1.0);
    uw.wait_value(
        &format!("service_state_change_timestamp_seconds{{unit=\"{unit}\"}}"),
        WAIT,
        |v| v > before,
    );
    uw.wait_value(&up(unit), WAIT, |v| v == 1.0);
    // Anything still in flight about the restart is applied before a later
    // change of another watched unit (systemd's signals are ordered on the
    // connection): wait for one, then the restart must still count once.
    sb.systemctl(&["stop", stable]);
    uw.wait_value(&up(stable), WAIT, |v| v == 0.0);
    assert_eq!(uw.value(&restarts(unit, "manual")), Some(1.0));
    assert_eq!(uw.value(&restarts(unit, "auto")), Some(0.0));
    sb.systemctl(&["start", stable]);
    uw.wait_value(&up(stable), WAIT, |v| v == 1.0);

    // 2. systemctl stop: service_up 0 within 1 s, then downtime grows
    sb.systemctl(&["stop", unit]);
    uw.wait_value(&up(unit), Duration::from_secs(1), |v| v == 0.0);
    let d1 = uw.wait_value(&downtime(unit), WAIT, |_| true);
    uw.wait_value(&downtime(unit), WAIT, |v| v > d1);
    assert_eq!(
        uw.value(&restarts(unit, "manual")),
        Some(1.0),
        "a stop is not a restart"
    );

    // a plain start after the stop is not a restart either
    sb.systemctl(&["start", unit]);
    uw.wait_value(&up(unit), WAIT, |v| v == 1.0);
    assert_eq!(uw.value(&restarts(unit, "manual")), Some(1.0));
}

/// Case 3: a unit that exits 1 after ~1 s with Restart=always: every crash is one
/// automatic restart and one exit-code failure, matching systemd's NRestarts
/// and the journal.
#[test]
fn crashing_unit_restarts_match_nrestarts() {
    let sb = sandbox!();
    let unit = "aitbc-crash.service";
    sb.write_unit(
        unit,
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'sleep 1; exit 1'\nRestart=always\nRestartSec=1\n",
    );
    sb.daemon_reload();
    let uw = Unitwatch::start(&sb, "units = [\"aitbc-crash.service\"]");
    sb.systemctl(&["start", unit]);

    // each crash adds exactly one, in step with NRestarts
    for n in 1..=3 {
        wait_for(&format!("NRestarts >= {n}"), WAIT, || {
            (n_restarts(&sb, unit) >= n as f64).then_some(())
        });
        uw.wait_value(&restarts(unit, "auto"), WAIT, |v| v >= n as f64);
    }
    // NRestarts is reset by a stop; systemd's journal keeps the count.
    sb.systemctl(&["stop", unit]);
    let systemd_restarts = sb.journal_count(unit, "Scheduled restart job");
    let journal_failures = sb.journal_count(unit, "Failed with result 'exit-code'");
    uw.wait_value(&restarts(unit, "auto"), WAIT, |v| v == systemd_restarts);
    uw.wait_value(&failures(unit, "exit-code"), WAIT, |v| {
        v == journal_failures
    });
    assert!(systemd_restarts >= 3.0);
    assert_eq!(uw.value(&restarts(unit, "manual")), Some(0.0));
}

/// A unit that flaps many times between two scrapes shows all its restarts.
#[test]
fn flapping_between_two_scrapes_counts_every_restart() {
    let sb = sandbox!();
    let unit = "aitbc-flap.service";
    sb.write_unit(
        unit,
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=200ms\n",
    );
    sb.daemon_reload();
    let uw = Unitwatch::start(&sb, "units = [\"aitbc-flap.service\"]");
    assert_eq!(uw.value(&restarts(unit, "auto")), Some(0.0), "first scrape");

    sb.systemctl(&["start", unit]);
    wait_for("NRestarts >= 5", WAIT, || {
        (n_restarts(&sb, unit) >= 5.0).then_some(())
    });
    // Stopping resets NRestarts; systemd's journal keeps the count.
    sb.systemctl(&["stop", unit]);
    let n: f64 = sb
        .sh(&format!(
            "journalctl -u {unit} -o cat | grep -c 'Scheduled restart job' || true"
        ))
        .trim()
        .parse()
        .expect("a count from the journal");
    assert!(n >= 5.0, "only {n} restarts in the journal");
    // second scrape: all of them
    uw.wait_value(&restarts(unit, "auto"), WAIT, |v| v == n);
}

/// Case 5: a unit file created after unitwatch started, and a template instance,
/// appear once systemd announces them; excluded and unmatched units never do.
#[test]
fn units_appearing_later_are_picked_up() {
    let sb = sandbox!();
    sb.write_unit("aitbc-excluded.service", STABLE);
    sb.write_unit("other.service", STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", "aitbc-excluded.service", "other.service"]);
    let uw = Unitwatch::start(
        &sb,
        "units = [\"aitbc-*.service\"]\nexclude = [\"aitbc-excluded.service\"]",
    );

    sb.write_unit("aitbc-late.service", STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", "aitbc-late.service"]);
    uw.wait_value(&up("aitbc-late.service"), WAIT, |v| v == 1.0);

    sb.write_unit("aitbc-worker@.service", STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", "aitbc-worker@3.service"]);
    uw.wait_value(&up("aitbc-worker@3.service"), WAIT, |v| v == 1.0);

    // a unit file that exists but never ran is exported as down
    sb.write_unit("aitbc-idle.service", STABLE);
    sb.daemon_reload();
    uw.wait_value(&up("aitbc-idle.service"), WAIT, |v| v == 0.0);

    let text = uw.metrics();
    for absent in [
        "aitbc-excluded.service",
        "other.service",
        "aitbc-worker@.service",
    ] {
        assert!(
            !text.contains(&format!("unit=\"{absent}\"")),
            "{absent} exported:\n{text}"
        );
    }
}

/// Run by systemd as a `Type=notify` service: it becomes active only once
/// READY=1 is sent, shows its status line, and a stuck process (SIGSTOP) is
/// restarted by the watchdog.
#[test]
fn notify_readiness_status_and_watchdog() {
    let sb = sandbox!();
    sb.write_unit("aitbc-stable.service", STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", "aitbc-stable.service"]);
    std::fs::write(
        sb.path("/run/unitwatch-test.toml"),
        "[server]\nlisten = \"127.0.0.1:9567\"\n[watch]\nunits = [\"aitbc-*.service\"]\n",
    )
    .expect("write config");
    sb.write_unit(
        "unitwatch.service",
        &format!(
            "[Service]\nType=notify\nExecStart={} --config /run/unitwatch-test.toml\nWatchdogSec=2\nRestart=on-failure\nRestartSec=100ms\n",
            env!("CARGO_BIN_EXE_unitwatch")
        ),
    );
    sb.daemon_reload();
    // `systemctl start` of a Type=notify unit returns once READY=1 arrived.
    sb.systemctl(&["start", "unitwatch.service"]);
    assert_eq!(sb.show("unitwatch.service", "ActiveState"), "active");
    assert_eq!(
        sb.show("unitwatch.service", "StatusText"),
        "watching 1 unit"
    );

    let pid = sb.show("unitwatch.service", "MainPID");
    sb.sh(&format!("kill -STOP {pid}"));
    wait_for("the watchdog to restart unitwatch", WAIT, || {
        (sb.show("unitwatch.service", "NRestarts") == "1"
            && sb.show("unitwatch.service", "ActiveState") == "active")
            .then_some(())
    });
    let result =
        sb.sh("journalctl -u unitwatch.service -o cat | grep -c 'Watchdog timeout' || true");
    assert_eq!(result.trim(), "1", "the restart was the watchdog's");
}

/// The system bus goes away (dbus-daemon killed) while a unit crash-loops:
/// /healthz says so, unitwatch reconnects once the bus is back, and every
/// restart and failure of the gap is counted once.
#[test]
fn survives_the_bus_going_away() {
    let sb = sandbox!();
    let unit = "aitbc-crash.service";
    sb.write_unit(
        unit,
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'sleep 0.5; exit 1'\nRestart=always\nRestartSec=300ms\n",
    );
    sb.daemon_reload();
    let uw = Unitwatch::start(&sb, "units = [\"aitbc-*.service\"]");
    sb.systemctl(&["start", unit]);
    uw.wait_value(&restarts(unit, "auto"), WAIT, |v| v >= 1.0);

    sb.systemctl(&["kill", "--signal=SIGKILL", "dbus.service"]);
    wait_for(
        "/healthz to report the lost bus",
        WAIT,
        || match common::unitwatch::http_get(&uw.addr, "/healthz") {
            Ok((503, body)) => Some(body),
            _ => None,
        },
    );
    // The next connection attempt socket-activates a new dbus-daemon.
    wait_for("/healthz to recover", WAIT, || {
        matches!(
            common::unitwatch::http_get(&uw.addr, "/healthz"),
            Ok((200, _))
        )
        .then_some(())
    });
    uw.wait_value("unitwatch_dbus_reconnects_total", WAIT, |v| v >= 1.0);
    uw.wait_value("unitwatch_dbus_up", WAIT, |v| v == 1.0);
    // The sampler, on a connection of its own, reads again too.
    let back = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    uw.wait_value("unitwatch_sample_timestamp_seconds", WAIT, |v| v > back);
    uw.wait_value("systemd_system_state{state=\"running\"}", WAIT, |v| {
        v == 1.0
    });

    sb.systemctl(&["stop", unit]);
    uw.wait_value(&restarts(unit, "auto"), WAIT, |v| {
        v == sb.journal_count(unit, "Scheduled restart job")
    });
    uw.wait_value(&failures(unit, "exit-code"), WAIT, |v| {
        v == sb.journal_count(unit, "Failed with result 'exit-code'")
    });
}

/// `systemctl daemon-reexec` and a storm of 50 `daemon-reload`s while a unit
/// crash-loops and another is restarted by hand: nothing lost, nothing
/// counted twice.
#[test]
fn reexec_and_reload_storm_lose_nothing() {
    let sb = sandbox!();
    let (crash, stable) = ("aitbc-crash.service", "aitbc-stable.service");
    sb.write_unit(
        crash,
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'sleep 0.3; exit 1'\nRestart=always\nRestartSec=200ms\n",
    );
    sb.write_unit(stable, STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", stable]);
    let uw = Unitwatch::start(&sb, "units = [\"aitbc-*.service\"]");
    sb.systemctl(&["start", crash]);
    uw.wait_value(&restarts(crash, "auto"), WAIT, |v| v >= 1.0);

    sb.systemctl(&["daemon-reexec"]);
    sb.systemctl(&["restart", stable]);
    sb.sh("for i in $(seq 50); do systemctl daemon-reload; done");
    sb.systemctl(&["restart", stable]);

    sb.systemctl(&["stop", crash]);
    let auto = sb.journal_count(crash, "Scheduled restart job");
    assert!(auto >= 2.0, "only {auto} restarts");
    uw.wait_value(&restarts(crash, "auto"), WAIT, |v| v == auto);
    uw.wait_value(&failures(crash, "exit-code"), WAIT, |v| {
        v == sb.journal_count(crash, "Failed with result 'exit-code'")
    });
    uw.wait_value(&restarts(stable, "manual"), WAIT, |v| v == 2.0);
    assert_eq!(uw.value(&restarts(crash, "manual")), Some(0.0));
    assert_eq!(uw.value(&up(stable)), Some(1.0));
}

/// Label cardinality: beyond `watch.max_units` units are not exported, are
/// counted, and the warning is logged once.
#[test]
fn max_units_caps_what_is_exported() {
    let sb = sandbox!();
    for i in 1..=4 {
        sb.write_unit(&format!("aitbc-w{i}.service"), STABLE);
    }
    sb.daemon_reload();
    sb.systemctl(&[
        "start",
        "aitbc-w1.service",
        "aitbc-w2.service",
        "aitbc-w3.service",
    ]);
    let uw = Unitwatch::start(&sb, "units = [\"aitbc-*.service\"]\nmax_units = 2");
    uw.wait_value("unitwatch_units_dropped", WAIT, |v| v == 2.0);
    sb.systemctl(&["start", "aitbc-w4.service"]);
    // The start of a dropped unit is applied before a later change of an
    // exported one (systemd's signals are ordered): wait for that change.
    sb.systemctl(&["stop", "aitbc-w1.service"]);
    uw.wait_value(&up("aitbc-w1.service"), WAIT, |v| v == 0.0);
    assert_eq!(uw.value("unitwatch_units_dropped"), Some(2.0));
    assert_eq!(uw.value("unitwatch_units_watched"), Some(2.0));
    let exported = uw.metrics().matches("service_up{").count();
    assert_eq!(exported, 2);
    assert_eq!(
        uw.log().matches("watch.max_units").count(),
        1,
        "{}",
        uw.log()
    );
}

/// Unit names as systemd makes them: escapes (`\x2d`, escaped UTF-8), `@`
/// instances, the longest name systemd accepts, and a Unicode description.
/// Every one is exported with its exact name as a valid label value, and
/// promtool parses the exposition.
#[test]
fn escaped_instance_long_and_unicode_names_are_exported_intact() {
    let sb = sandbox!();
    // 255 characters: systemd's limit (UNIT_NAME_MAX - 1).
    let long = format!("aitbc-{}.service", "l".repeat(255 - "aitbc-.service".len()));
    sb.write_unit(&long, STABLE);
    sb.write_unit("aitbc-worker@.service", STABLE);
    sb.write_unit(
        "aitbc-gr\\xc3\\xb6\\xc3\\x9fe.service",
        "[Unit]\nDescription=Größe ✓ 日本語 \"quoted\" \\ back\n[Service]\nExecStart=/bin/sleep infinity\n",
    );
    sb.daemon_reload();
    let names = [
        long.as_str(),
        "aitbc-worker@gpu\\x2d0.service",
        "aitbc-worker@ünï.service",
        "aitbc-gr\\xc3\\xb6\\xc3\\x9fe.service",
    ];
    // systemctl escapes what a unit name cannot hold.
    let escaped: Vec<String> = names
        .iter()
        .map(|n| {
            let out = sb.exec(&["systemd-escape", "--mangle", n]);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    let mut start = vec!["start"];
    start.extend(escaped.iter().map(String::as_str));
    sb.systemctl(&start);
    let uw = Unitwatch::start(&sb, "units = [\"aitbc-*.service\"]");
    for name in &escaped {
        // In the exposition a backslash in a label value is doubled.
        let label = name.replace('\\', "\\\\");
        uw.wait_value(&format!("service_up{{unit=\"{label}\"}}"), WAIT, |v| {
            v == 1.0
        });
    }
    let dir = common::unitwatch::temp_dir("names");
    let file = dir.join("metrics.txt");
    // promtool reads the Prometheus text format, which has no `info` type:
    // that one family (no unit label) is left out.
    let text: String = uw
        .metrics()
        .lines()
        .filter(|l| !l.contains("unitwatch_build"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, text).expect("write metrics");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("run promtool (scripts/setup installs it)");
    // It parses the exposition (a bad label value is a parse error); its
    // lints about `_total` names without their own HELP come from reading
    // OpenMetrics as the older text format, and are not errors here.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!said.contains("error"), "promtool check metrics: {said}");
    assert!(
        said.lines().all(|l| l.ends_with("no help text")),
        "promtool check metrics: {said}"
    );
}
