//! unitwatch as a process of its own, for what a test of the in-process
//! server cannot show: signals and exit codes, running through a wrapper
//! (setpriv, strace, unshare), resident memory, the command line, and
//! unitwatch inside a sandbox ([`Place::Inside`]: in its mount and PID
//! namespaces, where the bus, the journal, the boot ID and `/proc` are its
//! own as on a real host, as root or as a user with `--user`, run as a
//! scope unit of the sandbox's systemd so that a shutdown stops it before
//! unmounting its directory; still on the host's network). A daemon
//! ([`Unitwatch`]) is started with its own config and port, against a
//! sandbox or without systemd, read over HTTP, stopped with SIGTERM when
//! dropped; [`cli`] runs a subcommand to its end.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use super::{try_wait_for, wait_for, Sandbox};

/// Where unitwatch runs.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    /// On the host, through `wrapper` (a command that ends by executing
    /// its arguments; empty for none).
    Host { wrapper: &'a [&'a str] },
    /// In the sandbox's mount and PID namespaces, reading the journal as a
    /// host's unitwatch does; `user`: as that user with `--user`, in its
    /// session. Its directory must be one the sandbox was booted with in
    /// [`super::Boot::binds`] (and is then handed to the user).
    Inside { user: Option<u32> },
}

pub struct Unitwatch {
    child: Option<Child>,
    /// The process to signal: the child, or inside the sandbox the
    /// unitwatch that nsenter forked (nsenter waits for it and exits as it did).
    target: u32,
    pub addr: String,
    pub dir: PathBuf,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "unitwatch-test-{}-{}-{}",
        tag,
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A GET over plain HTTP/1.0; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

/// The value of the series `series` (name with labels, exactly as rendered) in `text`.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

/// How long unitwatch may take to save its state and exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(2);

/// What to start: see [`Unitwatch::setup`].
pub struct Launch<'a> {
    dir: PathBuf,
    sandbox: Option<&'a Sandbox>,
    watch: String,
    journal: String,
    web: Option<String>,
    wrapper: Vec<String>,
    /// Inside the sandbox, as this user if any (see [`Place::Inside`]).
    inside: Option<Option<u32>>,
    resources: String,
}

impl<'a> Launch<'a> {
    /// Follows `sb`'s systemd (its bus and journal) instead of none.
    pub fn sandbox(mut self, sb: &'a Sandbox) -> Launch<'a> {
        self.sandbox = Some(sb);
        self
    }

    /// The `[watch]` table's body (default: the AITBC services).
    pub fn watch(mut self, body: &str) -> Launch<'a> {
        body.clone_into(&mut self.watch);
        self
    }

    /// `[resources]` lines (against a sandbox from outside, `cgroup_root`
    /// is its hierarchy).
    pub fn resources(mut self, lines: &str) -> Launch<'a> {
        lines.clone_into(&mut self.resources);
        self
    }

    /// Extra `[journal]` lines; one naming `directory` replaces the default.
    pub fn journal(mut self, lines: &str) -> Launch<'a> {
        lines.clone_into(&mut self.journal);
        self
    }

    /// The web configuration, written to `web.yml` in the directory and
    /// given as `--web.config.file`.
    pub fn web(mut self, yaml: &str) -> Launch<'a> {
        self.web = Some(yaml.to_owned());
        self
    }

    /// Runs unitwatch through `wrapper`, a command that ends by executing
    /// its arguments.
    pub fn via(mut self, wrapper: &[&str]) -> Launch<'a> {
        self.wrapper = wrapper.iter().map(|&w| w.to_owned()).collect();
        self
    }

    /// Runs it inside the sandbox, as `user` with `--user` if given (see
    /// [`Place::Inside`]).
    pub fn inside(mut self, user: Option<u32>) -> Launch<'a> {
        self.inside = Some(user);
        self
    }

    /// Starts it. Against a sandbox with plain HTTP, waits until
    /// `/healthz` says it is connected; otherwise until it listens.
    pub fn start(self) -> Unitwatch {
        let dir = self.dir;
        let config = dir.join("config.toml");
        // Without systemd: a bus that does not exist, an empty journal.
        let (bus, journal_dir) = match self.sandbox {
            Some(sb) => (sb.bus_address(), sb.path("/run/log/journal")),
            None => (
                format!("unix:path={}", dir.join("no-bus").display()),
                dir.join("journal"),
            ),
        };
        if self.sandbox.is_none() {
            std::fs::create_dir_all(&journal_dir).expect("journal dir");
        }
        std::fs::write(
            &config,
            format!(
                "[watch]\n{}\n[state]\ndir = \"{}\"\n[journal]\n{}\n{}\n[resources]\n{}\n{}\n",
                self.watch,
                dir.join("state").display(),
                if self.journal.contains("directory") || self.inside.is_some() {
                    String::new()
                } else {
                    format!("directory = \"{}\"", journal_dir.display())
                },
                self.journal,
                match (self.sandbox, self.inside) {
                    (Some(sb), None) =>
                        format!("cgroup_root = \"{}\"", sb.path("/sys/fs/cgroup").display()),
                    _ => String::new(),
                },
                self.resources,
            ),
        )
        .expect("write config");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("unitwatch.log"))
            .expect("log file");
        let binary = binary();
        let mut command = match (self.inside, self.sandbox) {
            (Some(user), Some(sb)) => inside(sb, &dir, &addr, user, &binary),
            _ => match self.wrapper.split_first() {
                Some((first, rest)) => {
                    let mut c = Command::new(first);
                    c.args(rest).arg(&binary);
                    c
                }
                None => Command::new(&binary),
            },
        };
        command
            .arg("--config")
            .arg(&config)
            .arg("--web.listen-address")
            .arg(&addr);
        if let Some(web) = &self.web {
            let file = dir.join("web.yml");
            std::fs::write(&file, web).expect("write web config");
            command.arg("--web.config.file").arg(&file);
        }
        let bus = if self.inside.is_some() {
            "unix:path=/run/dbus/system_bus_socket".to_owned()
        } else {
            bus
        };
        let child = command
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
            .env("RUST_LOG", "unitwatch=trace,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn unitwatch");
        let target = if self.inside.is_some() {
            wait_for("nsenter to fork unitwatch", Duration::from_secs(10), || {
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        } else {
            child.id()
        };
        let uw = Unitwatch {
            child: Some(child),
            target,
            addr,
            dir,
        };
        if self.sandbox.is_some() && self.web.is_none() {
            wait_for(
                &format!("unitwatch /healthz to answer 200; log:\n{}", uw.log_path()),
                Duration::from_secs(20),
                || matches!(http_get(&uw.addr, "/healthz"), Ok((200, _))).then_some(()),
            );
        } else {
            wait_for(
                &format!(
                    "unitwatch to listen on {}; log:\n{}",
                    uw.addr,
                    uw.log_path()
                ),
                Duration::from_secs(20),
                || TcpStream::connect(&uw.addr).ok(),
            );
        }
        uw
    }
}

impl Unitwatch {
    /// unitwatch in `dir` (config, `web.yml`, `state/` and the log live
    /// there; reuse it to restart), watching the AITBC services, without
    /// systemd, plain HTTP, until changed.
    pub fn setup<'a>(dir: &Path) -> Launch<'a> {
        Launch {
            dir: dir.to_owned(),
            sandbox: None,
            watch: "units = [\"aitbc-*.service\"]".to_owned(),
            journal: String::new(),
            web: None,
            wrapper: Vec::new(),
            inside: None,
            resources: String::new(),
        }
    }

    /// Starts unitwatch against the sandbox's bus and journal with this
    /// `[watch]` table body, in a fresh directory, and waits until
    /// `/healthz` says it is connected.
    pub fn start(sb: &Sandbox, watch: &str) -> Unitwatch {
        Unitwatch::launch(sb, watch, "", &temp_dir("uw"))
    }

    /// Like [`Unitwatch::start`], with extra `[journal]` lines and in `dir`.
    pub fn launch(sb: &Sandbox, watch: &str, journal: &str, dir: &Path) -> Unitwatch {
        Unitwatch::launch_via(sb, watch, journal, dir, &[])
    }

    /// Like [`Unitwatch::launch`], run through `wrapper` (a command that
    /// ends by executing its arguments).
    pub fn launch_via(
        sb: &Sandbox,
        watch: &str,
        journal: &str,
        dir: &Path,
        wrapper: &[&str],
    ) -> Unitwatch {
        Unitwatch::setup(dir)
            .sandbox(sb)
            .watch(watch)
            .journal(journal)
            .via(wrapper)
            .start()
    }

    /// Like [`Unitwatch::launch`], at `place`.
    pub fn launch_at(
        sb: &Sandbox,
        watch: &str,
        journal: &str,
        dir: &Path,
        place: Place,
    ) -> Unitwatch {
        let launch = Unitwatch::setup(dir)
            .sandbox(sb)
            .watch(watch)
            .journal(journal);
        match place {
            Place::Host { wrapper } => launch.via(wrapper).start(),
            Place::Inside { user } => launch.inside(user).start(),
        }
    }

    /// `SCHEME://localhost:PORT/PATH` (localhost: the name the test
    /// certificates are for).
    pub fn url(&self, scheme: &str, path: &str) -> String {
        let port = self.addr.rsplit_once(':').map_or("", |(_, p)| p);
        format!("{scheme}://localhost:{port}{path}")
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The state file's path.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state").join("state.json")
    }

    /// SIGKILL, no chance to save anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(self.target, libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|_| self.target)
    }

    pub fn log_path(&self) -> String {
        self.dir.join("unitwatch.log").display().to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("unitwatch.log")).unwrap_or_default()
    }

    /// The body of `/metrics`.
    pub fn metrics(&self) -> String {
        match http_get(&self.addr, "/metrics") {
            Ok((200, body)) => body,
            other => panic!("GET /metrics: {other:?}\nlog:\n{}", self.log()),
        }
    }

    /// The value of one series of `/metrics`, if present.
    pub fn value(&self, series: &str) -> Option<f64> {
        value(&self.metrics(), series)
    }

    /// Waits until `series` has a value for which `ok` holds; returns it.
    pub fn wait_value(&self, series: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let mut last = None;
        let found = try_wait_for(timeout, || {
            last = self.value(series);
            last.filter(|v| ok(*v))
        });
        match found {
            Some(v) => v,
            None => panic!(
                "timed out after {timeout:?} waiting on {series}; last value {last:?}\nmetrics:\n{}\nlog:\n{}",
                self.metrics(),
                self.log()
            ),
        }
    }

    /// Waits (bounded) for the process to exit by itself; `None` if it
    /// still runs after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = try_wait_for(timeout, || child.try_wait().ok().flatten());
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Sends SIGTERM and returns the exit status; `None` if unitwatch did not
    /// exit within [`STOP_DEADLINE`] (it is then killed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        terminate(self.target);
        let status = try_wait_for(STOP_DEADLINE, || child.try_wait().ok().flatten());
        if status.is_none() {
            signal(self.target, libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }
}

impl Drop for Unitwatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends SIGTERM to process `pid`.
pub fn terminate(pid: u32) {
    signal(pid, libc::SIGTERM);
}

/// Sends `sig` to process `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a process ID");
    // SAFETY: kill has no memory-safety preconditions; a failure (the
    // process is gone) is what the caller's wait then sees.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The unitwatch under test: this build's, or `UNITWATCH_TEST_BIN` (a copy
/// kept for a long run while the tree is rebuilt).
fn binary() -> String {
    std::env::var("UNITWATCH_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_unitwatch").to_owned())
}

/// The command that runs `binary` inside `sb` (see [`Place::Inside`]).
fn inside(sb: &Sandbox, dir: &Path, addr: &str, user: Option<u32>, binary: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["-t", &sb.pid().to_string(), "-m", "-p", "--"]);
    c.args(["systemd-run", "--scope", "--quiet", "--collect"]);
    c.arg(format!(
        "--unit=unitwatch-test-{}",
        addr.rsplit(':').next().unwrap_or("0")
    ));
    c.arg(format!("--property=RequiresMountsFor={}", dir.display()));
    c.arg("--");
    if let Some(uid) = user {
        let id = uid.to_string();
        let owner = format!("{uid}:{uid}");
        let chown = Command::new("chown")
            .args(["-R", &owner])
            .arg(dir)
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown {} to {owner}", dir.display());
        c.args(["setpriv", "--reuid", &id, "--regid", &id, "--clear-groups"]);
        c.args(["env", &format!("XDG_RUNTIME_DIR=/run/user/{uid}")]);
        c.arg(format!(
            "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus"
        ));
    }
    c.arg(binary);
    if user.is_some() {
        c.arg("--user");
    }
    c
}

/// The `Field:` line of /proc/PID/status, without the name.
pub fn proc_status(pid: u32, field: &str) -> String {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The unitwatch binary as a command run to its end (subcommands, bad
/// configurations): stdin closed, no bus to reach, colour left to whether
/// stdout is a terminal.
pub fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_unitwatch"));
    c.stdin(Stdio::null())
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .env_remove("NO_COLOR");
    c
}

/// [`cli`] with `args`, run; its output.
pub fn cli_run(args: &[&str]) -> Output {
    cli().args(args).output().expect("run unitwatch")
}

/// unitwatch's one error format: exit status 1, nothing on stdout, one
/// line on stderr, starting with `want`.
pub fn assert_error(out: &Output, want: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(want), "got:  {stderr}want: {want}...");
    assert!(stdout.is_empty(), "{stdout}");
}
