//! `[watch] user_managers` against a real systemd: a system unitwatch (root,
//! inside the sandbox) follows two users' managers, one running before it
//! starts and one started while it runs, over their private sockets. Their
//! units' series carry `user` (the name from the passwd database) and are
//! exact against each manager's own `NRestarts`; a system unit of the same
//! name keeps its own series, without `user`. Stopping one manager stops
//! following it, its units down, and harms neither the other nor the system
//! manager's; started again, it is followed again, its counters where they
//! were.

mod common;

use std::time::Duration;

use common::series::series;
use common::unitwatch::{cli_run, http_get, temp_dir, Unitwatch};
use common::{wait_for, Boot, Sandbox};

const WAIT: Duration = Duration::from_secs(30);
const WATCH: &str = "units = [\"demo.service\", \"crash.service\"]\nuser_managers = true";
const STABLE: &str = "[Service]\nExecStart=/bin/sleep infinity\n";
/// Fails (exit 3) on its first `FAILS` runs (from `~/crash.env`), restarted
/// by systemd each time, then runs for good: exactly `FAILS` automatic
/// restarts and `exit-code` failures.
const CRASH: &str = "[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestart=on-failure\n\
    RestartSec=100ms\nEnvironmentFile=%h/crash.env\n\
    ExecStart=/bin/sh -c 'n=$$(cat %h/crashes 2>/dev/null || echo 0); \
    [ \"$$n\" -ge \"$$FAILS\" ] && exec sleep infinity; echo $$((n + 1)) > %h/crashes; exit 3'\n";

/// The two users: UID, name (made by [`Sandbox::start_user`]), how often
/// their `crash.service` fails, how often their `demo.service` is restarted
/// by hand.
const ALICE: (u32, &str, u32, u32) = (4301, "uw4301", 2, 3);
const BOB: (u32, &str, u32, u32) = (4302, "uw4302", 1, 1);

/// `family{unit="UNIT",user="USER"EXTRA}`.
fn of(family: &str, unit: &str, user: &str, extra: &str) -> String {
    series(family, unit, &format!(",user=\"{user}\"{extra}"))
}

fn up(unit: &str, user: &str) -> String {
    of("service_up", unit, user, "")
}

fn restarts(unit: &str, user: &str, trigger: &str) -> String {
    of(
        "service_restart_count_total",
        unit,
        user,
        &format!(",trigger=\"{trigger}\""),
    )
}

fn manager_up(user: &str) -> String {
    format!("unitwatch_user_manager_up{{user=\"{user}\"}}")
}

/// `systemctl --user show -P PROPERTY UNIT` of user `uid`.
fn user_show(sb: &Sandbox, uid: u32, unit: &str, property: &str) -> String {
    sb.user_systemctl(uid, &["show", "-P", property, unit])
        .trim()
        .to_owned()
}

/// Starts `uid`'s crash.service and waits until it runs for good after its
/// `fails` failures; returns its `NRestarts` as its manager counts them.
fn crash_and_settle(sb: &Sandbox, uid: u32, fails: u32) -> f64 {
    sb.user_systemctl(uid, &["start", "crash.service"]);
    wait_for(
        &format!("crash.service of {uid} to run after {fails} failures"),
        WAIT,
        || {
            let restarts = user_show(sb, uid, "crash.service", "NRestarts");
            let sub = user_show(sb, uid, "crash.service", "SubState");
            (restarts == fails.to_string() && sub == "running").then_some(())
        },
    );
    user_show(sb, uid, "crash.service", "NRestarts")
        .parse()
        .expect("NRestarts")
}

/// Makes user `uid` (`uw<uid>`) whose crash.service fails `fails` times.
fn add_user(sb: &Sandbox, uid: u32, fails: u32) {
    sb.sh(&format!(
        "id -u uw{uid} >/dev/null 2>&1 || useradd -m -u {uid} uw{uid}; \
         echo FAILS={fails} > /home/uw{uid}/crash.env"
    ));
}

#[test]
fn every_user_manager_is_followed_apart_and_stops_being_followed_when_it_stops() {
    require_root!("to boot systemd in namespaces with user managers");
    let dir = temp_dir("users");
    let sb = Sandbox::boot(&Boot {
        binds: vec![dir.clone()],
        ..Boot::default()
    });
    // The units every user manager loads, and a system unit named as one.
    sb.sh("mkdir -p /etc/systemd/user");
    for (name, text) in [("demo.service", STABLE), ("crash.service", CRASH)] {
        let path = sb.path(&format!("/etc/systemd/user/{name}"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    sb.write_unit("demo.service", STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", "demo.service"]);
    // Alice's manager runs before unitwatch starts, Bob's starts after.
    let (a_uid, alice, a_fails, a_restarts) = ALICE;
    let (b_uid, bob, b_fails, b_restarts) = BOB;
    add_user(&sb, a_uid, a_fails);
    add_user(&sb, b_uid, b_fails);
    sb.start_user(a_uid);

    let uw = Unitwatch::setup(&dir)
        .sandbox(&sb)
        .watch(WATCH)
        .journal("backfill = \"0\"")
        .inside(None)
        .start();
    uw.wait_value(&manager_up(alice), WAIT, |v| v == 1.0);
    assert_eq!(uw.value(&manager_up(bob)), None, "{}", uw.metrics());
    let a_auto = crash_and_settle(&sb, a_uid, a_fails);
    sb.user_systemctl(a_uid, &["start", "demo.service"]);
    for _ in 0..a_restarts {
        sb.user_systemctl(a_uid, &["restart", "demo.service"]);
    }

    sb.start_user(b_uid);
    uw.wait_value(&manager_up(bob), WAIT, |v| v == 1.0);
    let b_auto = crash_and_settle(&sb, b_uid, b_fails);
    sb.user_systemctl(b_uid, &["start", "demo.service"]);
    for _ in 0..b_restarts {
        sb.user_systemctl(b_uid, &["restart", "demo.service"]);
    }
    sb.systemctl(&["restart", "demo.service"]);

    // Each manager's units exactly as it counts them.
    for (user, auto, fails, manual) in [
        (alice, a_auto, a_fails, a_restarts),
        (bob, b_auto, b_fails, b_restarts),
    ] {
        uw.wait_value(&restarts("crash.service", user, "auto"), WAIT, |v| {
            v == auto
        });
        uw.wait_value(&restarts("demo.service", user, "manual"), WAIT, |v| {
            v == f64::from(manual)
        });
        let exit_code = of(
            "service_failures_total",
            "crash.service",
            user,
            ",result=\"exit-code\"",
        );
        uw.wait_value(&exit_code, WAIT, |v| v == f64::from(fails));
        assert_eq!(uw.value(&up("demo.service", user)), Some(1.0));
        assert_eq!(uw.value(&up("crash.service", user)), Some(1.0));
        assert_eq!(uw.value(&restarts("demo.service", user, "auto")), Some(0.0));
        assert_eq!(
            uw.value(&restarts("crash.service", user, "manual")),
            Some(0.0)
        );
    }
    // The system unit of the same name: its own series, without `user`.
    let system_manual = series(
        "service_restart_count_total",
        "demo.service",
        ",trigger=\"manual\"",
    );
    uw.wait_value(&system_manual, WAIT, |v| v == 1.0);
    let metrics = uw.metrics();
    assert_eq!(
        common::unitwatch::value(&metrics, "service_up{unit=\"demo.service\"}"),
        Some(1.0)
    );
    let system_lines = metrics
        .lines()
        .filter(|l| l.contains("{unit=\"demo.service\""))
        .filter(|l| !l.contains(",user=\""))
        .count();
    assert!(system_lines >= 10, "the system unit's series:\n{metrics}");
    assert!(
        !metrics.contains("unit=\"crash.service\"}"),
        "no system crash.service, no series without user:\n{metrics}"
    );

    // The API names the user; a user's unit is asked for with ?user=.
    let (status, body) = http_get(
        &uw.addr,
        &format!("/api/v1/units/crash.service?user={alice}"),
    )
    .expect("GET");
    assert_eq!(status, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(detail["user"], alice);
    assert_eq!(detail["restarts"]["auto"], a_auto);
    let (status, _) = http_get(&uw.addr, "/api/v1/units/crash.service").expect("GET");
    assert_eq!(status, 404, "no system crash.service");
    let (_, list) = http_get(&uw.addr, "/api/v1/units").expect("GET");
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    let system = list["units"]
        .as_array()
        .and_then(|units| {
            units
                .iter()
                .find(|u| u["unit"] == "demo.service" && u["user"].is_null())
        })
        .cloned();
    assert!(
        system.is_some(),
        "the system demo.service, user null: {list}"
    );
    let out = cli_run(&["status", "--address", &uw.addr]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("demo.service ({alice})")),
        "{table}"
    );
    assert!(table.contains(&format!("crash.service ({bob})")), "{table}");

    // Bob's manager stops: no longer followed, his units down; Alice's and
    // the system's followed as before.
    sb.systemctl(&["stop", &format!("user@{b_uid}.service")]);
    uw.wait_value(&manager_up(bob), WAIT, |v| v == 0.0);
    uw.wait_value(&up("demo.service", bob), WAIT, |v| v == 0.0);
    uw.wait_value(&up("crash.service", bob), WAIT, |v| v == 0.0);
    sb.user_systemctl(a_uid, &["restart", "demo.service"]);
    sb.systemctl(&["restart", "demo.service"]);
    uw.wait_value(&restarts("demo.service", alice, "manual"), WAIT, |v| {
        v == f64::from(a_restarts + 1)
    });
    uw.wait_value(&system_manual, WAIT, |v| v == 2.0);
    assert_eq!(uw.value(&manager_up(alice)), Some(1.0));
    assert_eq!(uw.value("unitwatch_dbus_up"), Some(1.0));
    // A stop is no restart, and nothing was counted twice.
    assert_eq!(
        uw.value(&restarts("demo.service", bob, "manual")),
        Some(f64::from(b_restarts))
    );
    assert_eq!(
        uw.value(&restarts("crash.service", bob, "auto")),
        Some(b_auto)
    );

    // Back: followed again, the counters where they were, its units as its
    // manager has them (not started: down).
    sb.start_user(b_uid);
    uw.wait_value(&manager_up(bob), WAIT, |v| v == 1.0);
    sb.user_systemctl(b_uid, &["start", "demo.service"]);
    uw.wait_value(&up("demo.service", bob), WAIT, |v| v == 1.0);
    let downtime = of("service_downtime_seconds_total", "demo.service", bob, "");
    assert!(
        uw.value(&downtime).is_some_and(|d| d > 0.0),
        "down while his manager was away:\n{}",
        uw.metrics()
    );
    assert_eq!(
        uw.value(&restarts("demo.service", bob, "manual")),
        Some(f64::from(b_restarts))
    );
    assert_eq!(uw.value(&up("crash.service", bob)), Some(0.0));
    assert_eq!(uw.value(&manager_up(alice)), Some(1.0));
    let log = uw.log();
    assert!(
        log.contains(&format!("following the user manager of {bob} again")),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// `/metrics` of the unitwatch the sandbox runs as its service, on the
/// sandbox's own loopback; empty while it does not answer.
fn service_metrics(sb: &Sandbox) -> String {
    sb.sh("curl -sf http://127.0.0.1:9567/metrics || true")
}

/// Waits until the sandbox's unitwatch service exports `series` with a
/// value for which `ok` holds.
fn service_value(sb: &Sandbox, series: &str, ok: impl Fn(f64) -> bool) {
    let mut last = None;
    let found = common::try_wait_for(WAIT, || {
        last = common::unitwatch::value(&service_metrics(sb), series);
        last.filter(|v| ok(*v))
    });
    assert!(
        found.is_some(),
        "timed out after {WAIT:?} waiting on {series}; last value {last:?}\n{}\n{}",
        service_metrics(sb),
        sb.sh("journalctl -u unitwatch --no-pager | tail -n 30")
    );
}

/// The shipped unit runs unitwatch without privilege, so it cannot reach a
/// user manager (and says so); the shipped drop-in is what it needs.
#[test]
fn the_shipped_unit_reaches_user_managers_only_with_the_shipped_drop_in() {
    require_root!("to boot systemd in namespaces with a user manager");
    let sb = Sandbox::boot(&Boot::default());
    let (uid, user, _, _) = ALICE;
    let root = common::shipped::root();
    sb.sh("mkdir -p /etc/systemd/user /etc/unitwatch");
    std::fs::write(sb.path("/etc/systemd/user/demo.service"), STABLE).expect("user unit");
    std::fs::write(
        sb.path("/etc/unitwatch/config.toml"),
        format!("[server]\nlisten = \"127.0.0.1:9567\"\n[watch]\n{WATCH}\n"),
    )
    .expect("config");
    // Installed as the package installs it: binary, system user, unit.
    sb.sh(&format!(
        "cp {bin} /usr/bin/unitwatch && systemd-sysusers {root}/packaging/debian/unitwatch.sysusers \
         && cp {root}/units/unitwatch.service /etc/systemd/system/",
        bin = env!("CARGO_BIN_EXE_unitwatch"),
        root = root.display(),
    ));
    sb.start_user(uid);
    sb.user_systemctl(uid, &["start", "demo.service"]);
    sb.daemon_reload();
    sb.systemctl(&["start", "unitwatch.service"]);
    service_value(&sb, &manager_up(user), |v| v == 0.0);
    // Logged once it is time to retry.
    let logged = format!("cannot reach the user manager of {user}");
    let found = common::try_wait_for(WAIT, || {
        let n = sb.sh(&format!(
            "journalctl -u unitwatch -o cat | grep -c '{logged}' || true"
        ));
        (n.trim() != "0").then_some(())
    });
    assert!(
        found.is_some(),
        "the unreachable manager is logged:\n{}",
        sb.sh("journalctl -u unitwatch -o cat --no-pager | tail -n 20")
    );
    assert!(!service_metrics(&sb).contains(",user=\""));

    sb.sh(&format!(
        "install -D -m 644 {}/packaging/systemd/user-managers.conf \
         /etc/systemd/system/unitwatch.service.d/user-managers.conf",
        root.display()
    ));
    sb.daemon_reload();
    sb.systemctl(&["restart", "unitwatch.service"]);
    service_value(&sb, &manager_up(user), |v| v == 1.0);
    service_value(&sb, &up("demo.service", user), |v| v == 1.0);
    assert_eq!(
        sb.show("unitwatch.service", "CapabilityBoundingSet"),
        "cap_dac_override"
    );
    assert_eq!(sb.show("unitwatch.service", "NoNewPrivileges"), "yes");
}

/// `user_managers` follows the managers beside the system manager; with
/// `--user` (a user's own manager) it is an error, before anything runs.
#[test]
fn user_managers_with_user_is_a_one_line_error() {
    let dir = temp_dir("users-cli");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[watch]\n{WATCH}\n[state]\ndir = \"{}\"\n",
            dir.join("state").display()
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let out = cli_run(&["check-config", &config]);
    assert!(out.status.success(), "{out:?}");
    let out = cli_run(&[
        "--user",
        "--config",
        &config,
        "--web.listen-address",
        "127.0.0.1:0",
    ]);
    common::unitwatch::assert_error(
        &out,
        &format!("unitwatch: {config}: watch.user_managers follows the user managers beside the system manager; it cannot be used with --user"),
    );
    assert!(!dir.join("state").exists(), "nothing was written");
}
