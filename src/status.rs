//! `unitwatch status`: asks a running unitwatch for `/api/v1/units` (with
//! [`client`]: HTTP or HTTPS, basic auth) and prints a `systemctl`-like
//! table of the services (unit — with its user, for a user manager's —,
//! state, since, availability over 24 h and
//! 30 d, restarts in 24 h), then one of the jobs (last run, its result and
//! duration, next run, success over 24 h and 30 d); coloured on a
//! terminal, plain when piped or with `NO_COLOR`, the daemon's JSON as is
//! with `--json`.

pub mod client;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

pub use self::client::{get, Credentials, StatusError, Target, Trust};
use crate::render::api::{JobRun, Unit, Units};
use crate::render::human;
use crate::render::page::class;

/// The address to ask: a listen address of `0.0.0.0` or `::` is asked on loopback.
pub fn local(listen: SocketAddr) -> SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// The tables `unitwatch status` prints: the services, then the jobs (if
/// any), then a summary line.
pub fn table(units: &Units, colour: bool) -> String {
    let (jobs, services): (Vec<&Unit>, Vec<&Unit>) = units.units.iter().partition(|u| u.is_job());
    let paint = |code: &'static str| colour.then_some(code);
    let header = [
        "UNIT",
        "STATE",
        "SINCE",
        "AVAIL 24H",
        "AVAIL 30D",
        "RESTARTS 24H",
        "CPU",
        "MEMORY",
    ];
    let rows: Vec<_> = services
        .iter()
        .map(|u| {
            let availability = u.availability.clone().unwrap_or_default();
            let cells = [
                named(u),
                format!("{} ({})", u.state, u.sub_state),
                format!(
                    "{} UTC, {} ago",
                    human::utc(u.since),
                    human::duration(u.run_seconds)
                ),
                human::percent(availability.h24),
                human::percent(availability.d30),
                (u.restarts_24h.auto + u.restarts_24h.manual).to_string(),
                human::cores(u.resources.as_ref().and_then(|r| r.cpu_cores)),
                human::bytes(u.resources.as_ref().and_then(|r| r.memory_bytes)),
            ];
            let code = match class(&u.state) {
                "up" => "32",
                "down" => "31",
                "change" => "33",
                _ => "90",
            };
            (cells, paint(code))
        })
        .collect();
    let mut out = host_line(units);
    out.push_str(&aligned(header, &rows, 1));
    if !jobs.is_empty() {
        out.push('\n');
        out.push_str(&jobs_table(&jobs, units.now, colour));
    }
    let up = services.iter().filter(|u| u.up).count();
    let failed = jobs
        .iter()
        .filter(|u| last_run(u).is_some_and(|r| !r.succeeded()))
        .count();
    let jobs_line = match jobs.len() {
        0 => String::new(),
        n => format!(", {failed} of {n} jobs failed their last run"),
    };
    out.push_str(&format!(
        "\n{up} of {} services up{jobs_line}, as of {} UTC.\n",
        services.len(),
        human::utc(units.now)
    ));
    out
}

/// The service manager's state, when unitwatch has read it: a line above
/// the tables.
fn host_line(units: &Units) -> String {
    let Some(h) = &units.host else {
        return String::new();
    };
    let mut line = format!("systemd {}: {}", h.version, h.system_state);
    if let Some(counts) = &h.units {
        line.push_str(", ");
        line.push_str(&human::unit_counts(counts));
    }
    line + "\n\n"
}

/// A unit's name, and the user whose manager it is of in parentheses.
fn named(u: &Unit) -> String {
    match &u.user {
        Some(user) => format!("{} ({user})", u.unit),
        None => u.unit.clone(),
    }
}

fn last_run(u: &Unit) -> Option<&JobRun> {
    u.job.as_ref().and_then(|j| j.last_run.as_ref())
}

/// The jobs' table: last run (when it ended), its result and how long it
/// took, the next run (or the run in progress), success over 24 h and 30 d.
fn jobs_table(jobs: &[&Unit], now: f64, colour: bool) -> String {
    let header = [
        "JOB",
        "LAST RUN",
        "RESULT",
        "TOOK",
        "NEXT RUN",
        "SUCCESS 24H",
        "SUCCESS 30D",
    ];
    let rows: Vec<_> = jobs
        .iter()
        .map(|u| {
            let job = u.job.as_ref();
            let last = last_run(u);
            let next = match job {
                Some(j) if j.running => match j.running_since {
                    Some(since) => format!("running, for {}", human::duration(now - since)),
                    None => "running".to_owned(),
                },
                _ => match job.and_then(|j| j.timer.as_ref()).and_then(|t| t.next_run) {
                    Some(at) => format!("{} UTC, {}", human::utc(at), human::relative(at, now)),
                    None => "-".to_owned(),
                },
            };
            let rate = job.map(|j| j.success_rate.clone()).unwrap_or_default();
            let cells = [
                named(u),
                last.map_or_else(
                    || "never".to_owned(),
                    |r| format!("{} UTC, {}", human::utc(r.end), human::relative(r.end, now)),
                ),
                last.map_or_else(|| "-".to_owned(), |r| r.result.clone()),
                last.and_then(|r| r.duration_seconds)
                    .map_or_else(|| "-".to_owned(), human::run_time),
                next,
                human::percent(rate.h24),
                human::percent(rate.d30),
            ];
            let code = match last {
                Some(r) if r.succeeded() => "32",
                Some(_) => "31",
                None => "90",
            };
            (cells, colour.then_some(code))
        })
        .collect();
    aligned(header, &rows, 2)
}

/// `header` and `rows` in columns as wide as their widest cell, two spaces
/// apart; the cell in column `painted` of a row given an ANSI colour code
/// is drawn in it.
fn aligned<const N: usize>(
    header: [&str; N],
    rows: &[([String; N], Option<&str>)],
    painted: usize,
) -> String {
    let mut width = header.map(str::len);
    for (row, _) in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String; N], paint: Option<&str>| {
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            let pad = w - cell.chars().count();
            match paint {
                Some(code) if i == painted => out.push_str(&format!("\x1b[{code}m{cell}\x1b[0m")),
                _ => out.push_str(cell),
            }
            if i != N - 1 {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    };
    line(&mut out, &header.map(str::to_owned), None);
    for (row, paint) in rows {
        line(&mut out, row, *paint);
    }
    out
}

/// Asks the daemon and prints its answer; `json`: as the daemon sent it.
pub fn run(target: &Target, json: bool) -> Result<(), StatusError> {
    let body = get(target, "/api/v1/units")?;
    let mut stdout = std::io::stdout().lock();
    if json {
        let _ = writeln!(stdout, "{}", body.trim_end());
        return Ok(());
    }
    let units: Units = serde_json::from_str(&body).map_err(|e| StatusError::Body {
        addr: target.addr.clone(),
        reason: e.to_string(),
    })?;
    let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = stdout.write_all(table(&units, colour).as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::api::job::fixture::{
        job_ledger, run_job, set_timer, start_job, HOUR, JOB, S, T0,
    };
    use crate::render::api::{PerWindow, Restarts, Unit};

    fn unit(name: &str, state: &str, up: bool) -> Unit {
        Unit {
            unit: name.into(),
            user: None,
            kind: "service".into(),
            state: state.into(),
            sub_state: "running".into(),
            up,
            loaded: true,
            since: 1_700_000_000.0,
            run_seconds: 300.0,
            uptime_seconds: Some(0.0),
            downtime_seconds: Some(0.0),
            availability: Some(PerWindow {
                h1: Some(1.0),
                h24: Some(0.5),
                d7: None,
                d30: None,
            }),
            mtbf_seconds: Some(PerWindow::default()),
            mttr_seconds: Some(PerWindow::default()),
            restarts: Restarts::default(),
            restarts_24h: Restarts { auto: 2, manual: 1 },
            failures: Default::default(),
            last_failure: None,
            history_begins: 0.0,
            job: None,
            resources: None,
        }
    }

    #[test]
    fn table_is_aligned_and_coloured_only_when_asked() {
        let units = Units {
            now: 1_700_000_300.0,
            host: None,
            units: vec![
                unit("a-long-name.service", "active", true),
                unit("b.service", "failed", false),
            ],
        };
        let plain = table(&units, false);
        let lines: Vec<&str> = plain.lines().collect();
        assert!(
            lines[0].starts_with("UNIT                 STATE"),
            "{plain}"
        );
        assert!(lines[1].starts_with("a-long-name.service  active (running)"));
        assert!(lines[1].contains("2023-11-14 22:13:20 UTC, 5m 0s ago"));
        assert!(
            lines[1].ends_with("50.00%     -          3             -    -"),
            "{plain}"
        );
        assert!(plain.contains("1 of 2 services up, as of"), "{plain}");
        assert!(!plain.contains('\x1b'));
        let coloured = table(&units, true);
        assert!(coloured.contains("\x1b[32mactive (running)\x1b[0m"));
        assert!(coloured.contains("\x1b[31mfailed (running)\x1b[0m"));
    }

    #[test]
    fn a_user_managers_unit_shows_its_user() {
        let mut alice = unit("demo.service", "active", true);
        alice.user = Some("alice".into());
        let units = Units {
            now: 1_700_000_300.0,
            host: None,
            units: vec![unit("demo.service", "active", true), alice],
        };
        let plain = table(&units, false);
        let lines: Vec<&str> = plain.lines().collect();
        assert!(
            lines[1].starts_with("demo.service          active"),
            "{plain}"
        );
        assert!(
            lines[2].starts_with("demo.service (alice)  active"),
            "{plain}"
        );
    }

    /// The API's list of a ledger with the fixture's job as of `now`, and
    /// one service that is up.
    fn with_job(mut l: crate::ledger::Ledger, now: u64) -> Units {
        l.apply(crate::ledger::Event::new(
            "web.service",
            T0,
            crate::ledger::Transition::Seen {
                state: crate::ledger::ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: Some(0),
            },
        ));
        crate::render::api::units(&l, &Default::default(), now)
    }

    /// The lines of the jobs' section of `text`, its header first.
    fn jobs_section(text: &str) -> Vec<&str> {
        text.lines()
            .skip_while(|l| !l.starts_with("JOB "))
            .take_while(|l| !l.is_empty())
            .collect()
    }

    /// The cells of a line: what columns two or more spaces apart hold.
    fn cells(line: &str) -> Vec<&str> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn jobs_are_listed_in_their_own_section_not_among_the_services() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 13 * S, "success");
        let text = table(&with_job(l, T0 + HOUR), false);
        let services: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
        assert!(services[0].starts_with("UNIT "), "{text}");
        assert!(!services.iter().any(|l| l.starts_with(JOB)), "{text}");
        let jobs = jobs_section(&text);
        assert_eq!(jobs.len(), 2, "{text}");
        assert!(jobs[1].starts_with(JOB), "{text}");
    }

    #[test]
    fn the_jobs_section_has_last_run_result_took_next_run_and_success_rates() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 13 * S, "success");
        let text = table(&with_job(l, T0 + HOUR), false);
        assert_eq!(
            cells(jobs_section(&text)[0]),
            [
                "JOB",
                "LAST RUN",
                "RESULT",
                "TOOK",
                "NEXT RUN",
                "SUCCESS 24H",
                "SUCCESS 30D"
            ]
        );
    }

    #[test]
    fn a_job_shows_when_its_last_run_ended_its_result_and_how_long_it_took() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 13 * S + S / 5, "exit-code");
        let text = table(&with_job(l, T0 + 60 * S), false);
        let row = jobs_section(&text)[1];
        assert!(
            row.contains("2023-11-14 22:13:33 UTC, 47s ago  exit-code  3.2s"),
            "{text}"
        );
    }

    #[test]
    fn a_job_shows_its_timers_next_run() {
        let mut l = job_ledger();
        set_timer(&mut l, T0, T0 + 2 * HOUR);
        let text = table(&with_job(l, T0 + HOUR), false);
        assert!(
            jobs_section(&text)[1].contains("2023-11-15 00:13:20 UTC, in 1h 0m"),
            "{text}"
        );
    }

    #[test]
    fn a_job_that_never_ran_and_has_no_timer_says_so() {
        let text = table(&with_job(job_ledger(), T0 + HOUR), false);
        assert_eq!(
            cells(jobs_section(&text)[1]),
            [JOB, "never", "-", "-", "-", "-", "-"],
            "{text}"
        );
    }

    #[test]
    fn a_running_job_shows_for_how_long_instead_of_its_next_run() {
        let mut l = job_ledger();
        set_timer(&mut l, T0, T0 + 2 * HOUR);
        start_job(&mut l, 30 * S);
        let text = table(&with_job(l, T0 + 100 * S), false);
        assert!(
            jobs_section(&text)[1].contains("running, for 1m 10s"),
            "{text}"
        );
    }

    #[test]
    fn the_summary_counts_services_up_and_jobs_that_failed_their_last_run() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 13 * S, "exit-code");
        let text = table(&with_job(l, T0 + HOUR), false);
        assert!(
            text.contains("1 of 1 services up, 1 of 1 jobs failed their last run, as of"),
            "{text}"
        );
    }

    #[test]
    fn a_result_is_green_for_a_success_and_red_for_a_failure() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 13 * S, "success");
        let green = table(&with_job(l.clone(), T0 + HOUR), true);
        assert!(green.contains("\x1b[32msuccess\x1b[0m"), "{green}");
        run_job(&mut l, 20 * S, 23 * S, "timeout");
        let red = table(&with_job(l, T0 + HOUR), true);
        assert!(red.contains("\x1b[31mtimeout\x1b[0m"), "{red}");
    }

    #[test]
    fn the_host_state_comes_first_and_services_show_cpu_and_memory() {
        let mut web = unit("web.service", "active", true);
        web.resources = Some(crate::render::api::Resources {
            cpu_cores: Some(0.25),
            memory_bytes: Some(3 * 1024 * 1024),
            ..Default::default()
        });
        let units = Units {
            now: 1_700_000_300.0,
            host: Some(crate::render::api::Host {
                system_state: "degraded".into(),
                version: "252.39".into(),
                units: Some([("active".to_owned(), 30), ("failed".to_owned(), 1)].into()),
            }),
            units: vec![web, unit("idle.service", "inactive", false)],
        };
        let text = table(&units, false);
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "systemd 252.39: degraded, 31 units loaded, 30 active, 1 failed"
        );
        let line = |start: &str| {
            let l = text
                .lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_default();
            cells(l)[6..].to_vec()
        };
        assert_eq!(line("UNIT"), ["CPU", "MEMORY"]);
        assert_eq!(line("web.service"), ["25%", "3.00 MiB"]);
        assert_eq!(line("idle.service"), ["-", "-"]);
    }

    #[test]
    fn wildcard_listen_addresses_are_asked_on_loopback() {
        let a: SocketAddr = "0.0.0.0:9567".parse().expect("addr");
        assert_eq!(local(a).to_string(), "127.0.0.1:9567");
        let b: SocketAddr = "192.0.2.1:80".parse().expect("addr");
        assert_eq!(local(b), b);
    }

    #[test]
    fn no_daemon_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let target = Target {
            addr: format!("127.0.0.1:{port}"),
            tls: None,
            credentials: None,
        };
        let e = get(&target, "/api/v1/units").expect_err("refused");
        assert_eq!(
            e.to_string(),
            format!(
                "no unitwatch answers at 127.0.0.1:{port}: connection refused (is it running? `systemctl status unitwatch`)"
            )
        );
    }
}
