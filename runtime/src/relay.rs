//! `fbp relay SOURCE SINK`: two URIs turned into the equivalent flow file,
//! two components `source` and `sink` and the connection `source -> sink`,
//! which `--print-flow` prints and `relay` then checks and runs like any flow.
//!
//! `--set source.KEY=VALUE` and `--set sink.KEY=VALUE` add a config setting to
//! one end, or replace what its URI set; values are typed by the component's
//! declared keys, as `launch` types its settings. The flow is loaded like a
//! flow file, so `${VAR}` in a URI or a setting is substituted from the
//! environment, and relative paths are taken from the current folder.

use std::ops::Range;

use toml::de::DeTable;

use crate::flow::Diagnostics;
use crate::launch::{component_table, get, quote, table};
use crate::spec::Catalogue;
use crate::uri::{self, Role, UriError};

/// Why a relay could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// A URI that cannot be used; shown with how to write its scheme.
    #[error("{role} URI: {error}\n  = help: {}", uri::hint(error, *role))]
    Uri {
        /// Which end.
        role: Role,
        /// What is wrong with it.
        error: UriError,
    },
    /// A `--set` that is not `source.KEY=VALUE` or `sink.KEY=VALUE`.
    #[error("`--set {0}`: write `source.KEY=VALUE` or `sink.KEY=VALUE`")]
    Set(String),
}

/// Broker sources and sinks that can carry payloads as bytes: a relay from
/// one to another forwards each payload as it is (`format = "bytes"` on the
/// source, and on the sink where it has a `format`: nothing decoded and
/// encoded again, nothing that is not JSON turned away) unless the URIs or
/// `--set` give either end a `format`.
const BYTES_SOURCES: &[&str] = &["nats-subscribe", "mqtt-subscribe"];
/// The sinks, and whether each needs `format = "bytes"` to publish bytes as they are.
const BYTES_SINKS: &[(&str, bool)] = &[("nats-publish", false), ("mqtt-publish", true)];

/// Turns two URIs and `--set` entries into flow-file TOML. Keys and types are
/// checked afterwards by the flow loader, like any flow file.
pub fn to_flow_toml(source: &str, sink: &str, sets: &[String], catalogue: &Catalogue) -> Result<String, RelayError> {
    let resolve = |text: &str, role| uri::resolve(text, role).map_err(|error| RelayError::Uri { role, error });
    let mut ends = [("source", resolve(source, Role::Source)?), ("sink", resolve(sink, Role::Sink)?)];
    for set in sets {
        let (end, setting) = set.split_once('.').ok_or_else(|| RelayError::Set(set.clone()))?;
        let (key, value) = setting.split_once('=').ok_or_else(|| RelayError::Set(set.clone()))?;
        let (_, endpoint) =
            ends.iter_mut().find(|(name, _)| *name == end).ok_or_else(|| RelayError::Set(set.clone()))?;
        if key.is_empty() {
            return Err(RelayError::Set(set.clone()));
        }
        match endpoint.settings.iter_mut().find(|(k, _)| k == key) {
            Some(existing) => existing.1 = value.to_string(),
            None => endpoint.settings.push((key.to_string(), value.to_string())),
        }
    }
    let [(_, from), (_, to)] = &mut ends;
    let has_format = |e: &uri::Endpoint| e.settings.iter().any(|(k, _)| k == "format");
    let bytes_sink = BYTES_SINKS.iter().find(|(name, _)| *name == to.component);
    let bytes_both =
        bytes_sink.filter(|_| BYTES_SOURCES.contains(&from.component) && !has_format(from) && !has_format(to));
    if let Some((_, sink_format)) = bytes_both {
        from.settings.push(("format".into(), "bytes".into()));
        if *sink_format {
            to.settings.push(("format".into(), "bytes".into()));
        }
    }
    let mut text = format!(
        "[flow]\nname = \"relay\"\ndescription = {}\nconnections = [\"source -> sink\"]\n",
        quote(&format!("{source} -> {sink}"))
    );
    for (name, endpoint) in &ends {
        text.push_str(&component_table(name, endpoint.component, &endpoint.settings, catalogue));
    }
    Ok(text)
}

/// `--buffer DIR` of `relay` and `launch`: the flow file `text` (as they
/// generate it) with a disk buffer in `dir` on its last connection, the one
/// into the sink. Text without connections is returned as it is.
pub fn buffered(text: &str, dir: &str) -> String {
    let Some(start) = text.find("connections = [") else { return text.to_string() };
    let end = start + text[start..].find(']').unwrap_or(0);
    let Some(arrow) = text[start..end].rfind(" -> ").map(|i| start + i) else { return text.to_string() };
    let open = text[..arrow].rfind('"').unwrap_or(arrow);
    let close = arrow + text[arrow..].find('"').unwrap_or(0);
    let (from, to) = (&text[open + 1..arrow], &text[arrow + 4..close]);
    let table = format!(
        "{{ from = {}, to = {}, buffer = {{ type = \"disk\", path = {} }} }}",
        quote(from),
        quote(to),
        quote(dir)
    );
    format!("{}{table}{}", &text[..open], &text[close + 1..])
}

/// Places `diags`, found in the flow file `text` that the two URIs became,
/// on the line `SOURCE SINK`: a setting at its `key=value` in the URI when
/// it is written there, else the whole URI of that end; the rest at both.
pub fn point_into(source: &str, sink: &str, text: &str, diags: Diagnostics) -> Diagnostics {
    let line = format!("{source} {sink}");
    let ends = [("source", 0..source.len()), ("sink", source.len() + 1..line.len())];
    let Ok(parsed) = DeTable::parse(text) else { return diags };
    let components = get(parsed.get_ref(), "components").and_then(|(_, v)| table(v.get_ref())).unwrap_or_default();
    let place = |span: &Range<usize>| {
        // A component's table runs from its name to the next component's.
        let Some((name, body)) =
            components.iter().filter(|(k, _)| k.span().start <= span.start).max_by_key(|(k, _)| k.span().start)
        else {
            return 0..line.len();
        };
        let Some((_, uri)) = ends.iter().find(|(end, _)| name.get_ref() == *end) else { return 0..line.len() };
        let key = table(body.get_ref()).and_then(|b| get(&b, "config")).and_then(|(_, c)| {
            let config = table(c.get_ref())?;
            let (k, _) = config.iter().find(|(k, v)| k.span() == *span || v.span() == *span)?;
            Some(k.get_ref().to_string())
        });
        let in_uri = key.and_then(|k| {
            let at = line[uri.clone()].find(&format!("{k}="))?;
            let start = uri.start + at;
            let end = line[start..uri.end].find('&').map_or(uri.end, |e| start + e);
            Some(start..end)
        });
        in_uri.unwrap_or_else(|| uri.clone())
    };
    diags.moved(line.clone(), place)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Acks, ComponentSpec, Delivery, KeySpec, KeyType, Kind};

    static EMPTY: Catalogue = Catalogue(&[]);

    #[test]
    fn a_nats_to_nats_relay_forwards_bytes_unless_a_format_is_given() {
        let toml = to_flow_toml("nats://h:4222/in", "nats://h:4222/out", &[], &EMPTY).unwrap();
        assert!(toml.contains("subject = \"in\", format = \"bytes\""), "{toml}");
        let toml = to_flow_toml("nats://h:4222/in?format=json", "nats://h:4222/out", &[], &EMPTY).unwrap();
        assert!(toml.contains("format = \"json\"") && !toml.contains("bytes"), "{toml}");
        let sets = ["source.format=auto".to_string()];
        let toml = to_flow_toml("nats://h:4222/in", "nats://h:4222/out", &sets, &EMPTY).unwrap();
        assert!(toml.contains("format = \"auto\"") && !toml.contains("bytes"), "{toml}");
        let toml = to_flow_toml("nats://h:4222/in", "file:out.jsonl", &[], &EMPTY).unwrap();
        assert!(!toml.contains("format"), "{toml}");
    }

    #[test]
    fn mqtt_relays_forward_bytes_on_both_ends_unless_either_has_a_format() {
        let toml = to_flow_toml("mqtt://h/in", "mqtt://h/out", &[], &EMPTY).unwrap();
        assert_eq!(toml.matches("format = \"bytes\"").count(), 2, "{toml}");
        let toml = to_flow_toml("mqtt://h/in", "nats://h:4222/out", &[], &EMPTY).unwrap();
        assert_eq!(toml.matches("format = \"bytes\"").count(), 1, "nats-publish sends bytes as they are: {toml}");
        let toml = to_flow_toml("nats://h:4222/in", "mqtt://h/out", &[], &EMPTY).unwrap();
        assert_eq!(toml.matches("format = \"bytes\"").count(), 2, "{toml}");
        let sets = ["source.format=json".to_string()];
        let toml = to_flow_toml("mqtt://h/in", "mqtt://h/out", &sets, &EMPTY).unwrap();
        assert!(!toml.contains("bytes"), "a format on one end keeps the other as it was: {toml}");
        let toml = to_flow_toml("mqtt://h/in", "mqtt://h/out?format=text", &[], &EMPTY).unwrap();
        assert!(!toml.contains("bytes"), "{toml}");
    }

    #[test]
    fn builds_source_to_sink() {
        let relayed = buffered(&to_flow_toml("file:in.jsonl", "file:out.jsonl", &[], &EMPTY).unwrap(), "buf dir");
        let expected =
            r#"connections = [{ from = "source", to = "sink", buffer = { type = "disk", path = "buf dir" } }]"#;
        assert!(relayed.contains(expected), "{relayed}");
        let launched = crate::launch::to_flow_toml("counter ! map expr=. ! console", &EMPTY).unwrap();
        let launched = buffered(&launched, "b");
        assert!(launched.contains("\"counter -> map\",\n  { from = \"map\", to = \"console\", buffer"), "{launched}");
        let toml = to_flow_toml("file:in.jsonl", "sqlite://out.db?table=t", &[], &EMPTY).unwrap();
        assert_eq!(
            toml,
            "[flow]\nname = \"relay\"\ndescription = \"file:in.jsonl -> sqlite://out.db?table=t\"\n\
             connections = [\"source -> sink\"]\n\n\
             [components.source]\ntype = \"file-read\"\nconfig = { path = \"in.jsonl\" }\n\n\
             [components.sink]\ntype = \"sqlite\"\nconfig = { path = \"out.db\", table = \"t\" }\n"
        );
        toml::from_str::<toml::Table>(&toml).unwrap();
    }

    #[test]
    fn set_adds_or_replaces_a_setting_of_one_end() {
        let sets = ["sink.table=other".to_string(), "source.format=csv".to_string()];
        let toml = to_flow_toml("file:in.csv", "sqlite://out.db?table=t", &sets, &EMPTY).unwrap();
        assert!(toml.contains("config = { path = \"in.csv\", format = \"csv\" }"), "{toml}");
        assert!(toml.contains("config = { path = \"out.db\", table = \"other\" }"), "{toml}");
    }

    #[test]
    fn set_values_are_typed_by_the_declared_keys() {
        fn build(_: &crate::spec::BuildContext) -> Result<crate::Instance, String> {
            Err("unused".into())
        }
        static CONSOLE: ComponentSpec = ComponentSpec {
            name: "console",
            summary: "",
            doc: "",
            kind: Kind::Sink,
            inputs: &[],
            outputs: &[],
            config: &[
                KeySpec::new("format", KeyType::String, "\"simple\"", ""),
                KeySpec::new("n", KeyType::Integer, "1", ""),
            ],
            delivery: Delivery::AtLeastOnce,
            acks: Acks::Prompt,
            stateless: false,
            example: "",
            build,
            ports: None,
            probe: None,
        };
        static CATALOGUE: Catalogue = Catalogue(&[&CONSOLE]);
        let sets = ["sink.n=5".to_string(), "sink.format=true".to_string()];
        let toml = to_flow_toml("-", "-", &sets, &CATALOGUE).unwrap();
        assert!(toml.contains("config = { format = \"true\", n = 5 }"), "{toml}");
    }

    #[test]
    fn bad_sets_and_uris_are_refused() {
        for bad in ["table=t", "middle.table=t", "sink.table", "sink.=x"] {
            assert_eq!(to_flow_toml("-", "-", &[bad.to_string()], &EMPTY), Err(RelayError::Set(bad.into())), "{bad}");
        }
        let err = to_flow_toml("nope://x", "-", &[], &EMPTY).unwrap_err();
        assert!(matches!(&err, RelayError::Uri { role: Role::Source, error: UriError::Unknown { .. } }), "{err}");
        let text = err.to_string();
        assert!(text.starts_with("source URI: unknown URI scheme `nope:`"), "{text}");
        assert!(text.ends_with("\n  = help: `fbp relay --help` lists every scheme"), "{text}");
        let err = to_flow_toml("sqlite://x.db", "-", &[], &EMPTY).unwrap_err().to_string();
        assert!(err.ends_with("= help: `sqlite:` is only a sink; `fbp relay --help` lists every scheme"), "{err}");
        let err = to_flow_toml("-", "sqlite://x.db", &[], &EMPTY).unwrap_err().to_string();
        assert!(
            err.ends_with("= help: write `sqlite://PATH?table=T`, e.g. `sqlite://readings.db?table=readings`"),
            "{err}"
        );
        let err = to_flow_toml("mqtt:/", "-", &[], &EMPTY).unwrap_err().to_string();
        assert!(
            err.contains("= help: write `mqtt://HOST:PORT/TOPIC`, e.g. `mqtt://127.0.0.1:1883/sensors/%23`"),
            "{err}"
        );
        assert!(!err.contains("supported URIs"), "{err}");
    }
}
