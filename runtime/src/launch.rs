//! `fbp launch 'a k=v ! b ! c'`: a GStreamer-like pipeline, turned into the
//! equivalent flow file (which `--print-flow` prints and `launch` then runs).

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use crate::flow::Diagnostics;
use crate::spec::{Catalogue, KeyType};
use crate::uri::{self, Role, UriError};

/// Why a pipeline could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// Quotes do not balance.
    #[error("unbalanced quotes in the pipeline")]
    Quotes,
    /// Nothing between two `!`.
    #[error("empty element at position {0} of the pipeline; elements are separated by `!`")]
    Empty(usize),
    /// A setting that is not `key=value`.
    #[error("`{0}` is not a setting; write `key=value` after the component type")]
    NotASetting(String),
    /// A URI (an element, or a `location=`) that cannot be used where it is.
    #[error("element {position} of the pipeline: {error}\n  = help: {}", uri::hint(error, *role))]
    Uri {
        /// 1 for the first element.
        position: usize,
        /// What it is there: the first element is a source, the last a sink.
        role: Role,
        /// What is wrong with it.
        error: UriError,
    },
    /// An element whose place gives it no role for a URI.
    #[error(
        "element {0} of the pipeline: a URI or `location=` names a source (the first element) or a \
         sink (the last), not a step in between"
    )]
    UriInTheMiddle(usize),
    /// A LorryStream element without its `location=`.
    #[error("`{0}` needs `location=URI`, e.g. `{0} location={1}`")]
    NoLocation(&'static str, &'static str),
    /// `location=` of another component type than the element's.
    #[error("`{ty} location={location}`: that URI is a `{is}`; write `{is} location={location}` or drop the type")]
    Mismatch {
        /// The element's type.
        ty: String,
        /// The URI.
        location: String,
        /// The type the URI gives.
        is: &'static str,
    },
}

/// LorryStream's element names, as aliases: each is the source or the sink
/// its `location=URI` gives (`mqttsrc location=mqtt://localhost/testdrive/%23`),
/// with an example for the error when `location` is missing.
const ALIASES: &[(&str, Role, &str)] = &[
    ("mqttsrc", Role::Source, "mqtt://localhost/testdrive/%23"),
    ("amqpsrc", Role::Source, "amqp://localhost/testdrive/readings"),
    ("natssrc", Role::Source, "nats://localhost:4222/readings"),
    ("filesrc", Role::Source, "file:readings.jsonl"),
    ("httpsrc", Role::Source, "http://localhost:8080/readings?interval=5s"),
    ("tcpsrc", Role::Source, "tcp://0.0.0.0:5515"),
    ("udpsrc", Role::Source, "udp://0.0.0.0:5514"),
    ("wssrc", Role::Source, "ws://localhost:8080/feed"),
    ("sqlsink", Role::Sink, "sqlite://testdrive.db?table=testdrive"),
    ("mqttsink", Role::Sink, "mqtt://localhost/testdrive/out"),
    ("amqpsink", Role::Sink, "amqp://localhost/testdrive/out"),
    ("natssink", Role::Sink, "nats://localhost:4222/out"),
    ("filesink", Role::Sink, "file:out.jsonl"),
    ("httpsink", Role::Sink, "http://localhost:8080/ingest"),
    ("wssink", Role::Sink, "ws://localhost:8080/feed"),
];

/// One element of a pipeline: `TYPE key=value ...`, named uniquely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Its component name in the flow: the type, `-2`, `-3`... when repeated.
    pub name: String,
    /// The component type as written.
    pub ty: String,
    /// Its settings, as text.
    pub settings: Vec<(String, String)>,
}

/// Reads a pipeline into its elements, in order.
pub fn elements(pipeline: &str) -> Result<Vec<Element>, LaunchError> {
    let tokens = shlex::split(pipeline).ok_or(LaunchError::Quotes)?;
    let mut words: Vec<Vec<String>> = vec![Vec::new()];
    for t in tokens {
        if t == "!" {
            words.push(Vec::new());
        } else {
            words.last_mut().expect("one element").push(t);
        }
    }
    let mut elements: Vec<Element> = Vec::new();
    let last = words.len();
    for (i, el) in words.iter().enumerate() {
        let Some((ty, settings)) = el.split_first() else {
            return Err(LaunchError::Empty(i + 1));
        };
        let mut config = Vec::new();
        for s in settings {
            let (k, v) = s.split_once('=').ok_or_else(|| LaunchError::NotASetting(s.clone()))?;
            config.push((k.to_string(), v.to_string()));
        }
        let role = match (i, last) {
            (_, 1) => None,
            (0, _) => Some(Role::Source),
            (i, n) if i + 1 == n => Some(Role::Sink),
            _ => None,
        };
        let (ty, config) = located(i + 1, role, ty, config)?;
        let taken: Vec<String> = elements.iter().map(|e| e.name.clone()).collect();
        elements.push(Element { name: unique_name(&ty, &taken), ty, settings: config });
    }
    Ok(elements)
}

/// Whether an element's first word is a URI rather than a type: it has
/// `://`, or is `-`, or starts with a scheme that is written without `//`.
fn is_uri(word: &str) -> bool {
    word.contains("://") || word == "-" || ["file:", "exec:", "stdin:", "stdout:"].iter().any(|s| word.starts_with(s))
}

/// An element written as a URI (`mqtt://host/t ! ...`), a LorryStream
/// element (`mqttsrc location=URI`) or any element with `location=URI`:
/// the component type and settings the URI gives for the element's role,
/// followed by the element's other settings. Other elements as they are.
fn located(
    position: usize,
    role: Option<Role>,
    ty: &str,
    mut settings: Vec<(String, String)>,
) -> Result<(String, Vec<(String, String)>), LaunchError> {
    let location = settings.iter().position(|(k, _)| k == "location").map(|i| settings.remove(i).1);
    let alias = ALIASES.iter().find(|(name, _, _)| *name == ty);
    let (uri_text, role) = match (is_uri(ty), alias, location) {
        (true, _, location) => {
            if let Some(location) = location {
                settings.push(("location".into(), location));
            }
            (ty.to_string(), role)
        }
        (false, Some((_, alias_role, _)), Some(location)) => (location, Some(role.unwrap_or(*alias_role))),
        (false, Some((name, _, example)), None) => return Err(LaunchError::NoLocation(name, example)),
        (false, None, Some(location)) => (location, role),
        (false, None, None) => return Ok((ty.to_string(), settings)),
    };
    let Some(role) = role else {
        return Err(LaunchError::UriInTheMiddle(position));
    };
    let endpoint = uri::resolve(&uri_text, role).map_err(|error| LaunchError::Uri { position, role, error })?;
    if !is_uri(ty) && alias.is_none() && endpoint.component != ty {
        return Err(LaunchError::Mismatch { ty: ty.into(), location: uri_text, is: endpoint.component });
    }
    let mut all = endpoint.settings;
    for (k, v) in settings {
        match all.iter_mut().find(|(key, _)| *key == k) {
            Some(existing) => existing.1 = v,
            None => all.push((k, v)),
        }
    }
    Ok((endpoint.component.to_string(), all))
}

/// The `connections` array of a chain of elements, one per line.
pub(crate) fn chain(elements: &[Element]) -> String {
    let lines: Vec<String> =
        elements.windows(2).map(|w| format!("  {},\n", quote(&format!("{} -> {}", w[0].name, w[1].name)))).collect();
    format!("connections = [\n{}]\n", lines.concat())
}

/// Turns a pipeline into flow-file TOML. Types, keys and ports are checked
/// afterwards by the flow loader, like any flow file.
pub fn to_flow_toml(pipeline: &str, catalogue: &Catalogue) -> Result<String, LaunchError> {
    let elements = elements(pipeline)?;
    let tables: String = elements.iter().map(|e| component_table(&e.name, &e.ty, &e.settings, catalogue)).collect();
    Ok(format!("[flow]\nname = \"launch\"\n{}{tables}", chain(&elements)))
}

fn unique_name(ty: &str, taken: &[String]) -> String {
    let base: String =
        ty.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    (1..)
        .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
        .find(|c| !taken.contains(c))
        .expect("a free name")
}

/// The `[components.NAME]` table of a component of type `ty`, its settings
/// given as text: each value becomes the TOML literal its declared key type
/// wants (a string where in doubt). Shared by `launch` and `relay`.
pub(crate) fn component_table(name: &str, ty: &str, settings: &[(String, String)], catalogue: &Catalogue) -> String {
    let mut table = format!("\n[components.{}]\ntype = {}\n", key(name), quote(ty));
    if !settings.is_empty() {
        let config: Vec<String> = settings
            .iter()
            .map(|(k, v)| {
                let ty_of_key = catalogue.get(ty).and_then(|spec| spec.key(k)).map(|key| key.ty);
                format!("{} = {}", key(k), literal(v, ty_of_key))
            })
            .collect();
        table.push_str(&format!("config = {{ {} }}\n", config.join(", ")));
    }
    table
}

pub(crate) fn key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        k.to_string()
    } else {
        quote(k)
    }
}

/// `s` as a TOML string literal.
pub(crate) fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The TOML literal for a value, by the key's declared type.
pub(crate) fn literal(v: &str, ty: Option<KeyType>) -> String {
    let parses = |lit: &str| toml::from_str::<toml::Table>(&format!("v = {lit}")).is_ok();
    // One value where a list is wanted is a list of one: `topics=sensors/#`.
    let is_list = |lit: &str| lit.trim_start().starts_with('[') && parses(lit);
    match ty {
        Some(KeyType::StringList) if !is_list(v) => return format!("[{}]", quote(v)),
        Some(KeyType::NumberList) if !is_list(v) && parses(v) => return format!("[{v}]"),
        _ => {}
    }
    match ty {
        Some(
            KeyType::Integer
            | KeyType::Number
            | KeyType::Bool
            | KeyType::StringList
            | KeyType::NumberList
            | KeyType::Table(_)
            | KeyType::Any,
        )
        | None
            if parses(v) =>
        {
            v.to_string()
        }
        _ => quote(v),
    }
}

/// Where each part of an element was typed in the pipeline (byte ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Typed {
    /// The whole element, type and settings.
    whole: Range<usize>,
    /// The type word.
    ty: Range<usize>,
    /// Each setting's key and value.
    settings: Vec<(Range<usize>, Range<usize>)>,
}

/// The words of a pipeline with their places, split as a shell splits them
/// (quotes and backslashes kept inside a word).
fn words(pipeline: &str) -> Vec<(Range<usize>, &str)> {
    let mut out = Vec::new();
    let mut chars = pipeline.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut quote = None;
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '\'') | (None, '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (q, '\\') if q != Some('\'') => {
                    chars.next();
                }
                _ => {}
            }
            chars.next();
            end = chars.peek().map_or(pipeline.len(), |&(j, _)| j).max(i + c.len_utf8());
        }
        out.push((start..end, &pipeline[start..end]));
    }
    out
}

/// The places of every element, in order; `None` when they cannot be told.
fn typed(pipeline: &str) -> Option<Vec<Typed>> {
    let mut out: Vec<Typed> = Vec::new();
    let mut current: Option<Typed> = None;
    for (span, word) in words(pipeline) {
        if word == "!" {
            out.push(current.take()?);
            continue;
        }
        match &mut current {
            None => current = Some(Typed { whole: span.clone(), ty: span, settings: Vec::new() }),
            Some(el) => {
                let eq = word.find('=')?;
                el.whole.end = span.end;
                el.settings.push((span.start..span.start + eq, span.start + eq + 1..span.end));
            }
        }
    }
    out.push(current?);
    Some(out)
}

/// Places `diags`, found in the flow file `text` that `pipeline` became,
/// into the pipeline: a key or value at what the user typed for it, anything
/// else of a component at its whole element, the rest at the whole pipeline.
pub fn point_into(pipeline: &str, text: &str, diags: Diagnostics) -> Diagnostics {
    let Some(map) = origins(pipeline, text) else { return diags };
    let place = |span: &Range<usize>| {
        map.iter()
            .filter(|(generated, _)| {
                generated.start <= span.start && span.start < generated.end.max(generated.start + 1)
            })
            .min_by_key(|(generated, _)| generated.len())
            .map_or(0..pipeline.len(), |(_, typed)| typed.clone())
    };
    diags.moved(pipeline.to_string(), place)
}

pub(crate) fn table<'a>(v: &DeValue<'a>) -> Option<DeTable<'a>> {
    match v {
        DeValue::Table(t) => Some(t.clone()),
        _ => None,
    }
}

pub(crate) fn get<'a>(t: &DeTable<'a>, k: &str) -> Option<(Range<usize>, toml::Spanned<DeValue<'a>>)> {
    t.iter().find(|(key, _)| key.get_ref() == k).map(|(k, v)| (k.span(), v.clone()))
}

/// Pairs of (range in the flow file, range in the pipeline it came from).
fn origins(pipeline: &str, text: &str) -> Option<Vec<(Range<usize>, Range<usize>)>> {
    let typed = typed(pipeline)?;
    let parsed = DeTable::parse(text).ok()?;
    let mut map = Vec::new();
    let (_, components) = get(parsed.get_ref(), "components")?;
    let mut components: Vec<_> = table(components.get_ref())?.into_iter().collect();
    components.sort_by_key(|(k, _)| k.span().start);
    // A component's table runs from its name to the next component's.
    let starts: Vec<usize> = components.iter().map(|(k, _)| k.span().start).skip(1).chain([text.len()]).collect();
    for (((name, body), el), end) in components.iter().zip(&typed).zip(starts) {
        map.push((name.span().start..end, el.whole.clone()));
        let body = table(body.get_ref())?;
        if let Some((_, ty)) = get(&body, "type") {
            map.push((ty.span(), el.ty.clone()));
        }
        let Some((_, config)) = get(&body, "config") else { continue };
        let mut config: Vec<_> = table(config.get_ref())?.into_iter().collect();
        config.sort_by_key(|(k, _)| k.span().start);
        for ((k, v), (key, value)) in config.iter().zip(&el.settings) {
            map.push((k.span(), key.clone()));
            map.push((v.span(), value.clone()));
        }
    }
    let (_, flow) = get(parsed.get_ref(), "flow")?;
    if let Some((_, DeValue::Array(conns))) =
        get(&table(flow.get_ref())?, "connections").map(|(s, v)| (s, v.into_inner()))
    {
        for (c, pair) in conns.iter().zip(typed.windows(2)) {
            map.push((c.span(), pair[0].whole.start..pair[1].whole.end));
        }
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    static EMPTY: Catalogue = Catalogue(&[]);

    #[test]
    fn builds_a_chain_with_unique_names() {
        let toml =
            to_flow_toml(r#"counter max_count=3 ! map expr=".count + 1" ! map expr=. ! console"#, &EMPTY).unwrap();
        assert!(toml.contains("\"counter -> map\""), "{toml}");
        assert!(toml.contains("\"map -> map-2\""), "{toml}");
        assert!(toml.contains("\"map-2 -> console\""), "{toml}");
        assert!(toml.contains("config = { max_count = 3 }"), "{toml}");
        assert!(toml.contains("config = { expr = \".count + 1\" }"), "{toml}");
        toml::from_str::<toml::Table>(&toml).unwrap();
    }

    #[test]
    fn every_element_key_and_value_keeps_its_place_in_the_pipeline() {
        let p = r#"counter max_count=3 ! map expr=".a | .b" ! console"#;
        let els = typed(p).unwrap();
        let at = |r: &Range<usize>| &p[r.clone()];
        assert_eq!(els.len(), 3);
        assert_eq!(at(&els[0].whole), "counter max_count=3");
        assert_eq!((at(&els[0].settings[0].0), at(&els[0].settings[0].1)), ("max_count", "3"));
        assert_eq!(at(&els[1].ty), "map");
        assert_eq!(at(&els[1].settings[0].1), r#"".a | .b""#);
        assert_eq!(at(&els[2].whole), "console");
        assert_eq!(typed("a ! ! b"), None);
    }

    #[test]
    fn rejects_malformed_pipelines() {
        assert_eq!(to_flow_toml("counter ! ! console", &EMPTY), Err(LaunchError::Empty(2)));
        assert_eq!(to_flow_toml("counter max_count", &EMPTY), Err(LaunchError::NotASetting("max_count".into())));
        assert_eq!(to_flow_toml("map expr='.a", &EMPTY), Err(LaunchError::Quotes));
    }

    #[test]
    fn lorrystream_elements_and_uris_become_our_components() {
        let toml =
            to_flow_toml("mqttsrc location=mqtt://localhost/t/%23 ! sqlsink location=sqlite://x.db?table=t", &EMPTY)
                .unwrap();
        assert!(
            toml.contains("type = \"mqtt-subscribe\"\nconfig = { url = \"mqtt://localhost\", topics = [\"t/#\"] }"),
            "{toml}"
        );
        assert!(toml.contains("type = \"sqlite\"\nconfig = { path = \"x.db\", table = \"t\" }"), "{toml}");
        let toml = to_flow_toml("file:in.jsonl ! map expr=. ! file:out.jsonl", &EMPTY).unwrap();
        assert!(toml.contains("\"file-read -> map\"") && toml.contains("\"map -> file-write\""), "{toml}");
        let toml = to_flow_toml("mqtt-subscribe location=mqtt://h/a qos=2 ! console", &EMPTY).unwrap();
        assert!(toml.contains("url = \"mqtt://h\", topics = [\"a\"], qos = 2"), "{toml}");
    }

    #[test]
    fn uris_where_they_cannot_be_are_refused_with_what_to_write() {
        assert_eq!(
            to_flow_toml("mqttsrc ! console", &EMPTY),
            Err(LaunchError::NoLocation("mqttsrc", "mqtt://localhost/testdrive/%23"))
        );
        assert_eq!(to_flow_toml("counter ! file:x.jsonl ! console", &EMPTY), Err(LaunchError::UriInTheMiddle(2)));
        let err = to_flow_toml("file-read location=mqtt://h/a ! console", &EMPTY).unwrap_err();
        assert!(matches!(&err, LaunchError::Mismatch { is: "mqtt-subscribe", .. }), "{err}");
        let err = to_flow_toml("counter ! sqlsink location=sqlite://x.db", &EMPTY).unwrap_err().to_string();
        assert!(err.starts_with("element 2 of the pipeline: bad `sqlite:` URI"), "{err}");
    }

    #[test]
    fn one_value_for_a_list_key_is_a_list_of_one() {
        assert_eq!(literal("sensors/#", Some(KeyType::StringList)), "[\"sensors/#\"]");
        assert_eq!(literal("[\"a\", \"b\"]", Some(KeyType::StringList)), "[\"a\", \"b\"]");
        assert_eq!(literal("5", Some(KeyType::NumberList)), "[5]");
        assert_eq!(literal("[1, 2]", Some(KeyType::NumberList)), "[1, 2]");
    }
}
