//! A unitwatch process under test: started with its own config and port,
//! read over HTTP, stopped with SIGTERM when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{wait_for, Sandbox};

pub struct Unitwatch {
    child: Option<Child>,
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
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[watch]\n{watch}\n[state]\ndir = \"{}\"\n[journal]\n{}\n{journal}\n",
                dir.join("state").display(),
                if journal.contains("directory") {
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
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_unitwatch"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_unitwatch")),
        };
        let child = command
            .arg("--config")
            .arg(&config)
            .arg("--web.listen-address")
            .arg(&addr)
            .env("DBUS_SYSTEM_BUS_ADDRESS", sb.bus_address())
            .env("RUST_LOG", "unitwatch=trace,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn unitwatch");
        let uw = Unitwatch {
            child: Some(child),
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
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
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

    /// Sends SIGTERM and returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status =
            super::try_wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten());
        if status.is_none() {
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
