//! The status page at `/`: one row per service (named with its user, for a
//! unit of a user's manager) with a coloured state badge,
//! availability over 24 hours and 30 days, restarts in 24 hours and a
//! 24-hour timeline; then the jobs, apart ([`jobs`]): a job is not down
//! between its runs. Rendered on the server (no JavaScript; it refreshes
//! itself every 10 s). The stylesheet is compiled into the binary.

mod jobs;

use std::fmt::Write;

use crate::ledger::{key, ActiveState, Ledger, UnitView, Usec};
use crate::render::human;
use crate::sample::{Sample, UnitSample};

const CSS: &str = include_str!("page.css");
const DAY: Usec = 24 * 3600 * 1_000_000;

/// The colour class of a state: up, down (failed), idle (stopped) or change.
pub fn class(state: &str) -> &'static str {
    match ActiveState::parse(state) {
        Some(ActiveState::Active | ActiveState::Reloading) => "up",
        Some(ActiveState::Failed) => "down",
        Some(ActiveState::Activating | ActiveState::Deactivating) => "change",
        _ => "idle",
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A unit's row id (its ledger key) and the contents of its name's cell:
/// the unit, and the user whose manager it is of in parentheses.
pub(super) fn named(v: &UnitView<'_>) -> (String, String) {
    let id = escape(v.unit);
    let cell = match key::split(v.unit) {
        (unit, Some(user)) => format!(
            "{} <span class=\"user\">({})</span>",
            escape(unit),
            escape(user)
        ),
        (unit, None) => escape(unit),
    };
    (id, cell)
}

/// How many columns a timeline is drawn in: finer than any screen shows in
/// a table cell, and what bounds the page's size whatever the history.
const COLUMNS: u32 = 120;

/// The timeline of a unit over the last 24 hours, or since it is watched if
/// that is shorter, as a bar of segments, oldest left. Stretches with more
/// changes than the bar can show one by one are drawn as one striped span
/// that says how many there were.
fn timeline(v: &UnitView<'_>, now: Usec) -> String {
    let from = now.saturating_sub(DAY).max(v.history.begins());
    let span = now.saturating_sub(from).max(1);
    let mut bar = format!(
        "<div class=\"bar\" title=\"since {} UTC\">",
        human::utc(from as f64 / 1e6)
    );
    for s in v.history.bar(from, COLUMNS) {
        let width = (s.to - s.from) as f64 * 100.0 / span as f64;
        let (class, what) = match s.state {
            Some(state) => (class(state.as_str()), state.as_str().to_owned()),
            None => (
                "busy",
                format!(
                    "{} changes, {} up",
                    s.changes,
                    human::percent(Some(s.up_usec as f64 / (s.to - s.from).max(1) as f64))
                ),
            ),
        };
        let _ = write!(
            bar,
            "<span class=\"{class}\" style=\"width:{width:.3}%\" title=\"{what} {}–{} UTC ({})\"></span>",
            human::clock(s.from as f64 / 1e6),
            human::clock(s.to as f64 / 1e6),
            human::duration((s.to - s.from) as f64 / 1e6),
        );
    }
    bar.push_str("</div>");
    bar
}

/// One unit's row, read straight from its view: only the two windows the
/// page shows, no copies of the API's fields.
fn row(out: &mut String, v: &UnitView<'_>, sample: Option<&UnitSample>, now: Usec) {
    let h = &v.history;
    let restarts = h.restarts_since(now.saturating_sub(DAY));
    let since = (v.state_change_seconds * 1e6) as Usec;
    let (id, name) = named(v);
    let state = v.state.as_str();
    let _ = writeln!(
        out,
        "<tr id=\"{id}\" data-state=\"{state}\">\
         <td class=\"unit\">{name}</td>\
         <td><span class=\"badge {class}\">{state}</span> <span class=\"sub\">{sub}</span></td>\
         <td class=\"since num\" title=\"{since_utc} UTC\">{run}</td>\
         <td class=\"num avail24\">{a24}</td>\
         <td class=\"num avail30\">{a30}</td>\
         <td class=\"num restarts\">{restarts}</td>\
         <td class=\"num cpu\">{cpu}</td>\
         <td class=\"num memory\">{memory}</td>\
         <td class=\"timeline\">{bar}</td></tr>",
        class = class(state),
        sub = escape(v.sub_state),
        since_utc = human::utc(v.state_change_seconds),
        run = human::duration(now.saturating_sub(since) as f64 / 1e6),
        a24 = human::percent(h.window(now.saturating_sub(DAY)).availability()),
        a30 = human::percent(h.window(now.saturating_sub(30 * DAY)).availability()),
        restarts = restarts.auto + restarts.manual,
        cpu = human::cores(sample.and_then(UnitSample::cpu_cores)),
        memory = human::bytes(sample.and_then(|s| s.resources.memory_bytes)),
        bar = timeline(v, now),
    );
}

/// The service manager's state, under the title, once it was read.
fn host(sample: &Sample) -> String {
    let Some(h) = &sample.host else {
        return String::new();
    };
    let mut line = format!(
        "<p id=\"host\">systemd {} · <span class=\"badge {}\">{}</span>",
        escape(&h.version),
        match h.system_state.as_str() {
            "running" => "up",
            "degraded" | "maintenance" => "down",
            _ => "change",
        },
        escape(&h.system_state)
    );
    if let Some(counts) = &h.units {
        let _ = write!(line, " · {}", human::unit_counts(counts));
    }
    line + "</p>"
}

/// The page as of `now`.
pub fn render(ledger: &Ledger, sample: &Sample, now: Usec) -> String {
    let views: Vec<UnitView<'_>> = ledger.view(now).collect();
    let (jobs, services): (Vec<&UnitView<'_>>, Vec<&UnitView<'_>>) =
        views.iter().partition(|v| v.is_job());
    let total = services.len();
    let up = services.iter().filter(|v| v.up()).count();
    let failed = jobs::failed(&jobs);
    let count = |n: usize| match n {
        1 => "1 job".to_owned(),
        n => format!("{n} jobs"),
    };
    let jobs_title = match failed {
        0 => String::new(),
        f => format!(", {} failed", count(f)),
    };
    let jobs_summary = match (jobs.len(), failed) {
        (0, _) => String::new(),
        (n, 0) => format!(
            " · <a id=\"jobs-summary\" href=\"#jobs\">{}, none failed</a>",
            count(n)
        ),
        (n, f) => format!(
            " · <a id=\"jobs-summary\" href=\"#jobs\">{}, {f} failed</a>",
            count(n)
        ),
    };
    let mut out = String::with_capacity(2048 + views.len() * 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <title>unitwatch: {up}/{total} up{jobs_title}</title><style>{CSS}</style></head>\n<body>\
         <header><h1>Services</h1><p><span id=\"summary\">{up} of {total} up</span>{jobs_summary} · \
         {now} UTC · refreshes every 10 s</p>{host}</header>\n",
        now = human::utc(now as f64 / 1e6),
        host = host(sample),
    );
    out.push_str(
        "<table><thead><tr><th>Unit</th><th>State</th><th class=\"since\">For</th>\
         <th>24 h</th><th class=\"avail30\">30 d</th><th>Restarts 24 h</th>\
         <th class=\"cpu\">CPU</th><th class=\"memory\">Memory</th>\
         <th class=\"timeline\">Last 24 hours</th></tr></thead>\n<tbody>\n",
    );
    for v in &services {
        row(&mut out, v, sample.units.get(v.unit), now);
    }
    match (total, jobs.len()) {
        (0, 0) => out.push_str("<tr><td colspan=\"9\">No units watched yet.</td></tr>\n"),
        (0, _) => out.push_str("<tr><td colspan=\"9\">No services watched, only jobs.</td></tr>\n"),
        _ => {}
    }
    out.push_str("</tbody></table>\n");
    if !jobs.is_empty() {
        jobs::table(&mut out, &jobs, now);
    }
    let _ = write!(
        out,
        "<footer>unitwatch {} · <a href=\"metrics\">metrics</a> · \
         <a href=\"api/v1/units\">JSON</a> · <a href=\"healthz\">health</a></footer>\n\
         </body></html>\n",
        env!("CARGO_PKG_VERSION")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Event, Transition};

    const S: Usec = 1_000_000;
    const T0: Usec = 1_700_000_000 * S;

    #[test]
    fn rows_badges_and_timeline() {
        let mut l = Ledger::new();
        for (name, state) in [
            ("a<b>.service", ActiveState::Active),
            ("c.service", ActiveState::Failed),
        ] {
            l.apply(Event::new(
                name,
                T0,
                Transition::Seen {
                    state,
                    sub_state: "x".into(),
                    n_restarts: None,
                },
            ));
        }
        let html = render(&l, &Default::default(), T0 + 12 * 3600 * S);
        assert!(html.contains("1 of 2 up"), "{html}");
        assert!(html.contains("<td class=\"unit\">a&lt;b&gt;.service</td>"));
        assert!(html.contains("<span class=\"badge up\">active</span>"));
        assert!(html.contains("<span class=\"badge down\">failed</span>"));
        // Watched for 12 hours: the bar covers those, up all along.
        assert!(
            html.contains("title=\"since 2023-11-14 22:13:20 UTC\""),
            "{html}"
        );
        assert!(
            html.contains("class=\"up\" style=\"width:100.000%\""),
            "{html}"
        );
        assert!(!html.contains("<script"));
    }

    #[test]
    fn the_host_is_under_the_title_and_services_show_cpu_and_memory() {
        let mut l = Ledger::new();
        l.apply(Event::new(
            "web.service",
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: None,
            },
        ));
        let mut web = UnitSample {
            cpu_millicores: Some(500),
            ..UnitSample::default()
        };
        web.resources.memory_bytes = Some(2048);
        let sample = Sample {
            units: [("web.service".to_owned(), web)].into(),
            host: Some(crate::sample::Host {
                system_state: "degraded".into(),
                version: "252.39".into(),
                units: Some([("active".to_owned(), 3), ("failed".to_owned(), 1)].into()),
            }),
            ..Sample::default()
        };
        let html = render(&l, &sample, T0 + S);
        assert!(
            html.contains("<p id=\"host\">systemd 252.39 · <span class=\"badge down\">degraded</span> · 4 units loaded, 3 active, 1 failed</p>"),
            "{html}"
        );
        assert!(html.contains("<td class=\"num cpu\">50%</td>"), "{html}");
        assert!(
            html.contains("<td class=\"num memory\">2.00 KiB</td>"),
            "{html}"
        );
        let bare = render(&l, &Sample::default(), T0 + S);
        assert!(!bare.contains("id=\"host\""));
        assert!(bare.contains("<td class=\"num memory\">-</td>"));
    }

    #[test]
    fn a_user_managers_unit_is_named_with_its_user() {
        let mut l = Ledger::new();
        let alice = key::user_unit("demo.service", "alice").expect("key");
        l.apply(Event::new(
            alice.as_str(),
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: None,
            },
        ));
        let html = render(&l, &Default::default(), T0 + S);
        assert!(
            html.contains(
                "<tr id=\"demo.service/alice\" data-state=\"active\"><td class=\"unit\">demo.service <span class=\"user\">(alice)</span></td>"
            ),
            "{html}"
        );
    }

    #[test]
    fn a_flapping_unit_is_drawn_in_a_bounded_number_of_spans() {
        let mut l = Ledger::new();
        l.apply(Event::new(
            "f.service",
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: None,
            },
        ));
        // 4000 changes in the last 24 hours, 20 s apart.
        let now = T0 + 2 * DAY;
        for i in 0..4000u64 {
            let state = if i % 2 == 0 {
                ActiveState::Failed
            } else {
                ActiveState::Active
            };
            l.apply(Event::new(
                "f.service",
                now - DAY + i * 20 * S,
                Transition::State {
                    state,
                    sub_state: None,
                },
            ));
        }
        let html = render(&l, &Default::default(), now);
        let spans = html.matches("<span class=").count();
        assert!(spans <= 2 * COLUMNS as usize, "{spans} spans");
        assert!(html.contains("class=\"busy\""), "{html}");
        assert!(html.contains("title=\"3999 changes, "), "{html}");
    }
}
