//! What the socket components make of a frame's bytes (`format`), and the
//! message they build around it, with the peer's address in its headers.

use std::net::SocketAddr;

use bytes::Bytes;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::{self, Value};
use fbp_runtime::{Context, Message};
use serde::Deserialize;

use crate::codec::utf8_text;

/// How a frame's bytes become a payload.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// A JSON value per frame.
    #[default]
    Json,
    /// UTF-8 text.
    Text,
    /// The raw bytes.
    Bytes,
}

/// The `format` key the socket components declare.
pub(crate) const FORMAT_KEY: KeySpec = KeySpec::new(
    "format",
    KeyType::Enum(&["json", "text", "bytes"]),
    "\"json\"",
    "What a frame is: `json` (a JSON value; a frame that does not parse goes to `err`), `text` \
     (UTF-8; broken UTF-8 goes to `err`) or `bytes` (as received).",
);

/// The header holding the peer's address (`"192.0.2.7:50123"`).
pub(crate) const PEER: &str = "peer";

/// Bytes shown of a frame sent to `err` because it is too long.
const PREVIEW: usize = 256;

impl Format {
    /// The out-port type for a config's `format`.
    pub(crate) fn port_type(config: &serde_json::Value) -> &'static str {
        match config.get("format").and_then(|f| Format::deserialize(f).ok()).unwrap_or_default() {
            Format::Json => "json",
            Format::Text => "text",
            Format::Bytes => "bytes",
        }
    }

    /// The payload of `frame`, or why it is not one.
    pub(crate) fn decode(self, frame: Bytes) -> Result<Value, String> {
        match self {
            Format::Json => value::parse_json(&frame).map_err(|e| format!("not JSON: {e}")),
            Format::Text => utf8_text(&frame),
            Format::Bytes => Ok(Value::byte_str(frame)),
        }
    }

    /// Whether a lines-framed `frame` carries nothing: a blank line in JSON.
    pub(crate) fn skips(self, frame: &[u8]) -> bool {
        self == Format::Json && frame.iter().all(u8::is_ascii_whitespace)
    }
}

/// A fresh message of `ctx` carrying `payload`, with the peer in its headers.
pub(crate) fn message(ctx: &Context, payload: Value, peer: &str) -> Message {
    let mut meta = ctx.meta();
    meta.headers.insert(PEER.into(), peer.into());
    Message::new(payload, meta)
}

/// The message sent to `err` for a frame that did not decode: its text (lossy).
pub(crate) fn bad_frame(ctx: &Context, frame: &[u8], peer: &str) -> Message {
    message(ctx, value::string(String::from_utf8_lossy(frame)), peer)
}

/// The message sent to `err` for a frame that was too long: its first bytes.
pub(crate) fn too_long(ctx: &Context, head: &[u8], peer: &str) -> Message {
    bad_frame(ctx, &head[..head.len().min(PREVIEW)], peer)
}

/// A socket address as a header value.
pub(crate) fn peer(addr: &SocketAddr) -> String {
    addr.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_decode_or_say_why_not() {
        assert_eq!(value::to_json_string(&Format::Json.decode(Bytes::from_static(b"{\"a\":1}")).unwrap()), "{\"a\":1}");
        assert!(Format::Json.decode(Bytes::from_static(b"{oops")).unwrap_err().starts_with("not JSON"));
        assert!(matches!(Format::Text.decode(Bytes::from_static(b"hi")).unwrap(), Value::TStr(_)));
        assert!(Format::Text.decode(Bytes::from_static(b"\xff")).unwrap_err().starts_with("not UTF-8"));
        assert!(matches!(Format::Bytes.decode(Bytes::from_static(b"\xff")).unwrap(), Value::BStr(_)));
    }

    #[test]
    fn port_type_follows_format_and_blank_json_lines_are_skipped() {
        assert_eq!(Format::port_type(&json!({})), "json");
        assert_eq!(Format::port_type(&json!({"format": "text"})), "text");
        assert_eq!(Format::port_type(&json!({"format": "bytes"})), "bytes");
        assert!(Format::Json.skips(b"  "));
        assert!(!Format::Text.skips(b""));
    }
}
