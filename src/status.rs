//! `unitwatch status`: asks a running unitwatch for `/api/v1/units` (with
//! [`client`]: HTTP or HTTPS, basic auth) and prints a `systemctl`-like
//! table (unit, state, since, availability over 24 h and 30 d, restarts in
//! 24 h); coloured on a terminal, plain when piped or with `NO_COLOR`, the
//! daemon's JSON as is with `--json`.

pub mod client;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

pub use self::client::{get, Credentials, StatusError, Target, Trust};
use crate::render::api::Units;
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

/// The table `unitwatch status` prints.
pub fn table(units: &Units, colour: bool) -> String {
    let header = [
        "UNIT",
        "STATE",
        "SINCE",
        "AVAIL 24H",
        "AVAIL 30D",
        "RESTARTS 24H",
    ];
    let rows: Vec<[String; 6]> = units
        .units
        .iter()
        .map(|u| {
            [
                u.unit.clone(),
                format!("{} ({})", u.state, u.sub_state),
                format!(
                    "{} UTC, {} ago",
                    human::utc(u.since),
                    human::duration(u.run_seconds)
                ),
                human::percent(u.availability.h24),
                human::percent(u.availability.d30),
                (u.restarts_24h.auto + u.restarts_24h.manual).to_string(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String; 6], paint: Option<&str>| {
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            let pad = w - cell.chars().count();
            let last = i == cells.len() - 1;
            match (i, paint) {
                (1, Some(code)) => out.push_str(&format!("\x1b[{code}m{cell}\x1b[0m")),
                _ => out.push_str(cell),
            }
            if !last {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    };
    let head = header.map(str::to_owned);
    line(&mut out, &head, None);
    for (row, u) in rows.iter().zip(&units.units) {
        let paint = colour.then(|| match class(&u.state) {
            "up" => "32",
            "down" => "31",
            "change" => "33",
            _ => "90",
        });
        line(&mut out, row, paint);
    }
    let up = units.units.iter().filter(|u| u.up).count();
    out.push_str(&format!(
        "\n{up} of {} units up, as of {} UTC.\n",
        units.units.len(),
        human::utc(units.now)
    ));
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
    use crate::render::api::{PerWindow, Restarts, Unit};

    fn unit(name: &str, state: &str, up: bool) -> Unit {
        Unit {
            unit: name.into(),
            state: state.into(),
            sub_state: "running".into(),
            up,
            loaded: true,
            since: 1_700_000_000.0,
            run_seconds: 300.0,
            uptime_seconds: 0.0,
            downtime_seconds: 0.0,
            availability: PerWindow {
                h1: Some(1.0),
                h24: Some(0.5),
                d7: None,
                d30: None,
            },
            mtbf_seconds: PerWindow::default(),
            mttr_seconds: PerWindow::default(),
            restarts: Restarts::default(),
            restarts_24h: Restarts { auto: 2, manual: 1 },
            failures: Default::default(),
            last_failure: None,
            history_begins: 0.0,
        }
    }

    #[test]
    fn table_is_aligned_and_coloured_only_when_asked() {
        let units = Units {
            now: 1_700_000_300.0,
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
        assert!(lines[1].ends_with("50.00%     -          3"), "{plain}");
        assert!(plain.contains("1 of 2 units up"));
        assert!(!plain.contains('\x1b'));
        let coloured = table(&units, true);
        assert!(coloured.contains("\x1b[32mactive (running)\x1b[0m"));
        assert!(coloured.contains("\x1b[31mfailed (running)\x1b[0m"));
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
