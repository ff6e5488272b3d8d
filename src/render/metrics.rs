//! `/metrics`: the ledger as OpenMetrics text, rendered with prometheus-client.
//!
//! Every family is described once in [`encode_units`] or [`encode_self`];
//! adding a metric means adding a field to the ledger's `UnitView` (if it is
//! new data) and a block here.

use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::ledger::{ActiveState, Ledger, Trigger, Usec};
use crate::snapshot::Stats;

/// The content type of what [`render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One unit's numbers, copied out of the ledger for one scrape.
#[derive(Debug)]
struct Sample {
    unit: String,
    state: ActiveState,
    uptime: f64,
    downtime: f64,
    state_change: f64,
    restarts: [u64; 2],
    failures: Vec<(String, u64)>,
}

#[derive(Debug)]
struct Scrape {
    units: Vec<Sample>,
    dropped: usize,
    stats: Stats,
}

#[derive(Debug)]
struct Collector(Arc<Scrape>);

/// A label value as the exposition format wants it (the encoder writes
/// values as given): unit names carry systemd's `\x2d` escapes, and a
/// backslash, a double quote or a newline must be escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the ledger as of `now`.
pub fn render(ledger: &Ledger, now: Usec, stats: &Stats) -> String {
    let units: Vec<Sample> = ledger
        .view(now)
        .map(|v| Sample {
            unit: escape(v.unit),
            state: v.state,
            uptime: v.uptime_seconds,
            downtime: v.downtime_seconds,
            state_change: v.state_change_seconds,
            restarts: [v.restarts_auto, v.restarts_manual],
            failures: v.failures.iter().map(|(r, n)| (escape(r), *n)).collect(),
        })
        .collect();
    // Sized up front (about 800 bytes a unit) rather than grown by doubling,
    // which for thousands of units would copy megabytes and leave a buffer
    // up to twice the size behind.
    let mut out = String::with_capacity(4096 + units.len() * 900);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collector(Arc::new(Scrape {
        units,
        dropped: ledger.dropped(),
        stats: stats.clone(),
    }))));
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_units(&mut encoder, &self.0.units)?;
        encode_self(&mut encoder, &self.0)
    }
}

/// One sample per unit of a gauge or counter family.
fn per_unit(
    encoder: &mut DescriptorEncoder,
    (name, help, unit, kind): (&str, &str, Option<&Unit>, MetricType),
    units: &[Sample],
    value: impl Fn(&Sample) -> f64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
    for s in units {
        let labels = [("unit", s.unit.as_str())];
        let sample = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value(s)).encode(sample)?,
            _ => ConstGauge::new(value(s)).encode(sample)?,
        }
    }
    Ok(())
}

fn encode_units(encoder: &mut DescriptorEncoder, units: &[Sample]) -> Result<(), std::fmt::Error> {
    per_unit(
        encoder,
        (
            "service_up",
            "1 while the unit's ActiveState is active or reloading, 0 otherwise.",
            None,
            MetricType::Gauge,
        ),
        units,
        |s| if s.state.is_up() { 1.0 } else { 0.0 },
    )?;
    per_unit(
        encoder,
        (
            "service_uptime",
            "Seconds the unit was up (active or reloading) since unitwatch began accounting it.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        ),
        units,
        |s| s.uptime,
    )?;
    per_unit(
        encoder,
        ("service_downtime", "Seconds the unit was down (any other ActiveState) since unitwatch began accounting it.", Some(&Unit::Seconds), MetricType::Counter),
        units,
        |s| s.downtime,
    )?;

    let mut family = encoder.encode_descriptor(
        "service_restart_count",
        "Restarts of the unit: trigger=auto for systemd's own (Restart=), trigger=manual for restart jobs.",
        None,
        MetricType::Counter,
    )?;
    for s in units {
        for trigger in Trigger::ALL {
            let labels = [("unit", s.unit.as_str()), ("trigger", trigger.as_str())];
            ConstCounter::new(s.restarts[trigger as usize])
                .encode(family.encode_family(&labels)?)?;
        }
    }

    let mut family = encoder.encode_descriptor(
        "service_failures",
        "Runs of the unit that ended unsuccessfully, by systemd's Result; a result's series appears with its first failure.",
        None,
        MetricType::Counter,
    )?;
    for s in units {
        for (result, n) in &s.failures {
            let labels = [("unit", s.unit.as_str()), ("result", result.as_str())];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
    }

    let mut family = encoder.encode_descriptor(
        "service_state",
        "1 for the unit's current ActiveState, 0 for the other five.",
        None,
        MetricType::Gauge,
    )?;
    for s in units {
        for state in ActiveState::ALL {
            let labels = [("unit", s.unit.as_str()), ("state", state.as_str())];
            ConstGauge::new(i64::from(s.state == state)).encode(family.encode_family(&labels)?)?;
        }
    }

    per_unit(
        encoder,
        (
            "service_state_change_timestamp",
            "Unix time of the unit's last ActiveState change, as systemd recorded it.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        ),
        units,
        |s| s.state_change,
    )
}

fn encode_self(encoder: &mut DescriptorEncoder, scrape: &Scrape) -> Result<(), std::fmt::Error> {
    let info = Info::new([("version", env!("CARGO_PKG_VERSION"))]);
    info.encode(encoder.encode_descriptor(
        "unitwatch_build",
        "unitwatch's version.",
        None,
        info.metric_type(),
    )?)?;

    ConstGauge::new(scrape.units.len() as i64).encode(encoder.encode_descriptor(
        "unitwatch_units_watched",
        "Units unitwatch accounts.",
        None,
        MetricType::Gauge,
    )?)?;

    ConstGauge::new(scrape.dropped as i64).encode(encoder.encode_descriptor(
        "unitwatch_units_dropped",
        "Units matching [watch] that are not exported because of watch.max_units.",
        None,
        MetricType::Gauge,
    )?)?;

    ConstGauge::new(i64::from(scrape.stats.journal_up)).encode(encoder.encode_descriptor(
        "unitwatch_journal_up",
        "1 while the journal is being read, 0 when unitwatch counts from D-Bus alone.",
        None,
        MetricType::Gauge,
    )?)?;

    ConstCounter::new(scrape.stats.journal_gaps).encode(encoder.encode_descriptor(
        "unitwatch_journal_gaps",
        "Times journal records were rotated away before unitwatch read them.",
        None,
        MetricType::Counter,
    )?)?;

    ConstGauge::new(i64::from(scrape.stats.dbus_up)).encode(encoder.encode_descriptor(
        "unitwatch_dbus_up",
        "1 while unitwatch is connected to the service manager over D-Bus.",
        None,
        MetricType::Gauge,
    )?)?;
    ConstCounter::new(scrape.stats.dbus_reconnects).encode(encoder.encode_descriptor(
        "unitwatch_dbus_reconnects",
        "Times the D-Bus connection came back after it was lost.",
        None,
        MetricType::Counter,
    )?)?;
    ConstCounter::new(scrape.stats.dbus_overflows).encode(encoder.encode_descriptor(
        "unitwatch_dbus_overflows",
        "Times systemd's signals overflowed unitwatch's queue; every watched unit was read again.",
        None,
        MetricType::Counter,
    )?)?;

    let mut family = encoder.encode_descriptor(
        "unitwatch_events",
        "Events applied to the ledger, by source.",
        None,
        MetricType::Counter,
    )?;
    for (source, n) in [
        ("dbus", scrape.stats.events[0]),
        ("journal", scrape.stats.events[1]),
    ] {
        ConstCounter::new(n).encode(family.encode_family(&[("source", source)])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Event, Transition};

    const S: Usec = 1_000_000;
    const T0: Usec = 1_700_000_000 * S;

    #[test]
    fn renders_every_family() {
        let mut l = Ledger::new();
        l.apply(Event::new(
            "aitbc-coordinator-api.service",
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: Some(0),
            },
        ));
        l.apply(Event::new(
            "aitbc-coordinator-api.service",
            T0 + 2 * S,
            Transition::RunFailed {
                result: "exit-code".into(),
                invocation: None,
            },
        ));
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
            &l,
            T0 + 5 * S,
            &Stats {
                events: [4, 0],
                journal_up: true,
                dbus_up: true,
                dbus_reconnects: 2,
                dbus_overflows: 1,
                journal_gaps: 0,
            },
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
        let text = render(&l, T0 + S, &Stats::default());
        for line in [
            r#"service_up{unit="systemd-fsck@dev-disk-by\\x2duuid-1234.service"} 1"#,
            r#"service_up{unit="we\"ird\nname.service"} 1"#,
            r#"service_up{unit="ünïcødé@ø.service"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
