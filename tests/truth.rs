//! The differential test: unitwatch against systemd's own record.
//!
//! A seeded random schedule of `start`, `stop`, `restart`, `try-restart`,
//! `reload-or-restart`, `reload` and `kill -s KILL` runs against units that
//! crash-loop, fail their watchdog, dump core, or run stably, in a real
//! systemd; unitwatch is killed (SIGKILL) at a random moment and started
//! again a random while later. Then every counter of every unit — automatic
//! and manual restarts, failures by result — and its up- and downtime are
//! compared with a reading of systemd's journal written here, apart from
//! unitwatch's mapper: restarts and failures must be exact, durations
//! within 0.5 s + 1 %. A mismatch prints the seed, a table of what differs
//! per unit, and where the unitwatch log and the journal were kept.
//!
//! CI runs the fixed [`SEEDS`]; `UNITWATCH_TRUTH_SEED=7`, `=1,5,9` or
//! `=1-50` runs others, `UNITWATCH_TRUTH_SECONDS` sets how long each
//! schedule runs (default [`SECONDS`]).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::unitwatch::{temp_dir, Unitwatch};
use common::{try_wait_for, Sandbox};

/// The seeds CI runs, one schedule of [`SECONDS`] each.
const SEEDS: [u64; 2] = [12, 1207];
const SECONDS: f64 = 20.0;
const WATCH: &str = "units = [\"aitbc-*.service\"]";
/// A first start reads the journal from before the units first started,
/// so that unitwatch's accounting of each begins at its first record, as
/// this reading does.
const BACKFILL: &str = "backfill = \"1h\"";

const STARTING: &str = "7d4958e842da4a758f6c1cdc7b36dcc5";
const STARTED: &str = "39f53479d3a045ac8e11786248231fbf";
const STOPPING: &str = "de5b426a63be47a7b6ac3eaac82e2f6f";
const STOPPED: &str = "9d1aaa27d60140bd96365438aad20286";
const RELOADING: &str = "d34d037fff1847e6ae669a370e694725";
const RELOADED: &str = "7b05ebc668384222baa8881179cfda54";
const RESTART_SCHEDULED: &str = "5eb03494b6584870a536b337290809b3";
const FAILURE_RESULT: &str = "d9b373ed55a64feb8242e02dbe79a49c";
const SUCCESS: &str = "7ad2d189f7e94e70a38c781354912448";
const LIFECYCLE: [&str; 9] = [
    STARTING,
    STARTED,
    STOPPING,
    STOPPED,
    RELOADING,
    RELOADED,
    RESTART_SCHEDULED,
    FAILURE_RESULT,
    SUCCESS,
];

/// Every unit gives up a start or stop after this, so no `systemctl` of the
/// schedule blocks for long.
const LIMITS: &str =
    "[Unit]\nStartLimitIntervalSec=0\n[Service]\nTimeoutStartSec=5s\nTimeoutStopSec=5s\n";

/// A Type=notify service that says it is ready, pets its watchdog five
/// times and then stops petting it.
const NOTIFY_THEN_HANG: &str = "import os, socket, time\n\
a = os.environ['NOTIFY_SOCKET']\n\
a = chr(0) + a[1:] if a[0] == '@' else a\n\
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
s.connect(a)\n\
s.send(b'READY=1')\n\
for _ in range(5):\n    time.sleep(0.3)\n    s.send(b'WATCHDOG=1')\n\
time.sleep(3600)\n";

/// The units, by behaviour: crash-looping, watchdog-failing, core-dumping
/// (`core` files land in the sandbox's /tmp), stable. `dumps` says whether
/// the kernel writes core files where the sandbox keeps them (a
/// `core_pattern` that pipes to a helper would run it on the host); if not,
/// those units die of the same signals without a core.
fn units(dumps: bool) -> Vec<(&'static str, String)> {
    let core = if dumps {
        "LimitCORE=infinity\nWorkingDirectory=/tmp\n"
    } else {
        "LimitCORE=0\n"
    };
    vec![
        (
            "aitbc-crash-a.service",
            format!("{LIMITS}Restart=on-failure\nRestartSec=300ms\nExecReload=/bin/true\nExecStart=/bin/sh -c 'sleep 0.7; exit 1'\n"),
        ),
        (
            "aitbc-crash-b.service",
            format!("{LIMITS}Restart=always\nRestartSec=150ms\nExecStart=/bin/sh -c 'sleep 1.3; exit 3'\n"),
        ),
        (
            "aitbc-watchdog-a.service",
            format!("{LIMITS}Restart=on-failure\nRestartSec=200ms\nWatchdogSec=1s\nExecStart=/bin/sleep infinity\n"),
        ),
        (
            "aitbc-watchdog-b.service",
            format!(
                "{LIMITS}Type=notify\nRestart=on-watchdog\nRestartSec=250ms\nWatchdogSec=800ms\n\
                 ExecStart=/usr/bin/python3 -c \"exec(open('/run/notify-then-hang.py').read())\"\n"
            ),
        ),
        (
            "aitbc-core-a.service",
            format!("{LIMITS}{core}Restart=on-failure\nRestartSec=250ms\nExecStart=/bin/sh -c 'sleep 0.9; kill -SEGV $$$$'\n"),
        ),
        (
            "aitbc-core-b.service",
            format!("{LIMITS}{core}Restart=on-abnormal\nRestartSec=400ms\nExecReload=/bin/true\nExecStart=/bin/sh -c 'sleep 1.7; kill -ABRT $$$$'\n"),
        ),
        (
            "aitbc-stable-a.service",
            format!("{LIMITS}ExecReload=/bin/true\nExecStart=/bin/sleep infinity\n"),
        ),
        (
            "aitbc-stable-b.service",
            format!("{LIMITS}Restart=on-failure\nRestartSec=100ms\nExecStart=/bin/sleep infinity\n"),
        ),
    ]
}

/// The operations of the schedule, with their weights.
const OPS: [(&[&str], u32); 7] = [
    (&["start"], 4),
    (&["stop"], 2),
    (&["restart"], 4),
    (&["try-restart"], 2),
    (&["reload-or-restart"], 2),
    (&["reload"], 2),
    (&["kill", "-s", "KILL"], 3),
];

/// xorshift64*: small, seedable, the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One step of the schedule: at `at` seconds after its start, `op` on unit
/// number `unit`.
struct Step {
    at: f64,
    unit: usize,
    op: &'static [&'static str],
}

/// What a seed decides: the steps, and when unitwatch is killed and for how long.
struct Schedule {
    steps: Vec<Step>,
    kill_at: f64,
    down_for: f64,
}

impl Schedule {
    fn new(seed: u64, seconds: f64, units: usize) -> Schedule {
        let mut rng = Rng::new(seed);
        let total: u32 = OPS.iter().map(|(_, w)| w).sum();
        let mut steps = Vec::new();
        let mut at = 0.0;
        loop {
            at += rng.range(0.05, 0.5);
            if at >= seconds {
                break;
            }
            let mut pick = (rng.next() % u64::from(total)) as u32;
            let op = OPS
                .iter()
                .find(|(_, w)| {
                    let hit = pick < *w;
                    pick = pick.saturating_sub(*w);
                    hit
                })
                .map_or(OPS[0].0, |(op, _)| *op);
            steps.push(Step {
                at,
                unit: rng.below(units),
                op,
            });
        }
        Schedule {
            steps,
            kill_at: rng.range(0.3, 0.7) * seconds,
            down_for: rng.range(0.2, 3.0),
        }
    }
}

/// `CLOCK_MONOTONIC` in microseconds, the clock of the journal's
/// `__MONOTONIC_TIMESTAMP` (the sandbox shares the host's kernel and boot).
/// Durations are read on it: the wall clock may be set meanwhile (another
/// test sets it), and unitwatch's durations do not move with it either.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// One unit's counters and durations.
#[derive(Debug, Default, Clone, PartialEq)]
struct Counts {
    auto: u64,
    manual: u64,
    failures: BTreeMap<String, u64>,
    up: f64,
    down: f64,
}

/// What systemd's journal says about one unit, read record by record.
#[derive(Default)]
struct Reading {
    counts: Counts,
    /// Time of the unit's last record, and whether it left the unit up.
    last: Option<(u64, bool)>,
    /// The job whose "Stopping…" came last, and whether the unit was up
    /// right before it.
    stopping: Option<(Option<String>, bool)>,
}

impl Reading {
    /// Takes in one record (`fields` of `journalctl -o json`).
    fn record(&mut self, fields: &serde_json::Map<String, serde_json::Value>) {
        let get = |k: &str| fields.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let Some(t) = get("__MONOTONIC_TIMESTAMP").and_then(|t| t.parse::<u64>().ok()) else {
            return;
        };
        let id = get("MESSAGE_ID").unwrap_or_default();
        let was_up = self.last.is_some_and(|(_, up)| up);
        self.advance(t);
        let c = &mut self.counts;
        // Up while active or reloading: after "Started", "Reloading…" and
        // "Reloaded"; every other lifecycle record leaves the unit down.
        let up = matches!(id.as_str(), STARTED | RELOADING | RELOADED);
        match id.as_str() {
            STOPPING => self.stopping = Some((get("JOB_ID"), was_up)),
            STOPPED => {
                // A restart job took the unit down from up: its stop did
                // something ("Stopping…" of the same job) while it was up.
                let restart = get("JOB_TYPE").as_deref() == Some("restart");
                let stopped_up = self.stopping.take() == Some((get("JOB_ID"), true));
                if restart && stopped_up {
                    c.manual += 1;
                }
            }
            RESTART_SCHEDULED => c.auto += 1,
            FAILURE_RESULT => {
                let result = get("UNIT_RESULT").unwrap_or_else(|| "unknown".into());
                *c.failures.entry(result).or_insert(0) += 1;
            }
            _ => {}
        }
        self.last = Some((t, up));
    }

    /// Adds the time since the last record to up or down.
    fn advance(&mut self, t: u64) {
        if let Some((last, up)) = self.last {
            let dt = t.saturating_sub(last) as f64 / 1e6;
            if up {
                self.counts.up += dt;
            } else {
                self.counts.down += dt;
            }
        }
    }

    /// The counts as of `now`.
    fn at(mut self, now: u64) -> Counts {
        self.advance(now);
        self.counts
    }
}

/// Reads every lifecycle record of the `aitbc-*` units, as of `now`.
fn read_journal(sb: &Sandbox, now: u64) -> (BTreeMap<String, Counts>, String) {
    let mut command = vec![
        "journalctl".to_owned(),
        "-o".into(),
        "json".into(),
        "--output-fields=UNIT,MESSAGE_ID,JOB_ID,JOB_TYPE,UNIT_RESULT,N_RESTARTS,INVOCATION_ID"
            .into(),
    ];
    command.extend(LIFECYCLE.iter().map(|id| format!("MESSAGE_ID={id}")));
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let out = sb.exec(&args);
    assert!(out.status.success(), "journalctl -o json failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut readings: BTreeMap<String, Reading> = BTreeMap::new();
    for line in text.lines() {
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(line) else {
            continue;
        };
        let Some(unit) = fields.get("UNIT").and_then(|u| u.as_str()) else {
            continue;
        };
        if !unit.starts_with("aitbc-") {
            continue;
        }
        readings.entry(unit.to_owned()).or_default().record(&fields);
    }
    let counts = readings.into_iter().map(|(u, r)| (u, r.at(now))).collect();
    (counts, text)
}

/// unitwatch's counters of every `aitbc-*` unit in `metrics`.
fn parse_metrics(metrics: &str) -> BTreeMap<String, Counts> {
    let mut units: BTreeMap<String, Counts> = BTreeMap::new();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((family, labels)) = series.split_once('{') else {
            continue;
        };
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            let len = labels[start..].find('"')?;
            Some(labels[start..start + len].to_owned())
        };
        let Some(unit) = label("unit").filter(|u| u.starts_with("aitbc-")) else {
            continue;
        };
        let c = units.entry(unit).or_default();
        match family {
            "service_uptime_seconds_total" => c.up = value,
            "service_downtime_seconds_total" => c.down = value,
            "service_restart_count_total" => match label("trigger").as_deref() {
                Some("auto") => c.auto = value as u64,
                Some("manual") => c.manual = value as u64,
                _ => {}
            },
            "service_failures_total" => {
                if let Some(result) = label("result") {
                    c.failures.insert(result, value as u64);
                }
            }
            _ => {}
        }
    }
    units
}

/// Restarts and failures of every unit (durations left out), to tell when
/// unitwatch has settled.
fn tallies(units: &BTreeMap<String, Counts>) -> BTreeMap<String, Counts> {
    units
        .iter()
        .map(|(u, c)| {
            let counts = Counts {
                up: 0.0,
                down: 0.0,
                ..c.clone()
            };
            (u.clone(), counts)
        })
        .collect()
}

/// Whether unitwatch's `got` of a duration is within 0.5 s + 1 % of `want`.
fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 0.5 + 0.01 * want
}

/// The differences between unitwatch's counts and the journal's, as table rows.
fn differences(ours: &BTreeMap<String, Counts>, truth: &BTreeMap<String, Counts>) -> Vec<String> {
    let mut rows = Vec::new();
    let empty = Counts::default();
    let names: std::collections::BTreeSet<&String> = ours.keys().chain(truth.keys()).collect();
    for unit in names {
        let (o, t) = (
            ours.get(unit).unwrap_or(&empty),
            truth.get(unit).unwrap_or(&empty),
        );
        let mut row = |what: &str, got: String, want: String| {
            rows.push(format!("{unit:<26} {what:<20} {got:>12} {want:>12}"));
        };
        if o.auto != t.auto {
            row("restarts auto", o.auto.to_string(), t.auto.to_string());
        }
        if o.manual != t.manual {
            row(
                "restarts manual",
                o.manual.to_string(),
                t.manual.to_string(),
            );
        }
        let results: std::collections::BTreeSet<&String> =
            o.failures.keys().chain(t.failures.keys()).collect();
        for r in results {
            let (got, want) = (
                o.failures.get(r).copied().unwrap_or(0),
                t.failures.get(r).copied().unwrap_or(0),
            );
            if got != want {
                row(&format!("failures {r}"), got.to_string(), want.to_string());
            }
        }
        if !close(o.up, t.up) {
            row("uptime s", format!("{:.3}", o.up), format!("{:.3}", t.up));
        }
        if !close(o.down, t.down) {
            row(
                "downtime s",
                format!("{:.3}", o.down),
                format!("{:.3}", t.down),
            );
        }
    }
    rows
}

fn artifacts(seed: u64) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/artifacts")
        .join(format!("truth-{seed}"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Runs the schedule of `seed` for `seconds`; `Err` with a report on a mismatch.
fn run(seed: u64, seconds: f64) -> Result<String, String> {
    let began = Instant::now();
    // Root was checked by the test.
    let sb = Sandbox::boot_or_skip(module_path!()).ok_or("no sandbox: not root")?;
    let dumps = std::fs::read_to_string("/proc/sys/kernel/core_pattern")
        .is_ok_and(|p| !p.trim_start().starts_with('|'));
    let units = units(dumps);
    std::fs::write(sb.path("/run/notify-then-hang.py"), NOTIFY_THEN_HANG).expect("write script");
    for (name, text) in &units {
        sb.write_unit(name, text);
    }
    sb.daemon_reload();
    let names: Vec<&str> = units.iter().map(|(n, _)| *n).collect();
    let mut start = vec!["start"];
    start.extend(&names);
    sb.systemctl(&start);

    let schedule = Schedule::new(seed, seconds, names.len());
    let dir = temp_dir(&format!("truth-{seed}"));
    let mut uw = Some(Unitwatch::launch(&sb, WATCH, BACKFILL, &dir));
    let t0 = Instant::now();
    let (mut killed_at, mut ops) = (None::<Instant>, 0);
    for step in &schedule.steps {
        // Paced by the schedule; nothing here waits for an outcome.
        let due = t0 + Duration::from_secs_f64(step.at);
        loop {
            let now = Instant::now();
            if killed_at.is_none() && now >= t0 + Duration::from_secs_f64(schedule.kill_at) {
                if let Some(mut u) = uw.take() {
                    u.kill9();
                }
                killed_at = Some(now);
            }
            if let Some(k) = killed_at {
                if uw.is_none() && now >= k + Duration::from_secs_f64(schedule.down_for) {
                    uw = Some(Unitwatch::launch(&sb, WATCH, BACKFILL, &dir));
                }
            }
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(20)));
        }
        let mut args = vec!["timeout", "10", "systemctl"];
        args.extend(step.op.iter());
        args.push(names[step.unit]);
        sb.exec(&args);
        ops += 1;
    }
    let uw = match uw {
        Some(u) => u,
        None => Unitwatch::launch(&sb, WATCH, BACKFILL, &dir),
    };
    let mut stop = vec!["stop"];
    stop.extend(&names);
    sb.systemctl(&stop);

    // Settled: every unit down, and no counter moving for a second.
    let mut last = BTreeMap::new();
    let mut steady_since = Instant::now();
    let settled = try_wait_for(Duration::from_secs(30), || {
        let metrics = parse_metrics(&uw.metrics());
        let now = tallies(&metrics);
        if now != last {
            last = now;
            steady_since = Instant::now();
            return None;
        }
        let down = uw
            .metrics()
            .lines()
            .all(|l| !(l.starts_with("service_up{unit=\"aitbc-") && l.ends_with(" 1")));
        (down && steady_since.elapsed() >= Duration::from_secs(1)).then_some(())
    });
    let before = monotonic_usec();
    let metrics = uw.metrics();
    let after = monotonic_usec();
    let ours = parse_metrics(&metrics);
    let (truth, journal) = read_journal(&sb, before + (after - before) / 2);
    let rows = differences(&ours, &truth);
    let summary = format!(
        "seed {seed}: {ops} operations in {seconds} s on {} units, unitwatch killed at {:.1} s for {:.1} s; \
         {} restarts (auto), {} restarts (manual), {} failures; {:.0} s in all",
        names.len(),
        schedule.kill_at,
        schedule.down_for,
        truth.values().map(|c| c.auto).sum::<u64>(),
        truth.values().map(|c| c.manual).sum::<u64>(),
        truth.values().flat_map(|c| c.failures.values()).sum::<u64>(),
        began.elapsed().as_secs_f64(),
    );
    if rows.is_empty() && settled.is_some() && truth.len() == names.len() {
        return Ok(summary);
    }
    let kept = artifacts(seed);
    let _ = std::fs::write(kept.join("journal.json"), &journal);
    let _ = std::fs::write(kept.join("metrics.txt"), &metrics);
    let _ = std::fs::copy(dir.join("unitwatch.log"), kept.join("unitwatch.log"));
    let mut report = format!("{summary}\n");
    if settled.is_none() {
        report.push_str("unitwatch's counters did not settle within 30 s\n");
    }
    let _ = writeln!(
        report,
        "{:<26} {:<20} {:>12} {:>12}",
        "unit", "what", "unitwatch", "journal"
    );
    for row in rows {
        let _ = writeln!(report, "{row}");
    }
    let _ = writeln!(
        report,
        "journal, metrics and unitwatch's log kept in {}; UNITWATCH_TRUTH_SEED={seed} runs it again",
        kept.display()
    );
    Err(report)
}

/// The seeds to run: UNITWATCH_TRUTH_SEED (`7`, `1,5,9`, `1-50`) or [`SEEDS`].
fn seeds() -> Vec<u64> {
    let Ok(spec) = std::env::var("UNITWATCH_TRUTH_SEED") else {
        return SEEDS.to_vec();
    };
    spec.split(',')
        .flat_map(|part| match part.trim().split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (
                    a.trim().parse().expect("UNITWATCH_TRUTH_SEED: a number"),
                    b.trim().parse().expect("UNITWATCH_TRUTH_SEED: a number"),
                );
                (a..=b).collect::<Vec<_>>()
            }
            None => vec![part.trim().parse().expect("UNITWATCH_TRUTH_SEED: a number")],
        })
        .collect()
}

#[test]
fn every_counter_matches_systemds_journal() {
    require_root!("to boot systemd in namespaces");
    let seconds = std::env::var("UNITWATCH_TRUTH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SECONDS);
    let mut failed = Vec::new();
    for seed in seeds() {
        // A seed that panics (a sandbox that does not boot, a wait that
        // times out) is reported with the others; the rest still run.
        let outcome = std::panic::catch_unwind(|| run(seed, seconds)).unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(format!("seed {seed}: panicked: {why}"))
        });
        match outcome {
            Ok(summary) => eprintln!("{summary}"),
            Err(report) => {
                eprintln!("{report}");
                failed.push(report);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "unitwatch disagrees with systemd's journal:\n{}",
        failed.join("\n")
    );
}
