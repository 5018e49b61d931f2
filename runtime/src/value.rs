//! The in-process payload value.
//!
//! Payloads are jq values (`jaq_json::Val`, built with its `sync` feature so they
//! are `Send + Sync` and share arrays, objects and strings by reference count).
//! Keeping the payload in jaq's own representation means `map`, `filter` and
//! `switch` run their programs without converting each message, and a fan-out
//! copy is a reference-count increment, never a deep copy.
//!
//! Everything else in fbp talks to payloads through the helpers here, so the
//! choice of representation stays in this one file.

use std::fmt;

use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

pub use jaq_json::Val as Value;

/// An ordered JSON object map.
pub type Map = jaq_json::Map;

/// Parses one JSON document.
pub fn parse_json(text: &[u8]) -> Result<Value, String> {
    jaq_json::read::parse_single(text).map_err(|e| e.to_string())
}

/// Builds a value from a `serde_json::Value`.
pub fn from_serde(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => int(i),
            None => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => string(s.as_str()),
        serde_json::Value::Array(a) => a.iter().map(from_serde).collect(),
        serde_json::Value::Object(o) => {
            Value::obj(o.iter().map(|(k, v)| (string(k.as_str()), from_serde(v))).collect())
        }
    }
}

/// Converts a value to a `serde_json::Value` (for code that needs serde's model).
pub fn to_serde(v: &Value) -> serde_json::Value {
    serde_json::to_value(Json(v)).unwrap_or(serde_json::Value::Null)
}

/// A UTF-8 string value.
pub fn string(s: impl Into<String>) -> Value {
    Value::from(s.into())
}

/// An integer value.
pub fn int(i: i64) -> Value {
    Value::Num(jaq_json::Num::from_integral(i))
}

/// An object built from `(key, value)` pairs.
pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
    Value::obj(pairs.into_iter().map(|(k, v)| (string(k), v)).collect())
}

/// The field `key` of an object, if the value is an object that has it.
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Obj(map) => map.get(&string(key)),
        _ => None,
    }
}

/// The number a value holds, as `f64`.
pub fn as_f64(v: &Value) -> Option<f64> {
    use jaq_json::Num;
    match v {
        Value::Num(Num::Int(i)) => Some(*i as f64),
        Value::Num(Num::Float(f)) => Some(*f),
        Value::Num(Num::Dec(s)) => s.parse().ok(),
        Value::Num(Num::BigInt(b)) => b.to_string().parse().ok(),
        _ => None,
    }
}

/// The text a string value holds (bytes are read as UTF-8, lossily).
pub fn as_str(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::TStr(b) | Value::BStr(b) => Some(String::from_utf8_lossy(b)),
        _ => None,
    }
}

/// The name of a value's JSON type, as port types spell it.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Num(_) => "number",
        Value::TStr(_) => "string",
        Value::BStr(_) => "bytes",
        Value::Arr(_) => "array",
        Value::Obj(_) => "object",
    }
}

/// Whether a value is truthy in jq's sense (everything but `null` and `false`).
pub fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
}

/// Serialises a value as standard JSON: byte strings become base64 strings,
/// non-finite numbers become `null`.
#[derive(Clone, Copy)]
pub struct Json<'a>(pub &'a Value);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use jaq_json::Num;
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Num(Num::Int(i)) => s.serialize_i64(*i as i64),
            Value::Num(n) => match as_f64(&Value::Num(n.clone())) {
                Some(f) if f.is_finite() => s.serialize_f64(f),
                _ => s.serialize_unit(),
            },
            Value::TStr(b) => s.serialize_str(&String::from_utf8_lossy(b)),
            Value::BStr(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&b[..])),
            Value::Arr(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a.iter() {
                    seq.serialize_element(&Json(v))?;
                }
                seq.end()
            }
            Value::Obj(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o.iter() {
                    match as_str(k) {
                        Some(key) => map.serialize_entry(&key, &Json(v))?,
                        None => map.serialize_entry(&to_json_string(k), &Json(v))?,
                    }
                }
                map.end()
            }
        }
    }
}

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_json_string(self.0))
    }
}

/// The value as one line of JSON.
pub fn to_json_string(v: &Value) -> String {
    serde_json::to_string(&Json(v)).unwrap_or_else(|_| "null".into())
}

/// Decodes a base64 string (the wire form of a bytes payload).
pub fn decode_base64(text: &str) -> Result<bytes::Bytes, String> {
    base64::engine::general_purpose::STANDARD.decode(text).map(bytes::Bytes::from).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_types() {
        let v = parse_json(br#"{"a":1,"b":[true,null,2.5],"c":"x"}"#).unwrap();
        assert_eq!(to_json_string(&v), r#"{"a":1,"b":[true,null,2.5],"c":"x"}"#);
        assert_eq!(as_f64(get(&v, "a").unwrap()), Some(1.0));
        assert_eq!(type_name(get(&v, "b").unwrap()), "array");
    }

    #[test]
    fn bytes_serialise_as_base64() {
        let v = Value::byte_str(vec![0u8, 255]);
        assert_eq!(to_json_string(&v), "\"AP8=\"");
        assert_eq!(&decode_base64("AP8=").unwrap()[..], &[0, 255]);
    }

    #[test]
    fn serde_conversion_round_trips() {
        let s = serde_json::json!({"n": 3, "f": 0.5, "s": "t", "a": [1, {"b": null}]});
        assert_eq!(to_serde(&from_serde(&s)), s);
    }
}
