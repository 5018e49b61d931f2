//! Templates for topics, subjects and ids: text with `{{ jq }}` parts.
//!
//! `sensors.{{ .sensor }}` takes the payload's `sensor` field;
//! `{{ $meta.topic }}` the message's topic. Each part is a jq program (the
//! same as `map`'s), compiled once; its first output is inserted: a string as
//! is, a number or a bool as JSON. A part that gives nothing, `null`, an
//! array or an object, or fails, makes the whole rendering fail: the caller
//! sends that message to `err`.

use fbp_runtime::Message;
use fbp_runtime::jq::Program;
use fbp_runtime::value::{self, Value};

/// A parsed template.
#[derive(Debug)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Expr(String, Program),
}

impl Template {
    /// Parses `text`; `key` names the setting in errors.
    pub fn parse(key: &str, text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| format!("`{key}`: `{{{{` without a closing `}}}}`"))?;
            let code = after[..end].trim();
            if code.is_empty() {
                return Err(format!("`{key}`: empty `{{{{ }}}}`; write e.g. `{{{{ .sensor }}}}`"));
            }
            let program = Program::compile(code).map_err(|e| format!("`{key}`: in `{{{{ {code} }}}}`: {e}"))?;
            parts.push(Part::Expr(code.to_string(), program));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The text, when the template has no `{{ }}` part.
    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Renders the template for `msg`.
    pub fn render(&self, msg: &Message) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(code, program) => match program.first(msg)? {
                    Some(v @ (Value::TStr(_) | Value::BStr(_))) => out.push_str(&value::as_str(&v).unwrap_or_default()),
                    Some(v @ (Value::Num(_) | Value::Bool(_))) => out.push_str(&value::to_json_string(&v)),
                    Some(v) => {
                        return Err(format!("`{{{{ {code} }}}}` gave {}, not a string", value::type_name(&v)));
                    }
                    None => return Err(format!("`{{{{ {code} }}}}` gave no value")),
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fbp_runtime::Meta;

    fn msg(json: &str) -> Message {
        let mut meta = Meta::new("src".into(), 7);
        meta.topic = Some("in.a".into());
        Message::new(value::parse_json(json.as_bytes()).unwrap(), meta)
    }

    #[test]
    fn renders_payload_fields_and_metadata() {
        let t = Template::parse("subject", "sensors.{{ .sensor }}.{{.n}}").unwrap();
        assert_eq!(t.render(&msg(r#"{"sensor": "s1", "n": 3}"#)).unwrap(), "sensors.s1.3");
        let t = Template::parse("subject", "out.{{ $meta.topic }}-{{ $meta.seq }}").unwrap();
        assert_eq!(t.render(&msg("{}")).unwrap(), "out.in.a-7");
        assert_eq!(Template::parse("subject", "plain").unwrap().as_static(), Some("plain"));
        assert_eq!(Template::parse("subject", "a.{{ .x }}").unwrap().as_static(), None);
    }

    #[test]
    fn a_missing_field_or_a_bad_template_is_an_error() {
        let t = Template::parse("subject", "sensors.{{ .sensor }}").unwrap();
        assert!(t.render(&msg(r#"{"value": 1}"#)).unwrap_err().contains("gave null"));
        assert!(t.render(&msg("[1]")).unwrap_err().contains("jq error"));
        assert!(Template::parse("subject", "a.{{ .x").unwrap_err().contains("closing"));
        assert!(Template::parse("subject", "a.{{ }}").unwrap_err().contains("empty"));
        assert!(Template::parse("subject", "a.{{ .x > }}").unwrap_err().contains("invalid jq"));
    }
}
