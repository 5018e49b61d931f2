//! Which `Host` and `Origin` a server answers, so that a web page cannot
//! reach it through a name it controls (DNS rebinding) or from another
//! origin (a WebSocket is not held by the browser's same-origin rule).
//!
//! Answered: a request without `Host` (not a browser), a `Host` naming the
//! bind address with its port (for a loopback bind also `localhost`,
//! `127.0.0.1` and `[::1]`; for a wildcard bind any IP address, which no DNS
//! answer can stand for), or one in `allowed_hosts` (`name` for any port,
//! `name:port` for that one). A request with an `Origin` must come from the
//! same origin (the scheme served and the `Host` it was sent to) or one in
//! `allowed_origins`; without `Origin` (curl, a device) it is answered.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The hosts and origins a server answers.
#[derive(Clone, Debug)]
pub(crate) struct Allowed {
    /// `host:port` names answered, lower-case.
    hosts: Vec<String>,
    /// Names answered on any port.
    any_port: Vec<String>,
    /// Any IP address on the bound port (a wildcard bind).
    any_ip: bool,
    /// The bound port.
    port: u16,
    /// `http` or `https`.
    scheme: &'static str,
    /// `scheme://host[:port]` origins answered besides the same origin.
    origins: Vec<String>,
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 421: `Host` names another server.
    Host,
    /// 403: `Origin` is another site.
    Origin,
}

impl Allowed {
    /// For a server bound as `bind` (as written) on `local`, with the lists of the config.
    pub(crate) fn new(bind: &str, local: SocketAddr, tls: bool, hosts: &[String], origins: &[String]) -> Allowed {
        let port = local.port();
        let bind_host = bind.rsplit_once(':').map_or(bind, |(h, _)| h).to_ascii_lowercase();
        let mut names = vec![bind_host.clone()];
        if local.ip().is_loopback() || bind_host == "localhost" {
            names.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
        }
        let (mut any_port, mut listed) = (Vec::new(), Vec::new());
        for h in hosts.iter().map(|h| h.to_ascii_lowercase()) {
            match split_port(&h) {
                Some(_) => listed.push(h),
                None => any_port.push(h),
            }
        }
        let mut all: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
        all.extend(listed);
        Allowed {
            hosts: all,
            any_port,
            any_ip: local.ip().is_unspecified(),
            port,
            scheme: if tls { "https" } else { "http" },
            origins: origins.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a request with these headers is answered.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = match headers.get(header::HOST) {
            None => None,
            Some(h) => Some(h.to_str().ok().and_then(|h| self.host(h)).ok_or(Refusal::Host)?),
        };
        let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
        let origin = origin.to_str().map_err(|_| Refusal::Origin)?.trim_end_matches('/').to_ascii_lowercase();
        let same = host.is_some_and(|h| self.same_origin(&origin, &h));
        if same || self.origins.contains(&origin) { Ok(()) } else { Err(Refusal::Origin) }
    }

    /// The `Host` as `host:port` (lower-case), when it is answered.
    fn host(&self, host: &str) -> Option<String> {
        let host = with_port(&host.to_ascii_lowercase(), self.scheme)?;
        let (name, port) = split_port(&host)?;
        let ok = self.hosts.contains(&host)
            || self.any_port.iter().any(|n| n == name)
            || (self.any_ip && port == self.port && name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok());
        ok.then_some(host)
    }

    /// Whether `origin` is the scheme served and `host`.
    fn same_origin(&self, origin: &str, host: &str) -> bool {
        let Some((scheme, authority)) = origin.split_once("://") else { return false };
        scheme == self.scheme && with_port(authority, scheme).is_some_and(|a| a == host)
    }
}

/// `host:port`, the scheme's default port added when there is none.
fn with_port(host: &str, scheme: &str) -> Option<String> {
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    match split_port(host) {
        Some(_) => Some(host.to_string()),
        None if host.ends_with(']') || !host.contains(':') => {
            Some(format!("{host}:{}", if scheme == "https" { 443 } else { 80 }))
        }
        None => None,
    }
}

/// `(host, port)` of `host:port` or `[v6]:port`.
fn split_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || (host.contains(':') && !bracketed) {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// The middleware: 421 for a `Host` not answered, 403 for an `Origin` not answered.
pub(crate) async fn require(State(allowed): State<std::sync::Arc<Allowed>>, request: Request, next: Next) -> Response {
    match allowed.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(Refusal::Host) => {
            (StatusCode::MISDIRECTED_REQUEST, "this server does not answer for that `Host`\n").into_response()
        }
        Err(Refusal::Origin) => (StatusCode::FORBIDDEN, "requests from that `Origin` are refused\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    fn loopback() -> Allowed {
        Allowed::new("127.0.0.1:8091", "127.0.0.1:8091".parse().unwrap(), false, &[], &[])
    }

    #[test]
    fn a_loopback_bind_answers_its_loopback_names_with_its_port() {
        let a = loopback();
        for good in ["127.0.0.1:8091", "localhost:8091", "LOCALHOST:8091", "[::1]:8091"] {
            assert_eq!(a.check(&headers(&[("host", good)])), Ok(()), "{good}");
        }
        assert_eq!(a.check(&HeaderMap::new()), Ok(()));
        for bad in ["evil.example:8091", "127.0.0.1:8092", "127.0.0.1", "evil.example", "", "a b:8091"] {
            assert_eq!(a.check(&headers(&[("host", bad)])), Err(Refusal::Host), "{bad}");
        }
    }

    #[test]
    fn listed_hosts_and_wildcard_binds() {
        let hosts = ["gw.plant".to_string(), "gw2.plant:9000".to_string()];
        let a = Allowed::new("0.0.0.0:8091", "0.0.0.0:8091".parse().unwrap(), false, &hosts, &[]);
        for good in ["gw.plant:8091", "gw.plant:1", "gw2.plant:9000", "10.0.0.5:8091", "[fe80::1]:8091"] {
            assert_eq!(a.check(&headers(&[("host", good)])), Ok(()), "{good}");
        }
        for bad in ["gw2.plant:8091", "10.0.0.5:8092", "evil.example:8091", "127.0.0.1.nip.io:8091"] {
            assert_eq!(a.check(&headers(&[("host", bad)])), Err(Refusal::Host), "{bad}");
        }
    }

    #[test]
    fn origins_must_be_the_same_or_listed() {
        let a = loopback();
        let same = headers(&[("host", "127.0.0.1:8091"), ("origin", "http://127.0.0.1:8091")]);
        assert_eq!(a.check(&same), Ok(()));
        for bad in ["http://evil.example", "https://127.0.0.1:8091", "http://localhost:8091", "null", "x"] {
            let h = headers(&[("host", "127.0.0.1:8091"), ("origin", bad)]);
            assert_eq!(a.check(&h), Err(Refusal::Origin), "{bad}");
        }
        assert_eq!(a.check(&headers(&[("origin", "http://127.0.0.1:8091")])), Err(Refusal::Origin));
        let listed = ["https://dash.plant/".to_string()];
        let a = Allowed::new("127.0.0.1:8091", "127.0.0.1:8091".parse().unwrap(), true, &[], &listed);
        let h = headers(&[("host", "127.0.0.1:8091"), ("origin", "https://dash.plant")]);
        assert_eq!(a.check(&h), Ok(()));
        let h = headers(&[("host", "localhost:443"), ("origin", "https://localhost")]);
        assert_eq!(a.check(&h), Err(Refusal::Host), "another port");
    }
}
