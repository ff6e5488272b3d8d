//! Reboots end to end: a sandbox booted twice on the same persistent journal
//! and state directory, each boot with a boot ID of its own, unitwatch
//! running inside it as on a real host (it goes down with the host). After
//! a clean poweroff, and after a power loss (SIGKILL to the sandbox's PID
//! 1), the time from when a unit went down in the old boot — its stop, or
//! for a unit still up, the last record of the old boot — to its start in
//! the new one is downtime, and the counters continue.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::series::series;
use common::unitwatch::{temp_dir, Place, Unitwatch};
use common::{wait_for, Boot, Sandbox};

const WAIT: Duration = Duration::from_secs(30);
const WATCH: &str = "units = [\"aitbc-*.service\"]";
const STABLE: &str = "aitbc-stable.service";
const CRASHER: &str = "aitbc-crash.service";
const STARTED: &str = "39f53479d3a045ac8e11786248231fbf";
const STOPPING: &str = "de5b426a63be47a7b6ac3eaac82e2f6f";
/// How far unitwatch's durations may be from the journal's times: D-Bus's
/// timestamps and journald's differ by milliseconds, reads by a few more.
const WITHIN: f64 = 0.3;

/// The units, installed afresh each boot (as on a host whose units start at
/// boot); the crashing one fails twice in every boot, then runs.
fn install(sb: &Sandbox) {
    sb.write_unit(STABLE, "[Service]\nExecStart=/bin/sleep infinity\n");
    sb.write_unit(
        CRASHER,
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestart=on-failure\nRestartSec=100ms\n\
         ExecStart=/bin/sh -c 'f=/run/crash.count; c=$$(cat $$f 2>/dev/null || echo 0); \
         echo $$((c+1)) > $$f; [ $$c -ge 2 ] && exec sleep infinity; exit 1'\n",
    );
    sb.daemon_reload();
}

/// `__REALTIME_TIMESTAMP` of the last record `journalctl ARGS` shows, in seconds.
fn record_time(sb: &Sandbox, args: &str) -> f64 {
    let out = sb.sh(&format!("journalctl {args} -o json | tail -n 1"));
    let fields: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("journalctl {args}: {e}: {out:?}"));
    fields["__REALTIME_TIMESTAMP"]
        .as_str()
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("journalctl {args}: no timestamp in {out}"))
        / 1e6
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Up- and downtime of the stable unit, and when they were read.
fn durations(uw: &Unitwatch) -> (f64, f64, f64) {
    let before = now();
    let metrics = uw.metrics();
    let at = (before + now()) / 2.0;
    let read = |family: &str| {
        common::unitwatch::value(&metrics, &series(family, STABLE, ""))
            .unwrap_or_else(|| panic!("{family} of {STABLE} in\n{metrics}"))
    };
    (
        read("service_uptime_seconds_total"),
        read("service_downtime_seconds_total"),
        at,
    )
}

fn reboot(power_loss: bool) {
    let tag = if power_loss { "power-loss" } else { "poweroff" };
    let dir = temp_dir(&format!("reboot-{tag}"));
    let boot = Boot {
        binds: vec![dir.clone()],
        journal: Some(temp_dir(&format!("reboot-{tag}-journal"))),
        new_boot_id: true,
    };
    let inside = Place::Inside { user: None };
    let auto = series("service_restart_count_total", CRASHER, ",trigger=\"auto\"");
    let manual = series("service_restart_count_total", STABLE, ",trigger=\"manual\"");
    let failures = series("service_failures_total", CRASHER, ",result=\"exit-code\"");
    let up = series("service_up", STABLE, "");

    // The first boot.
    let sb = Sandbox::boot(&boot);
    let old_boot = sb.boot_id();
    install(&sb);
    let mut uw = Unitwatch::launch_at(&sb, WATCH, "backfill = \"0\"", &dir, inside);
    sb.systemctl(&["start", STABLE, CRASHER]);
    uw.wait_value(&auto, WAIT, |v| v == 2.0);
    uw.wait_value(&failures, WAIT, |v| v == 2.0);
    uw.wait_value(&up, WAIT, |v| v == 1.0);
    if power_loss {
        // What a power loss leaves: the last periodic save, and the journal.
        wait_for("a saved state", WAIT, || {
            uw.state_file().exists().then_some(())
        });
    }
    let (up1, down1, t1) = durations(&uw);
    if power_loss {
        // The host stays up a while after the last save (saves come every
        // 10 s, and only after changes): a span to measure, nothing is
        // waited for here.
        std::thread::sleep(Duration::from_millis(1500));
        // A record after which the host is known to have been up.
        sb.sh("echo 'last words before the power goes' | systemd-cat -t reboot-test");
        wait_for("the last record to be written", WAIT, || {
            sb.sh("journalctl -b -t reboot-test -o cat")
                .contains("last words")
                .then_some(())
        });
        sb.power_loss();
        assert!(
            uw.wait_exit(Duration::from_secs(10)).is_some(),
            "unitwatch went down with the host"
        );
    } else {
        sb.poweroff();
        let status = uw.wait_exit(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "unitwatch stopped by the shutdown, exit status {status:?}\n{}",
            uw.log()
        );
    }

    // The next boot, on the same disk.
    let sb = Sandbox::boot(&boot);
    let new_boot = sb.boot_id();
    assert_ne!(old_boot, new_boot, "a boot ID of its own");
    install(&sb);
    let uw = Unitwatch::launch_at(&sb, WATCH, "backfill = \"0\"", &dir, inside);
    uw.wait_value(&up, WAIT, |v| v == 0.0);
    sb.systemctl(&["start", STABLE, CRASHER]);
    uw.wait_value(&up, WAIT, |v| v == 1.0);
    uw.wait_value(&auto, WAIT, |v| v == 4.0);
    uw.wait_value(&failures, WAIT, |v| v == 4.0);
    assert_eq!(uw.value(&manual), Some(0.0));
    let (up2, down2, t2) = durations(&uw);

    let started = record_time(
        &sb,
        &format!("-b {new_boot} -u {STABLE} MESSAGE_ID={STARTED}"),
    );
    let went_down = if power_loss {
        record_time(&sb, &format!("-b {old_boot} -n 1"))
    } else {
        record_time(
            &sb,
            &format!("-b {old_boot} -u {STABLE} MESSAGE_ID={STOPPING}"),
        )
    };
    let (want_up, want_down) = (
        up1 + (went_down - t1) + (t2 - started),
        down1 + (started - went_down),
    );
    assert!(
        (up2 - want_up).abs() < WITHIN && (down2 - want_down).abs() < WITHIN,
        "{tag}: up {up2:.3} s, down {down2:.3} s; the journal says up {want_up:.3} s, down \
         {want_down:.3} s (down from {went_down:.3} to {started:.3}; {:.3} s)\n{}",
        started - went_down,
        uw.log()
    );
    assert!(
        uw.log().contains("the host rebooted"),
        "the reboot was noticed:\n{}",
        uw.log()
    );
}

#[test]
fn a_clean_poweroff_is_downtime_until_the_next_boot_and_counters_continue() {
    require_root!("to boot systemd in namespaces, twice");
    reboot(false);
}

#[test]
fn a_power_loss_is_downtime_from_the_last_record_and_counters_continue() {
    require_root!("to boot systemd in namespaces, twice");
    reboot(true);
}
