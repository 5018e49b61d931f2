//! Listeners open beyond this host: a component with a `bind` key bound to
//! an address that is not loopback, without `auth`. `fbp check` warns about
//! each and `fbp run` logs the warnings at start, naming the key to set.
//!
//! A component can take a token when it declares an `auth` key; one that
//! declares none (a raw socket) is warned about all the same, saying so.

use std::net::IpAddr;
use std::ops::Range;

use super::{Diagnostic, Flow};

/// A warning for each listener bound beyond loopback without authentication,
/// at the component's place (`span_of` its name).
pub(crate) fn warnings(flow: &Flow, span_of: impl Fn(&str) -> Option<Range<usize>>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for node in &flow.nodes {
        let Some(bind) = node.spec.key("bind").and_then(|_| node.config.get("bind")?.as_str()) else { continue };
        if is_loopback(bind) || node.config.get("auth").is_some_and(|a| !a.is_null()) {
            continue;
        }
        let takes_auth = node.spec.key("auth").is_some();
        let (message, help) = if takes_auth {
            (
                format!(
                    "`{}` ({}) listens on `{bind}`, beyond this host, without authentication",
                    node.name, node.spec.name
                ),
                "set `auth = { token = \"${TOKEN}\" }` (and `tls`), or bind `127.0.0.1`".to_string(),
            )
        } else {
            (
                format!(
                    "`{}` ({}) listens on `{bind}`, beyond this host; {} has no authentication: anyone who reaches the port can send",
                    node.name, node.spec.name, node.spec.name
                ),
                "set `bind` to the one interface the devices use (or loopback), and firewall the port".to_string(),
            )
        };
        let d = match span_of(&node.name) {
            Some(span) => Diagnostic::at(span, message),
            None => Diagnostic::whole(message),
        };
        out.push(d.label("open beyond this host").help(help));
    }
    out
}

/// Whether a `HOST:PORT` bind is loopback only (`127.0.0.0/8`, `[::1]`, `localhost`).
pub fn is_loopback(bind: &str) -> bool {
    let host = bind.rsplit_once(':').map_or(bind, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_binds_are_loopback() {
        for yes in ["127.0.0.1:80", "127.1.2.3:0", "[::1]:8080", "localhost:9000", "LOCALHOST:1"] {
            assert!(super::is_loopback(yes), "{yes}");
        }
        for no in ["0.0.0.0:80", "[::]:80", "10.0.0.5:1", "gw.plant:80", "127.0.0.1.nip.io:80", "garbage"] {
            assert!(!super::is_loopback(no), "{no}");
        }
    }
}
