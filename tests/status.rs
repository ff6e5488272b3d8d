//! The JSON API and `unitwatch status` against the in-process server
//! following a real systemd (root: a sandbox): a stable unit and one that
//! crashes three times and then runs; a oneshot on a timer, a job. Jobs
//! from a saved state, without systemd, as any user. Then `unitwatch
//! status` over TLS with basic auth, and the errors it gives (no daemon,
//! wrong credentials, untrusted certificate, TLS mismatch), against the
//! in-process server without systemd (its HTTP side works regardless), as
//! any user.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::inproc::Server;
use common::saved::{self, JOB, SERVICE};
use common::tls::{cert_dir, web_config};
use common::unitwatch::{assert_error, cli, free_port, http_get, temp_dir};
use common::wait_for;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const STABLE: &str = "aitbc-coordinator-api.service";
const FLAPPING: &str = "aitbc-marketplace.service";

/// Fails three times (exit 1, restarted by systemd), then keeps running.
const FAILS_THRICE: &str =
    "[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestart=on-failure\nRestartSec=200ms\n\
     ExecStart=/bin/sh -c 'f=/run/flap.count; c=$$(cat $$f 2>/dev/null || echo 0); \
     echo $$((c+1)) > $$f; [ $$c -ge 3 ] && exec sleep infinity; sleep 0.3; exit 1'\n";

const JOB_UNIT: &str = "aitbc-settlement.service";
const TIMER: &str = "aitbc-settlement.timer";
/// A oneshot that settles in 0.2 s, and fails while /run/settle.fail exists.
const SETTLES: &str = "[Service]\nType=oneshot\n\
     ExecStart=/bin/sh -c 'sleep 0.2; [ ! -e /run/settle.fail ]'\n";
/// Its timer, due at the top of every hour.
const HOURLY: &str = "[Timer]\nOnCalendar=hourly\nUnit=aitbc-settlement.service\n";

fn api(uw: &Server, path: &str) -> (u16, Value) {
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

/// `unitwatch status --address ADDR ARGS`.
fn status(uw: &Server, args: &[&str]) -> Output {
    cli()
        .arg("status")
        .args(["--address", &uw.addr])
        .args(args)
        .output()
        .expect("run unitwatch status")
}

#[test]
fn api_and_status_command_show_what_systemd_did() {
    let sb = sandbox!();
    sb.write_unit(STABLE, "[Service]\nExecStart=/bin/sleep infinity\n");
    sb.write_unit(FLAPPING, FAILS_THRICE);
    sb.daemon_reload();
    sb.systemctl(&["start", STABLE]);
    let uw = Server::setup(&temp_dir("status-api"))
        .sandbox(&sb)
        .watch("units = [\"aitbc-*.service\"]")
        .start();
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
    // The host first, once the sampler has read it.
    let header = match lines[0].starts_with("systemd ") {
        true => {
            assert!(lines[0].contains(": running, "), "{text}");
            lines[2]
        }
        false => lines[0],
    };
    assert!(
        header.starts_with("UNIT")
            && header.contains("AVAIL 24H")
            && header.contains("RESTARTS 24H")
            && header.ends_with("CPU  MEMORY"),
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
    // Columns are two spaces or more apart; RESTARTS 24H is the sixth.
    let cells: Vec<&str> = row(FLAPPING)
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells.get(5), Some(&"3"), "{text}");
    assert!(text.contains("2 of 2 services up"), "{text}");
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
    assert!(text.contains("1 of 2 services up"), "{text}");
}

/// Jobs in their own section, after the services: last run, result, how
/// long it took, next run; the summary counts them apart. From a saved
/// state, without systemd, as any user.
#[test]
fn status_lists_jobs_in_their_own_section() {
    let (dir, _) = saved::with_job("status-jobs");
    let uw = Server::start(&dir);
    let out = status(&uw, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (services, jobs) = text.split_once("\n\n").expect("two sections");
    assert!(services.starts_with("UNIT "), "{text}");
    assert!(services.contains(SERVICE), "{text}");
    assert!(!services.contains(JOB), "{text}");
    let lines: Vec<&str> = jobs.lines().collect();
    assert!(
        lines[0].starts_with("JOB ")
            && lines[0].contains("RESULT")
            && lines[0].contains("NEXT RUN"),
        "{text}"
    );
    let row = lines[1];
    assert!(row.starts_with(JOB), "{text}");
    assert!(row.contains(" ago  exit-code  1.5s  "), "{text}");
    assert!(
        row.contains(" UTC, in 29m ") || row.contains(" UTC, in 30m "),
        "{text}"
    );
    assert!(row.ends_with("50.00%       50.00%"), "{text}");
    assert!(
        text.contains("1 of 1 services up, 1 of 1 jobs failed their last run, as of"),
        "{text}"
    );

    // --json: the daemon's own, with the job's fields.
    let out = status(&uw, &["--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(find(&json, JOB)["kind"], "job");
    assert_eq!(find(&json, JOB)["job"]["last_run"]["result"], "exit-code");
}

/// A oneshot on a timer, run by hand three times (the last one failing):
/// the API, the status page and `unitwatch status` show it as a job.
#[test]
fn a_job_on_a_timer_is_shown_as_a_job() {
    let sb = sandbox!();
    sb.write_unit(JOB_UNIT, SETTLES);
    sb.write_unit(TIMER, HOURLY);
    sb.daemon_reload();
    sb.systemctl(&["start", TIMER]);
    let uw = Server::setup(&temp_dir("status-job"))
        .sandbox(&sb)
        .watch("units = [\"aitbc-*.service\"]")
        .start();
    sb.systemctl(&["start", JOB_UNIT]);
    sb.systemctl(&["start", JOB_UNIT]);
    sb.sh(&format!(
        "touch /run/settle.fail; systemctl start {JOB_UNIT} || true"
    ));
    let mut last = Value::Null;
    let unit = common::try_wait_for(WAIT, || {
        let (_, units) = api(&uw, "/api/v1/units");
        last = find(&units, JOB_UNIT).clone();
        (last["job"]["runs"]["exit-code"] == 1).then(|| last.clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "the API did not count the three runs: {last}\nlog:\n{}",
            uw.log()
        )
    });
    assert_eq!(unit["kind"], "job");
    assert!(unit["availability"].is_null(), "{unit}");
    let job = &unit["job"];
    assert_eq!(job["runs"]["success"], 2, "{unit}");
    assert_eq!(job["last_run"]["result"], "exit-code", "{unit}");
    let took = job["last_run"]["duration_seconds"].as_f64();
    assert!(took.is_some_and(|d| (0.2..5.0).contains(&d)), "{unit}");
    assert!(
        job["last_success"].as_f64() < job["last_run"]["end"].as_f64(),
        "{unit}"
    );
    assert_eq!(job["timer"]["name"], TIMER, "{unit}");
    let now = api(&uw, "/api/v1/units").1["now"]
        .as_f64()
        .unwrap_or_default();
    let next = job["timer"]["next_run"].as_f64().unwrap_or_default();
    assert!(
        next > now && next <= now + 3600.0,
        "next run {next}, now {now}"
    );

    let (_, html) = http_get(&uw.addr, "/").expect("GET /");
    let row = html
        .find(&format!("<tr id=\"{JOB_UNIT}\" data-kind=\"job\""))
        .unwrap_or_else(|| panic!("no job row:\n{html}"));
    assert!(
        row > html.find("<h2 id=\"jobs\">").unwrap_or(usize::MAX),
        "{html}"
    );

    let out = status(&uw, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(JOB_UNIT))
        .unwrap_or_else(|| panic!("no row for {JOB_UNIT}:\n{text}"));
    assert!(line.contains("  exit-code  "), "{text}");
    assert!(line.contains(" UTC, in "), "{text}");
}

#[test]
fn status_without_a_daemon_is_a_clear_error() {
    let addr = format!("127.0.0.1:{}", free_port());
    let out = cli()
        .args(["status", "--address", &addr])
        .output()
        .expect("run unitwatch status");
    assert_error(
        &out,
        &format!("unitwatch: no unitwatch answers at {addr}: connection refused (is it running?"),
    );
}

/// The server without systemd, with TLS and user alice (see
/// [`web_config`]) in a fresh directory with the certificates, the
/// password in `password` and a wrong one in `wrong`; and that directory.
fn tls_server(tag: &str) -> (Server, PathBuf) {
    let dir = cert_dir(tag);
    std::fs::write(dir.join("password"), "s3cret\n").expect("write password");
    std::fs::write(dir.join("wrong"), "wrong\n").expect("write password");
    let server = Server::setup(&dir).web(&web_config(&dir, "", 4)).start();
    (server, dir)
}

/// `unitwatch status ARGS` (options after the subcommand), with the
/// server's config and address.
fn status_of(server: &Server, args: &[&str]) -> Output {
    cli()
        .arg("status")
        .arg("--config")
        .arg(server.config_file())
        .args(["--web.listen-address", &server.addr])
        .args(args)
        .output()
        .expect("run unitwatch status")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// With the server's own web config and the right credentials: over TLS,
/// trusting exactly the server's certificate, the table.
#[test]
fn status_over_tls_with_basic_auth() {
    let (server, dir) = tls_server("status-tls");
    let web = path(&dir, "web.yml");
    let password = path(&dir, "password");
    let out = status_of(
        &server,
        &[
            "--web.config.file",
            &web,
            "--user",
            "alice",
            "--password-file",
            &password,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("UNIT "), "{stdout}");
    assert!(stdout.contains("0 of 0 services up"), "{stdout}");

    // --json, and the options before the subcommand instead.
    let out = cli()
        .arg("--config")
        .arg(server.config_file())
        .args(["--web.listen-address", &server.addr])
        .args(["--web.config.file", &web])
        .args([
            "status",
            "--json",
            "--user",
            "alice",
            "--password-file",
            &password,
        ])
        .output()
        .expect("run unitwatch status");
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["units"].as_array().map(Vec::len), Some(0));
}

/// `server.web_config` of --config is the web config status reads when no
/// --web.config.file is given.
#[test]
fn status_reads_the_web_config_its_config_names() {
    let (server, dir) = tls_server("status-tls-config");
    let config = dir.join("with-web.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{}\"\nweb_config = \"{}\"\n[watch]\nunits = [\"a.service\"]\n",
            server.addr,
            path(&dir, "web.yml")
        ),
    )
    .expect("write config");
    let out = cli()
        .args(["status", "--config", &config.display().to_string()])
        .args([
            "--user",
            "alice",
            "--password-file",
            &path(&dir, "password"),
        ])
        .output()
        .expect("run unitwatch status");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("0 of 0 services up"), "{stdout}");
}

/// With --ca: any certificate the CA signed for the host asked.
#[test]
fn status_trusts_a_ca_for_the_host_asked() {
    let (server, dir) = tls_server("status-ca");
    let port = server.addr.rsplit_once(':').map(|(_, p)| p).expect("port");
    let password = path(&dir, "password");
    for address in [server.addr.clone(), format!("localhost:{port}")] {
        let out = status_of(
            &server,
            &[
                "--ca",
                &path(&dir, "ca.crt"),
                "--address",
                &address,
                "--user",
                "alice",
                "--password-file",
                &password,
            ],
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{address}: {stdout}{stderr}");
    }
    // A CA that did not sign it.
    let out = status_of(
        &server,
        &[
            "--ca",
            &path(&dir, "other.crt"),
            "--user",
            "alice",
            "--password-file",
            &password,
        ],
    );
    assert_error(
        &out,
        &format!(
            "unitwatch: unitwatch at {}: untrusted certificate: not signed by a CA in {}",
            server.addr,
            path(&dir, "other.crt")
        ),
    );
}

#[test]
fn status_with_wrong_or_no_credentials_says_so() {
    let (server, dir) = tls_server("status-401");
    let web = path(&dir, "web.yml");
    let out = status_of(
        &server,
        &[
            "--web.config.file",
            &web,
            "--user",
            "alice",
            "--password-file",
            &path(&dir, "wrong"),
        ],
    );
    assert_error(
        &out,
        &format!(
            "unitwatch: unitwatch at {} refused the credentials of user `alice` (401): wrong user name or password",
            server.addr
        ),
    );
    let out = status_of(&server, &["--web.config.file", &web]);
    assert_error(
        &out,
        &format!(
            "unitwatch: unitwatch at {} asks for credentials (401): give --user NAME --password-file FILE",
            server.addr
        ),
    );
}

/// A web config whose certificate is not the one the server serves: the
/// server is not trusted.
#[test]
fn status_refuses_a_certificate_other_than_the_configured_one() {
    let (server, dir) = tls_server("status-pin");
    let other = dir.join("other-web.yml");
    std::fs::write(
        &other,
        "tls_server_config:\n  cert_file: other.crt\n  key_file: other.key\n",
    )
    .expect("write web config");
    let out = status_of(
        &server,
        &["--web.config.file", &other.display().to_string()],
    );
    assert_error(
        &out,
        &format!(
            "unitwatch: unitwatch at {}: untrusted certificate: it is not the certificate in {}",
            server.addr,
            path(&dir, "other.crt")
        ),
    );
}

/// Plain HTTP to a TLS port, and TLS to a plain HTTP port.
#[test]
fn status_says_when_tls_is_wrong_either_way() {
    let (tls, dir) = tls_server("status-mismatch");
    let out = status_of(&tls, &[]);
    assert_error(
        &out,
        &format!(
            "unitwatch: unitwatch at {} speaks only HTTPS: name its web configuration",
            tls.addr
        ),
    );
    let plain_dir = temp_dir("status-plain");
    let plain = Server::start(&plain_dir);
    let out = status_of(&plain, &["--ca", &path(&dir, "ca.crt")]);
    assert_error(
        &out,
        &format!("unitwatch: unitwatch at {} does not speak TLS", plain.addr),
    );
    // And plain HTTP to it works, as it always did.
    let out = status_of(&plain, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("0 of 0 services up"), "{stdout}");
}
