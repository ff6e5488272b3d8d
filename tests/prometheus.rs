//! The shipped Prometheus rules and Grafana dashboard, run by a real
//! Prometheus (Debian's) scraping the installed unitwatch in the sandbox with
//! the shipped scrape snippet. (tests/promtool.rs checks them offline.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::shipped::{dashboard, dashboard_queries, package, root};
use common::{wait_for, Sandbox};

const WAIT: Duration = Duration::from_secs(60);
/// A job: a oneshot its timer runs every 2 s, failing every other run.
const JOB: &str = "aitbc-settlement.service";

/// A Type=notify service that pets its watchdog every second.
const HEARTBEAT: &str = "import os, socket, time\n\
a = os.environ['NOTIFY_SOCKET']\n\
a = chr(0) + a[1:] if a[0] == '@' else a\n\
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
s.connect(a)\n\
s.send(b'READY=1')\n\
while True:\n    s.send(b'WATCHDOG=1')\n    time.sleep(1)\n";

/// What a family needs that the sandbox may lack.
enum Needs {
    /// A cgroup controller: the sandbox's cgroup2 has none of memory, pids
    /// and io where the host has them on cgroup v1 (a hybrid hierarchy).
    Controller(&'static str),
}

/// The families the sandbox may not have, and why: where it lacks what
/// they need, the dashboard's queries of these families must evaluate but
/// may return nothing; where it has it, they must return data like every
/// other query.
const NEEDS: &[(&str, Needs)] = &[
    ("service_memory_bytes", Needs::Controller("memory")),
    ("service_memory_peak_bytes", Needs::Controller("memory")),
    ("service_memory_max_bytes", Needs::Controller("memory")),
    ("service_oom_kills_total", Needs::Controller("memory")),
    ("service_tasks", Needs::Controller("pids")),
    ("service_tasks_max", Needs::Controller("pids")),
    ("service_io_read_bytes_total", Needs::Controller("io")),
    ("service_io_write_bytes_total", Needs::Controller("io")),
];

/// What the sandbox has: its cgroup2's controllers (cgroup.controllers).
struct Has {
    controllers: String,
}

impl Has {
    fn of(sb: &Sandbox) -> Has {
        Has {
            controllers: sb.sh("cat /sys/fs/cgroup/cgroup.controllers"),
        }
    }
}

/// Why a family of `expr` may have no data in a sandbox that has `has`, if
/// one may not.
fn lacking(expr: &str, has: &Has) -> Option<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter_map(|name| NEEDS.iter().find(|(f, _)| *f == name))
        .find_map(|(family, needs)| match needs {
            Needs::Controller(c) if !has.controllers.split_whitespace().any(|h| h == *c) => Some(
                format!("{family}: no {c} controller in the sandbox's cgroup2"),
            ),
            _ => None,
        })
}

/// The rules file with every `for:` shortened, for this test only.
fn fast_rules(from: &Path) -> String {
    std::fs::read_to_string(from)
        .expect("rules")
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for:") {
                l.replace(l.trim_start(), "for: 3s")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn query(sb: &Sandbox, path: &str, q: Option<&str>) -> serde_json::Value {
    let cmd = match q {
        Some(q) => format!(
            "curl -sfG --data-urlencode 'query={}' http://127.0.0.1:9090{path}",
            q.replace('\'', "'\\''")
        ),
        None => format!("curl -sf http://127.0.0.1:9090{path}"),
    };
    let out = sb.exec(&["sh", "-c", &cmd]);
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn real_prometheus_scrapes_alerts_and_answers_the_dashboard() {
    // Skipped before looking for the package: without root it is not used.
    let sb = sandbox!();
    let deb = package();
    // With limits and IO accounting, for the Resources row's queries
    // (TasksMax= is finite by default).
    sb.write_unit(
        "aitbc-coordinator-api.service",
        "[Service]\nExecStart=/bin/sleep infinity\nMemoryMax=512M\nIOAccounting=yes\n",
    );
    sb.write_unit(
        "aitbc-marketplace.service",
        "[Service]\nExecStart=/bin/false\n",
    );
    // An instance name with systemd's escapes, as mount and device units have.
    sb.write_unit(
        "aitbc-worker@.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    sb.write_unit(
        JOB,
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=oneshot\n\
         ExecStart=/bin/sh -c 'sleep 0.3; if [ -e /run/settled ]; then rm /run/settled; exit 1; fi; touch /run/settled'\n",
    );
    // On the wall clock, so that the timer has a next elapse in real time.
    sb.write_unit(
        "aitbc-settlement.timer",
        "[Timer]\nOnCalendar=*:*:0/2\nAccuracySec=1ms\n",
    );
    // The watchdog and socket panels' units: a service petting its
    // watchdog, and a listening socket (no connection, so no instance).
    std::fs::write(sb.path("/run/heartbeat.py"), HEARTBEAT).expect("write script");
    sb.write_unit(
        "aitbc-heartbeat.service",
        "[Service]\nType=notify\nWatchdogSec=10s\n\
         ExecStart=/usr/bin/python3 -c \"exec(open('/run/heartbeat.py').read())\"\n",
    );
    sb.write_unit(
        "aitbc-rpc.socket",
        "[Socket]\nListenStream=127.0.0.1:8811\nAccept=yes\n",
    );
    sb.write_unit(
        "aitbc-rpc@.service",
        "[Service]\nExecStart=/bin/cat\nStandardInput=socket\n",
    );
    sb.daemon_reload();
    sb.systemctl(&[
        "start",
        "aitbc-coordinator-api.service",
        "aitbc-worker@gpu\\x2d0.service",
        "aitbc-settlement.timer",
        "aitbc-heartbeat.service",
        "aitbc-rpc.socket",
    ]);
    let _ = sb.exec(&["systemctl", "start", "aitbc-marketplace.service"]);
    sb.sh("rm -f /usr/sbin/policy-rc.d");
    sb.sh(&format!("dpkg -i {} >/dev/null", deb.display()));
    assert_eq!(sb.show("unitwatch.service", "ActiveState"), "active");

    // Prometheus with the shipped scrape snippet (1 s interval) and rules.
    let dir = sb.path("/run/prom");
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    let scrape = std::fs::read_to_string(root().join("packaging/prometheus/scrape-unitwatch.yml"))
        .expect("scrape snippet")
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    let indented: String = scrape.lines().map(|l| format!("  {l}\n")).collect();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - /run/prom/rules.yml\n  - /run/prom/fleet-rules.yml\nscrape_configs:\n{indented}"
        ),
    )
    .expect("prometheus.yml");
    std::fs::write(
        dir.join("rules.yml"),
        fast_rules(&root().join("packaging/prometheus/unitwatch-rules.yml")),
    )
    .expect("rules");
    // The dashboard's fleet row reads the fleet records.
    std::fs::write(
        dir.join("fleet-rules.yml"),
        fast_rules(&root().join("packaging/prometheus/unitwatch-fleet-rules.yml")),
    )
    .expect("fleet rules");
    sb.sh(
        "systemd-run --unit=prom /usr/bin/prometheus --config.file=/run/prom/prometheus.yml \
         --storage.tsdb.path=/run/prom/data --web.listen-address=127.0.0.1:9090 >/dev/null 2>&1",
    );
    wait_for("Prometheus to scrape unitwatch", WAIT, || {
        let r = query(&sb, "/api/v1/query", Some("up{job=\"unitwatch\"} == 1"));
        r["data"]["result"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|_| ())
    });

    // The escaped name arrives intact (a bad label value would fail the scrape).
    wait_for("the escaped unit name in Prometheus", WAIT, || {
        let r = query(
            &sb,
            "/api/v1/query",
            Some("service_up{unit=\"aitbc-worker@gpu\\\\x2d0.service\"} == 1"),
        );
        r["data"]["result"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|_| ())
    });

    // Every dashboard query parses and returns data (the Jobs row's from
    // the settlement job), but for the families whose controller or
    // systemd the sandbox lacks (NEEDS).
    let dashboard = dashboard();
    assert_eq!(dashboard["title"], "Service uptime");
    let has = Has::of(&sb);
    for expr in dashboard_queries(&dashboard) {
        if let Some(why) = lacking(&expr, &has) {
            let r = query(&sb, "/api/v1/query", Some(&expr));
            assert_eq!(r["status"], "success", "`{expr}`: {r}");
            eprintln!("`{expr}` may return nothing ({why})");
            continue;
        }
        wait_for(&format!("data for `{expr}`"), WAIT, || {
            let r = query(&sb, "/api/v1/query", Some(&expr));
            assert_ne!(r["status"], "error", "`{expr}`: {r}");
            r["data"]["result"]
                .as_array()
                .filter(|a| !a.is_empty())
                .map(|_| ())
        });
    }

    // Stopping a watched unit: ServiceDown pending, then firing.
    sb.systemctl(&["stop", "aitbc-coordinator-api.service"]);
    let state_of_alert = |sb: &Sandbox| -> Option<String> {
        let r = query(sb, "/api/v1/alerts", None);
        r["data"]["alerts"].as_array()?.iter().find_map(|a| {
            (a["labels"]["alertname"] == "ServiceDown"
                && a["labels"]["unit"] == "aitbc-coordinator-api.service")
                .then(|| a["state"].as_str().unwrap_or_default().to_owned())
        })
    };
    wait_for("ServiceDown pending", WAIT, || {
        state_of_alert(&sb).filter(|s| s == "pending")
    });
    wait_for("ServiceDown firing", WAIT, || {
        state_of_alert(&sb).filter(|s| s == "firing")
    });
    // The failed unit fires ServiceFailing; the running unitwatch is not down.
    let r = query(&sb, "/api/v1/alerts", None);
    let names: Vec<String> = r["data"]["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("{}:{}", x["labels"]["alertname"], x["labels"]["unit"]))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        names
            .iter()
            .any(|n| n.contains("ServiceFailing") && n.contains("aitbc-marketplace")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("UnitwatchDown")),
        "{names:?}"
    );
    // The failed unit leaves systemd degraded.
    wait_for("HostDegraded firing", WAIT, || {
        let r = query(&sb, "/api/v1/alerts", None);
        r["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "HostDegraded" && a["state"] == "firing")?;
        Some(())
    });

    // The job's failed runs fire JobFailed (until the next run succeeds) ...
    wait_for("JobFailed firing for the job", WAIT, || {
        let r = query(&sb, "/api/v1/alerts", None);
        r["data"]["alerts"].as_array()?.iter().find(|a| {
            a["labels"]["alertname"] == "JobFailed"
                && a["labels"]["unit"] == JOB
                && a["state"] == "firing"
        })?;
        Some(())
    });
    // ... and never a service's alert: between runs it is not down, and its
    // failures are JobFailed's (ALERTS keeps pending alerts too).
    let service_alerts = format!(
        "max_over_time(ALERTS{{unit=\"{JOB}\",alertname=~\"ServiceDown|ServiceFailing\"}}[1h])"
    );
    let r = query(&sb, "/api/v1/query", Some(&service_alerts));
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["data"]["result"], serde_json::json!([]), "{r}");
    let runs = query(
        &sb,
        "/api/v1/query",
        Some(&format!("sum(service_job_runs_total{{unit=\"{JOB}\"}})")),
    );
    assert!(
        runs["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n >= 2.0),
        "runs of {JOB}: {runs}"
    );
    let _ = sb.exec(&["systemctl", "stop", "prom.service"]);
}

#[test]
fn the_exemptions_name_whole_families_and_what_they_need() {
    let v1 = Has {
        controllers: "cpuset cpu\n".into(),
    };
    let all = Has {
        controllers: "cpuset cpu io memory pids\n".into(),
    };
    let tasks = "sum by (unit) (service_tasks_max{unit=~\".*\", instance=~\".*\"})";
    assert!(lacking(tasks, &v1).is_some_and(|w| w.contains("no pids controller")));
    assert_eq!(lacking(tasks, &all), None);
    let oom = "sum by (unit) (increase(service_oom_kills_total{unit=~\".*\"}[1h]))";
    assert!(lacking(oom, &v1).is_some_and(|w| w.contains("no memory controller")));
    assert_eq!(lacking(oom, &all), None);
    // Every other family is checked for data, whatever the sandbox has.
    for other in [
        "sum by (unit, mode) (rate(service_cpu_seconds_total[5m]))",
        "service_tasks_current",
        "socket_connections",
        "rate(socket_connections_accepted_total[5m])",
        "rate(socket_connections_refused_total[5m])",
        "systemd_units",
    ] {
        assert_eq!(lacking(other, &v1), None, "{other}");
    }
}
