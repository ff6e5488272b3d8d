//! The whole server in-process, as any user and without systemd: it is
//! given its listener and its shutdown signal, as `main` would give them,
//! and reached over loopback. What needs a real systemd is in the other
//! test files.

mod common;

use std::path::Path;
use std::time::Duration;

use common::unitwatch::{temp_dir, value};
use tokio::net::TcpListener;
use unitwatch::config::Config;
use unitwatch::http::web_config::WebConfig;
use unitwatch::shutdown::{self, Trigger};
use unitwatch::source::dbus::Bus;

/// A state as the first release wrote it: one unit, restarted twice by
/// systemd and once by hand, failed once.
const SAVED: &str = r#"{"version":1,"saved_at":1700000100000000,"boot_id":"b","journal_cursor":null,"journal_from":1700000100000000,"ledger":{"units":{"a.service":{"seen_at":1700000000000000,"fold_at":1700000000000000,"fold_state":"active","up_usec":0,"down_usec":0,"points":{"1700000050000000":"failed"},"sub_state":"failed","n_restarts":{"high":2,"high_at":1700000050000000,"epoch_at":0,"previous_high":null},"restarts":[2,1],"failures":{"exit-code":1},"last_failure_at":1700000050000000,"failed_invocations":["x"],"restarted_invocations":[],"loaded":true}}}}"#;

/// A server running on a runtime of its own.
struct Server {
    addr: String,
    trigger: Option<Trigger>,
    done: std::sync::mpsc::Receiver<anyhow::Result<()>>,
    dir: std::path::PathBuf,
}

/// Starts the server in `dir` with no reachable bus and an empty journal.
fn start(dir: &Path) -> Server {
    std::fs::create_dir_all(dir.join("journal")).expect("journal dir");
    let config_file = dir.join("config.toml");
    std::fs::write(
        &config_file,
        format!(
            "[watch]\nunits = [\"*.service\"]\n[state]\ndir = \"{}\"\n[journal]\ndirectory = \"{}\"\n",
            dir.join("state").display(),
            dir.join("journal").display()
        ),
    )
    .expect("write config");
    let config = Config::load(&config_file).expect("config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("local address").to_string();
    let (trigger, shutdown) = shutdown::channel();
    let bus = Bus::Address(format!("unix:path={}", dir.join("no-bus").display()));
    let (tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = runtime.block_on(unitwatch::server::run(
            config,
            listener,
            WebConfig::default(),
            bus,
            shutdown,
        ));
        let _ = tx.send(result);
    });
    Server {
        addr,
        trigger: Some(trigger),
        done,
        dir: dir.to_owned(),
    }
}

impl Server {
    fn get(&self, path: &str) -> (u16, String) {
        common::wait_for(
            &format!("GET {path} to answer"),
            Duration::from_secs(10),
            || common::unitwatch::http_get(&self.addr, path).ok(),
        )
    }

    /// Fires the shutdown signal; the server's result once it returned.
    fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        self.done
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("the server did not return; dir {}", self.dir.display()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.trigger.is_some() {
            let _ = self.stop();
        }
    }
}

#[test]
fn without_a_bus_it_serves_and_says_why_it_is_not_healthy() {
    let s = start(&temp_dir("inproc-nobus"));
    let (status, body) = s.get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    let (status, body) = s.get("/metrics");
    assert_eq!(status, 200, "{body}");
    assert_eq!(value(&body, "unitwatch_dbus_up"), Some(0.0), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
}

#[test]
fn a_saved_state_is_served_from_the_start() {
    let dir = temp_dir("inproc-saved");
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    std::fs::write(dir.join("state").join("state.json"), SAVED).expect("write state");
    let s = start(&dir);
    let (_, body) = s.get("/metrics");
    assert_eq!(
        value(
            &body,
            r#"service_restart_count_total{unit="a.service",trigger="auto"}"#
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            r#"service_failures_total{unit="a.service",result="exit-code"}"#
        ),
        Some(1.0),
        "{body}"
    );
    let (status, body) = s.get("/api/v1/units/a.service");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state":"failed""#), "{body}");
    let (status, _) = s.get("/api/v1/units/b.service");
    assert_eq!(status, 404);
}

#[test]
fn the_shutdown_signal_ends_the_server_and_saves_the_state() {
    let dir = temp_dir("inproc-stop");
    let mut s = start(&dir);
    s.get("/metrics");
    s.stop().expect("the server returns Ok");
    assert!(
        dir.join("state").join("state.json").exists(),
        "state saved at shutdown"
    );
    assert!(
        common::unitwatch::http_get(&s.addr, "/metrics").is_err(),
        "nothing listens after shutdown"
    );
}

#[test]
fn the_status_page_lists_the_saved_units() {
    let dir = temp_dir("inproc-page");
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    std::fs::write(dir.join("state").join("state.json"), SAVED).expect("write state");
    let s = start(&dir);
    let (status, html) = s.get("/");
    assert_eq!(status, 200);
    assert!(html.contains("<td class=\"unit\">a.service</td>"), "{html}");
    assert!(html.contains("0 of 1 up"), "{html}");
}
