//! Topic templates for `mqtt-publish` (the shared `{{ jq }}` templates of
//! [`crate::net::template`], whose result must be a topic one can publish
//! to) and the checks every topic must pass (subscribe filters and publish
//! topics).

use fbp_runtime::Message;

/// A compiled topic template.
#[derive(Debug)]
pub(super) struct Template(crate::net::template::Template);

impl Template {
    /// Compiles `text`; a template without holes must already be a valid topic.
    pub(super) fn parse(text: &str) -> Result<Template, String> {
        let template = crate::net::template::Template::parse("topic", text)?;
        if let Some(topic) = template.as_static() {
            check_publish_topic(topic).map_err(|e| format!("`topic`: {e}"))?;
        }
        Ok(Template(template))
    }

    /// The topic for `msg`; an error when a hole has no value, or the result is not a topic.
    pub(super) fn render(&self, msg: &Message) -> Result<String, String> {
        let topic = self.0.render(msg)?;
        check_publish_topic(&topic).map_err(|e| format!("topic template gave {e}"))?;
        Ok(topic)
    }
}

/// A topic a message can be published to: not empty, no wildcard, no NUL, at most 65535 bytes.
pub(super) fn check_publish_topic(topic: &str) -> Result<(), String> {
    if topic.contains(['+', '#']) {
        return Err(format!("`{topic}`: a topic to publish to cannot hold the wildcards `+` or `#`"));
    }
    check_topic(topic)
}

/// A subscription filter: `+` fills one whole level, `#` ends the filter.
pub(super) fn check_filter(filter: &str) -> Result<(), String> {
    check_topic(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!("`{filter}`: `#` must be a whole level, and the last"));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("`{filter}`: `+` must be a whole level"));
        }
    }
    Ok(())
}

fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("an empty topic".into());
    }
    if topic.contains('\0') {
        return Err(format!("`{}`: a topic cannot hold NUL", topic.escape_debug()));
    }
    if topic.len() > 65_535 {
        return Err("a topic longer than 65535 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use fbp_runtime::{Meta, value};

    fn msg(json: &str, topic: Option<&str>) -> Message {
        let mut meta = Meta::new("src".into(), 0);
        meta.topic = topic.map(Into::into);
        Message::new(value::parse_json(json.as_bytes()).unwrap(), meta)
    }

    #[test]
    fn fills_fields_and_metadata() {
        let t = Template::parse("out/{{ .sensor }}/{{.n}}").unwrap();
        assert_eq!(t.render(&msg(r#"{"sensor": "s-1", "n": 3}"#, None)).unwrap(), "out/s-1/3");
        let t = Template::parse("site/{{ $meta.topic }}").unwrap();
        assert_eq!(t.render(&msg("1", Some("sensors/a"))).unwrap(), "site/sensors/a");
        let t = Template::parse("plain/topic").unwrap();
        assert_eq!(t.render(&msg("1", None)).unwrap(), "plain/topic");
    }

    #[test]
    fn a_hole_without_a_value_is_a_message_error() {
        let t = Template::parse("out/{{ .sensor }}").unwrap();
        assert!(t.render(&msg(r#"{"value": 1}"#, None)).unwrap_err().contains("gave null"));
        assert!(t.render(&msg(r#"{"sensor": {"a": 1}}"#, None)).unwrap_err().contains("gave object"));
        assert!(t.render(&msg(r#"{"sensor": "a/#"}"#, None)).unwrap_err().contains("wildcards"));
        let meta = Template::parse("{{ $meta.topic }}").unwrap();
        assert!(meta.render(&msg("1", None)).unwrap_err().contains("gave null"));
        assert!(t.render(&msg("[1]", None)).unwrap_err().contains("jq error"));
    }

    #[test]
    fn bad_templates_are_refused_when_built() {
        assert!(Template::parse("out/{{ .a").unwrap_err().contains("not closed"));
        assert!(Template::parse("out/{{ }}").unwrap_err().contains("empty"));
        assert!(Template::parse("out/}}").is_err());
        assert!(Template::parse("out/{{ .a >  }}").unwrap_err().contains("invalid jq"));
        assert!(Template::parse("out/#").unwrap_err().contains("wildcards"));
        assert!(Template::parse("").unwrap_err().contains("empty topic"));
    }

    #[test]
    fn filters_take_whole_level_wildcards() {
        for ok in ["sensors/#", "#", "+/temp", "a/+/b", "a"] {
            assert!(check_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["a/#/b", "a#", "a/b+", "", "x\0"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
    }
}
