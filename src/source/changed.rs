//! A dictionary of properties (`a{sv}`: the body of `PropertiesChanged`, the
//! reply to `GetAll`) decoded for the few properties unitwatch reads.
//!
//! systemd sends a unit's every change-emitting property in each
//! `PropertiesChanged`, some forty for a service, among them arrays of
//! structures (`ExecStart`'s runs). Decoding them all into owned values
//! (a `HashMap<String, OwnedValue>`) was most of unitwatch's CPU in a flap
//! storm. [`Changed`] borrows each key from the message, keeps the value only
//! of a property in [`KNOWN`], and walks past the others without building
//! anything.

use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use zbus::zvariant::{Signature, Type, Value as ZValue};

use super::properties::{UnitProperties, Value};
use super::timers;

/// The properties of the `Unit`, `Service` and `Timer` interfaces unitwatch
/// reads; every other one is skipped undecoded.
const KNOWN: [&[&str]; 2] = [&UnitProperties::NAMES, &timers::PROPERTIES];

/// The properties of one dictionary that unitwatch reads, in the order sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changed(Vec<(&'static str, Value)>);

impl Changed {
    /// The properties kept, in the order sent ([`super::wire`] reads them).
    pub(super) fn from_kept(kept: Vec<(&'static str, Value)>) -> Changed {
        Changed(kept)
    }

    /// Every property kept, with its value.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        self.0.iter().map(|(n, v)| (*n, v))
    }

    /// The properties kept, taken out.
    pub fn into_values(self) -> impl Iterator<Item = (&'static str, Value)> {
        self.0.into_iter()
    }

    /// The value of property `name`, if it came and is of a type unitwatch reads.
    #[cfg(test)]
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// The third part of `PropertiesChanged`, the names of properties that
/// changed without their values, walked past undecoded: systemd lists there
/// only properties unitwatch does not follow (`ExecStart`'s runs and such).
#[derive(Debug)]
pub struct Invalidated;

impl Type for Invalidated {
    const SIGNATURE: &'static Signature = &Signature::static_array(&Signature::Str);
}

impl<'de> Deserialize<'de> for Invalidated {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Invalidated)
    }
}

/// The name in [`KNOWN`] equal to `key`. On bytes, so that the reader of
/// the wire ([`super::wire`]) need not check that the forty or so keys of a
/// `PropertiesChanged` it walks past are UTF-8; plain loops, as this runs
/// for each of them (a length that differs ends a comparison at once).
pub(super) fn known(key: &[u8]) -> Option<&'static str> {
    for names in KNOWN {
        for name in names {
            if name.as_bytes() == key {
                return Some(name);
            }
        }
    }
    None
}

impl Type for Changed {
    const SIGNATURE: &'static Signature =
        &Signature::static_dict(&Signature::Str, &Signature::Variant);
}

impl<'de> Deserialize<'de> for Changed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ChangedVisitor)
    }
}

struct ChangedVisitor;

impl<'de> Visitor<'de> for ChangedVisitor {
    type Value = Changed;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a dictionary of properties (a{sv})")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Changed, A::Error> {
        let mut kept = Vec::new();
        while let Some(key) = map.next_key::<&'de str>()? {
            match known(key.as_bytes()) {
                Some(name) => {
                    let value: ZValue<'de> = map.next_value()?;
                    if let Some(value) = from_zvalue(&value) {
                        kept.push((name, value));
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Changed(kept))
    }
}

/// A property value as the mapper reads it; `None` for a type it does not use.
pub(crate) fn from_zvalue(v: &ZValue<'_>) -> Option<Value> {
    // A variant's content comes wrapped once more when read as a Value.
    match v {
        ZValue::Value(inner) => from_zvalue(inner),
        ZValue::Str(s) => Some(Value::Str(s.as_str().to_owned())),
        ZValue::U64(t) => Some(Value::U64(*t)),
        ZValue::U32(n) => Some(Value::U32(*n)),
        ZValue::Bool(b) => Some(Value::Bool(*b)),
        ZValue::Array(a) if a.element_signature() == &Signature::Str => a
            .iter()
            .map(|s| match s {
                ZValue::Str(s) => Some(s.as_str().to_owned()),
                _ => None,
            })
            .collect::<Option<Vec<String>>>()
            .map(Value::Strs),
        ZValue::Array(a) => a
            .iter()
            .map(|b| match b {
                ZValue::U8(b) => Some(*b),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()
            .map(Value::Bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use zbus::zvariant::{serialized::Context, to_bytes, LE};

    use super::*;

    /// `dict` serialized as systemd sends it, decoded as [`Changed`].
    fn decoded(dict: &HashMap<&str, ZValue<'_>>) -> Changed {
        let ctxt = Context::new_dbus(LE, 0);
        let bytes = to_bytes(ctxt, dict).expect("serialized");
        let (changed, _) = bytes.deserialize::<Changed>().expect("decoded");
        changed
    }

    #[test]
    fn known_properties_are_kept_with_their_values() {
        let mut dict = HashMap::new();
        dict.insert("ActiveState", ZValue::from("active"));
        dict.insert("ActiveEnterTimestampMonotonic", ZValue::from(42u64));
        dict.insert("NRestarts", ZValue::from(3u32));
        dict.insert("RemainAfterExit", ZValue::from(true));
        dict.insert("InvocationID", ZValue::from(vec![0xabu8, 0x01]));
        dict.insert("TriggeredBy", ZValue::from(vec!["a.timer"]));
        dict.insert("LastTriggerUSec", ZValue::from(7u64));
        let c = decoded(&dict);
        assert_eq!(c.get("ActiveState"), Some(&Value::Str("active".into())));
        assert_eq!(
            c.get("ActiveEnterTimestampMonotonic"),
            Some(&Value::U64(42))
        );
        assert_eq!(c.get("NRestarts"), Some(&Value::U32(3)));
        assert_eq!(c.get("RemainAfterExit"), Some(&Value::Bool(true)));
        assert_eq!(c.get("InvocationID"), Some(&Value::Bytes(vec![0xab, 1])));
        assert_eq!(
            c.get("TriggeredBy"),
            Some(&Value::Strs(vec!["a.timer".into()]))
        );
        assert_eq!(c.get("LastTriggerUSec"), Some(&Value::U64(7)));
        assert_eq!(c.iter().count(), 7);
    }

    #[test]
    fn other_properties_of_any_type_are_skipped() {
        // ExecStart's shape: a(sasbttttuii).
        type Exec = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);
        let exec: Vec<Exec> = vec![(
            "/bin/false".into(),
            vec!["false".into()],
            false,
            1,
            2,
            3,
            4,
            5,
            6,
            7,
        )];
        let mut dict = HashMap::new();
        dict.insert("ExecStart", ZValue::from(exec));
        dict.insert("MainPID", ZValue::from(0u32));
        dict.insert("Nested", ZValue::Value(Box::new(ZValue::from(5u64))));
        dict.insert("SubState", ZValue::from("running"));
        dict.insert("StatusErrno", ZValue::from(-1i32));
        let c = decoded(&dict);
        assert_eq!(
            c.iter().collect::<Vec<_>>(),
            vec![("SubState", &Value::Str("running".into()))]
        );
    }

    #[test]
    fn a_known_property_of_a_type_unitwatch_does_not_read_is_left_out() {
        let mut dict = HashMap::new();
        dict.insert("ActiveState", ZValue::from(5i32));
        assert_eq!(decoded(&dict), Changed::default());
    }

    #[test]
    fn byte_and_string_arrays_are_told_apart() {
        let bytes = ZValue::from(vec![1u8, 2]);
        assert_eq!(from_zvalue(&bytes), Some(Value::Bytes(vec![1, 2])));
        let strs = ZValue::from(vec!["a.timer".to_owned()]);
        assert_eq!(
            from_zvalue(&strs),
            Some(Value::Strs(vec!["a.timer".into()]))
        );
        let empty = ZValue::from(Vec::<String>::new());
        assert_eq!(from_zvalue(&empty), Some(Value::Strs(vec![])));
        assert_eq!(from_zvalue(&ZValue::from(true)), Some(Value::Bool(true)));
    }
}
