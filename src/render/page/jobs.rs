//! The status page's Jobs table: one row per job with its last run (a
//! result badge, when it ended, how long it took), its next run (or the run
//! in progress), its success rate over 24 hours and 30 days, and its runs
//! of the last 24 hours as ticks on a timeline, green for a success, red
//! for a failure. Ticks are drawn in the timeline's fixed number of
//! columns: the runs that ended in one column are one tick (red if any of
//! them failed) that says how many there were, so a job that runs every
//! second costs the page no more than one that runs every hour.

use std::fmt::Write;

use super::{COLUMNS, DAY};
use crate::ledger::{UnitView, Usec};
use crate::render::api::job::{rate, runs_since};
use crate::render::human;

/// The colour class of a run's result: up (success) or down (any failure).
pub fn result_class(succeeded: bool) -> &'static str {
    if succeeded {
        "up"
    } else {
        "down"
    }
}

fn unix(usec: Usec) -> f64 {
    usec as f64 / 1e6
}

/// Runs that ended in one column of the timeline.
#[derive(Clone, Copy, Default)]
struct Column {
    runs: u32,
    failed: u32,
    /// The result of the newest failure in it, for its title.
    failure: Option<&'static str>,
}

/// A job's runs over the last 24 hours (or since it is watched, if that is
/// shorter), as ticks on a bar: at most one per column, and one for the run
/// in progress.
fn ticks(v: &UnitView<'_>, now: Usec) -> String {
    let from = now.saturating_sub(DAY).max(v.history.begins());
    let span = now.saturating_sub(from).max(1);
    let mut columns = [Column::default(); COLUMNS as usize];
    let column = |t: Usec| {
        let i = (t.saturating_sub(from) as u128 * u128::from(COLUMNS) / u128::from(span)) as usize;
        i.min(COLUMNS as usize - 1)
    };
    for run in v.runs.in_window(from, now.saturating_add(1)) {
        let c = &mut columns[column(run.end)];
        c.runs += 1;
        if !run.succeeded() {
            c.failed += 1;
            c.failure = Some(run.result());
        }
    }
    let mut bar = format!(
        "<div class=\"bar ticks\" title=\"since {} UTC\">",
        human::utc(unix(from))
    );
    let width = 100.0 / f64::from(COLUMNS);
    for (i, c) in columns.iter().enumerate().filter(|(_, c)| c.runs > 0) {
        let (start, end) = (
            from + span * i as u64 / u64::from(COLUMNS),
            from + span * (i as u64 + 1) / u64::from(COLUMNS),
        );
        let what = match (c.runs, c.failure) {
            (1, None) => "1 run, success".to_owned(),
            (1, Some(result)) => format!("1 run, {result}"),
            (n, None) => format!("{n} runs, all successful"),
            (n, Some(result)) => format!("{n} runs, {} failed (last: {result})", c.failed),
        };
        let _ = write!(
            bar,
            "<span class=\"{class}\" style=\"left:{left:.3}%\" title=\"{what} {}–{} UTC\"></span>",
            human::clock(unix(start)),
            human::clock(unix(end)),
            class = result_class(c.failed == 0),
            left = (i as f64 + 0.5) * width,
        );
    }
    if let Some(r) = v.runs.running.as_ref().filter(|_| v.running()) {
        let at = r.start.clamp(from, now);
        let _ = write!(
            bar,
            "<span class=\"change\" style=\"left:{left:.3}%\" title=\"running since {} UTC\"></span>",
            human::clock(unix(r.start)),
            left = (column(at) as f64 + 0.5) * width,
        );
    }
    bar.push_str("</div>");
    bar
}

/// Success over the runs that ended since `from`, with how many there were.
fn rate_cell(v: &UnitView<'_>, from: Usec, now: Usec, class: &str) -> String {
    let (all, ok) = runs_since(v.runs, from, now);
    format!(
        "<td class=\"num {class}\" title=\"{ok} of {all} runs\">{}</td>",
        human::percent(rate(all, ok))
    )
}

/// One job's row.
fn row(out: &mut String, v: &UnitView<'_>, now: Usec) {
    let (id, name) = super::named(v);
    let last = v.runs.last.as_ref();
    let (badge, result, label) = match last {
        Some(r) => (result_class(r.succeeded()), r.result(), r.result()),
        None => ("idle", "none", "never run"),
    };
    let when = match last {
        Some(r) => format!(
            "<span class=\"ago\" title=\"ended {} UTC\">{}</span>",
            human::utc(unix(r.end)),
            human::relative(unix(r.end), unix(now))
        ),
        None => String::new(),
    };
    let took = last
        .and_then(|r| r.duration())
        .map_or_else(|| "-".to_owned(), |d| human::run_time(unix(d)));
    let next = match (v.running(), v.runs.running.as_ref(), v.timer) {
        (true, Some(r), _) if r.start != 0 => format!(
            "<span class=\"badge change\">running</span> <span class=\"ago\" title=\"since {} UTC\">for {}</span>",
            human::utc(unix(r.start)),
            human::duration(unix(now.saturating_sub(r.start)))
        ),
        (true, _, _) => "<span class=\"badge change\">running</span>".to_owned(),
        (false, _, Some(t)) if t.next_elapse != 0 => format!(
            "<span title=\"{} UTC\">{}</span>",
            human::utc(unix(t.next_elapse)),
            human::relative(unix(t.next_elapse), unix(now))
        ),
        _ => "-".to_owned(),
    };
    let _ = writeln!(
        out,
        "<tr id=\"{id}\" data-kind=\"job\" data-result=\"{result}\">\
         <td class=\"unit\">{name}</td>\
         <td class=\"last\"><span class=\"badge {badge}\">{label}</span> {when}</td>\
         <td class=\"num took\">{took}</td>\
         <td class=\"next\">{next}</td>\
         {r24}{r30}\
         <td class=\"timeline\">{bar}</td></tr>",
        r24 = rate_cell(v, now.saturating_sub(DAY), now, "rate24"),
        r30 = rate_cell(v, now.saturating_sub(30 * DAY), now, "avail30"),
        bar = ticks(v, now),
    );
}

/// The Jobs section: its heading and table.
pub fn table(out: &mut String, jobs: &[&UnitView<'_>], now: Usec) {
    out.push_str(
        "<h2 id=\"jobs\">Jobs</h2>\n<table class=\"jobs\"><thead><tr><th>Job</th><th>Last run</th>\
         <th class=\"took\">Took</th><th>Next run</th><th>24 h</th><th class=\"avail30\">30 d</th>\
         <th class=\"timeline\">Runs, last 24 hours</th></tr></thead>\n<tbody>\n",
    );
    for v in jobs {
        row(out, v, now);
    }
    out.push_str("</tbody></table>\n");
}

/// How many of `jobs` failed their last run.
pub fn failed(jobs: &[&UnitView<'_>]) -> usize {
    jobs.iter()
        .filter(|v| v.runs.last.is_some_and(|r| !r.succeeded()))
        .count()
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::*;
    use crate::ledger::{ActiveState, Event, Ledger, Transition};
    use crate::render::api::job::fixture::{
        job_ledger, run_job, set_timer, start_job, HOUR, JOB, S, T0,
    };

    /// `l` with a service that is up since `T0`.
    fn with_service(mut l: Ledger) -> Ledger {
        l.apply(Event::new(
            "web.service",
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: Some(0),
            },
        ));
        l
    }

    /// The job's row in `html`.
    fn job_row(html: &str) -> &str {
        let start = html
            .find(&format!("<tr id=\"{JOB}\""))
            .unwrap_or_else(|| panic!("no row for {JOB}:\n{html}"));
        let end = html[start..]
            .find("</tr>")
            .map_or(html.len(), |e| start + e);
        &html[start..end]
    }

    #[test]
    fn a_job_is_listed_under_jobs_not_among_the_services() {
        let html = render(&with_service(job_ledger()), &Default::default(), T0 + HOUR);
        let jobs = html
            .find("<h2 id=\"jobs\">Jobs</h2>")
            .expect("a Jobs section");
        let row = html.find(&format!("<tr id=\"{JOB}\"")).expect("a row");
        assert!(row > jobs, "{html}");
        assert!(job_row(&html).contains("data-kind=\"job\""));
    }

    #[test]
    fn a_job_between_runs_does_not_count_as_a_service_that_is_down() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 13 * S, "success");
        let html = render(&with_service(l), &Default::default(), T0 + HOUR);
        assert!(
            html.contains("<span id=\"summary\">1 of 1 up</span>"),
            "{html}"
        );
        assert!(!job_row(&html).contains("badge idle"), "{html}");
    }

    #[test]
    fn the_last_run_shows_a_green_badge_when_it_ended_and_how_long_it_took() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 13 * S + S / 5, "success");
        let html = render(&l, &Default::default(), T0 + 73 * S);
        let row = job_row(&html);
        assert!(
            row.contains("<span class=\"badge up\">success</span> <span class=\"ago\" title=\"ended 2023-11-14 22:13:33 UTC\">1m 0s ago</span>"),
            "{row}"
        );
        assert!(row.contains("<td class=\"num took\">3.2s</td>"), "{row}");
    }

    #[test]
    fn a_failed_last_run_shows_a_red_badge_with_its_result() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 13 * S, "exit-code");
        let html = render(&l, &Default::default(), T0 + HOUR);
        assert!(
            job_row(&html).contains("<span class=\"badge down\">exit-code</span>"),
            "{html}"
        );
    }

    #[test]
    fn jobs_that_failed_their_last_run_are_counted_in_the_header_and_title() {
        let mut l = job_ledger();
        run_job(&mut l, 10 * S, 13 * S, "exit-code");
        let html = render(&l, &Default::default(), T0 + HOUR);
        assert!(html.contains(">1 job, 1 failed</a>"), "{html}");
        assert!(
            html.contains("<title>unitwatch: 0/0 up, 1 job failed</title>"),
            "{html}"
        );
    }

    #[test]
    fn a_job_that_never_ran_says_so() {
        let html = render(&job_ledger(), &Default::default(), T0 + HOUR);
        let row = job_row(&html);
        assert!(
            row.contains("<span class=\"badge idle\">never run</span>"),
            "{row}"
        );
        assert!(row.contains("<td class=\"num took\">-</td>"), "{row}");
    }

    #[test]
    fn the_next_run_is_when_the_timer_elapses_next() {
        let mut l = job_ledger();
        set_timer(&mut l, T0, T0 + 2 * HOUR);
        let html = render(&l, &Default::default(), T0 + HOUR);
        assert!(
            job_row(&html).contains(
                "<td class=\"next\"><span title=\"2023-11-15 00:13:20 UTC\">in 1h 0m</span></td>"
            ),
            "{html}"
        );
    }

    #[test]
    fn a_job_without_a_timer_has_no_next_run() {
        let html = render(&job_ledger(), &Default::default(), T0 + HOUR);
        assert!(
            job_row(&html).contains("<td class=\"next\">-</td>"),
            "{html}"
        );
    }

    #[test]
    fn a_run_in_progress_shows_instead_of_the_next_run() {
        let mut l = job_ledger();
        set_timer(&mut l, T0, T0 + 2 * HOUR);
        start_job(&mut l, 30 * S);
        let html = render(&l, &Default::default(), T0 + 100 * S);
        let row = job_row(&html);
        assert!(
            row.contains("<td class=\"next\"><span class=\"badge change\">running</span> <span class=\"ago\" title=\"since 2023-11-14 22:13:50 UTC\">for 1m 10s</span></td>"),
            "{row}"
        );
        assert!(row.contains("title=\"running since 22:13 UTC\""), "{row}");
    }

    #[test]
    fn success_rates_over_24h_and_30d_count_the_runs_that_ended_in_each() {
        let mut l = job_ledger();
        // Two days ago: a failure; in the last day: a success and a failure.
        run_job(&mut l, HOUR, HOUR + S, "exit-code");
        run_job(&mut l, 40 * HOUR, 40 * HOUR + S, "success");
        run_job(&mut l, 41 * HOUR, 41 * HOUR + S, "timeout");
        let html = render(&l, &Default::default(), T0 + 48 * HOUR);
        let row = job_row(&html);
        assert!(
            row.contains("<td class=\"num rate24\" title=\"1 of 2 runs\">50.00%</td>"),
            "{row}"
        );
        assert!(
            row.contains("<td class=\"num avail30\" title=\"1 of 3 runs\">33.33%</td>"),
            "{row}"
        );
    }

    #[test]
    fn runs_are_ticks_on_the_timeline_green_for_a_success_red_for_a_failure() {
        let mut l = job_ledger();
        // Watched for 12 hours: a column is 6 minutes.
        run_job(&mut l, HOUR, HOUR + S, "success");
        run_job(&mut l, 6 * HOUR, 6 * HOUR + S, "signal");
        let html = render(&l, &Default::default(), T0 + 12 * HOUR);
        let row = job_row(&html);
        assert!(
            row.contains("<span class=\"up\" style=\"left:8.750%\" title=\"1 run, success 23:13–23:19 UTC\"></span>"),
            "{row}"
        );
        assert!(
            row.contains("<span class=\"down\" style=\"left:50.417%\" title=\"1 run, signal 04:13–04:19 UTC\"></span>"),
            "{row}"
        );
    }

    #[test]
    fn runs_that_end_in_one_column_are_one_tick_red_if_any_failed() {
        let mut l = job_ledger();
        for (i, result) in ["success", "exit-code", "success"].into_iter().enumerate() {
            let t = HOUR + i as u64 * 60 * S;
            run_job(&mut l, t, t + S, result);
        }
        let html = render(&l, &Default::default(), T0 + 12 * HOUR);
        let row = job_row(&html);
        assert_eq!(row.matches("<span class=\"down\"").count(), 1, "{row}");
        assert!(!row.contains("<span class=\"up\""), "{row}");
        assert!(
            row.contains("title=\"3 runs, 1 failed (last: exit-code) "),
            "{row}"
        );
    }

    #[test]
    fn a_job_that_runs_every_few_seconds_is_drawn_in_at_most_one_tick_a_column() {
        let mut l = job_ledger();
        let now = T0 + 48 * HOUR;
        // 8000 runs in the last 24 hours, one in ten failing.
        for i in 0..8000u64 {
            let t = 24 * HOUR + i * 10 * S;
            let result = if i % 10 == 0 { "exit-code" } else { "success" };
            run_job(&mut l, t, t + S, result);
        }
        let html = render(&l, &Default::default(), now);
        let ticks = job_row(&html).matches("style=\"left:").count();
        assert!(ticks <= COLUMNS as usize, "{ticks} ticks");
        assert!(html.contains("runs, "), "{html}");
    }

    #[test]
    fn without_jobs_the_page_has_no_jobs_section() {
        let html = render(&with_service(Ledger::new()), &Default::default(), T0 + HOUR);
        assert!(!html.contains("id=\"jobs\""), "{html}");
        assert!(!html.contains("jobs-summary"), "{html}");
    }
}
