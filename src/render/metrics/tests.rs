//! What `/metrics` exposes, and that README documents exactly that.

use super::*;
use crate::ledger::{Event, Ledger, Transition, Usec};
use crate::render::exposition::Format;
use crate::snapshot::{Events, Stats};

const S: Usec = 1_000_000;
const T0: Usec = 1_700_000_000 * S;

/// A ledger with `unit` seen running at T0 and failed with `result` at `failed_at`.
fn failed_once(unit: &str, failed_at: Usec, result: &str) -> Ledger {
    let mut l = Ledger::new();
    l.apply(Event::new(
        unit,
        T0,
        Transition::Seen {
            state: ActiveState::Active,
            sub_state: "running".into(),
            n_restarts: Some(0),
        },
    ));
    l.apply(Event::new(
        unit,
        failed_at,
        Transition::RunFailed {
            result: result.into(),
            invocation: None,
        },
    ));
    l
}

#[test]
fn renders_every_family() {
    let mut l = failed_once("aitbc-coordinator-api.service", T0 + 2 * S, "exit-code");
    l.apply(Event::new(
        "aitbc-coordinator-api.service",
        T0 + 2 * S,
        Transition::State {
            state: ActiveState::Activating,
            sub_state: Some("auto-restart".into()),
        },
    ));
    l.apply(Event::new(
        "aitbc-coordinator-api.service",
        T0 + 3 * S,
        Transition::NRestarts(1),
    ));
    let text = render(
        &Snapshot {
            ledger: l,
            stats: Stats {
                events: Events {
                    dbus: 4,
                    journal: 0,
                },
                journal_up: true,
                dbus_up: true,
                dbus_reconnects: 2,
                dbus_overflows: 1,
                journal_gaps: 0,
                ..Stats::default()
            },
            frame: 0,
            sample: Default::default(),
        },
        T0 + 5 * S,
        Format::OpenMetrics,
        &Families::default(),
    );
    for line in [
        "# TYPE service_up gauge",
        r#"service_up{unit="aitbc-coordinator-api.service"} 0"#,
        "# TYPE service_uptime_seconds counter",
        "# UNIT service_uptime_seconds seconds",
        r#"service_uptime_seconds_total{unit="aitbc-coordinator-api.service"} 2.0"#,
        r#"service_downtime_seconds_total{unit="aitbc-coordinator-api.service"} 3.0"#,
        r#"service_restart_count_total{unit="aitbc-coordinator-api.service",trigger="auto"} 1"#,
        r#"service_restart_count_total{unit="aitbc-coordinator-api.service",trigger="manual"} 0"#,
        r#"service_failures_total{unit="aitbc-coordinator-api.service",result="exit-code"} 1"#,
        r#"service_state{unit="aitbc-coordinator-api.service",state="activating"} 1"#,
        r#"service_state{unit="aitbc-coordinator-api.service",state="active"} 0"#,
        r#"service_state_change_timestamp_seconds{unit="aitbc-coordinator-api.service"} 1700000002.0"#,
        r#"unitwatch_build_info{version=""#,
        "unitwatch_units_watched 1",
        "unitwatch_units_dropped 0",
        "unitwatch_journal_up 1",
        "unitwatch_dbus_up 1",
        "unitwatch_dbus_reconnects_total 2",
        "unitwatch_dbus_overflows_total 1",
        "unitwatch_journal_gaps_total 0",
        r#"unitwatch_events_total{source="dbus"} 4"#,
        "# EOF",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn label_values_are_escaped() {
    let mut l = Ledger::new();
    for name in [
        "systemd-fsck@dev-disk-by\\x2duuid-1234.service",
        "we\"ird\nname.service",
        "ünïcødé@ø.service",
    ] {
        l.apply(Event::new(
            name,
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: None,
            },
        ));
    }
    let text = render(
        &Snapshot {
            ledger: l,
            stats: Stats::default(),
            frame: 0,
            sample: Default::default(),
        },
        T0 + S,
        Format::OpenMetrics,
        &Families::default(),
    );
    for line in [
        r#"service_up{unit="systemd-fsck@dev-disk-by\\x2duuid-1234.service"} 1"#,
        r#"service_up{unit="we\"ird\nname.service"} 1"#,
        r#"service_up{unit="ünïcødé@ø.service"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn a_user_managers_units_carry_the_user_after_the_unit() {
    let mut l = failed_once("demo.service", T0 + S, "exit-code");
    let alice = crate::ledger::key::user_unit("demo.service", "alice").expect("key");
    let odd = crate::ledger::key::user_unit("demo.service", "o\"dd").expect("key");
    for unit in [&alice, &odd] {
        l.apply(Event::new(
            unit.as_str(),
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: Some(0),
            },
        ));
    }
    let mut stats = Stats::default();
    stats.user_managers.insert("alice".into(), true);
    stats.user_managers.insert("bob".into(), false);
    let text = render(
        &Snapshot {
            ledger: l,
            stats,
            frame: 0,
            sample: Default::default(),
        },
        T0 + 2 * S,
        Format::OpenMetrics,
        &Families::default(),
    );
    for line in [
        r#"service_up{unit="demo.service"} 1"#,
        r#"service_up{unit="demo.service",user="alice"} 1"#,
        r#"service_up{unit="demo.service",user="o\"dd"} 1"#,
        r#"service_restart_count_total{unit="demo.service",user="alice",trigger="auto"} 0"#,
        r#"service_failures_total{unit="demo.service",result="exit-code"} 1"#,
        r#"unitwatch_user_manager_up{user="alice"} 1"#,
        r#"unitwatch_user_manager_up{user="bob"} 0"#,
        "unitwatch_units_watched 3",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Only the system unit failed: no user unit's failure series.
    assert!(
        !text.contains(r#"service_failures_total{unit="demo.service",user="#),
        "{text}"
    );
    // Without user managers, no family of them at all.
    let none = render(
        &one_unit(),
        T0 + 2 * S,
        Format::OpenMetrics,
        &Families::default(),
    );
    assert!(!none.contains("unitwatch_user_manager_up"), "{none}");
}

/// The sample names README's metrics table lists.
fn readme_families() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split(
            "
## Metrics
",
        )
        .nth(1)
        .expect("README has a Metrics section");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| family"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1))
        .map(|name| name.split('{').next().unwrap_or(name).to_owned())
        .collect()
}

/// `l` with a job, `j.service`, that a timer triggers and that ran once
/// (from T0+1 s for 2.5 s, successfully) and is running again.
fn with_job(mut l: Ledger) -> Ledger {
    let j = "j.service";
    let at = |s: f64| T0 + (s * 1e6) as Usec;
    for (t, transition) in [
        (
            0.0,
            Transition::Seen {
                state: ActiveState::Inactive,
                sub_state: "dead".into(),
                n_restarts: Some(0),
            },
        ),
        (
            0.0,
            Transition::Kind {
                kind: crate::ledger::Kind::Job,
            },
        ),
        (
            0.0,
            Transition::Timer {
                timer: "j.timer".into(),
                last_trigger: at(1.0),
                next_elapse: at(21.0),
            },
        ),
        (
            1.0,
            Transition::RunStarted {
                invocation: Some("a".into()),
            },
        ),
        (
            3.5,
            Transition::RunEnded {
                result: "success".into(),
                invocation: Some("a".into()),
            },
        ),
        (
            4.0,
            Transition::State {
                state: ActiveState::Activating,
                sub_state: Some("start".into()),
            },
        ),
        (
            4.0,
            Transition::RunStarted {
                invocation: Some("b".into()),
            },
        ),
    ] {
        l.apply(Event::new(j, at(t), transition));
    }
    l
}

fn job_text() -> String {
    render(
        &Snapshot {
            ledger: with_job(Ledger::new()),
            stats: Stats::default(),
            frame: 0,
            sample: Default::default(),
        },
        T0 + 5 * S,
        Format::OpenMetrics,
        &Families::default(),
    )
}

#[test]
fn a_job_has_no_up_uptime_or_downtime() {
    let text = job_text();
    for family in ["service_up", "service_uptime", "service_downtime"] {
        assert!(
            !text.lines().any(|l| l.starts_with(&format!("{family}{{"))
                || l.starts_with(&format!("{family}_seconds_total{{"))),
            "{family} exported for a job:\n{text}"
        );
    }
    assert!(text.contains("service_state{unit=\"j.service\",state=\"activating\"} 1"));
}

#[test]
fn a_job_exposes_its_runs_last_run_and_timer() {
    let text = job_text();
    for line in [
        "service_job_runs_total{unit=\"j.service\",result=\"success\"} 1",
        "service_job_running{unit=\"j.service\"} 1",
        "service_job_last_run_success{unit=\"j.service\"} 1",
        "service_job_last_start_timestamp_seconds{unit=\"j.service\"} 1700000004.0",
        "service_job_last_duration_seconds{unit=\"j.service\"} 2.5",
        "service_job_last_success_timestamp_seconds{unit=\"j.service\"} 1700000003.5",
        "service_job_last_trigger_timestamp_seconds{unit=\"j.service\"} 1700000001.0",
        "service_job_next_run_timestamp_seconds{unit=\"j.service\"} 1700000021.0",
    ] {
        assert!(text.contains(line), "no {line} in:\n{text}");
    }
}

#[test]
fn a_jobs_durations_are_a_cumulative_histogram() {
    let text = job_text();
    for line in [
        "# TYPE service_job_duration_seconds histogram",
        "service_job_duration_seconds_bucket{unit=\"j.service\",le=\"1.0\"} 0",
        "service_job_duration_seconds_bucket{unit=\"j.service\",le=\"2.5\"} 1",
        "service_job_duration_seconds_bucket{unit=\"j.service\",le=\"3600.0\"} 1",
        "service_job_duration_seconds_bucket{unit=\"j.service\",le=\"+Inf\"} 1",
        "service_job_duration_seconds_sum{unit=\"j.service\"} 2.5",
        "service_job_duration_seconds_count{unit=\"j.service\"} 1",
    ] {
        assert!(text.contains(line), "no {line} in:\n{text}");
    }
}

#[test]
fn the_bucket_labels_are_the_bounds() {
    for (label, bound) in BUCKET_LABELS.iter().zip(BUCKETS) {
        assert_eq!(label.parse::<f64>().ok(), Some(bound));
    }
}

#[test]
fn a_service_has_no_job_series() {
    let text = render(
        &one_unit(),
        T0 + 2 * S,
        Format::OpenMetrics,
        &Families::default(),
    );
    assert!(
        !text.lines().any(|l| l.starts_with("service_job_")),
        "{text}"
    );
}

#[test]
fn readme_lists_every_family_exposed_and_no_other() {
    let l = with_job(failed_once("a.service", T0 + S, "signal"));
    // A user manager followed, for its family.
    let mut stats = Stats::default();
    stats.user_managers.insert("alice".into(), true);
    let text = render(
        &Snapshot {
            ledger: l,
            stats,
            frame: 0,
            sample: std::sync::Arc::new(full_sample()),
        },
        T0 + 2 * S,
        Format::OpenMetrics,
        &Families::default(),
    );
    let mut exposed: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|name| {
            let histogram = "service_job_duration_seconds";
            if name.starts_with(histogram) {
                histogram.to_owned()
            } else {
                name.to_owned()
            }
        })
        .collect();
    exposed.dedup();
    let mut documented = readme_families();
    documented.sort();
    exposed.sort();
    exposed.dedup();
    assert_eq!(
        documented, exposed,
        "README's metrics table and /metrics differ"
    );
}

fn one_unit() -> Snapshot {
    let mut l = Ledger::new();
    l.apply(Event::new(
        "a.service",
        T0,
        Transition::Seen {
            state: ActiveState::Active,
            sub_state: "running".into(),
            n_restarts: Some(0),
        },
    ));
    Snapshot {
        ledger: l,
        stats: Stats::default(),
        frame: 0,
        sample: Default::default(),
    }
}

/// The samples of `text` whose series names the unit `a.service`.
fn unit_series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("unit=\"a.service\""))
        .collect()
}

#[test]
fn the_text_format_has_the_same_samples_without_openmetrics_framing() {
    let s = one_unit();
    let om = render(&s, T0 + S, Format::OpenMetrics, &Families::default());
    let text = render(&s, T0 + S, Format::Text, &Families::default());
    assert_eq!(unit_series(&om), unit_series(&text));
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE service_uptime_seconds_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE unitwatch_build_info gauge"), "{text}");
}

#[test]
fn optional_families_can_be_turned_off_and_nothing_else() {
    let mut families = Families::default();
    families.set("state", false).expect("state is optional");
    families
        .set("state_change_timestamp", false)
        .expect("optional");
    let text = render(&one_unit(), T0 + S, Format::Text, &families);
    assert!(!text.contains("service_state"), "{text}");
    // up, uptime, downtime and two restart counters remain.
    assert_eq!(unit_series(&text).len(), 5, "{text}");
    assert!(
        families.set("up", false).is_err(),
        "service_up is not optional"
    );
    assert!(families.set("nonsense", false).is_err());
}

#[test]
fn the_default_exposes_twelve_series_per_unit() {
    let text = render(&one_unit(), T0 + S, Format::Text, &Families::default());
    assert_eq!(unit_series(&text).len(), 12, "{text}");
}

/// A round in which everything could be read.
fn full_sample() -> crate::sample::Sample {
    use crate::sample::*;
    let unit = UnitSample {
        cpu_millicores: Some(1),
        resources: Resources {
            cpu_user_usec: Some(1),
            cpu_system_usec: Some(1),
            memory_bytes: Some(1),
            memory_peak_bytes: Some(1),
            memory_max_bytes: Some(1),
            tasks: Some(1),
            tasks_max: Some(1),
            io_read_bytes: Some(1),
            io_write_bytes: Some(1),
            oom_kills: Some(1),
        },
        socket: Some(Socket {
            accepted: 1,
            connections: 1,
            refused: Some(1),
        }),
        watchdog: Some(Watchdog {
            interval_usec: 1,
            last_ping: Some(1),
        }),
    };
    Sample {
        taken_at: 1,
        units: [("a.service".to_owned(), unit)].into_iter().collect(),
        host: Some(Host {
            system_state: "running".into(),
            version: "252.1".into(),
            units: Some([("active".to_owned(), 1)].into_iter().collect()),
        }),
    }
}
