//! `websocket`: a WebSocket client that receives messages (port `out`) and
//! sends messages (port `in`), either or both, reconnecting with backoff.
//!
//! - this file: the declaration, the config and the build (no I/O);
//! - `frames`: what a received frame becomes, what a message is sent as;
//! - `run`: the connection loop (a [`Link`](fbp_runtime::link::Link)) and a session.

mod frames;
mod run;

use std::time::Duration;

use fbp_runtime::link::{Backoff, RECONNECT_KEY};
use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::units::positive_size;
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, PortSpec};
use serde::Deserialize;
use url::Url;

use super::payload::{FORMAT_KEY, Format};
use super::tls::TlsFiles;

/// The `websocket` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "websocket",
    summary: "A WebSocket client: receive messages on `out`, send the messages of `in`; reconnects by itself.",
    doc: "Connects to `url` (`ws://`, or `wss://` with TLS: the system's roots or `ca_file`, and a \
          client certificate with `cert_file` and `key_file`). Each received text frame is decoded \
          per `format` (one that does not decode goes to `err`) and each binary frame becomes bytes, \
          sent on `out`; each message arriving on `in` is sent: bytes as a binary frame, otherwise \
          a text frame (`json`: the payload as JSON; `text`: a string as it is, anything else as \
          JSON; `bytes`: text as a binary frame). Both directions are optional: with `out` \
          unconnected received messages are dropped and the component ends when `in` ends (after \
          sending everything and closing the connection); with `out` connected it runs until the \
          flow stops. Pings from the server are answered; the client pings every `ping_interval` \
          and reconnects when nothing was heard for two intervals. A message longer than \
          `max_message_size` breaks the connection (the protocol cannot skip it). When the \
          connection is lost or refused the component logs one warning per outage, reconnects \
          with backoff (`reconnect`) and never fails the flow; meanwhile it reads nothing from \
          `in`, so back-pressure holds upstream, and a full `out` stops it reading the socket. \
          At shutdown it stops receiving and sends what `in` still brings as upstream drains; \
          if the connection is down then, those messages go to `err`. \
          Delivery is at-most-once both ways: a message from `in` is acknowledged once written to \
          the socket (one whose write failed is sent again after reconnecting), and what the \
          server sent while the connection was down is not recovered.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to send (optional)" }],
    outputs: &[PortSpec {
        name: "out",
        ty: "any",
        doc: "received messages (optional): text frames per `format`, binary frames as bytes",
    }],
    config: &[
        KeySpec::required("url", KeyType::String, "The server: `ws://HOST:PORT/PATH` or `wss://...`."),
        FORMAT_KEY,
        KeySpec::new(
            "max_message_size",
            KeyType::String,
            "\"1MiB\"",
            "The longest message (and frame) accepted, as a size; a longer one drops the connection.",
        ),
        KeySpec::new(
            "ping_interval",
            KeyType::Duration,
            "\"30s\"",
            "How often to ping the server; silence for two intervals counts as a lost connection.",
        ),
        KeySpec::optional(
            "ca_file",
            KeyType::String,
            "`wss://`: CA certificates (PEM) to trust instead of the system's.",
        ),
        KeySpec::optional("cert_file", KeyType::String, "`wss://`: a client certificate chain (PEM), for mutual TLS."),
        KeySpec::optional("key_file", KeyType::String, "`wss://`: the client certificate's private key (PEM)."),
        RECONNECT_KEY,
    ],
    delivery: Delivery::AtMostOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.feed]\ntype = \"websocket\"\nconfig = { url = \"ws://127.0.0.1:8080/feed\", format = \"json\" }\n",
    build,
    ports: Some(ports),
    probe: Some(crate::probe::HTTP),
};

#[derive(Deserialize)]
struct Config {
    url: String,
    format: Format,
    max_message_size: String,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    ping_interval: Duration,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    reconnect: String,
}

/// A built `websocket`.
#[derive(Debug)]
struct WebSocket {
    url: Url,
    format: Format,
    max_message: usize,
    ping_interval: Duration,
    /// Set for `wss://`; the files are read when the component starts.
    tls: Option<TlsFiles>,
    backoff: Backoff,
}

fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    // Binary frames are bytes whatever the format, so only `bytes` narrows the type.
    let out = if Format::port_type(config) == "bytes" { "bytes" } else { "any" };
    (vec![Port { name: "in".into(), ty: "any".into() }], vec![Port { name: "out".into(), ty: out.into() }])
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let url = Url::parse(&config.url).map_err(|e| format!("`url = \"{}\"`: {e}", config.url))?;
    let secure = match url.scheme() {
        "ws" => false,
        "wss" => true,
        other => return Err(format!("`url`: the scheme must be `ws` or `wss`, not `{other}`")),
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`url = \"{}\"` has no host", config.url));
    }
    if config.ping_interval.is_zero() {
        return Err("`ping_interval` must be more than 0s".into());
    }
    let files = [&config.ca_file, &config.cert_file, &config.key_file];
    if !secure && files.iter().any(|f| f.is_some()) {
        return Err("`ca_file`, `cert_file` and `key_file` need a `wss://` url".into());
    }
    let path = |f: &Option<String>| f.as_deref().map(|p| ctx.path(p));
    let tls = secure.then(|| TlsFiles {
        ca_file: path(&config.ca_file),
        cert_file: path(&config.cert_file),
        key_file: path(&config.key_file),
    });
    Ok(Instance::task(WebSocket {
        url,
        format: config.format,
        max_message: positive_size("max_message_size", &config.max_message_size)?,
        ping_interval: config.ping_interval,
        tls,
        backoff: Backoff::parse("reconnect", &config.reconnect)?,
    }))
}

#[cfg(test)]
mod tests {
    use fbp_runtime::testing::Harness;
    use serde_json::json;

    async fn build_error(config: serde_json::Value) -> String {
        Harness::new(&super::SPEC, config).run().await.result.unwrap().unwrap_err().0
    }

    #[tokio::test]
    async fn config_errors_are_build_errors() {
        for (config, want) in [
            (json!({"url": "http://h/x"}), "must be `ws` or `wss`"),
            (json!({"url": "not a url"}), "`url = \"not a url\"`"),
            (json!({"url": "ws://h/", "ca_file": "ca.pem"}), "need a `wss://` url"),
            (json!({"url": "ws://h/", "reconnect": "5s..1s"}), "at most the second"),
            (json!({"url": "ws://h/", "ping_interval": "0s"}), "ping_interval"),
            (json!({"url": "ws://h/", "max_message_size": "0B"}), "more than 0"),
        ] {
            let err = build_error(config).await;
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn out_is_bytes_only_with_format_bytes() {
        assert_eq!(&*super::ports(&json!({"format": "bytes"})).1[0].ty, "bytes");
        assert_eq!(&*super::ports(&json!({"format": "json"})).1[0].ty, "any");
    }
}
