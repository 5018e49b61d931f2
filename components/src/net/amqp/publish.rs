//! `amqp-publish`: publish messages to a RabbitMQ exchange, with publisher
//! confirms.
//!
//! The task takes a batch from its input, publishes it whole on a channel in
//! confirm mode, then waits for the broker's confirms: a confirmed message is
//! dropped (which acknowledges it upstream); a message the broker refuses
//! for now (`basic.nack`) is published again after a pause
//! (`sink_retry::Retry`); one it returns as unroutable (with `mandatory`)
//! goes to `err`.
//! If the connection drops before a message is confirmed, the message stays
//! in hand and is published again after reconnecting (so a message can arrive
//! twice, never not at all). While disconnected, no input is taken.

use fbp_runtime::link::{Link, RECONNECT_KEY};
use fbp_runtime::queue::InPort;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::{self, Value};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use serde::Deserialize;

use super::{
    Broker, DURABLE_KEY, EXCHANGE_TYPE_KEY, ExchangeType, URL_KEY, declare_exchange, is_refusal, meta_to_headers,
};
use crate::net::template::Template;
use crate::sink_retry::{Fault, Retry, reject_rest};
use crate::storage::reject_all;

/// The `amqp-publish` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "amqp-publish",
    summary: "Publish messages to a RabbitMQ (AMQP 0.9.1) exchange, with publisher confirms.",
    doc: "Publishes each message to `exchange` with `routing_key`, a template whose `{{ .. }}` \
          holes are jq (`{{ .sensor }}`, `{{ $meta.topic }}`); a message the template does not \
          fit goes to `err`. The exchange is declared with `exchange_type` if it does not exist \
          (not the default exchange `\"\"`, which routes to the queue named by the routing key, \
          nor `amq.*`). The body is the payload: text and bytes as they are, other values as \
          JSON; metadata headers become AMQP headers. The channel is in confirm mode and a \
          message is acknowledged upstream only once the broker has confirmed it; a message \
          the broker refuses for now (`basic.nack`: a queue at its limit with \
          `reject-publish`, a broker under pressure) is kept and published again with the \
          `reconnect` backoff until confirmed, logged once per episode; an unroutable one with \
          `mandatory = true` goes to `err`. When the connection drops, the \
          component stops taking input, reconnects with backoff and publishes again what was \
          not confirmed (at-least-once: a message may arrive twice). At shutdown a wait ends at \
          once: what is in hand is rejected, not acknowledged.",
    kind: Kind::Sink,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to publish" }],
    outputs: &[],
    config: &[
        URL_KEY,
        KeySpec::new(
            "exchange",
            KeyType::String,
            "\"\"",
            "The exchange to publish to; `\"\"` is the default exchange (the routing key names a queue).",
        ),
        KeySpec::required(
            "routing_key",
            KeyType::String,
            "The routing key, a template: `sensors.{{ .sensor }}`, `{{ $meta.topic }}`.",
        ),
        EXCHANGE_TYPE_KEY,
        DURABLE_KEY,
        KeySpec::new(
            "persistent",
            KeyType::Bool,
            "true",
            "Publish with delivery mode 2, so durable queues keep the message over a broker restart.",
        ),
        KeySpec::new(
            "mandatory",
            KeyType::Bool,
            "false",
            "Ask the broker to return a message no queue is bound to receive; it then goes to \
             `err` instead of being dropped by the broker.",
        ),
        KeySpec::new(
            "batch_size",
            KeyType::Integer,
            "256",
            "Messages published before waiting for their confirms; bounds what is unconfirmed.",
        ),
        RECONNECT_KEY,
    ],
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.out]\ntype = \"amqp-publish\"\nconfig = { url = \"amqp://guest:guest@127.0.0.1:5672/%2f\", exchange = \"telemetry\", routing_key = \"sensors.{{ .sensor }}\" }\n",
    build,
    ports: None,
    probe: Some(super::probe::PROBE),
};

#[derive(Deserialize)]
struct Config {
    url: String,
    exchange: String,
    routing_key: String,
    exchange_type: ExchangeType,
    durable: bool,
    persistent: bool,
    mandatory: bool,
    batch_size: i64,
    reconnect: String,
}

/// A built `amqp-publish`.
struct Publish {
    broker: Broker,
    exchange: String,
    routing_key: Template,
    exchange_type: ExchangeType,
    durable: bool,
    persistent: bool,
    mandatory: bool,
    batch_size: usize,
}

/// How one message of a batch ended.
enum Fate {
    /// Confirmed by the broker: drop it.
    Confirmed,
    /// Returned as unroutable or unrenderable: to `err`, with why.
    Refused(String),
    /// Refused by the broker for now (`basic.nack`): published again after a pause.
    Nacked,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let c: Config = ctx.parse()?;
    let batch_size = usize::try_from(c.batch_size)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`batch_size` must be 1 or more, found {}", c.batch_size))?;
    Ok(Instance::task(Publish {
        broker: Broker::new(&c.url, &c.reconnect)?,
        exchange: c.exchange,
        routing_key: Template::parse("routing_key", &c.routing_key)?,
        exchange_type: c.exchange_type,
        durable: c.durable,
        persistent: c.persistent,
        mandatory: c.mandatory,
        batch_size,
    }))
}

impl Task for Publish {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let mut input = ctx.input("in");
            self.run_loop(&ctx, &mut input).await
        })
    }
}

impl Publish {
    /// Connects, publishes until the input ends, reconnecting when the connection drops.
    async fn run_loop(&self, ctx: &Context, input: &mut InPort) -> Result<(), Failure> {
        let mut link = Link::new(ctx.name.clone(), self.broker.target.clone(), self.broker.backoff);
        let mut retry = Retry::new(ctx.name.clone(), self.broker.target.clone(), self.broker.backoff);
        let mut batch: Vec<Message> = Vec::with_capacity(self.batch_size);
        loop {
            let error = match self.open().await {
                Ok((conn, channel)) => {
                    link.up();
                    match self.publish_all(ctx, input, &channel, &mut batch, &mut retry).await {
                        Ok(()) => {
                            let _ = conn.close(200, "fbp: input ended".into()).await;
                            return Ok(());
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            if is_refusal(&error) {
                reject_all(&batch);
                return Err(ctx.permanent(format!("{}: the broker refused: {error}", self.broker.target)));
            }
            // While the broker is away, an input that ends with nothing in hand ends the
            // component; a shutdown rejects what is in hand and what is still queued.
            tokio::select! {
                () = tokio::time::sleep(link.down(&error)) => {}
                () = input.done(), if batch.is_empty() => return Ok(()),
                () = ctx.shutdown().cancelled() => {
                    reject_rest(input, &mut batch, ctx).await;
                    return Ok(());
                }
            }
        }
    }

    /// Connects, declares the exchange and turns confirms on.
    async fn open(&self) -> Result<(Connection, Channel), lapin::Error> {
        let (conn, channel) = self.broker.connect().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        declare_exchange(&channel, &self.exchange, self.exchange_type, self.durable).await?;
        Ok((conn, channel))
    }

    /// Publishes batch after batch (starting with what `batch` still holds)
    /// until the input ends; `Err` when the channel fails, with the
    /// unconfirmed messages left in `batch`. What the broker nacks is
    /// published again after a pause (`retry`).
    async fn publish_all(
        &self,
        ctx: &Context,
        input: &mut InPort,
        channel: &Channel,
        batch: &mut Vec<Message>,
        retry: &mut Retry,
    ) -> Result<(), lapin::Error> {
        loop {
            if batch.is_empty() && !input.recv_many(batch, self.batch_size).await {
                return Ok(());
            }
            let (fates, failed) = self.publish_batch(channel, batch).await;
            let mut fates = fates.into_iter();
            let mut rest = Vec::new();
            for msg in batch.drain(..) {
                match fates.next().flatten() {
                    Some(Fate::Confirmed) => {}
                    Some(Fate::Refused(why)) => {
                        if ctx.reject(&msg, &why).await.is_err() {
                            reject_all(std::slice::from_ref(&msg));
                        }
                    }
                    Some(Fate::Nacked) | None => rest.push(msg),
                }
            }
            *batch = rest;
            if let Some(e) = failed {
                return Err(e);
            }
            if batch.is_empty() {
                retry.written();
                continue;
            }
            let why = format!("the broker refused {} messages (basic.nack)", batch.len());
            if retry.failed(Fault::Transient(why), ctx.shutdown()).await.is_err() {
                crate::sink_retry::not_written(batch, ctx);
                batch.clear();
            }
        }
    }

    /// Publishes every message of `batch` and waits for the confirms: a fate
    /// per message, in order (`None`: still in hand, as the channel failed
    /// before its confirm), and the channel's error if it failed. The
    /// publishes of a batch are pipelined; lapin numbers and queues them in
    /// the order they are first polled, which is the batch's order.
    async fn publish_batch(&self, channel: &Channel, batch: &[Message]) -> (Vec<Option<Fate>>, Option<lapin::Error>) {
        let keys: Vec<Result<String, String>> = batch.iter().map(|m| self.routing_key.render(m)).collect();
        let publishes = batch
            .iter()
            .zip(&keys)
            .filter_map(|(msg, key)| key.as_ref().ok().map(|key| self.publish(channel, msg, key)));
        let mut published = join_all(publishes).await.into_iter();
        let mut fates = Vec::with_capacity(batch.len());
        let mut failed = None;
        for key in keys {
            let Ok(_) = key else {
                fates.push(key.err().map(Fate::Refused));
                continue;
            };
            fates.push(match published.next() {
                Some(Ok(confirm)) if failed.is_none() => match confirm.await {
                    Ok(c) => Some(fate(c)),
                    Err(e) => {
                        failed = Some(e);
                        None
                    }
                },
                Some(Err(e)) => {
                    failed.get_or_insert(e);
                    None
                }
                _ => None,
            });
        }
        (fates, failed)
    }

    /// Publishes one message; the confirm to wait for.
    async fn publish(
        &self,
        channel: &Channel,
        msg: &Message,
        routing_key: &str,
    ) -> Result<PublisherConfirm, lapin::Error> {
        let options = BasicPublishOptions { mandatory: self.mandatory, ..BasicPublishOptions::default() };
        let (body, content_type) = body(&msg.payload);
        let mut properties = BasicProperties::default()
            .with_content_type(content_type.into())
            .with_delivery_mode(if self.persistent { 2 } else { 1 });
        if !msg.meta.headers.is_empty() {
            properties = properties.with_headers(meta_to_headers(&msg.meta.headers));
        }
        channel.basic_publish(self.exchange.as_str().into(), routing_key.into(), options, &body, properties).await
    }
}

/// What a confirm means for its message.
fn fate(confirmation: Confirmation) -> Fate {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Fate::Confirmed,
        Confirmation::Ack(Some(returned)) => Fate::Refused(format!(
            "the broker returned the message as unroutable ({} {}): no queue is bound for its routing key",
            returned.reply_code, returned.reply_text
        )),
        Confirmation::Nack(_) => Fate::Nacked,
    }
}

/// The body of a payload and its content type.
fn body(payload: &Value) -> (Vec<u8>, &'static str) {
    match payload {
        Value::TStr(b) => (b.to_vec(), "text/plain; charset=utf-8"),
        Value::BStr(b) => (b.to_vec(), "application/octet-stream"),
        other => (value::to_json_string(other).into_bytes(), "application/json"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fbp_runtime::testing::Harness;
    use serde_json::json;

    #[test]
    fn bodies_are_text_bytes_or_json() {
        assert_eq!(body(&value::string("a b")), (b"a b".to_vec(), "text/plain; charset=utf-8"));
        assert_eq!(body(&Value::byte_str(vec![0u8, 255])).0, vec![0, 255]);
        let (json, ty) = body(&value::parse_json(br#"{"a": [1]}"#).unwrap());
        assert_eq!((json, ty), (br#"{"a":[1]}"#.to_vec(), "application/json"));
    }

    #[tokio::test]
    async fn build_checks_the_template_and_the_batch_size() {
        let out = Harness::new(&SPEC, json!({"routing_key": "a.{{ .x"})).run().await;
        assert!(out.result.unwrap().unwrap_err().0.contains("not closed"));
        let out = Harness::new(&SPEC, json!({"routing_key": "a", "batch_size": 0})).run().await;
        assert!(out.result.unwrap().unwrap_err().0.contains("batch_size"));
        let out = Harness::new(&SPEC, json!({"routing_key": "a", "url": "amqps://h/%2f"})).run().await;
        assert!(out.result.unwrap().unwrap_err().0.contains("amqps"));
    }

    #[tokio::test]
    async fn with_the_broker_away_it_stops_once_its_input_ends_with_nothing_in_hand() {
        let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", fbp_runtime::testbed::free_port());
        let mut h = Harness::new(&SPEC, json!({"routing_key": "a", "url": url, "reconnect": "5s..10s"}));
        let out = tokio::time::timeout(std::time::Duration::from_secs(5), h.run_to_end()).await;
        let out = out.expect("the publisher still waited for the broker 5 s after its input ended");
        assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    }
}
