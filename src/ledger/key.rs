//! The ledger's key of a unit, made and split here and nowhere else.
//!
//! A unit of the system manager is kept under its name, as systemd has it
//! (`aitbc-marketplace.service`). A unit of a user's manager (`[watch]
//! user_managers`) is kept under its name, [`SEPARATOR`] and the user's name
//! (`demo.service/alice`), so the same unit name under two managers is two
//! accounts, and neither can be taken for a system unit.
//!
//! Why `/`: systemd's unit names are made of `[A-Za-z0-9:_.\\@-]` only
//! (`unit_name_is_valid`; `/` is the path separator of the unit files they
//! name, and escaping turns it into `-`), so a key with a `/` is never a
//! system unit's and the first `/` always ends the unit's name, whatever
//! the user's name holds. It is printable, so the state file and logs stay
//! readable (a NUL would be as safe, and show as `\u0000`). Names from
//! elsewhere that contain it — a forged journal record's `UNIT=`, a name a
//! user manager's socket sends — are not unit names and are refused
//! ([`is_unit_name`]), so nothing can write into another manager's keys.

/// Between a user manager's unit and its user in a key.
pub const SEPARATOR: char = '/';

/// The key of `unit` of `user`'s manager; `None` if `unit` is not a unit
/// name (it holds [`SEPARATOR`]).
pub fn user_unit(unit: &str, user: &str) -> Option<String> {
    is_unit_name(unit).then(|| format!("{unit}{SEPARATOR}{user}"))
}

/// A key's unit name, and the user whose manager it belongs to (`None`: the
/// system manager's).
pub fn split(key: &str) -> (&str, Option<&str>) {
    match key.split_once(SEPARATOR) {
        Some((unit, user)) => (unit, Some(user)),
        None => (key, None),
    }
}

/// The user whose manager the unit under `key` belongs to; `None` for a
/// system unit.
pub fn user_of(key: &str) -> Option<&str> {
    split(key).1
}

/// Whether `name` can be a unit's name as far as keys go (it is the key of
/// a system unit, and can be made the key of a user's).
pub fn is_unit_name(name: &str) -> bool {
    !name.contains(SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_unit_is_its_name() {
        assert_eq!(
            split("aitbc-worker@3.service"),
            ("aitbc-worker@3.service", None)
        );
        assert_eq!(user_of("a.service"), None);
        assert!(is_unit_name("a\\x2db.service"));
    }

    #[test]
    fn a_user_unit_splits_back_into_unit_and_user() {
        for (unit, user) in [
            ("demo.service", "alice"),
            ("app@1.service", "1001"),
            ("x.service", "odd/name with space"),
            ("y.service", ""),
        ] {
            let key = user_unit(unit, user).expect("a unit name");
            assert_ne!(key, unit, "never a system unit's key");
            assert!(!is_unit_name(&key));
            assert_eq!(split(&key), (unit, Some(user)));
            assert_eq!(user_of(&key), Some(user));
        }
    }

    #[test]
    fn keys_of_different_managers_never_meet() {
        let alice = user_unit("demo.service", "alice").expect("key");
        let bob = user_unit("demo.service", "bob").expect("key");
        assert_ne!(alice, bob);
        assert_ne!(alice, "demo.service");
        // A name that is no unit name cannot be made to look like another
        // user's unit.
        assert_eq!(user_unit("demo.service/bob", "alice"), None);
        assert!(!is_unit_name("demo.service/bob"));
    }
}
