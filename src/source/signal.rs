//! systemd's signals as the D-Bus source reads them: [`decode`] turns a bus
//! message into a [`Signal`], or says why it cannot; [`Throttle`] keeps the
//! warnings about such messages to a few.
//!
//! A message that cannot be decoded is one message, not a broken
//! connection: the source logs it and goes on. Ending the session for it
//! would cost a reconnect and a re-read of every unit, and one bad message a
//! second would keep unitwatch reconnecting for good.

use std::time::{Duration, Instant};

use zbus::zvariant::{ObjectPath, OwnedObjectPath};

use super::changed::{Changed, Invalidated};
use super::wire::{self, Raw};

pub const MANAGER: &str = "org.freedesktop.systemd1.Manager";
pub const UNIT: &str = "org.freedesktop.systemd1.Unit";
pub const SERVICE: &str = "org.freedesktop.systemd1.Service";
pub const TIMER: &str = "org.freedesktop.systemd1.Timer";
pub const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// A signal of systemd's that unitwatch acts on.
#[derive(Debug)]
pub enum Signal {
    /// `PropertiesChanged` of the `Unit`, `Service` or `Timer` interface of the
    /// object at `path`.
    Properties {
        path: OwnedObjectPath,
        interface: &'static str,
        changed: Changed,
    },
    UnitNew {
        name: String,
        path: OwnedObjectPath,
    },
    UnitRemoved {
        name: String,
    },
    JobNew {
        id: u32,
        unit: String,
    },
    JobRemoved {
        id: u32,
        unit: String,
        result: String,
    },
    /// `Reloading`: `active` is true as a reload begins, false once it ended.
    Reloading {
        active: bool,
    },
}

/// Why a message cannot be taken as the signal it claims to be.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("a signal without {0}")]
    Header(&'static str),
    #[error("{0}")]
    Body(#[from] zbus::Error),
}

/// Decodes `raw`. `Ok(None)`: nothing unitwatch follows — another member
/// (systemd sends more than it is asked about, such as `UnitFilesChanged`
/// and `StartupFinished`), another interface, or `PropertiesChanged` of an
/// object `watched` says no to, whose body is not even read (most units on a
/// system are not watched).
pub fn decode(
    raw: &Raw,
    watched: impl Fn(&ObjectPath<'_>) -> bool,
) -> Result<Option<Signal>, Malformed> {
    let fields = raw.fields();
    let interface = fields.interface.ok_or(Malformed::Header("an interface"))?;
    let member = fields.member.ok_or(Malformed::Header("a member"))?;
    let signal = match (interface, member) {
        (PROPERTIES, "PropertiesChanged") => {
            let path = fields.path.ok_or(Malformed::Header("a path"))?;
            // The header reader checked it is a string; whether it is an
            // object path is zvariant's to say, once it is watched.
            let path = ObjectPath::try_from(path).map_err(zbus::Error::from)?;
            if !watched(&path) {
                return Ok(None);
            }
            let path = OwnedObjectPath::from(path.into_owned());
            // Read off the bytes where it can be ([`wire`], which says why),
            // by zvariant where it cannot.
            let (interface, changed) = match raw.properties_changed() {
                Some((interface, changed)) => (known_interface(interface), changed),
                None => {
                    let (interface, changed, _): (String, Changed, Invalidated) =
                        raw.body(wire::BODY)?;
                    (known_interface(&interface), changed)
                }
            };
            let Some(interface) = interface else {
                return Ok(None);
            };
            Signal::Properties {
                path,
                interface,
                changed,
            }
        }
        (MANAGER, "UnitNew") => {
            let (name, path): (String, OwnedObjectPath) = raw.body("so")?;
            Signal::UnitNew { name, path }
        }
        (MANAGER, "UnitRemoved") => {
            let (name, _path): (String, OwnedObjectPath) = raw.body("so")?;
            Signal::UnitRemoved { name }
        }
        (MANAGER, "JobNew") => {
            let (id, _job, unit): (u32, OwnedObjectPath, String) = raw.body("uos")?;
            Signal::JobNew { id, unit }
        }
        (MANAGER, "JobRemoved") => {
            let (id, _job, unit, result): (u32, OwnedObjectPath, String, String) =
                raw.body("uoss")?;
            Signal::JobRemoved { id, unit, result }
        }
        (MANAGER, "Reloading") => {
            let (active,): (bool,) = raw.body("b")?;
            Signal::Reloading { active }
        }
        _ => return Ok(None),
    };
    Ok(Some(signal))
}

/// The interfaces whose `PropertiesChanged` unitwatch reads.
fn known_interface(interface: &str) -> Option<&'static str> {
    match interface {
        UNIT => Some(UNIT),
        SERVICE => Some(SERVICE),
        TIMER => Some(TIMER),
        _ => None,
    }
}

/// How often at most a warning of one kind is logged.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lets one warning through per period; counts the others, so the next one
/// can say how many were not logged.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            skipped: 0,
        }
    }

    /// Whether to log now; if so, how many were not logged since the last one.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.every)
        {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

/// Logs (throttled by `throttle`, as of `now`) that `raw` was skipped, and why.
pub fn warn_ignored(throttle: &mut Throttle, now: Instant, raw: &Raw, why: &dyn std::fmt::Display) {
    let Some(skipped) = throttle.check(now) else {
        return;
    };
    let fields = raw.fields();
    tracing::warn!(
        sender = %fields.sender.unwrap_or("-"),
        path = %fields.path.unwrap_or("-"),
        interface = %fields.interface.unwrap_or("-"),
        member = %fields.member.unwrap_or("-"),
        why = %why,
        not_logged_since_last = skipped,
        "ignored a signal; following systemd goes on"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::Message;

    /// A signal's bytes, as the tap reads them.
    fn signal<B>(path: &str, interface: &str, member: &str, body: &B) -> Raw
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let msg = Message::signal(path, interface, member)
            .and_then(|b| b.sender(":1.0"))
            .and_then(|b| b.build(body))
            .expect("a signal");
        Raw::of(&msg).expect("a header")
    }

    const MANAGER_PATH: &str = "/org/freedesktop/systemd1";

    #[test]
    fn job_removed_is_decoded() {
        let msg = signal(
            MANAGER_PATH,
            MANAGER,
            "JobRemoved",
            &(
                7u32,
                OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/7").expect("path"),
                "a.service",
                "done",
            ),
        );
        match decode(&msg, |_| true) {
            Ok(Some(Signal::JobRemoved { id, unit, result })) => {
                assert_eq!(
                    (id, unit.as_str(), result.as_str()),
                    (7, "a.service", "done")
                )
            }
            other => panic!("not a JobRemoved: {other:?}"),
        }
    }

    #[test]
    fn a_wrong_signature_is_malformed_not_fatal() {
        let msg = signal(MANAGER_PATH, MANAGER, "JobRemoved", &("bogus",));
        let error = decode(&msg, |_| true).expect_err("a wrong body is an error");
        assert!(matches!(error, Malformed::Body(_)), "{error:?}");
        assert!(error.to_string().contains("ignature"), "{error}");
    }

    #[test]
    fn properties_of_an_unwatched_object_are_not_read() {
        // Malformed, but of an object nobody asked about: not even looked at.
        let msg = signal(
            "/org/freedesktop/systemd1/unit/other_2eservice",
            PROPERTIES,
            "PropertiesChanged",
            &(42u32,),
        );
        assert!(matches!(decode(&msg, |_| false), Ok(None)));
        assert!(matches!(decode(&msg, |_| true), Err(Malformed::Body(_))));
    }

    #[test]
    fn members_unitwatch_does_not_follow_are_skipped_quietly() {
        let msg = signal(MANAGER_PATH, MANAGER, "UnitFilesChanged", &());
        assert!(matches!(decode(&msg, |_| true), Ok(None)));
    }

    #[test]
    fn throttle_lets_one_through_per_period_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.check(t0), Some(0));
        assert_eq!(t.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.check(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.check(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.check(t0 + Duration::from_secs(11)), None);
    }
}
