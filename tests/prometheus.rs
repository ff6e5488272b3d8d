//! The shipped Prometheus rules and Grafana dashboard, checked by promtool
//! and run by a real Prometheus (Debian's) scraping the installed unitwatch
//! in the sandbox with the shipped scrape snippet.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{wait_for, Sandbox};

const WAIT: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root().join("packaging/prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): run scripts/setup"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn rules_pass_promtool_check_and_tests() {
    let out = promtool(&["check", "rules", "unitwatch-rules.yml"]);
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
    let out = promtool(&[
        "test",
        "rules",
        "unitwatch-rules.test.yml",
        "unitwatch-slo.test.yml",
    ]);
    assert_eq!(out.matches("SUCCESS").count(), 2, "{out}");
}

/// Every `expr` of the dashboard, with Grafana's variables filled in.
fn dashboard_queries() -> Vec<String> {
    let path = root().join("packaging/grafana/dashboards/service-uptime.json");
    let text = std::fs::read_to_string(&path).expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert_eq!(json["title"], "Service uptime");
    let vars: Vec<&str> = json["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(vars.contains(&"unit"), "no unit variable: {vars:?}");
    let mut exprs = Vec::new();
    for panel in json["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            exprs.push(
                expr.replace("$unit", ".*")
                    .replace("$instance", ".*")
                    .replace("$__range", "5m")
                    .replace("$__rate_interval", "1m"),
            );
        }
    }
    assert!(exprs.len() >= 6);
    exprs
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
    let deb = std::fs::read_dir(root().join("target/debian"))
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
        })
        .expect("no package in target/debian: build it with `cargo deb` (scripts/test does)");
    let sb = Sandbox::start();
    sb.write_unit(
        "aitbc-coordinator-api.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
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
    sb.daemon_reload();
    sb.systemctl(&[
        "start",
        "aitbc-coordinator-api.service",
        "aitbc-worker@gpu\\x2d0.service",
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
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - /run/prom/rules.yml\nscrape_configs:\n{indented}"
        ),
    )
    .expect("prometheus.yml");
    std::fs::write(
        dir.join("rules.yml"),
        fast_rules(&root().join("packaging/prometheus/unitwatch-rules.yml")),
    )
    .expect("rules");
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

    // Every dashboard query parses and returns data.
    for expr in dashboard_queries() {
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
    let _ = sb.exec(&["systemctl", "stop", "prom.service"]);
}
