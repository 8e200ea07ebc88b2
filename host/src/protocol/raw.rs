//! Editing JSON without re-encoding what the proxy does not change.
//!
//! A request body is split into its top-level members, each kept as the exact
//! text the client sent (`RawValue`), in the client's order, duplicates
//! included. Only the member being changed is rebuilt; every other value,
//! numbers and escapes included, is written back byte for byte.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON object as an ordered list of (key, raw value) members.
#[derive(Debug)]
pub struct RawObject(pub Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((key, value));
                }
                Ok(RawObject(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

impl RawObject {
    pub fn parse(text: &str) -> Option<RawObject> {
        serde_json::from_str(text).ok()
    }

    /// The last member named `key` (JSON parsers keep the last duplicate).
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    pub fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.0.iter_mut().rev().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// Writes the object back: rebuilt separators, original value text.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(key).expect("a string serialises"));
            out.push(':');
            out.push_str(value.get());
        }
        out.push('}');
        out
    }

    pub fn to_raw(&self) -> Box<RawValue> {
        RawValue::from_string(self.to_json()).expect("written from valid members")
    }
}

/// The elements of a JSON array, each as its original text.
pub fn array_elements(value: &RawValue) -> Option<Vec<Box<RawValue>>> {
    serde_json::from_str(value.get()).ok()
}

/// A JSON array from raw elements.
pub fn raw_array(elements: &[Box<RawValue>]) -> Box<RawValue> {
    let inner: Vec<&str> = elements.iter().map(|e| e.get()).collect();
    RawValue::from_string(format!("[{}]", inner.join(","))).expect("written from valid elements")
}

/// Any serialisable value as raw JSON.
pub fn to_raw<T: serde::Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("value serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_members_keep_their_exact_text() {
        let text = r#"{"b": 1.0e2, "a":"\u00e9", "n": [1 , 2], "b": -0.0}"#;
        let mut obj = RawObject::parse(text).unwrap();
        assert_eq!(obj.get("b").unwrap().get(), "-0.0");
        obj.set("a", to_raw(&"x"));
        assert_eq!(obj.to_json(), r#"{"b":1.0e2,"a":"x","n":[1 , 2],"b":-0.0}"#);
    }

    #[test]
    fn arrays_split_and_join() {
        let v = RawValue::from_string("[ {\"r\":1} , 2.50 ]".into()).unwrap();
        let mut items = array_elements(&v).unwrap();
        items.insert(1, to_raw(&true));
        assert_eq!(raw_array(&items).get(), "[{\"r\":1},true,2.50]");
    }

    #[test]
    fn non_objects_are_refused() {
        assert!(RawObject::parse("[1]").is_none());
        assert!(RawObject::parse("{").is_none());
    }
}
