//! Brokers, servers and sockets: the components that talk to the network.
//!
//! Each keeps a [`fbp_runtime::link::Link`] per connection (state logged once
//! per change, reconnection with backoff, never giving up) and shares the TLS
//! set-up in [`tls`].
//!
//! - [`mqtt`], [`nats`], [`amqp`]: a subscribe (source) and a publish (sink)
//!   component per broker;
//! - [`template`]: the `{{ jq }}` templates of topics, subjects and keys;
//! - `tcp`: `tcp-listen`, a TCP server taking many clients' framed messages;
//! - `udp`: `udp-listen`, datagrams, dropped and counted when the flow is full;
//! - `websocket`: a WebSocket client, receiving and sending;
//! - `payload`: what a frame's bytes become (`format`), the peer header;
//! - `server`: the HTTP server `http-listen` and kv-state share (limits, TLS, auth);
//! - `budget`: a source's unacknowledged messages watched, a warning when they stay stuck.

pub mod amqp;
mod budget;
pub mod http;
pub mod mqtt;
pub mod nats;
mod payload;
pub(crate) mod server;
pub mod tcp;
pub mod template;
pub mod tls;
pub mod udp;
pub mod websocket;

/// Checks a `bind` address of the form `HOST:PORT` (no I/O: the name is
/// resolved when the socket is opened).
fn check_bind(bind: &str) -> Result<(), String> {
    let port = bind.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(_))) if !host.is_empty() => Ok(()),
        _ => Err(format!("`bind = \"{bind}\"`: write HOST:PORT, e.g. \"0.0.0.0:5514\" or \"[::]:5514\"")),
    }
}

/// Why a listener could not bind `bind`: an address in use, one this host
/// does not have, or a port it may not take are permanent (the flow fails at
/// once, saying what to change); anything else is retried.
pub(crate) fn bind_failure(
    ctx: &fbp_runtime::Context,
    what: &str,
    bind: &str,
    e: &std::io::Error,
) -> fbp_runtime::Failure {
    use std::io::ErrorKind;
    let port = bind.rsplit_once(':').map_or("", |(_, p)| p);
    let hint = match e.kind() {
        ErrorKind::AddrInUse => format!(
            "another program listens there (`ss -lntup 'sport = :{port}'` shows which); stop it or change `bind`"
        ),
        ErrorKind::AddrNotAvailable => "this host has no such address; change `bind` (`0.0.0.0` listens on all)".into(),
        ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges; choose a port from 1024 up or grant CAP_NET_BIND_SERVICE".into()
        }
        _ => return fbp_runtime::Failure(format!("cannot {what} on `{bind}`: {e}")),
    };
    ctx.permanent(format!("cannot {what} on `{bind}`: {e}; {hint}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bind_needs_a_host_and_a_port() {
        for good in ["127.0.0.1:5514", "0.0.0.0:0", "[::1]:80", "localhost:9000"] {
            assert!(super::check_bind(good).is_ok(), "{good}");
        }
        for bad in ["5514", ":5514", "host:", "host:99999", "host:port"] {
            assert!(super::check_bind(bad).unwrap_err().contains("HOST:PORT"), "{bad}");
        }
    }
}
