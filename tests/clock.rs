//! Wall-clock steps (`date -s`) of ±1 h while unitwatch runs and while it is
//! stopped: durations stay as measured, timestamps follow the new clock.
//!
//! The system clock is not namespaced, so this sets the machine's clock for
//! a few seconds and puts it back from the monotonic clock (to within
//! microseconds) when done, also when the test fails. It is the only test in
//! its binary, and cargo runs test binaries one after another.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::series::up;
use common::unitwatch::{temp_dir, Unitwatch};
use common::wait_for;

const HOUR: f64 = 3600.0;

/// Steps the wall clock; puts it back on drop.
struct ClockStep {
    wall0: f64,
    mono0: Instant,
}

fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn set_wall(to: f64) {
    let status = Command::new("date")
        .args(["-s", &format!("@{to:.6}")])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run date");
    assert!(status.success(), "date -s @{to:.6} failed");
}

impl ClockStep {
    fn new() -> ClockStep {
        ClockStep {
            wall0: wall(),
            mono0: Instant::now(),
        }
    }

    /// The wall clock as it would be without steps.
    fn true_wall(&self) -> f64 {
        self.wall0 + self.mono0.elapsed().as_secs_f64()
    }

    fn step(&self, seconds: f64) {
        set_wall(self.true_wall() + seconds);
    }

    fn restore(&self) {
        set_wall(self.true_wall());
    }
}

impl Drop for ClockStep {
    fn drop(&mut self) {
        self.restore();
    }
}

fn total(uw: &Unitwatch, unit: &str) -> f64 {
    let up = uw
        .value(&format!("service_uptime_seconds_total{{unit=\"{unit}\"}}"))
        .expect("uptime series");
    let down = uw
        .value(&format!(
            "service_downtime_seconds_total{{unit=\"{unit}\"}}"
        ))
        .expect("downtime series");
    up + down
}

#[test]
fn wall_clock_steps_change_no_duration() {
    let sb = sandbox!();
    for unit in ["steady.service", "flip.service"] {
        sb.write_unit(unit, "[Service]\nExecStart=/bin/sleep infinity\n");
    }
    sb.daemon_reload();
    sb.systemctl(&["start", "steady.service", "flip.service"]);
    let dir = temp_dir("clock");
    let watch = r#"units = ["steady.service", "flip.service"]"#;
    let mut uw = Unitwatch::launch(&sb, watch, "", &dir);
    let began = Instant::now();
    uw.wait_value(&up("flip.service"), Duration::from_secs(5), |v| v == 1.0);
    let clock = ClockStep::new();

    for step in [HOUR, -HOUR] {
        clock.step(step);
        // A transition while the clock is off: stop and start again.
        sb.systemctl(&["stop", "flip.service"]);
        uw.wait_value(&up("flip.service"), Duration::from_secs(5), |v| v == 0.0);
        let changed = uw
            .value("service_state_change_timestamp_seconds{unit=\"flip.service\"}")
            .expect("state change timestamp");
        assert!(
            (changed - wall()).abs() < 60.0,
            "after a step of {step} s the state change is at {changed}, the wall clock at {}",
            wall()
        );
        sb.systemctl(&["start", "flip.service"]);
        uw.wait_value(&up("flip.service"), Duration::from_secs(5), |v| v == 1.0);
        clock.restore();
        let elapsed = began.elapsed().as_secs_f64();
        for unit in ["steady.service", "flip.service"] {
            let t = total(&uw, unit);
            assert!(
                t <= elapsed + 1.0,
                "after a step of {step} s, {unit} has {t} s accounted, but only {elapsed} s passed\n{}",
                uw.metrics()
            );
        }
    }
    let steady_down = uw
        .value("service_downtime_seconds_total{unit=\"steady.service\"}")
        .expect("downtime");
    assert_eq!(steady_down, 0.0, "steady.service was never down");

    // A step while unitwatch is stopped: the saved history moves with it.
    assert_eq!(uw.stop().map(|s| s.success()), Some(true), "SIGTERM exit");
    clock.step(-HOUR);
    let uw = Unitwatch::launch(&sb, watch, "", &dir);
    uw.wait_value(&up("steady.service"), Duration::from_secs(5), |v| v == 1.0);
    clock.restore();
    let elapsed = began.elapsed().as_secs_f64();
    let t = wait_for(
        "steady.service to be accounted again after the restart",
        Duration::from_secs(5),
        || Some(total(&uw, "steady.service")),
    );
    assert!(
        t <= elapsed + 1.0 && t >= elapsed - 5.0,
        "after a step while stopped, steady.service has {t} s accounted, {elapsed} s passed\n{}\nlog:\n{}",
        uw.metrics(),
        uw.log()
    );
    assert!(
        uw.log().contains("the wall clock was set by"),
        "the step is logged:\n{}",
        uw.log()
    );
}
