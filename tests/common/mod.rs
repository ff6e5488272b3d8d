//! Shared helpers of the integration tests: a real systemd booted in
//! namespaces ([`Sandbox`]), bounded waits, a unitwatch process
//! ([`unitwatch::Unitwatch`]) and the shipped files ([`shipped`]).

#![allow(dead_code)]

pub mod fleet;
pub mod shipped;
pub mod unitwatch;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sandbox/sandbox")
}

/// A running systemd, PID 1 of its own namespaces; shut down when dropped.
pub struct Sandbox {
    pid: u32,
}

/// Boots a [`Sandbox`] for the calling test, or skips the test (returns
/// from it, printing why) when not run as root, which booting systemd in
/// namespaces needs. With `UNITWATCH_NO_SKIP` set (CI sets it), a test that
/// would be skipped fails instead.
#[macro_export]
macro_rules! sandbox {
    () => {
        match $crate::common::Sandbox::boot_or_skip(module_path!()) {
            Some(sb) => sb,
            None => return,
        }
    };
}

/// Whether this process may boot a sandbox.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Sandbox {
    /// A sandbox, or `None` (printed, unless `UNITWATCH_NO_SKIP` forbids
    /// skipping: then a panic) when not root.
    pub fn boot_or_skip(test: &str) -> Option<Sandbox> {
        if is_root() {
            return Some(Sandbox::start());
        }
        if std::env::var_os("UNITWATCH_NO_SKIP").is_some() {
            panic!("{test} needs root to boot systemd in namespaces, and UNITWATCH_NO_SKIP forbids skipping it");
        }
        eprintln!(
            "skipped {test}: needs root to boot systemd in namespaces (run as root, or see README)"
        );
        None
    }

    /// Boots a sandbox; panics with the reason if it does not come up.
    pub fn start() -> Sandbox {
        let out = Command::new(script())
            .arg("start")
            .output()
            .expect("run tests/sandbox/sandbox");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pid = stdout.trim().parse().unwrap_or(0);
        if !out.status.success() || pid == 0 {
            panic!(
                "the systemd sandbox did not boot (are we root? run scripts/setup):\n{}{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Sandbox { pid }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The sandbox's system bus, reachable from the host.
    pub fn bus_address(&self) -> String {
        format!(
            "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
            self.pid
        )
    }

    /// A path inside the sandbox, as seen from the host.
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", self.pid, inside))
    }

    /// Runs a command inside.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new(script())
            .arg("exec")
            .arg(self.pid.to_string())
            .args(args)
            .output()
            .expect("run tests/sandbox/sandbox exec")
    }

    /// Runs `sh -c script` inside; panics if it fails, returns its stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-c", script]);
        if !out.status.success() {
            panic!(
                "in the sandbox, `{script}` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl ARGS` inside; panics if it fails.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut all = vec!["systemctl"];
        all.extend_from_slice(args);
        let out = self.exec(&all);
        if !out.status.success() {
            panic!(
                "systemctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a unit file to /run/systemd/system inside (no reload).
    pub fn write_unit(&self, name: &str, contents: &str) {
        let path = self.path(&format!("/run/systemd/system/{name}"));
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    pub fn daemon_reload(&self) {
        self.systemctl(&["daemon-reload"]);
    }

    /// How many of `unit`'s journal records contain `text`: systemd's own
    /// count of restarts ("Scheduled restart job") and failures ("Failed
    /// with result 'exit-code'"), which a stop does not reset.
    pub fn journal_count(&self, unit: &str, text: &str) -> f64 {
        self.sh(&format!(
            "journalctl -u {unit} -o cat | grep -c \"{text}\" || true"
        ))
        .trim()
        .parse()
        .expect("a count from the journal")
    }

    /// `systemctl show -P PROPERTY UNIT`, trimmed.
    pub fn show(&self, unit: &str, property: &str) -> String {
        self.systemctl(&["show", "-P", property, unit])
            .trim()
            .to_owned()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.pid.to_string())
            .status();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn try_wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`try_wait_for`], but panics with "timed out after ... waiting for WHAT".
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    match try_wait_for(timeout, f) {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}
