//! The connection settings both MQTT components share: their declared keys,
//! the config type, its validation (everything rumqttc would panic on is
//! refused here, so `fbp check` reports it) and the `MqttOptions` it makes.

use std::sync::Arc;
use std::time::Duration;

use fbp_runtime::link::{Backoff, RECONNECT_KEY};
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::units::{parse_duration, positive_size};
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use serde::Deserialize;

use crate::net::tls::{TlsFiles, client_config};

/// Room for the fixed header, the topic and the packet id on top of a payload.
///
/// rumqttc reads packets up to `max_payload_size` plus this whole; a PUBLISH
/// beyond (up to MQTT's own limit of 256MiB, which its length field cannot
/// exceed) is read past by the patched client without being buffered and
/// reaches `mqtt-subscribe` as its head only; any other packet beyond drops
/// the connection. So what a broker sends never takes more memory than the
/// limit, and `mqtt-subscribe` applies `max_payload_size` to the payload itself.
const PACKET_OVERHEAD: usize = 2 + 65_535 + 2 + 5;

/// The keys both components declare (each adds its own: `topics` or `topic`, `retain`).
pub(super) const COMMON_KEYS: [KeySpec; 19] = [
    KeySpec::optional(
        "url",
        KeyType::String,
        "The broker as a URL, `mqtt://HOST:PORT` or `mqtts://HOST:PORT` (TLS); instead of `host`, `port` and `tls`.",
    ),
    KeySpec::optional("host", KeyType::String, "The broker's host name or address. Unset: `127.0.0.1`."),
    KeySpec::optional("port", KeyType::Integer, "The broker's port. Unset: 1883, or 8883 with TLS."),
    KeySpec::optional(
        "client_id",
        KeyType::String,
        "The MQTT client id. Unset: `fbp-` followed by the component's name and a random suffix, new at each \
         start, which suits a clean session only: a persistent session (`clean_session = false`) needs a \
         fixed id.",
    ),
    KeySpec::optional("username", KeyType::String, "User name for the broker."),
    KeySpec::optional("password", KeyType::String, "Password for the broker (with `username`)."),
    KeySpec::new("tls", KeyType::Bool, "false", "Connect with TLS (rustls)."),
    KeySpec::optional("ca_file", KeyType::String, "With TLS: CA certificates (PEM) to trust. Unset: the system's."),
    KeySpec::optional("cert_file", KeyType::String, "With TLS: a client certificate chain (PEM), for mutual TLS."),
    KeySpec::optional("key_file", KeyType::String, "With TLS: the client certificate's private key (PEM)."),
    KeySpec::new(
        "qos",
        KeyType::Integer,
        "1",
        "Quality of service: 0 (at most once), 1 (at least once) or 2 (exactly once on the wire; \
         at least once end to end).",
    ),
    KeySpec::new(
        "clean_session",
        KeyType::Bool,
        "true",
        "`false` asks the broker to keep the session (subscriptions and unacknowledged QoS 1/2 \
         messages) across disconnections and restarts; needs a fixed `client_id`.",
    ),
    KeySpec::new(
        "keep_alive",
        KeyType::Duration,
        "\"30s\"",
        "MQTT keep-alive: a ping is sent when the connection has been idle this long; at least 1s.",
    ),
    KeySpec::new(
        "inflight",
        KeyType::Integer,
        "100",
        "QoS 1/2 publishes this client has on the wire unacknowledged at once (1 to 65535); \
         also how many messages `mqtt-publish` has published and not yet seen confirmed.",
    ),
    KeySpec::new("protocol", KeyType::Enum(&["3.1.1"]), "\"3.1.1\"", "The MQTT protocol version. Only 3.1.1 today."),
    KeySpec::new(
        "max_payload_size",
        KeyType::String,
        "\"8MiB\"",
        "The largest payload sent or received, in bytes, as a size. A bigger message to publish goes to \
         `err`; a bigger message received goes to `err` too (its topic, its size and the limit; the \
         payload is read past, never held in memory), is acknowledged, and the subscription goes on. \
         The broker's `message_size_limit` should match.",
    ),
    KeySpec::optional(
        "will",
        KeyType::Any,
        "A last will the broker publishes if this client vanishes: `{ topic = \"..\", payload = \"..\", \
         qos = 0, retain = false }`.",
    ),
    KeySpec::new(
        "format",
        KeyType::Enum(&["json", "text", "bytes"]),
        "\"json\"",
        "Payload format. Subscribe: `json` decodes (a payload that is not JSON goes to `err` as text or \
         bytes, with its topic), `text` needs UTF-8, `bytes` takes anything. Publish: `json` serialises \
         the payload, `text` needs a string, `bytes` takes bytes or a string.",
    ),
    RECONNECT_KEY,
];

/// Payload format, both ways.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Format {
    Json,
    Text,
    Bytes,
}

/// A last will, as the flow writes it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct Will {
    topic: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    qos: i64,
    #[serde(default)]
    retain: bool,
}

/// The shared keys as the flow wrote them.
#[derive(Clone, Debug, Deserialize)]
pub(super) struct Common {
    url: Option<String>,
    host: Option<String>,
    port: Option<i64>,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    tls: bool,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    qos: i64,
    clean_session: bool,
    keep_alive: String,
    inflight: i64,
    #[allow(dead_code)] // Only "3.1.1" passes the check; kept so "5" can be added.
    protocol: String,
    max_payload_size: String,
    will: Option<Will>,
    pub(super) format: Format,
    reconnect: String,
}

/// Checked connection settings, ready to make `MqttOptions` (no I/O until then).
#[derive(Clone, Debug)]
pub(super) struct Connection {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) client_id: String,
    credentials: Option<(String, String)>,
    tls: Option<TlsFiles>,
    pub(super) qos: QoS,
    pub(super) clean_session: bool,
    pub(super) keep_alive: Duration,
    pub(super) inflight: u16,
    pub(super) max_payload: usize,
    will: Option<LastWill>,
    pub(super) backoff: Backoff,
}

impl Connection {
    /// `broker HOST:PORT`, how the link names its target.
    pub(super) fn target(&self) -> String {
        format!("mqtt {}:{}", self.host, self.port)
    }

    /// The rumqttc options. Reads the TLS files (the only I/O), so it is
    /// called when the component runs, not when it is built.
    pub(super) fn options(&self) -> Result<MqttOptions, String> {
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            .set_inflight(self.inflight)
            .set_max_packet_size(self.max_payload + PACKET_OVERHEAD, self.max_payload + PACKET_OVERHEAD);
        if let Some((user, password)) = &self.credentials {
            o.set_credentials(user.clone(), password.clone());
        }
        if let Some(will) = &self.will {
            o.set_last_will(will.clone());
        }
        if let Some(files) = &self.tls {
            let config: Arc<rustls::ClientConfig> = client_config(files)?;
            o.set_transport(Transport::Tls(TlsConfiguration::Rustls(config)));
        }
        Ok(o)
    }
}

/// Checks the shared keys; `name` is the component's (for the default client id),
/// `path` resolves file names against the flow's folder.
pub(super) fn check(c: &Common, name: &str, path: impl Fn(&str) -> std::path::PathBuf) -> Result<Connection, String> {
    let (host, port, url_tls) = endpoint(c)?;
    let tls = c.tls || url_tls;
    let port = match port {
        Some(p) => p,
        None if tls => 8883,
        None => 1883,
    };
    if !c.clean_session && c.client_id.is_none() {
        return Err("`clean_session = false` needs a fixed `client_id`: a persistent session is found by its \
                    client id, and the default one is new at each start"
            .into());
    }
    let client_id = match &c.client_id {
        Some(id) if id.is_empty() => return Err("`client_id` is empty".into()),
        Some(id) => id.clone(),
        None => format!("fbp-{name}-{:06x}", fastrand::u32(..0x100_0000)),
    };
    let credentials = match (&c.username, &c.password) {
        (Some(u), p) => Some((u.clone(), p.clone().unwrap_or_default())),
        (None, Some(_)) => return Err("`password` needs `username`".into()),
        (None, None) => None,
    };
    if !tls && (c.ca_file.is_some() || c.cert_file.is_some() || c.key_file.is_some()) {
        return Err("`ca_file`, `cert_file` and `key_file` need `tls = true` (or an `mqtts://` url)".into());
    }
    if c.cert_file.is_some() != c.key_file.is_some() {
        return Err("a client certificate needs both `cert_file` and `key_file`".into());
    }
    let tls = tls.then(|| TlsFiles {
        ca_file: c.ca_file.as_deref().map(&path),
        cert_file: c.cert_file.as_deref().map(&path),
        key_file: c.key_file.as_deref().map(&path),
    });
    let keep_alive = parse_duration(&c.keep_alive).map_err(|e| format!("`keep_alive`: {e}"))?;
    if keep_alive < Duration::from_secs(1) {
        return Err(format!("`keep_alive = \"{}\"` is under 1s; MQTT counts it in whole seconds", c.keep_alive));
    }
    if keep_alive > Duration::from_secs(u16::MAX as u64) {
        return Err(format!("`keep_alive = \"{}\"` is over the MQTT limit of 65535s", c.keep_alive));
    }
    let inflight = u16::try_from(c.inflight)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`inflight = {}`: write a number from 1 to 65535", c.inflight))?;
    let max_payload = positive_size("max_payload_size", &c.max_payload_size)?;
    if max_payload > 256 * 1024 * 1024 {
        return Err("`max_payload_size` is over MQTT's limit of 256MiB".into());
    }
    let will = c.will.as_ref().map(will).transpose()?;
    Ok(Connection {
        host,
        port,
        client_id,
        credentials,
        tls,
        qos: qos("qos", c.qos)?,
        clean_session: c.clean_session,
        keep_alive,
        inflight,
        max_payload,
        will,
        backoff: Backoff::parse("reconnect", &c.reconnect)?,
    })
}

/// Host, port and whether the URL asked for TLS.
fn endpoint(c: &Common) -> Result<(String, Option<u16>, bool), String> {
    let port = c
        .port
        .map(|p| u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| format!("`port = {p}` is not a TCP port")))
        .transpose()?;
    let Some(url) = &c.url else {
        return Ok((c.host.clone().unwrap_or_else(|| "127.0.0.1".into()), port, false));
    };
    if c.host.is_some() || c.port.is_some() {
        return Err("set either `url` or `host` and `port`, not both".into());
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("`url = \"{url}\"`: {e}"))?;
    let tls = match parsed.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => return Err(format!("`url`: the scheme `{other}:` is not MQTT; write `mqtt://` or `mqtts://`")),
    };
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("`url = \"{url}\"` has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((host, parsed.port(), tls))
}

/// A QoS level from its number.
pub(super) fn qos(key: &str, n: i64) -> Result<QoS, String> {
    match n {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        _ => Err(format!("`{key} = {n}`: QoS is 0, 1 or 2")),
    }
}

fn will(w: &Will) -> Result<LastWill, String> {
    super::template::check_publish_topic(&w.topic).map_err(|e| format!("`will.topic`: {e}"))?;
    Ok(LastWill::new(w.topic.clone(), w.payload.clone().into_bytes(), qos("will.qos", w.qos)?, w.retain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The shared keys with their declared defaults, then `over`.
    fn common(over: serde_json::Value) -> Common {
        let mut config = json!({
            "tls": false, "qos": 1, "clean_session": true, "keep_alive": "30s", "inflight": 100,
            "protocol": "3.1.1", "max_payload_size": "8MiB", "format": "json", "reconnect": "100ms..10s"
        });
        for key in COMMON_KEYS.iter().filter_map(|k| k.default.map(|d| (k.name, d))) {
            assert!(config.get(key.0).is_some(), "test defaults miss `{}` = {}", key.0, key.1);
        }
        config.as_object_mut().unwrap().extend(over.as_object().unwrap().clone());
        serde_json::from_value(config).unwrap()
    }

    fn checked(over: serde_json::Value) -> Result<Connection, String> {
        check(&common(over), "sub", |p| format!("/flows/{p}").into())
    }

    #[test]
    fn defaults_give_a_local_broker_and_a_fresh_client_id() {
        let c = checked(json!({})).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.qos), ("127.0.0.1", 1883, QoS::AtLeastOnce));
        assert!(c.client_id.starts_with("fbp-sub-"), "{}", c.client_id);
        assert_ne!(c.client_id, checked(json!({})).unwrap().client_id);
        assert_eq!(c.keep_alive, Duration::from_secs(30));
        assert!(c.options().is_ok());
    }

    #[test]
    fn urls_give_host_port_and_tls() {
        let c = checked(json!({"url": "mqtts://broker.local"})).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.tls.is_some()), ("broker.local", 8883, true));
        let c = checked(json!({"url": "mqtt://127.0.0.1:1999"})).unwrap();
        assert_eq!((c.port, c.tls.is_none()), (1999, true));
        assert!(checked(json!({"url": "http://x"})).unwrap_err().contains("not MQTT"));
        assert!(checked(json!({"url": "mqtt://x", "port": 1})).unwrap_err().contains("not both"));
    }

    #[test]
    fn what_rumqttc_would_panic_on_is_refused() {
        let e = checked(json!({"clean_session": false})).unwrap_err();
        assert!(e.contains("needs a fixed `client_id`"), "{e}");
        assert!(checked(json!({"clean_session": false, "client_id": "gw-1"})).is_ok());
        assert!(checked(json!({"keep_alive": "500ms"})).unwrap_err().contains("under 1s"));
        assert!(checked(json!({"inflight": 0})).unwrap_err().contains("1 to 65535"));
        assert!(checked(json!({"inflight": 70000})).is_err());
        assert!(checked(json!({"client_id": ""})).unwrap_err().contains("empty"));
    }

    #[test]
    fn bad_values_are_named() {
        assert!(checked(json!({"qos": 3})).unwrap_err().contains("0, 1 or 2"));
        assert!(checked(json!({"port": 70000})).unwrap_err().contains("not a TCP port"));
        assert!(checked(json!({"password": "x"})).unwrap_err().contains("needs `username`"));
        assert!(checked(json!({"ca_file": "ca.pem"})).unwrap_err().contains("need `tls = true`"));
        assert!(checked(json!({"tls": true, "cert_file": "c.pem"})).unwrap_err().contains("both"));
        assert!(checked(json!({"max_payload_size": "1GiB"})).unwrap_err().contains("256MiB"));
        assert!(checked(json!({"reconnect": "soon"})).is_err());
    }

    #[test]
    fn tls_files_resolve_against_the_flow_folder_and_the_will_is_checked() {
        let c = checked(json!({"tls": true, "ca_file": "ca.pem"})).unwrap();
        assert_eq!(c.tls.unwrap().ca_file.unwrap(), std::path::PathBuf::from("/flows/ca.pem"));
        let c = checked(json!({"will": {"topic": "gw/status", "payload": "offline", "qos": 1, "retain": true}}));
        let will = c.unwrap().will.unwrap();
        assert_eq!((will.topic.as_str(), will.qos, will.retain), ("gw/status", QoS::AtLeastOnce, true));
        assert!(checked(json!({"will": {"topic": "a/#"}})).unwrap_err().contains("will.topic"));
    }
}
