//! The monitoring plan's whole stack (demo/stack: Debian's Prometheus, node
//! and blackbox exporters and Alertmanager, the demo AITBC services and
//! settlement job, unitwatch as packaged) running in a sandbox with short
//! scrape and evaluation intervals: targets up, rules loaded, each alert
//! forced and seen firing, notifications delivered to a webhook this test
//! runs, the dashboards' queries answered, the job accounted as a job.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::shipped::{dashboard_queries, root};
use common::{wait_for, Sandbox};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// Runs `f` on a thread inside the network namespace of the sandbox's PID 1;
/// sockets made there stay in that namespace.
fn in_netns<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("the sandbox's netns");
        // SAFETY: setns on a valid namespace fd; it changes only this thread.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the netns thread")
}

/// The webhook receiver Alertmanager's receivers point at (:5001 in the
/// sandbox): every notification's JSON body, with the path it was posted to.
struct Webhook {
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Webhook {
    fn start(pid: u32) -> Webhook {
        let listener = in_netns(pid, || {
            TcpListener::bind("127.0.0.1:5001").expect("bind :5001")
        });
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&received);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = header.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        store.lock().expect("webhook store").push((path, v));
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Webhook { received }
    }

    /// The receiver path a firing `alertname` for `unit` was delivered to.
    fn delivered(&self, alertname: &str, unit: &str) -> Option<String> {
        let got = self.received.lock().expect("webhook store");
        got.iter().find_map(|(path, note)| {
            note["alerts"].as_array()?.iter().find_map(|a| {
                (a["status"] == "firing"
                    && a["labels"]["alertname"] == alertname
                    && a["labels"]["unit"] == unit)
                    .then(|| path.clone())
            })
        })
    }
}

/// A booted sandbox with the stack running in it.
struct Stack {
    sb: Sandbox,
    webhook: Webhook,
}

impl Stack {
    /// demo/stack in `sb`, for tests: 1 s intervals, `for:` 5 s, no random
    /// crashes or hangs; `env` adds Environment= lines per demo service
    /// (`("coordinator_api", "AITBC_JOB_SECONDS=8")`).
    fn start(sb: Sandbox, env: &[(&str, &str)]) -> Stack {
        let webhook = Webhook::start(sb.pid());
        let mut cmd = Command::new(root().join("demo/stack"));
        cmd.arg(sb.pid().to_string())
            .env("UNITWATCH_BIN", env!("CARGO_BIN_EXE_unitwatch"))
            .env("STACK_FAST", "1")
            .env("STACK_FOR", "5s")
            .env("STACK_WEBHOOK", "none")
            .env("STACK_ENV_marketplace", "AITBC_CRASH_EVERY=0")
            .env("STACK_ENV_coordinator_api", "AITBC_HANG_EVERY=0");
        for (svc, line) in env {
            let var = format!("STACK_ENV_{svc}");
            let line = match *svc {
                "coordinator_api" => format!("AITBC_HANG_EVERY=0 {line}"),
                "marketplace" => format!("AITBC_CRASH_EVERY=0 {line}"),
                _ => (*line).to_owned(),
            };
            cmd.env(var, line);
        }
        let out = cmd.output().expect("run demo/stack");
        assert!(
            out.status.success(),
            "demo/stack failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Stack { sb, webhook }
    }

    /// GET `path` (with `query` URL-encoded) from Prometheus, as JSON.
    fn prometheus(&self, path: &str, query: Option<&str>) -> Value {
        let cmd = match query {
            Some(q) => format!(
                "curl -sfG --max-time 5 --data-urlencode 'query={}' http://127.0.0.1:9090{path}",
                q.replace('\'', "'\\''")
            ),
            None => format!("curl -sf --max-time 5 http://127.0.0.1:9090{path}"),
        };
        let out = self.sb.exec(&["sh", "-c", &cmd]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The instant vector `expr` evaluates to (empty on error).
    fn query(&self, expr: &str) -> Vec<Value> {
        let r = self.prometheus("/api/v1/query", Some(expr));
        assert_ne!(r["status"], "error", "`{expr}`: {r}");
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The one sample of `expr`, if there is exactly one.
    fn value(&self, expr: &str) -> Option<f64> {
        match self.query(expr).as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Waits until Prometheus has `alertname` for `unit` firing.
    fn wait_firing(&self, alertname: &str, unit: &str) {
        wait_for(&format!("{alertname} for {unit} firing"), WAIT, || {
            let r = self.prometheus("/api/v1/alerts", None);
            r["data"]["alerts"].as_array()?.iter().find(|a| {
                a["labels"]["alertname"] == alertname
                    && a["labels"]["unit"] == unit
                    && a["state"] == "firing"
            })?;
            Some(())
        });
    }

    /// Waits until every scrape target (services, exporters, probes) is up.
    fn wait_all_up(&self) -> Vec<Value> {
        wait_for("every scrape target up", WAIT, || {
            let r = self.prometheus("/api/v1/targets", None);
            let targets = r["data"]["activeTargets"].as_array()?.clone();
            (targets.len() == 9 && targets.iter().all(|t| t["health"] == "up")).then_some(targets)
        })
    }
}

/// The plan's dashboards: (file, title, the panels the plan lists).
const DASHBOARDS: [(&str, &str, &[&str]); 3] = [
    (
        "aitbc-system-overview.json",
        "AITBC System Overview",
        &[
            "Service Uptime",
            "Request Rate",
            "Error Rate",
            "Response Time",
            "Queue Length",
            "Blockchain Height",
            "Block Processing Time",
            "Job Processing Time",
        ],
    ),
    (
        "aitbc-blockchain-performance.json",
        "Blockchain Performance",
        &[
            "Block Processing Time (p95)",
            "Block Validation Time (p95)",
            "Block Propagation Time (p95)",
            "Block Height",
            "Transactions per Block",
            "Network Peer Count",
        ],
    ),
    (
        "aitbc-job-processing-performance.json",
        "Job Processing Performance",
        &[
            "Job Submission Rate",
            "Job Processing Time (p95)",
            "Job Queue Duration (p95)",
            "Job Execution Time (p95)",
            "Jobs in Queue",
            "Job Success Rate",
        ],
    ),
];

fn plan_dashboard(file: &str) -> Value {
    let path = root()
        .join("infra/monitoring/grafana/dashboards")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

#[test]
fn the_plans_dashboards_have_every_panel_it_lists() {
    let mut uids = Vec::new();
    for (file, title, panels) in DASHBOARDS {
        let d = plan_dashboard(file);
        assert_eq!(d["title"], title, "{file}");
        uids.push(d["uid"].as_str().expect("a uid").to_owned());
        assert!(
            d["schemaVersion"].as_u64().is_some(),
            "{file}: no schemaVersion"
        );
        let list = d["panels"].as_array().expect("panels");
        let titles: Vec<&str> = list.iter().filter_map(|p| p["title"].as_str()).collect();
        assert_eq!(titles, panels, "{file}");
        let mut ids: Vec<u64> = list.iter().filter_map(|p| p["id"].as_u64()).collect();
        ids.dedup();
        assert_eq!(
            ids.len(),
            list.len(),
            "{file}: panel ids missing or repeated"
        );
        for p in list {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{file}: {}",
                p["title"]
            );
            for k in ["x", "y", "w", "h"] {
                assert!(
                    p["gridPos"][k].as_u64().is_some(),
                    "{file}: {} gridPos.{k}",
                    p["title"]
                );
            }
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {} has no query", p["title"]);
        }
    }
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 3, "dashboard uids must differ");
}

const NODE: &str = "aitbc-blockchain-node.service";
const API: &str = "aitbc-coordinator-api.service";
/// The demo's job, run by aitbc-settlement.timer.
const JOB: &str = "aitbc-settlement.service";

#[test]
fn the_stack_boots_with_every_target_up_every_rule_loaded_and_dashboards_answered() {
    let stack = Stack::start(sandbox!(), &[]);
    let targets = stack.wait_all_up();
    let mut jobs: Vec<String> = targets
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t["labels"]["job"].as_str().unwrap_or(""),
                t["labels"]["instance"].as_str().unwrap_or("")
            )
        })
        .collect();
    jobs.sort();
    assert_eq!(
        jobs,
        [
            "blackbox http://localhost:8011/v1/health",
            "blackbox http://localhost:8080/v1/health",
            "blackbox http://localhost:8102/v1/health",
            "blockchain-node localhost:8080",
            "coordinator-api localhost:8011",
            "marketplace localhost:8102",
            "node-exporter localhost:9100",
            "prometheus localhost:9090",
            "unitwatch localhost:9567",
        ]
    );
    // Every probe succeeds, and carries its unit.
    wait_for("every health probe succeeding", WAIT, || {
        let probes = stack.query("probe_success == 1");
        (probes.len() == 3).then_some(())
    });
    let units: Vec<String> = stack
        .query("probe_success")
        .iter()
        .filter_map(|s| s["metric"]["unit"].as_str().map(str::to_owned))
        .collect();
    for unit in [API, NODE, "aitbc-marketplace.service"] {
        assert!(units.iter().any(|u| u == unit), "{unit} not in {units:?}");
    }
    // Both rule files load, with every group.
    let rules = stack.prometheus("/api/v1/rules", None);
    let mut groups: Vec<String> = rules["data"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .map(|g| {
            format!(
                "{} {}",
                g["file"].as_str().unwrap_or(""),
                g["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            "/etc/prometheus/rules/aitbc-rules.yml aitbc-serving",
            "/etc/prometheus/rules/aitbc-rules.yml critical",
            "/etc/prometheus/rules/aitbc-rules.yml warnings",
            "/etc/prometheus/rules/unitwatch-rules.yml unitwatch-alerts",
            "/etc/prometheus/rules/unitwatch-rules.yml unitwatch-availability",
        ]
    );
    for g in rules["data"]["groups"].as_array().expect("rule groups") {
        for r in g["rules"].as_array().expect("rules") {
            assert_eq!(r["health"], "ok", "{r}");
        }
    }
    // Every query of the plan's dashboards returns data.
    for (file, _, _) in DASHBOARDS {
        for expr in dashboard_queries(&plan_dashboard(file)) {
            wait_for(&format!("{file}: data for `{expr}`"), WAIT, || {
                (!stack.query(&expr).is_empty()).then_some(())
            });
        }
    }
    // The settlement job (every 20 s): a job with runs and a next run, no
    // service_up, and no service alert for it.
    wait_for("a finished run of the settlement job", WAIT, || {
        stack.value(&format!(
            "sum(service_job_runs_total{{unit=\"{JOB}\"}}) >= 1"
        ))
    });
    assert!(
        stack
            .value(&format!(
                "service_job_next_run_timestamp_seconds{{unit=\"{JOB}\"}} > time() - 5"
            ))
            .is_some(),
        "no next run for {JOB}"
    );
    assert!(stack
        .query(&format!("service_up{{unit=\"{JOB}\"}}"))
        .is_empty());
    assert!(
        stack
            .query(&format!(
                "ALERTS{{unit=\"{JOB}\",alertname=~\"ServiceDown|ServiceFailing\"}}"
            ))
            .is_empty(),
        "a service alert for {JOB}"
    );
}

#[test]
fn a_stopped_unit_fires_both_down_alerts_and_the_webhook_receives_them() {
    let stack = Stack::start(sandbox!(), &[]);
    stack.wait_all_up();
    stack.sb.systemctl(&["stop", NODE]);
    // unitwatch's unit-down alert and the plan's target-down alert.
    stack.wait_firing("ServiceDown", NODE);
    stack.wait_firing("TargetDown", NODE);
    // Alertmanager has both, and delivers both to the critical receiver.
    for name in ["ServiceDown", "TargetDown"] {
        let path = wait_for(&format!("{name} for {NODE} at the webhook"), WAIT, || {
            stack.webhook.delivered(name, NODE)
        });
        assert_eq!(path, "/critical", "{name}");
    }
    let am = stack.sb.sh("curl -sf http://127.0.0.1:9093/api/v2/alerts");
    let am: Value = serde_json::from_str(&am).expect("Alertmanager's alerts");
    for name in ["ServiceDown", "TargetDown"] {
        assert!(
            am.as_array()
                .expect("alerts")
                .iter()
                .any(|a| a["labels"]["alertname"] == name && a["labels"]["unit"] == NODE),
            "{name} not in Alertmanager: {am}"
        );
    }
}

#[test]
fn a_hung_coordinator_is_unhealthy_while_its_unit_stays_up() {
    let stack = Stack::start(sandbox!(), &[("coordinator_api", "AITBC_HANG_SECONDS=0")]);
    stack.wait_all_up();
    // Serving long enough for the availabilities to mean something.
    wait_for("serving recorded for the coordinator", WAIT, || {
        stack.value(&format!(
            "unit:service_serving:ratio_1h{{unit=\"{API}\"}} == 1"
        ))
    });
    stack.sb.systemctl(&["kill", "-s", "USR1", API]);
    stack.wait_firing("ServiceUnhealthy", API);
    assert_eq!(stack.sb.show(API, "ActiveState"), "active");
    assert_eq!(
        stack.value(&format!("service_up{{unit=\"{API}\"}}")),
        Some(1.0)
    );
    let path = wait_for("ServiceUnhealthy at the webhook", WAIT, || {
        stack.webhook.delivered("ServiceUnhealthy", API)
    });
    assert_eq!(path, "/critical");
    // Serving availability falls below the unit's (which stays 1).
    let serving = stack.value(&format!("unit:service_serving:ratio_1h{{unit=\"{API}\"}}"));
    let unit = stack.value(&format!(
        "unit:service_availability:ratio_1h{{unit=\"{API}\"}}"
    ));
    match (serving, unit) {
        (Some(s), Some(u)) => assert!(s < u && u > 0.99, "serving {s}, unit {u}"),
        other => panic!("no availabilities: {other:?}"),
    }
}

#[test]
fn slow_blocks_slow_jobs_a_long_queue_and_failures_fire_their_alerts() {
    let stack = Stack::start(
        sandbox!(),
        &[
            ("blockchain_node", "AITBC_BLOCK_PROCESSING_SECONDS=1.5"),
            (
                "coordinator_api",
                "AITBC_JOB_RATE=40 AITBC_WORKERS=4 AITBC_JOB_SECONDS=6 AITBC_JOB_FAILURE_RATIO=0.3",
            ),
        ],
    );
    for alert in [
        "BlockProcessingTooSlow",
        "JobProcessingTooSlow",
        "HighJobQueue",
        "HighFailureRate",
    ] {
        let unit = if alert == "BlockProcessingTooSlow" {
            NODE
        } else {
            API
        };
        stack.wait_firing(alert, unit);
    }
    assert!(stack.value("jobs_in_queue").is_some_and(|q| q > 100.0));
}
