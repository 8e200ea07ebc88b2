//! Properties of `rescue_host::protocol::raw`, the JSON editing that keeps
//! every untouched value's exact text.

use rescue_host::protocol::raw::{self, RawObject};
use serde_json::Value;

/// Checks one text. Properties: every object serde_json accepts parses; for
/// such an object:
/// writing it back gives JSON equal to the input, whose members re-parse to
/// the same keys and exact value texts; replacing one member changes that
/// member only (every other member keeps its raw text and position) and
/// `get` then returns the new value; splitting an array member into elements
/// and joining them again gives an equal array.
pub fn check(text: &str) {
    let parsed = serde_json::from_str::<Value>(text);
    let Some(mut object) = RawObject::parse(text) else {
        // Every object serde_json accepts must be editable.
        assert!(
            !matches!(parsed, Ok(Value::Object(_))),
            "serde_json parses an object that RawObject refuses"
        );
        return;
    };
    // The converse does not hold: `RawValue` skips strings without decoding
    // their escapes, so it accepts a lone surrogate (`"\ud800"`) that
    // serde_json refuses. The server only edits bodies serde_json accepted
    // (`augmented_route` parses first and answers 400), so that is the
    // domain checked here.
    let Ok(original) = parsed else { return };
    let written = object.to_json();
    let reparsed: Value = serde_json::from_str(&written).expect("to_json wrote invalid JSON");
    assert_eq!(reparsed, original, "to_json changed the object");
    let again = RawObject::parse(&written).expect("to_json output is an object");
    assert_eq!(
        members(&again),
        members(&object),
        "members changed on a round trip"
    );

    for (key, value) in &object.0 {
        if value.get().trim_start().starts_with('[') {
            let elements = raw::array_elements(value).expect("a raw array splits");
            let joined = raw::raw_array(&elements);
            let a: Value = serde_json::from_str(value.get()).expect("raw value parses");
            let b: Value = serde_json::from_str(joined.get()).expect("joined array parses");
            assert_eq!(a, b, "array member {key:?} changed by split and join");
        }
    }

    // Replace the last member's value (the one `get` sees), or add one.
    let before = members(&object);
    let key = object
        .0
        .last()
        .map_or_else(|| "added".to_string(), |(k, _)| k.clone());
    let last_index = object.0.iter().rposition(|(k, _)| *k == key);
    let replacement = raw::to_raw(&serde_json::json!({"rescue": "knowledge"}));
    object.set(&key, replacement.clone());
    assert_eq!(
        object.get(&key).map(|v| v.get().to_string()),
        Some(replacement.get().to_string())
    );
    let after = members(&object);
    match last_index {
        Some(i) => {
            assert_eq!(after.len(), before.len(), "set added a member that existed");
            for (j, (b, a)) in before.iter().zip(&after).enumerate() {
                if j != i {
                    assert_eq!(a, b, "member {j} changed though another was set");
                }
            }
        }
        None => {
            assert_eq!(after.len(), before.len() + 1);
            assert_eq!(&after[..before.len()], &before[..]);
        }
    }
    let edited: Value = serde_json::from_str(&object.to_json()).expect("edited JSON parses");
    assert_eq!(edited[&key], serde_json::json!({"rescue": "knowledge"}));
}

fn members(object: &RawObject) -> Vec<(String, String)> {
    object
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.get().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_escapes_and_odd_numbers() {
        check(r#"{"b": 1.0e2, "a":"\u00e9\ud83d\ude00", "n": [1 , {"x":[]} ], "b": -0.0}"#);
        check(r#"{"\u0061":1,"a":[ ]}"#);
        check("{}");
        check(" [1] ");
        check("{");
    }

    /// Found by the fuzzer: `RawObject` takes a lone surrogate escape that
    /// serde_json refuses; outside the server's domain (it parses first).
    #[test]
    fn lone_surrogates_are_left_to_serde_json() {
        check(r#"{"a":"\ud800"}"#);
    }
}
