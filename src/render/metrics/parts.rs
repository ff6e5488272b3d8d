//! The exposition in parts: which parts the families that are on make, and
//! how each is rendered from a snapshot. A scrape caches parts apart
//! (`http::scrape`): those that read the time are rendered on every scrape,
//! a per-unit family in pieces of units so that an event renders again only
//! the piece of the unit it changed.

use std::borrow::Cow;

use super::{
    Families, HostFamily, SampleFamily, UnitFamily, HOST_FAMILIES, SAMPLE_FAMILIES, SELF_FAMILIES,
    UNIT_FAMILIES,
};
use crate::ledger::{key, UnitView, Usec};
use crate::render::exposition::{escape_label, Format, Writer};
use crate::sample::UnitSample;
use crate::snapshot::Snapshot;

/// A piece of the exposition, rendered on its own: one per-unit family,
/// one sampled per-unit family, the host's families, the families about
/// unitwatch, or the end.
#[derive(Clone, Copy)]
pub enum Part {
    Unit(&'static UnitFamily),
    Sampled(&'static SampleFamily),
    Host(&'static HostFamily),
    Own,
    End,
}

impl Part {
    /// Whether the part changes with the time of the read alone.
    pub fn reads_now(&self) -> bool {
        matches!(self, Part::Unit(f) if f.reads_now.is_some())
    }
}

/// The parts of an exposition with the families `families` leaves on, in order.
pub fn parts(families: &Families) -> Vec<Part> {
    let mut parts: Vec<Part> = UNIT_FAMILIES
        .iter()
        .filter(|f| families.exposes(f))
        .map(Part::Unit)
        .collect();
    parts.extend(
        SAMPLE_FAMILIES
            .iter()
            .filter(|f| families.on(f.key()))
            .map(Part::Sampled),
    );
    parts.extend(
        HOST_FAMILIES
            .iter()
            .filter(|f| families.on(f.name))
            .map(Part::Host),
    );
    parts.extend([Part::Own, Part::End]);
    parts
}

/// Renders `snapshot` as of `now` in `format`, with the families `families`
/// leaves on.
pub fn render(snapshot: &Snapshot, now: Usec, format: Format, families: &Families) -> String {
    render_parts(snapshot, &labelled(snapshot, now), format, &parts(families)).concat()
}

/// A unit's view, with its labels escaped once per render rather than once
/// per sample: `unit`, and `user` for a unit of a user's manager.
pub struct Labelled<'a> {
    unit: Cow<'a, str>,
    user: Option<Cow<'a, str>>,
    pub view: UnitView<'a>,
    /// Its account's version ([`crate::ledger::Ledger::versions`]).
    pub version: u64,
}

/// Every unit of `snapshot` as of `now`, labelled, in the ledger's order.
pub fn labelled(snapshot: &Snapshot, now: Usec) -> Vec<Labelled<'_>> {
    snapshot
        .ledger
        .lazy_view(now)
        .map(|(version, view)| Labelled::new(view(), version))
        .collect()
}

impl<'a> Labelled<'a> {
    /// The unit of `view`, whose account is at `version`.
    pub fn new(view: UnitView<'a>, version: u64) -> Labelled<'a> {
        let (unit, user) = key::split(view.unit);
        Labelled {
            unit: escape_label(unit),
            user: user.map(escape_label),
            view,
            version,
        }
    }
}

/// The header (`# HELP`, `# TYPE`, ...) of the per-unit family `f`.
pub fn unit_header(f: &UnitFamily, format: Format) -> String {
    let mut out = String::new();
    Writer::new(&mut out, format).family(f.name, f.help, f.kind, f.unit);
    out
}

/// The samples of the per-unit family `f` for `units`, without its header,
/// appended to `out`: a family is rendered in pieces of units, so a scrape
/// renders again only the pieces whose units changed.
pub fn unit_samples(f: &UnitFamily, units: &[Labelled<'_>], format: Format, out: &mut String) {
    let mut w = Writer::new(out, format);
    w.resume(f.name, f.kind, f.unit);
    write_unit_samples(f, units, &mut w);
}

fn write_unit_samples(f: &UnitFamily, units: &[Labelled<'_>], w: &mut Writer<'_>) {
    for u in units {
        let own = [
            ("unit", &*u.unit),
            ("user", u.user.as_deref().unwrap_or("")),
        ];
        let own = &own[..if u.user.is_some() { 2 } else { 1 }];
        (f.samples)(&u.view, &mut |extra, value| {
            with_labels(own, extra, |labels| w.sample(labels, value))
        });
    }
}

/// Renders each of `parts`, the units' from `units` (see [`labelled`]).
pub fn render_parts(
    snapshot: &Snapshot,
    units: &[Labelled<'_>],
    format: Format,
    parts: &[Part],
) -> Vec<String> {
    // The sampler's units (the system manager's only), escaped likewise;
    // not for a scrape between rounds, which renders none of their parts.
    let sampled: Vec<(Cow<'_, str>, &UnitSample)> =
        if parts.iter().any(|p| matches!(p, Part::Sampled(_))) {
            snapshot
                .sample
                .units
                .iter()
                .map(|(unit, s)| (escape_label(unit), s))
                .collect()
        } else {
            Vec::new()
        };
    parts
        .iter()
        .map(|part| {
            // Sized up front (about 70 bytes a sample) rather than grown by
            // doubling, which for thousands of units would copy megabytes.
            let mut out = String::with_capacity(512 + units.len() * 80);
            let mut w = Writer::new(&mut out, format);
            match part {
                Part::Unit(f) => {
                    w.family(f.name, f.help, f.kind, f.unit);
                    write_unit_samples(f, units, &mut w);
                }
                Part::Sampled(f) => {
                    w.family(f.name, f.help, f.kind, f.unit);
                    for (unit, sample) in &sampled {
                        let own = [("unit", &**unit)];
                        (f.samples)(sample, &mut |extra, value| {
                            with_labels(&own, extra, |labels| w.sample(labels, value))
                        });
                    }
                }
                Part::Host(f) => {
                    w.family(f.name, f.help, f.kind, None);
                    if let Some(host) = &snapshot.sample.host {
                        (f.samples)(host, &mut |labels, value| w.sample(labels, value));
                    }
                }
                Part::Own => {
                    for f in SELF_FAMILIES {
                        // A family without samples (the user managers', when
                        // none is followed) is left out.
                        let mut samples = Vec::new();
                        (f.samples)(snapshot, &mut |labels, value| {
                            let labels: Vec<(String, String)> = labels
                                .iter()
                                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                                .collect();
                            samples.push((labels, value));
                        });
                        if samples.is_empty() {
                            continue;
                        }
                        w.family(f.name, f.help, f.kind, None);
                        for (labels, value) in samples {
                            let labels: Vec<(&str, &str)> = labels
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.as_str()))
                                .collect();
                            w.sample(&labels, value);
                        }
                    }
                }
                Part::End => w.finish(),
            }
            out
        })
        .collect()
}

/// Calls `f` with the labels `own` then `extra`, without allocating for the
/// few labels samples have.
fn with_labels<'l>(
    own: &[(&'l str, &'l str)],
    extra: &[(&'l str, &'l str)],
    f: impl FnOnce(&[(&'l str, &'l str)]),
) {
    const FEW: usize = 6;
    let n = own.len() + extra.len();
    if n <= FEW {
        let mut all = [("", ""); FEW];
        all[..own.len()].copy_from_slice(own);
        all[own.len()..n].copy_from_slice(extra);
        f(&all[..n]);
    } else {
        let mut all = own.to_vec();
        all.extend_from_slice(extra);
        f(&all);
    }
}
