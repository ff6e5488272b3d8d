//! The command line: check-config, bad configuration, options before or
//! after the subcommand, the one error format (`unitwatch: ...`, exit status
//! 1), a busy address, and a clean exit on SIGTERM. None of these need systemd.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::unitwatch::{free_port, http_get, temp_dir, STOP_DEADLINE};
use common::wait_for;

fn unitwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_unitwatch"))
}

/// A config of its own, with state in a temporary directory.
fn config(tag: &str) -> String {
    let dir = temp_dir(tag);
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[watch]\nunits = [\"aitbc-*.service\"]\n[state]\ndir = \"{}\"\n",
            dir.join("state").display()
        ),
    )
    .expect("write config");
    file.display().to_string()
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let out = unitwatch()
        .args([
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .output()
        .expect("run unitwatch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_config_is_one_line_naming_file_line_and_key() {
    let dir = temp_dir("cli");
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        "[watch]\nunits = [\"a.service\"]\n\n[server]\nlisten = \"nowhere\"\n",
    )
    .expect("write config");
    for args in [
        vec!["check-config".to_owned(), file.display().to_string()],
        vec!["--config".to_owned(), file.display().to_string()],
    ] {
        let out = unitwatch().args(&args).output().expect("run unitwatch");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with(&format!(
                "unitwatch: {}:5:10: server.listen: `nowhere` is not an address",
                file.display()
            )),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn unreadable_config_names_the_file() {
    let out = unitwatch()
        .args(["--config", "/nonexistent/unitwatch.toml"])
        .output()
        .expect("run unitwatch");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("unitwatch: /nonexistent/unitwatch.toml: cannot read: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `status` finds the daemon through --config given after the subcommand as
/// well as before it: the address it asks is the config's server.listen.
#[test]
fn status_options_go_before_or_after_the_subcommand() {
    let dir = temp_dir("cli-status");
    let file = dir.join("config.toml");
    let port = free_port();
    std::fs::write(
        &file,
        format!("[server]\nlisten = \"0.0.0.0:{port}\"\n[watch]\nunits = [\"a.service\"]\n"),
    )
    .expect("write config");
    let file = file.display().to_string();
    let want = format!("unitwatch: no unitwatch answers at 127.0.0.1:{port}: connection refused");
    for args in [["status", "--config", &file], ["--config", &file, "status"]] {
        let out = unitwatch().args(args).output().expect("run unitwatch");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(&want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // --web.listen-address after `status` wins over the config's.
    let other = free_port();
    let out = unitwatch()
        .args(["--config", &file, "status"])
        .args(["--web.listen-address", &format!("127.0.0.1:{other}")])
        .output()
        .expect("run unitwatch");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "unitwatch: no unitwatch answers at 127.0.0.1:{other}:"
        )),
        "{err}"
    );
}

/// Options that do not apply to a subcommand are usage errors (exit 2),
/// wherever they are written.
#[test]
fn options_a_subcommand_does_not_take_are_refused() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    for args in [
        &["--config", shipped, "check-config", shipped][..],
        &["check-config", "--config", shipped, shipped][..],
        &[
            "--web.config.file",
            "/dev/null",
            "check-web-config",
            "/dev/null",
        ][..],
        &["--user", "status"][..],
        &["status", "--user", "alice"][..],
        &["status", "--password", "x"][..],
    ] {
        let out = unitwatch().args(args).output().expect("run unitwatch");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn busy_listen_address_fails_before_starting() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let out = unitwatch()
        .args(["--config", &config("busy")])
        .args(["--web.listen-address", &addr])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .expect("run unitwatch");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

/// Without a bus, /healthz says why (503) and SIGTERM still ends it with 0
/// within the deadline.
#[test]
fn sigterm_exits_zero_and_healthz_reports_no_bus() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = unitwatch()
        .args(["--config", &config("sigterm")])
        .args(["--web.listen-address", &addr])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let (status, body) = wait_for("/healthz to answer", Duration::from_secs(10), || {
        http_get(&addr, "/healthz").ok()
    });
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("unavailable:"), "{body}");
    let (status, body) = http_get(&addr, "/").expect("GET /");
    assert_eq!(status, 200);
    assert!(body.contains("href=\"metrics\""), "{body}");
    let (status, _) = http_get(&addr, "/nope").expect("GET /nope");
    assert_eq!(status, 404);
    // Only GET and HEAD.
    for (method, want) in [("POST", 405), ("DELETE", 405), ("HEAD", 200)] {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        write!(s, "{method} /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n").expect("send");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(
            reply.starts_with(&format!("HTTP/1.0 {want}")),
            "{method}: {reply}"
        );
    }

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let exit = wait_for("unitwatch to exit", STOP_DEADLINE, || {
        child.try_wait().ok().flatten()
    });
    assert_eq!(exit.code(), Some(0));
}
