//! Jobs against a real systemd (issue 13): a oneshot a timer triggers is
//! accounted by its runs — counted as the journal records them, each
//! duration from systemd's own timestamps, the timer's last trigger and
//! next elapse as systemd reports them — and runs by hand, timeouts, runs
//! while unitwatch was away, and which units are jobs at all.

mod common;

use std::time::Duration;

use common::series::series;
use common::unitwatch::{temp_dir, Unitwatch};
use common::{wait_for, Sandbox};

const WAIT: Duration = Duration::from_secs(30);
const WATCH: &str = "units = [\"aitbc-*.service\"]";
const JOB: &str = "aitbc-tick.service";
const TIMER: &str = "aitbc-tick.timer";

/// A oneshot that takes 0.2 s and fails (exit 1) when `/run/fail-next` exists.
const ONESHOT: &str = "[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=oneshot\n\
    ExecStart=/bin/sh -c 'sleep 0.2; if [ -e /run/fail-next ]; then rm /run/fail-next; exit 1; fi'\n";

/// Every second, on the wall clock (so `NextElapseUSecRealtime` is set).
const EVERY_SECOND: &str = "[Timer]\nOnCalendar=*:*:*\nAccuracySec=1ms\n";

fn runs(result: &str) -> String {
    series(
        "service_job_runs_total",
        JOB,
        &format!(",result=\"{result}\""),
    )
}

fn job_series(family: &str) -> String {
    series(family, JOB, "")
}

/// A `t` (µs) property of `unit`'s `interface`, read with busctl: exact,
/// where `systemctl show` rounds.
fn usec(sb: &Sandbox, unit: &str, interface: &str, property: &str) -> u64 {
    let path = format!(
        "/org/freedesktop/systemd1/unit/{}",
        unit.replace('-', "_2d").replace('.', "_2e")
    );
    let out = sb.sh(&format!(
        "busctl get-property org.freedesktop.systemd1 {path} org.freedesktop.systemd1.{interface} {property}"
    ));
    out.trim()
        .strip_prefix("t ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{property} of {unit}: {out:?}"))
}

fn seconds(usec: u64) -> f64 {
    usec as f64 / 1e6
}

/// Runs that ended as the journal records them: successes, failures.
fn journal_runs(sb: &Sandbox, unit: &str) -> (f64, f64) {
    (
        sb.journal_count(unit, "Deactivated successfully"),
        sb.journal_count(unit, "Failed with result"),
    )
}

/// Each run's duration as the journal records it: from its "Starting…"
/// to its end, by `INVOCATION_ID`.
fn journal_durations(sb: &Sandbox, unit: &str) -> Vec<f64> {
    let out = sb.sh(&format!(
        "journalctl -u {unit} -o json --output-fields=MESSAGE_ID,INVOCATION_ID"
    ));
    let mut starts = std::collections::HashMap::new();
    let mut durations = Vec::new();
    for line in out.lines() {
        let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let field = |name: &str| record[name].as_str().unwrap_or_default().to_owned();
        let at: f64 = field("__REALTIME_TIMESTAMP").parse().unwrap_or(0.0) / 1e6;
        let invocation = field("INVOCATION_ID");
        match field("MESSAGE_ID").as_str() {
            "7d4958e842da4a758f6c1cdc7b36dcc5" => {
                starts.insert(invocation, at);
            }
            "7ad2d189f7e94e70a38c781354912448" | "d9b373ed55a64feb8242e02dbe79a49c" => {
                if let Some(start) = starts.remove(&invocation) {
                    durations.push(at - start);
                }
            }
            _ => {}
        }
    }
    durations
}

fn wait_inactive(sb: &Sandbox, unit: &str) {
    wait_for(&format!("{unit} to be inactive or failed"), WAIT, || {
        matches!(sb.show(unit, "ActiveState").as_str(), "inactive" | "failed").then_some(())
    });
}

#[test]
fn a_timer_driven_oneshot_is_accounted_by_its_runs() {
    let sb = sandbox!();
    sb.write_unit(JOB, ONESHOT);
    sb.write_unit(TIMER, EVERY_SECOND);
    sb.daemon_reload();
    let uw = Unitwatch::start(&sb, WATCH);
    uw.wait_value(&runs("success"), WAIT, |v| v == 0.0);
    sb.systemctl(&["start", TIMER]);
    uw.wait_value(&runs("success"), WAIT, |v| v >= 4.0);
    sb.sh("touch /run/fail-next");
    uw.wait_value(&runs("exit-code"), WAIT, |v| v == 1.0);
    uw.wait_value(&runs("success"), WAIT, |v| v >= 9.0);

    // The timer as systemd reports it, read while it runs.
    // Read ours between two reads of systemd's that agree: the timer
    // elapses every second.
    let agree = |property: &str, family: &str| {
        let mut seen = Vec::new();
        let found = common::try_wait_for(WAIT, || {
            let before = usec(&sb, TIMER, "Timer", property);
            let ours = uw.value(&job_series(family));
            let after = usec(&sb, TIMER, "Timer", property);
            seen.push((before, ours));
            (before == after && ours == Some(seconds(before))).then_some(())
        });
        assert!(
            found.is_some(),
            "{family} never matched {property}: {:?}",
            &seen[seen.len().saturating_sub(5)..]
        );
    };
    agree(
        "LastTriggerUSec",
        "service_job_last_trigger_timestamp_seconds",
    );
    agree(
        "NextElapseUSecRealtime",
        "service_job_next_run_timestamp_seconds",
    );
    let last_run = common::try_wait_for(WAIT, || {
        let read = || {
            (
                usec(&sb, JOB, "Unit", "InactiveExitTimestamp"),
                usec(&sb, JOB, "Unit", "InactiveEnterTimestamp"),
            )
        };
        let before = read();
        let start = uw.value(&job_series("service_job_last_start_timestamp_seconds"));
        let duration = uw.value(&job_series("service_job_last_duration_seconds"));
        let (exit, enter) = read();
        (before == (exit, enter) && enter > exit && start == Some(seconds(exit)))
            .then_some((exit, enter, duration?))
    })
    .expect("the last run's start as systemd recorded it");
    assert_eq!(
        uw.value(&series("service_up", JOB, "")),
        None,
        "a job is never down"
    );

    sb.systemctl(&["stop", TIMER]);
    wait_inactive(&sb, JOB);
    let (ok, failed) = journal_runs(&sb, JOB);
    uw.wait_value(&runs("success"), WAIT, |v| v == ok);
    assert_eq!(uw.value(&runs("exit-code")), Some(failed), "{}", uw.log());
    assert_eq!(failed, 1.0);
    uw.wait_value(&job_series("service_job_running"), WAIT, |v| v == 0.0);
    let count = uw.value(&job_series("service_job_duration_seconds_count"));
    assert_eq!(count, Some(ok + failed), "every run's duration is known");

    // Every run's duration against the journal's record of it, and the
    // last run's against systemd's own timestamps (read while the timer
    // still holds the job, which systemd unloads once nothing does).
    let runs_seen = journal_durations(&sb, JOB);
    assert_eq!(runs_seen.len() as f64, ok + failed);
    let sum: f64 = runs_seen.iter().sum();
    let ours = uw
        .value(&job_series("service_job_duration_seconds_sum"))
        .expect("a duration sum");
    assert!(
        (ours - sum).abs() <= 0.010 * runs_seen.len() as f64,
        "durations add up to {ours} s, the journal's to {sum} s"
    );
    let (start, end, duration) = last_run;
    assert!(
        (duration - seconds(end - start)).abs() <= 0.010,
        "the last run took {duration} s, systemd says {} s",
        seconds(end - start)
    );
    // unitwatch exports systemd's monotonic timestamps plus its own frame
    // (src/clock.rs); systemd's wall-clock reading of the same moment is a
    // second clock read, so the two differ by a microsecond of truncation,
    // and by what the wall clock slewed since unitwatch took its frame.
    const FRAME_JITTER: f64 = 0.001;
    let last_success = uw.value(&job_series("service_job_last_success_timestamp_seconds"));
    assert!(
        last_success.is_some_and(|t| t >= seconds(end) - FRAME_JITTER),
        "last success {last_success:?}, systemd's end of a later run {}",
        seconds(end)
    );

    // A run by hand counts too; a failed one keeps the last success.
    sb.sh("touch /run/fail-next");
    sb.sh(&format!("systemctl start {JOB} || true"));
    uw.wait_value(&runs("exit-code"), WAIT, |v| v == 2.0);
    uw.wait_value(&job_series("service_job_last_run_success"), WAIT, |v| {
        v == 0.0
    });
    assert_eq!(
        uw.value(&job_series("service_job_last_success_timestamp_seconds")),
        last_success,
        "a failure does not move the last success"
    );
    assert_eq!(
        uw.value(&series(
            "service_failures_total",
            JOB,
            ",result=\"exit-code\""
        )),
        Some(2.0),
        "failures of a job count as failures too"
    );
    sb.systemctl(&["start", JOB]);
    uw.wait_value(&runs("success"), WAIT, |v| v == ok + 1.0);
    uw.wait_value(&job_series("service_job_last_run_success"), WAIT, |v| {
        v == 1.0
    });
}

#[test]
fn a_job_that_times_out_counts_as_timeout() {
    let sb = sandbox!();
    sb.write_unit(
        JOB,
        "[Service]\nType=oneshot\nTimeoutStartSec=1\nExecStart=/bin/sleep 30\n",
    );
    sb.daemon_reload();
    let uw = Unitwatch::start(&sb, WATCH);
    uw.wait_value(&runs("success"), WAIT, |v| v == 0.0);
    sb.systemctl(&["start", "--no-block", JOB]);
    uw.wait_value(&job_series("service_job_running"), WAIT, |v| v == 1.0);
    uw.wait_value(&runs("timeout"), WAIT, |v| v == 1.0);
    assert_eq!(uw.value(&job_series("service_job_running")), Some(0.0));
    let took = uw
        .value(&job_series("service_job_last_duration_seconds"))
        .unwrap_or_else(|| panic!("a duration: {}\n{}", uw.metrics(), uw.log()));
    // systemd arms the timeout before it forks and stamps the start after,
    // so on a busy machine the run it records is a few ms under 1 s: the
    // truth is its own timestamps, and the timeout (not the 30 s sleep)
    // ended it.
    let recorded = seconds(
        usec(&sb, JOB, "Unit", "InactiveEnterTimestamp")
            - usec(&sb, JOB, "Unit", "InactiveExitTimestamp"),
    );
    assert!(
        (took - recorded).abs() < 0.001,
        "the run took {took} s, systemd recorded {recorded} s"
    );
    assert!((0.9..2.0).contains(&took), "the run took {took} s");
}

#[test]
fn runs_while_unitwatch_was_stopped_or_killed_count_once() {
    let sb = sandbox!();
    sb.write_unit(JOB, ONESHOT);
    sb.daemon_reload();
    let dir = temp_dir("jobs-away");
    let run = |n: usize| {
        for _ in 0..n {
            sb.systemctl(&["start", JOB]);
        }
    };
    let mut uw = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &dir);
    uw.wait_value(&runs("success"), WAIT, |v| v == 0.0);
    run(2);
    uw.wait_value(&runs("success"), WAIT, |v| v == 2.0);
    wait_for("a saved state", WAIT, || {
        uw.state_file().exists().then_some(())
    });
    uw.kill9();
    run(3);
    let mut uw = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &dir);
    uw.wait_value(&runs("success"), WAIT, |v| v == 5.0);
    uw.stop();
    run(2);
    sb.sh("touch /run/fail-next");
    sb.sh(&format!("systemctl start {JOB} || true"));
    let uw = Unitwatch::launch(&sb, WATCH, "backfill = \"0\"", &dir);
    let (ok, failed) = journal_runs(&sb, JOB);
    assert_eq!((ok, failed), (7.0, 1.0), "systemd's record");
    uw.wait_value(&runs("exit-code"), WAIT, |v| v == failed);
    uw.wait_value(&runs("success"), WAIT, |v| v == ok);
    assert_eq!(
        uw.value(&job_series("service_job_duration_seconds_count")),
        Some(ok + failed),
        "{}",
        uw.log()
    );
}

#[test]
fn a_remain_after_exit_oneshot_is_a_service_and_a_timer_started_service_a_job() {
    let sb = sandbox!();
    let (remains, simple) = ("aitbc-setup.service", "aitbc-sweep.service");
    sb.write_unit(
        remains,
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
    );
    sb.write_unit(simple, "[Service]\nExecStart=/bin/sleep 1\n");
    sb.write_unit("aitbc-sweep.timer", "[Timer]\nOnActiveSec=1h\n");
    sb.daemon_reload();
    sb.systemctl(&["start", remains, "aitbc-sweep.timer"]);
    let uw = Unitwatch::start(&sb, WATCH);
    uw.wait_value(&series("service_up", remains, ""), WAIT, |v| v == 1.0);
    assert_eq!(uw.value(&series("service_job_running", remains, "")), None);
    uw.wait_value(&series("service_job_running", simple, ""), WAIT, |v| {
        v == 0.0
    });
    assert_eq!(uw.value(&series("service_up", simple, "")), None);
    assert!(
        uw.value(&series(
            "service_job_next_run_timestamp_seconds",
            simple,
            ""
        ))
        .is_some(),
        "the timer's next elapse: {}",
        uw.metrics()
    );
    // The timer starts a long-running service: one run while it runs.
    sb.systemctl(&["start", simple]);
    uw.wait_value(&series("service_job_running", simple, ""), WAIT, |v| {
        v == 1.0
    });
    uw.wait_value(
        &series("service_job_runs_total", simple, ",result=\"success\""),
        WAIT,
        |v| v == 1.0,
    );
}

#[test]
fn watch_jobs_makes_any_watched_unit_a_job() {
    let sb = sandbox!();
    let unit = "aitbc-batch.service";
    sb.write_unit(unit, "[Service]\nExecStart=/bin/sleep 0.3\n");
    sb.daemon_reload();
    let watch = format!("{WATCH}\njobs = [\"aitbc-batch*\"]");
    let uw = Unitwatch::start(&sb, &watch);
    uw.wait_value(&series("service_job_running", unit, ""), WAIT, |v| v == 0.0);
    sb.systemctl(&["start", unit]);
    uw.wait_value(
        &series("service_job_runs_total", unit, ",result=\"success\""),
        WAIT,
        |v| v == 1.0,
    );
    assert_eq!(uw.value(&series("service_up", unit, "")), None);
}
