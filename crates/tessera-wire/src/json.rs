//! JSON request bodies, read strictly.
//!
//! `serde_json` lets the last of two equal keys win, so `{"role":"user",
//! "role":"admin"}` means different things to Tessera and to a proxy or
//! logger that keeps the first. Every body in the contract is an object
//! with distinct keys; anything else is refused before a field is read.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all (a client mistake in syntax: 400).
    Syntax,
    /// Valid JSON, but not an object (422).
    NotAnObject,
    /// An object holding the same key twice, at any depth (422). The key is
    /// named, cut to 64 characters.
    DuplicateKey(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Syntax => f.write_str("the body is not valid JSON"),
            BodyError::NotAnObject => f.write_str("the JSON body must be an object"),
            BodyError::DuplicateKey(k) => write!(f, "the JSON body names \"{k}\" twice"),
        }
    }
}

/// Parses a JSON object whose keys are distinct at every depth.
pub fn parse_object(bytes: &[u8]) -> Result<Value, BodyError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match Strict(&duplicate).deserialize(&mut de) {
        Ok(v) => v,
        Err(_) => {
            return Err(match duplicate.into_inner() {
                // Syntax first: the walk stops at the first repeated key, so
                // a body broken further on (`{"a":1,"a":2`) is malformed
                // (400) as it would be without the repeat, not a 422.
                Some(key) if serde_json::from_slice::<Value>(bytes).is_ok() => {
                    BodyError::DuplicateKey(key)
                }
                _ => BodyError::Syntax,
            });
        }
    };
    de.end().map_err(|_| BodyError::Syntax)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(BodyError::NotAnObject)
    }
}

const MAX_NAMED_KEY_CHARS: usize = 64;

/// Builds a `Value` like serde_json's own, refusing a repeated key (which
/// it records in the cell, so the error need not be parsed back).
#[derive(Clone, Copy)]
struct Strict<'a>(&'a RefCell<Option<String>>);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                *self.0.borrow_mut() = Some(key.chars().take(MAX_NAMED_KEY_CHARS).collect());
                return Err(de::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keys_parse_like_serde_json() {
        let body = br#"{"a":1,"b":{"c":[true,null,"x",-2,1.5]}}"#;
        let expected: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(parse_object(body).unwrap(), expected);
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        assert_eq!(
            parse_object(br#"{"role":"user","role":"admin"}"#),
            Err(BodyError::DuplicateKey("role".into()))
        );
        assert_eq!(
            parse_object(br#"{"a":{"b":1,"b":2}}"#),
            Err(BodyError::DuplicateKey("b".into()))
        );
        assert_eq!(
            parse_object(br#"{"a":[{"k":1,"k":1}]}"#),
            Err(BodyError::DuplicateKey("k".into()))
        );
        // Escapes decode first: "\u0061" is "a".
        assert_eq!(
            parse_object(br#"{"a":1,"\u0061":2}"#),
            Err(BodyError::DuplicateKey("a".into()))
        );
    }

    #[test]
    fn syntax_and_shape_are_told_apart() {
        assert_eq!(parse_object(b"[1,2"), Err(BodyError::Syntax));
        assert_eq!(parse_object(b"{} x"), Err(BodyError::Syntax));
        assert_eq!(parse_object(b"[1,2]"), Err(BodyError::NotAnObject));
        assert_eq!(parse_object(b"\"s\""), Err(BodyError::NotAnObject));
    }

    /// Found by fuzz/json_body: a repeated key before a syntax error was
    /// reported as a duplicate (422) where the body is malformed (400).
    #[test]
    fn a_repeat_in_a_malformed_body_is_a_syntax_error() {
        assert_eq!(parse_object(br#"{"a":1,"a":2"#), Err(BodyError::Syntax));
        assert_eq!(parse_object(br#"{"a":1,"a":2} x"#), Err(BodyError::Syntax));
        assert_eq!(
            parse_object(br#"[{"k":1,"k":2},1e999]"#),
            Err(BodyError::Syntax)
        );
        // The fuzzer's input, as found.
        assert_eq!(
            parse_object(b"[\r{\"{\"\n  : \n\n77,\n\n\n\n\n\"{\"\n  : \n\n\t\n\t\n"),
            Err(BodyError::Syntax)
        );
        // Still a duplicate when the rest is valid.
        assert_eq!(
            parse_object(br#"[{"k":1,"k":2}]"#),
            Err(BodyError::DuplicateKey("k".into()))
        );
    }
}
