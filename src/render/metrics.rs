//! `/metrics`: a snapshot as OpenMetrics text, rendered with
//! prometheus-client.
//!
//! Every family is declared once, as a row of [`UNIT_FAMILIES`] (one sample
//! or more per unit, read from its [`UnitView`]) or of [`SELF_FAMILIES`]
//! (unitwatch's own numbers). A family from data the ledger already has is
//! one row here and one row in README's metrics table; a test checks the two
//! agree.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::ledger::{ActiveState, Trigger, UnitView, Usec};
use crate::snapshot::Snapshot;

/// The content type of what [`render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A sample's value.
#[derive(Clone, Copy, Debug)]
pub enum Value {
    Int(u64),
    Float(f64),
}

/// Takes one sample: its labels besides `unit`, and its value.
pub type Emit<'e> = dyn FnMut(&[(&str, &str)], Value) -> Result<(), std::fmt::Error> + 'e;

/// A per-unit family: its descriptor and how to read its samples from a unit.
pub struct UnitFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<Unit>,
    pub kind: MetricType,
    pub samples: fn(&UnitView<'_>, &mut Emit<'_>) -> Result<(), std::fmt::Error>,
}

/// A family about unitwatch itself.
pub struct SelfFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub samples: fn(&Snapshot, &mut Emit<'_>) -> Result<(), std::fmt::Error>,
}

fn flag(b: bool) -> Value {
    Value::Int(u64::from(b))
}

/// Every per-unit family, in the order they are exposed.
pub const UNIT_FAMILIES: &[UnitFamily] = &[
    UnitFamily {
        name: "service_up",
        help: "1 while the unit's ActiveState is active or reloading, 0 otherwise.",
        unit: None,
        kind: MetricType::Gauge,
        samples: |v, emit| emit(&[], flag(v.up())),
    },
    UnitFamily {
        name: "service_uptime",
        help: "Seconds the unit was up (active or reloading) since unitwatch began accounting it.",
        unit: Some(Unit::Seconds),
        kind: MetricType::Counter,
        samples: |v, emit| emit(&[], Value::Float(v.uptime_seconds)),
    },
    UnitFamily {
        name: "service_downtime",
        help: "Seconds the unit was down (any other ActiveState) since unitwatch began accounting it.",
        unit: Some(Unit::Seconds),
        kind: MetricType::Counter,
        samples: |v, emit| emit(&[], Value::Float(v.downtime_seconds)),
    },
    UnitFamily {
        name: "service_restart_count",
        help: "Restarts of the unit: trigger=auto for systemd's own (Restart=), trigger=manual for restart jobs.",
        unit: None,
        kind: MetricType::Counter,
        samples: |v, emit| {
            for trigger in Trigger::ALL {
                let n = match trigger {
                    Trigger::Auto => v.restarts_auto,
                    Trigger::Manual => v.restarts_manual,
                };
                emit(&[("trigger", trigger.as_str())], Value::Int(n))?;
            }
            Ok(())
        },
    },
    UnitFamily {
        name: "service_failures",
        help: "Runs of the unit that ended unsuccessfully, by systemd's Result; a result's series appears with its first failure.",
        unit: None,
        kind: MetricType::Counter,
        samples: |v, emit| {
            for (result, n) in v.failures {
                emit(&[("result", &escape(result))], Value::Int(*n))?;
            }
            Ok(())
        },
    },
    UnitFamily {
        name: "service_state",
        help: "1 for the unit's current ActiveState, 0 for the other five.",
        unit: None,
        kind: MetricType::Gauge,
        samples: |v, emit| {
            for state in ActiveState::ALL {
                emit(&[("state", state.as_str())], flag(v.state == state))?;
            }
            Ok(())
        },
    },
    UnitFamily {
        name: "service_state_change_timestamp",
        help: "Unix time of the unit's last ActiveState change, as systemd recorded it.",
        unit: Some(Unit::Seconds),
        kind: MetricType::Gauge,
        samples: |v, emit| emit(&[], Value::Float(v.state_change_seconds)),
    },
];

/// Every family about unitwatch itself, after the per-unit ones.
pub const SELF_FAMILIES: &[SelfFamily] = &[
    SelfFamily {
        name: "unitwatch_build",
        help: "unitwatch's version.",
        kind: MetricType::Info,
        samples: |_, emit| emit(&[("version", env!("CARGO_PKG_VERSION"))], Value::Int(1)),
    },
    SelfFamily {
        name: "unitwatch_units_watched",
        help: "Units unitwatch accounts.",
        kind: MetricType::Gauge,
        samples: |s, emit| emit(&[], Value::Int(s.ledger.len() as u64)),
    },
    SelfFamily {
        name: "unitwatch_units_dropped",
        help: "Units matching [watch] that are not exported because of watch.max_units.",
        kind: MetricType::Gauge,
        samples: |s, emit| emit(&[], Value::Int(s.ledger.dropped() as u64)),
    },
    SelfFamily {
        name: "unitwatch_journal_up",
        help: "1 while the journal is being read, 0 when unitwatch counts from D-Bus alone.",
        kind: MetricType::Gauge,
        samples: |s, emit| emit(&[], flag(s.stats.journal_up)),
    },
    SelfFamily {
        name: "unitwatch_journal_gaps",
        help: "Times journal records were rotated away before unitwatch read them.",
        kind: MetricType::Counter,
        samples: |s, emit| emit(&[], Value::Int(s.stats.journal_gaps)),
    },
    SelfFamily {
        name: "unitwatch_dbus_up",
        help: "1 while unitwatch is connected to the service manager over D-Bus.",
        kind: MetricType::Gauge,
        samples: |s, emit| emit(&[], flag(s.stats.dbus_up)),
    },
    SelfFamily {
        name: "unitwatch_dbus_reconnects",
        help: "Times the D-Bus connection came back after it was lost.",
        kind: MetricType::Counter,
        samples: |s, emit| emit(&[], Value::Int(s.stats.dbus_reconnects)),
    },
    SelfFamily {
        name: "unitwatch_dbus_overflows",
        help: "Times systemd's signals overflowed unitwatch's queue; every watched unit was read again.",
        kind: MetricType::Counter,
        samples: |s, emit| emit(&[], Value::Int(s.stats.dbus_overflows)),
    },
    SelfFamily {
        name: "unitwatch_events",
        help: "Events applied to the ledger, by source.",
        kind: MetricType::Counter,
        samples: |s, emit| {
            emit(&[("source", "dbus")], Value::Int(s.stats.events.dbus))?;
            emit(&[("source", "journal")], Value::Int(s.stats.events.journal))
        },
    },
];

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

/// Renders `snapshot` as of `now`.
pub fn render(snapshot: &Snapshot, now: Usec) -> String {
    // Sized up front (about 800 bytes a unit) rather than grown by doubling,
    // which for thousands of units would copy megabytes and leave a buffer
    // up to twice the size behind.
    let mut out = String::with_capacity(4096 + snapshot.ledger.len() * 900);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collector {
        snapshot: snapshot.clone(),
        now,
    }));
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

/// The registry's view of one snapshot at one time.
#[derive(Debug)]
struct Collector {
    snapshot: Snapshot,
    now: Usec,
}

/// Encodes one sample of a family of `kind`.
fn encode_sample(
    family: &mut MetricEncoder<'_>,
    kind: MetricType,
    labels: &[(&str, &str)],
    value: Value,
) -> Result<(), std::fmt::Error> {
    let labels: Vec<(&str, &str)> = labels.to_vec();
    match (kind, value) {
        (MetricType::Counter, Value::Int(n)) => {
            ConstCounter::new(n).encode(family.encode_family(&labels)?)
        }
        (MetricType::Counter, Value::Float(x)) => {
            ConstCounter::new(x).encode(family.encode_family(&labels)?)
        }
        (_, Value::Int(n)) => ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
            .encode(family.encode_family(&labels)?),
        (_, Value::Float(x)) => ConstGauge::new(x).encode(family.encode_family(&labels)?),
    }
}

/// Encodes a family about unitwatch: an info family is one sample whose
/// labels are the info; one sample without labels is the family's value.
fn encode_self_family(
    mut family: MetricEncoder<'_>,
    kind: MetricType,
    mut samples: Vec<(Vec<(String, String)>, Value)>,
) -> Result<(), std::fmt::Error> {
    match (kind, samples.len()) {
        (MetricType::Info, _) => {
            let labels = samples.pop().map(|(l, _)| l).unwrap_or_default();
            Info::new(labels).encode(family)
        }
        (_, 1) if samples[0].0.is_empty() => match (kind, samples[0].1) {
            (MetricType::Counter, Value::Int(n)) => ConstCounter::new(n).encode(family),
            (MetricType::Counter, Value::Float(x)) => ConstCounter::new(x).encode(family),
            (_, Value::Int(n)) => {
                ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(family)
            }
            (_, Value::Float(x)) => ConstGauge::new(x).encode(family),
        },
        _ => {
            for (labels, value) in &samples {
                let labels: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                encode_sample(&mut family, kind, &labels, *value)?;
            }
            Ok(())
        }
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Escaped once per scrape, not once per sample.
        let views: Vec<(String, UnitView<'_>)> = self
            .snapshot
            .ledger
            .view(self.now)
            .map(|v| (escape(v.unit), v))
            .collect();
        for f in UNIT_FAMILIES {
            let mut family = encoder.encode_descriptor(f.name, f.help, f.unit.as_ref(), f.kind)?;
            for (unit, view) in &views {
                (f.samples)(view, &mut |labels, value| {
                    let mut all = Vec::with_capacity(labels.len() + 1);
                    all.push(("unit", unit.as_str()));
                    all.extend_from_slice(labels);
                    encode_sample(&mut family, f.kind, &all, value)
                })?;
            }
        }
        for f in SELF_FAMILIES {
            let family = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            let mut samples: Vec<(Vec<(String, String)>, Value)> = Vec::new();
            (f.samples)(&self.snapshot, &mut |labels, value| {
                let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string()));
                samples.push((labels.collect(), value));
                Ok(())
            })?;
            encode_self_family(family, f.kind, samples)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
