//! Resources, sockets, watchdogs and the host against a real systemd: each
//! value equals what systemd itself reports for the unit (`systemctl show`,
//! `busctl`), a value systemd does not have has no sample, and the host's
//! state follows a failed unit and its `reset-failed`.
//!
//! This machine keeps the memory, pids and io controllers on cgroup v1, so
//! inside the sandbox systemd reports CPU but not `MemoryCurrent`,
//! `TasksCurrent` or `IOReadBytes`; the tests of those compare with systemd
//! where it reports them and otherwise check that unitwatch has no sample
//! either (never a zero).

mod common;

use std::time::Duration;

use common::series::series;
use common::unitwatch::{temp_dir, value, Unitwatch};
use common::{try_wait_for, wait_for, Sandbox};

const WAIT: Duration = Duration::from_secs(30);

/// Burns a fixed amount of CPU (about a second of it), then sleeps: its CPU time stops moving,
/// so ours and systemd's can be compared exactly.
const BURN_THEN_SLEEP: &str = "[Service]\nCPUAccounting=yes\nMemoryAccounting=yes\n\
    TasksAccounting=yes\nIOAccounting=yes\nTasksMax=77\nMemoryMax=64M\n\
    ExecStart=/bin/sh -c 'i=0; while [ $$i -lt 1000000 ]; do i=$$((i+1)); done; \
    head -c 3000000 /dev/zero > /tmp/io-out; sync; exec sleep infinity'\n";

fn start(sb: &Sandbox, watch: &str) -> Unitwatch {
    start_every(sb, watch, "1s")
}

/// Reading resources every `interval`.
fn start_every(sb: &Sandbox, watch: &str, interval: &str) -> Unitwatch {
    Unitwatch::setup(&temp_dir("res"))
        .sandbox(sb)
        .watch(watch)
        .resources(&format!("interval = \"{interval}\""))
        .start()
}

/// A number systemd shows for `unit`; `None` for `[not set]` (no value).
fn shown(sb: &Sandbox, unit: &str, property: &str) -> Option<u64> {
    sb.show(unit, property).parse().ok()
}

/// Waits until ours equals systemd's (read before and after ours, the two
/// agreeing), within `tolerance`.
fn agree(
    sb: &Sandbox,
    uw: &Unitwatch,
    unit: &str,
    property: &str,
    ours: impl Fn(&str) -> Option<f64>,
    scale: f64,
    tolerance: f64,
) -> f64 {
    let mut last = None;
    let found = try_wait_for(WAIT, || {
        let before = shown(sb, unit, property)? as f64 / scale;
        let v = ours(&uw.metrics())?;
        let after = shown(sb, unit, property)? as f64 / scale;
        last = Some((before, v, after));
        (before == after && (v - before).abs() <= tolerance).then_some(v)
    });
    found.unwrap_or_else(|| {
        panic!("{unit}: ours never agreed with systemd's {property} (last before, ours, after: {last:?})")
    })
}

/// `/metrics` once the sampler has taken `n` more rounds.
fn rounds_later(uw: &Unitwatch, n: usize) -> String {
    const LAST: &str = "unitwatch_sample_timestamp_seconds";
    let mut seen = uw.value(LAST).unwrap_or(0.0);
    for _ in 0..n {
        seen = uw.wait_value(LAST, WAIT, |v| v > seen);
    }
    uw.metrics()
}

#[test]
fn cpu_time_by_mode_sums_to_systemds_cpu_usage() {
    let sb = sandbox!();
    sb.write_unit("burn.service", BURN_THEN_SLEEP);
    sb.daemon_reload();
    let uw = start(&sb, "units = [\"burn.service\"]");
    sb.systemctl(&["start", "burn.service"]);
    let user = series(
        "service_cpu_seconds_total",
        "burn.service",
        ",mode=\"user\"",
    );
    let system = series(
        "service_cpu_seconds_total",
        "burn.service",
        ",mode=\"system\"",
    );
    // A fixed amount of work, about a second of CPU here (not a second of
    // the wall clock, which a busy machine fills with less): well above
    // what starting costs.
    uw.wait_value(&user, WAIT, |v| v > 0.3);
    let total = agree(
        &sb,
        &uw,
        "burn.service",
        "CPUUsageNSec",
        |text| Some(value(text, &user)? + value(text, &system)?),
        1e9,
        // CPU time is read in µs, systemd's in ns.
        1e-5,
    );
    assert!((0.3..3.0).contains(&total), "{total}");
}

#[test]
fn memory_tasks_and_io_equal_systemds_or_have_no_sample_when_it_has_none() {
    let sb = sandbox!();
    sb.write_unit("burn.service", BURN_THEN_SLEEP);
    sb.daemon_reload();
    let uw = start(&sb, "units = [\"burn.service\"]");
    sb.systemctl(&["start", "burn.service"]);
    let unit = "burn.service";
    // Sampled at least once since the start: CPU is there.
    uw.wait_value(
        &series("service_cpu_seconds_total", unit, ",mode=\"user\""),
        WAIT,
        |v| v > 0.0,
    );
    let cases = [
        ("MemoryCurrent", "service_memory_bytes", 64.0 * 1024.0),
        ("TasksCurrent", "service_tasks", 0.0),
        ("TasksMax", "service_tasks_max", 0.0),
        ("MemoryMax", "service_memory_max_bytes", 0.0),
        ("IOWriteBytes", "service_io_write_bytes_total", 0.0),
    ];
    for (property, family, tolerance) in cases {
        let name = series(family, unit, "");
        // systemd reports a limit whatever the controllers; the cgroup has
        // it only where the controller is on cgroup v2.
        let controller = match family {
            "service_memory_max_bytes" | "service_memory_bytes" => "memory",
            "service_tasks" | "service_tasks_max" => "pids",
            _ => "io",
        };
        let has = sb
            .sh("cat /sys/fs/cgroup/cgroup.controllers")
            .split_whitespace()
            .any(|c| c == controller);
        match shown(&sb, unit, property) {
            Some(_) if has => {
                agree(
                    &sb,
                    &uw,
                    unit,
                    property,
                    |text| value(text, &name),
                    1.0,
                    tolerance,
                );
            }
            _ => {
                // Two rounds later, still none.
                let text = rounds_later(&uw, 2);
                assert_eq!(
                    value(&text, &name),
                    None,
                    "{family}: systemd reports no {property} here ({controller} not on cgroup v2), so unitwatch has no sample"
                );
            }
        }
    }
}

#[test]
fn a_unit_without_accounting_or_a_cgroup_has_no_sample() {
    let sb = sandbox!();
    sb.write_unit(
        "quiet.service",
        "[Service]\nCPUAccounting=no\nExecStart=/bin/sleep infinity\n",
    );
    sb.write_unit(
        "stopped.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    sb.write_unit(
        "busy.service",
        "[Service]\nCPUAccounting=yes\nExecStart=/bin/sleep infinity\n",
    );
    sb.daemon_reload();
    sb.systemctl(&["start", "quiet.service", "busy.service"]);
    let uw = start(
        &sb,
        "units = [\"quiet.service\", \"stopped.service\", \"busy.service\"]",
    );
    let cpu = |unit: &str| series("service_cpu_seconds_total", unit, ",mode=\"user\"");
    // A round has been read once the busy one shows.
    uw.wait_value(&cpu("busy.service"), WAIT, |_| true);
    assert_eq!(sb.show("quiet.service", "CPUUsageNSec"), "[not set]");
    let text = uw.metrics();
    assert_eq!(
        value(&text, &cpu("quiet.service")),
        None,
        "CPUAccounting=no"
    );
    assert_eq!(value(&text, &cpu("stopped.service")), None, "no cgroup");
    let text = rounds_later(&uw, 2);
    assert_eq!(
        value(&text, &cpu("quiet.service")),
        None,
        "CPUAccounting=no"
    );
    // Stopped, the busy one's series go too.
    sb.systemctl(&["stop", "busy.service"]);
    wait_for("the stopped unit's CPU series to go", WAIT, || {
        value(&uw.metrics(), &cpu("busy.service"))
            .is_none()
            .then_some(())
    });
}

#[test]
fn a_socket_units_connections_equal_systemds() {
    let sb = sandbox!();
    sb.write_unit(
        "echo.socket",
        "[Socket]\nListenStream=127.0.0.1:7777\nAccept=yes\n",
    );
    sb.write_unit(
        "echo@.service",
        "[Service]\nExecStart=/bin/cat\nStandardInput=socket\n",
    );
    sb.daemon_reload();
    sb.systemctl(&["start", "echo.socket"]);
    let uw = start(&sb, "units = [\"echo.socket\"]");
    let accepted = series("socket_connections_accepted_total", "echo.socket", "");
    let open = series("socket_connections", "echo.socket", "");
    let refused = series("socket_connections_refused_total", "echo.socket", "");
    uw.wait_value(&accepted, WAIT, |v| v == 0.0);
    for _ in 0..3 {
        sb.sh("bash -c 'exec 3<>/dev/tcp/127.0.0.1/7777; echo hi >&3; exec 3>&-'");
    }
    uw.wait_value(&accepted, WAIT, |v| v == 3.0);
    assert_eq!(sb.show("echo.socket", "NAccepted"), "3");
    // One held open.
    sb.sh("systemd-run --unit=hold -q bash -c 'exec 3<>/dev/tcp/127.0.0.1/7777; sleep 300'");
    uw.wait_value(&accepted, WAIT, |v| v == 4.0);
    uw.wait_value(&open, WAIT, |v| v == 1.0);
    assert_eq!(sb.show("echo.socket", "NConnections"), "1");
    match shown(&sb, "echo.socket", "NRefused") {
        Some(n) => {
            uw.wait_value(&refused, WAIT, |v| v == n as f64);
        }
        None => assert_eq!(uw.value(&refused), None),
    }
    sb.systemctl(&["stop", "hold.service"]);
    uw.wait_value(&open, WAIT, |v| v == 0.0);
}

/// The service's last ping as systemd has it, in seconds.
fn watchdog_timestamp(sb: &Sandbox, unit: &str) -> f64 {
    let path = format!(
        "/org/freedesktop/systemd1/unit/{}",
        unit.replace('.', "_2e")
    );
    let out = sb.sh(&format!(
        "busctl get-property org.freedesktop.systemd1 {path} org.freedesktop.systemd1.Service WatchdogTimestamp"
    ));
    out.trim()
        .strip_prefix("t ")
        .and_then(|n| n.parse::<f64>().ok())
        .map(|us| us / 1e6)
        .unwrap_or_else(|| panic!("WatchdogTimestamp: {out:?}"))
}

#[test]
fn a_watchdogs_interval_and_last_ping_equal_systemds() {
    let sb = sandbox!();
    sb.write_unit(
        "pinger.service",
        "[Service]\nType=notify\nNotifyAccess=all\nWatchdogSec=3\n\
         ExecStart=/bin/sh -c 'systemd-notify --ready; while :; do systemd-notify WATCHDOG=1; sleep 1; done'\n",
    );
    sb.write_unit(
        "plain.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    sb.daemon_reload();
    sb.systemctl(&["start", "pinger.service", "plain.service"]);
    let uw = start(&sb, "units = [\"pinger.service\", \"plain.service\"]");
    let interval = series("service_watchdog_seconds", "pinger.service", "");
    let ping = series(
        "service_watchdog_last_ping_timestamp_seconds",
        "pinger.service",
        "",
    );
    uw.wait_value(&interval, WAIT, |v| v == 3.0);
    // Ours is one of systemd's pings: read between two reads of it, ours
    // equals one of them to the µs.
    let mut pings = Vec::new();
    let found = try_wait_for(WAIT, || {
        let before = watchdog_timestamp(&sb, "pinger.service");
        let ours = uw.value(&ping)?;
        let after = watchdog_timestamp(&sb, "pinger.service");
        if !pings.contains(&ours) {
            pings.push(ours);
        }
        ((ours - before).abs() < 1e-6 || (ours - after).abs() < 1e-6)
            .then_some(ours)
            .filter(|_| pings.len() >= 3)
    });
    assert!(
        found.is_some(),
        "ours never matched systemd's last ping: {pings:?}"
    );
    // It pings every second: the pings ours showed are about that apart.
    pings.sort_by(f64::total_cmp);
    let gaps: Vec<f64> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| (0.8..4.0).contains(g)),
        "pings a second apart, each round showing the latest: {gaps:?}"
    );
    assert_eq!(
        uw.value(&series("service_watchdog_seconds", "plain.service", "")),
        None,
        "no WatchdogSec=, no sample"
    );
}

#[test]
fn the_host_is_degraded_while_a_unit_is_failed_and_running_after_reset_failed() {
    let sb = sandbox!();
    sb.write_unit("broken.service", "[Service]\nExecStart=/bin/false\n");
    sb.daemon_reload();
    // Rounds an hour apart: the state must follow the failure and the
    // reset as they happen, not wait for a round.
    let uw = start_every(&sb, "units = [\"broken.service\"]", "1h");
    let state = |s: &str| format!("systemd_system_state{{state=\"{s}\"}}");
    uw.wait_value(&state("running"), WAIT, |v| v == 1.0);
    assert_eq!(
        sb.sh("systemctl is-system-running || true").trim(),
        "running"
    );
    let _ = sb.exec(&["systemctl", "start", "broken.service"]);
    uw.wait_value(&state("degraded"), WAIT, |v| v == 1.0);
    assert_eq!(uw.value(&state("running")), Some(0.0));
    assert_eq!(
        sb.sh("systemctl is-system-running || true").trim(),
        "degraded"
    );
    sb.systemctl(&["reset-failed", "broken.service"]);
    uw.wait_value(&state("running"), WAIT, |v| v == 1.0);
    assert_eq!(uw.value(&state("degraded")), Some(0.0));
}

#[test]
fn units_by_active_state_count_every_loaded_unit() {
    let sb = sandbox!();
    sb.write_unit("broken.service", "[Service]\nExecStart=/bin/false\n");
    sb.daemon_reload();
    let _ = sb.exec(&["systemctl", "start", "broken.service"]);
    let uw = start(&sb, "units = [\"none.service\"]");
    let count = |filter: &str| {
        sb.sh(&format!(
            "systemctl list-units --all {filter} --no-legend | wc -l"
        ))
        .trim()
        .parse::<f64>()
        .expect("a count")
    };
    // Watched or not: broken.service is not watched.
    uw.wait_value("systemd_units{active_state=\"failed\"}", WAIT, |v| {
        v == count("--state=failed")
    });
    let loaded = count("");
    let ours = |text: &str| -> f64 {
        unitwatch::sample::ACTIVE_STATES
            .iter()
            .filter_map(|s| value(text, &format!("systemd_units{{active_state=\"{s}\"}}")))
            .sum()
    };
    // Units come and go as the sandbox settles: equal once it has.
    wait_for(
        "units by ActiveState to sum to what systemd lists",
        WAIT,
        || (ours(&rounds_later(&uw, 1)) == loaded).then_some(()),
    );
}

#[test]
fn the_version_is_systemds() {
    let sb = sandbox!();
    let uw = start(&sb, "units = [\"none.service\"]");
    let version = sb
        .sh("busctl get-property org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager Version")
        .trim()
        .trim_start_matches("s ")
        .trim_matches('"')
        .to_owned();
    let major: f64 = version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a major version");
    uw.wait_value(
        &format!("systemd_version{{version=\"{version}\"}}"),
        WAIT,
        |v| v == major,
    );
}

#[test]
fn a_family_turned_off_is_neither_read_nor_exposed() {
    let sb = sandbox!();
    sb.write_unit(
        "busy.service",
        "[Service]\nCPUAccounting=yes\nExecStart=/bin/sleep infinity\n",
    );
    sb.daemon_reload();
    sb.systemctl(&["start", "busy.service"]);
    let uw = Unitwatch::setup(&temp_dir("res-off"))
        .sandbox(&sb)
        .watch("units = [\"busy.service\"]\n[metrics]\ncpu = false\nsystemd_units = false")
        .resources("interval = \"1s\"")
        .start();
    uw.wait_value("systemd_system_state{state=\"running\"}", WAIT, |v| {
        v == 1.0
    });
    let text = uw.metrics();
    assert!(!text.contains("service_cpu_seconds"), "{text}");
    assert!(!text.contains("systemd_units"), "{text}");
    assert!(text.contains("systemd_version{"), "{text}");
}

#[test]
fn unit_counts_stay_with_the_host_state_and_version_off() {
    let sb = sandbox!();
    let uw = Unitwatch::setup(&temp_dir("res-counts"))
        .sandbox(&sb)
        .watch("units = [\"none.service\"]\n[metrics]\nsystemd_system_state = false\nsystemd_version = false")
        .resources("interval = \"1s\"")
        .start();
    uw.wait_value("systemd_units{active_state=\"active\"}", WAIT, |v| v > 0.0);
    let text = rounds_later(&uw, 1);
    assert!(!text.contains("systemd_system_state"), "{text}");
    assert!(!text.contains("systemd_version"), "{text}");
}
