//! History from the journal and persisted counters, against a real systemd
//! and journald: what happened while unitwatch was stopped or killed is
//! counted exactly once, backfill reaches before the first start, a corrupt
//! state file is set aside, and rotation does not disturb accounting.

mod common;

use std::time::Duration;

use common::series::{auto, exit_code, manual, series};
use common::unitwatch::{temp_dir, Unitwatch};
use common::{wait_for, Sandbox};

const WAIT: Duration = Duration::from_secs(20);
const STABLE: &str = "[Service]\nExecStart=/bin/sleep infinity\n";
const WATCH: &str = "units = [\"aitbc-*.service\"]";

/// A unit that fails `n` times (exit 1, restarted by systemd after
/// `restart_sec`) and then keeps running, so its NRestarts ends at `n`.
fn fails_then_runs(n: u32, restart_sec: &str) -> String {
    format!(
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestart=on-failure\nRestartSec={restart_sec}\n\
         ExecStart=/bin/sh -c 'f=/run/$$(basename $$0).count; c=$$(cat $$f 2>/dev/null || echo 0); \
         echo $$((c+1)) > $$f; [ $$c -ge {n} ] && exec sleep infinity; exit 1' %n\n"
    )
}

fn wait_settled(sb: &Sandbox, unit: &str, n: u32) {
    wait_for(
        &format!("{unit} to settle after {n} restarts"),
        WAIT,
        || {
            (sb.show(unit, "NRestarts") == n.to_string() && sb.show(unit, "SubState") == "running")
                .then_some(())
        },
    );
}

/// The __REALTIME_TIMESTAMP (seconds) of the last record of `unit` whose
/// message starts with `text`.
fn record_time(sb: &Sandbox, unit: &str, text: &str) -> f64 {
    let out = sb.sh(&format!(
        "journalctl -u {unit} -o export | awk -v t='MESSAGE={text}' \
         '/^__REALTIME_TIMESTAMP=/ {{ ts = substr($0, 22) }} index($0, t) == 1 {{ last = ts }} END {{ print last }}'"
    ));
    out.trim()
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("no record `{text}` of {unit}: {out:?}"))
        / 1e6
}

/// Test 1: unitwatch stopped; a unit restarts three times and a stable unit
/// is down for a while; unitwatch started again counts both, as the journal
/// shows them.
#[test]
fn what_happened_while_stopped_is_counted() {
    let sb = sandbox!();
    let (crash, stable) = ("aitbc-crash.service", "aitbc-stable.service");
    sb.write_unit(crash, &fails_then_runs(3, "300ms"));
    sb.write_unit(stable, STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", stable]);
    let dir = temp_dir("stopped");
    let mut uw = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &dir);
    uw.wait_value(&series("service_up", stable, ""), WAIT, |v| v == 1.0);
    assert_eq!(uw.stop().and_then(|s| s.code()), Some(0));
    assert!(uw.state_file().exists(), "state saved at SIGTERM");

    sb.systemctl(&["start", crash]);
    wait_settled(&sb, crash, 3);
    sb.systemctl(&["stop", stable]);
    // A span of downtime to measure; nothing is waited for here.
    std::thread::sleep(Duration::from_millis(1500));
    sb.systemctl(&["start", stable]);
    let down = record_time(&sb, stable, "Started") - record_time(&sb, stable, "Stopping");

    let uw = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &dir);
    let restarts = sb.journal_count(crash, "Scheduled restart job");
    assert_eq!(restarts, 3.0);
    uw.wait_value(&auto(crash), WAIT, |v| v == restarts);
    uw.wait_value(&exit_code(crash), WAIT, |v| {
        v == sb.journal_count(crash, "Failed with result 'exit-code'")
    });
    let measured = uw.wait_value(
        &series("service_downtime_seconds_total", stable, ""),
        WAIT,
        |v| v > 0.0,
    );
    assert!(
        (measured - down).abs() < 0.01,
        "downtime {measured} s, the journal says {down} s"
    );
    assert_eq!(uw.value(&manual(stable)), Some(0.0));
}

/// Test 2 and 6: kill -9 while a unit flaps dozens of times; after the
/// restart no counter went backwards and the totals equal systemd's
/// NRestarts: D-Bus and the journal reporting the same restarts count once.
#[test]
fn kill_9_while_flapping_loses_and_doubles_nothing() {
    let sb = sandbox!();
    let unit = "aitbc-flap.service";
    let n = 30;
    sb.write_unit(unit, &fails_then_runs(n, "150ms"));
    sb.daemon_reload();
    let dir = temp_dir("kill9");
    let mut uw = Unitwatch::launch(&sb, WATCH, "", &dir);
    sb.systemctl(&["start", unit]);
    wait_for("a saved state", WAIT, || {
        uw.state_file().exists().then_some(())
    });
    let before = uw.wait_value(&auto(unit), WAIT, |v| v >= 3.0);
    uw.kill9();
    let uw = Unitwatch::launch(&sb, WATCH, "", &dir);
    let after = uw.wait_value(&auto(unit), WAIT, |_| true);
    assert!(
        after >= before,
        "auto restarts went back from {before} to {after}"
    );
    wait_settled(&sb, unit, n);
    uw.wait_value(&auto(unit), WAIT, |v| v == f64::from(n));
    uw.wait_value(&exit_code(unit), WAIT, |v| v == f64::from(n));
    assert_eq!(
        sb.journal_count(unit, "Scheduled restart job"),
        f64::from(n)
    );
    assert_eq!(uw.value(&manual(unit)), Some(0.0));
}

/// Test 3: on a first start, backfill counts restarts from before unitwatch
/// was ever installed; with `backfill = "0"` they are not counted.
#[test]
fn backfill_reaches_before_the_first_start() {
    let sb = sandbox!();
    let unit = "aitbc-old.service";
    sb.write_unit(unit, &fails_then_runs(4, "100ms"));
    sb.daemon_reload();
    sb.systemctl(&["start", unit]);
    wait_settled(&sb, unit, 4);

    let with = Unitwatch::start(&sb, WATCH);
    with.wait_value(&auto(unit), WAIT, |v| v == 4.0);
    with.wait_value(&exit_code(unit), WAIT, |v| v == 4.0);

    let without = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &temp_dir("nobackfill"));
    without.wait_value(&series("service_up", unit, ""), WAIT, |v| v == 1.0);
    assert_eq!(without.value(&auto(unit)), Some(0.0));
    assert!(!without.metrics().contains(&exit_code(unit)));
}

/// Test 4: a corrupt state file is logged, kept aside, and the counts are
/// rebuilt from the journal.
#[test]
fn corrupt_state_is_kept_aside_and_rebuilt_from_the_journal() {
    let sb = sandbox!();
    let unit = "aitbc-crash.service";
    sb.write_unit(unit, &fails_then_runs(2, "100ms"));
    sb.daemon_reload();
    sb.systemctl(&["start", unit]);
    wait_settled(&sb, unit, 2);
    let dir = temp_dir("corrupt");
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    std::fs::write(
        dir.join("state/state.json"),
        "{\"version\": 1, \"ledger\": tru",
    )
    .expect("write");

    let uw = Unitwatch::launch(&sb, WATCH, "", &dir);
    uw.wait_value(&auto(unit), WAIT, |v| v == 2.0);
    assert_eq!(
        std::fs::read_to_string(dir.join("state/state.json.corrupt")).expect("kept aside"),
        "{\"version\": 1, \"ledger\": tru"
    );
    assert!(
        uw.log().contains("state file is corrupt"),
        "log:\n{}",
        uw.log()
    );
}

/// Test 5: the journal rotated and vacuumed under a live unitwatch:
/// accounting continues and still matches systemd.
#[test]
fn rotation_and_vacuum_while_live() {
    let sb = sandbox!();
    let unit = "aitbc-flap.service";
    let n = 12;
    sb.write_unit(unit, &fails_then_runs(n, "300ms"));
    sb.daemon_reload();
    let uw = Unitwatch::start(&sb, WATCH);
    sb.systemctl(&["start", unit]);
    for round in 1..=3 {
        uw.wait_value(&auto(unit), WAIT, |v| v >= f64::from(round * 2));
        sb.sh("journalctl --rotate && journalctl --vacuum-files=1 >/dev/null 2>&1");
    }
    wait_settled(&sb, unit, n);
    uw.wait_value(&auto(unit), WAIT, |v| v == f64::from(n));
    uw.wait_value(&exit_code(unit), WAIT, |v| v == f64::from(n));
    let (status, body) = common::unitwatch::http_get(&uw.addr, "/healthz").expect("healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("journal: reading"), "{body}");
}

/// Degraded mode: an unreadable journal is said once, on `/healthz` and in
/// `unitwatch_journal_up`, and D-Bus accounting goes on.
#[test]
fn unreadable_journal_degrades_to_dbus_alone() {
    let sb = sandbox!();
    sb.write_unit("aitbc-stable.service", STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", "aitbc-stable.service"]);
    let dir = temp_dir("nojournal");
    std::fs::write(dir.join("not-a-directory"), "").expect("write");
    let uw = Unitwatch::launch(
        &sb,
        WATCH,
        &format!("directory = \"{}\"", dir.join("not-a-directory").display()),
        &dir,
    );
    uw.wait_value(
        &series("service_up", "aitbc-stable.service", ""),
        WAIT,
        |v| v == 1.0,
    );
    assert_eq!(uw.value("unitwatch_journal_up"), Some(0.0));
    let (status, body) = common::unitwatch::http_get(&uw.addr, "/healthz").expect("healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("journal: degraded"), "{body}");
    assert_eq!(
        uw.log().matches("cannot open the journal").count(),
        1,
        "{}",
        uw.log()
    );
}

/// A full state directory, then a read-only one: unitwatch keeps serving
/// from memory, says so in its log once per episode, retries, and saves
/// again once it can.
#[test]
fn full_state_directory_is_survived() {
    let sb = sandbox!();
    let unit = "aitbc-stable.service";
    sb.write_unit(unit, STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", unit]);
    let dir = temp_dir("full");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    // unitwatch gets a private 64 KiB tmpfs as its state directory.
    let state_arg = state.display().to_string();
    let uw = Unitwatch::launch_via(
        &sb,
        WATCH,
        "",
        &dir,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs \"$0\" && exec \"$@\"",
            &state_arg,
        ],
    );
    let pid = uw.pid().expect("running");
    let inside = std::path::PathBuf::from(format!("/proc/{pid}/root{}", state.display()));
    wait_for("a first save", WAIT, || {
        inside.join("state.json").exists().then_some(())
    });
    // Fill it up, then give unitwatch something to save.
    let filler = inside.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 128 * 1024]);
    sb.systemctl(&["restart", unit]);
    wait_for(
        "the failed save to be logged",
        Duration::from_secs(30),
        || uw.log().contains("cannot save the state").then_some(()),
    );
    uw.wait_value(&manual(unit), WAIT, |v| v == 1.0);
    // Room again: the retry saves without anything new to save.
    std::fs::remove_file(&filler).expect("remove filler");
    wait_for(
        "the state to be saved again",
        Duration::from_secs(30),
        || uw.log().contains("state saved again").then_some(()),
    );
    let saved = std::fs::read_to_string(inside.join("state.json")).expect("state");
    assert!(saved.contains("aitbc-stable.service"));
    assert_eq!(
        uw.log().matches("cannot save the state").count(),
        1,
        "{}",
        uw.log()
    );

    // Read-only, then writable again: the same.
    let remount = |mode: &str| {
        let status = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "mount", "-o"])
            .arg(format!("remount,{mode}"))
            .arg(&state)
            .status()
            .expect("run nsenter");
        assert!(status.success(), "remount {mode}");
    };
    remount("ro");
    sb.systemctl(&["restart", unit]);
    uw.wait_value(&manual(unit), WAIT, |v| v == 2.0);
    wait_for(
        "the failed save to a read-only directory to be logged",
        Duration::from_secs(30),
        || (uw.log().matches("cannot save the state").count() == 2).then_some(()),
    );
    remount("rw");
    wait_for(
        "the state to be saved again after the remount",
        Duration::from_secs(30),
        || (uw.log().matches("state saved again").count() == 2).then_some(()),
    );
    let saved = std::fs::read_to_string(inside.join("state.json")).expect("state");
    assert!(
        saved.contains(r#""restarts":{"auto":0,"manual":2}"#),
        "{saved}"
    );
}

/// `kill -9` twenty times at varying moments while a unit flaps: after each
/// restart no counter is lower than before, and the totals end equal to
/// systemd's NRestarts and the journal.
#[test]
fn kill_9_twenty_times() {
    let sb = sandbox!();
    let unit = "aitbc-flap.service";
    let n = 40;
    sb.write_unit(unit, &fails_then_runs(n, "100ms"));
    sb.daemon_reload();
    let dir = temp_dir("kill9x20");
    sb.systemctl(&["start", unit]);
    let mut seed = u64::from(std::process::id());
    let mut last = (0.0, 0.0);
    for round in 0..20 {
        let mut uw = Unitwatch::launch(&sb, WATCH, "", &dir);
        let now = (
            uw.value(&auto(unit)).unwrap_or(0.0),
            uw.value(&exit_code(unit)).unwrap_or(0.0),
        );
        assert!(
            now.0 >= last.0 && now.1 >= last.1,
            "round {round}: counters went back from {last:?} to {now:?}"
        );
        last = now;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 400));
        uw.kill9();
    }
    wait_settled(&sb, unit, n);
    let uw = Unitwatch::launch(&sb, WATCH, "", &dir);
    uw.wait_value(&auto(unit), WAIT, |v| v == f64::from(n));
    uw.wait_value(&exit_code(unit), WAIT, |v| v == f64::from(n));
    assert_eq!(
        sb.journal_count(unit, "Scheduled restart job"),
        f64::from(n)
    );
}

/// The saved position rotated and vacuumed away while unitwatch was
/// stopped: it continues from the next record the journal has, logs the gap
/// and counts it in `unitwatch_journal_gaps_total`.
#[test]
fn vacuumed_position_is_a_counted_gap() {
    let sb = sandbox!();
    let unit = "aitbc-stable.service";
    sb.write_unit(unit, STABLE);
    sb.daemon_reload();
    sb.systemctl(&["start", unit]);
    let dir = temp_dir("gap");
    let mut uw = Unitwatch::launch(&sb, WATCH, "", &dir);
    sb.systemctl(&["restart", unit]);
    uw.wait_value(&manual(unit), WAIT, |v| v == 1.0);
    assert_eq!(uw.stop().and_then(|s| s.code()), Some(0));
    // The record under the saved cursor goes into an archived file, which
    // is then deleted; later records stay.
    sb.sh("journalctl --rotate");
    sb.systemctl(&["restart", unit]);
    sb.sh("journalctl --rotate && journalctl --vacuum-files=1 >/dev/null 2>&1");
    sb.systemctl(&["restart", unit]);
    let uw = Unitwatch::launch(&sb, WATCH, "", &dir);
    uw.wait_value("unitwatch_journal_gaps_total", WAIT, |v| v == 1.0);
    assert!(
        uw.log().contains("no longer holds the saved position"),
        "{}",
        uw.log()
    );
    // Restarts the journal still had are counted; the counter never went back.
    uw.wait_value(&manual(unit), WAIT, |v| v >= 2.0);
}
