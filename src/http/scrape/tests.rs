//! What a scrape renders again and what it keeps, by what changed.

use std::io::Read;

use super::*;
use crate::ledger::{ActiveState, Event, Ledger, Transition};
use crate::snapshot::Stats;

const S: Usec = 1_000_000;
const T0: Usec = 1_700_000_000 * S;

fn snapshot(units: usize) -> Arc<Snapshot> {
    let mut l = Ledger::new();
    for i in 0..units {
        l.apply(Event::new(
            format!("u{i}.service"),
            T0,
            Transition::Seen {
                state: ActiveState::Active,
                sub_state: "running".into(),
                n_restarts: Some(0),
            },
        ));
    }
    Arc::new(Snapshot {
        ledger: l,
        stats: Stats::default(),
        frame: 0,
        sample: Default::default(),
    })
}

/// `snapshot` with one more event applied to its ledger, at `T0 + S`.
fn after(snapshot: &Arc<Snapshot>, unit: &str, transition: Transition) -> Arc<Snapshot> {
    let mut ledger = snapshot.ledger.clone();
    ledger.apply(Event::new(unit, T0 + S, transition));
    Arc::new(Snapshot {
        ledger,
        ..(**snapshot).clone()
    })
}

/// Decodes one gzip member, as curl does: what follows it is not read.
fn gunzip(body: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut text)
        .expect("one valid gzip member");
    text
}

/// Units up, down, a job (no uptime) and a user's unit (two labels).
fn mixed() -> Arc<Snapshot> {
    let s = snapshot(3);
    let s = after(
        &s,
        "u1.service",
        Transition::State {
            state: ActiveState::Failed,
            sub_state: None,
        },
    );
    let s = after(
        &s,
        "u2.service",
        Transition::Kind {
            kind: crate::ledger::Kind::Job,
        },
    );
    let user = crate::ledger::key::user_unit("w.service", "alice").expect("a unit name");
    after(
        &s,
        &user,
        Transition::Seen {
            state: ActiveState::Active,
            sub_state: "running".into(),
            n_restarts: None,
        },
    )
}

#[test]
fn the_open_intervals_are_written_as_a_full_render_writes_them() {
    let families = Families::default();
    let scrapes = Scrapes::new(&families);
    let s = mixed();
    for format in [Format::Text, Format::OpenMetrics] {
        for now in [T0 + 5 * S, T0 + 9 * S + 7] {
            let (body, _) = scrapes.body(&s, now, format, false);
            let got = String::from_utf8(body.to_vec()).expect("UTF-8");
            assert_eq!(got, metrics::render(&s, now, format, &families));
        }
    }
}

#[test]
fn a_later_scrape_of_the_same_units_keeps_their_open_lines() {
    let scrapes = Scrapes::new(&Families::default());
    let s = mixed();
    scrapes.body(&s, T0 + 5 * S, Format::Text, false);
    let (_, _, first) = scrapes.kept(&s, Format::Text);
    scrapes.body(&s, T0 + 6 * S, Format::Text, false);
    let (_, _, second) = scrapes.kept(&s, Format::Text);
    let kept = first
        .iter()
        .zip(&second)
        .filter_map(|(a, b)| a.as_ref().zip(b.as_ref()));
    assert_eq!(kept.clone().count(), 1, "one group reads the time");
    assert!(kept.into_iter().all(|(a, b)| Arc::ptr_eq(a, b)));
    let changed = after(
        &s,
        "u0.service",
        Transition::State {
            state: ActiveState::Inactive,
            sub_state: None,
        },
    );
    scrapes.body(&changed, T0 + 6 * S, Format::Text, false);
    let (_, _, third) = scrapes.kept(&changed, Format::Text);
    let same = second
        .iter()
        .zip(&third)
        .filter_map(|(a, b)| a.as_ref().zip(b.as_ref()));
    assert!(
        same.into_iter().all(|(a, b)| !Arc::ptr_eq(a, b)),
        "a change renders them again"
    );
}

#[test]
fn the_gzip_body_is_one_member_holding_the_whole_exposition() {
    let scrapes = Scrapes::new(&Families::default());
    let s = snapshot(300);
    let (body, gzipped) = scrapes.body(&s, T0 + 5 * S, Format::OpenMetrics, true);
    let body = body.to_vec();
    assert!(gzipped);
    let want = metrics::render(&s, T0 + 5 * S, Format::OpenMetrics, &Families::default());
    assert_eq!(gunzip(&body), want);
}

#[test]
fn a_few_units_are_gzipped_as_a_run_of_families_not_family_by_family() {
    let scrapes = Scrapes::new(&Families::default());
    let s = snapshot(3);
    let (plain, _) = scrapes.body(&s, T0 + 5 * S, Format::Text, false);
    let (zipped, gzipped) = scrapes.body(&s, T0 + 5 * S, Format::Text, true);
    assert!(gzipped);
    let (plain, zipped) = (plain.to_vec().len(), zipped.to_vec().len());
    assert!(zipped * 3 < plain, "{zipped} gzipped against {plain} plain");
}

#[test]
fn a_later_scrape_of_the_same_snapshot_renders_what_moves_with_time() {
    let scrapes = Scrapes::new(&Families::default());
    let s = snapshot(3);
    let _ = scrapes.body(&s, T0 + 5 * S, Format::Text, true);
    for gzip in [true, false] {
        let (body, gzipped) = scrapes.body(&s, T0 + 9 * S, Format::Text, gzip);
        let body = body.to_vec();
        let text = if gzipped {
            gunzip(&body)
        } else {
            String::from_utf8(body.to_vec()).expect("text")
        };
        assert_eq!(
            text,
            metrics::render(&s, T0 + 9 * S, Format::Text, &Families::default())
        );
        assert!(text.contains("service_uptime_seconds_total{unit=\"u0.service\"} 9.0"));
    }
}

#[test]
fn a_new_snapshot_is_rendered_anew() {
    let scrapes = Scrapes::new(&Families::default());
    let _ = scrapes.body(&snapshot(1), T0 + S, Format::Text, false);
    let two = snapshot(2);
    let (body, _) = scrapes.body(&two, T0 + S, Format::Text, false);
    assert!(String::from_utf8(body.to_vec())
        .expect("text")
        .contains("u1.service"));
}

#[test]
fn a_new_round_of_the_sampler_renders_only_the_sampled_parts_again() {
    let scrapes = Scrapes::new(&Families::default());
    let one = snapshot(3);
    let _ = scrapes.body(&one, T0 + S, Format::Text, false);
    let (before, pieces, _) = scrapes.kept(&one, Format::Text);
    // The same ledger, a new round and new own numbers.
    let two = Arc::new(Snapshot {
        sample: Arc::new(Sample::default()),
        ..(*one).clone()
    });
    let (after, _, _) = scrapes.kept(&two, Format::Text);
    for (i, (group, _)) in scrapes.groups.iter().enumerate() {
        let kept = matches!((&before[i], &after[i]), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
        assert!(!kept, "group {i} ({group:?}) is rendered again");
    }
    let _ = scrapes.body(&two, T0 + S, Format::Text, false);
    let (_, again, _) = scrapes.kept(&two, Format::Text);
    assert!(Arc::ptr_eq(&pieces, &again), "the units' families are kept");
    let (body, _) = scrapes.body(&two, T0 + S, Format::Text, false);
    assert_eq!(
        String::from_utf8(body.to_vec()).expect("text"),
        metrics::render(&two, T0 + S, Format::Text, &Families::default())
    );
}

#[test]
fn an_event_renders_the_units_parts_again() {
    let scrapes = Scrapes::new(&Families::default());
    let one = snapshot(1);
    let _ = scrapes.body(&one, T0 + S, Format::Text, false);
    let two = after(
        &one,
        "u0.service",
        Transition::State {
            state: ActiveState::Failed,
            sub_state: Some("failed".into()),
        },
    );
    let (body, _) = scrapes.body(&two, T0 + 2 * S, Format::Text, false);
    let text = String::from_utf8(body.to_vec()).expect("text");
    assert!(text.contains("service_up{unit=\"u0.service\"} 0"), "{text}");
    assert_eq!(
        text,
        metrics::render(&two, T0 + 2 * S, Format::Text, &Families::default())
    );
}

#[test]
fn an_event_renders_again_only_the_piece_of_the_unit_it_changed() {
    let scrapes = Scrapes::new(&Families::default());
    let one = snapshot(3 * PIECE);
    let _ = scrapes.body(&one, T0 + S, Format::Text, false);
    let (_, before, _) = scrapes.kept(&one, Format::Text);
    let changed = format!("u{}.service", 3 * PIECE - 1);
    let two = after(
        &one,
        &changed,
        Transition::State {
            state: ActiveState::Failed,
            sub_state: Some("failed".into()),
        },
    );
    let position = two.ledger.view(T0).position(|v| v.unit == changed);
    let (body, _) = scrapes.body(&two, T0 + 2 * S, Format::Text, false);
    assert_eq!(
        String::from_utf8(body.to_vec()).expect("text"),
        metrics::render(&two, T0 + 2 * S, Format::Text, &Families::default())
    );
    let (_, then, _) = scrapes.kept(&two, Format::Text);
    let piece = position.expect("the unit") / PIECE;
    let families = |p: &Pieces| -> Vec<Vec<Arc<Segment>>> {
        p.runs
            .iter()
            .flat_map(|r| match r {
                Run::Pieces(f) => f.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
                Run::Whole(_) => panic!("units over one piece are kept in pieces"),
            })
            .collect()
    };
    for (a, b) in families(&before).iter().zip(&families(&then)) {
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert_eq!(
                Arc::ptr_eq(a, b),
                i != piece,
                "piece {i}; {changed} is in {piece}"
            );
        }
    }
}

#[test]
fn a_unit_that_appears_is_rendered_in_its_place() {
    let scrapes = Scrapes::new(&Families::default());
    let one = snapshot(PIECE + 1);
    let _ = scrapes.body(&one, T0 + S, Format::Text, false);
    let two = after(
        &one,
        "a.service",
        Transition::Seen {
            state: ActiveState::Active,
            sub_state: "running".into(),
            n_restarts: Some(0),
        },
    );
    for gzip in [false, true] {
        let (body, gzipped) = scrapes.body(&two, T0 + 2 * S, Format::Text, gzip);
        let body = body.to_vec();
        let text = if gzipped {
            gunzip(&body)
        } else {
            String::from_utf8(body).expect("text")
        };
        assert_eq!(
            text,
            metrics::render(&two, T0 + 2 * S, Format::Text, &Families::default())
        );
    }
}
