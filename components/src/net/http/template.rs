//! URL templates with jq holes: `http://h/items/{{ .id }}?t={{ $meta.topic }}`.
//!
//! Each `{{ PROGRAM }}` is a jq program run on the message; its first output
//! fills the hole: a string as its text, anything else as JSON. A program with
//! no output, or `null`, is an error for that message.
//!
//! A value is encoded for where its hole sits, told from the template's own
//! text before it: in the host, a path segment, the query or the fragment,
//! every byte but `A-Z a-z 0-9 - . _ ~` is percent-encoded, so a message
//! cannot add a segment (`/`), a query (`?`, `&`, `=`) or a fragment (`#`).
//! In the path, a `.` or `..` between a value's slashes is encoded too
//! (`../admin` gives `%2E%2E%2Fadmin`), and a whole path segment that a value
//! makes `.` or `..` is an error (URL parsers resolve `%2E%2E` as `..`), so a
//! message cannot climb the path.
//! A hole before the `://` (`{{ .url }}`, the whole URL from the message)
//! is put in as it is: the template gives that message the endpoint. The
//! template's own text is never changed.

use fbp_runtime::Message;
use fbp_runtime::jq::Program;
use fbp_runtime::value::{self, Value};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What stays as it is in a value: the unreserved characters of RFC 3986.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A parsed template.
#[derive(Debug)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Hole { code: String, program: Program, place: Place },
}

/// Where a hole sits in the URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Before `://`: the scheme, or the whole URL; put in as it is.
    Start,
    /// Between `://` and the path: the host (and userinfo, port).
    Authority,
    /// A path segment.
    Path,
    /// The query, after `?`.
    Query,
    /// The fragment, after `#`.
    Fragment,
}

impl Place {
    /// The place after the template's literal `text`, starting from `self`.
    fn after(self, text: &str) -> Place {
        let mut place = self;
        let mut chars = text.char_indices();
        while let Some((i, c)) = chars.next() {
            place = match (place, c) {
                (Place::Start, ':') if text[i..].starts_with("://") => {
                    chars.nth(1);
                    Place::Authority
                }
                (Place::Start | Place::Authority, '/') => Place::Path,
                (Place::Start | Place::Authority | Place::Path, '?') => Place::Query,
                (_, '#') => Place::Fragment,
                (p, _) => p,
            };
        }
        place
    }

    /// `value` encoded for this place.
    fn encode(self, value: &str) -> String {
        match self {
            Place::Start => value.to_string(),
            Place::Path => value.split('/').map(path_piece).collect::<Vec<_>>().join("%2F"),
            _ => utf8_percent_encode(value, COMPONENT).to_string(),
        }
    }
}

impl Template {
    /// Parses `text`, compiling every hole and telling where it sits.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut place = Place::Start;
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                place = place.after(&rest[..start]);
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| format!("`{text}`: a `{{{{` is not closed by `}}}}`"))?;
            let code = after[..end].trim();
            if code.is_empty() {
                return Err(format!("`{text}`: an empty `{{{{ }}}}`"));
            }
            let program = Program::compile(code).map_err(|e| format!("`{{{{ {code} }}}}`: {e}"))?;
            parts.push(Part::Hole { code: code.to_string(), program, place });
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

    /// Fills the holes from `msg`, each value encoded for its place.
    pub(crate) fn render(&self, msg: &Message) -> Result<String, String> {
        let mut out = String::new();
        let mut in_path = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Hole { code, program, place } => {
                    let start = out.len();
                    out.push_str(&place.encode(&hole_text(code, program.first(msg)?)?));
                    if *place == Place::Path {
                        in_path.push((start, code));
                    }
                }
            }
        }
        for (at, code) in in_path {
            if is_dot_segment(segment_at(&out, at)) {
                return Err(format!("`{{{{ {code} }}}}` makes a `.` or `..` path segment, which would climb the path"));
            }
        }
        Ok(out)
    }
}

/// A piece of a path value between its `/`s, encoded; `.` and `..` become
/// `%2E` and `%2E%2E`, so a server that decodes `%2F` sees no dot segment either.
fn path_piece(piece: &str) -> String {
    match piece {
        "." | ".." => piece.replace('.', "%2E"),
        _ => utf8_percent_encode(piece, COMPONENT).to_string(),
    }
}

/// A hole's value as text: a string as it is, anything else as JSON.
fn hole_text(code: &str, value: Option<Value>) -> Result<String, String> {
    match value {
        None | Some(Value::Null) => Err(format!("`{{{{ {code} }}}}` gave no value")),
        Some(v @ (Value::TStr(_) | Value::BStr(_))) => Ok(value::as_str(&v).unwrap_or_default().into_owned()),
        Some(v) => Ok(value::to_json_string(&v)),
    }
}

/// The path segment of `url` around byte `at`.
fn segment_at(url: &str, at: usize) -> &str {
    let start = url[..at].rfind('/').map_or(0, |i| i + 1);
    let end = url[at..].find(['/', '?', '#']).map_or(url.len(), |i| at + i);
    &url[start..end]
}

/// Whether a URL parser takes `segment` for `.` or `..` (`%2e` counts as a dot).
fn is_dot_segment(segment: &str) -> bool {
    matches!(segment.to_ascii_lowercase().replace("%2e", ".").as_str(), "." | "..")
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

    fn render(template: &str, json: &str) -> Result<String, String> {
        Template::parse(template).unwrap().render(&msg(json))
    }

    #[test]
    fn fills_holes_from_payload_and_metadata() {
        let t = Template::parse("http://h/items/{{ .id }}?t={{$meta.topic}}&n={{ .n + 1 }}").unwrap();
        assert_eq!(t.render(&msg(r#"{"id": "a7", "n": 1}"#)).unwrap(), "http://h/items/a7?t=sensors%2F1&n=2");
        assert!(t.render(&msg(r#"{"n": 1}"#)).unwrap_err().contains("gave no value"));
        assert_eq!(Template::parse("http://h/x").unwrap().as_static(), Some("http://h/x"));
    }

    #[test]
    fn tells_where_each_hole_sits_from_the_text_before_it() {
        let places = |text: &str| -> Vec<Place> {
            let t = Template::parse(text).unwrap();
            t.parts.iter().filter_map(|p| if let Part::Hole { place, .. } = p { Some(*place) } else { None }).collect()
        };
        use Place::*;
        assert_eq!(places("{{ .url }}"), [Start]);
        assert_eq!(places("http://{{ .host }}:80/a/{{ .id }}/b{{ .x }}"), [Authority, Path, Path]);
        assert_eq!(places("http://h/a?x={{ .x }}&y={{ .y }}#{{ .f }}"), [Query, Query, Fragment]);
        assert_eq!(places("{{ .base }}/items/{{ .id }}?q={{ .q }}"), [Start, Path, Query]);
        assert_eq!(places("http://h/{{ .a }}?{{ .b }}"), [Path, Query]);
        assert_eq!(places("http://h{{ .a }}"), [Authority]);
    }

    #[test]
    fn a_value_cannot_climb_the_path_or_add_a_query() {
        let t = "http://h/api/items/{{ .id }}";
        assert_eq!(render(t, r#"{"id": "1?role=admin"}"#).unwrap(), "http://h/api/items/1%3Frole%3Dadmin");
        assert_eq!(render(t, r#"{"id": "a/b#c"}"#).unwrap(), "http://h/api/items/a%2Fb%23c");
        assert_eq!(render(t, r#"{"id": "../admin/delete"}"#).unwrap(), "http://h/api/items/%2E%2E%2Fadmin%2Fdelete");
        assert_eq!(render(t, r#"{"id": "a/./b.c/.."}"#).unwrap(), "http://h/api/items/a%2F%2E%2Fb.c%2F%2E%2E");
        assert_eq!(render(t, r#"{"id": "%2e%2E"}"#).unwrap(), "http://h/api/items/%252e%252E");
        assert_eq!(render(t, r#"{"id": "report.v2 é"}"#).unwrap(), "http://h/api/items/report.v2%20%C3%A9");
        for dots in ["..", "."] {
            let e = render(t, &format!(r#"{{"id": "{dots}"}}"#)).unwrap_err();
            assert!(e.contains("climb the path"), "{dots}: {e}");
        }
        assert!(render("http://h/a/.{{ .id }}/b", r#"{"id": "."}"#).unwrap_err().contains("climb"));
        assert!(render("http://h/a/%2e{{ .id }}", r#"{"id": "."}"#).unwrap_err().contains("climb"));
        assert_eq!(render("http://h/a/..{{ .id }}", r#"{"id": "."}"#).unwrap(), "http://h/a/..%2E");
        let q = "http://h/s?q={{ .q }}&page=1#{{ .f }}";
        assert_eq!(
            render(q, r#"{"q": "a&b=c#d?e f+g", "f": "x#y"}"#).unwrap(),
            "http://h/s?q=a%26b%3Dc%23d%3Fe%20f%2Bg&page=1#x%23y"
        );
        assert_eq!(render("http://{{ .h }}/x", r#"{"h": "evil.com/y?"}"#).unwrap(), "http://evil.com%2Fy%3F/x");
        assert_eq!(render("{{ .u }}", r#"{"u": "http://h/a?b=c"}"#).unwrap(), "http://h/a?b=c");
    }

    #[test]
    fn rendered_urls_parse_to_the_intended_path() {
        for id in ["../admin/delete", "1?role=admin", "a/b#c", "..%2f", "/..", "../"] {
            let rendered =
                render("http://h/api/items/{{ .id }}", &serde_json::json!({ "id": id }).to_string()).unwrap();
            let url = url::Url::parse(&rendered).unwrap();
            assert_eq!(url.path_segments().unwrap().count(), 3, "{rendered} -> {url}");
            assert!(url.path().starts_with("/api/items/") && url.query().is_none() && url.fragment().is_none());
        }
    }

    #[test]
    fn refuses_unclosed_and_invalid_holes() {
        assert!(Template::parse("http://h/{{ .id").unwrap_err().contains("not closed"));
        assert!(Template::parse("http://h/{{ }}").unwrap_err().contains("empty"));
        assert!(Template::parse("http://h/{{ .a + }}").unwrap_err().contains("invalid jq"));
    }
}
