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
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

pub use jaq_json::Val as Value;

/// An ordered JSON object map.
pub type Map = jaq_json::Map;

mod read;

/// How deep a JSON document may nest unless the flow says otherwise.
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// The most `[flow.limits] max_depth` may be: every reader, printer and
/// comparison of a value recurses once per level, on a thread stack.
pub const MAX_MAX_DEPTH: usize = 1024;

static MAX_DEPTH: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_DEPTH);

/// Sets how deep any JSON document or value may nest, for the whole process
/// (`[flow.limits] max_depth`; at most [`MAX_MAX_DEPTH`]).
pub fn set_max_depth(levels: usize) {
    MAX_DEPTH.store(levels.min(MAX_MAX_DEPTH), Ordering::Relaxed);
}

/// How deep a JSON document or value may nest.
pub fn max_depth() -> usize {
    MAX_DEPTH.load(Ordering::Relaxed)
}

/// Parses one JSON document (jq's syntax: integers of any size and decimals
/// are kept exact), nested at most [`max_depth`] levels; deeper is an error,
/// found before the reader recurses any further.
pub fn parse_json(text: &[u8]) -> Result<Value, String> {
    read::parse(text, max_depth()).map_err(|e| e.to_string())
}

/// Whether `v` nests more than `levels` arrays and objects deep. It recurses
/// at most `levels + 1` times (fbp's levels are at most [`MAX_MAX_DEPTH`]),
/// whatever the depth of `v`, and allocates nothing.
pub fn deeper_than(v: &Value, levels: usize) -> bool {
    match v {
        Value::Arr(a) => levels == 0 || a.iter().any(|c| deeper_than(c, levels - 1)),
        Value::Obj(o) => levels == 0 || o.iter().any(|(k, v)| deeper_than(k, levels - 1) || deeper_than(v, levels - 1)),
        _ => false,
    }
}

/// Drops a value of any depth without recursing (dropping a deeply nested
/// value the usual way recurses once per level and can overflow the stack).
pub fn drop_deep(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Arr(a) => {
                if let Ok(items) = std::sync::Arc::try_unwrap(a) {
                    stack.extend(items);
                }
            }
            Value::Obj(o) => {
                if let Ok(map) = std::sync::Arc::try_unwrap(o) {
                    stack.extend(map.into_iter().flat_map(|(k, v)| [k, v]));
                }
            }
            _ => {}
        }
    }
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
/// numbers past `f64` (a 400-digit integer, `1e400`) are written exactly as
/// they came, and only a computed infinity or NaN becomes `null` (JSON has
/// neither).
#[derive(Clone, Copy)]
pub struct Json<'a>(pub &'a Value);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use jaq_json::Num;
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Num(Num::Int(i)) => s.serialize_i64(*i as i64),
            Value::Num(Num::Float(f)) if f.is_finite() => s.serialize_f64(*f),
            Value::Num(Num::Float(_)) => s.serialize_unit(),
            Value::Num(Num::Dec(d)) => match d.parse::<f64>() {
                Ok(f) if f.is_finite() => s.serialize_f64(f),
                _ => exact(d, s),
            },
            Value::Num(Num::BigInt(b)) => exact(&b.to_string(), s),
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

/// A number written as its digits: what the reader kept of a number that does
/// not fit `f64`. The digits came from the JSON reader or from integer
/// arithmetic; the reader takes what jq takes (`+1e400`, `01e400`), so they
/// are made a JSON number first.
fn exact<S: Serializer>(digits: &str, s: S) -> Result<S::Ok, S::Error> {
    let digits = json_number(digits);
    match serde_json::value::RawValue::from_string(digits.clone()) {
        Ok(raw) => raw.serialize(s),
        Err(_) => s.serialize_str(&digits),
    }
}

/// `digits` as JSON writes a number: no `+` sign, no leading zeros, no `.`
/// without digits after it (`+01.e400` is `1e400`).
fn json_number(digits: &str) -> String {
    let (sign, unsigned) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits.strip_prefix('+').unwrap_or(digits)),
    };
    let (mantissa, exponent) = unsigned.split_once(['e', 'E']).map_or((unsigned, None), |(m, e)| (m, Some(e)));
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let int = match int.trim_start_matches('0') {
        "" => "0",
        int => int,
    };
    let frac = if frac.is_empty() { String::new() } else { format!(".{frac}") };
    let exponent = exponent.map(|e| format!("e{e}")).unwrap_or_default();
    format!("{sign}{int}{frac}{exponent}")
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
    fn the_deepest_allowed_value_reads_prints_and_drops_on_a_small_stack() {
        let text = format!("{}{}", "[".repeat(MAX_MAX_DEPTH), "]".repeat(MAX_MAX_DEPTH));
        // Test threads have 2 MiB of stack, as tokio's do.
        let v = read::parse(text.as_bytes(), MAX_MAX_DEPTH).ok().expect("parses");
        assert_eq!(to_json_string(&v), text);
        assert!(!deeper_than(&v, MAX_MAX_DEPTH));
        assert!(deeper_than(&v, MAX_MAX_DEPTH - 1));
        assert!(!deeper_than(&int(1), 0));
        drop_deep(v);
    }

    #[test]
    fn a_value_built_deeper_than_any_limit_drops_without_recursing() {
        let mut v = Value::Null;
        for _ in 0..200_000 {
            v = Value::Arr(vec![v].into());
        }
        assert!(deeper_than(&v, 1000));
        drop_deep(v);
    }

    #[test]
    fn numbers_past_f64_are_written_exactly() {
        let v = parse_json(b"[1e400, -1e400, 123456789012345678901234567890, 2.50, 1e2]").unwrap();
        assert_eq!(to_json_string(&v), "[1e400,-1e400,123456789012345678901234567890,2.5,100.0]");
        // The reader takes a sign and leading zeros; the print is JSON all the same.
        let v = parse_json(b"[01e400, +01e400, 001.5e400, 0e400]").unwrap();
        assert_eq!(to_json_string(&v), "[1e400,1e400,1.5e400,0.0]");
    }

    #[test]
    fn serde_conversion_round_trips() {
        let s = serde_json::json!({"n": 3, "f": 0.5, "s": "t", "a": [1, {"b": null}]});
        assert_eq!(to_serde(&from_serde(&s)), s);
    }
}
