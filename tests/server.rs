//! The whole server in-process, as any user and without systemd: it is
//! given its listener and its shutdown signal, as `main` would give them,
//! and reached over loopback — what it serves without a bus, from a saved
//! state, on which paths and methods, and how it stops. TLS, auth and the
//! connection limits are in tests/tls.rs and tests/limits.rs; what needs a
//! real systemd is in the other test files.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use common::inproc::Server;
use common::saved::{self, JOB, SERVICE};
use common::unitwatch::{http_get, temp_dir, value};
use serde_json::Value;

/// A state as the first release wrote it: one unit, restarted twice by
/// systemd and once by hand, failed once.
const SAVED: &str = r#"{"version":1,"saved_at":1700000100000000,"boot_id":"b","journal_cursor":null,"journal_from":1700000100000000,"ledger":{"units":{"a.service":{"seen_at":1700000000000000,"fold_at":1700000000000000,"fold_state":"active","up_usec":0,"down_usec":0,"points":{"1700000050000000":"failed"},"sub_state":"failed","n_restarts":{"high":2,"high_at":1700000050000000,"epoch_at":0,"previous_high":null},"restarts":[2,1],"failures":{"exit-code":1},"last_failure_at":1700000050000000,"failed_invocations":["x"],"restarted_invocations":[],"loaded":true}}}}"#;

/// A fresh directory with [`SAVED`] as its state.
fn saved(tag: &str) -> PathBuf {
    let dir = temp_dir(tag);
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    std::fs::write(dir.join("state").join("state.json"), SAVED).expect("write state");
    dir
}

/// The first line of the answer to `METHOD PATH` over HTTP/1.0.
fn status_line(addr: &str, method: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    write!(s, "{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").expect("send");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn without_a_bus_it_serves_and_says_why_it_is_not_healthy() {
    let s = Server::start(&temp_dir("inproc-nobus"));
    let (status, body) = s.get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    let (status, body) = s.get("/metrics");
    assert_eq!(status, 200, "{body}");
    assert_eq!(value(&body, "unitwatch_dbus_up"), Some(0.0), "{body}");
}

/// `GET /metrics` with `headers`: the answer's head and its body's bytes.
fn scrape_with(addr: &str, headers: &str) -> (String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    write!(s, "GET /metrics HTTP/1.0\r\n{headers}\r\n").expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    (
        String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase(),
        raw[split + 4..].to_vec(),
    )
}

#[test]
fn a_scraper_that_asks_for_openmetrics_gets_it_and_others_the_text_format() {
    let s = Server::start(&saved("inproc-formats"));
    s.get("/metrics");
    let (head, body) = scrape_with(
        &s.addr,
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    );
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&body).ends_with("# EOF\n"));
    let (head, body) = scrape_with(&s.addr, "Accept: text/plain\r\n");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE service_uptime_seconds_total counter"),
        "{text}"
    );
}

#[test]
fn a_scraper_that_takes_gzip_gets_the_same_body_gzipped() {
    let s = Server::start(&saved("inproc-gzip"));
    // The two scrapes compared must not straddle the journal's opening.
    s.wait_value("unitwatch_journal_up", Duration::from_secs(10), |v| {
        v == 1.0
    });
    let (_, plain) = scrape_with(&s.addr, "");
    let (head, zipped) = scrape_with(&s.addr, "Accept-Encoding: gzip\r\n");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .expect("a gzip body");
    // The same but for uptime, which grows between the two scrapes.
    let samples = |b: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(b)
            .lines()
            .filter(|l| !l.contains("time_seconds"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(samples(&plain), samples(&unzipped));
    assert!(
        zipped.len() * 3 < plain.len(),
        "{} vs {}",
        zipped.len(),
        plain.len()
    );
    let (head, _) = scrape_with(&s.addr, "Accept-Encoding: gzip;q=0, identity\r\n");
    assert!(!head.contains("content-encoding"), "{head}");
}

#[test]
fn a_saved_state_is_served_from_the_start() {
    let s = Server::start(&saved("inproc-saved"));
    let (_, body) = s.get("/metrics");
    assert_eq!(
        value(
            &body,
            r#"service_restart_count_total{unit="a.service",trigger="auto"}"#
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            r#"service_failures_total{unit="a.service",result="exit-code"}"#
        ),
        Some(1.0),
        "{body}"
    );
    let (status, body) = s.get("/api/v1/units/a.service");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state":"failed""#), "{body}");
    let (status, _) = s.get("/api/v1/units/b.service");
    assert_eq!(status, 404);
}

#[test]
fn the_shutdown_signal_ends_the_server_and_saves_the_state() {
    let mut s = Server::start(&temp_dir("inproc-stop"));
    s.get("/metrics");
    s.stop().expect("the server returns Ok");
    assert!(s.state_file().exists(), "state saved at shutdown");
    assert!(
        http_get(&s.addr, "/metrics").is_err(),
        "nothing listens after shutdown"
    );
}

#[test]
fn the_status_page_lists_the_saved_units() {
    let s = Server::start(&saved("inproc-page"));
    let (status, html) = s.get("/");
    assert_eq!(status, 200);
    assert!(html.contains("<td class=\"unit\">a.service</td>"), "{html}");
    assert!(html.contains("0 of 1 up"), "{html}");
}

/// `GET path` as JSON, which must answer 200.
fn json(s: &Server, path: &str) -> Value {
    let (status, body) = s.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn seconds(usec: u64) -> f64 {
    usec as f64 / 1e6
}

#[test]
fn the_api_gives_each_unit_its_kind_and_a_job_its_runs() {
    let (dir, t) = saved::with_job("inproc-api-job");
    let s = Server::start(&dir);
    let units = json(&s, "/api/v1/units");
    let list = units["units"].as_array().expect("units");
    let unit = |name: &str| {
        list.iter()
            .find(|u| u["unit"] == name)
            .unwrap_or_else(|| panic!("no {name} in {units}"))
    };
    assert_eq!(unit(SERVICE)["kind"], "service");
    assert!(unit(SERVICE)["job"].is_null());
    assert!(unit(SERVICE)["availability"]["1h"].is_number(), "{units}");

    let job = unit(JOB);
    assert_eq!(job["kind"], "job");
    for field in ["availability", "uptime_seconds", "mtbf_seconds"] {
        assert!(job[field].is_null(), "{field}: {job}");
    }
    let j = &job["job"];
    assert_eq!(j["running"], false);
    assert_eq!(j["last_run"]["start"], seconds(t.last_start));
    assert_eq!(j["last_run"]["end"], seconds(t.last_end));
    assert_eq!(j["last_run"]["duration_seconds"], 1.5);
    assert_eq!(j["last_run"]["result"], "exit-code");
    assert_eq!(j["last_success"], seconds(t.first_end));
    assert_eq!(j["runs"]["success"], 1);
    assert_eq!(j["runs"]["exit-code"], 1);
    assert_eq!(j["success_rate"]["1h"], 0.0);
    assert_eq!(j["success_rate"]["24h"], 0.5);
    assert_eq!(j["timer"]["name"], "backup.timer");
    assert_eq!(j["timer"]["last_trigger"], seconds(t.last_start));
    assert_eq!(j["timer"]["next_run"], seconds(t.next_run));
    assert_eq!(job["failures"]["exit-code"], 1);
}

#[test]
fn one_job_gives_its_runs_of_the_last_30_days() {
    let (dir, t) = saved::with_job("inproc-api-runs");
    let s = Server::start(&dir);
    let detail = json(&s, &format!("/api/v1/units/{JOB}"));
    let runs: Vec<(f64, &str)> = detail["runs"]
        .as_array()
        .expect("a job's runs")
        .iter()
        .map(|r| {
            (
                r["end"].as_f64().unwrap_or_default(),
                r["result"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        runs,
        [
            (seconds(t.first_end), "success"),
            (seconds(t.last_end), "exit-code")
        ]
    );
    assert!(json(&s, &format!("/api/v1/units/{SERVICE}"))["runs"].is_null());
}

#[test]
fn the_status_page_lists_jobs_apart_from_the_services() {
    let (dir, _) = saved::with_job("inproc-page-job");
    let s = Server::start(&dir);
    let (status, html) = s.get("/");
    assert_eq!(status, 200);
    assert!(
        html.contains("<span id=\"summary\">1 of 1 up</span>"),
        "{html}"
    );
    let jobs = html
        .find("<h2 id=\"jobs\">Jobs</h2>")
        .expect("a Jobs section");
    let row = html
        .find(&format!("<tr id=\"{JOB}\" data-kind=\"job\""))
        .unwrap_or_else(|| panic!("no job row:\n{html}"));
    assert!(row > jobs, "{html}");
    let row = &html[row..html[row..].find("</tr>").map_or(html.len(), |e| row + e)];
    assert!(
        row.contains("<span class=\"badge down\">exit-code</span>"),
        "{row}"
    );
    assert!(row.contains("<td class=\"num took\">1.5s</td>"), "{row}");
    assert!(row.contains(">50.00%</td>"), "{row}");
    assert!(
        row.contains(">in 29m ") || row.contains(">in 30m "),
        "{row}"
    );
    assert_eq!(
        row.matches("<span class=\"up\" style=\"left:").count(),
        1,
        "{row}"
    );
    assert_eq!(
        row.matches("<span class=\"down\" style=\"left:").count(),
        1,
        "{row}"
    );
}

#[test]
fn the_index_links_to_the_metrics_and_unknown_paths_are_404() {
    let s = Server::start(&temp_dir("inproc-paths"));
    let (status, body) = s.get("/");
    assert_eq!(status, 200);
    assert!(body.contains("href=\"metrics\""), "{body}");
    let (status, _) = s.get("/nope");
    assert_eq!(status, 404);
}

/// Only GET and HEAD.
#[test]
fn methods_other_than_get_and_head_are_405() {
    let s = Server::start(&temp_dir("inproc-methods"));
    for (method, want) in [("POST", "405"), ("DELETE", "405"), ("HEAD", "200")] {
        let line = status_line(&s.addr, method, "/metrics");
        assert!(
            line.starts_with(&format!("HTTP/1.0 {want}")),
            "{method}: {line}"
        );
    }
}
