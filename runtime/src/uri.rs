//! URIs for `fbp relay`: the one place that maps a URI to a component type
//! and its config.
//!
//! [`SCHEMES`] is the table, as data: each row names its schemes, the
//! component type it stands for as a source and as a sink, and a function
//! from the parsed URI to config settings. Settings are text, typed later by
//! the component's declared keys, like `launch` settings. A scheme that is
//! planned but not built yet is listed in [`PLANNED`] (so it is reported as
//! "not available yet", not as unknown); adding it is adding a row.
//!
//! Forms: `SCHEME:PATH?QUERY`, and `SCHEME://PATH?QUERY` which means the same
//! (`file:out.jsonl`, `file://out.jsonl`, `file:///tmp/out.jsonl`). The path
//! is percent-decoded (`%23` is `#`, `%3F` is `?`); a raw `#` is refused, as
//! it would start a fragment. The query is form-encoded pairs (decoded with
//! the `url` crate); each pair becomes a config setting of the component
//! (`file:in.csv?format=csv&delimiter=%3B`), checked against its declaration
//! like any setting. `-` is standard input as a source, standard output as a
//! sink. `exec:PROGRAM?arg=A&arg=B` runs a program as `exec` does: each `arg`
//! pair is one argument, in order, and the mode follows the role.

use std::fmt;

use percent_encoding::percent_decode_str;

use crate::launch::quote;

/// Which end of a relay a URI is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Where messages come from.
    Source,
    /// Where messages go.
    Sink,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Sink => "sink",
        })
    }
}

/// A URI taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    /// The scheme, lower-case; `-` for standard input or output.
    pub scheme: String,
    /// After `SCHEME:` and an optional `//`, up to `?`; percent-decoded.
    pub path: String,
    /// The query's pairs, decoded, in order.
    pub query: Vec<(String, String)>,
}

/// Config settings as text, in order: key and value.
pub type Settings = Vec<(String, String)>;

/// From a parsed URI to the component's settings; `Err` says what is wrong.
pub type ConfigFn = fn(&Uri) -> Result<Settings, String>;

/// A row of the scheme table.
#[derive(Clone, Copy, Debug)]
pub struct Scheme {
    /// The scheme names (without `:`); `-` is the bare dash.
    pub names: &'static [&'static str],
    /// How to write it, for help texts.
    pub form: &'static str,
    /// What it reads or writes, for help texts.
    pub doc: &'static str,
    /// The component type it is as a source, if it can be one.
    pub source: Option<&'static str>,
    /// The component type it is as a sink, if it can be one.
    pub sink: Option<&'static str>,
    /// Its settings.
    pub config: ConfigFn,
}

impl Scheme {
    /// The component type for `role`.
    pub fn component(&self, role: Role) -> Option<&'static str> {
        match role {
            Role::Source => self.source,
            Role::Sink => self.sink,
        }
    }
}

/// Every scheme `relay` supports. A scheme may have a row per role.
pub static SCHEMES: &[Scheme] = &[
    Scheme {
        names: &["file"],
        form: "file:PATH",
        doc: "JSON lines; ?format=csv|lines; ?follow=true as a source",
        source: Some("file-read"),
        sink: Some("file-write"),
        config: path_and_query,
    },
    Scheme {
        names: &["-", "stdin"],
        form: "- or stdin:",
        doc: "standard input: JSON lines (envelopes or bare values); ?format=lines",
        source: Some("stdin"),
        sink: None,
        config: query_only,
    },
    Scheme {
        names: &["-", "stdout"],
        form: "- or stdout:",
        doc: "standard output: the wire envelope, one per line",
        source: None,
        sink: Some("console"),
        config: stdout,
    },
    Scheme {
        names: &["sqlite"],
        form: "sqlite://PATH?table=T",
        doc: "insert records into table T (created if missing)",
        source: None,
        sink: Some("sqlite"),
        config: sqlite,
    },
    Scheme {
        names: &["nats"],
        form: "nats://HOST:PORT/SUBJECT",
        doc: "NATS subject (wildcards as a source); ?queue_group=G; ?stream=S&durable=D for JetStream",
        source: Some("nats-subscribe"),
        sink: Some("nats-publish"),
        config: nats,
    },
    Scheme {
        names: &["exec"],
        form: "exec:PROGRAM?arg=A&arg=B",
        doc: "a program speaking JSON lines (DStream provider): its stdout",
        source: Some("exec"),
        sink: None,
        config: exec_source,
    },
    Scheme {
        names: &["exec"],
        form: "exec:PROGRAM?arg=A&arg=B",
        doc: "a program speaking JSON lines (DStream provider): its stdin",
        source: None,
        sink: Some("exec"),
        config: exec_sink,
    },
    Scheme {
        names: &["mqtt", "mqtts"],
        form: "mqtt://HOST:PORT/TOPIC",
        doc: "subscribe to the filter TOPIC (`%23` is `#`); mqtts: TLS; ?qos=1&client_id=ID&clean_session=false",
        source: Some("mqtt-subscribe"),
        sink: None,
        config: mqtt_source,
    },
    Scheme {
        names: &["mqtt", "mqtts"],
        form: "mqtt://HOST:PORT/TOPIC",
        doc: "publish to TOPIC, a template (`{{ .field }}`); no topic: each message's own",
        source: None,
        sink: Some("mqtt-publish"),
        config: mqtt_sink,
    },
];

/// Schemes planned but not built yet: reported as "not available yet".
pub const PLANNED: &[&str] = &["http", "https", "ws", "tcp", "udp", "amqp", "postgresql"];

/// A URI resolved for one role: the component type and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The component type.
    pub component: &'static str,
    /// Its config settings, as text.
    pub settings: Settings,
}

/// Why a URI cannot be used. Shown with the supported schemes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Not of the form `SCHEME:...` or `-`.
    #[error("`{uri}` is not a URI: {reason}")]
    Malformed {
        /// The URI as given.
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// A scheme no row has.
    #[error("unknown URI scheme `{scheme}:` in `{uri}`")]
    Unknown {
        /// The URI as given.
        uri: String,
        /// Its scheme.
        scheme: String,
    },
    /// A scheme that is planned but not built yet.
    #[error("the URI scheme `{scheme}:` is not available yet (in `{uri}`)")]
    NotYet {
        /// The URI as given.
        uri: String,
        /// Its scheme.
        scheme: String,
    },
    /// A scheme that cannot play this role.
    #[error("`{scheme}:` is not supported as a {role} (in `{uri}`)")]
    Role {
        /// The URI as given.
        uri: String,
        /// Its scheme.
        scheme: String,
        /// The role asked for.
        role: Role,
    },
    /// A known scheme whose URI is wrong.
    #[error("bad `{scheme}:` URI `{uri}`: {reason}")]
    Bad {
        /// The URI as given.
        uri: String,
        /// Its scheme.
        scheme: String,
        /// What is wrong.
        reason: String,
    },
}

/// The supported schemes with their roles, one a line, and those not available yet.
pub fn supported() -> String {
    let rows: Vec<(&str, String, &str)> = SCHEMES
        .iter()
        .map(|s| {
            let roles: Vec<String> = [(Role::Source, s.source), (Role::Sink, s.sink)]
                .iter()
                .filter_map(|(role, ty)| ty.map(|ty| format!("{role} ({ty})")))
                .collect();
            (s.form, roles.join(", "), s.doc)
        })
        .collect();
    let form_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let roles_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut text = String::from("supported URIs:\n");
    for (form, roles, doc) in rows {
        text.push_str(&format!("  {form:<form_width$}  {roles:<roles_width$}  {doc}\n"));
    }
    text.push_str(&format!("not available yet: {}\n", PLANNED.join(", ")));
    text
}

/// Parses `uri` and maps it, for `role`, to a component type and settings.
pub fn resolve(uri: &str, role: Role) -> Result<Endpoint, UriError> {
    let parsed = parse(uri)?;
    let scheme = parsed.scheme.clone();
    let mut rows = SCHEMES.iter().filter(|s| s.names.contains(&scheme.as_str())).peekable();
    if rows.peek().is_none() {
        return Err(if PLANNED.contains(&scheme.as_str()) {
            UriError::NotYet { uri: uri.into(), scheme }
        } else {
            UriError::Unknown { uri: uri.into(), scheme }
        });
    }
    let Some((row, component)) = rows.find_map(|s| s.component(role).map(|c| (s, c))) else {
        return Err(UriError::Role { uri: uri.into(), scheme, role });
    };
    let settings = (row.config)(&parsed).map_err(|reason| UriError::Bad { uri: uri.into(), scheme, reason })?;
    Ok(Endpoint { component, settings })
}

/// Takes `uri` apart: scheme, decoded path, decoded query pairs.
pub fn parse(uri: &str) -> Result<Uri, UriError> {
    let malformed = |reason: String| UriError::Malformed { uri: uri.into(), reason };
    if uri == "-" {
        return Ok(Uri { scheme: "-".into(), path: String::new(), query: Vec::new() });
    }
    let Some((scheme, rest)) = uri.split_once(':').filter(|(s, _)| valid_scheme(s)) else {
        return Err(malformed(format!("it has no scheme; for a file write `file:{uri}`")));
    };
    if rest.contains('#') {
        return Err(malformed("a `#` would start a fragment; write `%23` for `#`".into()));
    }
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = percent_decode_str(path)
        .decode_utf8()
        .map_err(|e| malformed(format!("the path is not UTF-8 once decoded: {e}")))?
        .into_owned();
    let query = url::form_urlencoded::parse(query.as_bytes()).into_owned().filter(|(k, _)| !k.is_empty()).collect();
    Ok(Uri { scheme: scheme.to_ascii_lowercase(), path, query })
}

/// RFC 3986: a letter, then letters, digits, `+`, `-` and `.`.
fn valid_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `base`, with each query pair added or replacing the setting of its key.
fn with_query(mut base: Settings, uri: &Uri) -> Settings {
    for (k, v) in &uri.query {
        match base.iter_mut().find(|(key, _)| key == k) {
            Some(setting) => setting.1 = v.clone(),
            None => base.push((k.clone(), v.clone())),
        }
    }
    base
}

/// `path` from the URI's path, then the query.
fn path_and_query(uri: &Uri) -> Result<Settings, String> {
    if uri.path.is_empty() {
        return Err(format!("no path; write e.g. `{}:out.jsonl`", uri.scheme));
    }
    Ok(with_query(vec![("path".into(), uri.path.clone())], uri))
}

/// The query alone; a path makes no sense.
fn query_only(uri: &Uri) -> Result<Settings, String> {
    if !uri.path.is_empty() {
        return Err(format!("`{}:` takes no path, only `?key=value` settings", uri.scheme));
    }
    Ok(with_query(Vec::new(), uri))
}

/// `console` printing the wire envelope, unless the query says otherwise.
fn stdout(uri: &Uri) -> Result<Settings, String> {
    query_only(uri)?;
    Ok(with_query(vec![("format".into(), "json".into())], uri))
}

/// A database path and a table.
fn sqlite(uri: &Uri) -> Result<Settings, String> {
    if !uri.query.iter().any(|(k, v)| k == "table" && !v.is_empty()) {
        return Err("no table; write `sqlite://PATH?table=T`".into());
    }
    path_and_query(uri).map_err(|_| "no database path; write `sqlite://PATH?table=T`".into())
}

/// `url` from the host and port, `subject` from the path, then the query
/// (`stream`, `durable`, `queue_group`, `format`, ...).
fn nats(uri: &Uri) -> Result<Settings, String> {
    let (host, subject) = uri.path.split_once('/').unwrap_or((&uri.path, ""));
    if host.is_empty() {
        return Err("no server; write e.g. `nats://127.0.0.1:4222/SUBJECT`".into());
    }
    if subject.is_empty() {
        return Err("no subject; write e.g. `nats://127.0.0.1:4222/sensors.>`".into());
    }
    let base = vec![("url".into(), format!("nats://{host}")), ("subject".into(), subject.to_string())];
    Ok(with_query(base, uri))
}

/// `exec` as a source: the program writes the messages.
fn exec_source(uri: &Uri) -> Result<Settings, String> {
    exec(uri, "source")
}

/// `exec` as a sink: the program reads the messages.
fn exec_sink(uri: &Uri) -> Result<Settings, String> {
    exec(uri, "sink")
}

/// `command` from the path, `args` from each `arg` pair in order, the mode,
/// then the other pairs as settings (`handshake`, `stop_timeout`, ...).
fn exec(uri: &Uri, mode: &str) -> Result<Settings, String> {
    if uri.path.is_empty() {
        return Err("no program; write e.g. `exec:./provider.py?arg=--verbose`".into());
    }
    let (args, rest): (Vec<_>, Vec<_>) = uri.query.iter().cloned().partition(|(k, _)| k == "arg");
    let args: Vec<String> = args.iter().map(|(_, v)| quote(v)).collect();
    let base = vec![
        ("command".into(), uri.path.clone()),
        ("args".into(), format!("[{}]", args.join(", "))),
        ("mode".into(), mode.into()),
    ];
    Ok(with_query(base, &Uri { query: rest, ..uri.clone() }))
}

/// The broker URL and the topic: `mqtt://HOST:PORT/TOPIC`.
fn mqtt(uri: &Uri) -> Result<(Settings, String), String> {
    let (authority, topic) = uri.path.split_once('/').unwrap_or((&uri.path, ""));
    if authority.is_empty() {
        return Err(format!("no broker; write `{}://HOST:PORT/TOPIC` (`%23` for `#`)", uri.scheme));
    }
    Ok((vec![("url".into(), format!("{}://{authority}", uri.scheme))], topic.to_string()))
}

/// `mqtt-subscribe` to the filter in the path.
fn mqtt_source(uri: &Uri) -> Result<Settings, String> {
    let (mut base, topic) = mqtt(uri)?;
    if topic.is_empty() {
        return Err(format!("no topic; write `{}://HOST:PORT/TOPIC` (`%23` for `#`)", uri.scheme));
    }
    base.push(("topics".into(), format!("[{}]", quote(&topic))));
    Ok(with_query(base, uri))
}

/// `mqtt-publish` to the topic in the path, or to each message's own topic.
fn mqtt_sink(uri: &Uri) -> Result<Settings, String> {
    let (mut base, topic) = mqtt(uri)?;
    let topic = if topic.is_empty() { "{{ $meta.topic }}".to_string() } else { topic };
    base.push(("topic".into(), topic));
    Ok(with_query(base, uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn endpoint(uri: &str, role: Role) -> (&'static str, Settings) {
        let e = resolve(uri, role).unwrap_or_else(|e| panic!("{uri}: {e}"));
        (e.component, e.settings)
    }

    #[test]
    fn file_uris_with_and_without_slashes() {
        let want = ("file-read", settings(&[("path", "in.jsonl")]));
        assert_eq!(endpoint("file:in.jsonl", Role::Source), want);
        assert_eq!(endpoint("file://in.jsonl", Role::Source), want);
        assert_eq!(
            endpoint("file:///tmp/a b.jsonl", Role::Sink),
            ("file-write", settings(&[("path", "/tmp/a b.jsonl")]))
        );
    }

    #[test]
    fn file_query_pairs_become_settings_and_the_path_is_decoded() {
        assert_eq!(
            endpoint("file:data%23%3F1.csv?format=csv&follow=true&delimiter=%3B", Role::Source),
            (
                "file-read",
                settings(&[("path", "data#?1.csv"), ("format", "csv"), ("follow", "true"), ("delimiter", ";")])
            )
        );
        assert_eq!(
            endpoint("FILE:out.txt?format=lines", Role::Sink),
            ("file-write", settings(&[("path", "out.txt"), ("format", "lines")]))
        );
    }

    #[test]
    fn a_file_uri_needs_a_path() {
        let err = resolve("file:", Role::Source).unwrap_err();
        assert!(matches!(&err, UriError::Bad { reason, .. } if reason.contains("no path")), "{err}");
    }

    #[test]
    fn dash_is_stdin_as_a_source_and_stdout_as_a_sink() {
        assert_eq!(endpoint("-", Role::Source), ("stdin", Settings::new()));
        assert_eq!(endpoint("stdin:", Role::Source), ("stdin", Settings::new()));
        assert_eq!(endpoint("stdin:?format=lines", Role::Source), ("stdin", settings(&[("format", "lines")])));
        assert_eq!(endpoint("-", Role::Sink), ("console", settings(&[("format", "json")])));
        assert_eq!(endpoint("stdout:", Role::Sink), ("console", settings(&[("format", "json")])));
        assert_eq!(endpoint("stdout:?format=pretty", Role::Sink), ("console", settings(&[("format", "pretty")])));
    }

    #[test]
    fn stdin_and_stdout_keep_to_their_roles_and_take_no_path() {
        assert_eq!(
            resolve("stdout:", Role::Source),
            Err(UriError::Role { uri: "stdout:".into(), scheme: "stdout".into(), role: Role::Source })
        );
        assert!(matches!(resolve("stdin:", Role::Sink), Err(UriError::Role { role: Role::Sink, .. })));
        assert!(matches!(resolve("stdin:x", Role::Source), Err(UriError::Bad { .. })));
    }

    #[test]
    fn sqlite_is_a_sink_with_a_path_and_a_table() {
        assert_eq!(
            endpoint("sqlite://readings.db?table=readings", Role::Sink),
            ("sqlite", settings(&[("path", "readings.db"), ("table", "readings")]))
        );
        assert_eq!(
            endpoint("sqlite:///var/r.db?table=t&batch_size=10", Role::Sink),
            ("sqlite", settings(&[("path", "/var/r.db"), ("table", "t"), ("batch_size", "10")]))
        );
        let err = resolve("sqlite://r.db?table=t", Role::Source).unwrap_err();
        assert_eq!(err.to_string(), "`sqlite:` is not supported as a source (in `sqlite://r.db?table=t`)");
        let no_table = resolve("sqlite://r.db", Role::Sink).unwrap_err().to_string();
        assert!(no_table.contains("no table; write `sqlite://PATH?table=T`"), "{no_table}");
        let no_path = resolve("sqlite://?table=t", Role::Sink).unwrap_err().to_string();
        assert!(no_path.contains("no database path"), "{no_path}");
    }

    #[test]
    fn exec_takes_the_program_its_args_and_the_mode_of_its_role() {
        assert_eq!(
            endpoint("exec:./provider.py?arg=--rate&arg=a%20b&handshake=required", Role::Source),
            (
                "exec",
                settings(&[
                    ("command", "./provider.py"),
                    ("args", r#"["--rate", "a b"]"#),
                    ("mode", "source"),
                    ("handshake", "required")
                ])
            )
        );
        assert_eq!(
            endpoint("exec:cat", Role::Sink),
            ("exec", settings(&[("command", "cat"), ("args", "[]"), ("mode", "sink")]))
        );
        assert!(matches!(resolve("exec:?arg=1", Role::Source), Err(UriError::Bad { .. })));
    }

    #[test]
    fn nats_takes_the_server_the_subject_and_jetstream_settings() {
        assert_eq!(
            endpoint("nats://127.0.0.1:4222/sensors.>?queue_group=w", Role::Source),
            (
                "nats-subscribe",
                settings(&[("url", "nats://127.0.0.1:4222"), ("subject", "sensors.>"), ("queue_group", "w")])
            )
        );
        assert_eq!(
            endpoint("nats://n1:4222/in?stream=S&durable=D", Role::Source),
            (
                "nats-subscribe",
                settings(&[("url", "nats://n1:4222"), ("subject", "in"), ("stream", "S"), ("durable", "D")])
            )
        );
        assert_eq!(
            endpoint("nats://n1:4222/out?stream=S", Role::Sink),
            ("nats-publish", settings(&[("url", "nats://n1:4222"), ("subject", "out"), ("stream", "S")]))
        );
        assert!(resolve("nats://127.0.0.1:4222", Role::Source).unwrap_err().to_string().contains("no subject"));
        assert!(resolve("nats:///x", Role::Sink).unwrap_err().to_string().contains("no server"));
    }

    #[test]
    fn unknown_and_planned_schemes_are_told_apart() {
        assert_eq!(
            resolve("foo://x", Role::Source),
            Err(UriError::Unknown { uri: "foo://x".into(), scheme: "foo".into() })
        );
        let err = resolve("amqp://127.0.0.1/a", Role::Source).unwrap_err();
        assert_eq!(err.to_string(), "the URI scheme `amqp:` is not available yet (in `amqp://127.0.0.1/a`)");
    }

    #[test]
    fn mqtt_uris_give_the_broker_the_topic_and_the_query() {
        assert_eq!(
            endpoint("mqtt://127.0.0.1:1883/sensors/%23?qos=1&client_id=x&clean_session=false", Role::Source),
            (
                "mqtt-subscribe",
                settings(&[
                    ("url", "mqtt://127.0.0.1:1883"),
                    ("topics", r#"["sensors/#"]"#),
                    ("qos", "1"),
                    ("client_id", "x"),
                    ("clean_session", "false")
                ])
            )
        );
        assert_eq!(
            endpoint("mqtts://broker/site/+/t", Role::Source).1[..2],
            settings(&[("url", "mqtts://broker"), ("topics", r#"["site/+/t"]"#)])[..]
        );
        assert_eq!(
            endpoint("mqtt://h:1884/out/a", Role::Sink),
            ("mqtt-publish", settings(&[("url", "mqtt://h:1884"), ("topic", "out/a")]))
        );
        assert_eq!(endpoint("mqtt://h:1884", Role::Sink).1[1], ("topic".into(), "{{ $meta.topic }}".into()));
        let err = resolve("mqtt://h:1883", Role::Source).unwrap_err().to_string();
        assert!(err.contains("no topic"), "{err}");
        assert!(resolve("mqtt:///x", Role::Sink).unwrap_err().to_string().contains("no broker"));
    }

    #[test]
    fn malformed_uris_are_refused() {
        let err = resolve("readings.jsonl", Role::Source).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`readings.jsonl` is not a URI: it has no scheme; for a file write `file:readings.jsonl`"
        );
        assert!(matches!(parse("1x:y"), Err(UriError::Malformed { .. })));
        let err = parse("file:a#b").unwrap_err().to_string();
        assert!(err.contains("write `%23` for `#`"), "{err}");
        assert!(matches!(parse("file:%ff"), Err(UriError::Malformed { .. })));
    }

    #[test]
    fn the_help_lists_every_row_with_its_roles_and_the_planned_schemes() {
        let help = supported();
        assert!(help.contains("file:PATH") && help.contains("source (file-read), sink (file-write)"), "{help}");
        assert!(help.contains("sqlite://PATH?table=T") && help.contains("sink (sqlite)"), "{help}");
        assert!(help.contains("- or stdin:") && help.contains("source (stdin)"), "{help}");
        assert!(help.contains("not available yet: http"), "{help}");
        assert!(help.contains("mqtt://HOST:PORT/TOPIC") && help.contains("source (mqtt-subscribe)"), "{help}");
    }

    #[test]
    fn every_row_names_a_role_and_planned_schemes_have_no_row() {
        for s in SCHEMES {
            assert!(s.source.is_some() || s.sink.is_some(), "{:?}", s.names);
            assert!(s.names.iter().all(|n| !PLANNED.contains(n)), "{:?}", s.names);
        }
    }
}
