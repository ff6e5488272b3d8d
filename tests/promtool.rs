//! The shipped Prometheus and Grafana files, checked offline by promtool
//! (Debian's `prometheus` package; scripts/setup installs it):
//!
//! - the rules load, and their `promtool test rules` files pass;
//! - those test files have teeth: rules broken on purpose make them fail;
//! - the scrape snippet makes a valid Prometheus configuration;
//! - every PromQL query of the Grafana dashboard parses and names only
//!   metrics unitwatch exports or the rules record.

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::shipped::{dashboard, dashboard_queries, root, visit};
use serde_json::Value;

fn prometheus_dir() -> PathBuf {
    root().join("packaging/prometheus")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs promtool; a missing promtool fails the test (never skips it).
fn promtool(args: &[&str], dir: &Path) -> Output {
    match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "promtool is not installed: run scripts/setup \
             (it installs Debian's `prometheus` package, which ships /usr/bin/promtool)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs promtool and asserts it succeeds; returns stdout and stderr.
fn promtool_ok(args: &[&str], dir: &Path) -> String {
    let out = promtool(args, dir);
    let text = text(&out);
    assert!(
        out.status.success(),
        "`promtool {}` in {} failed ({}):\n{text}",
        args.join(" "),
        dir.display(),
        out.status
    );
    text
}

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("unitwatch-promtool-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `promtool test rules` files next to the rules.
fn rule_test_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(prometheus_dir())
        .expect("packaging/prometheus")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".test.yml"))
        .collect();
    files.sort();
    for expected in [
        "unitwatch-rules.test.yml",
        "unitwatch-jobs.test.yml",
        "unitwatch-slo.test.yml",
        "unitwatch-fleet.test.yml",
        "unitwatch-resources.test.yml",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "no {expected} in packaging/prometheus: {files:?}"
        );
    }
    files
}

/// `record:` and `alert:` names of a rules file, in order.
fn rule_names(rules: &str, kind: &str) -> Vec<String> {
    let key = format!("- {kind}:");
    rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix(&key))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn rules_pass_promtool_check() {
    let dir = prometheus_dir();
    let out = promtool_ok(&["check", "rules", "unitwatch-rules.yml"], &dir);
    assert!(out.contains("SUCCESS: 15 rules found"), "{out}");

    let rules = read(&dir.join("unitwatch-rules.yml"));
    assert_eq!(
        rule_names(&rules, "record"),
        [
            "unit:service_availability:ratio_1h",
            "unit:service_availability:ratio_1d",
            "unit:service_availability:ratio_30d",
        ]
    );
    assert_eq!(
        rule_names(&rules, "alert"),
        [
            "ServiceDown",
            "ServiceRestartFlapping",
            "ServiceFailing",
            "ServiceAvailabilityBelowSLO",
            "JobFailed",
            "JobOverdue",
            "JobRunningTooLong",
            "ServiceNearTasksMax",
            "ServiceMemoryNearMax",
            "ServiceOOMKilled",
            "HostDegraded",
            "UnitwatchDown",
        ]
    );
    assert_known_metrics("unitwatch-rules.yml", &rules);
}

#[test]
fn fleet_rules_pass_promtool_check() {
    let dir = prometheus_dir();
    let out = promtool_ok(&["check", "rules", "unitwatch-fleet-rules.yml"], &dir);
    assert!(out.contains("SUCCESS: 13 rules found"), "{out}");
    let rules = read(&dir.join("unitwatch-fleet-rules.yml"));
    assert_eq!(
        rule_names(&rules, "alert"),
        ["ServiceDownEverywhere", "ServiceDownOnSomeHosts"]
    );
    for w in ["1h", "1d", "30d"] {
        for kind in ["mean", "any"] {
            let name = format!("fleet:service_availability_{kind}:ratio_{w}");
            assert!(rule_names(&rules, "record").contains(&name), "no {name}");
        }
    }
    assert_known_metrics("unitwatch-fleet-rules.yml", &rules);
}

#[test]
fn rule_unit_tests_pass() {
    let files = rule_test_files();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = promtool_ok(&args, &prometheus_dir());
    assert_eq!(out.matches("SUCCESS").count(), files.len(), "{out}");
}

/// Each change below breaks one alert or recording rule in a way that
/// matters; the unit tests must notice every one of them, which shows they
/// test both that alerts fire and that they stay quiet.
#[test]
fn rule_unit_tests_catch_broken_rules() {
    let mutants: &[(&str, &str, &str, &str)] = &[
        // (what, original text, replacement, test file that must fail)
        ("ServiceDown without its 1 minute grace", "for: 1m", "for: 0s", "unitwatch-rules.test.yml"),
        ("ServiceDown on every unit", "expr: service_up == 0", "expr: service_up >= 0", "unitwatch-rules.test.yml"),
        ("ServiceRestartFlapping at 3 restarts", ")) >= 4", ")) > 3", "unitwatch-rules.test.yml"),
        ("ServiceRestartFlapping never", ")) >= 4", ")) >= 5", "unitwatch-rules.test.yml"),
        ("ServiceRestartFlapping per trigger", "sum by (instance, unit) (increase(service_restart", "sum by (instance, unit, trigger) (increase(service_restart", "unitwatch-rules.test.yml"),
        ("ServiceFailing blind to a result's first failure", "unless service_failures_total offset 15m", "unless service_failures_total", "unitwatch-rules.test.yml"),
        ("ServiceFailing on units just added", "\n            and on (instance, unit)\n            count by (instance, unit) (service_up offset 15m)", "", "unitwatch-rules.test.yml"),
        ("ServiceFailing on old failures", "[15m])) > 0", "[15m])) >= 0", "unitwatch-rules.test.yml"),
        ("ServiceFailing blind to the failed state", "(service_state{state=\"failed\"}) == 1", "(service_state{state=\"failed\"}) == 2", "unitwatch-rules.test.yml"),
        ("UnitwatchDown too early", "for: 5m\n        labels:\n          severity: critical", "for: 1m\n        labels:\n          severity: critical", "unitwatch-rules.test.yml"),
        ("1h availability over 2h", "[1h]))\n          /", "[2h]))\n          /", "unitwatch-rules.test.yml"),
        ("30-day objective at 99.8 %", "< 0.999", "< 0.998", "unitwatch-slo.test.yml"),
        ("30-day objective at 99.95 %", "< 0.999", "< 0.9995", "unitwatch-slo.test.yml"),
        // Jobs: not down between runs, their failures JobFailed's alone.
        ("ServiceDown from systemd's state, so down for a job between runs", "expr: service_up == 0", "expr: max by (instance, job, unit) (service_state{state=~\"inactive|failed\"}) == 1", "unitwatch-rules.test.yml"),
        ("ServiceFailing on jobs", "\n          unless on (instance, unit) service_job_running", "", "unitwatch-rules.test.yml"),
        ("JobFailed on successful runs", "service_job_last_run_success == 0", "service_job_last_run_success >= 0", "unitwatch-rules.test.yml"),
        ("JobFailed never", "service_job_last_run_success == 0", "service_job_last_run_success == 2", "unitwatch-rules.test.yml"),
        ("JobFailed on hosts cut off", "service_job_last_run_success == 0\n          unless on (instance) up{job=\"unitwatch\"} == 0", "service_job_last_run_success == 0", "unitwatch-rules.test.yml"),
        ("JobOverdue after one period", "> 2 * (service_job_next_run", "> 1 * (service_job_next_run", "unitwatch-rules.test.yml"),
        ("JobOverdue after three periods", "> 2 * (service_job_next_run", "> 3 * (service_job_next_run", "unitwatch-rules.test.yml"),
        ("JobOverdue counting a run in progress", "\n              - service_job_running * (time() - service_job_last_start_timestamp_seconds)", "", "unitwatch-rules.test.yml"),
        ("JobOverdue without its 2 minutes of grace", "for: 2m", "for: 0s", "unitwatch-rules.test.yml"),
        ("JobOverdue on hosts cut off", "service_job_next_run_timestamp_seconds\n          )\n          unless on (instance) up{job=\"unitwatch\"} == 0", "service_job_next_run_timestamp_seconds\n          )", "unitwatch-rules.test.yml"),
        ("JobOverdue without a timer at 24 h", "> 25 * 3600", "> 24 * 3600", "unitwatch-jobs.test.yml"),
        ("JobOverdue without a timer at 26 h", "> 25 * 3600", "> 26 * 3600", "unitwatch-jobs.test.yml"),
        ("JobOverdue at 25 h despite a timer", "\n            unless on (instance, unit) service_job_next_run_timestamp_seconds", "", "unitwatch-jobs.test.yml"),
        ("JobRunningTooLong when not running", "\n          and on (instance, unit) service_job_running == 1", "", "unitwatch-rules.test.yml"),
        ("JobRunningTooLong at half the period", "              > (service_job_next_run", "              > 0.5 * (service_job_next_run", "unitwatch-rules.test.yml"),
        ("JobRunningTooLong at twice the period", "              > (service_job_next_run", "              > 2 * (service_job_next_run", "unitwatch-rules.test.yml"),
        ("JobRunningTooLong on hosts cut off", "service_job_running == 1\n          unless on (instance) up{job=\"unitwatch\"} == 0", "service_job_running == 1", "unitwatch-rules.test.yml"),
        // Resources: above 90 % of a finite limit for 5 minutes, each
        // user manager's unit on its own; OOM kills within 15 minutes.
        ("ServiceNearTasksMax at 85 %", "service_tasks / service_tasks_max > 0.9", "service_tasks / service_tasks_max > 0.85", "unitwatch-resources.test.yml"),
        ("ServiceNearTasksMax at 95 %", "service_tasks / service_tasks_max > 0.9", "service_tasks / service_tasks_max > 0.95", "unitwatch-resources.test.yml"),
        ("ServiceNearTasksMax without its 5 minutes", "service_tasks_max > 0.9\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 5m", "service_tasks_max > 0.9\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 0s", "unitwatch-resources.test.yml"),
        ("ServiceNearTasksMax after 10 minutes", "service_tasks_max > 0.9\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 5m", "service_tasks_max > 0.9\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 10m", "unitwatch-resources.test.yml"),
        ("ServiceNearTasksMax mixing a user manager's unit with the system's", "service_tasks / service_tasks_max", "sum without (user) (service_tasks) / sum without (user) (service_tasks_max)", "unitwatch-resources.test.yml"),
        ("ServiceNearTasksMax on hosts cut off", "service_tasks / service_tasks_max > 0.9\n          unless on (instance) up{job=\"unitwatch\"} == 0", "service_tasks / service_tasks_max > 0.9", "unitwatch-resources.test.yml"),
        ("ServiceMemoryNearMax at 85 %", "service_memory_bytes / service_memory_max_bytes > 0.9", "service_memory_bytes / service_memory_max_bytes > 0.85", "unitwatch-resources.test.yml"),
        ("ServiceMemoryNearMax at 95 %", "service_memory_bytes / service_memory_max_bytes > 0.9", "service_memory_bytes / service_memory_max_bytes > 0.95", "unitwatch-resources.test.yml"),
        ("ServiceMemoryNearMax without its 5 minutes", "service_memory_max_bytes > 0.9\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 5m", "service_memory_max_bytes > 0.9\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 2m", "unitwatch-resources.test.yml"),
        ("ServiceMemoryNearMax after 10 minutes", "service_memory_max_bytes > 0.9\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 5m", "service_memory_max_bytes > 0.9\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 10m", "unitwatch-resources.test.yml"),
        ("ServiceMemoryNearMax mixing a user manager's unit with the system's", "service_memory_bytes / service_memory_max_bytes", "sum without (user) (service_memory_bytes) / sum without (user) (service_memory_max_bytes)", "unitwatch-resources.test.yml"),
        ("ServiceMemoryNearMax on hosts cut off", "service_memory_bytes / service_memory_max_bytes > 0.9\n          unless on (instance) up{job=\"unitwatch\"} == 0", "service_memory_bytes / service_memory_max_bytes > 0.9", "unitwatch-resources.test.yml"),
        ("ServiceOOMKilled without a kill", "increase(service_oom_kills_total[15m]) > 0", "increase(service_oom_kills_total[15m]) >= 0", "unitwatch-resources.test.yml"),
        ("ServiceOOMKilled from the second kill", "increase(service_oom_kills_total[15m]) > 0", "increase(service_oom_kills_total[15m]) > 1", "unitwatch-resources.test.yml"),
        ("ServiceOOMKilled over 5 minutes", "increase(service_oom_kills_total[15m]) > 0", "increase(service_oom_kills_total[5m]) > 0", "unitwatch-resources.test.yml"),
        ("ServiceOOMKilled over an hour", "increase(service_oom_kills_total[15m]) > 0", "increase(service_oom_kills_total[1h]) > 0", "unitwatch-resources.test.yml"),
        ("ServiceOOMKilled on hosts cut off", "increase(service_oom_kills_total[15m]) > 0\n          unless on (instance) up{job=\"unitwatch\"} == 0", "increase(service_oom_kills_total[15m]) > 0", "unitwatch-resources.test.yml"),
        ("HostDegraded whenever not running", "systemd_system_state{state=\"degraded\"} == 1", "systemd_system_state{state=\"running\"} == 0", "unitwatch-resources.test.yml"),
        ("HostDegraded after 1 minute", "{state=\"degraded\"} == 1\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 5m", "{state=\"degraded\"} == 1\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 1m", "unitwatch-resources.test.yml"),
        ("HostDegraded after 10 minutes", "{state=\"degraded\"} == 1\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 5m", "{state=\"degraded\"} == 1\n          unless on (instance) up{job=\"unitwatch\"} == 0\n        for: 10m", "unitwatch-resources.test.yml"),
        ("HostDegraded on hosts cut off", "systemd_system_state{state=\"degraded\"} == 1\n          unless on (instance) up{job=\"unitwatch\"} == 0", "systemd_system_state{state=\"degraded\"} == 1", "unitwatch-resources.test.yml"),
    ];
    let rules = read(&prometheus_dir().join("unitwatch-rules.yml"));
    for (what, from, _, _) in mutants {
        assert_eq!(
            rules.matches(from).count(),
            1,
            "`{from}` ({what}) is not exactly once in unitwatch-rules.yml: update this test"
        );
    }
    // One directory and thread per mutant: promtool takes a second or two each.
    let missed: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = mutants
            .iter()
            .enumerate()
            .map(|(i, (what, from, to, test_file))| {
                let rules = &rules;
                s.spawn(move || {
                    let tmp = TempDir::new(&format!("mutant-{i}"));
                    std::fs::write(
                        tmp.0.join("unitwatch-rules.yml"),
                        rules.replacen(from, to, 1),
                    )
                    .expect("mutant rules");
                    std::fs::copy(prometheus_dir().join(test_file), tmp.0.join(test_file))
                        .expect("test file");
                    promtool_ok(&["check", "rules", "unitwatch-rules.yml"], &tmp.0);
                    let out = promtool(&["test", "rules", test_file], &tmp.0);
                    out.status
                        .success()
                        .then(|| format!("{what} (`{from}` -> `{to}`) passes {test_file}"))
                })
            })
            .collect();
        runs.into_iter()
            .filter_map(|r| r.join().expect("mutant run"))
            .collect()
    });
    assert!(
        missed.is_empty(),
        "rule tests miss broken rules:\n{}",
        missed.join("\n")
    );
}

#[test]
fn scrape_snippet_is_a_valid_prometheus_config() {
    let snippet = read(&prometheus_dir().join("scrape-unitwatch.yml"));
    assert!(snippet.contains("- job_name: unitwatch"), "{snippet}");
    assert!(snippet.contains("localhost:9567"), "{snippet}");
    let tmp = TempDir::new("config");
    let indented: String = snippet.lines().map(|l| format!("  {l}\n")).collect();
    let config = format!(
        "rule_files:\n  - {}\nscrape_configs:\n{indented}",
        prometheus_dir().join("unitwatch-rules.yml").display()
    );
    std::fs::write(tmp.0.join("prometheus.yml"), &config).expect("prometheus.yml");
    let out = promtool_ok(&["check", "config", "prometheus.yml"], &tmp.0);
    assert!(
        out.contains("SUCCESS: 1 rule files found"),
        "{out}\n{config}"
    );
}

#[test]
fn grafana_datasource_is_the_local_prometheus() {
    let ds = read(&root().join("packaging/grafana/datasource.yml"));
    for want in [
        "apiVersion: 1",
        "type: prometheus",
        "url: http://localhost:9090",
    ] {
        assert!(ds.contains(want), "datasource.yml lacks `{want}`:\n{ds}");
    }
}

#[test]
fn dashboard_has_the_unit_variable_and_the_panels() {
    let d = dashboard();
    assert_eq!(
        d.get("title").and_then(Value::as_str),
        Some("Service uptime")
    );

    let vars = d
        .get("templating")
        .and_then(|t| t.get("list"))
        .and_then(Value::as_array);
    let unit = vars
        .into_iter()
        .flatten()
        .find(|v| v.get("name").and_then(Value::as_str) == Some("unit"))
        .expect("a `unit` template variable");
    let def = unit
        .get("definition")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // Jobs have no service_up: the variable lists them by service_job_running.
    assert!(
        def.starts_with("label_values({__name__=~\"service_up|service_job_running\"")
            && def.ends_with(", unit)"),
        "unit variable: {def}"
    );
    assert_eq!(unit.get("multi"), Some(&Value::Bool(true)), "unit: multi");
    assert_eq!(
        unit.get("includeAll"),
        Some(&Value::Bool(true)),
        "unit: include All"
    );
    // Sockets have no service_up: their own variable.
    let socket = vars
        .into_iter()
        .flatten()
        .find(|v| v.get("name").and_then(Value::as_str) == Some("socket"))
        .expect("a `socket` template variable");
    assert_eq!(
        socket.get("definition").and_then(Value::as_str),
        Some("label_values(socket_connections{instance=~\"$instance\"}, unit)"),
        "socket variable"
    );

    let panels = d.get("panels").and_then(Value::as_array).expect("panels");
    let panel_exprs = |p: &Value| {
        let mut exprs = String::new();
        visit(p, &mut |k, v| {
            if k == "expr" {
                exprs.push_str(v.as_str().unwrap_or_default());
                exprs.push('\n');
            }
        });
        exprs
    };
    let find = |what: &str, ok: &dyn Fn(&str, &str) -> bool| {
        assert!(
            panels.iter().any(|p| {
                let ty = p.get("type").and_then(Value::as_str).unwrap_or_default();
                ok(ty, &panel_exprs(p))
            }),
            "no panel for {what}"
        );
    };
    find("the state timeline", &|ty, e| {
        ty == "state-timeline" && (e.contains("service_up") || e.contains("service_state"))
    });
    find("availability 1h/1d/30d", &|_, e| {
        ["1h", "1d", "30d"]
            .iter()
            .all(|w| e.contains(&format!("unit:service_availability:ratio_{w}")))
    });
    find("restarts by trigger", &|_, e| {
        e.contains("service_restart_count_total") && e.contains("trigger")
    });
    find("failures by result", &|_, e| {
        e.contains("service_failures_total") && e.contains("result")
    });
    find("downtime", &|_, e| {
        e.contains("increase(service_downtime_seconds_total")
    });
    find("jobs' last result, last success and next run", &|ty, e| {
        ty == "table"
            && [
                "service_job_last_run_success",
                "service_job_last_success_timestamp_seconds",
                "service_job_next_run_timestamp_seconds",
            ]
            .iter()
            .all(|m| e.contains(m))
    });
    find("job runs by result", &|_, e| {
        e.contains("increase(service_job_runs_total") && e.contains("result")
    });
    find("job duration percentiles", &|_, e| {
        e.contains(
            "histogram_quantile(0.95, sum by (unit, le) (rate(service_job_duration_seconds_bucket",
        )
    });
    // The Resources row.
    find("CPU by mode", &|_, e| {
        e.contains("sum by (unit, mode) (rate(service_cpu_seconds_total")
    });
    find("memory against MemoryMax=", &|_, e| {
        e.contains("(service_memory_bytes{") && e.contains("(service_memory_max_bytes{")
    });
    find("tasks against TasksMax=", &|_, e| {
        e.contains("(service_tasks{") && e.contains("(service_tasks_max{")
    });
    find("IO read and write", &|_, e| {
        e.contains("rate(service_io_read_bytes_total")
            && e.contains("rate(service_io_write_bytes_total")
    });
    find("OOM kills", &|_, e| {
        e.contains("increase(service_oom_kills_total")
    });
    find("the watchdog's interval and last ping", &|ty, e| {
        ty == "table"
            && e.contains("service_watchdog_seconds")
            && e.contains("time() - service_watchdog_last_ping_timestamp_seconds")
    });
    find("socket connections", &|_, e| {
        e.contains("(socket_connections{")
    });
    find("sockets accepted and refused", &|_, e| {
        e.contains("rate(socket_connections_accepted_total")
            && e.contains("rate(socket_connections_refused_total")
    });
    find("the hosts' state and systemd version", &|ty, e| {
        ty == "table" && e.contains("systemd_system_state") && e.contains("systemd_version")
    });
    find("units by active state", &|_, e| {
        e.contains("sum by (active_state) (systemd_units")
    });
    // Per-unit queries show only the selected units, sockets only the
    // selected sockets, host queries only the selected hosts.
    for p in panels {
        for expr in panel_exprs(p).lines() {
            if expr.contains("service_") || expr.contains("unit:") {
                assert!(
                    expr.contains("unit=~\"$unit\""),
                    "not filtered by $unit: {expr}"
                );
            }
            if expr.contains("socket_") {
                assert!(
                    expr.contains("unit=~\"$socket\""),
                    "not filtered by $socket: {expr}"
                );
            }
            if expr.contains("systemd_") {
                assert!(
                    expr.contains("instance=~\"$instance\""),
                    "not filtered by $instance: {expr}"
                );
            }
        }
    }
}

/// Writes the queries as recording rules and runs `promtool check rules`.
fn check_as_rules(queries: &[String], tmp: &Path) -> Output {
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: |\n"
        ));
        for line in q.lines() {
            rules.push_str(&format!("          {line}\n"));
        }
    }
    std::fs::write(tmp.join("dashboard-rules.yml"), rules).expect("dashboard rules");
    promtool(&["check", "rules", "dashboard-rules.yml"], tmp)
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let queries = dashboard_queries(&dashboard());
    assert!(queries.len() >= 7, "too few queries: {queries:#?}");
    let tmp = TempDir::new("dashboard");

    // The harness itself: promtool must reject a broken query.
    let broken = check_as_rules(&["sum by (unit) (service_up".to_owned()], &tmp.0);
    assert!(
        !broken.status.success(),
        "promtool accepted broken PromQL:\n{}",
        text(&broken)
    );

    let out = check_as_rules(&queries, &tmp.0);
    let listing = queries.join("\n");
    assert!(
        out.status.success(),
        "dashboard queries:\n{listing}\n{}",
        text(&out)
    );
    let found = format!("SUCCESS: {} rules found", queries.len());
    assert!(text(&out).contains(&found), "{}", text(&out));

    for q in &queries {
        assert_known_metrics("the dashboard", q);
    }
}

/// Families unitwatch exports (README, "Metrics"), as seen on the wire.
const EXPORTED: &[&str] = &[
    "service_up",
    "service_uptime_seconds_total",
    "service_downtime_seconds_total",
    "service_restart_count_total",
    "service_failures_total",
    "service_state",
    "service_state_change_timestamp_seconds",
    "service_job_runs_total",
    "service_job_running",
    "service_job_last_run_success",
    "service_job_last_start_timestamp_seconds",
    "service_job_last_duration_seconds",
    "service_job_last_success_timestamp_seconds",
    "service_job_duration_seconds_bucket",
    "service_job_duration_seconds_sum",
    "service_job_duration_seconds_count",
    "service_job_last_trigger_timestamp_seconds",
    "service_job_next_run_timestamp_seconds",
    "unitwatch_build_info",
    "unitwatch_units_watched",
    "unitwatch_units_dropped",
    "unitwatch_events_total",
    "unitwatch_journal_up",
    "unitwatch_journal_gaps_total",
    "unitwatch_dbus_up",
    "unitwatch_dbus_reconnects_total",
    "service_cpu_seconds_total",
    "service_memory_bytes",
    "service_memory_peak_bytes",
    "service_memory_max_bytes",
    "service_tasks",
    "service_tasks_max",
    "service_io_read_bytes_total",
    "service_io_write_bytes_total",
    "service_oom_kills_total",
    "service_watchdog_seconds",
    "service_watchdog_last_ping_timestamp_seconds",
    "socket_connections_accepted_total",
    "socket_connections",
    "socket_connections_refused_total",
    "systemd_system_state",
    "systemd_units",
    "systemd_version",
];

/// PromQL parses a misspelt metric name just fine (it only returns no
/// data), so names of ours are checked against what exists.
fn assert_known_metrics(source: &str, text: &str) {
    let recorded: Vec<String> = ["unitwatch-rules.yml", "unitwatch-fleet-rules.yml"]
        .iter()
        .flat_map(|f| rule_names(&read(&prometheus_dir().join(f)), "record"))
        .collect();
    let known: BTreeSet<&str> = EXPORTED
        .iter()
        .copied()
        .chain(recorded.iter().map(String::as_str))
        .collect();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for token in code.split(|c: char| !is_ident(c)) {
        let ours = ["service_", "socket_", "systemd_", "unitwatch_", "unit:"]
            .iter()
            .any(|p| token.starts_with(p));
        assert!(
            !ours || known.contains(token),
            "{source} names `{token}`, which unitwatch neither exports nor records"
        );
    }
}
