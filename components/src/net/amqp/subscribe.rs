//! `amqp-subscribe`: consume a RabbitMQ queue with manual acknowledgements.
//!
//! Each delivery becomes a message carrying an [`Ack`](fbp_runtime::Ack);
//! its outcome comes back on a channel and the task acknowledges the delivery
//! (`basic.ack`) when it was `Delivered`, or returns it to the queue
//! (`basic.nack`, requeue) when it was `Rejected`. `prefetch` bounds the
//! deliveries not yet acknowledged, so it bounds memory too. A delivery from
//! a channel that has since dropped cannot be acknowledged any more: the
//! broker has requeued it already and delivers it again (at-least-once).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fbp_runtime::link::{Link, RECONNECT_KEY};
use fbp_runtime::queue::OutPort;
use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::units::positive_size;
use fbp_runtime::value::{self, Value};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, Outcome, PortSpec, Task,
    TaskFuture,
};
use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, Channel, Connection, Consumer};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::net::budget::{self, STALL, Stall};

use super::{
    Broker, DURABLE_KEY, EXCHANGE_TYPE_KEY, ExchangeType, URL_KEY, declare_exchange, headers_to_meta, is_refusal,
};

/// The `amqp-subscribe` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "amqp-subscribe",
    summary: "Consume messages from a RabbitMQ (AMQP 0.9.1) queue, acknowledging each once delivered.",
    doc: "Consumes a queue: the durable named `queue`, or, with `exchange`, a queue bound to that \
          exchange with `routing_key` (a server-named exclusive queue that goes away with the \
          connection, unless `queue` names a durable one that keeps messages while fbp is down). \
          The exchange is declared with `exchange_type` if it does not exist. Each delivery is \
          acknowledged to the broker only once every sink it reached has committed it (or it was \
          dead-lettered); a delivery a sink rejected is returned to the queue (`basic.nack`, \
          requeue). At most `prefetch` deliveries are unacknowledged at a time; when they stay so \
          for 3 s with nothing coming in or going out, it warns once, naming the component \
          downstream that holds them, and again only after it recovered. The routing key \
          becomes the metadata `topic`, AMQP headers the metadata `headers`. A body that does not \
          decode as `format`, or one over `max_payload_size`, goes to `err` (and is then \
          acknowledged); the rest flows. When the connection drops, \
          the component reconnects with backoff and declares its queue and bindings again; what \
          was not acknowledged is delivered again by the broker. On shutdown it stops \
          consuming and acknowledges what drains to the sinks (waiting up to 5 s for it); the \
          rest goes back to the queue.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec {
        name: "out",
        ty: "json",
        doc: "one message per delivery: JSON; text or bytes with `format = \"text\"` / `\"bytes\"`",
    }],
    config: &[
        URL_KEY,
        KeySpec::optional(
            "queue",
            KeyType::String,
            "A durable queue to consume (declared if missing). With `exchange`, it is bound to it; \
             without, it must be set.",
        ),
        KeySpec::optional(
            "exchange",
            KeyType::String,
            "An exchange to bind the queue to (declared if missing, unless named `amq.*`).",
        ),
        KeySpec::new(
            "routing_key",
            KeyType::String,
            "\"#\"",
            "With `exchange`: the binding key (`*` one word, `#` any words for a topic exchange; \
             ignored by a fanout exchange).",
        ),
        EXCHANGE_TYPE_KEY,
        DURABLE_KEY,
        KeySpec::new(
            "prefetch",
            KeyType::Integer,
            "256",
            "Deliveries the broker may send before earlier ones are acknowledged (`basic.qos`); \
             bounds what is in flight and in memory. 1 to 65535.",
        ),
        KeySpec::new(
            "format",
            KeyType::Enum(&["json", "text", "bytes", "auto"]),
            "\"json\"",
            "How to decode a body: `json` (not JSON goes to `err`), `text` (not UTF-8 goes to \
             `err`), `bytes` as they are, `auto` JSON where it parses, else text, else bytes.",
        ),
        KeySpec::new(
            "max_payload_size",
            KeyType::String,
            "\"8MiB\"",
            "The largest body taken in, as a size. A bigger delivery is a message error: it goes to `err` \
             as `{queue, routing_key, size, limit}` (its body left out) and is acknowledged once \
             dead-lettered. What the client reads is bounded by the broker's `max_message_size`, not by \
             this: lapin gathers a whole body, frame by frame, before handing it over.",
        ),
        RECONNECT_KEY,
    ],
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Budget {
        limit: "the broker sends at most `prefetch` deliveries not yet acknowledged, then waits: a component \
                downstream that holds acknowledgements for a time stalls the queue",
        bounded: |_| true,
    },
    stateless: false,
    example: "[components.orders]\ntype = \"amqp-subscribe\"\nconfig = { url = \"amqp://guest:guest@127.0.0.1:5672/%2f\", exchange = \"shop\", routing_key = \"orders.#\", queue = \"fbp-orders\", prefetch = 100 }\n",
    build,
    ports: Some(ports),
    probe: Some(super::probe::PROBE),
};

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    Json,
    Text,
    Bytes,
    Auto,
}

#[derive(Deserialize)]
struct Config {
    url: String,
    queue: Option<String>,
    exchange: Option<String>,
    routing_key: String,
    exchange_type: ExchangeType,
    durable: bool,
    prefetch: i64,
    format: Format,
    max_payload_size: String,
    reconnect: String,
}

/// A built `amqp-subscribe`.
struct Subscribe {
    broker: Broker,
    queue: Option<String>,
    exchange: Option<String>,
    routing_key: String,
    exchange_type: ExchangeType,
    durable: bool,
    prefetch: u16,
    format: Format,
    /// The largest body taken in, in bytes.
    max_payload: usize,
    /// Messages sent on whose outcome is not known yet.
    in_flight: Arc<AtomicUsize>,
}

/// What a delivery's outcome asks the task to do.
struct Settle {
    acker: Acker,
    outcome: Outcome,
}

/// An open consumer and what keeps it alive.
struct Session {
    conn: Connection,
    channel: Channel,
    consumer: Consumer,
    /// The queue consumed, for errors.
    queue: String,
}

/// Why a session ended.
enum End {
    Shutdown,
    Lost(lapin::Error),
    OutputClosed,
}

fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    let ty = match config.get("format").and_then(serde_json::Value::as_str) {
        Some("text") => "text",
        Some("bytes") => "bytes",
        Some("auto") => "any",
        _ => "json",
    };
    (Vec::new(), vec![Port { name: "out".into(), ty: ty.into() }])
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let c: Config = ctx.parse()?;
    let broker = Broker::new(&c.url, &c.reconnect)?;
    let queue = c.queue.filter(|q| !q.is_empty());
    let exchange = c.exchange.filter(|e| !e.is_empty());
    if queue.is_none() && exchange.is_none() {
        return Err("set `queue` (a queue to consume), or `exchange` and `routing_key` (to bind one)".into());
    }
    let prefetch = u16::try_from(c.prefetch)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`prefetch` must be 1 to 65535, found {}", c.prefetch))?;
    Ok(Instance::task(Subscribe {
        broker,
        queue,
        exchange,
        routing_key: c.routing_key,
        exchange_type: c.exchange_type,
        durable: c.durable,
        prefetch,
        format: c.format,
        max_payload: positive_size("max_payload_size", &c.max_payload_size)?,
        in_flight: Arc::default(),
    }))
}

impl Task for Subscribe {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move { self.run_loop(ctx).await })
    }
}

impl Subscribe {
    /// Connects, consumes until the connection drops, and again, until shutdown.
    async fn run_loop(&self, ctx: Context) -> Result<(), Failure> {
        let out = ctx.output("out");
        let mut link = Link::new(ctx.name.clone(), self.broker.target.clone(), self.broker.backoff);
        let (settle_tx, mut settle_rx) = mpsc::unbounded_channel::<Settle>();
        let mut sessions = 0u64;
        let mut stall = Stall::new(STALL, tokio::time::Instant::now());
        loop {
            let opened = tokio::select! {
                r = self.open(&ctx.name, sessions) => r,
                _ = ctx.shutdown().cancelled() => return Ok(()),
            };
            let error = match opened {
                Ok(mut session) => {
                    link.up();
                    sessions += 1;
                    match self.consume(&ctx, &out, &mut session, (&settle_tx, &mut settle_rx), &mut stall).await {
                        End::Shutdown | End::OutputClosed if self.in_flight.load(Ordering::Acquire) == 0 => {
                            // Everything is settled: close here, before this task ends, so
                            // the acknowledgements reach the broker before the process exits.
                            while let Ok(s) = settle_rx.try_recv() {
                                let _ = settle(&s).await;
                            }
                            finish(session, None).await;
                            return Ok(());
                        }
                        End::Shutdown | End::OutputClosed => {
                            // The messages still in the flow are acknowledged as they
                            // drain, after this task has ended (so its out-port closes).
                            drop(settle_tx);
                            tokio::spawn(finish(session, Some(settle_rx)));
                            return Ok(());
                        }
                        End::Lost(e) => e,
                    }
                }
                Err(e) if is_refusal(&e) => {
                    return Err(ctx.permanent(format!("{}: the broker refused: {e}", self.broker.target)));
                }
                Err(e) => e,
            };
            let delay = link.down(&error);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = ctx.shutdown().cancelled() => return Ok(()),
            }
        }
    }

    /// Connects, declares the topology and starts consuming.
    async fn open(&self, name: &str, n: u64) -> Result<Session, lapin::Error> {
        let (conn, channel) = self.broker.connect().await?;
        channel.basic_qos(self.prefetch, BasicQosOptions::default()).await?;
        let queue = self.declare(&channel).await?;
        let tag = format!("fbp-{name}-{}-{n}", std::process::id());
        let consumer = channel
            .basic_consume(queue.as_str().into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        Ok(Session { conn, channel, consumer, queue })
    }

    /// Declares the exchange, the queue and the binding; the queue's name.
    async fn declare(&self, channel: &Channel) -> Result<String, lapin::Error> {
        let options = match &self.queue {
            Some(_) => QueueDeclareOptions { durable: self.durable, ..QueueDeclareOptions::default() },
            None => QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() },
        };
        let name = self.queue.clone().unwrap_or_default();
        let queue = channel.queue_declare(name.into(), options, FieldTable::default()).await?;
        let queue = queue.name().as_str().to_string();
        if let Some(exchange) = &self.exchange {
            declare_exchange(channel, exchange, self.exchange_type, self.durable).await?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    self.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(queue)
    }

    /// Forwards deliveries and settles outcomes until the session ends.
    async fn consume(
        &self,
        ctx: &Context,
        out: &OutPort,
        session: &mut Session,
        (settle_tx, settle_rx): (&mpsc::UnboundedSender<Settle>, &mut mpsc::UnboundedReceiver<Settle>),
        stall: &mut Stall,
    ) -> End {
        let mut look = tokio::time::interval(std::time::Duration::from_secs(1));
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown().cancelled() => {
                    self.settle_in_flight(settle_rx).await;
                    return End::Shutdown;
                }
                _ = look.tick() => {
                    let held = self.in_flight.load(Ordering::Acquire);
                    watch(ctx, stall.look(tokio::time::Instant::now(), held), held);
                }
                Some(first) = settle_rx.recv() => {
                    watch(ctx, stall.moved(tokio::time::Instant::now()), self.in_flight.load(Ordering::Acquire));
                    // Settle everything already reported at once: the acks are pipelined.
                    let mut ready = vec![first];
                    while let Ok(s) = settle_rx.try_recv() {
                        ready.push(s);
                    }
                    let failed = join_all(ready.iter().map(settle)).await.into_iter().find_map(Result::err);
                    if let Some(e) = failed.filter(|_| !session.channel.status().connected()) {
                        return End::Lost(e);
                    }
                }
                d = session.consumer.next() => match d {
                    Some(Ok(delivery)) => {
                        watch(ctx, stall.moved(tokio::time::Instant::now()), self.in_flight.load(Ordering::Acquire));
                        let sent = match self.message(ctx, delivery, &session.queue, settle_tx) {
                            Ok(msg) => out.send(msg).await.map_err(Failure::from),
                            Err((msg, error)) => ctx.reject(&msg, &error).await,
                        };
                        if sent.is_err() {
                            return End::OutputClosed;
                        }
                    }
                    Some(Err(e)) => return End::Lost(e),
                    None => return End::Lost(lapin::Error::from(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the broker cancelled the consumer",
                    ))),
                },
            }
        }
    }

    /// At shutdown, before the out-port closes: settles the messages still in
    /// the flow as the sinks commit them, until none is left or `SETTLE_WAIT`
    /// passes (a component that holds messages until its input ends, like
    /// `window`, keeps some past it: [`finish`] takes those over).
    async fn settle_in_flight(&self, settle_rx: &mut mpsc::UnboundedReceiver<Settle>) {
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        loop {
            // Read before draining: a notification is sent before it is counted off.
            let done = self.in_flight.load(Ordering::Acquire) == 0;
            let mut ready = Vec::new();
            while let Ok(s) = settle_rx.try_recv() {
                ready.push(s);
            }
            join_all(ready.iter().map(settle)).await;
            if done {
                return;
            }
            match tokio::time::timeout_at(deadline, settle_rx.recv()).await {
                Ok(Some(s)) => drop(settle(&s).await),
                _ => return,
            }
        }
    }

    /// A delivery as a message with its acknowledgement; `Err` when the body
    /// does not decode (the message then carries the body as text or bytes),
    /// or is over `max_payload_size` (it then says what and where, without it).
    fn message(
        &self,
        ctx: &Context,
        delivery: AmqpDelivery,
        queue: &str,
        settle_tx: &mpsc::UnboundedSender<Settle>,
    ) -> Result<Message, (Message, String)> {
        let mut meta = ctx.meta();
        meta.topic = Some(delivery.routing_key.as_str().into());
        meta.headers = headers_to_meta(delivery.properties.headers().as_ref());
        let tx = settle_tx.clone();
        let acker = delivery.acker.clone();
        let in_flight = self.in_flight.clone();
        in_flight.fetch_add(1, Ordering::AcqRel);
        let ack = ctx.ack(move |outcome| {
            let _ = tx.send(Settle { acker: acker.clone(), outcome });
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        let (payload, error) = match delivery.data.len() {
            size if size > self.max_payload => oversized(queue, delivery.routing_key.as_str(), size, self.max_payload),
            _ => decode(self.format, delivery.data),
        };
        let msg = Message { payload, meta: Arc::new(meta), ack: Some(ack) };
        match error {
            None => Ok(msg),
            Some(e) => Err((msg, e)),
        }
    }
}

/// After shutdown: settles the messages still in the flow (`settle_rx`) as
/// the sinks commit them, until every one is (its `Ack` gone) or
/// `DRAIN_LIMIT` passes, then closes the connection. What is left
/// unacknowledged (the process may exit first) the broker delivers again to
/// the next consumer.
async fn finish(session: Session, settle_rx: Option<mpsc::UnboundedReceiver<Settle>>) {
    let _ = session.channel.basic_cancel(session.consumer.tag(), BasicCancelOptions::default()).await;
    if let Some(mut settle_rx) = settle_rx {
        let drain = async {
            while let Some(s) = settle_rx.recv().await {
                let _ = settle(&s).await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_LIMIT, drain).await;
    }
    // The close handshake sends what the channel still holds, acknowledgements included.
    let _ = session.conn.close(200, "fbp shutting down".into()).await;
}

/// Logs what the watch on the unacknowledged deliveries found, `held` of them.
fn watch(ctx: &Context, change: Option<budget::Change>, held: usize) {
    if let Some(change) = change {
        budget::log(ctx, change, held, "the channel's `prefetch` (`basic.qos`)");
    }
}

/// How long the task waits at shutdown for the outcomes of what is in flight.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long [`finish`] waits for the last outcomes.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Acknowledges a delivered message, or returns a rejected one to its queue.
/// A delivery of a channel that has dropped is left alone: the broker has
/// requeued it.
async fn settle(s: &Settle) -> Result<(), lapin::Error> {
    if !s.acker.usable() {
        return Ok(());
    }
    match s.outcome {
        Outcome::Delivered => s.acker.ack(BasicAckOptions::default()).await.map(drop),
        Outcome::Rejected => s.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await.map(drop),
    }
}

/// What `err` gets for a body of `size` bytes over `limit` from `queue`
/// (the body left out), and the error.
fn oversized(queue: &str, routing_key: &str, size: usize, limit: usize) -> (Value, Option<String>) {
    let n = |x: usize| value::int(i64::try_from(x).unwrap_or(i64::MAX));
    let about = value::object([
        ("queue", value::string(queue)),
        ("routing_key", value::string(routing_key)),
        ("size", n(size)),
        ("limit", n(limit)),
    ]);
    let error = format!(
        "body of {size} bytes from queue `{queue}` (routing key `{routing_key}`) is over `max_payload_size` ({limit} bytes)"
    );
    (about, Some(error))
}

/// The payload of a body, and the decoding error if it does not decode (the
/// payload is then the body as text, or bytes when it is not UTF-8).
fn decode(format: Format, body: Vec<u8>) -> (Value, Option<String>) {
    let raw = |body: Vec<u8>| match String::from_utf8(body) {
        Ok(text) => value::string(text),
        Err(e) => Value::byte_str(e.into_bytes()),
    };
    match format {
        Format::Bytes => (Value::byte_str(body), None),
        Format::Text => match String::from_utf8(body) {
            Ok(text) => (value::string(text), None),
            Err(e) => {
                let error = format!("the body is not UTF-8 text: {}", e.utf8_error());
                (Value::byte_str(e.into_bytes()), Some(error))
            }
        },
        Format::Json => match value::parse_json(&body) {
            Ok(v) => (v, None),
            Err(e) if body.is_empty() => (raw(body), Some(format!("the body is empty, not JSON ({e})"))),
            Err(e) => (raw(body), Some(format!("the body is not JSON: {e}"))),
        },
        Format::Auto => match value::parse_json(&body) {
            Ok(v) => (v, None),
            Err(_) => (raw(body), None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fbp_runtime::testing::Harness;
    use serde_json::json;

    #[test]
    fn bodies_decode_by_format_and_failures_say_why() {
        let (v, e) = decode(Format::Json, br#"{"a": 1}"#.to_vec());
        assert_eq!((value::to_json_string(&v), e), (r#"{"a":1}"#.to_string(), None));
        let (v, e) = decode(Format::Json, b"not json".to_vec());
        assert!(matches!(v, Value::TStr(_)) && e.unwrap().contains("not JSON"));
        assert!(decode(Format::Json, Vec::new()).1.unwrap().contains("empty"));
        let (v, e) = decode(Format::Text, b"a\xffb".to_vec());
        assert!(matches!(v, Value::BStr(_)) && e.unwrap().contains("not UTF-8"));
        assert!(matches!(decode(Format::Text, Vec::new()), (Value::TStr(_), None)));
        assert!(matches!(decode(Format::Bytes, vec![0, 255]), (Value::BStr(_), None)));
        assert!(matches!(decode(Format::Auto, b"x\xff".to_vec()), (Value::BStr(_), None)));
        assert!(matches!(decode(Format::Auto, b"text".to_vec()), (Value::TStr(_), None)));
        assert!(matches!(decode(Format::Auto, b"12".to_vec()), (Value::Num(_), None)));
    }

    #[tokio::test]
    async fn build_needs_a_queue_or_an_exchange_a_sane_prefetch_and_a_size() {
        let out = Harness::new(&SPEC, json!({})).run().await;
        assert!(out.result.unwrap().unwrap_err().0.contains("set `queue`"));
        let out = Harness::new(&SPEC, json!({"queue": "q", "prefetch": 0})).run().await;
        assert!(out.result.unwrap().unwrap_err().0.contains("prefetch"));
        let out = Harness::new(&SPEC, json!({"queue": "q", "max_payload_size": "lots"})).run().await;
        assert!(out.result.unwrap().unwrap_err().0.contains("`max_payload_size`"));
    }

    #[test]
    fn the_port_type_follows_the_format() {
        let ty = |f: &str| ports(&json!({ "format": f })).1[0].ty.clone();
        assert_eq!([ty("json"), ty("text"), ty("bytes"), ty("auto")], ["json", "text", "bytes", "any"]);
    }
}
