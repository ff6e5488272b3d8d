//! The JSON API and `unitwatch status` against unitwatch following a real
//! systemd: a stable unit and one that crashes three times and then runs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::unitwatch::{free_port, http_get, Unitwatch};
use common::{wait_for, Sandbox};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const STABLE: &str = "aitbc-coordinator-api.service";
const FLAPPING: &str = "aitbc-marketplace.service";

/// Fails three times (exit 1, restarted by systemd), then keeps running.
const FAILS_THRICE: &str =
    "[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestart=on-failure\nRestartSec=200ms\n\
     ExecStart=/bin/sh -c 'f=/run/flap.count; c=$$(cat $$f 2>/dev/null || echo 0); \
     echo $$((c+1)) > $$f; [ $$c -ge 3 ] && exec sleep infinity; sleep 0.3; exit 1'\n";

fn api(uw: &Unitwatch, path: &str) -> (u16, Value) {
    let (status, body) = http_get(&uw.addr, path).expect("GET");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

fn find<'a>(units: &'a Value, name: &str) -> &'a Value {
    units["units"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["unit"] == name))
        .unwrap_or_else(|| panic!("{name} not in {units}"))
}

fn status(uw: &Unitwatch, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_unitwatch"))
        .arg("status")
        .args(["--address", &uw.addr])
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("run unitwatch status")
}

#[test]
fn api_and_status_command_show_what_systemd_did() {
    let sb = Sandbox::start();
    sb.write_unit(STABLE, "[Service]\nExecStart=/bin/sleep infinity\n");
    sb.write_unit(FLAPPING, FAILS_THRICE);
    sb.daemon_reload();
    sb.systemctl(&["start", STABLE]);
    let uw = Unitwatch::start(&sb, "units = [\"aitbc-*.service\"]");
    sb.systemctl(&["start", "--no-block", FLAPPING]);
    wait_for("the flapping unit to settle", WAIT, || {
        (sb.show(FLAPPING, "NRestarts") == "3" && sb.show(FLAPPING, "SubState") == "running")
            .then_some(())
    });
    let failures = sb.journal_count(FLAPPING, "Failed with result 'exit-code'");

    // The list.
    let units = wait_for("the API to show the 3 restarts", WAIT, || {
        let (code, units) = api(&uw, "/api/v1/units");
        assert_eq!(code, 200);
        (find(&units, FLAPPING)["restarts"]["auto"] == 3 && find(&units, FLAPPING)["up"] == true)
            .then_some(units)
    });
    let stable = find(&units, STABLE);
    assert_eq!(stable["state"], "active");
    assert_eq!(stable["sub_state"], "running");
    assert_eq!(stable["availability"]["1h"], 1.0);
    assert_eq!(stable["availability"]["30d"], 1.0);
    assert_eq!(
        stable["mtbf_seconds"]["24h"],
        Value::Null,
        "never went down"
    );
    assert_eq!(stable["restarts_24h"]["auto"], 0);
    assert_eq!(stable["last_failure"], Value::Null);
    assert!(stable["run_seconds"].as_f64().is_some_and(|s| s >= 0.0));

    let flap = find(&units, FLAPPING);
    assert_eq!(flap["restarts_24h"]["auto"], 3);
    assert_eq!(flap["restarts"]["manual"], 0);
    assert_eq!(flap["failures"]["exit-code"].as_f64(), Some(failures));
    assert_eq!(flap["last_failure"]["result"], "exit-code");
    let a = flap["availability"]["1h"].as_f64().expect("availability");
    assert!(
        a > 0.0 && a < 1.0,
        "availability of a unit that was down: {a}"
    );
    assert!(flap["mttr_seconds"]["1h"].as_f64().is_some_and(|s| s > 0.0));
    assert!(flap["mtbf_seconds"]["1h"].as_f64().is_some_and(|s| s > 0.0));

    // One unit, with its history: it ends running, and went down 3 times on the way.
    let (code, detail) = api(&uw, &format!("/api/v1/units/{FLAPPING}"));
    assert_eq!(code, 200);
    assert_eq!(detail["unit"], FLAPPING);
    let states: Vec<&str> = detail["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|c| c["state"].as_str())
        .collect();
    assert_eq!(states.last(), Some(&"active"), "{states:?}");
    let downs = states
        .windows(2)
        .filter(|w| w[0] == "active" && w[1] != "active")
        .count();
    assert_eq!(downs, 3, "{states:?}");
    let (code, missing) = api(&uw, "/api/v1/units/nope.service");
    assert_eq!(code, 404);
    assert!(missing["error"]
        .as_str()
        .is_some_and(|e| e.contains("nope.service")));

    // `unitwatch status`, piped: a plain table.
    let out = status(&uw, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("UNIT")
            && lines[0].contains("AVAIL 24H")
            && lines[0].ends_with("RESTARTS 24H"),
        "{text}"
    );
    let row = |name: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"))
    };
    assert!(row(STABLE).contains("active (running)"), "{text}");
    assert!(row(STABLE).contains("100.00%"), "{text}");
    assert!(row(FLAPPING).trim_end().ends_with(" 3"), "{text}");
    assert!(text.contains("2 of 2 units up"), "{text}");
    assert!(!text.contains('\x1b'), "no colour when piped:\n{text}");

    // --json: the daemon's own JSON.
    let out = status(&uw, &["--json"]);
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["units"].as_array().map(Vec::len), Some(2));
    assert_eq!(find(&json, FLAPPING)["restarts"]["auto"], 3);

    // Stopped: a unit that is down shows so.
    sb.systemctl(&["stop", STABLE]);
    wait_for("the API to show the stop", WAIT, || {
        (find(&api(&uw, "/api/v1/units").1, STABLE)["state"] == "inactive").then_some(())
    });
    let out = status(&uw, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("inactive (dead)"), "{text}");
    assert!(text.contains("1 of 2 units up"), "{text}");
}

#[test]
fn status_without_a_daemon_is_a_clear_error() {
    let addr = format!("127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_unitwatch"))
        .args(["status", "--address", &addr])
        .output()
        .expect("run unitwatch status");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("unitwatch status: no unitwatch answers at {addr}")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());
}
