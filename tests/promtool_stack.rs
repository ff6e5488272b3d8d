//! The monitoring plan's configuration (infra/monitoring/), checked offline
//! by promtool: the rules load, their unit tests pass, and the plan's own
//! expressions as written fail those tests (so the corrections matter).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("infra/monitoring")
}

fn promtool(args: &[&str], cwd: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("promtool (Debian's prometheus package; run scripts/setup)")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_plans_rules_load() {
    let out = promtool(&["check", "rules", "aitbc-rules.yml"], &dir().join("rules"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("SUCCESS: 10 rules found"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_plans_rules_pass_their_unit_tests() {
    let out = promtool(
        &["test", "rules", "aitbc-rules.test.yml"],
        &dir().join("rules"),
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_prometheus_config_is_valid() {
    // The rule_files glob points at /etc/prometheus/rules; check a copy
    // pointing at the repository's rules.
    let tmp = std::env::temp_dir().join(format!("aitbc-prom-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let config = std::fs::read_to_string(dir().join("prometheus.yml"))
        .expect("prometheus.yml")
        .replace(
            "/etc/prometheus/rules/*.yml",
            &dir().join("rules/aitbc-rules.yml").display().to_string(),
        );
    std::fs::write(tmp.join("prometheus.yml"), config).expect("write config");
    let out = promtool(&["check", "config", "prometheus.yml"], &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(out.status.success(), "{}", text(&out));
}

/// Each of the plan's expressions, as the plan writes it, put back in place
/// of the corrected one: the unit tests must fail.
#[test]
fn the_plans_expressions_as_written_fail_the_tests() {
    let rules = std::fs::read_to_string(dir().join("rules/aitbc-rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir().join("rules/aitbc-rules.test.yml")).expect("tests");
    let plan = [
        (
            "BlockProcessingTooSlow",
            "histogram_quantile(0.95,\n            sum by (job, instance, unit, le) (rate(block_processing_duration_seconds_bucket[5m]))\n          ) > 1",
            "histogram_quantile(0.95, block_processing_duration_seconds) > 1",
        ),
        (
            "JobProcessingTooSlow",
            "histogram_quantile(0.95,\n            sum by (job, instance, unit, le) (rate(job_processing_duration_seconds_bucket[5m]))\n          ) > 5",
            "histogram_quantile(0.95, job_processing_duration_seconds) > 5",
        ),
        (
            "HighFailureRate",
            "rate(jobs_failed_total[5m])\n          / sum without (status) (rate(jobs_total[5m]))",
            "rate(jobs_failed_total[5m]) / rate(jobs_total[5m])",
        ),
        ("TargetDown on unitwatch too", "up{job!=\"unitwatch\"} == 0", "up == 0"),
        ("ServiceUnhealthy without the grace", "for: 1m\n        labels:\n          severity: critical\n        annotations:\n          summary: \"{{ $labels.unit }} is active", "for: 0s\n        labels:\n          severity: critical\n        annotations:\n          summary: \"{{ $labels.unit }} is active"),
    ];
    for (what, ours, theirs) in plan {
        assert!(
            rules.contains(ours),
            "{what}: the rules changed; update this test"
        );
        let tmp =
            std::env::temp_dir().join(format!("aitbc-rules-{}-{}", std::process::id(), what.len()));
        std::fs::create_dir_all(&tmp).expect("temp dir");
        std::fs::write(tmp.join("aitbc-rules.yml"), rules.replace(ours, theirs)).expect("rules");
        std::fs::write(tmp.join("aitbc-rules.test.yml"), &tests).expect("tests");
        let out = promtool(&["test", "rules", "aitbc-rules.test.yml"], &tmp);
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(
            !out.status.success(),
            "{what}: the tests still pass:\n{}",
            text(&out)
        );
    }
}
