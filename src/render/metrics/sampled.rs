//! The families read from the sampler's last round ([`crate::sample`]):
//! per-unit resources, sockets and watchdogs ([`SAMPLE_FAMILIES`]) and the
//! service manager's own state ([`HOST_FAMILIES`]). Each is one row; every
//! one can be turned off in `[metrics]` by its name without `service_`.
//! A value the sampler could not read has no sample, never a zero.

use super::{Emit, Kind, Value};
use crate::sample::{Host, UnitSample, SYSTEM_STATES};

/// A per-unit family read from a [`UnitSample`].
pub struct SampleFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<&'static str>,
    pub kind: Kind,
    pub samples: fn(&UnitSample, &mut Emit<'_>),
}

/// A family about the service manager.
pub struct HostFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: fn(&Host, &mut Emit<'_>),
}

impl SampleFamily {
    pub fn key(&self) -> &'static str {
        self.name.strip_prefix("service_").unwrap_or(self.name)
    }
}

fn int(emit: &mut Emit<'_>, v: Option<u64>) {
    if let Some(v) = v {
        emit(&[], Value::Int(v));
    }
}

/// Every per-unit sampled family, in the order they are exposed.
pub const SAMPLE_FAMILIES: &[SampleFamily] = &[
    SampleFamily {
        name: "service_cpu",
        help: "CPU time the unit's processes used, by mode (cgroup cpu.stat; systemd's CPUUsageNSec is the sum).",
        unit: Some("seconds"),
        kind: Kind::Counter,
        samples: |s, emit| {
            let r = &s.resources;
            if let (Some(u), Some(k)) = (r.cpu_user_usec, r.cpu_system_usec) {
                emit(&[("mode", "user")], Value::Float(u as f64 / 1e6));
                emit(&[("mode", "system")], Value::Float(k as f64 / 1e6));
            }
        },
    },
    SampleFamily {
        name: "service_memory",
        help: "Memory the unit's cgroup uses now (systemd's MemoryCurrent).",
        unit: Some("bytes"),
        kind: Kind::Gauge,
        samples: |s, emit| int(emit, s.resources.memory_bytes),
    },
    SampleFamily {
        name: "service_memory_peak",
        help: "Most memory the unit's cgroup used since it was created (memory.peak).",
        unit: Some("bytes"),
        kind: Kind::Gauge,
        samples: |s, emit| int(emit, s.resources.memory_peak_bytes),
    },
    SampleFamily {
        name: "service_memory_max",
        help: "The unit's memory limit (MemoryMax=), when it has one.",
        unit: Some("bytes"),
        kind: Kind::Gauge,
        samples: |s, emit| int(emit, s.resources.memory_max_bytes),
    },
    SampleFamily {
        name: "service_tasks",
        help: "Tasks (processes and threads) in the unit's cgroup (systemd's TasksCurrent).",
        unit: None,
        kind: Kind::Gauge,
        samples: |s, emit| int(emit, s.resources.tasks),
    },
    SampleFamily {
        name: "service_tasks_max",
        help: "The unit's task limit (TasksMax=), when it has one.",
        unit: None,
        kind: Kind::Gauge,
        samples: |s, emit| int(emit, s.resources.tasks_max),
    },
    SampleFamily {
        name: "service_io_read",
        help: "Bytes the unit read from block devices (systemd's IOReadBytes).",
        unit: Some("bytes"),
        kind: Kind::Counter,
        samples: |s, emit| int(emit, s.resources.io_read_bytes),
    },
    SampleFamily {
        name: "service_io_write",
        help: "Bytes the unit wrote to block devices (systemd's IOWriteBytes).",
        unit: Some("bytes"),
        kind: Kind::Counter,
        samples: |s, emit| int(emit, s.resources.io_write_bytes),
    },
    SampleFamily {
        name: "service_oom_kills",
        help: "Processes of the unit's cgroup the kernel's OOM killer killed (memory.events oom_kill).",
        unit: None,
        kind: Kind::Counter,
        samples: |s, emit| int(emit, s.resources.oom_kills),
    },
    SampleFamily {
        name: "socket_connections_accepted",
        help: "Connections the socket unit accepted (NAccepted).",
        unit: None,
        kind: Kind::Counter,
        samples: |s, emit| int(emit, s.socket.as_ref().map(|k| k.accepted)),
    },
    SampleFamily {
        name: "socket_connections",
        help: "Connections of the socket unit open now (NConnections).",
        unit: None,
        kind: Kind::Gauge,
        samples: |s, emit| int(emit, s.socket.as_ref().map(|k| k.connections)),
    },
    SampleFamily {
        name: "socket_connections_refused",
        help: "Connections the socket unit refused (NRefused).",
        unit: None,
        kind: Kind::Counter,
        samples: |s, emit| int(emit, s.socket.as_ref().and_then(|k| k.refused)),
    },
    SampleFamily {
        name: "service_watchdog",
        help: "The service's watchdog interval (WatchdogSec=), when it has one.",
        unit: Some("seconds"),
        kind: Kind::Gauge,
        samples: |s, emit| {
            if let Some(w) = &s.watchdog {
                emit(&[], Value::Float(w.interval_usec as f64 / 1e6));
            }
        },
    },
    SampleFamily {
        name: "service_watchdog_last_ping_timestamp",
        help: "Unix time of the service's last watchdog ping (WatchdogTimestamp) in this invocation.",
        unit: Some("seconds"),
        kind: Kind::Gauge,
        samples: |s, emit| {
            if let Some(at) = s.watchdog.as_ref().and_then(|w| w.last_ping) {
                emit(&[], Value::Float(at as f64 / 1e6));
            }
        },
    },
];

/// Every family about the service manager, in the order they are exposed.
pub const HOST_FAMILIES: &[HostFamily] = &[
    HostFamily {
        name: "systemd_system_state",
        help: "1 for the service manager's SystemState (running, degraded, ...), 0 for the others.",
        kind: Kind::Gauge,
        samples: |h, emit| {
            if h.system_state.is_empty() {
                return;
            }
            for state in SYSTEM_STATES {
                emit(
                    &[("state", state)],
                    Value::Int(u64::from(h.system_state == state)),
                );
            }
            if !SYSTEM_STATES.contains(&h.system_state.as_str()) {
                emit(&[("state", &h.system_state)], Value::Int(1));
            }
        },
    },
    HostFamily {
        name: "systemd_units",
        help: "Units the service manager has loaded, watched or not, by ActiveState.",
        kind: Kind::Gauge,
        samples: |h, emit| {
            for (state, n) in h.units.iter().flatten() {
                emit(&[("active_state", state)], Value::Int(*n));
            }
        },
    },
    HostFamily {
        name: "systemd_version",
        help: "The service manager's version: its major number, the whole version in a label.",
        kind: Kind::Gauge,
        samples: |h, emit| {
            let major = h
                .version
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(major) = major {
                emit(&[("version", &h.version)], Value::Int(major));
            }
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::ACTIVE_STATES;

    fn host_samples(f: &HostFamily, h: &Host) -> Vec<(Vec<(String, String)>, String)> {
        let mut out = Vec::new();
        (f.samples)(h, &mut |labels, v| {
            out.push((
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                format!("{v:?}"),
            ))
        });
        out
    }

    #[test]
    fn the_system_state_has_a_sample_for_every_state() {
        let h = Host {
            system_state: "degraded".into(),
            ..Host::default()
        };
        let s = host_samples(&HOST_FAMILIES[0], &h);
        assert_eq!(s.len(), SYSTEM_STATES.len());
        let one: Vec<_> = s.iter().filter(|(_, v)| v.contains('1')).collect();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0[0].1, "degraded");
    }

    #[test]
    fn an_unread_host_has_no_samples() {
        let h = Host::default();
        for f in HOST_FAMILIES {
            assert!(host_samples(f, &h).is_empty(), "{}", f.name);
        }
        assert_eq!(ACTIVE_STATES.len(), 7);
    }

    #[test]
    fn the_version_is_its_major_number() {
        let h = Host {
            version: "252.33-1~deb12u1".into(),
            ..Host::default()
        };
        let s = host_samples(&HOST_FAMILIES[2], &h);
        assert_eq!(s[0].0[0].1, "252.33-1~deb12u1");
        assert!(s[0].1.contains("252"), "{:?}", s[0].1);
    }

    fn text(sample: crate::sample::Sample, families: &super::super::Families) -> String {
        let snapshot = crate::snapshot::Snapshot {
            sample: std::sync::Arc::new(sample),
            ..Default::default()
        };
        super::super::render(
            &snapshot,
            0,
            crate::render::exposition::Format::Text,
            families,
        )
    }

    #[test]
    fn only_what_was_read_has_a_sample() {
        let mut unit = UnitSample::default();
        unit.resources.cpu_user_usec = Some(1_500_000);
        unit.resources.cpu_system_usec = Some(250_000);
        let sample = crate::sample::Sample {
            units: [("a.service".to_owned(), unit)].into(),
            ..Default::default()
        };
        let t = text(sample, &Default::default());
        assert!(
            t.contains("service_cpu_seconds_total{unit=\"a.service\",mode=\"user\"} 1.5\n"),
            "{t}"
        );
        assert!(
            t.contains("service_cpu_seconds_total{unit=\"a.service\",mode=\"system\"} 0.25\n"),
            "{t}"
        );
        for absent in [
            "service_memory_bytes{",
            "service_tasks{",
            "socket_connections{",
            "systemd_system_state{",
        ] {
            assert!(!t.contains(absent), "{absent} without a value: {t}");
        }
    }

    #[test]
    fn a_family_turned_off_is_not_declared() {
        let mut families = super::super::Families::default();
        families.set("cpu", false).expect("cpu");
        families.set("systemd_version", false).expect("version");
        let t = text(Default::default(), &families);
        assert!(!t.contains("service_cpu_seconds"), "{t}");
        assert!(!t.contains("systemd_version"), "{t}");
        assert!(t.contains("# TYPE service_memory_bytes gauge"), "{t}");
    }
}
