//! Reading a unit's resources from its cgroup v2 directory: the same files
//! systemd reads for `CPUUsageNSec`, `MemoryCurrent`, `TasksCurrent`,
//! `IOReadBytes` and the rest, read directly because a file read costs a
//! few microseconds where a D-Bus round trip per property costs a hundred.
//! Parsing is pure and tested here; a file that is missing (the unit has no
//! cgroup, the controller is not on cgroup v2) gives no value.

use std::path::{Path, PathBuf};

use crate::sample::Resources;

/// Which groups of files to read: what `[metrics]` leaves on and the
/// unit's `*Accounting=` allow (systemd reports nothing without them, and
/// neither do we).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    pub cpu: bool,
    pub memory: bool,
    pub tasks: bool,
    pub io: bool,
}

impl Want {
    pub fn any(&self) -> bool {
        self.cpu || self.memory || self.tasks || self.io
    }

    /// Both must want a group.
    pub fn and(self, other: Want) -> Want {
        Want {
            cpu: self.cpu && other.cpu,
            memory: self.memory && other.memory,
            tasks: self.tasks && other.tasks,
            io: self.io && other.io,
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
    /// The controllers the hierarchy has (its root's `cgroup.controllers`;
    /// CPU time is there without the cpu controller): files of the others
    /// are never there, so they are not asked for.
    has: Want,
}

impl Cgroups {
    /// The hierarchy at `root` (a container's, or tests').
    pub fn at(root: PathBuf) -> Cgroups {
        let has = match std::fs::read_to_string(root.join("cgroup.controllers")) {
            Ok(text) => {
                let on = |c: &str| text.split_whitespace().any(|h| h == c);
                Want {
                    cpu: true,
                    memory: on("memory"),
                    tasks: on("pids"),
                    io: on("io"),
                }
            }
            // Unknown: ask for every file.
            Err(_) => Want {
                cpu: true,
                memory: true,
                tasks: true,
                io: true,
            },
        };
        Cgroups { root, has }
    }

    /// The host's: `/sys/fs/cgroup` on a unified host, its `unified`
    /// directory on a hybrid one (where only the controllers mounted on v2
    /// have files there); `None` without cgroup v2.
    pub fn detect() -> Option<Cgroups> {
        let base = Path::new("/sys/fs/cgroup");
        if base.join("cgroup.controllers").exists() {
            return Some(Cgroups::at(base.to_owned()));
        }
        let unified = base.join("unified");
        unified
            .join("cgroup.controllers")
            .exists()
            .then(|| Cgroups::at(unified))
    }

    /// Reads what `want` asks of the cgroup `path` (systemd's
    /// `ControlGroup`, like `/system.slice/a.service`); `None` if the
    /// directory is not there (the unit has no processes).
    pub fn read(&self, path: &str, want: Want) -> Option<Resources> {
        let want = want.and(self.has);
        let dir = self.root.join(path.trim_start_matches('/'));
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        let mut r = Resources::default();
        if want.cpu {
            match read("cpu.stat") {
                Some(text) => {
                    r.cpu_user_usec = keyed(&text, "user_usec");
                    r.cpu_system_usec = keyed(&text, "system_usec");
                }
                // cpu.stat is always there while the cgroup is.
                None if !dir.is_dir() => return None,
                None => {}
            }
        } else if !dir.is_dir() {
            return None;
        }
        if want.memory {
            r.memory_bytes = read("memory.current").and_then(|t| number(&t));
            r.memory_peak_bytes = read("memory.peak").and_then(|t| number(&t));
            r.memory_max_bytes = read("memory.max").and_then(|t| number(&t));
            r.oom_kills = read("memory.events").and_then(|t| keyed(&t, "oom_kill"));
        }
        if want.tasks {
            r.tasks = read("pids.current").and_then(|t| number(&t));
            r.tasks_max = read("pids.max").and_then(|t| number(&t));
        }
        if want.io {
            if let Some(text) = read("io.stat") {
                let (rb, wb) = io_bytes(&text);
                r.io_read_bytes = Some(rb);
                r.io_write_bytes = Some(wb);
            }
        }
        Some(r)
    }
}

/// A file holding one number; `max` (no limit) and anything else is none.
fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`key value` per line).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `rbytes` and `wbytes` of `io.stat` summed over its devices, as systemd
/// sums them (`MAJ:MIN rbytes=.. wbytes=.. rios=..` per line).
fn io_bytes(text: &str) -> (u64, u64) {
    let mut read = 0u64;
    let mut written = 0u64;
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            read = read.saturating_add(v.parse().unwrap_or(0));
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            written = written.saturating_add(v.parse().unwrap_or(0));
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Want = Want {
        cpu: true,
        memory: true,
        tasks: true,
        io: true,
    };

    #[test]
    fn cpu_stat_gives_user_and_system_time() {
        let text = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n";
        assert_eq!(keyed(text, "user_usec"), Some(1000));
        assert_eq!(keyed(text, "system_usec"), Some(500));
        assert_eq!(keyed(text, "usage"), None);
    }

    #[test]
    fn no_limit_is_no_value() {
        assert_eq!(number("max\n"), None);
        assert_eq!(number("4915\n"), Some(4915));
    }

    #[test]
    fn io_stat_is_summed_over_devices() {
        let text = "8:0 rbytes=4096 wbytes=1024 rios=1 wios=1 dbytes=0 dios=0\n\
                    8:16 rbytes=100 wbytes=7 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(io_bytes(text), (4196, 1031));
        assert_eq!(io_bytes(""), (0, 0));
    }

    #[test]
    fn oom_kills_come_from_memory_events() {
        let text = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(keyed(text, "oom_kill"), Some(2));
    }

    #[test]
    fn a_cgroup_directory_is_read_file_by_file() {
        let root = std::env::temp_dir().join(format!("unitwatch-cg-{}", std::process::id()));
        let dir = root.join("system.slice/a.service");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let files = [
            ("cpu.stat", "usage_usec 30\nuser_usec 20\nsystem_usec 10\n"),
            ("memory.current", "8192\n"),
            ("memory.max", "max\n"),
            ("pids.current", "3\n"),
            ("pids.max", "4915\n"),
        ];
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write");
        }
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").expect("write");
        let cg = Cgroups::at(root.clone());
        let r = cg.read("/system.slice/a.service", ALL).expect("read");
        assert_eq!(r.cpu_user_usec, Some(20));
        assert_eq!(r.cpu_system_usec, Some(10));
        assert_eq!(r.memory_bytes, Some(8192));
        assert_eq!(r.memory_max_bytes, None, "max is no limit");
        assert_eq!(r.memory_peak_bytes, None, "no memory.peak before 5.19");
        assert_eq!((r.tasks, r.tasks_max), (Some(3), Some(4915)));
        assert_eq!(r.io_read_bytes, None, "no io controller");
        let cpu_only = cg
            .read(
                "/system.slice/a.service",
                Want {
                    cpu: true,
                    ..Want::default()
                },
            )
            .expect("read");
        assert_eq!(cpu_only.memory_bytes, None, "not asked for");
        assert_eq!(cg.read("/system.slice/gone.service", ALL), None);
        // Without the memory controller, memory is not asked for.
        std::fs::write(root.join("cgroup.controllers"), "cpu pids\n").expect("write");
        let r = Cgroups::at(root.clone())
            .read("/system.slice/a.service", ALL)
            .expect("read");
        assert_eq!(r.memory_bytes, None);
        assert_eq!(r.tasks, Some(3));
        let _ = std::fs::remove_dir_all(root);
    }
}
