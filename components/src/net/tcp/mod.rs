//! `tcp-listen`: a TCP server; each client's stream is cut into frames
//! (lines or length-prefixed), each frame a message on one out-port.
//!
//! - this file: the declaration, the config and the build;
//! - `framing`: the codecs, tested on byte strings;
//! - `run`: the listener and a task per connection.

mod framing;
mod run;

use std::time::Duration;

use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::units::positive_size;
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, PortSpec};
use serde::Deserialize;

pub(crate) use self::framing::Framing;
use super::payload::{FORMAT_KEY, Format};

/// The `tcp-listen` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "tcp-listen",
    summary: "A TCP server: many clients send framed messages (lines or length-prefixed).",
    doc: "Listens on `bind` and reads every client at once, a task per connection, all feeding \
          port `out`. `framing = \"lines\"`: `\\n`-delimited frames, a trailing `\\r` removed (blank \
          lines are skipped with `format = \"json\"`); `length`: a 4-byte big-endian length, then \
          that many bytes. Each frame is decoded per `format` and sent with the client's address in \
          header `peer`; a frame that does not decode goes to `err` and the connection goes on. A \
          frame longer than `max_frame_size` goes to `err` (its first bytes); with lines the rest of \
          it is skipped and the next line read, while a length-prefixed connection is closed, as \
          the stream cannot be resynchronised. Back-pressure: a full out-port stops reading the \
          sockets, so TCP flow control slows the clients. At `max_connections` no further client is \
          accepted until one leaves (new ones wait in the kernel's backlog). A client that sends \
          nothing for `idle_timeout` is disconnected. At shutdown the listener closes and every \
          connection stops reading. Delivery is at-most-once: TCP has no application-level \
          acknowledgement, so frames read but not yet delivered when the process dies are lost.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec { name: "out", ty: "json", doc: "one message per frame; text or bytes per `format`" }],
    config: &[
        KeySpec::required("bind", KeyType::String, "The address to listen on, `HOST:PORT` (`\"0.0.0.0:5515\"`)."),
        KeySpec::new(
            "framing",
            KeyType::Enum(&["lines", "length"]),
            "\"lines\"",
            "`lines`: `\\n`-delimited (`\\r\\n` accepted); `length`: each frame after a 4-byte big-endian length.",
        ),
        FORMAT_KEY,
        KeySpec::new(
            "max_frame_size",
            KeyType::String,
            "\"1MiB\"",
            "The longest frame, as a size (`\"64KiB\"`); a longer one goes to `err`, and closes the \
             connection with `framing = \"length\"`. It bounds the memory of each connection.",
        ),
        KeySpec::optional(
            "max_connections",
            KeyType::Integer,
            "Clients served at once; more wait to be accepted. Unset: 1024, or a quarter of the \
             process's descriptor limit when that is less (fbp raises its soft limit to the hard \
             one at start), so a flood of clients never takes the descriptors other listeners need.",
        ),
        KeySpec::new(
            "idle_timeout",
            KeyType::Duration,
            "\"5m\"",
            "A client that sends nothing for this long is disconnected (waiting for a full out-port does not count).",
        ),
    ],
    delivery: Delivery::AtMostOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.daq]\ntype = \"tcp-listen\"\nconfig = { bind = \"0.0.0.0:5515\", framing = \"lines\", format = \"json\" }\n",
    build,
    ports: Some(ports),
    probe: Some(crate::probe::TCP_BIND),
};

#[derive(Deserialize)]
struct Config {
    bind: String,
    framing: Framing,
    format: Format,
    max_frame_size: String,
    max_connections: Option<i64>,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    idle_timeout: Duration,
}

/// A built `tcp-listen`.
#[derive(Debug)]
struct TcpListen {
    bind: String,
    framing: Framing,
    format: Format,
    max_frame: usize,
    max_connections: usize,
    idle_timeout: Duration,
}

fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    (Vec::new(), vec![Port { name: "out".into(), ty: Format::port_type(config).into() }])
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    Ok(Instance::task(TcpListen::new(config)?))
}

impl TcpListen {
    fn new(config: Config) -> Result<Self, String> {
        super::check_bind(&config.bind)?;
        let max_connections = match config.max_connections {
            Some(n) if n < 1 => return Err("`max_connections` must be at least 1".into()),
            Some(n) if n > 1 << 20 => return Err("`max_connections` must be at most 1048576".into()),
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => fbp_runtime::fd::connection_cap(1024),
        };
        if config.idle_timeout.is_zero() {
            return Err("`idle_timeout` must be more than 0s".into());
        }
        Ok(TcpListen {
            max_frame: positive_size("max_frame_size", &config.max_frame_size)?,
            bind: config.bind,
            framing: config.framing,
            format: config.format,
            max_connections,
            idle_timeout: config.idle_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use fbp_runtime::BuildContext;
    use serde_json::json;

    fn build(config: serde_json::Value) -> Result<super::TcpListen, String> {
        let mut full = json!({"framing": "lines", "format": "json", "max_frame_size": "1MiB",
                              "max_connections": 1024, "idle_timeout": "5m"});
        full.as_object_mut().unwrap().extend(config.as_object().unwrap().clone());
        let ctx = BuildContext { name: "t".into(), config: full, base_dir: ".".into() };
        super::TcpListen::new(ctx.parse()?)
    }

    #[test]
    fn config_is_checked_before_any_socket() {
        let ok = build(json!({"bind": "127.0.0.1:0", "max_frame_size": "64KiB", "framing": "length"})).unwrap();
        assert_eq!((ok.max_frame, ok.framing), (64 * 1024, super::Framing::Length));
        assert!(build(json!({"bind": "5514"})).unwrap_err().contains("HOST:PORT"));
        assert!(build(json!({"bind": "h:1", "max_connections": 0})).unwrap_err().contains("at least 1"));
        assert!(build(json!({"bind": "h:1", "max_connections": 1i64 << 40})).unwrap_err().contains("at most"));
        assert!(build(json!({"bind": "h:1", "max_frame_size": "0B"})).unwrap_err().contains("more than 0"));
        assert!(build(json!({"bind": "h:1", "idle_timeout": "0s"})).unwrap_err().contains("idle_timeout"));
        assert!(build(json!({"bind": "h:1", "framing": "crlf"})).is_err());
    }
}
