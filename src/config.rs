//! The configuration file: its schema, defaults and validation.
//!
//! Every error names the file, the line and column, and the key it is about,
//! in one line: `FILE:LINE:COLUMN: KEY: what is wrong`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::select::Selector;

/// Where the configuration is read from unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/unitwatch/config.toml";
/// The port registered for unitwatch's default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9567";
/// Where state is kept unless `state.dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/unitwatch";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `server.listen`
    pub listen: SocketAddr,
    /// `watch.units` and `watch.exclude`
    pub watch: Selector,
    /// `watch.max_units`
    pub max_units: usize,
    /// `state.dir`
    pub state_dir: PathBuf,
    /// `journal.backfill`: how far back to read the journal on a first start.
    pub backfill: Duration,
    /// `journal.directory`: read journal files from this directory instead
    /// of the system journal (a container's or a test system's journal).
    pub journal_directory: Option<PathBuf>,
    /// `server.web_config`: the web configuration file (TLS, basic auth),
    /// unless `--web.config.file` names one.
    pub web_config: Option<PathBuf>,
}

/// The default of `journal.backfill`.
pub const DEFAULT_BACKFILL: &str = "7d";

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    server: RawServer,
    watch: Option<Spanned<RawWatch>>,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    journal: RawJournal,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    backfill: Option<Spanned<String>>,
    directory: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    web_config: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    units: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    max_units: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<Spanned<String>>,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |offset: usize, key: Option<&str>, message: String| {
            let (line, column) = line_column(text, offset);
            ConfigError::Invalid {
                path: path.display().to_string(),
                line,
                column,
                key: one_line(&key.map_or_else(|| key_at(text, offset), str::to_owned)),
                message: one_line(&message),
            }
        };
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let message: Vec<&str> = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            invalid(offset, None, message.join("; "))
        })?;

        let listen = match raw.server.listen {
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| invalid(0, Some("server.listen"), "bad built-in default".into()))?,
            Some(s) => s.get_ref().parse().map_err(|_| {
                invalid(
                    s.span().start,
                    Some("server.listen"),
                    format!("`{}` is not an address of the form IP:PORT", s.get_ref()),
                )
            })?,
        };

        let Some(watch) = raw.watch else {
            return Err(invalid(
                text.len(),
                Some("watch.units"),
                "missing: a [watch] table with `units = [...]` is required".into(),
            ));
        };
        let watch_span = watch.span();
        let watch = watch.into_inner();
        if watch.units.get_ref().is_empty() {
            return Err(invalid(
                watch.units.span().start.max(watch_span.start),
                Some("watch.units"),
                "empty: list at least one unit name or glob pattern".into(),
            ));
        }
        let mut selector = Selector::default();
        for (list, key) in [
            (watch.units.get_ref(), "watch.units"),
            (&watch.exclude, "watch.exclude"),
        ] {
            for pattern in list {
                let added = if key == "watch.units" {
                    selector.include(pattern.get_ref())
                } else {
                    selector.exclude(pattern.get_ref())
                };
                added.map_err(|why| {
                    invalid(
                        pattern.span().start,
                        Some(key),
                        format!("bad glob `{}`: {why}", pattern.get_ref()),
                    )
                })?;
            }
        }

        let max_units = match watch.max_units {
            None => crate::ledger::DEFAULT_MAX_UNITS,
            Some(n) => usize::try_from(*n.get_ref())
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    invalid(
                        n.span().start,
                        Some("watch.max_units"),
                        format!("{} is not a number of units (1 or more)", n.get_ref()),
                    )
                })?,
        };

        let path_value = |s: Spanned<String>, key: &str| {
            if s.get_ref().is_empty() {
                Err(invalid(s.span().start, Some(key), "empty path".into()))
            } else {
                Ok(PathBuf::from(s.into_inner()))
            }
        };
        let state_dir = match raw.state.dir {
            None => PathBuf::from(DEFAULT_STATE_DIR),
            Some(s) => path_value(s, "state.dir")?,
        };

        let backfill = match raw.journal.backfill {
            None => parse_duration(DEFAULT_BACKFILL).unwrap_or_default(),
            Some(s) => parse_duration(s.get_ref()).ok_or_else(|| {
                invalid(
                    s.span().start,
                    Some("journal.backfill"),
                    format!(
                        "`{}` is not a duration such as \"0\", \"90s\", \"15m\", \"12h\", \"7d\" or \"2w\"",
                        s.get_ref()
                    ),
                )
            })?,
        };
        let journal_directory = raw
            .journal
            .directory
            .map(|s| path_value(s, "journal.directory"))
            .transpose()?;
        let web_config = raw
            .server
            .web_config
            .map(|s| path_value(s, "server.web_config"))
            .transpose()?;

        Ok(Config {
            path: path.to_owned(),
            listen,
            watch: selector,
            max_units,
            state_dir,
            backfill,
            journal_directory,
            web_config,
        })
    }
}

/// `"0"` or a whole number with a unit: `s`, `m`, `h`, `d`, `w`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(seconds).map(Duration::from_secs)
}

/// `text` with control characters and line separators escaped (`\n`,
/// `\u{2028}`), so that an error quoting a value stays on one line.
fn one_line(text: &str) -> String {
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

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The dotted key a byte offset belongs to: the `key = ` of its line under the
/// nearest `[table]` header above it, or that header itself.
fn key_at(text: &str, offset: usize) -> String {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    // The name of a `[table]` or `[[array]]` header; empty for `[]` or `[`.
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        l.strip_prefix('[')
            .and_then(|r| r.trim_start_matches('[').split(']').next())
            .map(|h| h.trim().to_owned())
    };
    if let Some(h) = header(line) {
        return if h.is_empty() {
            "(top level)".into()
        } else {
            h
        };
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .find_map(header)
        .filter(|t| !t.is_empty());
    let key = line
        .split('=')
        .next()
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.starts_with(['"', '\'']))
        .map(str::to_owned);
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => "(top level)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match Config::parse(Path::new("/etc/unitwatch/config.toml"), text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    const SHIPPED: &str = include_str!("../config.toml");

    #[test]
    fn shipped_config_is_valid() {
        let c = Config::parse(Path::new("config.toml"), SHIPPED).expect("shipped config");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9567");
        assert!(c.watch.matches("aitbc-coordinator-api.service"));
        assert!(c.watch.matches("prometheus.service"));
        assert!(!c.watch.matches("ssh.service"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/unitwatch"));
        assert_eq!(c.backfill, Duration::from_secs(7 * 86_400));
        assert_eq!(c.journal_directory, None);
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("0", 0),
            ("90s", 90),
            ("15m", 900),
            ("12h", 43_200),
            ("7d", 604_800),
            ("2w", 1_209_600),
        ] {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in [
            "",
            "7",
            "d",
            "-1d",
            "1.5h",
            "7 days",
            "99999999999999999999w",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn defaults() {
        let c = Config::parse(Path::new("c.toml"), "[watch]\nunits = [\"a.service\"]\n")
            .expect("minimal config");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "[watch]\nunits = [\"a.service\"]\nbogus = 1\n",
                "/etc/unitwatch/config.toml:3:1: watch.bogus: unknown field `bogus`",
            ),
            (
                "[server]\nlisten = \"localhost\"\n[watch]\nunits = [\"a\"]\n",
                "/etc/unitwatch/config.toml:2:10: server.listen: `localhost` is not an address",
            ),
            (
                "[server]\nlisten = 9567\n[watch]\nunits = [\"a\"]\n",
                "/etc/unitwatch/config.toml:2:10: server.listen: invalid type: integer `9567`",
            ),
            (
                "[watch]\nunits = [\"aitbc-[.service\"]\n",
                "/etc/unitwatch/config.toml:2:10: watch.units: bad glob `aitbc-[.service`",
            ),
            (
                "[watch]\nunits = [\"a\"]\nexclude = [\"b\", \"[x\"]\n",
                "/etc/unitwatch/config.toml:3:17: watch.exclude: bad glob `[x`",
            ),
            (
                "[watch]\nunits = []\n",
                "/etc/unitwatch/config.toml:2:9: watch.units: empty",
            ),
            (
                "[server]\nlisten = \"0.0.0.0:9567\"\n",
                "/etc/unitwatch/config.toml:3:1: watch.units: missing",
            ),
            (
                "[watch\nunits = 1\n",
                "/etc/unitwatch/config.toml:1:7: watch:",
            ),
            (
                "[watch]\nunits = [\"a\"]\n[journal]\nbackfill = \"a week\"\n",
                "/etc/unitwatch/config.toml:4:12: journal.backfill: `a week` is not a duration",
            ),
            (
                "[watch]\nunits = [\"a\"]\nmax_units = 0\n",
                "/etc/unitwatch/config.toml:3:13: watch.max_units: 0 is not a number of units",
            ),
            (
                "[sever]\nlisten = \"0.0.0.0:1\"\n",
                "/etc/unitwatch/config.toml:1:2: sever: unknown field `sever`",
            ),
            // Found by fuzzing (fuzz/fuzz_targets/config.rs): a header
            // without a name gave an error naming an empty key.
            (
                "[]tcwh\nunits =1 \n",
                "/etc/unitwatch/config.toml:1:2: (top level): ",
            ),
            (
                "[\ntsits = 1\n",
                "/etc/unitwatch/config.toml:1:2: (top level): ",
            ),
            (
                "[]\nunits = 1\n",
                "/etc/unitwatch/config.toml:1:2: (top level): ",
            ),
            (
                "[[watch]]\nunits = [\"a\"]\n",
                "/etc/unitwatch/config.toml:1:1: watch: ",
            ),
            // Found by fuzzing: values quoted in errors kept their line
            // breaks, so the error took several lines.
            (
                "[server]\nlisten = '''sten ''$''\"\ner]\nlisten = '''",
                "/etc/unitwatch/config.toml:2:10: server.listen: `sten ''$''\"\\ner]\\nlisten = ` is not an address",
            ),
            (
                "[watch]\nunits = [\"a\\r\\n[\\u2028\"]\n",
                "/etc/unitwatch/config.toml:2:10: watch.units: bad glob `a\\r\\n[\\u{2028}`",
            ),
            (
                "[watch]\nunits = [\"a\"]\n[journal]\nbackfill = \"\"\"\n7 d\n\"\"\"\n",
                "/etc/unitwatch/config.toml:4:12: journal.backfill: `7 d\\n` is not a duration",
            ),
            (
                "[watch]\nunits = [\"a\"]\n\"x\\ry\" = 1\n",
                "/etc/unitwatch/config.toml:3:1: watch: unknown field `x\\ry`",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(
                got.starts_with(want),
                "for\n{text}\ngot:  {got}\nwant: {want}..."
            );
            assert!(!got.chars().any(char::is_control), "not one line: {got:?}");
        }
    }
}
