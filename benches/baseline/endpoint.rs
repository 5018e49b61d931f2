//! The URIs the benchmark tools take, the same forms as `fbp relay`:
//! `mqtt://HOST:PORT/TOPIC?qos=Q` and `nats://HOST:PORT/SUBJECT`; and the
//! clients they connect, set up alike for every tool (TCP_NODELAY on, as a
//! latency-minded engineer would; `BENCH_MQTT_NODELAY=0` turns it off, to
//! measure what Nagle's algorithm costs).
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

/// Which broker.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Mqtt,
    Nats,
}

/// A parsed URI.
pub struct Endpoint {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub topic: String,
    qos: u8,
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let url = url::Url::parse(text).map_err(|e| format!("`{text}`: {e}"))?;
        let scheme = match url.scheme() {
            "mqtt" => Scheme::Mqtt,
            "nats" => Scheme::Nats,
            other => return Err(format!("`{text}`: scheme `{other}` is neither mqtt nor nats")),
        };
        let qos = match url.query_pairs().find(|(k, _)| k == "qos") {
            Some((_, v)) => v.parse().map_err(|_| format!("`{text}`: qos must be 0, 1 or 2"))?,
            None => 0,
        };
        let path = url.path().trim_start_matches('/');
        let topic = percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned();
        Ok(Endpoint {
            scheme,
            host: url.host_str().unwrap_or("127.0.0.1").to_string(),
            port: url.port().unwrap_or(if scheme == Scheme::Mqtt { 1883 } else { 4222 }),
            topic,
            qos,
        })
    }

    pub fn qos(&self) -> rumqttc::QoS {
        match self.qos {
            0 => rumqttc::QoS::AtMostOnce,
            1 => rumqttc::QoS::AtLeastOnce,
            _ => rumqttc::QoS::ExactlyOnce,
        }
    }
}

/// An MQTT client with a unique id, clean session, 30 s keep-alive;
/// `manual_acks` when the caller acknowledges what it received itself.
pub fn mqtt_client(
    ep: &Endpoint,
    role: &str,
    cap: usize,
    manual_acks: bool,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let id = format!("{role}-{}-{}", std::process::id(), fastrand_id());
    let mut options = rumqttc::MqttOptions::new(id, ep.host.clone(), ep.port);
    options.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 20, 1 << 20).set_manual_acks(manual_acks);
    let (client, mut events) = rumqttc::AsyncClient::new(options, cap);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(std::env::var("BENCH_MQTT_NODELAY").map_or(true, |v| v != "0"));
    events.set_network_options(network);
    (client, events)
}

fn fastrand_id() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}

/// A core NATS client.
pub async fn nats_client(ep: &Endpoint) -> Result<async_nats::Client, String> {
    nats_client_holding(ep, async_nats::ConnectOptions::new()).await
}

/// A core NATS client with these options (say, a subscription capacity).
pub async fn nats_client_holding(
    ep: &Endpoint,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, String> {
    options.connect(format!("{}:{}", ep.host, ep.port)).await.map_err(|e| e.to_string())
}
