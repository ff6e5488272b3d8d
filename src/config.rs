//! The configuration file: its schema, defaults and validation.
//!
//! Every error names the file, the line and column, and the key it is about,
//! in one line: `FILE:LINE:COLUMN: KEY: what is wrong` ([`Error`], shared
//! with the web configuration). Values are checked by the types they are read
//! into ([`value`]), so the TOML parser itself says where a bad one is.

pub mod error;
pub mod value;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use self::error::Error;
pub use self::value::parse_duration;
use self::value::{HumanDuration, Interval, ListenAddress, NonEmptyPath, UnitCount, Units};
use crate::render::metrics::Families;
use crate::select::{Glob, Kinds, Selector};
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
    /// `watch.jobs` and `watch.services`
    pub kinds: Kinds,
    /// `watch.user_managers`: also follow every running user manager.
    pub user_managers: bool,
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
    /// `[metrics]`: the optional families turned on or off.
    pub families: Families,
    /// `resources.interval`: how often resources, sockets, watchdogs and
    /// the host are read.
    pub resources_interval: Duration,
    /// `resources.cgroup_root`: where the cgroup v2 hierarchy of the
    /// followed manager is (detected when not set).
    pub cgroup_root: Option<PathBuf>,
}

/// The default of `resources.interval`.
pub const DEFAULT_RESOURCES_INTERVAL: Duration = Duration::from_secs(5);

/// The default of `journal.backfill`.
pub const DEFAULT_BACKFILL: &str = "7d";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    server: RawServer,
    watch: Option<RawWatch>,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    journal: RawJournal,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    resources: RawResources,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawResources {
    interval: Option<Interval>,
    cgroup_root: Option<NonEmptyPath>,
}

/// `[metrics]`: `family = true|false` for each optional family, checked
/// against the families there are as it is read.
#[derive(Default)]
struct RawMetrics(Families);

impl<'de> Deserialize<'de> for RawMetrics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Table;
        impl<'de> serde::de::Visitor<'de> for Table {
            type Value = RawMetrics;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of family = true or false")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawMetrics, A::Error> {
                let mut families = Families::default();
                while let Some((key, on)) = map.next_entry::<String, bool>()? {
                    families.set(&key, on).map_err(serde::de::Error::custom)?;
                }
                Ok(RawMetrics(families))
            }
        }
        d.deserialize_map(Table)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    backfill: Option<HumanDuration>,
    directory: Option<NonEmptyPath>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<ListenAddress>,
    web_config: Option<NonEmptyPath>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    units: Units,
    #[serde(default)]
    exclude: Vec<Glob>,
    max_units: Option<UnitCount>,
    #[serde(default)]
    jobs: Vec<Glob>,
    #[serde(default)]
    services: Vec<Glob>,
    #[serde(default)]
    user_managers: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<NonEmptyPath>,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Error> {
        let raw: Raw = error::parse_toml(path, text)?;
        // The one thing serde cannot check: a [watch] table that is not
        // there at all. Said at the end of the file, where it would go.
        let Some(watch) = raw.watch else {
            return Err(Error::at_offset(
                path,
                text,
                text.len(),
                "watch.units",
                "missing: a [watch] table with `units = [...]` is required",
            ));
        };
        let listen = match raw.server.listen {
            Some(l) => l.0,
            None => default_listen(),
        };
        let backfill = match raw.journal.backfill {
            Some(d) => d.0,
            None => parse_duration(DEFAULT_BACKFILL).unwrap_or_default(),
        };
        Ok(Config {
            path: path.to_owned(),
            listen,
            watch: Selector::new(watch.units.0, watch.exclude),
            max_units: watch
                .max_units
                .map_or(crate::ledger::DEFAULT_MAX_UNITS, |n| n.0),
            kinds: Kinds::new(watch.jobs, watch.services),
            user_managers: watch.user_managers,
            state_dir: raw
                .state
                .dir
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), |p| p.0),
            backfill,
            journal_directory: raw.journal.directory.map(|p| p.0),
            web_config: raw.server.web_config.map(|p| p.0),
            families: raw.metrics.0,
            resources_interval: raw
                .resources
                .interval
                .map_or(DEFAULT_RESOURCES_INTERVAL, |i| i.0),
            cgroup_root: raw.resources.cgroup_root.map(|p| p.0),
        })
    }
}

/// [`DEFAULT_LISTEN`] as an address.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9567))
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
    fn defaults() {
        let c = Config::parse(Path::new("c.toml"), "[watch]\nunits = [\"a.service\"]\n")
            .expect("minimal config");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(default_listen().to_string(), DEFAULT_LISTEN);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.max_units, crate::ledger::DEFAULT_MAX_UNITS);
        assert_eq!(c.backfill, Duration::from_secs(7 * 86_400));
        assert!(!c.user_managers);
    }

    #[test]
    fn watch_user_managers_turns_on_the_user_managers() {
        let c = Config::parse(
            Path::new("c.toml"),
            "[watch]\nunits = [\"a.service\"]\nuser_managers = true\n",
        )
        .expect("config");
        assert!(c.user_managers);
        let e = err("[watch]\nunits = [\"a\"]\nuser_managers = \"yes\"\n");
        assert!(
            e.starts_with(
                "/etc/unitwatch/config.toml:3:17: watch.user_managers: invalid type: string"
            ),
            "{e}"
        );
        let e = err("[watch]\nunits = [\"a\"]\nuser_manager = true\n");
        assert!(
            e.starts_with("/etc/unitwatch/config.toml:3:1: watch.user_manager: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn watch_jobs_and_services_override_what_properties_say() {
        let c = Config::parse(
            Path::new("c.toml"),
            "[watch]\nunits = [\"a-*\"]\njobs = [\"a-batch*\"]\nservices = [\"a-*\"]\n",
        )
        .expect("config");
        use crate::ledger::Kind;
        assert_eq!(c.kinds.kind("a-batch.service", false), Kind::Job);
        assert_eq!(c.kinds.kind("a-once.service", true), Kind::Service);
        let plain =
            Config::parse(Path::new("c.toml"), "[watch]\nunits = [\"a-*\"]\n").expect("config");
        assert_eq!(plain.kinds.kind("a-once.service", true), Kind::Job);
    }

    #[test]
    fn a_bad_pattern_in_watch_jobs_names_its_place() {
        let e = err("[watch]\nunits = [\"a\"]\njobs = [\"[x\"]\n");
        assert!(
            e.starts_with("/etc/unitwatch/config.toml:3:") && e.contains("watch.jobs"),
            "{e}"
        );
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
                "[watch]\nunits = [\"a\"]\n[metrics]\nstate = false\nup = false\n",
                "/etc/unitwatch/config.toml:3:1: metrics: no optional family `up`; the optional families are state, state_change_timestamp",
            ),
            (
                "[watch]\nunits = [\"a\"]\n[resources]\ninterval = \"0\"\n",
                "/etc/unitwatch/config.toml:4:12: resources.interval: `0` is not between 1s and 1h",
            ),
            (
                "[watch]\nunits = [\"a\"]\n[resources]\nevery = \"5s\"\n",
                "/etc/unitwatch/config.toml:4:1: resources.every: unknown field `every`",
            ),
            (
                "[watch]\nunits = [\"a\"]\n[metrics]\nstate = \"no\"\n",
                "/etc/unitwatch/config.toml:4:9: metrics.state: invalid type: string",
            ),
            (
                "[server]\nlisten = \"0.0.0.0:9567\"\n",
                "/etc/unitwatch/config.toml:3:1: watch.units: missing",
            ),
            // TOML syntax: about no key (serde never saw the document).
            (
                "[watch\nunits = 1\n",
                "/etc/unitwatch/config.toml:1:7: (top level): invalid table header",
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
                "[watch]\nexclude = [\"a\"]\n",
                "/etc/unitwatch/config.toml:1:1: watch: missing field `units`",
            ),
            (
                "[watch]\nunits = [\"a\"]\n[state]\ndir = \"\"\n",
                "/etc/unitwatch/config.toml:4:7: state.dir: empty path",
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
                "/etc/unitwatch/config.toml:3:1: watch.x\\ry: unknown field `x\\ry`",
            ),
        ];
        let mut wrong = Vec::new();
        for (text, want) in cases {
            let got = err(text);
            if !got.starts_with(want) {
                wrong.push(format!("for\n{text}\ngot:  {got}\nwant: {want}..."));
            }
            assert!(!got.chars().any(char::is_control), "not one line: {got:?}");
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    }
}
