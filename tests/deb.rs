//! The Debian package, installed for real: in a sandbox whose root is a
//! throw-away overlay, `dpkg -i` brings up the hardened `unitwatch.service`
//! (Type=notify, its own unprivileged user, reading the journal, serving
//! /metrics), and `apt-get purge` removes every trace.

mod common;

use common::shipped::package;

#[test]
fn package_installs_a_hardened_service_and_purges_clean() {
    // Skipped before looking for the package: without root it is not used.
    let sb = sandbox!();
    let deb = package();
    sb.write_unit(
        "aitbc-coordinator-api.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    sb.daemon_reload();
    sb.systemctl(&["start", "aitbc-coordinator-api.service"]);
    // Package scripts may start services here: this root is thrown away.
    sb.sh("rm -f /usr/sbin/policy-rc.d");

    sb.sh(&format!("dpkg -i {} >/dev/null", deb.display()));
    // Type=notify: active only once READY=1 came, after the first snapshot.
    assert_eq!(sb.show("unitwatch.service", "ActiveState"), "active");
    assert_eq!(sb.show("unitwatch.service", "UnitFileState"), "enabled");
    assert_eq!(
        sb.show("unitwatch.service", "StatusText"),
        "watching 1 unit"
    );
    let pid = sb.show("unitwatch.service", "MainPID");
    assert_eq!(sb.sh(&format!("ps -o user= -p {pid}")).trim(), "unitwatch");
    assert_eq!(
        sb.sh(&format!("grep ^CapEff /proc/{pid}/status")).trim(),
        "CapEff:\t0000000000000000"
    );

    let health = sb.sh("curl -sf http://127.0.0.1:9567/healthz");
    assert!(health.contains("journal: reading"), "{health}");
    let metrics = sb.sh("curl -sf http://127.0.0.1:9567/metrics");
    assert!(
        metrics.contains("service_up{unit=\"aitbc-coordinator-api.service\"} 1"),
        "{metrics}"
    );
    // SIGTERM saves the state; it is back at once under the same user.
    sb.systemctl(&["restart", "unitwatch.service"]);
    assert!(
        sb.path("/var/lib/unitwatch/state.json").exists(),
        "no state in /var/lib/unitwatch after a restart"
    );
    assert_eq!(sb.show("unitwatch.service", "ActiveState"), "active");

    let security = sb.sh("systemd-analyze security unitwatch.service --no-pager 2>&1 | tail -n 1");
    let score: f64 = security
        .split("unitwatch.service:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {security:?}"));
    assert!(score <= 1.5, "systemd-analyze security: {security}");

    let log = sb.sh("journalctl -u unitwatch.service -o cat --no-pager");
    // One start line per start, naming version, address and units; no line per scrape.
    let starts = log
        .matches(concat!(
            "unitwatch ",
            env!("CARGO_PKG_VERSION"),
            " ready on 0.0.0.0:9567, watching 1 unit"
        ))
        .count();
    assert_eq!(starts, 1 + log.matches("SIGTERM").count(), "{log}");
    assert_eq!(starts, 2, "{log}");
    assert!(log.lines().count() < 20, "{log}");

    sb.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y unitwatch >/dev/null 2>&1");
    for gone in [
        "/usr/bin/unitwatch",
        "/etc/unitwatch",
        "/var/lib/unitwatch",
        "/var/lib/private/unitwatch",
        "/usr/lib/sysusers.d/unitwatch.conf",
        "/lib/systemd/system/unitwatch.service",
        "/etc/systemd/system/multi-user.target.wants/unitwatch.service",
    ] {
        assert!(!sb.path(gone).exists(), "{gone} left behind after purge");
    }
    assert_ne!(sb.show("unitwatch.service", "ActiveState"), "active");
    let user = sb.exec(&["getent", "passwd", "unitwatch"]);
    assert!(!user.status.success(), "the unitwatch user is left behind");
}
