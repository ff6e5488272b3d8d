//! The two text formats Prometheus scrapers speak, written from one
//! description of each family: OpenMetrics 1.0 (what Prometheus asks for
//! first) and the Prometheus text format 0.0.4 (what `vmagent`, older
//! scrapers and a plain `curl` get), chosen from the request's `Accept`
//! header the way client_golang's `expfmt.Negotiate` does.
//!
//! Written here rather than with prometheus-client, which writes
//! OpenMetrics only and label values unescaped. The two differ only in
//! naming and framing: OpenMetrics names a counter
//! family without `_total` and its samples with it, has an `info` type and
//! a `# UNIT` line, and ends with `# EOF`; 0.0.4 uses the sample name
//! throughout, shows an info family as a gauge, and has neither.

use std::borrow::Cow;
use std::fmt::Write;

/// A scrape's text format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    /// OpenMetrics if `accept` asks for it, else the 0.0.4 text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|a| {
            accepts(a, |media| {
                media.eq_ignore_ascii_case("application/openmetrics-text")
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Whether the header list `value` (`Accept`, `Accept-Encoding`: items
/// separated by commas, each with `;`-parameters) names an item `wanted`
/// takes without refusing it with `q=0`.
pub fn accepts(value: &str, wanted: impl Fn(&str) -> bool) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| p.replace(' ', "") == "q=0");
        wanted(name) && !refused
    })
}

/// What a family's samples mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    /// One sample of value 1 whose labels are the information.
    Info,
    /// Buckets (`_bucket` with `le`), `_sum` and `_count`: each sample names
    /// its suffix in a [`SUFFIX`] label.
    Histogram,
}

/// The label key by which a histogram's sample names its suffix
/// (`_bucket`, `_sum`, `_count`); it is not written as a label.
pub const SUFFIX: &str = "\0suffix";

/// A sample's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

/// Writes families and their samples in one format.
pub struct Writer<'a> {
    out: &'a mut String,
    format: Format,
    /// The current family's sample name.
    sample: String,
}

/// `help` with backslashes and line breaks escaped, as both formats want.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value as both formats want it: backslash, double quote and line
/// break escaped (unit names carry systemd's `\x2d` escapes).
pub fn escape_label(value: &str) -> Cow<'_, str> {
    // Unit names almost never hold these: borrowed, a scrape of thousands
    // of units allocates nothing for their labels.
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut String, format: Format) -> Writer<'a> {
        Writer {
            out,
            format,
            sample: String::new(),
        }
    }

    /// Begins the family `name` (with `unit`, e.g. `seconds`, appended).
    pub fn family(&mut self, name: &str, help: &str, kind: Kind, unit: Option<&str>) {
        let family = self.resume(name, kind, unit);
        let (described, kind_name) = match (self.format, kind) {
            (Format::OpenMetrics, Kind::Gauge) => (family.as_str(), "gauge"),
            (Format::OpenMetrics, Kind::Counter) => (family.as_str(), "counter"),
            (Format::OpenMetrics, Kind::Info) => (family.as_str(), "info"),
            (_, Kind::Histogram) => (family.as_str(), "histogram"),
            (Format::Text, Kind::Counter) => (self.sample.as_str(), "counter"),
            (Format::Text, _) => (self.sample.as_str(), "gauge"),
        };
        let _ = writeln!(self.out, "# HELP {described} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {described} {kind_name}");
        if let (Format::OpenMetrics, Some(u)) = (self.format, unit) {
            let _ = writeln!(self.out, "# UNIT {family} {u}");
        }
    }

    /// Goes on with the family `name`, whose header is written elsewhere
    /// (its samples are rendered in pieces); returns the family's name.
    pub fn resume(&mut self, name: &str, kind: Kind, unit: Option<&str>) -> String {
        let family = match unit {
            Some(u) => format!("{name}_{u}"),
            None => name.to_owned(),
        };
        self.sample = match kind {
            Kind::Counter => format!("{family}_total"),
            Kind::Info => format!("{family}_info"),
            Kind::Gauge | Kind::Histogram => family.clone(),
        };
        family
    }

    /// One sample of the current family; label values already escaped.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: Value) {
        self.out.push_str(&self.sample);
        let mut written = 0;
        for (k, v) in labels {
            if *k == SUFFIX {
                self.out.push_str(v);
            }
        }
        for (k, v) in labels.iter().filter(|(k, _)| *k != SUFFIX) {
            self.out.push(if written == 0 { '{' } else { ',' });
            written += 1;
            self.out.push_str(k);
            self.out.push_str("=\"");
            self.out.push_str(v);
            self.out.push('"');
        }
        if written > 0 {
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(self.out, value);
        self.out.push('\n');
    }

    /// Ends the exposition.
    pub fn finish(self) {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
    }
}

/// Writes a sample's value, as [`Writer::sample`] ends its line.
pub fn write_value(out: &mut String, value: Value) {
    // itoa and ryu rather than `write!`: a scrape of thousands of units
    // writes tens of thousands of numbers, and the formatting machinery
    // was a third of its time. ryu writes the same shortest digits as
    // `Display`, without an exponent between 1e-5 and 1e16; outside that
    // `Display` writes them (it never uses one). A whole number keeps
    // its `.0`, as ryu writes it, so it reads as a float.
    match value {
        Value::Int(n) => out.push_str(itoa::Buffer::new().format(n)),
        Value::Float(x) if x.is_nan() => out.push_str("NaN"),
        Value::Float(x) if x.is_infinite() => out.push_str(if x > 0.0 { "+Inf" } else { "-Inf" }),
        Value::Float(x) if x == 0.0 || (1e-5..1e15).contains(&x.abs()) => {
            out.push_str(ryu::Buffer::new().format_finite(x))
        }
        Value::Float(x) => {
            let _ = write!(out, "{x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(x: f64) -> String {
        let mut out = String::new();
        let mut w = Writer::new(&mut out, Format::Text);
        w.resume("x", Kind::Gauge, None);
        w.sample(&[], Value::Float(x));
        out.trim_start_matches("x ").trim_end().to_owned()
    }

    #[test]
    fn a_float_is_written_with_the_shortest_digits_that_read_back_as_it() {
        for x in [
            0.0,
            -0.0,
            1.0,
            9.0,
            0.5,
            0.1,
            1e-5,
            1.5e-6,
            123456.789012,
            1796191214.215221,
            1e14,
            99999999999999.9,
            1e15,
            2.5e15,
            1e16,
            1e300,
            5e-324,
            -3.25,
        ] {
            let text = written(x);
            let back: f64 = text.parse().expect("a float");
            assert_eq!(back.to_bits(), x.to_bits(), "{x} written as {text}");
            let display = if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{x:.1}")
            } else {
                format!("{x}")
            };
            assert_eq!(text, display, "as Display writes {x}");
        }
    }

    fn one(format: Format, kind: Kind, unit: Option<&str>) -> String {
        let mut out = String::new();
        let mut w = Writer::new(&mut out, format);
        w.family("x_up", "Help with a \\ and\na break.", kind, unit);
        w.sample(&[("unit", "a\\x2db.service")], Value::Float(2.0));
        w.finish();
        out
    }

    #[test]
    fn prometheus_asks_for_openmetrics_and_gets_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
    }

    #[test]
    fn anything_else_gets_the_text_format() {
        for accept in [
            None,
            Some("text/plain"),
            Some("*/*"),
            Some("application/openmetrics-text;q=0"),
        ] {
            assert_eq!(Format::negotiate(accept), Format::Text, "{accept:?}");
        }
    }

    #[test]
    fn a_counter_is_named_by_format() {
        assert_eq!(
            one(Format::OpenMetrics, Kind::Counter, Some("seconds")),
            "# HELP x_up_seconds Help with a \\\\ and\\na break.\n# TYPE x_up_seconds counter\n# UNIT x_up_seconds seconds\nx_up_seconds_total{unit=\"a\\x2db.service\"} 2.0\n# EOF\n"
        );
        assert_eq!(
            one(Format::Text, Kind::Counter, Some("seconds")),
            "# HELP x_up_seconds_total Help with a \\\\ and\\na break.\n# TYPE x_up_seconds_total counter\nx_up_seconds_total{unit=\"a\\x2db.service\"} 2.0\n"
        );
    }

    #[test]
    fn an_info_family_is_a_gauge_in_the_text_format() {
        assert!(one(Format::OpenMetrics, Kind::Info, None).contains("# TYPE x_up info\nx_up_info{"));
        assert!(one(Format::Text, Kind::Info, None).contains("# TYPE x_up_info gauge\nx_up_info{"));
    }

    #[test]
    fn values_keep_their_kind() {
        let mut out = String::new();
        let mut w = Writer::new(&mut out, Format::Text);
        w.family("v", "v", Kind::Gauge, None);
        for v in [
            Value::Int(3),
            Value::Float(0.25),
            Value::Float(1.7e9),
            Value::Float(f64::INFINITY),
        ] {
            w.sample(&[], v);
        }
        assert_eq!(
            out.lines().skip(2).collect::<Vec<_>>(),
            ["v 3", "v 0.25", "v 1700000000.0", "v +Inf"]
        );
    }
}
