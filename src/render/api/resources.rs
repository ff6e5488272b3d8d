//! What the API says of a unit's resources, socket and watchdog and of the
//! service manager, from the sampler's last round ([`crate::sample`]).
//! Every field is null where the sampler could read nothing, never zero.

use serde::{Deserialize, Serialize};

use crate::sample::{self, UnitSample};

/// A unit's resources, socket and watchdog as last sampled.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// CPU used over the last sampling interval: 1.0 is one core busy.
    pub cpu_cores: Option<f64>,
    /// CPU time since the cgroup was created, user and system, seconds.
    pub cpu_user_seconds: Option<f64>,
    pub cpu_system_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    /// `MemoryMax=`, when set.
    pub memory_max_bytes: Option<u64>,
    pub tasks: Option<u64>,
    /// `TasksMax=`, when set.
    pub tasks_max: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    /// A socket unit's connections: accepted, open, refused.
    pub socket: Option<Socket>,
    /// A service's watchdog: its interval and last ping, Unix seconds.
    pub watchdog: Option<Watchdog>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Socket {
    pub accepted: u64,
    pub connections: u64,
    pub refused: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Watchdog {
    pub interval_seconds: f64,
    pub last_ping: Option<f64>,
}

/// The service manager, at the top of the list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Host {
    /// `SystemState`: `running`, `degraded`, ...
    pub system_state: String,
    /// systemd's version.
    pub version: String,
    /// Loaded units by `ActiveState`, watched or not.
    pub units: Option<std::collections::BTreeMap<String, u64>>,
}

fn seconds(usec: u64) -> f64 {
    usec as f64 / 1e6
}

/// A unit's sample, as the API gives it.
pub fn resources(s: &UnitSample) -> Resources {
    let r = &s.resources;
    Resources {
        cpu_cores: s.cpu_cores(),
        cpu_user_seconds: r.cpu_user_usec.map(seconds),
        cpu_system_seconds: r.cpu_system_usec.map(seconds),
        memory_bytes: r.memory_bytes,
        memory_peak_bytes: r.memory_peak_bytes,
        memory_max_bytes: r.memory_max_bytes,
        tasks: r.tasks,
        tasks_max: r.tasks_max,
        io_read_bytes: r.io_read_bytes,
        io_write_bytes: r.io_write_bytes,
        oom_kills: r.oom_kills,
        socket: s.socket.as_ref().map(|k| Socket {
            accepted: k.accepted,
            connections: k.connections,
            refused: k.refused,
        }),
        watchdog: s.watchdog.as_ref().map(|w| Watchdog {
            interval_seconds: seconds(w.interval_usec),
            last_ping: w.last_ping.map(seconds),
        }),
    }
}

/// The manager, as the API gives it.
pub fn host(h: &sample::Host) -> Host {
    Host {
        system_state: h.system_state.clone(),
        version: h.version.clone(),
        units: h.units.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_not_read_is_null_not_zero() {
        let json = serde_json::to_value(resources(&UnitSample::default())).expect("json");
        assert!(json["memory_bytes"].is_null());
        assert!(json["cpu_cores"].is_null());
        assert!(json["socket"].is_null());
    }

    #[test]
    fn cpu_is_in_cores_and_seconds() {
        let mut s = UnitSample {
            cpu_millicores: Some(250),
            ..UnitSample::default()
        };
        s.resources.cpu_user_usec = Some(1_500_000);
        let r = resources(&s);
        assert_eq!(r.cpu_cores, Some(0.25));
        assert_eq!(r.cpu_user_seconds, Some(1.5));
    }
}
