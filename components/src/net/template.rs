//! Text templates with jq holes, for topics and routing keys:
//! `sensors.{{ .sensor }}` or `{{ $meta.topic }}`.
//!
//! Each `{{ ... }}` is a jq program (`.` the payload, `$meta` the metadata),
//! compiled once when the component is built. A hole must give a string, a
//! number or a bool; anything else (no output, `null`, an object, a jq error)
//! is a message error for that message, which the component sends to `err`.

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
    Hole { code: String, program: Program },
}

impl Template {
    /// Parses `text`; `key` names the setting in errors.
    pub(crate) fn parse(key: &str, text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| format!("`{key}`: a `{{{{` is not closed by `}}}}`"))?;
            let code = after[..close].trim().to_string();
            if code.is_empty() {
                return Err(format!("`{key}`: an empty `{{{{ }}}}`; write e.g. `{{{{ .sensor }}}}`"));
            }
            let program = Program::compile(&code).map_err(|e| format!("`{key}`: {e}"))?;
            parts.push(Part::Hole { code, program });
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("`{key}`: a `}}}}` without its `{{{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The text for `msg`, or why the template does not apply to it.
    pub(crate) fn render(&self, msg: &Message) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Hole { code, program } => {
                    let v = program.first(msg).map_err(|e| format!("template `{{{{ {code} }}}}`: {e}"))?;
                    match v {
                        Some(v @ (Value::TStr(_) | Value::BStr(_))) => {
                            out.push_str(&value::as_str(&v).unwrap_or_default())
                        }
                        Some(v @ (Value::Num(_) | Value::Bool(_))) => out.push_str(&value::to_json_string(&v)),
                        other => {
                            let found = other.as_ref().map_or("no output", value::type_name);
                            return Err(format!(
                                "template `{{{{ {code} }}}}` gave {found}; it must give a string, number or bool"
                            ));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fbp_runtime::Meta;

    fn msg(json: &str, topic: Option<&str>) -> Message {
        let mut meta = Meta::new("src".into(), 0);
        meta.topic = topic.map(Into::into);
        Message::new(value::parse_json(json.as_bytes()).unwrap(), meta)
    }

    #[test]
    fn fills_holes_from_the_payload_and_the_metadata() {
        let t = Template::parse("routing_key", "sensors.{{ .sensor }}.{{.n}}").unwrap();
        assert_eq!(t.render(&msg(r#"{"sensor": "s-1", "n": 3}"#, None)).unwrap(), "sensors.s-1.3");
        let t = Template::parse("routing_key", "{{ $meta.topic }}").unwrap();
        assert_eq!(t.render(&msg("1", Some("a.b"))).unwrap(), "a.b");
        assert_eq!(Template::parse("k", "plain").unwrap().render(&msg("1", None)).unwrap(), "plain");
    }

    #[test]
    fn a_hole_without_a_usable_value_is_a_message_error() {
        let t = Template::parse("routing_key", "x.{{ .sensor }}").unwrap();
        let err = t.render(&msg(r#"{"other": 1}"#, None)).unwrap_err();
        assert!(err.contains("gave null"), "{err}");
        let err = Template::parse("k", "{{ $meta.topic }}").unwrap().render(&msg("1", None)).unwrap_err();
        assert!(err.contains("gave null"), "{err}");
        let err = Template::parse("k", "{{ .a + 1 }}").unwrap().render(&msg(r#"{"a": "x"}"#, None)).unwrap_err();
        assert!(err.contains("jq error"), "{err}");
    }

    #[test]
    fn malformed_templates_are_refused_at_build() {
        assert!(Template::parse("routing_key", "a.{{ .x").unwrap_err().contains("not closed"));
        assert!(Template::parse("routing_key", "a.{{ }}").unwrap_err().contains("empty"));
        assert!(Template::parse("routing_key", "a.}}").unwrap_err().contains("without"));
        assert!(Template::parse("routing_key", "{{ .x > }}").unwrap_err().contains("invalid jq program"));
    }
}
