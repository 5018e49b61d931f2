//! `mqtt-publish`: messages to an MQTT broker, acknowledged upstream once the broker has them.

use std::collections::BTreeMap;

use bytes::Bytes;
use fbp_runtime::TaskFuture;
use fbp_runtime::link::Link;
use fbp_runtime::queue::InPort;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::{self, Value};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task,
};
use rumqttc::QoS;
use serde::Deserialize;

use super::acks::Window;
use super::config::{COMMON_KEYS, Common, Connection, Format, check};
use super::session::{Event, Session};
use super::template::Template;

static KEYS: [KeySpec; 21] = super::keys(
    &COMMON_KEYS,
    &[
        KeySpec::required(
            "topic",
            KeyType::String,
            "The topic to publish to, a template: `{{ EXPR }}` is replaced by the jq expression's value on \
             the message, e.g. `out/{{ .sensor }}` (a payload field) or `site/{{ $meta.topic }}` (the \
             topic the message came from). A message whose template gives no string or number goes to `err`.",
        ),
        KeySpec::new("retain", KeyType::Bool, "false", "Ask the broker to retain each message as its topic's last."),
    ],
);

/// The `mqtt-publish` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "mqtt-publish",
    summary: "Publish messages to an MQTT broker (3.1.1; topic templates, QoS 0/1/2, TLS, last will).",
    doc: "Publishes each message to the topic its `topic` template gives. Up to `inflight` messages \
          are published ahead of their confirmations, and a message is acknowledged upstream (dropped) \
          only once the broker has confirmed it: PUBACK for QoS 1, PUBCOMP for QoS 2, written to the connection for \
          QoS 0. While the broker is down or lost the component takes no input (back-pressure) and \
          retries with `reconnect` backoff, logged once per outage; what was not confirmed is sent \
          again after the reconnection (duplicates are possible, losses are not). A message it cannot \
          publish (a topic template without a value, a payload not in `format`, a payload over \
          `max_payload_size`) goes to `err`.",
    kind: Kind::Sink,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to publish" }],
    outputs: &[],
    config: &KEYS,
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.forward]\ntype = \"mqtt-publish\"\n\
              config = { url = \"mqtt://127.0.0.1:1883\", topic = \"site/{{ $meta.topic }}\", qos = 1 }\n",
    build,
    ports: None,
    probe: Some(super::probe::PROBE),
};

#[derive(Deserialize)]
struct Config {
    #[serde(flatten)]
    common: Common,
    topic: String,
    retain: bool,
}

struct Publish {
    connection: Connection,
    topic: Template,
    retain: bool,
    format: Format,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let connection = check(&config.common, &ctx.name, |p| ctx.path(p))?;
    let topic = Template::parse(&config.topic)?;
    Ok(Instance::task(Publish { connection, topic, retain: config.retain, format: config.common.format }))
}

/// The bytes to publish for `payload` in `format`.
fn encode(format: Format, payload: &Value) -> Result<Bytes, String> {
    match (format, payload) {
        (Format::Json, v) => Ok(Bytes::from(value::to_json_string(v))),
        (Format::Text, Value::TStr(b)) => Ok((**b).clone()),
        (Format::Text, v) => Err(format!("`format = \"text\"` needs a string payload, found {}", value::type_name(v))),
        (Format::Bytes, v) => crate::codec::raw_bytes(v)
            .cloned()
            .map_err(|_| format!("`format = \"bytes\"` needs bytes or a string, found {}", value::type_name(v))),
    }
}

impl Task for Publish {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let options = self.connection.options().map_err(Failure)?;
            let link = Link::new(ctx.name.clone(), self.connection.target(), self.connection.backoff);
            let room = self.room();
            let session = Session::start(ctx.name.clone(), options, link, 4 * room + 64, 8 * room + 64, vec![]);
            let input = ctx.input("in");
            Running { publish: *self, session, window: Window::default(), pending: BTreeMap::new(), next: 0 }
                .run(&ctx, input)
                .await
        })
    }
}

impl Publish {
    /// Messages published and not yet confirmed, at most.
    fn room(&self) -> usize {
        match self.connection.qos {
            QoS::AtMostOnce => 256,
            _ => self.connection.inflight as usize,
        }
    }

    /// The topic and payload of `msg`, or why it cannot be published.
    fn render(&self, msg: &Message) -> Result<(String, Bytes), String> {
        let topic = self.topic.render(msg)?;
        let payload = encode(self.format, &msg.payload)?;
        if payload.len() > self.connection.max_payload {
            return Err(format!(
                "payload of {} bytes is over `max_payload_size` ({} bytes)",
                payload.len(),
                self.connection.max_payload
            ));
        }
        Ok((topic, payload))
    }
}

/// A message published and not yet confirmed: dropping it acknowledges it upstream.
struct Pending {
    msg: Message,
    topic: String,
    payload: Bytes,
}

struct Running {
    publish: Publish,
    session: Session,
    window: Window,
    pending: BTreeMap<u64, Pending>,
    next: u64,
}

impl Running {
    /// Takes input while fewer than `room` messages are unconfirmed, and
    /// drops each message once the broker confirmed it.
    async fn run(mut self, ctx: &Context, mut input: InPort) -> Result<(), Failure> {
        let room = self.publish.room();
        let mut taken = Vec::with_capacity(room);
        let mut open = true;
        let mut stopping = false;
        // While stopping, how often to look whether the broker is still there.
        let mut look = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            // What a cancelled `recv_many` had already taken is in `taken`.
            for msg in std::mem::take(&mut taken) {
                self.take(ctx, msg).await?;
            }
            if !open && self.pending.is_empty() {
                break;
            }
            if stopping && !self.session.connected() {
                // Shutting down with the broker away: no waiting for it.
                self.give_up(ctx, &mut input).await;
                return Ok(());
            }
            let free = room.saturating_sub(self.pending.len());
            tokio::select! {
                biased;
                event = self.session.events.recv() => match event {
                    Some(Event::Refused(why)) => return Err(ctx.permanent(why)),
                    Some(event) => self.event(event).await?,
                    None => return Err(Failure("the MQTT connection task ended".into())),
                },
                more = input.recv_many(&mut taken, free), if open && free > 0 => open = more,
                () = ctx.shutdown().cancelled(), if !stopping => stopping = true,
                _ = look.tick(), if stopping => {}
            }
        }
        self.session.close().await;
        Ok(())
    }

    /// At shutdown with the broker away: what is unconfirmed and what is
    /// still queued is rejected and counted in `dropped`.
    async fn give_up(&mut self, ctx: &Context, input: &mut InPort) {
        let held: Vec<Message> = std::mem::take(&mut self.pending).into_values().map(|p| p.msg).collect();
        tracing::warn!(
            component = %ctx.name, held = held.len(),
            "Shutting down while the broker is away: what it has not confirmed is rejected, not acknowledged."
        );
        crate::sink_retry::not_written(&held, ctx);
        crate::sink_retry::reject_rest(input, &mut Vec::new(), ctx).await;
    }

    /// Publishes `msg`, or sends it to `err` when it cannot be published.
    async fn take(&mut self, ctx: &Context, msg: Message) -> Result<(), Failure> {
        match self.publish.render(&msg) {
            Ok((topic, payload)) => {
                let id = self.next;
                self.next += 1;
                self.pending.insert(id, Pending { msg, topic, payload });
                self.request(id).await
            }
            Err(e) => ctx.reject(&msg, &e).await,
        }
    }

    async fn request(&mut self, id: u64) -> Result<(), Failure> {
        let Some(p) = self.pending.get(&id) else { return Ok(()) };
        let (qos, retain) = (self.publish.connection.qos, self.publish.retain);
        self.session
            .client
            .publish_bytes(p.topic.clone(), qos, retain, p.payload.clone())
            .await
            .map_err(|e| Failure(format!("MQTT client: {e}")))?;
        self.window.requested(id);
        Ok(())
    }

    async fn event(&mut self, event: Event) -> Result<(), Failure> {
        let done = match event {
            Event::Written(pkid) => self.window.written(pkid),
            Event::Confirmed(pkid) => self.window.confirmed(pkid),
            Event::Connected { session_present: false, dropped_unwritten, .. } => {
                for id in self.window.new_session(dropped_unwritten) {
                    self.request(id).await?;
                }
                None
            }
            _ => None,
        };
        // Confirmed: dropping the message acknowledges it.
        if let Some(id) = done {
            self.pending.remove(&id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_encode_per_format() {
        let obj = value::parse_json(br#"{"a":1}"#).unwrap();
        assert_eq!(&encode(Format::Json, &obj).unwrap()[..], br#"{"a":1}"#);
        assert_eq!(&encode(Format::Text, &value::string("hé")).unwrap()[..], "hé".as_bytes());
        assert!(encode(Format::Text, &obj).unwrap_err().contains("needs a string payload, found object"));
        assert_eq!(&encode(Format::Bytes, &Value::byte_str(vec![0u8, 255])).unwrap()[..], &[0, 255]);
        assert_eq!(&encode(Format::Bytes, &value::string("x")).unwrap()[..], b"x");
        assert!(encode(Format::Bytes, &value::int(1)).unwrap_err().contains("bytes or a string"));
    }

    #[tokio::test]
    async fn bad_topic_templates_are_refused_when_built() {
        let mut h = fbp_runtime::testing::Harness::new(&SPEC, serde_json::json!({"topic": "a/{{ .x"}));
        let err = h.run().await.result.unwrap().unwrap_err().0;
        assert!(err.contains("`topic`") && err.contains("not closed"), "{err}");
    }
}
