//! Port types and the subtype check applied to every connection.

use std::fmt;

use crate::value::{self, Value};

/// The type a port declares (DESIGN §3).
#[derive(Clone, Debug, PartialEq)]
pub enum PortType {
    /// Anything: JSON values and bytes.
    Any,
    /// Any JSON value; checked per message where the receiver wants more.
    Json,
    /// Raw bytes.
    Bytes,
    /// UTF-8 text that is not JSON.
    Text,
    /// A JSON number.
    Number,
    /// A JSON string.
    String,
    /// A JSON boolean.
    Bool,
    /// A JSON array.
    Array,
    /// A JSON object.
    Object,
    /// A JSON object with at least these fields.
    Record(Vec<(String, PortType)>),
    /// Whatever arrives on the component's `in` port (pass-through components).
    Same,
}

/// Why a connection does not type-check, with how to fix it.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: String,
}

impl PortType {
    /// Parses a type as flow files and declarations spell it: `json`, `number`, ...,
    /// or a record `{ sensor = "string", value = "number" }`.
    pub fn parse(text: &str) -> Result<PortType, String> {
        let t = text.trim();
        if t.starts_with('{') {
            return Self::parse_record(t);
        }
        Ok(match t {
            "any" => PortType::Any,
            "json" => PortType::Json,
            "bytes" => PortType::Bytes,
            "text" => PortType::Text,
            "number" => PortType::Number,
            "string" => PortType::String,
            "bool" => PortType::Bool,
            "array" => PortType::Array,
            "object" => PortType::Object,
            "same" => PortType::Same,
            other => return Err(format!("unknown port type `{other}`")),
        })
    }

    fn parse_record(text: &str) -> Result<PortType, String> {
        let table: toml::Table =
            toml::from_str(&format!("r = {text}")).map_err(|e| format!("bad record type `{text}`: {}", e.message()))?;
        let Some(toml::Value::Table(fields)) = table.get("r") else {
            return Err(format!("bad record type `{text}`"));
        };
        let mut out = Vec::new();
        for (name, ty) in fields {
            let ty = match ty {
                toml::Value::String(s) => PortType::parse(s)?,
                other => PortType::parse(&format!("{{ {} }}", inline(other)))?,
            };
            out.push((name.clone(), ty));
        }
        Ok(PortType::Record(out))
    }

    fn is_json_family(&self) -> bool {
        !matches!(self, PortType::Any | PortType::Bytes | PortType::Text | PortType::Same)
    }

    /// Checks that a port of type `self` may feed a port of type `to`.
    pub fn connects_to(&self, to: &PortType) -> Result<(), Mismatch> {
        use PortType::*;
        let fail = |help: &str| {
            Err(Mismatch { message: format!("type mismatch: `{self}` does not fit `{to}`"), help: help.into() })
        };
        match (self, to) {
            (_, Any) | (Any, _) | (Same, _) | (_, Same) => Ok(()),
            (Bytes, Bytes) | (Text, Text) | (Text, Bytes) => Ok(()),
            (Bytes | Text, _) => fail("set `format = \"json\"` on the source, or insert a `decode` component"),
            (_, Bytes | Text) => fail("insert an `encode` component to turn JSON into text or bytes"),
            (Json, _) | (_, Json) => Ok(()),
            (Record(_) | Object, Object) | (Object, Record(_)) => Ok(()),
            (Record(have), Record(want)) => record_fits(have, want).map_err(|m| Mismatch {
                message: format!("type mismatch: {m}"),
                help: "make the producer emit that field with that type, or insert a `map`".into(),
            }),
            (a, b) if a == b => Ok(()),
            _ => fail("insert a `map` that builds the value the receiver expects"),
        }
    }

    /// Checks a value against this type at run time (for `json` feeding a narrower port).
    pub fn accepts(&self, v: &Value) -> bool {
        use PortType::*;
        match self {
            Any | Same => true,
            Json => !matches!(v, Value::BStr(_)),
            Bytes => matches!(v, Value::BStr(_) | Value::TStr(_)),
            Text | String => matches!(v, Value::TStr(_)),
            Number => matches!(v, Value::Num(_)),
            Bool => matches!(v, Value::Bool(_)),
            Array => matches!(v, Value::Arr(_)),
            Object => matches!(v, Value::Obj(_)),
            Record(fields) => fields.iter().all(|(k, t)| value::get(v, k).is_some_and(|f| t.accepts(f))),
        }
    }

    /// Whether a value from `from` must be checked per message before it enters a `self` port.
    pub fn needs_check_from(&self, from: &PortType) -> bool {
        self.is_json_family()
            && !matches!(self, PortType::Json)
            && from != self
            && matches!(from, PortType::Json | PortType::Any | PortType::Object)
    }
}

fn record_fits(have: &[(String, PortType)], want: &[(String, PortType)]) -> Result<(), String> {
    for (name, want_ty) in want {
        match have.iter().find(|(n, _)| n == name) {
            None => return Err(format!("record field `{name}` is missing")),
            Some((_, have_ty)) => {
                if have_ty.connects_to(want_ty).is_err() {
                    return Err(format!("record field `{name}` is `{have_ty}`, expected `{want_ty}`"));
                }
            }
        }
    }
    Ok(())
}

fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) => t.iter().map(|(k, v)| format!("{k} = {}", v)).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

impl fmt::Display for PortType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            PortType::Any => "any",
            PortType::Json => "json",
            PortType::Bytes => "bytes",
            PortType::Text => "text",
            PortType::Number => "number",
            PortType::String => "string",
            PortType::Bool => "bool",
            PortType::Array => "array",
            PortType::Object => "object",
            PortType::Same => "same as input",
            PortType::Record(fields) => {
                let inner: Vec<_> = fields.iter().map(|(k, t)| format!("{k} = \"{t}\"")).collect();
                return write!(f, "{{ {} }}", inner.join(", "));
            }
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> PortType {
        PortType::parse(s).unwrap()
    }

    #[test]
    fn parses_records() {
        let r = t(r#"{ sensor = "string", value = "number" }"#);
        assert_eq!(r, PortType::Record(vec![("sensor".into(), PortType::String), ("value".into(), PortType::Number)]));
        assert_eq!(r.to_string(), r#"{ sensor = "string", value = "number" }"#);
    }

    #[test]
    fn text_into_json_is_rejected_with_a_fix() {
        let err = t("text").connects_to(&t("json")).unwrap_err();
        assert!(err.help.contains("format = \"json\""));
        assert!(t("bytes").connects_to(&t("object")).is_err());
    }

    #[test]
    fn json_is_dynamic_and_records_are_structural() {
        assert!(t("json").connects_to(&t(r#"{ a = "number" }"#)).is_ok());
        assert!(t(r#"{ a = "number", b = "string" }"#).connects_to(&t(r#"{ a = "number" }"#)).is_ok());
        let err = t(r#"{ a = "string" }"#).connects_to(&t(r#"{ a = "number" }"#)).unwrap_err();
        assert!(err.message.contains("field `a`"), "{}", err.message);
        assert!(t("number").connects_to(&t("string")).is_err());
    }

    #[test]
    fn runtime_check_matches_values() {
        let r = t(r#"{ a = "number" }"#);
        assert!(r.accepts(&crate::value::parse_json(br#"{"a": 1}"#).unwrap()));
        assert!(!r.accepts(&crate::value::parse_json(br#"{"a": "x"}"#).unwrap()));
    }
}
