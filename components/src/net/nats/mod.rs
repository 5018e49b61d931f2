//! NATS: `nats-subscribe` (a source) and `nats-publish` (a sink), core NATS
//! and JetStream, over async-nats.
//!
//! - `connect`: the connection both share (servers, credentials, TLS,
//!   reconnection, link state);
//! - `subscribe`: core subscriptions and queue groups, and JetStream durable
//!   pull consumers acknowledged when the flow has delivered a message;
//! - `publish`: core publishes, and JetStream publishes acknowledged
//!   upstream only once the server confirmed them;
//! - this file: what both do to a message (payload formats, headers).

mod connect;
pub mod publish;
pub mod subscribe;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::str::FromStr;

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use bytes::Bytes;
use fbp_runtime::value::{self, Value};
use serde::Deserialize;

/// How a source reads payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// JSON; anything else is a message error.
    Json,
    /// UTF-8 text; invalid UTF-8 is a message error.
    Text,
    /// Raw bytes.
    Bytes,
    /// JSON where it parses, else text where it is UTF-8, else bytes.
    Auto,
}

impl Format {
    /// The port type of what it gives.
    pub(crate) fn port_type(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Text => "text",
            Format::Bytes => "bytes",
            Format::Auto => "any",
        }
    }

    /// The payload of `raw`, or why it cannot be read in this format and
    /// `raw` back (for `err`). Text and bytes share `raw`'s buffer (no
    /// copy); JSON is parsed from it.
    pub(crate) fn decode(self, raw: Bytes) -> Result<Value, (String, Bytes)> {
        match self {
            Format::Json => match value::parse_json(&raw) {
                Ok(v) => Ok(v),
                Err(e) => Err((format!("payload is not JSON: {e}"), raw)),
            },
            Format::Text => match std::str::from_utf8(&raw) {
                Ok(_) => Ok(Value::utf8_str(raw)),
                Err(e) => Err((format!("payload is not UTF-8 text: {e}"), raw)),
            },
            Format::Bytes => Ok(Value::byte_str(raw)),
            Format::Auto => Ok(value::parse_json(&raw).unwrap_or_else(|_| undecoded(raw))),
        }
    }
}

/// The payload as it goes on the wire: strings and bytes as they are (their
/// buffer shared, not copied), anything else as JSON.
pub(crate) fn encode(payload: &Value) -> Bytes {
    match payload {
        Value::TStr(b) | Value::BStr(b) => Bytes::clone(b),
        other => Bytes::from(value::to_json_string(other)),
    }
}

/// The raw payload of a message that could not be decoded, for `err`:
/// text where it is UTF-8, else bytes (sharing `raw`'s buffer).
pub(crate) fn undecoded(raw: Bytes) -> Value {
    if std::str::from_utf8(&raw).is_ok() { Value::utf8_str(raw) } else { Value::byte_str(raw) }
}

/// NATS headers as metadata headers; a repeated header keeps its values
/// joined with `, ` (as HTTP does).
pub(crate) fn headers_in(headers: Option<&HeaderMap>) -> BTreeMap<String, String> {
    let Some(headers) = headers else { return BTreeMap::new() };
    headers
        .iter()
        .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")))
        .collect()
}

/// Metadata headers as NATS headers; a name or value NATS cannot carry is
/// an error (the message goes to `err`).
pub(crate) fn headers_out(headers: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_str(k).map_err(|e| format!("header `{k}`: {e}"))?;
        if v.contains(['\r', '\n']) {
            return Err(format!("header `{k}`: a value cannot hold a line break"));
        }
        map.insert(name, v.as_str());
    }
    Ok(map)
}
