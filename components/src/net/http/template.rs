//! Text templates with jq holes: `http://h/items/{{ .id }}` or `{{ $meta.topic }}`.
//!
//! Each `{{ PROGRAM }}` is a jq program run on the message; its first output
//! fills the hole: a string as its text, anything else as JSON. A program with
//! no output, or `null`, is an error for that message.

use fbp_runtime::Message;
use fbp_runtime::jq::Program;
use fbp_runtime::value::{self, Value};

/// A parsed template.
#[derive(Debug)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Hole(String, Program),
}

impl Template {
    /// Parses `text`, compiling every hole.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| format!("`{text}`: a `{{{{` is not closed by `}}}}`"))?;
            let code = after[..end].trim();
            if code.is_empty() {
                return Err(format!("`{text}`: an empty `{{{{ }}}}`"));
            }
            let program = Program::compile(code).map_err(|e| format!("`{{{{ {code} }}}}`: {e}"))?;
            parts.push(Part::Hole(code.to_string(), program));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The text, when the template has no holes.
    pub(crate) fn as_static(&self) -> Option<&str> {
        match &self.parts[..] {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Fills the holes from `msg`.
    pub(crate) fn render(&self, msg: &Message) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Hole(code, program) => match program.first(msg)? {
                    None | Some(Value::Null) => return Err(format!("`{{{{ {code} }}}}` gave no value")),
                    Some(v @ (Value::TStr(_) | Value::BStr(_))) => out.push_str(&value::as_str(&v).unwrap_or_default()),
                    Some(v) => out.push_str(&value::to_json_string(&v)),
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
        let mut meta = Meta::new("t".into(), 0);
        meta.topic = Some("sensors/1".into());
        Message::new(value::parse_json(json.as_bytes()).unwrap(), meta)
    }

    #[test]
    fn fills_holes_from_payload_and_metadata() {
        let t = Template::parse("http://h/items/{{ .id }}?t={{$meta.topic}}&n={{ .n + 1 }}").unwrap();
        assert_eq!(t.render(&msg(r#"{"id": "a7", "n": 1}"#)).unwrap(), "http://h/items/a7?t=sensors/1&n=2");
        assert!(t.render(&msg(r#"{"n": 1}"#)).unwrap_err().contains("gave no value"));
        assert_eq!(Template::parse("http://h/x").unwrap().as_static(), Some("http://h/x"));
    }

    #[test]
    fn refuses_unclosed_and_invalid_holes() {
        assert!(Template::parse("http://h/{{ .id").unwrap_err().contains("not closed"));
        assert!(Template::parse("http://h/{{ }}").unwrap_err().contains("empty"));
        assert!(Template::parse("http://h/{{ .a + }}").unwrap_err().contains("invalid jq"));
    }
}
