//! A burst: every one of 1000 watched units restarted at once (one
//! `systemctl restart` of all of them, which systemd carries out within about
//! two seconds), three times. Every restart is counted, once; unitwatch's
//! memory does not keep what the bursts passed through it.
//! `UNITWATCH_BURST_UNITS` sets another size.

mod common;

use std::time::Duration;

use common::unitwatch::Unitwatch;
use common::{wait_for, Sandbox};

/// How many bursts, one after the other.
const ROUNDS: usize = 3;

fn units() -> usize {
    std::env::var("UNITWATCH_BURST_UNITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// The sum over all series of `family` whose labels contain `labels`, and how many there are.
fn sum(metrics: &str, family: &str, labels: &str) -> (f64, usize) {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .fold((0.0, 0), |(s, n), v| (s + v, n + 1))
}

/// Resident memory of a process, KiB: `(anonymous, file-backed)`. The
/// file-backed part is mostly the journal files libsystemd maps, which grow
/// with the journal and are the kernel's to reclaim.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("RssAnon:"), field("RssFile:"))
}

fn up(metrics: &str) -> (f64, usize) {
    sum(metrics, "service_up", "burst@")
}

fn manual(metrics: &str) -> f64 {
    sum(metrics, "service_restart_count_total", "trigger=\"manual\"").0
}

/// Restarts all `n` units at once (the `round`th time) and checks that each
/// restart is counted exactly once.
fn burst(sb: &Sandbox, uw: &Unitwatch, all: &str, n: usize, round: usize) {
    let out = sb.exec(&["bash", "-c", &format!("systemctl restart {all}")]);
    assert!(
        out.status.success(),
        "systemctl restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = (n * round) as f64;
    let settled = wait_for(
        &format!("{expected} manual restarts to be counted and every unit up again"),
        Duration::from_secs(60),
        || {
            let m = uw.metrics();
            (manual(&m) >= expected && up(&m) == (n as f64, n)).then_some(m)
        },
    );
    // Wait until nothing more arrives; then nothing may have been counted twice.
    let events = |m: &str| sum(m, "unitwatch_events_total", "").0;
    let mut last = events(&settled);
    let quiet = wait_for("events to stop arriving", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        let m = uw.metrics();
        let now = events(&m);
        let still = now == last;
        last = now;
        still.then_some(m)
    });
    assert_eq!(
        manual(&quiet),
        expected,
        "after {round} bursts, each of {n} units restarted {round} times by hand"
    );
    assert_eq!(
        sum(&quiet, "service_restart_count_total", "trigger=\"auto\"").0,
        0.0,
        "no automatic restarts"
    );
    assert_eq!(
        sum(&quiet, "service_failures_total", "").0,
        0.0,
        "no failures"
    );
}

#[test]
fn every_unit_restarting_at_once_is_counted_once() {
    let n = units();
    let sb = sandbox!();
    sb.write_unit(
        "burst@.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    sb.daemon_reload();
    let all = format!("burst@{{1..{n}}}.service");
    sb.exec(&["bash", "-c", &format!("systemctl start {all}")]);
    let uw = Unitwatch::start(&sb, r#"units = ["burst@*.service"]"#);
    wait_for(
        &format!("all {n} units to be watched and up"),
        Duration::from_secs(60),
        || (up(&uw.metrics()) == (n as f64, n)).then_some(()),
    );
    let pid = uw.pid().expect("unitwatch runs");
    let baseline = rss_kib(pid);
    let mut after = Vec::new();
    for round in 1..=ROUNDS {
        burst(&sb, &uw, &all, n, round);
        after.push(rss_kib(pid));
    }
    eprintln!(
        "bursts of {n} restarts: RSS (anonymous, file) {baseline:?} KiB before, {after:?} KiB after each"
    );
    // Queues drain and their memory is reused: what stays is the history the
    // bursts added, far below this bound (some 5 MiB for 3 × 1000 restarts;
    // the bound scales with `n`).
    let (anon, _) = after[after.len() - 1];
    let bound = baseline.0 + 8 * 1024 * n as u64 / 1000;
    assert!(
        anon <= bound,
        "anonymous memory {anon} KiB after {ROUNDS} bursts, {} KiB before: more than {bound} KiB",
        baseline.0
    );
}
