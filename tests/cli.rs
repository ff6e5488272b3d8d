//! The command line: check-config and check-web-config, bad configuration
//! and web configuration, options before or after the subcommand, the one
//! error format (`unitwatch: ...`, exit status 1), a busy address, and a
//! clean exit on SIGTERM. None of these need systemd or root.

mod common;

use std::path::Path;

use common::tls::{cert_dir, web_config};
use common::unitwatch::{assert_error, cli, cli_run, free_port, http_get, temp_dir, Unitwatch};

/// A config.toml in `dir` with state under `dir/state` and no backfill.
fn write_config(dir: &Path) -> String {
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[watch]\nunits = [\"aitbc-*.service\"]\n[state]\ndir = \"{}\"\n[journal]\nbackfill = \"0\"\n",
            dir.join("state").display()
        ),
    )
    .expect("write config");
    file.display().to_string()
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let out = cli()
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
    let file = file.display().to_string();
    for args in [["check-config", &file], ["--config", &file]] {
        assert_error(
            &cli_run(&args),
            &format!("unitwatch: {file}:5:10: server.listen: `nowhere` is not an address"),
        );
    }
}

#[test]
fn unreadable_config_names_the_file() {
    assert_error(
        &cli_run(&["--config", "/nonexistent/unitwatch.toml"]),
        "unitwatch: /nonexistent/unitwatch.toml: cannot read: ",
    );
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
        assert_error(&cli_run(&args), &want);
    }
    // --web.listen-address after `status` wins over the config's.
    let other = free_port();
    let out = cli()
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
        let out = cli_run(args);
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
    let out = cli()
        .args(["--config", &write_config(&temp_dir("busy"))])
        .args(["--web.listen-address", &addr])
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
    let mut uw = Unitwatch::setup(&temp_dir("sigterm")).start();
    let (status, body) = http_get(&uw.addr, "/healthz").expect("GET /healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("unavailable:"), "{body}");
    let exit = uw.stop().expect("unitwatch exits within the deadline");
    assert_eq!(exit.code(), Some(0), "log:\n{}", uw.log());
}

/// Bad web configurations: one line naming file, line, column and key,
/// exit status 1, nothing started (no state directory), at start and from
/// check-web-config alike.
#[test]
fn bad_web_config_is_one_line_and_nothing_starts() {
    let dir = cert_dir("web-bad");
    let config = write_config(&dir);
    let good_hash = bcrypt::hash("x", 4).expect("bcrypt hash");
    let cases = [
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cert_fil: x\n"
                .to_owned(),
            "4:3: tls_server_config.cert_fil: unknown field",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n   key_file: y\n".to_owned(),
            "3:12: tls_server_config: mapping values are not allowed",
        ),
        (
            "# TLS\ntls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n"
                .to_owned(),
            "3:3: tls_server_config.cert_file: ",
        ),
        (
            format!("basic_auth_users:\n  alice: '{good_hash}'\n  bob: hunter2\n"),
            "3:8: basic_auth_users.bob: not a bcrypt hash",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n".to_owned(),
            "3:3: tls_server_config.key_file: ",
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let file = dir.join(format!("web-{i}.yml"));
        std::fs::write(&file, yaml).expect("write web config");
        let file = file.display().to_string();
        let want = format!("unitwatch: {file}:{want}");
        let listen = format!("127.0.0.1:{}", free_port());
        assert_error(
            &cli_run(&[
                "--config",
                &config,
                "--web.listen-address",
                &listen,
                "--web.config.file",
                &file,
            ]),
            &want,
        );
        assert!(
            !dir.join("state").exists(),
            "{yaml}: a state directory was made: something started"
        );
        assert_error(&cli_run(&["check-web-config", &file]), &want);
    }
}

/// Named by `server.web_config` in config.toml instead: checked by
/// check-config and at start alike.
#[test]
fn a_web_config_named_by_the_config_is_checked_with_it() {
    let dir = temp_dir("web-bad-named");
    let web = dir.join("web.yml");
    let hash = bcrypt::hash("x", 4).expect("bcrypt hash");
    std::fs::write(
        &web,
        format!("basic_auth_users:\n  alice: '{hash}'\n  bob: hunter2\n"),
    )
    .expect("write web config");
    let config = dir.join("with-web.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nweb_config = \"{}\"\n[watch]\nunits = [\"a.service\"]\n[state]\ndir = \"{}\"\n",
            web.display(),
            dir.join("state").display()
        ),
    )
    .expect("write config");
    let config = config.display().to_string();
    let want = format!(
        "unitwatch: {}:3:8: basic_auth_users.bob: not a bcrypt hash",
        web.display()
    );
    let listen = format!("127.0.0.1:{}", free_port());
    for args in [
        &["check-config", &config][..],
        &["--config", &config, "--web.listen-address", &listen][..],
    ] {
        assert_error(&cli_run(args), &want);
    }
    assert!(!dir.join("state").exists(), "something started");
}

/// A certificate that is not there is named by its path resolved against
/// the web config's directory.
#[test]
fn check_web_config_names_a_missing_certificate_by_its_resolved_path() {
    let dir = cert_dir("web-missing-cert");
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
    )
    .expect("write web config");
    let out = cli_run(&["check-web-config", &web.display().to_string()]);
    assert_error(
        &out,
        &format!(
            "unitwatch: {}:2:3: tls_server_config.cert_file: ",
            web.display()
        ),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&dir.join("missing.crt").display().to_string()),
        "{err}"
    );
}

#[test]
fn check_web_config_of_a_missing_file_says_it_cannot_read_it() {
    assert_error(
        &cli_run(&["check-web-config", "/nonexistent/web.yml"]),
        "unitwatch: /nonexistent/web.yml: cannot read: ",
    );
}

#[test]
fn check_web_config_accepts_a_good_one() {
    let dir = cert_dir("web-good");
    let web = dir.join("good.yml");
    std::fs::write(&web, web_config(&dir, "", 4)).expect("write web config");
    let out = cli_run(&["check-web-config", &web.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
