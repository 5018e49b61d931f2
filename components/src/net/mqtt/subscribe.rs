//! `mqtt-subscribe`: messages from an MQTT broker, acknowledged once delivered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fbp_runtime::link::Link;
use fbp_runtime::queue::OutPort;
use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::value::{self, Value};
use fbp_runtime::{
    Ack, Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, Meta, Outcome,
    PortSpec, Task, TaskFuture,
};
use rumqttc::{OversizedPublish, QoS, SubscribeFilter};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::acks::{ArrivalOrder, ToAck};
use super::config::{COMMON_KEYS, Common, Connection, Format, check};
use super::session::{Event, Session};
use super::template::check_filter;
use crate::net::budget::{self, STALL, Stall};

static KEYS: [KeySpec; 20] = super::keys(
    &COMMON_KEYS,
    &[KeySpec::required(
        "topics",
        KeyType::StringList,
        "Topic filters to subscribe to, with MQTT wildcards: `+` for one level, `#` for the rest \
         (`[\"sensors/#\", \"site/+/status\"]`).",
    )],
);

/// The `mqtt-subscribe` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "mqtt-subscribe",
    summary: "Receive messages from an MQTT broker (3.1.1; wildcards, QoS 0/1/2, persistent sessions, TLS).",
    doc: "Subscribes to `topics` and sends each message it receives, its topic in the metadata \
          (`$meta.topic`). With QoS 1/2 a message is acknowledged to the broker (PUBACK / PUBREC) only \
          once every sink it reached has committed it, or it was dead-lettered, in the order messages \
          arrived, and only on the connection it came on; a message a sink rejected is left \
          unacknowledged, for the broker to deliver again after a reconnection. With \
          `clean_session = false` and a fixed `client_id` the broker keeps the subscription and the \
          unacknowledged messages while fbp is stopped, crashed or disconnected: nothing is lost, \
          duplicates are possible (QoS 1 and 2). A payload not in `format` goes to `err` with its \
          topic, as text or bytes; so does a payload over `max_payload_size` (its topic, size and the \
          limit; the payload is read past, not kept). Both are acknowledged once dead-lettered and \
          the subscription goes on. While the out-port is full the \
          component stops reading (keeping the connection alive with pings), so the broker holds the \
          backlog. A broker that is down or lost is retried with `reconnect` backoff, logged once per \
          outage; the flow never fails because of it. On shutdown it waits up to 5 s for the messages \
          in flight to be acknowledged, then disconnects. When its unacknowledged messages stay so \
          for 3 s with nothing coming in or going out (the broker's in-flight limit reached), it \
          warns once, naming the component downstream that holds them and what to change, and \
          again only after it recovered.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec {
        name: "out",
        ty: "json",
        doc: "one message per MQTT message; text or bytes with `format = \"text\"` / `\"bytes\"`",
    }],
    config: &KEYS,
    delivery: Delivery::Depends(
        "`qos = 0`: at-most-once (nothing is acknowledged; a crash or a reconnection loses what is in \
         flight). `qos = 1` or `2` with `clean_session = true` (the default): at-least-once while \
         connected; what is published while fbp is disconnected or stopped is lost, and so is what \
         was in flight when the connection dropped. `qos = 1` or `2` with `clean_session = false` \
         and a fixed `client_id`: at-least-once across reconnections, broker restarts (with broker \
         persistence) and fbp restarts, `kill -9` included; duplicates are possible",
    ),
    acks: Acks::Budget {
        limit: "with QoS 1/2 the broker sends only so many messages not yet acknowledged (mosquitto: \
                `max_inflight_messages`, 20 by default), queues the rest (`max_queued_messages`, 1 000) \
                and then drops what comes: a component downstream that holds acknowledgements for a time \
                loses readings at the broker",
        bounded: |config| config.get("qos").and_then(serde_json::Value::as_u64).is_some_and(|q| q > 0),
    },
    stateless: false,
    example: "[components.sensors]\ntype = \"mqtt-subscribe\"\n\
              config = { url = \"mqtt://127.0.0.1:1883\", topics = [\"sensors/#\"], qos = 1, \
              client_id = \"gateway-1\", clean_session = false }\n",
    build,
    ports: Some(ports),
    probe: Some(super::probe::PROBE),
};

/// Messages from the connection task waiting for the component, at most.
const EVENTS: usize = 64;
/// Room in rumqttc's request channel (acknowledgements).
const REQUESTS: usize = 1024;
/// Messages taken from the connection at a time, before they are sent on.
const BATCH: usize = 64;
/// The broker's limit on what it sends unacknowledged, as the warning names it.
const MQTT_LIMIT: &str = "the broker's in-flight limit (mosquitto: `max_inflight_messages`, 20 by default)";
/// How long a shutdown waits for messages in flight to be acknowledged.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Config {
    #[serde(flatten)]
    common: Common,
    topics: Vec<String>,
}

struct Subscribe {
    connection: Connection,
    topics: Vec<String>,
    format: Format,
}

fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    let ty = match config.get("format").and_then(serde_json::Value::as_str) {
        Some("text") => "text",
        Some("bytes") => "bytes",
        _ => "json",
    };
    (Vec::new(), vec![Port { name: "out".into(), ty: ty.into() }])
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let connection = check(&config.common, &ctx.name, |p| ctx.path(p))?;
    if config.topics.is_empty() {
        return Err("`topics` is empty: name at least one topic filter, e.g. `[\"sensors/#\"]`".into());
    }
    for t in &config.topics {
        check_filter(t).map_err(|e| format!("`topics`: {e}"))?;
    }
    Ok(Instance::task(Subscribe { connection, topics: config.topics, format: config.common.format }))
}

/// The payload in the configured format, or the raw payload (text where it
/// is UTF-8, else bytes) and why it is not.
fn decode(format: Format, raw: &bytes::Bytes) -> Result<Value, (Value, String)> {
    let as_is = || crate::codec::utf8_text(raw).unwrap_or_else(|_| Value::byte_str(raw.clone()));
    match format {
        Format::Bytes => Ok(Value::byte_str(raw.clone())),
        Format::Text => crate::codec::utf8_text(raw).map_err(|e| (Value::byte_str(raw.clone()), e)),
        Format::Json => value::parse_json(raw).map_err(|e| (as_is(), format!("payload is not JSON: {e}"))),
    }
}

impl Task for Subscribe {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move { Running::start(*self, ctx)?.run().await })
    }
}

/// A running subscription.
struct Running {
    format: Format,
    /// `max_payload_size`: a bigger payload goes to `err`.
    max_payload: usize,
    ctx: Context,
    out: OutPort,
    session: Session,
    order: ArrivalOrder,
    /// Where each message's outcome is told (cloned into its `Ack`) and read.
    outcome_tx: mpsc::UnboundedSender<(u64, Outcome)>,
    outcome_rx: mpsc::UnboundedReceiver<(u64, Outcome)>,
    /// Acknowledgements released but not yet queued in rumqttc.
    unsent: VecDeque<ToAck>,
    /// Decoded messages waiting to be sent on.
    batch: VecDeque<Message>,
    /// The last topic seen and its `Arc<str>`, shared by the messages of that topic.
    topic: Option<(String, Arc<str>)>,
    /// Whether the unacknowledged messages stay stuck at the broker's limit.
    stall: Stall,
}

impl Running {
    fn start(s: Subscribe, ctx: Context) -> Result<Running, Failure> {
        let mut options = s.connection.options().map_err(Failure)?;
        options.set_manual_acks(s.connection.qos != QoS::AtMostOnce);
        let link = Link::new(ctx.name.clone(), s.connection.target(), s.connection.backoff);
        let filters = s.topics.iter().map(|t| SubscribeFilter::new(t.clone(), s.connection.qos)).collect();
        let (outcome_tx, outcome_rx) = mpsc::unbounded_channel();
        let session = Session::start(ctx.name.clone(), options, link, REQUESTS, EVENTS, filters);
        Ok(Running {
            format: s.format,
            max_payload: s.connection.max_payload,
            out: ctx.output("out"),
            ctx,
            session,
            order: ArrivalOrder::default(),
            outcome_tx,
            outcome_rx,
            unsent: VecDeque::new(),
            batch: VecDeque::with_capacity(BATCH),
            topic: None,
            stall: Stall::new(STALL, tokio::time::Instant::now()),
        })
    }

    async fn run(mut self) -> Result<(), Failure> {
        let shutdown = self.ctx.shutdown().clone();
        let mut look = tokio::time::interval(Duration::from_secs(1));
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.send_acks();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((id, outcome)) = self.outcome_rx.recv() => self.settle(id, outcome),
                _ = look.tick() => self.look(),
                event = self.session.events.recv() => match event {
                    Some(event) => {
                        if !self.ingest(event).await? {
                            break;
                        }
                    }
                    None => return Err(Failure("the MQTT connection task ended".into())),
                },
                _ = tokio::time::sleep(Duration::from_millis(10)), if !self.unsent.is_empty() => {}
            }
        }
        self.drain().await;
        self.session.close().await;
        Ok(())
    }

    fn settle(&mut self, id: u64, outcome: Outcome) {
        self.order.settle(id, outcome);
        let before = self.order.len();
        self.order.release(&mut self.unsent);
        if self.order.len() < before {
            self.moved();
        }
    }

    /// Something moved: a message arrived or was acknowledged.
    fn moved(&mut self) {
        if let Some(change) = self.stall.moved(tokio::time::Instant::now()) {
            budget::log(&self.ctx, change, self.order.len(), MQTT_LIMIT);
        }
    }

    /// Warns when the messages left unacknowledged stay stuck.
    fn look(&mut self) {
        if let Some(change) = self.stall.look(tokio::time::Instant::now(), self.order.len()) {
            budget::log(&self.ctx, change, self.order.len(), MQTT_LIMIT);
        }
    }

    /// Queues released acknowledgements in rumqttc, as many as fit (those
    /// of a connection that is gone are dropped).
    fn send_acks(&mut self) {
        if !self.unsent.is_empty() {
            self.session.ack(&mut self.unsent);
        }
    }

    /// Takes `first` and the events already waiting (up to [`BATCH`]
    /// messages) and sends the messages on in one go; `false` when the flow
    /// shut down meanwhile. (One clock reading and one wake-up downstream
    /// per batch, not per message.)
    async fn ingest(&mut self, first: Event) -> Result<bool, Failure> {
        let read_at = SystemTime::now();
        let mut taken = 0;
        let mut next = Some(first);
        while let Some(event) = next {
            let refused = match event {
                Event::Message { generation, publish } => {
                    taken += 1;
                    self.take(generation, publish, read_at)
                }
                Event::Oversized { generation, head } => {
                    taken += 1;
                    Some(self.oversized(generation, head, read_at))
                }
                Event::Refused(why) => return Err(self.ctx.permanent(why)),
                Event::Connected { .. } | Event::Written(_) | Event::Confirmed(_) => None,
            };
            if let Some((msg, error)) = refused {
                self.ctx.reject(&msg, &error).await?;
            }
            next = if taken < BATCH { self.session.events.try_recv().ok() } else { None };
        }
        self.moved();
        if self.batch.is_empty() {
            return Ok(true);
        }
        tokio::select! {
            sent = self.out.send_batch(&mut self.batch) => sent.map(|()| true).map_err(Failure::from),
            _ = self.ctx.shutdown().cancelled() => {
                // Not sent: not delivered (left to the broker to deliver again).
                for msg in self.batch.drain(..) {
                    if let Some(ack) = &msg.ack {
                        ack.reject();
                    }
                }
                Ok(false)
            }
        }
    }

    /// Decodes a received message into the batch; one that does not decode,
    /// or is over `max_payload_size`, comes back with the reason, for `err`.
    fn take(&mut self, generation: u64, publish: rumqttc::Publish, read_at: SystemTime) -> Option<(Message, String)> {
        let size = publish.payload.len();
        if size > self.max_payload {
            let head = OversizedPublish {
                dup: publish.dup,
                qos: publish.qos,
                retain: publish.retain,
                topic: publish.topic,
                pkid: publish.pkid,
                payload_size: size,
            };
            return Some(self.oversized(generation, head, read_at));
        }
        let (meta, ack) = self.arrived(generation, publish.topic, publish.qos, publish.pkid, read_at);
        match decode(self.format, &publish.payload) {
            Ok(payload) => {
                self.batch.push_back(Message { payload, meta, ack });
                None
            }
            Err((raw, error)) => Some((Message { payload: raw, meta, ack }, error)),
        }
    }

    /// A message over `max_payload_size`, for `err`: no payload (it was not
    /// kept), its topic in the metadata, the size and the limit in the error.
    fn oversized(&mut self, generation: u64, head: OversizedPublish, read_at: SystemTime) -> (Message, String) {
        let error = format!(
            "payload of {} bytes on topic `{}` is over `max_payload_size` ({} bytes)",
            head.payload_size, head.topic, self.max_payload
        );
        let (meta, ack) = self.arrived(generation, head.topic, head.qos, head.pkid, read_at);
        (Message { payload: Value::Null, meta, ack }, error)
    }

    /// The metadata of a message that arrived, and its acknowledgement (QoS 1/2).
    fn arrived(
        &mut self,
        generation: u64,
        topic: String,
        qos: QoS,
        pkid: u16,
        read_at: SystemTime,
    ) -> (Arc<Meta>, Option<Ack>) {
        let mut meta = self.ctx.meta_at(read_at);
        meta.topic = Some(self.topic(topic));
        let ack = (qos != QoS::AtMostOnce).then(|| {
            let id = self.order.arrive(generation, qos, pkid);
            let tx = self.outcome_tx.clone();
            self.ctx.ack(move |outcome| {
                let _ = tx.send((id, outcome));
            })
        });
        (Arc::new(meta), ack)
    }

    fn topic(&mut self, topic: String) -> Arc<str> {
        match &self.topic {
            Some((last, shared)) if *last == topic => shared.clone(),
            _ => {
                let shared: Arc<str> = topic.as_str().into();
                self.topic = Some((topic, shared.clone()));
                shared
            }
        }
    }

    /// After a shutdown: acknowledges what the flow still delivers, for a while.
    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + DRAIN;
        while self.order.len() > 0 {
            self.send_acks();
            tokio::select! {
                Some((id, outcome)) = self.outcome_rx.recv() => self.settle(id, outcome),
                // Messages arriving now are not taken: the broker keeps them.
                Some(_) = self.session.events.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(10)), if !self.unsent.is_empty() => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.send_acks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use fbp_runtime::testing::Harness;
    use serde_json::json;

    #[test]
    fn formats_decode_or_say_why_not() {
        let ok = decode(Format::Json, &Bytes::from_static(br#"{"a":1}"#)).unwrap();
        assert_eq!(value::to_json_string(&ok), r#"{"a":1}"#);
        let (raw, e) = decode(Format::Json, &Bytes::from_static(b"{bad")).unwrap_err();
        assert!(e.contains("not JSON") && matches!(raw, Value::TStr(_)), "{e}");
        let (raw, _) = decode(Format::Json, &Bytes::from_static(&[0xff, 0xfe])).unwrap_err();
        assert!(matches!(raw, Value::BStr(_)));
        let (raw, e) = decode(Format::Text, &Bytes::from_static(&[b'a', 0xff])).unwrap_err();
        assert!(e.contains("not UTF-8") && matches!(raw, Value::BStr(_)), "{e}");
        assert!(decode(Format::Json, &Bytes::new()).is_err(), "an empty payload is not JSON");
        assert!(matches!(decode(Format::Text, &Bytes::new()).unwrap(), Value::TStr(_)));
        assert!(matches!(decode(Format::Bytes, &Bytes::from_static(&[0xff])).unwrap(), Value::BStr(_)));
    }

    #[tokio::test]
    async fn bad_filters_are_refused_when_built() {
        let cases = [(json!({"topics": []}), "empty"), (json!({"topics": ["a/#/b"]}), "`#` must be a whole level")];
        for (config, want) in cases {
            let mut h = Harness::new(&SPEC, config);
            let out = h.run().await;
            let err = out.result.unwrap().unwrap_err().0;
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn the_out_port_follows_the_format() {
        assert_eq!(ports(&json!({"format": "text"})).1[0].ty, "text");
        assert_eq!(ports(&json!({})).1[0].ty, "json");
    }
}
