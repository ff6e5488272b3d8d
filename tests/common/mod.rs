//! Shared helpers of the integration tests: a real systemd booted in
//! namespaces ([`Sandbox`], booted again on the same journal with [`Boot`]),
//! a user manager in it ([`Sandbox::start_user`]), bounded waits, a
//! unitwatch process ([`unitwatch::Unitwatch`]) and the shipped files
//! ([`shipped`]).

#![allow(dead_code)]

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

/// How a sandbox boots, for boots that follow one another on the same
/// disk (see tests/sandbox/sandbox).
#[derive(Debug, Default, Clone)]
pub struct Boot {
    /// Host directories mounted at the same path inside, read-write.
    pub binds: Vec<PathBuf>,
    /// A host directory as the persistent journal (`/var/log/journal`).
    pub journal: Option<PathBuf>,
    /// A boot ID of its own rather than the host's.
    pub new_boot_id: bool,
}

impl Sandbox {
    /// Boots a sandbox; panics with the reason if it does not come up.
    pub fn start() -> Sandbox {
        Sandbox::boot(&Boot::default())
    }

    /// Boots a sandbox as `boot` says.
    pub fn boot(boot: &Boot) -> Sandbox {
        let mut command = Command::new(script());
        command.arg("start");
        for dir in &boot.binds {
            command.arg("--bind").arg(dir);
        }
        if let Some(dir) = &boot.journal {
            command.arg("--journal").arg(dir);
        }
        if boot.new_boot_id {
            command.arg("--boot-id");
        }
        let out = command.output().expect("run tests/sandbox/sandbox");
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

    /// This boot's ID as the journal writes it (32 hex digits).
    pub fn boot_id(&self) -> String {
        self.sh("cat /proc/sys/kernel/random/boot_id")
            .trim()
            .replace('-', "")
    }

    /// A clean shutdown: `systemctl poweroff` (without logind, which the
    /// sandbox masks), waited for until systemd, PID 1, has exited.
    pub fn poweroff(self) {
        self.systemctl(&[
            "start",
            "--no-block",
            "--job-mode=replace-irreversibly",
            "poweroff.target",
        ]);
        let alive = std::path::Path::new("/proc").join(self.pid.to_string());
        wait_for("the sandbox to power off", Duration::from_secs(60), || {
            (!alive.exists()).then_some(())
        });
    }

    /// Power lost: SIGKILL to PID 1, which ends every process of the
    /// sandbox at once (what is already written stays written).
    pub fn power_loss(self) {
        drop(self);
    }

    /// Creates user `uw<uid>` with that UID and starts its user manager
    /// (`user@UID.service`, with its session bus), as logind would at login.
    pub fn start_user(&self, uid: u32) {
        self.sh(&format!(
            "id -u uw{uid} >/dev/null 2>&1 || useradd -m -u {uid} uw{uid}; \
             systemctl start user@{uid}.service"
        ));
        let bus = self.path(&format!("/run/user/{uid}/bus"));
        wait_for("the user's session bus", Duration::from_secs(20), || {
            bus.exists().then_some(())
        });
    }

    /// Runs `args` inside as user `uid`, in its session.
    pub fn exec_as(&self, uid: u32, args: &[&str]) -> Output {
        let (id, runtime) = (uid.to_string(), format!("XDG_RUNTIME_DIR=/run/user/{uid}"));
        let bus = format!("DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus");
        let mut all = vec![
            "setpriv",
            "--reuid",
            &id,
            "--regid",
            &id,
            "--clear-groups",
            "env",
            &runtime,
            &bus,
        ];
        all.extend_from_slice(args);
        self.exec(&all)
    }

    /// `systemctl --user ARGS` of user `uid`; panics if it fails.
    pub fn user_systemctl(&self, uid: u32, args: &[&str]) -> String {
        let mut all = vec!["systemctl", "--user"];
        all.extend_from_slice(args);
        let out = self.exec_as(uid, &all);
        if !out.status.success() {
            panic!(
                "systemctl --user {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a unit file for user `uid`'s manager (no reload).
    pub fn write_user_unit(&self, uid: u32, name: &str, contents: &str) {
        self.sh(&format!(
            "mkdir -p /home/uw{uid}/.config/systemd/user && \
             chown -R uw{uid}: /home/uw{uid}/.config"
        ));
        let path = self.path(&format!("/home/uw{uid}/.config/systemd/user/{name}"));
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
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
