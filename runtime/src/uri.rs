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
//! `tcp://HOST:PORT` and `udp://HOST:PORT` listen there (sources only);
//! `ws://HOST:PORT/PATH` (or `wss://`) is a WebSocket client either way, its
//! URL the URI without the query (whose pairs are settings, as everywhere).

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
        names: &["amqp"],
        form: "amqp://[USER:PASS@]HOST[:PORT]/EXCHANGE/ROUTING_KEY",
        doc: "RabbitMQ: a queue bound to a topic exchange (?queue=NAME: durable, named); vhost /, guest/guest",
        source: Some("amqp-subscribe"),
        sink: Some("amqp-publish"),
        config: amqp,
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
        names: &["postgresql", "postgres"],
        form: "postgresql://USER@HOST:PORT/DB?table=T",
        doc: "insert records into table T (created if missing); &key=a,b upserts",
        source: None,
        sink: Some("postgres"),
        config: postgres_sink,
    },
    Scheme {
        names: &["crate"],
        form: "crate://HOST[:PORT]/?table=T",
        doc: "CrateDB through its PostgreSQL protocol (the postgres sink; user crate, schema doc, port 5432)",
        source: None,
        sink: Some("postgres"),
        config: crate_sink,
    },
    Scheme {
        names: &["postgresql", "postgres"],
        form: "postgresql://USER@HOST:PORT/DB?query=Q&watermark=C",
        doc: "rows of query Q polled by column C, or ?listen=CHANNEL for notifications",
        source: Some("postgres-read"),
        sink: None,
        config: postgres_source,
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
    Scheme {
        names: &["tcp"],
        form: "tcp://HOST:PORT",
        doc: "listen for TCP clients: JSON lines; ?framing=length|lines&format=json|text|bytes",
        source: Some("tcp-listen"),
        sink: None,
        config: bind,
    },
    Scheme {
        names: &["udp"],
        form: "udp://HOST:PORT",
        doc: "listen for UDP datagrams (dropped and counted when the sink lags); ?framing=lines",
        source: Some("udp-listen"),
        sink: None,
        config: bind,
    },
    Scheme {
        names: &["ws", "wss"],
        form: "ws://HOST:PORT/PATH",
        doc: "a WebSocket client (wss: TLS): received messages as a source, sent ones as a sink",
        source: Some("websocket"),
        sink: Some("websocket"),
        config: websocket,
    },
    Scheme {
        names: &["http", "https"],
        form: "http://HOST/PATH?interval=5s",
        doc: "poll the URL (GET, every `interval`, default 10s); other query pairs stay in the URL",
        source: Some("http-poll"),
        sink: None,
        config: http_poll,
    },
    Scheme {
        names: &["http", "https"],
        form: "http://HOST/PATH",
        doc: "send each message as a request (POST, JSON body); ?method=PUT",
        source: None,
        sink: Some("http-request"),
        config: http_request,
    },
];

/// Schemes planned but not built yet: reported as "not available yet".
pub const PLANNED: &[&str] = &[];

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
    if !PLANNED.is_empty() {
        text.push_str(&format!("not available yet: {}\n", PLANNED.join(", ")));
    }
    text
}

/// One example per scheme, for the help under a bad URI.
const EXAMPLES: &[(&str, &str)] = &[
    ("file", "file:readings.jsonl"),
    ("-", "-"),
    ("stdin", "stdin:"),
    ("stdout", "stdout:"),
    ("sqlite", "sqlite://readings.db?table=readings"),
    ("amqp", "amqp://guest:guest@127.0.0.1:5672/amq.topic/sensors.%23"),
    ("nats", "nats://127.0.0.1:4222/sensors.>"),
    ("postgresql", "postgresql://postgres@127.0.0.1:5432/test?table=readings"),
    ("postgres", "postgres://postgres@127.0.0.1:5432/test?table=readings"),
    ("exec", "exec:./provider.py?arg=--verbose"),
    ("mqtt", "mqtt://127.0.0.1:1883/sensors/%23"),
    ("mqtts", "mqtts://broker.example:8883/sensors/%23"),
    ("tcp", "tcp://0.0.0.0:5514"),
    ("udp", "udp://0.0.0.0:5514"),
    ("ws", "ws://127.0.0.1:8080/feed"),
    ("wss", "wss://feed.example/ws"),
    ("http", "http://127.0.0.1:8080/items"),
    ("https", "https://api.example/items"),
];

/// How to write a URI for `role` after `error`: its own scheme's form and an
/// example, or the nearest scheme; the full table is in `fbp relay --help`.
pub fn hint(error: &UriError, role: Role) -> String {
    const ALL: &str = "`fbp relay --help` lists every scheme";
    let scheme = match error {
        UriError::Bad { scheme, .. } | UriError::Role { scheme, .. } => scheme,
        UriError::Unknown { scheme, .. } => {
            let names = SCHEMES.iter().flat_map(|s| s.names.iter().copied()).filter(|n| *n != "-");
            return match crate::flow::diag::did_you_mean(scheme, names) {
                Some(best) => format!("did you mean `{best}:`? {ALL}"),
                None => ALL.to_string(),
            };
        }
        UriError::Malformed { .. } | UriError::NotYet { .. } => return ALL.to_string(),
    };
    let rows: Vec<&Scheme> = SCHEMES.iter().filter(|s| s.names.contains(&scheme.as_str())).collect();
    let Some(row) = rows.iter().find(|s| s.component(role).is_some()) else {
        let roles: Vec<String> = rows
            .iter()
            .flat_map(|s| [(Role::Source, s.source), (Role::Sink, s.sink)])
            .filter_map(|(r, ty)| ty.map(|_| r.to_string()))
            .collect();
        return format!("`{scheme}:` is only a {}; {ALL}", roles.join(" and "));
    };
    let example = EXAMPLES.iter().find(|(s, _)| s == scheme).map(|(_, e)| *e);
    match example {
        Some(e) => format!("write `{}`, e.g. `{e}`", row.form),
        None => format!("write `{}`", row.form),
    }
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

/// `amqp://[USER:PASS@]HOST[:PORT]/EXCHANGE/ROUTING_KEY`: the broker URL
/// (vhost `/`, user and password `guest` unless given), the exchange and the
/// routing key (the rest of the path, `/` included); then the query
/// (`?queue=NAME`, `?format=text`, ...). A source may leave out the exchange
/// and routing key when it names a queue (`amqp://HOST/?queue=jobs`); a sink
/// may leave out the exchange (`amqp://HOST//QUEUE`: the default exchange,
/// which routes to the queue named by the routing key).
fn amqp(uri: &Uri) -> Result<Settings, String> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let (authority, rest) = uri.path.split_once('/').unwrap_or((&uri.path, ""));
    let (userinfo, host) = authority.rsplit_once('@').unwrap_or(("", authority));
    if host.is_empty() {
        return Err("no host; write `amqp://HOST/EXCHANGE/ROUTING_KEY`".into());
    }
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, p),
        None if userinfo.is_empty() => ("guest", "guest"),
        None => (userinfo, ""),
    };
    let host = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host.to_string()
    } else {
        format!("{host}:5672")
    };
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let url = format!("amqp://{}:{}@{host}/%2f", enc(user), enc(password));
    let (exchange, routing_key) = rest.split_once('/').unwrap_or((rest, ""));
    let has_queue = uri.query.iter().any(|(k, v)| k == "queue" && !v.is_empty());
    let mut settings = vec![("url".to_string(), url)];
    if !exchange.is_empty() {
        settings.push(("exchange".into(), exchange.into()));
    }
    match (exchange.is_empty(), routing_key.is_empty()) {
        (_, false) => settings.push(("routing_key".into(), routing_key.into())),
        (true, true) if has_queue => {}
        _ => return Err("no routing key; write `amqp://HOST/EXCHANGE/ROUTING_KEY` (`%23` for `#`)".into()),
    }
    Ok(with_query(settings, uri))
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

/// The connection string from the URI (without the query, whose pairs are
/// settings); `key=a,b` becomes a list.
fn postgres(uri: &Uri) -> Result<Settings, String> {
    if uri.path.is_empty() {
        return Err("no server; write e.g. `postgresql://postgres@127.0.0.1:5432/db?table=T`".into());
    }
    let mut settings = with_query(vec![("url".into(), format!("postgresql://{}", uri.path))], uri);
    for (k, v) in settings.iter_mut() {
        if k == "key" && !v.starts_with('[') {
            let names: Vec<String> = v.split(',').map(|n| quote(n.trim())).collect();
            *v = format!("[{}]", names.join(", "));
        }
    }
    Ok(settings)
}

/// `postgres`: a table to write.
fn postgres_sink(uri: &Uri) -> Result<Settings, String> {
    if !uri.query.iter().any(|(k, v)| k == "table" && !v.is_empty()) {
        return Err("no table; write `postgresql://USER@HOST:PORT/DB?table=T`".into());
    }
    postgres(uri)
}

/// LorryStream's `crate://HOST/?table=T`: CrateDB speaks PostgreSQL's
/// protocol on port 5432, with the user `crate` and the schema `doc`.
fn crate_sink(uri: &Uri) -> Result<Settings, String> {
    let authority = uri.path.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err("no server; write e.g. `crate://localhost/?table=readings`".into());
    }
    let authority = if authority.contains('@') { authority.to_string() } else { format!("crate@{authority}") };
    let host = authority.rsplit_once('@').map_or(authority.as_str(), |(_, h)| h);
    let port = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) { "" } else { ":5432" };
    let rewritten =
        Uri { scheme: "postgresql".into(), path: format!("{authority}{port}/doc"), query: uri.query.clone() };
    postgres_sink(&rewritten)
}

/// `postgres-read`: a query (with a watermark) or a channel to read.
fn postgres_source(uri: &Uri) -> Result<Settings, String> {
    if !uri.query.iter().any(|(k, v)| (k == "query" || k == "listen") && !v.is_empty()) {
        return Err("nothing to read; add `?query=SELECT..&watermark=COLUMN` or `?listen=CHANNEL`".into());
    }
    postgres(uri)
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

/// A listener: `bind` from `HOST:PORT`, then the query.
fn bind(uri: &Uri) -> Result<Settings, String> {
    let well_formed =
        uri.path.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !well_formed || uri.path.contains('/') {
        return Err(format!("write `{}://HOST:PORT`, e.g. `{}://0.0.0.0:5514`", uri.scheme, uri.scheme));
    }
    Ok(with_query(vec![("bind".into(), uri.path.clone())], uri))
}

/// A WebSocket client: `url` is the URI without its query, which gives settings.
fn websocket(uri: &Uri) -> Result<Settings, String> {
    if uri.path.is_empty() || uri.path.starts_with('/') {
        return Err(format!("no host; write e.g. `{}://127.0.0.1:8080/feed`", uri.scheme));
    }
    Ok(with_query(vec![("url".into(), format!("{}://{}", uri.scheme, uri.path))], uri))
}

/// `http-poll` keys a relay URI may set; other query pairs belong to the URL.
const HTTP_POLL_KEYS: &[&str] = &[
    "interval",
    "method",
    "timeout",
    "format",
    "paginate",
    "split",
    "max_pages",
    "bearer_token",
    "reconnect",
    "max_body_size",
];

/// `http-request` keys a relay URI may set; other query pairs belong to the URL.
const HTTP_REQUEST_KEYS: &[&str] = &[
    "method",
    "timeout",
    "bearer_token",
    "retries",
    "backoff",
    "concurrency",
    "response_format",
    "reconnect",
    "max_body_size",
];

fn http_poll(uri: &Uri) -> Result<Settings, String> {
    http(uri, HTTP_POLL_KEYS)
}

fn http_request(uri: &Uri) -> Result<Settings, String> {
    http(uri, HTTP_REQUEST_KEYS)
}

/// `url` rebuilt from the URI, with the query pairs that are not component
/// keys put back in it, then the component keys as settings.
fn http(uri: &Uri, keys: &[&str]) -> Result<Settings, String> {
    if uri.path.is_empty() || uri.path.starts_with('/') {
        return Err(format!("no host; write e.g. `{}://127.0.0.1:8080/items`", uri.scheme));
    }
    let (settings, in_url): (Vec<_>, Vec<_>) = uri.query.iter().cloned().partition(|(k, _)| keys.contains(&k.as_str()));
    // The path was decoded: encode again what would change the URL's meaning.
    let path = uri.path.replace('%', "%25").replace('#', "%23").replace('?', "%3F").replace(' ', "%20");
    let mut url = format!("{}://{path}", uri.scheme);
    if !in_url.is_empty() {
        url.push('?');
        url.push_str(&url::form_urlencoded::Serializer::new(String::new()).extend_pairs(in_url).finish());
    }
    Ok(with_query(vec![("url".into(), url)], &Uri { query: settings, ..uri.clone() }))
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
    fn amqp_takes_the_exchange_and_routing_key_from_the_path() {
        let url = ("url", "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(
            endpoint("amqp://127.0.0.1/testdrive/demo", Role::Source),
            ("amqp-subscribe", settings(&[url, ("exchange", "testdrive"), ("routing_key", "demo")]))
        );
        assert_eq!(
            endpoint("amqp://127.0.0.1/testdrive/demo", Role::Sink),
            ("amqp-publish", settings(&[url, ("exchange", "testdrive"), ("routing_key", "demo")]))
        );
        assert_eq!(
            endpoint("amqp://fbp:p%40ss@broker:5673/shop/orders.%23?queue=fbp-orders", Role::Source),
            (
                "amqp-subscribe",
                settings(&[
                    ("url", "amqp://fbp:p%40ss@broker:5673/%2f"),
                    ("exchange", "shop"),
                    ("routing_key", "orders.#"),
                    ("queue", "fbp-orders")
                ])
            )
        );
        assert_eq!(endpoint("amqp://h/?queue=jobs", Role::Source).1[0].1, "amqp://guest:guest@h:5672/%2f");
        assert_eq!(
            endpoint("amqp://h//jobs", Role::Sink),
            ("amqp-publish", settings(&[("url", "amqp://guest:guest@h:5672/%2f"), ("routing_key", "jobs")]))
        );
        for bad in ["amqp://h/ex", "amqp:///ex/key", "amqp://h/"] {
            assert!(matches!(resolve(bad, Role::Source), Err(UriError::Bad { .. })), "{bad}");
        }
    }

    #[test]
    fn tcp_and_udp_listen_where_the_uri_says() {
        assert_eq!(
            endpoint("tcp://0.0.0.0:5515?framing=length", Role::Source),
            ("tcp-listen", settings(&[("bind", "0.0.0.0:5515"), ("framing", "length")]))
        );
        assert_eq!(
            endpoint("udp://127.0.0.1:5514", Role::Source),
            ("udp-listen", settings(&[("bind", "127.0.0.1:5514")]))
        );
        assert!(matches!(resolve("tcp://0.0.0.0:1", Role::Sink), Err(UriError::Role { role: Role::Sink, .. })));
        for bad in ["tcp://5515", "udp://host:", "tcp://h:1/path", "udp://"] {
            let err = resolve(bad, Role::Source).unwrap_err().to_string();
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn ws_is_a_websocket_client_both_ways() {
        let want = ("websocket", settings(&[("url", "ws://127.0.0.1:8080/feed"), ("format", "text")]));
        assert_eq!(endpoint("ws://127.0.0.1:8080/feed?format=text", Role::Source), want);
        assert_eq!(endpoint("ws://127.0.0.1:8080/feed?format=text", Role::Sink), want);
        assert_eq!(
            endpoint("wss://example.org/x", Role::Sink),
            ("websocket", settings(&[("url", "wss://example.org/x")]))
        );
        assert!(matches!(resolve("ws:///feed", Role::Source), Err(UriError::Bad { .. })));
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
    fn http_polls_as_a_source_and_requests_as_a_sink() {
        assert_eq!(
            endpoint("http://127.0.0.1:8080/items?interval=5s&page=1&q=a%20b", Role::Source),
            ("http-poll", settings(&[("url", "http://127.0.0.1:8080/items?page=1&q=a+b"), ("interval", "5s")]))
        );
        assert_eq!(
            endpoint("https://api.example.com/v1/in?method=PUT&token=x", Role::Sink),
            ("http-request", settings(&[("url", "https://api.example.com/v1/in?token=x"), ("method", "PUT")]))
        );
        assert_eq!(
            endpoint("http://h/in?max_body_size=1MiB&a=1", Role::Sink),
            ("http-request", settings(&[("url", "http://h/in?a=1"), ("max_body_size", "1MiB")]))
        );
        assert_eq!(
            endpoint("http://h/in?max_body_size=1MiB", Role::Source),
            ("http-poll", settings(&[("url", "http://h/in"), ("max_body_size", "1MiB")]))
        );
        assert!(matches!(resolve("http:///nohost", Role::Source), Err(UriError::Bad { .. })));
    }

    #[test]
    fn postgresql_is_a_sink_with_a_table_and_a_source_with_a_query_or_a_channel() {
        assert_eq!(
            endpoint("postgresql://app@db:5433/metrics?table=readings&key=sensor,ts", Role::Sink),
            (
                "postgres",
                settings(&[
                    ("url", "postgresql://app@db:5433/metrics"),
                    ("table", "readings"),
                    ("key", r#"["sensor", "ts"]"#)
                ])
            )
        );
        assert_eq!(
            endpoint("postgres://127.0.0.1/shop?query=SELECT%20*%20FROM%20orders&watermark=id", Role::Source),
            (
                "postgres-read",
                settings(&[
                    ("url", "postgresql://127.0.0.1/shop"),
                    ("query", "SELECT * FROM orders"),
                    ("watermark", "id")
                ])
            )
        );
        assert_eq!(endpoint("postgres://h/db?listen=events", Role::Source).0, "postgres-read");
        assert!(matches!(resolve("postgresql://h/db", Role::Sink), Err(UriError::Bad { .. })));
        assert!(matches!(resolve("postgresql://h/db?table=t", Role::Source), Err(UriError::Bad { .. })));
    }

    #[test]
    fn an_unknown_scheme_is_reported_as_such() {
        assert_eq!(
            resolve("foo://x", Role::Source),
            Err(UriError::Unknown { uri: "foo://x".into(), scheme: "foo".into() })
        );
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
        assert!(!help.contains("not available yet"), "every planned scheme has a row: {help}");
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
