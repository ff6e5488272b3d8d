//! A unitwatch process under test: started with its own config and port,
//! read over HTTP, stopped with SIGTERM when dropped. It runs on the host
//! against the sandbox's bus and journal directory, or ([`Place::Inside`])
//! in the sandbox's mount and PID namespaces, where the bus, the journal,
//! the boot ID and `/proc` (libsystemd watches journal files through
//! `/proc/self/fd`) are its own as on a real host, as root or as a user
//! with `--user`, still on the host's network so that the tests reach it. A
//! unitwatch inside runs as a scope unit of the sandbox's systemd that needs
//! its directory mounted, so that a shutdown stops it before unmounting
//! that, as it stops `unitwatch.service` on a host; a power loss ends it
//! with the sandbox.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{wait_for, Sandbox};

/// Where unitwatch runs.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    /// On the host, through `wrapper` (a command that ends by executing
    /// its arguments; empty for none).
    Host { wrapper: &'a [&'a str] },
    /// In the sandbox's mount and PID namespaces, reading the journal as a host's
    /// unitwatch does; `user`: as that user with `--user`, in its session.
    /// Its directory must be one the sandbox was booted with in
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

impl Unitwatch {
    /// Starts unitwatch against the sandbox's bus and journal with this
    /// `[watch]` table body, in a fresh directory, and waits until
    /// `/healthz` says it is connected.
    pub fn start(sb: &Sandbox, watch: &str) -> Unitwatch {
        Unitwatch::launch(sb, watch, "", &temp_dir("uw"))
    }

    /// Like [`Unitwatch::start`], with extra `[journal]` lines and in `dir`
    /// (config, `state/` and the log live there; reuse it to restart).
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
        Unitwatch::launch_at(sb, watch, journal, dir, Place::Host { wrapper })
    }

    /// Like [`Unitwatch::launch`], at `place`.
    pub fn launch_at(
        sb: &Sandbox,
        watch: &str,
        journal: &str,
        dir: &Path,
        place: Place,
    ) -> Unitwatch {
        let config = dir.join("config.toml");
        let inside = matches!(place, Place::Inside { .. });
        std::fs::write(
            &config,
            format!(
                "[watch]\n{watch}\n[state]\ndir = \"{}\"\n[journal]\n{}\n{journal}\n",
                dir.join("state").display(),
                if journal.contains("directory") || inside {
                    String::new()
                } else {
                    format!("directory = \"{}\"", sb.path("/run/log/journal").display())
                },
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
        let mut command = match place {
            Place::Host { wrapper } => match wrapper.split_first() {
                Some((first, rest)) => {
                    let mut c = Command::new(first);
                    c.args(rest).arg(binary);
                    c
                }
                None => Command::new(binary),
            },
            Place::Inside { user } => {
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
        };
        let bus = if inside {
            "unix:path=/run/dbus/system_bus_socket".to_owned()
        } else {
            sb.bus_address()
        };
        let child = command
            .arg("--config")
            .arg(&config)
            .arg("--web.listen-address")
            .arg(&addr)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
            .env("RUST_LOG", "unitwatch=trace,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn unitwatch");
        let target = match place {
            Place::Host { .. } => child.id(),
            Place::Inside { .. } => {
                wait_for("nsenter to fork unitwatch", Duration::from_secs(10), || {
                    std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
                        .ok()?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
            }
        };
        let uw = Unitwatch {
            child: Some(child),
            target,
            addr,
            dir: dir.to_owned(),
        };
        wait_for(
            &format!("unitwatch /healthz to answer 200; log:\n{}", uw.log_path()),
            Duration::from_secs(20),
            || match http_get(&uw.addr, "/healthz") {
                Ok((200, _)) => Some(()),
                _ => None,
            },
        );
        uw
    }

    /// The state file's path.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state").join("state.json")
    }

    /// SIGKILL, no chance to save anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(self.target, "-KILL");
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
        let found = super::try_wait_for(timeout, || {
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

    /// Waits up to `timeout` for unitwatch to end by itself (the sandbox it
    /// runs in went down); its exit status, `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = super::try_wait_for(timeout, || child.try_wait().ok().flatten());
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Sends SIGTERM and returns the exit status; `None` if unitwatch did not
    /// exit within [`STOP_DEADLINE`] (it is then killed).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        signal(self.target, "-TERM");
        let status = super::try_wait_for(STOP_DEADLINE, || child.try_wait().ok().flatten());
        if status.is_none() {
            signal(self.target, "-KILL");
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

/// The unitwatch under test: this build's, or `UNITWATCH_TEST_BIN` (a copy
/// kept for a long run while the tree is rebuilt).
fn binary() -> String {
    std::env::var("UNITWATCH_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_unitwatch").to_owned())
}

/// Sends `sig` (`-TERM`, `-KILL`) to process `pid`.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}
