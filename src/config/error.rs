//! The one error type of unitwatch's two configuration files, `config.toml`
//! (TOML) and the web configuration (YAML): `FILE: cannot read`, or
//! `FILE:LINE:COLUMN: KEY: what is wrong`, always on one line.
//!
//! Both files are parsed through `serde_path_to_error`, so the key comes from
//! serde's own walk of the document and the line and column from the parser
//! (a TOML span, a YAML mark); values are checked by the newtypes they are
//! read into ([`crate::config::value`]), inside that walk. Errors found after
//! parsing (one key against another, a file a key names) are placed in YAML
//! by walking the document once more to the key ([`yaml_key_position`]).

use std::fmt;
use std::path::Path;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_path_to_error::Segment;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read; the reason is the source.
    #[error("{path}: cannot read")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file says something unitwatch cannot use.
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: String,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        /// The dotted key, e.g. `server.listen`; `(top level)` for errors
        /// about no key (TOML syntax, a YAML document that is not a mapping).
        key: String,
        message: String,
    },
}

/// What an error at the top of a file, or about no key, names as its key.
const TOP_LEVEL: &str = "(top level)";

impl Error {
    /// `path` could not be read.
    pub(crate) fn read(path: &Path, source: std::io::Error) -> Error {
        Error::Read {
            path: path.display().to_string(),
            source,
        }
    }

    /// An error about `key` at `line`:`column` of `path`; key and message are
    /// made to fit on one line.
    pub(crate) fn invalid(
        path: &Path,
        (line, column): (usize, usize),
        key: &str,
        message: &str,
    ) -> Error {
        let key = if key.trim().is_empty() {
            TOP_LEVEL
        } else {
            key
        };
        Error::Invalid {
            path: path.display().to_string(),
            line,
            column,
            key: one_line(key),
            message: one_line(message),
        }
    }

    /// An error about `key` at byte `offset` of `text`, read from `path`.
    pub(crate) fn at_offset(
        path: &Path,
        text: &str,
        offset: usize,
        key: &str,
        message: &str,
    ) -> Error {
        Error::invalid(path, line_column(text, offset), key, message)
    }

    /// An error about the key at `keys` in the YAML `text`, found after
    /// parsing: placed where that key is written (the deepest of `keys`
    /// found; 1:1 if not even the first is).
    pub(crate) fn at_yaml_key(path: &Path, text: &str, keys: &[&str], message: &str) -> Error {
        let mut position = (1, 1);
        for depth in (1..=keys.len()).rev() {
            if let Some(p) = yaml_key_position(text, &keys[..depth]) {
                position = yaml_clamp(text, p);
                break;
            }
        }
        Error::invalid(path, position, &keys.join("."), message)
    }
}

/// `text` as a `T`, or the first error in it, naming `path`.
pub(crate) fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let key = dotted(e.path());
        let e = e.into_inner();
        let offset = e.span().map_or(0, |s| s.start);
        // Errors about no key are the TOML parser's own, in lines of prose
        // ("invalid table header\nexpected `.`, `]`"): joined. Any other
        // message may quote a value or key, whose line breaks are escaped.
        let message = if key.is_empty() {
            let lines: Vec<&str> = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            lines.join("; ")
        } else {
            e.message().to_owned()
        };
        Error::at_offset(path, text, offset, &key, &message)
    })
}

/// `text` as a `T`, or the first error in it, naming `path`.
pub(crate) fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text)).map_err(|e| {
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let key = dotted(e.path());
        let e = e.into_inner();
        let position = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        Error::invalid(
            path,
            yaml_clamp(text, position),
            &key,
            &yaml_message(&e, &segments),
        )
    })
}

/// The dotted key of a serde path: map keys and struct fields, without
/// sequence indices (the line and column say which element) or unknown parts.
fn dotted(path: &serde_path_to_error::Path) -> String {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(key.as_str()),
            Segment::Enum { variant } => Some(variant.as_str()),
            Segment::Seq { .. } | Segment::Unknown => None,
        })
        .collect();
    keys.join(".")
}

/// serde_yaml_ng's message without what the error type says elsewhere: its
/// own path in front (`tls_server_config: unknown field ...`, the path of
/// `segments` or a part of it, as serde_yaml_ng writes paths) and the
/// position after (` at line 3 column 3`).
fn yaml_message(e: &serde_yaml_ng::Error, segments: &[Segment]) -> String {
    let mut text = e.to_string();
    if let Some(l) = e.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(stripped) = text.strip_suffix(&suffix) {
            text.truncate(stripped.len());
        }
    }
    for depth in (1..=segments.len()).rev() {
        let prefix = format!("{}: ", yaml_path(&segments[..depth]));
        if let Some(rest) = text.strip_prefix(&prefix) {
            return rest.to_owned();
        }
    }
    text
}

/// A path written as serde_yaml_ng writes it: `a.b`, `a[0]`, `a.?`.
fn yaml_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// A YAML position, moved inside `text`: libyaml puts the end of a text that
/// does not end with a line break at the start of a line after it (found by
/// fuzzing: `{` gave line 2 of a one-line file). Lines end as YAML ends them:
/// at `\r\n`, `\r`, `\n`, NEL, LS and PS.
fn yaml_clamp(text: &str, (line, column): (usize, usize)) -> (usize, usize) {
    let mut lengths = vec![0usize];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lengths.push(0);
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => lengths.push(0),
            _ => {
                if let Some(last) = lengths.last_mut() {
                    *last += 1;
                }
            }
        }
    }
    let last = lengths.len();
    if line > last {
        // Past the end: at the end of the last line.
        return (last, lengths[last - 1] + 1);
    }
    let line = line.max(1);
    (line, column.clamp(1, lengths[line - 1] + 1))
}

/// `text` with control characters and line separators escaped (`\n`,
/// `\u{2028}`), so that an error quoting a value stays on one line.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where the mapping key at the end of `keys` (a path of keys from the top
/// of the document) is written in the YAML `text`: 1-based line and column,
/// or None if it is not there.
///
/// The YAML parser says where: the document is walked again down `keys`,
/// and reading the last key fails on purpose, so the parser marks the error
/// with that key's position.
pub fn yaml_key_position(text: &str, keys: &[&str]) -> Option<(usize, usize)> {
    if keys.is_empty() {
        return None;
    }
    let probe = Probe { keys };
    match probe.deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
        Ok(()) => None,
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        Err(_) => None,
    }
}

/// The error [`Probe`] raises on reaching its key.
const FOUND: &str = "unitwatch: the key looked for is here";

/// Walks a document down `keys`; fails with [`FOUND`] when reading the last.
struct Probe<'a> {
    keys: &'a [&'a str],
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((want, rest)) = self.keys.split_first() else {
            return Ok(());
        };
        while let Some(hit) = map.next_key_seed(KeyProbe {
            want,
            last: rest.is_empty(),
        })? {
            if hit {
                return map.next_value_seed(Probe { keys: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads one mapping key: true if it is `want` (and the walk goes on into
/// its value); if it is and it is the `last` key, fails with [`FOUND`].
struct KeyProbe<'a> {
    want: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key == self.want, self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (hit, _) => Ok(hit),
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_key_position_stays_inside_the_parent() {
        let text = "a:\n  x: 1\nb:\n  x: 2\n";
        assert_eq!(yaml_key_position(text, &["b", "x"]), Some((4, 3)));
        assert_eq!(yaml_key_position(text, &["a"]), Some((1, 1)));
        assert_eq!(yaml_key_position(text, &["a", "y"]), None);
        assert_eq!(yaml_key_position(text, &["c"]), None);
    }

    #[test]
    fn yaml_key_position_reads_flow_style_and_quoted_keys() {
        let text = "# c\n{a: {'x': 1}, \"b\": {x: 2}}\n";
        assert_eq!(yaml_key_position(text, &["b", "x"]), Some((2, 21)));
    }

    #[test]
    fn at_yaml_key_falls_back_to_the_parent() {
        let e = Error::at_yaml_key(
            Path::new("/w.yml"),
            "\nt:\n  a: 1\n",
            &["t", "b"],
            "missing",
        );
        assert_eq!(e.to_string(), "/w.yml:2:1: t.b: missing");
    }

    #[test]
    fn yaml_positions_stay_inside_the_text() {
        assert_eq!(yaml_clamp("{", (2, 1)), (1, 2));
        assert_eq!(yaml_clamp("a\r\nbc\u{2028}d", (2, 9)), (2, 3));
        assert_eq!(yaml_clamp("a\n", (2, 1)), (2, 1));
        let e = parse_yaml::<serde_yaml_ng::Value>(Path::new("/w.yml"), "{").expect_err("bad");
        assert!(
            e.to_string().starts_with("/w.yml:1:2: (top level): "),
            "{e}"
        );
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\nçd", 5), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
        assert_eq!(line_column("ç", 1), (1, 1));
    }

    #[test]
    fn one_line_escapes_line_breaks() {
        assert_eq!(one_line("a\nb\u{2028}c\td"), "a\\nb\\u{2028}c\\td");
    }
}
