//! AMQP 0.9.1 (RabbitMQ) with lapin: `amqp-subscribe` and `amqp-publish`.
//!
//! - this file: what both share: the broker URL, the connection, exchange
//!   declarations, headers to and from metadata, and which broker errors are
//!   the flow's fault (a failure) rather than an outage (reconnect);
//! - `subscribe`: a consumer with manual acknowledgements;
//! - `publish`: a publisher with confirms.
//!
//! Each instance keeps one connection and one channel. When either drops, the
//! component tells its [`Link`](fbp_runtime::link::Link), waits the backoff,
//! connects again and declares its topology again; it never fails the flow
//! because the broker is away. `amqps://` is refused: the lapin build here has
//! no TLS connector (it would need features that pull a second crypto provider
//! or a PKCS#12 parser).

mod probe;
pub mod publish;
pub mod subscribe;

use std::collections::BTreeMap;
use std::time::Duration;

use fbp_runtime::link::Backoff;
use fbp_runtime::spec::{KeySpec, KeyType};
use lapin::options::ExchangeDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};

/// The `url` key both components declare.
const URL_KEY: KeySpec = KeySpec::new(
    "url",
    KeyType::String,
    "\"amqp://guest:guest@127.0.0.1:5672/%2f\"",
    "The broker: `amqp://USER:PASSWORD@HOST:PORT/VHOST` (the vhost `/` is written `%2f`).",
);

/// The `exchange_type` key both components declare.
const EXCHANGE_TYPE_KEY: KeySpec = KeySpec::new(
    "exchange_type",
    KeyType::Enum(&["topic", "direct", "fanout"]),
    "\"topic\"",
    "The type `exchange` is declared with when it does not exist (an existing exchange must \
     have this type). Exchanges named `amq.*` and the default exchange `\"\"` are not declared.",
);

/// The `durable` key both components declare.
const DURABLE_KEY: KeySpec = KeySpec::new(
    "durable",
    KeyType::Bool,
    "true",
    "Declare the exchange (and a named queue) durable, so they survive a broker restart.",
);

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exchange types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum ExchangeType {
    Topic,
    Direct,
    Fanout,
}

impl ExchangeType {
    fn kind(self) -> ExchangeKind {
        match self {
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Fanout => ExchangeKind::Fanout,
        }
    }
}

/// Where and how to connect, checked at build.
#[derive(Clone, Debug)]
struct Broker {
    url: String,
    /// The URL without its password, for logs.
    target: String,
    backoff: Backoff,
}

impl Broker {
    /// Checks `url` and `reconnect`; no I/O.
    fn new(url: &str, reconnect: &str) -> Result<Broker, String> {
        let parsed: lapin::uri::AMQPUri = url.parse().map_err(|e| {
            format!("`url = \"{url}\"` is not an AMQP URL ({e}); write e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`")
        })?;
        if parsed.scheme == lapin::uri::AMQPScheme::AMQPS {
            return Err("`amqps://` is not supported by this build; use `amqp://` (e.g. through a TLS tunnel)".into());
        }
        let target = format!(
            "amqp {}@{}:{}/{}",
            parsed.authority.userinfo.username, parsed.authority.host, parsed.authority.port, parsed.vhost
        );
        Ok(Broker { url: url.to_string(), target, backoff: Backoff::parse("reconnect", reconnect)? })
    }

    /// Connects and opens a channel.
    async fn connect(&self) -> Result<(Connection, Channel), lapin::Error> {
        let connect = Connection::connect(&self.url, ConnectionProperties::default());
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| {
            lapin::Error::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"))
        })??;
        let channel = conn.create_channel().await?;
        Ok((conn, channel))
    }
}

/// Declares `name` unless it is the default exchange or a predeclared `amq.*` one.
async fn declare_exchange(channel: &Channel, name: &str, ty: ExchangeType, durable: bool) -> Result<(), lapin::Error> {
    if name.is_empty() || name.starts_with("amq.") {
        return Ok(());
    }
    let options = ExchangeDeclareOptions { durable, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(name.into(), ty.kind(), options, FieldTable::default()).await
}

/// Whether a broker error is the flow's fault (a refused declaration, a
/// missing queue, bad credentials): retrying would not help, so the
/// component fails and its supervisor decides. Anything else is an outage.
fn is_refusal(e: &lapin::Error) -> bool {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::ACCESSREFUSED | AMQPSoftError::NOTFOUND | AMQPSoftError::PRECONDITIONFAILED
            ) | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED | AMQPHardError::INVALIDPATH)
        ),
        _ => false,
    }
}

/// AMQP headers as metadata headers: strings as they are, other values as JSON text.
fn headers_to_meta(table: Option<&FieldTable>) -> BTreeMap<String, String> {
    let Some(table) = table else { return BTreeMap::new() };
    table
        .inner()
        .iter()
        .map(|(k, v)| {
            let text = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_string(),
                AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
                other => serde_json::to_value(other)
                    .map(|j| match j {
                        serde_json::Value::Object(mut o) if o.len() == 1 => {
                            o.values_mut().next().map(std::mem::take).unwrap_or_default().to_string()
                        }
                        j => j.to_string(),
                    })
                    .unwrap_or_default(),
            };
            (k.as_str().to_string(), text)
        })
        .collect()
}

/// Metadata headers as AMQP headers (long strings).
fn meta_to_headers(headers: &BTreeMap<String, String>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert(k.as_str().into(), AMQPValue::LongString(LongString::from(v.as_str())));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_the_password_stays_out_of_logs() {
        let b = Broker::new("amqp://fbp:secret@127.0.0.1:5673/%2f", "100ms..1s").unwrap();
        assert_eq!(b.target, "amqp fbp@127.0.0.1:5673//");
        assert!(!b.target.contains("secret"));
        assert!(Broker::new("amqps://127.0.0.1/%2f", "100ms..1s").unwrap_err().contains("amqps"));
        assert!(Broker::new("http://x", "100ms..1s").unwrap_err().contains("not an AMQP URL"));
        assert!(Broker::new("amqp://127.0.0.1/%2f", "soon").unwrap_err().contains("reconnect"));
    }

    #[test]
    fn headers_go_both_ways_as_strings() {
        let meta: BTreeMap<String, String> = [("a".to_string(), "1".to_string()), ("b".into(), "x y".into())].into();
        let table = meta_to_headers(&meta);
        assert_eq!(headers_to_meta(Some(&table)), meta);
        let mut table = FieldTable::default();
        table.insert("n".into(), AMQPValue::LongLongInt(42));
        table.insert("t".into(), AMQPValue::Boolean(true));
        let back = headers_to_meta(Some(&table));
        assert_eq!((back["n"].as_str(), back["t"].as_str()), ("42", "true"));
        assert!(headers_to_meta(None).is_empty());
    }
}
