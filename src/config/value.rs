//! Values of the configuration files that check themselves while they are
//! read: each newtype's `Deserialize` fails inside the parser's own handling
//! of the value, so the parser reports the value's position and serde its key.
//! The web configuration's newtypes (bcrypt hashes, headers, TLS versions)
//! live in [`crate::http::web_config`]; the glob of [`crate::select::Glob`]
//! is read here, since `select` knows nothing of configuration files.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::select::Glob;

/// A glob as `[watch]` gives it (here rather than in `select`, which
/// knows nothing of configuration files).
impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a unit name or glob pattern", |s| {
            Glob::new(s).map_err(|why| format!("bad glob `{s}`: {why}"))
        })
    }
}

/// Reads a string and turns it into a `T` with `parse`, whose error becomes
/// the parser's error at the string (`expecting` names what is wanted when
/// the value is not a string at all).
pub(crate) fn from_str<'de, D, T, F>(d: D, expecting: &'static str, parse: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    struct Parse<F> {
        expecting: &'static str,
        parse: F,
    }
    impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for Parse<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Parse { expecting, parse })
}

/// `server.listen`: an `IP:PORT` socket address.
#[derive(Debug, Clone, Copy)]
pub struct ListenAddress(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "an address of the form IP:PORT", |s| {
            s.parse()
                .map(ListenAddress)
                .map_err(|_| format!("`{s}` is not an address of the form IP:PORT"))
        })
    }
}

/// `journal.backfill`: `"0"` or a whole number with a unit (`s`, `m`, `h`,
/// `d`, `w`).
#[derive(Debug, Clone, Copy)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a duration such as \"7d\"", |s| {
            parse_duration(s).map(HumanDuration).ok_or_else(|| {
                format!(
                    "`{s}` is not a duration such as \"0\", \"90s\", \"15m\", \"12h\", \"7d\" or \"2w\""
                )
            })
        })
    }
}

/// `resources.interval`: a [`HumanDuration`] of 1 s to 1 h.
#[derive(Debug, Clone, Copy)]
pub struct Interval(pub Duration);

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a duration such as \"5s\"", |s| {
            match parse_duration(s) {
                Some(t) if t >= Duration::from_secs(1) && t <= Duration::from_secs(3600) => {
                    Ok(Interval(t))
                }
                Some(_) => Err(format!("`{s}` is not between 1s and 1h")),
                None => Err(format!("`{s}` is not a duration such as \"5s\" or \"1m\"")),
            }
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

/// A path that is not empty (`state.dir`, `journal.directory`,
/// `server.web_config`).
#[derive(Debug, Clone)]
pub struct NonEmptyPath(pub PathBuf);

impl<'de> Deserialize<'de> for NonEmptyPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a path", |s| {
            if s.is_empty() {
                Err("empty path".to_owned())
            } else {
                Ok(NonEmptyPath(PathBuf::from(s)))
            }
        })
    }
}

/// `watch.max_units`: 1 or more.
#[derive(Debug, Clone, Copy)]
pub struct UnitCount(pub usize);

impl<'de> Deserialize<'de> for UnitCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Count;
        impl Visitor<'_> for Count {
            type Value = UnitCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of units (1 or more)")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<UnitCount, E> {
                usize::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(UnitCount)
                    .ok_or_else(|| E::custom(format!("{n} is not a number of units (1 or more)")))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<UnitCount, E> {
                usize::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(UnitCount)
                    .ok_or_else(|| E::custom(format!("{n} is not a number of units (1 or more)")))
            }
        }
        d.deserialize_i64(Count)
    }
}

/// `watch.units`: at least one glob.
#[derive(Debug, Clone)]
pub struct Units(pub Vec<Glob>);

impl<'de> Deserialize<'de> for Units {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Units;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of unit names or glob patterns")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Units, A::Error> {
                let mut globs = Vec::new();
                while let Some(g) = seq.next_element()? {
                    globs.push(g);
                }
                if globs.is_empty() {
                    return Err(de::Error::custom(
                        "empty: list at least one unit name or glob pattern",
                    ));
                }
                Ok(Units(globs))
            }
        }
        d.deserialize_seq(List)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
