//! Shared helpers of the integration tests: a real systemd booted in
//! namespaces ([`Sandbox`], booted again on the same journal with [`Boot`];
//! a user manager in it, [`Sandbox::start_user`]) and the skipping of tests
//! that need root ([`sandbox!`], [`require_root!`]), bounded waits, the two
//! harnesses — the whole server in this process ([`inproc::Server`], any
//! user) and a unitwatch process ([`unitwatch::Unitwatch`], for signals,
//! exit codes, wrappers and the command line) — TLS material ([`tls`]) and
//! the shipped files ([`shipped`]), the names of a unit's series
//! ([`series`]), and saved states to start the server from ([`saved`]).

#![allow(dead_code)]

pub mod fleet;
pub mod inproc;
pub mod saved;
pub mod series;
pub mod shipped;
pub mod tls;
pub mod unitwatch;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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

/// Skips the calling test (returns from it, printing why) when not run as
/// root, for tests that need root for `$why` (running as `nobody` under
/// setpriv, strace, setting the clock). With `UNITWATCH_NO_SKIP` set (CI
/// sets it), a test that would be skipped fails instead.
#[macro_export]
macro_rules! require_root {
    ($why:expr) => {
        if !$crate::common::root_or_skip(module_path!(), $why) {
            return;
        }
    };
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a test of `module`, which needs root `why`, may run: true as
/// root; else
/// false, printed as a skip, unless `UNITWATCH_NO_SKIP` forbids skipping
/// (then a panic: CI runs as root, and a skip there hides a test).
pub fn root_or_skip(module: &str, why: &str) -> bool {
    if is_root() {
        return true;
    }
    // The test harness names each test's thread after the test.
    let test = match std::thread::current().name() {
        Some(name) if name != "main" => format!("{module}::{name}"),
        _ => module.to_owned(),
    };
    if std::env::var_os("UNITWATCH_NO_SKIP").is_some() {
        panic!("{test} needs root {why}, and UNITWATCH_NO_SKIP forbids skipping it");
    }
    // Straight to stderr: the test harness captures eprintln! of a test
    // that passes, and a skip passes.
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: needs root {why} (run as root, or see README)"
    );
    false
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
    /// A sandbox, or `None` (printed, unless `UNITWATCH_NO_SKIP` forbids
    /// skipping: then a panic) when not root.
    pub fn boot_or_skip(module: &str) -> Option<Sandbox> {
        root_or_skip(module, "to boot systemd in namespaces").then(Sandbox::start)
    }

    /// Boots a sandbox; panics with the reason if it does not come up.
    /// Tests call it through [`sandbox!`], which skips instead when not root.
    fn start() -> Sandbox {
        Sandbox::boot(&Boot::default())
    }

    /// Boots a sandbox as `boot` says; for tests that checked for root
    /// first ([`require_root!`]).
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

/// Runs `program` with `args` to its end, stdin closed; panics if it cannot
/// be started (naming what installs it).
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program} (scripts/setup installs it): {e}"))
}

/// `sh -c script` in `dir`; panics with its output if it fails.
pub fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs wrk with `args`; returns its report after checking it made
/// requests, none failed at the socket level and all got 2xx.
pub fn wrk(args: &[&str], log: impl Fn() -> String) -> String {
    let out = run("wrk", args);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's report:\n{report}"));
    assert!(requests > 0, "{report}");
    assert!(
        !report.contains("Socket errors"),
        "socket errors under load:\n{report}\nlog:\n{}",
        log()
    );
    assert!(
        !report.contains("Non-2xx"),
        "non-2xx answers under load:\n{report}"
    );
    report
}
