//! The whole server in this process, as `main` runs it but given its
//! listener and shutdown signal by the test: on a runtime of its own, in a
//! directory of its own (config, state, log), reached over loopback. Without
//! a sandbox it follows a bus that does not exist and an empty journal
//! directory, so it runs as any user; with one ([`Setup::sandbox`]) it
//! follows that systemd. Its log (`unitwatch=debug`) goes to `unitwatch.log`
//! in its directory.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use tokio::net::TcpListener;
use unitwatch::config::Config;
use unitwatch::http::web_config::WebConfig;
use unitwatch::shutdown::{self, Trigger};
use unitwatch::source::dbus::Bus;

use super::unitwatch::{http_get, value};
use super::{try_wait_for, wait_for, Sandbox};

/// How long `server::run` may take to return once shut down: its own bound
/// for the last save (5 s) and some.
pub const STOP_BOUND: Duration = Duration::from_secs(10);

/// What to start: see [`Server::setup`].
pub struct Setup {
    dir: PathBuf,
    watch: String,
    journal: String,
    web: Option<String>,
    bus: Option<String>,
    journal_dir: Option<PathBuf>,
    cgroup_root: Option<PathBuf>,
}

/// A running server; shut down (bounded) when dropped.
pub struct Server {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its directory: `config.toml`, `web.yml` (if any), `state/`,
    /// `unitwatch.log`.
    pub dir: PathBuf,
    trigger: Option<Trigger>,
    done: Receiver<anyhow::Result<()>>,
}

impl Setup {
    /// The `[watch]` table's body (default: every service).
    pub fn watch(mut self, body: &str) -> Setup {
        body.clone_into(&mut self.watch);
        self
    }

    /// Extra `[journal]` lines.
    pub fn journal(mut self, lines: &str) -> Setup {
        lines.clone_into(&mut self.journal);
        self
    }

    /// The web configuration: `yaml` is written to `web.yml` in the
    /// server's directory (relative paths in it are taken from there) and
    /// loaded as `--web.config.file` would be.
    pub fn web(mut self, yaml: &str) -> Setup {
        self.web = Some(yaml.to_owned());
        self
    }

    /// Follows `sb`'s systemd (its bus and journal) instead of none.
    pub fn sandbox(mut self, sb: &Sandbox) -> Setup {
        self.bus = Some(sb.bus_address());
        self.journal_dir = Some(sb.path("/run/log/journal"));
        self.cgroup_root = Some(sb.path("/sys/fs/cgroup"));
        self
    }

    /// Starts it. With a sandbox and plain HTTP, waits until `/healthz`
    /// says it is connected; otherwise it answers as soon as this returns
    /// (the listener is bound before).
    pub fn start(self) -> Server {
        init_logging();
        let dir = self.dir;
        let journal_dir = self.journal_dir.unwrap_or_else(|| dir.join("journal"));
        std::fs::create_dir_all(&journal_dir).expect("journal dir");
        let config_file = dir.join("config.toml");
        std::fs::write(
            &config_file,
            format!(
                "[watch]\n{}\n[state]\ndir = \"{}\"\n[journal]\ndirectory = \"{}\"\n{}\n{}",
                self.watch,
                dir.join("state").display(),
                journal_dir.display(),
                self.journal,
                self.cgroup_root
                    .as_ref()
                    .map(|c| format!("[resources]\ncgroup_root = \"{}\"\n", c.display()))
                    .unwrap_or_default(),
            ),
        )
        .expect("write config");
        let config = Config::load(&config_file).expect("config");
        let web = match &self.web {
            Some(yaml) => {
                let file = dir.join("web.yml");
                std::fs::write(&file, yaml).expect("write web config");
                WebConfig::load(&file).unwrap_or_else(|e| panic!("web config: {e}"))
            }
            None => WebConfig::default(),
        };
        let connected = self.bus.is_some() && self.web.is_none();
        let bus = Bus::Address(
            self.bus
                .unwrap_or_else(|| format!("unix:path={}", dir.join("no-bus").display())),
        );

        let log = Arc::new(Mutex::new(
            File::create(dir.join("unitwatch.log")).expect("log file"),
        ));
        let runtime_log = log.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || route_log(runtime_log.clone()))
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("local address").to_string();
        let (trigger, shutdown) = shutdown::channel();
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            // block_on runs the server's own future on this thread.
            route_log(log);
            let result =
                runtime.block_on(unitwatch::server::run(config, listener, web, bus, shutdown));
            let _ = tx.send(result);
            runtime.shutdown_timeout(STOP_BOUND);
        });
        let server = Server {
            addr,
            dir,
            trigger: Some(trigger),
            done,
        };
        if connected {
            wait_for(
                &format!("/healthz to answer 200; log:\n{}", server.log_path()),
                Duration::from_secs(20),
                || matches!(http_get(&server.addr, "/healthz"), Ok((200, _))).then_some(()),
            );
        }
        server
    }
}

impl Server {
    /// Everything left as is: in `dir`, every service watched, no bus, an
    /// empty journal, plain HTTP.
    pub fn setup(dir: &Path) -> Setup {
        Setup {
            dir: dir.to_owned(),
            watch: "units = [\"*.service\"]".to_owned(),
            journal: String::new(),
            web: None,
            bus: None,
            journal_dir: None,
            cgroup_root: None,
        }
    }

    /// [`Server::setup`] started as it is.
    pub fn start(dir: &Path) -> Server {
        Server::setup(dir).start()
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

    /// The web configuration file, if [`Setup::web`] gave one.
    pub fn web_file(&self) -> PathBuf {
        self.dir.join("web.yml")
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state").join("state.json")
    }

    pub fn log_path(&self) -> String {
        self.dir.join("unitwatch.log").display().to_string()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("unitwatch.log")).unwrap_or_default()
    }

    /// A plain HTTP GET, waiting (bounded) for an answer; (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        wait_for(
            &format!("GET {path} to answer; log:\n{}", self.log_path()),
            Duration::from_secs(10),
            || http_get(&self.addr, path).ok(),
        )
    }

    /// The body of `/metrics`.
    pub fn metrics(&self) -> String {
        match self.get("/metrics") {
            (200, body) => body,
            other => panic!("GET /metrics: {other:?}\nlog:\n{}", self.log()),
        }
    }

    /// Waits until `series` has a value for which `ok` holds; returns it.
    pub fn wait_value(&self, series: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let mut last = None;
        try_wait_for(timeout, || {
            last = value(&self.metrics(), series);
            last.filter(|v| ok(*v))
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting on {series}; last value {last:?}\nmetrics:\n{}\nlog:\n{}",
                self.metrics(),
                self.log()
            )
        })
    }

    /// Fires the shutdown signal; what `server::run` returned, which it
    /// must within [`STOP_BOUND`].
    pub fn stop(&mut self) -> anyhow::Result<()> {
        match self.shut_down() {
            Some(result) => result,
            None => panic!(
                "server::run did not return within {STOP_BOUND:?} of the shutdown signal; log:\n{}",
                self.log()
            ),
        }
    }

    fn shut_down(&mut self) -> Option<anyhow::Result<()>> {
        self.trigger.take()?.fire();
        self.done.recv_timeout(STOP_BOUND).ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // No panic here: the test may be unwinding already.
        let _ = self.shut_down();
    }
}

thread_local! {
    /// The log of the server whose runtime this thread belongs to.
    static LOG: RefCell<Option<Arc<Mutex<File>>>> = const { RefCell::new(None) };
}

/// Sends what this thread logs to `log`.
fn route_log(log: Arc<Mutex<File>>) {
    LOG.with(|l| *l.borrow_mut() = Some(log));
}

/// Writes to the log of the thread's server; drops what other threads log.
struct Routed;

impl Write for Routed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.with(|l| match &*l.borrow() {
            Some(file) => match file.lock() {
                Ok(mut f) => f.write_all(buf),
                Err(_) => Ok(()),
            },
            None => Ok(()),
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One subscriber for the whole test process, set once: each event is
/// written by the thread that emits it, which [`Routed`] maps to its
/// server's log. (A subscriber per thread, set as the thread's default,
/// misses events: callsite interest is cached process-wide.)
fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("unitwatch=debug,info"))
            .with_ansi(false)
            .with_writer(|| Routed)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}
