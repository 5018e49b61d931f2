//! What the user wrote: the flow file parsed into spanned values, with
//! `${VAR}` / `${VAR:-default}` substituted inside strings, nothing checked yet.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::Diagnostic;

/// A value with the byte range it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sp<T> {
    /// The value.
    pub value: T,
    /// Where it is in the file.
    pub span: Range<usize>,
}

/// A TOML value after substitution.
#[derive(Clone, Debug, PartialEq)]
pub enum RawValue {
    /// A string; `from_var` when any part came from an environment variable
    /// (such values are never shown in errors or logs).
    Str {
        /// The text after substitution.
        text: String,
        /// Whether a variable filled it.
        from_var: bool,
        /// Whether the whole string was one `${VAR}` (may then fill a number or bool key).
        whole_var: bool,
    },
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A date-time, kept as its text.
    Datetime(String),
    /// An array.
    Array(Vec<Sp<RawValue>>),
    /// A table, in file order.
    Table(Vec<(Sp<String>, Sp<RawValue>)>),
}

impl RawValue {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RawValue::Str { text, .. } => Some(text),
            _ => None,
        }
    }

    /// How errors name this value's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            RawValue::Str { .. } => "a string",
            RawValue::Int(_) => "an integer",
            RawValue::Float(_) => "a float",
            RawValue::Bool(_) => "a boolean",
            RawValue::Datetime(_) => "a date-time",
            RawValue::Array(_) => "an array",
            RawValue::Table(_) => "a table",
        }
    }

    /// How errors show this value: never a value that came from a variable.
    pub fn shown(&self) -> String {
        match self {
            RawValue::Str { from_var: true, .. } => "the value from the environment".into(),
            RawValue::Str { text, .. } => format!("`{text}`"),
            RawValue::Int(i) => format!("`{i}`"),
            RawValue::Float(f) => format!("`{f}`"),
            RawValue::Bool(b) => format!("`{b}`"),
            other => other.type_name().into(),
        }
    }

    /// The value as JSON (what components' config structs deserialize from).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            RawValue::Str { text, .. } => J::String(text.clone()),
            RawValue::Int(i) => J::from(*i),
            RawValue::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            RawValue::Bool(b) => J::Bool(*b),
            RawValue::Datetime(d) => J::String(d.clone()),
            RawValue::Array(a) => J::Array(a.iter().map(|v| v.value.to_json()).collect()),
            RawValue::Table(t) => J::Object(t.iter().map(|(k, v)| (k.value.clone(), v.value.to_json())).collect()),
        }
    }
}

/// Looks up environment variables (injectable for tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Converts a parsed TOML table, substituting variables; errors are collected.
/// Keys come back in file order (toml's map sorts them by name).
pub fn table(
    t: &DeTable<'_>,
    source: &str,
    env: Env<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<(Sp<String>, Sp<RawValue>)> {
    let mut entries: Vec<_> = t.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
        .into_iter()
        .map(|(k, v)| (Sp { value: k.get_ref().to_string(), span: k.span() }, value(v, source, env, errors)))
        .collect()
}

fn value(v: &Spanned<DeValue<'_>>, source: &str, env: Env<'_>, errors: &mut Vec<Diagnostic>) -> Sp<RawValue> {
    let span = v.span();
    let value = match v.get_ref() {
        DeValue::String(s) => substitute(s, span.clone(), source, env, errors),
        DeValue::Integer(i) => match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
            Ok(n) => RawValue::Int(n),
            Err(_) => {
                errors.push(Diagnostic::at(span.clone(), "integer out of range").label("does not fit in 64 bits"));
                RawValue::Int(0)
            }
        },
        DeValue::Float(f) => RawValue::Float(parse_float(f.as_str())),
        DeValue::Boolean(b) => RawValue::Bool(*b),
        DeValue::Datetime(d) => RawValue::Datetime(d.to_string()),
        DeValue::Array(a) => RawValue::Array(a.iter().map(|v| value(v, source, env, errors)).collect()),
        DeValue::Table(t) => RawValue::Table(table(t, source, env, errors)),
    };
    Sp { value, span }
}

fn parse_float(s: &str) -> f64 {
    match s.replace('_', "").as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        "nan" | "+nan" | "-nan" => f64::NAN,
        other => other.parse().unwrap_or(f64::NAN),
    }
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`.
fn substitute(s: &str, span: Range<usize>, source: &str, env: Env<'_>, errors: &mut Vec<Diagnostic>) -> RawValue {
    if !s.contains("${") {
        return RawValue::Str { text: s.to_string(), from_var: false, whole_var: false };
    }
    let mut out = String::new();
    let mut rest = s;
    let mut from_var = false;
    let mut vars = 0;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find('}') else {
            errors.push(
                var_error(source, &span, &rest[at..], "unclosed `${` in a string")
                    .help("close it with `}`, or write `$${` for a literal `${`"),
            );
            out.push_str(&rest[at..]);
            rest = "";
            break;
        };
        let inner = &rest[at + 2..at + end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        vars += 1;
        if !valid_var_name(name) {
            errors.push(
                var_error(source, &span, &rest[at..at + end + 1], format!("invalid variable name `{name}`"))
                    .help("variable names are letters, digits and `_`, not starting with a digit"),
            );
        } else {
            match (env(name), default) {
                (Some(v), _) => {
                    out.push_str(&v);
                    from_var = true;
                }
                (None, Some(d)) => out.push_str(d),
                (None, None) => errors.push(
                    var_error(
                        source,
                        &span,
                        &rest[at..at + end + 1],
                        format!("environment variable `{name}` is not set"),
                    )
                    .label("used here")
                    .help(format!("set `{name}`, or give a default: `${{{name}:-VALUE}}`")),
                ),
            }
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    let whole_var = vars == 1 && s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
    RawValue::Str { text: out, from_var, whole_var }
}

fn valid_var_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An error pointing at the `${...}` inside the string when it can be found there.
fn var_error(source: &str, span: &Range<usize>, needle: &str, message: impl Into<String>) -> Diagnostic {
    let inside = source
        .get(span.clone())
        .and_then(|text| text.find(needle))
        .map(|i| span.start + i..span.start + i + needle.len());
    Diagnostic::at(inside.unwrap_or(span.clone()), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &str, env: &[(&str, &str)]) -> (RawValue, Vec<Diagnostic>) {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut errors = Vec::new();
        let source = format!("\"{s}\"");
        let v = substitute(s, 0..source.len(), &source, &lookup, &mut errors);
        (v, errors)
    }

    #[test]
    fn substitutes_variables_and_defaults() {
        let (v, e) = sub("tcp://${HOST}:${PORT:-1883}", &[("HOST", "h")]);
        assert!(e.is_empty());
        assert_eq!(v, RawValue::Str { text: "tcp://h:1883".into(), from_var: true, whole_var: false });
        let (v, _) = sub("${PORT}", &[("PORT", "80")]);
        assert_eq!(v, RawValue::Str { text: "80".into(), from_var: true, whole_var: true });
        let (v, _) = sub("$${LITERAL}", &[]);
        assert_eq!(v.as_str(), Some("${LITERAL}"));
    }

    #[test]
    fn missing_variable_points_at_it() {
        let (_, e) = sub("a ${NOPE} b", &[]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].span, Some(3..10));
        assert!(e[0].message.contains("`NOPE`"));
    }

    #[test]
    fn values_from_variables_are_not_shown() {
        let (v, _) = sub("${SECRET}", &[("SECRET", "hunter2")]);
        assert!(!v.shown().contains("hunter2"));
    }
}
